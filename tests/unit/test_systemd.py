"""Supervisor integration without libsystemd: socket adoption, sd_notify, watchdog."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

import gastownd
from gastownd.process.systemd import (
    ActivationError,
    Notifier,
    adopt_listen_socket,
    launchd_activate_socket,
    maybe_hang_for_tests,
    watchdog_loop,
)

LINUX_ONLY = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only"
)
SRC_DIR = Path(gastownd.__file__).resolve().parents[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the ~104-108 byte limit of a socket path.
    with tempfile.TemporaryDirectory(prefix="gd-", dir="/tmp") as name:
        yield Path(name)


@pytest.fixture
def notify_socket(short_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(short_dir / "notify")
    receiver.bind(path)
    receiver.settimeout(5)
    with receiver:
        yield receiver, path


def _child_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_", "GASTOWND_"))
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC_DIR), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


# --- socket activation ---------------------------------------------------------

# Puts the descriptors given as arguments on fd 3, 4, ... (as systemd would), claims
# LISTEN_PID for itself, adopts, reports as JSON and answers one pending client.
ADOPT_SCRIPT = r"""
import fcntl, os, sys
parked = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 100) for fd in sys.argv[1:]]
for target, fd in enumerate(parked, start=3):
    os.dup2(fd, target)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())

import json, select
from gastownd.process.systemd import ActivationError, adopt_listen_socket

leftover = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
try:
    sock = adopt_listen_socket()
except ActivationError as exc:
    print(json.dumps({"error": str(exc), "env": [k for k in leftover if k in os.environ]}))
    sys.exit(0)
report = {
    "env": [k for k in leftover if k in os.environ],
    "fileno": sock.fileno(),
    "name": sock.getsockname(),
    "timeout": sock.gettimeout(),
    "inheritable": sock.get_inheritable(),
}
if os.environ.get("ANSWER_ONE"):
    select.select([sock], [], [], 10)
    conn, _ = sock.accept()
    conn.setblocking(True)
    conn.sendall(b"pong:" + conn.recv(16))
    conn.close()
