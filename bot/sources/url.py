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

This module is the entry: it runs the blocking fetch in a thread under the one
deadline and picks gist or raw URL. What may be touched is ``bot.sources.urlpolicy``,
the network side ``bot.sources.transport``, reading a gist API answer ``bot.sources.gist``.
"""
from __future__ import annotations

import asyncio

from bot.sources.fetched import Fetched
from bot.sources.gist import fetch_gist
from bot.sources.transport import Watch, get
from bot.sources.urlpolicy import Policy
from clipboard.config import Config
from clipboard.redact import shown_url


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
            return fetch_gist(url, policy, watch)
        body, final = get(url, policy, policy.max_bytes, watch)
        return Fetched(kind="url", source=shown_url(final), data=body)
    finally:
        watch.close()
