"""HTTP: ``GET /api/v1/hosts/<host>`` answered while 1,000 deployments are in flight.

The jarvis of ``bench/scale.py`` (one cluster of ``--hosts`` hosts, each running
``core:noop`` ``--steps`` times as real worker processes, at most ``--cap`` at once),
with its HTTP server on a free loopback port. While the cluster runs, a client in
ANOTHER process (this script with ``--client``: it shares no GIL with jarvis) asks
``GET /api/v1/hosts/h<random>`` ``--requests`` times over one keep-alive connection,
``--interval`` apart, and times each answer from request to last byte. Meanwhile
jarvis's own loop times ``Store.status_of`` for random hosts: the in-process
baseline, the store's share of an answer, printed beside it.

With ``--watchers N`` (100 for the issue's figure), N Server-Sent-Events watchers in a
third process (``--watch``) follow ``/api/v1/events`` — watcher i the host h<i+1>
(``--watch-all``: every event) — and time each event from its ``at`` (when jarvis
emitted it) to its receipt. That needs ``/api/v1/events`` (the events module); a
jarvis without it says so and measures the rest.

With ``--idle`` the deployments are instead ``bench/chat_latency.py``'s: each one step
that sleeps, so they are in flight without keeping the CPUs busy (the default run is
jarvis at full throughput on every core, so the figure includes a saturated loop).

Prints p50/p99/max of each, how many deployments were in flight when sampling began
and ended, and the peak RSS of the jarvis process (``ru_maxrss``). Targets:
hosts p99 ≤ 10 ms over ≥ 500 requests, SSE p99 ≤ 50 ms, RSS ≤ 150 MB; printed met or not.

Not ``bench/http.py``, the issue's name: every script here runs with ``bench/`` first
on ``sys.path``, where a file ``http.py`` takes the place of the standard library's
``http`` package (aiohttp's and urllib's), and ``python bench/scale.py`` failed on it.

Usage: python bench/http_api.py [--hosts 1000] [--steps 10] [--cap 64] [--requests 600]
                            [--interval 0.01] [--watchers 0] [--watch-all] [--idle]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml

from bench.scale import percentile, rss_mb

TARGET_P99_MS = 10.0
TARGET_SSE_P99_MS = 50.0
TARGET_RSS_MB = 150.0
MIN_REQUESTS = 500
WORKERS = ROOT / "tests" / "workers"
IDLE_SLEEP = 3600


# -- the client process -----------------------------------------------------------------
def client(port: int, hosts: int, requests: int, interval: float) -> None:
    """``--client``: time ``requests`` GETs over one keep-alive connection; print JSON."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    samples, failures = [], 0
    for _ in range(requests):
        path = f"/api/v1/hosts/h{random.randint(1, hosts)}"
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        samples.append((time.perf_counter() - started) * 1000)
        if response.status != 200 or not body.startswith(b"{"):
            failures += 1
        time.sleep(interval)
    print(json.dumps({"samples": samples, "failures": failures}))


