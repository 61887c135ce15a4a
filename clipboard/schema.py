"""What a design may say: the declared schema every design is held to before anything runs.

A design comes from a gist, a URL, an LDAP entry or a file, so whoever can edit
that source writes it — often not the operator who says ``deploy``. It is data
about the host, not authority: it may not pre-set what the steps write (a node
id that a rollback would destroy, a silence id that ``monitoring:enable`` would
put in a URL, host keys, a deploy key) nor what the operator decides (``force``,
the pipeline, who asked). So the design is an allowlist, checked once when the
deployment is planned (dry run included); anything else is refused with one line
naming the key and saying where such a key comes from. Keys are case-insensitive.

**Top level** of a single-host design:

==============  ==============================================================
``instance:``   the host, the fields below (required, with ``hostname``)
``notes:``      free-form (text, lists, mappings) kept with the deployment for
                people and for a site's own workers; no shipped step reads it,
                and a worker that does must treat it as the design author's data
==============  ==============================================================

A cluster design (one with ``hosts:``) has ``cluster:`` (or ``name:``),
``defaults:`` (or ``instance:``), ``roles:``, ``hosts:`` and ``notes:``; its
shared defaults, role instances and host entries hold the instance fields below
plus ``domain`` (see ``clipboard/cluster.py``).

**Instance fields**, and who reads them (``FIELDS``):

=================  ===========================================================
hostname           required, an RFC 1123 label; every silo
fqdn               a dotted name starting with the hostname; dnswizard,
                   ldapworker, keys, monitoring, the node's /etc/hosts
provider           node:create: local, or ec2/aws, linode, vsphere/vmware
size, grade        cloud: the size by name, or a grade mapped by ``grades``
guestid            cloud: the image name
datacenter         cloud: the location name
sshpubkey          the operator's public key, authorised for root on the node
root_password      the node's root password; core:randpass makes one when the
                   design gives none (a design that could authorise its own key
                   gains nothing by choosing the password)
production         inventory:production_check: a design may mark its host
                   production; it can never unmark what LDAP says
description        ldapworker: the entry's description
commands           ssh:run: commands run as root on the new node
mounts             ssh:mounts: ``{device, mountpoint, fstype, options}`` entries
kernel             ssh:kernel: the release to install and boot next
gitosis-admin      keys:publish, only with ``keys.from_design: true`` (then the
                   URL is held to ``check_repository_url``)
ip                 what the LDAP source maps ipHostNumber to; no step reads it
cluster, role      set by the cluster expansion; labels for ``status``
=================  ===========================================================

A site's own workers may read more fields: ``designs.instance_fields`` in the
configuration declares them, and the instance keys ``sources.ldap.attributes``
maps attributes to are accepted too (the operator configured both).

**Never from a design**: every top-level key a step declares it writes
(``@task(writes=...)``, carried to the bot in the workers' catalog), the fixed
``RESERVED`` set (whether or not a step writes it today), and operator intent
(``OPERATOR``), which the engine keeps under ``jarvis:``.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from clipboard import config as config_mod
from clipboard.errors import DesignError
from clipboard.settings import KeysSettings


@dataclass(frozen=True)
class Field:
    """One instance field: what values it takes and which silo reads it."""

    kind: str      # text | flag | texts | mappings | address
    readers: str


FIELDS: dict[str, Field] = {
    "hostname": Field("text", "every silo"),
    "fqdn": Field("text", "dnswizard, ldapworker, keys, monitoring"),
    "provider": Field("text", "node:create"),
    "size": Field("text", "cloud"),
    "grade": Field("text", "cloud (through grades)"),
    "guestid": Field("text", "cloud"),
    "datacenter": Field("text", "cloud"),
    "sshpubkey": Field("text", "local, cloud"),
    "root_password": Field("text", "core:randpass, local, cloud"),
    "production": Field("flag", "inventory:production_check"),
    "description": Field("text", "ldapworker"),
    "commands": Field("texts", "ssh:run"),
    "mounts": Field("mappings", "ssh:mounts"),
    "kernel": Field("text", "ssh:kernel"),
    "gitosis-admin": Field("text", "keys:publish (keys.from_design)"),
    "ip": Field("address", "the LDAP source"),
    "cluster": Field("text", "the cluster expansion, status"),
    "role": Field("text", "the cluster expansion, status"),
}

DESIGN_KEYS = ("instance", "notes")

# Written by steps or by jarvis itself: never from a design, whether or not a loaded
# worker declares it (the bot may plan before it knows every worker). The value is the
# step a person would look for.
RESERVED: dict[str, str] = {
    "node": "node:create", "ssh": "ssh:hostkeys", "dns": "dnswizard:update_host",
    "ldap": "ldapworker:update_host_ou", "keys": "keys:publish",
    "monitoring": "monitoring:suppress", "inventory": "inventory:production_check",
    "deploy_key": "core:keypair", "configmgmt": "config:bootstrap", "notify": "notify:send",
}

# What the operator decides; the engine keeps it under ``jarvis:``.
OPERATOR: dict[str, str] = {
    "jarvis": "is kept by jarvis itself (the deployment, pipeline, force and who asked); "
              "a design may not set it",
    "force": "is said by the operator (deploy … force), not written in a design",
    "pipeline": "is chosen by the operator (pipeline=…)",
    "requested_by": "is who said deploy, as the chat server verified it; a design may not set it",
    "requester": "is who said deploy, as the chat server verified it; a design may not set it",
    "deployment": "is numbered by jarvis; a design may not set it",
    "dry_run": "is said by the operator (deploy … --dry-run), not written in a design",
}

FIELD_KINDS = {
    "text": "text or a number",
    "flag": "true or false",
    "texts": "a list of text",
    "mappings": "a list of mappings",
    "address": "an address or a list of addresses",
}


def written_by(tasks: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, list[str]]:
    """Top-level key -> the steps that declare they write it.

    ``tasks`` is the workers' catalog (``Runner.tasks``); without it, the tasks
    registered in this process (a worker process, a test), if any.
    """
    if tasks is None:
        from clipboard import worker  # the registry; cheap, and imported by every worker
        tasks = {name: {"writes": info.writes} for name, info in worker.REGISTRY.items()}
    out: dict[str, list[str]] = {}
    for name, info in sorted(tasks.items()):
        for key in info.get("writes") or ():
            top = str(key).split(".", 1)[0].lower()
            if top != "instance":
                out.setdefault(top, []).append(name)
    return out


def refusal(key: str, writers: Mapping[str, list[str]]) -> str | None:
    """Why a design may not hold the top-level ``key`` when steps or the operator write it,
    or None."""
    if key in OPERATOR:
        return f"`{key}` {OPERATOR[key]}"
    steps = writers.get(key, [])
    main = RESERVED.get(key) or (steps[0] if steps else None)
    if main is None:
        return None
    others = len(set(steps) - {main})
    more = f" (and {others} other step{'s' if others > 1 else ''})" if others else ""
    return f"`{key}` is written by the step {main}{more}; a design may not set it"


def check_top(keys: Iterable[Any], allowed: Iterable[str], what: str,
              tasks: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Refuse any top-level key outside ``allowed``, naming where such a key comes from."""
    allowed = set(allowed)
    writers: dict[str, list[str]] | None = None
    for raw in keys:
        key = str(raw).lower()
        if key in allowed:
            continue
        writers = written_by(tasks) if writers is None else writers
        reason = refusal(key, writers)
        if reason is None:
            listed = ", ".join(f"{k}:" for k in sorted(allowed))
            reason = (f"`{key}` is not something a design may say ({what} holds {listed}; "
                      "free-form data goes under notes:)")
        raise DesignError(reason)


