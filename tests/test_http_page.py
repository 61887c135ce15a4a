"""The web page in a real headless Chromium (tests/servers/chromium.py) against a real
jarvis: HTTP on a free port, fork server, worker processes, SQLite. One jarvis serves
the module.

What it shows: a deployment's timeline gains a bar as each step finishes, without a
reload (a marker set on ``window`` before is still there), a rollback's undos in their
own colour; the front page gains a deployment's row live; a cluster's grid puts its
failed hosts first and turns its hosts ready live; a step error and a clipboard value
written to inject markup show as text; a page that is not there is a 404. Steps wait
on a gate file (``pageworker:gate``) where the browser must be watching before they
run, so no timing is hoped for. Screenshots of a deployment page and a cluster page are
saved as files in ``$JARVIS_SCREENSHOTS`` (CI sets it; pytest's temp dir otherwise)."""
from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.testing import TestBot
from clipboard import config as config_mod
from tests.aio import LoopThread, bot_in_thread

pytestmark = pytest.mark.servers  # starts jarvis, worker processes and a browser

WORKERS = Path(__file__).parent / "workers"
TICKS = 5  # pageworker:tick-N steps, 0.5 s each
HOSTILE = 'node <script>window.pwned = 1</script><b id="injected">bold</b> & "quoted"'
HOSTILE_NOTE = '<img id="planted" src="/nothing" onerror="window.pwned = 2">'
MARKER = "window.jarvisPageMarker"
# (step name, bar width) of each running row, read in one go (a row may finish between reads)
RUNNING_WIDTHS = ("return Array.from(document.querySelectorAll('#timeline .rows .row'))"
                  ".filter(r => !r.dataset.end)"
                  ".map(r => [r.dataset.name, r.querySelector('.bar').getAttribute('width')])")


@dataclass
class Site:
    loop: LoopThread
    bot: TestBot
    tmp: Path
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def design(self, hostname: str, gate: Path | None = None) -> Path:
        """A host's design; ``gate``: the file pageworker:gate waits for."""
        path = self.tmp / f"{hostname}.yaml"
        notes = {"html": HOSTILE_NOTE, **({"gate": str(gate)} if gate else {})}
        path.write_text(yaml.safe_dump({
            "instance": {"hostname": hostname, "fqdn": f"{hostname}.example.com",
                         "provider": "local"},
            "notes": notes}))
        return path

    def deploy(self, source: Path, pipeline: str | None = None) -> int:
        choice = f" pipeline={pipeline}" if pipeline else ""
        answer = self.loop.run(self.bot.ask(f"deploy {source}{choice}",
                                            r"deployment #\d+ started|cluster of"))
        found = re.search(r"#(\d+) started", answer)
        return int(found.group(1)) if found else 0

    def state(self, number: int) -> str:
        d = self.loop.run(self.bot.bot.store.deployment(number))
        assert d is not None
        return str(d.state)

    def finished(self, number: int, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.state(number)) in ("queued", "running", "rolling back"):
            assert time.monotonic() < deadline, f"#{number} still {state}"
            time.sleep(0.05)
        return state


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("page")
    ticks = [f"pageworker:tick-{n}" for n in range(1, TICKS + 1)]
    config = {
        "store": {"path": str(tmp / "jarvis.db")},
        "runner": {"worker_dirs": [str(WORKERS)], "kill_grace": 0.5},
        "http": {"listen": "127.0.0.1:0"},
        "pipelines": {
            "ticks": {"steps": ["core:validate", "pageworker:gate", *ticks]},
            "quick": {"steps": ["core:validate"]},
            "gated": {"steps": ["core:validate", "pageworker:gate"]},
            "undoable": {"rollback": True, "steps": [
                "core:validate", "core:randpass",
                *({"step": f"pageworker:tick-{n}", "undo": f"pageworker:untick-{n}"}
                  for n in (1, 2)), "pageworker:refuse"]},
            "hostile": {"steps": ["core:validate", "core:randpass", "pageworker:hostile"]},
        },
    }
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(config))
    with bot_in_thread(config_mod.load(path)) as (loop, bot):
        assert bot.bot.http is not None
        yield Site(loop, bot, tmp, bot.bot.http.port)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    named = os.environ.get("JARVIS_SCREENSHOTS")
    directory = Path(named) if named else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def until(check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)
    return found


