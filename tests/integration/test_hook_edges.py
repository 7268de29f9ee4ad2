"""The hook under hostile stdin, spool, replies and environment: exit 0 in budget, never silent.

Each case ends one of three ways: the call is delivered, it is spooled, or the
hook leaves a note for the daemon and/or one line on stderr
(``gastown-hook: ...``). ``test_hook_client.py`` holds the ordinary cases and
the fake daemon; ``tests/reliability/test_hostile_hook.py`` the hostile payloads.
"""

from __future__ import annotations

import json
import os
import pty
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gastown_client import codec, hook, hookinstall, hookoutcome, paths
from gastown_client.protocol import Hook
from tests.conftest import DaemonProcess, run_ctl
from tests.integration.test_hook_client import (
    ASSERT_BUDGET_S,
    HOOK_PY,
    SCRIPT_CMD,
    STOP,
    FakeDaemon,
    note_lines,
    spool_lines,
)
from tests.integration.test_hooks import wait_until

STOP_BYTES = json.dumps(STOP).encode()
# A stdin left open is read until it idles (or the hook's stdin deadline), then what came is sent.
OPEN_STDIN_BUDGET_S = hook.STDIN_DEADLINE_S + ASSERT_BUDGET_S


def spawn(
    town: Path | str,
    stdin: int,
    *args: str,
    env: dict[str, str] | None = None,
    stdout: int = subprocess.PIPE,
    cwd: str = "/",
    preexec: Callable[[], None] | None = None,
    command: list[str] = SCRIPT_CMD,
) -> tuple[int, bytes, bytes, float]:
    """The hook with ``stdin`` as its fd 0: exit status, stdout, stderr, seconds.

    Fails, instead of hanging, when the hook still runs after 10 s."""
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "GT_TOWN_ROOT": str(town),
        **(env or {}),
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*command, *args],
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=environ,
        cwd=cwd,
        preexec_fn=preexec,  # the test's own child: no threads to deadlock
    )
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the hook was still running after 10 s")
    return proc.returncode, out or b"", err, time.perf_counter() - started


def piped(data: bytes) -> int:
    """A pipe holding ``data``, its writer closed: the read end (the caller closes it)."""
    reader, writer = os.pipe()
    os.write(writer, data)
    os.close(writer)
    return reader


def complaints(stderr: bytes) -> list[bytes]:
    lines = stderr.splitlines()
    assert all(line.startswith(b"gastown-hook: ") for line in lines), stderr
    return lines


def request_of(frame: bytes) -> Hook:
    request = codec.decode_request(frame)
    assert isinstance(request, Hook)
    return request


@pytest.fixture
def fake(town: Path) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(paths.socket_path(town, {}))
    yield daemon
    daemon.close()


# ---------------------------------------------------------------- stdin


@pytest.mark.parametrize("kind", ["pipe", "socket"])
@pytest.mark.parametrize(
    "written", [STOP_BYTES, STOP_BYTES[:-25], b""], ids=["whole", "part", "nothing"]
)
def test_a_stdin_left_open_is_read_until_it_idles_then_sent_as_cut_short(
    town: Path, fake: FakeDaemon, kind: str, written: bytes
) -> None:
    if kind == "pipe":
        reader, writer = os.pipe()
    else:
        ours, theirs = socket.socketpair()
        reader, writer = theirs.detach(), ours.detach()
    os.write(writer, written)
    try:
        status, out, err, elapsed = spawn(town, reader)  # the writer's end stays open
    finally:
        os.close(reader)
        os.close(writer)
    assert (status, out, err) == (0, b"", b"")
    assert elapsed < OPEN_STDIN_BUDGET_S
    [note] = note_lines(town)
    assert str(note["reason"]).endswith("(stdin left open, idle for 100 ms)")
    assert note["bytes"] == len(written)
    if not written:
        assert note["lost"] is True and fake.wait_frames(1, timeout_s=0.3) == []
        return
    assert note["lost"] is False
    [frame] = fake.wait_frames(1)
    payload = json.loads(bytes(request_of(frame).payload))
    assert payload["session_id"] == STOP["session_id"]
    assert payload["hook_event_name"] == "Stop"


def test_a_terminal_on_stdin_is_not_read_and_the_hook_says_so(town: Path, fake: FakeDaemon) -> None:
    leader, follower = pty.openpty()
    try:
        status, out, err, elapsed = spawn(town, follower)
    finally:
        os.close(leader)
        os.close(follower)
    assert (status, out) == (0, b"") and elapsed < ASSERT_BUDGET_S
    [line] = complaints(err)
    assert b"stdin is a terminal" in line
    assert fake.wait_frames(1, timeout_s=0.3) == [] and spool_lines(town) == []


