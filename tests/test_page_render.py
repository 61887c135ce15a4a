"""The web page without a process (the fast tier): every value from a design or a
worker scrubbed and escaped, the cluster grid's order, progress, the timeline's bars
and axis, and ``http.read: token`` guarding the pages (an in-process aiohttp server).
The browser tests are tests/test_http_page.py."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import yaml
from aiohttp.test_utils import TestClient, TestServer

from bot.http import page_render as render
from bot.http import page_timeline as timeline
from bot.http.auth import Tokens
from bot.http.context import Context
from bot.http.server import build_app
from clipboard import config as config_mod
from clipboard import redact
from clipboard.records import Deployment, State, StepKind, StepRecord, StepState
from clipboard.steps import Step

SECRET = "Sekret-Value-4242"
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
t = render.Text(redact.Scrubber({SECRET}))


def deployment(number: int, hostname: str, state: str, *, error: str | None = None,
               cluster: str | None = "shop#1", current: int = 1) -> Deployment:
    return Deployment(id=number, hostname=hostname, source="shop.yaml", pipeline="deploy",
                      steps=(Step("t:one"), Step("t:two")), state=State(state),
                      created_at=1000.0 + number, cluster=cluster, error=error,
                      current_step=current, started_at=1000.0)


def step(idx: int, name: str, start: float, end: float | None, *, kind: str = "step",
         state: str = "ok", error: str | None = None) -> StepRecord:
    return StepRecord(id=idx, deployment_id=1, idx=idx, name=name, kind=StepKind(kind),
                      state=StepState(state),
                      started_at=start, finished_at=end, exit_status=None, error=error,
                      stderr_tail=[])


def test_text_scrubs_secrets_then_escapes_markup_and_quotes() -> None:
    assert t(f'<b class="x">{SECRET}</b>') == "&lt;b class=&quot;x&quot;&gt;***&lt;/b&gt;"


def test_a_hostile_hostname_and_error_cannot_add_markup_to_a_cluster_grid() -> None:
    page = render.cluster(t, "shop#1", [deployment(1, HOSTILE, "failed", error=HOSTILE)])
    assert "<script>" not in page and "<img" not in page
    assert 'data-host="&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img' in page


def test_the_grid_puts_failed_hosts_first_then_running_waiting_and_done() -> None:
    hosts = [deployment(1, "a-ready", "ready"), deployment(2, "b-queued", "queued"),
             deployment(3, "c-running", "running"), deployment(4, "d-cancelled", "cancelled"),
             deployment(5, "e-failed", "failed"), deployment(6, "f-rollback", "rollback failed")]
    page = render.cluster(t, "shop#1", hosts)
    order = re.findall(r'data-host="([^"]+)"', page)
    assert order == ["f-rollback", "e-failed", "d-cancelled", "c-running", "b-queued",
                     "a-ready"]


def test_a_cluster_run_is_linked_with_its_hash_encoded() -> None:
    assert render.cluster_url("shop#2") == "/clusters/shop%232"


def test_the_timeline_draws_undos_apart_and_a_running_bar_up_to_now() -> None:
    d = deployment(1, "web1", "rolling back", cluster=None)
    records = [step(1, "t:one", 100.0, 101.0),
               step(2, HOSTILE, 101.0, 102.0, state="failed", error=HOSTILE),
               step(1, "t:unone", 102.0, None, kind="undo", state="running")]
    html = timeline.timeline(t, d, records, now=104.0)
    assert "<script>" not in html and "<img" not in html
    bars = re.findall(r'<rect class="([^"]+)" x="([^"]+)" y="2" width="([^"]+)"', html)
    assert bars == [("bar step ok", "0.000%", "25.000%"),
                    ("bar step failed", "25.000%", "25.000%"),
                    ("bar undo running", "50.000%", "50.000%")]
    assert 'data-end=' not in html.split('data-name="t:unone"')[1].split(">")[0]
    assert "data-end" not in html.split(">")[0], "an active deployment's axis moves"


def test_the_axis_ticks_are_round_and_few() -> None:
    assert [timeline.tick_step(s) for s in (0.03, 0.5, 3.0, 7.3, 60.0, 1000.0)] == \
        [0.005, 0.1, 0.5, 2.0, 10.0, 200.0]
    assert [timeline.seconds_text(s) for s in (0.027, 0.5, 12.0, 185.0)] == \
        ["27ms", "0.5s", "12s", "3m05s"]


def test_progress_counts_the_steps_finished_and_says_where_it_stopped() -> None:
    running, failed = deployment(1, "a", "running", current=2), deployment(2, "b", "failed")
    assert (render.steps_done(running), render.progress(running)) == (1, "2/2 t:two")
    assert (render.steps_done(failed), render.progress(failed)) == (0, "stopped at 1/2 t:one")
    ready = deployment(3, "c", "ready", current=2)
    assert (render.steps_done(ready), render.progress(ready)) == (2, "2/2")


def test_the_pages_follow_http_read_token(tmp_path: Path) -> None:
    """``check_read`` guards every page: with ``http.read: token`` a browser without a
    token gets 401 before anything is read (the store here is absent on purpose)."""
    path = tmp_path / "jarvis.yaml"
    path.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "jarvis.db")},
                                    "http": {"listen": "127.0.0.1:0", "read": "token"}}))
    config = config_mod.load(path)
    ctx = Context(config, None, None, None, None, Tokens({}), lambda: True)

    async def go() -> list[int]:
        async with TestClient(TestServer(build_app(ctx))) as client:
            answers = [await client.get(url) for url in ("/", "/deployments/1", "/clusters/x")]
            return [answer.status for answer in answers]
    assert asyncio.run(go()) == [401, 401, 401]
