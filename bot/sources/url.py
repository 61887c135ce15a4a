"""Designs from HTTPS: a GitHub gist page (through the gist API) or a raw YAML URL.

A URL in chat is hostile until proven otherwise: it can point the bot at its
own network (cloud metadata at 169.254.169.254, an admin port on loopback),
redirect forever, answer forever, or send gigabytes. So, for every URL and
every redirect hop (followed by hand, at most ``max_redirects``):

- the scheme must be https (http only with ``allow_http``) and the host must be
  in ``allowed_hosts``;
- the host is resolved and *every* address must be public unless listed in
  ``allow_addresses``; the connection is then made to the address that was
  checked, so a DNS answer that changes between check and connect cannot
  smuggle in a private address;
- the body is streamed and cut at ``max_bytes`` (compressed bodies are refused,
  so the cap is on what is kept);
- the whole fetch (DNS, connect, TLS, headers, body, every hop, the gist API and
  the raw file) has one wall-clock deadline, ``timeout``. urllib3's timeouts are
  per socket operation, so a server sending one header byte a second never trips
  them: the coroutine waiting for the fetch thread gives up at the deadline and
  shuts down the fetch's sockets (``Watch``), so the thread ends too;
- TLS is verified against the system trust store plus ``ca_file`` (a private
  CA), and a failure says the TLS library's own reason.

An answer that cannot be used, however malformed (a gist API answer nested a
million deep, files of the wrong type, names with control characters), is one
line. Only the bytes are returned; the caller parses them with ``clipboard.document``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.connection import create_connection

from bot.sources import Fetched
from clipboard.config import Config
from clipboard.errors import SourceError

log = logging.getLogger(__name__)

_GIST_ID = re.compile(r"^[0-9a-fA-F]{1,64}$")
_GIST_USER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_YAML_SUFFIXES = (".yaml", ".yml")
_CHUNK = 16 * 1024


@dataclass(frozen=True)
class Policy:
    """What one fetch may touch, read from ``sources.url``."""

    allowed_hosts: frozenset[str]
    gist_hosts: frozenset[str]
    gist_api: str
    allow_http: bool
    allow_addresses: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    max_bytes: int
    api_max_bytes: int
    timeout: float
    max_redirects: int
    ca_file: str | None

    @classmethod
    def from_config(cls, config: Config) -> "Policy":
        section = config.get("sources.url") or {}
        networks = []
        for entry in section.get("allow_addresses") or []:
            try:
                networks.append(ipaddress.ip_network(str(entry), strict=False))
            except ValueError:
                raise SourceError(f"sources.url.allow_addresses: {entry!r} is not an address or network") from None
        return cls(
            allowed_hosts=frozenset(str(h).lower().rstrip(".") for h in section.get("allowed_hosts") or []),
            gist_hosts=frozenset(str(h).lower().rstrip(".") for h in section.get("gist_hosts") or []),
            gist_api=str(section.get("gist_api") or "https://api.github.com").rstrip("/"),
            allow_http=bool(section.get("allow_http")),
            allow_addresses=tuple(networks),
            max_bytes=int(section.get("max_bytes") or 262144),
            api_max_bytes=int(section.get("api_max_bytes") or 1048576),
            timeout=float(section.get("timeout") or 10),
            max_redirects=3 if section.get("max_redirects") is None else int(section["max_redirects"]),
            ca_file=os.path.expanduser(str(section["ca_file"])) if section.get("ca_file") else None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Verification against the system trust store, plus ``ca_file`` when set.

        requests adds its own bundle (certifi) to this context per connection, as it
        always did; ``ca_file`` is trusted beside both, never instead of them.
        """
        context = ssl.create_default_context()
        if self.ca_file:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _tls_text(exc)
                raise SourceError(f"sources.url.ca_file: cannot load {self.ca_file}: {reason}") from None
        return context

    def check_url(self, url: str) -> str:
        """Refuse a URL by scheme, credentials or host before any network traffic; return the host."""
        try:
            parts = urlsplit(url)
        except ValueError:
            raise SourceError(f"refused {shown(url)}: not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise SourceError(f"refused {shown(url)}: only https:// URLs are fetched")
        if scheme == "http" and not self.allow_http:
            raise SourceError(f"refused {shown(url)}: plain http:// is not allowed, use https://")
        if parts.username is not None or parts.password is not None:
            raise SourceError(f"refused {shown(url)}: credentials in URLs are not accepted")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise SourceError(f"refused {shown(url)}: no host in the URL")
        try:
            parts.port
        except ValueError:
            raise SourceError(f"refused {shown(url)}: bad port") from None
        if host not in self.allowed_hosts:
            allowed = ", ".join(sorted(self.allowed_hosts)) or "none"
            raise SourceError(f"refused {shown(url)}: host {host} is not allowed "
                              f"(sources.url.allowed_hosts: {allowed})")
        return host

    def addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host``; every address must be public or explicitly allowed."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise SourceError(f"cannot resolve host {host}: {exc.strerror}") from None
        found: list[str] = []
        for info in infos:
            address = str(info[4][0])
            if address not in found:
                found.append(address)
        for address in found:
            problem = self._address_problem(address)
            if problem:
                raise SourceError(f"refused host {host}: it resolves to {address}, {problem} "
                                  "(not in sources.url.allow_addresses)")
        return found

    def _address_problem(self, text: str) -> str | None:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.allow_addresses):
            return None
        if ip.is_loopback:
            return "a loopback address"
        if ip.is_link_local:
            return "a link-local address"
        if ip.is_private:
            return "a private address"
        if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
            return "not a public address"
        return None


