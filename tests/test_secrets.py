"""Secrets never leave: not to chat, the store's step logs, ``status``/``history``/
``clipboard`` answers, the command line's output, or the logs.

The end-to-end tests drive a real bot (fork server, worker processes, SQLite) and the
real ``jarvis`` command through a worker that does what an attacker reported: it
prints part of the clipboard (so the clipboard it hands back holds no password), then
echoes the root password, the password cut by a character, a URL with a token and the
configured configuration-management command to stderr, and fails.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.testing import TestBot
from clipboard import config as config_mod
from clipboard import redact
from clipboard.redact import MASK, Scrubber, is_secret_key
from tests.aio import LoopThread, bot_in_thread
from tests.servers.local_node import LocalNode

ROOT = Path(__file__).resolve().parents[1]
URL_TOKEN = "Tk9x_qWertyUiop77"
REPO = f"https://deploy:{URL_TOKEN}@git.example.com/site.git"
VAULT = "S3cretVaultPass99"
CM_TOKEN = "cmTOKENabcdef123"
CM_COMMAND = f"ansible-pull -U https://deploy:{CM_TOKEN}@git.example/site.git --vault-id={VAULT}"
DB_PWD = "hunter2hunter2"
API_KEY = "ak-guess-1234"

# leaker:partial prints the instance's hostname alone (a partial mapping), then leaks;
# it also keeps the password it saw on the host and echoes it again when retried (when
# the clipboard it is given, the partial one, holds no password any more).
LEAKER = r"""#!/bin/sh
case "$1" in
  partial)
    clip=$(cat)
    pw=$(printf '%s\n' "$clip" | sed -n 's/^  root_password: //p' | tr -d "'\"")
    repo=$(printf '%s\n' "$clip" | sed -n 's/^  repo: //p' | tr -d "'\"")
    host=$(printf '%s\n' "$clip" | sed -n 's/^  hostname: //p')
    marks=$JARVIS_TEST_MARKS
    [ -n "$pw" ] && printf '%s' "$pw" > "$marks/pw-$host"
    printf 'instance:\n  hostname: %s\n' "$host"
    echo "login as root:$pw refused" >&2
    echo "fetch $repo failed" >&2
    echo "ran: $JARVIS_TEST_CM" >&2
    echo "remembered: $(cat "$marks/pw-$host")" >&2
    echo "last try: ${pw%?}" >&2
    exit 1 ;;
esac
"""


def write_config(tmp: Path) -> Path:
    workers = tmp / "workers"
    workers.mkdir()
    leaker = workers / "leaker"
    leaker.write_text(LEAKER)
    leaker.chmod(0o755)
    data = {
        "store": {"path": str(tmp / "jarvis.db")},
        "runner": {"worker_dirs": [str(workers)], "kill_grace": 0.5},
        "designs": {"instance_fields": ["api-key", "db_pwd"]},
        "configmgmt": {"command_env": "JARVIS_TEST_CM"},
        "pipelines": {"leaky": {"steps": ["core:validate", "core:randpass",
                                          "leaker:partial"]}},
    }
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def write_design(tmp: Path, hostname: str) -> Path:
    path = tmp / f"{hostname}.yaml"
    path.write_text(yaml.safe_dump({
        "instance": {"hostname": hostname, "fqdn": f"{hostname}.example.com",
                     "provider": "local", "db_pwd": DB_PWD, "api-key": API_KEY},
        "notes": {"repo": REPO, "credentials": {"key": "credkey-0123456789"},
                  "motd": f"the vault is {VAULT}"}}))  # a configured secret, innocent name
    return path


def leaked(text: str, password: str) -> list[str]:
    """Which secrets (or a cut-down password) appear in ``text``."""
    shown = [s for s in (password, password[:-1], password[1:], URL_TOKEN, CM_TOKEN, VAULT,
                         DB_PWD, "credkey-0123456789") if s in text]
    return shown


def stored_step_text(db: Path) -> str:
    """Every step's stored stderr tail and error, and every deployment's error, raw."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT stderr_tail, error FROM steps").fetchall()
        rows += conn.execute("SELECT error, meta FROM deployments").fetchall()
    return "\n".join(str(cell) for row in rows for cell in row)


def root_password(loop: LoopThread, bot: TestBot, hostname: str) -> str:
    store = bot.bot.store
    deployment = loop.run(store.latest(hostname))
    versions = loop.run(store.clipboards(deployment.id))
    passwords = [v["instance"]["root_password"] for v in versions
                 if v.get("instance", {}).get("root_password")]
    assert passwords and len(passwords[-1]) >= 24
    assert "root_password" not in versions[-1]["instance"], "the step printed a partial mapping"
    return passwords[-1]


