"""README's "Your first deployment from IRC and Jabber", run as written.

The section's blocks are found by the HTML comments before them (``<!-- guide:NAME``),
so the README is the only copy: an edit there is what these tests check.

- Both YAML blocks pass ``jarvis check-config`` with no warning, and every
  configuration key the section names (in backquotes) is a key of the schema.
- The LDIF block loads into a ``cn=config`` slapd (Debian's way), after which a
  host entry with ldapPublicKey/sshPublicKey can be written.
- The configuration block runs: ``jarvis run`` on it against a real InspIRCd with
  Atheme (``account:`` patterns need services) and a real prosody with STARTTLS;
  alice, logged in to her services account, deploys the seed from ``#ops`` and it
  reaches ``ready``; a stranger is refused; from her Jabber account she asks its
  status and decommissions it.

What the run substitutes, and why (``_adapt``): the servers' addresses and ports
(loopback fixtures); IRC without TLS (the fixture's plaintext port); the accounts'
names, because the fixtures make fresh accounts with a counter suffix (the bot's IRC
nick is set to its account, which is what ``sasl.username: null`` then logs in as);
the prosody fixture's CA for STARTTLS; its room name; and ``sources.file.roots``,
a temp directory holding the seed as ``loki.yaml``. Everything else is the block.
"""
from __future__ import annotations

import asyncio
import copy
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
import yaml

from tests.jarvis_process import ROOT, clean_env, kill_group
from tests.servers.inspircd import CHANNEL, InspIrcd, Person
from tests.servers.process import ServerProcess, free_port, tcp_ready
from tests.servers.prosody import ROOM, ProsodyFactory, XmppClient
from tests.test_cli import jarvis

README = ROOT / "README.md"
SEED = ROOT / "tests" / "data" / "seed.yaml"
HEADING = "## Your first deployment from IRC and Jabber"
SCHEMA_SECTIONS = ("chat", "providers", "sources", "acl", "dns", "ldap", "keys", "configmgmt",
                   "monitoring", "notify", "bot", "store", "runner")


def section() -> str:
    """The guide's text, from its heading to the next ``## `` heading."""
    text = README.read_text()
    start_at = text.index(HEADING)
    end = text.find("\n## ", start_at + len(HEADING))
    return text[start_at:end if end != -1 else len(text)]


def block(name: str) -> str:
    """The fenced block right after ``<!-- guide:NAME ... -->``."""
    found = re.search(rf"<!-- guide:{name}\b[^\n]*-->\n```\w*\n(.*?)\n```", section(), re.DOTALL)
    assert found, f"README's guide has no block marked guide:{name}"
    return found.group(1) + "\n"


