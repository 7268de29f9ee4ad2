"""A full disk: emits get ``io_error``, no torn line is left, the daemon keeps serving, and
appends work again once there is room.

Two ways to run out of room: a small tmpfs holding the town (needs root to mount), and a
file-size limit (``RLIMIT_FSIZE``, with SIGXFSZ ignored so writes fail with EFBIG instead of
killing the daemon), raised again with ``prlimit`` to play "space was freed".
"""

from __future__ import annotations

import fcntl
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gastown_client.client import Client
from gastown_client.errors import RequestRejected
from tests.conftest import DaemonProcess
from tests.reliability._support import is_root, make_town, read_log

FS_SIZE = "1m"  # room for the store (about 200 KiB with its WAL) and a filler
# Room left for the log once the filler is written (the SQLite store takes ~140 KiB).
ROOM = 40 * 1024
BLOB = 3000  # bytes of payload per emit
WRITERS = 8


def ids_of(lines: list[dict]) -> list[str]:
    return [line["payload"]["id"] for line in lines if line["type"] == "fill"]


def emit_until_full(client: Client, prefix: str, acked: list[str], limit: int = 500) -> str:
    """Emit big lines until one is refused; returns the refusal's code and message."""
    for i in range(limit):
        event_id = f"{prefix}-{i}"
        try:
            client.emit("fill", "rel/disk", {"id": event_id, "blob": "b" * BLOB})
        except RequestRejected as exc:
            return f"{exc.code}: {exc.message}"
        acked.append(event_id)
    raise AssertionError(f"{limit} emits and the disk is still not full")


