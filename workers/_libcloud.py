"""Calling libcloud safely: every failure becomes one line of StepFailed without secrets.

A libcloud exception may quote the request it failed on, signature and token
included, and spans several lines; a step's log and the chat see neither. The
credentials of every driver built in this process are remembered here, so a
later API call scrubs them too (not only the call that built the driver).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from clipboard.errors import JarvisError, StepFailed

T = TypeVar("T")

# Credentials of the drivers built in this process: no error message may show them.
SECRETS: set[str] = set()


def guard(what: str, secrets: Iterable[str], call: Callable[[], T]) -> T:
    """Run one libcloud call; any failure becomes a one-line StepFailed without secrets."""
    try:
        return call()
    except JarvisError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever libcloud raises, the step says one line
        message = " ".join(str(exc).split()) or "no message"
        for secret in sorted({*secrets, *SECRETS}, key=len, reverse=True):
            if secret:
                message = message.replace(secret, "***")
        code = getattr(exc, "code", None)
        detail = f"{type(exc).__name__}{f' {code}' if code else ''}: {message[:300]}"
        raise StepFailed(f"{what}: {detail}") from None


def api(provider: str, what: str, call: Callable[[], T]) -> T:
    """``guard`` for an API call named ``<provider> <what>`` in the error."""
    return guard(f"{provider} {what}", [], call)
