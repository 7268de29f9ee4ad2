"""Odd entries in the hook spool: another uid's file, a directory, a FIFO, a symlink.

Each is skipped and logged once with why, the daemon starts and keeps running, and every
other spooled file is applied (review findings spool_other_uid, spool_entry,
spool_other_uid_running)."""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess
from tests.integration.test_hooks import ACTOR, NEXT, SESSION, payload, wait_until
from tests.reliability.test_hostile_state import LOCK_HOLDER

# Long enough for a few of the spool watch's 2 s wake-ups.
WATCH_ROUNDS_S = 5.0
NOBODY = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.getuid()


def frame(session: str) -> bytes:
    """A spooled hook call as ``gastown-hook`` writes it."""
    return (
        b'{"op":"hook","id":1,"payload":'
        + json.dumps(payload("SessionStart", session, source="startup")).encode()
        + b',"env":{"GT_ROLE":"'
        + ACTOR.encode()
        + b'"},"spooled_at":1.0}\n'
    )


def log_rows(proc: DaemonProcess, event: str) -> list[dict[str, object]]:
    rows = [json.loads(row) for row in proc.log().splitlines() if row.startswith("{")]
    return [row for row in rows if row.get("event") == event]


def applied(proc: DaemonProcess) -> int:
    return sum(int(str(row["requests"])) for row in log_rows(proc, "spool_ingested"))


@pytest.fixture
def spool(town: Path) -> Path:
    folder = town / ".gastownd" / "spool"
    folder.mkdir(parents=True, mode=0o700)
    os.chmod(town / ".gastownd", 0o700)
    return folder


def test_odd_entries_are_skipped_once_and_the_rest_is_applied(town: Path, spool: Path) -> None:
    outside = town / "elsewhere.jsonl"
    outside.write_bytes(frame(NEXT))
    (spool / "hook-0.jsonl").mkdir()
    os.mkfifo(spool / "hook-1.jsonl")
    (spool / "hook-2.jsonl").symlink_to(outside)
    (spool / "hook-3.jsonl").symlink_to(town / "missing")
    os.mkfifo(spool / "note-4.jsonl")
    os.mkfifo(spool / "ingesting-00000000000000000001-hook-5.jsonl")
    (spool / "hook-9.jsonl").write_bytes(frame(SESSION))
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            wait_until(lambda: client.wisp(SESSION))
            time.sleep(WATCH_ROUNDS_S)
            client.ping()
            assert client.status().spool_entries_skipped == 6
        skipped = {
            str(row["file"]): str(row["reason"]) for row in log_rows(proc, "spool_entry_skipped")
        }
        assert len(log_rows(proc, "spool_entry_skipped")) == 6  # once each, not once a pass
        assert set(skipped) == {
            "hook-0.jsonl",
            "hook-1.jsonl",
            "hook-2.jsonl",
            "hook-3.jsonl",
            "note-4.jsonl",
            "ingesting-00000000000000000001-hook-5.jsonl",
        }
        assert "symlink" in skipped["hook-2.jsonl"] and "regular" in skipped["hook-1.jsonl"]
        assert applied(proc) == 1  # the symlink's target, outside the spool, is never read
        assert outside.read_bytes() == frame(NEXT)
        assert not log_rows(proc, "spool_watch_restarting")
    finally:
        assert proc.terminate() == 0


CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, PR_CAPBSET_DROP = 1, 2, 24


def _without_read_override() -> None:
    """In the daemon's child before exec: root keeps its uid but loses the right to read
    any file, as a daemon run by a user other than the file's owner has."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def foreign_file(path: Path, data: bytes) -> None:
    """``path`` as another uid's hook leaves it (mode 0600, e.g. ``sudo``): the daemon
    cannot read it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(fd, data)
    os.close(fd)
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    else:
        os.chmod(path, 0)  # not root: the daemon runs as us, so take our own read away


def make_readable(path: Path) -> None:
    """What the town's owner does once told: chown (as root) or chmod the file back."""
    if os.geteuid() == 0:
        os.chown(path, 0, 0)
    else:
        os.chmod(path, 0o600)


def daemon_not_owning(town: Path) -> DaemonProcess:
    """The daemon unable to read ``foreign_file``'s files."""
    if os.geteuid() != 0:
        return DaemonProcess(town)
    return DaemonProcess(town, preexec_fn=_without_read_override)


def test_another_uids_spool_file_neither_crashes_the_start_nor_holds_back_the_rest(
    town: Path, spool: Path
) -> None:
    # Left by an older daemon that had set it aside and crashed on it, and a new one.
    stuck = spool / "ingesting-00000000000000000001-hook-0.jsonl"
    foreign_file(stuck, frame(NEXT))
    foreign_file(spool / "hook-0.jsonl", frame(NEXT))
    (spool / "hook-1.jsonl").write_bytes(frame(SESSION))
    proc = daemon_not_owning(town).wait_ready()
    try:
        wait_until(lambda: applied(proc) == 1)
        time.sleep(WATCH_ROUNDS_S)
        assert proc.proc.poll() is None
        assert {str(row["file"]) for row in log_rows(proc, "spool_entry_skipped")} == {
            stuck.name,
            "hook-0.jsonl",
        }
        assert len(log_rows(proc, "spool_entry_skipped")) == 2
        assert not log_rows(proc, "spool_watch_restarting")
        # Once made readable, it is looked at again and applied.
        make_readable(stuck)
        wait_until(lambda: applied(proc) == 2)
        assert not stuck.exists()
    finally:
        assert proc.terminate() == 0


def test_another_uids_file_appearing_while_running_does_not_jam_the_spool(
    town: Path, spool: Path
) -> None:
    proc = daemon_not_owning(town).wait_ready()
    try:
        foreign_file(spool / "hook-0.jsonl", frame(NEXT))
        wait_until(lambda: log_rows(proc, "spool_entry_skipped"))
        (spool / "hook-1.jsonl").write_bytes(frame(SESSION))
        wait_until(lambda: applied(proc) == 1)
        time.sleep(WATCH_ROUNDS_S)
        assert len(log_rows(proc, "spool_entry_skipped")) == 1
        assert not log_rows(proc, "spool_watch_restarting")
        assert not (spool / "hook-1.jsonl").exists()
    finally:
        assert proc.terminate() == 0


def test_a_call_spooled_while_the_store_is_locked_is_applied_once_it_is_free(
    town: Path, spool: Path
) -> None:
    """The store's trouble is not the call's: it is never dropped as rejected
    (review finding: a hook call lost to a store another process held locked)."""
    proc = DaemonProcess(town).wait_ready()
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(town / ".gastownd" / "gastownd.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        (spool / f"hook-{os.getuid()}.jsonl").write_bytes(frame(SESSION))
        time.sleep(8)  # past SQLite's 5 s busy timeout: the call's transaction failed
        holder.communicate("")
        with proc.client() as client:
            assert wait_until(lambda: client.wisp(SESSION)).state == "open"
        assert not log_rows(proc, "spooled_request_rejected")
        assert log_rows(proc, "session_store_write_failed")
    finally:
        holder.kill()
        holder.wait()
        assert proc.terminate() == 0