# -- the SSE watchers' process ----------------------------------------------------------
def watch(port: int, watchers: int, every: bool) -> None:
    """``--watch``: ``watchers`` SSE streams (``tests.sse_client``), each open (subscribed)
    before this says it is ready, read until a line on stdin; print JSON latencies."""
    import contextlib

    import aiohttp

    from tests.sse_client import Stream, open_stream

    async def read(stream: Stream, seen: list[tuple[str, float]]) -> None:
        while True:
            frame = await stream.next(timeout=24 * 3600)
            seen.append((frame.kind, (frame.received - float(frame.data["at"])) * 1000))

    async def main() -> None:
        seen: list[tuple[str, float]] = []
        base = f"http://127.0.0.1:{port}/api/v1/events"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session, \
                contextlib.AsyncExitStack() as stack:
            streams = await asyncio.gather(*(stack.enter_async_context(open_stream(
                session, base if every else f"{base}?host=h{n + 1}")) for n in range(watchers)))
            tasks = [asyncio.create_task(read(stream, seen)) for stream in streams]
            print(json.dumps({"ready": True}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [str(r) for r in results if isinstance(r, BaseException)
                  and not isinstance(r, asyncio.CancelledError)]
        print(json.dumps({"samples": [ms for _, ms in seen], "kinds": [kind for kind, _ in seen],
                          "errors": errors[:3]}), flush=True)
    asyncio.run(main())


# -- jarvis -------------------------------------------------------------------------------
def write_files(tmp: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    config = {
        "store": {"path": str(tmp / "jarvis.db")},
        "runner": {"max_concurrent_steps": args.cap, "worker_dirs": [str(WORKERS)],
                   "kill_grace": 0.5, "step_timeout": IDLE_SLEEP * 2},
        "clusters": {"max_hosts": max(args.hosts, 1)},
        "pipelines": {"noops": {"steps": ["core:noop"] * args.steps},
                      "sleeper": {"steps": ["shellworker:sleepy"]}},
        "http": {"listen": "127.0.0.1:0", "read": "open"},
    }
    design = {"cluster": "bench", "defaults": {"provider": "local", "domain": "example.com"},
              "hosts": [{"hostname": "h{n}", "count": args.hosts}]}
    config_path, design_path = tmp / "jarvis.yaml", tmp / "bench.yaml"
    config_path.write_text(yaml.safe_dump(config))
    design_path.write_text(yaml.safe_dump(design))
    return config_path, design_path


async def start_watchers(port: int, args: argparse.Namespace) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--watch", str(port), str(args.watchers),
        *(["--watch-all"] if args.watch_all else []),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    await process.stdout.readline()  # connected (or failing: its result says so)
    return process


async def deploy_sleepers(jarvis: Any, hosts: int) -> None:
    """``--idle``: ``hosts`` deployments of one step that sleeps an hour, as
    ``bench/chat_latency.py`` puts them in flight: ``--cap`` of them run a sleeping
    process, the rest are queued; none finishes while the figures are taken."""
    from clipboard.run import Source
    for n in range(1, hosts + 1):
        design = {"instance": {"hostname": f"h{n}", "fqdn": f"h{n}.example.com",
                               "provider": "local"}, "notes": {"sleep": IDLE_SLEEP}}
        plan = jarvis.engine.plan(design, "sleeper")
        await jarvis.engine.deploy(plan, Source(f"bench:h{n}", "file"), requester="bench")
    await asyncio.sleep(2)  # the first sleeping processes start


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from bot.adapter import Incoming
    from bot.grammar import parse
    from bot.testing import running_bot
    from clipboard import config as config_mod

    config_path, design_path = write_files(tmp, args)
    incoming = Incoming(adapter="test", identity="console:bench", text="", reply_to="me",
                        local=True)
    baseline: list[float] = []
    async with running_bot(config_mod.load(config_path)) as tb:
        jarvis = tb.bot
        assert jarvis.http is not None
        port = jarvis.http.port
        served = {r.resource.canonical for r in jarvis.http.app.router.routes() if r.resource}
        watchers = None
        if args.watchers and "/api/v1/events" in served:
            watchers = await start_watchers(port, args)
        rss_before = rss_mb()
        if args.idle:
            await deploy_sleepers(jarvis, args.hosts)
        else:
            answer = await jarvis.commands.run(parse(f"deploy {design_path} pipeline=noops"),
                                               incoming)
            if "started" not in answer[0]:
                raise SystemExit(f"deploy refused: {answer}")
        in_flight_before = len(jarvis.engine.running)
        store = jarvis.store

        async def sample_store() -> None:
            while True:
                host = f"h{random.randint(1, args.hosts)}"
                started = time.perf_counter()
                await store.status_of(host, {}, 1, host)
                baseline.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(args.interval * 2)

        sampler = asyncio.create_task(sample_store())
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", str(port), str(args.hosts),
            str(args.requests), str(args.interval), stdout=asyncio.subprocess.PIPE)
        out, _ = await process.communicate()
        in_flight_after = len(jarvis.engine.running)
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        while jarvis.engine.running and not args.idle:
            await asyncio.sleep(0.1)
        sse: dict[str, Any] | None = None
        if watchers is not None:
            assert watchers.stdin is not None
            watchers.stdin.write(b"stop\n")
            await watchers.stdin.drain()
            sse_out, _ = await watchers.communicate()
            sse = json.loads(sse_out.decode().strip().splitlines()[-1])
    return {"client": json.loads(out), "baseline": baseline, "rss": rss_mb(),
            "rss_before": rss_before, "in_flight": (in_flight_before, in_flight_after),
            "sse": sse, "events_served": "/api/v1/events" in served}


def line(what: str, values: list[float]) -> str:
    return (f"{what}: {len(values)} samples, p50 {statistics.median(values):.2f} ms, "
            f"p99 {percentile(values, 0.99):.2f} ms, max {max(values):.2f} ms")


def report(args: argparse.Namespace, result: dict[str, Any]) -> bool:
    samples: list[float] = result["client"]["samples"]
    before, after = result["in_flight"]
    p99 = percentile(samples, 0.99)
    what = (f"{args.hosts} deployments of one sleeping step (--idle)" if args.idle
            else f"{args.hosts} hosts x {args.steps} core:noop steps")
    print(f"{what}, cap {args.cap}; deployments in flight when sampling began: {before}, "
          f"when it ended: {after}")
    print(line("GET /api/v1/hosts/<host> from another process", samples)
          + f" ({result['client']['failures']} not 200)")
    if result["baseline"]:
        print(line("in-process baseline, Store.status_of", result["baseline"]))
    met = p99 <= TARGET_P99_MS and len(samples) >= MIN_REQUESTS \
        and not result["client"]["failures"]
    print(f"hosts p99 {p99:.2f} ms over {len(samples)} requests (target <= "
          f"{TARGET_P99_MS:.0f} ms over >= {MIN_REQUESTS}: {'met' if met else 'NOT met'})")
    rss = float(result["rss"])
    print(f"peak RSS of the jarvis process: {rss:.0f} MB (before the deploy "
          f"{float(result['rss_before']):.0f} MB; target <= {TARGET_RSS_MB:.0f}: "
          f"{'met' if rss <= TARGET_RSS_MB else 'NOT met'})")
    met = met and rss <= TARGET_RSS_MB
    if args.watchers and not result["events_served"]:
        print(f"SSE: {args.watchers} watchers asked for, but this jarvis does not serve "
              "/api/v1/events (the events module adds it); not measured")
    elif result["sse"] is not None:
        sse: list[float] = result["sse"]["samples"]
        if not sse:
            print(f"SSE: no event arrived ({result['sse']['errors']})")
            return False
        sse_p99 = percentile(sse, 0.99)
        print(line(f"SSE event-to-receipt, {args.watchers} watchers", sse))
        by_kind: dict[str, list[float]] = {}
        for kind, value in zip(result["sse"]["kinds"], sse):
            by_kind.setdefault(kind, []).append(value)
        for kind, values in sorted(by_kind.items(), key=lambda kv: -percentile(kv[1], 0.99)):
            print("  " + line(kind, values))
        print(f"SSE p99 {sse_p99:.1f} ms (target <= {TARGET_SSE_P99_MS:.0f}: "
              f"{'met' if sse_p99 <= TARGET_SSE_P99_MS else 'NOT met'})")
        met = met and sse_p99 <= TARGET_SSE_P99_MS
    return met


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--watch":
        watch(int(sys.argv[2]), int(sys.argv[3]), "--watch-all" in sys.argv)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cap", type=int, default=64)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--watchers", type=int, default=0)
    parser.add_argument("--watch-all", action="store_true")
    parser.add_argument("--idle", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jarvis-http-"))
    try:
        result = asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if report(args, result) else 1


if __name__ == "__main__":
    sys.exit(main())
