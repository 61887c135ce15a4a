"""The headline deployment, timed: the seed design on the local provider through the
shipped ``deploy`` pipeline, every silo against its real server (named, slapd, a
gitosis-admin repository, a silence receiver), through the real bot.

For each run it prints the wall time from the ``deploy`` command to the ``ready``
announcement, the time the steps took (the store's step start/end, which is the
worker processes' lives as the runner sees them) and the share spent outside
them (jarvis itself: parsing, engine, store, announcements). The first run starts
the fork servers; later runs find them warm. Targets: ≤ 5 s, jarvis's share ≤ 10%.
Needs root and the Debian packages .ci/run installs. Usage: python bench/end_to_end.py [RUNS]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers.monitoring_http import receiver_server
from tests.servers.named import private_named
from tests.servers.slapd import private_slapd
from tests.site import Site


def one_run(site: Site) -> tuple[float, float]:
    started = time.perf_counter()
    site.say(f"deploy {site.design('loki')}", r"^loki: deployment #\d+ started")
    site.expect(r"^loki: (ready|FAILED)")
    wall = time.perf_counter() - started
    store = site.bot.bot.store
    deployment = site.loop.run(store.latest("loki"))
    if deployment.state != "ready":
        raise SystemExit(f"the deployment failed: {deployment.error}")
    steps = site.loop.run(store.steps(deployment.id))
    in_steps = sum(s.finished_at - s.started_at for s in steps)
    site.say(f"deploy {site.design('loki')} pipeline=decommission", "started")
    site.expect(r"^loki: ready in \S+ \(6 steps\)$")
    return wall, in_steps


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    with ExitStack() as stack:
        named = stack.enter_context(private_named())
        slapd = stack.enter_context(private_slapd())
        monitor = stack.enter_context(receiver_server())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jarvis-e2e-bench-")))
        site = Site(tmp, named, slapd, monitor)
        stack.callback(site.close)
        results = [one_run(site) for _ in range(runs)]
    print(f"headline deployment (seed on the local provider, 15 steps), {runs} runs")
    for i, (wall, in_steps) in enumerate(results, 1):
        label = "cold" if i == 1 else "warm"
        print(f"run {i} ({label}): wall {wall:.2f} s, in steps {in_steps:.2f} s, "
              f"outside steps {wall - in_steps:.3f} s = {100 * (wall - in_steps) / wall:.1f}%")
    warm = results[1:] or results
    wall = statistics.median(w for w, _ in warm)
    share = statistics.median((w - s) / w for w, s in warm)
    print(f"median warm: wall {wall:.2f} s (target <= 5 s), jarvis's own share {100 * share:.1f}% "
          f"(target <= 10%)")


if __name__ == "__main__":
    main()
