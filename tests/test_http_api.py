"""The JSON API over real HTTP: one jarvis (real engine, store, fork server and worker
processes) in this process, its HTTP server on a free loopback port, asked with a
plain HTTP client from the test's thread, as CI would ask it.

Deploys reach ready by POST and polling; every refusal comes with its status and
one clear message; no answer ever holds a secret the design or a step held; the
OpenAPI document describes every route; /metrics has every family."""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.http.auth import digest
from bot.http.openapi import served
from bot.testing import TestBot
from clipboard import config as config_mod
from tests.aio import LoopThread, bot_in_thread
from tests.site import CORE_PIPELINES

pytestmark = pytest.mark.servers  # starts worker processes and jarvis

WORKERS = Path(__file__).parent / "workers"
TOKEN = "ci-token-0123456789abcdef"
READER = "reader-token-0123456789"
BUILDER = "builder-token-0123456789"
DESIGN_SECRET = "Zebra-Quartz-91-secret-value"
ACTIONS = ("deploy", "cancel", "retry", "lock", "unlock", "force")


def write_config(tmp: Path) -> Path:
    allow = {"allow": ["console:*", "http:ci"], "deny": [], "rooms": []}
    acl = {action: allow for action in ACTIONS}
    acl["deploy"] = {"allow": ["console:*", "http:ci", "http:builder"]}
    acl["approve"] = {"allow": ["console:*", "http:ci", "http:reader"]}
    data = {
        "store": {"path": str(tmp / "jarvis.db")},
        "runner": {"worker_dirs": [str(WORKERS)], "kill_grace": 0.5},
        "pipelines": {
            **CORE_PIPELINES,
            "slow": {"steps": ["core:validate", "shellworker:sleepy", "core:randpass"]},
            "leaky": {"steps": ["core:validate", "core:randpass", "shellworker:leak"]},
        },
        "http": {"listen": "127.0.0.1:0", "read": "open",
                 "tokens": {"ci": {"sha256": digest(TOKEN)},
                            "reader": {"sha256": digest(READER)},
                            "builder": {"sha256": digest(BUILDER)}}},
        "acl": acl,
    }
    path = tmp / "jarvis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def design(hostname: str, **notes: Any) -> str:
    return yaml.safe_dump({"instance": {"hostname": hostname,
                                        "fqdn": f"{hostname}.example.com",
                                        "provider": "local"},
                           "notes": {"sleep": 30, **notes}})


@pytest.fixture(scope="module")
def jarvis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopThread, TestBot]]:
    tmp = tmp_path_factory.mktemp("http-api")
    with bot_in_thread(config_mod.load(write_config(tmp))) as (loop, bot):
        yield loop, bot


