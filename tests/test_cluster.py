"""Clusters in one pass, through the bot: designs with hosts and roles, cross-host
waits, caps, summaries, cancel and retry. Everything behind the test adapter is
real (fork servers, worker processes, SQLite); the 20-host cluster runs on the
local provider (real sshd nodes), and every node is destroyed at the end.
Timing claims (who waited for whom, how many ran at once) are read back from the
store's step records."""
from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.testing import TestBot
from clipboard import cluster as cluster_mod
from clipboard import config as config_mod
from clipboard.errors import DesignError
from tests.aio import LoopThread, bot_in_thread
from tests.servers.local_node import cleanup, require_local_provider

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis

WORKERS = Path(__file__).parent / "workers"
LOCAL_CAP = 5
PROVIDER_CAP = 2


def write_config(tmp: Path) -> Path:
    data = {
        "store": {"path": str(tmp / "jarvis.db")},
        "runner": {"worker_dirs": [str(WORKERS)], "kill_grace": 0.5,
                   "step_limits": {"local:deploy": LOCAL_CAP},
                   "provider_limits": {"ec2": PROVIDER_CAP},
                   "provider_modules": ["shellworker", "local"]},
        "clusters": {"announce_interval": 30},
        "roles": {"db": {"pipeline": "quick"}, "web": {"pipeline": "webpicky", "grade": "small"}},
        "providers": {"local": {"state_dir": str(tmp / "nodes")}},
        "ssh": {"wait_interval": 0.05, "wait_timeout": 60},
        "pipelines": {
            "quick": {"steps": ["core:validate", "core:noop"]},
            "webpicky": {"steps": ["core:validate", "wait:host role=db ready 60",
                                   "shellworker:picky", "core:noop"]},
            "ldb": {"steps": ["core:validate", "local:deploy", "ssh:wait"]},
            "lweb": {"steps": ["core:validate", "wait:host role=db ready 300", "local:deploy",
                               "ssh:wait"]},
            "sleepy": {"steps": ["core:validate", "shellworker:sleepy"]},
            "pickydb": {"steps": ["core:validate", "shellworker:picky"]},
            "impatient": {"steps": ["core:validate", "wait:host role=db ready 1", "core:noop"]},
            "patient": {"steps": ["core:validate", "wait:host tdb2 ready 60", "core:noop"]},
            "draining": {"rollback": True, "steps": [
                "core:validate", {"step": "shellworker:record", "undo": "shellworker:unrecord"},
                "shellworker:sleepy", "core:randpass"]},
            "webcycle": {"steps": ["core:validate", "wait:host role=db ready", "core:noop"]},
            "dbcycle": {"steps": ["core:validate", "wait:host role=web core:noop",
                                  "core:noop"]},
            "dbwaitsweb": {"steps": ["core:validate", "wait:host role=web core:validate",
                                     "core:noop"]},
            "broken": {"steps": ["core:validate", "nosuch:step"]},
            "waitsnostep": {"steps": ["core:validate", "wait:host role=db ssh:hostkeys"]},
            "follows": {"steps": ["core:validate", "wait:host anchor ready 30", "core:noop"]},
        },
    }
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def tb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopThread, TestBot, Path]]:
    tmp = tmp_path_factory.mktemp("cluster")
    try:
        with bot_in_thread(config_mod.load(write_config(tmp))) as (loop, bot):
            yield loop, bot, tmp
    finally:
        cleanup(tmp / "nodes")


def cluster_file(tmp: Path, name: str, hosts: Any, roles: Any = None, **notes: Any) -> Path:
    """A cluster design; ``notes`` (with ``marks``) are what the test shellworker reads."""
    design = {"cluster": name, "defaults": {"provider": "local", "domain": "example.com"},
              "hosts": hosts, "notes": {"marks": str(tmp), **notes}}
    if roles is not None:
        design["roles"] = roles
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(design))
    return path


def ask(tb, text: str, pattern: str, timeout: float = 30) -> str:
    loop, bot, _ = tb
    return loop.run(bot.ask(text, pattern, timeout), timeout + 10)


def expect(tb, pattern: str, timeout: float = 60) -> str:
    loop, bot, _ = tb
    return loop.run(bot.expect(pattern, timeout), timeout + 10)


