"""ldapworker against a real slapd; every check reads the entry over its own connection."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.servers.slapd import Slapd
from tests.silos import output, run_worker

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis

ROOT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBnewrootkeyfortestsonlyxxxxxxxxxxxxxxxxxxx root@{}"


def host_clipboard(hostname: str, ip: str, root_key: str | None = None) -> dict[str, Any]:
    return {"instance": {"hostname": hostname, "fqdn": f"{hostname}.example.com",
                         "provider": "local"},
            "node": {"ip": ip},
            "ssh": {"root_public_key": root_key or ROOT_KEY.format(f"{hostname}.example.com")}}


def classes(entry: dict[str, list[Any]]) -> set[str]:
    return {bytes(v).decode().lower() for v in entry["objectClass"]}


def test_creates_entry_with_ip_and_root_key(slapd: Slapd, tmp_path: Path) -> None:
    clip = host_clipboard("loki", "127.0.3.7")
    out = output(run_worker("ldapworker:update_host_ou", clip, {"ldap": slapd.settings()}, tmp_path))
    dn = f"cn=loki,{slapd.hosts_dn}"
    assert out["ldap"] == {"dn": dn}
    entry = slapd.entry(dn)
    assert entry is not None
    assert classes(entry) == {"device", "iphost", "ldappublickey"}
    assert entry["ipHostNumber"] == [b"127.0.3.7"]
    assert entry["sshPublicKey"] == [clip["ssh"]["root_public_key"].encode()]
    assert b"loki.example.com" in entry["description"][0]


def test_second_run_changes_nothing(slapd: Slapd, tmp_path: Path) -> None:
    config = {"ldap": slapd.settings()}
    clip = host_clipboard("thor", "127.0.3.8")
    first = run_worker("ldapworker:update_host_ou", clip, config, tmp_path)
    before = slapd.entry(f"cn=thor,{slapd.hosts_dn}")
    second = run_worker("ldapworker:update_host_ou", clip, config, tmp_path)
    assert output(first) == output(second)
    assert "already up to date" in second.stderr
    assert slapd.entry(f"cn=thor,{slapd.hosts_dn}") == before


def test_redeploy_replaces_ip_and_key_but_keeps_operator_description(
        slapd: Slapd, tmp_path: Path) -> None:
    dn = slapd.add_host("odin", ip=["192.0.2.10", "192.0.2.11"], description="production")
    clip = host_clipboard("odin", "127.0.3.9", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAInewer root@odin")
    output(run_worker("ldapworker:update_host_ou", clip, {"ldap": slapd.settings()}, tmp_path))
    entry = slapd.entry(dn)
    assert entry is not None
    assert classes(entry) == {"device", "iphost", "ldappublickey"}
    assert entry["ipHostNumber"] == [b"127.0.3.9"]
    assert entry["sshPublicKey"] == [b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAInewer root@odin"]
    assert entry["description"] == [b"production"]


def test_delete_is_idempotent(slapd: Slapd, tmp_path: Path) -> None:
    config = {"ldap": slapd.settings()}
    created = output(run_worker("ldapworker:update_host_ou", host_clipboard("frey", "127.0.3.10"),
                                config, tmp_path))
    assert slapd.entry(created["ldap"]["dn"]) is not None
    for _ in range(2):
        out = output(run_worker("ldapworker:delete_host", created, config, tmp_path))
        assert "ldap" not in out
    assert slapd.entry(created["ldap"]["dn"]) is None


def test_delete_removes_only_this_hosts_entry_whatever_the_clipboard_records(
        slapd: Slapd, tmp_path: Path) -> None:
    """An ldap.dn in the clipboard (a design can no longer write one) never picks the entry."""
    config = {"ldap": slapd.settings()}
    victim = output(run_worker("ldapworker:update_host_ou", host_clipboard("vidar", "127.0.3.12"),
                               config, tmp_path))
    for dn in (victim["ldap"]["dn"], slapd.hosts_dn):
        forged = {**host_clipboard("loptr", "127.0.3.13"), "ldap": {"dn": dn}}
        refused = run_worker("ldapworker:delete_host", forged, config, tmp_path)
        assert refused.returncode == 1
        assert f"the recorded LDAP entry '{dn}' is not this host's entry" in refused.stderr
    assert slapd.entry(victim["ldap"]["dn"]) is not None


def test_wrong_password_fails_clearly_without_leaking(slapd: Slapd, tmp_path: Path) -> None:
    wrong = "not-the-password-4711"
    result = run_worker("ldapworker:update_host_ou", host_clipboard("heim", "127.0.3.11"),
                        {"ldap": slapd.settings(bind_password=wrong)}, tmp_path)
    assert result.returncode == 1
    assert "invalidCredentials" in result.stderr and "Traceback" not in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert slapd.entry(f"cn=heim,{slapd.hosts_dn}") is None


def test_not_configured_leaves_clipboard_unchanged(tmp_path: Path) -> None:
    result = run_worker("ldapworker:update_host_ou", host_clipboard("quiet", "127.0.3.12"),
                        {"ldap": {"url": None}}, tmp_path)
    assert result.returncode == 0 and result.stdout == ""
    assert "LDAP not configured" in result.stderr
