"""The inventory's veto: a redeploy destroys the node, so a production host is
only redeployed when someone said ``force`` and someone else approved it.

A host is production when its design says ``instance.production: true`` or, if
``inventory.ldap_attribute`` is set, when a value of that attribute of its
``cn=<host>,ou=Hosts`` entry matches ``inventory.ldap_pattern``. When the
directory cannot be asked, the step fails closed: not knowing is not "no".

``force`` is the operator's word, so it is read only from ``jarvis.force``, the
namespace the engine fills from the deploy command and no design can write; a
``force`` anywhere else in the clipboard (which a design could have put there)
is ignored, with a log line. A force counts only with the approval the engine
records beside it (``jarvis.approved_by``, an identity other than
``jarvis.requested_by``): a lone force never lets a production host through, nor
past a directory that cannot be asked (``clipboard.approval`` says why the engine
holds every force for that approval).
"""
from __future__ import annotations

import logging
import re
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException

from clipboard import config, ldapdir
from clipboard.approval import approved_in
from clipboard.errors import ConfigError, JarvisError, StepFailed
from clipboard.settings import InventorySettings, LdapSettings
from clipboard.worker import operator_intent, task

log = logging.getLogger(__name__)

SETTINGS = (InventorySettings, LdapSettings)

_TRUE_WORDS = {"true", "yes", "1", "on"}


def _flag(value: Any) -> bool:
    """A yes/no that may arrive as YAML bool or as text typed in chat (``force=true``)."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE_WORDS if value is not None else False


def _ldap_marks(hostname: str, attribute: str, pattern: re.Pattern[str]) -> list[str]:
    """``attribute=value`` for each value of the host's LDAP entry that marks production."""
    settings = config.current().ldap
    dn = ldapdir.host_dn(settings, hostname)
    conn = ldapdir.connect(settings)
    try:
        if not conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[attribute]):
            if (conn.result or {}).get("result") == 32:   # noSuchObject: not in the inventory
                return []
            raise StepFailed(f"LDAP search of {dn} failed: {(conn.result or {}).get('description')}")
        assert conn.response is not None, "a search that succeeded has a response"
        values = conn.response[0]["raw_attributes"].get(attribute, [])
    except LDAPException as exc:
        raise StepFailed(f"LDAP search of {dn} failed: {type(exc).__name__}: {exc}") from None
    finally:
        conn.unbind()
    texts = [bytes(v).decode(errors="replace") for v in values]
    return [f"ldap {attribute}={text!r}" for text in texts if pattern.search(text)]


def _pattern() -> re.Pattern[str]:
    text = config.current().inventory.ldap_pattern
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"inventory.ldap_pattern is not a valid regular expression: {exc}") from None


def operator_force(clipboard: dict[str, Any]) -> bool:
    """Whether the operator said ``force`` (``jarvis.force``: a real YAML true, nothing else)."""
    for where, value in (("force", clipboard.get("force")),
                         ("instance.force", (clipboard.get("instance") or {}).get("force"))):
        if value is not None:
            log.warning("%s in the clipboard is ignored: force is said by the operator "
                        "(deploy ... force), never written in a design", where)
    return operator_intent(clipboard).get("force") is True


@task(writes=("inventory",))
def production_check(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Stop unless the host is not production, or ``force`` was given and approved."""
    instance = clipboard.get("instance") or {}
    hostname = instance.get("hostname")
    if not hostname:
        raise StepFailed("instance.hostname is missing")
    said = operator_force(clipboard)
    approver = approved_in(operator_intent(clipboard)) if said else None
    force = approver is not None
    unapproved = ("; force was said but nobody else approved it (approve <host>), and a lone "
                  "force never passes") if said and not force else ""
    reasons = ["design flag instance.production"] if _flag(instance.get("production")) else []
    attribute = config.current().inventory.ldap_attribute
    if attribute and config.current().ldap.url:
        try:
            reasons += _ldap_marks(str(hostname), str(attribute), _pattern())
        except JarvisError as exc:
            if not force:
                raise StepFailed(f"cannot tell whether {hostname} is production: {exc}"
                                 f"{unapproved}") from None
            log.warning("cannot ask LDAP whether %s is production (%s); going on because of "
                        "force approved by %s", hostname, exc, approver)
    production = bool(reasons)
    if production and not force:
        raise StepFailed(f"{hostname} is marked production ({'; '.join(reasons)}); "
                         f"redeploy with force=true to proceed{unapproved}")
    if production:
        log.warning("%s is marked production (%s); proceeding because force was given and "
                    "approved by %s", hostname, "; ".join(reasons), approver)
    else:
        log.info("%s is not marked production", hostname)
    clipboard["inventory"] = {"production": production, "reasons": reasons, "forced": force,
                              "approved_by": approver}
    return clipboard
