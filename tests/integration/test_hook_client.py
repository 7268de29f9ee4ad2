"""The hook as Claude Code runs it: a real process, a real socket, a fake daemon.

The daemon's ``hook`` op is not needed here: ``FakeDaemon`` is a listening
AF_UNIX socket served by a thread that records every frame and answers, hangs
or hangs up as told. What the daemon makes of the frames is pinned by the
contract tests in ``tests/unit/test_hook_client.py``.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gastown_client import codec, hook, paths
from gastown_client.protocol import Hook

HOOK_PY = str(Path(hook.__file__).resolve())
VENV_BIN = Path(sys.executable).parent
CONSOLE = VENV_BIN / "gastown-hook"
SCRIPT_CMD = [sys.executable, "-I", "-S", HOOK_PY]
COMMANDS = {"script": SCRIPT_CMD, "console": [str(CONSOLE)]}
# The hook bounds itself to 300 ms; the assertions leave room for a loaded machine.
HOOK_BUDGET_S = 0.3
ASSERT_BUDGET_S = 0.6

STOP = {
    "session_id": "0b9c2f4e-6a51-4d8e-9f0a-1c2d3e4f5a6b",
    "transcript_path": "/tmp/0b9c2f4e.jsonl",
    "cwd": "/tmp",
    "hook_event_name": "Stop",
    "permission_mode": "default",
    "stop_hook_active": False,
}
OK_REPLY = b'{"id":1,"ok":true,"result":{"handled":"turn"}}\n'


class FakeDaemon:
    """A listening socket that records frames and replies as ``mode`` says.

    Modes: ``reply`` (send ``reply`` after each frame), ``hangup`` (send
    ``reply``, then hang up), ``hang`` (read the frame, never answer),
    ``close`` (accept and hang up without reading).
    """

    def __init__(self, path: Path, mode: str = "reply", reply: bytes = OK_REPLY) -> None:
        self.path = path
        self.mode = mode
        self.reply = reply
        self.frames: list[bytes] = []
        self.received = threading.Condition()
        self._conns: list[socket.socket] = []
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(16)
        self._listener.settimeout(0.02)  # so that close() is noticed promptly
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self._conns.append(conn)
            if self.mode == "close":
                conn.close()
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while b"\n" not in buffer:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    return
                buffer += chunk
            with self.received:
                self.frames.append(buffer.split(b"\n", 1)[0])
                self.received.notify_all()
            if self.mode in ("reply", "hangup"):
                conn.sendall(self.reply)
            if self.mode == "hangup":
                conn.close()
        except OSError:
            return

    def wait_frames(self, count: int, timeout_s: float = 5.0) -> list[bytes]:
        with self.received:
            self.received.wait_for(lambda: len(self.frames) >= count, timeout_s)
            return list(self.frames)

    def requests(self) -> list[Hook]:
        decoded = [codec.decode_request(frame) for frame in self.frames]
        assert all(isinstance(request, Hook) for request in decoded)
        return decoded  # type: ignore[return-value]

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def sock_path(town: Path) -> Path:
    return paths.socket_path(town, {})


@pytest.fixture
def fake(sock_path: Path) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(sock_path)
    yield daemon
    daemon.close()


def run_hook(
    town: Path,
    stdin: bytes,
    *args: str,
    command: list[str] = SCRIPT_CMD,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[bytes], float]:
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "GT_TOWN_ROOT": str(town),
        "GT_ROLE": "gastown/crew/max",
        "GT_SESSION": "gt-max",
        **(env or {}),
    }
    started = time.perf_counter()
    result = subprocess.run(
        [*command, *args],
        input=stdin,
        capture_output=True,
        env=environ,
        timeout=30,
        cwd=town if town.is_dir() else "/",
    )
    return result, time.perf_counter() - started


def spool_lines(town: Path) -> list[bytes]:
    path = paths.spool_dir(town) / f"hook-{os.getuid()}.jsonl"
    return path.read_bytes().splitlines() if path.exists() else []


# ---------------------------------------------------------------- daemon answers


@pytest.mark.parametrize("which", sorted(COMMANDS))
def test_answered_hook_exits_0_silently(town: Path, fake: FakeDaemon, which: str) -> None:
    payload = json.dumps(STOP).encode()
    result, _ = run_hook(town, payload, command=COMMANDS[which])
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    fake.wait_frames(1)
    [request] = fake.requests()
    assert bytes(request.payload) == payload
    assert request.env == {
        "GT_ROLE": "gastown/crew/max",
        "GT_SESSION": "gt-max",
        "GT_TOWN_ROOT": str(town),
    }
    assert request.cwd == str(town)
    assert request.pid and request.ppid == os.getpid()
    assert request.at is not None and abs(request.at - time.time()) < 30
    assert request.spooled_at is None
    assert spool_lines(town) == []


@pytest.mark.parametrize("which", sorted(COMMANDS))
def test_context_is_printed(town: Path, sock_path: Path, which: str) -> None:
    context = 'Your predecessor (gt-max, 2h ago) closed gt-12 "fix" — ünï 🚀\nseance: gt seance x'
    body = {"id": 1, "ok": True, "result": {"handled": "session_start", "context": context}}
    reply = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    daemon = FakeDaemon(sock_path, reply=reply)
    try:
        start = {**STOP, "hook_event_name": "SessionStart", "source": "startup"}
        result, _ = run_hook(town, json.dumps(start).encode(), command=COMMANDS[which])
    finally:
        daemon.close()
    assert result.returncode == 0 and result.stderr == b""
    assert result.stdout.decode() == context + "\n"


def test_error_reply_prints_nothing_does_not_spool_and_leaves_a_note(
    town: Path, sock_path: Path
) -> None:
    reply = b'{"id":1,"ok":false,"error":{"code":"bad_request","message":"\\"context\\":\\"x"}}\n'
    daemon = FakeDaemon(sock_path, reply=reply)
    try:
        result, _ = run_hook(town, b'{"hook_event_name":"Stop","session_id":"s1"}')
    finally:
        daemon.close()
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert spool_lines(town) == []
    [note] = note_lines(town)
    assert note["lost"] is True and note["reason"].startswith("refused: bad_request: ")
    assert (note["hook_event"], note["session_id"]) == ("Stop", "s1")


@pytest.mark.parametrize(
    "stdin",
    [b"", b"not json at all\n", b"\x00\xff\xfe garbage", b'{"a": "x' * 100],
    ids=["empty", "text", "binary", "truncated"],
)
def test_odd_stdin_is_forwarded_and_the_hook_exits_0(
    town: Path, fake: FakeDaemon, stdin: bytes
) -> None:
    result, _ = run_hook(town, stdin)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    [frame] = fake.wait_frames(1)
    assert b'"payload":' + (stdin.strip() or b"null").replace(b"\n", b" ") in frame
    assert frame.endswith(b"}")


def test_garbage_over_the_frame_limit_is_cut_to_fit_and_noted(town: Path, fake: FakeDaemon) -> None:
    result, _ = run_hook(town, b'{"a": "x' * 200_000)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    [frame] = fake.wait_frames(1)
    assert len(frame) <= hook.MAX_FRAME
    json.loads(frame)
    [note] = note_lines(town)
    assert note["lost"] is False and note["reason"] == "cut short"  # it never closes


def test_stdin_past_the_cap_is_cut_short_not_dropped(town: Path, fake: FakeDaemon) -> None:
    call = dict(STOP, hook_event_name="PostToolUse", tool_input={"command": "bd close gt-9"})
    head = json.dumps(call).encode()[:-1] + b',"tool_response":"'
    result, _ = run_hook(town, head + b"y" * hook.MAX_STDIN + b'"}')
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    [request] = (fake.wait_frames(1), fake.requests())[1]
    payload = json.loads(bytes(request.payload))
    assert payload["tool_input"] == call["tool_input"] and request.trimmed > 0
    [note] = note_lines(town)
    assert (note["lost"], note["reason"], note["hook_event"]) == (False, "cut short", "PostToolUse")


def test_what_cannot_be_sent_is_noted_not_sent(town: Path, fake: FakeDaemon) -> None:
    result, _ = run_hook(town, b"[" * 100_000)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    [note] = note_lines(town)
    assert note["lost"] is True and note["reason"] == "not a JSON object"
    assert fake.wait_frames(1, timeout_s=0.3) == []


def note_lines(town: Path) -> list[dict[str, object]]:
    path = paths.spool_dir(town) / f"note-{os.getuid()}.jsonl"
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


# ---------------------------------------------------------------- daemon hangs


@pytest.mark.parametrize("which", sorted(COMMANDS))
def test_hung_daemon_costs_at_most_300ms_and_nothing_is_spooled(
    town: Path, sock_path: Path, which: str
) -> None:
    daemon = FakeDaemon(sock_path, mode="hang")
    try:
        result, elapsed = run_hook(town, json.dumps(STOP).encode(), command=COMMANDS[which])
        assert len(daemon.wait_frames(1)) == 1  # it got the request...
    finally:
        daemon.close()
    print(f"hung daemon ({which}): {elapsed * 1000:.0f} ms")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert elapsed < ASSERT_BUDGET_S
    assert spool_lines(town) == []  # ...and may have applied it: at-most-once


# ---------------------------------------------------------------- daemon down


@pytest.mark.parametrize("which", sorted(COMMANDS))
def test_no_daemon_spools_one_line_per_call(town: Path, which: str) -> None:
    timings = []
    payloads = [json.dumps({**STOP, "n": n}).encode() for n in range(3)]
    for payload in payloads:
        result, elapsed = run_hook(town, payload, command=COMMANDS[which])
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
        timings.append(elapsed)
    print(f"no daemon ({which}): {[round(t * 1000) for t in timings]} ms")
    assert max(timings) < ASSERT_BUDGET_S
    lines = spool_lines(town)
    assert len(lines) == 3
    spool_file = paths.spool_dir(town) / f"hook-{os.getuid()}.jsonl"
    assert stat.S_IMODE(spool_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.spool_dir(town).stat().st_mode) == 0o700
    assert stat.S_IMODE(paths.private_dir(town).stat().st_mode) == 0o700
    for line, payload in zip(lines, payloads, strict=True):
        request = codec.decode_request(line)
        assert isinstance(request, Hook)
        assert bytes(request.payload) == payload
        assert request.spooled_at is not None and request.at is not None
        assert request.at <= request.spooled_at < request.at + HOOK_BUDGET_S


def test_stale_socket_spools(town: Path, sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # the file stays, nobody listens: ECONNREFUSED
    result, elapsed = run_hook(town, b"{}")
    assert result.returncode == 0 and elapsed < ASSERT_BUDGET_S
    assert len(spool_lines(town)) == 1


@pytest.mark.parametrize(
    ("mode", "reply"),
    [
        ("close", b""),
        ("reply", b'{"id":null,"ok":false,"error":{"code":"busy","message":"full"}}\n'),
        ("reply", b'{"id":null,"ok":false,"error":{"code":"shutting_down","message":"bye"}}\n'),
    ],
    ids=["hang-up", "busy", "shutting_down"],
)
def test_request_the_daemon_did_not_take_is_spooled(
    town: Path, sock_path: Path, mode: str, reply: bytes
) -> None:
    daemon = FakeDaemon(sock_path, mode=mode, reply=reply)
    try:
        result, elapsed = run_hook(town, b'{"hook_event_name":"Stop"}')
    finally:
        daemon.close()
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert elapsed < ASSERT_BUDGET_S
    [line] = spool_lines(town)
    assert b'"spooled_at":' in line


def test_missing_town_creates_nothing(tmp_path: Path) -> None:
    town = tmp_path / "no-such-town"
    result, elapsed = run_hook(town, b"{}")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert elapsed < ASSERT_BUDGET_S
    assert not town.exists()


def test_unwritable_spool_still_exits_0_and_says_so(town: Path) -> None:
    paths.private_dir(town).mkdir(mode=0o700)
    paths.spool_dir(town).write_text("a file where the spool dir should be")
    result, _ = run_hook(town, b"{}")
    assert (result.returncode, result.stdout) == (0, b"")
    [line] = result.stderr.splitlines()
    assert line.startswith(b"gastown-hook: hook call lost: not taken by ")
    assert b"and not spooled: NotADirectoryError: " in line
    assert b"(no note for the daemon: NotADirectoryError: " in line


# ---------------------------------------------------------------- --async


def test_async_returns_at_once_and_the_request_still_arrives(town: Path, sock_path: Path) -> None:
    daemon = FakeDaemon(sock_path, mode="hang")  # even a hung daemon does not hold it up
    try:
        payload = json.dumps(STOP).encode()
        result, elapsed = run_hook(town, payload, "--async")
        print(f"--async: {elapsed * 1000:.0f} ms")
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
        # Run in place against a hung daemon it could not end before the reply deadline.
        assert elapsed < hook.REPLY_DEADLINE_S
        daemon.wait_frames(1)
        [request] = daemon.requests()
        assert bytes(request.payload) == payload
        assert request.ppid == os.getpid()  # the caller's pid, taken before the fork
    finally:
        daemon.close()


def test_async_spools_when_the_daemon_is_down(town: Path) -> None:
    result, _ = run_hook(town, b"{}", "--async", command=COMMANDS["console"])
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    deadline = time.monotonic() + 5
    while not spool_lines(town) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(spool_lines(town)) == 1


def test_async_context_is_never_printed(town: Path, sock_path: Path) -> None:
    reply = b'{"id":1,"ok":true,"result":{"handled":"x","context":"hello"}}\n'
    daemon = FakeDaemon(sock_path, reply=reply)
    try:
        result, _ = run_hook(town, b"{}", "--async")
        daemon.wait_frames(1)
    finally:
        daemon.close()
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_python_dash_m_works(town: Path, fake: FakeDaemon) -> None:
    result, _ = run_hook(town, b"{}", command=[sys.executable, "-m", "gastown_client.hook"])
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert len(fake.wait_frames(1)) == 1
