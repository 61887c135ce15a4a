"""keys:publish against a real bare git repository, checked with git log/git show."""
from __future__ import annotations

import ipaddress
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.process import ServerProcess, free_port, tcp_ready
from tests.silos import output, run_worker
from workers.keys import add_member, remove_member

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHJvb3Qga2V5IG9mIGxva2kgZm9yIHRlc3Rz root@loki.example.com"
GITOSIS_CONF = """[gitosis]

# admins
[group gitosis-admin]
members = alice@laptop
writable = gitosis-admin

[group deployments]
members = root@old.example.com
  root@older.example.com
readonly = app1 app2
"""
ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@test", *args],
                          cwd=cwd, check=True, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", **ENV}).stdout


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """A gitosis-admin style bare repository with one admin and a deployments group."""
    repo = tmp_path / "gitosis-admin.git"
    git("init", "--quiet", "--bare", "--initial-branch=master", str(repo))
    seed = tmp_path / "seed"
    git("clone", "--quiet", str(repo), str(seed))
    (seed / "keydir").mkdir()
    (seed / "keydir" / "alice@laptop.pub").write_text("ssh-ed25519 AAAAalice alice@laptop\n")
    (seed / "gitosis.conf").write_text(GITOSIS_CONF)
    git("add", ".", cwd=seed)
    git("commit", "--quiet", "-m", "initial", cwd=seed)
    git("push", "--quiet", "origin", "HEAD:master", cwd=seed)
    return repo


def clip(key: str = KEY) -> dict[str, Any]:
    return {"instance": {"hostname": "loki", "fqdn": "loki.example.com",
                         "gitosis-admin": "gitosis@example.com:gitosis-admin.git"},
            "ssh": {"root_public_key": key}}


def commits(repo: Path) -> list[str]:
    return git("--git-dir", str(repo), "log", "--format=%s", "master").splitlines()


def show(repo: Path, path: str) -> str:
    return git("--git-dir", str(repo), "show", f"master:{path}")


@pytest.mark.servers
def test_publish_adds_key_and_member_once(bare: Path, tmp_path: Path) -> None:
    config = {"keys": {"repository": f"file://{bare}", "author_name": "Jarvis Bot",
                       "author_email": "jarvis@example.com"}}
    first = run_worker("keys:publish", clip(), config, tmp_path)
    out = output(first)
    assert show(bare, "keydir/root@loki.example.com.pub") == KEY + "\n"
    conf = show(bare, "gitosis.conf")
    assert conf == GITOSIS_CONF.replace("root@older.example.com",
                                        "root@older.example.com root@loki.example.com")
    assert commits(bare) == ["jarvis: key of root@loki.example.com (group deployments)", "initial"]
    author = git("--git-dir", str(bare), "log", "-1", "--format=%an <%ae>", "master").strip()
    assert author == "Jarvis Bot <jarvis@example.com>"
    head = git("--git-dir", str(bare), "rev-parse", "master").strip()
    assert out["keys"] == {"repository": f"file://{bare}",
                           "path": "keydir/root@loki.example.com.pub",
                           "member": "root@loki.example.com", "group": "deployments",
                           "commit": head}

    second = run_worker("keys:publish", clip(), config, tmp_path)
    assert output(second) == out
    assert "nothing to commit" in second.stderr
    assert len(commits(bare)) == 2


@pytest.mark.servers
def test_new_key_replaces_file_without_duplicating_member(bare: Path, tmp_path: Path) -> None:
    config = {"keys": {"repository": str(bare)}}
    output(run_worker("keys:publish", clip(), config, tmp_path))
    newer = KEY.replace("AAAAIHJvb3Qga2V5", "AAAAIG5ld2VyIGtl")
    output(run_worker("keys:publish", clip(newer), config, tmp_path))
    assert show(bare, "keydir/root@loki.example.com.pub") == newer + "\n"
    assert show(bare, "gitosis.conf").count("root@loki.example.com") == 1
    assert len(commits(bare)) == 3


@pytest.mark.servers
def test_rejected_push_is_retried_from_a_new_clone(bare: Path, tmp_path: Path) -> None:
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\n[ -e {tmp_path}/rejected ] && exit 0\n"
                    f"touch {tmp_path}/rejected\necho 'busy, try again' >&2\nexit 1\n")
    hook.chmod(0o755)
    result = run_worker("keys:publish", clip(), {"keys": {"repository": str(bare)}}, tmp_path)
    output(result)
    assert "attempt 1 of 3" in result.stderr and "busy, try again" in result.stderr
    assert len(commits(bare)) == 2


