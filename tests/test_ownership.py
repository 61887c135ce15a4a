"""One owner per deployment, across real processes on one store: a ``jarvis run``
(its console on a pipe) and one-shot ``jarvis deploy`` commands. Locks hold for
both, a busy host is refused by the other naming the owner, a race starts exactly
one deployment, nobody takes over a live owner's deployment, a dead owner's is
taken up once, and a rollback killed at any undo finishes after a restart."""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from clipboard.errors import HostBusy
from clipboard.owner import Owner
from clipboard.records import State
from clipboard.store import Store
from tests.jarvis_process import Console, clean_env, kill_group, start

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis

WORKERS = Path(__file__).parent / "workers"
RACES = 50
UNDOS = ("a", "b", "c")


def write_config(tmp: Path) -> Path:
    config = tmp / "jarvis.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(tmp / "jarvis.db"), "lease_seconds": 3},
        "runner": {"worker_dirs": [str(WORKERS)], "kill_grace": 0.5},
        "pipelines": {
            "slow": {"steps": ["shellworker:sleepy", "shellworker:echo"]},
            "undoing": {"rollback": True, "steps": [
                *({"step": f"shellworker:mark-{x}", "undo": f"shellworker:unmark-{x}"}
                  for x in UNDOS), "shellworker:refuse"]}}}))
    return config


def design(tmp: Path, host: str, **extra: Any) -> Path:
    path = tmp / f"{host}.yaml"
    notes = {"marks": str(tmp), "sleep": 2, "undo_sleep": 0, **extra}
    path.write_text(yaml.safe_dump({"instance": {"hostname": host}, "notes": notes}))
    return path


