"""The daemon core through a real socket: instance, safety, protocol errors, shutdown."""

from __future__ import annotations

import json
import os
import platform
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from gastown_client import __version__, paths
from gastown_client.client import Client
from gastown_client.errors import RequestRejected
from gastown_client.protocol import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, Version, VersionResult
from tests.conftest import DaemonProcess, InProcess, daemon_argv, run_ctl


def raw_exchange(sock_path: Path, data: bytes, replies: int = 1, timeout: float = 5) -> list[dict]:
    """Send raw bytes, read ``replies`` frames back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        sock.sendall(data)
        return read_frames(sock, replies)


def read_frames(sock: socket.socket, count: int) -> list[dict]:
    buffer = b""
    frames: list[dict] = []
    while len(frames) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer and len(frames) < count:
            line, buffer = buffer.split(b"\n", 1)
            frames.append(json.loads(line))
    return frames


# ------------------------------------------------------------ protocol errors


async def test_hello_reports_versions_and_capabilities(daemon: InProcess) -> None:
    async with daemon.client() as client:
        hello = await client.hello()
    assert hello.protocol == 1
    assert hello.pid == os.getpid()
    assert "events" in hello.capabilities


async def test_version_names_the_daemon_protocol_and_python(daemon: InProcess) -> None:
    async with daemon.client() as client:
        version = await client.call(Version())
    assert version == VersionResult(
        daemon_version=__version__,
        protocol=PROTOCOL_VERSION,
        min_protocol=MIN_PROTOCOL_VERSION,
        python=platform.python_version(),
    )


def test_version_over_the_wire(daemon_proc: DaemonProcess) -> None:
    [reply] = raw_exchange(daemon_proc.socket, b'{"op":"version","id":"v"}\n')
    assert reply["id"] == "v" and reply["ok"] is True
    assert reply["result"]["protocol"] == PROTOCOL_VERSION
    assert reply["result"]["python"] == platform.python_version()
    with Client(daemon_proc.socket) as client:
        assert client.call(Version()).daemon_version == __version__


def test_incompatible_client_gets_clear_error(daemon_proc: DaemonProcess) -> None:
    [reply] = raw_exchange(daemon_proc.socket, b'{"op":"hello","protocol":99,"id":7}\n')
    assert reply == {
        "id": 7,
        "ok": False,
        "error": {"code": "unsupported_protocol", "message": reply["error"]["message"]},
    }
    assert "upgrade the daemon" in reply["error"]["message"]


@pytest.mark.parametrize(
    ("frame", "code", "needle"),
    [
        (b"{not json\n", "bad_request", "invalid JSON"),
        (b"[1,2]\n", "bad_request", "JSON object"),
        (b'{"id":3}\n', "bad_request", "missing field 'op'"),
        (b'{"op":"launch","id":4}\n', "unknown_op", "unknown op 'launch'"),
        (b'{"op":"hello","protocol":"one","id":5}\n', "bad_request", "$.protocol"),
        (b'{"op":"emit","type":"x","id":6}\n', "bad_request", "actor"),
        (b'{"op":"query","limit":0,"id":8}\n', "bad_request", "limit"),
    ],
)
def test_bad_requests_get_a_stable_code_and_daemon_keeps_serving(
    daemon_proc: DaemonProcess, frame: bytes, code: str, needle: str
) -> None:
    [reply, pong] = raw_exchange(daemon_proc.socket, frame + b'{"op":"ping","id":"p"}\n', 2)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert needle in reply["error"]["message"]
    assert "Traceback" not in reply["error"]["message"]
    assert pong == {"id": "p", "ok": True, "result": {"pong": True}}


def test_oversize_frame_is_rejected_and_connection_keeps_working(
    daemon_proc: DaemonProcess,
) -> None:
    huge = b'{"op":"ping","pad":"' + b"x" * (2 << 20) + b'"}\n'
    [too_large, pong] = raw_exchange(daemon_proc.socket, huge + b'{"op":"ping","id":1}\n', 2)
    assert too_large["error"]["code"] == "too_large"
    assert pong["result"] == {"pong": True}


def test_stalled_partial_frame_times_out(town: Path) -> None:
    (town / "settings" / "gastownd.toml").write_text(
        '[retention]\nenabled = false\n[server]\npartial_frame_timeout = "300ms"\n'
    )
    proc = DaemonProcess(town).wait_ready()
    try:
        started = time.monotonic()
        [reply] = raw_exchange(proc.socket, b'{"op":"pi', 1)
        assert reply["error"]["code"] == "timeout"
        assert time.monotonic() - started < 3
        with proc.client() as client:
            assert client.ping().pong
    finally:
        assert proc.terminate() == 0


def test_pipelined_requests_are_all_answered_with_their_ids(daemon_proc: DaemonProcess) -> None:
    frames = b"".join(b'{"op":"ping","id":%d}\n' % i for i in range(200))
    replies = raw_exchange(daemon_proc.socket, frames, 200)
    assert sorted(r["id"] for r in replies) == list(range(200))
    assert all(r["ok"] for r in replies)


# ------------------------------------------------------------------ instance


def test_second_instance_is_refused(daemon_proc: DaemonProcess, town: Path) -> None:
    second = subprocess.run(
        daemon_argv(town, log_format=None),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert f"pid {daemon_proc.proc.pid}" in second.stderr
    with daemon_proc.client() as client:
        assert client.ping().pong


def test_stale_socket_is_replaced(town: Path) -> None:
    sock_path = paths.socket_path(town)
    sock_path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # the file stays, nobody listens
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.ping().pong
    finally:
        assert proc.terminate() == 0


def test_private_dir_and_socket_modes(daemon_proc: DaemonProcess, town: Path) -> None:
    private = paths.private_dir(town)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(daemon_proc.socket).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(daemon_proc.socket).st_mode)


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_group_or_world_writable_private_dir_is_refused(town: Path, mode: int) -> None:
    private = paths.private_dir(town)
    private.mkdir()
    private.chmod(mode)
    result = subprocess.run(
        daemon_argv(town, log_format=None),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "group- or world-writable" in result.stderr
    assert f"chmod 700 {private}" in result.stderr


def test_symlinked_private_dir_is_refused(town: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    paths.private_dir(town).symlink_to(target)
    result = subprocess.run(
        daemon_argv(town, log_format=None),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "symlink" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
def test_client_of_another_uid_is_refused(daemon_proc: DaemonProcess, town: Path) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    private = paths.private_dir(town)
    # Modes alone keep other users out; open them up so the peer-uid check
    # (the second line of defence) is what answers.
    private.chmod(0o711)
    daemon_proc.socket.chmod(0o666)
    os.chmod(town, 0o755)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(daemon_proc.socket))
                # The daemon answers a foreign peer at once and hangs up.
                os.write(writer, sock.recv(65536) or b"EOF")
        except BaseException as exc:
            os.write(writer, f"ERR {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    answer = os.read(reader, 65536)
    os.close(reader)
    private.chmod(0o700)
    assert answer.startswith(b"{"), answer
    reply = json.loads(answer.splitlines()[0])
    assert reply["error"]["code"] == "forbidden"
    assert f"uid {nobody.pw_uid}" in reply["error"]["message"]
    with daemon_proc.client() as client:
        assert client.ping().pong


# ------------------------------------------------------------------ shutdown


def test_sigterm_exits_zero_quickly_and_answers_in_flight(daemon_proc: DaemonProcess) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon_proc.socket))
        frames = b"".join(
            b'{"op":"emit","type":"test_event","actor":"tester","id":%d}\n' % i for i in range(50)
        )
        sock.sendall(frames)
        started = time.monotonic()
        daemon_proc.proc.send_signal(15)
        replies = read_frames(sock, 50)
        code = daemon_proc.proc.wait(10)
    assert code == 0
    assert time.monotonic() - started < 5
    # Every request read before the signal is answered; each one that says ok is on disk.
    ok = [r for r in replies if r.get("ok")]
    lines = (daemon_proc.town / ".events.jsonl").read_bytes().splitlines()
    assert len(lines) == len(ok)
    assert not paths.socket_path(daemon_proc.town).exists()


# ------------------------------------------------------------------- the CLI


def test_ctl_ping_status_sockname(daemon_proc: DaemonProcess, town: Path) -> None:
    ping = run_ctl(town, "ping")
    assert ping.returncode == 0, ping.stderr
    assert ping.stdout.startswith("pong from")
    status = run_ctl(town, "status", "--json")
    assert status.returncode == 0
    data = json.loads(status.stdout)
    assert data["town_root"] == str(town)
    assert data["pid"] == daemon_proc.proc.pid
    assert data["connections"] >= 1
    human = run_ctl(town, "status")
    assert "event log" in human.stdout
    sockname = run_ctl(town, "sockname")
    assert sockname.stdout.strip() == str(daemon_proc.socket)


def test_ctl_without_daemon_exits_3_with_hint(town: Path) -> None:
    result = run_ctl(town, "status")
    assert result.returncode == 3
    assert "gastownd run" in result.stderr


def test_ctl_usage_error_exits_2(town: Path) -> None:
    assert run_ctl(town, "status", "--bogus").returncode == 2


def test_ctl_rejection_exits_1(daemon_proc: DaemonProcess, town: Path) -> None:
    result = run_ctl(town, "events", "--since", "2026-13-45T00:00:00Z")
    assert result.returncode in (1, 2)
    result = run_ctl(town, "emit", "bad type!", "--actor", "x")
    assert result.returncode == 2
    assert "type must match" in result.stderr
    # Each '<' is escaped to 6 bytes as Go does, so 10 x 100k chars exceed 1 MiB.
    fields = [arg for k in range(10) for arg in ("-p", f"k{k}=" + "<" * 100_000)]
    result = run_ctl(town, "emit", "big", "--actor", "x", *fields)
    assert result.returncode == 1
    assert "too_large" in result.stderr


def test_blocking_client_rejection_is_typed(daemon_proc: DaemonProcess) -> None:
    with Client(daemon_proc.socket) as client, pytest.raises(RequestRejected) as info:
        client.query(since="yesterday")
    assert info.value.code == "bad_request"


def test_a_frame_trickled_byte_by_byte_still_times_out(town: Path) -> None:
    (town / "settings" / "gastownd.toml").write_text(
        '[retention]\nenabled = false\n[server]\npartial_frame_timeout = "500ms"\n'
    )
    proc = DaemonProcess(town).wait_ready()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(proc.socket))
            started = time.monotonic()
            reply = b""
            for byte in b'{"op":"ping","padding":"' + b"x" * 100:
                try:
                    sock.sendall(bytes([byte]))
                except BrokenPipeError:
                    break
                time.sleep(0.05)
                sock.setblocking(False)
                try:
                    reply += sock.recv(4096)
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
                if reply:
                    break
            assert b'"code":"timeout"' in reply
            assert time.monotonic() - started < 2
    finally:
        assert proc.terminate() == 0


def test_frames_each_cut_mid_read_never_time_out_while_each_arrives_in_time(town: Path) -> None:
    """The deadline is each frame's own: a client whose every write ends inside the next
    frame always holds a partial frame, for longer than the timeout, and is served."""
    (town / "settings" / "gastownd.toml").write_text(
        '[retention]\nenabled = false\n[server]\npartial_frame_timeout = "200ms"\n'
    )
    proc = DaemonProcess(town).wait_ready()
    count = 30
    stream = b"".join(b'{"op":"ping","id":%d}\n' % i for i in range(count))
    cut = len(stream) // (count * 2) + 1  # about two writes a frame, each ending mid-frame
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(proc.socket))
            started = time.monotonic()
            for start in range(0, len(stream), cut):
                sock.sendall(stream[start : start + cut])
                time.sleep(0.02)
            assert time.monotonic() - started > 0.5  # well past one timeout
            replies = read_frames(sock, count)
    finally:
        assert proc.terminate() == 0
    assert [r["id"] for r in replies] == list(range(count))
    assert all(r["ok"] for r in replies)


def test_ctl_install_hooks_reports_an_invalid_file_on_stderr(tmp_path: Path, town: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text("{not json")
    result = run_ctl(town, "install-hooks", "--settings", str(settings))
    assert result.returncode == 1
    assert "invalid settings file" in result.stderr and result.stdout == ""
    assert settings.read_text() == "{not json"
    fine = tmp_path / "fresh.json"
    assert run_ctl(town, "install-hooks", "--settings", str(fine)).returncode == 0
    assert "SessionStart" in fine.read_text()


def test_subscriptions_are_limited_per_connection_and_in_all(town: Path) -> None:
    """Every line is offered to every subscription: 20,000 on one connection made each emit
    wait 52 ms and held 228 MiB. Past the limits a subscribe gets ``busy``; an unsubscribe,
    or a closed connection, makes room again."""
    (town / "settings" / "gastownd.toml").write_text(
        "[eventlog]\nmax_subscriptions = 5\nmax_subscriptions_per_connection = 3\n"
    )
    proc = DaemonProcess(town).wait_ready()

    def subscribe(sock: socket.socket, request_id: int) -> dict:
        sock.sendall(b'{"op":"subscribe","id":%d}\n' % request_id)
        [reply] = [f for f in read_frames(sock, 1) if "push" not in f]
        return reply

    try:
        first, second, third = (socket.socket(socket.AF_UNIX) for _ in range(3))
        for sock in (first, second, third):
            sock.settimeout(5)
            sock.connect(str(proc.socket))
        assert all(subscribe(first, i)["ok"] for i in range(3))
        refused = subscribe(first, 3)
        assert refused["error"]["code"] == "busy", refused
        assert "max_subscriptions_per_connection" in refused["error"]["message"]
        assert all(subscribe(second, i)["ok"] for i in range(2))
        refused = subscribe(second, 2)
        assert refused["error"]["code"] == "busy"
        assert "eventlog.max_subscriptions)" in refused["error"]["message"]
        # Room again: one unsubscribed on the first, then the whole first one closed.
        sub = subscribe(third, 9)
        assert sub["error"]["code"] == "busy"
        first.sendall(b'{"op":"unsubscribe","id":10,"subscription":1}\n')
        assert any(f.get("id") == 10 and f["ok"] for f in read_frames(first, 2))
        deadline = time.monotonic() + 5
        while not (reply := subscribe(third, 11))["ok"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reply["ok"], reply
        first.close()
        deadline = time.monotonic() + 5
        while not (reply := subscribe(third, 12))["ok"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reply["ok"], reply
        second.close()
        third.close()
    finally:
        assert proc.terminate() == 0, proc.log()
