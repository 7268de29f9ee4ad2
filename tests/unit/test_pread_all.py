"""``pread_all``: one pread(2) returns at most about 2 GiB on Linux, so a larger read loops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gastownd.eventlog import logstate
from gastownd.eventlog.logstate import pread_all


@pytest.fixture
def capped_pread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux's cap, scaled down to 64 bytes (the tail signature): a small file plays one
    over 2 GiB."""
    real = os.pread

    def pread(fd: int, length: int, offset: int) -> bytes:
        return real(fd, min(length, 64), offset)

    monkeypatch.setattr(logstate, "MAX_SINGLE_READ", 64)
    monkeypatch.setattr(os, "pread", pread)


@pytest.mark.usefixtures("capped_pread")
@pytest.mark.parametrize(
    ("length", "offset"), [(0, 0), (5, 0), (64, 3), (65, 0), (150, 2), (300, 0)]
)
def test_reads_everything_asked_up_to_the_end(tmp_path: Path, length: int, offset: int) -> None:
    data = bytes(range(200))
    path = tmp_path / "log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert pread_all(fd, length, offset) == data[offset : offset + length]
    finally:
        os.close(fd)


def test_the_cap_is_linuxs() -> None:
    assert logstate.MAX_SINGLE_READ == 0x7FFFF000


@pytest.mark.usefixtures("capped_pread")
def test_a_rewritten_log_larger_than_one_read_is_read_whole(tmp_path: Path) -> None:
    from gastownd.core.index import EventIndex
    from gastownd.eventlog.log_file import LogFile

    path = tmp_path / ".events.jsonl"
    file = LogFile(path, tmp_path / ".events.jsonl.lock", tmp_path / "quarantine")
    path.write_bytes(b'{"type":"old"}\n')
    file.open_lock()
    try:
        with file.flocked():
            file.remember(file.open())
        lines = b"".join(b'{"type":"t","n":%d}\n' % n for n in range(20))
        path.write_bytes(lines)  # rewritten behind the daemon's back
        with file.flocked():
            observed = file.observe(EventIndex)
        assert observed.rewrite is not None
        assert observed.rewrite.data == lines
        assert len(observed.rewrite.index) == 20
    finally:
        file.close()
