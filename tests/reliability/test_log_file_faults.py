"""The log file and its lock file changed under a running daemon: no failure kills the
writer's thread, and the writers' lock keeps excluding ``gt`` when its file was deleted."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from gastown_client.errors import RequestRejected
from tests.conftest import DaemonProcess
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
                assert "nothing was written" in refused.value.message
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
