"""What a design may say (clipboard/schema.py): the seed deploys as written, and every key
a step writes or the operator decides is refused before anything runs — in the
validator, in cluster expansion, and through ``jarvis deploy FILE --dry-run`` as a
person runs it, with one line naming the key and where such a key comes from."""
from __future__ import annotations

import io
import re
import subprocess
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from clipboard import cluster as cluster_mod
from clipboard import config as config_mod
from clipboard import document, schema, worker
from clipboard.errors import DesignError
from clipboard.validate import normalize_design

ROOT = Path(__file__).resolve().parents[1]
JARVIS = ROOT / ".venv" / "bin" / "jarvis"
SEED = Path(__file__).parent / "data" / "seed.yaml"
HOST = {"hostname": "loki", "fqdn": "loki.example.com", "provider": "local"}


def config(**data: Any) -> config_mod.Config:
    return config_mod.Config(config_mod.merge(config_mod.defaults(), data))


DEFAULT = config()


def refused(design: dict[str, Any], cfg: config_mod.Config = DEFAULT,
            tasks: dict[str, Any] | None = None) -> str:
    """The one line a design is refused with; ``tasks`` is the catalog (default: none, as
    a bot that plans before it knows the workers: the fixed reserved keys still hold)."""
    tasks = {} if tasks is None else tasks
    with pytest.raises(DesignError) as info:
        if cluster_mod.is_cluster(design):
            cluster_mod.expand(design, cfg, tasks=tasks)
        else:
            normalize_design(design, tasks, cfg)
    return str(info.value)


# ---- single designs -------------------------------------------------------------------------

def test_the_seed_deploys_as_written_and_keys_are_case_insensitive() -> None:
    seed = normalize_design(document.load(SEED.read_text()), config=DEFAULT)
    assert seed == {"instance": {
        "hostname": "loki", "fqdn": "loki.websages.com", "provider": "linode",
        "guestid": "Debian 6", "datacenter": "Atlanta", "size": 512,
        "gitosis-admin": "gitosis@example.com:gitosis-admin.git",
        "sshpubkey": "ssh-dss AAAA... user@host"}}
    shouted = normalize_design({"INSTANCE": {"HostName": "Loki", "Production": "yes",
                                             "Commands": ["uptime"]},
                                "Notes": {"ticket": "OPS-1", "why": ["rebuild"]}}, config=DEFAULT)
    assert shouted == {"instance": {"hostname": "loki", "production": "yes",
                                    "commands": ["uptime"]},
                       "notes": {"ticket": "OPS-1", "why": ["rebuild"]}}


@pytest.mark.parametrize("extra, message", [
    ({"node": {"provider": "local", "name": "victim"}},
     "`node` is written by the step node:create; a design may not set it"),
    ({"Node": {"id": "i-0123"}}, "`node` is written by the step node:create"),
    ({"monitoring": {"suppressed": True, "silence_id": "../../../admin/wipe?all=true&x="}},
     "`monitoring` is written by the step monitoring:suppress; a design may not set it"),
    ({"ssh": {"host_keys": {}}}, "`ssh` is written by the step ssh:hostkeys"),
    ({"deploy_key": {"private_key": "x"}}, "`deploy_key` is written by the step core:keypair"),
    ({"dns": {"name": "victim.example.com"}}, "`dns` is written by the step dnswizard:update_host"),
    ({"ldap": {"dn": "cn=victim"}}, "`ldap` is written by the step ldapworker:update_host_ou"),
    ({"keys": {}}, "`keys` is written by the step keys:publish"),
    ({"inventory": {}}, "`inventory` is written by the step inventory:production_check"),
    ({"configmgmt": {}}, "`configmgmt` is written by the step config:bootstrap"),
    ({"force": True}, "`force` is said by the operator (deploy … force), not written in a design"),
    ({"pipeline": ["nosuch:task"]}, "`pipeline` is chosen by the operator (pipeline=…)"),
    ({"jarvis": {"force": True}}, "`jarvis` is kept by jarvis itself"),
    ({"requested_by": "console:root"}, "`requested_by` is who said deploy"),
    ({"pipelines": {"x": []}}, ("`pipelines` is not something a design may say (a design holds "
                                "instance:, notes:; free-form data goes under notes:)")),
    ({"marks": "/tmp/x"}, "`marks` is not something a design may say"),
])
def test_a_key_steps_or_the_operator_write_is_refused_with_where_it_comes_from(
        extra: dict[str, Any], message: str) -> None:
    assert refused({"instance": HOST, **extra}).startswith(message)


