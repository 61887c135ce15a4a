"""``/metrics``: jarvis in Prometheus's text format (``prometheus-client``).

What is exported, and where each figure comes from:

- ``jarvis_deployments{state}``: deployments by state, counted by the store at each
  scrape (one ``GROUP BY``), so it holds across restarts and other processes;
- ``jarvis_step_duration_seconds{step,kind,outcome}``: a histogram of step and undo
  durations, observed from the engine's events (``wrap`` sits in the notify chain
  built by ``bot.app``), so it covers this process's runs since it started;
- ``jarvis_steps_in_flight{step}`` and ``jarvis_steps_waiting{step}``: steps holding a
  slot now, and steps waiting for one (``clipboard.slots``);
- ``jarvis_chat_reconnects_total{adapter}``: each chat adapter's reconnects;
- ``jarvis_webhook_deliveries_total`` and ``jarvis_webhook_failures_total``: from the
  webhook watches (``bot.webhooks``: ``counts()``; 0 in a process without them).

Each ``Metrics`` has its own ``CollectorRegistry``, never the process's global one:
several jarvis may run in one process (the tests do), and each must export its own.
The figures read at scrape time are taken on the loop by ``refresh`` (the store's
count is an ``await``) and handed to a collector, since prometheus-client collects
synchronously.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.http.requests import check_read, context
from clipboard.records import Event, EventKind, State, StepKind, StepState

FINISHED = {EventKind.STEP_OK: (StepKind.STEP, StepState.OK),
            EventKind.STEP_FAILED: (StepKind.STEP, StepState.FAILED),
            EventKind.UNDO_OK: (StepKind.UNDO, StepState.OK),
            EventKind.UNDO_FAILED: (StepKind.UNDO, StepState.FAILED)}
# From a no-op step (~10 ms through a warm fork server) to a cloud node's creation.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


@dataclass
class Snapshot:
    """The figures read at scrape time."""

    by_state: dict[str, int] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    reconnects: dict[str, int] = field(default_factory=dict)
    webhooks: tuple[int, int] = (0, 0)


class _Scraped(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        now = self.metrics.snapshot
        states = GaugeMetricFamily("jarvis_deployments", "Deployments by state, in the store",
                                   labels=["state"])
        for state in State:
            states.add_metric([str(state)], now.by_state.get(str(state), 0))
        yield states
        for name, text, values in (
                ("jarvis_steps_in_flight", "Steps holding a slot now", now.in_flight),
                ("jarvis_steps_waiting", "Steps waiting for a slot now", now.waiting)):
            family = GaugeMetricFamily(name, text, labels=["step"])
            for step, count in sorted(values.items()):
                family.add_metric([step], count)
            yield family
        reconnects = CounterMetricFamily("jarvis_chat_reconnects",
                                         "Times a chat adapter reconnected", labels=["adapter"])
        for adapter, count in sorted(now.reconnects.items()):
            reconnects.add_metric([adapter], count)
        yield reconnects
        delivered, failed = now.webhooks
        yield CounterMetricFamily("jarvis_webhook_deliveries", "Webhook POSTs delivered",
                                  value=delivered)
        yield CounterMetricFamily("jarvis_webhook_failures",
                                  "Webhook POSTs that failed (each try)", value=failed)


class Metrics:
    """One jarvis's metrics. ``adapters``: the chat adapters by name (their
    ``reconnects`` are read at each scrape)."""

    def __init__(self, adapters: Mapping[str, Any]) -> None:
        self.adapters = adapters
        self.registry = CollectorRegistry()
        self.step_seconds = Histogram(
            "jarvis_step_duration_seconds", "How long steps and undos took, by step",
            ["step", "kind", "outcome"], buckets=BUCKETS, registry=self.registry)
        self.snapshot = Snapshot()
        self.registry.register(_Scraped(self))

    def wrap(self, notify: Callable[[Event], None]) -> Callable[[Event], None]:
        """The engine's callback: ``notify``, then the duration of a step that ended."""
        def observed(event: Event) -> None:
            notify(event)
            finished = FINISHED.get(event.kind)
            if finished is not None and event.seconds is not None:
                kind, outcome = finished
                self.step_seconds.labels(str(event.step), kind, outcome).observe(event.seconds)
        return observed

    def observe(self, snapshot: Snapshot) -> bytes:
        """The text exposition with ``snapshot`` as the scrape-time figures."""
        self.snapshot = snapshot
        return generate_latest(self.registry)

    def reconnects(self) -> dict[str, int]:
        return {name: int(getattr(adapter, "reconnects", 0))
                for name, adapter in self.adapters.items()}


async def metrics(request: web.Request) -> web.Response:
    check_read(request)
    ctx = context(request)
    if ctx.metrics is None:
        raise web.HTTPNotFound(reason="metrics are not kept by this jarvis")
    slots = ctx.engine.driver.slots
    snapshot = Snapshot(
        by_state=await ctx.store.count_by_state(),
        in_flight={k: v for k, v in slots.in_flight.items() if v},
        waiting={k: v for k, v in slots.waiting.items() if v},
        reconnects=ctx.metrics.reconnects(),
        webhooks=ctx.webhooks.counts() if ctx.webhooks is not None else (0, 0))
    body = ctx.metrics.observe(snapshot)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
