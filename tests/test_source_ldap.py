"""The LDAP source (``cn=<host>``) and the shared directory connection, against a real slapd."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.sources import Fetched, fetch
from clipboard import document, ldapdir
from clipboard.config import Config, load
from clipboard.errors import ConfigError, SourceError
from clipboard.settings import LdapSettings
from clipboard.typed import build
from clipboard.validate import normalize_design
from tests.aio import bot_in_thread, failure_while_ticking, say_until
from tests.servers.http_gist import ALIAS_BOMB, SEED, SEED_INSTANCE, python_object
from tests.servers.local_node import require_local_provider
from tests.servers.process import free_port
from tests.servers.slapd import Slapd, private_slapd
from tests.site import CORE_PIPELINES

LOKI_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOr8bLc2ZfW7K0xkgXhS1aVqQ9Yt3m2n4p5r6s7t8u9v loki-operator"


@pytest.fixture(autouse=True)
def clean_hosts(slapd: Slapd) -> Iterator[None]:
    """The directory is shared by the session (ldapworker tests too): leave it as found."""
    yield
    slapd.remove_added()


def make_config(tmp_path: Path, slapd: Slapd, *, ldap: dict[str, Any] | None = None,
                **source: Any) -> Config:
    data = {"ldap": slapd.settings(**(ldap or {}))}
    if source:
        data["sources"] = {"ldap": source}
    path = tmp_path / "jarvis.yaml"
    path.write_text(document.dump(data))
    return load(path, export=False)


def typed(section: dict[str, Any]) -> LdapSettings:
    """An ``ldap:`` section as ``ldapdir`` takes it: built like the configuration's."""
    return build(LdapSettings, section, "ldap")


def run(spec: str, config: Config) -> Fetched:
    return asyncio.run(fetch(spec, config))


def refused(spec: str, config: Config) -> str:
    with pytest.raises(SourceError) as caught:
        run(spec, config)
    message = str(caught.value)
    assert message and "\n" not in message
    return message


# --- designs from entries ---

def test_seed_design_in_an_attribute_is_accepted_verbatim(tmp_path, slapd):
    dn = slapd.add_host("loki", ip="127.0.3.7", description=SEED)
    config = make_config(tmp_path, slapd, design_attribute="description")
    fetched = run("cn=loki", config)
    assert fetched.kind == "ldap" and fetched.source == dn
    design = normalize_design(fetched.design)
    assert design["instance"] == {**SEED_INSTANCE, "ip": "127.0.3.7"}
    assert list(design) == ["instance"]


def test_default_mapping(tmp_path, slapd):
    dn = slapd.add_host("loki", ip="127.0.3.7", sshpubkey=LOKI_KEY, description="the wiki host")
    fetched = run("cn=loki", make_config(tmp_path, slapd))
    assert fetched.design == {"instance": {"hostname": "loki", "ip": "127.0.3.7",
                                           "sshpubkey": LOKI_KEY, "description": "the wiki host"}}
    assert fetched.source == dn
    assert normalize_design(fetched.design)["instance"]["hostname"] == "loki"


def test_mapped_values_win_over_the_embedded_design(tmp_path, slapd):
    slapd.add_host("loki", ip="127.0.3.9", sshpubkey=LOKI_KEY, description=SEED)
    fetched = run("cn=loki", make_config(tmp_path, slapd, design_attribute="description"))
    instance = normalize_design(fetched.design)["instance"]
    assert instance["sshpubkey"] == LOKI_KEY
    assert instance["ip"] == "127.0.3.9"
    assert instance["fqdn"] == "loki.websages.com"


def test_embedded_design_may_be_just_the_instance(tmp_path, slapd):
    slapd.add_host("thor", description="fqdn: thor.websages.com\nProvider: Local\n")
    fetched = run("cn=thor", make_config(tmp_path, slapd, design_attribute="description"))
    assert normalize_design(fetched.design)["instance"] == {
        "fqdn": "thor.websages.com", "provider": "local", "hostname": "thor", "ip": "192.0.2.10"}


def test_custom_mapping_and_dropping_a_default(tmp_path, slapd):
    slapd.add_host("loki", ip="127.0.3.7", description="x", extra={"l": "Atlanta"})
    config = make_config(tmp_path, slapd, attributes={"l": "datacenter", "description": None})
    assert run("cn=loki", config).design == {
        "instance": {"hostname": "loki", "ip": "127.0.3.7", "datacenter": "Atlanta"}}


