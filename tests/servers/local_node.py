"""A real host from the local provider, deployed once per test session.

The node is built the way a pipeline builds it — core:validate, core:randpass,
core:keypair, local:deploy, ssh:wait, ssh:hostkeys, each a fresh worker process
under the clipboard contract — from the seed design's shape (with its DSA
``sshpubkey``). Teardown runs local:destroy, then stops anything left behind.
Skipped, with the reason, where the local provider cannot run (not root, tools missing).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.silos import output, run_worker

SEED_DSA_KEY = ("ssh-dss AAAAB3NzaC1kc3MAAACBAPkYq2Kq7r0Jb0p0YqG4Ww4qF6iLp0Zz seed@example "
                "(the seed design's key shape)")
DEPLOY_STEPS = ["core:validate", "core:randpass", "core:keypair", "local:deploy", "ssh:wait",
                "ssh:hostkeys"]


@dataclass
class LocalNode:
    """One deployed node: its clipboard, the config workers see, and the logs of each step."""
    config: dict[str, Any]
    state_dir: Path
    work: Path
    clipboard: dict[str, Any]
    logs: dict[str, str] = field(default_factory=dict)

    def step(self, step: str, clipboard: dict[str, Any] | None = None,
             config: dict[str, Any] | None = None, timeout: float = 60):
        """Run one worker step against this node (a fresh process); the CompletedProcess."""
        return run_worker(step, self.clipboard if clipboard is None else clipboard,
                          self.config if config is None else config, self.work, timeout=timeout)

    @property
    def tree(self) -> Path:
        return self.state_dir / self.clipboard["instance"]["hostname"] / "tree"


def local_config(state_dir: Path) -> dict[str, Any]:
    return {"providers": {"local": {"state_dir": str(state_dir)}},
            "ssh": {"wait_interval": 0.05, "wait_timeout": 20}}


def design(hostname: str) -> dict[str, Any]:
    """The seed design's shape, on the local provider."""
    return {"instance": {"Hostname": hostname, "FQDN": f"{hostname}.websages.com",
                         "Provider": "Local", "guestid": "Debian 6", "datacenter": "Atlanta",
                         "size": 512, "sshpubkey": SEED_DSA_KEY}}


def deploy(node: LocalNode, steps: list[str] = DEPLOY_STEPS) -> None:
    for step in steps:
        result = node.step(step)
        node.logs[step] = result.stderr
        node.clipboard = output(result)


def cleanup(state_dir: Path) -> None:
    """Stop every node sshd still recorded under ``state_dir`` (after a failed destroy)."""
    from workers import _localsshd, _localstate
    if not state_dir.is_dir():
        return
    for host_dir in state_dir.iterdir():
        node = _localstate.read_node(host_dir) if host_dir.is_dir() else None
        if node:
            _localsshd.stop(host_dir, node)
    shutil.rmtree(state_dir, ignore_errors=True)


def require_local_provider() -> None:
    if os.geteuid() != 0:
        pytest.skip("the local provider needs root")
    missing = [tool for tool in ("unshare", "pivot_root", "sshd", "ssh-keygen", "setpriv")
               if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}")]
    if missing or not os.path.exists("/bin/busybox"):
        pytest.skip(f"the local provider needs {', '.join(missing) or 'busybox-static'}")


@pytest.fixture(scope="session")
def local_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    """The host 'loki' deployed on the local provider, host keys pinned."""
    require_local_provider()
    base = tmp_path_factory.mktemp("local-node")
    state_dir = base / "state"
    node = LocalNode(local_config(state_dir), state_dir, base, design("loki"))
    try:
        deploy(node)
        yield node
    finally:
        if "local:deploy" in node.logs or state_dir.exists():
            node.step("local:destroy")
        cleanup(state_dir)