@pytest.mark.parametrize("kind", ["dev-null", "closed"])
def test_an_empty_or_closed_stdin_is_sent_as_null(town: Path, fake: FakeDaemon, kind: str) -> None:
    """The daemon refuses a ``null`` payload, and the refusal leaves a note (see
    ``test_error_reply_prints_nothing_does_not_spool_and_leaves_a_note``)."""
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        status, out, err, elapsed = spawn(
            town, fd, preexec=(lambda: os.close(0)) if kind == "closed" else None
        )
    finally:
        os.close(fd)
    assert (status, out, err) == (0, b"", b"") and elapsed < ASSERT_BUDGET_S
    [frame] = fake.wait_frames(1)
    assert bytes(request_of(frame).payload) == b"null"


def test_a_directory_on_stdin_is_refused_by_python_and_the_guard_exits_0(
    town: Path, fake: FakeDaemon
) -> None:
    """Python itself will not start on a directory stdin ("init_sys_streams: <stdin> is a
    directory", exit 1), before any of the hook's code: the ``|| true`` of the command
    ``install-hooks`` writes keeps Claude from reading that as an error, and the fatal
    error is the stderr line."""
    fd = os.open(town, os.O_RDONLY)
    try:
        command = ["sh", "-c", hookinstall.installed_command(detached=False)]
        status, out, err, elapsed = spawn(town, fd, command=command)
    finally:
        os.close(fd)
    assert (status, out) == (0, b"") and elapsed < ASSERT_BUDGET_S
    assert b"is a directory" in err
    assert fake.wait_frames(1, timeout_s=0.3) == []


# ---------------------------------------------------------------- the spool


def _in_the_way(town: Path, kind: str) -> None:
    spool = paths.spool_dir(town)
    spool.mkdir(mode=0o700, parents=True)
    spool_file = spool / f"hook-{os.getuid()}.jsonl"
    if kind == "fifo":
        os.mkfifo(spool_file, 0o600)
    elif kind == "symlink":
        spool_file.symlink_to(town / "elsewhere.jsonl")
    else:
        spool_file.mkdir()


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
def test_a_call_that_cannot_be_spooled_is_noted_and_said_on_stderr(town: Path, kind: str) -> None:
    _in_the_way(town, kind)
    stdin = piped(STOP_BYTES)
    try:
        status, out, err, elapsed = spawn(town, stdin)
    finally:
        os.close(stdin)
    assert (status, out) == (0, b"") and elapsed < ASSERT_BUDGET_S
    [line] = complaints(err)
    assert line.startswith(b"gastown-hook: Stop call lost: not taken by ")
    assert line.endswith(b"(noted for the daemon)")
    [note] = note_lines(town)
    assert note["lost"] is True and str(note["reason"]).startswith("not taken by ")
    assert not (town / "elsewhere.jsonl").exists()


def test_an_async_call_with_no_daemon_and_no_spool_says_so_on_stderr(town: Path) -> None:
    """With no daemon to take it, ``--async`` spools in place, where stderr still reaches
    Claude (a detached child's stderr is /dev/null)."""
    _in_the_way(town, "directory")
    stdin = piped(STOP_BYTES)
    try:
        status, out, err, elapsed = spawn(town, stdin, "--async")
    finally:
        os.close(stdin)
    assert (status, out) == (0, b"") and elapsed < ASSERT_BUDGET_S
    [line] = complaints(err)
    assert line.startswith(b"gastown-hook: Stop call lost: not taken by ")
    [note] = note_lines(town)
    assert note["lost"] is True


def test_a_short_write_to_the_spool_is_said_and_the_torn_line_left_to_the_daemon(
    town: Path,
) -> None:
    """A full disk, played by a file size limit (Python ignores SIGXFSZ: the write falls short)."""
    spool = paths.spool_dir(town)
    spool.mkdir(mode=0o700, parents=True)
    spool_file = spool / f"hook-{os.getuid()}.jsonl"
    spool_file.write_bytes(b"x" * 999 + b"\n")
    limit = 1000 + 100

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    stdin = piped(STOP_BYTES)
    try:
        status, out, err, _ = spawn(town, stdin, preexec=limit_file_size)
    finally:
        os.close(stdin)
    assert (status, out) == (0, b"")
    [line] = complaints(err)
    assert b"Stop call lost: " in line and b"short write, 100 of " in line
    assert spool_file.stat().st_size == limit
    [note] = note_lines(town)
    assert note["lost"] is True and "short write" in str(note["reason"])


