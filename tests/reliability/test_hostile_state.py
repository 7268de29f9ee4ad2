"""The daemon's own files in ``<town>/.gastownd/`` as a crash, a bad disk, a restore or a
careless user leaves them: a FIFO, a directory or an endless device in place of a
bookkeeping file, a damaged checkpoint, a prune's journal that is not this town's, a session
store another process holds locked.

What must hold: the daemon starts and answers (those files are only shortcuts; the log is
the source of truth), an archive query answers rather than hangs, and no archived line is
cut (review of the state files' edges)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gastown_client.errors import RequestRejected
from tests.conftest import SAMPLE_LOG, DaemonProcess, run_ctl
from tests.integration.test_eventlog import gt_append
from tests.reliability._support import make_town, refused_start

# A query's deadline: a file that blocks a reader would hold it for good.
QUERY_TIMEOUT_S = 10.0
SESSION = "11111111-2222-3333-4444-555555555555"
OTHER_SESSION = "21111111-2222-3333-4444-555555555555"
NEW = "31111111-2222-3333-4444-555555555555"
LOGGED = "41111111-2222-3333-4444-555555555555"
# Another process holding the session store's write lock until its stdin closes.
LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def base_town() -> Iterator[Path]:
    """A town whose sample lines were archived by a prune, with emits, a digest and an open
    wisp after them, stopped cleanly: every kind of state file is there."""
    root = Path(tempfile.mkdtemp(prefix="gt-base-", dir="/tmp"))
    make_town(root)
    shutil.copy(SAMPLE_LOG, root / ".events.jsonl")
    proc = DaemonProcess(root).wait_ready()
    with proc.client() as client:
        client.prune()
        for n in range(5):
            client.emit("sling", "gastown/crew/joe", {"bead": f"gt-{n}"})
        client.session_start(SESSION, "gastown/crew/joe", cwd="/tmp")
        client.session_end(SESSION, "done")
    assert proc.terminate() == 0, proc.log()
    (root / "daemon.log").unlink()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def baseline(base_town: Path) -> Iterator[tuple[int, int]]:
    """What a copy of the base town serves: (lines with the archive, live lines)."""
    root = Path(tempfile.mkdtemp(prefix="gt-", dir="/tmp"))
    shutil.copytree(base_town, root, symlinks=True, dirs_exist_ok=True)
    yield served(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def copy_town(base_town: Path) -> Iterator[Callable[[], Path]]:
    made: list[Path] = []

    def make() -> Path:
        root = Path(tempfile.mkdtemp(prefix="gt-", dir="/tmp"))
        shutil.copytree(base_town, root, symlinks=True, dirs_exist_ok=True)
        made.append(root)
        return root

    yield make
    for root in made:
        shutil.rmtree(root, ignore_errors=True)


def served(town: Path) -> tuple[int, int]:
    """Start the daemon, count the lines an archive query and a live query return, stop it."""
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client(timeout_s=QUERY_TIMEOUT_S) as client:
            everything = len(client.query(limit=100_000, archive=True).events)
            live = len(client.query(limit=100_000).events)
            client.ping()
    finally:
        code = proc.terminate()
    assert code == 0, proc.log()
    assert "Traceback" not in (town / "daemon.log").read_text(errors="replace"), proc.log()
    return everything, live


def state_file(town: Path, which: str) -> Path:
    state = town / ".gastownd"
    if which == "seqmap":
        return max(state.glob("seqmap-*.json"), key=lambda p: p.stat().st_mtime)
    if which == "archive day catalogue":
        return min((state / "archive").glob("*.idx"))
    if which == "archive day file":
        return min((state / "archive").glob("*.jsonl.gz"))
    return state / {"snapshot": "index.snapshot", "prune journal": "archive/pending.json"}[which]


def put_in_place(path: Path, kind: str) -> None:
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "endless device":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()


@pytest.mark.parametrize("kind", ["fifo", "endless device", "directory"])
@pytest.mark.parametrize(
    "which",
    ["snapshot", "seqmap", "prune journal", "archive day catalogue", "archive day file"],
)
def test_an_odd_file_in_place_of_a_state_file_never_stalls_the_daemon(
    copy_town: Callable[[], Path], baseline: tuple[int, int], which: str, kind: str
) -> None:
    everything, live = baseline
    town = copy_town()
    put_in_place(state_file(town, which), kind)
    got_everything, got_live = served(town)
    assert got_live == live
    if which == "archive day file":
        # That day's lines cannot be read; every other line is served.
        assert live <= got_everything < everything
    else:
        assert got_everything == everything


def archive_bytes(town: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (town / ".gastownd" / "archive").iterdir()}


@pytest.mark.parametrize(
    ("commit", "sizes"),
    [
        ("the log itself", (0, 0)),
        ("another town's prune file", (0, 0)),
        ("a prune file", (1 << 40, 1 << 40)),
        ("a prune file", (2**63, 2**63)),
        ("a prune file", (2**64, 2**64)),
    ],
    ids=["log itself, cut", "other town, cut", "grown", "2**63", "2**64"],
)
def test_a_journal_never_cuts_or_grows_the_archive(
    copy_town: Callable[[], Path], baseline: tuple[int, int], commit: str, sizes: tuple[int, int]
) -> None:
    everything, _ = baseline
    town = copy_town()
    before = archive_bytes(town)
    commit_path = {
        "the log itself": town / ".events.jsonl",
        "another town's prune file": Path("/nonexistent/.events.jsonl.gastownd-prune-1"),
        "a prune file": town / ".events.jsonl.gastownd-prune-1",
    }[commit]
    if commit == "a prune file":
        commit_path.write_bytes(b"")
    days = {name[len("events-") : -len(".idx")]: sizes for name in before if name.endswith(".idx")}
    journal = {"commit_path": str(commit_path), "days": days}
    (town / ".gastownd" / "archive" / "pending.json").write_text(json.dumps(journal))
    got_everything, _ = served(town)
    assert archive_bytes(town) == before
    assert got_everything == everything


def test_a_damaged_checkpoint_or_a_dangling_seqmap_never_refuses_the_start(
    copy_town: Callable[[], Path],
) -> None:
    town = copy_town()
    everything, live = served(town)  # a seqmap of this copy's log, with a checkpoint
    seqmap_path = state_file(town, "seqmap")
    seqmap = json.loads(seqmap_path.read_text())
    seqmap["end"] = 10  # shorter than its tail: a checkpoint no file can match
    seqmap_path.write_text(json.dumps(seqmap))
    (town / ".gastownd" / "seqmap-1.json").symlink_to(town / "missing")
    assert served(town) == (everything, live)


def test_a_store_locked_by_another_process_answers_io_error_and_changes_nothing(
    copy_town: Callable[[], Path],
) -> None:
    town = copy_town()
    proc = DaemonProcess(town).wait_ready()
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(town / ".gastownd" / "gastownd.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with proc.client(timeout_s=30) as client:
            with pytest.raises(RequestRejected) as refused:
                client.session_start(OTHER_SESSION, "gastown/crew/max", cwd="/tmp")
            assert refused.value.code == "io_error", refused.value
            assert "(database is locked); nothing was changed" in refused.value.message
            client.ping()
            holder.communicate("")  # the other process lets go
            with pytest.raises(RequestRejected):
                client.wisp(OTHER_SESSION)  # the refused start left nothing
            assert client.session_start(OTHER_SESSION, "gastown/crew/max", cwd="/tmp").created
    finally:
        holder.kill()
        holder.wait()
        code = proc.terminate()
    assert code == 0, proc.log()
    assert "Traceback" not in (town / "daemon.log").read_text(errors="replace"), proc.log()


def test_a_store_locked_at_start_is_a_one_line_refusal_then_a_start(
    copy_town: Callable[[], Path],
) -> None:
    town = copy_town()
    line = {"ts": "2026-12-01T10:00:00Z", "source": "gt", "type": "session_start"}
    line |= {"actor": "gastown/crew/max", "payload": {"session_id": OTHER_SESSION}}
    with open(town / ".events.jsonl", "ab") as log:  # a line to record at the next start
        log.write(json.dumps(line).encode() + b"\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(town / ".gastownd" / "gastownd.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        refused = refused_start(town)
    finally:
        holder.communicate("")
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        f"gastownd: {town / '.gastownd' / 'gastownd.db'}: cannot recover the session store: "
        "the session store could not be written (database is locked); nothing was changed"
    )
    assert "Traceback" not in refused.stderr
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert any(row.session_id == OTHER_SESSION for row in client.sessions().sessions)
    finally:
        assert proc.terminate() == 0, proc.log()


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_an_instance_lock_that_is_no_regular_file_is_refused_and_what_it_names_kept(
    copy_town: Callable[[], Path], kind: str
) -> None:
    town = copy_town()
    lock = town / ".gastownd" / "gastownd.lock"
    precious = town / "notes.txt"
    precious.write_text("the user's notes\n")
    lock.unlink()
    if kind == "symlink":
        lock.symlink_to(precious)  # the pid written into the lock replaced the notes
    else:
        os.mkfifo(lock)  # exit 70, a traceback
    refused = refused_start(town)
    assert refused.returncode == 1, refused.stderr
    reason = "it is a symlink" if kind == "symlink" else "not a regular file"
    assert refused.stderr.splitlines()[-1] == (
        f"gastownd: {lock}: cannot open the instance lock: {reason}; remove it and retry"
    )
    assert precious.read_text() == "the user's notes\n"
    lock.unlink()
    assert served(town)[1] > 0


def test_an_archive_day_that_cannot_be_read_is_named_in_the_answer(
    copy_town: Callable[[], Path], baseline: tuple[int, int]
) -> None:
    town = copy_town()
    day_file = state_file(town, "archive day file")
    day = day_file.name[len("events-") : -len(".jsonl.gz")]
    day_file.write_bytes(b"\0" * day_file.stat().st_size)  # a bad disk's zeroed blocks
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client(timeout_s=QUERY_TIMEOUT_S) as client:
            answer = client.query(limit=100_000, archive=True)
            assert answer.archive_unreadable == [day]
            assert len(answer.events) < baseline[0]
            assert client.query(limit=100_000).archive_unreadable is None  # live only
        shown = run_ctl(town, "events", "--archive", "--oldest-first", "-n", "5")
    finally:
        assert proc.terminate() == 0, proc.log()
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == (
        f"gastownctl: partial answer: the archive's files of {day} could not be read "
        "(see the daemon's log); their lines are missing\n"
    )


def log_events(town: Path) -> list[str]:
    rows = (town / "daemon.log").read_text(errors="replace").splitlines()
    return [json.loads(row)["event"] for row in rows if row.startswith("{")]


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_session_store_is_said_not_silently_replaced(
    copy_town: Callable[[], Path], how: str
) -> None:
    town = copy_town()
    store = town / ".gastownd" / "gastownd.db"
    if how == "deleted":
        store.unlink()
    else:
        store.write_bytes(b"")  # SQLite takes a 0-byte file for a new database
    served(town)
    assert log_events(town).count("session_store_recreated") == 1
    (town / "daemon.log").unlink()
    served(town)  # the store made then is this town's from now on
    assert "session_store_recreated" not in log_events(town)


def test_a_first_start_says_nothing_of_a_lost_store(town: Path) -> None:
    served(town)
    assert "session_store_recreated" not in log_events(town)


def test_the_recorder_and_the_reaper_outlive_a_locked_store_and_catch_up_once_it_is_free(
    copy_town: Callable[[], Path],
) -> None:
    town = copy_town()
    with open(town / "settings" / "gastownd.toml", "a") as settings:
        settings.write('[wisps]\nidle_timeout = "2s"\nreap_interval = "1s"\n')
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            client.session_start(NEW, "gastown/crew/max", cwd="/tmp")
            holder = subprocess.Popen(
                [sys.executable, "-c", LOCK_HOLDER, str(town / ".gastownd" / "gastownd.db")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            line = {"ts": "2026-12-01T10:00:00Z", "source": "gt", "type": "session_start"}
            gt_append(town, line | {"actor": "gastown/crew/ann", "payload": {"session_id": LOGGED}})
            # Past SQLite's 5 s busy timeout: the recorder's write (the logged line) and the
            # reaper's (NEW, idle for 2 s) both failed; either crashed the daemon (exit 70).
            time.sleep(8)
            assert proc.proc.poll() is None, proc.log()
            holder.communicate("")
            deadline = time.monotonic() + 10
            while not (
                client.wisp(NEW).state == "abandoned"
                and any(row.session_id == LOGGED for row in client.sessions().sessions)
            ):
                assert time.monotonic() < deadline, "never reaped or never recorded"
                time.sleep(0.1)
    finally:
        code = proc.terminate()
    assert code == 0, proc.log()
    assert "Traceback" not in (town / "daemon.log").read_text(errors="replace"), proc.log()
    assert "session_store_write_failed" in log_events(town)
