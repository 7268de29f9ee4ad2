"""The log file and its lock file changed under a running daemon: no failure kills the
writer's thread, and the writers' lock keeps excluding ``gt`` when its file was deleted."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from contextlib import suppress
from pathlib import Path

import pytest

from gastown_client.client import Client
from gastown_client.errors import DaemonUnavailable, RequestRejected
from tests.conftest import DaemonProcess, daemon_argv
from tests.reliability._support import make_town, read_log


def test_log_replaced_by_a_directory_answers_io_error_and_keeps_serving(tmp_path: Path) -> None:
    town = make_town(tmp_path / "town")
    proc = DaemonProcess(town, log_path=tmp_path / "daemon.log").wait_ready()
    try:
        with proc.client(timeout_s=10) as client:
            client.emit("mail", "rel/log", {"to": "before"})
            log = town / ".events.jsonl"
            log.unlink()
            log.mkdir()
            for attempt in range(2):  # the writer survives its failure: the next one too
                with pytest.raises(RequestRejected) as refused:
                    client.emit("mail", "rel/log", {"to": f"dir-{attempt}"})
                assert refused.value.code == "io_error", refused.value
                assert refused.value.message == (
                    "could not write the event log (Is a directory); nothing was written"
                )
            assert client.ping().pong

            log.rmdir()
            client.emit("mail", "rel/log", {"to": "after"})
            _raw, lines = read_log(town)
            assert [line["payload"]["to"] for line in lines] == ["after"]
        assert "eventlog_batch_failed" in proc.log()
    finally:
        code = proc.terminate()
    assert code == 0, proc.log()


def test_a_deleted_lock_file_still_excludes_gt(tmp_path: Path) -> None:
    """``gt`` creates the lock file again by name: the daemon must lock that file, not the
    deleted one it opened at start-up, or both write (and a prune's swap loses gt's lines)."""
    town = make_town(tmp_path / "town")
    proc = DaemonProcess(town, log_path=tmp_path / "daemon.log").wait_ready()
    try:
        with proc.client(timeout_s=10) as client:
            client.emit("mail", "rel/lock", {"to": "before"})
            lock_path = town / ".events.jsonl.lock"
            lock_path.unlink()
            lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)  # as gt opens it
            done = threading.Event()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)

                def emit() -> None:
                    client.emit("mail", "rel/lock", {"to": "while-locked"})
                    done.set()

                emitter = threading.Thread(target=emit)
                emitter.start()
                time.sleep(1.0)
                assert not done.is_set(), "the daemon wrote while gt held the lock"
            finally:
                os.close(lock)
            emitter.join(10)
            assert done.is_set()
            _raw, lines = read_log(town)
            assert [line["payload"]["to"] for line in lines] == ["before", "while-locked"]
        assert "eventlog_lock_file_reopened" in proc.log()
    finally:
        code = proc.terminate()
    assert code == 0, proc.log()


# The daemon with a bug planted in its writer's thread: the thread ends with an exception.
WRITER_BUG = """
import runpy, sys
from gastownd.eventlog import writer

def _write(self, items):
    raise RuntimeError("a bug in the writer's thread")

writer.Writer._write = _write
sys.argv = ["gastownd", *sys.argv[1:]]
runpy.run_module("gastownd", run_name="__main__", alter_sys=True)
"""


def test_a_dead_writer_thread_stops_the_daemon_non_zero_instead_of_hanging(
    tmp_path: Path,
) -> None:
    town = make_town(tmp_path / "town")
    argv = daemon_argv(town, "--no-supervisor")
    assert argv[1:3] == ["-m", "gastownd"]
    log_path = tmp_path / "daemon.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([argv[0], "-c", WRITER_BUG, *argv[3:]], stdout=log, stderr=log)
    try:
        socket = town / ".gastownd" / "gastownd.sock"
        deadline = time.monotonic() + 15
        while not socket.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with suppress(DaemonUnavailable), Client(socket, timeout_s=10) as client:
            client.emit("mail", "rel/writer", {"to": "never"})
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log_text = log_path.read_text(errors="replace")
    assert code != 0, log_text[-3000:]
    assert "eventlog_writer_died" in log_text


def gt_append(town: Path, line: bytes) -> None:
    """One line appended as ``gt`` does: under the writers' lock, opened by name."""
    lock = os.open(town / ".events.jsonl.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(town / ".events.jsonl", "ab") as log:
            log.write(line)
    finally:
        os.close(lock)


def test_gt_lines_appended_while_a_replaced_log_is_reread_are_indexed_once(
    tmp_path: Path,
) -> None:
    town = make_town(tmp_path / "town")
    line = b'{"ts":"2026-12-05T05:00:00Z","source":"gt","type":"nudge","payload":{"i":%d}}\n'
    (town / ".events.jsonl").write_bytes(b"".join(line % i for i in range(100_000)))
    proc = DaemonProcess(town, log_path=tmp_path / "daemon.log").wait_ready(60)
    try:
        stop = threading.Event()

        def appender() -> None:
            j = 0
            while not stop.is_set():
                gt_append(
                    town, b'{"ts":"2026-12-05T05:00:00Z","type":"gt","payload":{"j":%d}}\n' % j
                )
                j += 1
                time.sleep(0.001)

        thread = threading.Thread(target=appender)
        thread.start()
        try:
            # A prune by another tool, under the lock (so it loses none of gt's lines): a copy
            # without the first lines renamed over the log.
            lock = os.open(town / ".events.jsonl.lock", os.O_RDWR)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                kept = (town / ".events.jsonl").read_bytes().split(b"\n", 1000)[-1]
                (town / "pruned.tmp").write_bytes(kept)
                os.replace(town / "pruned.tmp", town / ".events.jsonl")
            finally:
                os.close(lock)
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join()
        with proc.client(timeout_s=30) as client:
            client.emit("mail", "rel/reread", {"to": "after"})
            _raw, lines = read_log(town)
            assert client.status().eventlog.lines == len(lines)
            appended = [line["payload"]["j"] for line in lines if line["type"] == "gt"]
            assert appended == list(range(len(appended)))
            served = client.query_events(types=["gt"], limit=len(appended) + 10)
            assert sorted(event["payload"]["j"] for event in served) == appended
        assert "eventlog_reloaded" in proc.log_path.read_text()
    finally:
        code = proc.terminate()
    assert code == 0, proc.log()
