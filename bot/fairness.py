"""Fair shares of the bot for the people on a shared chat network (``chat.fairness``).

Why: every answer leaves through one rate-limited queue per network, so one
person asking for 60 clipboards once queued 3,109 lines in #ops, 52 minutes in
front of the next deployment's announcement. Three limits, each per identity:

- commands: a token bucket (``command_burst`` at once, then ``command_rate``
  a second). Over it, one short "slow down" answer, then silence until the
  bucket lets a command through again, so a flood earns one line, not one per
  command, and costs the bot nothing (nothing is parsed or run).
- waiting lines: at most ``queue_cap`` of an identity's answer lines wait in the
  outbox (on Jabber: messages, each packing several lines); the rest of an answer
  is dropped with one line saying so (bot.outbox).
- room answers longer than ``private_over`` lines go to the asker privately; the
  room gets one line saying so.

An identity is what the network vouches for: the IRC services account when the
server told it, else ``nick!user@host`` (a new nick is a new bucket, but each
costs a reconnect or a NICK, itself limited by the server); the Jabber real JID,
else the unverified ``room/nick``. Buckets of identities that have been quiet
long enough to be full again are forgotten.
"""
from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

from bot.adapter import Incoming
from bot.outbox import TokenBucket

log = logging.getLogger(__name__)


def identity_key(incoming: Incoming) -> str:
    """Whose share a line counts against (the module docstring says why this)."""
    who = f"account:{incoming.account}" if incoming.account else incoming.identity
    return f"{incoming.adapter}:{who}"


class Verdict(enum.Enum):
    RUN = "run"
    WARN = "warn"      # over the limit: answer "slow down" once
    IGNORE = "ignore"  # over the limit and told already: say nothing


class CommandLimiter:
    """A token bucket per identity, and whether it has been told to slow down."""

    PRUNE_AT = 1000  # buckets kept before the full ones are forgotten

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._warned: set[str] = set()

    def check(self, key: str) -> Verdict:
        """Take one command's token for ``key``, or say why not."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.PRUNE_AT:
                self._prune()
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
        if bucket.delay() == 0:
            bucket.take()
            self._warned.discard(key)
            return Verdict.RUN
        if key in self._warned:
            return Verdict.IGNORE
        self._warned.add(key)
        log.info("%s is over the command limit; told to slow down once, then ignored", key)
        return Verdict.WARN

    def slow_down(self) -> str:
        return (f"slow down: at most {self.burst} commands at once, then one every "
                f"{1 / self.rate:g}s; I am ignoring you until then")

    def _prune(self) -> None:
        for key in [k for k, b in self._buckets.items() if b.full()]:
            del self._buckets[key]
            self._warned.discard(key)
