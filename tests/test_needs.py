"""What steps need (``@task(needs=...)``), as the catalog carries it and as a plan checks it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from clipboard import config as config_mod
from clipboard import needs
from clipboard.worker import task
from tests.silos import output, run_worker


def catalog(tmp_path: Path, settings: dict[str, Any] | None) -> dict[str, Any]:
    """The catalog a bot on ``settings`` (None: the embedded default) would learn."""
    env = {k: v for k, v in os.environ.items() if k != config_mod.ENV_VAR}
    if settings is not None:
        path = tmp_path / "jarvis.yaml"
        path.write_text(yaml.safe_dump(settings))
        env[config_mod.ENV_VAR] = str(path)
    done = subprocess.run([sys.executable, "-m", "clipboard.forkserver", "--catalog"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)["tasks"]


def steps(name: str) -> list[str]:
    return [s if isinstance(s, str) else s["step"]
            for s in config_mod.defaults()["pipelines"][name]["steps"]]


EVERYTHING = {"dns": {"server": "127.0.0.1"}, "ldap": {"url": "ldap://127.0.0.1"},
              "keys": {"repository": "file:///nowhere"}}


@pytest.mark.servers
def test_unconfigured_silos_need_nothing(tmp_path: Path) -> None:
    tasks = catalog(tmp_path, None)
    assert {name: info["needs"] for name, info in tasks.items() if info["needs"]} == {}
    assert needs.missing({"instance": {"hostname": "thor"}}, steps("deploy"), tasks,
                         "deploy") == []


@pytest.mark.servers
def test_configured_silos_say_what_they_need(tmp_path: Path) -> None:
    tasks = catalog(tmp_path, EVERYTHING)
    paths = {name: [n["path"] for n in info["needs"]] for name, info in tasks.items()
             if info["needs"]}
    assert paths == {"dnswizard:update_host": ["node.ip", "instance.fqdn"],
                     "dnswizard:delete_host": ["instance.fqdn"],
                     "ldapworker:update_host_ou": ["node.ip"],
                     "keys:publish": ["ssh.root_public_key"]}
    with_zone = catalog(tmp_path, {**EVERYTHING, "dns": {"server": "127.0.0.1",
                                                         "zone": "example.com"}})
    assert [n["path"] for n in with_zone["dnswizard:update_host"]["needs"]] == ["node.ip"]


@pytest.mark.servers
def test_the_shipped_pipelines_provide_what_their_steps_need(tmp_path: Path) -> None:
    """Every silo configured, a design with an fqdn: each step's needs come from an earlier
    step, so the order of the shipped pipelines is checked too."""
    tasks = catalog(tmp_path, EVERYTHING)
    design = {"instance": {"hostname": "thor", "fqdn": "thor.example.com"}}
    for name in ("deploy", "redeploy", "decommission"):
        assert needs.missing(design, steps(name), tasks, name) == [], name
    bare = {"instance": {"hostname": "thor"}}
    assert needs.missing(bare, steps("decommission"), tasks, "decommission") == [
        ("instance.fqdn is missing (needed by dnswizard:delete_host): set it in the design, "
         "or set dns.zone (or designs.domain) to derive it")]


def test_a_field_is_met_by_the_design_or_an_earlier_step_only() -> None:
    tasks = {"a:make": {"writes": ["node"], "needs": []},
             "a:use": {"writes": [], "needs": [{"path": "node.ip", "hint": ""},
                                               {"path": "instance.rack", "hint": ""}]},
             "core:validate": {"writes": ["instance"], "needs": []}}
    design = {"instance": {"hostname": "thor"}}
    assert needs.missing(design, ["core:validate", "a:use", "a:make"], tasks, "p") == [
        "node.ip is missing (needed by a:use): no step before a:use in pipeline p writes node",
        "instance.rack is missing (needed by a:use): set it in the design"]
    assert needs.missing({"instance": {"hostname": "thor", "rack": "r1"}},
                         ["a:make", "a:use"], tasks, "p") == []
    assert needs.missing({"instance": {"hostname": "thor", "rack": ""}},
                         ["a:make", "a:use"], tasks, "p") == [
        "instance.rack is missing (needed by a:use): set it in the design"]


def test_needs_is_a_tuple_not_a_string() -> None:
    with pytest.raises(TypeError, match="needs is a tuple of fields"):
        task(needs="node.ip")(lambda clipboard: None)


@pytest.mark.servers
def test_validate_derives_the_fqdn_from_the_configured_domain(tmp_path: Path) -> None:
    clip = {"instance": {"hostname": "Thor"}}
    derived = output(run_worker("core:validate", clip, {"dns": {"zone": "example.com."}},
                                tmp_path))
    assert derived["instance"]["fqdn"] == "thor.example.com"
    domain = output(run_worker("core:validate", clip, {"designs": {"domain": "corp.example"},
                                                       "dns": {"zone": "example.com"}}, tmp_path))
    assert domain["instance"]["fqdn"] == "thor.corp.example"
    kept = output(run_worker("core:validate", {"instance": {"hostname": "thor",
                                                            "fqdn": "thor.other.org"}},
                             {"dns": {"zone": "example.com"}}, tmp_path))
    assert kept["instance"]["fqdn"] == "thor.other.org"
    assert "fqdn" not in output(run_worker("core:validate", clip, {}, tmp_path))["instance"]
