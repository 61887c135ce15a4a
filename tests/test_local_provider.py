"""The local provider against reality: a real sshd in its own namespaces, driven
through the worker contract in fresh processes (so every step is a "restart")."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from clipboard import config
from clipboard.errors import StepFailed
from tests.servers.local_node import (
    DEPLOY_STEPS,
    LocalNode,
    cleanup,
    deploy,
    design,
    local_config,
    require_local_provider,
)
from tests.silos import output
from workers import _localroot, _localsshd, _localstate

PORT = config.defaults()["providers"]["local"]["port"]
JARVIS = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "jarvis"


def banner(ip: str, port: int = PORT) -> bytes:
    with socket.create_connection((ip, port), timeout=2) as sock:
        sock.settimeout(2)
        return sock.recv(64)


def listening(ip: str, port: int = PORT) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def keyscan(ip: str) -> str:
    """The host keys the node really serves, as ssh-keyscan sees them (sorted lines)."""
    out = subprocess.run(["ssh-keyscan", "-T", "5", "-p", str(PORT), ip], capture_output=True,
                         text=True, timeout=20).stdout
    return "".join(sorted(line.split(" ", 1)[1] + "\n" for line in out.splitlines()
                          if line and not line.startswith("#")))


def test_deploy_records_a_running_node_on_its_own_loopback_address(local_node: LocalNode) -> None:
    node = local_node.clipboard["node"]
    assert node["provider"] == "local" and node["state"] == "running"
    assert node["name"] == "loki" and node["id"].startswith("local-loki-")
    address = ipaddress.ip_address(node["ip"])
    assert address in ipaddress.ip_network("127.0.0.0/8") and node["ip"] != "127.0.0.1"
    assert node["ssh_host"] == node["ip"] and node["ssh_port"] == PORT
    assert banner(node["ip"]).startswith(b"SSH-2.0-OpenSSH")
    state = json.loads((local_node.state_dir / "loki" / "node.json").read_text())
    assert state["ip"] == node["ip"] and state["id"] == node["id"]


def test_host_keys_are_fresh_and_of_three_types(local_node: LocalNode) -> None:
    served = keyscan(local_node.clipboard["node"]["ip"])
    types = {line.split()[0] for line in served.splitlines()}
    assert types == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}
    rsa = (local_node.tree / "etc/ssh/ssh_host_rsa_key.pub").read_text().split()[1]
    assert rsa in served
    machine_key = Path("/etc/ssh/ssh_host_ed25519_key.pub")
    if machine_key.exists():
        assert machine_key.read_text().split()[1] not in served


def test_seed_dsa_key_is_written_with_a_warning_not_a_crash(local_node: LocalNode) -> None:
    authorized = (local_node.tree / "root/.ssh/authorized_keys").read_text().splitlines()
    assert authorized[0] == local_node.clipboard["deploy_key"]["public_key"]
    assert authorized[1].startswith("ssh-dss ")
    assert "OpenSSH 9 refuses DSA" in local_node.logs["local:deploy"]
    assert "Traceback" not in local_node.logs["local:deploy"]


def test_roots_password_on_the_node_is_the_clipboards(local_node: LocalNode) -> None:
    entry = (local_node.tree / "etc/shadow").read_text().splitlines()[0].split(":")
    assert entry[0] == "root" and entry[1].startswith("$6$")
    salt = entry[1].split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
                           input=local_node.clipboard["instance"]["root_password"] + "\n",
                           capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    assert again == entry[1]
    assert local_node.clipboard["instance"]["root_password"] not in local_node.logs["local:deploy"]


def test_the_node_has_its_own_hostname_files_and_mounts(local_node: LocalNode) -> None:
    machine_hostname = socket.gethostname()
    marker = "/root/jarvis-isolation-marker"
    commands = ["hostname", f"touch {marker}", "mount -t tmpfs jarvis-isolation /mnt",
                "ip link set lo down 2>&1 || echo refused"]
    clip = {**local_node.clipboard,
            "instance": {**local_node.clipboard["instance"], "commands": commands}}
    result = local_node.step("ssh:run", clipboard=clip)
    assert result.returncode == 0, result.stderr
    assert "| loki\n" in result.stderr
    assert socket.gethostname() == machine_hostname != "loki"
    assert not Path(marker).exists()
    assert (local_node.tree / marker.lstrip("/")).exists()
    assert "jarvis-isolation" not in Path("/proc/mounts").read_text()
    assert "| refused" in result.stderr
    assert ",UP" in subprocess.run(["ip", "link", "show", "lo"], capture_output=True,
                                   text=True, timeout=10).stdout


def test_deploy_again_keeps_the_running_node(local_node: LocalNode) -> None:
    before = keyscan(local_node.clipboard["node"]["ip"])
    pid = json.loads((local_node.state_dir / "loki/node.json").read_text())["sshd_pid"]
    again = output(local_node.step("local:deploy"))
    assert again["node"] == local_node.clipboard["node"]
    assert keyscan(again["node"]["ip"]) == before
    assert json.loads((local_node.state_dir / "loki/node.json").read_text())["sshd_pid"] == pid


@pytest.mark.servers
def test_poweroff_deploy_destroy_each_from_a_fresh_process(tmp_path: Path) -> None:
    require_local_provider()
    state_dir = tmp_path / "state"
    node = LocalNode(local_config(state_dir), state_dir, tmp_path, design("thor"))
    try:
        deploy(node, DEPLOY_STEPS[:4])
        ip = node.clipboard["node"]["ip"]
        keys = keyscan(ip)
        assert keys
        off = output(node.step("local:poweroff"))
        assert off["node"]["state"] == "stopped" and not listening(ip)
        assert (state_dir / "thor/tree/etc/ssh/ssh_host_rsa_key").exists()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind((ip, PORT))
            squatter.listen()
            powered_on = node.step("local:deploy", clipboard=off)
        on = output(powered_on)
        assert "is taken by another process" in powered_on.stderr
        moved = on["node"]["ip"]
        assert moved != ip and on["node"]["id"] == off["node"]["id"] and keyscan(moved) == keys
        pid = json.loads((state_dir / "thor/node.json").read_text())["pid"]
        gone = output(node.step("local:destroy", clipboard=on))
        assert gone["node"]["state"] == "destroyed"
        assert not listening(moved) and not (state_dir / "thor").exists()
        assert not _localsshd.alive(pid)
        again = node.step("local:destroy", clipboard=gone)
        assert again.returncode == 0 and "nothing to destroy" in again.stderr
    finally:
        cleanup(state_dir)


@pytest.mark.servers
def test_missing_prerequisites_are_named(tmp_path: Path) -> None:
    config = local_config(tmp_path / "state")
    config["providers"]["local"]["busybox"] = str(tmp_path / "no-busybox")
    clip = {"instance": {"hostname": "nobox", "provider": "local"}}
    result = LocalNode(config, tmp_path / "state", tmp_path, clip).step("local:deploy")
    assert result.returncode == 1
    assert "missing" in result.stderr and "no-busybox" in result.stderr
    assert "busybox-static" in result.stderr and "Traceback" not in result.stderr


def test_allocation_skips_recorded_and_busy_addresses(tmp_path: Path) -> None:
    require_local_provider()
    first = next(_localstate.candidates("odin"))
    other = tmp_path / "frigg"
    other.mkdir()
    (other / "node.json").write_text(json.dumps({"ip": first}))
    second = _localstate.allocate(tmp_path, "odin")
    assert second != first
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind((second, PORT))
        busy.listen()
        third = _localstate.allocate(tmp_path, "odin")
    assert third not in (first, second)
    for ip in (first, second, third):
        address = ipaddress.ip_address(ip)
        assert address in ipaddress.ip_network("127.0.0.0/8")
        assert address not in ipaddress.ip_network("127.0.0.0/24")


def test_writes_into_the_tree_never_follow_a_planted_symlink(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "root").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tree / "root" / ".ssh").symlink_to(outside)
    with pytest.raises(StepFailed, match="symlink"):
        _localroot.write_file(tree, "root/.ssh/authorized_keys", "ssh-ed25519 AAAA x\n")
    assert list(outside.iterdir()) == []


@pytest.mark.servers
def test_a_design_node_cannot_make_decommission_touch_another_host(tmp_path: Path) -> None:
    """The old hole: ``node: {provider: local, name: victim}`` in mallory's design, deployed
    with pipeline=decommission, stopped victim's node and deleted its state. Two real
    nodes: the design is refused before anything runs, and the workers, handed such a
    clipboard anyway, act only on mallory's own node."""
    require_local_provider()
    state_dir = tmp_path / "state"
    victim = LocalNode(local_config(state_dir), state_dir, tmp_path, design("victim"))
    mallory = LocalNode(local_config(state_dir), state_dir, tmp_path, design("mallory"))
    try:
        deploy(victim, DEPLOY_STEPS[:4])
        deploy(mallory, DEPLOY_STEPS[:4])
        victim_node = json.loads((state_dir / "victim/node.json").read_text())

        evil = {"instance": {"hostname": "mallory", "provider": "local"},
                "node": {"provider": "local", "name": "victim", "id": victim_node["id"]}}
        path = tmp_path / "evil.yaml"
        path.write_text(yaml.safe_dump(evil))
        config_file = tmp_path / "jarvis.yaml"
        config_file.write_text(yaml.safe_dump({**local_config(state_dir),
                                               "store": {"path": str(tmp_path / "jarvis.db")}}))
        cli = subprocess.run([str(JARVIS), "deploy", str(path), "--pipeline", "decommission",
                              "--config", str(config_file)], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "XDG_STATE_HOME": str(tmp_path)})
        assert cli.returncode == 2 and cli.stdout == "", cli.stdout + cli.stderr
        assert re.fullmatch(r"jarvis: `node` is written by the step node:create"
                            r"( \(and \d+ other steps\))?; a design may not set it\n", cli.stderr)
        assert listening(victim_node["ip"]) and listening(mallory.clipboard["node"]["ip"])

        forged = {**mallory.clipboard, "node": evil["node"]}
        for step in ("node:poweroff", "node:destroy", "local:destroy"):
            refused = mallory.step(step, clipboard=forged)
            assert refused.returncode == 1
            assert (f"the clipboard's node '{victim_node['id']}' is not mallory's local node"
                    in refused.stderr), refused.stderr
        assert listening(mallory.clipboard["node"]["ip"])
        by_name = {**mallory.clipboard, "node": {"provider": "local", "name": "victim"}}
        gone = output(mallory.step("node:destroy", clipboard=by_name))
        assert gone["node"]["name"] == "mallory" and gone["node"]["state"] == "destroyed"
        assert not (state_dir / "mallory").exists()

        assert json.loads((state_dir / "victim/node.json").read_text()) == victim_node
        assert banner(victim_node["ip"]).startswith(b"SSH-2.0-OpenSSH")
        assert _localsshd.is_running(victim_node, state_dir / "victim" / "tree")
    finally:
        cleanup(state_dir)


@pytest.mark.servers
def test_a_state_directory_naming_another_node_is_not_touched(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    (state_dir / "mallory").mkdir(parents=True)
    planted = {"id": "local-victim-0123456789ab", "name": "victim", "ip": "127.0.9.9", "pid": None}
    (state_dir / "mallory" / "node.json").write_text(json.dumps(planted))
    node = LocalNode(local_config(state_dir), state_dir, tmp_path, design("mallory"))
    result = node.step("local:destroy", clipboard={"instance": {"hostname": "mallory"}})
    assert result.returncode == 1
    assert "records the node 'victim', not mallory: not touched" in result.stderr
    assert (state_dir / "mallory" / "node.json").exists()