def expect_all(tb, *patterns: str, timeout: float = 60) -> None:
    """Wait until a line matching each pattern was said, in any order."""
    loop, bot, _ = tb
    missing = [re.compile(p) for p in patterns]

    async def go() -> None:
        while missing:
            line = await bot.expect(".", timeout)
            missing[:] = [p for p in missing if not p.search(line)]
    loop.run(go(), timeout + 10)


def rows(tb, query: str, *params: Any) -> list[tuple]:
    _, _, tmp = tb
    with sqlite3.connect(tmp / "jarvis.db") as db:
        return db.execute(query, params).fetchall()


def wait_until_all_run(tb, cluster: str, hosts: int, step: str) -> None:
    deadline = time.monotonic() + 20
    while rows(tb, "SELECT count(*) FROM steps s JOIN deployments d ON d.id = s.deployment_id"
                   " WHERE d.cluster = ? AND s.name = ? AND s.state = 'running'",
               cluster, step)[0][0] < hosts:
        assert time.monotonic() < deadline, f"the hosts never all reached {step}"
        time.sleep(0.05)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end before a start at the same time)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = now = 0
    for _, delta in edges:
        now += delta
        peak = max(peak, now)
    return peak


def test_twenty_local_nodes_web_waits_for_both_db_and_local_deploy_is_capped(tb) -> None:
    """2 db + 18 web real local-provider nodes in one pass; destroyed at the end."""
    require_local_provider()
    _loop, _bot, tmp = tb
    path = cluster_file(tmp, "farm", [{"hostname": "ldb{n}", "role": "db", "count": 2},
                                      {"hostname": "lweb{n}", "role": "web", "count": 18}],
                        roles={"db": "ldb", "web": "lweb"})
    try:
        ack = ask(tb, f"deploy {path}", r"^farm#\d+: cluster of 20 hosts started \(2 db, 18 web\)")
        cluster = ack.split(":")[0]
        final = expect(tb, rf"^{cluster}: \d+/20 ready(?!.*(running|queued))", 240)
        assert final == f"{cluster}: 20/20 ready", final
        answer = ask(tb, "status lweb7", r"^lweb7: ")
        assert re.match(r"^lweb7: ready in \S+ \(4 steps\)$", answer)
        db_ready = max(r[0] for r in rows(
            tb, "SELECT finished_at FROM deployments WHERE cluster = ? AND hostname LIKE 'ldb%'",
            cluster))
        after_wait = rows(tb, "SELECT d.hostname, s.started_at FROM steps s JOIN deployments d"
                              " ON d.id = s.deployment_id WHERE d.cluster = ? AND s.idx = 3"
                              " AND d.hostname LIKE 'lweb%'", cluster)
        assert len(after_wait) == 18
        early = [host for host, started in after_wait if started < db_ready]
        assert not early, f"started local:deploy before both db hosts were ready: {early}"
        deploys = rows(tb, "SELECT s.started_at, s.finished_at FROM steps s JOIN deployments d"
                           " ON d.id = s.deployment_id WHERE d.cluster = ? AND"
                           " s.name = 'local:deploy' AND s.state = 'ok'", cluster)
        assert len(deploys) == 20
        assert max_overlap(deploys) == LOCAL_CAP, "the cap was exceeded or never reached"
        nodes = sorted(p.name for p in (tmp / "nodes").iterdir() if (p / "node.json").exists())
        assert len(nodes) == 20
    finally:
        destroy_all(tb, "farm")
    assert not any((tmp / "nodes").glob("*/node.json")), "a node survived local:destroy"


def destroy_all(tb, name: str) -> None:
    """local:destroy for every host of the cluster's runs, through the bot's own runner."""
    loop, bot, _ = tb
    store, runner = bot.bot.store, bot.bot.runner

    async def go() -> list[str]:
        cluster = await store.latest_cluster(name)
        members = await store.by_cluster(cluster) if cluster else []
        clipboards = [await store.clipboard(d.id) for d in members]
        results = await asyncio.gather(*(runner.run("local:destroy", c, timeout=60)
                                         for c in clipboards if c))
        return [r.error or "" for r in results if not r.ok]
    errors = loop.run(go(), 180)
    assert not errors, errors