class Client:
    """Plain HTTP/1.1 from the test's thread; every JSON answer is kept (the secrets
    test reads them all)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.seen: list[str] = []

    def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN,
             raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, headers, text = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, headers, text = error.code, dict(error.headers), error.read()
        decoded = text.decode()
        self.seen.append(decoded)
        is_json = headers.get("Content-Type", "").startswith("application/json")
        return status, headers, json.loads(decoded) if is_json else decoded

    def get(self, path: str, **kw: Any) -> Any:
        status, _, data = self.call("GET", path, **kw)
        assert status == 200, (path, status, data)
        return data

    def until(self, path: str, states: tuple[str, ...], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = self.get(path)
            if found["state"] in states:
                return found
            assert time.monotonic() < deadline, f"{path} stayed {found['state']}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def client(jarvis: tuple[LoopThread, TestBot]) -> Client:
    _, bot = jarvis
    assert bot.bot.http is not None
    return Client(bot.bot.http.port)


def test_a_deploy_by_post_reaches_ready(client: Client) -> None:
    status, headers, data = client.call("POST", "/api/v1/deployments",
                                        {"design": design("web1")})
    assert status == 202, data
    number = data["deployment"]["id"]
    assert headers["Location"] == f"/api/v1/deployments/{number}"
    assert data["deployment"]["source_kind"] == "http"
    assert data["deployment"]["requester"] == "http:ci"
    assert client.until(headers["Location"], ("ready", "failed"))["state"] == "ready"
    host = client.get("/api/v1/hosts/web1")
    assert host["state"] == "ready" and host["deployment"]["id"] == number
    assert [s["name"] for s in host["steps"]] == ["core:validate", "core:randpass",
                                                 "core:keypair"]
    steps = client.get(f"/api/v1/deployments/{number}/steps")
    assert [(s["index"], s["kind"], s["state"]) for s in steps] == [
        (1, "step", "ok"), (2, "step", "ok"), (3, "step", "ok")]
    assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in steps)
    after = client.get(f"/api/v1/deployments/{number}/clipboard?after=2")
    assert after["clipboard"]["instance"]["root_password"] == "***"
    assert "after step 2/3 core:randpass" in after["title"]
    fetched = client.get(f"/api/v1/deployments/{number}/clipboard?after=0")
    assert "root_password" not in fetched["clipboard"]["instance"]
    listed = client.get("/api/v1/deployments?host=web1&state=ready")
    assert [d["id"] for d in listed["deployments"]] == [number]


def test_a_source_deploy_dry_run_and_paging(client: Client) -> None:
    status, _, data = client.call("POST", "/api/v1/deployments",
                                  {"design": design("dry1"), "dry_run": True})
    assert status == 200 and data["dry_run"] is True
    assert data["lines"][0].startswith("dry1: dry run of pipeline deploy, would run 3 steps")
    ids = []
    for name in ("page1", "page2", "page3"):
        status, _, data = client.call("POST", "/api/v1/deployments", {"design": design(name)})
        assert status == 202, data
        ids.append(data["deployment"]["id"])
    first = client.get("/api/v1/deployments?limit=2")
    assert [d["id"] for d in first["deployments"]] == [ids[2], ids[1]]
    assert first["next"] == f"/api/v1/deployments?limit=2&before={ids[1]}"
    second = client.get(first["next"])
    assert second["deployments"][0]["id"] == ids[0]
    for number in ids:
        client.until(f"/api/v1/deployments/{number}", ("ready",))


def test_a_cluster_deployed_by_post_is_summarised(client: Client) -> None:
    text = yaml.safe_dump({"cluster": "grid", "defaults": {"provider": "local",
                                                           "domain": "example.com"},
                           "hosts": [{"hostname": "grid{n}", "count": 3}]})
    status, headers, data = client.call("POST", "/api/v1/deployments", {"design": text})
    assert status == 202, data
    assert headers["Location"] == "/api/v1/clusters/grid%231" and len(data["deployments"]) == 3
    deadline = time.monotonic() + 60
    while (found := client.get("/api/v1/clusters/grid"))["counts"].get("ready") != 3:
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    assert found["cluster"] == "grid#1" and found["total"] == 3
    assert client.get(headers["Location"])["cluster"] == "grid#1"
    assert sorted(h["hostname"] for h in found["hosts"]) == ["grid1", "grid2", "grid3"]


def test_refusals_each_with_its_status_and_message(client: Client) -> None:
    body = {"design": design("refused1")}
    status, _, data = client.call("POST", "/api/v1/deployments", body, token=None)
    assert (status, data["error"]) == (401, ("a bearer token is needed "
                                            "(Authorization: Bearer <token>)"))
    status, _, data = client.call("POST", "/api/v1/deployments", body, token="wrong-token")
    assert (status, data["error"]) == (401, "the bearer token is not one jarvis knows")
    status, _, data = client.call("POST", "/api/v1/deployments", body, token=READER)
    assert status == 403 and "acl.deploy" in data["error"] and "http:reader" in data["error"]
    status, _, data = client.call("POST", "/api/v1/deployments", {**body, "force": True},
                                  token=BUILDER)
    assert status == 403 and "acl.force" in data["error"] and "http:builder" in data["error"]
    status, _, data = client.call("POST", "/api/v1/deployments", raw=b"{not json")
    assert status == 400 and data["error"].startswith("the request body is not JSON")
    status, _, data = client.call("POST", "/api/v1/deployments", {"design": 5})
    assert (status, data["error"]) == (400, '"design" must be a non-empty string')
    status, _, data = client.call("POST", "/api/v1/deployments",
                                  {"design": "a", "source": "https://gist.github.com/x"})
    assert status == 400 and data["error"].startswith('deploy takes either "source"')
    status, _, data = client.call("GET", "/api/v1/hosts/web_1;rm")
    assert status == 400 and "hostname" in data["error"]
    status, _, data = client.call("GET", "/api/v1/deployments?state=sleeping")
    assert status == 400 and data["error"].startswith("state must be one of")
    status, _, data = client.call("GET", "/api/v1/deployments?limit=0")
    assert status == 400 and data["error"].startswith("limit must be a whole number")
    for path in ("/api/v1/deployments/%C2%B2", "/api/v1/deployments/" + "9" * 30,
                 "/api/v1/deployments?before=" + "9" * 30):
        status, _, data = client.call("GET", path)
        assert status == 400 and data["error"], path
    for path in ("/api/v1/deployments/999999", "/api/v1/hosts/neverseen",
                 "/api/v1/clusters/nosuch", "/api/v1/nothing/here"):
        status, _, data = client.call("GET", path)
        assert status == 404 and data["error"], path
    assert client.call("GET", "/api/v1/hosts/neverseen")[2]["error"] == "neverseen: never deployed"


@pytest.mark.parametrize(("text", "says"), [
    ("instance:\n  hostname: l\u043eki\n  provider: local\n", "hostname"),
    ("instance:\n  hostname: 'web1; rm -rf /'\n  provider: local\n", "hostname"),
    ("instance: !!python/object/apply:os.system ['true']\n", "YAML tag that is not allowed"),
    ("instance:\n  hostname: lol\n" + "\n".join(
        [f"a0: &a0 [{','.join(['lol'] * 10)}]"]
        + [f"a{n}: &a{n} [{','.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]),
     "nodes"),
    ("instance:\n  hostname: dup\ninstance:\n  hostname: dup2\n", "twice"),
    ("- just\n- a list\n", "mapping"),
], ids=["homoglyph", "shell", "python-tag", "laughs", "duplicate-key", "not-a-mapping"])
def test_a_hostile_design_in_the_body_is_refused(client: Client, text: str, says: str) -> None:
    status, _, data = client.call("POST", "/api/v1/deployments", {"design": text})
    assert status == 400, data
    assert says in data["error"] and "\n" not in data["error"]


def test_a_forced_deploy_waits_for_a_second_token_to_approve(client: Client) -> None:
    status, headers, data = client.call("POST", "/api/v1/deployments",
                                        {"design": design("forced1"), "force": True})
    assert status == 202 and data["deployment"]["state"] == "awaiting approval", data
    assert data["deployment"]["approval"]["requested_by"] == "http:ci"
    status, _, data = client.call("POST", "/api/v1/hosts/forced1/approve")
    assert status == 400 and "cannot approve it too" in data["error"]
    status, _, data = client.call("POST", "/api/v1/hosts/forced1/approve", token=READER)
    assert status == 200 and "approved by http:reader" in data["lines"][0]
    assert client.until(headers["Location"], ("ready",))["approval"]["approved_by"] == \
        "http:reader"


def test_busy_and_locked_hosts_are_409(client: Client) -> None:
    status, _, data = client.call("POST", "/api/v1/deployments",
                                  {"design": design("busy1"), "pipeline": "slow"})
    assert status == 202, data
    status, _, data = client.call("POST", "/api/v1/deployments", {"design": design("busy1")})
    assert status == 409 and "busy1 is being deployed by" in data["error"]
    status, _, data = client.call("POST", "/api/v1/hosts/busy1/cancel")
    assert status == 200 and data["lines"][0].startswith("busy1: cancelling deployment #")
    assert client.until("/api/v1/hosts/busy1", ("cancelled",))["state"] == "cancelled"
    status, _, data = client.call("POST", "/api/v1/hosts/busy1/lock",
                                  {"reason": "kernel by hand"})
    assert status == 200 and data["lock"]["reason"] == "kernel by hand"
    assert data["lock"]["owner"] == "http:ci"
    assert [lock["hostname"] for lock in client.get("/api/v1/locks")["locks"]] == ["busy1"]
    status, _, data = client.call("POST", "/api/v1/deployments", {"design": design("busy1")})
    assert status == 409 and "busy1 is locked by http:ci" in data["error"]
    status, _, data = client.call("POST", "/api/v1/hosts/busy1/retry")
    assert status == 409 and "locked" in data["error"]
    status, _, data = client.call("POST", "/api/v1/hosts/busy1/unlock")
    assert status == 200 and data["lock"] is None
    status, _, data = client.call("POST", "/api/v1/hosts/busy1/unlock", token=READER)
    assert status == 403 and "acl.unlock" in data["error"]


def test_secrets_are_in_no_answer(jarvis: tuple[LoopThread, TestBot], client: Client) -> None:
    loop, bot = jarvis
    start = len(client.seen)
    text = design("leaky1", db_password=DESIGN_SECRET)
    status, headers, data = client.call("POST", "/api/v1/deployments",
                                        {"design": text, "pipeline": "leaky"})
    assert status == 202, data
    number = data["deployment"]["id"]
    assert client.until(headers["Location"], ("failed",))["state"] == "failed"
    client.call("POST", "/api/v1/deployments", {"design": text, "dry_run": True})
    for path in ("/api/v1/hosts/leaky1", "/api/v1/deployments?host=leaky1",
                 f"/api/v1/deployments/{number}", f"/api/v1/deployments/{number}/steps",
                 f"/api/v1/deployments/{number}/logs", f"/api/v1/deployments/{number}/logs?step=3",
                 *(f"/api/v1/deployments/{number}/clipboard?after={n}" for n in range(3)),
                 f"/api/v1/deployments/{number}/clipboard", "/metrics"):
        client.call("GET", path)
    store = bot.bot.store
    held = loop.run(store.clipboards(number))
    password = held[-1]["instance"]["root_password"]
    logs = client.get(f"/api/v1/deployments/{number}/logs?step=3")["lines"]
    assert any("login as root:***" in line for line in logs), logs
    answers = "\n".join(client.seen[start:])
    assert "root_password" in answers  # the key is shown, its value never
    for secret in (DESIGN_SECRET, password):
        assert secret not in answers
        assert not re.search(re.escape(secret[:10]), answers)


def test_openapi_describes_every_route(jarvis: tuple[LoopThread, TestBot],
                                       client: Client) -> None:
    _, bot = jarvis
    assert bot.bot.http is not None
    document = client.get("/api/v1/openapi.json")
    assert document["openapi"].startswith("3.1")
    routes = {(path, method) for path, method in served(bot.bot.http.app)
              if path.startswith("/api/v1")}
    assert len(routes) >= 17
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes - described == set()
    assert described - routes == set()  # nothing claimed that is not served


def test_metrics_has_every_family(client: Client) -> None:
    client.call("POST", "/api/v1/deployments", {"design": design("metered1")})
    client.until("/api/v1/hosts/metered1", ("ready",))
    text = client.get("/metrics", token=None)
    for family in ("jarvis_deployments", "jarvis_step_duration_seconds", "jarvis_steps_in_flight",
                   "jarvis_steps_waiting", "jarvis_chat_reconnects_total",
                   "jarvis_webhook_deliveries_total", "jarvis_webhook_failures_total"):
        assert re.search(rf"^# TYPE {family} ", text, re.MULTILINE), family
    ready = re.search(r'^jarvis_deployments\{state="ready"\} (\S+)$', text, re.MULTILINE)
    assert ready is not None and float(ready.group(1)) >= 1
    counted = re.search(r'^jarvis_step_duration_seconds_count\{kind="step",outcome="ok",'
                        r'step="core:keypair"\} (\S+)$', text, re.MULTILINE)
    assert counted is not None and float(counted.group(1)) >= 1