def extra_fields(cfg: config_mod.Config | None = None) -> set[str]:
    """Instance fields the operator declared: ``designs.instance_fields`` and the keys
    ``sources.ldap.attributes`` maps to."""
    cfg = cfg or config_mod.current()
    out = {f.lower() for f in cfg.designs.instance_fields}
    out |= {v.lower() for v in cfg.sources.ldap.attributes.values() if v}
    return out


def check_instance(instance: Mapping[str, Any], where: str = "instance",
                   cfg: config_mod.Config | None = None) -> None:
    """Refuse fields a design may not set and values of the wrong shape.

    ``instance`` has lower-cased keys. The operator's own fields (``extra_fields``)
    are taken as they come. With ``keys.from_design`` the repository URL is checked
    here too, so a design naming a forbidden one is refused before anything runs.
    """
    cfg = cfg or config_mod.current()
    extra = extra_fields(cfg)
    for key, value in instance.items():
        if key in OPERATOR:
            raise DesignError(f"`{where}.{key}` {OPERATOR[key]}")
        spec = FIELDS.get(key)
        if spec is None:
            if key in extra:
                continue
            raise DesignError(f"`{where}.{key}` is not a field a design may set (fields: "
                              f"{', '.join(sorted(FIELDS))}; a site's own are declared in "
                              "designs.instance_fields)")
        if value is not None and not _fits(spec.kind, value):
            raise DesignError(f"`{where}.{key}` must be {FIELD_KINDS[spec.kind]} "
                              f"(read by {spec.readers})")
    keys = cfg.keys
    url = instance.get("gitosis-admin")
    if url and keys.from_design and not keys.repository:
        check_repository_url(str(url), keys)


