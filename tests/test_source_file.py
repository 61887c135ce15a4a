"""Design files: who may read what, through the real ways of asking.

Chat (the test bot speaking as a network, ``local=False``) reads only below
``sources.file.roots``, judged on the real path; the console (``jarvis run`` on
stdin) and the CLI (``jarvis deploy FILE``) read whatever their user can. For
everyone, only regular files: a FIFO, a device, a directory or ``/proc/kmsg``
(which looks regular and blocks on read) is one line, at once, never a hang.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.testing import TestBot
from clipboard import config as config_mod
from tests.aio import LoopThread, bot_in_thread
from tests.site import CORE_PIPELINES

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2-do-not-show"


def write_design(path: Path, hostname: str, **notes: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"instance": {"hostname": hostname, "fqdn": f"{hostname}.example.com",
                                                 "provider": "local"}, "notes": notes}))
    return path


def write_config(tmp: Path, roots: list[str]) -> Path:
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump({
        "store": {"path": str(tmp / "jarvis.db")},
        "pipelines": CORE_PIPELINES,
        "sources": {"file": {"roots": roots}},
    }))
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Designs inside the root, a secret design outside it, and the tricks to get out."""
    tmp = tmp_path_factory.mktemp("files")
    root = tmp / "designs"
    paths = {
        "tmp": tmp, "root": root,
        "inside": write_design(root / "loki.yaml", "loki"),
        "nested": write_design(root / "team" / "thor.yaml", "thor"),
        "secret": write_design(tmp / "private" / "odin.yaml", "odin", password=SECRET),
    }
    (root / "escape.yaml").symlink_to(paths["secret"])
    (root / "kmsg.yaml").symlink_to("/proc/kmsg")
    (root / "alias.yaml").symlink_to(root / "team" / "thor.yaml")
    (root / "subdir").mkdir()
    os.mkfifo(root / "pipe.yaml")
    (tmp / "link-to-root").symlink_to(root)
    yield paths


@pytest.fixture(scope="module")
def chat(site: dict[str, Path]) -> Iterator[tuple[LoopThread, TestBot]]:
    """A real bot whose chat may read below the root (given through a symlink to it)."""
    config = config_mod.load(write_config(site["tmp"], [str(site["tmp"] / "link-to-root")]),
                             export=False)
    with bot_in_thread(config) as (loop, bot):
        yield loop, bot


def answer(chat: tuple[LoopThread, TestBot], text: str, pattern: str, *,
           local: bool = False, timeout: float = 20) -> list[str]:
    """Say ``text`` (from chat unless ``local``); every line up to the one matching
    ``pattern``, then up to the answer of a harmless query, so nothing said is missed."""
    loop, bot = chat

    async def go() -> list[str]:
        await bot.say(text, local=local)
        lines = await bot.lines_until(pattern, timeout)
        await bot.say("history nosuchhost")
        return lines + (await bot.lines_until(r"^nosuchhost: never deployed$", timeout))[:-1]
    return loop.run(go(), timeout * 2 + 10)


def refusal(chat: tuple[LoopThread, TestBot], spec: str, pattern: str) -> str:
    """Chat's one-line answer to ``deploy spec --dry-run``, at once."""
    started = time.monotonic()
    lines = answer(chat, f"deploy {spec} --dry-run", pattern)
    assert len(lines) == 1, lines
    assert time.monotonic() - started < 5
    assert SECRET not in lines[0] and "Traceback" not in lines[0]
    return lines[0]


# --- chat: only below the roots ---

def test_chat_reads_and_deploys_a_design_below_the_root(chat, site) -> None:
    loop, bot = chat
    lines = answer(chat, f"deploy {site['inside']}", r"^loki: deployment #\d+ started")
    assert len(lines) == 1, lines
    loop.run(bot.expect(r"^loki: ready in "))
    history = answer(chat, "history loki", r"^#\d+ ")
    assert f"from file {site['inside'].resolve()}" in history[-1]


def test_chat_names_a_file_relative_to_the_roots(chat, site) -> None:
    lines = answer(chat, "deploy team/thor.yaml --dry-run", r"^thor: dry run of pipeline deploy")
    assert lines[0].startswith("thor: dry run")


def test_chat_follows_a_symlink_that_stays_below_the_root(chat, site) -> None:
    answer(chat, f"deploy {site['root'] / 'alias.yaml'} --dry-run", r"^thor: dry run of pipeline")