def shown(url: str) -> str:
    """A URL fit for chat, logs and the store: no credentials, no query (tokens live there),
    no control characters (a server-supplied URL must not start a new chat line)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return printable(url.split("?", 1)[0].rsplit("@", 1)[-1], 300)
    netloc = parts.hostname or ""
    try:
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
    except ValueError:
        pass
    return printable(urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", "")),
                     300)


def printable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, each unprintable one shown as ``?``."""
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])


class Watch:
    """One fetch's deadline and its open connections, so the deadline can cut a read short.

    Each connection is registered as a duplicate of its socket: shutting that down
    ends the connection (a blocked read, plain or TLS, returns at once) even after
    TLS has taken over the original socket object. The fetch thread closes the
    duplicates when it is done; the waiting coroutine calls ``abort`` at the deadline.
    ``where`` is what the fetch was doing, for the one-line answer.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.where = ("fetching", "")
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._aborted = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def at(self, doing: str, url: str) -> None:
        self.where = (doing, url)

    def timed_out(self) -> SourceError:
        doing, url = self.where
        return SourceError(f"timed out after {self.timeout:g}s {doing} {shown(url)}")

    def opened(self, sock: socket.socket) -> None:
        with self._lock:
            dup = sock.dup()
            self._sockets.append(dup)
            if self._aborted:
                _shutdown(dup)

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            for sock in self._sockets:
                _shutdown(sock)

    def close(self) -> None:
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass   # already closed by the other side: nothing left to cut


class _Urllib3Records(logging.Filter):
    """urllib3's own log lines, made fit for our logs: a query string (where tokens live)
    is cut from every URL it logs, and a server's malformed header, which urllib3 logs
    with a traceback and a hostile server may cause at will, is one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_QUERY.sub("?…", a) if isinstance(a, str) else a
                                for a in record.args)
        if str(record.msg).startswith("Failed to parse headers") and isinstance(record.args, tuple):
            record.args = tuple(a if i == 0 else " ".join(str(a).split())[:200]
                                for i, a in enumerate(record.args))
            record.exc_info = None
            record.exc_text = None
        return True


_QUERY = re.compile(r"\?[^\s\"]+")
for _name in ("urllib3.connection", "urllib3.connectionpool"):
    logging.getLogger(_name).addFilter(_Urllib3Records())


async def fetch(spec: str, config: Config) -> Fetched:
    """Fetch a gist or a raw URL within ``timeout`` in all; the bytes are parsed by the caller."""
    policy = Policy.from_config(config)
    watch = Watch(policy.timeout)
    try:
        return await asyncio.wait_for(asyncio.to_thread(_fetch, spec.strip(), policy, watch),
                                      max(watch.remaining(), 0))
    except TimeoutError:
        raise watch.timed_out() from None
    finally:
        watch.abort()   # the thread, if still at work, ends now; after success a no-op


def _fetch(url: str, policy: Policy, watch: Watch) -> Fetched:
    try:
        host = policy.check_url(url)
        if host in policy.gist_hosts:
            return _fetch_gist(url, policy, watch)
        body, final = _get(url, policy, policy.max_bytes, watch)
        return Fetched(kind="url", source=shown(final), data=body)
    finally:
        watch.close()


def gist_id(url: str) -> str:
    """The id in a gist page URL: ``/<id>`` or ``/<user>/<id>`` (``.git`` or ``/`` at the end is fine)."""
    path = urlsplit(url).path.strip("/")
    if path.endswith(".git"):
        path = path[:-4]
    segments = path.split("/") if path else []
    if len(segments) == 1 and _GIST_ID.match(segments[0]):
        return segments[0]
    if len(segments) == 2 and _GIST_USER.match(segments[0]) and _GIST_ID.match(segments[1]):
        return segments[1]
    raise SourceError(f"{shown(url)} is not a gist page (expected https://{urlsplit(url).hostname}/<id> "
                      "or /<user>/<id>)")