@pytest.mark.parametrize("field, value, message", [
    ("force", True, "`instance.force` is said by the operator"),
    ("pipeline", "decommission", "`instance.pipeline` is chosen by the operator"),
    ("node", {"id": "x"}, "`instance.node` is not a field a design may set (fields: cluster,"),
    ("hostnme", "typo", "`instance.hostnme` is not a field a design may set"),
    ("commands", "rm -rf /", "`instance.commands` must be a list of text (read by ssh:run)"),
    ("mounts", {"device": "/dev/x"}, "`instance.mounts` must be a list of mappings"),
    ("production", ["yes"], "`instance.production` must be true or false"),
    ("size", {"ram": 4}, "`instance.size` must be text or a number (read by cloud)"),
])
def test_instance_fields_are_declared_and_shaped(field: str, value: Any, message: str) -> None:
    assert refused({"instance": {**HOST, field: value}}).startswith(message)


def test_the_operator_declares_their_own_fields() -> None:
    design = {"instance": {**HOST, "rack": "r12", "location": "Atlanta"}}
    assert refused(design).startswith("`instance.rack` is not a field a design may set")
    site = config(designs={"instance_fields": ["Rack"]},
                  sources={"ldap": {"attributes": {"l": "location"}}})
    assert normalize_design(design, config=site)["instance"]["rack"] == "r12"


def test_keys_a_loaded_worker_declares_are_refused_as_its_own() -> None:
    catalog = {"site:make": {"writes": ["widget"]}, "site:check": {"writes": ["widget"]},
               "node:create": {"writes": ["node"]}, "cloud:create": {"writes": ["node"]}}
    assert refused({"instance": HOST, "widget": 1}, tasks=catalog) == (
        "`widget` is written by the step site:check (and 1 other step); a design may not set it")
    assert refused({"instance": HOST, "widget": 1}, tasks={}).startswith(
        "`widget` is not something a design may say")
    assert refused({"instance": HOST, "node": 1}, tasks=catalog) == (
        "`node` is written by the step node:create (and 1 other step); a design may not set it")


def test_every_shipped_task_declares_what_it_writes_and_no_step_writes_a_design_key() -> None:
    tasks = worker.import_all()
    assert not worker.IMPORT_ERRORS, worker.IMPORT_ERRORS
    undeclared = sorted(name for name, info in tasks.items()
                        if name.split(":")[0] in worker.module_names() and info.writes is None)
    assert undeclared == []
    for name, info in tasks.items():
        for key in info.writes or ():
            top, _, field = key.partition(".")
            assert top != "notes", name
            if top == "instance":
                assert field == "" and name == "core:validate" or field in schema.FIELDS, name
            else:
                # refused even by a bot that plans before it has the catalog
                assert top in schema.RESERVED, (name, key)
    written = schema.written_by(worker.catalog()["tasks"])
    assert set(written) == set(schema.RESERVED)
    assert "node:create" in written["node"] and "local:deploy" in written["node"]


def test_a_task_that_writes_a_key_it_did_not_declare_fails(tmp_path: Path) -> None:
    def sneaky(clipboard: dict[str, Any]) -> dict[str, Any]:
        clipboard["node"] = {"id": "i-0123"}
        return clipboard
    sneaky.__module__ = "workers.testsite"
    worker.task(writes=("widget",))(sneaky)
    try:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = worker.run_task("testsite:sneaky", io.StringIO(yaml.safe_dump({
            "instance": HOST})), stdout, stderr)
    finally:
        del worker.REGISTRY["testsite:sneaky"]
    assert status == worker.EXIT_FAILED and stdout.getvalue() == ""
    assert stderr.getvalue() == ("testsite:sneaky: added or removed the top-level keys node, "
                                 "which it does not declare in @task(writes=...); refused\n")


def test_a_design_repository_is_checked_when_the_design_may_name_one() -> None:
    design = {"instance": {**HOST, "gitosis-admin": "file:///root/.ssh"}}
    assert normalize_design(design, config=DEFAULT)  # from_design off: recorded, never used
    trusting = config(keys={"from_design": True})
    assert refused(design, trusting).startswith("`instance.gitosis-admin` may not be a file://")
    design["instance"]["gitosis-admin"] = "gitosis@192.168.1.5:gitosis-admin.git"
    assert "192.168.1.5, which is not public" in refused(design, trusting)
    design["instance"]["gitosis-admin"] = "gitosis@git.example.com:gitosis-admin.git"
    assert normalize_design(design, config=trusting)


# ---- clusters ---------------------------------------------------------------------------------

def cluster(**top: Any) -> dict[str, Any]:
    return {"cluster": "shop", "defaults": {"provider": "local", "domain": "example.com"},
            "hosts": [{"hostname": "web{n}", "count": 2}], **top}


