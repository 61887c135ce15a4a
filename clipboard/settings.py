"""Typed sections of the configuration: read once, checked once, then plain attributes.

Why: call sites used to read dotted strings and cast at each one
(``int(config.get("runner.max_concurrent_steps"))``) and repeated the default
(``or 10``) that ``clipboard/defaults.yaml`` already holds. Here each section is a
frozen dataclass built from the merged configuration (defaults overlaid with the
user's file, ``clipboard.config.merge``), so a call site reads
``config.runner.max_concurrent_steps`` and gets an ``int``.

The dataclasses hold NO defaults: ``defaults.yaml`` is the one place defaults
live, and a test keeps every class's fields equal to its section's keys. A key
whose default is null is ``X | None`` here; that is where its type is written.
``clipboard.typed.build`` converts and checks each field against its annotation
and ``check()`` adds what a type cannot say, so a section that cannot be built is
one ``ConfigError`` naming the key.

A ``Secret`` field (``clipboard.secret``) stands for the pair ``<name>`` /
``<name>_env``: ``Secret.get``/``Secret.require`` are the one place such a pair is
resolved, and ``clipboard.redact.configured_secrets`` scrubs the same pairs. The
builder itself (``clipboard.typed.build``) is generic: it knows nothing of these
classes.

Adding a section (e.g. ``http:``), four small steps:

1. write its keys, with their defaults, in ``defaults.yaml`` and document them in
   ``config.example.yaml`` (numbers also get a range in ``clipboard.ranges``);
2. write a frozen dataclass below whose fields are exactly those keys, no defaults
   (a nested mapping: another dataclass; a free-form one: ``Mapping[str, X]``; a
   secret pair: ``Secret``; a null default: ``X | None``; a closed set of words:
   ``Literal[...]``; more rules: a ``check()`` method raising ``ConfigError``);
3. list it in ``SECTIONS`` (and in ``PLACES`` if it is not a top-level key);
4. add to ``clipboard.config.Config``::

       @cached_property
       def http(self) -> settings.HttpSettings:
           return self._build(settings.HttpSettings)

Then ``config.http.<key>`` is typed, ``jarvis run`` and ``check-config`` build it,
``tests/test_settings.py`` holds it to its keys, and a worker module that reads it
says ``SETTINGS = (HttpSettings,)``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from clipboard.errors import ConfigError
from clipboard.secret import Secret
from clipboard.settings_celery import CelerySettings
from clipboard.settings_http import HttpSettings

# ----------------------------------------------------------------------- the sections

@dataclass(frozen=True)
class BotSettings:
    name: str
    verbose: bool


@dataclass(frozen=True)
class FairnessSettings:
    """``chat.fairness`` (bot/fairness.py)."""

    command_rate: float
    command_burst: int
    queue_cap: int
    private_over: int  # 0: every answer stays where it was asked


@dataclass(frozen=True)
class ClipboardLimits:
    max_bytes: int
    max_nodes: int
    redact_keys: tuple[str, ...]


@dataclass(frozen=True)
class StoreSettings:
    path: str | None
    lease_seconds: float


@dataclass(frozen=True)
class RunnerSettings:
    step_timeout: float
    kill_grace: float
    worker_dirs: tuple[str, ...]
    stderr_tail_lines: int
    default_pipeline: str
    max_concurrent_steps: int
    step_limits: Mapping[str, int]
    provider_limits: Mapping[str, int]
    provider_modules: tuple[str, ...]
    backend: Literal["local", "celery"]
    celery: CelerySettings


@dataclass(frozen=True)
class DesignsSettings:
    instance_fields: tuple[str, ...]
    domain: str | None


@dataclass(frozen=True)
class ClustersSettings:
    wait_timeout: float
    max_hosts: int
    announce_interval: float
    status_lines: int


@dataclass(frozen=True)
class DnsSettings:
    server: str | None
    port: int
    zone: str | None
    reverse_zones: tuple[str, ...]
    ttl: int
    tsig_key_name: str | None
    tsig_algorithm: str
    tsig_secret: Secret
    timeout: float


@dataclass(frozen=True)
class KeysSettings:
    repository: str | None
    from_design: bool
    design_hosts: tuple[str, ...]
    group: str
    branch: str | None
    ssh_identity: str | None
    known_hosts: str | None
    protocols: tuple[str, ...]
    author_name: str
    author_email: str
    timeout: float


@dataclass(frozen=True)
class ConfigMgmtSettings:
    command: Secret  # command_env names a whole command (its arguments are secret)
    kind: str | None
    success_codes: tuple[int, ...]
    timeout: float


@dataclass(frozen=True)
class MonitoringSettings:
    url: str | None
    method: str
    suppress_body: str
    enable_url: str | None
    enable_method: str
    enable_body: str
    content_type: str
    silence_id_field: str
    silence_id_format: Literal["uuid", "safe"]
    duration: int
    token: Secret
    timeout: float


@dataclass(frozen=True)
class WebhookSettings:
    url: str | None
    secret: Secret
    attempts: int
    backoff: float
    max_backoff: float
    timeout: float
    required: bool


@dataclass(frozen=True)
class EmailSettings:
    host: str | None
    port: int
    from_: str
    to: tuple[str, ...]
    starttls: bool
    ca_file: str | None
    username: str | None
    password: Secret
    timeout: float
    required: bool


@dataclass(frozen=True)
class NotifySettings:
    rooms: tuple[str, ...]
    webhook: WebhookSettings
    email: EmailSettings


@dataclass(frozen=True)
class InventorySettings:
    ldap_attribute: str | None
    ldap_pattern: str

    def check(self) -> None:
        try:
            re.compile(self.ldap_pattern)
        except re.error as exc:
            raise ConfigError(f"inventory.ldap_pattern is not a regular expression: {exc}") from None


@dataclass(frozen=True)
class LdapSettings:
    url: str | None
    bind_dn: str | None
    bind_password: Secret
    base_dn: str
    hosts_ou: str
    starttls: bool
    ca_file: str | None
    timeout: float


@dataclass(frozen=True)
class FileSourceSettings:
    roots: tuple[str, ...]


@dataclass(frozen=True)
class UrlSourceSettings:
    allowed_hosts: tuple[str, ...]
    gist_hosts: tuple[str, ...]
    gist_api: str
    allow_http: bool
    allow_addresses: tuple[str, ...]
    max_bytes: int
    api_max_bytes: int
    timeout: float
    max_redirects: int
    ca_file: str


@dataclass(frozen=True)
class LdapSourceSettings:
    search_base: str | None
    filter: str
    attributes: Mapping[str, str]
    design_attribute: str | None


@dataclass(frozen=True)
class SourcesSettings:
    file: FileSourceSettings
    url: UrlSourceSettings
    ldap: LdapSourceSettings


@dataclass(frozen=True)
class LocalProviderSettings:
    stand_in_for: tuple[str, ...]
    port: int
    state_dir: str | None
    busybox: str
    binaries: tuple[str, ...]
    start_timeout: float


@dataclass(frozen=True)
class AliasSettings:
    """``providers.<cloud>.aliases``: the design's name -> the provider's ("" drops one)."""

    size: Mapping[str, str]
    image: Mapping[str, str]
    location: Mapping[str, str]


@dataclass(frozen=True)
class CloudSettings:
    """What every cloud provider's section holds (workers/_provider.py)."""

    api_timeout: float
    wait_timeout: float
    poll_interval: float
    ssh_host: str | None
    ssh_port: int
    aliases: AliasSettings


