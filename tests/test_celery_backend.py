"""The result backend a worker stores a step's states through (``clipboard.celery_backend``),
against a real redis-server: each write is one script, and an answer stored is never
overwritten — not by a later STARTED from a delivery that came again, nor by a later
answer. What the bot hears is what it published: the states on the key's channel."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from celery import states
from celery.app.task import Context
from redis import Redis

from clipboard import celery_app
from clipboard import config as config_mod
from clipboard.celery_backend import StepResultBackend
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.servers  # a real redis-server


def request_of(task_id: str) -> Context:
    """The request a task body sees, as Celery builds it."""
    return Context(id=task_id)


@pytest.fixture
def backend(redis_server: RedisServer) -> Iterator[StepResultBackend]:
    _broker, results = redis_server.databases()
    user = {"runner": {"backend": "celery",
                       "celery": {"broker_url": redis_server.url(results),
                                  "result_backend": redis_server.url(results)}}}
    app = celery_app.build(config_mod.Config(config_mod.merge(config_mod.defaults(), user)))
    found = app.backend
    assert isinstance(found, StepResultBackend)
    yield found
    app.close()


def stored(backend: StepResultBackend, task_id: str) -> dict[str, Any]:
    raw = backend.client.get(backend.get_key_for_task(task_id))
    return dict(json.loads(raw)) if raw is not None else {}


def test_begin_records_the_worker_and_stores_started_on_the_channel(
        backend: StepResultBackend) -> None:
    task_id = "jarvis-t1"
    with Redis(connection_pool=backend.client.connection_pool) as client, \
            client.pubsub() as pubsub:
        pubsub.subscribe(f"celery-task-meta-{task_id}")
        pubsub.get_message(timeout=5)  # the subscription itself
        assert backend.begin(task_id, "w1@a", {"hostname": "w1@a"}, request_of(task_id)) == \
            (None, None)
        heard = pubsub.get_message(timeout=5)
    assert heard is not None
    assert json.loads(heard["data"])["status"] == states.STARTED
    meta = stored(backend, task_id)
    assert (meta["status"], meta["result"], meta["task_id"]) == \
        (states.STARTED, {"hostname": "w1@a"}, task_id)
    assert backend.client.get(celery_app.RAN_PREFIX + task_id) == b"w1@a"
    assert 0 < backend.client.ttl(celery_app.RAN_PREFIX + task_id) <= backend.expires


def test_a_delivery_that_comes_again_hears_which_worker_began_it(
        backend: StepResultBackend) -> None:
    backend.begin("jarvis-t2", "w1@a", {"hostname": "w1@a"}, request_of("jarvis-t2"))
    assert backend.begin("jarvis-t2", "w2@b", {"hostname": "w2@b"}, request_of("jarvis-t2")) == \
        (None, "w1@a")
    assert stored(backend, "jarvis-t2")["result"] == {"hostname": "w2@b"}


def test_an_answer_stored_is_handed_back_and_never_overwritten(
        backend: StepResultBackend) -> None:
    task_id, answer = "jarvis-t3", {"ok": True, "worker": "w1@a", "text": "a: 1\n"}
    backend.begin(task_id, "w1@a", {"hostname": "w1@a"}, request_of(task_id))
    backend.mark_as_done(task_id, answer, request=request_of(task_id))
    assert backend.begin(task_id, "w2@b", {"hostname": "w2@b"}, request_of(task_id)) == \
        (answer, "w1@a")
    backend.mark_as_failure(task_id, RuntimeError("late"), request=request_of(task_id))
    backend.mark_as_done(task_id, {"ok": False}, request=request_of(task_id))
    meta = stored(backend, task_id)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, answer)
    assert 0 < backend.client.ttl(backend.get_key_for_task(task_id)) <= backend.expires


def test_a_failure_is_stored_until_an_answer_comes(backend: StepResultBackend) -> None:
    task_id = "jarvis-t4"
    backend.mark_as_failure(task_id, RuntimeError("worker without jarvis"),
                            request=request_of(task_id))
    assert stored(backend, task_id)["status"] == states.FAILURE
    backend.mark_as_done(task_id, {"ok": True}, request=request_of(task_id))
    assert stored(backend, task_id)["status"] == states.SUCCESS
