"""How long ``status <host>`` takes through IRC while 1,000 deployments are in flight.

A real ngircd (penalties off: this measures the bot, not the server's flood
throttle) on loopback; the bot in its own process with the IRC adapter, the
real engine, runner and SQLite store, and N deployments of a pipeline whose one
step is an executable worker that sleeps; a real ``irc`` client in this process
asks ``status <random host>`` in a private message, one query at a time, and
times each answer. Prints p50/p99/max over the queries (target: p99 ≤ 50 ms).

Usage: python bench/chat_latency.py [--deployments 1000] [--queries 300] [--running 1000]
(``--running`` is runner.max_concurrent_steps: how many sleeping steps are real
processes at once; the rest of the deployments wait their turn, queued.)
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import shutil
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml

from bot.app import Jarvis
from clipboard import config as config_mod
from clipboard.run import Source
from tests.servers.ngircd import CHANNEL, IrcClient, Ircd, make_ircd

WORKERS = ROOT / "tests" / "workers"
SLEEP = 3600


def write_config(tmp: Path, ircd: Ircd, running: int) -> Path:
    data = {
        "chat": {"console": {"enabled": False},
                 "irc": ircd.irc_settings(rate=1000.0, burst=1000, channels=[CHANNEL]),
                 # one client asks every query: the per-person command limit would answer
                 # most with silence, and this measures the answers, not the limit
                 "fairness": {"command_rate": 1000.0, "command_burst": 1000}},
        "store": {"path": str(tmp / "jarvis.db")},
        "runner": {"worker_dirs": [str(WORKERS)], "kill_grace": 0.5,
                   "max_concurrent_steps": running, "step_timeout": SLEEP * 2},
        "pipelines": {"sleeper": {"steps": ["shellworker:sleepy"]}},
    }
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def host(i: int) -> str:
    return f"h{i:04d}"


async def serve(config_path: Path, deployments: int, conn: Connection) -> None:
    """The bot process: start, put ``deployments`` in flight, report, wait for 'stop'."""
    async with Jarvis(config_mod.load(config_path), role="jarvis bench", drive=True,
                      adopt=True) as bot:
        irc = bot.adapter("irc")
        await asyncio.wait_for(irc.connected.wait(), 15)
        started = time.perf_counter()
        for i in range(deployments):
            design = {"instance": {"hostname": host(i), "fqdn": f"{host(i)}.example.com",
                                   "provider": "local"}, "notes": {"sleep": SLEEP}}
            plan = bot.engine.plan(design, "sleeper")
            await bot.engine.deploy(plan, Source(f"bench:{host(i)}", "file"), requester="bench")
        took = time.perf_counter() - started
        await asyncio.sleep(2)   # let the first wave of worker processes start
        conn.send({"deployments": len(bot.engine.running), "started_in": took,
                   "running_steps": sum(bot.engine.in_flight.values())})
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)


def bot_main(config_path: Path, deployments: int, conn: Connection) -> None:
    asyncio.run(serve(config_path, deployments, conn))


async def measure(ircd: Ircd, deployments: int, queries: int) -> list[float]:
    alice = await IrcClient(ircd, "alice").connect()
    try:
        for _ in range(10):                       # warm-up, not counted
            alice.say("jarvis", f"status {host(random.randrange(deployments))}")
            await alice.expect(timeout=10)
        times = []
        for _ in range(queries):
            name = host(random.randrange(deployments))
            started = time.perf_counter()
            alice.say("jarvis", f"status {name}")
            said = await alice.expect(lambda s, name=name: s.text.startswith(name), timeout=10)
            times.append(time.perf_counter() - started)
            if "running" not in said.text and "queued" not in said.text:
                raise SystemExit(f"unexpected answer: {said.text}")
        return times
    finally:
        alice.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--running", type=int, default=1000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jarvis-chatbench-"))
    ircd = make_ircd(tmp / "ircd").start()
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=bot_main, args=(write_config(tmp, ircd, args.running),
                                               args.deployments, theirs))
    child.start()
    try:
        if not ours.poll(600):
            raise SystemExit("the bot did not report its deployments within 600 s")
        info = ours.recv()
        print(f"deployments in flight: {info['deployments']} (started in {info['started_in']:.1f} s; "
              f"sleeping steps running: {info['running_steps']})")
        times = asyncio.run(measure(ircd, args.deployments, args.queries))
        ms = sorted(t * 1000 for t in times)
        p50 = statistics.median(ms)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(f"status round trip through ngircd over {len(ms)} queries: "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms "
              f"(target p99 <= 50 ms: {'met' if p99 <= 50 else 'NOT met'})")
        return 0 if p99 <= 50 else 1
    finally:
        ours.send("stop")
        child.join(60)
        if child.is_alive():
            child.kill()
            child.join()
        ircd.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