def text_of(browser: Any, selector: str) -> str:
    """An element's text, read in one go: the page's script swaps its live regions, so an
    element found by one call may be gone by the next."""
    return str(browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
        selector))


def finished_bars(browser: Any) -> int:
    return len(browser.find_elements("css selector", "#timeline .rows .bar.ok"))


def test_the_timeline_gains_a_bar_as_each_step_finishes_without_a_reload(
        site: Site, browser: Any, screenshots: Path) -> None:
    gate = site.tmp / "tick1.open"
    number = site.deploy(site.design("tick1", gate=gate), "ticks")
    browser.get(site.url(f"/deployments/{number}"))
    browser.execute_script(f"{MARKER} = 'still here'")
    until(lambda: browser.find_element("id", "live").is_displayed(), "the stream opened")
    until(lambda: finished_bars(browser) == 1, "core:validate's bar, the gate's running")
    gate.touch()  # the ticks start only now, with the page open and listening
    counts: list[int] = [1]
    widths: dict[str, set[str]] = {}
    deadline = time.monotonic() + 30
    while counts[-1] < TICKS + 2 and time.monotonic() < deadline:
        count = finished_bars(browser)
        if counts[-1] != count:
            counts.append(count)
        for name, width in browser.execute_script(RUNNING_WIDTHS):
            widths.setdefault(name, set()).add(width)
        time.sleep(0.04)
    # validate, the gate, then every tick's bar, one at a time, while the page stayed open
    assert counts == list(range(1, TICKS + 3)), f"finished bars seen: {counts}"
    assert browser.execute_script(f"return {MARKER}") == "still here", "the page reloaded"
    assert any(len(seen) > 2 for seen in widths.values()), \
        f"no running bar grew while its step ran: {widths}"
    assert site.finished(number) == "ready"
    until(lambda: "ready" in text_of(browser, "#facts .headline"), "the headline says ready")
    labels = [e.text for e in browser.find_elements("css selector", "#timeline .rows .label")]
    assert labels == ["1 core:validate", "2 pageworker:gate",
                      *(f"{n + 2} pageworker:tick-{n}" for n in range(1, TICKS + 1))]
    assert browser.save_screenshot(str(screenshots / "deployment-page.png"))


def test_a_rollback_draws_its_undos_apart_as_they_run(site: Site, browser: Any,
                                                      screenshots: Path) -> None:
    number = site.deploy(site.design("undo1"), "undoable")
    browser.get(site.url(f"/deployments/{number}"))
    browser.execute_script(f"{MARKER} = 'rollback'")
    until(lambda: browser.find_element("id", "live").is_displayed(), "the stream opened")
    assert not browser.find_elements("css selector", "#timeline .bar.undo")
    until(lambda: len(browser.find_elements("css selector", "#timeline .bar.undo.ok")) == 2,
          "both undos drawn", timeout=20)
    assert site.finished(number) == "rolled back"
    assert browser.execute_script(f"return {MARKER}") == "rollback", "the page reloaded"
    labels = [e.text for e in browser.find_elements("css selector", "#timeline .row.undo .label")]
    assert labels == ["undo pageworker:untick-2", "undo pageworker:untick-1"]
    assert len(browser.find_elements("css selector", "#timeline .bar.step.failed")) == 1
    until(lambda: "rolled back" in text_of(browser, "#facts .headline"),
          "the headline says rolled back")
    assert browser.save_screenshot(str(screenshots / "deployment-rollback.png"))


def test_the_front_page_gains_a_deployment_live(site: Site, browser: Any) -> None:
    browser.get(site.url("/"))
    browser.execute_script(f"{MARKER} = 'front'")
    until(lambda: browser.find_element("id", "live").is_displayed(), "the stream opened")
    number = site.deploy(site.design("fresh1"), "quick")
    row = until(lambda: text_of(browser, f"#d{number}"), f"a row for #{number}")
    assert "fresh1" in row
    until(lambda: "ready" in text_of(browser, f"#d{number}"), "the row says ready")
    first = browser.execute_script(
        "return document.querySelector('#deployments tbody tr').id")
    assert first == f"d{number}", "newest first"
    assert browser.execute_script(f"return {MARKER}") == "front", "the page reloaded"


