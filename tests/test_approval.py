"""Forcing takes two people, end to end through the test bot with several identities:
``deploy … force`` waits, another identity approves, then it runs; the requester
cannot approve itself; a wait expires, is cancelled, survives a restart without
running; a lone force never passes the production check; ``force``, ``approve``,
``history`` and ``clipboard`` are ACL rules. Everything behind the test adapter is
real: fork server, worker processes, SQLite."""
from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.acl import Acl
from bot.adapter import Incoming
from bot.grammar import parse
from bot.testing import TestBot
from clipboard import config as config_mod
from clipboard.errors import ConfigError, HostBusy
from clipboard.owner import Owner
from clipboard.records import State
from clipboard.steps import Step
from clipboard.store import Store
from clipboard.store_schema import SCHEMA
from tests.aio import LoopThread, bot_in_thread
from tests.silos import run_worker

ALICE, BOB, CAROL = "console:alice", "console:bob", "console:carol"
WORKERS = Path(__file__).parent / "workers"
PIPELINES = {"prodcheck": {"steps": ["core:validate", "inventory:production_check",
                                     "core:randpass"]},
             "produndo": {"rollback": True, "steps": [
                 "core:validate", "inventory:production_check",
                 {"step": "shellworker:record", "undo": "shellworker:unrecord"},
                 "shellworker:flaky"]}}
ACL = {"force": {"allow": [ALICE]},                  # only alice may force
       "approve": {"allow": [ALICE, BOB]},           # alice may approve, but not her own force
       "history": {"allow": [ALICE, BOB]},
       "clipboard": {"allow": [ALICE]}}


def write_config(tmp: Path, window: float, lease: float = 3) -> config_mod.Config:
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump({
        "store": {"path": str(tmp / "jarvis.db"), "lease_seconds": lease},
        "runner": {"worker_dirs": [str(WORKERS)]},
        "pipelines": PIPELINES,
        "acl": {**ACL, "approval_window": window}}))
    return config_mod.load(path)


def production(tmp: Path, hostname: str) -> Path:
    path = tmp / f"{hostname}.yaml"
    path.write_text(yaml.safe_dump({"instance": {
        "hostname": hostname, "fqdn": f"{hostname}.example.com", "provider": "local",
        "production": True}, "notes": {"marks": str(tmp)}}))
    return path


Bot = tuple[LoopThread, TestBot, Path]


@pytest.fixture(scope="module")
def tb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    tmp = tmp_path_factory.mktemp("approval")
    with bot_in_thread(write_config(tmp, window=600)) as (loop, bot):
        yield loop, bot, tmp


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    """A bot whose approvals expire after one second, its lease keeper every second."""
    tmp = tmp_path_factory.mktemp("expiry")
    with bot_in_thread(write_config(tmp, window=1)) as (loop, bot):
        yield loop, bot, tmp


def ask(tb: Bot, who: str, text: str, pattern: str, timeout: float = 30) -> str:
    loop, bot, _ = tb
    return loop.run(bot.ask(text, pattern, timeout, identity=who), timeout + 10)


def number(line: str) -> int:
    return int(re.search(r"#(\d+)", line).group(1))


def steps_run(tb: Bot, deployment_id: int) -> list[str]:
    loop, bot, _ = tb
    return [s.name for s in loop.run(bot.bot.store.steps(deployment_id))]


