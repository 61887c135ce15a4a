"""Built-in tasks that need no server: they make the embedded default useful."""
from __future__ import annotations

import logging
import secrets
import string
from typing import Any

from clipboard import config
from clipboard.settings import DesignsSettings, DnsSettings
from clipboard.validate import check_fqdn, normalize_clipboard
from clipboard.worker import task

log = logging.getLogger(__name__)

SETTINGS = (DesignsSettings, DnsSettings)

PASSWORD_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits + "-_.+"


def domain(cfg: config.Config) -> str | None:
    """The domain of hosts whose design names no fqdn: ``designs.domain``, else ``dns.zone``."""
    named = cfg.designs.domain or cfg.dns.zone
    return named.strip(".").lower() if named else None


def fqdn_of(instance: dict[str, Any], cfg: config.Config) -> str | None:
    """The host's fqdn: the design's, else derived from the hostname and ``domain``."""
    if instance.get("fqdn"):
        return str(instance["fqdn"]).rstrip(".").lower()
    zone = domain(cfg)
    if zone and instance.get("hostname"):
        return check_fqdn(f"{instance['hostname']}.{zone}", str(instance["hostname"]))
    return None


@task(writes=("instance",))
def validate(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Normalise the instance (lower-case keys and provider), check its fields and names;
    derive the fqdn from the configured domain when the design gives none."""
    design = normalize_clipboard(clipboard)
    instance = design["instance"]
    if not instance.get("fqdn"):
        derived = fqdn_of(instance, config.current())
        if derived:
            instance["fqdn"] = derived
            log.info("instance.fqdn derived: %s (designs.domain, else dns.zone)", derived)
    key = str(design["instance"].get("sshpubkey") or "")
    if key.startswith("ssh-dss"):
        log.warning("sshpubkey is a DSA key (ssh-dss), which OpenSSH 9 refuses by default; "
                    "it is recorded, but root logins will rely on the deploy key")
    return design


@task(writes=())
def noop(clipboard: dict[str, Any]) -> None:
    """Do nothing and print nothing: the clipboard goes on unchanged (a placeholder step)."""
    return


@task(writes=())
def echo(clipboard: dict[str, Any]) -> dict[str, Any]:
    """Print the clipboard back as it came: the contract's whole round trip, doing nothing else."""
    return clipboard


@task(writes=("instance.root_password",))
def randpass(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Give the host a root password of its own (kept if one exists: steps are idempotent)."""
    instance = clipboard["instance"]
    if instance.get("root_password"):
        log.info("root password already set; kept")
        return None
    instance["root_password"] = "".join(secrets.choice(_ALPHABET) for _ in range(PASSWORD_LENGTH))
    log.info("root password generated (%d characters)", PASSWORD_LENGTH)
    return clipboard


@task(writes=("deploy_key",))
def keypair(clipboard: dict[str, Any]) -> dict[str, Any] | None:
    """Generate jarvis's ed25519 deploy key for this host (the key it logs in as root with)."""
    if clipboard.get("deploy_key", {}).get("private_key"):
        log.info("deploy key already present; kept")
        return None
    # Imported here, once per deployment: at module level it would double the warm
    # core server's memory, and every core step's fork costs in proportion to it.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    comment = f"jarvis@{clipboard['instance']['hostname']}"
    clipboard["deploy_key"] = {"type": "ssh-ed25519", "public_key": f"{public} {comment}",
                               "private_key": private}
    log.info("deploy key generated: %s", public[:40] + "...")
    return clipboard
