"""What a fetch from chat may touch: the ``sources.url`` policy, and URLs made fit to show.

Why a module of its own: the URL entry point, the transport and the gist reader
all check against the same ``Policy`` and name URLs the same way (``shown``), so
both live below them. The threat model is in ``bot.sources.url``.
"""
from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from clipboard.config import Config
from clipboard.errors import SourceError
from clipboard.redact import shown_url


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
    def from_config(cls, config: Config) -> Policy:
        section = config.sources.url
        networks = []
        for entry in section.allow_addresses:
            try:
                networks.append(ipaddress.ip_network(str(entry), strict=False))
            except ValueError:
                raise SourceError(f"sources.url.allow_addresses: {entry!r} is not an address or network") from None
        return cls(
            allowed_hosts=frozenset(h.lower().rstrip(".") for h in section.allowed_hosts),
            gist_hosts=frozenset(h.lower().rstrip(".") for h in section.gist_hosts),
            gist_api=section.gist_api.rstrip("/"),
            allow_http=section.allow_http,
            allow_addresses=tuple(networks),
            max_bytes=section.max_bytes,
            api_max_bytes=section.api_max_bytes,
            timeout=section.timeout,
            max_redirects=section.max_redirects,
            ca_file=os.path.expanduser(section.ca_file) if section.ca_file else None,
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
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else tls_text(exc)
                raise SourceError(f"sources.url.ca_file: cannot load {self.ca_file}: {reason}") from None
        return context

    def check_url(self, url: str) -> str:
        """Refuse a URL by scheme, credentials or host before any network traffic; return the host."""
        try:
            parts = urlsplit(url)
        except ValueError:
            raise SourceError(f"refused {shown_url(url)}: not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise SourceError(f"refused {shown_url(url)}: only https:// URLs are fetched")
        if scheme == "http" and not self.allow_http:
            raise SourceError(f"refused {shown_url(url)}: plain http:// is not allowed, use https://")
        if parts.username is not None or parts.password is not None:
            raise SourceError(f"refused {shown_url(url)}: credentials in URLs are not accepted")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise SourceError(f"refused {shown_url(url)}: no host in the URL")
        try:
            _ = parts.port  # reading it is what checks it: a bad port raises ValueError
        except ValueError:
            raise SourceError(f"refused {shown_url(url)}: bad port") from None
        if host not in self.allowed_hosts:
            allowed = ", ".join(sorted(self.allowed_hosts)) or "none"
            raise SourceError(f"refused {shown_url(url)}: host {host} is not allowed "
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


def tls_text(exc: BaseException) -> str:
    """An ``ssl.SSLError`` as words: ``[SSL: X] wrong version number (_ssl.c:1000)`` -> the middle."""
    text = " ".join(str(exc.args[1] if len(exc.args) > 1 else exc).split())
    text = re.sub(r"^\[[A-Z0-9_: ]+\] ", "", text)
    return re.sub(r" \(_ssl\.c:\d+\)$", "", text)[:200] or type(exc).__name__