def _fetch_gist(url: str, policy: Policy, watch: Watch) -> Fetched:
    ident = gist_id(url)
    api_url = f"{policy.gist_api}/gists/{ident}"
    body, _ = _get(api_url, policy, policy.api_max_bytes, watch,
                   accept="application/vnd.github+json", what=f"gist {ident}")
    name, entry = _choose_file(ident, _gist_files(ident, body))
    content = entry.get("content")
    raw_url = entry.get("raw_url")
    if isinstance(content, str) and entry.get("truncated") is not True:
        try:
            data = content.encode()
        except UnicodeEncodeError:
            raise SourceError(f"gist {ident} file {name} is not valid text") from None
        if len(data) > policy.max_bytes:
            raise SourceError(f"gist {ident} file {name} is {len(data)} bytes, "
                              f"over the limit of {policy.max_bytes} bytes")
        source = raw_url if isinstance(raw_url, str) and raw_url else f"{url}#{name}"
        return Fetched(kind="url", source=shown(source), data=data)
    if not isinstance(raw_url, str) or not raw_url:
        raise SourceError(f"gist {ident} file {name} has neither content nor raw_url")
    data, final = _get(raw_url, policy, policy.max_bytes, watch, what=f"gist {ident} file {name}")
    return Fetched(kind="url", source=shown(final), data=data)


