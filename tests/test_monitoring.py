"""monitoring:suppress / monitoring:enable against a real Alertmanager and a real HTTP
receiver (any other silence API). The clipboards carry ``jarvis:`` the way the engine
hands it to a worker: the recorded silence is bound to that deployment."""
from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.servers.alertmanager import Alertmanager
from tests.servers.monitoring_http import Receiver
from tests.silos import output, run_worker

pytestmark = pytest.mark.servers  # starts worker processes, servers or jarvis

TOKEN = "tok-3f9a8c2e71d4b6a0"
FORGED = "../../../admin/wipe?all=true&x="


def clip(hostname: str = "loki", deployment: int = 7) -> dict[str, Any]:
    return {"instance": {"hostname": hostname, "fqdn": f"{hostname}.example.com"},
            "node": {"ip": "127.0.3.7"},
            "jarvis": {"deployment": deployment, "pipeline": "redeploy", "force": False,
                       "requested_by": "console:ops"}}


def recorded(silence_id: Any, made_by: int = 7, hostname: str = "loki") -> dict[str, Any]:
    """Deployment 7's clipboard holding a silence record that deployment ``made_by``'s
    monitoring:suppress made for ``hostname`` (by default, its own for loki)."""
    return {**clip(),
            "monitoring": {"suppressed": True, "silence_id": silence_id, "hostname": hostname,
                           "deployment": made_by}}


def alertmanager(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    """Alertmanager's templates against the receiver, whose ids are not UUIDs (safe format)."""
    section = {"url": receiver.url("/api/v2/silences"), "token_env": "TEST_MON_TOKEN",
               "enable_url": receiver.url("/api/v2/silence/{silence_id}"), "timeout": 5,
               "silence_id_format": "safe"}
    section.update(overrides)
    return {"monitoring": section}


def real_alertmanager(am: Alertmanager) -> dict[str, Any]:
    """The shipped defaults (Alertmanager's body, UUID ids) against the real server."""
    return {"monitoring": {"url": am.url("/api/v2/silences"),
                           "enable_url": am.url("/api/v2/silence/{silence_id}"), "timeout": 5}}


ENV = {"TEST_MON_TOKEN": TOKEN}


def test_suppress_then_enable_alertmanager_style(monitoring: Receiver, tmp_path: Path) -> None:
    config = alertmanager(monitoring)
    suppressed = run_worker("monitoring:suppress", clip(), config, tmp_path, ENV)
    after = output(suppressed)
    assert after["monitoring"] == {"suppressed": True, "silence_id": "silence-1",
                                   "hostname": "loki", "deployment": 7}
    [call] = monitoring.calls
    assert (call.method, call.path) == ("POST", "/api/v2/silences")
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["content-type"] == "application/json"
    body = call.json()
    assert body["matchers"] == [{"name": "instance", "value": "loki.example.com", "isRegex": False}]
    starts = datetime.fromisoformat(body["startsAt"])
    ends = datetime.fromisoformat(body["endsAt"])
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
        "enable_method": "POST", "enable_body": '{"downtime": "{silence_id}"}',
        "silence_id_format": "safe"}}
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
    state = recorded("silence-99")
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


def test_a_real_alertmanager_silences_and_lifts_by_its_uuid(alertmanager: Alertmanager,
                                                            tmp_path: Path) -> None:
    config = real_alertmanager(alertmanager)
    after = output(run_worker("monitoring:suppress", clip("freya"), config, tmp_path))
    silence = after["monitoring"]["silence_id"]
    assert str(uuid.UUID(silence)) == silence
    live = alertmanager.silence(silence)
    assert live["status"]["state"] == "active"
    assert live["matchers"][0]["value"] == "freya.example.com"
    assert listed_state(alertmanager, silence) == "active"   # GET /api/v2/silences
    output(run_worker("monitoring:enable", after, config, tmp_path))
    assert alertmanager.silence(silence)["status"]["state"] == "expired"
    assert listed_state(alertmanager, silence) == "expired"


def listed_state(am: Alertmanager, silence_id: str) -> str:
    """The silence's state as Alertmanager's list of silences shows it."""
    [found] = [s for s in am.silences() if s["id"] == silence_id]
    return str(found["status"]["state"])


def test_an_id_of_the_wrong_format_is_refused_at_suppress(monitoring: Receiver,
                                                          tmp_path: Path) -> None:
    """Alertmanager's format is a UUID: an API answering anything else is not trusted."""
    config = alertmanager(monitoring, silence_id_format="uuid")
    result = run_worker("monitoring:suppress", clip(), config, tmp_path, ENV)
    assert result.returncode == 1
    assert 'monitoring answered a silence id "silence-1" is not a uuid id' in result.stderr
    monitoring.reply(200, json.dumps({"silenceID": "../admin"}))
    result = run_worker("monitoring:suppress", clip(), alertmanager(monitoring), tmp_path, ENV)
    assert result.returncode == 1 and "is not a safe id" in result.stderr


@pytest.mark.parametrize("state, why", [
    (recorded(FORGED), "is not a safe id"),
    (recorded(FORGED, made_by=3), "not one this deployment's monitoring:suppress made"),
    (recorded("silence-1", made_by=3), "not one this deployment's monitoring:suppress made"),
    (recorded("silence-1", hostname="odin"), "not one this deployment's monitoring:suppress made"),
    ({**clip(), "monitoring": {"suppressed": True, "silence_id": "silence-1"}},
     "not one this deployment's monitoring:suppress made"),
])
def test_enable_acts_only_on_a_silence_this_deployment_recorded(
        monitoring: Receiver, tmp_path: Path, state: dict[str, Any], why: str) -> None:
    result = run_worker("monitoring:enable", state, alertmanager(monitoring), tmp_path, ENV)
    assert result.returncode == 1 and why in result.stderr, result.stderr
    assert monitoring.calls == [], "the monitoring API was called with the token"
    assert TOKEN not in result.stderr


def test_a_real_alertmanager_never_sees_a_forged_id(alertmanager: Alertmanager,
                                                    tmp_path: Path) -> None:
    """Even bound to this deployment, a non-UUID id never reaches the API."""
    before = alertmanager.silences()
    result = run_worker("monitoring:enable", recorded(FORGED), real_alertmanager(alertmanager),
                        tmp_path)
    assert result.returncode == 1 and "is not a uuid id" in result.stderr
    assert alertmanager.silences() == before


def test_a_foreign_record_does_not_skip_suppress(monitoring: Receiver, tmp_path: Path) -> None:
    state = recorded("silence-40", made_by=3)
    after = output(run_worker("monitoring:suppress", state, alertmanager(monitoring), tmp_path,
                              ENV))
    assert [c.method for c in monitoring.calls] == ["POST"]
    assert after["monitoring"] == {"suppressed": True, "silence_id": "silence-1",
                                   "hostname": "loki", "deployment": 7}


def test_ids_are_quoted_whole_in_urls(monitoring: Receiver, tmp_path: Path) -> None:
    output(run_worker("monitoring:enable", recorded("loki!jarvis:1@a"), alertmanager(monitoring),
                      tmp_path, ENV))
    assert monitoring.calls[0].path == "/api/v2/silence/loki%21jarvis%3A1%40a"
