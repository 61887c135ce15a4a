"""The state store's summaries: the one SQLite counts and groups, and the one the
bot makes in memory for a run it follows, must say the same thing."""
from __future__ import annotations

import asyncio
import random
from pathlib import Path

from clipboard.records import NAMES_SHOWN, State, Summary, summarize
from clipboard.steps import Step
from clipboard.store import Store

STATES = (["ready"] * 5 + ["running"] * 4 + ["queued"] * 3
          + ["failed", "cancelled", "rolled back", "rollback failed", "rolling back",
             "decommissioned", "awaiting approval", "approval expired"])


def comparable(summary: Summary) -> tuple:
    """Deployments from the two paths differ in float precision (SQLite's JSON keeps
    15 digits), so the hosts needing attention are compared by what status shows."""
    return (summary.counts, summary.total,
            [(d.hostname, d.state, d.current_step, d.error) for d in summary.attention],
            summary.running, summary.queued)


async def build(path: Path, hosts: int, seed: int) -> tuple[Store, str]:
    pick = random.Random(seed)
    store = Store(path)
    await store.open()
    pipelines = {"short": [Step("core:validate"), Step("core:noop")],
                 "long": [Step(f"core:step{n}") for n in range(1, 8)]}
    specs = []
    for n in range(hosts):
        name = pick.choice(sorted(pipelines))
        specs.append({"hostname": f"h{n}", "source": "test", "pipeline": name,
                      "steps": pipelines[name], "clipboard": {"instance": {"hostname": f"h{n}"}},
                      "meta": {"labels": {"role": pick.choice(["db", "web"])}}})
    cluster, deployments = await store.create_cluster("mix", specs)
    for d in deployments:
        state = pick.choice(STATES)
        step = pick.randint(1, len(d.steps)) if state != "queued" else 0
        await store.update_deployment(d.id, state=state, current_step=step,
                                      error=f"{d.hostname} broke" if state != "ready" else None)
    return store, cluster


def test_the_summary_from_memory_equals_the_one_from_the_store(tmp_path: Path) -> None:
    async def go() -> None:
        store, cluster = await build(tmp_path / "jarvis.db", 300, seed=7)
        try:
            for limit in (0, 3, 50):
                stored = (await store.status_of(cluster, {}, limit, None)).summary
                assert stored is not None
                assert comparable(summarize(await store.by_cluster(cluster), limit)) == \
                    comparable(stored)
            assert len(stored.running) > 2 and stored.attention and \
                len(stored.queued) == NAMES_SHOWN, "the mix did not exercise every part"
            assert set(stored.counts) == set(State)
            assert [d.state for d in stored.attention][:2] == ["rollback failed"] * 2
        finally:
            await store.close()
    asyncio.run(go())


def test_a_followed_run_is_named_not_summarised_by_the_store(tmp_path: Path) -> None:
    async def go() -> None:
        store, cluster = await build(tmp_path / "jarvis.db", 20, seed=1)
        try:
            found = await store.status_of("mix", {}, 5, None, frozenset({cluster}))
            assert (found.cluster, found.summary, found.live) == (cluster, None, True)
            found = await store.status_of("mix", {}, 5, None, frozenset({"mix#99"}))
            assert found.summary is not None and found.summary.total == 20
        finally:
            await store.close()
    asyncio.run(go())
