"""The ssh silo against a real sshd (a local-provider node) with real paramiko,
each step in a fresh worker process; results checked with OpenSSH's own tools."""
from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clipboard.errors import StepFailed
from tests.servers.local_node import LocalNode
from tests.servers.process import free_port
from tests.silos import output
from workers import _sshclient as sshclient


def with_instance(node: LocalNode, **extra: Any) -> dict[str, Any]:
    clip = copy.deepcopy(node.clipboard)
    clip["instance"].update(extra)
    return clip


def sshfp_set(records: list[dict[str, Any]]) -> set[tuple[int, int, str]]:
    return {(r["algorithm"], r["fp_type"], r["fingerprint"]) for r in records}


def test_wait_sees_the_banner(local_node: LocalNode) -> None:
    result = local_node.step("ssh:wait")
    assert output(result)["ssh"]["banner"].startswith("SSH-2.0-OpenSSH")


def test_wait_gives_up_after_its_timeout(local_node: LocalNode) -> None:
    clip = copy.deepcopy(local_node.clipboard)
    clip["node"]["ssh_port"] = free_port(clip["node"]["ip"])
    config = {**local_node.config, "ssh": {"wait_interval": 0.05, "wait_timeout": 0.5}}
    result = local_node.step("ssh:wait", clipboard=clip, config=config)
    assert result.returncode == 1
    assert "not up after 0.5s" in result.stderr and "Traceback" not in result.stderr


def test_hostkeys_match_what_openssh_computes(local_node: LocalNode) -> None:
    ssh = local_node.clipboard["ssh"]
    assert set(ssh["host_keys"]) == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}
    assert ssh["host_keys_node"] == local_node.clipboard["node"]["id"]
    node = local_node.clipboard["node"]
    scanned = subprocess.run(["ssh-keyscan", "-D", "-T", "5", "-p", str(node["ssh_port"]),
                              node["ip"]], capture_output=True, text=True, timeout=20).stdout
    expected = {(int(f[3]), int(f[4]), f[5]) for f in
                (line.split() for line in scanned.splitlines()) if len(f) == 6 and f[2] == "SSHFP"}
    assert len(expected) == 6
    assert sshfp_set(ssh["sshfp"]) == expected
    from_files = set()
    for pub in sorted((local_node.tree / "etc/ssh").glob("ssh_host_*_key.pub")):
        keygen = subprocess.run(["ssh-keygen", "-r", "loki", "-f", str(pub)], capture_output=True,
                                text=True, timeout=10, check=True).stdout
        from_files |= {(int(f[3]), int(f[4]), f[5]) for f in map(str.split, keygen.splitlines())}
        blob = pub.read_text().split()[1]
        assert blob in ssh["host_keys"].values()
    assert from_files == expected


def test_hostkeys_is_idempotent_but_refuses_other_keys_for_the_same_node(
        local_node: LocalNode) -> None:
    again = output(local_node.step("ssh:hostkeys"))
    assert again["ssh"]["host_keys"] == local_node.clipboard["ssh"]["host_keys"]
    tampered = copy.deepcopy(local_node.clipboard)
    tampered["ssh"]["host_keys"]["ssh-ed25519"] = other_ed25519_key()
    result = local_node.step("ssh:hostkeys", clipboard=tampered)
    assert result.returncode == 1 and "other than the pinned" in result.stderr


def other_ed25519_key() -> str:
    """A valid ed25519 public key that the node does not have."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return public.split()[1]


def test_a_changed_host_key_is_refused(local_node: LocalNode) -> None:
    tampered = with_instance(local_node, commands=["touch /root/must-not-run"])
    tampered["ssh"]["host_keys"] = {"ssh-ed25519": other_ed25519_key()}
    result = local_node.step("ssh:run", clipboard=tampered)
    assert result.returncode == 1
    assert "not the pinned one: refused" in result.stderr
    assert not (local_node.tree / "root/must-not-run").exists()


def test_nothing_runs_before_keys_are_pinned(local_node: LocalNode) -> None:
    unpinned = with_instance(local_node, commands=["touch /root/must-not-run"])
    del unpinned["ssh"]["host_keys"]
    result = local_node.step("ssh:run", clipboard=unpinned)
    assert result.returncode == 1 and "run ssh:hostkeys" in result.stderr
    assert not (local_node.tree / "root/must-not-run").exists()


def test_keys_pinned_to_another_node_are_not_used(local_node: LocalNode) -> None:
    """The node's own keys, but pinned for another node id: log in to nothing."""
    moved = with_instance(local_node, commands=["touch /root/must-not-run"])
    moved["ssh"]["host_keys_node"] = "local-other-000000000000"
    result = local_node.step("ssh:run", clipboard=moved)
    assert result.returncode == 1 and "belong to node 'local-other-000000000000'" in result.stderr
    assert not (local_node.tree / "root/must-not-run").exists()


