"""YAML in and out of the clipboard, with libyaml and only safe tags.

Hostile input is expected here (designs come from gists and chat), so loading
enforces three limits before anyone looks at the data: the size of the text, the
number of nodes once aliases are expanded (a "billion laughs" document is a few
hundred bytes that expand to gigabytes when dumped or walked), and a mapping at
the top level.

Loading is strict: a key written twice in one mapping is an error naming the key
and both lines. Plain YAML keeps the last value silently, so a design (or a
configuration) that says ``hostname`` twice would deploy whichever came second,
and whoever reviewed the first line would never know.
"""
from __future__ import annotations

import json
from typing import Any

import yaml

try:
    from yaml import CSafeDumper as SafeDumper
    from yaml import CSafeLoader as SafeLoader
except ImportError as exc:  # pragma: no cover - a broken PyYAML build
    raise ImportError("jarvis needs PyYAML built with libyaml (CSafeLoader)") from exc

from clipboard.errors import ClipboardError

MERGE_TAG = "tag:yaml.org,2002:merge"

DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_NODES = 100_000


class DuplicateKey(yaml.YAMLError):
    """A mapping that names one key twice; ``load`` adds what the document was."""

    def __init__(self, key: Any, first_line: int, second_line: int) -> None:
        lines = (f"line {first_line}" if first_line == second_line
                 else f"lines {first_line} and {second_line}")
        super().__init__(f"the key {_one_line(repr(key))[:100]} twice ({lines})")
        self.key = key
        self.lines = (first_line, second_line)


class StrictLoader(SafeLoader):
    """libyaml's safe loader that refuses a key written twice in one mapping.

    libyaml still does the parsing (the constructor was Python already), and each
    key is constructed once: the base class finds it cached.

    Keys a ``<<`` merge brings in may be overridden, as YAML intends; only the keys
    written in the mapping itself are compared.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _value in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:
                    continue  # an unhashable key: the constructor refuses it next
        return super().construct_mapping(node, deep=deep)


def load(text: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
         max_nodes: int = DEFAULT_MAX_NODES, what: str = "document") -> dict[str, Any]:
    """Parse one YAML document that must be a mapping; raise ClipboardError otherwise."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > max_bytes:
        raise ClipboardError(f"{what} is {size} bytes, over the limit of {max_bytes} bytes")
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except DuplicateKey as exc:
        raise ClipboardError(f"{what} has {exc}") from None
    except yaml.constructor.ConstructorError as exc:
        problem = getattr(exc, "problem", "") or str(exc)
        if "constructor for the tag" not in problem:
            raise ClipboardError(f"{what} is not valid YAML: {_one_line(problem)}") from None
        raise ClipboardError(
            f"{what} uses a YAML tag that is not allowed ({_one_line(problem)})") from None
    except yaml.YAMLError as exc:
        raise ClipboardError(f"{what} is not valid YAML: {_one_line(str(exc))}") from None
    except (RecursionError, MemoryError):
        raise ClipboardError(f"{what} is nested too deeply") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise ClipboardError(f"{what} must be a YAML mapping at the top level, not {kind}")
    count_nodes(data, max_nodes, what)
    return data


def count_nodes(data: Any, limit: int, what: str = "document") -> int:
    """Count nodes as if aliases were expanded; refuse past ``limit``.

    Walking shared references again on purpose is what catches alias bombs and
    self-referencing documents, which a dump would otherwise expand forever.
    """
    count = 0
    stack = [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            raise ClipboardError(
                f"{what} expands to more than {limit} nodes (an alias bomb or a recursive document?)")
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise ClipboardError(f"{what} has a mapping key of type {type(key).__name__}")
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return count


class _Dumper(SafeDumper):
    """libyaml's dumper, with multi-line strings (keys, scripts) as literal blocks."""


def _represent_str(dumper: _Dumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data and not data.startswith(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(data: dict[str, Any]) -> str:
    """Render a clipboard as block-style YAML, keys in the order they were written."""
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=False,
                     allow_unicode=True, width=100)


def dump_json(data: dict[str, Any]) -> str | None:
    """The clipboard as JSON for a Python worker, or None when JSON cannot say it
    exactly (a date, binary, a key that is not a string).

    JSON is YAML too, so the contract holds; it is used because a worker forked from
    a warm server parses it with a third of the page faults (and of the time) that
    PyYAML's constructor costs in a fresh child, and on a busy host that is most of
    a short step's price.
    """
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if not all(type(key) is str for key in node):
                return None
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif not isinstance(node, _JSON_SCALARS):
            return None
    return json.dumps(data, separators=(",", ":"))  # ASCII: a lone surrogate still encodes


_JSON_SCALARS = (str, int, float, bool, type(None))


def handed(clipboard: dict[str, Any], text: str, *, executable: bool) -> str:
    """The clipboard as a step is handed it, by the local runner or in a Celery message:
    an executable gets ``text`` (the YAML the contract promises it), a Python task JSON
    when JSON says it exactly (``dump_json``), else the YAML too."""
    return text if executable else dump_json(clipboard) or text


def load_handed(text: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
                max_nodes: int | None = None, what: str = "clipboard") -> dict[str, Any]:
    """What a Python worker reads on stdin, and a Celery worker in a step's message: JSON
    from the runner (``dump_json``), or YAML when that could not be used or a person
    pipes a file in.

    ``max_nodes`` is the limit on either path. Without it only YAML is counted, against
    the default: a fork server's child is handed what its runner already counted, and
    counting JSON again would cost every step."""
    if text[:1] in (b"{", "{") and len(text) <= max_bytes:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            pass  # YAML's flow style, say: load() decides
        else:
            if isinstance(data, dict):
                if max_nodes is not None:
                    count_nodes(data, max_nodes, what)
                return data
    return load(text, max_bytes=max_bytes, max_nodes=max_nodes or DEFAULT_MAX_NODES, what=what)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
