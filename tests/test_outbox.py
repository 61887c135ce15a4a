"""Splitting, the token bucket and the held, ordered queue both chat adapters use."""
from __future__ import annotations

import asyncio

import pytest

from bot.outbox import Outbox, TokenBucket, pack_lines, setting_secret, split_text
from clipboard.errors import ConfigError


def test_split_never_breaks_a_character_and_respects_the_limit() -> None:
    text = "ab" + "é🚀ü" * 50
    for limit in range(4, 40):
        pieces = split_text(text, limit)
        assert "".join(pieces) == text
        assert all(len(piece.encode()) <= limit for piece in pieces)


def test_split_prefers_spaces_and_drops_empty_lines() -> None:
    text = "alpha beta gamma delta epsilon\n\n  \nzeta"
    assert split_text(text, 12) == ["alpha beta", "gamma delta", "epsilon", "zeta"]
    assert split_text("x\0y\r\nz", 10) == ["xy", "z"]


def test_pack_lines_joins_up_to_the_limit() -> None:
    assert pack_lines(["aaa", "bbb", "ccc", "dddddd"], 7) == ["aaa\nbbb", "ccc", "dddddd"]


def test_token_bucket_burst_then_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        assert bucket.delay() == 0
        bucket.take()
    assert bucket.delay() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.delay() == 0
    with pytest.raises(ConfigError, match="rate > 0"):
        TokenBucket(rate=0, burst=1)


def test_outbox_holds_lines_while_offline_and_delivers_in_order_after() -> None:
    async def scenario() -> None:
        sent: list[tuple[str, str]] = []
        fail = [True]

        def transmit(target: str, line: str) -> None:
            if fail[0]:
                raise ConnectionError("gone")
            sent.append((target, line))

        box = Outbox("test", transmit, rate=1000, burst=1000)
        box.start()
        box.online()
        box.put("#ops", ["one", "two"])
        await asyncio.sleep(0.05)
        assert sent == [] and box.pending == 2       # the failed line was kept
        box.put("#ops", ["three"])
        fail[0] = False
        box.online()
        await asyncio.sleep(0.05)
        assert [line for _, line in sent] == ["one", "two", "three"]
        await box.stop()
    asyncio.run(scenario())


def test_lines_sent_back_to_back_are_bracketed_as_one_burst() -> None:
    """The IRC adapter corks its socket for a burst, so an answer of several lines
    leaves in one segment; a line the rate limit holds starts a burst of its own."""
    async def scenario() -> None:
        events: list[str] = []
        box = Outbox("test", lambda t, line: events.append(line), rate=20, burst=2,
                     bursting=lambda on: events.append("(" if on else ")"))
        box.start()
        box.online()
        box.put("#ops", ["status", "steps", "third"])
        await asyncio.sleep(0.2)
        assert events == ["(", "status", "steps", ")", "(", "third", ")"]
        await box.stop()
    asyncio.run(scenario())


def test_outbox_targets_take_turns_and_held_targets_wait() -> None:
    async def scenario() -> None:
        sent: list[tuple[str, str]] = []
        joined: set[str] = set()
        box = Outbox("test", lambda t, line: sent.append((t, line)), rate=1000, burst=1000,
                     ready=lambda t: not t.startswith("#") or t in joined)
        box.put("#ops", [f"p{i}" for i in range(3)])
        box.put("bob", ["b0", "b1"])
        box.start()
        box.online()
        await asyncio.sleep(0.05)
        assert sent == [("bob", "b0"), ("bob", "b1")]
        joined.add("#ops")
        box.wake()
        await asyncio.sleep(0.05)
        assert [line for _, line in sent[2:]] == ["p0", "p1", "p2"]
        sent.clear()
        box.put("#ops", ["x0", "x1", "x2"])
        box.put("bob", ["y0"])
        await asyncio.sleep(0.05)
        assert sent[:3] == [("#ops", "x0"), ("bob", "y0"), ("#ops", "x1")]
        await box.stop()
    asyncio.run(scenario())


def test_outbox_limit_drops_oldest() -> None:
    box = Outbox("test", lambda t, line: None, rate=1, burst=1, limit=3)
    box.put("#ops", ["a", "b", "c", "d", "e"])
    assert box.pending == 3 and box.dropped == 2


def test_setting_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    assert setting_secret({"password": "x"}, "password", "chat.xmpp") == "x"
    assert setting_secret({}, "password", "chat.xmpp") is None
    monkeypatch.setenv("JARVIS_T_PW", "fromenv")
    assert setting_secret({"password_env": "JARVIS_T_PW"}, "password", "chat.xmpp") == "fromenv"
    monkeypatch.delenv("JARVIS_T_PW")
    with pytest.raises(ConfigError, match="chat.xmpp.password_env names the environment variable JARVIS_T_PW"):
        setting_secret({"password_env": "JARVIS_T_PW"}, "password", "chat.xmpp")
