"""Celery's redis result backend with each of a step's writes one atomic round trip.

Celery stores a state by reading the stored one first (a SUCCESS is never
overwritten: a step delivered again must not undo its answer), then writing and
publishing it: two round trips, and between them another worker's answer can land
and be overwritten anyway. A worker under load waits for a CPU before each round
trip, so every one it saves shortens the step's slot on that worker; this backend
does the read, the write and the publish in one Lua script, atomically.

``begin`` is a worker's first write for a step, also one script: record this worker
as the one running it (``RAN_PREFIX``), read back the worker an earlier delivery
began it on and any answer stored, and store STARTED with this worker's name unless
an answer is there (``clipboard.celery_worker`` decides what to do with the two).

Both go through the backend's ``ensure``, so a result backend restarting under a
worker is waited for as Celery's own writes are. On the bot's side, sending a task
does not subscribe to its results (``on_task_call``): one listener hears them all.
``celery_app.build`` names this class in the result backend URL
(``<module>:<class>+redis://…``).
"""
from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend

from clipboard.celery_app import RAN_PREFIX

# answered(stored): whether a stored meta is an answer (SUCCESS), never to be replaced.
# store(key, meta, seconds): the meta stored (kept ``seconds``, 0 for ever) and
# published on the channel named like the key, where the bot hears it.
_STORE = """
local function answered(stored)
  if not stored then return false end
  local ok, meta = pcall(cjson.decode, stored)
  return ok and type(meta) == 'table' and meta['status'] == 'SUCCESS'
end
local function store(key, meta, seconds)
  if tonumber(seconds) > 0 then
    redis.call('SET', key, meta, 'EX', seconds)
  else
    redis.call('SET', key, meta)
  end
  redis.call('PUBLISH', key, meta)
end
"""

# KEYS: the task's meta; ARGV: the meta, seconds kept. Stores it unless answered.
STORE_SCRIPT = _STORE + """
local stored = redis.call('GET', KEYS[1])
if answered(stored) then return 0 end
store(KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: the task's meta, its RAN_PREFIX key; ARGV: the STARTED meta, seconds kept,
# this worker's name. Returns the stored answer (or false) and the earlier worker.
BEGIN_SCRIPT = _STORE + """
local ran = redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2], 'GET')
local stored = redis.call('GET', KEYS[1])
if answered(stored) then return {stored, ran} end
store(KEYS[1], ARGV[1], ARGV[2])
return {false, ran}
"""


class StepResultBackend(RedisBackend):  # type: ignore[misc]  # Celery is untyped
    """The redis result backend whose stores are one script each (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._store_script = self.client.register_script(STORE_SCRIPT)
        self._begin_script = self.client.register_script(BEGIN_SCRIPT)

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Nothing: the bot hears every step's states through ``celery_results.Results``;
        Celery's own subscription per task sent would cost two more round trips."""

    def _store_result(self, task_id: str, result: Any, state: str, traceback: Any = None,
                      request: Any = None, **kwargs: Any) -> Any:
        meta = self._get_result_meta(result=result, state=state, traceback=traceback,
                                     request=request)
        meta["task_id"] = task_id
        seconds = self.failure_expires if state == states.FAILURE else self.expires
        self.ensure(self._store_script, ([self.get_key_for_task(task_id)],
                                         [self.encode(meta), int(seconds or 0)]))
        return result

    def begin(self, task_id: str, worker: str, started: dict[str, Any],
              request: Any) -> tuple[dict[str, Any] | None, str | None]:
        """Record ``worker`` as running the task and store STARTED with ``started``
        unless an answer is stored: that answer (its result) and the worker an
        earlier delivery began the task on."""
        meta = self._get_result_meta(result=started, state=states.STARTED, traceback=None,
                                     request=request)
        meta["task_id"] = task_id
        keys = [self.get_key_for_task(task_id), RAN_PREFIX + task_id]
        stored, ran = self.ensure(self._begin_script,
                                  (keys, [self.encode(meta), int(self.expires or 86400),
                                          worker]))
        answered = self.decode_result(stored).get("result") if stored else None
        earlier = ran.decode() if isinstance(ran, bytes) else ran
        return (answered if isinstance(answered, dict) else None), earlier
