"""inventory:production_check: the design flag, an LDAP attribute on a real slapd, force.

``force`` counts only where the engine records the operator's word (``jarvis.force``);
the clipboards here carry ``jarvis:`` the way the engine hands it to a worker."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.servers.slapd import Slapd
from tests.silos import output, run_worker

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis


def design(hostname: str, **instance: Any) -> dict[str, Any]:
    return {"instance": {"hostname": hostname, "fqdn": f"{hostname}.example.com", **instance}}


def forced(clip: dict[str, Any], force: Any = True,
           approved_by: str | None = "console:second") -> dict[str, Any]:
    """The clipboard as the engine hands it on after ``deploy … force`` and ``approve``
    by a second identity (``approved_by=None``: the lone force, never approved)."""
    approval = {"approved_by": approved_by, "approved_at": 1.0} if approved_by else {}
    return {**clip, "jarvis": {"deployment": 7, "pipeline": "redeploy", "force": force,
                               "requested_by": "console:ops", **approval}}


def test_production_flag_stops_redeploy(tmp_path: Path) -> None:
    result = run_worker("inventory:production_check", design("loki", production=True), {},
                        tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "loki is marked production (design flag instance.production); "
        "redeploy with force=true to proceed")


def test_the_operators_force_lets_production_through(tmp_path: Path) -> None:
    out = output(run_worker("inventory:production_check", forced(design("loki", production=True)),
                            {}, tmp_path))
    assert out["inventory"] == {"production": True, "forced": True,
                                "reasons": ["design flag instance.production"],
                                "approved_by": "console:second"}


@pytest.mark.parametrize("clip", [
    design("loki", production=True, force=True),
    {**design("loki", production=True), "force": True},
    {**design("loki", production=True), "force": "true"},
    forced(design("loki", production=True), force="true"),
    forced(design("loki", production=True), force=False),
    {**design("loki", production=True), "jarvis": "force"},
])
def test_force_written_anywhere_but_jarvis_force_true_is_ignored(clip: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    result = run_worker("inventory:production_check", clip, {}, tmp_path)
    assert result.returncode == 1
    assert "loki is marked production (design flag instance.production)" in result.stderr
    if "force" in clip or "force" in clip["instance"]:
        assert "is ignored: force is said by the operator" in result.stderr


def test_unmarked_host_passes(tmp_path: Path) -> None:
    out = output(run_worker("inventory:production_check", design("thor", production=False), {},
                            tmp_path))
    assert out["inventory"]["production"] is False


def test_ldap_attribute_marks_production(slapd: Slapd, tmp_path: Path) -> None:
    slapd.add_host("prod1", description="production")
    slapd.add_host("dev1", description="scratch box")
    config = {"ldap": slapd.settings(), "inventory": {"ldap_attribute": "description"}}
    stopped = run_worker("inventory:production_check", design("prod1"), config, tmp_path)
    assert stopped.returncode == 1
    assert ("prod1 is marked production (ldap description='production'); "
            "redeploy with force=true to proceed") in stopped.stderr
    for clip in (design("dev1"), design("absent1")):
        out = output(run_worker("inventory:production_check", clip, config, tmp_path))
        assert out["inventory"]["production"] is False
    unforced = run_worker("inventory:production_check", design("prod1", force=True), config,
                          tmp_path)
    assert unforced.returncode == 1 and "prod1 is marked production (ldap" in unforced.stderr
    through = output(run_worker("inventory:production_check", forced(design("prod1")), config,
                                tmp_path))
    assert through["inventory"]["forced"] is True


def test_unreachable_directory_fails_closed(slapd: Slapd, tmp_path: Path) -> None:
    config = {"ldap": slapd.settings(url="ldap://127.0.0.1:1", timeout=2),
              "inventory": {"ldap_attribute": "description"}}
    result = run_worker("inventory:production_check", design("prod2"), config, tmp_path)
    assert result.returncode == 1
    assert "cannot tell whether prod2 is production" in result.stderr
    assert "Traceback" not in result.stderr
