"""The SSH client every silo logs in with: root on a node, host keys pinned, bounded runs.

Why a module of its own: ``ssh:*`` steps, ``config:bootstrap`` and any later silo
that works on a node must connect the same way. ``connect`` loads exactly the
host keys ``ssh:hostkeys`` pinned to the node in ``node.id`` and uses paramiko's
``RejectPolicy``: a node that shows any other key is refused, never trusted.
``run`` bounds a command, its output included, by a timeout, so a step never
hangs on a dead host. ``fetch_host_key`` is the one exception to pinning: it
only reads the key a server shows, for ``ssh:hostkeys`` to pin.
"""
from __future__ import annotations

import base64
import io
import logging
import select
import socket
import time
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from clipboard import redact
from clipboard.errors import StepFailed

log = logging.getLogger(__name__)

MAX_OUTPUT = 1 << 20


def target(clipboard: dict[str, Any]) -> tuple[str, int]:
    """The node's SSH address from the clipboard (``node.ssh_host``, ``node.ssh_port``)."""
    node = clipboard.get("node")
    if not isinstance(node, dict) or not node.get("ssh_host"):
        raise StepFailed("the clipboard has no node.ssh_host: run the provider's deploy step first")
    try:
        port = int(node.get("ssh_port") or 22)
    except (TypeError, ValueError):
        raise StepFailed(f"node.ssh_port {node.get('ssh_port')!r} is not a port number") from None
    return str(node["ssh_host"]), port


def _pinned_keys(clipboard: dict[str, Any]) -> dict[str, str]:
    """The host keys ssh:hostkeys pinned, only while they are pinned to the node in ``node.id``."""
    ssh = clipboard.get("ssh") or {}
    keys = ssh.get("host_keys")
    if not isinstance(keys, dict) or not keys:
        raise StepFailed("no pinned host keys for this node (ssh.host_keys is empty): "
                         "run ssh:hostkeys before any step that logs in")
    node_id = str((clipboard.get("node") or {}).get("id") or "")
    if str(ssh.get("host_keys_node") or "") != node_id:
        raise StepFailed(f"the pinned host keys belong to node {ssh.get('host_keys_node')!r}, not "
                         f"to {node_id!r}: run ssh:hostkeys for this node before logging in")
    return keys


def _load_private_key(text: str) -> paramiko.PKey:
    """The deploy key as a paramiko key; errors never quote the key itself."""
    try:
        loaded = serialization.load_ssh_private_key(text.encode(), password=None)
    except (ValueError, TypeError, AttributeError):
        raise StepFailed("deploy_key.private_key is not an unencrypted OpenSSH private key") from None
    classes: list[tuple[type, type[paramiko.PKey]]] = [
        (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
        (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey),
        (rsa.RSAPrivateKey, paramiko.RSAKey)]
    for crypto_class, key_class in classes:
        if isinstance(loaded, crypto_class):
            return key_class.from_private_key(io.StringIO(text))
    raise StepFailed(f"deploy_key.private_key has an unsupported type ({type(loaded).__name__})")


def connect(clipboard: dict[str, Any], timeout: float = 10) -> paramiko.SSHClient:
    """A root session on the node, authenticated with the deploy key, host keys pinned.

    Only the keys in ``ssh.host_keys`` are accepted (``RejectPolicy``); a node that
    shows another key raises StepFailed, as does a missing deploy key or a failed login.
    """
    host, port = target(clipboard)
    pinned = _pinned_keys(clipboard)
    private = (clipboard.get("deploy_key") or {}).get("private_key")
    if not private:
        raise StepFailed("the clipboard has no deploy_key.private_key: run core:keypair first")
    pkey = _load_private_key(str(private))
    client = paramiko.SSHClient()
    name = host if port == 22 else f"[{host}]:{port}"
    for key_type in sorted(pinned, key=lambda t: (t != "ssh-ed25519", t)):
        try:
            client.get_host_keys().add(name, key_type,
                                       paramiko.PKey.from_type_string(key_type,
                                                                      _b64(pinned[key_type])))
        except (paramiko.SSHException, ValueError) as exc:
            raise StepFailed(f"pinned host key {key_type} cannot be loaded: {exc}") from None
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(host, port=port, username="root", pkey=pkey, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout,
                       look_for_keys=False, allow_agent=False)
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise StepFailed(f"{host}:{port} showed a {exc.key.get_name()} host key that is not the "
                         "pinned one: refused (possible man-in-the-middle, or the node was "
                         "replaced without ssh:hostkeys)") from None
    except paramiko.AuthenticationException:
        client.close()
        raise StepFailed(f"root@{host}:{port} refused the deploy key") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        client.close()
        raise StepFailed(f"cannot open SSH to {host}:{port}: {exc or type(exc).__name__}") from None
    return client


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise StepFailed("a pinned host key is not valid base64") from None


def run(clipboard: dict[str, Any], command: str, timeout: float,
        client: paramiko.SSHClient | None = None) -> tuple[int, str, str]:
    """Run ``command`` as root on the node: (exit status, stdout, stderr).

    Output lines go to the step log. ``client`` reuses an open connection from
    ``connect``; without it one is opened and closed for this command. The whole
    command, output included, is bounded by ``timeout`` seconds.
    """
    own = client is None
    session = connect(clipboard, timeout=min(timeout, 10)) if own else client
    assert session is not None
    try:
        return _exec(session, command, timeout)
    finally:
        if own:
            session.close()


def _exec(client: paramiko.SSHClient, command: str, timeout: float) -> tuple[int, str, str]:
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise StepFailed("the SSH connection is closed")
    deadline = time.monotonic() + timeout
    try:
        channel = transport.open_session(timeout=timeout)
        channel.exec_command(command)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise StepFailed(f"cannot start a command over SSH: {exc}") from None
    out, err = bytearray(), bytearray()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StepFailed(f"command did not finish within {timeout:g}s: "
                                 f"{redact.program_of(command)}")
            select.select([channel], [], [], min(remaining, 1.0))
            while channel.recv_ready():
                out += channel.recv(65536)
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            if len(out) > MAX_OUTPUT or len(err) > MAX_OUTPUT:
                raise StepFailed(f"command printed more than {MAX_OUTPUT} bytes: "
                                 f"{redact.program_of(command)}")
            if channel.exit_status_ready() and not channel.recv_ready() \
                    and not channel.recv_stderr_ready() and channel.eof_received:
                break
        status = channel.recv_exit_status()
    finally:
        channel.close()
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    for line in stdout.splitlines():
        log.info("| %s", line)
    for line in stderr.splitlines():
        log.info("! %s", line)
    return status, stdout, stderr


def check(clipboard: dict[str, Any], client: paramiko.SSHClient, command: str,
           timeout: float) -> str:
    """Run a command that must succeed; its stdout, or StepFailed naming the exit status."""
    status, stdout, stderr = run(clipboard, command, timeout, client=client)
    if status != 0:
        last = stderr.strip().splitlines()[-1:] or stdout.strip().splitlines()[-1:] or [""]
        raise StepFailed(f"command exited {status}: {command[:80]}: {last[0][:200]}",
                         clipboard=clipboard)
    return stdout


def fetch_host_key(host: str, port: int, key_types: list[str], timeout: float) -> paramiko.PKey | None:
    """The host key the server shows when the client accepts only ``key_types``.

    None when the server has no key of those types. The key is not trusted here:
    no authentication or command follows on this transport.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    try:
        transport.get_security_options().key_types = key_types
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except paramiko.ssh_exception.IncompatiblePeer:
        return None
    finally:
        transport.close()
        sock.close()
