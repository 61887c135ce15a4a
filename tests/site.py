"""The site the end-to-end tests and bench/end_to_end.py deploy on: every real
server, a jarvis configuration pointing at them, and a running bot to talk to."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from clipboard import config as config_mod
from tests.aio import bot_in_thread
from tests.servers.local_node import cleanup
from tests.servers.monitoring_http import Receiver
from tests.servers.moto_ec2 import MotoEC2
from tests.servers.named import Named
from tests.servers.slapd import Slapd

WORKERS = Path(__file__).parent / "workers"
# For tests of the bot's own mechanics (sources, chat, commands): the default pipeline
# cut to the steps that need no node, so they run in milliseconds and leave nothing behind.
CORE_PIPELINES = {"deploy": {"rollback": True,
                             "steps": ["core:validate", "core:randpass", "core:keypair"]}}
SEED_KEY = "ssh-dss AAAAB3NzaC1kc3MAAACBAPkYq2Kq7r0Jb0p0YqG4Ww4qF6iLp0Zz user@host"
GITOSIS_CONF = "[gitosis]\n\n[group deployments]\nmembers = root@old.example.com\n"
IMAGE = "ubuntu/images/hvm-ssd/ubuntu-trusty-14.04-amd64-server-20170727"
GIT_ENV = {"PATH": "/usr/bin:/bin", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True, timeout=30,
                          env=GIT_ENV).stdout


def gitosis_admin(tmp: Path) -> Path:
    bare = tmp / "gitosis-admin.git"
    git("init", "--quiet", "--bare", "--initial-branch=master", str(bare))
    work = tmp / "gitosis-seed"
    git("clone", "--quiet", str(bare), str(work))
    (work / "gitosis.conf").write_text(GITOSIS_CONF)
    git("add", "gitosis.conf", cwd=work)
    git("commit", "--quiet", "-m", "seed", cwd=work)
    git("push", "--quiet", "origin", "HEAD:master", cwd=work)
    return bare


class Site:
    """Every real server, one jarvis configuration pointing at them, and the bot."""

    def __init__(self, tmp: Path, named: Named, slapd: Slapd, monitor: Receiver,
                 moto: MotoEC2 | None = None, runner: dict[str, Any] | None = None) -> None:
        self.tmp, self.named, self.slapd, self.monitor, self.moto = tmp, named, slapd, monitor, moto
        self.local_state = tmp / "local"
        self.repo = gitosis_admin(tmp)
        steps = config_mod.defaults()["pipelines"]["deploy"]["steps"]
        self.settings: dict[str, Any] = {
            "store": {"path": str(tmp / "jarvis.db")},
            "runner": {"worker_dirs": [str(WORKERS)], **(runner or {})},
            "dns": named.dns_config(),
            "ldap": slapd.settings(),
            "keys": {"repository": f"file://{self.repo}"},
            "configmgmt": {"command": "echo puppet applied; exit 2", "kind": "puppet"},
            "monitoring": {"url": monitor.url("/api/v2/silences"),
                           "enable_url": monitor.url("/api/v2/silence/{silence_id}"), "timeout": 5,
                           "silence_id_format": "safe"},
            "providers": {"local": {"state_dir": str(self.local_state)}},
            "ssh": {"wait_interval": 0.05, "wait_timeout": 30},
            "pipelines": {"failing": {"rollback": True, "steps": [
                *steps[:[s if isinstance(s, str) else s["step"] for s in steps].index(
                    "keys:publish")], "shellworker:refuse"]}},
        }
        if moto is not None:
            # EC2 designs: the deploy pipelines with this deployment's deploy key authorised
            # on the stand-in sshd (see tests/workers/standin) before jarvis logs in.
            for name in ("deploy", "redeploy"):
                shipped = config_mod.defaults()["pipelines"][name]
                at = next(i for i, s in enumerate(shipped["steps"]) if s == "ssh:hostkeys")
                self.settings["pipelines"][f"{name}.ec2"] = {**shipped, "steps": [
                    *shipped["steps"][:at], "standin:authorize", *shipped["steps"][at:]]}
        if moto is not None:
            self.settings["providers"]["ec2"] = {**moto.config(), "poll_interval": 0.1,
                                                 "wait_timeout": 20}
        self.config_path = tmp / "jarvis.yaml"
        self.config_path.write_text(yaml.safe_dump(self.settings))
        self._running = bot_in_thread(config_mod.load(self.config_path))
        self.loop, self.bot = self._running.__enter__()

    def design(self, hostname: str, **instance: Any) -> Path:
        path = self.tmp / f"{hostname}.yaml"
        path.write_text(yaml.safe_dump({"instance": {
            "hostname": hostname, "fqdn": f"{hostname}.example.com", "provider": "local",
            "guestid": "Debian 6", "datacenter": "Atlanta", "size": 512,
            "gitosis-admin": "gitosis@example.com:gitosis-admin.git", "sshpubkey": SEED_KEY,
            **instance}}))
        return path

    def say(self, text: str, pattern: str, timeout: float = 60, identity: str | None = None) -> str:
        return self.loop.run(self.bot.ask(text, pattern, timeout, identity=identity), timeout + 10)

    def expect(self, pattern: str, timeout: float = 90) -> str:
        return self.loop.run(self.bot.expect(pattern, timeout), timeout + 10)

    def clipboard(self, hostname: str) -> dict[str, Any]:
        store = self.bot.bot.store
        deployment = self.loop.run(store.latest(hostname))
        return self.loop.run(store.clipboard(deployment.id))

    def close(self) -> None:
        self._running.__exit__(None, None, None)
        cleanup(self.local_state)
