"""Exceptions shared by the engine, the workers and the bot.

Every error here carries a message written for an operator reading chat: it says
what was wrong in one line, without secrets and without a traceback.
"""
from __future__ import annotations

from typing import Any


class JarvisError(Exception):
    """Base of every error jarvis reports to a person."""


class GrammarError(JarvisError):
    """A line that is addressed to the bot but cannot be understood (``bot.grammar``)."""


class ClipboardError(JarvisError):
    """A clipboard (design or worker output) that is not acceptable YAML."""


class DesignError(JarvisError):
    """A design that parsed but says something jarvis refuses (bad hostname, ...)."""


class ConfigError(JarvisError):
    """A configuration file or value that is missing or wrong."""


class UnknownStep(JarvisError):
    """A pipeline names a step no worker provides, or a name that is no step name."""


class SourceError(JarvisError):
    """A design source (file, URL, LDAP) that could not deliver a design."""


class HostBusy(JarvisError):
    """A deployment of this host is already active (here or in another process)."""


class HostLocked(JarvisError):
    """A deployment of a host an operator locked was asked for."""


class NotFound(JarvisError):
    """A host, deployment, cluster or step that does not exist (HTTP 404)."""


class Unauthenticated(JarvisError):
    """A request without a credential jarvis knows (HTTP 401: no token, or a wrong one)."""


class Denied(JarvisError):
    """The ACL refused a command; the message names the rule (HTTP 403)."""


class StoreError(JarvisError):
    """The state store cannot be opened or used (a bad path, a file that is not one)."""


class StepFailed(JarvisError):
    """Raised by a Python worker to fail its step with a clear reason.

    ``clipboard`` is what the worker wants kept despite failing (a node id, say),
    so that whoever cleans up knows what exists; the contract keeps a mapping a
    failing worker printed.
    """

    def __init__(self, message: str, clipboard: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.clipboard = clipboard
