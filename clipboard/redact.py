"""Keep secrets out of chat, logs, ``status``/``history``/``clipboard`` output and the
store's step logs.

The store keeps the real clipboard (a later step needs the root password); every
rendering for people goes through here. Three nets, because each alone has holes:

* **By name** (``is_secret_key``, ``redact``): values under secret-looking keys are
  shown as ``***``. The one rule for what a secret name is lives in ``is_secret_key``;
  cluster labels, ``clipboard`` output and the scrubbers all ask it.
* **By value** (``Scrubber``): text a worker wrote (stderr, error lines) is scrubbed
  of every secret the deployment has ever held and every secret the configuration
  names — the whole value, each line of a multi-line one, and any fragment of
  ``FRAGMENT`` characters or more, so a secret cut by a character (or printed with
  a prefix) is still hidden. A fragment shorter than that may still show: it is the
  price of not masking ordinary words.
* **By shape** (``scrub_urls``): credentials in URLs (``scheme://user:pass@``) are
  masked whether or not anything told us they were secret.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from clipboard.secret import secret_pairs

MASK = "***"
MIN_WHOLE = 6  # a shorter secret is not searched for: it would mask ordinary words
FRAGMENT = 8  # any run of this many characters of a secret is masked

# -- names ---------------------------------------------------------------------------------
# The rule, word by word (a name is split at ``.``, ``-``, ``_``, spaces and camelCase):
#   1. a name whose LAST word describes a secret rather than holding it (``password_env``,
#      ``tsig_key_name``, ``key_file``, ``deploy_key.type``) is not secret: its value is a
#      variable name, a path or a label, and masking it would hide useful text;
#   2. a word that is (or, for the long words, contains) a secret word is secret:
#      ``pass``, ``passwd``, ``password``, ``pwd``, ``passphrase``, ``secret``, ``token``,
#      ``credential(s)``, ``creds`` — ``db_pwd``, ``rootpassword``, ``apiToken``;
#   3. otherwise anything public (``pub``, ``public``, ``sshpubkey``, ``public_key``) is
#      not secret: a public key is published on purpose, and treating it as secret would
#      mask it (and fragments of every ``ssh-ed25519 AAAA…`` line) everywhere;
#   4. otherwise the word ``key`` (singular: ``credentials.key``, ``api-key``,
#      ``private_key``, ``deploy_key``) or a private compound (``apikey``, ``privkey``)
#      is secret. Plural ``keys`` is a collection — the ``keys`` silo, ``host_keys``
#      (public host keys) — and only secret after a private qualifier (``api_keys``).
_DESCRIPTIVE = frozenset({"env", "name", "file", "path", "type", "fingerprint", "length",
                          "bits", "size", "kind"})
_SECRET_WORDS = frozenset({"pass", "passwd", "password", "passwords", "pwd", "passphrase",
                           "secret", "secrets", "token", "tokens", "credential", "credentials",
                           "creds"})
_SECRET_PARTS = ("password", "passwd", "passphrase", "secret", "token", "credential")
_PRIVATE_KEYS = frozenset({"apikey", "privkey", "privatekey", "accesskey", "signingkey"})
_PRIVATE_QUALIFIERS = frozenset({"api", "private", "priv", "access", "signing", "encryption",
                                 "master"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _words(key: Any) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", _CAMEL.sub("_", str(key)).lower()) if w]


def _verdict(key: Any) -> bool | None:
    """True: secret; False: explicitly not (descriptive or public); None: no opinion."""
    words = _words(key)
    if not words:
        return None
    if words[-1] in _DESCRIPTIVE:
        return False
    if any(w in _SECRET_WORDS or any(part in w for part in _SECRET_PARTS) for w in words):
        return True
    if any(w in ("pub", "public") or "pubkey" in w or "publickey" in w for w in words):
        return False
    if any(w == "key" or w in _PRIVATE_KEYS for w in words):
        return True
    if any(w == "keys" and i and words[i - 1] in _PRIVATE_QUALIFIERS
           for i, w in enumerate(words)):
        return True
    return None


def is_secret_key(key: Any, extra: Iterable[str] = ()) -> bool:
    """Whether a value under ``key`` (a name, or a dotted path) is a secret.

    ``extra`` are the operator's own words (``clipboard.redact_keys``), matched as
    parts of the name; they add to the rule above and never override its "public"
    or "descriptive" answers.
    """
    verdict = _verdict(key)
    if verdict is not None:
        return verdict
    name = str(key).lower().replace("-", "_")
    return any(str(word).lower().replace("-", "_") in name for word in extra if word)


def _shown_inside_secret(key: Any) -> bool:
    """Inside a secret mapping (``deploy_key``), only what names itself public or
    descriptive is shown (``public_key``, ``type``); everything else is masked."""
    return _verdict(key) is False


# -- URLs -----------------------------------------------------------------------------------
# userinfo with a password; greedy up to the last ``@`` before the path, so a password
# with a raw ``@`` in it is masked whole.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/?#@]*):"
                           r"(?P<secret>[^\s/?#]+)@")
# a bare token as the user (``https://ghp_…@github.com``); short names (``git@``) are users
_URL_TOKEN_USER = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://)"
                             r"(?P<secret>[^\s:/?#@]{16,})@")


def scrub_urls(text: str) -> str:
    """``scheme://user:pass@host`` → ``scheme://user:***@host`` (and a long token as the
    user → ``scheme://***@host``), known secret or not."""
    if "://" not in text:  # both patterns need it; the search alone is 50 times cheaper
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _URL_TOKEN_USER.sub(lambda m: f"{m['head']}{MASK}@", text)


