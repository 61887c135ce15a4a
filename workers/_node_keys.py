"""The SSH keys a new cloud node authorises for root, and how a key is named.

Only OpenSSH public key lines a current sshd accepts are passed on: a cloud API
rejects anything else, and rejecting it would fail the whole create.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from typing import Any

# The step's log names the silo the operator ran, not this helper module.
log = logging.getLogger("workers.cloud")

_KEY_LINE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|"
                       r"sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
                       r"\s+([A-Za-z0-9+/]+={0,3})(?:\s.*)?$")


def public_keys(clipboard: dict[str, Any]) -> list[str]:
    """Keys to authorise for root: jarvis's deploy key first, then the operator's key.

    The seed's ``ssh-dss`` key (and anything that is not an OpenSSH public key
    line) is skipped with a log line: OpenSSH 9 refuses DSA, and a cloud API
    would reject it and fail the whole create.
    """
    keys = []
    deploy = str((clipboard.get("deploy_key") or {}).get("public_key") or "").strip()
    if deploy:
        keys.append(deploy)
    operator = str((clipboard.get("instance") or {}).get("sshpubkey") or "").strip()
    if operator.startswith("ssh-dss"):
        log.warning("instance.sshpubkey is a DSA key (ssh-dss), which OpenSSH 9 refuses; "
                    "not authorised on the node")
    elif operator and not _KEY_LINE.match(operator):
        log.warning("instance.sshpubkey is not an OpenSSH public key line; not authorised")
    elif operator and operator not in keys:
        keys.append(operator)
    return keys


def key_fingerprint(public_key: str) -> str:
    """SHA-256 (hex) of the key's blob: names the EC2 key pair after its material."""
    parts = public_key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, binascii.Error):
        blob = public_key.encode()
    return hashlib.sha256(blob).hexdigest()