def test_multi_valued_attributes(tmp_path, slapd):
    slapd.add_host("odin", ip=["127.0.4.1", "127.0.4.2"], extra={"cn": ["odin", "allfather"]})
    instance = run("cn=odin", make_config(tmp_path, slapd)).design["instance"]
    assert instance["hostname"] == "odin"
    assert sorted(instance["ip"]) == ["127.0.4.1", "127.0.4.2"]


def test_lookup_by_alias_gives_the_entry_name(tmp_path, slapd):
    slapd.add_host("odin", extra={"cn": ["odin", "allfather"]})
    assert run("cn=allfather", make_config(tmp_path, slapd)).design["instance"]["hostname"] == "odin"


def test_full_dn_under_the_hosts_ou(tmp_path, slapd):
    dn = slapd.add_host("loki", ip="127.0.3.7")
    fetched = run(f"cn=loki, ou=Hosts, {slapd.base_dn}", make_config(tmp_path, slapd))
    assert fetched.source == dn
    assert fetched.design["instance"]["hostname"] == "loki"


def test_canonical_data_hashes_the_entry(tmp_path, slapd):
    config = make_config(tmp_path, slapd)
    slapd.add_host("loki", ip="127.0.3.7", description="one")
    first = run("cn=loki", config)
    again = run("cn=loki", config)
    slapd.add_host("loki", ip="127.0.3.7", description="two")
    changed = run("cn=loki", config)
    assert first.sha256 == again.sha256 != changed.sha256
    rendered = json.loads(first.data)
    assert rendered["dn"] == first.source
    assert rendered["attributes"]["description"] == ["one"]
    assert rendered["attributes"]["objectclass"] == ["device", "ipHost"]


# --- refusals, one line each ---

def test_filter_injection_is_escaped(tmp_path, slapd):
    """Unescaped, this would be (&(cn=loki)(objectClass=*)...) and find loki."""
    slapd.add_host("loki")
    message = refused("cn=loki)(objectClass=*", make_config(tmp_path, slapd))
    assert message == f"no host 'loki)(objectClass=*' in LDAP under {slapd.hosts_dn}"


def test_wildcard_is_escaped(tmp_path, slapd):
    slapd.add_host("loki")
    slapd.add_host("thor")
    assert refused("cn=*", make_config(tmp_path, slapd)) == f"no host '*' in LDAP under {slapd.hosts_dn}"


def test_empty_cn(tmp_path, slapd):
    assert refused("cn=", make_config(tmp_path, slapd)) == "cn= names no host: say cn=<hostname>"
    assert refused("cn=  ", make_config(tmp_path, slapd)) == "cn= names no host: say cn=<hostname>"


def test_host_not_in_ldap(tmp_path, slapd):
    message = refused("cn=nosuchhost", make_config(tmp_path, slapd))
    assert message == f"no host 'nosuchhost' in LDAP under {slapd.hosts_dn}"


def test_dn_not_in_ldap(tmp_path, slapd):
    message = refused(f"cn=nosuchhost,ou=Hosts,{slapd.base_dn}", make_config(tmp_path, slapd))
    assert message == f"no host cn=nosuchhost,ou=Hosts,{slapd.base_dn} in LDAP"


def test_dn_outside_the_hosts_ou_is_refused(tmp_path, slapd):
    message = refused(f"cn=admin,{slapd.base_dn}", make_config(tmp_path, slapd))
    assert message == f"cn=admin,{slapd.base_dn} is not under {slapd.hosts_dn}, where hosts are looked up"


def test_several_entries(tmp_path, slapd):
    first = slapd.add_host("twin1", extra={"cn": ["twin1", "twin"]})
    second = slapd.add_host("twin2", extra={"cn": ["twin2", "twin"]})
    message = refused("cn=twin", make_config(tmp_path, slapd))
    assert message.startswith(f"several LDAP entries are cn=twin under {slapd.hosts_dn}: ")
    assert first in message and second in message


def test_ldap_down(tmp_path, slapd):
    port = free_port()
    started = time.monotonic()
    message = refused("cn=loki", make_config(tmp_path, slapd, ldap={"url": f"ldap://127.0.0.1:{port}"}))
    assert message.startswith(f"LDAP at ldap://127.0.0.1:{port} is not reachable: ")
    assert "refused" in message.lower()
    assert time.monotonic() - started < 3


def test_wrong_password_is_not_echoed(tmp_path, slapd):
    config = make_config(tmp_path, slapd, ldap={"bind_password": "hunter2-wrong"})
    message = refused("cn=loki", config)
    assert message == f"LDAP bind as {slapd.bind_dn} on {slapd.url} failed: invalidCredentials"
    assert "hunter2" not in message and slapd.password not in message


