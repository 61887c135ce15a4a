"""The engine's rules between deployments, through the real ``Engine`` and ``Store``
with in-process steps (``tests.fake_runner``): the step caps, ``wait:host``, the
approval of a forced deployment, and clusters. Interleavings are made with gates
(events a step waits on), never with sleeps that hope for an order."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from clipboard.errors import DesignError, HostBusy, JarvisError
from clipboard.records import EventKind, State
from tests.engine_kit import SOURCE, Kit, kit, run
from tests.fake_runner import FakeRunner

PLAIN = {"deploy": {"rollback": False, "steps": ["t:one", "t:two"]}}


def tasks(*names: str, **behaviours: dict[str, Any]) -> FakeRunner:
    runner = FakeRunner()
    for name in names:
        runner.task(name, **behaviours.get(name.partition(":")[2], {}))
    return runner


async def until(condition: Any, what: str, timeout: float = 5) -> None:
    """Yield to the loop until ``condition()`` holds; fail naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.005)


# -- caps -----------------------------------------------------------------------------------
def test_the_global_cap_bounds_the_steps_in_flight(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = tasks("t:one", "t:two", one={"gate": gate})
        async with kit(tmp_path, PLAIN, runner, runner={"max_concurrent_steps": 2}) as k:
            for n in range(5):
                await k.deploy(f"web{n}")
            await until(lambda: runner.total == 2, "two steps in flight")
            await asyncio.sleep(0.05)
            assert runner.total == 2 and k.engine.in_flight["t:one"] == 2
            gate.set()
            for n in range(5):
                assert (await k.finish(f"web{n}")).state == State.READY
            assert runner.peak_total == 2
    run(go())


def test_a_step_cap_bounds_that_step_only(tmp_path: Path) -> None:
    async def go() -> None:
        runner = tasks("t:one", "t:two", one={"delay": 0.02}, two={"delay": 0.2})
        async with kit(tmp_path, PLAIN, runner, runner={"step_limits": {"t:one": 1}}) as k:
            for n in range(4):
                await k.deploy(f"web{n}")
            for n in range(4):
                assert (await k.finish(f"web{n}")).state == State.READY
            assert runner.peak["t:one"] == 1 and runner.peak["t:two"] >= 2
    run(go())


def test_a_provider_cap_bounds_that_providers_steps(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = tasks("node:create", create={"gate": gate})
        async with kit(tmp_path, {"deploy": {"rollback": False, "steps": ["node:create"]}},
                       runner, runner={"provider_limits": {"local": 1}}) as k:
            for n in range(3):
                await k.deploy(f"loc{n}", provider="local")
            await k.deploy("cloud1", provider="ec2")
            await until(lambda: runner.total == 2, "one local and the ec2 step")
            await asyncio.sleep(0.05)
            assert runner.total == 2
            gate.set()
            for host in ("loc0", "loc1", "loc2", "cloud1"):
                assert (await k.finish(host)).state == State.READY
    run(go())


def test_a_provider_cap_leaves_other_modules_alone(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = tasks("t:one", one={"gate": gate})
        async with kit(tmp_path, {"deploy": {"rollback": False, "steps": ["t:one"]}},
                       runner, runner={"provider_limits": {"local": 1}}) as k:
            for n in range(3):
                await k.deploy(f"loc{n}", provider="local")
            await until(lambda: runner.total == 3, "all three")
            gate.set()
            for n in range(3):
                await k.finish(f"loc{n}")
    run(go())


def test_undos_take_no_slot(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = tasks("t:one", "t:unone", "t:bad", unone={"gate": gate}, bad={"fail": "boom"})
        pipelines = {"deploy": {"rollback": False, "steps": ["t:unone"]},
                     "undoing": {"rollback": True, "steps": [
                         {"step": "t:one", "undo": "t:unone"}, "t:bad"]}}
        async with kit(tmp_path, pipelines, runner, runner={"step_limits": {"t:unone": 1}}) as k:
            await k.deploy("web1")  # holds t:unone's only slot as a step
            await until(lambda: runner.total == 1, "web1 holds the slot")
            await k.deploy("web2", "undoing")
            await until(lambda: runner.calls.count("t:unone") == 2, "web2's undo runs anyway")
            gate.set()
            assert (await k.finish("web2")).state == State.ROLLED_BACK
            assert (await k.finish("web1")).state == State.READY
    run(go())


def test_the_in_flight_count_returns_to_zero(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, tasks("t:one", "t:two", two={"fail": "x"})) as k:
            await k.deploy("web1")
            await k.deploy("web2")
            await k.finish("web1")
            await k.finish("web2")
            assert not any(k.engine.in_flight.values())
    run(go())


# -- wait:host ----------------------------------------------------------------------------------
WAITING = {"deploy": {"rollback": False, "steps": ["t:one", "t:two"]},
           "after": {"rollback": False, "steps": ["wait:host db1 ready", "t:app"]},
           "after_one": {"rollback": False, "steps": ["wait:host db1 t:one", "t:app"]},
           "brief": {"rollback": False, "steps": ["wait:host db1 ready 0.1", "t:app"]}}


def test_a_wait_holds_until_the_other_host_is_ready(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = tasks("t:one", "t:two", "t:app", two={"gate": gate})
        async with kit(tmp_path, WAITING, runner) as k:
            await k.deploy("db1")
            await k.deploy("app1", "after")
            await until(lambda: "t:two" in runner.calls, "db1 at its last step")
            await asyncio.sleep(0.05)
            assert "t:app" not in runner.calls
            gate.set()
            assert (await k.finish("app1")).state == State.READY
            assert runner.calls == ["t:one", "t:two", "t:app"]
    run(go())


def test_a_wait_for_a_step_goes_on_once_that_step_is_done(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = tasks("t:one", "t:two", "t:app", two={"gate": gate})
        async with kit(tmp_path, WAITING, runner) as k:
            await k.deploy("db1")
            await k.deploy("app1", "after_one")
            assert (await k.finish("app1")).state == State.READY
            assert (await k.store.latest("db1")).state == State.RUNNING
            gate.set()
            await k.finish("db1")
    run(go())


def test_a_wait_gives_up_when_its_host_fails(tmp_path: Path) -> None:
    async def go() -> None:
        runner = tasks("t:one", "t:two", "t:app", two={"fail": "disk full", "delay": 0.02})
        async with kit(tmp_path, WAITING, runner) as k:
            await k.deploy("db1")
            await k.deploy("app1", "after")
            d = await k.finish("app1")
            assert d.state == State.FAILED
            assert "gave up waiting for db1 ready: db1 FAILED at step 2/2 t:two" in d.error
            assert "t:app" not in runner.calls
    run(go())


def test_a_wait_times_out_naming_where_the_host_is(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = tasks("t:one", "t:two", "t:app", two={"gate": gate})
        async with kit(tmp_path, WAITING, runner) as k:
            await k.deploy("db1")
            await until(lambda: "t:two" in runner.calls, "db1 at step 2")
            await k.deploy("app1", "brief")
            d = await k.finish("app1")
            assert d.state == State.FAILED
            assert "timed out after 0.1s waiting for db1 ready: db1 (at step 2/2 t:two)" \
                in d.error
            gate.set()
            await k.finish("db1")
    run(go())


def test_a_wait_for_a_host_never_deployed_fails_at_once(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, WAITING, tasks("t:one", "t:two", "t:app")) as k:
            await k.deploy("app1", "after")
            d = await k.finish("app1")
            assert d.state == State.FAILED and "nothing to wait for: no host db1" in d.error
    run(go())


def test_a_wait_on_the_host_itself_is_refused_at_plan(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, WAITING, tasks("t:one", "t:two", "t:app")) as k:
            with pytest.raises(JarvisError, match="waits for the host itself"):
                await k.deploy("db1", "after")
    run(go())


def test_a_cancel_ends_a_wait(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = tasks("t:one", "t:two", "t:app", two={"gate": gate})
        async with kit(tmp_path, WAITING, runner) as k:
            await k.deploy("db1")
            await k.deploy("app1", "after")
            await until(lambda: "t:two" in runner.calls, "db1 at step 2")
            await k.engine.cancel("app1", by="bob")
            d = await k.finish("app1")
            assert d.state == State.CANCELLED and d.error == "cancelled at step 1/2 by bob"
            gate.set()
            await k.finish("db1")
    run(go())


def test_a_wait_holds_no_slot(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = tasks("t:one", "t:two", "t:app", one={"gate": gate})
        async with kit(tmp_path, WAITING, runner, runner={"max_concurrent_steps": 1}) as k:
            await k.deploy("db1")
            await until(lambda: runner.total == 1, "db1 holds the only slot")
            await k.deploy("app1", "after")
            await until(lambda: EventKind.STEP_STARTED in k.kinds("app1"), "app1 waiting")
            assert k.engine.in_flight["t:one"] == 1
            gate.set()
            assert (await k.finish("app1")).state == State.READY
    run(go())


# -- approval ------------------------------------------------------------------------------------
APPROVAL = {"acl": {"approval_window": 60}}


def test_a_forced_deploy_awaits_approval_and_runs_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        runner = tasks("t:one", "t:two")
        async with kit(tmp_path, PLAIN, runner, **APPROVAL) as k:
            d = await k.deploy("web1", force=True, requester="alice")
            assert d.state == State.AWAITING_APPROVAL and d.owner is None
            await asyncio.sleep(0.02)
            assert runner.calls == [] and "web1" not in k.engine.running
    run(go())


def test_a_host_awaiting_approval_is_busy(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, tasks("t:one", "t:two"), **APPROVAL) as k:
            await k.deploy("web1", force=True, requester="alice")
            with pytest.raises(HostBusy):
                await k.deploy("web1")
    run(go())


def test_the_requester_cannot_approve_their_own_force(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, tasks("t:one", "t:two"), **APPROVAL) as k:
            await k.deploy("web1", force=True, requester="alice")
            with pytest.raises(JarvisError, match="Alice asked for the force .* someone else"):
                await k.engine.approve("web1", by="Alice")
    run(go())


def test_a_second_nick_of_the_same_account_cannot_approve(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, tasks("t:one", "t:two"), **APPROVAL) as k:
            await k.deploy("web1", force=True, requester="alice", account="acct-a")
            with pytest.raises(JarvisError, match="cannot approve it too"):
                await k.engine.approve("web1", by="alice_away", account="ACCT-A")
    run(go())


def test_another_person_approves_and_it_runs(tmp_path: Path) -> None:
    async def go() -> None:
        runner = tasks("t:one", "t:two")
        async with kit(tmp_path, PLAIN, runner, **APPROVAL) as k:
            d = await k.deploy("web1", force=True, requester="alice")
            await k.engine.approve("web1", by="bob")
            done = await k.finish("web1")
            assert done.state == State.READY and runner.calls == ["t:one", "t:two"]
            jarvis = (await k.store.clipboard(d.id))["jarvis"]
            assert jarvis["force"] is True and jarvis["approved_by"] == "bob"
            assert EventKind.APPROVED in k.kinds("web1")
    run(go())


def test_an_approval_after_the_window_is_refused_and_the_wait_expires(tmp_path: Path) -> None:
    async def go() -> None:
        runner = tasks("t:one", "t:two")
        async with kit(tmp_path, PLAIN, runner, acl={"approval_window": 0.05}) as k:
            await k.deploy("web1", force=True, requester="alice")
            await asyncio.sleep(0.1)
            with pytest.raises(JarvisError, match="expired"):
                await k.engine.approve("web1", by="bob")
            assert (await k.store.latest("web1")).state == State.APPROVAL_EXPIRED
            assert EventKind.APPROVAL_EXPIRED in k.kinds("web1") and runner.calls == []
            with pytest.raises(JarvisError, match="expired; deploy it again with force"):
                await k.engine.approve("web1", by="bob")
    run(go())


def test_expired_waits_are_marked_by_the_keeper(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, tasks("t:one", "t:two"),
                       acl={"approval_window": 0.05}) as k:
            await k.deploy("web1", force=True, requester="alice")
            assert await k.engine.expire_approvals() == []
            await asyncio.sleep(0.1)
            expired = await k.engine.expire_approvals()
            assert [d.hostname for d in expired] == ["web1"]
    run(go())


def test_an_expired_wait_frees_the_host(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, tasks("t:one", "t:two"),
                       acl={"approval_window": 0.05}) as k:
            await k.deploy("web1", force=True, requester="alice")
            await asyncio.sleep(0.1)
            await k.deploy("web1")
            assert (await k.finish("web1")).state == State.READY
    run(go())


def test_approve_with_nothing_waiting_says_so(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, tasks("t:one", "t:two"), **APPROVAL) as k:
            with pytest.raises(JarvisError, match="web1: no deployment awaits approval"):
                await k.engine.approve("web1", by="bob")
    run(go())


def test_cancelling_a_wait_ends_it_having_run_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        runner = tasks("t:one", "t:two")
        async with kit(tmp_path, PLAIN, runner, **APPROVAL) as k:
            await k.deploy("web1", force=True, requester="alice")
            _d, owner = await k.engine.cancel("web1", by="bob")
            assert owner is None
            latest = await k.store.latest("web1")
            assert latest.state == State.CANCELLED and latest.meta["cancelled_by"] == "bob"
            assert runner.calls == []
    run(go())


def test_a_force_never_approved_cannot_be_retried(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, PLAIN, tasks("t:one", "t:two"), **APPROVAL) as k:
            await k.deploy("web1", force=True, requester="alice")
            await k.engine.cancel("web1", by="bob")
            with pytest.raises(JarvisError, match="forced and never approved"):
                await k.engine.retry("web1")
    run(go())


def test_an_approved_force_is_retried_from_its_failed_step(tmp_path: Path) -> None:
    async def go() -> None:
        runner = tasks("t:one", "t:two", two={"fail": "boom"})
        async with kit(tmp_path, PLAIN, runner, **APPROVAL) as k:
            await k.deploy("web1", force=True, requester="alice")
            await k.engine.approve("web1", by="bob")
            await k.finish("web1")
            runner.behaviours["t:two"].fail = None
            await k.engine.retry("web1")
            assert (await k.finish("web1")).state == State.READY
            assert runner.calls == ["t:one", "t:two", "t:two"]
    run(go())


def test_a_rolled_back_force_needs_a_new_force(tmp_path: Path) -> None:
    async def go() -> None:
        runner = tasks("t:one", "t:unone", "t:two", two={"fail": "boom"})
        pipelines = {"deploy": {"rollback": True, "steps": [
            {"step": "t:one", "undo": "t:unone"}, "t:two"]}}
        async with kit(tmp_path, pipelines, runner, **APPROVAL) as k:
            await k.deploy("web1", force=True, requester="alice")
            await k.engine.approve("web1", by="bob")
            assert (await k.finish("web1")).state == State.ROLLED_BACK
            with pytest.raises(JarvisError, match="forced and rolled back"):
                await k.engine.retry("web1")
    run(go())


# -- clusters ------------------------------------------------------------------------------------
CLUSTER_PIPELINES = {"deploy": {"rollback": False, "steps": ["t:one"]},
                     "db": {"rollback": False, "steps": ["t:one", "t:two"]},
                     "web": {"rollback": False, "steps": ["wait:host role=db ready", "t:app"]}}


def shop(**extra: Any) -> dict[str, Any]:
    return {"cluster": "shop", "defaults": {"domain": "example.com"},
            "roles": {"db": "db", "web": "web"},
            "hosts": [{"hostname": "db1", "role": "db"},
                      {"hostname": "web{n}", "role": "web", "count": 3}], **extra}


async def deploy_cluster(k: Kit, spec: dict[str, Any]) -> tuple[str, list[Any]]:
    return await k.engine.deploy_cluster(k.engine.plan_cluster(spec), SOURCE, requester="al")


def test_a_cluster_runs_its_hosts_under_one_id_waits_and_all(tmp_path: Path) -> None:
    async def go() -> None:
        runner = tasks("t:one", "t:two", "t:app")
        async with kit(tmp_path, CLUSTER_PIPELINES, runner) as k:
            cluster_id, deployments = await deploy_cluster(k, shop())
            assert cluster_id == "shop#1" and len(deployments) == 4
            for d in deployments:
                assert (await k.finish(d.hostname)).state == State.READY
            assert runner.calls.index("t:two") < runner.calls.index("t:app")
            again, _ = await deploy_cluster(k, shop())
            assert again == "shop#2"
            for d in _:
                await k.finish(d.hostname)
    run(go())


def test_hosts_that_wait_on_nobody_launch_first(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, CLUSTER_PIPELINES, tasks("t:one", "t:two", "t:app")) as k:
            plan = k.engine.plan_cluster({**shop(), "hosts": [
                {"hostname": "web1", "role": "web"}, {"hostname": "db1", "role": "db"}]})
            assert [h.hostname for h in plan.hosts] == ["db1", "web1"]
    run(go())


def test_a_count_over_the_cluster_limit_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, CLUSTER_PIPELINES, tasks("t:one", "t:two", "t:app"),
                       clusters={"max_hosts": 3}) as k:
            with pytest.raises(DesignError, match=r"count 5 is over clusters.max_hosts \(3\)"):
                k.engine.plan_cluster({**shop(), "hosts": [
                    {"hostname": "web{n}", "role": "web", "count": 5}]})
    run(go())


def test_hosts_over_the_cluster_limit_in_sum_are_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, CLUSTER_PIPELINES, tasks("t:one", "t:two", "t:app"),
                       clusters={"max_hosts": 3}) as k:
            with pytest.raises(DesignError, match="lists more than 3 hosts"):
                k.engine.plan_cluster(shop())
    run(go())


def test_a_huge_count_is_refused_by_arithmetic(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, CLUSTER_PIPELINES, tasks("t:one", "t:two", "t:app")) as k:
            started = time.monotonic()
            with pytest.raises(DesignError, match="over clusters.max_hosts"):
                k.engine.plan_cluster({**shop(), "hosts": [
                    {"hostname": "web{n}", "role": "web", "count": 100_000_000}]})
            assert time.monotonic() - started < 1
    run(go())


def test_waits_that_form_a_cycle_are_refused(tmp_path: Path) -> None:
    async def go() -> None:
        pipelines = {**CLUSTER_PIPELINES,
                     "a": {"rollback": False, "steps": ["wait:host b ready", "t:one"]},
                     "b": {"rollback": False, "steps": ["wait:host a ready", "t:one"]}}
        async with kit(tmp_path, pipelines, tasks("t:one", "t:two", "t:app")) as k:
            with pytest.raises(DesignError, match="can never finish"):
                k.engine.plan_cluster({"cluster": "loop", "hosts": [
                    {"hostname": "a", "pipeline": "a"}, {"hostname": "b", "pipeline": "b"}]})
    run(go())


def test_a_wait_for_a_host_outside_the_cluster_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        pipelines = {**CLUSTER_PIPELINES,
                     "a": {"rollback": False, "steps": ["wait:host zz ready", "t:one"]}}
        async with kit(tmp_path, pipelines, tasks("t:one", "t:two", "t:app")) as k:
            with pytest.raises(DesignError, match="no host zz in cluster c"):
                k.engine.plan_cluster({"cluster": "c", "hosts": [
                    {"hostname": "a", "pipeline": "a"}]})
    run(go())


def test_a_cluster_cannot_be_forced(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, CLUSTER_PIPELINES, tasks("t:one", "t:two", "t:app")) as k:
            with pytest.raises(JarvisError, match="a cluster is not forced as a whole"):
                k.engine.plan_cluster(shop(), force=True)
    run(go())


def test_one_busy_host_refuses_the_whole_cluster(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = tasks("t:one", "t:two", "t:app", one={"gate": gate})
        async with kit(tmp_path, CLUSTER_PIPELINES, runner) as k:
            await k.deploy("web2")
            with pytest.raises(HostBusy, match="cluster shop: web2 already being deployed"):
                await deploy_cluster(k, shop())
            assert set(k.engine.running) == {"web2"}
            assert await k.store.by_cluster("shop#1") == []
            gate.set()
            await k.finish("web2")
    run(go())


def test_one_locked_host_refuses_the_whole_cluster(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, CLUSTER_PIPELINES, tasks("t:one", "t:two", "t:app")) as k:
            await k.store.add_lock("web3", "carol", "rack move")
            with pytest.raises(JarvisError, match="web3"):
                await deploy_cluster(k, shop())
            assert k.engine.running == {}
    run(go())


def test_retrying_a_cluster_retries_only_its_stopped_hosts(tmp_path: Path) -> None:
    async def go() -> None:
        runner = tasks("t:one", "t:two", "t:app", two={"fail": "boom"})
        async with kit(tmp_path, CLUSTER_PIPELINES, runner) as k:
            cluster_id, deployments = await deploy_cluster(k, shop())
            states = {d.hostname: (await k.finish(d.hostname)).state for d in deployments}
            assert states["db1"] == State.FAILED
            assert {states[f"web{n}"] for n in (1, 2, 3)} == {State.FAILED}
            runner.behaviours["t:two"].fail = None
            retried = await k.engine.retry_cluster(cluster_id)
            assert len(retried) == 4
            for d in retried:
                assert (await k.finish(d.hostname)).state == State.READY
            with pytest.raises(JarvisError, match="no failed host to retry \\(4 ready\\)"):
                await k.engine.retry_cluster(cluster_id)
    run(go())


def test_cancelling_a_cluster_drains_it(tmp_path: Path) -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runner = tasks("t:one", "t:two", "t:app", one={"gate": gate})
        async with kit(tmp_path, CLUSTER_PIPELINES, runner) as k:
            cluster_id, deployments = await deploy_cluster(k, shop())
            await until(lambda: "t:one" in runner.calls, "db1 at step 1")
            await k.engine.cancel_cluster(cluster_id)
            gate.set()
            ended = {d.hostname: await k.finish(d.hostname) for d in deployments}
            assert runner.calls == ["t:one"]  # the running step finished; nothing after it
            assert all(d.state == State.CANCELLED for d in ended.values())
            assert [s.state for s in await k.store.steps(ended["db1"].id)] == ["ok"]
    run(go())


def test_cancelling_a_cluster_with_nothing_running_says_so(tmp_path: Path) -> None:
    async def go() -> None:
        async with kit(tmp_path, CLUSTER_PIPELINES, tasks("t:one", "t:two", "t:app")) as k:
            with pytest.raises(JarvisError, match="shop#9: no host of it is running"):
                await k.engine.cancel_cluster("shop#9")
    run(go())