def test_a_failed_host_leaves_the_others_to_finish_comes_first_and_retry_reruns_only_it(tb) -> None:
    _loop, bot, tmp = tb
    path = cluster_file(tmp, "shop", [{"hostname": "bdb1", "role": "db"},
                                      {"hostname": "bweb{n}", "role": "web", "count": 5}],
                        picky="bweb3")
    seen_before = len(bot.seen)
    ack = ask(tb, f"deploy {path}", r"^shop#\d+: cluster of 6 hosts started \(1 db, 5 web\)")
    cluster = ack.split(":")[0]
    final = expect(tb, rf"^{cluster}: \d+/6 ready(?!.*(running|queued))")
    assert final == (f"{cluster}: 5/6 ready, 1 failed — bweb3 FAILED at shellworker:picky: "
                     "picky: bweb3 REFUSED (exit status 1)")
    cluster_lines = bot.seen[seen_before:]
    assert not any(re.match(r"^b(web|db)\d+: ", line) for line in cluster_lines), \
        f"per-host announcements for a cluster: {cluster_lines}"
    ask(tb, "status shop", rf"^{cluster}: 5/6 ready, 1 failed$")
    line = expect(tb, r".")
    assert line == "bweb3 FAILED at step 3/4 shellworker:picky: picky: bweb3 REFUSED (exit status 1)"
    before = dict(rows(tb, "SELECT d.hostname, count(s.id) FROM deployments d JOIN steps s"
                           " ON s.deployment_id = d.id WHERE d.cluster = ? GROUP BY d.hostname",
                       cluster))
    ask(tb, "retry shop", rf"^{cluster}: retrying 1 host: bweb3 from step 3$")
    expect(tb, rf"^{cluster}: 6/6 ready$")
    after = dict(rows(tb, "SELECT d.hostname, count(s.id) FROM deployments d JOIN steps s"
                          " ON s.deployment_id = d.id WHERE d.cluster = ? GROUP BY d.hostname",
                      cluster))
    assert after.pop("bweb3") == before.pop("bweb3") + 2  # picky again, then noop
    assert after == before, "retry touched a host that had not failed"
    ask(tb, "status role=web cluster=shop", rf"^{cluster} role=web: 5/5 ready$")
    ask(tb, "status bweb3", r"^bweb3: ready in")


@pytest.mark.parametrize("hosts, roles, answer", [
    ([{"hostname": "cw1", "role": "web"}, {"hostname": "cd1", "role": "db"}],
     {"web": "webcycle", "db": "dbcycle"},
     (r"these waits can never finish \(a cycle\): cw1 \(wait:host role=db ready\) → "
      r"cd1 \(wait:host role=web core:noop\) → cw1")),
    ([{"hostname": "cw1", "role": "web"}], {"web": "webcycle"},
     r"host cw1 step 2 \(wait:host role=db ready\): no host in cluster bad has role db"),
    ([{"hostname": "cw1", "role": "web"}, {"hostname": "cd1", "role": "db"}],
     {"web": "waitsnostep", "db": "quick"},
     r"cd1's pipeline quick has no step ssh:hostkeys"),
    ([{"hostname": "cw1", "role": "web"}, {"hostname": "c w2", "role": "web"}], {},
     r"host 2: hostname 'c w2' contains forbidden characters"),
    ([{"hostname": "cw1", "role": "db"}, {"hostname": "cw1", "role": "db"}], {},
     r"host cw1 is listed twice"),
    ([{"hostname": "cw1", "role": "db"}], {"db": "broken"},
     r"host cw1: unknown step 'nosuch:step'"),
    ([{"hostname": "cw1", "role": "db"}], {"db": "nosuch"},
     r"host cw1: no pipeline named 'nosuch'"),
])
def test_a_bad_cluster_is_refused_whole_before_any_host_starts(tb, hosts, roles, answer) -> None:
    _loop, _bot, tmp = tb
    path = cluster_file(tmp, "bad", hosts, roles=roles)
    ask(tb, f"deploy {path}", answer)
    ask(tb, "status bad", r"^bad: never deployed$")
    ask(tb, "status cw1", r"^cw1: never deployed$")
    ask(tb, "status cd1", r"^cd1: never deployed$")