@pytest.fixture
def git_daemon(bare: Path, tmp_path: Path) -> Iterator[int]:
    """A real ``git daemon`` on loopback serving ``bare`` (push enabled), stopped by its PID."""
    port = free_port()
    daemon = ServerProcess("git-daemon", [
        "git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}",
        f"--base-path={bare.parent}", "--export-all", "--enable=receive-pack",
        "--informative-errors", str(bare.parent)], log=tmp_path / "git-daemon.log",
        env={"PATH": "/usr/bin:/bin", **ENV})
    daemon.start(tcp_ready("127.0.0.1", port))
    try:
        yield port
    finally:
        daemon.stop()


def design_keys(**keys: Any) -> dict[str, Any]:
    return {"keys": {"from_design": True, "protocols": ["ssh", "https", "git"], **keys}}


@pytest.mark.servers
def test_design_repository_on_a_listed_host_and_custom_group(bare: Path, git_daemon: int,
                                                             tmp_path: Path) -> None:
    design = clip()
    design["instance"]["gitosis-admin"] = f"git://127.0.0.1:{git_daemon}/gitosis-admin.git"
    config = design_keys(group="webapps", design_hosts=["127.0.0.1"])
    output(run_worker("keys:publish", design, config, tmp_path))
    assert show(bare, "gitosis.conf").endswith(
        "readonly = app1 app2\n\n[group webapps]\nmembers = root@loki.example.com\n")


@pytest.mark.servers
@pytest.mark.parametrize("url, why", [
    ("{bare}", "a local path is never taken from a design"),
    ("file://{bare}", "may not be a file:// URL"),
    ("git://127.0.0.1:{port}/gitosis-admin.git", "names the address 127.0.0.1, which is not public"),
    ("git://localhost:{port}/gitosis-admin.git", "names localhost, jarvis's own machine"),
    ("ssh://git@10.1.2.3/gitosis-admin.git", "names the address 10.1.2.3, which is not public"),
    ("git@[::1]:gitosis-admin.git", "names the address ::1, which is not public"),
    ("ext::sh -c touch% /tmp/pwned", "is not a repository URL"),
    ("ext::sh", "is neither a URL nor user@host:path"),
    ("-uploadpack=touch /tmp/pwned", "is not a repository URL"),
    ("http://example.com/gitosis-admin.git", "uses http://, which keys.protocols"),
])
def test_a_design_repository_is_held_to_protocols_and_public_hosts(
        bare: Path, git_daemon: int, tmp_path: Path, url: str, why: str) -> None:
    design = clip()
    design["instance"]["gitosis-admin"] = url.format(bare=bare, port=git_daemon)
    result = run_worker("keys:publish", design, design_keys(), tmp_path)
    assert result.returncode == 1 and why in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert len(commits(bare)) == 1


@pytest.mark.servers
def test_a_design_repository_name_resolving_to_this_machine_is_refused(
        bare: Path, git_daemon: int, tmp_path: Path) -> None:
    """A name, not an address: only resolving it shows it is this machine (keys:publish does)."""
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    if any(ipaddress.ip_address(a).is_global for a in addresses):
        pytest.skip(f"{name} resolves to a public address here")
    design = clip()
    design["instance"]["gitosis-admin"] = f"git://{name}:{git_daemon}/gitosis-admin.git"
    result = run_worker("keys:publish", design, design_keys(), tmp_path)
    assert result.returncode == 1 and "which is not public" in result.stderr, result.stderr
    assert len(commits(bare)) == 1
    listed = run_worker("keys:publish", design, design_keys(design_hosts=[name]), tmp_path)
    output(listed)
    assert len(commits(bare)) == 2


@pytest.mark.servers
def test_a_design_host_outside_design_hosts_is_refused(bare: Path, tmp_path: Path) -> None:
    design = clip()
    design["instance"]["gitosis-admin"] = "gitosis@git.example.com:gitosis-admin.git"
    result = run_worker("keys:publish", design, design_keys(design_hosts=["git.example.org"]),
                        tmp_path)
    assert result.returncode == 1
    assert "names the host git.example.com, which is not in keys.design_hosts" in result.stderr