@pytest.mark.servers
def test_a_failing_step_that_prints_part_of_the_clipboard_leaks_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JARVIS_TEST_CM", CM_COMMAND)
    monkeypatch.setenv("JARVIS_TEST_MARKS", str(tmp_path))
    caplog.set_level(logging.INFO)
    config = config_mod.load(write_config(tmp_path))
    path = write_design(tmp_path, "leak1")
    with bot_in_thread(config) as (loop, bot):
        loop.run(bot.ask(f"deploy {path} pipeline=leaky", r"^leak1: deployment #\d+ started"))
        failed = loop.run(bot.expect(r"^leak1: FAILED at step 3/3 leaker:partial"))
        assert failed.endswith(f"last try: {MASK} (exit status 1)"), failed
        for question, last in (("status leak1", r"^steps: "), ("history leak1", r"^#\d+ "),
                               ("clipboard leak1 0", r"api-key: "),
                               ("clipboard leak1 2", r"root_password: ")):
            loop.run(bot.say(question))
            loop.run(bot.lines_until(last))
        # retried from step 3: this drive's clipboard never held the password, the
        # stored versions of the deployment did
        loop.run(bot.ask("retry leak1", r"^leak1: retrying deployment #\d+ from step 3"))
        loop.run(bot.expect(r"^leak1: FAILED at step 3/3 leaker:partial"))
        loop.run(bot.ask("pipelines", r"^leaky: "))  # every earlier answer is read by now
        # a record logged by a jarvis module while the bot runs passes the filter jarvis
        # put on the handlers (here pytest's): URL credentials and configured secrets go
        logging.getLogger("clipboard.drive").warning("would rerun %s", CM_COMMAND)
        password = root_password(loop, bot, "leak1")
        steps = loop.run(bot.bot.store.steps(loop.run(bot.bot.store.latest("leak1")).id))
    chat = "\n".join(bot.seen)
    assert leaked(chat, password) == [], chat
    assert f"repo: https://deploy:{MASK}@git.example.com/site.git" in chat  # clipboard 0
    assert "db_pwd: '***'" in chat and "credentials:" in chat
    assert f"motd: the vault is {MASK}" in chat
    stored = stored_step_text(tmp_path / "jarvis.db")
    assert leaked(stored, password) == [], stored
    assert [s.attempt for s in steps if s.name == "leaker:partial"] == [1, 2]
    assert f"remembered: {MASK}" in steps[-1].stderr_tail
    tail = steps[-2].stderr_tail
    assert f"login as root:{MASK} refused" in tail
    assert f"fetch https://deploy:{MASK}@git.example.com/site.git failed" in tail
    assert f"last try: {MASK}" in tail
    assert any(line.startswith("ran: ansible-pull -U https://deploy:***@") for line in tail)
    logs = caplog.text
    assert "leaker:partial" in logs and "would rerun ansible-pull" in logs
    assert leaked(logs, password) == [], logs


