"""Root's new public key, published where application deployments fetch it.

Deployments pull code over gitosis, which trusts the keys in a gitosis-admin
repository: ``keydir/<member>.pub`` plus the member's name on a ``members``
line of a group in ``gitosis.conf``. The step clones the repository afresh, puts
both in place, and commits and pushes only when something changed (so a re-run
makes no empty commit); a push that lost a race with another deployment is
retried from a new clone. Git runs as a subprocess in its own session with a
timeout per command, a clean environment (no user or system git config, no
prompts), only the transports named in ``keys.protocols``, and SSH that never
asks and always checks host keys.

The repository is the operator's (``keys.repository``). Only with
``keys.from_design: true`` may the design's ``instance.gitosis-admin`` name it,
and then jarvis pushes as root's key wherever the design's author points: the
URL must use a transport in ``keys.protocols`` other than ``file``, and its host
must be in ``keys.design_hosts`` or, with that list empty, resolve only to
public addresses (``clipboard.schema.check_repository_url`` at plan time, the
resolution here). A name that resolves differently for git a moment later is
not caught; list the hosts in ``keys.design_hosts`` to close that.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from clipboard import config, schema
from clipboard.errors import DesignError, StepFailed
from clipboard.settings import KeysSettings
from clipboard.worker import task

log = logging.getLogger(__name__)

SETTINGS = (KeysSettings,)

PUSH_ATTEMPTS = 3
# the lines of git's and ssh's stderr that say why (not "Please make sure you have...")
_TELLING = re.compile(r"^(fatal|error|ssh|remote|! \[)|denied|verification failed|Could not",
                      re.IGNORECASE)
Edit = Callable[[Path], list[str]]  # changes a work tree; returns the paths it touched
_KEY_LINE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( .*)?$")


class Git:
    """git commands in one work tree, bounded in time, with the configured identity."""

    def __init__(self, section: KeysSettings, url: str, home: Path) -> None:
        self.url = url
        self.timeout = section.timeout
        self.identity = ["-c", f"user.name={section.author_name}",
                         "-c", f"user.email={section.author_email}"]
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", f"ConnectTimeout={max(1, int(self.timeout))}"]
        if section.ssh_identity:
            ssh += ["-o", "IdentitiesOnly=yes", "-i", section.ssh_identity]
        if section.known_hosts:
            ssh += ["-o", f"UserKnownHostsFile={section.known_hosts}"]
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
                    "GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": shlex.join(ssh),
                    "GIT_ALLOW_PROTOCOL": ":".join(section.protocols),
                    "LC_ALL": "C"}

    def __call__(self, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.Popen(["git", *self.identity, *args], cwd=cwd, env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)   # git and the ssh it started
            proc.communicate()
            raise StepFailed(f"git {args[0]} with {shown_url(self.url)} took longer than "
                             f"{self.timeout:g}s (keys.timeout)") from None
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and result.returncode != 0:
            raise StepFailed(f"git {args[0]} with {shown_url(self.url)} failed: {self.reason(result)}")
        return result

    def reason(self, result: subprocess.CompletedProcess[str]) -> str:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        telling = [line for line in lines if _TELLING.search(line)]
        text = "; ".join(telling[:3]) or (lines[-1] if lines else f"exit status {result.returncode}")
        return text.replace(self.url, shown_url(self.url))[:300]


def shown_url(url: str) -> str:
    """The repository URL without a password, fit for logs and the clipboard."""
    parts = urlsplit(url)
    if parts.scheme and parts.password:
        netloc = f"{parts.username}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def add_member(text: str, group: str, member: str) -> str:
    """``gitosis.conf`` with ``member`` on the members line of ``[group <group>]``.

    Edited line by line, not through configparser, so that comments, order and
    everything jarvis does not own stay exactly as the admins wrote them.
    """
    lines = text.splitlines()
    header = re.compile(rf"^\s*\[\s*group\s+{re.escape(group)}\s*\]\s*$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        prefix = "" if not text.strip() else text.rstrip("\n") + "\n\n"
        return f"{prefix}[group {group}]\nmembers = {member}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
               len(lines))
    members_at = next((i for i in range(start + 1, end)
                       if re.match(r"^members\s*[=:]", lines[i])), None)
    if members_at is None:
        lines.insert(start + 1, f"members = {member}")
        return "\n".join(lines) + "\n"
    last = members_at
    while last + 1 < end and lines[last + 1][:1] in (" ", "\t") and lines[last + 1].strip():
        last += 1
    value = re.split(r"[=:]", lines[members_at], maxsplit=1)[1]
    current = " ".join([value, *lines[members_at + 1:last + 1]]).split()
    if member in current:
        return text
    lines[last] = lines[last].rstrip() + f" {member}"
    return "\n".join(lines) + "\n"


def remove_member(text: str, group: str, member: str) -> str:
    """``gitosis.conf`` without ``member`` on the members line(s) of ``[group <group>]``;
    everything else (comments, order, other groups) exactly as it was."""
    lines = text.splitlines()
    header = re.compile(rf"^\s*\[\s*group\s+{re.escape(group)}\s*\]\s*$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return text
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
               len(lines))
    members_at = next((i for i in range(start + 1, end)
                       if re.match(r"^members\s*[=:]", lines[i])), None)
    if members_at is None:
        return text
    last = members_at
    while last + 1 < end and lines[last + 1][:1] in (" ", "\t") and lines[last + 1].strip():
        last += 1
    changed = False
    for i in range(members_at, last + 1):
        prefix, value = ("", lines[i]) if i > members_at else \
            re.match(r"^(members\s*[=:])(.*)$", lines[i]).groups()  # type: ignore[union-attr]
        words = value.split()
        if member not in words:
            continue
        indent = value[:len(value) - len(value.lstrip())] or " "
        kept = " ".join(w for w in words if w != member)
        lines[i] = f"{prefix}{indent}{kept}".rstrip() if kept or i == members_at else ""
        changed = True
    if not changed:
        return text
    # a continuation line left empty would end the value early for configparser: drop it
    lines = [line for i, line in enumerate(lines) if not (members_at < i <= last and not line)]
    return "\n".join(lines) + "\n"


def _repository(clipboard: dict[str, Any], section: KeysSettings) -> str | None:
    """The operator's repository, else (``keys.from_design``) the design's, checked."""
    if section.repository:
        return section.repository
    from_design = (clipboard.get("instance") or {}).get("gitosis-admin")
    if not (section.from_design and from_design):
        return None
    url = str(from_design)
    try:
        host = schema.check_repository_url(url, section)
    except DesignError as exc:
        raise StepFailed(str(exc)) from None
    if not section.design_hosts:
        _check_public(host)
    return url


def _check_public(host: str) -> None:
    """Refuse a design's repository host that resolves to anything but public addresses."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise StepFailed(f"the design's repository host {host} does not resolve: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            raise StepFailed(f"the design's repository host {host} resolves to {address}, which "
                             "is not public (list the host in keys.design_hosts to allow it)")