def url_secrets(text: str) -> set[str]:
    """The credentials in the URLs of ``text`` (so a worker echoing one alone is caught)."""
    return ({m["secret"] for m in _URL_PASSWORD.finditer(text)}
            | {m["secret"] for m in _URL_TOKEN_USER.finditer(text)})


# -- walking data ---------------------------------------------------------------------------
def redact(data: Any, extra: Iterable[str] = ()) -> Any:
    """A copy of ``data`` for people: secret values as ``***`` (a secret mapping leaf by
    leaf, see ``_shown_inside_secret``), URL credentials masked in every string."""
    extra = tuple(extra)

    def walk(node: Any, secret: bool) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, secret and not _shown_inside_secret(k)
                            or not secret and is_secret_key(k, extra))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [walk(item, secret) for item in node]
        if secret and node not in (None, ""):
            return MASK
        return scrub_urls(node) if isinstance(node, str) else node
    return walk(data, False)


def secret_values(data: Any, extra: Iterable[str] = ()) -> set[str]:
    """Every value ``redact`` would mask, and every URL credential, at any depth."""
    extra = tuple(extra)
    found: set[str] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, secret = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, secret and not _shown_inside_secret(k)
                          or not secret and is_secret_key(k, extra)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((item, secret) for item in node)
        elif isinstance(node, bool) or node in (None, ""):
            continue
        elif secret and isinstance(node, (str, int, float)):
            found.add(str(node))
        elif isinstance(node, str):
            found |= url_secrets(node)
    return found


def configured_secrets(data: dict[str, Any], extra: Iterable[str] = (),
                       environ: dict[str, str] | None = None) -> set[str]:
    """The secrets a configuration holds: values under secret names, URL credentials,
    and both sides of every ``<key>``/``<key>_env`` pair (``clipboard.secret``: that
    form exists for secrets, and is what ``Secret`` resolves): the inline value and
    the value of the variable named. ``configmgmt.command`` is a whole command: its
    program is not secret, its arguments are (URLs contribute their credentials)."""
    environ = dict(os.environ) if environ is None else environ
    found = secret_values(data, extra)
    for path, value, env_name in secret_pairs(data):
        if path == "configmgmt.command":
            found |= command_secrets(environ.get(str(env_name), "")) if env_name else set()
            continue
        if value not in (None, "") and not isinstance(value, (dict, list, bool)):
            found.add(str(value))
        if isinstance(env_name, str) and environ.get(env_name):
            found.add(environ[env_name])
    return found