def _gist_files(ident: str, body: bytes) -> dict[str, Any]:
    """The ``files`` mapping of a gist API answer, whatever shape the answer has."""
    try:
        answer = json.loads(body)
    except RecursionError:
        raise SourceError(f"the gist API answer for {ident} is nested too deeply to be a gist") from None
    except ValueError:
        raise SourceError(f"the gist API answer for {ident} is not JSON") from None
    if not isinstance(answer, dict):
        raise SourceError(f"the gist API answer for {ident} is a JSON {_json_type(answer)}, "
                          "not an object")
    files = answer.get("files")
    if files is None:
        raise SourceError(f"the gist API answer for {ident} has no files")
    if not isinstance(files, dict):
        raise SourceError(f"the gist API answer for {ident} has files as a JSON "
                          f"{_json_type(files)}, not an object")
    return files


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _choose_file(ident: str, files: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The only file, or the only one ending in .yaml/.yml (names shown printable)."""
    entries = {printable(str(name), 100): entry for name, entry in files.items()
               if isinstance(entry, dict)}
    if not entries:
        raise SourceError(f"gist {ident} has no files")
    if len(entries) == 1:
        return next(iter(entries.items()))
    yaml_files = sorted(name for name in entries if name.lower().endswith(_YAML_SUFFIXES))
    if len(yaml_files) == 1:
        return yaml_files[0], entries[yaml_files[0]]
    if not yaml_files:
        raise SourceError(f"gist {ident} has {len(entries)} files and none ends in .yaml or .yml: "
                          + _listing(entries))
    raise SourceError(f"gist {ident} has several YAML files, say which (use its raw URL): "
                      + _listing(yaml_files))


def _listing(names: Iterable[str]) -> str:
    names = sorted(names)
    text = ", ".join(names[:10])
    return text + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _get(url: str, policy: Policy, limit: int, watch: Watch, *, accept: str = "*/*",
         what: str | None = None) -> tuple[bytes, str]:
    """GET ``url`` following redirects by hand (each hop checked); the body and the final URL."""
    seen: list[str] = []
    with _session(policy, watch) as session:
        while True:
            seen.append(url)
            try:
                policy.check_url(url)
                response = _request(session, url, watch, accept)
            except SourceError as exc:
                if len(seen) == 1:
                    raise
                raise SourceError(f"{exc}, redirected from {shown(seen[-2])}") from None
            try:
                if response.is_redirect:
                    target = urljoin(url, response.headers["Location"])
                    if target in seen:
                        raise SourceError(f"redirect loop at {shown(url)} (back to {shown(target)})")
                    if len(seen) > policy.max_redirects:
                        raise SourceError(f"too many redirects from {shown(seen[0])} "
                                          f"(more than {policy.max_redirects})")
                    log.debug("redirect %s -> %s", shown(url), shown(target))
                    url = target
                    continue
                if response.status_code != 200:
                    reason = f"HTTP {response.status_code}"
                    if response.status_code == 404:
                        reason += " (not found)"
                    raise SourceError(f"{what or shown(url)}: {reason} from {shown(url)}")
                return _read_capped(response, url, limit, watch), url
            finally:
                response.close()


def _request(session: requests.Session, url: str, watch: Watch, accept: str) -> requests.Response:
    watch.at("fetching", url)
    remaining = watch.remaining()
    if remaining <= 0:
        raise watch.timed_out()
    headers = {"Accept": accept, "Accept-Encoding": "identity", "User-Agent": "jarvis"}
    try:
        return session.get(url, headers=headers, stream=True, allow_redirects=False,
                           timeout=remaining)
    except requests.Timeout:
        raise watch.timed_out() from None
    except requests.exceptions.SSLError as exc:
        raise SourceError(f"TLS failed for {shown(url)}: {_tls_reason(exc)}") from None
    except requests.ConnectionError as exc:
        raise SourceError(f"cannot connect to {shown(url)}: {_why(exc)}") from None
    except requests.RequestException as exc:
        raise SourceError(f"fetching {shown(url)} failed: {_why(exc)}") from None


def _read_capped(response: requests.Response, url: str, limit: int, watch: Watch) -> bytes:
    """Read at most ``limit`` bytes, stopping early; refuse compressed bodies (no inflation bombs).

    ``read1`` returns whatever one receive brought, so the deadline is checked
    between receives and a server dripping a byte at a time cannot outlast it.
    """
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise SourceError(f"{shown(url)} sent a {encoding}-compressed body, which is not accepted")
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise SourceError(f"{shown(url)} is {int(declared)} bytes, over the limit of {limit} bytes")
    watch.at("reading", url)
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := response.raw.read1(_CHUNK, decode_content=False):
            size += len(chunk)
            if size > limit:
                raise SourceError(f"{shown(url)} is over the limit of {limit} bytes (stopped reading)")
            if watch.remaining() < 0:
                raise watch.timed_out()
            chunks.append(chunk)
    except (ReadTimeoutError, socket.timeout, TimeoutError):
        raise watch.timed_out() from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise SourceError(f"reading {shown(url)} failed: {_why(exc)}") from None
    return b"".join(chunks)


def _tls_reason(exc: BaseException) -> str:
    """The TLS library's own reason inside a requests/urllib3 error, with a hint when the
    certificate was not trusted."""
    found = _find_ssl_error(exc)
    if isinstance(found, ssl.SSLCertVerificationError):
        return (f"certificate verify failed: {found.verify_message} "
                "(a private CA can be trusted with sources.url.ca_file)")
    return _tls_text(found) if found is not None else _why(exc)


def _find_ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` wrapped somewhere in ``exc`` (args, reason, cause or context)."""
    todo: list[Any] = [exc]
    seen: set[int] = set()
    while todo:
        current = todo.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        todo.extend([*current.args, getattr(current, "reason", None), current.__cause__,
                     current.__context__])
    return None


def _tls_text(exc: BaseException) -> str:
    """An ``ssl.SSLError`` as words: ``[SSL: X] wrong version number (_ssl.c:1000)`` -> the middle."""
    text = " ".join(str(exc.args[1] if len(exc.args) > 1 else exc).split())
    text = re.sub(r"^\[[A-Z0-9_: ]+\] ", "", text)
    return re.sub(r" \(_ssl\.c:\d+\)$", "", text)[:200] or type(exc).__name__


def _why(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, on one line."""
    while exc.__context__ is not None:
        exc = exc.__context__
    text = " ".join(str(exc).split())
    text = re.sub(r"<urllib3\.connection\.[A-Za-z]+ object at 0x[0-9a-f]+>: ", "", text)
    return text[:200] or type(exc).__name__


def _session(policy: Policy, watch: Watch) -> requests.Session:
    """A session whose connections go only to checked addresses, with no proxies or netrc,
    verifying TLS with ``policy.ssl_context()`` and registering each socket with ``watch``."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(max_retries=0)
    adapter.poolmanager.connection_pool_kw["ssl_context"] = policy.ssl_context()
    adapter.poolmanager.pool_classes_by_scheme = {
        "http": _pinned_pool(HTTPConnectionPool, HTTPConnection, policy, watch),
        "https": _pinned_pool(HTTPSConnectionPool, HTTPSConnection, policy, watch),
    }
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _pinned_pool(pool_cls: type, conn_cls: type, policy: Policy, watch: Watch) -> type:
    """A connection pool class whose connections resolve and check the host, then connect to that address.

    TLS still verifies the certificate against the host name (SNI and checks use
    ``self.host``); only the TCP destination is pinned.
    """

    def _new_conn(self: HTTPConnection) -> socket.socket:
        addresses = policy.addresses(self._dns_host, self.port)
        last: OSError | None = None
        for address in addresses:
            try:
                sock = create_connection((address, self.port), self.timeout,
                                         source_address=self.source_address,
                                         socket_options=self.socket_options)
            except socket.timeout as exc:
                raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
            except OSError as exc:
                last = exc
                continue
            try:
                watch.opened(sock)
            except OSError:
                sock.close()
                raise
            return sock
        raise NewConnectionError(self, f"connection refused or unreachable ({last})")

    pinned_conn = type(f"Pinned{conn_cls.__name__}", (conn_cls,), {"_new_conn": _new_conn})
    return type(f"Pinned{pool_cls.__name__}", (pool_cls,), {"ConnectionCls": pinned_conn})
