"""The clipboard's YAML limits, validation and redaction, on hostile and seed input."""
from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml

from clipboard import config, document, redact
from clipboard.errors import ClipboardError, ConfigError, DesignError
from clipboard.validate import check_fqdn, check_hostname, normalize_design
from tests.servers.http_gist import ALIAS_BOMB

SEED = (Path(__file__).parent / "data" / "seed.yaml").read_text()


def test_seed_design_is_accepted_as_written() -> None:
    design = normalize_design(document.load(SEED))
    instance = design["instance"]
    assert instance["hostname"] == "loki"
    assert instance["provider"] == "linode"
    assert instance["gitosis-admin"] == "gitosis@example.com:gitosis-admin.git"
    assert document.load(document.dump(design)) == design


def test_keys_and_provider_are_case_insensitive() -> None:
    design = normalize_design({"Instance": {"HostName": "Loki", "Provider": "EC2"}})
    assert design["instance"] == {"hostname": "loki", "provider": "ec2"}


@pytest.mark.parametrize("text, message", [
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("", "must be a YAML mapping at the top level, not empty"),
    ("!!python/object/apply:os.system ['touch /tmp/pwned']\n", "tag that is not allowed"),
    ("a: !!python/name:os.system\n", "tag that is not allowed"),
    ("a: [unclosed\n", "not valid YAML"),
    ("a: 1\n---\nb: 2\n", "not valid YAML"),
    (ALIAS_BOMB, "expands to more than"),
    ("a: &x [*x]\n", "expands to more than"),
])
def test_hostile_documents_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ClipboardError, match=message):
        document.load(text, max_nodes=10_000)


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(ClipboardError, match="over the limit of 1024 bytes"):
        document.load("a: " + "x" * 2000, max_bytes=1024)


@pytest.mark.parametrize("name", ["lo ki", "loki;rm", "../etc", "loki/x", "$(id)", "-loki",
                                  "loki-", "a" * 64, "", "lo`ki`", "loki.websages"])
def test_bad_hostnames_are_refused(name: str) -> None:
    with pytest.raises(DesignError):
        check_hostname(name)


def test_fqdn_must_be_labels_starting_with_the_hostname() -> None:
    assert check_fqdn("Loki.Websages.com.", "loki") == "loki.websages.com"
    with pytest.raises(DesignError, match="does not start with the hostname"):
        check_fqdn("thor.websages.com", "loki")
    with pytest.raises(DesignError, match="forbidden characters"):
        check_fqdn("loki.web sages.com", "loki")


def test_design_without_instance_or_hostname_is_refused() -> None:
    with pytest.raises(DesignError, match="no 'instance:'"):
        normalize_design({"hostname": "loki"})
    with pytest.raises(DesignError, match="hostname is missing"):
        normalize_design({"instance": {"fqdn": "loki.example.com"}})


def test_redaction_masks_secret_keys_at_any_depth_and_scrubs_text() -> None:
    clip = {"instance": {"hostname": "loki", "root_password": "hunter2hunter2"},
            "deploy_key": {"public_key": "ssh-ed25519 AAAA", "private_key": "-----BEGIN X-----\nabcdefgh\n"},
            "dns": {"tsig_secret": "c2VjcmV0c2VjcmV0"}, "list": [{"api_token": "tok-123456"}]}
    shown = redact.redact(clip)
    assert shown["instance"] == {"hostname": "loki", "root_password": "***"}
    assert shown["deploy_key"]["private_key"] == "***"
    assert shown["deploy_key"]["public_key"] == "ssh-ed25519 AAAA"
    assert shown["dns"]["tsig_secret"] == "***"
    assert shown["list"][0]["api_token"] == "***"
    assert clip["instance"]["root_password"] == "hunter2hunter2"
    secrets = redact.secret_values(clip)
    text = redact.scrub("login with hunter2hunter2 and key abcdefgh and tok-123456", secrets)
    assert "hunter2" not in text and "abcdefgh" not in text and "tok-123456" not in text


