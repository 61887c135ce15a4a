"""Silence the host's monitoring while it is rebuilt, and lift the silence after.

Any silence/downtime HTTP API fits (Alertmanager, Icinga 2, a webhook): URL,
method and body are templates in config ``monitoring``, with placeholders
``{hostname}``, ``{fqdn}``, ``{ip}``, ``{silence_id}``, ``{starts_at}``,
``{ends_at}`` and ``{duration}``; any other brace (JSON) is left alone. Values
filled into a URL are percent-quoted whole (no ``/``, ``?`` or ``&`` survives).
The token goes only into the ``Authorization`` header; it is scrubbed from every
message that could echo it.

The silence id the API answers is kept in the clipboard so ``enable`` lifts
exactly that silence, and so a rollback can. ``enable`` acts on an id only when
it is one this deployment's ``suppress`` recorded (the record carries the host
and ``jarvis.deployment``) and has the API's id format
(``monitoring.silence_id_format``: ``uuid``, Alertmanager's, or ``safe``,
letters, digits and ``. _ : @ ! -`` without ``..``); anything else fails the
step instead of reaching the API with the monitoring token.

With ``monitoring.url`` null both steps log "monitoring not configured" and
leave the clipboard unchanged, so a pipeline may name them whether or not a
site has monitoring.
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from clipboard import config
from clipboard.errors import ConfigError, StepFailed
from clipboard.settings import MonitoringSettings
from clipboard.worker import operator_intent, task

log = logging.getLogger(__name__)

SETTINGS = (MonitoringSettings,)

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:@!-]{1,200}$")
ID_FORMATS = ("uuid", "safe")
NOT_FOUND = 404


def _render(template: str, values: dict[str, str], where: str, url: bool = False) -> str:
    """Fill the known ``{name}`` placeholders (percent-quoted whole in a URL); an unknown
    one is a config error."""
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ConfigError(f"{where} uses the unknown placeholder {{{name}}} "
                              f"(known: {', '.join('{' + k + '}' for k in values)})")
        return quote(values[name], safe="") if url else values[name]
    return _PLACEHOLDER.sub(fill, template)


def check_silence_id(value: str, id_format: str) -> str:
    """``value`` if it has the API's silence id format, else StepFailed (never echoing it whole)."""
    if id_format not in ID_FORMATS:
        raise ConfigError(f"monitoring.silence_id_format is {id_format!r}, not one of "
                          f"{', '.join(ID_FORMATS)}")
    if id_format == "uuid":
        try:
            ok = str(uuid.UUID(value)) == value.lower()
        except ValueError:
            ok = False
    else:
        ok = bool(_SAFE_ID.match(value)) and ".." not in value
    if not ok:
        raise StepFailed(f"silence id {json.dumps(value[:40])} is not a {id_format} id "
                         "(monitoring.silence_id_format)")
    return value


def _id_format() -> str:
    return config.current().monitoring.silence_id_format


def _ours(clipboard: dict[str, Any], state: dict[str, Any]) -> bool:
    """Whether the recorded silence is this deployment's, for this host."""
    hostname = (clipboard.get("instance") or {}).get("hostname")
    return (state.get("hostname") == hostname
            and state.get("deployment") == operator_intent(clipboard).get("deployment"))


