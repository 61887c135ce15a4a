"""Typed records: what the store reads back is a member of its enum and a deployment's
steps are ``Step`` objects, decoded once where the row is read; the SQL the store
builds from the enums says what the in-memory rules say."""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from clipboard import steps as steps_mod
from clipboard.records import (
    ATTENTION_ORDER,
    STOPPED,
    UNDER_WAY,
    State,
    StepKind,
    StepState,
    attention_rank,
)
from clipboard.steps import Step
from clipboard.store import Store
from clipboard.store_rows import new_row, steps_from
from clipboard.store_status import ATTENTION_SQL, UNDER_WAY_SQL

PIPELINE = (Step("core:validate"), Step("node:create", 600.0, "node:destroy"),
            Step("wait:host role=db ready 60"))


def test_a_step_survives_the_mapping_a_deployment_row_stores() -> None:
    for step in PIPELINE:
        assert Step.from_dict(step.as_dict()) == step
    assert Step.from_dict({"step": "core:noop"}) == Step("core:noop")


def test_a_new_row_stores_steps_as_mappings_and_keeps_them_as_steps() -> None:
    row = new_row({"hostname": "h1", "source": "s", "pipeline": "p", "steps": PIPELINE,
                   "clipboard": {}})
    assert row["steps"] == PIPELINE
    assert '"undo": "node:destroy"' in row["steps_json"]
    assert row["state"] is State.QUEUED
    # the hosts of a cluster store the same text: decoded once, shared (Steps are frozen)
    assert steps_from(row["steps_json"]) == PIPELINE
    assert steps_from(row["steps_json"]) is steps_from(row["steps_json"])


def test_a_wait_names_the_end_of_a_pipeline_by_the_ready_state() -> None:
    assert steps_mod.UNTIL_READY == State.READY
    assert PIPELINE[2].wait is not None and PIPELINE[2].wait.until == State.READY


def test_the_sql_rank_of_the_stopped_is_the_one_summaries_use() -> None:
    conn = sqlite3.connect(":memory:")
    for state in State:
        (rank,) = conn.execute(f"SELECT {ATTENTION_SQL} FROM (SELECT ? AS state)",
                               (state,)).fetchone()
        if state in STOPPED:
            assert rank == attention_rank(state) == ATTENTION_ORDER.index(state)
        (under_way,) = conn.execute(f"SELECT ? IN {UNDER_WAY_SQL}", (state,)).fetchone()
        assert bool(under_way) == (state in UNDER_WAY)


def test_the_store_reads_back_typed_steps_states_and_kinds(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store(tmp_path / "jarvis.db")
        await store.open()
        try:
            d = await store.create_deployment(hostname="h1", source="s", pipeline="p",
                                              steps=PIPELINE, clipboard={"jarvis": {}})
            assert d.steps == PIPELINE and d.state is State.QUEUED
            first = await store.step_started(d.id, 1, "core:validate", current_step=1)
            await store.step_finished(first, state=StepState.OK, exit_status=0, error=None,
                                      stderr_tail=[], finished_at=1.0, deployment_id=d.id,
                                      after_step=None, clipboard=None)
            await store.step_started(d.id, 2, "node:create", current_step=2)
            await store.step_started(d.id, 1, "node:destroy", kind=StepKind.UNDO)
            await store.interrupted_steps(d.id)
            found = await store.deployment(d.id)
            assert found is not None
            assert found.steps == PIPELINE and isinstance(found.steps, tuple)
            assert found.state is State.RUNNING and found.step_name(2) == "node:create"
            records = await store.steps(d.id)
            assert [(r.kind, r.state) for r in records] == [
                (StepKind.STEP, StepState.OK), (StepKind.STEP, StepState.INTERRUPTED),
                (StepKind.UNDO, StepState.INTERRUPTED)]
            assert all(type(r.kind) is StepKind and type(r.state) is StepState
                       for r in records)
            assert await store.reached(d.id, "core:validate")
            assert not await store.reached(d.id, "node:create")
        finally:
            await store.close()
    asyncio.run(scenario())
