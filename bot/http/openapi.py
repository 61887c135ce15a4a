"""``/api/v1/openapi.json``: the API described in OpenAPI 3.1, written by hand.

By hand, because the handlers take their parameters from the request rather than from
typed signatures a generator could read; a test keeps it honest by checking that
every ``/api/v1`` route the application registers is described here, with its method.
The events and watches (``bot.http.events``, another module's routes) are described
here too, and shown when the application serves them.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.http.requests import json_response

ERROR = {"$ref": "#/components/schemas/Error"}
JSON = "application/json"


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description,
            "content": {JSON: {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    says = {400: "Bad input (bad JSON, a bad hostname, a design jarvis refuses)",
            401: "No token, or one jarvis does not know",
            403: "The ACL refused; the message names the rule",
            404: "No such host, deployment, cluster or step",
            409: "The host is busy (being deployed) or locked"}
    return {str(code): _json(says[code], ERROR) for code in codes}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def _query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": kind}}


def _read(summary: str, params: list[dict[str, Any]], ok: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params,
                    "responses": {"200": _json("OK", ok), **_errors(400, 401, 404)}}}


def _action(summary: str, params: list[dict[str, Any]], body: dict[str, Any] | None = None,
            ok: str = "200") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary, "parameters": params, "security": [{"bearer": []}],
        "responses": {ok: _json("Done; `lines` is what chat would have answered"),
                      **_errors(400, 401, 403, 404, 409)}}
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {JSON: {"schema": body}}}
    return {"post": operation}


HOST = _path("host", "The hostname (an RFC 1123 label)")
DEPLOYMENT = _path("id", "The deployment's number")
CLUSTER = _path("name", "A cluster run (`shop#2`) or a cluster's name (its newest run)")
DEPLOY_BODY = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "source": {"type": "string", "description": "A gist or https URL, or cn=<host>"},
        "design": {"type": "string", "description": "The design itself, as YAML text"},
        "pipeline": {"type": "string"}, "force": {"type": "boolean"},
        "dry_run": {"type": "boolean"}},
    "oneOf": [{"required": ["source"]}, {"required": ["design"]}]}


def served(app: web.Application) -> set[tuple[str, str]]:
    """(path, method) of every route the application serves, as OpenAPI names them."""
    return {(route.resource.canonical, route.method.lower()) for route in app.router.routes()
            if route.resource is not None and route.method != "HEAD"}


def document(routes: set[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The OpenAPI document; with ``routes`` (``served``), only the operations among them:
    the events and watches are described here but served by ``bot.http.events``, and a
    jarvis without them must not claim them."""
    paths: dict[str, Any] = {
        "/api/v1/hosts/{host}": _read(
            "A host's latest deployment, its steps and its lock (chat's status <host>)",
            [HOST], {"$ref": "#/components/schemas/Host"}),
        "/api/v1/deployments": {
            **_read("Deployments, newest first; follow `next` for the next page", [
                _query("host", "Only this host's"), _query("cluster", "Only this run's "
                                                            "(shop#2) or any run's (shop)"),
                _query("state", "Only in this state (ready, failed, running, …)"),
                _query("limit", "At most this many (1–200, default 50)", "integer"),
                _query("before", "Only older than this id (the cursor in `next`)",
                       "integer")]),
            **_action("Deploy a design from a source or in the body; 202 with Location "
                      "(200 for a dry run)", [], DEPLOY_BODY, ok="202")},
        "/api/v1/deployments/{id}": _read("One deployment", [DEPLOYMENT],
                                          {"$ref": "#/components/schemas/Deployment"}),
        "/api/v1/deployments/{id}/steps": _read(
            "Its step runs and undos, every attempt, with timings", [DEPLOYMENT],
            {"type": "array", "items": {"$ref": "#/components/schemas/Step"}}),
        "/api/v1/deployments/{id}/clipboard": _read(
            "The clipboard after a step, secrets masked", [DEPLOYMENT, _query(
                "after", "3, a step name, 3.undo, or 0 (the design as fetched); "
                         "none: the latest")]),
        "/api/v1/deployments/{id}/logs": _read(
            "What a step left on stderr, scrubbed", [DEPLOYMENT, _query(
                "step", "3, a step name or 3.undo; none: the last failed step, else the "
                        "last that ran")]),
        "/api/v1/clusters/{name}": _read("A cluster run: counts and every host's state",
                                         [CLUSTER]),
        "/api/v1/locks": _read("Every operator lock", []),
        "/api/v1/openapi.json": _read("This document", []),
    }
    for action in ("cancel", "retry", "lock", "unlock", "approve"):
        body = ({"type": "object", "properties": {"reason": {"type": "string"}}}
                if action == "lock" else None)
        paths[f"/api/v1/hosts/{{host}}/{action}"] = _action(
            f"{action.capitalize()} the host, as chat's `{action} <host>`", [HOST], body)
    for action in ("cancel", "retry"):
        paths[f"/api/v1/clusters/{{name}}/{action}"] = _action(
            f"{action.capitalize()} a cluster run, as chat's `{action} <cluster>`", [CLUSTER])
    paths["/api/v1/events"] = _read(
        "Server-Sent Events, one per engine event; resumable with Last-Event-ID", [
            _query("host", "Only this host's"), _query("cluster", "Only this cluster's"),
            _query("deployment", "Only this deployment's", "integer"),
            _query("kind", "Only kinds starting so (step: step.*)"),
            _query("after", "Replay from after this event id", "integer")])
    paths["/api/v1/watches"] = {
        **_read("The webhook watches (secrets never shown)", []),
        **_action("Register a webhook watch", [], {"type": "object"}, ok="201")}
    paths["/api/v1/watches/{id}"] = {
        **_read("One webhook watch", [_path("id", "The watch's id")]),
        "delete": {"summary": "Remove a webhook watch", "security": [{"bearer": []}],
                   "parameters": [_path("id", "The watch's id")],
                   "responses": {"200": _json("Removed"), **_errors(401, 403, 404)}}}
    if routes is not None:
        paths = {path: kept for path, item in paths.items()
                 if (kept := {m: op for m, op in item.items() if (path, m) in routes})}
    return {
        "openapi": "3.1.0",
        "info": {"title": "jarvis", "version": "1",
                 "description": "jarvis's chat commands over HTTP. Reads are open or need "
                                "a token (http.read); actions always need one and pass the "
                                "ACL as http:<token-name>."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS}}


