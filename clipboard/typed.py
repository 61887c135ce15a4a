"""Frozen dataclasses built from plain mappings, checked against their annotations.

``clipboard.settings`` declares the configuration's sections as dataclasses; this
builds one from the merged configuration (``build``), field by field: a number may
be written ``5`` where a float is wanted, a list becomes a tuple, a mapping a
read-only mapping (its null entries dropped), a nested dataclass is built in turn,
``X | None`` allows null, a ``Literal`` its words, a ``Secret`` field reads the pair
``<name>``/``<name>_env``; then the class's own ``check()`` if it has one. Anything
else is one ``ConfigError`` naming the dotted key, written for the operator.
"""
from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, Literal, TypeVar

from clipboard.errors import ConfigError
from clipboard.secret import ENV_SUFFIX, Secret

T = TypeVar("T")

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a section class (worked out once per class)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _key(name: str) -> str:
    return name.rstrip("_")  # ``from_`` is the key ``from``


def keys_of(cls: type) -> set[str]:
    """The configuration keys a section class reads (a Secret reads two)."""
    hints = _hints(cls)
    out: set[str] = set()
    for f in fields(cls):
        out.add(_key(f.name))
        if hints[f.name] is Secret:
            out.add(_key(f.name) + ENV_SUFFIX)
    return out


def build(cls: type[T], data: Any, where: str) -> T:
    """The section ``cls`` from the merged mapping ``data`` at ``where``, checked."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        key = _key(f.name)
        path = f"{where}.{key}"
        if hints[f.name] is Secret:
            values[f.name] = Secret(path, _optional_text(data, key, path),
                                    _optional_text(data, key + ENV_SUFFIX, path + ENV_SUFFIX))
            continue
        if key not in data:
            raise ConfigError(f"{path} is missing")
        values[f.name] = convert(data[key], hints[f.name], path)
    built = cls(**values)
    check = getattr(built, "check", None)
    if check is not None:
        check()
    return built


def _optional_text(data: Mapping[str, Any], key: str, path: str) -> str | None:
    value = data.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"{path} must be text, not {type(value).__name__}")
    return str(value)


def convert(value: Any, hint: Any, path: str) -> Any:
    """``value`` as the type ``hint`` says (a section, a mapping, a tuple, a scalar)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return convert(value, options[0], path)
    if value is None:
        raise ConfigError(f"{path} is empty; it must be {_name(hint)}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{path} is {value!r}; it is one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, not {type(value).__name__}")
        item = typing.get_args(hint)[0]
        return tuple(convert(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping, not {type(value).__name__}")
        item = typing.get_args(hint)[1] if typing.get_args(hint) else Any
        return types.MappingProxyType({str(k): convert(v, item, f"{path}.{k}")
                                       for k, v in value.items() if v is not None})
    if is_dataclass(hint):
        return build(hint, value, path)  # type: ignore[arg-type]
    return _scalar(value, hint, path)


def _scalar(value: Any, hint: Any, path: str) -> Any:
    if hint is Any or hint is object:
        return value
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and (hint is float or float(value).is_integer())
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(f"{path} must be {_name(hint)}, not {type(value).__name__}")
    return hint(value)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
