"""Forcing takes two people: the record of who asked and who approved.

How jarvis knows a host is production before anything runs — it does not, and
does not try. A host is production when its design says ``instance.production``
or its LDAP entry carries a mark, and only ``inventory:production_check`` asks
the directory, at run time, failing closed when it cannot. Guessing earlier in
the engine would put a second, weaker copy of that rule in front of the real
one. So the rule is split where each half can be kept:

* the engine holds EVERY ``deploy … force`` (whatever the host) as ``awaiting
  approval``: recorded, owning its host, run by nobody, until a second identity
  allowed by ``acl.approve`` says ``approve <host>`` within ``acl.approval_window``
  seconds. Only then is the approval written into the clipboard's ``jarvis:``
  block (``approved_by``, ``approved_at``), which no design can write, and the
  deployment started;
* ``inventory:production_check`` lets a production host through only when
  ``jarvis:`` records ``force`` AND an approval by an identity other than
  ``requested_by``. A lone ``force`` — however it got into a clipboard: an older
  jarvis, a retry, a hand-made run — never passes.

There is deliberately no switch to turn the second person off: it would be the
one setting that undoes the rule, and a force on a host that turns out not to be
production costs only the wait. The same identity (compared without regard to
case, and by services account when both requests carried one) may not approve
its own force. A waiting deployment survives restarts as it is: no process owns
it, so none takes it up; whoever looks after the window (the lease keeper of any
long-running jarvis, ``approve``, a new ``deploy`` of the host) marks it
``approval expired``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

META_KEY = "approval"


@dataclass
class Approval:
    """What a forced deployment's ``meta.approval`` holds."""

    requested_by: str
    until: float
    requested_account: str | None = None
    approved_by: str | None = None
    approved_at: float | None = None

    @classmethod
    def of(cls, meta: dict[str, Any]) -> Approval | None:
        found = meta.get(META_KEY)
        return cls(**found) if isinstance(found, dict) else None

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    def expired(self, now: float | None = None) -> bool:
        return self.approved_by is None and (time.time() if now is None else now) > self.until

    def same_person(self, identity: str, account: str | None) -> bool:
        """Whether ``identity`` (with its verified ``account``) is who asked for the force."""
        if account and self.requested_account:
            return account.casefold() == self.requested_account.casefold()
        return identity.casefold() == self.requested_by.casefold()


def clock(timestamp: float) -> str:
    """``2026-12-02 02:15:00 UTC``: when a window ends, the same for everyone who reads it."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def approved_in(intent: dict[str, Any]) -> str | None:
    """The second identity a ``jarvis:`` block records as having approved its force, or
    None: a missing, empty or self-given approval counts as none."""
    approver, requester = intent.get("approved_by"), intent.get("requested_by")
    if not isinstance(approver, str) or not approver.strip():
        return None
    if isinstance(requester, str) and approver.casefold() == requester.casefold():
        return None
    return approver
