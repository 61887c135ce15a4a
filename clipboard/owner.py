"""Who drives a deployment: one process, named in the store, holding a lease.

Several jarvis processes may share one store (a bot and a ``jarvis deploy`` from a
shell, or two bots by mistake). Each active deployment records its owner — the
machine, the pid, the pid's start time and what kind of process it is — and a
lease the owner renews. Another process takes a deployment over only when its
owner is gone:

- on the same machine, when the owner's pid is dead, or now belongs to another
  process (its start time differs: pids are reused);
- on another machine, when the lease has run out (a machine cannot see another's
  processes, so the lease is all it has).

A live owner on this machine keeps its deployments however late its lease is: a
process stopped under a debugger, or a loop blocked for a minute, is still the
owner, and two drivers would be worse than a late one.
"""
from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from typing import Any


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22);
    None when there is no such process, or only its zombie (killed, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


@dataclass(frozen=True)
class Owner:
    token: str   # unique per process: what the store's owner_id column holds
    host: str
    pid: int
    started: int | None
    role: str    # "jarvis run", "jarvis deploy", ...

    @classmethod
    def this_process(cls, role: str) -> Owner:
        pid = os.getpid()
        return cls(uuid.uuid4().hex, socket.gethostname(), pid, _start_ticks(pid), role)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> Owner | None:
        if not text:
            return None
        data: dict[str, Any] = json.loads(text)
        return cls(str(data["token"]), str(data["host"]), int(data["pid"]),
                   data.get("started"), str(data.get("role") or "jarvis"))

    def describe(self) -> str:
        """``jarvis run on host h, pid 4242``."""
        return f"{self.role} on host {self.host}, pid {self.pid}"

    def gone(self, lease_until: float | None, now: float) -> bool:
        """Whether this owner can no longer drive its deployments (see the module)."""
        if self.host == socket.gethostname():
            ticks = _start_ticks(self.pid)
            return ticks is None or (self.started is not None and ticks != self.started)
        return lease_until is None or lease_until < now
