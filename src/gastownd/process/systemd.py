"""Talking to the supervisor: socket activation, readiness and the watchdog.

Everything libsystemd would do for us is done here with the standard library,
so the daemon has no C dependency: ``LISTEN_FDS`` adoption (``sd_listen_fds``),
launchd's ``launch_activate_socket`` through ctypes, and ``sd_notify``
datagrams. Under no supervisor every function here is a harmless no-op.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, MutableMapping
from typing import Any

import anyio

SD_LISTEN_FDS_START = 3
FD_NAME = "gastownd"
"""The name our socket carries: ``FileDescriptorName=`` in the unit, the plist's ``Sockets`` key."""

TEST_HANG_ENV = "GASTOWND_TEST_HANG_AFTER_S"


class ActivationError(Exception):
    """The supervisor handed us something we cannot serve on; the message says what."""


def adopt_listen_socket(
    environ: MutableMapping[str, str] = os.environ,
    pid: int | None = None,
) -> socket.socket | None:
    """Return the listening socket systemd passed us, or None when not socket-activated.

    The ``LISTEN_*`` variables are removed from ``environ`` in every case, so a
    child we start never mistakes our sockets for its own. Among several
    passed sockets the one named ``gastownd`` in ``LISTEN_FDNAMES`` wins, else
    the first. Raises ``ActivationError`` when the chosen descriptor is not a
    listening Unix stream socket.
    """
    listen_pid = environ.pop("LISTEN_PID", None)
    listen_fds = environ.pop("LISTEN_FDS", None)
    listen_fdnames = environ.pop("LISTEN_FDNAMES", None)
    if listen_pid is None or listen_fds is None:
        return None
    try:
        target_pid = int(listen_pid)
    except ValueError:
        raise ActivationError(f"LISTEN_PID={listen_pid!r} is not a process id") from None
    if target_pid != (os.getpid() if pid is None else pid):
        # Meant for the process that started us (a wrapper shell, say), not us.
        return None
    try:
        count = int(listen_fds)
    except ValueError:
        raise ActivationError(f"LISTEN_FDS={listen_fds!r} is not a number") from None
    if count < 1:
        return None
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
    for fd in fds:
        # As sd_listen_fds() does: the sockets are ours alone, not our children's.
        _set_cloexec(fd)
    names = listen_fdnames.split(":") if listen_fdnames else []
    chosen = fds[names.index(FD_NAME)] if FD_NAME in names[:count] else fds[0]
    return listening_socket_from_fd(chosen)