def test_the_calls_the_hook_noted_as_lost_are_counted_in_status(
    daemon_proc: DaemonProcess, town: Path
) -> None:
    """Every lost note counts, also past the ones logged one by one (an unreadable one too)."""
    lost = json.dumps({"lost": True, "reason": "not taken by x and not spooled: y"}).encode()
    cut = json.dumps({"lost": False, "reason": "too deep"}).encode()
    lines = [lost] * 25 + [cut, b"\xff not a note"]
    note_file = paths.spool_dir(town) / f"note-{os.getuid()}.jsonl"
    note_file.write_bytes(b"\n".join(lines) + b"\n")
    wait_until(lambda: "hook_notes_suppressed" in daemon_proc.log())
    with daemon_proc.client() as client:
        assert client.status().hooks_lost == 26
    shown = run_ctl(town, "status").stdout
    assert re.search(r"^hooks lost +26 calls not applied \(hook_call_lost\)$", shown, re.M), shown


def test_a_torn_spool_line_does_not_take_the_next_call_with_it(town: Path) -> None:
    """A short write (a full disk) leaves a frame without its newline; the next call's frame
    follows it on the same line. The daemon drops the fragment and applies the whole frame."""

    def spooled_frame(payload: dict[str, object]) -> bytes:
        frame = hook.build_frame(
            json.dumps(payload).encode(), env={}, cwd=b"/tmp", pid=1, ppid=1, at=time.time()
        )
        return hookoutcome.spooled(frame, time.time())

    torn = spooled_frame({**STOP, "session_id": "torn-one"})[:100]
    whole = spooled_frame(
        {**STOP, "hook_event_name": "SessionStart", "source": "startup", "session_id": "whole"}
    )
    spool = paths.spool_dir(town)
    spool.mkdir(mode=0o700, parents=True)
    (spool / f"hook-{os.getuid()}.jsonl").write_bytes(torn + whole)
    proc = DaemonProcess(town).wait_ready()
    try:
        wait_until(lambda: "spool_ingested" in proc.log())
        with proc.client() as client:
            assert client.wisp("whole").state == "open"
        [line] = [json.loads(row) for row in proc.log().splitlines() if "spool_torn_line" in row]
        assert line["dropped_bytes"] == 100
        assert "spooled_request_rejected" not in proc.log()
    finally:
        assert proc.terminate() == 0


# ---------------------------------------------------------------- replies


