"""Poison input found while fuzzing: bytes the daemon reads from disk that are not valid JSON
in a way msgspec reports with ``UnicodeDecodeError`` (invalid UTF-8 inside a string) or with a
syntax error after a type error. docs/durability.md promises that a malformed line is kept,
skipped and counted; the hook's docstring promises that whatever Claude sent is spooled and
rejected by the daemon, never fatal. These tests hold the daemon to that.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gastown_client import paths
from gastown_client.errors import DaemonUnavailable
from tests.conftest import DaemonProcess
from tests.reliability._support import read_log

GOOD = b'{"ts":"2026-11-25T00:00:00Z","source":"gt","type":"nudge","actor":"ok","payload":{},"visibility":"feed"}\n'  # noqa: E501
BAD_UTF8 = b'{"ts":"2026-11-25T00:00:00Z","source":"gt","type":"nudge","actor":"bad\xff","payload":{},"visibility":"feed"}\n'  # noqa: E501


def append_like_gt(town: Path, data: bytes) -> None:
    with open(town / ".events.jsonl.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fd = os.open(town / ".events.jsonl", os.O_APPEND | os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def stop(proc: DaemonProcess) -> None:
    if proc.proc.poll() is None:
        assert proc.terminate() == 0, proc.log()
    else:
        proc.kill()


def test_log_line_with_invalid_utf8_is_skipped_at_startup(town: Path) -> None:
    (town / ".events.jsonl").write_bytes(GOOD + BAD_UTF8 + GOOD)
    proc = DaemonProcess(town)
    try:
        proc.wait_ready()
        with proc.client() as client:
            status = client.status()
            assert status.eventlog.lines == 3
            assert status.eventlog.malformed == 1
            assert [e["actor"] for e in client.query_events()] == ["ok", "ok"]
        assert (town / ".events.jsonl").read_bytes() == GOOD + BAD_UTF8 + GOOD
    finally:
        stop(proc)


def test_log_line_with_invalid_utf8_appended_while_running_is_skipped(town: Path) -> None:
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            client.emit("before", "tester")
        append_like_gt(town, BAD_UTF8)
        append_like_gt(town, GOOD)
        deadline = time.monotonic() + 10
        lines = 0
        while time.monotonic() < deadline and lines < 3:
            with proc.client() as client:
                lines = client.status().eventlog.lines
            time.sleep(0.02)
        with proc.client() as client:
            status = client.status()
            assert status.eventlog.lines == 3 and status.eventlog.malformed == 1
            assert status.eventlog.external == 2
        assert proc.proc.poll() is None
    except DaemonUnavailable as exc:
        raise AssertionError(f"daemon died: {exc}: {proc.log()}") from None
    finally:
        stop(proc)


def run_hook_with_daemon_down(town: Path, stdin: bytes) -> Path:
    """``gastown-hook`` as Claude runs it, with no daemon: the frame goes to the spool."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GT_", "GASTOWND_"))}
    env["GT_TOWN_ROOT"] = str(town)
    env["GT_ROLE"] = "gastown/crew/poison"
    result = subprocess.run(
        [sys.executable, "-m", "gastown_client.hook"],
        input=stdin,
        env=env,
        cwd=town,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    spool = paths.spool_dir(town)
    files = list(spool.iterdir())
    assert len(files) == 1, files
    assert files[0].read_bytes().count(b"\n") == 1
    return spool


@pytest.mark.parametrize(
    "stdin",
    [
        b'{"hook_event_name":"SessionStart","session_id":"s\xff1","source":"startup"}',
        b'{"hook_event_name":"Stop"},"pid":"x",',
    ],
    ids=["invalid-utf8", "type-then-syntax-error"],
)
def test_poison_spooled_hook_is_rejected_not_fatal(town: Path, stdin: bytes) -> None:
    spool = run_hook_with_daemon_down(town, stdin)
    proc = DaemonProcess(town).wait_ready()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(spool.iterdir()):
            assert proc.proc.poll() is None, f"daemon died on the spool: {proc.log()}"
            time.sleep(0.05)
        assert proc.proc.poll() is None, f"daemon died on the spool: {proc.log()}"
        assert list(spool.iterdir()) == []
        with proc.client() as client:
            assert client.ping().pong
        assert "spooled_request_rejected" in proc.log()
        _raw, lines = read_log(town)
        assert lines == []
    finally:
        stop(proc)
