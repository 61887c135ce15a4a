"""Steps on Celery workers (``runner.backend: celery``), end to end: a real redis-server,
real ``jarvis worker`` processes and jarvis itself as a process (``jarvis deploy``, or
``jarvis run`` on its console where a person must say something mid-deployment).

Shown here: a cluster's steps spread over two workers, each step's worker recorded and
shown by ``status`` and ``history``; a worker SIGKILLed mid-step → the step runs again on
the other and the deployment completes, or with ``retry_lost: false`` fails saying why;
``cancel`` kills the step's processes on its worker; the broker killed and restarted
mid-deployment → it completes; a labelled host's steps go only to its queue's worker; a
bot killed mid-step and started again takes the step's answer up instead of running it
twice. The steps are ``tests/workers/celerysteps``, which log each start and end.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis import Redis

from clipboard import celery_app
from clipboard import config as config_mod
from clipboard.runner import StepContext
from tests.jarvis_process import (
    Console,
    clean_env,
    kill_group,
    start,
    start_worker,
    stop_workers,
)
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.servers  # starts redis-server, Celery workers and jarvis

WORKERS = Path(__file__).parent / "workers"
VISIBILITY = 6  # seconds: longer than any step's timeout here, short enough to wait for


class Site:
    """One test's jarvis configuration on its own redis databases, and its workers."""

    def __init__(self, tmp: Path, redis: RedisServer, **celery: Any) -> None:
        self.tmp, self.redis = tmp, redis
        broker, results = (0, 1) if redis.persistent else redis.databases()
        self.config = tmp / "jarvis.yaml"
        self.env = clean_env(tmp)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.write(broker, results, **celery)

    def write(self, broker: int, results: int, **celery: Any) -> None:
        settings = {
            "store": {"path": str(self.tmp / "jarvis.db")},
            "designs": {"instance_fields": ["region"]},
            "runner": {"backend": "celery", "worker_dirs": [str(WORKERS)], "kill_grace": 0.5,
                       "step_timeout": VISIBILITY - 1,
                       "celery": {"broker_url": self.redis.url(broker),
                                  "result_backend": self.redis.url(results),
                                  "visibility_timeout": VISIBILITY, "restore_interval": 0.5,
                                  **celery}},
            "pipelines": {
                "spread": {"steps": ["celerysteps:nap-a", "celerysteps:nap-b",
                                     "celerysteps:nap-c"]},
                "slow": {"steps": ["celerysteps:slow", "celerysteps:nap-a"]},
                "hanging": {"steps": ["celerysteps:hang"]},
                "echoing": {"steps": ["shellworker:echo"]}}}
        self.config.write_text(yaml.safe_dump(settings))

    def worker(self, name: str, *queues: str, concurrency: int = 2) -> subprocess.Popen[bytes]:
        self.workers.append(start_worker(self.config, name, self.env, *queues,
                                         concurrency=concurrency))
        return self.workers[-1]

    def stop(self) -> None:
        stop_workers(self.workers)

    def design(self, host: str, **instance: Any) -> Path:
        path = self.tmp / f"{host}.yaml"
        notes = {"marks": str(self.tmp), "nap": 0.3, "slow": 2.5}
        path.write_text(yaml.safe_dump({"instance": {"hostname": host, **instance},
                                        "notes": notes}))
        return path

    def cluster(self, name: str, count: int) -> Path:
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "cluster": name, "hosts": [{"hostname": f"{name}{{n}}", "count": count}],
            "notes": {"marks": str(self.tmp), "nap": 0.3}}))
        return path

    def deploy(self, path: Path, pipeline: str) -> subprocess.Popen[str]:
        return start("deploy", str(path), "--pipeline", pipeline, "--config", str(self.config),
                     env=self.env)

    def query(self, *words: str) -> str:
        process = start(*words, "--config", str(self.config), env=self.env)
        out, err = process.communicate(timeout=60)
        return out + err

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.tmp / "jarvis.db", timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def log(self, host: str) -> list[str]:
        path = self.tmp / f"{host}.log"
        return path.read_text().splitlines() if path.exists() else []