@dataclass(frozen=True)
class Ec2Settings(CloudSettings):
    key: Secret
    secret: Secret
    region: str
    host: str | None
    port: int | None
    secure: bool
    signature_version: str
    image_owner: str
    security_groups: tuple[str, ...]


@dataclass(frozen=True)
class LinodeSettings(CloudSettings):
    token: Secret


@dataclass(frozen=True)
class Flavor:
    cpus: int
    ram: int
    disk: int


@dataclass(frozen=True)
class VsphereSettings(CloudSettings):
    host: str | None
    port: int
    user: str | None
    password: Secret
    ca_cert: str | None
    folder: str | None
    datastore: str | None
    network: str | None
    flavors: Mapping[str, Flavor]


@dataclass(frozen=True)
class ProvidersSettings:
    default: str
    local: LocalProviderSettings
    ec2: Ec2Settings
    linode: LinodeSettings
    vsphere: VsphereSettings


@dataclass(frozen=True)
class SshSettings:
    wait_interval: float
    wait_timeout: float
    connect_timeout: float
    command_timeout: float
    commands: tuple[str, ...]
    kernel_install: str | None
    kernel_boot: str | None


# Every section ``jarvis check-config`` builds, by the ``Config`` attribute that holds it.
# A worker module names the classes it reads in ``SETTINGS``.
SECTIONS: dict[str, type] = {
    "bot": BotSettings, "fairness": FairnessSettings, "limits": ClipboardLimits,
    "store": StoreSettings, "runner": RunnerSettings, "designs": DesignsSettings,
    "clusters": ClustersSettings, "dns": DnsSettings, "keys": KeysSettings,
    "configmgmt": ConfigMgmtSettings, "monitoring": MonitoringSettings,
    "notify": NotifySettings, "inventory": InventorySettings, "ldap": LdapSettings,
    "sources": SourcesSettings, "providers": ProvidersSettings, "ssh": SshSettings,
    "http": HttpSettings,
}


# Where a section lives in the configuration (dotted), when not at its attribute's name.
PLACES: dict[str, str] = {"fairness": "chat.fairness", "limits": "clipboard"}


def place_of(cls: type) -> str:
    """The dotted key of the section ``cls`` in the configuration."""
    name = attribute_of(cls)
    return PLACES.get(name, name)


def attribute_of(cls: type) -> str:
    """The ``Config`` attribute holding the section ``cls``."""
    for name, section in SECTIONS.items():
        if section is cls:
            return name
    raise ValueError(f"{cls.__name__} is not listed in clipboard.settings.SECTIONS")
