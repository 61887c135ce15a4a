"""notify:* against real receivers: a local HTTP server for the webhook (signature
checked here as a receiver would), aiosmtpd's SMTP server for the mail (plain, and
STARTTLS with a login), and the whole bot for the chat line said in another room."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import ssl
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from clipboard import config as config_mod
from clipboard.errors import ConfigError
from tests.aio import bot_in_thread
from tests.servers.monitoring_http import Receiver
from tests.servers.process import free_port, self_signed_cert
from tests.silos import output, run_worker

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis

SECRET = "whsec-5b1f0c9e2a7d4e83"
ROOT_PASSWORD = "root-pw-9c2e7f1a33"
SMTP_PASSWORD = "smtp-pw-0d8b3a6c51"
ENV = {"TEST_NOTIFY_SECRET": SECRET, "TEST_SMTP_PASSWORD": SMTP_PASSWORD}


def clip(pipeline: str = "deploy", requested_at: float | None = None) -> dict[str, Any]:
    """A clipboard as the engine hands it to the last step."""
    return {"instance": {"hostname": "loki", "fqdn": "loki.example.com",
                         "root_password": ROOT_PASSWORD},
            "jarvis": {"deployment": 7, "pipeline": pipeline, "force": False,
                       "requested_by": "console:ops",
                       "requested_at": time.time() - 42 if requested_at is None else requested_at}}


def webhook(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    section = {"url": receiver.url("/hooks/jarvis"), "secret_env": "TEST_NOTIFY_SECRET",
               "backoff": 0.05, "max_backoff": 0.2, "timeout": 5, **overrides}
    return {"notify": {"webhook": section}}


def verified(call: Any, secret: str) -> bool:
    """What a receiver does: recompute the HMAC of the raw body, compare in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), call.body.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, call.headers.get("x-jarvis-signature", ""))


# -- webhook ---------------------------------------------------------------------------------
def test_webhook_is_signed_and_tells_the_facts_without_secrets(monitoring: Receiver,
                                                              tmp_path: Path) -> None:
    result = run_worker("notify:webhook", clip(), webhook(monitoring), tmp_path, ENV)
    after = output(result)
    assert after["notify"] == {"webhook": {"delivered": True, "status": 200, "attempts": 1}}
    [call] = monitoring.calls
    assert (call.method, call.path) == ("POST", "/hooks/jarvis")
    assert call.headers["content-type"] == "application/json"
    assert verified(call, SECRET)
    assert not verified(call, SECRET + "x"), "a wrong secret must not verify"
    body = call.json()
    assert {k: body[k] for k in ("host", "fqdn", "deployment", "pipeline", "state",
                                 "requester")} == {
        "host": "loki", "fqdn": "loki.example.com", "deployment": 7, "pipeline": "deploy",
        "state": "ready", "requester": "console:ops"}
    assert 41 <= body["duration"] < 100
    for secret in (ROOT_PASSWORD, SECRET):
        assert secret not in call.body and secret not in result.stderr


def test_webhook_retries_with_backoff_after_500s(monitoring: Receiver, tmp_path: Path) -> None:
    monitoring.reply(500, "down")
    monitoring.reply(503, "still down")
    started = time.monotonic()
    result = run_worker("notify:webhook", clip(), webhook(monitoring, attempts=4), tmp_path, ENV)
    assert output(result)["notify"]["webhook"] == {"delivered": True, "status": 200,
                                                   "attempts": 3}
    assert len(monitoring.calls) == 3
    assert len({c.body for c in monitoring.calls}) == 1
    assert all(verified(c, SECRET) for c in monitoring.calls)
    assert time.monotonic() - started >= 0.05 + 0.1  # the waits: 0.05 s, then doubled
    assert "webhook attempt 1/4" in result.stderr and "answered 500" in result.stderr


