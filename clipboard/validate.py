"""What a design must look like before any step runs.

A design is a mapping with an ``instance:`` mapping (the seed's shape) holding at
least ``hostname``. Hostnames end up in shell commands, file paths, DNS names
and LDAP DNs, so they are held to RFC 1123 here, once, and every later silo may
rely on that. Keys and the provider name are case-insensitive (people write
``Provider: Linode``); they are normalised to lower case.

What else a design may hold is declared in ``clipboard.schema``: a design is
data from whoever could edit its source, so a key a step writes or the operator
decides is refused here, before anything runs.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from clipboard import schema
from clipboard.config import Config
from clipboard.errors import DesignError

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_FORBIDDEN = set(" \t\r\n/\\;&|`$<>(){}[]*?!'\"~#%=,:@^")


def _check_characters(what: str, value: Any, shown: int) -> str:
    """``value`` as a non-empty string without shell metacharacters, spaces or slashes."""
    if not isinstance(value, str) or not value:
        raise DesignError(f"{what} is missing or not a string")
    bad = sorted(set(value) & _FORBIDDEN)
    if bad:
        listed = " ".join(repr(c) for c in bad)
        raise DesignError(f"{what} {value[:shown]!r} contains forbidden characters: {listed}")
    return value


def check_hostname(name: Any) -> str:
    """Return the lower-cased hostname, or raise DesignError saying what is wrong."""
    lowered = _check_characters("hostname", name, 64).lower()
    if not _LABEL.match(lowered):
        raise DesignError(
            f"hostname {name[:64]!r} is not an RFC 1123 label "
            "(letters, digits and inner hyphens, at most 63 characters)")
    return lowered


def check_fqdn(fqdn: Any, hostname: str | None = None) -> str:
    """Return the lower-cased FQDN without a trailing dot, or raise DesignError."""
    name = _check_characters("fqdn", fqdn, 100).lower().rstrip(".")
    if len(name) > 253:
        raise DesignError(f"fqdn is {len(name)} characters long, over 253")
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise DesignError(f"fqdn {fqdn[:100]!r} is not a dotted name of RFC 1123 labels")
    if hostname is not None and labels[0] != hostname:
        raise DesignError(f"fqdn {name!r} does not start with the hostname {hostname!r}")
    return name


def lower_keys(mapping: Any, where: str) -> dict[str, Any]:
    """The mapping with lower-cased keys (None: empty); a key written twice is an error."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise DesignError(f"{where} must be a mapping")
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        lowered = str(key).lower()
        if lowered in out:
            raise DesignError(f"{where} has the key {lowered!r} twice (keys are case-insensitive)")
        out[lowered] = value
    return out


def normalize_instance(instance: Any, where: str = "instance",
                       config: Config | None = None) -> dict[str, Any]:
    """Lower-case the keys and the provider, check the fields against the schema
    (``config``: default the current configuration), validate hostname and fqdn."""
    if not isinstance(instance, dict):
        raise DesignError(f"{where} must be a mapping")
    out = lower_keys(instance, where)
    schema.check_instance(out, where, config)
    out["hostname"] = check_hostname(out.get("hostname"))
    if out.get("fqdn") is not None:
        out["fqdn"] = check_fqdn(out["fqdn"], out["hostname"])
    if out.get("provider") is not None:
        if not isinstance(out["provider"], str):
            raise DesignError(f"{where}.provider must be a string")
        out["provider"] = out["provider"].strip().lower()
    return out


def normalize_design(design: dict[str, Any],
                     tasks: Mapping[str, Mapping[str, Any]] | None = None,
                     config: Config | None = None) -> dict[str, Any]:
    """The design, keys lower-cased and ``instance`` normalised; raise DesignError when it
    holds anything the schema does not allow or cannot deploy.

    ``tasks`` is the workers' catalog (``Runner.tasks``), whose ``writes`` name the keys
    steps write; ``config`` defaults to the current configuration.
    """
    lowered = lower_keys(design, "the design")
    if "instance" not in lowered:
        raise DesignError("the design has no 'instance:' mapping (with at least a hostname)")
    schema.check_top(lowered, schema.DESIGN_KEYS, "a design", tasks)
    lowered["instance"] = normalize_instance(lowered["instance"], config=config)
    return lowered


def normalize_clipboard(clipboard: dict[str, Any]) -> dict[str, Any]:
    """A clipboard's ``instance`` normalised and checked again (``core:validate``); the
    keys steps and the engine wrote are left as they are."""
    found = [k for k in clipboard if str(k).lower() == "instance"]
    if not found:
        raise DesignError("the clipboard has no 'instance:' mapping (with at least a hostname)")
    if len(found) > 1:
        raise DesignError("the clipboard has the key 'instance' twice (keys are case-insensitive)")
    instance = normalize_instance(clipboard[found[0]])
    return {("instance" if k == found[0] else k): (instance if k == found[0] else v)
            for k, v in clipboard.items()}


def hostname_of(clipboard: dict[str, Any]) -> str:
    """The hostname a clipboard is about (after ``normalize_design``)."""
    hostname: str = clipboard["instance"]["hostname"]
    return hostname
