"""One YAML configuration file, validated against the embedded defaults.

``clipboard/defaults.yaml`` is both the embedded default (console chat, SQLite
state, local provider) and the schema: every key a user file may set exists
there, and a user value must have the default's type unless the default is
null. A mapping whose defaults contain the key ``"*"`` is free-form (pipeline
names, ACL rules, size maps); each entry is checked against that template.
``config.example.yaml`` documents every key; a test keeps the two in step.
Numbers must also lie in the range ``clipboard.ranges`` gives their key.

An empty section (``irc:`` with every line under it commented out, ``acl: ~``)
means that section's defaults, as if it were not written; an empty value where
the default is a number, string or list (``step_timeout:``) is refused, since
nothing would say whether the default or "none" was meant. In a free-form mapping
a null entry stays null: there it drops an entry of the defaults. The file is
read with the strict loader: a key written twice is an error naming both lines.
The ``"*"`` templates are the schema's, never configuration: ``merge`` leaves them
out, so no pipeline, role or ACL rule is named ``*``.

``Config`` exposes the merged data as typed sections (``clipboard.settings``),
built once per configuration; ``load`` builds them all, so a file whose sections
cannot be built (a word outside a ``Literal``, a pattern that does not compile)
is refused at start, not when a step first reads it.

Workers run in other processes; they find the same file through the
``JARVIS_CONFIG`` environment variable, which ``load`` sets, and ``current()``.
Secrets may be given inline or through an environment variable named by the
sibling key ``<name>_env``: a ``clipboard.secret.Secret`` field of the section.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from clipboard import ranges, redact, settings, typed
from clipboard.document import DuplicateKey, StrictLoader
from clipboard.errors import ConfigError
from clipboard.settings_http import HttpSettings

ENV_VAR = "JARVIS_CONFIG"
FREE_FORM = "*"

T = TypeVar("T")

# What the defaults cannot say by example. A key whose default is null holds a string
# (a path, a name, a URL, a secret) unless named here; the items of a list are strings
# unless named here (object: checked by their own parser).
NULL_DEFAULT_TYPES: dict[str, type] = {"providers.*.port": int, "acl.*.allow": list,
                                       "acl.*.deny": list, "acl.*.rooms": list}
LIST_ITEM_TYPES: dict[str, type] = {"configmgmt.success_codes": int, "pipelines.*.steps": object}


@lru_cache(maxsize=1)
def defaults() -> dict[str, Any]:
    text = resources.files("clipboard").joinpath("defaults.yaml").read_text()
    loaded: dict[str, Any] = yaml.load(text, Loader=StrictLoader)
    return loaded


class Config:
    """The merged configuration: defaults overlaid with the user's file.

    Call sites read typed sections (``config.runner.max_concurrent_steps``), each
    built once from ``data`` by ``clipboard.settings``; ``get`` is for the few
    places that walk the raw mapping (check-config, tests).
    """

    def __init__(self, data: dict[str, Any], path: Path | None = None) -> None:
        self.data = data
        self.path = path

    def _build(self, cls: type[T]) -> T:
        where = settings.place_of(cls)
        return typed.build(cls, self.get(where), where)

    @cached_property
    def bot(self) -> settings.BotSettings:
        return self._build(settings.BotSettings)

    @cached_property
    def fairness(self) -> settings.FairnessSettings:
        return self._build(settings.FairnessSettings)

    @cached_property
    def limits(self) -> settings.ClipboardLimits:
        return self._build(settings.ClipboardLimits)

    @cached_property
    def store(self) -> settings.StoreSettings:
        return self._build(settings.StoreSettings)

    @cached_property
    def http(self) -> HttpSettings:
        return self._build(HttpSettings)

    @cached_property
    def runner(self) -> settings.RunnerSettings:
        return self._build(settings.RunnerSettings)

    @cached_property
    def designs(self) -> settings.DesignsSettings:
        return self._build(settings.DesignsSettings)

    @cached_property
    def clusters(self) -> settings.ClustersSettings:
        return self._build(settings.ClustersSettings)

    @cached_property
    def dns(self) -> settings.DnsSettings:
        return self._build(settings.DnsSettings)

    @cached_property
    def keys(self) -> settings.KeysSettings:
        return self._build(settings.KeysSettings)

    @cached_property
    def configmgmt(self) -> settings.ConfigMgmtSettings:
        return self._build(settings.ConfigMgmtSettings)

    @cached_property
    def monitoring(self) -> settings.MonitoringSettings:
        return self._build(settings.MonitoringSettings)

    @cached_property
    def notify(self) -> settings.NotifySettings:
        return self._build(settings.NotifySettings)

    @cached_property
    def inventory(self) -> settings.InventorySettings:
        return self._build(settings.InventorySettings)

    @cached_property
    def ldap(self) -> settings.LdapSettings:
        return self._build(settings.LdapSettings)

    @cached_property
    def sources(self) -> settings.SourcesSettings:
        return self._build(settings.SourcesSettings)

    @cached_property
    def providers(self) -> settings.ProvidersSettings:
        return self._build(settings.ProvidersSettings)

    @cached_property
    def grades(self) -> Mapping[str, Mapping[str, str]]:
        """``grades``: grade -> provider -> size name."""
        grades: Mapping[str, Mapping[str, str]] = typed.convert(
            self.get("grades"), Mapping[str, Mapping[str, str]], "grades")
        return grades

    @cached_property
    def ssh(self) -> settings.SshSettings:
        return self._build(settings.SshSettings)

    @cached_property
    def secrets(self) -> frozenset[str]:
        """Every secret this configuration holds or names by ``_env``: what the bot, the
        commands and the drive all scrub, worked out once per configuration."""
        return frozenset(redact.configured_secrets(self.data, self.limits.redact_keys))

    def problems(self) -> dict[str, str]:
        """Section attribute -> why it cannot be built, for every typed section."""
        found: dict[str, str] = {}
        for name in settings.SECTIONS:
            try:
                getattr(self, name)
            except ConfigError as exc:
                found[name] = str(exc)
        return found

    def section(self, name: str) -> dict[str, Any]:
        """A free-form section as a mapping (pipelines, roles, acl, grades, chat adapters)."""
        value = self.data.get(name)
        return value if isinstance(value, dict) else {}

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


def validate(user: Any, schema: Any = None, where: str = "") -> list[str]:
    """Every problem in ``user`` against ``schema`` (the defaults), one message each."""
    schema = defaults() if schema is None else schema
    problems: list[str] = []
    if not isinstance(user, dict):
        return [f"{where or 'the configuration'} must be a mapping"]
    for key, value in user.items():
        path = f"{where}.{key}" if where else str(key)
        if value is None and FREE_FORM in schema:
            continue  # a free-form entry set to null drops it (sources.ldap.attributes)
        if key in schema:
            template = schema[key]
        elif FREE_FORM in schema:
            template = schema[FREE_FORM]
        else:
            known = ", ".join(sorted(str(k) for k in schema if k != FREE_FORM)) or "none"
            problems.append(f"unknown key {path!r} (known here: {known})")
            continue
        problems.extend(_check_value(value, template, path))
    return problems


def _check_value(value: Any, template: Any, path: str) -> list[str]:
    if template is None:
        if value is None:
            return []
        wanted = ranges.lookup(NULL_DEFAULT_TYPES, path) or str
        return _check_value(value, wanted(), path)
    if value is None:
        if isinstance(template, dict):
            return []  # an empty section: its defaults
        return [(f"{path} is empty; set it ({type(template).__name__}) "
                 f"or remove the line for the default {template!r}")]
    if isinstance(template, dict):
        if not isinstance(value, dict):
            return [f"{path} must be a mapping, not {type(value).__name__}"]
        return validate(value, template, path)
    if isinstance(template, bool):
        ok = isinstance(value, bool)
    elif isinstance(template, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(template))
    if not ok:
        return [f"{path} must be {type(template).__name__}, not {type(value).__name__}"]
    if isinstance(value, list):
        return _check_items(value, path)
    return _check_range(value, path)


def _check_items(items: list[Any], path: str) -> list[str]:
    wanted = ranges.lookup(LIST_ITEM_TYPES, path) or str
    return [f"{path}[{i}] must be {wanted.__name__}, not {type(item).__name__}"
            for i, item in enumerate(items) if not _is_a(item, wanted)]


def _is_a(value: Any, wanted: type) -> bool:
    if isinstance(value, bool):  # YAML's true is no number
        return wanted in (bool, object)
    return isinstance(value, wanted)


def _check_range(value: Any, path: str) -> list[str]:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return []
    problem = ranges.check(path, value)
    return [problem] if problem else []


def notify_problems(user: dict[str, Any]) -> list[str]:
    """What the types cannot say about ``notify`` (workers/notify.py): found at start,
    not at the end of a deployment that is about to succeed."""
    section = user.get("notify") or {}
    problems = [f"notify.rooms entry {room!r} must be <adapter>:<target>, e.g. irc:#ops"
                for room in section.get("rooms") or []
                if not isinstance(room, str) or not all(room.partition(":")[::2])]
    webhook = section.get("webhook") or {}
    if webhook.get("attempts") is not None and webhook["attempts"] < 1:
        problems.append("notify.webhook.attempts must be at least 1")
    if webhook.get("url") and not (webhook.get("secret") or webhook.get("secret_env")):
        problems.append("notify.webhook.url is set but neither notify.webhook.secret nor "
                        "secret_env: webhooks are always signed")
    email = section.get("email") or {}
    if email.get("host") and not email.get("to"):
        problems.append("notify.email.host is set but notify.email.to is empty")
    return problems


def merge(base: Any, over: Any) -> Any:
    """Defaults overlaid with user values; free-form entries are filled from their template.
    An empty (null) section is the defaults of that section. The ``"*"`` templates
    themselves never reach the result: nothing is named ``*``."""
    if isinstance(base, dict) and over is None:
        over = {}
    if not isinstance(base, dict) or not isinstance(over, dict):
        return copy.deepcopy(over)
    out = {k: _without_templates(v) for k, v in base.items() if k != FREE_FORM}
    template = base.get(FREE_FORM)
    for key, value in over.items():
        if key in base:
            out[key] = merge(base[key], value)
        elif isinstance(template, dict) and (value is None or isinstance(value, dict)):
            out[key] = merge(template, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _without_templates(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_templates(v) for k, v in value.items() if k != FREE_FORM}
    return copy.deepcopy(value)


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read configuration {path}: it is not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except DuplicateKey as exc:
        raise ConfigError(f"{path} has {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    return {} if data is None else data


def load(path: str | os.PathLike[str] | None = None, *, export: bool = True) -> Config:
    """Read, validate and merge a configuration file (None: the embedded default).

    With ``export`` the path is put in ``JARVIS_CONFIG`` so worker processes see it.
    """
    user: dict[str, Any] = {}
    resolved = None
    if path is not None:
        resolved = Path(path).resolve()
        user = read_file(resolved)
        problems = validate(user) or notify_problems(user)
        if problems:
            raise ConfigError(f"{resolved}: " + "; ".join(problems))
    config = Config(merge(defaults(), user), resolved)
    typed = config.problems()
    if typed:
        raise ConfigError(f"{resolved or 'the embedded configuration'}: " + "; ".join(typed.values()))
    if export:
        if resolved is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = str(resolved)
    current.cache_clear()
    return config


@lru_cache(maxsize=1)
def current() -> Config:
    """The configuration of this process, as named by ``JARVIS_CONFIG`` (for workers)."""
    return load(os.environ.get(ENV_VAR) or None, export=False)


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "jarvis"