@pytest.mark.servers
def test_a_secret_named_instance_field_is_never_a_label(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JARVIS_TEST_CM", CM_COMMAND)
    monkeypatch.setenv("JARVIS_TEST_MARKS", str(tmp_path))
    config = config_mod.load(write_config(tmp_path))
    path = write_design(tmp_path, "leak2")
    with bot_in_thread(config) as (loop, bot):
        loop.run(bot.ask(f"deploy {path} pipeline=leaky", "started"))
        loop.run(bot.expect(r"^leak2: FAILED"))
        deployment = loop.run(bot.bot.store.latest("leak2"))
        assert deployment.meta["labels"]["fqdn"] == "leak2.example.com"
        assert "api-key" not in deployment.meta["labels"]
        assert "db_pwd" not in deployment.meta["labels"]
        answer = loop.run(bot.ask(f"status api-key={API_KEY}", "."))
        assert answer == "status: 'api-key' names a secret, which is never a label"
        answer = loop.run(bot.ask("status api-key=wrong-guess", "."))
        assert answer == "status: 'api-key' names a secret, which is never a label"


@pytest.mark.servers
def test_the_command_line_prints_and_logs_no_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``jarvis deploy`` at DEBUG: announcements, status lines and every log line."""
    config = write_config(tmp_path)
    path = write_design(tmp_path, "leak3")
    env = {**os.environ, "JARVIS_TEST_CM": CM_COMMAND, "JARVIS_TEST_MARKS": str(tmp_path),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("JARVIS_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "bot.cli", "deploy", str(path), "--pipeline",
                           "leaky", "--config", str(config), "--log-level", "DEBUG"],
                          text=True, capture_output=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 1, done.stderr
    out = done.stdout + done.stderr
    assert "FAILED at step 3/3 leaker:partial" in out
    with sqlite3.connect(tmp_path / "jarvis.db") as conn:
        (text,) = conn.execute("SELECT yaml FROM clipboards WHERE after_step = 2").fetchone()
    password = yaml.safe_load(text)["instance"]["root_password"]
    assert leaked(out, password) == [], out


def test_configmgmt_command_from_the_environment_is_never_printed(
        local_node: LocalNode, monkeypatch: pytest.MonkeyPatch) -> None:
    command = (f"sh -c 'echo fetching https://deploy:{CM_TOKEN}@git.example/x.git >&2; "
               f"echo the vault said {VAULT} >&2; exit 4'")
    monkeypatch.setenv("JARVIS_TEST_CM", command)
    config = {**local_node.config, "configmgmt": {"timeout": 20, "command_env": "JARVIS_TEST_CM"}}
    result = local_node.step("config:bootstrap", config=config)
    assert result.returncode == 1
    failure = result.stderr.strip().splitlines()[-1]
    assert failure == f"config:bootstrap: sh exited 4: the vault said {MASK}", failure
    assert "running sh on the host" in result.stderr
    assert yaml.safe_load(result.stdout)["configmgmt"] == {"program": "sh", "kind": None,
                                                          "exit_status": 4}
    assert CM_TOKEN not in result.stdout and VAULT not in result.stdout
    # the worker's own log of the command's output masks URL credentials already
    assert f"https://deploy:{MASK}@git.example/x.git" in result.stderr
    assert CM_TOKEN not in result.stderr


def test_configmgmt_command_env_that_is_unset_is_one_clear_line(
        local_node: LocalNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JARVIS_TEST_UNSET", raising=False)
    config = {**local_node.config, "configmgmt": {"command_env": "JARVIS_TEST_UNSET"}}
    result = local_node.step("config:bootstrap", config=config)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "config:bootstrap: configmgmt.command is not set and configmgmt.command_env names the "
        "environment variable JARVIS_TEST_UNSET, which is empty")


# ------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("key", [
    "pass", "passwd", "password", "PASSWORD", "root-password", "root_password", "rootPassword",
    "pwd", "db_pwd", "DB-PWD", "passphrase", "secret", "tsig_secret", "client_secret",
    "token", "api_token", "apiToken", "credentials", "credentials.key", "creds",
    "key", "api-key", "api_key", "apiKey", "APIKEY", "x-api-key", "private_key", "privateKey",
    "deploy_key", "ssh_key", "api_keys", "nickserv_password",
])
def test_secret_names(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", [
    "keys", "host_keys", "sshpubkey", "sshPublicKey", "public_key", "pubkey", "ssh-pub-key",
    "password_env", "token_env", "secret_env", "key_file", "tsig_key_name", "key_type",
    "hostname", "passenger", "bypass", "compass", "monkey", "keyboard", "notes", "fqdn",
])
def test_not_secret_names(key: str) -> None:
    assert not is_secret_key(key)


def test_extra_words_add_to_the_rule_but_never_make_public_secret() -> None:
    assert is_secret_key("sessionid", extra=["session"])
    assert not is_secret_key("sessionid")
    assert not is_secret_key("session_pubkey", extra=["session"])


def test_redact_masks_leaf_by_leaf_inside_a_secret_mapping_and_urls_everywhere() -> None:
    clip = {"deploy_key": {"type": "ssh-ed25519", "public_key": "ssh-ed25519 AAAA jarvis@x",
                           "private_key": "-----BEGIN-----\nabc\n-----END-----\n"},
            "instance": {"db_pwd": DB_PWD, "pass": "p", "sshpubkey": "ssh-rsa AAAA"},
            "notes": {"repo": REPO, "credentials": {"user": "deploy", "key": "k-123456789"}},
            "keys": {"repository": "git@example.com:gitosis-admin"}}
    shown = redact.redact(clip)
    assert shown["deploy_key"] == {"type": "ssh-ed25519",
                                   "public_key": "ssh-ed25519 AAAA jarvis@x",
                                   "private_key": MASK}
    assert shown["instance"] == {"db_pwd": MASK, "pass": MASK, "sshpubkey": "ssh-rsa AAAA"}
    assert shown["notes"] == {"repo": f"https://deploy:{MASK}@git.example.com/site.git",
                              "credentials": {"user": MASK, "key": MASK}}
    assert shown["keys"] == clip["keys"]
    values = redact.secret_values(clip)
    assert {DB_PWD, "deploy", "k-123456789", URL_TOKEN} <= values
    assert "ssh-ed25519" not in values and "ssh-rsa AAAA" not in values


# ------------------------------------------------------------------------- the scrubber
PASSWORD = "q7-Vn.x2+Lm9_Rt4ZpW8kJ3"


@pytest.mark.parametrize("text, expected", [
    (f"login {PASSWORD} refused", f"login {MASK} refused"),
    (f"cut: {PASSWORD[:-1]}!", f"cut: {MASK}!"),
    (f"cut: {PASSWORD[1:]}", f"cut: {MASK}"),
    (f"middle: {PASSWORD[5:13]} end", f"middle: {MASK} end"),
    (f"typo: {PASSWORD[:10]}X{PASSWORD[11:]}", f"typo: {MASK}X{MASK}"),
    (f"{PASSWORD}{PASSWORD}", MASK),
    (f"short: {PASSWORD[:7]} stays", f"short: {PASSWORD[:7]} stays"),
    ("https://u:anything@h/p and ftp://me:p@ss@h2/",
     f"https://u:{MASK}@h/p and ftp://me:{MASK}@h2/"),
    ("https://ghp_0123456789abcdefXYZ@github.com/o/r", f"https://{MASK}@github.com/o/r"),
    ("ssh://git@example.com/r and http://example.com:8080/", ("ssh://git@example.com/r and "
                                                             "http://example.com:8080/")),
    ("nothing secret here", "nothing secret here"),
])
def test_scrubber(text: str, expected: str) -> None:
    assert Scrubber([PASSWORD, "hunter"]).scrub(text) == expected


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:hunter2@hooks.example/in?token=abc#frag", "https://hooks.example/in?…"),
    ("https://abcdefabcdefabcdefabcdef@hooks.example:8443/in", "https://hooks.example:8443/in"),
    ("https://hooks.example/a\nb\x1b[31m", "https://hooks.example/ab?[31m"),
    ("http://[::1/broken?key=1", "http://[::1/broken"),
])
def test_a_url_is_shown_without_credentials_query_or_control_characters(
        url: str, shown: str) -> None:
    """The one way jarvis shows a URL in chat, logs and the store: sources, watches and
    notify's webhook alike."""
    assert redact.shown_url(url) == shown


def test_scrubber_masks_each_line_of_a_multi_line_secret_and_short_whole_secrets() -> None:
    key = "-----BEGIN KEY-----\nAAAAB3NzaC1lZDI1NTE5AAAAIK\nshortl\n-----END KEY-----"
    scrubber = Scrubber([key, "s3cr3t"])
    assert scrubber.scrub("got AAAAB3NzaC1lZDI1NTE5AAAAIK here") == f"got {MASK} here"
    assert scrubber.scrub("line shortl and s3cr3t") == f"line {MASK} and {MASK}"
    assert scrubber.lines(["-----END KEY-----", "fine"]) == [MASK, "fine"]


def test_scrubber_is_linear_in_the_text_not_in_the_secrets() -> None:
    secrets = [f"secret-{i:05d}-{'x' * 24}" for i in range(2000)]
    scrubber = Scrubber(secrets)
    text = ("an ordinary log line with nothing in it " * 25_000) + secrets[1234]
    started = time.perf_counter()
    clean = scrubber.scrub(text)
    assert time.perf_counter() - started < 5
    assert clean.endswith(MASK) and secrets[1234] not in clean


def test_configured_secrets_come_from_secret_names_and_env_variables() -> None:
    data: dict[str, Any] = {"chat": {"irc": {"password": "ircpass-123", "password_env": "IRCPW"}},
                            "providers": {"linode": {"token_env": "LT"}},
                            "keys": {"repository": REPO},
                            "configmgmt": {"command_env": "CM"}}
    environ = {"IRCPW": "from-env-456", "LT": "linode-token-789", "CM": CM_COMMAND}
    found = redact.configured_secrets(data, environ=environ)
    assert {"ircpass-123", "from-env-456", "linode-token-789", URL_TOKEN, CM_TOKEN,
            VAULT} <= found
    assert "IRCPW" not in found and "ansible-pull" not in found
    assert not any("ansible-pull" in s for s in found)


def test_the_log_filter_scrubs_message_arguments_and_tracebacks() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                records.append(self.format(record))
            except TypeError:  # what a real handler hands to handleError
                records.append("bad format reported")

    logger = logging.getLogger("tests.test_secrets.guarded")
    logger.propagate = False
    handler = Keep()
    logger.addHandler(handler)
    remove = redact.guard_logging(Scrubber([VAULT]), logger)
    try:
        logger.error("pulling %s with %s", REPO, VAULT)
        logger.error("a bad format %d", "is the handler's to report, not an exception here")
        try:
            raise RuntimeError(f"vault {VAULT} refused")
        except RuntimeError:
            logger.exception("failed")
    finally:
        remove()
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert URL_TOKEN not in text and VAULT not in text
    assert f"pulling https://deploy:{MASK}@git.example.com/site.git with {MASK}" in text
    assert f"RuntimeError: vault {MASK} refused" in text
    assert "bad format reported" in text