def test_waits_that_do_not_deadlock_pass_and_dry_run_shows_the_launch_order(tb) -> None:
    """db waits for web's first step while web waits for db ready: no cycle step by step."""
    _loop, _bot, tmp = tb
    path = cluster_file(tmp, "order", [{"hostname": "ow1", "role": "web"},
                                       {"hostname": "od1", "role": "db"}],
                        roles={"web": "webcycle", "db": "dbwaitsweb"})
    ask(tb, f"deploy {path} --dry-run", r"^order: dry run of a cluster of 2 hosts \(1 web, 1 db\)")
    expect(tb, r"^web \(1: ow1\): pipeline webcycle, 3 steps: core:validate, "
               r"wait:host role=db ready, core:noop$")
    ask(tb, "status ow1", r"^ow1: never deployed$")
    ack = ask(tb, f"deploy {path}", r"^order#\d+: cluster of 2 hosts started")
    expect(tb, rf"^{ack.split(':')[0]}: 2/2 ready$")


def test_a_wait_times_out_naming_what_it_waited_for(tb) -> None:
    _loop, _bot, tmp = tb
    path = cluster_file(tmp, "tmo", [{"hostname": "tdb1", "role": "db"},
                                     {"hostname": "tw1", "role": "web"}],
                        roles={"db": "sleepy", "web": "impatient"}, sleep=4)
    cluster = ask(tb, f"deploy {path}", r"^tmo#\d+: cluster of 2").split(":")[0]
    final = expect(tb, rf"^{cluster}: \d+/2 ready(?!.*(running|queued))")
    assert final == (f"{cluster}: 1/2 ready, 1 failed — tw1 FAILED at wait:host role=db ready 1: "
                     "timed out after 1s waiting for role=db ready: tdb1 (at step 2/2 "
                     "shellworker:sleepy)")


def test_a_failed_target_fails_its_waiter_at_once(tb) -> None:
    _loop, _bot, tmp = tb
    path = cluster_file(tmp, "fail", [{"hostname": "tdb2", "role": "db"},
                                      {"hostname": "tw2", "role": "web"}],
                        roles={"db": "pickydb", "web": "patient"}, picky="tdb2")
    cluster = ask(tb, f"deploy {path}", r"^fail#\d+: cluster of 2").split(":")[0]
    final = expect(tb, rf"^{cluster}: \d+/2 ready(?!.*(running|queued))")
    assert final == (f"{cluster}: 0/2 ready, 2 failed — tdb2 FAILED at shellworker:picky: picky: "
                     "tdb2 REFUSED (exit status 1); tw2 FAILED at wait:host tdb2 ready 60: gave up "
                     "waiting for tdb2 ready: tdb2 FAILED at step 2/2 shellworker:picky: picky: "
                     "tdb2 REFUSED (exit status 1)")
    (waited,) = rows(tb, "SELECT s.finished_at - s.started_at FROM steps s JOIN deployments d"
                         " ON d.id = s.deployment_id WHERE d.hostname = 'tw2' AND s.idx = 2")
    assert waited[0] < 10, "the waiter sat out its timeout instead of failing at once"
    ask(tb, "retry fail", rf"^{cluster}: retrying 2 hosts: tdb2 from step 2, tw2 from step 2$")
    expect(tb, rf"^{cluster}: 2/2 ready$")


def test_status_of_a_running_cluster_comes_from_memory_while_the_store_is_stuck(tb) -> None:
    """The bot follows every host of a run it started, so ``status <run>`` needs no
    trip to the store's reader thread (the slowest part when every host is busy)."""
    _loop, bot, tmp = tb
    path = cluster_file(tmp, "mem", [{"hostname": "mem{n}", "role": "x", "count": 3}],
                        roles={"x": "sleepy"}, sleep=3)
    cluster = ask(tb, f"deploy {path}", r"^mem#\d+: cluster of 3").split(":")[0]
    wait_until_all_run(tb, cluster, 3, "shellworker:sleepy")
    stuck, release = threading.Event(), threading.Event()

    def hold() -> None:
        stuck.set()
        release.wait(30)
    bot.bot.store._reader.submit(hold)
    try:
        assert stuck.wait(10), "the reader thread never took the blocking job"
        ask(tb, f"status {cluster}", rf"^{cluster}: 0/3 ready, 3 running$", timeout=5)
        line = expect(tb, r".", timeout=5)
        assert line.startswith("running: 3 at step 2/2 shellworker:sleepy (mem1, mem2, mem3)"), line
    finally:
        release.set()
    expect(tb, rf"^{cluster}: 3/3 ready$")
    ask(tb, f"status {cluster}", rf"^{cluster}: 3/3 ready$")


