"""Tell people beyond the asker how a deployment ended: chat rooms, a webhook, e-mail.

The last step of the shipped pipelines is ``notify:send``, which does every channel
configured under ``notify``; ``notify:chat``, ``notify:webhook`` and ``notify:email``
do one each. A channel that is not configured (no ``notify.rooms``, ``webhook.url``
or ``email.host``) logs so and changes nothing, so the step succeeds on a bare machine.

**Chat.** A worker is a separate process and knows nothing of chat (DESIGN.md: data
flows one way). It only writes ``notify: {rooms: [...], line: ...}`` into the
clipboard; the bot (``bot/relay.py``) says the line in those rooms once the step
has succeeded, skipping the room the deployment was asked from (which hears the
final line anyway) and any room not in ``notify.rooms``.

**What is said.** Host, deployment id, pipeline, state, who asked and how long it
took since it was requested (``jarvis.requested_at``; a retried deployment counts
from its first request). No secret: the facts are built from those fields only,
passed through ``clipboard.redact``, and scrubbed of every secret value the
clipboard holds. The state is the pipeline's ``ends_as``: this step runs only when
every step before it succeeded, so placed last it names the state the deployment
is about to end in.

**Webhook.** A JSON POST signed with ``X-Jarvis-Signature: sha256=<hex HMAC-SHA256
of the body>`` (GitHub's scheme) under a secret from ``notify.webhook.secret`` or
the environment variable ``secret_env`` names; a URL without a secret is refused
rather than sent unsigned. Connection errors, timeouts, 408, 429 and 5xx are tried
again after ``backoff`` seconds, doubling up to ``max_backoff``, ``attempts`` times
in all; any other answer is final at once.

**Failure is best-effort by default.** The host is built by the time this runs,
and in a pipeline with rollback a failed step would undo it over an unreachable
chat hook. So a channel that cannot deliver after its last attempt logs one
warning line, records ``delivered: false`` with the reason, and the step still
succeeds; ``required: true`` (per channel) makes it fail the step with that line.
A configuration error (an unsigned webhook, a password that is not set) always
fails the step: it would never deliver.

Steps may run twice (an interrupted step runs again after a restart), so a
notification is delivered at least once; receivers deduplicate by ``deployment``
and ``state``.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

import requests

from clipboard import config, redact
from clipboard import pipeline as pipeline_mod
from clipboard.errors import ConfigError, StepFailed
from clipboard.records import State
from clipboard.settings import ClipboardLimits, EmailSettings, NotifySettings, WebhookSettings
from clipboard.worker import operator_intent, task

log = logging.getLogger(__name__)

SETTINGS = (NotifySettings, ClipboardLimits)

SIGNATURE_HEADER = "X-Jarvis-Signature"
TRANSIENT = frozenset({408, 429})
FIELDS = ("host", "fqdn", "deployment", "pipeline", "state", "requester", "duration")


def signature(secret: str, body: bytes) -> str:
    """The ``X-Jarvis-Signature`` value of ``body``: what a receiver recomputes to trust it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def facts(clipboard: dict[str, Any]) -> dict[str, Any]:
    """What every channel tells, from the design's name and the engine's ``jarvis:``
    record only, redacted and scrubbed of the clipboard's secret values."""
    instance = clipboard.get("instance") or {}
    intent = operator_intent(clipboard)
    host = str(instance.get("hostname") or "")
    if not host:
        raise StepFailed("instance.hostname is missing")
    pipeline = str(intent.get("pipeline") or "")
    shape = pipeline_mod.pipelines(config.current()).get(pipeline)
    requested_at = intent.get("requested_at")
    duration = (round(max(0.0, time.time() - float(requested_at)), 1)
                if isinstance(requested_at, (int, float)) else None)
    told = {"host": host, "fqdn": str(instance.get("fqdn") or host),
            "deployment": intent.get("deployment"), "pipeline": pipeline,
            "state": str(shape.ends_as if shape else State.READY),
            "requester": intent.get("requested_by"), "duration": duration}
    keys = config.current().limits.redact_keys
    scrubber = redact.Scrubber(redact.secret_values(clipboard, keys))
    return {k: scrubber.scrub(v) if isinstance(v, str) else v
            for k, v in redact.redact(told, keys).items()}


def line(told: dict[str, Any]) -> str:
    """``loki: ready — deployment #7 (deploy) asked by console:alice, 42.1s``."""
    number = f"#{told['deployment']}" if told["deployment"] is not None else "(no id)"
    took = f", {told['duration']}s" if told["duration"] is not None else ""
    return (f"{told['host']}: {told['state']} — deployment {number} ({told['pipeline']}) "
            f"asked by {told['requester'] or 'nobody known'}{took}")


# -- chat ------------------------------------------------------------------------------------
def _chat(told: dict[str, Any]) -> dict[str, Any] | None:
    rooms = list(config.current().notify.rooms)
    if not rooms:
        log.info("chat notification not configured (notify.rooms is empty)")
        return None
    log.info("asking the bot to tell %s", ", ".join(rooms))
    return {"rooms": rooms, "line": line(told)}