@pytest.mark.parametrize("design, message", [
    (cluster(node={"name": "victim"}), "`node` is written by the step node:create"),
    (cluster(force=True), "`force` is said by the operator"),
    (cluster(extra="x"), ("`extra` is not something a design may say (a cluster design holds "
                          "cluster:, defaults:, hosts:, instance:, name:, notes:, roles:")),
    (cluster(hosts=[{"hostname": "web1", "force": True}]), ("`hosts[0].force` is said by the "
                                                            "operator")),
    (cluster(hosts=[{"hostname": "web1", "node": {}}]), "`hosts[0].node` is not a field"),
    (cluster(defaults={"provider": "local", "monitoring": {}}), ("`defaults.monitoring` is not a "
                                                                "field")),
    (cluster(roles={"web": {"pipeline": "deploy", "instance": {"force": True}}}),
     "`roles.web.instance.force` is said by the operator"),
    (cluster(roles={"web": {"pipeline": "deploy", "node": {}}}), "roles.web: unknown keys ['node']"),
    (cluster(hosts=[{"hostname": "web{n}", "count": 100_000_000}]),
     "hosts[0]: count 100000000 is over clusters.max_hosts (2000)"),
    (cluster(hosts=[{"hostname": "a{n}", "count": 1500}, {"hostname": "b{n}", "count": 1500}]),
     "cluster shop lists more than 2000 hosts (clusters.max_hosts)"),
    (cluster(hosts=[{"hostname": "web{n}", "count": True}]), "hosts[0]: count must be a positive whole"),
])
def test_a_cluster_design_is_held_to_the_same_schema(design: dict[str, Any],
                                                     message: str) -> None:
    assert refused(design).startswith(message)


def test_cluster_sizes_are_arithmetic_not_expansion() -> None:
    huge = cluster(hosts=[{"hostname": f"h{i}x{{n}}", "count": 2000} for i in range(1000)])
    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = refused(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == "cluster shop lists more than 2000 hosts (clusters.max_hosts)"
    assert time.perf_counter() - started < 1 and peak < 1_000_000


def test_cluster_notes_reach_every_host() -> None:
    _, hosts = cluster_mod.expand(cluster(notes={"ticket": "OPS-9"}), DEFAULT)
    assert [h["notes"] for h, _, _ in hosts] == [{"ticket": "OPS-9"}] * 2
    assert all(set(h) == {"instance", "notes"} for h, _, _ in hosts)


# ---- the CLI, as a person runs it --------------------------------------------------------------

def dry_run(tmp_path: Path, design: dict[str, Any] | str, *extra: str,
            cfg: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "design.yaml"
    path.write_text(design if isinstance(design, str) else yaml.safe_dump(design))
    config_file = tmp_path / "jarvis.yaml"
    config_file.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "jarvis.db")},
                                           **(cfg or {})}))
    return subprocess.run([str(JARVIS), "deploy", str(path), "--dry-run", "--config",
                           str(config_file), *extra], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                             "XDG_STATE_HOME": str(tmp_path / "state")})


@pytest.mark.servers
def test_the_cli_dry_runs_the_seed(tmp_path: Path) -> None:
    result = dry_run(tmp_path, SEED.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("loki: dry run of pipeline deploy, would run 16 steps")


@pytest.mark.parametrize("design, line", [
    ({"instance": HOST, "node": {"provider": "local", "name": "victim"}},
     (r"`node` is written by the step node:create( \(and \d+ other steps\))?; "
      r"a design may not set it")),
    ({"instance": HOST, "force": True},
     r"`force` is said by the operator \(deploy … force\), not written in a design"),
    ({"instance": {**HOST, "production": True, "force": True}},
     r"`instance.force` is said by the operator \(deploy … force\), not written in a design"),
    ({"instance": HOST, "monitoring": {"suppressed": True,
                                       "silence_id": "../../../admin/wipe?all=true&x="}},
     r"`monitoring` is written by the step monitoring:suppress.*; a design may not set it"),
    ({"instance": HOST, "pipeline": ["nosuch:task"]},
     r"`pipeline` is chosen by the operator \(pipeline=…\)"),
    (cluster(hosts=[{"hostname": "web{n}", "count": 100_000_000}]),
     r"hosts\[0\]: count 100000000 is over clusters.max_hosts \(2000\)"),
])
@pytest.mark.servers
def test_the_cli_refuses_a_bad_design_with_one_line(tmp_path: Path, design: dict[str, Any],
                                                    line: str) -> None:
    started = time.monotonic()
    result = dry_run(tmp_path, design)
    assert result.returncode == 2 and result.stdout == "", result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("jarvis: ")
    assert re.fullmatch(line, result.stderr[len("jarvis: "):].strip()), result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "state" / "jarvis" / "local").exists()


@pytest.mark.servers
def test_the_cli_refuses_a_design_repository_when_designs_may_name_one(tmp_path: Path) -> None:
    design = {"instance": {**HOST, "gitosis-admin": "file:///root/.ssh"}}
    assert dry_run(tmp_path, design).returncode == 0
    result = dry_run(tmp_path, design, cfg={"keys": {"from_design": True}})
    assert result.returncode == 2
    assert result.stderr.startswith("jarvis: `instance.gitosis-admin` may not be a file:// URL")
