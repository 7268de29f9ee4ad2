"""A log rewritten behind the daemon's back is read and matched without the writers' lock:
``gt`` appends meanwhile, and what it appended is indexed after the rewrite, exactly once."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gastownd.core.index import EventIndex
from gastownd.eventlog.log_file import LogFile, Observation


def lines(name: str, count: int) -> bytes:
    return b"".join(
        b'{"ts":"2026-12-05T05:00:00Z","type":"%s","n":%d}\n' % (name.encode(), n)
        for n in range(count)
    )


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[LogFile]:
    path = tmp_path / ".events.jsonl"
    path.write_bytes(lines("old", 3))
    file = LogFile(path, tmp_path / ".events.jsonl.lock", tmp_path / "quarantine")
    file.open_lock()
    with file.flocked():
        file.remember(file.open())
    yield file
    file.close()


def as_gt(file: LogFile, change: Callable[[Path], None]) -> bool:
    """Take the writers' lock as ``gt`` does, without waiting; if it is free, ``change``."""
    lock = os.open(file.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        change(file.path)
    finally:
        os.close(lock)
    return True


def observe_while(
    file: LogFile, monkeypatch: pytest.MonkeyPatch, change: Callable[[Path], None]
) -> tuple[Observation, list[bool]]:
    """``file.observe`` (lock held), with ``gt`` trying ``change`` while the lines are matched."""
    real = EventIndex.rematch
    lock_was_free: list[bool] = []

    def rematch(index: EventIndex, data: bytes) -> tuple[EventIndex, int, list[int]]:
        if not lock_was_free:
            lock_was_free.append(as_gt(file, change))
        return real(index, data)

    monkeypatch.setattr(EventIndex, "rematch", rematch)
    with file.flocked():
        return file.observe(EventIndex), lock_was_free


def append(data: bytes) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        with open(path, "ab") as log:
            log.write(data)

    return change


def test_gt_appends_while_the_rewrite_is_matched(
    log_file: LogFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    rewritten = lines("new", 200)
    log_file.path.write_bytes(rewritten)
    meanwhile = lines("gt", 2)
    observed, lock_was_free = observe_while(log_file, monkeypatch, append(meanwhile + b'{"torn'))
    assert lock_was_free == [True]
    assert observed.rewrite is not None
    assert observed.rewrite.data == rewritten
    assert len(observed.rewrite.index) == 200
    assert observed.appended == [meanwhile]  # the torn fragment was cut (and saved)
    assert log_file.path.read_bytes() == rewritten + meanwhile
    assert log_file.end == len(rewritten + meanwhile)
    assert log_file.quarantined == 1


def test_rewritten_again_meanwhile_is_read_again_under_the_lock(
    log_file: LogFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_file.path.write_bytes(lines("new", 200))
    again = lines("again", 5)

    def rewrite(path: Path) -> None:
        path.write_bytes(again)

    observed, lock_was_free = observe_while(log_file, monkeypatch, rewrite)
    assert lock_was_free == [True]
    assert observed.rewrite is not None
    assert observed.rewrite.data == again
    assert len(observed.rewrite.index) == 5
    assert observed.appended == []
    assert log_file.end == len(again)


def test_replaced_again_meanwhile_is_read_again_then_seen_as_replaced(
    log_file: LogFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    replacement = log_file.path.with_suffix(".new")
    replacement.write_bytes(lines("new", 50))
    os.replace(replacement, log_file.path)
    other = lines("other", 4)

    def replace(path: Path) -> None:
        newer = path.with_suffix(".newer")
        newer.write_bytes(other)
        os.replace(newer, path)

    observed, lock_was_free = observe_while(log_file, monkeypatch, replace)
    assert lock_was_free == [True]
    assert observed.rewrite is not None
    assert len(observed.rewrite.index) == 50  # the file it opened, read under the lock
    with log_file.flocked():
        again = log_file.observe(EventIndex)
    assert again.rewrite is not None
    assert again.rewrite.data == other
