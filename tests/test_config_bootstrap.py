"""config:bootstrap over real SSH to a real local-provider node (busybox sh commands)."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.servers.local_node import LocalNode
from tests.silos import output


def configured(node: LocalNode, **section: Any) -> dict[str, Any]:
    return {**node.config, "configmgmt": {"timeout": 20, **section}}


def test_command_runs_on_the_node_and_is_recorded(local_node: LocalNode) -> None:
    command = "echo converged > /root/bootstrap-ran; hostname"
    result = local_node.step("config:bootstrap",
                             config=configured(local_node, command=command))
    out = output(result)
    assert out["configmgmt"] == {"program": "echo", "kind": None, "exit_status": 0}
    assert "| loki" in result.stderr
    assert (local_node.tree / "root/bootstrap-ran").read_text() == "converged\n"


@pytest.mark.parametrize("kind, codes, status, ok", [
    ("puppet", [0], 2, True),
    ("puppet", [0], 0, True),
    ("puppet", [0], 4, False),
    ("puppet", [0], 6, False),
    (None, [0], 2, False),
    (None, [0, 3], 3, True),
])
def test_exit_status_is_judged_by_kind_and_success_codes(
        local_node: LocalNode, kind: str | None, codes: list[int], status: int, ok: bool) -> None:
    command = f"echo step output >&2; sh -c 'exit {status}'"
    result = local_node.step("config:bootstrap", config=configured(
        local_node, command=command, kind=kind, success_codes=codes))
    assert (result.returncode == 0) is ok, result.stderr
    assert "Traceback" not in result.stderr
    if not ok:
        assert f"exited {status}" in result.stderr and "step output" in result.stderr
        if kind == "puppet":
            assert "resources failed" in result.stderr
    kept = yaml.safe_load(result.stdout)   # a failing worker still prints what it did
    assert kept["configmgmt"]["exit_status"] == status


def test_timeout_bounds_the_command(local_node: LocalNode) -> None:
    result = local_node.step("config:bootstrap",
                             config=configured(local_node, command="sleep 30", timeout=1))
    assert result.returncode == 1
    assert "did not finish within 1s" in result.stderr


def test_not_configured_runs_nothing(local_node: LocalNode) -> None:
    result = local_node.step("config:bootstrap", config=local_node.config)
    assert result.returncode == 0 and result.stdout == ""
    assert "configuration management not configured" in result.stderr
