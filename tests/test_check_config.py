"""Every mistake a person can make in a configuration, a design or the store's file
is one line naming it, never a traceback: ``jarvis check-config`` (ranges, steps that
no worker provides, ACL warnings), empty sections, strict YAML, a damaged store."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from bot.acl import Acl
from clipboard import config as config_mod
from clipboard import ranges
from tests.test_cli import ROOT, SEED, WORKERS, clean_env, jarvis


def _problems(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line]


@pytest.mark.servers
def test_check_config_names_every_problem_on_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "jarvis.yaml"
    path.write_text(yaml.safe_dump({
        "chat": {"irc": {"port": 70000, "rate": 0}},
        "clusters": {"max_hosts": 0},
        "store": {"lease_seconds": -5},
        "runner": {"step_timeout": 0, "step_limits": {"ssh:kernel": -1},
                   "worker_dirs": [str(tmp_path / "nowhere")], "default_pipeline": "nosuch"},
        "providers": {"vsphere": {"flavors": {"huge": {"cpus": 0, "ram": 1024, "disk": 1}}}},
        "pipelines": {"mine": {"steps": [
            "core:validate", "core:randpas", "nomodule:task", "not a step",
            {"step": "node:create", "undo": "node:unmake"}]},
            "other": {"ends_as": "done", "steps": [{"step": "core:validate", "undo": 5}]}},
    }))
    result = jarvis("check-config", str(path), env=clean_env(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    expected = [
        "chat.irc.port is 70000; it must be at least 1 and at most 65535",
        "chat.irc.rate is 0; it must be more than 0 and at most 1000",
        "clusters.max_hosts is 0; it must be at least 1 and at most 100000",
        "store.lease_seconds is -5; it must be at least 3 and at most 3600",
        "runner.step_timeout is 0; it must be more than 0 and at most 604800",
        "runner.step_limits.ssh:kernel is -1; it must be at least 0 and at most 100000",
        "providers.vsphere.flavors.huge.cpus is 0; it must be at least 1 and at most 1024",
        f"runner.worker_dirs[0] {tmp_path / 'nowhere'} is not a directory",
        "runner.default_pipeline 'nosuch' is not a configured pipeline",
        "pipelines.mine.steps[1]: worker module 'core' has no task 'randpas' (it has: ",
        ("pipelines.mine.steps[2]: unknown step 'nomodule:task': no Python task and no "
         "executable 'nomodule' in the worker directories"),
        "pipelines.mine.steps[3]: 'not a step' is not a step name of the form module:task",
        "pipelines.mine.steps[4].undo: worker module 'node' has no task 'unmake'",
        "pipelines.other.ends_as is 'done'; it is one of ready, decommissioned",
        "pipelines.other.steps[0]: undo is a step name, module:task",
    ]
    lines = _problems(result.stderr)
    for wanted in expected:
        assert sum(f"jarvis: {path}: {wanted}" in line for line in lines) == 1, (wanted, lines)
    assert len(lines) == len(expected), lines


@pytest.mark.servers
def test_check_config_names_a_section_only_its_type_refuses_and_who_reads_it(
        tmp_path: Path) -> None:
    """The schema takes any text for silence_id_format; MonitoringSettings does not, and
    the monitoring worker declares it reads that section."""
    path = tmp_path / "jarvis.yaml"
    path.write_text(yaml.safe_dump({"monitoring": {"silence_id_format": "ulid"},
                                    "ldap": {"timeout": 5}}))
    result = jarvis("check-config", str(path), env=clean_env(tmp_path))
    assert result.returncode == 2
    assert _problems(result.stderr) == [
        (f"jarvis: {path}: monitoring.silence_id_format is 'ulid'; it is one of uuid, safe "
         "(read by the worker module monitoring)")]
    run = jarvis("status", "loki", "--config", str(path), env=clean_env(tmp_path))
    assert run.returncode != 0 and "monitoring.silence_id_format is 'ulid'" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.servers
def test_check_config_passes_executables_in_worker_dirs_and_keeps_acl_warnings(
        tmp_path: Path) -> None:
    path = tmp_path / "jarvis.yaml"
    path.write_text(yaml.safe_dump({
        "runner": {"worker_dirs": [str(WORKERS)]},
        "acl": {"deploy": {"allow": ["irc:alice!*@*"]}},
        "pipelines": {"slow": {"steps": ["core:validate", "shellworker:sleepy",
                                         "wait:host thor ready"]}}}))
    result = jarvis("check-config", str(path), env=clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: ok (1 warning)\n"
    warning, = _problems(result.stderr)
    assert warning.startswith(f"jarvis: {path}: warning: acl.deploy.allow 'irc:alice!*@*' grants")


@pytest.mark.servers
def test_a_key_twice_in_the_configuration_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "jarvis.yaml"
    path.write_text("chat:\n  irc:\n    port: 6667\n    nick: j\n    port: 6697\n")
    for args in (("check-config", str(path)), ("status", "loki", "--config", str(path))):
        result = jarvis(*args, env=clean_env(tmp_path))
        assert result.returncode == 2
        assert _problems(result.stderr) == [
            f"jarvis: {path} has the key 'port' twice (lines 3 and 5)"]


@pytest.mark.servers
def test_a_key_twice_in_a_design_is_refused_before_anything_runs(tmp_path: Path) -> None:
    design = tmp_path / "loki.yaml"
    design.write_text("instance:\n  hostname: loki\n  hostname: thor\n")
    result = jarvis("deploy", str(design), "--dry-run", env=clean_env(tmp_path))
    assert result.returncode == 2
    assert _problems(result.stderr) == [
        f"jarvis: the design from {design} has the key 'hostname' twice (lines 2 and 3)"]


@pytest.mark.servers
def test_an_acl_rule_for_no_command_is_refused_by_check_config_and_at_start(
        tmp_path: Path) -> None:
    """The schema's rule template takes any name, so a typo (``deplyo``) used to leave
    ``deploy`` on its default without a word."""
    path = tmp_path / "jarvis.yaml"
    path.write_text("acl:\n  deplyo: {allow: ['account:alice']}\n  status: {deny: []}\n"
                    f"store:\n  path: {tmp_path / 'jarvis.db'}\n")
    known = ("deploy, approve, status, history, clipboard, logs, diff, cancel, retry, lock, "
             "unlock, pipelines, workers, help, force, watch")
    check = jarvis("check-config", str(path), env=clean_env(tmp_path))
    assert check.returncode == 2
    assert _problems(check.stderr) == [
        f"jarvis: {path}: acl.deplyo is not a command; the rules are for: {known}"]
    run = jarvis("status", "loki", "--config", str(path), env=clean_env(tmp_path))
    assert run.returncode == 2
    assert _problems(run.stderr) == [
        f"jarvis: acl.deplyo is not a command; the rules are for: {known}"]


@pytest.mark.servers
def test_empty_sections_mean_their_defaults(tmp_path: Path) -> None:
    """``acl:`` with every rule commented out used to replace the default rules with
    nothing, so even ``status`` was denied; ``sources: ~`` left no settings at all."""
    path = tmp_path / "jarvis.yaml"
    path.write_text("chat:\n  irc:\n  console:\nsources: ~\nacl:\npipelines:\n"
                    f"store:\n  path: {tmp_path / 'jarvis.db'}\n")
    check = jarvis("check-config", str(path), env=clean_env(tmp_path))
    assert check.returncode == 0, check.stderr
    run = jarvis("run", "--config", str(path), env=clean_env(tmp_path), stdin="status loki\n")
    assert run.returncode == 0, run.stderr
    assert "loki: never deployed" in run.stdout
    assert _problems(run.stderr) == []


@pytest.mark.servers
def test_an_empty_value_with_a_default_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "jarvis.yaml"
    path.write_text("runner:\n  step_timeout:\nclipboard:\n  max_bytes: ~\n")
    result = jarvis("deploy", str(SEED), "--config", str(path), env=clean_env(tmp_path))
    assert result.returncode == 2
    assert _problems(result.stderr) == [
        (f"jarvis: {path}: runner.step_timeout is empty; set it (int) or remove the line for "
         "the default 300; clipboard.max_bytes is empty; set it (int) or remove the line for "
         "the default 1048576")]


@pytest.mark.servers
def test_a_wrong_type_where_the_default_is_null_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "jarvis.yaml"
    path.write_text("store:\n  path: [somewhere]\nrunner:\n  worker_dirs: [5]\n")
    result = jarvis("status", "loki", "--config", str(path), env=clean_env(tmp_path))
    assert result.returncode == 2
    assert _problems(result.stderr) == [
        (f"jarvis: {path}: store.path must be str, not list; runner.worker_dirs[0] must be str, "
         "not int")]


@pytest.mark.servers
def test_a_configuration_path_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    for args in (("check-config", str(tmp_path)), ("status", "loki", "--config", str(tmp_path))):
        result = jarvis(*args, env=clean_env(tmp_path))
        assert result.returncode == 2
        assert _problems(result.stderr) == [
            f"jarvis: cannot read configuration {tmp_path}: Is a directory"]


@pytest.mark.servers
def test_a_store_that_is_not_a_database_is_one_line_naming_it(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    store = tmp_path / "state" / "jarvis" / "jarvis.db"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"this is not SQLite\n" * 100)
    for args in (("status", "loki"), ("deploy", str(SEED)), ("deploy", str(SEED), "--dry-run")):
        result = jarvis(*args, env=env)
        assert result.returncode == 2, result.stdout
        assert _problems(result.stderr) == [
            (f"jarvis: the store {store} cannot be used: file is not a database (a damaged or "
             "foreign file: move it away to start a new store)")]


def _damage(store: Path, *names: str) -> None:
    """Overwrite the root pages of these tables and indexes; page 1 (the schema, all
    that opening the store reads) is left, so the damage is found by a later query."""
    conn = sqlite3.connect(store)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    marks = ", ".join("?" for _ in names)
    roots = [row[0] for row in conn.execute(
        f"SELECT rootpage FROM sqlite_master WHERE name IN ({marks})", names)]
    conn.close()
    assert len(roots) == len(names)
    with store.open("r+b") as f:
        for root in roots:
            f.seek((root - 1) * page_size)
            f.write(b"\xff" * page_size)


@pytest.mark.servers
def test_a_store_damaged_past_its_schema_is_one_line_when_read_or_written(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    assert jarvis("status", "loki", env=env).returncode == 1  # creates the store
    store = tmp_path / "state" / "jarvis" / "jarvis.db"
    _damage(store, "deployments", "deployments_by_host")
    for args in (("status", "loki"), ("history", "loki"), ("deploy", str(SEED))):
        result = jarvis(*args, env=env)
        assert result.returncode == 2, result.stdout
        assert _problems(result.stderr) == [
            (f"jarvis: the store {store} cannot be used: database disk image is malformed "
             "(a damaged or foreign file: move it away to start a new store)")], args


@pytest.mark.servers
def test_a_store_damaged_under_a_running_deployment_fails_it_in_one_line(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    assert jarvis("status", "loki", env=env).returncode == 1
    store = tmp_path / "state" / "jarvis" / "jarvis.db"
    _damage(store, "steps")
    result = jarvis("deploy", str(SEED), env=env)
    assert result.returncode == 1
    damaged = (f"the store {store} cannot be used: database disk image is malformed (a damaged "
               "or foreign file: move it away to start a new store)")
    assert f"loki: FAILED: {damaged}" in result.stdout
    logged, = _problems(result.stderr)
    assert logged.endswith(f"ERROR clipboard.drive: deployment #1 of loki stopped: {damaged}")


@pytest.mark.parametrize("where", ["file/jarvis.db", "file/deeper/jarvis.db"])
@pytest.mark.servers
def test_a_store_path_under_a_file_is_one_line(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "jarvis.yaml"
    path.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / where)}}))
    result = jarvis("status", "loki", "--config", str(path), env=clean_env(tmp_path))
    assert result.returncode == 2
    assert _problems(result.stderr) == [
        (f"jarvis: the store {tmp_path / where} cannot be created: {tmp_path / 'file'} is not "
         "a directory (fix store.path)")]


def test_every_numeric_key_has_a_range_that_its_default_lies_in() -> None:
    def numbers(node: object, prefix: str = "") -> list[tuple[str, float]]:
        found = []
        for key, value in (node.items() if isinstance(node, dict) else []):
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                found += numbers(value, path)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                found.append((path, value))
        return found

    found = numbers(config_mod.defaults())
    assert len(found) > 50
    for path, value in found:
        allowed = ranges.range_of(path)
        assert allowed is not None, f"{path} has no range in clipboard/ranges.py"
        assert allowed.allows(value), (path, value)
    assert config_mod.validate(config_mod.read_file(ROOT / "config.example.yaml")) == []


@pytest.mark.parametrize("user, problem", [
    ({"ssh": {"wait_timeout": float("nan")}}, "ssh.wait_timeout is nan; it must be more than 0"),
    ({"dns": {"port": 0}}, "dns.port is 0; it must be at least 1 and at most 65535"),
    ({"providers": {"ec2": {"port": 99999}}}, "providers.ec2.port is 99999; it must be at least 1"),
    ({"runner": {"kill_grace": True}}, "runner.kill_grace must be int, not bool"),
    ({"chat": {"xmpp": {"rooms": None}}}, "chat.xmpp.rooms is empty; set it (list)"),
    ({"store": {"path": 5}}, "store.path must be str, not int"),
    ({"chat": {"irc": {"password": 1234}}}, "chat.irc.password must be str, not int"),
    ({"providers": {"ec2": {"port": "443"}}}, "providers.ec2.port must be int, not str"),
    ({"runner": {"worker_dirs": ["/w", 5]}}, "runner.worker_dirs[1] must be str, not int"),
    ({"acl": {"deploy": {"allow": [True]}}}, "acl.deploy.allow[0] must be str, not bool"),
    ({"configmgmt": {"success_codes": [0, "2"]}},
     "configmgmt.success_codes[1] must be int, not str"),
])
def test_validate_refuses_out_of_range_and_empty_values(user: dict, problem: str) -> None:
    problems = config_mod.validate(user)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_null_entries_of_free_form_mappings_still_drop_a_default() -> None:
    user = {"sources": {"ldap": {"attributes": {"description": None}}},
            "runner": {"step_limits": {"ssh:kernel": None}}, "acl": None}
    assert config_mod.validate(user) == []
    merged = config_mod.merge(config_mod.defaults(), user)
    assert merged["sources"]["ldap"]["attributes"]["description"] is None
    status = Acl(merged["acl"]).rules["status"]   # the declared default, not replaced by nothing
    assert status["allow"] == ["*"]