def test_bind_password_from_environment(tmp_path, slapd, monkeypatch):
    slapd.add_host("loki")
    config = make_config(tmp_path, slapd, ldap={"bind_password": None,
                                                 "bind_password_env": "JARVIS_TEST_LDAP_PW"})
    monkeypatch.delenv("JARVIS_TEST_LDAP_PW", raising=False)
    assert refused("cn=loki", config) == (
        "ldap.bind_password is not set and ldap.bind_password_env names the environment "
        "variable JARVIS_TEST_LDAP_PW, which is empty")
    monkeypatch.setenv("JARVIS_TEST_LDAP_PW", slapd.password)
    assert run("cn=loki", config).design["instance"]["hostname"] == "loki"


def test_missing_search_base(tmp_path, slapd):
    message = refused("cn=loki", make_config(tmp_path, slapd, ldap={"hosts_ou": "ou=Nowhere"}))
    assert message == (f"LDAP search base ou=Nowhere,{slapd.base_dn} does not exist "
                       "(check ldap.base_dn and ldap.hosts_ou)")


def test_embedded_alias_bomb(tmp_path, slapd):
    slapd.add_host("loki", description=ALIAS_BOMB)
    message = refused("cn=loki", make_config(tmp_path, slapd, design_attribute="description"))
    assert "expands to more than 100000 nodes" in message and "description of cn=loki" in message


def test_embedded_python_object_runs_nothing(tmp_path, slapd):
    marker = tmp_path / "pwned"
    slapd.add_host("loki", description=python_object(str(marker)))
    message = refused("cn=loki", make_config(tmp_path, slapd, design_attribute="description"))
    assert "YAML tag that is not allowed" in message
    assert not marker.exists()


def test_embedded_non_mapping(tmp_path, slapd):
    slapd.add_host("loki", description="- just\n- a list\n")
    message = refused("cn=loki", make_config(tmp_path, slapd, design_attribute="description"))
    assert "must be a YAML mapping at the top level, not list" in message