@pytest.mark.servers
def test_force_waits_for_a_second_identity_then_runs_and_history_shows_both(tb: Bot) -> None:
    loop, bot, tmp = tb
    path = production(tmp, "prod1")
    held = ask(tb, ALICE, f"deploy {path} pipeline=prodcheck force",
               r"^prod1: deployment #\d+ forced by console:alice awaits approval: nothing runs "
               r"until someone else says 'approve prod1' \(by 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d "
               r"UTC\); 'cancel prod1' drops it$")
    ident = number(held)
    assert ask(tb, CAROL, "status prod1", "^prod1: ") == (
        f"prod1: awaiting approval: deployment #{ident} (3 steps) forced by console:alice; "
        f"someone else may say 'approve prod1' until {held.split('(by ')[1].split(')')[0]}")
    assert steps_run(tb, ident) == []
    ask(tb, ALICE, f"deploy {path} pipeline=prodcheck",
        rf"^prod1 is being deployed by #{ident} \(awaiting approval; requested by console:alice\)")

    assert ask(tb, ALICE, "approve prod1", "^prod1: ") == (
        f"prod1: console:alice asked for the force of deployment #{ident} and cannot approve "
        "it too; someone else must")
    ask(tb, CAROL, "approve prod1", r"^approve denied for console:carol: rule acl.approve allows "
                                    r"only \['console:alice', 'console:bob'\]$")
    assert steps_run(tb, ident) == []
    assert ask(tb, BOB, "approve prod1", r"^prod1: .* \(forced by") == (
        f"prod1: deployment #{ident} approved by console:bob (forced by console:alice); "
        "starting: pipeline prodcheck, 3 steps")
    # where alice asked for it, she hears that it was approved
    assert f"prod1: deployment #{ident} approved by console:bob; starting" in bot.seen
    loop.run(bot.expect(r"^prod1: ready in \S+ \(3 steps\)$"))
    assert steps_run(tb, ident) == ["core:validate", "inventory:production_check",
                                    "core:randpass"]

    ask(tb, BOB, "history prod1", r"^prod1: 1 deployment")
    line = loop.run(bot.expect(rf"^#{ident} "))
    assert " ready in " in line and " by console:alice from file " in line
    assert re.search(r"; forced, approved by console:bob at \d\d:\d\d:\d\d$", line), line
    ask(tb, ALICE, "clipboard prod1 2", r"^prod1: clipboard of #\d+, after step 2")
    shown = loop.run(bot.lines_until(r"^  forced: true"))      # inventory: what the check saw
    assert "  approved_by: console:bob" in shown and "  requested_by: console:alice" in shown
    assert loop.run(bot.expect(r"^  approved_by:")) == "  approved_by: console:bob"


@pytest.mark.servers
def test_a_forced_deployment_rolled_back_is_not_retried_from_step_1(tb: Bot) -> None:
    loop, bot, tmp = tb
    ident = number(ask(tb, ALICE, f"deploy {production(tmp, 'prod8')} pipeline=produndo force",
                       r"^prod8: deployment #\d+ forced by"))
    ask(tb, BOB, "approve prod8", rf"^prod8: deployment #{ident} approved by console:bob \(")
    loop.run(bot.expect(r"^prod8: rolled back \(1 undos\)"))
    ask(tb, ALICE, "retry prod8", rf"^prod8: deployment #{ident} was forced and rolled back; "
                                  r"deploy it again with force \(and a new approval\)$")


@pytest.mark.servers
def test_approve_refuses_a_host_with_nothing_waiting(tb: Bot) -> None:
    ask(tb, BOB, "approve nosuch1", "^nosuch1: no deployment awaits approval$")
    ask(tb, BOB, "approve", r"^approve takes one host: approve <host> — ")


@pytest.mark.servers
def test_force_is_its_own_rule_and_history_and_clipboard_are_rules(tb: Bot) -> None:
    loop, bot, tmp = tb
    path = production(tmp, "prod2")
    ask(tb, BOB, f"deploy {path} pipeline=prodcheck force",
        r"^force denied for console:bob: rule acl.force allows only \['console:alice'\]$")
    assert loop.run(bot.bot.store.latest("prod2")) is None
    ask(tb, BOB, f"deploy {path} pipeline=prodcheck", r"^prod2: deployment #\d+ started")
    failed = loop.run(bot.expect(r"^prod2: FAILED at step 2/3 inventory:production_check"))
    assert ("prod2 is marked production (design flag instance.production); redeploy with "
            "force=true to proceed (exit status 1)") in failed
    ask(tb, CAROL, "history prod2", r"^history denied for console:carol: rule acl.history")
    ask(tb, BOB, "clipboard prod2", r"^clipboard denied for console:bob: rule acl.clipboard")
    ask(tb, "guest!g@example.net", "status prod2", r"^prod2: FAILED at step 2/3")  # stays open


@pytest.mark.servers
def test_cancel_while_waiting_runs_nothing_and_cannot_be_retried(tb: Bot) -> None:
    loop, bot, tmp = tb
    ident = number(ask(tb, ALICE, f"deploy {production(tmp, 'prod3')} pipeline=prodcheck force",
                       r"^prod3: deployment #\d+ forced by"))
    assert ask(tb, BOB, "cancel prod3", "^prod3: ") == (
        f"prod3: deployment #{ident} cancelled while it awaited approval; nothing ran")
    ask(tb, CAROL, "status prod3", rf"^prod3: cancelled by console:bob while deployment #{ident} "
                                   r"awaited approval \(forced by console:alice\); nothing ran$")
    ask(tb, BOB, "approve prod3", "^prod3: no deployment awaits approval$")
    ask(tb, ALICE, "retry prod3", rf"^prod3: deployment #{ident} was forced and never approved, "
                                  "so it never ran; deploy it again with force$")
    ask(tb, BOB, "history prod3", r"^prod3: 1 deployment")
    line = loop.run(bot.expect(rf"^#{ident} "))
    assert "cancelled" in line and "; forced, never approved" in line
    assert line.endswith("; cancelled by console:bob")
    assert steps_run(tb, ident) == []


