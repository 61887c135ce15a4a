"""A design in a local file: the embedded default's source, and ``deploy <path>``.

Who asks decides what may be read. The console and the CLI are the local user,
who could ``cat`` the file anyway: they read whatever that user can. A line from
a chat network comes from anyone the ACL lets deploy, to a bot running as some
service account that can read its own keys and configuration: chat reads only
below ``sources.file.roots`` (none by default), judged on the real path, so
neither ``..`` nor a symbolic link leads out of a root.

For everyone, only a regular file of a real filesystem is read. A FIFO, a
device, a directory or a socket is refused from its ``stat`` before it is
opened, and again from ``fstat`` after an ``O_NONBLOCK`` open (the path may have
changed in between), so no read can wait forever on a writer that never comes.
Files of the kernel's pseudo filesystems (``/proc``, ``/sys``...) look regular
but are not: ``/proc/kmsg`` blocks on read, others change state when read; they
are refused by their filesystem type. Every refusal is one line naming the path
as it was given and why; the file's contents never appear in it.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from pathlib import Path

from bot.sources.fetched import Fetched
from clipboard.config import Config
from clipboard.errors import SourceError

log = logging.getLogger(__name__)

# Kernel interfaces that present themselves as files; reading them is never a design.
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "debugfs", "tracefs", "securityfs", "configfs", "cgroup", "cgroup2", "bpf",
    "pstore", "efivarfs", "fusectl", "binfmt_misc", "selinuxfs", "mqueue", "nsfs", "rpc_pipefs",
})
_PSEUDO_MOUNTS = (Path("/proc"), Path("/sys"))
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_CHUNK = 64 * 1024
_REASONS = {errno.ENOENT: "no such file", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.ENOTDIR: "no such file (a part of the path is "
            "not a directory)", errno.ELOOP: "too many levels of symbolic links"}


async def fetch(spec: str, config: Config, *, local: bool = False) -> Fetched:
    """Read the design file ``spec``; ``local`` is the console or CLI user, else chat."""
    limit = config.limits.max_bytes
    roots = None if local else chat_roots(config)
    real, data = await asyncio.to_thread(read, spec, limit, roots)
    return Fetched(kind="file", source=str(real), data=data)


def chat_roots(config: Config) -> tuple[Path, ...]:
    """``sources.file.roots`` as real paths: the directories chat may read below."""
    roots = []
    for entry in config.sources.file.roots:
        if not entry.strip():
            raise SourceError(f"sources.file.roots: {entry!r} is not a directory path")
        path = Path(entry).expanduser()
        if not path.is_absolute():
            raise SourceError(f"sources.file.roots: {entry!r} is not an absolute path")
        roots.append(Path(os.path.realpath(path)))
    return tuple(roots)


def read(spec: str, limit: int, roots: tuple[Path, ...] | None) -> tuple[Path, bytes]:
    """The real path and bytes of ``spec``; ``roots`` None means any file the user can read.

    Runs in a thread: the open and reads are on a regular file only, so they end.
    """
    if "\0" in spec:
        raise SourceError(f"refused {spec!r}: not a path")
    path = Path(spec).expanduser() if roots is None else _under_roots(spec, roots)
    try:
        _check_kind(spec, os.stat(path), Path(os.path.realpath(path)))
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise SourceError(f"cannot read {spec}: {_reason(exc)}") from None
    try:
        status = os.fstat(fd)
        real = _real_path(fd, path)
        _check_kind(spec, status, real)
        if roots is not None and not _inside(real, roots):
            raise SourceError(f"refused {spec}: it changed while being opened and now leads "
                              "outside sources.file.roots")
        if status.st_size > limit:
            raise SourceError(f"refused {spec}: {status.st_size} bytes, over the limit of "
                              f"{limit} bytes (clipboard.max_bytes)")
        data = _read_capped(fd, limit)
    except OSError as exc:
        raise SourceError(f"cannot read {spec}: {_reason(exc)}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise SourceError(f"refused {spec}: over the limit of {limit} bytes (clipboard.max_bytes)")
    return real, data


def _under_roots(spec: str, roots: tuple[Path, ...]) -> Path:
    """The path chat named, if its real path is below a root; a relative name is looked
    up in each root in order (the first where it exists)."""
    if not roots:
        raise SourceError(f"refused {spec}: files cannot be deployed from chat here "
                          "(sources.file.roots is empty); use the console or `jarvis deploy`")
    given = Path(spec).expanduser()
    if given.is_absolute():
        path = given
    else:
        path = next((root / given for root in roots if os.path.lexists(root / given)),
                    roots[0] / given)
    real = Path(os.path.realpath(path))
    if not _inside(real, roots):
        listed = ", ".join(str(root) for root in roots)
        where = ("leads through a symbolic link outside" if _inside(Path(os.path.abspath(path)), roots)
                 else "is outside")
        raise SourceError(f"refused {spec}: it {where} the directories chat may read "
                          f"(sources.file.roots: {listed})")
    return real


def _inside(real: Path, roots: tuple[Path, ...]) -> bool:
    return any(real == root or real.is_relative_to(root) for root in roots)


def _check_kind(spec: str, status: os.stat_result, path: Path) -> None:
    """Refuse anything but a regular file of a real filesystem."""
    mode = status.st_mode
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise SourceError(f"refused {spec}: it is {kind}, not a regular file")
    fstype = _filesystem_type(status.st_dev)
    pseudo = fstype in PSEUDO_FILESYSTEMS if fstype is not None else \
        any(path == mount or path.is_relative_to(mount) for mount in _PSEUDO_MOUNTS)
    if pseudo:
        raise SourceError(f"refused {spec}: it is a file of the kernel's {fstype or 'pseudo'} "
                          "filesystem, not a regular file")


def _filesystem_type(device: int) -> str | None:
    """The type of the filesystem mounted from ``device``, from /proc/self/mountinfo."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 2 and fields[2] == wanted and " - " in line:
                    return line.split(" - ", 1)[1].split()[0]
    except OSError as exc:
        log.debug("cannot read /proc/self/mountinfo: %s", exc)
    return None


def _real_path(fd: int, path: Path) -> Path:
    """The real path of what was opened (not of what the name means now)."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(os.path.realpath(path))


def _read_capped(fd: int, limit: int) -> bytes:
    """At most ``limit + 1`` bytes: enough to tell the file is over the limit."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _reason(exc: OSError) -> str:
    if isinstance(exc, BlockingIOError):
        return "it would block (not a regular file)"
    return _REASONS.get(exc.errno or 0) or (exc.strerror or type(exc).__name__).lower()