# -- webhook ---------------------------------------------------------------------------------
def _webhook(told: dict[str, Any]) -> dict[str, Any] | None:
    section = config.current().notify.webhook
    url = section.url
    if not url:
        log.info("webhook not configured (notify.webhook.url is null)")
        return None
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"notify.webhook.url must be http:// or https://, "
                          f"not {url.split(':', 1)[0]!r}")
    secret = section.secret.require()
    body = json.dumps(told, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "jarvis",
               SIGNATURE_HEADER: signature(secret, body)}
    attempts = section.attempts
    delay = section.backoff
    ceiling = section.max_backoff or delay
    timeout = section.timeout
    where = f"POST {redact.shown_url(url)}"
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            response = requests.post(url, data=body, headers=headers, timeout=timeout,
                                     allow_redirects=False)
        except requests.RequestException as exc:
            error, transient = f"{type(exc).__name__}", True
        else:
            if response.ok:
                log.info("webhook delivered: %s answered %d (attempt %d/%d)", where,
                         response.status_code, attempt, attempts)
                return {"delivered": True, "status": response.status_code, "attempts": attempt}
            error = f"answered {response.status_code} {response.reason}"
            transient = response.status_code >= 500 or response.status_code in TRANSIENT
        log.warning("webhook attempt %d/%d: %s %s", attempt, attempts, where, error)
        if not transient:
            break
        if attempt < attempts:
            time.sleep(min(delay * 2 ** (attempt - 1), ceiling))
    return _undelivered("webhook", f"{where} {error} after {attempt} attempt"
                        f"{'s' if attempt > 1 else ''}", attempt, section)


def _undelivered(channel: str, reason: str, attempts: int,
                 section: WebhookSettings | EmailSettings) -> dict[str, Any]:
    """A channel's last attempt failed: fail the step if it is required, else say so."""
    if section.required:
        raise StepFailed(f"{channel} notification failed: {reason}")
    log.warning("%s notification not delivered (best effort, notify.%s.required is false): "
                "%s", channel, channel, reason)
    return {"delivered": False, "attempts": attempts, "error": reason}


# -- e-mail ----------------------------------------------------------------------------------
def _message(told: dict[str, Any], section: EmailSettings, to: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"jarvis: {told['host']} {told['state']} ({told['pipeline']})"
    message["From"] = section.from_
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain="jarvis")
    message.set_content(line(told) + "\n\n" + "".join(
        f"{name}: {told[name] if told[name] is not None else '-'}\n" for name in FIELDS))
    return message


def _email(told: dict[str, Any]) -> dict[str, Any] | None:
    section = config.current().notify.email
    host = section.host
    if not host:
        log.info("e-mail not configured (notify.email.host is null)")
        return None
    to = list(section.to)
    if not to:
        raise ConfigError("notify.email.to is empty: name at least one recipient")
    username = section.username
    password = section.password.require() if username else None
    where = f"SMTP {host}:{section.port}"
    try:
        with smtplib.SMTP(host, section.port, timeout=section.timeout) as smtp:
            smtp.ehlo()
            if section.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=section.ca_file or None))
                smtp.ehlo()
            if username and password is not None:
                smtp.login(username, password)
            refused = smtp.send_message(_message(told, section, to))
    except (smtplib.SMTPException, OSError) as exc:
        reason = " ".join(f"{where}: {type(exc).__name__}: {exc}".split())[:300]
        return _undelivered("email", redact.scrub(reason, {password} if password else ()),
                            1, section)
    log.info("e-mail sent through %s to %s%s", where, ", ".join(to),
             f" (refused: {', '.join(refused)})" if refused else "")
    return {"delivered": True, "to": to, "refused": sorted(refused)}


# -- tasks -----------------------------------------------------------------------------------
def _notify(clipboard: dict[str, Any], chat: bool, webhook: bool,
            email: bool) -> dict[str, Any] | None:
    """Run the chosen channels. The ``notify`` record holds only what this step did (an
    earlier step's is dropped), so the bot never repeats an earlier step's chat line."""
    told = facts(clipboard)
    record: dict[str, Any] = {}
    if chat and (said := _chat(told)):
        record.update(said)
    if webhook and (posted := _webhook(told)):
        record["webhook"] = posted
    if email and (mailed := _email(told)):
        record["email"] = mailed
    if record:
        clipboard["notify"] = record
    elif clipboard.pop("notify", None) is None:
        return None
    return clipboard


@task(timeout=300, writes=("notify",))
def send(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Tell the configured chat rooms, webhook and e-mail recipients how the deployment ended."""
    return _notify(clipboard, chat=True, webhook=True, email=True)


@task(writes=("notify",))
def chat(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Have the bot say how the deployment ended in the rooms of notify.rooms."""
    return _notify(clipboard, chat=True, webhook=False, email=False)


@task(timeout=300, writes=("notify",))
def webhook(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """POST how the deployment ended to notify.webhook.url, signed, retried with backoff."""
    return _notify(clipboard, chat=False, webhook=True, email=False)


@task(writes=("notify",))
def email(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Mail how the deployment ended to notify.email.to through SMTP."""
    return _notify(clipboard, chat=False, webhook=False, email=True)
