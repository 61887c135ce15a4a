"""The allowed range of every numeric configuration key.

The schema (``clipboard/defaults.yaml``) says a timeout is a number; this says
which numbers make sense. A negative timeout, a port of 70000 or a lease of 0
seconds type-checks, and fails much later (a deployment that never times out, a
connect that cannot happen, owners losing their deployments at once), so
``clipboard.config.validate`` refuses them up front, naming the range. The
bounds are generous: they stop mistakes (a sign, a unit, an extra digit), not
unusual setups.

Patterns are dotted paths; ``*`` matches any one part (a free-form entry, a
provider). A test keeps every numeric key of the defaults covered here.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """``low`` to ``high`` inclusive; ``low`` itself is refused when ``above_low``."""

    low: float
    high: float
    above_low: bool = False

    def allows(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return (value > self.low if self.above_low else value >= self.low) and value <= self.high

    def describe(self) -> str:
        low = f"more than {_show(self.low)}" if self.above_low else f"at least {_show(self.low)}"
        return f"{low} and at most {_show(self.high)}"


def _show(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


MINUTE, HOUR, DAY, WEEK = 60, 3600, 86400, 7 * 86400
PORT = Range(1, 65535)
SECONDS = Range(0, HOUR, above_low=True)        # one request, one connect
LONG_SECONDS = Range(0, DAY, above_low=True)    # waiting for a machine
STEP_SECONDS = Range(0, WEEK, above_low=True)   # a whole step or command
BYTES = Range(1, 1 << 30)
SLOTS = Range(0, 100_000)                       # 0 = no limit

RANGES: dict[str, Range] = {
    "chat.*.port": PORT,
    "chat.*.rate": Range(0, 1000, above_low=True),
    "chat.*.burst": Range(1, 10_000),
    "chat.*.queue_limit": Range(1, 10_000_000),
    "chat.*.connect_timeout": SECONDS,
    "chat.*.reconnect_min_delay": SECONDS,
    "chat.*.reconnect_max_delay": SECONDS,
    "chat.*.ping_interval": SECONDS,
    "chat.xmpp.max_bytes": Range(64, 1 << 20),
    "chat.fairness.command_rate": Range(0, 1000, above_low=True),
    "chat.fairness.command_burst": Range(1, 10_000),
    "chat.fairness.queue_cap": Range(2, 10_000_000),  # a line of answer and the drop notice
    "chat.fairness.private_over": Range(0, 1000),     # 0 = never
    "acl.approval_window": Range(0, WEEK, above_low=True),
    "clipboard.max_bytes": Range(1024, 1 << 30),
    "clipboard.max_nodes": Range(100, 100_000_000),
    "store.lease_seconds": Range(3, HOUR),
    "runner.step_timeout": STEP_SECONDS,
    "runner.kill_grace": Range(0, 10 * MINUTE),
    "runner.stderr_tail_lines": Range(0, 10_000),
    "runner.max_concurrent_steps": Range(1, 100_000),
    "runner.step_limits.*": SLOTS,
    "runner.provider_limits.*": SLOTS,
    "runner.celery.visibility_timeout": Range(1, 7 * DAY),
    "runner.celery.restore_interval": Range(0.1, HOUR),
    "runner.celery.result_expires": Range(60, 365 * DAY),
    "runner.celery.answer_grace": Range(0, HOUR),
    "clusters.wait_timeout": STEP_SECONDS,
    "clusters.max_hosts": Range(1, 100_000),
    "clusters.announce_interval": Range(0, DAY, above_low=True),
    "clusters.status_lines": Range(1, 10_000),
    "dns.port": PORT,
    "dns.ttl": Range(0, 2**31 - 1),             # RFC 2181
    "dns.timeout": SECONDS,
    "keys.timeout": SECONDS,
    "configmgmt.timeout": STEP_SECONDS,
    "monitoring.duration": Range(0, 365 * DAY, above_low=True),
    "monitoring.timeout": SECONDS,
    "ldap.timeout": SECONDS,
    "sources.url.max_bytes": BYTES,
    "sources.url.api_max_bytes": BYTES,
    "sources.url.timeout": SECONDS,
    "sources.url.max_redirects": Range(0, 20),
    "providers.*.port": PORT,
    "providers.*.ssh_port": PORT,
    "providers.*.start_timeout": SECONDS,
    "providers.*.api_timeout": SECONDS,
    "providers.*.wait_timeout": LONG_SECONDS,
    "providers.*.poll_interval": Range(0, HOUR, above_low=True),
    "providers.vsphere.flavors.*.cpus": Range(1, 1024),
    "providers.vsphere.flavors.*.ram": Range(1, 1 << 24),   # MiB
    "providers.vsphere.flavors.*.disk": Range(0, 1 << 20),  # GiB
    "http.events_kept": Range(100, 100_000_000),
    "http.heartbeat": SECONDS,
    "http.stream_queue": Range(1, 10_000_000),
    "http.watch_timeout": SECONDS,
    "http.watch_backoff": Range(0, HOUR, above_low=True),
    "http.watch_max_backoff": Range(0, DAY, above_low=True),
    "notify.webhook.attempts": Range(1, 100),
    "notify.webhook.backoff": Range(0, HOUR),
    "notify.webhook.max_backoff": Range(0, DAY),
    "notify.webhook.timeout": SECONDS,
    "notify.email.port": PORT,
    "notify.email.timeout": SECONDS,
    "ssh.wait_interval": Range(0, MINUTE, above_low=True),
    "ssh.wait_timeout": LONG_SECONDS,
    "ssh.connect_timeout": SECONDS,
    "ssh.command_timeout": STEP_SECONDS,
}


def lookup(table: Mapping[str, T], path: str) -> T | None:
    """The entry of ``table`` whose dotted pattern matches ``path`` (the most specific
    wins: fewest ``*``), or None. A ``*`` stands for one name, which may itself hold
    dots: a pipeline called ``deploy.ec2`` is still ``pipelines.*``."""
    best: tuple[int, T] | None = None
    for pattern, entry in table.items():
        if _pattern(pattern).fullmatch(path):
            exact = sum(w != "*" for w in pattern.split("."))
            if best is None or exact > best[0]:
                best = (exact, entry)
    return None if best is None else best[1]


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(r"\.".join(".+" if w == "*" else re.escape(w) for w in pattern.split(".")))


def range_of(path: str) -> Range | None:
    """The range for the dotted ``path``, or None."""
    return lookup(RANGES, path)


def check(path: str, value: float) -> str | None:
    """One line when ``value`` is outside the range for ``path``; None when allowed."""
    allowed = range_of(path)
    if allowed is None or allowed.allows(value):
        return None
    return f"{path} is {value!r}; it must be {allowed.describe()}"
