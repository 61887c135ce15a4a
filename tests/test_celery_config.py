"""The Celery backend's pure logic, in the fast tier: routing a step to its queue, the
settings the step semantics rest on, the broker password by ``_env``, the checks on
``runner.celery``, a step's identity across bot restarts, and a worker's answer read
back as the local runner would have returned it. No broker is contacted."""
from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from kombu.transport.pyamqp import Transport as AmqpTransport

from bot import report
from clipboard import celery_app
from clipboard import config as config_mod
from clipboard.celery_backend import StepResultBackend
from clipboard.celery_runner import CeleryRunner
from clipboard.celery_transport import Transport
from clipboard.celery_worker import answer
from clipboard.errors import ConfigError
from clipboard.records import Deployment, State, StepKind, StepRecord, StepState
from clipboard.runner import StepContext, StepResult
from clipboard.steps import Step
from tests.engine_kit import kit, run
from tests.fake_runner import FakeRunner

QUEUES = {"*": "", "step=dnswizard:update_host": "dns-master", "module=dnswizard": "dns",
          "provider=linode": "linode", "region=eu": "eu", "datacenter=fra1": "fra"}


def config(**celery: Any) -> config_mod.Config:
    user = {"runner": {"backend": "celery", "step_timeout": 60,
                       "celery": {"broker_url": "redis://broker.example:6379/0", **celery}}}
    assert config_mod.validate(user) == []
    return config_mod.Config(config_mod.merge(config_mod.defaults(), user))


@pytest.mark.parametrize(("step", "labels", "queue"), [
    ("dnswizard:update_host", {"region": "eu"}, "dns-master"),   # a step beats all
    ("dnswizard:delete_host", {"region": "eu"}, "dns"),          # a module beats labels
    ("node:create", {"provider": "linode", "region": "eu"}, "linode"),  # labels in order
    ("node:create", {"provider": "local", "region": "eu"}, "eu"),
    ("node:create", {"datacenter": "fra1"}, "fra"),
    ("node:create", {"region": "us"}, "jarvis"),                 # nothing matches: default
    ("node:create", {}, "jarvis"),
])
def test_a_step_is_routed_by_step_then_module_then_the_hosts_labels(
        step: str, labels: dict[str, str], queue: str) -> None:
    assert celery_app.queue_for(step, labels, QUEUES, "jarvis") == queue


def test_a_labelled_route_matches_as_status_filters_case_blind() -> None:
    assert celery_app.queue_for("node:create", {"region": "eu"}, {"Region=EU": "eu"}, "d") == "eu"


def test_the_app_speaks_json_only_and_acknowledges_a_step_when_it_ended() -> None:
    conf = celery_app.build(config(visibility_timeout=900, restore_interval=2)).conf
    assert (conf.task_serializer, conf.result_serializer) == ("json", "json")
    assert conf.accept_content == ["json"] and conf.result_accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options == {"visibility_timeout": 900.0,
                                             "unacked_restore_interval": 2.0,
                                             "unacked_restore_throttle": 1}
    assert conf.task_default_queue == "jarvis"


@pytest.mark.parametrize(("broker", "transport"), [
    ("redis://broker.example:6379/0", Transport), ("rediss://broker.example:6380/0", Transport),
    ("amqp://jarvis@rabbit.example//", AmqpTransport)])
def test_a_redis_broker_is_reached_through_jarvis_transport_and_results_its_backend(
        broker: str, transport: type) -> None:
    """Patient with unacknowledged steps, one client per channel; stores in one script."""
    app = celery_app.build(config(broker_url=broker,
                                  result_backend="redis://results.example:6379/1"))
    with app.connection_for_write() as connection:
        assert type(connection.transport) is transport
        assert connection.hostname == urllib.parse.urlsplit(broker).hostname
    assert type(app.backend) is StepResultBackend
    app.close()


def test_the_broker_password_comes_from_its_env_into_both_urls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JARVIS_TEST_BROKER", "s3cr:t/x")
    broker, results = celery_app.urls(config(
        broker_password_env="JARVIS_TEST_BROKER", result_backend="rediss://results.example/1"))
    assert broker == "redis://:s3cr%3At%2Fx@broker.example:6379/0"
    assert results == "rediss://:s3cr%3At%2Fx@results.example/1"
    kept = celery_app.urls(config(broker_url="redis://u:given@b.example/0",
                                  broker_password_env="JARVIS_TEST_BROKER"))
    assert kept[0] == "redis://u:given@b.example/0"


