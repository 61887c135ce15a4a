"""monitoring:suppress / monitoring:enable against a real HTTP receiver."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.servers.monitoring_http import Receiver
from tests.silos import output, run_worker

TOKEN = "tok-3f9a8c2e71d4b6a0"


def clip(hostname: str = "loki") -> dict[str, Any]:
    return {"instance": {"hostname": hostname, "fqdn": f"{hostname}.example.com"},
            "node": {"ip": "127.0.3.7"}}


def alertmanager(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    section = {"url": receiver.url("/api/v2/silences"), "token_env": "TEST_MON_TOKEN",
               "enable_url": receiver.url("/api/v2/silence/{silence_id}"), "timeout": 5}
    section.update(overrides)
    return {"monitoring": section}


ENV = {"TEST_MON_TOKEN": TOKEN}


def test_suppress_then_enable_alertmanager_style(monitoring: Receiver, tmp_path: Path) -> None:
    config = alertmanager(monitoring)
    suppressed = run_worker("monitoring:suppress", clip(), config, tmp_path, ENV)
    after = output(suppressed)
    assert after["monitoring"] == {"suppressed": True, "silence_id": "silence-1"}
    [call] = monitoring.calls
    assert (call.method, call.path) == ("POST", "/api/v2/silences")
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["content-type"] == "application/json"
    body = call.json()
    assert body["matchers"] == [{"name": "instance", "value": "loki.example.com", "isRegex": False}]
    starts = datetime.fromisoformat(body["startsAt"].replace("Z", "+00:00"))
    ends = datetime.fromisoformat(body["endsAt"].replace("Z", "+00:00"))
    assert (ends - starts).total_seconds() == 7200
    assert "loki" in body["comment"]

    enabled = run_worker("monitoring:enable", after, config, tmp_path, ENV)
    assert output(enabled)["monitoring"] == {"suppressed": False, "silence_id": None}
    assert [(c.method, c.path, c.body) for c in monitoring.calls[1:]] == [
        ("DELETE", "/api/v2/silence/silence-1", "")]
    for result in (suppressed, enabled):
        assert TOKEN not in result.stderr


def test_each_step_twice_calls_once(monitoring: Receiver, tmp_path: Path) -> None:
    config = alertmanager(monitoring)
    first = output(run_worker("monitoring:suppress", clip(), config, tmp_path, ENV))
    again = run_worker("monitoring:suppress", first, config, tmp_path, ENV)
    assert again.returncode == 0 and again.stdout == ""
    enabled = output(run_worker("monitoring:enable", first, config, tmp_path, ENV))
    again = run_worker("monitoring:enable", enabled, config, tmp_path, ENV)
    assert again.returncode == 0 and again.stdout == ""
    assert [c.method for c in monitoring.calls] == ["POST", "DELETE"]


def test_icinga_style_downtime(monitoring: Receiver, tmp_path: Path) -> None:
    config = {"monitoring": {
        "url": monitoring.url("/v1/actions/schedule-downtime"),
        "suppress_body": '{"type": "Host", "filter": "host.name==\\"{fqdn}\\"", '
                         '"start_time": "{starts_at}", "duration": {duration}}',
        "silence_id_field": "results.0.name",
        "enable_url": monitoring.url("/v1/actions/remove-downtime"),
        "enable_method": "POST", "enable_body": '{"downtime": "{silence_id}"}'}}
    monitoring.reply(200, json.dumps({"results": [{"code": 200, "name": "loki!jarvis-1"}]}))
    after = output(run_worker("monitoring:suppress", clip(), config, tmp_path))
    assert after["monitoring"]["silence_id"] == "loki!jarvis-1"
    output(run_worker("monitoring:enable", after, config, tmp_path))
    suppress_call, enable_call = monitoring.calls
    assert suppress_call.json()["filter"] == 'host.name=="loki.example.com"'
    assert suppress_call.json()["duration"] == 7200
    assert "authorization" not in suppress_call.headers
    assert (enable_call.method, enable_call.path) == ("POST", "/v1/actions/remove-downtime")
    assert enable_call.json() == {"downtime": "loki!jarvis-1"}


def test_error_answer_fails_with_status_and_no_token(monitoring: Receiver, tmp_path: Path) -> None:
    monitoring.reply(500, f'{{"error": "bad token {TOKEN}"}}')
    result = run_worker("monitoring:suppress", clip(), alertmanager(monitoring), tmp_path, ENV)
    assert result.returncode == 1
    assert "answered 500" in result.stderr and "Traceback" not in result.stderr
    assert TOKEN not in result.stderr + result.stdout


def test_enable_of_vanished_silence_succeeds(monitoring: Receiver, tmp_path: Path) -> None:
    monitoring.reply(404, '{"error": "silence not found"}')
    state = {**clip(), "monitoring": {"suppressed": True, "silence_id": "silence-99"}}
    out = output(run_worker("monitoring:enable", state, alertmanager(monitoring), tmp_path, ENV))
    assert out["monitoring"]["suppressed"] is False
    assert monitoring.calls[0].path == "/api/v2/silence/silence-99"


def test_not_configured_is_harmless(tmp_path: Path) -> None:
    for step in ("monitoring:suppress", "monitoring:enable"):
        result = run_worker(step, clip(), {}, tmp_path)
        assert result.returncode == 0 and result.stdout == ""
        assert "monitoring not configured" in result.stderr


def test_unknown_placeholder_is_a_clear_config_error(monitoring: Receiver, tmp_path: Path) -> None:
    config = alertmanager(monitoring, suppress_body='{"host": "{hostnme}"}')
    result = run_worker("monitoring:suppress", clip(), config, tmp_path, ENV)
    assert result.returncode == 1
    assert "unknown placeholder {hostnme}" in result.stderr
    assert monitoring.calls == []
