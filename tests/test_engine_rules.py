"""The engine's rules through the real ``Engine`` and a real SQLite ``Store``, with
steps as in-process callables (``tests.fake_runner``): rollback order and its end
states, cancel, retry, locks, one active deployment per host, decommission, and the
design and plan refusals. No server, no worker process: part of the fast tier."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from clipboard.errors import DesignError, HostBusy, HostLocked, JarvisError, UnknownStep
from clipboard.owner import Owner, _start_ticks
from clipboard.records import EventKind, State
from tests.engine_kit import SOURCE, design, kit, run
from tests.fake_runner import FakeRunner

ROLLBACK = {"deploy": {"rollback": True, "steps": [
    {"step": "t:one", "undo": "t:unone"}, {"step": "t:two", "undo": "t:untwo"},
    {"step": "t:three", "undo": "t:unthree"}]}}
PLAIN = {"deploy": {"rollback": False, "steps": ["t:one", "t:two", "t:three"]}}


def marking(name: str):
    """A task that records on the clipboard that it ran (a key steps write)."""
    def fn(clipboard: dict[str, Any]) -> dict[str, Any]:
        clipboard.setdefault("trail", []).append(name)
        return clipboard
    return fn


def standard(**behaviours: dict[str, Any]) -> FakeRunner:
    """t:one..t:three writing ``trail``, and their undos; ``behaviours`` by task (one=...)."""
    runner = FakeRunner()
    for name in ("one", "two", "three"):
        runner.task(f"t:{name}", marking(name), writes=["trail"],
                    **behaviours.get(name, {}))
        runner.task(f"t:un{name}", **behaviours.get(f"un{name}", {}))
    return runner


# -- rollback ------------------------------------------------------------------------------
def test_a_failure_rolls_back_the_completed_steps_last_first(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, ROLLBACK, standard(three={"fail": "boom"})) as k:
            await k.deploy("web1")
            d = await k.finish("web1")
            assert d.state == State.ROLLED_BACK
            assert k.runner.calls == ["t:one", "t:two", "t:three", "t:untwo", "t:unone"]
    run(go())


def test_a_failed_undo_ends_rollback_failed_naming_the_undo(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, ROLLBACK,
                       standard(three={"fail": "boom"}, untwo={"fail": "stuck"})) as k:
            await k.deploy("web1")
            d = await k.finish("web1")
            assert d.state == State.ROLLBACK_FAILED
            last = k.events[-1]
            assert last.kind == EventKind.ROLLBACK_FAILED and last.step == "t:untwo"
            assert "stuck" in (last.error or "")
    run(go())


def test_the_remaining_undos_run_after_one_fails(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, ROLLBACK,
                       standard(three={"fail": "boom"}, untwo={"fail": "stuck"})) as k:
            await k.deploy("web1")
            d = await k.finish("web1")
            assert k.runner.calls[-2:] == ["t:untwo", "t:unone"]
            assert [(u["undo"], u["ok"]) for u in d.meta["rolled_back"]] == [
                ("t:untwo", False), ("t:unone", True)]
    run(go())


def test_the_failed_steps_own_undo_runs_when_it_printed(tmp_path: Path) -> None:
    async def go() -> None:
        runner = standard(three={"fail": "half done", "printed_on_fail": True})
        async with kit(tmp_path, ROLLBACK, runner) as k:
            await k.deploy("web1")
            await k.finish("web1")
            assert k.runner.calls[3:] == ["t:unthree", "t:untwo", "t:unone"]
    run(go())


def test_the_failed_steps_own_undo_is_skipped_when_it_printed_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, ROLLBACK, standard(three={"fail": "boom"})) as k:
            await k.deploy("web1")
            await k.finish("web1")
            assert "t:unthree" not in k.runner.calls
    run(go())


def test_without_rollback_a_failure_just_fails(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, {"deploy": {"rollback": False, "steps": ROLLBACK["deploy"]["steps"]}},
                       standard(two={"fail": "boom"})) as k:
            await k.deploy("web1")
            d = await k.finish("web1")
            assert d.state == State.FAILED and d.current_step == 2
            assert k.runner.calls == ["t:one", "t:two"]
            assert "boom" in (d.error or "")
    run(go())


def test_a_failure_at_the_first_step_has_nothing_to_undo(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, ROLLBACK, standard(one={"fail": "boom"})) as k:
            await k.deploy("web1")
            d = await k.finish("web1")
            assert d.state == State.FAILED
            assert k.runner.calls == ["t:one"]
    run(go())


def test_an_undo_declared_by_the_task_is_used(tmp_path: Path) -> None:
    async def go() -> None:
        runner = FakeRunner()
        runner.task("t:one", undo="t:unone")
        runner.task("t:unone")
        runner.task("t:two", fail="boom")
        async with kit(tmp_path, {"deploy": {"rollback": True, "steps": ["t:one", "t:two"]}},
                       runner) as k:
            await k.deploy("web1")
            d = await k.finish("web1")
            assert d.state == State.ROLLED_BACK
            assert runner.calls == ["t:one", "t:two", "t:unone"]
    run(go())


def test_the_rollback_queue_is_stored_with_its_cause(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, ROLLBACK, standard(three={"fail": "boom"})) as k:
            await k.deploy("web1")
            d = await k.finish("web1")
            assert d.meta["rollback"]["cause"] == "failed"
            assert [q["undo"] for q in d.meta["rollback"]["queue"]] == ["t:untwo", "t:unone"]
            assert [q["index"] for q in d.meta["rollback"]["queue"]] == [2, 1]
    run(go())


def test_undos_get_the_clipboard_the_steps_left(tmp_path: Path) -> None:
    async def go() -> None:
        seen: list[list[str]] = []
        runner = standard(three={"fail": "boom"})
        runner.task("t:unone", lambda c: seen.append(list(c.get("trail", []))) or None)
        async with kit(tmp_path, ROLLBACK, runner) as k:
            await k.deploy("web1")
            await k.finish("web1")
            assert seen == [["one", "two"]]
    run(go())


def test_rollback_events_come_in_order(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, ROLLBACK, standard(two={"fail": "boom"})) as k:
            await k.deploy("web1")
            await k.finish("web1")
            kinds = k.kinds("web1")
            tail = kinds[kinds.index(EventKind.FAILED):]
            assert tail == [EventKind.FAILED, EventKind.UNDO_STARTED, EventKind.UNDO_OK,
                            EventKind.ROLLED_BACK]
    run(go())


def test_undo_steps_are_recorded_as_undos(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, ROLLBACK, standard(three={"fail": "boom"})) as k:
            d = await k.deploy("web1")
            await k.finish("web1")
            steps = await k.store.steps(d.id)
            assert [(s.name, s.state) for s in steps] == [
                ("t:one", "ok"), ("t:two", "ok"), ("t:three", "failed"),
                ("t:untwo", "ok"), ("t:unone", "ok")]
    run(go())


def test_a_cancel_with_rollback_undoes_the_completed_steps(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        async with kit(tmp_path, ROLLBACK, standard(two={"gate": gate})) as k:
            await k.deploy("web1")
            await k.runner.behaviours["t:two"].started.wait()
            await k.engine.cancel("web1", by="bob")
            d = await k.finish("web1")
            assert d.state == State.ROLLED_BACK
            assert d.meta["rollback"]["cause"] == "cancelled"
            assert k.runner.calls == ["t:one", "t:two", "t:unone"]
    run(go())


def test_a_rolling_back_deployment_cannot_be_cancelled(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        async with kit(tmp_path, ROLLBACK,
                       standard(two={"fail": "boom"}, unone={"gate": gate})) as k:
            await k.deploy("web1")
            await k.runner.behaviours["t:unone"].started.wait()
            with pytest.raises(JarvisError, match="rolling back; its undos run to the end"):
                await k.engine.cancel("web1", by="bob")
            gate.set()
            assert (await k.finish("web1")).state == State.ROLLED_BACK
    run(go())


# -- a complete run and its end state -------------------------------------------------------
def test_a_complete_run_ends_ready(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            await k.deploy("web1")
            d = await k.finish("web1")
            assert d.state == State.READY and d.finished_at is not None
            assert k.kinds()[0] == EventKind.ACCEPTED and k.kinds()[-1] == EventKind.READY
            clipboard = await k.store.clipboard(d.id)
            assert clipboard["trail"] == ["one", "two", "three"]
            assert clipboard["instance"] == design("web1")["instance"]
    run(go())


def test_a_removing_pipeline_ends_decommissioned(tmp_path: Path) -> None:
    async def go() -> None:
        pipelines = {**PLAIN, "remove": {"ends_as": "decommissioned", "steps": ["t:one"]}}
        async with kit(tmp_path, pipelines, standard()) as k:
            await k.deploy("web1", "remove")
            d = await k.finish("web1")
            assert d.state == State.DECOMMISSIONED
            assert k.kinds()[-1] == EventKind.DECOMMISSIONED
            assert d.meta["ends_as"] == "decommissioned"
    run(go())


def test_a_decommission_that_fails_is_failed_not_decommissioned(tmp_path: Path) -> None:
    async def go() -> None:
        pipelines = {**PLAIN, "remove": {"ends_as": "decommissioned",
                                         "steps": ["t:one", "t:two"]}}
        async with kit(tmp_path, pipelines, standard(two={"fail": "boom"})) as k:
            await k.deploy("web1", "remove")
            assert (await k.finish("web1")).state == State.FAILED
    run(go())


def test_the_clipboard_is_handed_from_step_to_step(tmp_path: Path) -> None:
    async def go() -> None:
        seen: list[list[str]] = []
        runner = standard()
        runner.task("t:three", lambda c: seen.append(list(c["trail"])) or None)
        async with kit(tmp_path, PLAIN, runner) as k:
            await k.deploy("web1")
            await k.finish("web1")
            assert seen == [["one", "two"]]
    run(go())


def test_a_step_over_its_timeout_fails_saying_so(tmp_path: Path) -> None:
    async def go() -> None:
        pipelines = {"deploy": {"steps": ["t:one", {"step": "t:two", "timeout": 0.05}]}}
        async with kit(tmp_path, pipelines, standard(two={"delay": 5})) as k:
            await k.deploy("web1")
            d = await k.finish("web1")
            assert d.state == State.FAILED and "timed out after 0.05s" in (d.error or "")
    run(go())


# -- cancel ------------------------------------------------------------------------------------
def test_a_cancel_kills_the_running_step_and_records_who(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        async with kit(tmp_path, PLAIN, standard(two={"gate": gate})) as k:
            await k.deploy("web1")
            await k.runner.behaviours["t:two"].started.wait()
            await k.engine.cancel("web1", by="bob")
            d = await k.finish("web1")
            assert d.state == State.CANCELLED
            assert d.error == "cancelled at step 2/3 by bob"
            assert d.meta["cancelled_by"] == "bob"
            assert "t:three" not in k.runner.calls
    run(go())


def test_a_cancel_is_announced_with_its_step(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        async with kit(tmp_path, PLAIN, standard(two={"gate": gate})) as k:
            await k.deploy("web1")
            await k.runner.behaviours["t:two"].started.wait()
            await k.engine.cancel("web1", by="bob")
            await k.finish("web1")
            cancelled = [e for e in k.events if e.kind == EventKind.CANCELLED]
            assert len(cancelled) == 1 and cancelled[0].index == 2
    run(go())


def test_the_cancelled_step_is_recorded_cancelled(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        async with kit(tmp_path, PLAIN, standard(two={"gate": gate})) as k:
            d = await k.deploy("web1")
            await k.runner.behaviours["t:two"].started.wait()
            await k.engine.cancel("web1", by="bob")
            await k.finish("web1")
            assert [s.state for s in await k.store.steps(d.id)] == ["ok", "cancelled"]
    run(go())


def test_cancel_with_nothing_running_says_so(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            with pytest.raises(JarvisError, match="web1: nothing is running"):
                await k.engine.cancel("web1", by="bob")
    run(go())


def test_a_queued_run_cancelled_before_its_slot_runs_nothing_more(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = standard(one={"gate": gate})
        async with kit(tmp_path, PLAIN, runner, runner={"max_concurrent_steps": 1}) as k:
            await k.deploy("web1")
            await runner.behaviours["t:one"].started.wait()
            await k.deploy("web2")
            await asyncio.sleep(0.05)
            await k.engine.cancel("web2", by="bob")
            gate.set()
            d2 = await k.finish("web2")
            await k.finish("web1")
            assert d2.state == State.CANCELLED and d2.error == "cancelled at step 1/3 by bob"
            assert runner.calls.count("t:one") == 1
    run(go())


def test_a_cancel_asked_of_a_live_owner_elsewhere_is_requested(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            other = Owner("other-token", k.engine.owner.host, os.getpid(),
                          _start_ticks(os.getpid()), "jarvis run")
            plan = k.engine.plan(design("web1"))
            await k.store.create_deployment(**k.engine._spec(plan, SOURCE, "carol", None),
                                            owner=other, lease_until=1e12)
            d, owner = await k.engine.cancel("web1", by="bob")
            assert owner == other
            _owned, cancels = await k.store.renew(other, 1e12)
            assert cancels == {d.id: "bob"}
    run(go())


# -- retry ---------------------------------------------------------------------------------------
def test_retry_after_a_failure_starts_at_the_failed_step(tmp_path: Path) -> None:
    async def go() -> None:
        runner = standard(two={"fail": "boom"})
        async with kit(tmp_path, PLAIN, runner) as k:
            await k.deploy("web1")
            await k.finish("web1")
            runner.behaviours["t:two"].fail = None
            await k.engine.retry("web1", requester="bob")
            d = await k.finish("web1")
            assert d.state == State.READY and d.attempt == 2
            assert runner.calls == ["t:one", "t:two", "t:two", "t:three"]
    run(go())


def test_retry_from_the_failed_step_keeps_the_clipboard_so_far(tmp_path: Path) -> None:
    async def go() -> None:
        seen: list[list[str]] = []
        runner = standard(two={"fail": "boom"})
        async with kit(tmp_path, PLAIN, runner) as k:
            await k.deploy("web1")
            await k.finish("web1")
            runner.task("t:two", lambda c: seen.append(list(c["trail"])) or None)
            await k.engine.retry("web1")
            await k.finish("web1")
            assert seen == [["one"]]
    run(go())


def test_retry_after_a_rollback_starts_at_step_one_with_the_first_clipboard(
        tmp_path: Path) -> None:
    async def go() -> None:
        seen: list[Any] = []
        runner = standard(three={"fail": "boom"})
        async with kit(tmp_path, ROLLBACK, runner) as k:
            await k.deploy("web1")
            assert (await k.finish("web1")).state == State.ROLLED_BACK
            runner.behaviours["t:three"].fail = None
            runner.task("t:one", lambda c: seen.append(c.get("trail")) or c, writes=["trail"])
            runner.calls.clear()
            await k.engine.retry("web1")
            d = await k.finish("web1")
            assert d.state == State.READY
            assert runner.calls == ["t:one", "t:two", "t:three"]
            assert seen == [None]
    run(go())


def test_retry_keeps_the_attempt_that_ended(tmp_path: Path) -> None:
    async def go() -> None:
        runner = standard(three={"fail": "boom"})
        async with kit(tmp_path, ROLLBACK, runner) as k:
            await k.deploy("web1")
            await k.finish("web1")
            await k.engine.retry("web1", requester="bob")
            d = await k.finish("web1")
            first = d.meta["attempts"][0]
            assert first["attempt"] == 1 and first["ended"] == "rolled back"
            assert first["from_step"] == 1 and first["after_rollback"] is True
            assert first["retried_by"] == "bob"
            assert [u["undo"] for u in first["rolled_back"]] == ["t:untwo", "t:unone"]
    run(go())


def test_retry_after_a_cancel_resumes_at_the_cancelled_step(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = standard(two={"gate": gate})
        async with kit(tmp_path, PLAIN, runner) as k:
            await k.deploy("web1")
            await runner.behaviours["t:two"].started.wait()
            await k.engine.cancel("web1", by="bob")
            await k.finish("web1")
            gate.set()
            await k.engine.retry("web1")
            d = await k.finish("web1")
            assert d.state == State.READY
            assert d.meta["attempts"][0]["cancelled_by"] == "bob"
            assert runner.calls == ["t:one", "t:two", "t:two", "t:three"]
    run(go())


def test_retry_of_a_ready_host_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            await k.deploy("web1")
            await k.finish("web1")
            with pytest.raises(JarvisError, match="is ready; only a failed, cancelled or "
                                                  "rolled back one can be retried"):
                await k.engine.retry("web1")
    run(go())


def test_retry_of_a_host_never_deployed_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            with pytest.raises(JarvisError, match="web1: never deployed"):
                await k.engine.retry("web1")
    run(go())


def test_retry_of_a_running_host_is_busy(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        async with kit(tmp_path, PLAIN, standard(one={"gate": gate})) as k:
            await k.deploy("web1")
            with pytest.raises(HostBusy, match="web1 is being deployed by"):
                await k.engine.retry("web1")
            gate.set()
            await k.finish("web1")
    run(go())


def test_retry_announces_the_step_it_starts_at(tmp_path: Path) -> None:
    async def go() -> None:
        runner = standard(three={"fail": "boom"})
        async with kit(tmp_path, PLAIN, runner) as k:
            await k.deploy("web1")
            await k.finish("web1")
            await k.engine.retry("web1")
            await k.finish("web1")
            retried = [e for e in k.events if e.kind == EventKind.RETRIED]
            assert len(retried) == 1 and retried[0].index == 3
    run(go())


# -- locks and one deployment per host ------------------------------------------------------------
def test_a_locked_host_refuses_deploy_naming_who_and_why(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            await k.store.add_lock("web1", "carol", "disk swap")
            with pytest.raises(HostLocked) as refused:
                await k.deploy("web1")
            assert "carol" in str(refused.value) and "disk swap" in str(refused.value)
            assert k.runner.calls == [] and "web1" not in k.engine.running
    run(go())


def test_a_locked_host_refuses_retry(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard(two={"fail": "boom"})) as k:
            await k.deploy("web1")
            await k.finish("web1")
            await k.store.add_lock("web1", "carol", "disk swap")
            with pytest.raises(HostLocked, match="carol"):
                await k.engine.retry("web1")
            assert (await k.store.latest("web1")).state == State.FAILED
            assert "web1" not in k.engine.running
    run(go())


def test_an_unlocked_host_deploys_again(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            await k.store.add_lock("web1", "carol", "disk swap")
            await k.store.remove_lock("web1")
            await k.deploy("web1")
            assert (await k.finish("web1")).state == State.READY
    run(go())


def test_a_second_deploy_of_a_running_host_is_busy_naming_the_owner(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        async with kit(tmp_path, PLAIN, standard(one={"gate": gate})) as k:
            await k.deploy("web1")
            with pytest.raises(HostBusy, match=r"web1 is being deployed by .*test on host"):
                await k.deploy("web1")
            gate.set()
            await k.finish("web1")
    run(go())


def test_a_host_driven_by_another_process_is_busy_naming_it(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            other = Owner("other-token", k.engine.owner.host, os.getpid(),
                          _start_ticks(os.getpid()), "jarvis run")
            plan = k.engine.plan(design("web1"))
            await k.store.create_deployment(**k.engine._spec(plan, SOURCE, "carol", None),
                                            owner=other, lease_until=1e12)
            with pytest.raises(HostBusy, match="jarvis run on host"):
                await k.deploy("web1")
            assert "web1" not in k.engine.running
    run(go())


def test_two_hosts_deploy_side_by_side(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard(one={"delay": 0.02})) as k:
            await k.deploy("web1")
            await k.deploy("web2")
            assert (await k.finish("web1")).state == State.READY
            assert (await k.finish("web2")).state == State.READY
            assert k.runner.peak["t:one"] == 2
    run(go())


def test_a_finished_host_deploys_again_as_a_new_deployment(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            first = await k.deploy("web1")
            await k.finish("web1")
            second = await k.deploy("web1")
            await k.finish("web1")
            assert second.id != first.id
            assert [d.id for d in await k.store.history("web1")] == [second.id, first.id]
    run(go())


# -- plan refusals -----------------------------------------------------------------------------------
def test_a_design_may_not_set_a_key_a_step_writes(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            with pytest.raises(DesignError, match="trail"):
                k.engine.plan({**design("web1"), "trail": ["forged"]})
    run(go())


def test_a_design_may_not_say_the_operators_part(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            with pytest.raises(DesignError, match="jarvis"):
                k.engine.plan({**design("web1"), "jarvis": {"force": True}})
    run(go())


def test_a_pipeline_naming_an_unknown_step_is_refused_at_plan(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, {"deploy": {"steps": ["t:one", "t:nosuch"]}},
                       standard()) as k:
            with pytest.raises(UnknownStep, match="t:nosuch"):
                k.engine.plan(design("web1"))
    run(go())


def test_a_missing_need_is_refused_naming_the_field_and_step(tmp_path: Path) -> None:
    async def go() -> None:
        runner = standard()
        runner.task("t:two", needs=[{"path": "node.ip", "hint": ""}])
        async with kit(tmp_path, PLAIN, runner) as k:
            with pytest.raises(DesignError, match=r"node.ip is missing \(needed by t:two\)"):
                k.engine.plan(design("web1"))
    run(go())


def test_a_need_an_earlier_step_writes_is_met(tmp_path: Path) -> None:
    async def go() -> None:
        runner = standard()
        runner.task("t:one", writes=["node"])
        runner.task("t:two", needs=[{"path": "node.ip", "hint": ""}])
        async with kit(tmp_path, PLAIN, runner) as k:
            assert k.engine.plan(design("web1")).hostname == "web1"
    run(go())


def test_an_unknown_pipeline_is_refused_naming_the_configured_ones(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            with pytest.raises(JarvisError, match="no pipeline named 'nope'.*deploy"):
                k.engine.plan(design("web1"), "nope")
    run(go())


def test_a_provider_variant_of_a_pipeline_is_chosen(tmp_path: Path) -> None:
    async def go() -> None:
        pipelines = {**PLAIN, "deploy.local": {"steps": ["t:one"]}}
        async with kit(tmp_path, pipelines, standard()) as k:
            assert k.engine.plan(design("web1", provider="Local")).pipeline.name == \
                "deploy.local"
            assert k.engine.plan(design("web2")).pipeline.name == "deploy"
    run(go())


def test_a_bad_hostname_is_refused_before_anything_runs(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            with pytest.raises(DesignError, match="forbidden characters"):
                k.engine.plan(design("web1;rm"))
            assert k.runner.calls == []
    run(go())


def test_the_plan_records_the_operators_part(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, standard()) as k:
            d = await k.deploy("web1", requester="alice")
            await k.finish("web1")
            jarvis = (await k.store.initial_clipboard(d.id))["jarvis"]
            assert jarvis["pipeline"] == "deploy" and jarvis["force"] is False
            assert jarvis["requested_by"] == "alice"
    run(go())


# -- scrubbing ------------------------------------------------------------------------------------
def test_a_steps_error_is_scrubbed_of_the_deployments_secrets(tmp_path: Path) -> None:
    async def go() -> None:
        secret = "Tr0ub4dor-and-3"
        runner = standard(two={"fail": f"login as root/{secret} refused",
                               "stderr": f"trying {secret}\n"})
        async with kit(tmp_path, PLAIN, runner) as k:
            d = await k.deploy("web1", root_password=secret)
            d = await k.finish("web1")
            assert secret not in (d.error or "") and "***" in (d.error or "")
            failed = next(e for e in k.events if e.kind == EventKind.STEP_FAILED)
            assert secret not in (failed.error or "")
            steps = await k.store.steps(d.id)
            assert all(secret not in "\n".join(s.stderr_tail or []) for s in steps)
    run(go())
