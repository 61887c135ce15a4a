"""dnswizard against a real named: records checked with an independent resolver,
the worker driven through the real process contract."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import dns.query
import dns.tsig
import dns.update
import pytest
import yaml

from tests.servers.local_node import LocalNode
from tests.servers.named import REVERSE_ZONES, Named
from tests.silos import run_worker

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis

SHA256_ED = hashlib.sha256(b"ed25519 host key").hexdigest()
SHA1_ED = hashlib.sha1(b"ed25519 host key").hexdigest()
SHA256_RSA = hashlib.sha256(b"rsa host key").hexdigest()


def host_clipboard(hostname: str, ip: str = "127.0.3.7", ipv6: str | None = None) -> dict[str, Any]:
    return {"instance": {"hostname": hostname, "fqdn": f"{hostname}.example.com",
                         "provider": "local"},
            "node": {"ip": ip, "ipv6": ipv6},
            "ssh": {"sshfp": [{"algorithm": 4, "fp_type": 2, "fingerprint": SHA256_ED},
                              {"algorithm": 4, "fp_type": 1, "fingerprint": SHA1_ED},
                              {"algorithm": 1, "fp_type": 2, "fingerprint": SHA256_RSA.upper()}]}}


def test_update_sets_a_aaaa_sshfp_and_records_them(named: Named, tmp_path: Path) -> None:
    clip = host_clipboard("loki", "127.0.3.7", "2001:DB8::7")
    result = run_worker("dnswizard:update_host", clip, {"dns": named.dns_config()}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert named.lookup("loki.example.com", "A") == {"127.0.3.7"}
    assert named.lookup("loki.example.com", "AAAA") == {"2001:db8::7"}
    assert named.lookup("loki.example.com", "SSHFP") == {
        f"4 2 {SHA256_ED}", f"4 1 {SHA1_ED}", f"1 2 {SHA256_RSA}"}
    out = yaml.safe_load(result.stdout)
    assert out["dns"]["name"] == "loki.example.com"
    assert out["dns"]["a"] == ["127.0.3.7"] and out["dns"]["aaaa"] == ["2001:db8::7"]
    assert sorted(out["dns"]["sshfp"]) == sorted(named.lookup("loki.example.com", "SSHFP"))
    assert named.secret not in result.stderr + result.stdout


def test_update_is_idempotent_and_replaces_old_address(named: Named, tmp_path: Path) -> None:
    config = {"dns": named.dns_config(tsig_secret=None, tsig_secret_env="TEST_TSIG")}
    env = {"TEST_TSIG": named.secret}
    clip = host_clipboard("thor", "127.0.3.8", "2001:db8::8")
    first = run_worker("dnswizard:update_host", clip, config, tmp_path, env)
    second = run_worker("dnswizard:update_host", clip, config, tmp_path, env)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    assert named.lookup("thor.example.com", "A") == {"127.0.3.8"}
    moved = host_clipboard("thor", "127.0.3.9")
    moved["ssh"]["sshfp"] = moved["ssh"]["sshfp"][:1]
    third = run_worker("dnswizard:update_host", moved, config, tmp_path, env)
    assert third.returncode == 0, third.stderr
    assert named.lookup("thor.example.com", "A") == {"127.0.3.9"}
    assert named.lookup("thor.example.com", "AAAA") == set()
    assert named.lookup("thor.example.com", "SSHFP") == {f"4 2 {SHA256_ED}"}
    assert named.secret not in first.stderr + second.stderr + third.stderr


def test_wrong_secret_fails_clearly_without_leaking(named: Named, tmp_path: Path) -> None:
    wrong = "d3Jvbmcgc2VjcmV0IGZvciB0aGUgdGVzdCBvbmx5ISE="
    result = run_worker("dnswizard:update_host", host_clipboard("wrongkey"),
                        {"dns": named.dns_config(tsig_secret=wrong)}, tmp_path)
    assert result.returncode == 1
    assert "NOTAUTH" in result.stderr and "TSIG error BADSIG" in result.stderr
    assert "Traceback" not in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert named.lookup("wrongkey.example.com", "A") == set()


def test_unsigned_update_is_refused_by_name(named: Named, tmp_path: Path) -> None:
    result = run_worker("dnswizard:update_host", host_clipboard("nosig"),
                        {"dns": named.dns_config(tsig_key_name=None)}, tmp_path)
    assert result.returncode == 1
    assert "REFUSED" in result.stderr and "unsigned" in result.stderr
    assert named.lookup("nosig.example.com", "A") == set()


def test_delete_removes_only_managed_records_and_is_idempotent(named: Named, tmp_path: Path) -> None:
    config = {"dns": named.dns_config()}
    clip = host_clipboard("odin", "127.0.3.10", "2001:db8::10")
    created = run_worker("dnswizard:update_host", clip, config, tmp_path)
    assert created.returncode == 0, created.stderr
    other = dns.update.UpdateMessage("example.com", keyring=dns.tsig.Key(
        named.key_name, named.secret, named.algorithm))
    other.replace("odin", 300, "TXT", '"owned by someone else"')
    assert dns.query.tcp(other, named.host, port=named.port, timeout=5).rcode() == 0
    for _ in range(2):
        deleted = run_worker("dnswizard:delete_host", yaml.safe_load(created.stdout), config,
                             tmp_path)
        assert deleted.returncode == 0, deleted.stderr
        assert "dns" not in yaml.safe_load(deleted.stdout)
    for rdtype in ("A", "AAAA", "SSHFP"):
        assert named.lookup("odin.example.com", rdtype) == set()
    assert named.lookup("odin.example.com", "TXT") == {'"owned by someone else"'}


def test_delete_removes_only_this_hosts_name_whatever_the_clipboard_records(
        named: Named, tmp_path: Path) -> None:
    """A dns.name in the clipboard (a design can no longer write one) never picks the name."""
    config = {"dns": named.dns_config()}
    victim = run_worker("dnswizard:update_host", host_clipboard("baldr", "127.0.3.11"), config,
                        tmp_path)
    assert victim.returncode == 0, victim.stderr
    forged = {**host_clipboard("hodr"), "dns": {"name": "baldr.example.com"}}
    refused = run_worker("dnswizard:delete_host", forged, config, tmp_path)
    assert refused.returncode == 1
    assert ("the recorded DNS name 'baldr.example.com' is not this host's name "
            "hodr.example.com: nothing removed") in refused.stderr
    assert named.lookup("baldr.example.com", "A") == {"127.0.3.11"}


def test_server_name_instead_of_address_is_a_config_error(tmp_path: Path) -> None:
    result = run_worker("dnswizard:update_host", host_clipboard("named"),
                        {"dns": {"server": "ns1.example.com"}}, tmp_path)
    assert result.returncode == 1
    assert "dns.server must be an IP address" in result.stderr


def test_not_configured_leaves_clipboard_unchanged(tmp_path: Path) -> None:
    result = run_worker("dnswizard:update_host", host_clipboard("quiet"), {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "DNS not configured" in result.stderr


@pytest.mark.parametrize("clip_change, message", [
    ({"instance": {"hostname": "far", "fqdn": "far.example.org"}}, "not inside the configured zone"),
    ({"node": {"ip": None}}, "node.ip is missing"),
    ({"node": {"ip": "300.1.2.3"}}, "node.ip is not a valid A record value"),
])
def test_bad_input_fails_with_one_line(named: Named, tmp_path: Path, clip_change: dict[str, Any],
                                       message: str) -> None:
    clip = host_clipboard("far")
    clip.update(clip_change)
    result = run_worker("dnswizard:update_host", clip, {"dns": named.dns_config()}, tmp_path)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_sshfp_matches_what_a_real_node_serves(named: Named, local_node: LocalNode,
                                               tmp_path: Path) -> None:
    """SSHFP from ssh:hostkeys on a real sshd, checked against ``ssh-keyscan -D`` of it."""
    ip = local_node.clipboard["node"]["ip"]
    clip = {**local_node.clipboard,
            "instance": {"hostname": "realnode", "fqdn": "realnode.example.com"}}
    result = run_worker("dnswizard:update_host", clip, {"dns": named.dns_config()}, tmp_path)
    assert result.returncode == 0, result.stderr
    port = str(local_node.clipboard["node"]["ssh_port"])
    scanned = subprocess.run(["ssh-keyscan", "-T", "5", "-D", "-p", port, ip], capture_output=True,
                             text=True, timeout=20).stdout
    expected = {line.split("SSHFP", 1)[1].strip().lower()
                for line in scanned.splitlines() if " SSHFP " in line}
    assert len(expected) == 6
    assert named.lookup("realnode.example.com", "SSHFP") == expected
    assert named.lookup("realnode.example.com", "A") == {ip}


def test_ptr_records_follow_the_host_and_go_with_it(named: Named, tmp_path: Path) -> None:
    """PTRs beside A/AAAA in the configured reverse zones: written, moved with the address
    on a redeploy (the old one removed), removed by delete_host; another host's PTR stays."""
    config = {"dns": named.dns_config(reverse_zones=list(REVERSE_ZONES))}
    other = dns.update.UpdateMessage("127.in-addr.arpa", keyring=dns.tsig.Key(
        named.key_name, named.secret, named.algorithm))
    other.replace("32.3.0.127.in-addr.arpa.", 300, "PTR", "someone.example.com.")
    assert dns.query.tcp(other, named.host, port=named.port, timeout=5).rcode() == 0

    first = run_worker("dnswizard:update_host", host_clipboard("heimdall", "127.0.3.30",
                                                                "2001:db8::30"), config, tmp_path)
    assert first.returncode == 0, first.stderr
    v6 = "0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    assert named.lookup("30.3.0.127.in-addr.arpa", "PTR") == {"heimdall.example.com."}
    assert named.lookup(v6, "PTR") == {"heimdall.example.com."}
    assert yaml.safe_load(first.stdout)["dns"]["ptr"] == ["30.3.0.127.in-addr.arpa", v6]

    moved = run_worker("dnswizard:update_host", host_clipboard("heimdall", "127.0.3.31"), config,
                       tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert named.lookup("30.3.0.127.in-addr.arpa", "PTR") == set()
    assert named.lookup(v6, "PTR") == set()
    assert named.lookup("31.3.0.127.in-addr.arpa", "PTR") == {"heimdall.example.com."}

    deleted = run_worker("dnswizard:delete_host", yaml.safe_load(moved.stdout), config, tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert named.lookup("31.3.0.127.in-addr.arpa", "PTR") == set()
    assert named.lookup("heimdall.example.com", "A") == set()
    assert named.lookup("32.3.0.127.in-addr.arpa", "PTR") == {"someone.example.com."}


def test_an_address_outside_the_reverse_zones_gets_no_ptr(named: Named, tmp_path: Path) -> None:
    config = {"dns": named.dns_config(reverse_zones=["8.b.d.0.1.0.0.2.ip6.arpa"])}
    result = run_worker("dnswizard:update_host", host_clipboard("bragi", "127.0.3.33"), config,
                        tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no reverse zone configured for 127.0.3.33" in result.stderr
    assert named.lookup("33.3.0.127.in-addr.arpa", "PTR") == set()
    assert named.lookup("bragi.example.com", "A") == {"127.0.3.33"}


def test_a_derived_fqdn_is_what_dns_publishes(named: Named, tmp_path: Path) -> None:
    """A design without fqdn (an LDAP entry's): hostname + dns.zone."""
    clip = host_clipboard("vali", "127.0.3.34")
    del clip["instance"]["fqdn"]
    result = run_worker("dnswizard:update_host", clip, {"dns": named.dns_config()}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert named.lookup("vali.example.com", "A") == {"127.0.3.34"}
