"""Keep secrets out of chat, logs and ``clipboard`` output.

The store keeps the real values (a later step needs the root password); every
rendering for people goes through here. Two complementary nets: values under
secret-looking keys become ``***``, and the text of worker logs is scrubbed of
any secret value the clipboard holds, in case a worker echoes one.
"""
from __future__ import annotations

from typing import Any, Iterable

MASK = "***"
DEFAULT_KEYS = ("password", "passwd", "secret", "token", "private_key", "passphrase", "api_key")
_MIN_SCRUB_LEN = 6


def is_secret_key(key: Any, keys: Iterable[str] = DEFAULT_KEYS) -> bool:
    name = str(key).lower().replace("-", "_")
    return any(word in name for word in keys)


def redact(data: Any, keys: Iterable[str] = DEFAULT_KEYS) -> Any:
    """A copy of ``data`` with every value under a secret key replaced by ``***``."""
    keys = tuple(keys)
    if isinstance(data, dict):
        return {k: (MASK if is_secret_key(k, keys) and v not in (None, "") else redact(v, keys))
                for k, v in data.items()}
    if isinstance(data, list):
        return [redact(item, keys) for item in data]
    return data


def secret_values(data: Any, keys: Iterable[str] = DEFAULT_KEYS) -> set[str]:
    """Every string stored under a secret key, at any depth."""
    keys = tuple(keys)
    found: set[str] = set()
    stack = [(None, data)]
    while stack:
        key, node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.items())
        elif isinstance(node, list):
            stack.extend((key, item) for item in node)
        elif key is not None and is_secret_key(key, keys) and isinstance(node, (str, int)):
            found.add(str(node))
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a secret value (and each line of a multi-line one)."""
    for secret in sorted(secrets, key=len, reverse=True):
        for piece in [secret, *secret.splitlines()]:
            piece = piece.strip()
            if len(piece) >= _MIN_SCRUB_LEN and piece in text:
                text = text.replace(piece, MASK)
    return text