@pytest.mark.servers
def test_a_lone_force_never_passes_the_production_check(tb: Bot) -> None:
    """A forced deployment nobody approved — as an older jarvis could have left one,
    queued and ownerless — is taken up by the bot and stopped by the production check."""
    loop, bot, _ = tb
    clipboard = {"instance": {"hostname": "prod4", "fqdn": "prod4.example.com",
                              "provider": "local", "production": True},
                 "jarvis": {"deployment": None, "pipeline": "prodcheck", "force": True,
                            "requested_by": ALICE}}
    steps = tuple(Step(name) for name in PIPELINES["prodcheck"]["steps"])
    orphan = loop.run(bot.bot.store.create_deployment(
        hostname="prod4", source="test", pipeline="prodcheck", steps=steps,
        clipboard=clipboard, requester=ALICE))
    line = loop.run(bot.poll("status prod4", r"^prod4: FAILED", timeout=30))
    assert line.startswith("prod4: FAILED at step 2/3 inventory:production_check")
    assert ("force was said but nobody else approved it (approve <host>), and a lone force "
            "never passes") in line, line
    assert steps_run(tb, orphan.id) == ["core:validate", "inventory:production_check"]


@pytest.mark.servers
@pytest.mark.parametrize("approver", [None, "", "console:ops", "CONSOLE:OPS"])
def test_the_check_wants_an_approval_by_another_identity(approver: Any, tmp_path: Path) -> None:
    clip = {"instance": {"hostname": "loki", "fqdn": "loki.example.com", "production": True},
            "jarvis": {"deployment": 7, "pipeline": "redeploy", "force": True,
                       "requested_by": "console:ops", "approved_by": approver}}
    result = run_worker("inventory:production_check", clip, {}, tmp_path)
    assert result.returncode == 1
    assert "and a lone force never passes" in result.stderr


@pytest.mark.servers
def test_an_unapproved_force_expires_and_frees_the_host(quick: Bot) -> None:
    loop, bot, tmp = quick
    path = production(tmp, "prod5")
    ident = number(ask(quick, ALICE, f"deploy {path} pipeline=prodcheck force",
                       r"^prod5: deployment #\d+ forced by"))
    # the lease keeper (every second here) marks it and tells the requester
    loop.run(bot.expect(rf"^prod5: approval of deployment #{ident} expired; nothing ran$",
                        timeout=15))
    ask(quick, CAROL, "status prod5", rf"^prod5: approval expired: deployment #{ident} forced by "
                                      r"console:alice was not approved by .* UTC; nothing ran$")
    ask(quick, BOB, "approve prod5", rf"^prod5: the approval of deployment #{ident} expired; "
                                     "deploy it again with force$")
    ask(quick, ALICE, "retry prod5", rf"^prod5: deployment #{ident} is approval expired; only a "
                                     "failed, cancelled or rolled back one can be retried$")
    ask(quick, BOB, "history prod5", r"^prod5: 1 deployment")
    line = loop.run(bot.expect(rf"^#{ident} "))
    assert " approval expired in " in line and "by console:alice" in line
    assert "; forced, never approved" in line
    assert steps_run(quick, ident) == []
    again = number(ask(quick, ALICE, f"deploy {path} pipeline=prodcheck force",
                       r"^prod5: deployment #\d+ forced by"))
    assert again > ident


@pytest.mark.servers
def test_approving_after_the_window_is_refused_even_before_the_keeper_looks(
        tmp_path: Path) -> None:
    """The window is checked when approve is said, not only when the keeper sweeps
    (a lease of 30s: its keeper looks every 10s)."""
    with bot_in_thread(write_config(tmp_path, window=1, lease=30)) as (loop, bot):
        here = (loop, bot, tmp_path)
        ident = number(ask(here, ALICE, f"deploy {production(tmp_path, 'prod6')} "
                                        "pipeline=prodcheck force", r"^prod6: deployment #\d+"))
        time.sleep(1.5)
        ask(here, CAROL, "status prod6", rf"^prod6: approval expired: deployment #{ident}")
        ask(here, BOB, "approve prod6", rf"^prod6: the approval of deployment #{ident} expired "
                                        r"at .* UTC; deploy it again with force$")
        assert loop.run(bot.bot.store.deployment(ident)).state == State.APPROVAL_EXPIRED
        assert steps_run(here, ident) == []


