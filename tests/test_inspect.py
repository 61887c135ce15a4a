"""Looking back through chat: ``logs``, ``clipboard`` of any version, ``diff`` and
paged ``history``, each redacted. The real bot behind the test adapter: fork server,
executable workers (tests/workers/inspectworker talks on stderr, echoing the root
password, and rotates that password), SQLite."""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.testing import TestBot
from clipboard import config as config_mod
from clipboard import redact
from tests.aio import LoopThread, bot_in_thread
from tests.site import CORE_PIPELINES

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis

ROOT = Path(__file__).resolve().parents[1]
WORKERS = Path(__file__).parent / "workers"
Tb = tuple[LoopThread, TestBot, Path]


def write_config(tmp: Path) -> Path:
    data = {
        "store": {"path": str(tmp / "jarvis.db")},
        "runner": {"worker_dirs": [str(WORKERS)], "kill_grace": 0.5},
        "pipelines": {
            **CORE_PIPELINES,
            "rotating": {"steps": ["core:validate", "core:randpass", "inspectworker:rotate"]},
            "chatty": {"rollback": True, "steps": [
                "core:validate", "core:randpass",
                {"step": "shellworker:record", "undo": "shellworker:unrecord"},
                "inspectworker:chatfail"]},
            "quick": {"steps": ["core:validate"]},
        },
    }
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def tb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tb]:
    tmp = tmp_path_factory.mktemp("inspect")
    with bot_in_thread(config_mod.load(write_config(tmp))) as (loop, bot):
        yield loop, bot, tmp


def deploy(tb: Tb, hostname: str, pipeline: str, ends: str) -> int:
    """Deploy a fresh design of ``hostname`` and wait for the line that ends it."""
    loop, bot, tmp = tb
    marks = tmp / f"marks-{hostname}"
    marks.mkdir(exist_ok=True)
    path = tmp / f"{hostname}.yaml"
    path.write_text(yaml.safe_dump({"instance": {"hostname": hostname,
                                                 "fqdn": f"{hostname}.example.com"},
                                    "notes": {"marks": str(marks)}}))
    ack = loop.run(bot.ask(f"deploy {path} pipeline={pipeline}", r"deployment #\d+ started"))
    loop.run(bot.expect(rf"^{hostname}: {ends}"))
    return int(re.search(r"#(\d+)", ack).group(1))


def answer(tb: Tb, text: str, **kw: Any) -> list[str]:
    """Every line of the bot's answer to ``text`` (one reply arrives all at once)."""
    loop, bot, _ = tb

    async def go() -> list[str]:
        await bot.say(text, **kw)
        lines = [await bot.expect(".")]
        await asyncio.sleep(0.05)
        while not bot.adapter.outbox.empty():
            lines.append(bot.adapter.outbox.get_nowait()[1])
        bot.seen += lines[1:]
        return lines
    return loop.run(go(), 40)


def secrets_of(tb: Tb, hostname: str) -> set[str]:
    """Every secret any clipboard of any deployment of ``hostname`` held."""
    loop, bot, _ = tb
    store = bot.bot.store
    found: set[str] = set()
    for d in loop.run(store.history(hostname, 1000)):
        for version in loop.run(store.clipboard_versions(d.id)):
            found |= redact.secret_values(loop.run(store.clipboard_version(version.id)))
    assert found
    return found


def assert_no_secret(tb: Tb, hostname: str, lines: list[str]) -> None:
    for secret in secrets_of(tb, hostname):
        assert not any(secret in line for line in lines), f"a secret of {hostname} was shown"


def test_logs_of_a_failed_step_scrubbed_whole_in_a_room(tb: Tb) -> None:
    """The test network has no private channel, so the room gets the whole log; on IRC
    and Jabber the bot sends it to the asker instead (tests/test_fairness.py)."""
    number = deploy(tb, "chat1", "chatty", r"rolled back \(1 undos\)")
    private = answer(tb, "logs chat1")
    assert private[0] == (f"chat1: #{number} step 4/4 inspectworker:chatfail: failed, "
                          "exit status 1")
    assert private[1].startswith("error: ")
    stderr = [line for line in private if line.startswith("| ")]
    assert stderr[0] == "| failing line 1" and len(stderr) == 13
    assert stderr[-1] == "| the root password was ***"
    room = answer(tb, "jarvis: logs chat1 4", room="#ops", nick="alice")
    assert room[0] == private[0].replace("chat1:", "alice: chat1:", 1)
    assert [line for line in room if line.startswith("alice: | ")] == [
        f"alice: {line}" for line in stderr]
    undo = answer(tb, "logs chat1 3.undo")
    assert undo[0] == f"chat1: #{number} the undo of step 3 (shellworker:unrecord): ok"
    assert answer(tb, "logs chat1 core:validate")[-1] == "no stderr was kept"
    assert_no_secret(tb, "chat1", private + room + undo)


