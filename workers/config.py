"""Configuration management's first run on the new host, over SSH as root.

jarvis builds the host up to the point where configuration management can take
over (puppet, ansible-pull, salt-call ...); this step starts that run with the
command in ``configmgmt.command`` and judges its exit status. Puppet's
``--detailed-exitcodes`` (implied by ``puppet agent -t``) use 2 for "changes
applied", which is the normal outcome of a first run, so ``kind: puppet`` adds
0 and 2 to the success codes and names 1, 4 and 6 when they happen.

``configmgmt.timeout`` bounds the command; the step itself is bounded by the
task timeout below unless the pipeline gives the step its own.

The command often carries a credential (``ansible-pull -U https://deploy:TOKEN@…``),
so it may come from the environment variable ``configmgmt.command_env`` names, and
it is never written whole anywhere a person reads: log and failure lines and the
clipboard name only its program; the command's own last stderr line is quoted with
URL credentials masked (and jarvis scrubs the configured secrets from it again).
"""
from __future__ import annotations

import logging
from typing import Any

from clipboard import redact
from clipboard.config import current
from clipboard.errors import ConfigError, StepFailed
from clipboard.settings import ConfigMgmtSettings
from clipboard.worker import task
from workers import _sshclient

log = logging.getLogger(__name__)

SETTINGS = (ConfigMgmtSettings,)

PUPPET_SUCCESS = {0, 2}
PUPPET_MEANING = {0: "no changes", 1: "the run failed", 2: "changes applied",
                  4: "resources failed", 6: "changes applied and resources failed"}


def success_codes(section: ConfigMgmtSettings) -> set[int]:
    """The exit statuses that count as success (``kind: puppet`` adds 0 and 2)."""
    codes = set(section.success_codes)
    if (section.kind or "").lower() == "puppet":
        codes |= PUPPET_SUCCESS
    return codes


def configured_command(section: ConfigMgmtSettings) -> tuple[str | None, set[str]]:
    """``configmgmt.command``, else the environment variable ``command_env`` names
    (None when neither is configured), and the parts of it that are secret: those of
    a command from the environment (``redact.command_secrets``); an inline command is
    in the configuration file in clear, so only its URL credentials are."""
    if section.command.value:
        return section.command.value, redact.url_secrets(section.command.value)
    try:
        value = section.command.get()
    except ConfigError as exc:
        raise StepFailed(str(exc)) from None
    if value is None:
        return None, set()
    return value.strip(), redact.command_secrets(value.strip())


@task(timeout=3600, writes=("configmgmt",))
def bootstrap(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Run the configured configuration-management command on the host; judge its exit status."""
    section = current().configmgmt
    command, secrets = configured_command(section)
    if command is None:
        log.info("configuration management not configured (configmgmt.command and "
                 "command_env are null); nothing run")
        return None
    program = redact.program_of(command)
    kind = (section.kind or "").lower() or None
    codes = success_codes(section)
    timeout = section.timeout
    log.info("running %s on the host (success: exit %s)", program,
             ", ".join(str(c) for c in sorted(codes)))
    status, stdout, stderr = _sshclient.run(clipboard, command, timeout)
    meaning = f" ({PUPPET_MEANING[status]})" if kind == "puppet" and status in PUPPET_MEANING else ""
    clipboard["configmgmt"] = {"program": program, "kind": kind, "exit_status": status}
    if status not in codes:
        last = (stderr.strip().splitlines() or stdout.strip().splitlines() or [""])[-1]
        last = redact.scrub(last.strip(), secrets)
        raise StepFailed(f"{program} exited {status}{meaning}"
                         + (f": {last[:200]}" if last else ""), clipboard=clipboard)
    log.info("%s exited %d%s", program, status, meaning)
    return clipboard