def code_of(refusal: str) -> str:
    return refusal.split(":", 1)[0]


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 256 KiB tmpfs under /tmp, unmounted at teardown."""
    if not is_root():
        pytest.skip("mounting a tmpfs needs root")
    base = Path(tempfile.mkdtemp(prefix="gt-df-", dir="/tmp"))
    mount_point = base / "fs"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def free_bytes(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def test_full_tmpfs_gives_io_error_leaves_no_torn_line_and_recovers(small_fs: Path) -> None:
    town = make_town(small_fs / "town")
    proc = DaemonProcess(town, log_path=small_fs.parent / "daemon.log").wait_ready()
    try:
        filler = small_fs / "filler"
        with open(filler, "wb") as out:
            out.write(b"\xa5" * max(0, free_bytes(small_fs) - ROOM))
        assert free_bytes(small_fs) <= ROOM + 8192

        # Eight writers fill the disk together: every emit is either acknowledged (and in
        # the file once) or refused with io_error (and not in the file at all).
        acked: list[str] = []
        refusals: list[str] = []

        def writer(n: int) -> None:
            with proc.client() as client:
                refusals.append(emit_until_full(client, f"w{n}", acked))

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(refusals) == WRITERS, refusals
        assert {code_of(r) for r in refusals} == {"io_error"}, refusals
        assert all("disk full" in r and "nothing was written" in r for r in refusals), refusals
        assert len(acked) >= 2

        with proc.client() as client:
            # Then one writer alone, to the last byte: the same emit keeps failing.
            first = emit_until_full(client, "solo", acked)
            size = (town / ".events.jsonl").stat().st_size
            second = emit_until_full(client, "again", acked, limit=1)
            assert code_of(first) == code_of(second) == "io_error"
            assert (town / ".events.jsonl").stat().st_size == size

            raw, lines = read_log(town)
            assert sorted(ids_of(lines)) == sorted(acked)
            assert len(lines) == len(acked)
            # Still serving: ping, status, query.
            assert client.ping().pong
            status = client.status()
            assert status.eventlog.lines == len(acked)
            assert status.eventlog.quarantined == 0
            assert status.eventlog.bytes == len(raw)
            newest = client.query_events(types=["fill"], limit=1)
            assert [e["payload"]["id"] for e in newest] == [ids_of(lines)[-1]]

            filler.unlink()
            after = client.emit("fill", "rel/disk", {"id": "after", "blob": "b" * BLOB})
            assert after.cursor
            acked.append("after")
            more = [f"more-{i}" for i in range(5)]
            for event_id in more:
                client.emit("fill", "rel/disk", {"id": event_id, "blob": "b" * BLOB})
            acked.extend(more)

        _raw, lines = read_log(town)
        assert sorted(ids_of(lines)) == sorted(acked)
        assert ids_of(lines)[-6:] == ["after", *more]
        assert "eventlog_write_failed" in proc.log()
    finally:
        code = proc.terminate()
    assert code == 0, proc.log()


def test_file_size_limit_gives_io_error_leaves_no_torn_line_and_recovers() -> None:
    """RLIMIT_FSIZE: the write that crosses the limit is short, the retry gets EFBIG."""
    # Above what a fresh database and its WAL take (about 100 KiB), so the log hits it first.
    limit = 192 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    base = Path(tempfile.mkdtemp(prefix="gt-fs-", dir="/tmp"))
    town = make_town(base / "town")
    proc = DaemonProcess(
        town, log_path=base / "daemon.log", preexec_fn=limit_file_size
    ).wait_ready()
    try:
        acked: list[str] = []
        with proc.client() as client:
            refusal = emit_until_full(client, "f", acked)
            assert code_of(refusal) == "io_error", refusal
            assert "nothing was written" in refusal
            size = (town / ".events.jsonl").stat().st_size
            assert limit - (BLOB + 300) < size <= limit
            raw, lines = read_log(town)
            assert ids_of(lines) == acked
            assert client.ping().pong
            assert client.status().eventlog.lines == len(acked)
            assert code_of(emit_until_full(client, "again", acked, limit=1)) == "io_error"
            assert (town / ".events.jsonl").read_bytes() == raw

            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
            client.emit("fill", "rel/disk", {"id": "after", "blob": "b" * BLOB})
            acked.append("after")
        _raw, lines = read_log(town)
        assert ids_of(lines) == acked
        assert proc.proc.poll() is None, "the daemon died (SIGXFSZ?)"
        assert "eventlog_write_failed" in proc.log()
    finally:
        code = proc.terminate()
        shutil.rmtree(base, ignore_errors=True)
    assert code == 0


def test_torn_tail_on_a_full_disk_is_kept_refused_and_repaired_once_there_is_room(
    small_fs: Path,
) -> None:
    """The repair saves a torn tail before cutting it: when the copy cannot be written, the
    torn bytes stay in the log untouched, the emit is refused, and the daemon keeps serving;
    once there is room, the next emit repairs the tail (the copy kept) and is written."""
    town = make_town(small_fs / "town")
    proc = DaemonProcess(town, log_path=small_fs.parent / "daemon.log").wait_ready()
    try:
        with proc.client() as client:
            client.emit("fill", "rel/disk", {"id": "before"})
            torn = b'{"ts":"2026-12-05T05:00:00Z","source":"gt","type":"ma'
            lock = os.open(town / ".events.jsonl.lock", os.O_RDWR)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)  # a gt that died mid-line, under the lock
                with open(town / ".events.jsonl", "ab") as log:
                    log.write(torn)
            finally:
                os.close(lock)
            filler = small_fs / "filler"
            with open(filler, "wb") as out:
                out.write(b"\xa5" * free_bytes(small_fs))
            assert free_bytes(small_fs) < 4096
            with_torn = (town / ".events.jsonl").read_bytes()

            for attempt in range(2):  # the writer survives its failure: the next one too
                with pytest.raises(RequestRejected) as refused:
                    client.emit("fill", "rel/disk", {"id": f"full-{attempt}"})
                assert refused.value.code == "io_error", refused.value
                assert "nothing was written" in refused.value.message
                assert (town / ".events.jsonl").read_bytes() == with_torn
            assert client.ping().pong

            filler.unlink()
            client.emit("fill", "rel/disk", {"id": "after"})
            _raw, lines = read_log(town)
            assert ids_of(lines) == ["before", "after"]
            saved = list(town.rglob("*.torn"))
            assert [path.read_bytes() for path in saved] == [torn]
        assert "eventlog_tail_not_quarantined" in proc.log()
    finally:
        code = proc.terminate()
    assert code == 0, proc.log()
