"""The host built end to end through the bot, every silo against its real server:
named (DNS), slapd (LDAP), a bare git repository (gitosis-admin), an HTTP silence
receiver (monitoring), local-provider sshd nodes, and moto's EC2 server."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.servers.local_node import require_local_provider
from tests.servers.monitoring_http import Receiver
from tests.servers.moto_ec2 import MotoEC2
from tests.servers.named import Named
from tests.servers.slapd import Slapd
from tests.silos import output, run_worker
from tests.site import IMAGE, SEED_KEY, Site, git


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, named: Named, slapd: Slapd,
         monitoring_http: Receiver, moto_ec2_server: MotoEC2) -> Iterator[Site]:
    require_local_provider()
    s = Site(tmp_path_factory.mktemp("e2e"), named, slapd, monitoring_http, moto_ec2_server)
    yield s
    s.close()


def keyscan_sshfp(ip: str, port: int) -> set[str]:
    """SSHFP records of the host keys sshd really serves, as OpenSSH computes them."""
    out = subprocess.run(["ssh-keyscan", "-D", "-T", "5", "-p", str(port), ip],
                         capture_output=True, text=True, timeout=30).stdout
    return {" ".join(line.split()[3:]).lower() for line in out.splitlines() if " SSHFP " in line}


def test_seed_on_the_local_provider_is_built_end_to_end(site: Site) -> None:
    site.monitor.reset()
    site.say(f"jarvis: deploy {site.design('loki')}", r"^loki: deployment #\d+ started: pipeline "
                                                       r"deploy, 16 steps$")
    site.expect(r"^loki: ready in \S+ \(16 steps\)$")
    site.say("status loki", r"^loki: ready in")
    clip = site.clipboard("loki")
    ip = clip["node"]["ip"]
    assert ip.startswith("127.") and clip["node"]["provider"] == "local"

    assert site.named.lookup("loki.example.com", "A") == {ip}
    served = keyscan_sshfp(ip, clip["node"]["ssh_port"])
    assert len(served) == 6  # rsa, ecdsa, ed25519 × sha1, sha256
    assert site.named.lookup("loki.example.com", "SSHFP") == served

    root_key = clip["ssh"]["root_public_key"]
    entry = site.slapd.entry(f"cn=loki,{site.slapd.hosts_dn}")
    assert entry is not None
    assert text(entry["ipHostNumber"]) == [ip]
    assert [k.strip() for k in text(entry["sshPublicKey"])] == [root_key.strip()]
    assert {"device", "ipHost", "ldapPublicKey"} <= set(text(entry["objectClass"]))

    published = git("show", "master:keydir/root@loki.example.com.pub", cwd=site.repo)
    assert published.strip() == root_key.strip()
    assert "root@loki.example.com" in git("show", "master:gitosis.conf", cwd=site.repo)

    calls = [(c.method, c.path) for c in site.monitor.calls]
    assert calls[0] == ("POST", "/api/v2/silences")
    assert calls[-1][0] == "DELETE" and calls[-1][1].startswith("/api/v2/silence/")

    site.say(f"deploy {site.design('loki')} pipeline=decommission", "started")
    site.expect(r"^loki: decommissioned in \S+ \(8 steps\)$")
    assert site.named.lookup("loki.example.com", "A") == set()
    assert site.named.lookup("loki.example.com", "SSHFP") == set()
    assert site.slapd.entry(f"cn=loki,{site.slapd.hosts_dn}") is None
    assert "root@loki.example.com" not in git("show", "master:gitosis.conf", cwd=site.repo)
    assert "keydir/root@loki.example.com.pub" not in git("ls-tree", "-r", "--name-only", "master",
                                                         cwd=site.repo)
    assert not (site.local_state / "loki").exists()


def test_a_failure_after_dns_and_ldap_rolls_everything_back(site: Site) -> None:
    site.say(f"deploy {site.design('vidar')} pipeline=failing", "started")
    site.expect(r"^vidar: FAILED at step 13/13 shellworker:refuse after \S+: the application "
                r"check refused: disk full \(exit status 4\) — rolling back$")
    for undo in ("ldapworker:delete_host", "dnswizard:delete_host", "node:destroy",
                 "monitoring:enable"):
        site.expect(rf"^vidar: undid step \d+ with {undo}")
    site.expect(r"^vidar: rolled back \(4 undos\)$")
    assert site.named.lookup("vidar.example.com", "A") == set()
    assert site.named.lookup("vidar.example.com", "SSHFP") == set()
    assert site.slapd.entry(f"cn=vidar,{site.slapd.hosts_dn}") is None
    assert not (site.local_state / "vidar").exists()
    site.say("history vidar", r"^vidar: 1 deployment")
    line = site.expect(r"^#\d+ ")
    assert ("rolled back: ldapworker:delete_host ok, dnswizard:delete_host ok, "
            "node:destroy ok, monitoring:enable ok") in line


def test_redeploy_of_a_production_host_stops_unless_forced(site: Site) -> None:
    """A force takes a second person: the tester forces, another console identity approves."""
    path = site.design("freyr", production=True)
    site.say(f"deploy {path} pipeline=redeploy", "started")
    site.expect(r"^freyr: FAILED at step 2/19 inventory:production_check after \S+: .*freyr is "
                r"marked production .*redeploy with force=true to proceed")
    assert not (site.local_state / "freyr").exists()
    site.say(f"deploy {path} pipeline=redeploy force", r"'approve freyr'")
    site.say("approve freyr", r"^freyr: ", identity="console:second-pair-of-eyes")
    site.expect(r"^freyr: ready in \S+ \(19 steps\)$")
    assert (site.local_state / "freyr").exists()
    site.say(f"deploy {path} pipeline=decommission force", r"'approve freyr'")
    site.say("approve freyr", r"^freyr: ", identity="console:second-pair-of-eyes")
    site.expect(r"^freyr: decommissioned in \S+ \(8 steps\)$")
    assert not (site.local_state / "freyr").exists()


def test_the_same_pipeline_on_ec2_against_moto(site: Site) -> None:
    """moto's addresses are fake, so SSH goes to a stand-in sshd (a local node that
    authorises the same deploy key) through providers.ec2.ssh_host; everything
    else — the node, its IP, DNS, LDAP — is the EC2 node's."""
    site.moto.reset()
    keyed = core_keypair({"instance": {"hostname": "tyrssh"}}, site)
    stand_in = output(run_worker("local:deploy", {
        "instance": {"hostname": "tyrssh"}, "deploy_key": keyed["deploy_key"]},
        site.settings, site.tmp))
    authorized = site.local_state / "tyrssh" / "tree" / "root" / ".ssh" / "authorized_keys"
    settings = yaml.safe_load(site.config_path.read_text())
    for ec2 in (settings["providers"]["ec2"], site.bot.bot.config.data["providers"]["ec2"]):
        ec2["ssh_host"], ec2["ssh_port"] = stand_in["node"]["ip"], stand_in["node"]["ssh_port"]
    site.config_path.write_text(yaml.safe_dump(settings))
    for server in site.bot.bot.runner.servers.values():
        site.loop.run(server.close())
    site.bot.bot.runner.servers.clear()

    path = site.tmp / "tyr.yaml"
    path.write_text(yaml.safe_dump({"instance": {
        "hostname": "tyr", "fqdn": "tyr.example.com", "provider": "EC2", "size": "t3.micro",
        "guestid": IMAGE, "datacenter": "us-east-1b", "sshpubkey": SEED_KEY},
        "notes": {"standin_keys": str(authorized)}}))
    site.say(f"deploy {path}", r"^tyr: deployment #\d+ started: pipeline deploy.ec2, 17 steps$")
    site.expect(r"^tyr: ready in \S+ \(17 steps\)$")
    first = site.clipboard("tyr")["node"]
    assert first["provider"] == "ec2" and first["id"].startswith("i-")
    assert site.named.lookup("tyr.example.com", "A") == {first["ip"]}
    assert text(site.slapd.entry(f"cn=tyr,{site.slapd.hosts_dn}")["ipHostNumber"]) == [first["ip"]]

    site.say(f"deploy {path} pipeline=redeploy", "started")
    site.expect(r"^tyr: ready in \S+ \(20 steps\)$")
    second = site.clipboard("tyr")["node"]
    assert second["id"] != first["id"]
    states = {node.id: node.state for node in ec2_nodes(site)}
    assert states[first["id"]] == "terminated" and states[second["id"]] == "running"

    site.say(f"deploy {path} pipeline=decommission", "started")
    site.expect(r"^tyr: decommissioned in \S+ \(8 steps\)$")
    assert {node.id: node.state for node in ec2_nodes(site)}[second["id"]] == "terminated"
    run_worker("local:destroy", stand_in, site.settings, site.tmp)


def text(values: list[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def core_keypair(clip: dict[str, Any], site: Site) -> dict[str, Any]:
    return output(run_worker("core:keypair", clip, site.settings, site.tmp))


def ec2_nodes(site: Site) -> list[Any]:
    from libcloud.compute.providers import get_driver
    from libcloud.compute.types import Provider
    cfg = site.moto.config()
    driver = get_driver(Provider.EC2)(cfg["key"], cfg["secret"], region=cfg["region"],
                                      host=cfg["host"], port=cfg["port"], secure=False,
                                      signature_version="4")
    return driver.list_nodes()
