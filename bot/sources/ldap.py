"""Designs from the directory: ``cn=<host>`` (or the host's full DN) becomes the first clipboard.

The directory is the inventory, so a host's entry already says much of what a
deployment needs. ``sources.ldap.attributes`` maps entry attributes to keys of
``instance:`` (cn → hostname, ipHostNumber → ip, ...), and one attribute
(``design_attribute``) may hold a whole YAML design in the seed's shape, which
is loaded with the clipboard's limits and merged *under* the mapped values (the
directory's own attributes win). ``data`` is a canonical JSON rendering of the
entry, so the SHA-256 the store keeps changes exactly when the entry does.

The name from chat goes into the search filter escaped (RFC 4515), so
``cn=loki)(objectClass=*`` looks for a host literally called that and finds
nothing. All directory I/O runs in a thread, bounded by ``ldap.timeout``.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPInvalidDnError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from bot.sources.fetched import Fetched
from clipboard import document, ldapdir
from clipboard.config import Config
from clipboard.errors import ClipboardError, ConfigError, SourceError
from clipboard.settings import LdapSettings, LdapSourceSettings

log = logging.getLogger(__name__)

_RESULT_OK = 0
_RESULT_SIZE_LIMIT = 4
_RESULT_NO_SUCH_OBJECT = 32


async def fetch(spec: str, config: Config) -> Fetched:
    """Look the host up and build its design; every failure is one SourceError line."""
    name, dn = parse_spec(spec)
    settings = config.ldap
    options = config.sources.ldap
    try:
        base = options.search_base or ldapdir.hosts_base(settings)
        if dn is not None:
            _check_under(dn, base)
        entry_dn, attributes = await asyncio.to_thread(_lookup, settings, options, base, name, dn)
    except (ConfigError, ldapdir.DirectoryError) as exc:
        raise SourceError(str(exc)) from None
    design = build_design(entry_dn, attributes, options, config)
    return Fetched(kind="ldap", source=entry_dn, data=canonical(entry_dn, attributes), design=design)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``cn=<name>`` → (name, None); ``cn=<name>,ou=...`` → (name, dn)."""
    text = spec.strip()
    if text[:3].lower() != "cn=":
        raise SourceError(f"{text[:80]!r} is not an LDAP spec (expected cn=<hostname>)")
    value = text[3:].strip()
    if not value:
        raise SourceError("cn= names no host: say cn=<hostname>")
    if "," not in value:
        return value, None
    try:
        rdns = parse_dn(text, escape=False, strip=True)
    except LDAPInvalidDnError:
        raise SourceError(f"{text[:120]!r} is not a valid DN") from None
    name = rdns[0][1]
    if not name:
        raise SourceError("cn= names no host: say cn=<hostname>")
    return name, _normal_dn(text)


def _normal_dn(dn: str) -> str:
    return ",".join(f"{attr}={value}" for attr, value, _ in parse_dn(dn, escape=True, strip=True))


def _check_under(dn: str, base: str) -> None:
    """A full DN must name an entry under the search base, not anywhere in the directory."""
    suffix = "," + _normal_dn(base).lower()
    if not dn.lower().endswith(suffix):
        raise SourceError(f"{dn} is not under {base}, where hosts are looked up")


def _lookup(settings: LdapSettings, options: LdapSourceSettings, base: str, name: str,
            dn: str | None) -> tuple[str, dict[str, list[bytes]]]:
    """Find exactly one entry (blocking; runs in a thread)."""
    object_filter = options.filter or "(objectClass=*)"
    name_filter = f"(cn={escape_filter_chars(name)})"
    search_filter = f"(&{name_filter}{object_filter})"
    timeout = int(settings.timeout)
    conn = ldapdir.connect(settings)
    try:
        try:
            conn.search(dn or base, search_filter,
                        search_scope=ldap3.BASE if dn else ldap3.SUBTREE,
                        attributes=[ldap3.ALL_ATTRIBUTES], size_limit=2, time_limit=timeout)
        except LDAPException as exc:
            raise SourceError(f"LDAP search for cn={name} failed: {_reason(exc)}") from None
        result = conn.result or {}
        code = result.get("result")
        where = dn or base
        if code == _RESULT_NO_SUCH_OBJECT:
            if dn:
                raise SourceError(f"no host {dn} in LDAP")
            raise SourceError(f"LDAP search base {base} does not exist (check ldap.base_dn and ldap.hosts_ou)")
        if code not in (_RESULT_OK, _RESULT_SIZE_LIMIT):
            raise SourceError(f"LDAP search for cn={name} under {where} failed: "
                              f"{result.get('description') or code}")
        entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
    finally:
        conn.unbind()
    if not entries:
        raise SourceError(f"no host {name!r} in LDAP under {where}" if not dn else f"no host {dn} in LDAP")
    if len(entries) > 1:
        shown = "; ".join(e["dn"] for e in entries)
        more = " and more" if code == _RESULT_SIZE_LIMIT else ""
        raise SourceError(f"several LDAP entries are cn={name} under {where}: {shown}{more}")
    entry = entries[0]
    return entry["dn"], {str(k): list(v) for k, v in entry["raw_attributes"].items()}


