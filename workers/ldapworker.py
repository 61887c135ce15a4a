"""The host's record in LDAP (``cn=<host>,ou=Hosts,...``), the inventory of record.

The entry is what other systems read about the host (its address, root's key
for the hosts that bind as themselves later), so the step states it exactly:
address and root key are replaced, never accumulated across redeploys. The
description is the operator's as soon as the entry exists (it may carry a
production marker that inventory:production_check reads), so it is written
only when the entry is created or the design gives ``instance.description``.
"""
from __future__ import annotations

import logging
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException

from clipboard import config, ldapdir
from clipboard.errors import JarvisError, StepFailed
from clipboard.settings import LdapSettings
from clipboard.worker import task

log = logging.getLogger(__name__)

SETTINGS = (LdapSettings,)

OBJECT_CLASSES = ("device", "ipHost", "ldapPublicKey")


def _settings() -> LdapSettings | None:
    settings = config.current().ldap
    return settings if settings.url else None


def _connect(settings: LdapSettings) -> ldap3.Connection:
    try:
        return ldapdir.connect(settings)
    except JarvisError as exc:
        raise StepFailed(str(exc)) from None


def _current(conn: ldap3.Connection, dn: str) -> dict[str, list[Any]] | None:
    """The entry's attributes (raw bytes), or None when it does not exist."""
    found = conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE,
                        attributes=["objectClass", "ipHostNumber", "sshPublicKey", "description"])
    if not found:
        if (conn.result or {}).get("result") == 32:   # noSuchObject
            return None
        raise StepFailed(f"LDAP search of {dn} failed: {_why(conn)}")
    assert conn.response is not None, "a search that succeeded has a response"
    return {k.lower(): list(v) for k, v in conn.response[0]["raw_attributes"].items()}


def _why(conn: ldap3.Connection) -> str:
    result = conn.result or {}
    message = (result.get("message") or "").strip()
    text = str(result.get("description") or "no answer")
    return f"{text} ({message})" if message else text


def _desired(clipboard: dict[str, Any]) -> tuple[str, dict[str, list[bytes]], bytes | None]:
    """Hostname, the attributes to set exactly, and the description to write if any."""
    instance = clipboard.get("instance") or {}
    hostname = instance.get("hostname")
    if not hostname:
        raise StepFailed("instance.hostname is missing")
    ip = (clipboard.get("node") or {}).get("ip")
    if not ip:
        raise StepFailed("node.ip is missing: the host has no address to record yet")
    attributes = {"ipHostNumber": [str(ip).encode()], "sshPublicKey": []}
    root_key = (clipboard.get("ssh") or {}).get("root_public_key")
    if root_key:
        attributes["sshPublicKey"] = [str(root_key).strip().encode()]
    else:
        log.warning("ssh.root_public_key is missing; the entry will carry no sshPublicKey")
    description = instance.get("description")
    return str(hostname), attributes, str(description).encode() if description else None


def _default_description(clipboard: dict[str, Any]) -> bytes:
    instance = clipboard["instance"]
    name = instance.get("fqdn") or instance["hostname"]
    return f"{name}, deployed by jarvis (provider {instance.get('provider') or 'unknown'})".encode()


def _changes(current: dict[str, list[Any]], attributes: dict[str, list[bytes]],
             description: bytes | None) -> dict[str, list[tuple[str, list[Any]]]]:
    """The modifications that bring ``current`` to the desired state (empty when it is)."""
    changes: dict[str, list[tuple[str, list[Any]]]] = {}
    have = {bytes(c).decode().lower() for c in current.get("objectclass", [])}
    missing = [c for c in OBJECT_CLASSES if c.lower() not in have]
    if missing:
        changes["objectClass"] = [(ldap3.MODIFY_ADD, missing)]
    for name, values in attributes.items():
        old = sorted(bytes(v) for v in current.get(name.lower(), []))
        if old == sorted(values):
            continue
        if values:
            changes[name] = [(ldap3.MODIFY_REPLACE, values)]
        else:
            changes[name] = [(ldap3.MODIFY_DELETE, [])]
    if description is not None and current.get("description", []) != [description]:
        changes["description"] = [(ldap3.MODIFY_REPLACE, [description])]
    return changes


@task(undo="ldapworker:delete_host", writes=("ldap",),
      needs=lambda cfg: ("node.ip",) if cfg.ldap.url else ())
def update_host_ou(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Add or update cn=<host>,ou=Hosts with the host's IP and root's public key."""
    settings = _settings()
    if settings is None:
        log.info("LDAP not configured (ldap.url is null); no host entry written")
        return None
    hostname, attributes, description = _desired(clipboard)
    dn = ldapdir.host_dn(settings, hostname)
    conn = _connect(settings)
    try:
        current = _current(conn, dn)
        if current is None:
            values = {k: v for k, v in attributes.items() if v}
            values["cn"] = [hostname.encode()]
            values["description"] = [description or _default_description(clipboard)]
            if not conn.add(dn, list(OBJECT_CLASSES), values):
                raise StepFailed(f"LDAP add of {dn} failed: {_why(conn)}")
            log.info("LDAP entry %s added (ipHostNumber %s)", dn, attributes["ipHostNumber"][0].decode())
        else:
            changes = _changes(current, attributes, description)
            if not changes:
                log.info("LDAP entry %s already up to date", dn)
            elif not conn.modify(dn, changes):
                raise StepFailed(f"LDAP modify of {dn} ({', '.join(changes)}) failed: {_why(conn)}")
            else:
                log.info("LDAP entry %s updated: %s", dn, ", ".join(changes))
    except LDAPException as exc:
        raise StepFailed(f"LDAP write of {dn} failed: {type(exc).__name__}: {exc}") from None
    finally:
        conn.unbind()
    clipboard["ldap"] = {"dn": dn}
    return clipboard


@task(writes=("ldap",))
def delete_host(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Remove the host's entry from ou=Hosts (absent already counts as done)."""
    settings = _settings()
    recorded = (clipboard.get("ldap") or {}).get("dn")
    if settings is None:
        log.info("LDAP not configured (ldap.url is null); no host entry removed")
        return None
    hostname = (clipboard.get("instance") or {}).get("hostname")
    if not hostname:
        raise StepFailed("instance.hostname is missing")
    dn = ldapdir.host_dn(settings, str(hostname))
    if recorded and str(recorded).lower() != dn.lower():
        raise StepFailed(f"the recorded LDAP entry {str(recorded)[:120]!r} is not this host's "
                         f"entry {dn}: nothing deleted")
    conn = _connect(settings)
    try:
        if conn.delete(dn):
            log.info("LDAP entry %s deleted", dn)
        elif (conn.result or {}).get("result") == 32:   # noSuchObject
            log.info("LDAP entry %s was already absent", dn)
        else:
            raise StepFailed(f"LDAP delete of {dn} failed: {_why(conn)}")
    except LDAPException as exc:
        raise StepFailed(f"LDAP delete of {dn} failed: {type(exc).__name__}: {exc}") from None
    finally:
        conn.unbind()
    clipboard.pop("ldap", None)
    return clipboard