def test_webhook_that_never_answers_well_fails_a_required_step(monitoring: Receiver,
                                                               tmp_path: Path) -> None:
    for _ in range(3):
        monitoring.reply(500, "down")
    result = run_worker("notify:webhook", clip(), webhook(monitoring, attempts=3, required=True),
                        tmp_path, ENV)
    assert result.returncode == 1
    assert len(monitoring.calls) == 3
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"notify:webhook: webhook notification failed: POST http://127\.0\.0\.1:"
                        r"\d+/hooks/jarvis answered 500 Internal Server Error after 3 attempts",
                        last), last


def test_webhook_nobody_listens_on_is_retried_then_named(tmp_path: Path) -> None:
    section = {"url": f"http://127.0.0.1:{free_port()}/hook", "secret_env": "TEST_NOTIFY_SECRET",
               "attempts": 2, "backoff": 0.05, "timeout": 2, "required": True}
    result = run_worker("notify:webhook", clip(), {"notify": {"webhook": section}}, tmp_path, ENV)
    assert result.returncode == 1
    assert "webhook attempt 2/2" in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("/hook ConnectionError after 2 attempts")


def test_webhook_is_best_effort_by_default_and_a_4xx_is_not_retried(monitoring: Receiver,
                                                                    tmp_path: Path) -> None:
    monitoring.reply(403, "no")
    result = run_worker("notify:webhook", clip(), webhook(monitoring), tmp_path, ENV)
    record = output(result)["notify"]["webhook"]
    assert record["delivered"] is False and record["attempts"] == 1
    assert "answered 403" in record["error"]
    assert len(monitoring.calls) == 1
    assert "not delivered (best effort" in result.stderr


def test_an_unsigned_webhook_is_refused(monitoring: Receiver, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"notify": {"webhook": {"url": monitoring.url()},
                                               "rooms": ["#ops"]}}))
    with pytest.raises(ConfigError) as caught:
        config_mod.load(path, export=False)
    assert "webhooks are always signed" in str(caught.value)
    assert "notify.rooms entry '#ops' must be <adapter>:<target>" in str(caught.value)
    # and a worker handed the same configuration directly never posts unsigned
    result = run_worker("notify:webhook", clip(), {"notify": {"webhook": {
        "url": monitoring.url(), "secret_env": "TEST_UNSET_SECRET"}}}, tmp_path)
    assert result.returncode == 1 and monitoring.calls == []
    assert "TEST_UNSET_SECRET, which is empty" in result.stderr


# -- nothing configured, and the chat record ---------------------------------------------------
def test_nothing_configured_changes_nothing(tmp_path: Path) -> None:
    result = run_worker("notify:send", clip(), {}, tmp_path)
    assert result.returncode == 0 and result.stdout == ""
    assert "not configured" in result.stderr


def test_chat_record_names_the_rooms_and_the_pipelines_end(tmp_path: Path) -> None:
    stale = {**clip("decommission"), "notify": {"rooms": ["irc:#old"], "line": "old"}}
    after = output(run_worker("notify:chat", stale, {"notify": {"rooms": ["irc:#ops"]}},
                              tmp_path))
    assert after["notify"]["rooms"] == ["irc:#ops"]
    assert re.fullmatch(r"loki: decommissioned — deployment #7 \(decommission\) asked by "
                        r"console:ops, 4\d\.\ds", after["notify"]["line"])
    # a later notify step with nothing to say drops the record: the bot must not say it again
    assert "notify" not in output(run_worker("notify:webhook", after, {}, tmp_path))


