"""Scale: 1,000 hosts × 10 no-op steps through the real bot, engine, store and runner.

One cluster design lists the hosts (``count: 1000``); ``deploy`` plans and
records them all, then every host runs ``core:noop`` ten times as a real worker
process forked from the warm fork server, each hand-over stored in SQLite, with
at most ``--cap`` steps running at once (runner.max_concurrent_steps). Meanwhile
this process (the jarvis process: bot, engine and store live here; the fork
servers and workers are its children) asks ``status`` every ``--interval``
seconds through the command handler — a random host, the cluster by its name
(``status bench``: its newest run, found in the store) and by its run id
(``status bench#1``) — and times each answer.

Prints steps per second (from the deploy command to the last host ready), the
peak RSS of this process (``ru_maxrss``, so not the fork servers or workers), and
status latency p50/p99 for hosts, for the cluster and overall. Targets: ≥ 300
steps/s on 2 cores, ≤ 150 MB, status p99 ≤ 20 ms. The figures are printed met or not.
It also prints how the machine's CPUs were spent, steal included: on a shared
virtual machine the hypervisor has taken from 5 to 27 % of them in one run, and
the throughput moves with it (the estimate for whole CPUs is only that).

Usage: python bench/scale.py [--hosts 1000] [--steps 10] [--cap 64] [--interval 0.2]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml

from bot.adapter import Incoming
from bot.grammar import parse
from bot.testing import running_bot
from clipboard import config as config_mod

TARGET_RATE = 300.0
TARGET_RSS_MB = 150.0
TARGET_P99_MS = 20.0


def write_files(tmp: Path, hosts: int, steps: int, cap: int) -> tuple[Path, Path]:
    config = {
        "store": {"path": str(tmp / "jarvis.db")},
        "runner": {"max_concurrent_steps": cap},
        "clusters": {"max_hosts": max(hosts, 1)},
        "pipelines": {"noops": {"steps": ["core:noop"] * steps}},
    }
    design = {"cluster": "bench", "defaults": {"provider": "local", "domain": "example.com"},
              "hosts": [{"hostname": "h{n}", "count": hosts}]}
    config_path, design_path = tmp / "jarvis.yaml", tmp / "bench.yaml"
    config_path.write_text(yaml.safe_dump(config))
    design_path.write_text(yaml.safe_dump(design))
    return config_path, design_path


def cpu_ticks() -> dict[str, int]:
    """The whole machine's CPU time so far (Linux ``/proc/stat``), in clock ticks. On a
    virtual machine "steal" is time the hypervisor gave to someone else: with it in
    view, a slow run on a busy host is not mistaken for a slow jarvis."""
    try:
        values = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return {}
    return dict(zip(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"),
                    map(int, values)))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    config_path, design_path = write_files(tmp, args.hosts, args.steps, args.cap)
    incoming = Incoming(adapter="test", identity="console:bench", text="", reply_to="me", local=True)
    samples: dict[str, list[float]] = {"host": [], "cluster": [], "run": []}
    async with running_bot(config_mod.load(config_path)) as tb:
        bot = tb.bot

        async def ask(text: str) -> list[str]:
            return await bot.commands.run(parse(text), incoming)

        rss_before = rss_mb()
        ticks_before = cpu_ticks()
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        answer = await ask(f"deploy {design_path} pipeline=noops")
        accepted = time.perf_counter() - started
        if "started" not in answer[0]:
            raise SystemExit(f"deploy refused: {answer}")
        cluster = answer[0].split(":")[0]

        async def sample() -> None:
            while True:
                await asyncio.sleep(args.interval)
                for kind, text in (("host", f"status h{random.randint(1, args.hosts)}"),
                                   ("cluster", "status bench"), ("run", f"status {cluster}")):
                    t0 = time.perf_counter()
                    lines = await ask(text)
                    samples[kind].append((time.perf_counter() - t0) * 1000)
                    if not lines:
                        raise SystemExit(f"{text}: no answer")

        sampler = asyncio.create_task(sample())
        while bot.engine.running:
            await asyncio.sleep(0.05)
        took = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        ticks = {k: v - ticks_before[k] for k, v in cpu_ticks().items() if k in ticks_before}
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        final = await ask(f"status {cluster}")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # fork servers reaped at stop
    return {"took": took, "cpu": (cpu_after.ru_utime - cpu_before.ru_utime,
                                  cpu_after.ru_stime - cpu_before.ru_stime),
            "children_cpu": children.ru_utime + children.ru_stime, "accepted": accepted, "final": final[0], "samples": samples, "ticks": ticks,
            "rss_before": rss_before, "rss": rss_mb()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cap", type=int, default=64)
    parser.add_argument("--interval", type=float, default=0.2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jarvis-scale-"))
    try:
        result = asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = args.hosts * args.steps
    rate = total / float(result["took"])  # type: ignore[arg-type]
    samples: dict[str, list[float]] = result["samples"]  # type: ignore[assignment]
    every = [value for values in samples.values() for value in values]
    p99 = percentile(every, 0.99)
    rss = float(result["rss"])  # type: ignore[arg-type]
    print(f"{args.hosts} hosts x {args.steps} core:noop steps, cap {args.cap}, "
          f"{os.cpu_count()} CPUs: {result['final']}")
    print(f"deploy answered in {float(result['accepted']):.2f} s (all {args.hosts} hosts "
          "planned, validated and recorded)")
    print(f"throughput: {total} steps in {float(result['took']):.1f} s = {rate:.0f} steps/s "
          f"(target >= {TARGET_RATE:.0f}: {'met' if rate >= TARGET_RATE else 'NOT met'})")
    ticks: dict[str, int] = result["ticks"]  # type: ignore[assignment]
    if sum(ticks.values()):
        share = {k: v / sum(ticks.values()) for k, v in ticks.items()}
        busy = 1 - share["idle"] - share["iowait"] - share["steal"]
        print(f"the machine's CPUs during the run: {busy:.0%} busy, {share['idle']:.0%} idle, "
              f"{share['steal']:.0%} taken by the hypervisor for other machines (steal); "
              f"at the same speed with both CPUs whole: {rate / (1 - share['steal']):.0f} steps/s")
    user, system = result["cpu"]  # type: ignore[misc]
    print(f"CPU of the jarvis process: {user:.1f} s user + {system:.1f} s system = "
          f"{(user + system) / total * 1000:.2f} ms per step; fork servers and workers: "
          f"{float(result['children_cpu']) / total * 1000:.2f} ms per step "  # type: ignore[arg-type]
          f"(load average now {os.getloadavg()[0]:.1f})")
    print(f"peak RSS of the jarvis process: {rss:.0f} MB (before the deploy "
          f"{float(result['rss_before']):.0f} MB; target <= {TARGET_RSS_MB:.0f}: "
          f"{'met' if rss <= TARGET_RSS_MB else 'NOT met'})")
    for kind, values in samples.items():
        if values:
            print(f"status <{kind}> during the run, {len(values)} samples: "
                  f"p50 {statistics.median(values):.1f} ms, p99 {percentile(values, 0.99):.1f} ms, "
                  f"max {max(values):.1f} ms")
    print(f"status overall p99 {p99:.1f} ms (target <= {TARGET_P99_MS:.0f}: "
          f"{'met' if p99 <= TARGET_P99_MS else 'NOT met'})")
    met = rate >= TARGET_RATE and rss <= TARGET_RSS_MB and p99 <= TARGET_P99_MS
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