@pytest.mark.servers
def test_a_waiting_deployment_survives_a_restart_without_running(tmp_path: Path) -> None:
    config = write_config(tmp_path, window=600, lease=3)
    path = production(tmp_path, "prod7")
    with bot_in_thread(config) as (loop, bot):
        ident = number(ask((loop, bot, tmp_path), ALICE,
                           f"deploy {path} pipeline=prodcheck force", r"^prod7: deployment #\d+"))
    with bot_in_thread(config) as (loop, bot):
        here = (loop, bot, tmp_path)
        time.sleep(2.5)  # two turns of the lease keeper, which takes up orphans
        found = loop.run(bot.bot.store.deployment(ident))
        assert found.state == State.AWAITING_APPROVAL and found.owner is None
        assert steps_run(here, ident) == []
        ask(here, CAROL, "status prod7", rf"^prod7: awaiting approval: deployment #{ident}")
        ask(here, BOB, "approve prod7", rf"^prod7: deployment #{ident} approved by console:bob")
        loop.run(bot.expect(r"^prod7: ready in"))


@pytest.mark.servers
def test_a_cluster_is_not_forced_as_a_whole(tb: Bot) -> None:
    _, _, tmp = tb
    path = tmp / "shop.yaml"
    path.write_text(yaml.safe_dump({"cluster": "shop", "hosts": ["web1", "web2"],
                                    "defaults": {"provider": "local",
                                                 "domain": "example.com"}}))
    ask(tb, ALICE, f"deploy {path} pipeline=prodcheck force",
        r"^a cluster is not forced as a whole: one approval would cover hosts nobody looked "
        r"at; deploy each host that needs force alone$")


def test_force_and_approve_are_privileged_console_only_by_default() -> None:
    acl = Acl(config_mod.load(None, export=False).section("acl"))
    irc = Incoming(adapter="irc", identity="alice!a@ops.example.com", text="", reply_to="#ops",
                   room="#ops", nick="alice", account="alice")
    console = Incoming(adapter="console", identity="console:root", text="", reply_to="console")
    assert acl.refusal(parse("deploy x.yaml force"), console) is None
    assert acl.refusal(parse("approve x"), console) is None
    assert acl.refusal(parse("approve x"), irc) == (
        "approve denied for alice!a@ops.example.com: rule acl.approve allows only ['console:*']")
    opened = Acl({"deploy": {"allow": ["account:alice"]}, "force": {"allow": ["account:alice"]},
                  "approve": {"allow": ["*"]}})
    assert opened.refusal(parse("deploy x.yaml force"), irc) is None
    hidden = Incoming(adapter="xmpp", identity="ops@conference.example.com/alice", text="",
                      reply_to="ops@conference.example.com", room="ops@conference.example.com",
                      verified=False, unverified_reason="the room hides real JIDs")
    assert opened.refusal(parse("approve x"), hidden) == (
        "approve refused for ops@conference.example.com/alice: the room hides real JIDs")
    only_deploy = Acl({"deploy": {"allow": ["account:alice"]}})
    assert only_deploy.refusal(parse("deploy x.yaml"), irc) is None
    assert only_deploy.refusal(parse("deploy x.yaml force"), irc) == (   # force keeps its default
        "force denied for alice!a@ops.example.com: rule acl.force allows only ['console:*']")


def test_approval_window_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "jarvis.yaml"
    path.write_text("acl: {approval_window: 0}\n")
    with pytest.raises(ConfigError, match=r"acl\.approval_window is 0; it must be more than 0"):
        config_mod.load(path, export=False)


def test_a_store_built_before_approvals_holds_waiting_hosts_too(tmp_path: Path) -> None:
    """The one-active-per-host index of an older store did not cover 'awaiting
    approval'; opening the store rebuilds it, so a wait holds its host there too."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.execute("CREATE UNIQUE INDEX one_active_per_host ON deployments (hostname) WHERE "
                 "state IN ('queued', 'rolling back', 'running')")
    conn.close()

    async def scenario() -> str:
        store = Store(path)
        await store.open()
        try:
            spec: dict[str, Any] = {"hostname": "h1", "source": "s", "pipeline": "p", "steps": (),
                                    "clipboard": {}, "meta": {"approval": {
                                        "requested_by": ALICE, "until": time.time() + 60}}}
            await store.create_deployment(**spec, state=State.AWAITING_APPROVAL)
            try:
                await store.create_deployment(**spec, owner=Owner.this_process("test"))
            except HostBusy as exc:
                return str(exc)
            return "a second active deployment was accepted"
        finally:
            await store.close()
    assert asyncio.run(scenario()).startswith("h1 is being deployed by #1 (awaiting approval")
