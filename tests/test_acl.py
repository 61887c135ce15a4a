"""ACL rules over identity strings, with the embedded defaults and user rules."""
from __future__ import annotations

from pathlib import Path

from bot.acl import Acl
from bot.adapter import Incoming
from clipboard.config import load


def irc(identity: str = "alice!a@ops.example.com", room: str | None = "#ops",
        account: str | None = None) -> Incoming:
    return Incoming(adapter="irc", identity=identity, text="", reply_to=room or "alice", room=room,
                    nick=identity.split("!")[0], account=account)


def xmpp(jid: str = "bob@example.com", room: str | None = None) -> Incoming:
    return Incoming(adapter="xmpp", identity=jid, text="", reply_to=room or jid, room=room)


CONSOLE = Incoming(adapter="console", identity="console:root", text="", reply_to="console")


def defaults_acl() -> Acl:
    return Acl(load(None, export=False).section("acl"))


def test_defaults_read_for_everyone_changes_for_the_console_only() -> None:
    acl = defaults_acl()
    for command in ["status", "history", "help", "pipelines", "workers", "clipboard"]:
        assert acl.denial(command, irc()) is None
        assert acl.denial(command, xmpp()) is None
    for command in ["deploy", "cancel", "retry"]:
        assert acl.denial(command, CONSOLE) is None
        reason = acl.denial(command, irc())
        assert reason == (f"{command} denied for alice!a@ops.example.com: "
                          f"rule acl.{command} allows only ['console:*']")


def test_unknown_command_is_closed() -> None:
    assert defaults_acl().denial("destroy", CONSOLE) == (
        "destroy denied for console:root: no rule acl.destroy (add one to allow it)")


def test_configured_rules_allow_deny_rooms_accounts(tmp_path: Path) -> None:
    path = tmp_path / "jarvis.yaml"
    path.write_text("""
acl:
  deploy:
    allow: ["*!*@ops.example.com", "account:carol", "xmpp:*@example.com"]
    deny: ["mallory!*@*"]
    rooms: ["#ops", "ops@conference.example.com", "private"]
  status:
    deny: ["*!*@spam.example.net"]
""")
    acl = Acl(load(path, export=False).section("acl"))
    assert acl.denial("deploy", irc()) is None
    assert acl.denial("DEPLOY", irc("Alice!A@OPS.Example.com")) is None          # case-insensitive
    assert acl.denial("deploy", irc(room=None)) is None                           # private counts as "private"
    assert acl.denial("deploy", irc(room="#random")) == (
        "deploy denied in #random: rule acl.deploy allows it only in "
        "['#ops', 'ops@conference.example.com', 'private']")
    assert acl.denial("deploy", irc("mallory!m@ops.example.com")) == (
        "deploy denied for mallory!m@ops.example.com: rule acl.deploy.deny matches 'mallory!*@*'")
    assert acl.denial("deploy", irc("carol!c@home.net", account="carol")) is None
    assert acl.denial("deploy", irc("carol!c@home.net")) is not None
    assert acl.denial("deploy", xmpp("bob@example.com", room="ops@conference.example.com")) is None
    assert acl.denial("deploy", xmpp("bob@evil.org")) is not None
    assert acl.denial("deploy", CONSOLE) is not None   # the user's allow list replaced the default
    assert acl.denial("status", irc()) is None        # defaults kept where not overridden
    assert "acl.status.deny" in acl.denial("status", irc("x!y@spam.example.net"))
