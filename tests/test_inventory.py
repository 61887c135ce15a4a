"""inventory:production_check: the design flag, an LDAP attribute on a real slapd, force."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.servers.slapd import Slapd
from tests.silos import output, run_worker


def design(hostname: str, **instance: Any) -> dict[str, Any]:
    return {"instance": {"hostname": hostname, "fqdn": f"{hostname}.example.com", **instance}}


def test_production_flag_stops_redeploy(tmp_path: Path) -> None:
    result = run_worker("inventory:production_check", design("loki", production=True), {},
                        tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "loki is marked production (design flag instance.production); "
        "redeploy with force=true to proceed")


@pytest.mark.parametrize("clip", [
    design("loki", production=True, force=True),
    {**design("loki", production=True), "force": "true"},
])
def test_force_lets_production_through(clip: dict[str, Any], tmp_path: Path) -> None:
    out = output(run_worker("inventory:production_check", clip, {}, tmp_path))
    assert out["inventory"] == {"production": True, "forced": True,
                                "reasons": ["design flag instance.production"]}


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
    forced = output(run_worker("inventory:production_check", design("prod1", force=True), config,
                               tmp_path))
    assert forced["inventory"]["forced"] is True


def test_unreachable_directory_fails_closed(slapd: Slapd, tmp_path: Path) -> None:
    config = {"ldap": slapd.settings(url="ldap://127.0.0.1:1", timeout=2),
              "inventory": {"ldap_attribute": "description"}}
    result = run_worker("inventory:production_check", design("prod2"), config, tmp_path)
    assert result.returncode == 1
    assert "cannot tell whether prod2 is production" in result.stderr
    assert "Traceback" not in result.stderr
