"""Steps on Celery workers: what a second worker buys, and what Celery costs a step.

Starts a private redis-server and ``jarvis worker`` processes (each stopped by its
process group), and drives them through ``clipboard.celery_runner.CeleryRunner``, the
bot's runner for ``runner.backend: celery`` (the engine's slots are left out: every
step is handed over at once, as a cluster with no caps would):

- scale: N steps that each wait 0.1 s on I/O (an executable that sleeps), all at
  once, on one worker (concurrency 8), then on two → the speedup (target >= 1.8x);
  the same N through the local runner, 8 at once, is the same-run baseline;
- overhead: a no-op step (``core:echo``, a 1 KB clipboard) one after another through
  the local runner and through Celery → the added cost at p50 (target <= 10 ms);
- the bot's CPU per step during the scale runs (this process's CPU time: the workers
  are other processes), the workers' (each worker's process tree, its fork servers
  and steps included) and the whole machine's, with the load average before: the
  workers share this machine's cores with the bot, so the speedup is capped by them.

Usage: python bench/distributed.py [--steps N] [--serial M]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml

from clipboard import config as config_mod
from clipboard import document
from clipboard.celery_runner import CeleryRunner
from clipboard.runner import Runner

NAP = "#!/bin/sh\ncat >/dev/null\nsleep 0.1\n"
CLIP = {"instance": {"hostname": "loki", "provider": "local"},
        "notes": {f"k{i}": "v" * 20 for i in range(40)}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} not ready after {timeout}s")
        time.sleep(0.05)


class Cluster:
    """A private redis-server and the workers started on it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.workers: list[int] = []
        workers = tmp / "workers"
        workers.mkdir()
        (workers / "nap").write_text(NAP)
        (workers / "nap").chmod(0o755)
        self.config = tmp / "jarvis.yaml"
        self.config.write_text(yaml.safe_dump({
            "store": {"path": str(tmp / "jarvis.db")},
            "runner": {"backend": "celery", "worker_dirs": [str(workers)],
                       "celery": {"broker_url": f"redis://127.0.0.1:{self.port}/0",
                                  "result_backend": f"redis://127.0.0.1:{self.port}/1"}}}))

    def _start(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                       start_new_session=True, cwd=ROOT)
        self.processes.append(process)
        return process

    def redis(self) -> None:
        self._start(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", str(self.tmp)], "redis.log")

        def pong() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        wait_until(pong, "redis-server")

    def worker(self, name: str, concurrency: int) -> None:
        self._start([sys.executable, "-m", "bot.cli", "worker", "--config", str(self.config),
                     "--hostname", f"{name}@bench", "--concurrency", str(concurrency),
                     "--log-level", "INFO"], f"{name}.log")
        self.workers.append(self.processes[-1].pid)
        log = self.tmp / f"{name}.log"
        wait_until(lambda: f"{name}@bench ready." in log.read_text(), f"worker {name}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def machine_busy() -> float:
    """CPU seconds this machine has spent busy (every process), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its descendants, the reaped ones included (a worker,
    its fork servers and the steps they ran)."""
    parent: dict[int, int] = {}
    spent: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        spent[pid] = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def under(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parent.get(pid, 1)
        return False
    return sum(cpu for pid, cpu in spent.items() if under(pid))


async def scale(runner: CeleryRunner, steps: int) -> tuple[float, float, set[str], float]:
    """Wall seconds, this process's CPU seconds, the workers used and the machine's busy
    CPU seconds for ``steps`` naps at once."""
    wall, cpu, busy = time.perf_counter(), time.process_time(), machine_busy()
    text = document.dump(CLIP)  # the engine hands the runner the text it has
    results = await asyncio.gather(*(runner.run("nap:sleep", CLIP, timeout=60, text=text)
                                     for _ in range(steps)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    busy = machine_busy() - busy
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise SystemExit(f"bench: {len(failed)} steps failed, e.g. {failed[0]}")
    return wall, cpu, {r.worker or "?" for r in results}, busy


async def local_scale(runner: Runner, steps: int, at_once: int) -> tuple[float, float]:
    """The same naps through the local runner, ``at_once`` at a time: wall seconds and
    the CPU seconds of this process and its fork servers (the baseline a worker adds to)."""
    text, gate = document.dump(CLIP), asyncio.Semaphore(at_once)

    async def one() -> None:
        async with gate:
            result = await runner.run("nap:sleep", CLIP, timeout=60, text=text)
            if not result.ok:
                raise SystemExit(f"bench: nap:sleep failed locally: {result.error}")
    wall, cpu = time.perf_counter(), tree_cpu(os.getpid())
    await asyncio.gather(*(one() for _ in range(steps)))
    return time.perf_counter() - wall, tree_cpu(os.getpid()) - cpu


async def serial(runner: Runner, n: int) -> list[float]:
    times, text = [], document.dump(CLIP)
    for _ in range(n):
        started = time.perf_counter()
        result = await runner.run("core:echo", CLIP, timeout=30, text=text)
        times.append(time.perf_counter() - started)
        if not result.ok:
            raise SystemExit(f"bench: core:echo failed: {result.error}")
    return times


async def measure(cluster: Cluster, steps: int, n: int) -> None:
    start_load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    config = config_mod.load(cluster.config)
    local = Runner(config)
    await local.start()
    try:
        await serial(local, 20)
        local_times = await serial(local, n)
        await local_scale(local, 16, 8)
        local_wall, local_cpu = await local_scale(local, steps, 8)
    finally:
        await local.close()
    runner = CeleryRunner(config)
    await runner.start()
    try:
        cluster.worker("w1", 8)
        await serial(runner, 20)
        celery_times = await serial(runner, n)
        await scale(runner, 16)
        workers = sum(tree_cpu(p) for p in cluster.workers)
        one, cpu_one, _, busy_one = await scale(runner, steps)
        worker_one = sum(tree_cpu(p) for p in cluster.workers) - workers
        cluster.worker("w2", 8)
        await scale(runner, 16)
        workers = sum(tree_cpu(p) for p in cluster.workers)
        two, cpu_two, used, busy_two = await scale(runner, steps)
        worker_two = sum(tree_cpu(p) for p in cluster.workers) - workers
    finally:
        await runner.close()
    p50_local, p50_celery = _p(local_times, 0.5), _p(celery_times, 0.5)
    ideal = steps * 0.1 / 8
    print(f"scale: {steps} steps of 0.1 s, all at once")
    print(f"  one worker (concurrency 8):   {one:6.2f} s  ({steps / one:6.1f} steps/s, "
          f"ideal {ideal:.2f} s)")
    print(f"  two workers (concurrency 8):  {two:6.2f} s  ({steps / two:6.1f} steps/s, "
          f"ideal {ideal / 2:.2f} s; workers used: {', '.join(sorted(used))})")
    print(f"  speedup two/one: {one / two:.2f}x  (target >= 1.8x)")
    print(f"  baseline, the local runner 8 at once: {local_wall:6.2f} s, "
          f"{local_cpu / steps * 1000:.2f} ms CPU per step (bot and its fork servers)")
    print(f"overhead: core:echo one after another, {n} steps")
    print(f"  local runner   p50 {p50_local:6.2f} ms  (p90 {_p(local_times, 0.9):.2f})")
    print(f"  celery runner  p50 {p50_celery:6.2f} ms  (p90 {_p(celery_times, 0.9):.2f})")
    print(f"  added by Celery at p50: {p50_celery - p50_local:.2f} ms  (target <= 10 ms); "
          f"ratio celery/local {p50_celery / p50_local:.1f}")
    print(f"bot CPU per step: {cpu_one / steps * 1000:.2f} ms (one worker), "
          f"{cpu_two / steps * 1000:.2f} ms (two workers)")
    print(f"worker CPU per step (celery, fork servers, the steps' sh and sleep): "
          f"{worker_one / steps * 1000:.2f} ms (one worker), {worker_two / steps * 1000:.2f} ms"
          f" (two workers)")
    cores = os.cpu_count() or 1
    print(f"machine CPU per step (bot, workers, redis and whatever else runs): "
          f"{busy_one / steps * 1000:.2f} ms, {busy_two / steps * 1000:.2f} ms; "
          f"{cores} cores busy {busy_one / one / cores:.0%} and {busy_two / two / cores:.0%}")
    print(f"load average before: {start_load}")


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1] * 1000 if len(values) > 1 \
        else values[0] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="naps per scale run (1000)")
    parser.add_argument("--serial", type=int, default=200, help="no-op steps timed (200)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jarvis-bench-celery-"))
    os.environ["XDG_STATE_HOME"] = str(tmp / "state")
    cluster = Cluster(tmp)
    try:
        cluster.redis()
        asyncio.run(measure(cluster, args.steps, args.serial))
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
