"""The typed configuration sections (clipboard/settings.py): built from the merged
configuration, no defaults of their own, one secret resolver, no ``"*"`` templates."""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from clipboard import config as config_mod
from clipboard import pipeline as pipeline_mod
from clipboard import redact, settings, typed, worker
from clipboard.errors import ConfigError
from clipboard.secret import Secret, secret_pairs
from clipboard.settings import LdapSettings, MonitoringSettings, RunnerSettings


def merged(user: dict[str, Any] | None = None) -> config_mod.Config:
    return config_mod.Config(config_mod.merge(config_mod.defaults(), user or {}))


def _section_classes() -> list[tuple[str, type]]:
    """Every section class with its dotted place, nested ones included."""
    out: list[tuple[str, type]] = []
    todo = [(settings.place_of(cls), cls) for cls in settings.SECTIONS.values()]
    while todo:
        where, cls = todo.pop()
        out.append((where, cls))
        hints = typed._hints(cls)
        todo += [(f"{where}.{f.name.rstrip('_')}", hints[f.name]) for f in dataclasses.fields(cls)
                 if dataclasses.is_dataclass(hints[f.name]) and hints[f.name] is not Secret]
    return out


@pytest.mark.parametrize(("where", "cls"), _section_classes(), ids=lambda v: str(v))
def test_each_section_reads_exactly_the_keys_of_its_defaults_and_holds_no_default(
        where: str, cls: type) -> None:
    node: Any = config_mod.defaults()
    for part in where.split("."):
        node = node[part]
    assert typed.keys_of(cls) == set(node) - {config_mod.FREE_FORM}
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(cls)), f"{cls.__name__} has a default of its own"


def test_sections_are_typed_frozen_and_follow_the_users_file() -> None:
    config = merged({"runner": {"max_concurrent_steps": 3, "step_limits": {"ssh:wait": 2}},
                     "ssh": {"commands": ["true"]}})
    assert config.runner.max_concurrent_steps == 3
    assert isinstance(config.runner.step_timeout, float)  # 300 in the file, seconds here
    assert dict(config.runner.step_limits) == {"ssh:wait": 2}
    assert config.ssh.commands == ("true",)
    assert config.notify.email.from_ == "jarvis@localhost"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.runner.max_concurrent_steps = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.runner.step_limits["x"] = 1  # type: ignore[index]


def test_a_section_that_cannot_be_built_is_one_line_naming_the_key() -> None:
    base = config_mod.merge(config_mod.defaults(), {})
    with pytest.raises(ConfigError, match=r"^runner\.step_timeout must be float, not str$"):
        typed.build(RunnerSettings, {**base["runner"], "step_timeout": "soon"}, "runner")
    with pytest.raises(ConfigError, match=r"^runner\.max_concurrent_steps must be int, not float$"):
        typed.build(RunnerSettings, {**base["runner"], "max_concurrent_steps": 2.5}, "runner")
    with pytest.raises(ConfigError, match=r"^runner\.kill_grace is missing$"):
        typed.build(RunnerSettings, {k: v for k, v in base["runner"].items()
                                        if k != "kill_grace"}, "runner")
    with pytest.raises(ConfigError, match=r"^monitoring\.silence_id_format is 'ulid'; it is one "
                                          r"of uuid, safe$"):
        typed.build(MonitoringSettings, {**base["monitoring"], "silence_id_format": "ulid"},
                       "monitoring")


def test_load_refuses_what_only_a_typed_section_catches(tmp_path: Path) -> None:
    path = tmp_path / "jarvis.yaml"
    path.write_text(yaml.safe_dump({"monitoring": {"silence_id_format": "ulid"},
                                    "inventory": {"ldap_pattern": "(unclosed"}}))
    assert config_mod.validate(config_mod.read_file(path)) == []  # the schema sees strings
    with pytest.raises(ConfigError) as caught:
        config_mod.load(path, export=False)
    assert "monitoring.silence_id_format is 'ulid'; it is one of uuid, safe" in str(caught.value)
    assert "inventory.ldap_pattern is not a regular expression" in str(caught.value)