def command_secrets(command: str) -> set[str]:
    """The parts of a command line that may be secret: each argument after the program
    (the value of ``--flag=value``), a URL's credentials instead of the URL."""
    found: set[str] = set()
    for word in command.split()[1:]:
        word = word.partition("=")[2] if word.startswith("-") else word
        if "://" in word:
            found |= url_secrets(word)
        elif word:
            found.add(word)
    return found


def program_of(command: str) -> str:
    """The program a command line runs, without its path or arguments: what a failure
    line may show of a command that can carry a token."""
    words = command.split()
    return os.path.basename(words[0]) if words else "the command"


# -- scrubbing text -------------------------------------------------------------------------
class Scrubber:
    """Masks every known secret in text, whole, line by line and fragment by fragment.

    Fragments: every ``FRAGMENT``-character window of every secret is kept in a set;
    a text is scanned once, each window looked up, and the characters of every window
    found are masked, maximal runs becoming one ``***``. That is linear in the text
    and needs no per-secret search, so scrubbing against hundreds of secrets (every
    clipboard version of a deployment, the configuration's) stays cheap.
    """

    def __init__(self, secrets: Iterable[Any] = ()) -> None:
        self._short: set[str] = set()  # MIN_WHOLE..FRAGMENT-1 characters, searched whole
        self._grams: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[Any]) -> None:
        for secret in secrets:
            text = str(secret)
            for piece in {text.strip(), *(line.strip() for line in text.splitlines())}:
                if len(piece) >= FRAGMENT:
                    self._grams.update(piece[i:i + FRAGMENT]
                                       for i in range(len(piece) - FRAGMENT + 1))
                elif len(piece) >= MIN_WHOLE:
                    self._short.add(piece)

    def __bool__(self) -> bool:
        return bool(self._short or self._grams)

    def scrub(self, text: str) -> str:
        text = scrub_urls(text)
        if not self or not text:
            return text
        hidden = bytearray(len(text))
        grams = self._grams
        for i in range(len(text) - FRAGMENT + 1):
            if text[i:i + FRAGMENT] in grams:
                hidden[i:i + FRAGMENT] = b"\1" * FRAGMENT
        for piece in self._short:
            start = text.find(piece)
            while start >= 0:
                hidden[start:start + len(piece)] = b"\1" * len(piece)
                start = text.find(piece, start + 1)
        if not any(hidden):
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            if hidden[i]:
                while i < len(text) and hidden[i]:
                    i += 1
                out.append(MASK)
            else:
                j = hidden.find(1, i)
                j = len(text) if j < 0 else j
                out.append(text[i:j])
                i = j
        return "".join(out)

    def lines(self, lines: Iterable[str]) -> list[str]:
        return [self.scrub(line) for line in lines]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` scrubbed against ``secrets`` (a one-off ``Scrubber``)."""
    return Scrubber(secrets).scrub(text)


# -- logging --------------------------------------------------------------------------------
class ScrubFilter(logging.Filter):
    """Scrubs a log record in place (message, arguments, traceback): installed on the
    handlers, so records of every logger, jarvis's or a library's, pass through it."""

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format: the handler reports it, as without us
            return True
        clean = self.scrubber.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrubber.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrubber.scrub(record.stack_info)
        return True


def guard_logging(scrubber: Scrubber, logger: logging.Logger | None = None
                  ) -> Callable[[], None]:
    """Put a ``ScrubFilter`` on every handler of ``logger`` (the root: where jarvis's
    handlers are); returns what takes them off again."""
    guard = ScrubFilter(scrubber)
    handlers = list((logger or logging.getLogger()).handlers)
    for handler in handlers:
        handler.addFilter(guard)

    def remove() -> None:
        for handler in handlers:
            handler.removeFilter(guard)
    return remove


def shown_url(url: str) -> str:
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