def rows(tmp: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(tmp / "jarvis.db", timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait_for(check: Any, timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except sqlite3.OperationalError:  # the file exists a moment before its tables
            found = None
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


def deploy(tmp: Path, path: Path, env: dict[str, str], *extra: str
           ) -> subprocess.CompletedProcess[str]:
    process = start("deploy", str(path), "--config", str(tmp / "jarvis.yaml"), *extra, env=env)
    out, err = process.communicate(timeout=90)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    write_config(tmp_path)
    return tmp_path, clean_env(tmp_path)


def test_locks_and_busy_hosts_hold_between_the_bot_and_the_cli(site) -> None:
    tmp, env = site
    bot = Console(tmp / "jarvis.yaml", env)
    try:
        bot.ask("lock held kernel by hand", r"^held: locked")
        refused = deploy(tmp, design(tmp, "held"), env, "--pipeline", "slow")
        assert refused.returncode == 2
        assert "held is locked by console:" in refused.stderr and "kernel by hand" in refused.stderr
        status = start("status", "held", "--config", str(tmp / "jarvis.yaml"), env=env)
        out, _ = status.communicate(timeout=30)
        assert "held: never deployed" in out and "held is locked by console:" in out
        bot.ask(f"deploy {design(tmp, 'held')} pipeline=slow", r"^held is locked by ")

        bot.ask(f"deploy {design(tmp, 'busy', sleep=12)} pipeline=slow",
                r"^busy: deployment #\d+ started")
        wait_for(lambda: rows(tmp, "SELECT 1 FROM steps WHERE name = 'shellworker:sleepy'"
                                   " AND state = 'running'"), what="the bot's step")
        second = deploy(tmp, design(tmp, "busy"), env, "--pipeline", "slow")
        assert second.returncode == 2
        assert "busy is being deployed by #1 (jarvis run on host " in second.stderr
        assert f"pid {bot.process.pid}; step 1/2; requested by console:" in second.stderr

        cli = start("deploy", str(design(tmp, "clid", sleep=12)), "--config",
                    str(tmp / "jarvis.yaml"), "--pipeline", "slow", env=env)
        wait_for(lambda: rows(tmp, "SELECT 1 FROM deployments WHERE hostname = 'clid'"),
                 what="the CLI's deployment")
        answer = bot.ask(f"deploy {design(tmp, 'clid')} pipeline=slow", r"^clid is being")
        assert "(jarvis deploy on host " in answer and f"pid {cli.pid}" in answer
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 0, out + err
        bot.expect(r"^busy: ready")
    finally:
        bot.kill()
    assert rows(tmp, "SELECT hostname, count(*) FROM deployments GROUP BY hostname") == [
        ("busy", 1), ("clid", 1)]


def test_a_race_of_the_bot_and_the_cli_on_one_host_starts_exactly_one_deployment(site) -> None:
    """The CLI needs a second or so to reach the store; the bot is told to deploy the
    same host at offsets spread around that moment, so some rounds meet in the same
    instant. Whoever comes second is refused by the store, naming the first; only
    then is the winner cancelled (from the bot, wherever it runs), so the two
    attempts of a round always overlapped."""
    tmp, env = site
    bot = Console(tmp / "jarvis.yaml", env)
    try:
        started = time.monotonic()
        probe = deploy(tmp, design(tmp, "probe", sleep=0), env, "--pipeline", "slow")
        assert probe.returncode == 0, probe.stderr
        to_store = time.monotonic() - started - 0.3

        def race(i: int) -> tuple[int | None, str, str]:
            host = f"race{i}"
            path = design(tmp, host, sleep=60)
            cli = start("deploy", str(path), "--config", str(tmp / "jarvis.yaml"),
                        "--pipeline", "slow", env=env)
            time.sleep(max(0.0, to_store + (i % 10 - 5) * 0.06))
            bot.say(f"deploy {path} pipeline=slow")
            assert cli.stdout is not None
            cli.stdout.readline()  # its answer, or nothing when it was refused
            answer = bot.find(rf"^{host}(: deployment #\d+ started| is being deployed by)",
                              timeout=60)
            bot.say(f"cancel {host}")
            _out, err = cli.communicate(timeout=60)
            return cli.returncode, answer, err

        with ThreadPoolExecutor(5) as pool:
            outcomes = list(pool.map(race, range(RACES)))
        wait_for(lambda: not rows(tmp, "SELECT 1 FROM deployments WHERE state IN"
                                       " ('queued', 'running')"), what="every round to end")
    finally:
        bot.kill()
    counts = dict(rows(tmp, "SELECT hostname, count(*) FROM deployments WHERE hostname LIKE"
                            " 'race%' GROUP BY hostname"))
    assert counts == {f"race{i}": 1 for i in range(RACES)}, counts
    for code, answer, err in outcomes:
        bot_lost = "is being deployed by" in answer
        cli_lost = code == 2 and "is being deployed by" in err
        assert bot_lost != cli_lost, (code, answer, err)
    assert {state for (state,) in rows(tmp, "SELECT state FROM deployments WHERE hostname"
                                            " LIKE 'race%'")} == {State.CANCELLED}


def test_the_store_lets_exactly_one_of_two_processes_start_a_host() -> None:
    """The constraint itself, at full contention: two processes insert the same host
    at the same instant (a barrier), 50 times."""
    import multiprocessing
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "race.db"
        asyncio.run(_open_and_close(path))
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.starmap(_insert_many, [(path, which, RACES) for which in range(2)])
        wins = [a + b for a, b in zip(*results)]
        assert wins == [1] * RACES


async def _open_and_close(path: Path) -> None:
    store = Store(path)
    await store.open()
    await store.close()


def _insert_many(path: Path, which: int, rounds: int) -> list[int]:
    return asyncio.run(_race_rounds(path, which, rounds))


async def _race_rounds(path: Path, which: int, rounds: int) -> list[int]:
    store = Store(path)
    await store.open()
    owner = Owner.this_process(f"racer {which}")
    won = []
    try:
        for i in range(rounds):
            tick = 0.05  # both processes aim at the start of the same 50 ms tick
            await asyncio.sleep(tick - time.time() % tick + tick * (i % 2))
            try:
                await store.create_deployment(
                    hostname=f"h{i}", source="race", pipeline="p", steps=[], clipboard={},
                    owner=owner, lease_until=time.time() + 30)
                won.append(1)
            except HostBusy:
                won.append(0)
    finally:
        await store.close()
    return won


def test_a_bot_leaves_a_live_cli_alone_and_takes_up_a_dead_one_once(site) -> None:
    tmp, env = site
    cli = start("deploy", str(design(tmp, "thor", sleep=10)), "--config",
                str(tmp / "jarvis.yaml"), "--pipeline", "slow", env=env)
    wait_for(lambda: rows(tmp, "SELECT 1 FROM steps WHERE state = 'running'"), what="step 1")
    bot = Console(tmp / "jarvis.yaml", env)
    try:
        bot.ask("status thor", r"^thor: running step 1/2 shellworker:sleepy")
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 0, out + err
        assert rows(tmp, "SELECT name, state FROM steps ORDER BY id") == [
            ("shellworker:sleepy", "ok"), ("shellworker:echo", "ok")]
        assert rows(tmp, "SELECT json_extract(owner, '$.role'), state FROM deployments") == [
            ("jarvis deploy", "ready")]
    finally:
        bot.kill()

    cli = start("deploy", str(design(tmp, "loki", sleep=3)), "--config",
                str(tmp / "jarvis.yaml"), "--pipeline", "slow", env=env)
    wait_for(lambda: rows(tmp, "SELECT 1 FROM steps JOIN deployments AS d ON d.id ="
                               " deployment_id WHERE d.hostname = 'loki' AND steps.state ="
                               " 'running'"), what="loki's step 1")
    kill_group(cli)
    cli.wait(10)
    again = deploy(tmp, design(tmp, "loki"), env, "--pipeline", "slow")
    assert again.returncode == 2
    assert ("loki is being deployed by #2 (jarvis deploy on host " in again.stderr
            and f"pid {cli.pid}, which has stopped: the next jarvis start resumes it"
            in again.stderr), again.stderr
    bot = Console(tmp / "jarvis.yaml", env)
    try:
        bot.expect(r"^loki: taking up deployment #2 at step 1/2$")
        bot.expect(r"^loki: ready in")
        second = Console(tmp / "jarvis.yaml", env)
        second.ask("status loki", r"^loki: ready")
        second.kill()
    finally:
        bot.kill()
    assert rows(tmp, "SELECT name, state FROM steps WHERE deployment_id = 2 ORDER BY id") == [
        ("shellworker:sleepy", "interrupted"), ("shellworker:sleepy", "ok"),
        ("shellworker:echo", "ok")]
    assert "taking up" not in " ".join(second.seen)


@pytest.mark.parametrize("killed_at", range(len(UNDOS)))
def test_a_rollback_killed_at_any_undo_finishes_after_a_restart(site, killed_at: int) -> None:
    tmp, env = site
    path = design(tmp, "odin", undo_sleep=1.5)
    bot = Console(tmp / "jarvis.yaml", env)
    bot.ask(f"deploy {path} pipeline=undoing", r"^odin: deployment #1 started")
    wait_for(lambda: rows(tmp, "SELECT count(*) FROM steps WHERE kind = 'undo' AND state ="
                               " 'running'")[0][0] == 1
             and rows(tmp, "SELECT count(*) FROM steps WHERE kind = 'undo'")[0][0]
             == killed_at + 1, what=f"undo {killed_at + 1} running")
    started = tmp / f"undo-{UNDOS[::-1][killed_at]}"       # its process is past its start
    wait_for(lambda: started.exists() and "started" in started.read_text(),
             what=f"undo {killed_at + 1} started")
    bot.kill()
    assert rows(tmp, "SELECT state FROM deployments") == [(State.ROLLING_BACK,)]
    bot = Console(tmp / "jarvis.yaml", env)
    try:
        bot.expect(r"^odin: taking up the rollback of deployment #1 at step 4/4$")
        bot.expect(r"^odin: rolled back \(3 undos\)$", timeout=60)
        bot.ask("status odin", r"^odin: rolled back \(3 undos\) after FAILED at step 4/4 "
                               r"shellworker:refuse")
        line = bot.expect(r"^odin: rolled back: ")
    finally:
        bot.kill()
    assert line == ("odin: rolled back: shellworker:unmark-c ok; shellworker:unmark-b ok; "
                    "shellworker:unmark-a ok")
    assert rows(tmp, "SELECT state FROM deployments") == [(State.ROLLED_BACK,)]
    interrupted = UNDOS[::-1][killed_at]
    for x in UNDOS:
        runs = (tmp / f"undo-{x}").read_text().split()
        expected = ["started", "started", "done"] if x == interrupted else ["started", "done"]
        assert runs == expected, (x, runs)
        assert not (tmp / x).exists()
    undo_rows = rows(tmp, "SELECT name, state FROM steps WHERE kind = 'undo' ORDER BY id")
    assert [r for r in undo_rows if r[1] == "interrupted"] == [
        (f"shellworker:unmark-{interrupted}", "interrupted")]
