"""The command grammar (``bot.grammar``): addressing, and splitting a line into a
command, its arguments, ``key=value`` options and flags. Pure functions: fast tier."""
from __future__ import annotations

import pytest

from bot.grammar import GrammarError, parse, strip_address


@pytest.mark.parametrize("line", ["jarvis: status web1", "Jarvis, status web1",
                                  "@jarvis: status web1", "  JARVIS :status web1"])
def test_a_line_addressed_to_the_bot_is_taken(line: str) -> None:
    assert strip_address(line, "jarvis", private=False) == "status web1"


def test_a_line_in_a_room_not_addressed_is_ignored() -> None:
    assert strip_address("status web1", "jarvis", private=False) is None
    assert strip_address("jarvisbot: status web1", "jarvis", private=False) is None


def test_a_private_line_needs_no_address() -> None:
    assert strip_address("  status web1 ", "jarvis", private=True) == "status web1"


def test_words_split_into_args_options_and_flags() -> None:
    command = parse("deploy gist:abc pipeline=quick force --dry-run")
    assert command.name == "deploy" and command.args == ["gist:abc"]
    assert command.options == {"pipeline": "quick"}
    assert command.flags == {"force", "dry-run"}


def test_the_command_and_option_keys_are_case_insensitive() -> None:
    command = parse("STATUS Role=web cluster=Shop")
    assert command.name == "status"
    assert command.options == {"role": "web", "cluster": "Shop"}


def test_an_ldap_dn_and_a_url_stay_arguments() -> None:
    assert parse("deploy cn=web1,ou=hosts").args == ["cn=web1,ou=hosts"]
    assert parse("deploy https://h.example/d.yaml?x=1").args == ["https://h.example/d.yaml?x=1"]


def test_quotes_group_words() -> None:
    assert parse("deploy 'my design.yaml'").args == ["my design.yaml"]


def test_an_unbalanced_quote_is_one_line() -> None:
    with pytest.raises(GrammarError, match="cannot parse the line"):
        parse("deploy 'web1")


def test_an_unknown_command_names_the_known_ones() -> None:
    with pytest.raises(GrammarError, match=r"unknown command 'frobnicate'; commands: deploy"):
        parse("frobnicate web1")


def test_an_empty_line_asks_for_a_command() -> None:
    with pytest.raises(GrammarError, match="say a command; try: help"):
        parse("   ")


def test_a_lock_reason_is_free_text_kept_as_said() -> None:
    command = parse("lock web1 don't touch: force=off until Monday")
    assert command.name == "lock" and command.args == ["web1"]
    assert command.text == "don't touch: force=off until Monday"
    assert command.flags == set() and command.options == {}


def test_a_lock_without_a_reason_has_empty_text() -> None:
    command = parse("LOCK web1")
    assert command.name == "lock" and command.args == ["web1"] and command.text == ""