def test_python_workers_are_handed_json_only_when_it_says_the_clipboard_exactly() -> None:
    plain = {"instance": {"hostname": "loki", "size": 2, "ratio": 1e16, "tags": ["a", None]},
             "note": "päivää\nline two", "broken": "a lone surrogate \ud800 from somewhere"}
    handed = document.dump_json(plain)
    assert handed is not None and handed.isascii()
    assert document.load_handed(handed.encode()) == plain
    for inexact in ({"when": datetime.date(2011, 4, 19)}, {"blob": b"\x00"}, {1: "one"},
                    {"nested": [{"ok": True}, {2: "two"}]}):
        assert document.dump_json(inexact) is None, inexact
        assert document.load_handed(document.dump(inexact).encode()) == inexact


def test_a_celery_worker_counts_a_handed_clipboard_against_the_configured_limit() -> None:
    """The configured ``clipboard.max_nodes``, not the default, on the JSON and the YAML
    path alike (a site may raise it: a YAML clipboard must not meet the default)."""
    seven = {"instance": {"hostname": "loki"}, "notes": {"n": [1, 2]}}  # nodes, root included
    for text in (document.dump_json(seven), document.dump(seven)):
        assert text is not None
        assert document.load_handed(text, max_nodes=7) == seven
        with pytest.raises(ClipboardError, match="^the clipboard expands to more than 6 nodes"):
            document.load_handed(text, max_nodes=6, what="the clipboard")
    wide = document.dump({"n": list(range(document.DEFAULT_MAX_NODES + 1))})
    assert len(document.load_handed(wide, max_bytes=10 ** 7,
                                    max_nodes=2 * document.DEFAULT_MAX_NODES)["n"]) == \
        document.DEFAULT_MAX_NODES + 1


def test_a_worker_reads_yaml_too_flow_style_included() -> None:
    assert document.load_handed(b"{a: 1, b: [x, y]}") == {"a": 1, "b": ["x", "y"]}
    assert document.load_handed("instance:\n  hostname: loki\n") == {"instance": {"hostname": "loki"}}
    with pytest.raises(ClipboardError, match="must be a YAML mapping"):
        document.load_handed(b"[1, 2]")


@pytest.mark.parametrize("text, message", [
    ("instance:\n  hostname: loki\n  hostname: thor\n",
     "design has the key 'hostname' twice (lines 2 and 3)"),
    ("instance: {hostname: loki}\nnotes: 1\ninstance: {hostname: thor}\n",
     "design has the key 'instance' twice (lines 1 and 3)"),
    ("instance: {hostname: loki, hostname: thor}\n",
     "design has the key 'hostname' twice (line 1)"),
    ("hosts:\n  - name: a\n    count: 1\n    count: 2\n",
     "design has the key 'count' twice (lines 3 and 4)"),
    ("? [a, b]\n: 1\n", "design is not valid YAML: found unhashable key"),
])
def test_a_key_written_twice_is_refused_naming_it_and_its_lines(text: str, message: str) -> None:
    with pytest.raises(ClipboardError) as caught:
        document.load(text, what="design")
    assert str(caught.value) == message


def test_equal_keys_in_different_mappings_and_merge_overrides_are_fine() -> None:
    text = ("base: &base {size: 512, image: debian}\n"
            "hosts:\n  - {name: a, size: 1}\n  - {name: b, size: 2}\n"
            "instance:\n  <<: *base\n  size: 1024\n  hostname: loki\n")
    loaded = document.load(text)
    assert loaded["instance"] == {"size": 1024, "image": "debian", "hostname": "loki"}
    assert [h["size"] for h in loaded["hosts"]] == [1, 2]


def test_the_strict_loader_is_still_libyaml() -> None:
    assert issubclass(document.StrictLoader, yaml.CSafeLoader)


def test_a_configuration_file_is_as_strict(tmp_path: Path) -> None:
    path = tmp_path / "jarvis.yaml"
    path.write_text("runner:\n  step_timeout: 5\nstore: {}\nrunner:\n  kill_grace: 1\n")
    with pytest.raises(ConfigError) as caught:
        config.read_file(path)
    assert str(caught.value) == f"{path} has the key 'runner' twice (lines 1 and 4)"
