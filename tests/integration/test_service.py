"""gastownd under a supervisor: socket activation, sd_notify, watchdog."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gastown_client import paths
from gastown_client.client import Client


def spawn_supervised(
    town: Path, env_extra: dict[str, str], listener: socket.socket | None = None
) -> subprocess.Popen[bytes]:
    """Start gastownd the way systemd does: fd 3 = the socket, LISTEN_PID = its own pid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    env.update(env_extra)
    command = [
        sys.executable,
        "-m",
        "gastownd",
        "run",
        "--town-root",
        str(town),
        "--log-format",
        "json",
    ]
    log = open(town / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
    if listener is None:
        return subprocess.Popen(command, env=env, stdout=log, stderr=log)
    env.update(LISTEN_FDS="1", LISTEN_FDNAMES="gastownd")
    fd = listener.fileno()
    wrapper = 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"'
    return subprocess.Popen(
        ["/bin/sh", "-c", wrapper, "sh", *command],
        env=env,
        stdout=log,
        stderr=log,
        pass_fds=(3,),
        preexec_fn=lambda: os.dup2(fd, 3),
    )


def notify_socket(folder: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(folder / "notify.sock")
    sock.bind(path)
    sock.settimeout(10)
    return sock, path


def receive_until(sock: socket.socket, wanted: str, timeout_s: float = 10) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            break
        messages.append(message)
        if wanted in message.splitlines():
            return messages
    raise AssertionError(f"{wanted} not received; got {messages}")


def test_activated_socket_serves_a_client_that_connected_before_start(town: Path) -> None:
    sock_path = paths.socket_path(town)
    sock_path.parent.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(16)
    early = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    early.connect(str(sock_path))  # accepted into the backlog: nobody serves it yet
    early.sendall(b'{"op":"ping","id":"early"}\n')
    proc = spawn_supervised(town, {}, listener)
    listener.close()
    try:
        early.settimeout(15)
        assert early.recv(4096) == b'{"id":"early","ok":true,"result":{"pong":true}}\n'
        with Client(sock_path) as client:
            assert client.ping().pong
    finally:
        early.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert sock_path.exists(), "a socket we did not create must not be unlinked"
    assert '"socket_activated": true' in (town / "daemon.log").read_text()


def test_notify_ready_watchdog_and_stopping(town: Path) -> None:
    notify, address = notify_socket(town)
    proc = spawn_supervised(town, {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
    try:
        messages = receive_until(notify, "READY=1")
        assert any(m.startswith("STATUS=") for m in messages)
        with Client(paths.socket_path(town)) as client:
            assert client.ping().pong  # READY is only sent once serving
        pings = 0
        deadline = time.monotonic() + 2
        while pings < 3 and time.monotonic() < deadline:
            if "WATCHDOG=1" in notify.recv(4096).decode().splitlines():
                pings += 1
        assert pings >= 3
        proc.send_signal(signal.SIGTERM)
        receive_until(notify, "STOPPING=1")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()


def test_hung_event_loop_stops_the_watchdog_pings(town: Path) -> None:
    notify, address = notify_socket(town)
    proc = spawn_supervised(
        town,
        {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000", "GASTOWND_TEST_HANG_AFTER_S": "0.5"},
    )
    try:
        receive_until(notify, "READY=1")
        receive_until(notify, "WATCHDOG=1")
        time.sleep(1.0)  # the loop is frozen by now
        notify.settimeout(0.05)
        drained = 0
        try:
            while True:
                notify.recv(4096)
                drained += 1
        except TimeoutError:
            pass
        notify.settimeout(1.0)
        try:
            late = notify.recv(4096).decode()
        except TimeoutError:
            late = ""
        assert "WATCHDOG=1" not in late
    finally:
        proc.kill()
        proc.wait(10)
        notify.close()


def test_sighup_reloads_configuration(town: Path) -> None:
    notify, address = notify_socket(town)
    proc = spawn_supervised(town, {"NOTIFY_SOCKET": address})
    try:
        receive_until(notify, "READY=1")
        (town / "settings" / "gastownd.toml").write_text(
            'log_level = "debug"\n[retention]\nenabled = false\n'
        )
        proc.send_signal(signal.SIGHUP)
        messages = receive_until(notify, "READY=1")
        assert any("RELOADING=1" in m for m in messages)
        assert '"config_reloaded"' in (town / "daemon.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        notify.close()