def test_logs_scrub_a_secret_a_later_version_replaced(tb: Tb) -> None:
    """The rotating step echoes the password it replaced: neither the stored stderr nor
    ``logs`` may show it, though the clipboard the step printed no longer holds it."""
    loop, bot, _ = tb
    number = deploy(tb, "rot1", "rotating", r"ready in")
    old = loop.run(bot.bot.store.clipboard(number, 2))["instance"]["root_password"]
    stored = loop.run(bot.bot.store.steps(number))[-1].stderr_tail
    assert not any(old in line for line in stored)
    lines = answer(tb, "logs rot1")
    assert lines[0] == f"rot1: #{number} step 3/3 inspectworker:rotate: ok"
    assert "| the root password was ***" in lines
    assert_no_secret(tb, "rot1", lines)


def test_clipboard_of_an_older_deployment_and_of_an_undo(tb: Tb) -> None:
    first = deploy(tb, "clip1", "rotating", r"ready in")
    second = deploy(tb, "clip1", "chatty", r"rolled back")
    latest = answer(tb, "clipboard clip1")
    assert latest[0] == (f"clip1: clipboard of #{second}, latest, after undo "
                         "shellworker:unrecord:")
    assert "  rotated: true" not in latest
    older = answer(tb, f"clipboard clip1 #{first}")
    assert older[0] == f"clip1: clipboard of #{first}, latest, after step 3/3 inspectworker:rotate:"
    assert "  rotated: true" in older and "  fqdn: rotated.example.com" in older
    assert "  root_password: '***'" in older
    by_name = answer(tb, f"clipboard clip1 core:randpass #{first}")
    assert by_name[0] == f"clip1: clipboard of #{first}, after step 2/3 core:randpass:"
    assert "  fqdn: clip1.example.com" in by_name
    fetched = answer(tb, f"clipboard clip1 0 #{first}")
    assert fetched[0] == f"clip1: clipboard of #{first}, as fetched (step 0):"
    assert not any("root_password" in line for line in fetched)
    undo = answer(tb, "clipboard clip1 3.undo")
    assert undo[0] == (f"clip1: clipboard of #{second}, after the undo of step 3 "
                       "(shellworker:unrecord):")
    assert "  root_password: '***'" in undo
    failed = answer(tb, "clipboard clip1 4")
    assert failed == [(f"clip1: step 4/4 inspectworker:chatfail kept no clipboard in #{second} "
                       "(it failed without printing one)")]
    assert_no_secret(tb, "clip1", latest + older + by_name + undo)


def test_diff_of_one_step_and_between_two(tb: Tb) -> None:
    number = deploy(tb, "diff1", "rotating", r"ready in")
    rotate = answer(tb, "diff diff1 3")
    assert rotate[0] == (f"diff1: #{number} after step 2/3 core:randpass → step 3/3 "
                         "inspectworker:rotate: 1 added, 2 changed, 0 removed")
    assert rotate[1:] == ["~ instance.fqdn: diff1.example.com → rotated.example.com",
                          "~ instance.root_password: changed",
                          "+ instance.rotated: true"]
    randpass = answer(tb, "diff diff1 core:randpass")
    assert "+ instance.root_password: ***" in randpass
    both = answer(tb, "diff diff1 0 inspectworker:rotate")
    assert both[0].startswith(f"diff1: #{number} as fetched (step 0) → step 3/3 "
                              "inspectworker:rotate: ")
    assert "+ instance.root_password: ***" in both and "+ instance.rotated: true" in both
    assert "+ jarvis.deployment" not in " ".join(both)
    assert_no_secret(tb, "diff1", rotate + randpass + both)