def test_no_template_reaches_the_running_configuration() -> None:
    def templates(node: Any, where: str = "") -> list[str]:
        if not isinstance(node, dict):
            return []
        found = [where or "top"] if config_mod.FREE_FORM in node else []
        return found + [t for k, v in node.items() for t in templates(v, f"{where}.{k}")]

    for user in ({}, {"roles": {"web": {"pipeline": "deploy"}}, "acl": None,
                      "pipelines": {"mine": {"steps": ["core:noop"]}}}):
        config = merged(user)
        assert templates(config.data) == []
        assert config_mod.FREE_FORM not in pipeline_mod.pipelines(config)
        assert config_mod.FREE_FORM not in config.sources.ldap.attributes
    assert dict(merged({"roles": {"web": None}}).section("roles")["web"]) == {"pipeline": "",
                                                                            "grade": ""}


def test_one_resolver_for_inline_or_environment_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JARVIS_T_TOKEN", "tok-from-env")
    monkeypatch.delenv("JARVIS_T_NONE", raising=False)
    assert Secret("monitoring.token", "inline-1", "JARVIS_T_TOKEN").require() == "inline-1"
    assert Secret("monitoring.token", None, "JARVIS_T_TOKEN").require() == "tok-from-env"
    assert Secret("monitoring.token", None, None).get() is None
    with pytest.raises(ConfigError, match=r"^monitoring\.token is not set \(set it, or name an "
                                          r"environment variable in monitoring\.token_env\)$"):
        Secret("monitoring.token", None, None).require()
    with pytest.raises(ConfigError, match=r"^monitoring\.token is not set and monitoring\.token_env"
                                          r" names the environment variable JARVIS_T_NONE, which "
                                          r"is empty$"):
        Secret("monitoring.token", None, "JARVIS_T_NONE").get()
    config = merged({"monitoring": {"token_env": "JARVIS_T_TOKEN"},
                     "ldap": {"bind_password": "pw-inline-7"}})
    assert config.monitoring.token.require() == "tok-from-env"
    assert config.ldap.bind_password.require() == "pw-inline-7"
    assert "pw-inline-7" not in repr(config.ldap) and "tok-from-env" not in repr(config.monitoring)


def test_configured_secrets_are_the_resolvers_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key with an ``_env`` sibling is a secret, whatever its name says."""
    data = {"site": {"wibble": "wibble-inline-1", "wibble_env": "JARVIS_T_WIBBLE"}}
    assert not redact.is_secret_key("wibble")
    found = redact.configured_secrets(data, environ={"JARVIS_T_WIBBLE": "wibble-env-2"})
    assert {"wibble-inline-1", "wibble-env-2"} <= found
    assert secret_pairs(data) == [("site.wibble", "wibble-inline-1", "JARVIS_T_WIBBLE")]


def test_every_worker_module_declares_the_sections_it_reads() -> None:
    declared = {}
    for name in worker.module_names():
        module = importlib.import_module(f"workers.{name}")
        if any(info.func.__module__ == module.__name__ for info in worker.REGISTRY.values()):
            assert hasattr(module, "SETTINGS"), f"workers.{name} declares no SETTINGS"
        declared[name] = worker.declared_settings().get(name)
    assert declared["monitoring"] == ["monitoring"]
    assert declared["inventory"] == ["inventory", "ldap"]
    assert set(declared["notify"] or ()) == {"notify", "limits"}


def test_ldap_settings_of_a_partial_section_name_the_missing_key() -> None:
    with pytest.raises(ConfigError, match=r"^ldap\.bind_dn is missing$"):
        typed.build(LdapSettings, {"url": "ldap://127.0.0.1"}, "ldap")