@pytest.mark.parametrize(
    ("mode", "reply"),
    [
        ("reply", b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        ("reply", b"x" * (16 << 20)),
        ("hangup", b'{"id":1,"ok":tr'),
    ],
    ids=["garbage", "16-MiB-without-newline", "closed-mid-reply"],
)
def test_an_unreadable_reply_is_noted_and_said_on_stderr(
    town: Path, mode: str, reply: bytes
) -> None:
    daemon = FakeDaemon(paths.socket_path(town, {}), mode=mode, reply=reply)
    stdin = piped(STOP_BYTES)
    try:
        status, out, err, elapsed = spawn(town, stdin)
        assert len(daemon.wait_frames(1)) == 1
    finally:
        os.close(stdin)
        daemon.close()
    assert (status, out) == (0, b"") and elapsed < ASSERT_BUDGET_S
    [line] = complaints(err)
    assert line.startswith(b"gastown-hook: Stop call lost: unreadable reply from ")
    [note] = note_lines(town)
    assert note["lost"] is True and str(note["reason"]).startswith("unreadable reply from ")
    assert spool_lines(town) == []  # it was taken: spooling could apply it twice


def test_a_context_for_a_closed_stdout_is_said_on_stderr(town: Path) -> None:
    reply = b'{"id":1,"ok":true,"result":{"handled":"session_start","context":"hi"}}\n'
    daemon = FakeDaemon(paths.socket_path(town, {}), reply=reply)
    reader, writer = os.pipe()
    os.close(reader)  # nobody reads the hook's stdout: its write gets EPIPE
    stdin = piped(json.dumps({**STOP, "hook_event_name": "SessionStart"}).encode())
    try:
        status, _, err, elapsed = spawn(town, stdin, stdout=writer)
    finally:
        os.close(stdin)
        os.close(writer)
        daemon.close()
    assert status == 0 and elapsed < ASSERT_BUDGET_S
    [line] = complaints(err)
    assert line.startswith(b"gastown-hook: context not printed: BrokenPipeError")


def test_an_ok_reply_with_an_unreadable_context_is_said_on_stderr(town: Path) -> None:
    reply = b'{"id":1,"ok":true,"result":{"handled":"session_start","context":"' + b"[" * 5 + b"\n"
    daemon = FakeDaemon(paths.socket_path(town, {}), reply=reply)
    stdin = piped(json.dumps({**STOP, "hook_event_name": "SessionStart"}).encode())
    try:
        status, out, err, elapsed = spawn(town, stdin)
    finally:
        os.close(stdin)
        daemon.close()
    assert (status, out) == (0, b"") and elapsed < ASSERT_BUDGET_S
    [line] = complaints(err)
    assert line.startswith(b"gastown-hook: context not readable: JSONDecodeError")
    assert spool_lines(town) == [] and note_lines(town) == []  # the call itself was taken


# ---------------------------------------------------------------- environment


def test_async_runs_in_place_when_fork_fails(town: Path, fake: FakeDaemon) -> None:
    code = (
        "import posix, sys\n"
        "def refuse():\n"
        "    raise BlockingIOError(11, 'Resource temporarily unavailable')\n"
        "posix.fork = refuse\n"
        f"sys.path.append({str(Path(HOOK_PY).parent)!r})\n"
        "import hookclient\n"
        "sys.exit(hookclient.main(['--async']))\n"
    )
    stdin = piped(STOP_BYTES)
    try:
        status, out, err, elapsed = spawn(
            town, stdin, command=[sys.executable, "-I", "-S", "-c", code]
        )
    finally:
        os.close(stdin)
    assert (status, out, err) == (0, b"", b"") and elapsed < ASSERT_BUDGET_S
    [frame] = fake.wait_frames(1)
    assert bytes(request_of(frame).payload) == STOP_BYTES


def test_a_socket_path_too_long_for_sun_path_spools(town: Path) -> None:
    stdin = piped(STOP_BYTES)
    try:
        status, out, err, elapsed = spawn(
            town, stdin, env={"GASTOWND_SOCKET": "/tmp/" + "s" * 200 + ".sock"}
        )
    finally:
        os.close(stdin)
    assert (status, out, err) == (0, b"", b"") and elapsed < ASSERT_BUDGET_S
    [line] = spool_lines(town)
    assert bytes(request_of(line).payload) == STOP_BYTES


def test_non_utf8_town_home_and_cwd_deliver(town: Path) -> None:
    odd = os.fsencode(town) + b"/caf\xe9-\xff"
    os.makedirs(odd + b"/mayor")
    with open(odd + b"/mayor/town.json", "w") as marker:
        marker.write("{}")
    odd_town = os.fsdecode(odd)
    daemon = FakeDaemon(paths.socket_path(Path(odd_town), {}))
    stdin = piped(STOP_BYTES)
    try:
        status, out, err, elapsed = spawn(
            odd_town, stdin, env={"HOME": os.fsdecode(b"/no-home-\xff")}, cwd=odd_town
        )
        [frame] = daemon.wait_frames(1)
    finally:
        os.close(stdin)
        daemon.close()
    assert (status, out, err) == (0, b"", b"") and elapsed < ASSERT_BUDGET_S
    request = request_of(frame)
    shown = odd.decode("utf-8", "replace")
    assert request.cwd == shown and request.env["GT_TOWN_ROOT"] == shown


@pytest.mark.parametrize("town_root", ["absolute", "relative"])
def test_a_deleted_cwd_delivers_or_says_why_not(
    town: Path, fake: FakeDaemon, town_root: str
) -> None:
    gone = town / "gone"
    gone.mkdir()
    command = ["sh", "-c", 'cd "$GONE" && rmdir "$GONE" && exec "$@"', "sh", *SCRIPT_CMD]
    stdin = piped(STOP_BYTES)
    try:
        status, out, err, elapsed = spawn(
            town if town_root == "absolute" else "relative/town",
            stdin,
            env={"GONE": str(gone)},
            command=command,
        )
    finally:
        os.close(stdin)
    assert (status, out) == (0, b"") and elapsed < ASSERT_BUDGET_S
    if town_root == "absolute":
        assert err == b""
        [frame] = fake.wait_frames(1)
        assert request_of(frame).cwd is None
    else:  # no cwd to resolve the town against: the call cannot go anywhere
        [line] = complaints(err)
        assert line.startswith(b"gastown-hook: failed, the call may be lost: FileNotFoundError")