def check_config(text: str, tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return jarvis("check-config", str(path), env=clean_env(tmp_path))


@pytest.mark.servers
@pytest.mark.parametrize("name", ["config", "sources"])
def test_the_guides_yaml_blocks_pass_check_config_without_warnings(name: str, tmp_path: Path) -> None:
    result = check_config(block(name), tmp_path, name)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr   # no spoofable ACL grant, nothing else


def _schema_has(schema: Any, path: list[str]) -> bool:
    for part in path:
        if not isinstance(schema, dict):
            return False
        if part in schema:
            schema = schema[part]
        elif "*" in schema:
            schema = schema["*"]
        else:
            return False
    return True


def test_every_key_the_guide_names_is_in_the_schema() -> None:
    schema = yaml.safe_load((ROOT / "clipboard" / "defaults.yaml").read_text())
    named = {match.split()[0].rstrip(":") for match in re.findall(r"`([a-z_]+\.[a-z0-9_.<>]+)", section())}
    keys = {key for key in named if key.split(".")[0] in SCHEMA_SECTIONS}
    assert len(keys) > 30, keys   # the table is read, not skipped
    unknown = sorted(key for key in keys
                     if not _schema_has(schema, [p if not p.startswith("<") else "ec2"
                                                 for p in key.split(".")]))
    assert unknown == [], f"the README's guide names keys the schema lacks: {unknown}"


# ------------------------------------------------------------------ the LDIF block

@pytest.fixture()
def cn_config_slapd() -> Iterator[tuple[str, Path]]:
    """A slapd configured through cn=config (Debian's way) from Debian's own schema LDIFs,
    listening on ldap:// and on an ldapi socket where root is manager via SASL EXTERNAL."""
    directory = Path(tempfile.mkdtemp(prefix="jarvis-guide-slapd-"))
    try:
        (directory / "db").mkdir()
        (directory / "slapd.d").mkdir()
        includes = "\n".join(f"include: file:///etc/ldap/schema/{name}.ldif"
                             for name in ("core", "cosine", "inetorgperson", "nis"))
        (directory / "init.ldif").write_text(f"""dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {directory}/slapd.pid

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{includes}

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth manage by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: dc=example,dc=com
olcRootDN: cn=admin,dc=example,dc=com
olcRootPW: guide-secret
olcDbDirectory: {directory}/db
""")
        subprocess.run(["slapadd", "-n", "0", "-F", str(directory / "slapd.d"), "-l",
                        str(directory / "init.ldif")], check=True, capture_output=True, timeout=30)
        socket = directory / "ldapi"
        port = free_port()
        url = f"ldap://127.0.0.1:{port}"
        ldapi = "ldapi://" + str(socket).replace("/", "%2F")
        process = ServerProcess("slapd", ["/usr/sbin/slapd", "-d", "0", "-F", str(directory / "slapd.d"),
                                          "-h", f"{url} {ldapi}"], log=directory / "slapd.log")
        ready = tcp_ready("127.0.0.1", port)
        process.start(lambda: socket.exists() and ready())
        try:
            yield url, directory
        finally:
            process.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.servers
def test_the_guides_ldif_loads_the_openssh_lpk_schema_into_cn_config(
        cn_config_slapd: tuple[str, Path]) -> None:
    url, directory = cn_config_slapd
    ldapi = "ldapi://" + str(directory / "ldapi").replace("/", "%2F")
    conn = ldap3.Connection(ldap3.Server(url, connect_timeout=5, get_info=ldap3.NONE), "cn=admin,dc=example,dc=com",
                            "guide-secret", auto_bind=True, receive_timeout=5)
    try:
        conn.add("dc=example,dc=com", ["dcObject", "organization"], {"dc": "example", "o": "Example"})
        conn.add("ou=Hosts,dc=example,dc=com", ["organizationalUnit"], {"ou": "Hosts"})
        host = ("cn=loki,ou=Hosts,dc=example,dc=com", ["device", "ipHost", "ldapPublicKey"],
                {"ipHostNumber": "192.0.2.10", "sshPublicKey": b"ssh-ed25519 AAAA loki"})
        assert not conn.add(*host), "slapd knew ldapPublicKey before the schema was loaded"

        ldif = directory / "openssh-lpk.ldif"
        ldif.write_text(block("ldif"))
        loaded = subprocess.run(["ldapadd", "-Y", "EXTERNAL", "-H", ldapi, "-f", str(ldif)],
                                capture_output=True, text=True, timeout=30)
        assert loaded.returncode == 0, loaded.stderr

        assert conn.add(*host), conn.result
    finally:
        conn.unbind()


# ------------------------------------------------------------------ the configuration, run

def _replace(items: list[str], old: str, new: str) -> list[str]:
    assert old in items, f"the guide's list {items} no longer holds {old!r}"
    return [new if item == old else item for item in items]


def _adapt(config: dict[str, Any], *, irc: InspIrcd, irc_bot: str, xmpp: dict[str, Any],
           roots: Path, alice_account: str, alice_jid: str) -> dict[str, Any]:
    """The guide's configuration pointed at the test servers (see the module docstring)."""
    config = copy.deepcopy(config)
    chat = config["chat"]
    assert chat["irc"]["sasl"]["mechanism"] == "plain" and "username" not in chat["irc"]["sasl"]
    chat["irc"].update(server=irc.host, port=irc.port, tls=False, nick=irc_bot)
    chat["xmpp"].update(jid=xmpp["jid"], server=xmpp["server"], port=xmpp["port"],
                        ca_file=xmpp["ca_file"], rooms=[ROOM])
    assert chat["irc"]["channels"] == [CHANNEL]
    assert config["sources"]["file"]["roots"] == ["/srv/jarvis/designs"]
    config["sources"]["file"]["roots"] = [str(roots)]
    for rule in config["acl"].values():
        rule["allow"] = _replace(_replace(rule["allow"], "account:alice", f"account:{alice_account}"),
                                 "xmpp:alice@example.com", f"xmpp:{alice_jid}")
        if "rooms" in rule:
            rule["rooms"] = _replace(rule["rooms"], "ops@conference.example.com", ROOM)
    return config


async def _ask_by_jabber(client: XmppClient, bot_jid: str, text: str, expected: str,
                         timeout: float = 30) -> str:
    """Say ``text`` to the bot 1:1 until it answers with ``expected`` (it may still be connecting)."""
    deadline = time.monotonic() + timeout
    while True:
        client.chat(bot_jid, text)
        try:
            return (await client.expect(expected, timeout=3)).text
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


@pytest.mark.servers
def test_the_guides_configuration_deploys_the_seed_from_irc_and_answers_on_jabber(
        inspircd: InspIrcd, prosody_factory: ProsodyFactory, tmp_path: Path) -> None:
    prosody = prosody_factory(tls=True)
    bot_irc, bot_irc_password = inspircd.account("jarvis")
    alice_irc = inspircd.account("alice")
    bot_jid = prosody.register("jarvis", "guide-bot-pw")
    alice_jid = prosody.register("alice", "guide-alice-pw")
    roots = tmp_path / "designs"
    roots.mkdir()
    shutil.copy(SEED, roots / "loki.yaml")
    config = _adapt(yaml.safe_load(block("config")), irc=inspircd, irc_bot=bot_irc,
                    xmpp=prosody.xmpp_settings(bot_jid, ""), roots=roots,
                    alice_account=alice_irc[0], alice_jid=alice_jid)
    path = tmp_path / "jarvis.yaml"
    path.write_text(yaml.safe_dump(config))
    env = clean_env(tmp_path) | {"JARVIS_IRC_PASSWORD": bot_irc_password,
                                 "JARVIS_XMPP_PASSWORD": "guide-bot-pw"}
    checked = jarvis("check-config", str(path), env=env)
    assert checked.returncode == 0, checked.stderr

    async def scenario() -> None:
        alice = await Person(inspircd, alice_irc[0], account=alice_irc).connect(CHANNEL)
        stranger = await Person(inspircd, f"stranger{bot_irc}").connect(CHANNEL)
        jabber = await XmppClient(prosody, alice_jid, "guide-alice-pw").connect()
        argv = [sys.executable, "-m", "bot.cli", "run", "--config", str(path)]
        bot = subprocess.Popen(argv,  # noqa: ASYNC220 - blocks the loop only to fork
                               env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
        try:
            await alice.until(lambda line: line.command == "JOIN" and line.nick == bot_irc, timeout=30)
            stranger.say(CHANNEL, "jarvis: deploy loki.yaml")
            await stranger.expect("deploy denied", timeout=15)
            alice.say(CHANNEL, "jarvis: deploy loki.yaml")
            await alice.expect("loki: deployment #1 started", timeout=15)
            ended = await alice.until(lambda line: line.command == "PRIVMSG" and any(
                word in line.params[-1] for word in ("loki: ready in", "loki: FAILED", "loki: rolled back")),
                timeout=180)
            assert "loki: ready in" in ended.params[-1], ended.params[-1]

            assert "loki: ready in" in await _ask_by_jabber(jabber, bot_jid, "status loki", "loki: ")
            jabber.chat(bot_jid, "deploy loki.yaml pipeline=decommission")
            await jabber.expect("loki: decommissioned in", timeout=120)
        finally:
            kill_group(bot, signal.SIGTERM)
            try:
                bot.wait(20)
            except subprocess.TimeoutExpired:
                kill_group(bot)
                bot.wait(10)
            for person in (alice, stranger):
                await person.close()
            await jabber.close()

    log = (tmp_path / "jarvis.log").open("w")
    try:
        asyncio.run(asyncio.wait_for(scenario(), 400))
    except BaseException:
        print("jarvis run said:\n" + (tmp_path / "jarvis.log").read_text()[-3000:])
        raise
    finally:
        log.close()
        if (tmp_path / "state" / "jarvis" / "local" / "loki").exists():
            jarvis("deploy", str(roots / "loki.yaml"), "--pipeline", "decommission",
                   "--config", str(path), env=env, timeout=120)
        prosody.stop()
