"""One way to open the LDAP directory, shared by the ``cn=`` source and the ldapworker.

The directory is jarvis's inventory: the bot reads designs from it and a worker
writes host records into it. Both must agree on where it is, how to trust it
(ldaps or StartTLS against a CA file), how to bind (the password inline or from
the environment variable named by ``bind_password_env``) and how long to wait,
so every network operation here is bounded by ``timeout``. Errors are
``DirectoryError`` with one line that never contains the password; callers turn
it into their own error (SourceError in the bot, StepFailed in a worker).
"""
from __future__ import annotations

import logging
import math
import os
import re
import ssl

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import escape_rdn

from clipboard.errors import ConfigError, JarvisError
from clipboard.settings import LdapSettings

log = logging.getLogger(__name__)


class DirectoryError(JarvisError):
    """The directory could not be reached, trusted or bound to."""


def bind_password(settings: LdapSettings) -> str | None:
    """The bind password inline or from the named environment variable; None for anonymous."""
    if not settings.bind_dn:
        return None
    if not settings.bind_password.configured:
        raise ConfigError("ldap.bind_dn is set but ldap.bind_password is not "
                          "(set it, or name an environment variable in ldap.bind_password_env)")
    return settings.bind_password.require()


def hosts_base(settings: LdapSettings) -> str:
    """The DN under which host entries live: ``<hosts_ou>,<base_dn>``."""
    if not settings.base_dn:
        raise ConfigError("ldap.base_dn is not set")
    return f"{settings.hosts_ou},{settings.base_dn}" if settings.hosts_ou else settings.base_dn


def host_dn(settings: LdapSettings, hostname: str) -> str:
    """The DN of a host's entry, with the name escaped as an RDN value."""
    return f"cn={escape_rdn(hostname)},{hosts_base(settings)}"


def connect(settings: LdapSettings) -> ldap3.Connection:
    """Open, secure and bind a connection to the directory described by the ``ldap`` section.

    Blocking (ldap3 is synchronous): call it from a worker process or through
    ``asyncio.to_thread``. The caller unbinds the returned connection.
    """
    if not settings.url:
        raise ConfigError("ldap.url is not set")
    url = settings.url.rstrip("/")   # ldap3 rejects a trailing slash as a bad port
    # ldap3 packs receive_timeout into SO_RCVTIMEO as whole seconds
    timeout = max(1, math.ceil(settings.timeout))
    starttls = settings.starttls
    if starttls and url.lower().startswith("ldaps://"):
        raise ConfigError("ldap.starttls makes no sense with an ldaps:// url (it is already TLS)")
    bind_dn = settings.bind_dn or None
    password = bind_password(settings)
    tls = _tls(settings.ca_file)
    try:
        server = ldap3.Server(url, connect_timeout=timeout, tls=tls, get_info=ldap3.NONE)
        conn = ldap3.Connection(
            server, user=bind_dn, password=password,
            authentication=ldap3.SIMPLE if bind_dn else ldap3.ANONYMOUS,
            receive_timeout=timeout, raise_exceptions=False, auto_referrals=False)
    except LDAPException as exc:
        raise DirectoryError(f"bad LDAP url {url!r}: {_reason(exc)}") from None
    try:
        conn.open()
        if starttls and not conn.start_tls():
            raise DirectoryError(f"StartTLS with {url} failed: {_result(conn)}")
        if not conn.bind():
            who = bind_dn or "anonymous"
            raise DirectoryError(f"LDAP bind as {who} on {url} failed: {_result(conn)}")
    except LDAPException as exc:
        _close(conn)
        raise DirectoryError(_unreachable(url, exc)) from None
    except DirectoryError:
        _close(conn)
        raise
    log.debug("bound to %s as %s", url, bind_dn or "anonymous")
    return conn


def _tls(ca_file: str | None) -> ldap3.Tls:
    """Always verify the server: with the given CA file, or the system's trust store."""
    if ca_file and not os.path.isfile(ca_file):
        raise ConfigError(f"ldap.ca_file {ca_file} does not exist")
    return ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                     ca_certs_file=ca_file or None)


def _result(conn: ldap3.Connection) -> str:
    result = conn.result or {}
    text = result.get("description") or "no answer"
    message = (result.get("message") or "").strip()
    return f"{text} ({message})" if message else str(text)


def _unreachable(url: str, exc: Exception) -> str:
    """Why the directory could not be used, told apart: TLS trust, TLS name, or the network."""
    text = _reason(exc)
    verify = re.search(r"certificate verify failed: ([^(\]'\"]+)", text)
    if verify:
        return f"TLS certificate of {url} is not trusted: {verify.group(1).strip()} (see ldap.ca_file)"
    if "doesn't match" in text or "hostname mismatch" in text.lower():
        return f"TLS certificate of {url} does not name that host"
    return f"LDAP at {url} is not reachable: {text}"


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    text = re.sub(r"^[(\['\"]+|[)\]'\",]+$", "", text)
    return text[:200] or type(exc).__name__


def _close(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except LDAPException:
        pass
