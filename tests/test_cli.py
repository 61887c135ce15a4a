"""The ``jarvis`` command as a person runs it: one-shot deploy, status, history,
check-config; resume after SIGKILL; and no secret in any output or log."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from clipboard import config as config_mod

ROOT = Path(__file__).resolve().parents[1]
SEED = Path(__file__).parent / "data" / "seed.yaml"
WORKERS = Path(__file__).parent / "workers"


def jarvis(*args: str, env: dict[str, str], stdin: str | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], input=stdin, text=True,
                          capture_output=True, env=env, cwd=ROOT, timeout=timeout)


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JARVIS_CONFIG"}
    env["XDG_STATE_HOME"] = str(tmp / "state")
    return env


@pytest.mark.servers
def test_embedded_default_deploys_the_seed_then_status_and_history_without_leaking_secrets(
        tmp_path: Path) -> None:
    """No configuration at all: the seed (provider Linode) deploys through the shipped
    pipeline on the local provider, which stands in for Linode on the embedded default."""
    env = clean_env(tmp_path)
    deploy = jarvis("deploy", str(SEED), "--log-level", "DEBUG", env=env)
    try:
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert "loki: ready in" in deploy.stdout
        status = jarvis("status", "loki", env=env)
        assert status.returncode == 0
        assert status.stdout.startswith("loki: ready in ")
        assert "steps: 1.core:validate " in status.stdout
        assert "5.node:create " in status.stdout and "10.ssh:kernel " in status.stdout \
            and "15.monitoring:enable" in status.stdout
        clip = jarvis("clipboard", "loki", env=env)
        assert "root_password: '***'" in clip.stdout and "stands_in_for: linode" in clip.stdout
    finally:
        gone = jarvis("deploy", str(SEED), "--pipeline", "decommission", env=env)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not (tmp_path / "state" / "jarvis" / "local" / "loki").exists()
    assert "loki: decommissioned in" in gone.stdout
    history = jarvis("history", "loki", env=env)
    assert "#1 " in history.stdout and "#2 " in history.stdout and str(SEED.resolve()) in history.stdout
    assert "decommissioned in" in history.stdout and "pipeline decommission" in history.stdout
    after = jarvis("status", "loki", env=env)
    assert after.returncode == 0 and after.stdout.startswith("loki: decommissioned in "), after.stdout

    db = tmp_path / "state" / "jarvis" / "jarvis.db"
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    stored = sqlite3.connect(db).execute(
        "SELECT yaml FROM clipboards WHERE deployment_id = 1 ORDER BY id DESC").fetchone()[0]
    secrets = yaml.safe_load(stored)
    password = secrets["instance"]["root_password"]
    private_lines = [l for l in secrets["deploy_key"]["private_key"].splitlines() if "-----" not in l]
    everything = (deploy.stdout + deploy.stderr + status.stdout + history.stdout + clip.stdout
                  + gone.stdout + gone.stderr)
    assert password not in everything
    assert not any(line in everything for line in private_lines)


@pytest.mark.servers
def test_check_config_names_unknown_keys_and_accepts_the_example(tmp_path: Path) -> None:
    ok = jarvis("check-config", str(ROOT / "config.example.yaml"), env=clean_env(tmp_path))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("runner:\n  step_timeout: soon\n  worker_dir: []\nbogus: 1\n")
    result = jarvis("check-config", str(bad), env=clean_env(tmp_path))
    assert result.returncode == 2
    assert "unknown key 'runner.worker_dir'" in result.stderr
    assert "unknown key 'bogus'" in result.stderr
    assert "runner.step_timeout must be int, not str" in result.stderr


def test_every_default_key_is_documented_in_the_example() -> None:
    example = config_mod.read_file(ROOT / "config.example.yaml")

    def keys(node: object, prefix: str = "") -> set[str]:
        if not isinstance(node, dict):
            return set()
        out = set()
        for key, value in node.items():
            if key == "*":
                continue
            path = f"{prefix}.{key}" if prefix else str(key)
            out.add(path)
            if path.split(".")[0] not in ("pipelines", "acl", "grades"):
                out |= keys(value, path)
        return out

    missing = keys(config_mod.defaults()) - keys(example)
    assert not missing, f"keys in clipboard/defaults.yaml not documented in config.example.yaml: {sorted(missing)}"


@pytest.mark.servers
def test_killed_jarvis_resumes_the_interrupted_step_on_restart(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    config = tmp_path / "jarvis.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(tmp_path / "jarvis.db")},
        "runner": {"worker_dirs": [str(WORKERS)]},
        "pipelines": {"slow": {"steps": ["core:validate", "core:randpass", "shellworker:sleepy",
                                         "core:keypair"]}}}))
    design = tmp_path / "thor.yaml"
    design.write_text(yaml.safe_dump({"instance": {"hostname": "thor"}, "notes": {"sleep": 1.5}}))
    first = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--config", str(config)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, cwd=ROOT)
    assert first.stdin is not None
    first.stdin.write(f"deploy {design} pipeline=slow\n")
    first.stdin.flush()
    db = tmp_path / "jarvis.db"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if db.exists() and _query(db, "SELECT count(*) FROM steps WHERE name ="
                                          " 'shellworker:sleepy' AND state = 'running'"):
                break
        except sqlite3.OperationalError:  # the file exists before jarvis creates its tables
            pass
        time.sleep(0.05)
    else:
        first.kill()
        raise AssertionError(f"step 3 never started: {first.communicate()}")
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()
    assert _query(db, "SELECT state FROM deployments") == "running"

    second = jarvis("run", "--config", str(config), env=env, stdin="", timeout=60)
    assert second.returncode == 0, second.stderr
    assert "thor: taking up deployment #1 at step 3/4" in second.stdout
    assert "thor: ready in" in second.stdout
    states = sqlite3.connect(db).execute(
        "SELECT name, state FROM steps WHERE deployment_id = 1 ORDER BY id").fetchall()
    assert states == [("core:validate", "ok"), ("core:randpass", "ok"),
                      ("shellworker:sleepy", "interrupted"), ("shellworker:sleepy", "ok"),
                      ("core:keypair", "ok")]
    versions = [row[0] for row in sqlite3.connect(db).execute(
        "SELECT after_step FROM clipboards WHERE deployment_id = 1 ORDER BY id")]
    assert versions == [0, 1, 2, 3, 4]
    password_before = yaml.safe_load(_query(db, "SELECT yaml FROM clipboards WHERE after_step = 2"))
    final = yaml.safe_load(_query(db, "SELECT yaml FROM clipboards WHERE after_step = 4"))
    assert final["instance"]["root_password"] == password_before["instance"]["root_password"]
    assert "deploy_key" in final


def _query(db: Path, sql: str) -> object:
    conn = sqlite3.connect(db, timeout=10)
    try:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None
    finally:
        conn.close()
