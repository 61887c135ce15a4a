"""The Celery side of ``runner.backend: celery`` that the bot and ``jarvis worker`` share:
the app built from ``runner.celery``, the task's name and wire format, and routing.

Both ends build the app from their own configuration file, so they must agree on the
broker, the result backend and the visibility timeout; everything else about a step
travels in its message. The settings here are the ones the step semantics rest on:

* JSON only, never pickle: a message is a step name, a clipboard and numbers, and a
  worker must not unpickle what anyone who can write to the broker sent.
* ``acks_late`` and ``reject_on_worker_lost``: a message is acknowledged when its
  step ended, so a worker host that dies mid-step leaves it to be delivered again
  (``retry_lost``); prefetch 1, so a busy worker does not sit on queued steps.
* The worker stores STARTED with its name (``clipboard.celery_worker``; Celery's own
  ``track_started`` is off so it cannot overwrite an earlier answer): the bot hears
  which worker took a step, and the engine's timeout counts from then, not from the
  time the step spent queued.
* A step's answer stored while the result backend is down (restarting) is tried
  again for about ``RETRIES`` × 2 s, not dropped: its deployment waits for it.
* jarvis's own result backend (``clipboard.celery_backend``: a state stored in one
  atomic script) and, for a redis broker, its own transport
  (``clipboard.celery_transport``: unacknowledged steps left alone when a connection
  drops), named by import path so that both ends load them.
* A short restore interval for redis's unacknowledged messages (kombu's default sweeps
  about every 100 s): a step of a worker killed outright is delivered again once
  ``visibility_timeout`` passed, which must be longer than the longest step.

Routing (``queue_for``): ``runner.celery.queues`` maps ``step=<module:task>``,
``module=<module>`` or a label ``<key>=<value>`` of the host (``provider=linode``,
``region=eu``: the instance's short values, as ``status`` filters on them) to a queue.
A step match wins over a module match, which wins over labels; labels are tried in
the order written. Anything else goes to ``default_queue``.
"""
from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clipboard.config import Config
from clipboard.errors import ConfigError

if TYPE_CHECKING:
    from celery import Celery

TASK = "jarvis.step"
CANCEL = "jarvis_cancel"
SENT_PREFIX = "jarvis-sent-"    # set by the bot once per task id: it was handed to the broker
RAN_PREFIX = "jarvis-ran-"      # set by a worker as it begins a step: who ran it
BACKENDS = ("local", "celery")
RESULT_BACKEND = "clipboard.celery_backend:StepResultBackend"  # one round trip a store
TRANSPORT = "clipboard.celery_transport:Transport"  # for a redis broker
RETRIES = 300  # a result store tried again, at most every 2 s: a broker restart's worth


def backend_of(config: Config) -> str:
    return config.runner.backend


def urls(config: Config) -> tuple[str, str]:
    """The broker and result backend URLs, the password (``broker_password`` or its
    ``_env``) put into any of them that names a user or host but no password."""
    celery = config.runner.celery
    broker = celery.broker_url
    if not broker:
        raise ConfigError("runner.celery.broker_url is not set (runner.backend is celery)")
    results = celery.result_backend or broker
    if not results.startswith(("redis://", "rediss://")):
        raise ConfigError("runner.celery.result_backend must be a redis:// or rediss:// URL "
                          "(the bot reads results and its reconciliation keys there)")
    if not celery.broker_password.configured:
        return broker, results
    password = celery.broker_password.require()
    return _with_password(broker, password), _with_password(results, password)


def _with_password(url: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None or not parts.hostname:
        return url
    user = urllib.parse.quote(parts.username or "", safe="")
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:{urllib.parse.quote(password, safe='')}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def build(config: Config, name: str = "jarvis") -> Celery:
    """The Celery app of this configuration (no task registered: the worker adds it).
    Celery is imported here, not above: a bot on the local backend never pays for it."""
    from celery import Celery
    broker, results = urls(config)
    celery = config.runner.celery
    transport = {"visibility_timeout": celery.visibility_timeout,
                 "unacked_restore_interval": celery.restore_interval,
                 "unacked_restore_throttle": 1}
    app = Celery(name, broker=broker, backend=f"{RESULT_BACKEND}+{results}",
                 set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        result_accept_content=["json"], event_serializer="json",
        task_acks_late=True, task_reject_on_worker_lost=True, task_track_started=False,
        worker_prefetch_multiplier=1, task_default_queue=default_queue(config),
        task_create_missing_queues=True, broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None, broker_transport_options=transport,
        result_backend_transport_options={"retry_policy": {"max_retries": 60,
                                                           "interval_max": 1.0}},
        result_backend_always_retry=True, result_backend_max_retries=RETRIES,
        result_backend_base_sleep_between_retries_ms=100,
        result_backend_max_sleep_between_retries_ms=2000,
        result_expires=celery.result_expires,
        broker_transport=TRANSPORT if broker.startswith(("redis://", "rediss://")) else None,
        worker_hijack_root_logger=False, worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry=True, task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 60, "interval_start": 0.2,
                                   "interval_step": 0.2, "interval_max": 1.0},
    )
    return app


def default_queue(config: Config) -> str:
    return config.runner.celery.default_queue


def queue_for(step: str, labels: Mapping[str, str], queues: Mapping[str, Any],
              default: str) -> str:
    """The queue a step of a host with ``labels`` goes to (see the module docstring)."""
    module = step.partition(":")[0]
    routes = [(str(key).partition("="), str(queue)) for key, queue in queues.items() if queue]
    for (key, _, value), queue in routes:
        if key.strip() == "step" and value.strip() == step:
            return queue
    for (key, _, value), queue in routes:
        if key.strip() == "module" and value.strip() == module:
            return queue
    for (key, _, value), queue in routes:
        name = key.strip().lower()
        if name not in ("step", "module") and labels.get(name) == value.strip().lower():
            return queue
    return default


def problems(config: Config) -> list[str]:
    """What makes this configuration's Celery settings unusable, one line each: an
    unknown backend, a route that routes nothing, or a step timeout the visibility
    timeout does not cover (that step would be delivered twice while it runs)."""
    found: list[str] = []
    try:
        if backend_of(config) != "celery":
            return []
        urls(config)
    except ConfigError as exc:
        return [str(exc)]
    found += [f"runner.celery.queues: {key!r} is not step=<module:task>, module=<name> or "
              f"<label>=<value>" for key in config.runner.celery.queues
              if not key.partition("=")[2].strip()]
    visibility = config.runner.celery.visibility_timeout
    for where, timeout in step_timeouts(config):
        if timeout >= visibility:
            found.append(f"{where} is {timeout:g}s, not less than runner.celery."
                         f"visibility_timeout ({visibility:g}s): a step that long would be "
                         f"delivered to a second worker while it still runs")
    return found


def step_timeouts(config: Config) -> list[tuple[str, float]]:
    """The default step timeout and every timeout a pipeline gives a step."""
    found = [("runner.step_timeout", config.runner.step_timeout)]
    pipelines = {name: spec for name, spec in config.section("pipelines").items()
                 if isinstance(spec, dict)}
    for name, spec in pipelines.items():
        for i, step in enumerate(spec.get("steps") or []):
            if isinstance(step, dict) and isinstance(step.get("timeout"), (int, float)):
                found.append((f"pipelines.{name}.steps[{i}].timeout", float(step["timeout"])))
    return found
