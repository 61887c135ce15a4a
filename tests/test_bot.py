"""The bot end to end through its chat interface: deploy, status, history, clipboard,
the per-host lock, dry runs, refusals before anything runs, cancel, rollback, retry
and redaction. Everything behind the test adapter is real: fork server, worker
processes, SQLite."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.testing import TestBot
from clipboard import config as config_mod
from tests.aio import LoopThread, bot_in_thread
from tests.site import CORE_PIPELINES

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis

WORKERS = Path(__file__).parent / "workers"
SEED = (Path(__file__).parent / "data" / "seed.yaml")


def write_config(tmp: Path, **extra: Any) -> Path:
    data = {
        "store": {"path": str(tmp / "jarvis.db")},
        "runner": {"worker_dirs": [str(WORKERS)], "kill_grace": 0.5},
        "pipelines": {
            **CORE_PIPELINES,
            "slow": {"steps": ["core:validate", "shellworker:sleepy", "core:randpass"]},
            "undoable": {"rollback": True, "steps": [
                "core:validate", "core:randpass",
                {"step": "shellworker:record", "undo": "shellworker:unrecord"},
                "shellworker:flaky", "core:keypair"]},
            "leaky": {"steps": ["core:validate", "core:randpass", "shellworker:leak"]},
            "remove": {"ends_as": "decommissioned", "steps": ["core:validate"]},
            "broken": {"steps": ["core:validate", "nosuch:step"]},
        },
    }
    data.update(extra)
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def design(tmp: Path, hostname: str, **instance: Any) -> Path:
    path = tmp / f"{hostname}.yaml"
    path.write_text(yaml.safe_dump({"instance": {"hostname": hostname, "fqdn": f"{hostname}.example.com",
                                                 "provider": "local", **instance},
                                    "notes": {"marks": str(tmp), "sleep": 30}}))
    return path


@pytest.fixture(scope="module")
def tb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopThread, TestBot, Path]]:
    tmp = tmp_path_factory.mktemp("bot")
    with bot_in_thread(config_mod.load(write_config(tmp))) as (loop, bot):
        yield loop, bot, tmp


def converse(tb, *script: tuple[str, str], timeout: float = 30) -> list[str]:
    """Say each line and wait for its expected answer; return the answers."""
    loop, bot, _ = tb

    async def go() -> list[str]:
        answers = []
        for text, pattern in script:
            answers.append(await bot.ask(text, pattern, timeout))
        return answers
    return loop.run(go(), timeout + 10)


def test_seed_design_deploys_and_is_queryable(tb) -> None:
    loop, bot, _tmp = tb
    converse(tb, (f"jarvis: deploy {SEED}", r"^loki: deployment #\d+ started: pipeline deploy, 3 steps$"))
    loop.run(bot.expect(r"^loki: ready in \S+ \(3 steps\)$"))
    converse(tb, ("jarvis, status loki", r"^loki: ready"))
    loop.run(bot.expect(r"^steps: 1\.core:validate \S+, 2\.core:randpass \S+, 3\.core:keypair"))
    converse(tb, ("history loki", r"^loki: \d+ deployment"))
    line = loop.run(bot.expect(r"^#\d+ .* ready in .*pipeline deploy by console:tester from file"))
    assert str(SEED.resolve()) in line and "sha256:" in line


def test_clipboard_is_shown_redacted_per_step(tb) -> None:
    loop, bot, _ = tb
    converse(tb, (f"deploy {SEED}", "started"))
    loop.run(bot.expect("loki: ready"))
    converse(tb, ("clipboard loki", r"clipboard of #\d+, latest"))
    lines = loop.run(bot.lines_until(r"private_key: '\*\*\*'"))
    assert any("root_password: '***'" in l for l in lines)
    assert not any("BEGIN OPENSSH" in l for l in lines)
    converse(tb, ("clipboard loki 1", r"after step 1"))
    lines = loop.run(bot.lines_until(r"sshpubkey: ssh-dss"))
    assert not any("root_password" in l for l in lines), "step 1 ran before randpass"
    converse(tb, ("clipboard loki core:randpass", r"after step 2"))
    loop.run(bot.expect(r"root_password: '\*\*\*'"))


def test_second_deploy_of_a_running_host_is_refused_naming_the_first(tb) -> None:
    loop, bot, tmp = tb
    path = design(tmp, "busy")
    ack = converse(tb, (f"deploy {path} pipeline=slow", r"busy: deployment #(\d+) started"))[0]
    number = re.search(r"#(\d+)", ack).group(1)
    loop.run(bot.poll("status busy", r"^busy: running step 2/3 shellworker:sleepy \(\S+\)$"))
    refusal = converse(tb, (f"deploy {path}", r"^busy is being deployed by #"))[0]
    assert f"#{number} (jarvis test on host " in refusal and "step 2/3" in refusal
    converse(tb, ("cancel busy", r"busy: cancelling deployment #" + number))
    loop.run(bot.expect(r"^busy: cancelled at step 2/3 by console:tester$"))
    converse(tb, ("status busy",
                  r"^busy: cancelled at step 2/3 shellworker:sleepy by console:tester$"),
             ("history busy", (r"^#\d+ .* cancelled in \S+, pipeline slow by console:tester .*; "
                               r"cancelled by console:tester$")))


def test_dry_run_shows_steps_and_clipboard_and_runs_nothing(tb) -> None:
    loop, bot, tmp = tb
    path = design(tmp, "dry", root_password="s3cret-s3cret")
    converse(tb, (f"deploy {path} --dry-run", (r"dry: dry run of pipeline deploy, would run 3 "
                                               r"steps: core:validate, core:randpass, core:keypair")))
    lines = loop.run(bot.lines_until(r"root_password: '\*\*\*'"))
    assert not any("s3cret" in l for l in lines)
    converse(tb, ("status dry", "^dry: never deployed$"))


@pytest.mark.parametrize("command, answer", [
    ("deploy {tmp}/missing.yaml", r"cannot read .*missing.yaml: no such file"),
    ("deploy {bad} pipeline=nosuch", r"no pipeline named 'nosuch' \(configured: "),
    ("deploy {bad} pipeline=broken", r"unknown step 'nosuch:step'"),
    ("deploy {evil}", r"hostname 'x; rm -rf /' contains forbidden characters"),
    ("deploy {notyaml}", r"not valid YAML"),
    ("status ../etc", r"hostname '../etc' contains forbidden characters"),
    ("frobnicate loki", r"unknown command 'frobnicate'"),
])
def test_bad_input_is_refused_before_anything_runs(tb, command: str, answer: str) -> None:
    _loop, _bot, tmp = tb
    evil = tmp / "evil.yaml"
    evil.write_text(yaml.safe_dump({"instance": {"hostname": "x; rm -rf /"}}))
    notyaml = tmp / "notyaml.yaml"
    notyaml.write_text("instance: [oops\n")
    bad = design(tmp, "refused")
    converse(tb, (command.format(tmp=tmp, bad=bad, evil=evil, notyaml=notyaml), answer))
    converse(tb, ("status refused", "^refused: never deployed$"))


def test_failure_rolls_back_and_retry_starts_over_from_the_first_clipboard(tb) -> None:
    loop, bot, tmp = tb
    marks = tmp / "rb"
    marks.mkdir()
    path = tmp / "rb.yaml"
    path.write_text(yaml.safe_dump({"instance": {"hostname": "rb"}, "notes": {"marks": str(marks)}}))
    converse(tb, (f"deploy {path} pipeline=undoable", "started"))
    loop.run(bot.expect(r"^rb: FAILED at step 4/5 shellworker:flaky after \S+: "
                        r"flaky: first attempt fails \(exit status 1\) — rolling back$"))
    loop.run(bot.expect(r"^rb: undid step 3 with shellworker:unrecord"))
    loop.run(bot.expect(r"^rb: rolled back \(1 undos\)$"))
    assert (marks / "undone").exists() and not (marks / "recorded").exists()
    converse(tb, ("status rb", (r"^rb: rolled back \(1 undos\) after FAILED at step 4/5 "
                                r"shellworker:flaky after \S+: flaky: first attempt fails")))
    loop.run(bot.expect(r"^rb: rolled back: shellworker:unrecord ok$"))
    converse(tb, ("history rb", "deployment"))
    loop.run(bot.expect(r"rolled back in \S+, pipeline undoable .*; rolled back: shellworker:unrecord ok"))
    store = bot.bot.store
    first = loop.run(store.latest("rb"))
    initial = loop.run(store.initial_clipboard(first.id))
    converse(tb, ("retry rb", (r"^rb: retrying deployment #\d+ from step 1 with the design as "
                               r"first fetched, since attempt 1 was rolled back \(attempt 2\)$")))
    loop.run(bot.expect(r"^rb: ready in"))
    assert (marks / "recorded").exists()
    steps = loop.run(store.steps(first.id))
    assert [(s.attempt, s.kind, s.name) for s in steps if s.name.startswith("core:validate")
            ] == [(1, "step", "core:validate"), (2, "step", "core:validate")]
    after_first = loop.run(store.clipboard(first.id, 1))
    assert after_first["instance"] == {**initial["instance"], **after_first["instance"]}
    assert after_first["jarvis"] == initial["jarvis"] and initial["jarvis"]["deployment"] == first.id
    converse(tb, ("status rb", r"^rb: ready in \S+ \(5 steps\)$"))
    line = loop.run(bot.expect(r"^steps: "))
    assert line.count("core:validate") == 1 and "undo" not in line
    converse(tb, ("history rb", r"deployment"))
    loop.run(bot.expect(r"ready in \S+, pipeline undoable by console:tester .*; attempt 1 "
                        r"rolled back \(rolled back: shellworker:unrecord ok\), retried by "
                        r"console:tester from step 1$"))


def test_retry_resumes_from_the_failed_step_with_its_clipboard(tb) -> None:
    loop, bot, tmp = tb
    marks = tmp / "rt"
    marks.mkdir()
    path = tmp / "rt.yaml"
    path.write_text(yaml.safe_dump({"instance": {"hostname": "rt"}, "notes": {"marks": str(marks)}}))
    config = bot.bot.config
    config.data["pipelines"]["undoable"]["rollback"] = False
    try:
        converse(tb, (f"deploy {path} pipeline=undoable", "started"))
        loop.run(bot.expect(r"^rt: FAILED at step 4/5"))
    finally:
        config.data["pipelines"]["undoable"]["rollback"] = True
    store = bot.bot.store
    first = loop.run(store.latest("rt"))
    password = loop.run(store.clipboard(first.id, 2))["instance"]["root_password"]
    converse(tb, ("retry rt", r"^rt: retrying deployment #\d+ from step 4 \(attempt 2\)$"))
    loop.run(bot.expect(r"^rt: ready in"))
    steps = loop.run(store.steps(first.id))
    assert [s.name for s in steps].count("shellworker:flaky") == 2
    assert [s.name for s in steps].count("core:randpass") == 1
    final = loop.run(store.clipboard(first.id))
    assert final["instance"]["root_password"] == password


def test_secrets_echoed_by_a_worker_never_reach_chat(tb) -> None:
    loop, bot, tmp = tb
    path = design(tmp, "leaky")
    converse(tb, (f"deploy {path} pipeline=leaky", "started"))
    line = loop.run(bot.expect(r"^leaky: FAILED at step 3/3 shellworker:leak"))
    assert "login as root:*** refused" in line
    store = bot.bot.store
    deployment = loop.run(store.latest("leaky"))
    password = loop.run(store.clipboard(deployment.id))["instance"]["root_password"]
    assert len(password) >= 24
    assert not any(password in seen for seen in bot.seen)
    steps = loop.run(store.steps(deployment.id))
    assert not any(password in l for s in steps for l in s.stderr_tail)


def test_a_host_a_pipeline_removed_reads_decommissioned_not_ready(tb) -> None:
    loop, bot, tmp = tb
    path = design(tmp, "gone1", datacenter="gonezone")
    converse(tb, (f"deploy {path}", r"^gone1: deployment #\d+ started"))
    loop.run(bot.expect(r"^gone1: ready in"))
    converse(tb, (f"deploy {path} pipeline=remove", r"^gone1: deployment #\d+ started"))
    loop.run(bot.expect(r"^gone1: decommissioned in \S+ \(1 steps\)$"))
    converse(tb, ("status gone1", r"^gone1: decommissioned in "),
             ("status datacenter=gonezone", r"^datacenter=gonezone: 0/1 ready, 1 decommissioned$"))


def test_pipelines_workers_and_help(tb) -> None:
    converse(tb, ("pipelines", r"^deploy, rollback on: core:validate → core:randpass → core:keypair"),
             ("workers", r"core:randpass — "),
             ("help deploy", r"^deploy <file\|https URL"))


def test_a_locked_host_starts_nothing_until_unlocked_and_the_lock_outlives_a_restart(
        tmp_path: Path) -> None:
    config = config_mod.load(write_config(tmp_path))
    host, other = design(tmp_path, "lok1"), design(tmp_path, "lok2")
    cluster = tmp_path / "pair.yaml"
    cluster.write_text(yaml.safe_dump({"cluster": "pair", "defaults": {"provider": "local"},
                                       "hosts": [{"hostname": "lok1"}, {"hostname": "lok2"}]}))
    reason = "kernel upgrade by hand, don't touch (force=no)"
    held = rf"lok1 is locked by console:tester since \S+ \S+ UTC: {re.escape(reason)}"
    with bot_in_thread(config) as (loop, bot):
        tb = (loop, bot, tmp_path)
        converse(tb, (f"lock lok1 {reason}", (r"^lok1: locked; no deployment of it starts until "
                                              r"unlock lok1$")),
                 ("lock lok1 mine now", rf"^{held} already$"),
                 (f"deploy {host}", rf"^{held}; unlock lok1 first$"),
                 (f"deploy {cluster}", rf"^{held}; nothing was started$"),
                 ("status lok1", r"^lok1: never deployed$"))
        loop.run(bot.expect(rf"^{held}$"))
        loop.run(bot.ask("lock lok2", r"^lock denied for irc:alice", identity="irc:alice"))
        converse(tb, (f"deploy {other}", r"^lok2: deployment #\d+ started"))
        loop.run(bot.expect(r"^lok2: ready"))
    with bot_in_thread(config) as (loop, bot):
        tb = (loop, bot, tmp_path)
        converse(tb, (f"deploy {host}", rf"^{held}; unlock lok1 first$"),
                 ("lock", rf"^{held}$"),
                 ("unlock lok1", (rf"^lok1: unlocked \(it was locked by console:tester: "
                                  rf"{re.escape(reason)}\)$")),
                 ("unlock lok1", r"^lok1 is not locked$"),
                 ("lock", r"^no host is locked$"),
                 (f"deploy {host}", r"^lok1: deployment #\d+ started"))
        loop.run(bot.expect(r"^lok1: ready"))
