"""One daemon per town: the private directory's safety and the lifelong flock.

The lock is won before the socket is touched, because binding replaces
whatever socket file sits at the path: a second daemon must never unlink the
first one's socket.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

from gastown_client.paths import SUN_PATH_MAX
from gastownd.process.refusals import StartupError


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 if missing; refuse it if it is unsafe.

    Unsafe: a symlink, not a directory, owned by someone else, or writable by
    group or others (anyone who can write there can swap our socket).
    """
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise StartupError(f"cannot create {path}: its parent directory does not exist") from None
    except PermissionError:
        raise StartupError(f"cannot create {path}: permission denied") from None
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise StartupError(f"refusing to use {path}: it is a symlink; remove it and retry")
    if not stat.S_ISDIR(info.st_mode):
        raise StartupError(f"refusing to use {path}: it is not a directory")
    if info.st_uid != os.geteuid():
        raise StartupError(
            f"refusing to use {path}: owned by uid {info.st_uid}, not by you (uid {os.geteuid()})"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(info.st_mode)
        raise StartupError(
            f"refusing to use {path}: mode {mode:04o} is group- or world-writable; "
            f"run: chmod 700 {path}"
        )


class InstanceLock:
    """An exclusive flock held for the daemon's whole life; the file is never deleted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        # Never through a symlink, never anything but a regular file: the pid written below
        # replaces what the file held, and must never land in a file of the user's.
        try:
            fd = os.open(
                self.path,
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                0o600,
            )
        except OSError as exc:
            reason = "it is a symlink; remove it and retry" if exc.errno == errno.ELOOP else None
            raise StartupError(
                f"{self.path}: cannot open the instance lock: {reason or exc.strerror}",
                errno_code=exc.errno,
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StartupError(
                f"{self.path}: cannot open the instance lock: not a regular file; remove it and "
                "retry"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise StartupError(
                    f"another gastownd{who} is already running for this town (it holds {self.path})"
                ) from None
            raise StartupError(f"cannot lock {self.path}: {exc.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def clear_stale_socket(path: Path) -> None:
    """Remove a leftover socket file; call only while holding the instance lock."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise StartupError(f"refusing to replace {path}: it exists and is not a socket")
    os.unlink(path)


def check_socket_path(path: Path, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse, before anything is bound, a socket path the system cannot bind."""
    hint = "; set GASTOWND_SOCKET to one that fits" if "GASTOWND_SOCKET" in environ else ""
    size = len(os.fsencode(path))
    if size >= SUN_PATH_MAX:
        raise StartupError(
            f"{path}: the socket path is {size} bytes, longer than the {SUN_PATH_MAX - 1} "
            f"this system allows{hint}"
        )
    folder = path.parent
    if not folder.is_dir():
        state = "does not exist" if not folder.exists() else "is not a directory"
        hint = "; create it or change GASTOWND_SOCKET" if hint else ""
        raise StartupError(
            f"{path}: the socket's directory {folder} {state}{hint}", errno_code=errno.ENOENT
        )


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket, when the OS tells."""
    if sys.platform.startswith("linux"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)
    if sys.platform == "darwin" or "bsd" in sys.platform:
        # LOCAL_PEERCRED (level 0, option 1) returns struct xucred; cr_uid follows cr_version.
        creds = sock.getsockopt(0, 0x001, 4 + 4 + 2 + 16 * 4)
        return int(struct.unpack_from("I", creds, 4)[0])
    return None