def test_cancelling_a_cluster_lets_running_steps_finish_and_starts_no_new_one(tb) -> None:
    _loop, _bot, tmp = tb
    path = cluster_file(tmp, "drain", [{"hostname": "dr{n}", "role": "x", "count": 4}],
                        roles={"x": "draining"}, sleep=2)
    cluster = ask(tb, f"deploy {path}", r"^drain#\d+: cluster of 4").split(":")[0]
    wait_until_all_run(tb, cluster, 4, "shellworker:sleepy")
    ask(tb, "cancel drain", rf"^{cluster}: cancelling 4 unfinished hosts: no new steps start")
    expect(tb, rf"^{cluster}: 0/4 ready, 4 rolled back — dr1 cancelled at core:randpass "
               r"\(rolled back\)")
    steps = rows(tb, "SELECT d.hostname, s.name, s.kind, s.state FROM steps s JOIN deployments d"
                     " ON d.id = s.deployment_id WHERE d.cluster = ? ORDER BY s.id", cluster)
    for host in ("dr1", "dr2", "dr3", "dr4"):
        mine = [(name, kind, state) for h, name, kind, state in steps if h == host]
        assert ("shellworker:sleepy", "step", "ok") in mine, f"{host}'s running step was killed"
        assert not any(name == "core:randpass" for name, _, _ in mine), f"{host} started a step"
        assert ("shellworker:unrecord", "undo", "ok") in mine, f"{host} was not rolled back"
    ask(tb, "retry drain", rf"^{cluster}: retrying 4 hosts: dr1 from step 1, dr2 from step 1, "
                           r"dr3 from step 1, dr4 from step 1$")
    expect(tb, rf"^{cluster}: 4/4 ready$")


def test_provider_caps_hold_across_cluster_and_single_deployments(tb) -> None:
    _loop, _bot, tmp = tb
    hosts = [{"hostname": "ec{n}", "role": "web", "provider": "ec2", "count": 5},
             {"hostname": "lo{n}", "role": "db", "count": 3}]
    path = cluster_file(tmp, "caps", hosts, roles={"web": "sleepy", "db": "sleepy"}, sleep=0.6)
    lone = tmp / "ecsolo.yaml"
    lone.write_text(yaml.safe_dump({"instance": {"hostname": "ecsolo", "provider": "ec2"},
                                    "notes": {"sleep": 0.6}}))
    cluster = ask(tb, f"deploy {path}", r"^caps#\d+: cluster of 8").split(":")[0]
    ask(tb, f"deploy {lone} pipeline=sleepy", r"^ecsolo: deployment #\d+ started")
    expect_all(tb, r"^ecsolo: ready in", rf"^{cluster}: 8/8 ready$")
    spans = rows(tb, "SELECT json_extract(d.meta, '$.labels.provider'), s.started_at,"
                     " s.finished_at FROM steps s JOIN deployments d ON d.id = s.deployment_id"
                     " WHERE (d.cluster = ? OR d.hostname = 'ecsolo')"
                     " AND s.name = 'shellworker:sleepy'", cluster)
    ec2 = [(a, b) for provider, a, b in spans if provider == "ec2"]
    assert len(ec2) == 6
    assert max_overlap(ec2) == PROVIDER_CAP
    assert max_overlap([(a, b) for _, a, b in spans]) > PROVIDER_CAP, "local hosts were capped too"
    ask(tb, "status provider=ec2", r"^provider=ec2: 6/6 ready$")
    ask(tb, "status caps role=db", rf"^{cluster} role=db: 3/3 ready$")
    ask(tb, "status cluster=nosuch", r"^no cluster named nosuch$")