print(json.dumps(report))
"""


def _adopt_in_child(fds: list[int], **env: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", ADOPT_SCRIPT, *map(str, fds)],
        pass_fds=fds,
        env=_child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report: dict[str, object] = json.loads(result.stdout)
    return report


def _listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    return sock


def test_adopted_socket_answers_a_client_that_connected_before_the_daemon_started(
    short_dir: Path,
) -> None:
    path = short_dir / "gastownd.sock"
    with _listener(path) as listener, socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(path))
        client.sendall(b"ping")

        report = _adopt_in_child(
            [listener.fileno()], LISTEN_FDS="1", LISTEN_FDNAMES="gastownd", ANSWER_ONE="1"
        )

        assert client.recv(16) == b"pong:ping"
    assert report["fileno"] == 3
    assert report["name"] == str(path)


def test_adoption_unsets_listen_variables_and_keeps_the_socket_from_children(
    short_dir: Path,
) -> None:
    with _listener(short_dir / "gastownd.sock") as listener:
        report = _adopt_in_child([listener.fileno()], LISTEN_FDS="1")

    assert report["env"] == []
    assert report["timeout"] == 0.0  # non-blocking
    assert report["inheritable"] is False


def test_socket_named_gastownd_is_chosen_among_several(short_dir: Path) -> None:
    with (
        _listener(short_dir / "other.sock") as other,
        _listener(short_dir / "ours.sock") as ours,
    ):
        report = _adopt_in_child(
            [other.fileno(), ours.fileno()], LISTEN_FDS="2", LISTEN_FDNAMES="other:gastownd"
        )

    assert report["fileno"] == 4
    assert report["name"] == str(short_dir / "ours.sock")


def test_first_socket_is_chosen_when_none_is_named(short_dir: Path) -> None:
    with (
        _listener(short_dir / "first.sock") as first,
        _listener(short_dir / "second.sock") as second,
    ):
        report = _adopt_in_child([first.fileno(), second.fileno()], LISTEN_FDS="2")

    assert report["name"] == str(short_dir / "first.sock")


def _datagram(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock


def _unlistened(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    return sock


@pytest.mark.parametrize(
    ("make", "complaint"),
    [
        (_datagram, "expected SOCK_STREAM"),
        (_unlistened, "not listening"),
    ],
)
def test_wrong_kind_of_socket_on_fd_3_is_refused(
    short_dir: Path, make: Callable[[Path], socket.socket], complaint: str
) -> None:
    with make(short_dir / "wrong.sock") as sock:
        report = _adopt_in_child([sock.fileno()], LISTEN_FDS="1")

    assert complaint in str(report["error"])
    assert report["env"] == []


def test_non_socket_on_fd_3_is_refused(short_dir: Path) -> None:
    with open(short_dir / "plain-file", "w") as f:
        report = _adopt_in_child([f.fileno()], LISTEN_FDS="1")

    assert "is not a socket" in str(report["error"])


def test_variables_meant_for_another_process_are_ignored_and_removed() -> None:
    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "gastownd", "HOME": "/h"}

    assert adopt_listen_socket(environ, pid=4242) is None
    assert environ == {"HOME": "/h"}


@pytest.mark.parametrize(
    "environ",
    [{}, {"LISTEN_FDS": "1"}, {"LISTEN_PID": "4242"}, {"LISTEN_PID": "4242", "LISTEN_FDS": "0"}],
)
def test_without_activation_nothing_is_adopted(environ: dict[str, str]) -> None:
    assert adopt_listen_socket(environ, pid=4242) is None
    assert environ == {}


def test_garbled_listen_fds_for_us_is_an_error() -> None:
    with pytest.raises(ActivationError, match="LISTEN_FDS"):
        adopt_listen_socket({"LISTEN_PID": "4242", "LISTEN_FDS": "many"}, pid=4242)


def test_launchd_activation_is_not_attempted_off_macos() -> None:
    assert launchd_activate_socket("gastownd", platform="linux") == []


# --- sd_notify -----------------------------------------------------------------


def test_ready_carries_a_status_line(notify_socket: tuple[socket.socket, str]) -> None:
    receiver, path = notify_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})

    assert notifier.ready("serving 3 open wisps")

    assert receiver.recv(4096) == b"READY=1\nSTATUS=serving 3 open wisps"


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda n: n.status("indexing\nevents"), b"STATUS=indexing events"),
        (lambda n: n.watchdog(), b"WATCHDOG=1"),
        (lambda n: n.stopping(), b"STOPPING=1"),
    ],
)
def test_each_notification_arrives_as_one_datagram(
    notify_socket: tuple[socket.socket, str],
    send: Callable[[Notifier], bool],
    expected: bytes,
) -> None:
    receiver, path = notify_socket

    assert send(Notifier.from_environ({"NOTIFY_SOCKET": path}))

    assert receiver.recv(4096) == expected


def test_reloading_carries_the_monotonic_time_systemd_requires(
    notify_socket: tuple[socket.socket, str],
) -> None:
    receiver, path = notify_socket
    before = time.monotonic_ns() // 1000

    assert Notifier.from_environ({"NOTIFY_SOCKET": path}).reloading()

    first, second = receiver.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= time.monotonic_ns() // 1000


@LINUX_ONLY
def test_abstract_namespace_address_works() -> None:
    name = f"gastownd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)

        assert Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}).stopping()

        assert receiver.recv(4096) == b"STOPPING=1"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "30000000"})

    assert not notifier.enabled
    assert not notifier.ready("up")
    assert not notifier.watchdog()
    assert notifier.watchdog_interval_s() is None


def test_a_vanished_supervisor_does_not_raise(short_dir: Path) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(short_dir / "gone")})

    assert notifier.enabled
    assert not notifier.ready("up")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_supervisor_timeout(
    environ: dict[str, str], expected: float | None
) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/run/notify", **environ}, pid=4242)

    assert notifier.watchdog_interval_s() == expected


# --- watchdog ------------------------------------------------------------------


async def _next_datagram(receiver: socket.socket) -> bytes:
    while True:
        try:
            return receiver.recv(4096)
        except BlockingIOError:
            await anyio.wait_readable(receiver)


def _drain(receiver: socket.socket) -> None:
    while True:
        try:
            receiver.recv(4096)
        except BlockingIOError:
            return


async def test_watchdog_loop_pings_repeatedly(notify_socket: tuple[socket.socket, str]) -> None:
    receiver, path = notify_socket
    receiver.setblocking(False)
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})

    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog_loop, notifier, 0.01)
        with anyio.fail_after(5):
            pings = [await _next_datagram(receiver) for _ in range(3)]
        tg.cancel_scope.cancel()

    assert pings == [b"WATCHDOG=1"] * 3


async def test_watchdog_loop_withholds_pings_while_the_app_reports_a_hang(
    notify_socket: tuple[socket.socket, str],
) -> None:
    receiver, path = notify_socket
    receiver.setblocking(False)
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    hung = False

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: watchdog_loop(notifier, 0.01, hang_check=lambda: hung))
        with anyio.fail_after(5):
            await _next_datagram(receiver)
        hung = True
        _drain(receiver)
        with anyio.move_on_after(0.3) as quiet:
            await _next_datagram(receiver)
        hung = False
        with anyio.fail_after(5):
            resumed = await _next_datagram(receiver)
        tg.cancel_scope.cancel()

    assert quiet.cancelled_caught
    assert resumed == b"WATCHDOG=1"


HUNG_DAEMON_SCRIPT = r"""
import anyio
from gastownd.process.systemd import Notifier, maybe_hang_for_tests, watchdog_loop

async def main() -> None:
    notifier = Notifier.from_environ()
    hang = maybe_hang_for_tests()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog_loop, notifier, notifier.watchdog_interval_s())
        tg.start_soon(hang)

anyio.run(main)
"""


def test_a_hung_event_loop_stops_the_watchdog_pings(
    notify_socket: tuple[socket.socket, str],
) -> None:
    receiver, path = notify_socket
    env = _child_env(NOTIFY_SOCKET=path, WATCHDOG_USEC="100000", GASTOWND_TEST_HANG_AFTER_S="0.5")
    proc = subprocess.Popen([sys.executable, "-c", HUNG_DAEMON_SCRIPT], env=env)
    try:
        receiver.settimeout(30)  # the first ping waits for interpreter start-up
        pings = [receiver.recv(4096)]
        receiver.settimeout(1.0)  # twenty missed 50 ms intervals
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                pings.append(receiver.recv(4096))
            except TimeoutError:
                break
        else:
            pytest.fail("watchdog pings never stopped")

        assert set(pings) == {b"WATCHDOG=1"}
        assert len(pings) >= 3
        assert proc.poll() is None, "the process must hang, not exit"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_hang_hook_is_off_unless_asked_for() -> None:
    assert maybe_hang_for_tests({}) is None


@pytest.mark.parametrize("value", ["soon", "-1"])
def test_hang_hook_rejects_a_bad_delay(value: str) -> None:
    with pytest.raises(ValueError, match="GASTOWND_TEST_HANG_AFTER_S"):
        maybe_hang_for_tests({"GASTOWND_TEST_HANG_AFTER_S": value})