# -- e-mail ----------------------------------------------------------------------------------
class Inbox:
    """aiosmtpd handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos),
                              message_from_bytes(envelope.content, policy=default_policy)))
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        b"jarvis", SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # not handled: the server answers 535


@contextlib.contextmanager
def smtp_server(**kwargs: Any) -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on a free loopback port, in its own thread."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def email(port: int, **overrides: Any) -> dict[str, Any]:
    return {"notify": {"email": {"host": "127.0.0.1", "port": port, "from": "jarvis@example.com",
                                 "to": ["ops@example.com", "oncall@example.com"], "timeout": 5,
                                 **overrides}}}


def test_mail_is_received(tmp_path: Path) -> None:
    with smtp_server() as (inbox, port):
        after = output(run_worker("notify:email", clip(), email(port), tmp_path))
    assert after["notify"]["email"]["delivered"] is True
    [(recipients, message)] = inbox.messages
    assert recipients == ["ops@example.com", "oncall@example.com"]
    assert message["Subject"] == "jarvis: loki ready (deploy)"
    assert message["From"] == "jarvis@example.com"
    text = message.get_content().replace("\r\n", "\n")  # SMTP carries CRLF
    assert re.match(r"loki: ready — deployment #7 \(deploy\) asked by console:ops, 4\d\.\ds\n",
                    text), text
    assert "requester: console:ops\n" in text and ROOT_PASSWORD not in text


def test_mail_over_starttls_with_a_login(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path, "smtp.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    settings = email(0, starttls=True, ca_file=str(cert), username="jarvis",
                     password_env="TEST_SMTP_PASSWORD")
    with smtp_server(tls_context=context, require_starttls=True, auth_required=True,
                     authenticator=_authenticator) as (inbox, port):
        settings["notify"]["email"]["port"] = port
        good = run_worker("notify:email", clip(), settings, tmp_path, ENV)
        wrong = run_worker("notify:email", clip(), settings, tmp_path,
                           {"TEST_SMTP_PASSWORD": "not-the-password"})
    assert output(good)["notify"]["email"]["delivered"] is True
    assert len(inbox.messages) == 1
    record = output(wrong)["notify"]["email"]
    assert record["delivered"] is False and "SMTPAuthenticationError" in record["error"]
    assert SMTP_PASSWORD not in good.stderr + wrong.stderr
    assert "not-the-password" not in wrong.stderr


# -- the chat line, end to end through the bot -------------------------------------------------
def test_deploy_ending_in_notify_tells_another_room(monitoring: Receiver, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_NOTIFY_SECRET", SECRET)  # the bot's workers inherit it
    path = tmp_path / "jarvis.yaml"
    path.write_text(yaml.safe_dump({
        "store": {"path": str(tmp_path / "jarvis.db")},
        "pipelines": {"deploy": {"steps": ["core:validate", "notify:send"]}},
        "notify": {"rooms": ["test:#ops", "test:#dev"],
                   "webhook": webhook(monitoring)["notify"]["webhook"]}}))
    design = tmp_path / "loki.yaml"
    design.write_text(yaml.safe_dump({"instance": {"hostname": "loki", "provider": "local"}}))

    async def scenario(bot: Any) -> list[tuple[str, str]]:
        await bot.say(f"jarvis: deploy {design}", room="#dev", nick="alice")
        heard: list[tuple[str, str]] = []
        wanted = {"#ops": r"^loki: ready — deployment #\d+ \(deploy\) asked by console:tester, "
                          r"\d+\.\ds$",
                  "#dev": r"^alice: loki: ready in \S+ \(2 steps\)$"}
        while wanted:
            target, line = await asyncio.wait_for(bot.adapter.outbox.get(), 30)
            heard.append((target, line))
            if target in wanted and re.search(wanted[target], line):
                del wanted[target]
        await asyncio.sleep(0.3)  # anything said late to the asker's room would show now
        while not bot.adapter.outbox.empty():
            heard.append(bot.adapter.outbox.get_nowait())
        return heard

    with bot_in_thread(config_mod.load(path)) as (loop, bot):
        heard = loop.run(scenario(bot), 60)
    assert [line for target, line in heard if target == "#ops"] == [
        line for target, line in heard if "— deployment #" in line], heard
    [call] = monitoring.calls
    assert verified(call, SECRET) and call.json()["state"] == "ready"