def test_connect_and_run_helpers(local_node: LocalNode) -> None:
    status, out, err = sshclient.run(local_node.clipboard, "hostname; echo oops >&2; exit 3", 10)
    assert (status, out, err) == (3, "loki\n", "oops\n")
    with sshclient.connect(local_node.clipboard) as client:
        assert sshclient.run(local_node.clipboard, "id -u", 10, client=client)[1] == "0\n"
        assert sshclient.run(local_node.clipboard, "echo again", 10, client=client)[1] == "again\n"
    with pytest.raises(StepFailed, match="did not finish within 0.5s"):
        sshclient.run(local_node.clipboard, "sleep 5", 0.5)


def test_run_checks_every_exit_status_and_logs_output(local_node: LocalNode) -> None:
    clip = with_instance(local_node, commands=["echo first-output", "exit 7", "touch /root/never"])
    result = local_node.step("ssh:run", clipboard=clip)
    assert result.returncode == 1
    assert "| first-output" in result.stderr and "exited 7" in result.stderr
    assert not (local_node.tree / "root/never").exists()
    ok = local_node.step("ssh:run", clipboard=with_instance(local_node, commands=["true"]))
    assert ok.returncode == 0, ok.stderr


def test_keygen_creates_roots_key_once(local_node: LocalNode) -> None:
    first = output(local_node.step("ssh:keygen"))
    public = first["ssh"]["root_public_key"]
    assert public.startswith("ssh-ed25519 ") and public.endswith(" root@loki.websages.com")
    on_node = (local_node.tree / "root/.ssh/id_ed25519.pub").read_text().strip()
    assert on_node == public
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(local_node.tree / "root/.ssh/id_ed25519")],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    assert derived.split()[1] == public.split()[1]
    second = output(local_node.step("ssh:keygen", clipboard=first))
    assert second["ssh"]["root_public_key"] == public
    assert not Path("/root/.ssh/id_ed25519.pub").exists() or \
        Path("/root/.ssh/id_ed25519.pub").read_text().strip() != public


def test_mounts_are_ensured_in_the_nodes_fstab_only(local_node: LocalNode) -> None:
    mounts = [{"device": "jarvis-test-opt", "mountpoint": "/opt", "fstype": "tmpfs",
               "options": "size=1m"}]
    clip = with_instance(local_node, mounts=mounts)
    for _ in range(2):
        result = local_node.step("ssh:mounts", clipboard=clip)
        assert result.returncode == 0, result.stderr
    fstab = (local_node.tree / "etc/fstab").read_text().splitlines()
    assert fstab.count("jarvis-test-opt /opt tmpfs size=1m 0 0") == 1
    status, mounted, _ = sshclient.run(local_node.clipboard, "grep ' /opt ' /proc/mounts", 10)
    assert status == 0 and mounted.count("jarvis-test-opt /opt tmpfs") == 1
    assert "jarvis-test-opt" not in Path("/proc/mounts").read_text()
    changed = with_instance(local_node, mounts=[{**mounts[0], "options": "size=2m"}])
    assert local_node.step("ssh:mounts", clipboard=changed).returncode == 0
    fstab = (local_node.tree / "etc/fstab").read_text()
    assert "size=2m" in fstab and "size=1m" not in fstab


def test_bad_mount_entries_are_refused_clearly(local_node: LocalNode) -> None:
    clip = with_instance(local_node, mounts=[{"device": "x", "mountpoint": "opt; rm -rf /"}])
    result = local_node.step("ssh:mounts", clipboard=clip)
    assert result.returncode == 1 and "mountpoint must be" in result.stderr


def test_kernel_is_recorded_and_a_different_one_installed_by_the_configured_commands(
        local_node: LocalNode) -> None:
    running = output(local_node.step("ssh:kernel"))["ssh"]["kernel"]
    status, uname, _ = sshclient.run(local_node.clipboard, "uname -r", 10)
    assert status == 0 and running == {"running": uname.strip(), "boot": uname.strip(),
                                       "reboot_needed": False}
    same = with_instance(local_node, kernel=uname.strip())
    assert output(local_node.step("ssh:kernel", clipboard=same))["ssh"]["kernel"] == running

    wanted = with_instance(local_node, kernel="6.1.0-99-amd64")
    unconfigured = local_node.step("ssh:kernel", clipboard=wanted)
    assert unconfigured.returncode == 1
    assert "ssh.kernel_install is not configured" in unconfigured.stderr
    # Stand-ins for the package manager and the boot loader, run on the node as root.
    config = {**local_node.config, "ssh": {
        **local_node.config["ssh"], "kernel_install": "echo {kernel} > /root/kernel-installed",
        "kernel_boot": "echo {kernel} > /root/kernel-default"}}
    installed = output(local_node.step("ssh:kernel", clipboard=wanted, config=config))
    assert installed["ssh"]["kernel"] == {"running": uname.strip(), "boot": "6.1.0-99-amd64",
                                          "reboot_needed": True}
    for name in ("kernel-installed", "kernel-default"):
        assert (local_node.tree / "root" / name).read_text() == "6.1.0-99-amd64\n"


def test_a_kernel_name_that_is_not_a_release_is_refused(local_node: LocalNode) -> None:
    result = local_node.step("ssh:kernel", clipboard=with_instance(local_node, kernel="6.1; reboot"))
    assert result.returncode == 1 and "must be a kernel release" in result.stderr
