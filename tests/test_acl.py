"""ACL rules over identity strings, with the embedded defaults and user rules."""
from __future__ import annotations

from pathlib import Path

from bot.acl import Acl, spoofable_grants
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


def test_only_star_and_question_mark_are_wildcards() -> None:
    """IRC nicks may hold ``[]\\^{}|``; fnmatch read ``bob[away]`` as "bob, then one of a w y"."""
    acl = Acl({"lock": {"allow": ["bob[away]!*@*", "z\\^{x}|!*@*", "c?rol!*@*.example.com"]}})
    assert acl.denial("lock", irc("bob[away]!b@h")) is None
    assert acl.denial("lock", irc("BOB[AWAY]!b@h")) is None           # still case-insensitive
    for nick in ["boba", "bobw", "boby", "bob[away]x"]:
        assert acl.denial("lock", irc(f"{nick}!b@h")) is not None, nick
    assert acl.denial("lock", irc("z\\^{x}|!u@h")) is None
    assert acl.denial("lock", irc("z^{x}|!u@h")) is not None
    assert acl.denial("lock", irc("carol!c@h.example.com")) is None
    assert acl.denial("lock", irc("cxrol!c@h.example.com")) is None
    assert acl.denial("lock", irc("caarol!c@h.example.com")) is not None
    assert Acl({"lock": {"allow": ["[!a]*"]}}).denial("lock", irc("bob!b@h")) is not None


def test_account_patterns_match_only_the_vouched_account() -> None:
    acl = Acl({"lock": {"allow": ["account:alice"]}, "unlock": {"allow": ["account:*"]}})
    assert acl.denial("lock", irc("mallory!m@h", account="alice")) is None
    assert acl.denial("lock", irc("alice!a@h")) is not None             # the nick is nothing
    assert acl.denial("lock", irc("alice!a@h", account="alice2")) is not None
    assert acl.denial("unlock", irc("alice!a@h")) is not None           # no account at all
    assert acl.denial("unlock", irc("x!y@h", account="anyone")) is None
    assert acl.denial("lock", Incoming(adapter="test", identity="account:alice", text="",
                                       reply_to="me")) is not None      # an identity that looks like one


def test_spoofable_grants_name_nick_and_user_patterns_of_privileged_commands() -> None:
    warnings = spoofable_grants({
        "deploy": {"allow": ["alice!*@*", "*!~carol@*", "account:alice", "*!*@ops.example.com"]},
        "lock": {"allow": ["irc:dave*"]},
        "approve": {"allow": "erin!*@*"},
        "unlock": {"allow": ["*!*@*", "console:*", "xmpp:*@example.com", "bob@example.com"]},
        "status": {"allow": ["alice!*@*"]},                            # read-only: not warned
        "*": {"allow": ["alice!*@*"]},
    })
    assert [w.split(" grants ")[0] for w in warnings] == [
        "acl.deploy.allow 'alice!*@*'", "acl.deploy.allow '*!~carol@*'", "acl.lock.allow 'irc:dave*'",
        "acl.approve.allow 'erin!*@*'"]
    assert warnings[0] == (
        "acl.deploy.allow 'alice!*@*' grants deploy by IRC nick/user name, which any client may take "
        "(only the host is set by the server); use 'account:<name>', the services account the server "
        "verifies, or narrow the host")
    assert spoofable_grants(load(None, export=False).section("acl")) == []   # the defaults are safe