def test_a_missing_broker_password_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JARVIS_TEST_BROKER", raising=False)
    with pytest.raises(ConfigError, match="JARVIS_TEST_BROKER, which is empty"):
        celery_app.urls(config(broker_password_env="JARVIS_TEST_BROKER"))


def test_unusable_celery_settings_are_one_line_each() -> None:
    bad = config(queues={"eu": "eu-queue", "region=eu": "eu"}, visibility_timeout=30,
                 result_backend="amqp://rabbit.example//")
    assert celery_app.problems(bad) == [
        ("runner.celery.result_backend must be a redis:// or rediss:// URL (the bot reads "
        "results and its reconciliation keys there)")]
    bad = config(queues={"eu": "eu-queue", "region=eu": "eu"}, visibility_timeout=30)
    assert celery_app.problems(bad) == [
        ("runner.celery.queues: 'eu' is not step=<module:task>, module=<name> or "
        "<label>=<value>"),
        ("runner.step_timeout is 60s, not less than runner.celery.visibility_timeout (30s): "
        "a step that long would be delivered to a second worker while it still runs")]
    with pytest.raises(ConfigError, match="visibility_timeout"):
        CeleryRunner(bad)
    local = config_mod.Config(config_mod.merge(config_mod.defaults(),
                                               {"runner": {"visibility_timeout": 1}}))
    assert celery_app.problems(local) == []


def test_an_unknown_backend_is_refused() -> None:
    wrong = config_mod.Config(config_mod.merge(config_mod.defaults(),
                                               {"runner": {"backend": "kubernetes"}}))
    assert celery_app.problems(wrong) == [
        "runner.backend is 'kubernetes'; it is one of local, celery"]


def test_a_steps_identity_is_the_same_for_the_same_step_of_the_same_attempt() -> None:
    first = StepContext(12, 3, attempt=2, step_id=40, labels={"region": "eu"}, created_at=1.5)
    after_restart = StepContext(12, 3, attempt=2, step_id=41, created_at=1.5)
    assert first.key == after_restart.key == "d12.5dc-step3-a2"
    assert StepContext(12, 3, attempt=3, created_at=1.5).key != first.key
    assert StepContext(12, 3, attempt=2, kind="undo", created_at=1.5).key == "d12.5dc-undo3-a2"
    another_store = StepContext(12, 3, attempt=2, created_at=2.5)
    assert another_store.key != first.key


def result_back(done: StepResult, given: dict[str, Any], text: str) -> StepResult:
    runner = CeleryRunner(config())
    return runner._result(answer(done, "w1@host"), given, text, 0.0)


def test_a_workers_answer_reads_back_as_the_local_runner_returns_it() -> None:
    given, text = {"instance": {"hostname": "a"}}, "instance:\n  hostname: a\n"
    echoed = result_back(StepResult(True, given, exit_status=0, printed=given, text=text,
                                    started=1.0, finished=2.0), given, text)
    assert (echoed.ok, echoed.clipboard, echoed.printed, echoed.text) == (True, given, given, text)
    assert (echoed.worker, echoed.seconds) == ("w1@host", 1.0)
    failed = result_back(StepResult(False, {"node": {"id": 7}}, exit_status=3,
                                    printed={"node": {"id": 7}}, text="node: {id: 7}\n",
                                    error="quota (exit status 3)", stderr="a\nquota\n"),
                         given, text)
    assert (failed.ok, failed.clipboard, failed.exit_status) == (False, {"node": {"id": 7}}, 3)
    assert (failed.error, failed.stderr_tail(1)) == ("quota (exit status 3)", ["quota"])
    silent = result_back(StepResult(True, given, exit_status=0), given, text)
    assert (silent.ok, silent.printed, silent.clipboard) == (True, None, given)
    garbage = result_back(StepResult(True, given, exit_status=0, printed={"a": 1},
                                     text="[not: yaml"), given, text)
    assert not garbage.ok and garbage.printed is None and "worker's output" in garbage.error