def _fits(kind: str, value: Any) -> bool:
    scalar = isinstance(value, (str, int, float, bool))
    if kind == "text":
        return scalar
    if kind == "flag":
        return isinstance(value, (bool, str))
    if kind == "texts":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "mappings":
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    if kind == "address":
        return isinstance(value, str) or (isinstance(value, list)
                                          and all(isinstance(v, str) for v in value))
    raise ValueError(f"unknown field kind {kind}")


# ---------------------------------------------------------------- instance.gitosis-admin

_SCP_LIKE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?"
                       r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
                       r":(?P<path>[^/:].*|/.+)$")
_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")  # git's <transport>::<address>


def repository_host(url: str, protocols: Iterable[str]) -> str:
    """The host a design's repository URL names, once its transport is allowed.

    Accepted: ``ssh://``, ``https://`` (and ``http``/``git`` when listed) URLs and
    scp-like ``user@host:path``, each only when its transport is in
    ``keys.protocols``. Never ``file://``, a bare path, ``ext::``/``fd::`` or
    anything starting with ``-``: those name jarvis's own disk or make git run
    commands.
    """
    protocols = {str(p).lower() for p in protocols}
    if not url or url.startswith("-") or any(c.isspace() or ord(c) < 32 for c in url):
        raise DesignError(f"`instance.gitosis-admin` {url[:80]!r} is not a repository URL")
    if "://" in url:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "file":
            raise DesignError("`instance.gitosis-admin` may not be a file:// URL (it would name "
                              "jarvis's own disk); configure keys.repository instead")
        if scheme not in {"ssh", "https", "http", "git"} or scheme not in protocols:
            raise DesignError(f"`instance.gitosis-admin` uses {scheme}://, which keys.protocols "
                              f"({', '.join(sorted(protocols))}) does not allow")
        host = parts.hostname
    else:
        match = _SCP_LIKE.match(url)
        if match is None or _HELPER.match(url):
            raise DesignError(f"`instance.gitosis-admin` {url[:80]!r} is neither a URL nor "
                              "user@host:path (a local path is never taken from a design)")
        if "ssh" not in protocols:
            raise DesignError("`instance.gitosis-admin` is an ssh address (user@host:path), "
                              "which keys.protocols does not allow")
        host = match.group("host")
    host = (host or "").strip("[]").lower()
    if not host:
        raise DesignError(f"`instance.gitosis-admin` {url[:80]!r} names no host")
    return host


def check_repository_url(url: str, section: KeysSettings) -> str:
    """Refuse a design's repository URL that jarvis would not push to; return its host.

    With ``keys.design_hosts`` set, only those hosts (any address: the operator
    vouched for them). Without it, any host but a literal address that is not
    public (loopback, private, link-local...); a name is resolved and checked by
    keys:publish, which alone may block on DNS.
    """
    host = repository_host(url, section.protocols)
    allowed = {h.lower() for h in section.design_hosts}
    if allowed:
        if host not in allowed:
            raise DesignError(f"`instance.gitosis-admin` names the host {host}, which is not "
                              "in keys.design_hosts")
        return host
    if host == "localhost" or host.endswith(".localhost"):
        raise DesignError(f"`instance.gitosis-admin` names {host}, jarvis's own machine")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if not address.is_global:
        raise DesignError(f"`instance.gitosis-admin` names the address {host}, which is not "
                          "public (list it in keys.design_hosts to allow it)")
    return host
