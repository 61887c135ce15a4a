"""The console adapter: a REPL on stdin/stdout, the embedded default.

Whoever sits at the console is the local operator (identity ``console:<user>``,
which the default ACL trusts with every command; ``Incoming.local``, so design
files are read with that user's own rights, not only below ``sources.file.roots``).
Lines need no address. At the end of input the bot finishes the deployments it
is running, then stops, so ``echo 'deploy loki.yaml' | jarvis`` works as a script.
"""
from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from typing import Any, TextIO

from bot.adapter import Adapter, Deliver, Incoming

log = logging.getLogger(__name__)


class ConsoleAdapter(Adapter):
    name = "console"

    def __init__(self, settings: dict[str, Any], bot_name: str, *,
                 stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        super().__init__(settings, bot_name)
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.identity = f"console:{getpass.getuser()}"
        self.closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, deliver: Deliver) -> None:
        self._write(f"{self.bot_name} ready; type 'help' (end of input quits)")
        self._reader = asyncio.create_task(self._read(deliver))

    async def _read(self, deliver: Deliver) -> None:
        while True:
            line = await asyncio.to_thread(self.stdin.readline)
            if not line:
                self.closed.set()
                return
            if line.strip():
                await deliver(Incoming(adapter=self.name, identity=self.identity, text=line.strip(),
                                       reply_to="console", local=True))

    def send(self, target: str, text: str) -> None:
        self._write(text)

    def _write(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    async def stop(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