def test_status_and_history_show_the_worker_of_each_step() -> None:
    d = Deployment(1, "thor", "file", "deploy", (Step("a:b"),), State.READY, 100.0,
                   finished_at=103.0, started_at=100.0)
    steps = [StepRecord(1, 1, 1, "a:b", StepKind.STEP, StepState.OK, 100.0, 102.0, 0, None, [],
                        worker="w2@eu")]
    assert report.timings_line(steps) == "steps: 1.a:b 2.0s on w2@eu"
    running = Deployment(1, "thor", "file", "deploy", (Step("a:b"),), State.RUNNING, 100.0)
    steps = [StepRecord(1, 1, 1, "a:b", StepKind.STEP, StepState.RUNNING, 100.0, None, None, None, [],
                        worker="w2@eu")]
    assert report.headline(running, steps, now=103.0) == "thor: running step 1/1 a:b (3.0s) on w2@eu"
    assert report.history_line(d, ["w2@eu", "w1@eu"]).endswith("; on w2@eu, w1@eu")
    assert "; on" not in report.history_line(d)


def test_the_engine_tells_the_runner_which_step_of_which_deployment_it_runs(
        tmp_path: Path) -> None:
    """What a remote runner names and routes a step by, steps and undos alike."""
    async def go() -> None:
        runner = FakeRunner()
        runner.task("t:one", undo="t:unone")
        runner.task("t:unone")
        runner.task("t:two", fail="no")
        pipelines = {"deploy": {"rollback": True, "steps": ["t:one", "t:two"]}}
        async with kit(tmp_path, pipelines, runner,
                       designs={"instance_fields": ["region"]}) as k:
            d = await k.deploy("thor", region="eu")
            assert (await k.finish("thor")).state == State.ROLLED_BACK
            steps = await k.store.steps(d.id)
        seen = [(c.deployment_id, c.kind, c.index, c.attempt, c.step_id, c.labels.get("region"),
                 c.created_at) for c in runner.contexts]
        assert seen == [(d.id, "step", 1, 1, steps[0].id, "eu", d.created_at),
                        (d.id, "step", 2, 1, steps[1].id, "eu", d.created_at),
                        (d.id, "undo", 1, 1, steps[2].id, "eu", d.created_at)]
    run(go())


def waiting(states: list[dict[str, Any]], *, timeout: float = 5, cancel_after: float | None = None,
            ) -> tuple[dict[str, Any], list[str], list[str]]:
    """What ``CeleryRunner._wait`` makes of these published states (the broker left out:
    cancelling is recorded instead of sent)."""
    async def go() -> tuple[dict[str, Any], list[str], list[str]]:
        runner = CeleryRunner(config())
        runner.grace = 0.1
        cancelled: list[str] = []
        told: list[str] = []

        async def cancel_task(task_id: str) -> None:
            cancelled.append(task_id)
        runner._cancel = cancel_task  # type: ignore[method-assign]

        async def started(worker: str) -> None:
            told.append(worker)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for state in states:
            queue.put_nowait(state)
        cancel = asyncio.Event()
        if cancel_after is not None:
            asyncio.get_running_loop().call_later(cancel_after, cancel.set)
        context = StepContext(1, 1, on_started=started)
        got = await runner._wait("jarvis-t", queue, timeout, cancel, context)
        return got, cancelled, told
    return run(go())


STARTED = {"status": "STARTED", "result": {"hostname": "w1@eu", "pid": 9}}


def test_the_bot_takes_a_workers_answer_and_hears_who_took_the_step() -> None:
    answer_, cancelled, told = waiting([STARTED, {"status": "SUCCESS",
                                                  "result": {"ok": True, "worker": "w1@eu"}}])
    assert (answer_["ok"], cancelled, told) == (True, [], ["w1@eu"])


def test_the_bot_times_a_step_out_from_when_a_worker_took_it_and_cancels_it_there() -> None:
    answer_, cancelled, _ = waiting([STARTED], timeout=0.1)
    assert answer_ == {"timed_out": True, "worker": "w1@eu", "error": "timed out after 0.1s "
                       "with no answer from worker w1@eu; the step was cancelled there"}
    assert cancelled == ["jarvis-t"]


def test_a_cancel_is_sent_to_the_worker_and_its_answer_says_cancelled() -> None:
    answer_, cancelled, _ = waiting([STARTED], cancel_after=0.05)
    assert cancelled == ["jarvis-t"]
    assert answer_ == {"cancelled": True, "worker": "w1@eu",
                       "error": "cancelled; worker w1@eu did not answer within 0.1s"}


def test_a_task_that_raised_or_was_revoked_says_so() -> None:
    raised = {"status": "FAILURE", "result": {"exc_type": "KeyError", "exc_message": ["text"]}}
    assert waiting([STARTED, raised])[0] == {
        "worker": "w1@eu", "cancelled": False,
        "error": "the worker w1@eu failed the task: KeyError: text"}
    assert waiting([{"status": "REVOKED"}])[0]["cancelled"] is True
