"""The seed design built end to end with ``runner.backend: celery``: every silo against
its real server (named, slapd, the gitosis-admin repository, the silence receiver,
local-provider sshd nodes), every step run by one of two real ``jarvis worker``
processes on a real redis-server, and each step's worker recorded and shown."""
from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from clipboard.records import StepState
from tests.jarvis_process import clean_env, start_worker, stop_workers
from tests.servers.local_node import require_local_provider
from tests.servers.monitoring_http import Receiver
from tests.servers.named import Named
from tests.servers.redis import RedisServer
from tests.servers.slapd import Slapd
from tests.site import Site

pytestmark = pytest.mark.servers

WORKERS = ("w1", "w2")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, named: Named, slapd: Slapd,
         monitoring_http: Receiver, redis_server: RedisServer) -> Iterator[Site]:
    require_local_provider()
    tmp = tmp_path_factory.mktemp("celery-seed")
    broker, results = redis_server.databases()
    s = Site(tmp, named, slapd, monitoring_http, runner={"backend": "celery", "celery": {
        "broker_url": redis_server.url(broker), "result_backend": redis_server.url(results)}})
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for name in WORKERS:  # concurrency 1: each takes every other step of one host
            workers.append(start_worker(s.config_path, name, clean_env(tmp), concurrency=1))
        yield s
    finally:
        stop_workers(workers)
        s.close()


def test_the_seed_is_built_end_to_end_by_two_workers(site: Site) -> None:
    site.say(f"jarvis: deploy {site.design('odin')}",
             r"^odin: deployment #\d+ started: pipeline deploy, 16 steps$")
    site.expect(r"^odin: ready in \S+ \(16 steps\)$")
    clip = site.clipboard("odin")
    ip = clip["node"]["ip"]
    assert site.named.lookup("odin.example.com", "A") == {ip}
    assert site.slapd.entry(f"cn=odin,{site.slapd.hosts_dn}") is not None

    store = site.bot.bot.store
    deployment = site.loop.run(store.latest("odin"))
    assert deployment is not None
    steps = site.loop.run(store.steps(deployment.id))
    assert len(steps) == 16 and {step.state for step in steps} == {StepState.OK}
    assert {step.worker for step in steps} == {f"{name}@test" for name in WORKERS}

    site.say("status odin", r"^odin: ready in")
    shown = re.findall(r" on (w\d@test)", site.expect(r"^steps: 1\.", timeout=10))
    assert shown == [step.worker for step in steps]