def test_ldap_that_never_answers_times_out_without_blocking_the_loop(tmp_path, slapd):
    """TCP accepts (the backlog) but no LDAP answer ever comes: bounded by ldap.timeout,
    and the event loop keeps ticking meanwhile."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
        config = make_config(tmp_path, slapd, ldap={"url": url, "timeout": 1})
        started = time.monotonic()
        ticks, error = failure_while_ticking(lambda: fetch("cn=loki", config))
    assert isinstance(error, SourceError)
    assert str(error).startswith(f"LDAP at {url} is not reachable: ")
    assert ticks >= 10 and time.monotonic() - started < 4


# --- the shared connection helper (also used by workers/ldapworker.py) ---

def test_connect_with_starttls_verifies_the_server(slapd):
    conn = ldapdir.connect(typed(slapd.settings(starttls=True, ca_file=slapd.ca_file)))
    try:
        assert conn.tls_started
        assert conn.extend.standard.who_am_i() == f"dn:{slapd.bind_dn}"
    finally:
        conn.unbind()
    with pytest.raises(ldapdir.DirectoryError, match="is not trusted: self-signed certificate"):
        ldapdir.connect(typed(slapd.settings(starttls=True)))


def test_connect_with_ldaps_verifies_the_server(slapd):
    conn = ldapdir.connect(typed(slapd.settings(url=slapd.ldaps_url, ca_file=slapd.ca_file)))
    try:
        assert conn.server.ssl
        assert conn.extend.standard.who_am_i() == f"dn:{slapd.bind_dn}"
    finally:
        conn.unbind()
    with pytest.raises(ldapdir.DirectoryError, match="is not trusted"):
        ldapdir.connect(typed(slapd.settings(url=slapd.ldaps_url)))


def test_connect_checks_the_certificate_names_the_host(slapd):
    """The certificate is for 127.0.0.1; reached as localhost it must be refused."""
    url = slapd.ldaps_url.replace("127.0.0.1", "localhost")
    with pytest.raises(ldapdir.DirectoryError):
        ldapdir.connect(typed(slapd.settings(url=url, ca_file=slapd.ca_file)))


def test_connect_anonymous_and_config_errors(slapd):
    conn = ldapdir.connect(typed(slapd.settings(bind_dn=None, bind_password=None)))
    try:
        assert conn.extend.standard.who_am_i() in ("", None)
    finally:
        conn.unbind()
    with pytest.raises(ConfigError, match="ldap.bind_dn is set but ldap.bind_password is not"):
        ldapdir.connect(typed(slapd.settings(bind_password=None)))
    with pytest.raises(ConfigError, match="starttls makes no sense"):
        ldapdir.connect(typed(slapd.settings(url=slapd.ldaps_url, starttls=True)))
    with pytest.raises(ConfigError, match="ldap.ca_file /nonexistent.pem does not exist"):
        ldapdir.connect(typed(slapd.settings(ca_file="/nonexistent.pem")))


def test_host_dn_escapes_the_name(slapd):
    settings = typed(slapd.settings())
    assert ldapdir.host_dn(settings, "loki") == f"cn=loki,ou=Hosts,{slapd.base_dn}"
    assert ldapdir.host_dn(settings, "a,b") == f"cn=a\\,b,ou=Hosts,{slapd.base_dn}"


# --- end to end through the bot, on a private slapd that the test stops (LDAP down) ---

@pytest.fixture(scope="module")
def ldap_bot(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("ldap-bot")
    with private_slapd() as server:
        yield from _bot_on(tmp, server)


def _bot_on(tmp: Path, server: Slapd):
    path = tmp / "jarvis.yaml"
    path.write_text(document.dump({
        "store": {"path": str(tmp / "jarvis.db")},
        "ldap": server.settings(timeout=2),
        "sources": {"ldap": {"design_attribute": "description"}},
        "pipelines": CORE_PIPELINES,
    }))
    with bot_in_thread(load(path)) as (loop, bot):
        yield loop, bot, server


def say(ldap_bot, text: str, pattern: str, timeout: float = 30) -> list[str]:
    loop, bot, _ = ldap_bot
    return say_until(loop, bot, text, pattern, timeout)


def test_bot_deploys_the_seed_from_ldap_and_history_shows_dn_and_hash(ldap_bot):
    loop, bot, server = ldap_bot
    dn = server.add_host("loki", ip="127.0.3.7", description=SEED)
    say(ldap_bot, "jarvis: deploy cn=loki", r"^loki: deployment #\d+ started: pipeline deploy, 3 steps$")
    loop.run(bot.expect(r"^loki: ready in \S+ \(3 steps\)$"))
    say(ldap_bot, "clipboard loki 1", r"after step 1")
    shown = loop.run(bot.lines_until(r"^  ip: 127\.0\.3\.7$"))
    keys = [line.split(":")[0].strip() for line in shown[1:]]
    assert shown[0] == "instance:" and keys == [*SEED_INSTANCE, "ip"]   # the seed's order, ip added
    lines = say(ldap_bot, "history loki", r"^#\d+ .* from ldap ")
    fetched = asyncio.run(fetch("cn=loki", load(bot.bot.config.path, export=False)))
    assert f"from ldap {dn} sha256:{fetched.sha256[:16]}" in lines[-1]


def test_bot_answers_each_bad_cn_with_one_line_and_keeps_serving(ldap_bot):
    loop, bot, server = ldap_bot
    server.add_host("loki", ip="127.0.3.7", description=SEED)
    hosts = server.hosts_dn
    before = len(loop.run(bot.bot.store.history("loki")))
    cases = [
        ("cn=loki)(objectClass=*", rf"^no host 'loki\)\(objectClass=\*' in LDAP under {hosts}$"),
        ("cn=", r"^cn= names no host: say cn=<hostname>$"),
        ("cn=nosuchhost", rf"^no host 'nosuchhost' in LDAP under {hosts}$"),
        (f"cn=nosuchhost,{hosts}", rf"^no host cn=nosuchhost,{hosts} in LDAP$"),
    ]
    for spec, pattern in cases:
        assert len(say(ldap_bot, f"jarvis: deploy {spec}", pattern)) == 1, spec
        assert say(ldap_bot, "history thor", "^thor: never deployed$") == ["thor: never deployed"]
    server.stop()
    try:
        down = say(ldap_bot, "jarvis: deploy cn=loki", r"^LDAP at ldap://127\.0\.0\.1:\d+ is not reachable: ")
        assert len(down) == 1
        assert say(ldap_bot, "history thor", "^thor: never deployed$") == ["thor: never deployed"]
    finally:
        server.start()
    assert len(loop.run(bot.bot.store.history("loki"))) == before
    say(ldap_bot, "deploy cn=loki", r"^loki: deployment #\d+ started")
    loop.run(bot.expect(r"^loki: ready in "))


# --- a design from LDAP through the whole default pipeline (the silos decide what they need) ---

def _full_pipeline_bot(tmp: Path, slapd: Slapd, **settings: Any):
    """A bot on the embedded default's pipelines and silos, with only the LDAP source and
    the local provider's state directory configured (plus what ``settings`` adds)."""
    path = tmp / "jarvis.yaml"
    path.write_text(document.dump({
        "store": {"path": str(tmp / "jarvis.db")}, "ldap": slapd.settings(),
        "providers": {"local": {"state_dir": str(tmp / "local")}},
        "ssh": {"wait_interval": 0.05, "wait_timeout": 30}, **settings}))
    return bot_in_thread(load(path))