def test_a_hostile_step_error_and_clipboard_value_show_as_text(site: Site, browser: Any
                                                               ) -> None:
    number = site.deploy(site.design("evil1"), "hostile")
    assert site.finished(number) == "failed"
    browser.get(site.url(f"/deployments/{number}"))
    # read in one go: the page's script may swap its live regions in between two reads
    headline, failed, design = browser.execute_script(
        "document.querySelectorAll('#steps details').forEach(d => { d.open = true; });"
        "return ['#facts .headline', '#step-3', '#step-0']"
        ".map(s => document.querySelector(s).innerText)")
    assert HOSTILE in headline
    assert HOSTILE in failed
    assert HOSTILE_NOTE in design
    assert browser.find_elements("id", "injected") == []
    assert browser.find_elements("id", "planted") == []
    assert browser.execute_script("return window.pwned === undefined")
    with urllib.request.urlopen(site.url(f"/deployments/{number}"), timeout=10) as answer:
        body = answer.read().decode()
        policy = answer.headers["Content-Security-Policy"]
    assert "<script>window" not in body and "&lt;script&gt;window.pwned" in body
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_a_cluster_grid_shows_failed_hosts_first_and_changes_live(
        site: Site, browser: Any, screenshots: Path) -> None:
    gate = site.tmp / "shop.open"
    design = site.tmp / "shop.yaml"
    design.write_text(yaml.safe_dump({
        "cluster": "shop",
        "defaults": {"provider": "local", "domain": "example.com"},
        "roles": {"good": {"pipeline": "gated"}, "bad": {"pipeline": "hostile"}},
        "notes": {"gate": str(gate)},
        "hosts": [{"hostname": name, "role": "good"} for name in ("alpha", "bravo", "charlie")]
        + [{"hostname": name, "role": "bad"} for name in ("yankee", "zulu")]}))
    site.deploy(design)
    store = site.bot.bot.store
    run = until(lambda: site.loop.run(store.latest_cluster("shop")), "the cluster recorded")
    until(lambda: sorted(d.state for d in site.loop.run(store.by_cluster(run)))
          == ["failed", "failed", "running", "running", "running"], "the bad hosts failed")
    browser.get(site.url("/clusters/shop"))
    browser.execute_script(f"{MARKER} = 'grid'")
    until(lambda: browser.find_element("id", "live").is_displayed(), "the stream opened")
    assert grid(browser) == [("yankee", "failed"), ("zulu", "failed"), ("alpha", "running"),
                             ("bravo", "running"), ("charlie", "running")]
    gate.touch()
    until(lambda: grid(browser) == [("yankee", "failed"), ("zulu", "failed"),
                                    ("alpha", "ready"), ("bravo", "ready"),
                                    ("charlie", "ready")], "the grid updated live")
    assert browser.execute_script(f"return {MARKER}") == "grid", "the page reloaded"
    assert "3/5 ready, 2 failed" in text_of(browser, ".counts")
    assert browser.save_screenshot(str(screenshots / "cluster-page.png"))
    browser.get(site.url("/"))
    assert text_of(browser, "#clusters a") == run
    browser.get(browser.execute_script("return document.querySelector('#clusters a').href"))
    assert text_of(browser, "h1") == f"Cluster {run}"


def grid(browser: Any) -> list[tuple[str, str]]:
    """(host, state) of each cell of a cluster's grid, in order, read in one go."""
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('ol.grid li'))"
        ".map(li => [li.dataset.host, li.className])")
    return [(host, classes.removeprefix("host state-").replace("-", " "))
            for host, classes in cells]


def status_of(site: Site, path: str) -> int:
    try:
        with urllib.request.urlopen(site.url(path), timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_pages_that_are_not_there_answer_404_and_bad_paging_400(site: Site) -> None:
    assert status_of(site, "/deployments/424242") == 404
    assert status_of(site, "/deployments/" + "9" * 30) == 404
    assert status_of(site, "/clusters/nosuch") == 404
    assert status_of(site, "/?before=x") == 400
    assert status_of(site, "/?before=%C2%B2") == 400  # "²": a digit to isdigit, not to int
    assert status_of(site, "/?before=1") == 200
    assert status_of(site, "/static/page.js") == 200
