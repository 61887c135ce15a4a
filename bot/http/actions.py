"""The API's actions (``POST /api/v1/…``): deploy, cancel, retry, lock, unlock, approve.

Each is the chat command of the same name, run by the same ``Commands`` method after
the same ACL check (``authorize``: identity ``http:<token-name>``, ``acl.force`` too
for a forced deploy), so an action is allowed, refused and carried out exactly as
the chat line would be; only the way in and the answer's shape differ. Every action
needs a token, whatever ``http.read`` says.

A deploy names a source (``{"source": "https://…"}``: fetched as chat fetches it, with
a chat network's rights, so a file only from ``sources.file.roots``) or carries the
design (``{"design": "<YAML>"}``): parsed with the limits a fetched design gets
(``clipboard.max_bytes``, ``clipboard.max_nodes``, no tags, no duplicate keys) and
recorded with a source of kind ``http``. The answer is ``202 Accepted`` with a
``Location`` to follow (the deployment, or the cluster run); a dry run is ``200``.
What started comes back as data (``bot.deploying.Deployed``), not read from the words
of the answer's lines.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from bot.deploying import Deployed
from bot.grammar import Command
from bot.http import shapes
from bot.http.api import PREFIX, answer
from bot.http.requests import authorize, context, identity
from clipboard import document
from clipboard.errors import JarvisError, NotFound
from clipboard.records import summarize
from clipboard.run import Source
from clipboard.validate import check_hostname

log = logging.getLogger(__name__)

DEPLOY_KEYS = frozenset({"source", "design", "pipeline", "force", "dry_run"})
HOST_ACTIONS = ("cancel", "retry", "lock", "unlock", "approve")
CLUSTER_ACTIONS = ("cancel", "retry")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (an empty body is ``{}``); 400 for anything else."""
    text = await request.text()
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise JarvisError(f"the request body is not JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise JarvisError("the request body must be a JSON object")
    return data


def deploy_command(body: dict[str, Any]) -> Command:
    """The ``deploy`` command a deploy request means (its design, if any, apart)."""
    unknown = set(body) - DEPLOY_KEYS
    if unknown:
        raise JarvisError(f"deploy does not take {', '.join(sorted(unknown))}; it takes "
                          f"{', '.join(sorted(DEPLOY_KEYS))}")
    source, design = body.get("source"), body.get("design")
    if (source is None) == (design is None):
        raise JarvisError('deploy takes either "source" (a gist or https URL, cn=<host>) '
                          'or "design" (the design as YAML text)')
    for key, value in (("source", source), ("design", design), ("pipeline", body.get("pipeline"))):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise JarvisError(f'"{key}" must be a non-empty string')
    for key in ("force", "dry_run"):
        if not isinstance(body.get(key, False), bool):
            raise JarvisError(f'"{key}" must be true or false')
    flags = {"force"} if body.get("force") else set()
    if body.get("dry_run"):
        flags.add("dry-run")
    options = {"pipeline": str(body["pipeline"])} if body.get("pipeline") else {}
    return Command("deploy", [source.strip()] if source else [], options, flags)


async def read_design(request: web.Request, text: str, who: str
                      ) -> tuple[dict[str, Any], Source]:
    """A design sent as text, parsed with the limits a fetched design gets, in a thread:
    a design at the size limit takes the parser a while, and the loop serves everyone."""
    config = context(request).config
    design = await asyncio.to_thread(
        document.load, text, max_bytes=config.limits.max_bytes,
        max_nodes=config.limits.max_nodes, what="the design in the request body")
    return design, Source(f"request body from {who}", "http",
                          hashlib.sha256(text.encode()).hexdigest(), time.time())


async def deploy(request: web.Request) -> web.Response:
    """``POST /api/v1/deployments``: ``{"source": …}`` or ``{"design": …}``, with
    ``pipeline``, ``force`` and ``dry_run`` as chat's ``deploy`` takes them."""
    identity(request)
    ctx = context(request)
    body = await json_body(request)
    command = deploy_command(body)
    asker = authorize(request, command)
    if command.args:
        design, source = await ctx.commands.load_design(command.args[0], asker)
    else:
        design, source = await read_design(request, str(body["design"]), asker.identity)
    deployed = await ctx.commands.deployer.deploy(command, asker, design, source)
    lines = ctx.commands.scrubber.lines(deployed.lines)
    log.info("http deploy by %s: %s", asker.identity, lines[0] if lines else "")
    if "dry-run" in command.flags:
        return answer(request, {"dry_run": True, "lines": lines})
    return await started(request, deployed, lines)


async def started(request: web.Request, deployed: Deployed, lines: list[str]) -> web.Response:
    """202 naming what the deploy started, with its ``Location``."""
    store = context(request).store
    found = None if deployed.deployment_id is None else \
        await store.deployment(deployed.deployment_id)
    if found is not None:
        response = answer(request, {"deployment": shapes.deployment(found), "lines": lines},
                          status=202)
        response.headers["Location"] = f"{PREFIX}/deployments/{found.id}"
        return response
    if deployed.cluster_id is not None:
        members = await store.by_cluster(deployed.cluster_id)
        response = answer(request, {"cluster": deployed.cluster_id,
                                    "deployments": [d.id for d in members],
                                    "lines": lines}, status=202)
        response.headers["Location"] = f"{PREFIX}/clusters/{quote(deployed.cluster_id, safe='')}"
        return response
    return answer(request, {"lines": lines}, status=202)


def action_of(request: web.Request) -> str:
    """The action a ``…/<action>`` route names (each is a route of its own, so the
    OpenAPI document and the router list the same paths)."""
    return request.path.rstrip("/").rpartition("/")[2]


async def host_action(request: web.Request) -> web.Response:
    """``POST /api/v1/hosts/<host>/<action>``; ``lock`` takes ``{"reason": "…"}``."""
    identity(request)
    ctx = context(request)
    action = action_of(request)
    host = check_hostname(request.match_info["host"])
    body = await json_body(request)
    allowed = {"reason"} if action == "lock" else set()
    unknown = set(body) - allowed
    if unknown:
        raise JarvisError(f"{action} does not take {', '.join(sorted(unknown))}")
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise JarvisError('"reason" must be a string')
    command = Command(action, [host], text=" ".join(reason.split()))
    lines = await ctx.commands.run(command, authorize(request, command))
    found = await ctx.store.status_of(host, {}, 1, host)
    return answer(request, {"lines": lines, **shapes.host(host, found.deployment, found.steps,
                                                          found.lock)})


async def cluster_action(request: web.Request) -> web.Response:
    """``POST /api/v1/clusters/<name>/<action>``: cancel (drain) or retry a cluster run."""
    identity(request)
    ctx = context(request)
    action, name = action_of(request), request.match_info["name"].lower()
    if await json_body(request):
        raise JarvisError(f"{action} of a cluster takes no body")
    cluster_id = await ctx.store.latest_cluster(name)
    if cluster_id is None:
        raise NotFound(f"no cluster {'run' if '#' in name else 'named'} {name}")
    command = Command(action, [cluster_id])
    lines = await ctx.commands.run(command, authorize(request, command))
    members = await ctx.store.by_cluster(cluster_id)
    return answer(request, {"lines": lines, **shapes.cluster(
        cluster_id, members, summarize(members, len(members)))})


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/deployments", deploy)
    for action in HOST_ACTIONS:
        app.router.add_post(f"{PREFIX}/hosts/{{host}}/{action}", host_action)
    for action in CLUSTER_ACTIONS:
        app.router.add_post(f"{PREFIX}/clusters/{{name}}/{action}", cluster_action)