def test_history_in_pages_of_ten_newest_first(tb: Tb) -> None:
    numbers = [deploy(tb, "hist1", "quick", r"ready in") for _ in range(12)]
    first = answer(tb, "history hist1")
    assert first[0] == "hist1: 12 deployment(s), newest first, page 1 of 2"
    assert [int(line.split()[0][1:]) for line in first[1:11]] == numbers[::-1][:10]
    assert first[11:] == ["more: history hist1 2"]
    second = answer(tb, "history hist1 2")
    assert second[0] == "hist1: 12 deployment(s), newest first, page 2 of 2"
    assert [int(line.split()[0][1:]) for line in second[1:]] == numbers[1::-1]


@pytest.mark.parametrize("said, refusal", [
    ("logs nosuch", r"^nosuch: never deployed$"),
    ("clipboard ../etc", r"^hostname '../etc' contains forbidden characters"),
    ("clipboard hist1 7", (r"^hist1: no step '7' in #\d+ \(pipeline quick\): say a number 0–1, "
                           r"N\.undo, or one of core:validate$")),
    ("clipboard hist1 dnswizard:update_host", r"^hist1: no step 'dnswizard:update_host' in #"),
    ("logs hist1 1.undo", r"^hist1: step '1\.undo' was not undone in #\d+$"),
    ("logs hist1 #999999", r"^hist1: no deployment #999999 of this host; history hist1 lists them$"),
    ("logs hist1 #x", r"^'#x' is not a deployment: say #<number>"),
    ("clipboard hist1 1 #1 #2", r"^clipboard: name one deployment, not #1 #2$"),
    ("logs hist1 1 0", r"^logs takes a step and a #deployment: logs hist1 <step> \[#deployment\]$"),
    ("diff hist1", r"^diff needs a step: diff hist1 <step> \[<step>\] \[#deployment\]$"),
    ("diff hist1 0", (r"^hist1: as fetched \(step 0\) is the first clipboard of #\d+: nothing "
                      r"before it to compare; name two steps$")),
    ("history hist1 two", r"^history: the page is a number from 1, not 'two'$"),
    ("history hist1 9", r"^hist1: no page 9: its 12 deployment\(s\) fill 2 page\(s\)$"),
])
def test_every_bad_argument_is_one_clear_line(tb: Tb, said: str, refusal: str) -> None:
    lines = answer(tb, said)
    assert len(lines) == 1 and re.search(refusal, lines[0]), lines


def test_the_same_queries_from_the_command_line(tb: Tb) -> None:
    """``jarvis logs|clipboard|diff|history`` in another process, on the same store (the
    deployment as ``-d N``: a shell takes ``#`` for a comment)."""
    loop, bot, tmp = tb
    number = loop.run(bot.bot.store.latest("rot1")).id

    def jarvis(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot.cli", *args, "--config",
                               str(tmp / "jarvis.yaml")], text=True, capture_output=True,
                              cwd=ROOT, timeout=60)
    logs = jarvis("logs", "rot1", "inspectworker:rotate", "-d", str(number))
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.startswith(f"rot1: #{number} step 3/3 inspectworker:rotate: ok\n")
    assert "| the root password was ***" in logs.stdout
    diff = jarvis("diff", "rot1", "3")
    assert "~ instance.root_password: changed" in diff.stdout
    clip = jarvis("clipboard", "clip1", "3.undo")
    assert "after the undo of step 3 (shellworker:unrecord):" in clip.stdout
    page = jarvis("history", "hist1", "2")
    assert page.stdout.startswith("hist1: 12 deployment(s), newest first, page 2 of 2")
    bad = jarvis("logs", "rot1", "9")
    assert bad.returncode == 2 and bad.stderr.startswith("jarvis: rot1: no step '9' in #")
    assert len(bad.stderr.splitlines()) == 1
    for host in ("rot1", "clip1"):
        assert_no_secret(tb, host, (logs.stdout + diff.stdout + clip.stdout).splitlines())


def test_no_answer_ever_showed_a_password(tb: Tb) -> None:
    """Across every test above: whatever was asked, no clipboard secret reached chat."""
    _, bot, _ = tb
    hosts = {"chat1", "rot1", "clip1", "diff1"}
    for host in hosts:
        assert_no_secret(tb, host, bot.seen)