def test_a_single_host_may_wait_for_another_and_names_never_clash(tb) -> None:
    loop, bot, tmp = tb
    anchor = tmp / "anchor.yaml"
    anchor.write_text(yaml.safe_dump({"instance": {"hostname": "anchor"},
                                      "notes": {"sleep": 1.5}}))
    follower = tmp / "follower.yaml"
    follower.write_text(yaml.safe_dump({"instance": {"hostname": "follower"}}))
    ask(tb, f"deploy {anchor} pipeline=sleepy", r"^anchor: deployment #\d+ started")
    ask(tb, f"deploy {follower} pipeline=follows", r"^follower: deployment #\d+ started")
    loop.run(bot.poll("status follower", r"^follower: running step 2/3 wait:host anchor ready 30 "))
    expect_all(tb, r"^anchor: ready in", r"^follower: ready in")
    (anchor_done,) = rows(tb, "SELECT finished_at FROM deployments WHERE hostname = 'anchor'")
    (noop_started,) = rows(tb, "SELECT s.started_at FROM steps s JOIN deployments d ON"
                               " d.id = s.deployment_id WHERE d.hostname = 'follower' AND s.idx = 3")
    assert noop_started[0] >= anchor_done[0]
    path = cluster_file(tmp, "anchor", [{"hostname": "an1"}], roles={})
    ask(tb, f"deploy {path} pipeline=quick", r"^cluster anchor: a host has that name")
    tiny = cluster_file(tmp, "tiny", [{"hostname": "ti1"}])
    cluster = ask(tb, f"deploy {tiny} pipeline=quick", r"^tiny#\d+: cluster of 1").split(":")[0]
    expect(tb, rf"^{cluster}: 1/1 ready$")
    single = tmp / "tinyhost.yaml"
    single.write_text(yaml.safe_dump({"instance": {"hostname": "tiny"}}))
    ask(tb, f"deploy {single}", r"^tiny is the name of a cluster; a host may not share it$")
    ask(tb, "cancel tiny", rf"^{cluster}: no host of it is running$")
    ask(tb, "retry tiny", rf"^{cluster}: no failed host to retry \(1 ready\)$")
    ask(tb, "status tiny#99", r"^no cluster run tiny#99$")


def test_expansion_carries_grades_domains_counts_and_shared_values() -> None:
    config = config_mod.Config(config_mod.merge(config_mod.defaults(), {
        "roles": {"db": {"pipeline": "dbp", "grade": "large"}}}))
    name, hosts = cluster_mod.expand({
        "Cluster": "Mix", "defaults": {"Provider": "Linode", "domain": "example.com",
                                       "grade": "small", "guestid": "Debian 12"},
        "roles": {"web": {"pipeline": "webp", "instance": {"datacenter": "atlanta"}}},
        "hosts": {"db1": {"role": "db"}, "web1": {"role": "web", "grade": "medium",
                                                  "provider": "ec2"},
                  "edge": None},
        "Notes": {"ticket": "OPS-12"}}, config, "deploy")
    assert name == "mix"
    by_name = {h["instance"]["hostname"]: (h, role, pipeline) for h, role, pipeline in hosts}
    db, role, pipeline = by_name["db1"]
    assert (role, pipeline) == ("db", "dbp")
    assert db["instance"] == {"provider": "Linode", "grade": "large", "guestid": "Debian 12",
                              "hostname": "db1", "fqdn": "db1.example.com", "cluster": "mix",
                              "role": "db"}
    assert db["notes"] == {"ticket": "OPS-12"}
    web, role, pipeline = by_name["web1"]
    assert (role, pipeline) == ("web", "webp")
    assert web["instance"]["grade"] == "medium" and web["instance"]["provider"] == "ec2"
    assert web["instance"]["datacenter"] == "atlanta"
    assert by_name["edge"][1:] == (None, "deploy")
    _, counted = cluster_mod.expand({"cluster": "n", "hosts": [
        {"hostname": "w{n}", "count": 3}]}, config)
    assert [h["instance"]["hostname"] for h, _, _ in counted] == ["w1", "w2", "w3"]
    for bad, message in [
        ({"hosts": ["a"]}, "needs cluster: <name>"),
        ({"cluster": "x", "defaults": {"hostname": "a"}, "hosts": ["a"]}, "same hostname"),
        ({"cluster": "x", "hosts": [{"hostname": "w", "count": 2}]}, "must hold {n}"),
        ({"cluster": "x", "hosts": ["x"]}, "the cluster's own name"),
        ({"cluster": "x", "hosts": []}, "lists no hosts"),
    ]:
        with pytest.raises(DesignError, match=re.escape(message)):
            cluster_mod.expand(bad, config)
