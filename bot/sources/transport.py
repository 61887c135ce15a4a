"""The blocking HTTP(S) transport of a URL fetch: one GET at a time, each redirect hop
checked, the body capped, every socket pinned to a checked address and cut at the deadline.

Why a module of its own: this is the part that runs in a worker thread and talks
to the network; what is allowed is ``bot.sources.urlpolicy``, what a gist answer
means is ``bot.sources.gist``, and the threat model is in ``bot.sources.url``.
"""
from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.connection import create_connection

from bot.sources.urlpolicy import Policy, tls_text
from clipboard.errors import SourceError
from clipboard.redact import shown_url

log = logging.getLogger(__name__)

_CHUNK = 16 * 1024


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
        return SourceError(f"timed out after {self.timeout:g}s {doing} {shown_url(url)}")

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


def get(url: str, policy: Policy, limit: int, watch: Watch, *, accept: str = "*/*",
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
                raise SourceError(f"{exc}, redirected from {shown_url(seen[-2])}") from None
            try:
                if response.is_redirect:
                    target = urljoin(url, response.headers["Location"])
                    if target in seen:
                        raise SourceError(f"redirect loop at {shown_url(url)} (back to {shown_url(target)})")
                    if len(seen) > policy.max_redirects:
                        raise SourceError(f"too many redirects from {shown_url(seen[0])} "
                                          f"(more than {policy.max_redirects})")
                    log.debug("redirect %s -> %s", shown_url(url), shown_url(target))
                    url = target
                    continue
                if response.status_code != 200:
                    reason = f"HTTP {response.status_code}"
                    if response.status_code == 404:
                        reason += " (not found)"
                    raise SourceError(f"{what or shown_url(url)}: {reason} from {shown_url(url)}")
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
        raise SourceError(f"TLS failed for {shown_url(url)}: {_tls_reason(exc)}") from None
    except requests.ConnectionError as exc:
        raise SourceError(f"cannot connect to {shown_url(url)}: {_why(exc)}") from None
    except requests.RequestException as exc:
        raise SourceError(f"fetching {shown_url(url)} failed: {_why(exc)}") from None


def _read_capped(response: requests.Response, url: str, limit: int, watch: Watch) -> bytes:
    """Read at most ``limit`` bytes, stopping early; refuse compressed bodies (no inflation bombs).

    ``read1`` returns whatever one receive brought, so the deadline is checked
    between receives and a server dripping a byte at a time cannot outlast it.
    """
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise SourceError(f"{shown_url(url)} sent a {encoding}-compressed body, which is not accepted")
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise SourceError(f"{shown_url(url)} is {int(declared)} bytes, over the limit of {limit} bytes")
    watch.at("reading", url)
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := response.raw.read1(_CHUNK, decode_content=False):
            size += len(chunk)
            if size > limit:
                raise SourceError(f"{shown_url(url)} is over the limit of {limit} bytes (stopped reading)")
            if watch.remaining() < 0:
                raise watch.timed_out()
            chunks.append(chunk)
    except (ReadTimeoutError, TimeoutError):
        raise watch.timed_out() from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise SourceError(f"reading {shown_url(url)} failed: {_why(exc)}") from None
    return b"".join(chunks)


def _tls_reason(exc: BaseException) -> str:
    """The TLS library's own reason inside a requests/urllib3 error, with a hint when the
    certificate was not trusted."""
    found = _find_ssl_error(exc)
    if isinstance(found, ssl.SSLCertVerificationError):
        return (f"certificate verify failed: {found.verify_message} "
                "(a private CA can be trusted with sources.url.ca_file)")
    return tls_text(found) if found is not None else _why(exc)


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
            except TimeoutError as exc:
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