def test_a_design_from_ldap_with_the_default_map_deploys_as_it_is(tmp_path, slapd):
    """cn, ipHostNumber, sshPublicKey, description: no fqdn, and no DNS configured, so
    dnswizard changes nothing instead of failing on the fqdn it would not use."""
    require_local_provider()
    slapd.add_host("thor", ip="127.0.3.20", sshpubkey=LOKI_KEY, description="the hammer")
    with _full_pipeline_bot(tmp_path, slapd) as (loop, bot):
        try:
            say_until(loop, bot, "deploy cn=thor", r"^thor: deployment #\d+ started: pipeline "
                                                   r"deploy, 16 steps$")
            loop.run(bot.expect(r"^thor: (ready in \S+ \(16 steps\)|FAILED .*)$", 120), 130)
            assert bot.seen[-1].startswith("thor: ready in"), bot.seen[-1]
            node_ip = loop.run(bot.bot.store.clipboard(
                loop.run(bot.bot.store.latest("thor")).id))["node"]["ip"]
            entry = slapd.entry(f"cn=thor,{slapd.hosts_dn}")
            assert [bytes(v).decode() if isinstance(v, bytes) else v
                    for v in entry["ipHostNumber"]] == [node_ip]
        finally:
            say_until(loop, bot, "deploy cn=thor pipeline=decommission", "started")
            loop.run(bot.expect(r"^thor: (decommissioned|FAILED)", 60), 70)
    assert not (tmp_path / "local" / "thor").exists()


def test_a_design_missing_a_needed_field_is_refused_before_any_node_exists(tmp_path, slapd,
                                                                           named):
    """DNS configured without a zone: nothing derives thor's fqdn, so the deployment is
    refused when planned, naming the field, the step and where it could come from."""
    slapd.add_host("thor", ip="127.0.3.21")
    with _full_pipeline_bot(tmp_path, slapd, dns=named.dns_config(zone=None)) as (loop, bot):
        lines = say_until(loop, bot, "deploy cn=thor", r"^thor: ")
        assert lines[-1] == (
            "thor: instance.fqdn is missing (needed by dnswizard:update_host): set it in the "
            "design, or set dns.zone (or designs.domain) to derive it")
        assert say_until(loop, bot, "history thor", "^thor: ") == ["thor: never deployed"]
    assert not (tmp_path / "local").exists()


def test_a_design_from_ldap_gets_its_fqdn_from_the_dns_zone(tmp_path, slapd, named):
    """No fqdn in the entry, dns.zone configured: core:validate derives thor.example.com,
    which DNS publishes (A and, in the reverse zone, PTR) and decommission removes."""
    require_local_provider()
    slapd.add_host("thor", ip="127.0.3.22")
    dns_section = named.dns_config(reverse_zones=["127.in-addr.arpa"])
    with _full_pipeline_bot(tmp_path, slapd, dns=dns_section) as (loop, bot):
        try:
            say_until(loop, bot, "deploy cn=thor", r"^thor: deployment #\d+ started")
            loop.run(bot.expect(r"^thor: (ready in|FAILED)", 120), 130)
            assert bot.seen[-1].startswith("thor: ready in"), bot.seen[-1]
            clip = loop.run(bot.bot.store.clipboard(loop.run(bot.bot.store.latest("thor")).id))
            assert clip["instance"]["fqdn"] == "thor.example.com"
            ip = clip["node"]["ip"]
            assert named.lookup("thor.example.com", "A") == {ip}
            reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
            assert named.lookup(reverse, "PTR") == {"thor.example.com."}
        finally:
            say_until(loop, bot, "deploy cn=thor pipeline=decommission", "started")
            loop.run(bot.expect(r"^thor: (decommissioned|FAILED)", 60), 70)
        assert bot.seen[-1].startswith("thor: decommissioned"), bot.seen[-1]
    assert named.lookup("thor.example.com", "A") == set()
    assert named.lookup(reverse, "PTR") == set()