@pytest.mark.servers
def test_empty_repository_gets_first_commit(tmp_path: Path) -> None:
    repo = tmp_path / "empty.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(repo))
    output(run_worker("keys:publish", clip(), {"keys": {"repository": str(repo)}}, tmp_path))
    assert git("--git-dir", str(repo), "show", "main:gitosis.conf") == (
        "[group deployments]\nmembers = root@loki.example.com\n")


@pytest.mark.servers
def test_disallowed_transport_fails_clearly(bare: Path, tmp_path: Path) -> None:
    result = run_worker("keys:publish", clip(),
                        {"keys": {"repository": str(bare), "protocols": ["ssh"]}}, tmp_path)
    assert result.returncode == 1
    assert "git clone" in result.stderr and "not allowed" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(commits(bare)) == 1


@pytest.mark.servers
def test_password_in_url_is_never_shown(tmp_path: Path) -> None:
    url = "https://deploy:hunter2secret@127.0.0.1:1/gitosis-admin.git"
    result = run_worker("keys:publish", clip(), {"keys": {"repository": url, "timeout": 10}},
                        tmp_path)
    assert result.returncode == 1
    assert "hunter2secret" not in result.stderr + result.stdout
    assert "https://deploy@127.0.0.1:1/gitosis-admin.git" in result.stderr


@pytest.mark.servers
def test_not_configured_and_missing_key(tmp_path: Path) -> None:
    result = run_worker("keys:publish", clip(), {"keys": {"from_design": False}}, tmp_path)
    assert result.returncode == 0 and result.stdout == ""
    assert "keys not configured" in result.stderr
    result = run_worker("keys:publish", clip("not a key"), {"keys": {"repository": "/nowhere"}},
                        tmp_path)
    assert result.returncode == 1 and "ssh.root_public_key" in result.stderr


@pytest.mark.parametrize("text, expected", [
    ("", "[group deployments]\nmembers = root@a\n"),
    ("[group deployments]\nwritable = x\n", "[group deployments]\nmembers = root@a\nwritable = x\n"),
    ("[group deployments]\nmembers: b root@a\n", "[group deployments]\nmembers: b root@a\n"),
    ("[group deploymentsx]\nmembers = b\n",
     "[group deploymentsx]\nmembers = b\n\n[group deployments]\nmembers = root@a\n"),
])
def test_add_member_edits_only_its_line(text: str, expected: str) -> None:
    assert add_member(text, "deployments", "root@a") == expected


@pytest.mark.servers
def test_unpublish_removes_key_and_member_and_is_idempotent(bare: Path, tmp_path: Path) -> None:
    config = {"keys": {"repository": str(bare)}}
    published = output(run_worker("keys:publish", clip(), config, tmp_path))
    removed = output(run_worker("keys:unpublish", published, config, tmp_path))
    assert "keys" not in removed
    assert show(bare, "gitosis.conf") == GITOSIS_CONF
    files = git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "master").split()
    assert sorted(files) == ["gitosis.conf", "keydir/alice@laptop.pub"]
    assert commits(bare)[0] == "jarvis: remove key of root@loki.example.com"
    again = run_worker("keys:unpublish", clip(), config, tmp_path)   # decommission: no record
    assert again.returncode == 0, again.stderr
    assert "already absent, nothing to commit" in again.stderr
    assert len(commits(bare)) == 3


@pytest.mark.servers
def test_unpublish_removes_only_this_hosts_member(bare: Path, tmp_path: Path) -> None:
    """A recorded member that is not this host's (the clipboard says so, the host does not)
    is refused: the old hosts' keys stay."""
    config = {"keys": {"repository": str(bare)}}
    forged = {**clip(), "keys": {"member": "root@old.example.com"}}
    result = run_worker("keys:unpublish", forged, config, tmp_path)
    assert result.returncode == 1
    assert ("the recorded key member 'root@old.example.com' is not this host's "
            "root@loki.example.com: nothing removed") in result.stderr
    assert show(bare, "gitosis.conf") == GITOSIS_CONF and commits(bare) == ["initial"]


@pytest.mark.parametrize("member, expected", [
    ("root@old.example.com", "members =\n  root@older.example.com\n"),
    ("root@older.example.com", "members = root@old.example.com\nreadonly"),
    ("alice@laptop", GITOSIS_CONF),
])
def test_remove_member_edits_only_the_group_line(member: str, expected: str) -> None:
    assert expected in remove_member(GITOSIS_CONF, "deployments", member)
    assert "members = alice@laptop" in remove_member(GITOSIS_CONF, "deployments", member)