def _edit_once(git: Git, work: Path, branch: str | None, edit: Edit,
               message: str) -> tuple[str, bool]:
    """One clone-edit-commit-push round; return (commit, changed). Push races raise."""
    clone = ["clone", "--quiet", "--depth", "1"] + (["--branch", branch] if branch else [])
    git(*clone, "--", git.url, str(work), cwd=work.parent)
    target = branch or git("symbolic-ref", "--short", "HEAD", cwd=work).stdout.strip()
    paths = edit(work)
    if paths:
        git("add", "--all", "--", *paths, cwd=work)
    if git("diff", "--cached", "--quiet", cwd=work, check=False).returncode == 0:
        return git("rev-parse", "HEAD", cwd=work).stdout.strip(), False
    git("commit", "--quiet", "-m", message, cwd=work)
    push = git("push", "--quiet", "origin", f"HEAD:refs/heads/{target}", cwd=work, check=False)
    if push.returncode != 0:
        raise _PushRejected(git.reason(push))
    return git("rev-parse", "HEAD", cwd=work).stdout.strip(), True


def _edit_conf(work: Path, change: Callable[[str], str]) -> None:
    conf = work / "gitosis.conf"
    old = conf.read_text() if conf.exists() else ""
    new = change(old)
    if new != old:
        conf.write_text(new)


