"""What one step costs: the real runner against the floor and a fresh interpreter.

All three move the same 10 KB clipboard through a child process and back:

- runner: ``clipboard.runner.Runner`` running ``core:echo`` (fork server child,
  SCM_RIGHTS hand-off, asyncio pipes, libyaml in both directions);
- floor: ``os.fork`` + two pipes + libyaml dump/load in parent and child, nothing else;
- fresh: ``python -m clipboard.worker core:echo``, a new interpreter per step.

Prints the three medians (ms per step) and the ratio runner/floor (target ≤ 2).
Usage: python bench/step_overhead.py [N]
"""
from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipboard import config as config_mod
from clipboard import document
from clipboard.runner import Runner


def clipboard_10k() -> dict:
    hosts = {f"host{i:03d}": {"ip": f"10.0.{i // 250}.{i % 250}", "role": "web",
                              "fingerprint": "ab" * 16} for i in range(110)}
    clip = {"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "local"},
            "inventory": hosts}
    size = len(document.dump(clip))
    assert 9_000 <= size <= 12_000, size
    return clip


def floor_once(text: str) -> float:
    started = time.perf_counter()
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(to_child_w)
        os.close(to_parent_r)
        with os.fdopen(to_child_r, "rb") as inp:
            data = document.load(inp.read())
        with os.fdopen(to_parent_w, "w") as out:
            out.write(document.dump(data))
        os._exit(0)
    os.close(to_child_r)
    os.close(to_parent_w)
    with os.fdopen(to_child_w, "w") as out:
        out.write(text)
    with os.fdopen(to_parent_r, "rb") as inp:
        document.load(inp.read())
    os.waitpid(pid, 0)
    return time.perf_counter() - started


def fresh_once(text: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "clipboard.worker", "core:echo"], input=text,
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    document.load(done.stdout)
    return time.perf_counter() - started


async def runner_times(clip: dict, n: int) -> list[float]:
    runner = Runner(config_mod.load(None))
    await runner.start()
    times = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            result = await runner.run("core:echo", clip, timeout=30)
            times.append(time.perf_counter() - started)
            assert result.ok, result.error
    finally:
        await runner.close()
    return times


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    os.environ.setdefault("XDG_STATE_HOME", tempfile.mkdtemp(prefix="jarvis-bench-"))
    clip = clipboard_10k()
    text = document.dump(clip)
    runner = asyncio.run(runner_times(clip, n))
    floor = [floor_once(text) for _ in range(n)]
    fresh = [fresh_once(text) for _ in range(max(10, n // 10))]
    ms = {name: statistics.median(values) * 1000
          for name, values in (("runner", runner), ("floor", floor), ("fresh", fresh))}
    print(f"clipboard: {len(text)} bytes, {n} steps")
    print(f"runner  median {ms['runner']:.2f} ms/step  (p90 {_p(runner, 0.9):.2f})")
    print(f"floor   median {ms['floor']:.2f} ms/step  (fork + pipe + libyaml round trip)")
    print(f"fresh   median {ms['fresh']:.2f} ms/step  (new interpreter per step)")
    print(f"ratio runner/floor: {ms['runner'] / ms['floor']:.2f}  (target <= 2)")
    print(f"ratio fresh/runner: {ms['fresh'] / ms['runner']:.1f}")


def _p(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))] * 1000


if __name__ == "__main__":
    main()