@pytest.mark.parametrize("name, pattern", [
    ("outside", r"it is outside the directories chat may read \(sources\.file\.roots: "),
    ("dotdot", r"it is outside the directories chat may read"),
    ("symlink", r"it leads through a symbolic link outside the directories chat may read"),
    ("relative", r"it is outside the directories chat may read"),
])
def test_chat_cannot_read_outside_the_roots_not_even_in_a_dry_run(chat, site, name: str,
                                                                  pattern: str) -> None:
    spec = {"outside": str(site["secret"]),
            "dotdot": f"{site['root']}/../private/odin.yaml",
            "symlink": str(site["root"] / "escape.yaml"),
            "relative": "../private/odin.yaml"}[name]
    line = refusal(chat, spec, pattern)
    assert line.startswith(f"refused {spec}: ")
    assert line.endswith(f"(sources.file.roots: {site['root'].resolve()})")
    assert str(site["root"].resolve()) in line


def test_the_console_reads_what_chat_may_not(chat, site) -> None:
    """The same bot, the same file: a local line reads it (and the dry run shows it,
    redacted keys aside), so the refusals above are chat's and not the file's."""
    lines = answer(chat, f"deploy {site['secret']} --dry-run", r"^odin: dry run", local=True)
    assert lines[0].startswith("odin: dry run of pipeline deploy")


@pytest.mark.parametrize("name, pattern", [
    ("pipe.yaml", r"it is a FIFO, not a regular file$"),
    ("subdir", r"it is a directory, not a regular file$"),
    ("kmsg.yaml", r"it leads through a symbolic link outside"),
    ("missing.yaml", r"^cannot read .*missing\.yaml: no such file$"),
])
def test_chat_refuses_what_is_not_a_regular_file_at_once(chat, site, name: str, pattern: str) -> None:
    spec = str(site["root"] / name)
    assert spec in refusal(chat, spec, pattern)


def test_no_roots_means_no_file_from_chat(tmp_path: Path, site) -> None:
    config = config_mod.load(write_config(tmp_path, []), export=False)
    with bot_in_thread(config) as running:
        line = refusal(running, str(site["inside"]), r"^refused ")
        assert line == (f"refused {site['inside']}: files cannot be deployed from chat here "
                        "(sources.file.roots is empty); use the console or `jarvis deploy`")


def test_a_relative_root_is_a_clear_configuration_error(tmp_path: Path, site) -> None:
    config = config_mod.load(write_config(tmp_path, ["designs"]), export=False)
    with bot_in_thread(config) as running:
        refusal(running, str(site["inside"]),
                r"^sources\.file\.roots: 'designs' is not an absolute path$")


# --- the CLI and the console: the local user ---

def jarvis(*args: str, tmp: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JARVIS_CONFIG"}
    env["XDG_STATE_HOME"] = str(tmp / "state")
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], input=stdin, text=True,
                          capture_output=True, env=env, cwd=ROOT, timeout=60)


def test_cli_reads_any_file_its_user_can_even_with_no_roots(tmp_path: Path, site) -> None:
    config = write_config(tmp_path, [])
    result = jarvis("deploy", str(site["secret"]), "--dry-run", "--config", str(config), tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("odin: dry run of pipeline deploy")


def test_console_reads_any_file_its_user_can_even_with_no_roots(tmp_path: Path, site) -> None:
    config = write_config(tmp_path, [])
    result = jarvis("run", "--config", str(config), tmp=tmp_path,
                    stdin=f"deploy {site['secret']} --dry-run\n")
    assert result.returncode == 0, result.stderr
    assert "odin: dry run of pipeline deploy" in result.stdout


@pytest.mark.parametrize("what, pattern", [
    ("fifo", "it is a FIFO, not a regular file"),
    ("directory", "it is a directory, not a regular file"),
    ("/dev/null", "it is a device, not a regular file"),
    ("/proc/kmsg", "it is a file of the kernel's proc filesystem, not a regular file"),
    ("/proc/self/status", "it is a file of the kernel's proc filesystem, not a regular file"),
    ("/sys/kernel/mm/transparent_hugepage/enabled", "filesystem, not a regular file"),
    ("big", "over the limit of 1048576 bytes (clipboard.max_bytes)"),
    ("missing", "no such file"),
])
def test_cli_refuses_what_is_not_a_design_file_in_one_line_without_waiting(
        tmp_path: Path, what: str, pattern: str) -> None:
    """Each would block a thread or read a kernel interface if opened and read as a file
    (a FIFO has no writer; /proc/kmsg waits for kernel messages)."""
    if what == "fifo":
        spec = tmp_path / "design.yaml"
        os.mkfifo(spec)
    elif what == "directory":
        spec = tmp_path
    elif what == "big":
        spec = tmp_path / "big.yaml"
        spec.write_text("a: " + "x" * (1024 * 1024) + "\n")
    elif what == "missing":
        spec = tmp_path / "gone" / "design.yaml"
    else:
        spec = Path(what)
        if not spec.exists():
            pytest.skip(f"{what} does not exist on this machine")
    started = time.monotonic()
    result = jarvis("deploy", str(spec), "--dry-run", tmp=tmp_path)
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jarvis: "), result.stderr
    assert str(spec) in lines[0] and pattern in lines[0], lines[0]
