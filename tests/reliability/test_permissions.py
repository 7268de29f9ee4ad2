"""The permission matrix: which private directories the daemon accepts, and who may connect.

The daemon refuses a private directory (``<town>/.gastownd``) that is a symlink, not a
directory, owned by another uid, or writable by group or others; it refuses a non-socket
file at the socket path and a town root that is not a directory; and it answers a peer of
another uid with one ``forbidden`` frame, then closes.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest

from gastown_client import paths
from tests.conftest import DaemonProcess
from tests.reliability._support import is_root, refused_start

NOBODY = 65534
root_only = pytest.mark.skipif(not is_root(), reason="needs root (chown, setuid)")


def assert_refused(town: Path, *fragments: str) -> str:
    result = refused_start(town)
    assert result.returncode == 1, (result.returncode, result.stderr)
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("gastownd: "), result.stderr
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "Traceback" not in result.stderr
    return message


def private(town: Path) -> Path:
    return paths.private_dir(town)


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o755, 0o711, 0o705])
def test_private_dir_not_writable_by_others_is_accepted(town: Path, mode: int) -> None:
    private(town).mkdir()
    private(town).chmod(mode)
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.ping().pong
            assert client.status().paths.private_dir == str(private(town))
        sock = os.lstat(paths.socket_path(town))
        assert stat.S_ISSOCK(sock.st_mode)
        assert stat.S_IMODE(sock.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(paths.lock_path(town)).st_mode) == 0o600
        assert stat.S_IMODE(os.lstat(private(town)).st_mode) == mode  # left as it was
    finally:
        assert proc.terminate() == 0, proc.log()


def test_missing_private_dir_is_created_0700(town: Path) -> None:
    proc = DaemonProcess(town).wait_ready()
    try:
        info = os.lstat(private(town))
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.geteuid()
    finally:
        assert proc.terminate() == 0, proc.log()


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o720, 0o702, 0o1777])
def test_private_dir_writable_by_others_is_refused(town: Path, mode: int) -> None:
    private(town).mkdir()
    private(town).chmod(mode)
    assert_refused(
        town,
        f"mode {stat.S_IMODE(mode):04o} is group- or world-writable",
        f"chmod 700 {private(town)}",
    )
    assert list(private(town).iterdir()) == []  # no lock, no socket
    assert stat.S_IMODE(os.lstat(private(town)).st_mode) == stat.S_IMODE(mode)


def test_symlinked_private_dir_is_refused(town: Path) -> None:
    target = town / "elsewhere"
    target.mkdir(mode=0o700)
    private(town).symlink_to(target)
    assert_refused(town, str(private(town)), "it is a symlink")
    assert list(target.iterdir()) == []


def test_private_dir_that_is_a_file_is_refused(town: Path) -> None:
    private(town).write_text("not a directory\n")
    assert_refused(town, "it is not a directory")
    assert private(town).read_text() == "not a directory\n"


@root_only
def test_private_dir_of_another_owner_is_refused(town: Path) -> None:
    private(town).mkdir(mode=0o700)
    os.chown(private(town), NOBODY, NOBODY)
    message = assert_refused(town, f"owned by uid {NOBODY}", f"(uid {os.geteuid()})")
    assert str(private(town)) in message
    assert list(private(town).iterdir()) == []


def test_non_socket_file_at_the_socket_path_is_refused(town: Path) -> None:
    private(town).mkdir(mode=0o700)
    socket_path = paths.socket_path(town)
    socket_path.write_bytes(b"precious\n")
    assert_refused(town, f"refusing to replace {socket_path}", "is not a socket")
    assert socket_path.read_bytes() == b"precious\n"


@pytest.mark.parametrize("shape", ["file", "missing"])
def test_town_root_that_is_not_a_directory_is_refused(town: Path, shape: str) -> None:
    root = town / "not-a-town"
    if shape == "file":
        root.write_text("x\n")
    assert_refused(root, f"town root {root} is not a directory")
    if shape == "file":
        assert root.read_text() == "x\n"
    else:
        assert not root.exists()


@root_only
def test_peer_of_another_uid_gets_forbidden_and_is_closed(
    daemon_proc: DaemonProcess, town: Path
) -> None:
    # Open the path so that nobody's connect() reaches the daemon; only the uid check is left.
    town.chmod(0o755)
    private(town).chmod(0o755)
    os.chmod(daemon_proc.socket, 0o666)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody, connect, read (never send), report
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(str(daemon_proc.socket))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            report = {"uid": os.getuid(), "data": data.decode(), "eof": True}
        except BaseException as exc:  # reported to the parent, which fails the test
            report = {"error": repr(exc)}
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = json.loads(pipe.read() or b"{}")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "error" not in report, report
    assert report["uid"] == NOBODY and report["eof"] is True
    frames = report["data"].splitlines()
    assert len(frames) == 1, report
    reply = json.loads(frames[0])
    assert reply["id"] is None and reply["ok"] is False
    assert reply["error"]["code"] == "forbidden"
    assert f"uid {NOBODY} may not use this daemon" in reply["error"]["message"]
    assert f"(owned by uid {os.geteuid()})" in reply["error"]["message"]
    # The owner is still served, and the refusal is logged.
    with daemon_proc.client() as client:
        assert client.ping().pong
    entries = [json.loads(line) for line in daemon_proc.log_path.read_text().splitlines()]
    refused = [e for e in entries if e.get("event") == "connection_refused"]
    assert [(e["reason"], e["peer_uid"]) for e in refused] == [("foreign_uid", NOBODY)]