def _push_edit(section: KeysSettings, url: str, edit: Edit, message: str) -> tuple[str, bool]:
    """Apply ``edit`` to a fresh clone and push it, retrying from a new clone when the push
    loses a race; (commit, changed)."""
    branch = section.branch or None
    reason = ""
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        with tempfile.TemporaryDirectory(prefix="jarvis-keys-") as tmp:
            git = Git(section, url, Path(tmp))
            try:
                return _edit_once(git, Path(tmp) / "repo", branch, edit, message)
            except _PushRejected as exc:
                reason = str(exc)
                log.warning("push to %s rejected (attempt %d of %d): %s", shown_url(url), attempt,
                            PUSH_ATTEMPTS, reason)
    raise StepFailed(f"git push to {shown_url(url)} failed {PUSH_ATTEMPTS} times: {reason}")


def _member(clipboard: dict[str, Any]) -> str:
    instance = clipboard.get("instance") or {}
    name = instance.get("fqdn") or instance.get("hostname")
    if not name:
        raise StepFailed("instance.fqdn (or hostname) is missing")
    return f"root@{name}"


def _configured_url(clipboard: dict[str, Any], section: KeysSettings) -> str | None:
    url = _repository(clipboard, section)
    if url is not None and url.startswith("-"):
        raise StepFailed(f"repository URL {url[:80]!r} starts with '-'; refused")
    return url


class _PushRejected(Exception):
    """The remote moved (or refused) between our clone and our push."""


def _needs(cfg: config.Config) -> tuple[str, ...]:
    """Root's key, when a repository may be configured (nothing is published otherwise)."""
    section = cfg.keys
    return ("ssh.root_public_key",) if section.repository or section.from_design else ()


@task(undo="keys:unpublish", writes=("keys",), needs=_needs)
def publish(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Put root's public key in the gitosis-admin repository (keydir + group member)."""
    section = config.current().keys
    url = _configured_url(clipboard, section)
    if url is None:
        log.info("keys not configured (no keys.repository, no instance.gitosis-admin); "
                 "root's key not published")
        return None
    member = _member(clipboard)
    key = str((clipboard.get("ssh") or {}).get("root_public_key") or "").strip()
    if not _KEY_LINE.match(key):
        raise StepFailed("ssh.root_public_key is missing or not one OpenSSH public key line "
                         "(run ssh:keygen first)")
    group = section.group

    def edit(work: Path) -> list[str]:
        key_path = work / "keydir" / f"{member}.pub"
        key_path.parent.mkdir(exist_ok=True)
        key_path.write_text(key + "\n")
        _edit_conf(work, lambda text: add_member(text, group, member))
        return [str(key_path.relative_to(work)), "gitosis.conf"]

    commit, changed = _push_edit(section, url, edit, f"jarvis: key of {member} (group {group})")
    log.info("%s in %s: %s (commit %s)", member, shown_url(url),
             "published" if changed else "already published, nothing to commit", commit[:12])
    clipboard["keys"] = {"repository": shown_url(url), "path": f"keydir/{member}.pub",
                         "member": member, "group": group, "commit": commit}
    return clipboard


@task(writes=("keys",))
def unpublish(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Take root's key out of the gitosis-admin repository (keydir file and group member);
    already gone counts as done."""
    section = config.current().keys
    url = _configured_url(clipboard, section)
    if url is None:
        log.info("keys not configured (no keys.repository, no instance.gitosis-admin); "
                 "no key removed")
        return None
    member = _member(clipboard)
    recorded = str((clipboard.get("keys") or {}).get("member") or "")
    if recorded and recorded != member:
        raise StepFailed(f"the recorded key member {recorded[:100]!r} is not this host's "
                         f"{member}: nothing removed")
    group = section.group

    def edit(work: Path) -> list[str]:
        touched = []
        key_path = work / "keydir" / f"{member}.pub"
        if key_path.exists():
            key_path.unlink()
            touched.append(str(key_path.relative_to(work)))
        if (work / "gitosis.conf").exists():
            _edit_conf(work, lambda text: remove_member(text, group, member))
            touched.append("gitosis.conf")
        return touched

    commit, changed = _push_edit(section, url, edit, f"jarvis: remove key of {member}")
    log.info("%s in %s: %s (commit %s)", member, shown_url(url),
             "removed" if changed else "already absent, nothing to commit", commit[:12])
    clipboard.pop("keys", None)
    return clipboard