def _shown(url: str) -> str:
    """The URL without credentials or query string, fit for a log line."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _values(clipboard: dict[str, Any], silence_id: str) -> dict[str, str]:
    instance = clipboard.get("instance") or {}
    hostname = str(instance.get("hostname") or "")
    if not hostname:
        raise StepFailed("instance.hostname is missing")
    duration = config.current().monitoring.duration
    now = datetime.now(UTC).replace(microsecond=0)
    return {"hostname": hostname, "fqdn": str(instance.get("fqdn") or hostname),
            "ip": str((clipboard.get("node") or {}).get("ip") or ""), "silence_id": silence_id,
            "starts_at": now.isoformat().replace("+00:00", "Z"),
            "ends_at": (now + timedelta(seconds=duration)).isoformat().replace("+00:00", "Z"),
            "duration": str(duration)}


def _token() -> str | None:
    return config.current().monitoring.token.get()


def _call(action: str, method: str, url: str, body: str) -> requests.Response:
    """One bounded HTTP call; any answer but 2xx (and 404 when enabling) fails the step."""
    section = config.current().monitoring
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"monitoring url for {action} must be http:// or https://, "
                          f"not {url.split(':', 1)[0]!r}")
    token = _token()
    headers = {"Content-Type": section.content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    where = f"{method} {_shown(url)}"
    try:
        response = requests.request(method, url, data=body.encode() if body else None,
                                    headers=headers, timeout=section.timeout,
                                    allow_redirects=False)
    except requests.RequestException as exc:
        raise StepFailed(_scrub(f"monitoring {action}: {where} failed: {type(exc).__name__}: "
                                f"{exc}", token)) from None
    if response.ok or (action == "enable" and response.status_code == NOT_FOUND):
        return response
    excerpt = " ".join(response.text.split())[:200]
    raise StepFailed(_scrub(f"monitoring {action}: {where} answered {response.status_code} "
                            f"{response.reason}: {excerpt}", token))


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _silence_id(response: requests.Response) -> str | None:
    """The id at ``monitoring.silence_id_field`` (a dotted path) of a JSON answer, if any."""
    path = config.current().monitoring.silence_id_field
    try:
        node: Any = response.json()
    except ValueError:
        return None
    for part in filter(None, path.split(".")):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    if node is None or isinstance(node, (dict, list)):
        return None
    try:
        return check_silence_id(str(node), _id_format())
    except StepFailed as exc:
        raise StepFailed(f"monitoring answered a {exc}") from None


@task(undo="monitoring:enable", writes=("monitoring",))
def suppress(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Silence the host's alerts through the configured API; record the silence id."""
    section = config.current().monitoring
    if not section.url:
        log.info("monitoring not configured (monitoring.url is null); nothing suppressed")
        return None
    state = clipboard.get("monitoring") or {}
    if state.get("suppressed") and _ours(clipboard, state):
        log.info("monitoring already suppressed (silence %s)", state.get("silence_id") or "unnamed")
        return None
    if state.get("suppressed"):
        log.warning("the clipboard's monitoring record is not this deployment's; suppressing anew")
    values = _values(clipboard, "")
    url = _render(section.url, values, "monitoring.url", url=True)
    body = _render(section.suppress_body, values, "monitoring.suppress_body")
    method = section.method.upper()
    response = _call("suppress", method, url, body)
    silence = _silence_id(response)
    log.info("monitoring suppressed for %s (%s %s answered %d, silence %s)", values["fqdn"],
             method, _shown(url), response.status_code, silence or "not named")
    clipboard["monitoring"] = {"suppressed": True, "silence_id": silence,
                               "hostname": values["hostname"],
                               "deployment": operator_intent(clipboard).get("deployment")}
    return clipboard


@task(writes=("monitoring",))
def enable(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Lift the host's silence (the recorded one when the templates name {silence_id})."""
    section = config.current().monitoring
    if not section.url:
        log.info("monitoring not configured (monitoring.url is null); nothing enabled")
        return None
    state = clipboard.get("monitoring") or {}
    if state.get("suppressed") is False:
        log.info("monitoring already enabled")
        return None
    url_template = section.enable_url or section.url
    body_template = section.enable_body
    silence = str(state.get("silence_id") or "")
    if silence:
        if not _ours(clipboard, state):
            raise StepFailed("the recorded silence is not one this deployment's "
                             "monitoring:suppress made for this host; not lifted")
        check_silence_id(silence, _id_format())
    if not silence and "{silence_id}" in url_template + body_template:
        log.info("no silence recorded for this host; nothing to lift")
    else:
        values = _values(clipboard, silence)
        url = _render(url_template, values, "monitoring.enable_url", url=True)
        body = _render(body_template, values, "monitoring.enable_body")
        method = section.enable_method.upper()
        response = _call("enable", method, url, body)
        gone = " (it was already gone)" if response.status_code == NOT_FOUND else ""
        log.info("monitoring enabled for %s (%s %s answered %d)%s", values["fqdn"], method,
                 _shown(url), response.status_code, gone)
    clipboard["monitoring"] = {"suppressed": False, "silence_id": None}
    return clipboard