def listening_socket_from_fd(fd: int) -> socket.socket:
    """Wrap an inherited descriptor after checking it is a listening Unix stream socket.

    On success the socket is non-blocking and close-on-exec. On failure the
    descriptor is left open: it belongs to the supervisor, not to us.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise ActivationError(f"inherited fd {fd} is not open: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise ActivationError(f"inherited fd {fd} is not a socket")
    sock = socket.socket(fileno=fd)
    try:
        _check_listening_unix_stream(sock, fd)
    except ActivationError:
        sock.detach()
        raise
    sock.setblocking(False)
    sock.set_inheritable(False)
    return sock


def _check_listening_unix_stream(sock: socket.socket, fd: int) -> None:
    if sock.family != socket.AF_UNIX:
        raise ActivationError(
            f"inherited fd {fd} is a {getattr(sock.family, 'name', sock.family)} socket, "
            "expected AF_UNIX; point ListenStream= at a filesystem path"
        )
    sock_type = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    if sock_type != socket.SOCK_STREAM:
        raise ActivationError(
            f"inherited fd {fd} has socket type {sock_type}, expected SOCK_STREAM; "
            "use ListenStream=, not ListenDatagram= or ListenSequentialPacket="
        )
    accept_conn = getattr(socket, "SO_ACCEPTCONN", None)
    # macOS lacks SO_ACCEPTCONN in some Python builds; launchd only passes listeners anyway.
    if accept_conn is not None and not sock.getsockopt(socket.SOL_SOCKET, accept_conn):
        raise ActivationError(f"inherited fd {fd} is a socket that is not listening")


def _set_cloexec(fd: int) -> None:
    try:
        os.set_inheritable(fd, False)
    except OSError as exc:
        raise ActivationError(
            f"LISTEN_FDS promised fd {fd}, but it is not open: {exc.strerror}"
        ) from None


def launchd_activate_socket(name: str, *, platform: str = sys.platform) -> list[int]:
    """Descriptors launchd holds for the plist's ``Sockets`` entry ``name``, else ``[]``.

    An empty list also means "not started by launchd with that socket"
    (launchd answers ESRCH or ENOENT), which is the normal case when run by hand.
    """
    if platform != "darwin":
        return []
    import ctypes  # only on macOS: keeps ctypes out of every Linux start

    try:
        libsystem = ctypes.CDLL("/usr/lib/libSystem.B.dylib", use_errno=True)
        activate = libsystem.launch_activate_socket
    except (OSError, AttributeError):
        return []
    fds_p = ctypes.POINTER(ctypes.c_int)
    activate.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(fds_p),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    activate.restype = ctypes.c_int
    libsystem.free.argtypes = [ctypes.c_void_p]
    libsystem.free.restype = None

    fds = fds_p()
    count = ctypes.c_size_t(0)
    if activate(name.encode(), ctypes.byref(fds), ctypes.byref(count)) != 0:
        return []
    try:
        return [int(fds[i]) for i in range(count.value)]
    finally:
        # The array is malloc'ed by launchd for us; the descriptors themselves stay open.
        libsystem.free(ctypes.cast(fds, ctypes.c_void_p))


def activated_listen_socket(
    environ: MutableMapping[str, str] = os.environ,
    *,
    platform: str = sys.platform,
) -> socket.socket | None:
    """The listening socket our supervisor (systemd or launchd) passed us, if any."""
    sock = adopt_listen_socket(environ)
    if sock is not None:
        return sock
    fds = launchd_activate_socket(FD_NAME, platform=platform)
    if not fds:
        return None
    # launchd passes one descriptor per address family; a path socket yields exactly one.
    return listening_socket_from_fd(fds[0])


class Notifier:
    """``sd_notify`` over a datagram socket, or nothing at all without ``NOTIFY_SOCKET``.

    Every method returns whether the message was handed to the kernel and never
    raises: a supervisor that stopped listening must not take the daemon down.
    A full receive queue drops the message rather than block the event loop.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
    ) -> None:
        self._address = _notify_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] = os.environ, pid: int | None = None
    ) -> Notifier:
        return cls(
            environ.get("NOTIFY_SOCKET"),
            watchdog_usec=_watchdog_usec(environ, os.getpid() if pid is None else pid),
        )

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str) -> bool:
        return self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        return self._send(f"STATUS={_one_line(text)}")

    def reloading(self) -> bool:
        # systemd ignores RELOADING=1 without the CLOCK_MONOTONIC timestamp of the request.
        return self._send(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def failed(self, status: str, errno_code: int) -> bool:
        """Start-up refused: what ``systemctl status`` shows instead of a bare exit status."""
        return self._send(f"STATUS=refused to start: {_one_line(status)}\nERRNO={errno_code}")

    def stopping(self) -> bool:
        return self._send("STOPPING=1")

    def watchdog(self) -> bool:
        return self._send("WATCHDOG=1")

    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the supervisor's timeout, as sd_watchdog_enabled(3) advises."""
        if self._address is None or not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, message: str) -> bool:
        if self._address is None:
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message.encode(), self._address)
        except OSError:
            return False
        return True


def _notify_address(address: str) -> str | None:
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    # Other schemes (vsock:, …) are for VMs and containers, not a user daemon.
    return None


def _watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != pid:
                return None
        except ValueError:
            return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the notify message.
    return " ".join(text.splitlines())


async def watchdog_loop(
    notifier: Notifier,
    interval_s: float,
    *,
    hang_check: Callable[[], bool] | None = None,
) -> None:
    """Ping the watchdog every ``interval_s`` until cancelled.

    It runs on the event loop on purpose: a loop that is stuck stops pinging and
    the supervisor restarts us. ``hang_check`` lets the app declare itself hung
    in ways the loop cannot see (a writer wedged in a thread, say): while it
    returns True no ping is sent.
    """
    if interval_s <= 0:
        raise ValueError(f"watchdog interval must be positive, got {interval_s}")
    while True:
        if hang_check is None or not hang_check():
            notifier.watchdog()
        await anyio.sleep(interval_s)


def maybe_hang_for_tests(
    environ: Mapping[str, str] = os.environ,
) -> Callable[[], Coroutine[Any, Any, None]] | None:
    """TEST-ONLY: a task that freezes the event loop, or None when not asked for.

    With ``GASTOWND_TEST_HANG_AFTER_S=<seconds>`` set, the returned coroutine
    function waits that long and then blocks the event loop with
    ``time.sleep`` for good, so tests can watch the watchdog pings stop. The
    process then ignores SIGTERM (its handler runs on the loop) and must be
    killed with SIGKILL, as systemd does after the watchdog fires. Never set
    it outside tests.
    """
    raw = environ.get(TEST_HANG_ENV)
    if not raw:
        return None
    try:
        after_s = float(raw)
    except ValueError:
        raise ValueError(f"{TEST_HANG_ENV}={raw!r} is not a number of seconds") from None
    if after_s < 0:
        raise ValueError(f"{TEST_HANG_ENV}={raw!r} must not be negative")

    async def hang() -> None:
        await anyio.sleep(after_s)
        while True:
            time.sleep(3600)  # noqa: ASYNC251 -- blocking the loop is the whole point

    return hang
