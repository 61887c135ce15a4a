"""A GitHub gist page as a design: its id, the gist API's answer, and which file is the design.

Why a module of its own: a gist API answer is untrusted JSON of any shape (nested
a million deep, files of the wrong type, names with control characters), and
reading it safely is its own job; every shape that cannot be used is one line.
The bytes still come through ``bot.sources.transport`` under the same policy and deadline.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from bot.sources.fetched import Fetched
from bot.sources.transport import Watch, get
from bot.sources.urlpolicy import Policy
from clipboard.errors import SourceError
from clipboard.redact import printable, shown_url

_GIST_ID = re.compile(r"^[0-9a-fA-F]{1,64}$")
_GIST_USER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_YAML_SUFFIXES = (".yaml", ".yml")


def gist_id(url: str) -> str:
    """The id in a gist page URL: ``/<id>`` or ``/<user>/<id>`` (``.git`` or ``/`` at the end is fine)."""
    path = urlsplit(url).path.strip("/")
    path = path.removesuffix(".git")
    segments = path.split("/") if path else []
    if len(segments) == 1 and _GIST_ID.match(segments[0]):
        return segments[0]
    if len(segments) == 2 and _GIST_USER.match(segments[0]) and _GIST_ID.match(segments[1]):
        return segments[1]
    raise SourceError(f"{shown_url(url)} is not a gist page (expected https://{urlsplit(url).hostname}/<id> "
                      "or /<user>/<id>)")


def fetch_gist(url: str, policy: Policy, watch: Watch) -> Fetched:
    ident = gist_id(url)
    api_url = f"{policy.gist_api}/gists/{ident}"
    body, _ = get(api_url, policy, policy.api_max_bytes, watch,
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
        return Fetched(kind="url", source=shown_url(source), data=data)
    if not isinstance(raw_url, str) or not raw_url:
        raise SourceError(f"gist {ident} file {name} has neither content nor raw_url")
    data, final = get(raw_url, policy, policy.max_bytes, watch, what=f"gist {ident} file {name}")
    return Fetched(kind="url", source=shown_url(final), data=data)


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