def wait_for(check: Any, timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


def finish(process: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        out, err = process.communicate()
        raise AssertionError(f"jarvis deploy did not finish: {out}{err}") from None
    return process.returncode, out + err


def started(lines: list[str], task: str) -> int:
    return sum(1 for line in lines if line.startswith(f"{task} started"))


@pytest.fixture
def make_site(tmp_path: Path, redis_server: RedisServer) -> Iterator[Callable[..., Site]]:
    """Sites with these ``runner.celery`` settings (on the shared redis-server unless
    ``redis`` names another); their workers are stopped, by process group, at the end."""
    made: list[Site] = []

    def make(redis: RedisServer | None = None, **celery: Any) -> Site:
        made.append(Site(tmp_path, redis or redis_server, **celery))
        return made[-1]
    yield make
    for one in made:
        one.stop()


@pytest.fixture
def site(make_site: Callable[..., Site]) -> Site:
    return make_site()


def test_a_cluster_spreads_over_two_workers_and_each_step_names_its_worker(site: Site) -> None:
    site.worker("w1")
    site.worker("w2")
    code, out = finish(site.deploy(site.cluster("farm", 4), "spread"))
    assert code == 0, out
    steps = site.rows("SELECT name, state, worker FROM steps ORDER BY id")
    assert len(steps) == 12 and {state for _, state, _ in steps} == {"ok"}
    assert {worker for _, _, worker in steps} == {"w1@test", "w2@test"}
    for n in range(1, 5):
        assert [line.split()[:2] for line in site.log(f"farm{n}")] == [
            [f"nap-{x}", what] for x in "abc" for what in ("started", "done")]
    first = [w for (w,) in site.rows("SELECT worker FROM steps s JOIN deployments d ON"
                                     " d.id = s.deployment_id WHERE d.hostname = 'farm1'")]
    shown = re.findall(r"\d\.celerysteps:nap-\w [\d.]+m?s on (\S+?)[,\n]",
                       site.query("status", "farm1"))
    assert shown == first
    assert site.query("history", "farm1").splitlines()[1].endswith(
        "; on " + ", ".join(dict.fromkeys(first)))


def kill_the_running_worker(site: Site, host: str, workers: dict[str, Any]) -> str:
    """SIGKILL the process group of the worker running ``host``'s slow step, as a
    worker host that is gone (no warm shutdown, no acknowledgement); its name."""
    line = wait_for(lambda: [x for x in site.log(host) if x.startswith("slow started")],
                    what="the slow step")[0]
    pid = int(line.split()[2])
    while pid > 1:
        for name, process in workers.items():
            if process.pid == pid:
                os.killpg(pid, signal.SIGKILL)
                return name
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    raise AssertionError("the slow step runs under no worker of this test")


def test_a_worker_killed_mid_step_runs_it_again_on_the_other(site: Site) -> None:
    workers = {"w1": site.worker("w1"), "w2": site.worker("w2")}
    deploying = site.deploy(site.design("thor"), "slow")
    killed = kill_the_running_worker(site, "thor", workers)
    other = ({"w1", "w2"} - {killed}).pop()
    code, out = finish(deploying)
    assert code == 0, out
    assert started(site.log("thor"), "slow") == 2
    assert site.rows("SELECT name, state, worker FROM steps ORDER BY id") == [
        ("celerysteps:slow", "ok", f"{other}@test"), ("celerysteps:nap-a", "ok", f"{other}@test")]


def test_a_lost_step_fails_saying_why_when_retry_lost_is_off(
        make_site: Callable[..., Site]) -> None:
    site = make_site(retry_lost=False)
    workers = {"w1": site.worker("w1"), "w2": site.worker("w2")}
    deploying = site.deploy(site.design("loki"), "slow")
    killed = kill_the_running_worker(site, "loki", workers)
    code, out = finish(deploying)
    other = ({"w1", "w2"} - {killed}).pop()
    assert code == 1, out
    assert started(site.log("loki"), "slow") == 1
    ((state, error, worker),) = site.rows("SELECT state, error, worker FROM steps")
    assert (state, worker) == ("failed", f"{other}@test")
    assert error == (f"its worker {killed}@test was lost mid-step (killed, or its host went "
                     f"down); runner.celery.retry_lost is false, so it was not run again")
    assert "retry_lost is false" in site.query("status", "loki")


def test_cancel_kills_the_step_on_its_worker(site: Site) -> None:
    site.worker("w1")
    bot = Console(site.config, site.env)
    try:
        bot.ask(f"deploy {site.design('odin')} pipeline=hanging", r"^odin: deployment #1 started")
        child = wait_for(lambda: [int(line.split()[2]) for line in site.log("odin")
                                  if line.startswith("hang child")], what="the hanging step")[0]
        os.kill(child, 0)
        bot.ask("status odin", r"^odin: running step 1/1 celerysteps:hang \(\d+(\.\d)?s\) "
                               r"on w1@test$")
        bot.ask("cancel odin", r"^odin: cancel")
        bot.expect(r"^odin: cancelled at step 1/1", timeout=30)
    finally:
        bot.kill()
    wait_for(lambda: not _alive(child), timeout=10, what="the step's child to be killed")
    assert site.rows("SELECT state, worker FROM steps") == [("cancelled", "w1@test")]
    assert "hang done" not in site.log("odin")


def test_the_broker_killed_and_restarted_mid_deployment_is_survived(
        make_site: Callable[..., Site], redis_factory: Any) -> None:
    redis = redis_factory(persistent=True)
    # a visibility timeout longer than the outage, as a real one (longer than any step) is
    site = make_site(redis, visibility_timeout=60)
    workers = [site.worker("w1"), site.worker("w2")]
    deploying = site.deploy(site.design("baldr"), "slow")
    wait_for(lambda: started(site.log("baldr"), "slow"), what="the slow step")
    redis.kill()
    # down past the slow step's end: its worker must keep its answer, and the bot the
    # next step, until the broker is back
    wait_for(lambda: "slow done" in site.log("baldr"), what="the slow step's end")
    time.sleep(1)
    redis.start()
    code, out = finish(deploying)
    alive = [w.poll() is None for w in workers]
    with Redis.from_url(redis.url(0)) as broker:
        unacknowledged = broker.hlen("unacked")
    assert code == 0, out
    assert [row[:2] for row in site.rows("SELECT name, state FROM steps ORDER BY id")] == [
        ("celerysteps:slow", "ok"), ("celerysteps:nap-a", "ok")]
    assert started(site.log("baldr"), "slow") == 1  # left to finish, not handed on as well
    assert alive == [True, True]
    assert unacknowledged == 0  # the step that ended under the restart was acknowledged


def test_a_labelled_step_goes_only_to_its_queues_worker(
        make_site: Callable[..., Site]) -> None:
    site = make_site(queues={"region=eu": "eu"})
    site.worker("home")
    site.worker("eu", "eu")
    runs = [site.deploy(site.design(f"{region}{n}", region=region), "spread")
            for region in ("eu", "us") for n in (1, 2)]
    results = [finish(run) for run in runs]
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    found = site.rows("SELECT d.hostname, s.worker FROM steps s JOIN deployments d"
                      " ON d.id = s.deployment_id")
    assert {host: worker for host, worker in found if host.startswith("eu")} == {
        "eu1": "eu@test", "eu2": "eu@test"}
    assert {worker for host, worker in found if host.startswith("us")} == {"home@test"}


def test_a_bot_restarted_mid_step_takes_up_its_answer_and_does_not_run_it_twice(
        site: Site) -> None:
    site.worker("w1")
    bot = Console(site.config, site.env)
    try:
        bot.ask(f"deploy {site.design('frigg')} pipeline=slow", r"^frigg: deployment #1 started")
        wait_for(lambda: started(site.log("frigg"), "slow"), what="the slow step")
    finally:
        bot.kill()
    again = Console(site.config, site.env)
    try:
        again.expect(r"^frigg: taking up deployment #1 at step 1/2", timeout=30)
        again.expect(r"^frigg: ready in ", timeout=30)
    finally:
        again.kill()
    assert started(site.log("frigg"), "slow") == 1
    assert site.rows("SELECT name, state, worker FROM steps ORDER BY id") == [
        ("celerysteps:slow", "interrupted", "w1@test"), ("celerysteps:slow", "ok", "w1@test"),
        ("celerysteps:nap-a", "ok", "w1@test")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_the_bot_gives_a_step_up_when_its_worker_stops_answering(
        make_site: Callable[..., Site]) -> None:
    site = make_site(answer_grace=1)
    worker = site.worker("w1")
    deploying = site.deploy(site.design("heimdall"), "hanging")
    wait_for(lambda: started(site.log("heimdall"), "hang"), what="the hanging step")
    os.killpg(worker.pid, signal.SIGSTOP)  # alive, holding the step, saying nothing
    try:
        began = time.monotonic()
        code, out = finish(deploying)
        took = time.monotonic() - began
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    assert code == 1, out
    assert took < VISIBILITY - 1 + 0.5 + 1 + 5  # the step's timeout, kill_grace, answer_grace
    ((state, error, worker_name),) = site.rows("SELECT state, error, worker FROM steps")
    assert (state, worker_name) == ("failed", "w1@test")
    assert error == (f"timed out after {VISIBILITY - 1}s with no answer from worker w1@test; "
                     f"the step was cancelled there")


def test_check_config_refuses_a_visibility_timeout_shorter_than_a_step(tmp_path: Path) -> None:
    config = tmp_path / "jarvis.yaml"
    config.write_text(yaml.safe_dump({"runner": {
        "backend": "celery", "celery": {"visibility_timeout": 120},
        "step_timeout": 60}, "pipelines": {"slow": {"steps": [
            {"step": "core:validate", "timeout": 600}]}}}))
    process = start("check-config", str(config), env=clean_env(tmp_path))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2, out + err
    assert err.splitlines() == [
        (f"jarvis: {config}: pipelines.slow.steps[0].timeout is 600s, not less than runner."
        f"celery.visibility_timeout (120s): a step that long would be delivered to a second "
        f"worker while it still runs")]


def test_a_step_delivered_again_after_it_answered_answers_the_same_unrun(site: Site) -> None:
    """What a worker does with a message it could not acknowledge (its broker connection
    dropped as the step ended) when the visibility timeout brings it back."""
    site.worker("w1")
    code, out = finish(site.deploy(site.design("tyr"), "spread"))
    assert code == 0, out
    ((deployment, created),) = site.rows("SELECT id, created_at FROM deployments")
    task_id = "jarvis-" + StepContext(deployment, 1, created_at=created).key
    config = config_mod.load(site.config, export=False)
    app = celery_app.build(config)
    with Redis.from_url(config.get("runner.celery.result_backend")) as results:
        answered = results.get(f"celery-task-meta-{task_id}")
        payload = {"step": "celerysteps:nap-a", "text": "instance: {hostname: tyr}\n",
                   "timeout": 5, "retry_lost": True}
        again = app.send_task(celery_app.TASK, args=[payload], task_id=task_id)
        assert again.get(timeout=30)["worker"] == "w1@test"
        assert json.loads(results.get(f"celery-task-meta-{task_id}"))["result"] == \
            json.loads(answered)["result"]
    app.close()
    assert started(site.log("tyr"), "nap-a") == 1
    wait_for(lambda: "was delivered again after it answered" in
             (site.tmp / "w1.log").read_text(), timeout=10, what="the worker's warning")


def test_a_worker_logs_no_clipboard(site: Site) -> None:
    """Celery logs a task's return value at INFO: a clipboard, secrets and all."""
    secret = "hunter2-but-longer-7c1f"
    site.worker("w1")
    path = site.tmp / "vidar.yaml"
    path.write_text(yaml.safe_dump({"instance": {"hostname": "vidar"},
                                    "notes": {"api_password": secret}}))
    code, out = finish(site.deploy(path, "echoing"))
    assert code == 0, out
    log = (site.tmp / "w1.log").read_text()
    assert "Task jarvis.step[" in log and secret not in log