def build_design(dn: str, attributes: dict[str, list[bytes]], options: LdapSourceSettings,
                 config: Config) -> dict[str, Any]:
    """The design: the YAML in ``design_attribute`` (if any) under the mapped attribute values."""
    by_name = {name.lower(): values for name, values in attributes.items()}
    design_attribute = (options.design_attribute or "").lower() or None
    mapped: dict[str, Any] = {}
    for attribute, key in options.attributes.items():
        if not key or attribute.lower() == design_attribute:
            continue
        values = by_name.get(attribute.lower())
        if not values:
            continue
        texts = [_text(dn, attribute, v) for v in values]
        if str(key).lower() == "hostname" and len(texts) > 1:
            texts = [_rdn_value(dn, texts)]
        mapped[str(key)] = texts[0] if len(texts) == 1 else texts
    design: dict[str, Any] = {"instance": {}}
    if design_attribute is not None and by_name.get(design_attribute):
        design = _embedded_design(dn, design_attribute, by_name[design_attribute], config)
    design["instance"] = _merge_under(design["instance"], mapped)
    return design


def _merge_under(instance: dict[str, Any], mapped: dict[str, Any]) -> dict[str, Any]:
    """``mapped`` over ``instance``, keys compared case-insensitively, the design's order kept."""
    pending = {key.lower(): (key, value) for key, value in mapped.items()}
    merged: dict[str, Any] = {}
    for key, value in instance.items():
        override = pending.pop(str(key).lower(), None)
        if override is None:
            merged[key] = value
        else:
            merged[override[0]] = override[1]
    merged.update(dict(pending.values()))
    return merged


def _embedded_design(dn: str, attribute: str, values: list[bytes], config: Config) -> dict[str, Any]:
    if len(values) > 1:
        raise SourceError(f"{attribute} of {dn} has {len(values)} values; the design must be one")
    text = _text(dn, attribute, values[0])
    try:
        loaded = document.load(text, max_bytes=config.limits.max_bytes,
                               max_nodes=config.limits.max_nodes,
                               what=f"the design in {attribute} of {dn}")
    except ClipboardError as exc:
        raise SourceError(str(exc)) from None
    keys = {str(k).lower(): k for k in loaded}
    if "instance" not in keys:
        return {"instance": loaded}   # the attribute holds just the instance mapping
    instance = loaded[keys["instance"]]
    if not isinstance(instance, dict):
        raise SourceError(f"the design in {attribute} of {dn}: instance must be a mapping")
    rest = {k: v for k, v in loaded.items() if k != keys["instance"]}
    return {"instance": dict(instance), **rest}


def _text(dn: str, attribute: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{attribute} of {dn} is binary, not text; map another attribute") from None


def _rdn_value(dn: str, values: list[str]) -> str:
    """Of several cn values, the one naming the entry (the others are aliases)."""
    rdn = parse_dn(dn, escape=False, strip=True)[0][1].lower()
    return next((v for v in values if v.lower() == rdn), values[0])


def canonical(dn: str, attributes: dict[str, list[bytes]]) -> bytes:
    """The entry as sorted JSON (values as text, or base64 when binary): stable for hashing."""
    rendered: dict[str, list[str]] = {}
    for name, values in attributes.items():
        texts = []
        for value in values:
            try:
                texts.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append("base64:" + base64.b64encode(value).decode())
        rendered[name.lower()] = sorted(texts)
    return json.dumps({"dn": dn, "attributes": rendered}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":")).encode()


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
