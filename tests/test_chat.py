"""The whole bot on IRC and Jabber at once: real ngircd, real prosody, real clients
as the people, the real core, runner, worker processes and store behind them."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from bot.app import Jarvis
from clipboard import config as config_mod
from tests.aio import run_within
from tests.servers.ngircd import CHANNEL, IrcClient, Ircd, IrcdFactory
from tests.servers.prosody import MUC, Prosody, ProsodyFactory, XmppClient

WORKERS = Path(__file__).parent / "workers"
_ids = itertools.count()


def design(tmp: Path, hostname: str, sleep: float) -> Path:
    path = tmp / f"{hostname}.yaml"
    path.write_text(yaml.safe_dump({"instance": {"hostname": hostname, "fqdn": f"{hostname}.example.com",
                                                 "provider": "local"}, "notes": {"sleep": sleep}}))
    return path


def write_config(tmp: Path, chat: dict[str, Any], **extra: Any) -> Path:
    data: dict[str, Any] = {
        "chat": {"console": {"enabled": False}, **chat},
        "store": {"path": str(tmp / "jarvis.db")},
        "runner": {"worker_dirs": [str(WORKERS)], "kill_grace": 0.5},
        "pipelines": {"slow": {"steps": ["core:validate", "shellworker:sleepy", "core:randpass"]}},
        "acl": {"deploy": {"allow": ["alice!*@*"]}},
        "sources": {"file": {"roots": [str(tmp)]}},  # chat reads design files only below roots
    }
    data.update(extra)
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.asynccontextmanager
async def running(path: Path) -> AsyncIterator[Jarvis]:
    async with Jarvis(config_mod.load(path), role="jarvis test", drive=True,
                      adopt=True) as jarvis:
        async with asyncio.timeout(15):
            for adapter in jarvis.bot.adapters.values():
                await adapter.connected.wait()                          # type: ignore[attr-defined]
                while not all(r.lower() in adapter.joined             # type: ignore[attr-defined]
                              for r in getattr(adapter, "channels", getattr(adapter, "rooms", []))):
                    await asyncio.sleep(0.02)
        yield jarvis


def xmpp_account(server: Prosody, user: str) -> tuple[str, str]:
    name = f"{user}{next(_ids)}"
    return server.register(name, "pw-" + name), "pw-" + name


def test_deploy_from_irc_status_from_jabber_completion_in_irc(ngircd: Ircd, prosody: Prosody,
                                                              tmp_path: Path) -> None:
    bot_jid, bot_pw = xmpp_account(prosody, "jarvis")
    bob_jid, bob_pw = xmpp_account(prosody, "bob")
    room = f"e2e{next(_ids)}@{MUC}"
    path = write_config(tmp_path, {"irc": ngircd.irc_settings(rate=20.0, burst=20),
                                   "xmpp": prosody.xmpp_settings(bot_jid, bot_pw, rooms=[room])})
    loki = design(tmp_path, "loki", sleep=4)

    async def scenario() -> None:
        async with running(path):
            alice = await IrcClient(ngircd, "alice").connect(CHANNEL)
            bob = await XmppClient(prosody, bob_jid, bob_pw).connect()
            await bob.join(room, "bob")
            try:
                alice.say(CHANNEL, f"jarvis: deploy {loki} pipeline=slow")
                started = await alice.expect("loki: deployment #")
                assert re.match(r"^alice: loki: deployment #\d+ started: pipeline slow, 3 steps$",
                                started.text), started
                await asyncio.sleep(1)
                bob.groupchat(room, "jarvis: status loki")
                live = await bob.expect(lambda h: h.sender == f"{room}/jarvis")
                assert re.match(r"^bob: loki: running step 2/3 shellworker:sleepy", live.text), live
                done = await alice.expect("ready in", timeout=30)
                assert re.match(r"^alice: loki: ready in \S+ \(3 steps\)$", done.text), done
                bob.chat(bot_jid, "history loki")         # one message, lines packed together
                history = await bob.expect(lambda h: h.kind == "chat" and "deployment" in h.text)
                first, second = history.text.split("\n")
                assert first == "loki: 1 deployment(s), newest first, page 1 of 1"
                assert " ready in " in second and " by alice!~alice@127.0.0.1 " in second
            finally:
                alice.close()
                await bob.close()
    run_within(scenario, timeout=90)


def test_acl_denial_names_the_rule_and_nothing_runs(ngircd: Ircd, tmp_path: Path) -> None:
    path = write_config(tmp_path, {"irc": ngircd.irc_settings(rate=20.0, burst=20)})
    thor = design(tmp_path, "thor", sleep=0)

    async def scenario() -> None:
        async with running(path) as bot:
            mallory = await IrcClient(ngircd, "mallory").connect(CHANNEL)
            try:
                mallory.say(CHANNEL, f"jarvis: deploy {thor}")
                denied = await mallory.expect("denied")
                assert denied.text == ("mallory: deploy denied for mallory!~mallory@127.0.0.1: "
                                       "rule acl.deploy allows only ['alice!*@*']")
                mallory.say(CHANNEL, "jarvis: status thor")
                assert (await mallory.expect("thor")).text == "mallory: thor: never deployed"
                assert await bot.store.latest("thor") is None
            finally:
                mallory.close()
    run_within(scenario, timeout=90)


def test_chat_servers_die_mid_deployment_and_the_completion_still_arrives(
        ngircd_factory: IrcdFactory, prosody_factory: ProsodyFactory, tmp_path: Path) -> None:
    ircd = ngircd_factory()
    xmpp_server = prosody_factory()
    bot_jid, bot_pw = xmpp_account(xmpp_server, "jarvis")
    bob_jid, bob_pw = xmpp_account(xmpp_server, "bob")
    room = f"ops@{MUC}"
    path = write_config(tmp_path, {
        "irc": ircd.irc_settings(rate=20.0, burst=20, reconnect_min_delay=1.0, reconnect_max_delay=2.0),
        "xmpp": xmpp_server.xmpp_settings(bot_jid, bot_pw, rooms=[room], reconnect_min_delay=1.0,
                                          reconnect_max_delay=2.0)},
        acl={"deploy": {"allow": ["alice!*@*", f"xmpp:{bob_jid}"]}})
    loki = design(tmp_path, "loki", sleep=6)
    odin = design(tmp_path, "odin", sleep=6)

    async def scenario() -> None:
        async with running(path) as bot:
            alice = await IrcClient(ircd, "alice").connect(CHANNEL)
            bob = await XmppClient(xmpp_server, bob_jid, bob_pw).connect()
            await bob.join(room, "bob")
            try:
                alice.say(CHANNEL, f"jarvis: deploy {loki} pipeline=slow")
                await alice.expect("loki: deployment #")
                bob.groupchat(room, f"jarvis: deploy {odin} pipeline=slow")
                await bob.expect("odin: deployment #")
                await bob.close()
                ircd.kill()
                xmpp_server.kill()
                await asyncio.sleep(2)
                ircd.start()
                xmpp_server.start()
                restarted = time.monotonic()
                alice = await IrcClient(ircd, "alice").connect(CHANNEL)
                bob = await XmppClient(xmpp_server, bob_jid, bob_pw).connect()
                await bob.join(room, "bob")
                done = await alice.expect("loki: ready in", timeout=30)
                assert done.text.startswith("alice: loki: ready in")
                done = await bob.expect("odin: ready in", timeout=30)
                assert done.text.startswith("bob: odin: ready in")
                assert time.monotonic() - restarted < 30
                for host in ("loki", "odin"):
                    deployment = await bot.store.latest(host)
                    assert deployment is not None and deployment.state == "ready"
            finally:
                alice.close()
                await bob.close()
    run_within(scenario, timeout=120)


def test_200_progress_lines_paced_and_answers_still_prompt(ngircd_factory: IrcdFactory,
                                                          tmp_path: Path) -> None:
    """ngircd with default penalties; a verbose pipeline of 200 steps floods the channel.
    ngircd works through a client's input at about 3 lines a second (measured), so
    the limiter paces the bot below that; the server's input buffer stays empty and
    bob's private `status` is answered at once instead of after a minute behind the
    backlog. (Pacing 200 lines this way takes 80 s; a faster rate is what fails.)"""
    ircd = ngircd_factory(penalties=True)
    steps = ["core:validate"] + ["shellworker:echo"] * 199
    path = write_config(tmp_path, {"irc": ircd.irc_settings(rate=2.5, burst=3)},
                        bot={"name": "jarvis", "verbose": True},
                        pipelines={"long": {"steps": steps}})
    freya = design(tmp_path, "freya", sleep=0)

    async def scenario() -> None:
        async with running(path) as bot:
            alice = await IrcClient(ircd, "alice").connect(CHANNEL)
            bob = await IrcClient(ircd, "bob").connect()
            try:
                alice.say(CHANNEL, f"jarvis: deploy {freya} pipeline=long")
                await alice.expect("freya: deployment #")
                await asyncio.sleep(5)
                asked = time.monotonic()
                bob.say("jarvis", "status freya")
                answer = await bob.expect("freya", timeout=5)
                assert time.monotonic() - asked < 3, answer
                seen = []
                while True:
                    said = await alice.expect(timeout=15)
                    seen.append(said.text)
                    if "ready in" in said.text:
                        break
                numbers = [int(m.group(1)) for line in seen
                           if (m := re.match(r"^alice: freya: step (\d+)/200 ", line))]
                assert numbers == list(range(1, 201))
                irc = bot.adapter("irc")
                assert irc.reconnects == 0 and irc.connected.is_set()  # type: ignore[attr-defined]
            finally:
                alice.close()
                bob.close()
    run_within(scenario, timeout=150)