_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}},
    "Step": {"type": "object", "properties": {
        "index": {"type": "integer", "description": "The step's number (1 = first)"},
        "name": {"type": "string"}, "kind": {"enum": ["step", "undo"]},
        "state": {"type": "string"}, "started_at": _NULLABLE_NUM,
        "finished_at": _NULLABLE_NUM, "seconds": _NULLABLE_NUM,
        "exit_status": {"type": ["integer", "null"]}, "error": _NULLABLE_STR,
        "attempt": {"type": "integer"}}},
    "Deployment": {"type": "object", "properties": {
        "id": {"type": "integer"}, "hostname": {"type": "string"}, "cluster": _NULLABLE_STR,
        "state": {"type": "string"}, "pipeline": {"type": "string"},
        "steps": {"type": "array", "items": {"type": "string"}},
        "current_step": {"type": "integer"}, "total": {"type": "integer"},
        "attempt": {"type": "integer"}, "error": _NULLABLE_STR, "requester": _NULLABLE_STR,
        "source": {"type": "string"}, "source_kind": _NULLABLE_STR,
        "created_at": {"type": "number"}, "started_at": _NULLABLE_NUM,
        "finished_at": _NULLABLE_NUM, "labels": {"type": "object"}}},
    "Host": {"type": "object", "properties": {
        "hostname": {"type": "string"}, "state": _NULLABLE_STR,
        "deployment": {"oneOf": [{"$ref": "#/components/schemas/Deployment"},
                                 {"type": "null"}]},
        "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
        "lock": {"type": ["object", "null"]}}},
}


async def openapi(request: web.Request) -> web.Response:
    return json_response(document(served(request.app)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi)
