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
  so the cap is on what is kept), and the whole fetch has a deadline.

Only the bytes are returned; the caller parses them with ``clipboard.document``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import socket
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
        )

    def check_url(self, url: str) -> str:
        """Refuse a URL by scheme, credentials or host before any network traffic; return the host."""
        parts = urlsplit(url)
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
    """A URL fit for chat, logs and the store: no credentials, no query (tokens live there)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    try:
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
    except ValueError:
        pass
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))[:300]


async def fetch(spec: str, config: Config) -> Fetched:
    """Fetch a gist or a raw URL; the bytes are parsed by the caller."""
    policy = Policy.from_config(config)
    return await asyncio.to_thread(_fetch, spec.strip(), policy)


def _fetch(url: str, policy: Policy) -> Fetched:
    host = policy.check_url(url)
    if host in policy.gist_hosts:
        return _fetch_gist(url, policy)
    body, final = _get(url, policy, policy.max_bytes)
    return Fetched(kind="url", source=shown(final), data=body)


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


def _fetch_gist(url: str, policy: Policy) -> Fetched:
    ident = gist_id(url)
    api_url = f"{policy.gist_api}/gists/{ident}"
    body, _ = _get(api_url, policy, policy.api_max_bytes, accept="application/vnd.github+json",
                   what=f"gist {ident}")
    try:
        answer = json.loads(body)
    except ValueError:
        raise SourceError(f"the gist API answer for {ident} is not JSON") from None
    files = answer.get("files") if isinstance(answer, dict) else None
    if not isinstance(files, dict) or not files:
        raise SourceError(f"gist {ident} has no files")
    name, entry = _choose_file(ident, files)
    content = entry.get("content")
    raw_url = entry.get("raw_url")
    if isinstance(content, str) and not entry.get("truncated"):
        data = content.encode()
        if len(data) > policy.max_bytes:
            raise SourceError(f"gist {ident} file {name} is {len(data)} bytes, "
                              f"over the limit of {policy.max_bytes} bytes")
        source = raw_url if isinstance(raw_url, str) and raw_url else f"{url}#{name}"
        return Fetched(kind="url", source=shown(source), data=data)
    if not isinstance(raw_url, str) or not raw_url:
        raise SourceError(f"gist {ident} file {name} has neither content nor raw_url")
    data, final = _get(raw_url, policy, policy.max_bytes, what=f"gist {ident} file {name}")
    return Fetched(kind="url", source=shown(final), data=data)


def _choose_file(ident: str, files: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The only file, or the only one ending in .yaml/.yml."""
    entries = {str(name): entry for name, entry in files.items() if isinstance(entry, dict)}
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


def _get(url: str, policy: Policy, limit: int, *, accept: str = "*/*",
         what: str | None = None) -> tuple[bytes, str]:
    """GET ``url`` following redirects by hand (each hop checked); the body and the final URL."""
    deadline = time.monotonic() + policy.timeout
    seen: list[str] = []
    with _session(policy) as session:
        while True:
            seen.append(url)
            try:
                policy.check_url(url)
                response = _request(session, url, policy, deadline, accept)
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
                return _read_capped(response, url, limit, deadline, policy.timeout), url
            finally:
                response.close()


def _request(session: requests.Session, url: str, policy: Policy, deadline: float,
             accept: str) -> requests.Response:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise SourceError(f"timed out after {policy.timeout:g}s fetching {shown(url)}")
    headers = {"Accept": accept, "Accept-Encoding": "identity", "User-Agent": "jarvis"}
    try:
        return session.get(url, headers=headers, stream=True, allow_redirects=False,
                           timeout=min(remaining, policy.timeout))
    except requests.Timeout:
        raise SourceError(f"timed out after {policy.timeout:g}s fetching {shown(url)}") from None
    except requests.exceptions.SSLError:
        raise SourceError(f"TLS verification failed for {shown(url)}") from None
    except requests.ConnectionError as exc:
        raise SourceError(f"cannot connect to {shown(url)}: {_why(exc)}") from None
    except requests.RequestException as exc:
        raise SourceError(f"fetching {shown(url)} failed: {_why(exc)}") from None


def _read_capped(response: requests.Response, url: str, limit: int, deadline: float,
                 timeout: float) -> bytes:
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
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := response.raw.read1(_CHUNK, decode_content=False):
            size += len(chunk)
            if size > limit:
                raise SourceError(f"{shown(url)} is over the limit of {limit} bytes (stopped reading)")
            if time.monotonic() > deadline:
                raise SourceError(f"timed out after {timeout:g}s reading {shown(url)}")
            chunks.append(chunk)
    except (ReadTimeoutError, socket.timeout, TimeoutError):
        raise SourceError(f"timed out after {timeout:g}s reading {shown(url)}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise SourceError(f"reading {shown(url)} failed: {_why(exc)}") from None
    return b"".join(chunks)


def _why(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, on one line."""
    while exc.__context__ is not None:
        exc = exc.__context__
    text = " ".join(str(exc).split())
    text = re.sub(r"<urllib3\.connection\.[A-Za-z]+ object at 0x[0-9a-f]+>: ", "", text)
    return text[:200] or type(exc).__name__


def _session(policy: Policy) -> requests.Session:
    """A session whose connections go only to checked addresses, with no proxies or netrc."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = {
        "http": _pinned_pool(HTTPConnectionPool, HTTPConnection, policy),
        "https": _pinned_pool(HTTPSConnectionPool, HTTPSConnection, policy),
    }
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _pinned_pool(pool_cls: type, conn_cls: type, policy: Policy) -> type:
    """A connection pool class whose connections resolve and check the host, then connect to that address.

    TLS still verifies the certificate against the host name (SNI and checks use
    ``self.host``); only the TCP destination is pinned.
    """

    def _new_conn(self: HTTPConnection) -> socket.socket:
        addresses = policy.addresses(self._dns_host, self.port)
        last: OSError | None = None
        for address in addresses:
            try:
                return create_connection((address, self.port), self.timeout,
                                         source_address=self.source_address,
                                         socket_options=self.socket_options)
            except socket.timeout as exc:
                raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
            except OSError as exc:
                last = exc
        raise NewConnectionError(self, f"connection refused or unreachable ({last})")

    pinned_conn = type(f"Pinned{conn_cls.__name__}", (conn_cls,), {"_new_conn": _new_conn})
    return type(f"Pinned{pool_cls.__name__}", (pool_cls,), {"ConnectionCls": pinned_conn})
