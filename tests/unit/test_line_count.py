"""Counting a stretch's lines in two processes gives the count of one, wherever the cut
falls, and a helper that fails costs time, never a wrong count."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gastownd.eventlog import line_count


@pytest.fixture
def two_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(line_count, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)


@pytest.fixture
def log_fd(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    data = b"".join(b'{"i":%d,"pad":"%s"}\n' % (i, b"x" * (i % 37)) for i in range(3000))
    data += b"a line cut short"
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


# The fixtures hold for every example: the same file, the same two-process setting.
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.tuples(st.floats(0, 1), st.floats(0, 1)))
def test_two_halves_count_as_one(
    two_processes: None, log_fd: tuple[int, bytes], cuts: tuple[float, float]
) -> None:
    fd, data = log_fd
    start, end = sorted(int(cut * (len(data) + 10)) for cut in cuts)
    assert line_count.count_lines(fd, start, end) == data[start:end].count(b"\n")


def test_a_helper_that_fails_is_counted_here(
    two_processes: None, log_fd: tuple[int, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    fd, data = log_fd

    def broken(fd: int, start: int, end: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["false"], stdout=subprocess.PIPE)

    monkeypatch.setattr(line_count, "_spawn", broken)
    assert line_count.count_lines(fd, 0, len(data)) == 3000
    monkeypatch.setattr(line_count, "_spawn", lambda fd, start, end: None)
    assert line_count.count_lines(fd, 0, len(data)) == 3000


def test_the_helper_process_counts_its_half(log_fd: tuple[int, bytes]) -> None:
    fd, data = log_fd
    helper = line_count._spawn(fd, 10, len(data) // 2)
    assert helper is not None
    assert line_count._collect(helper) == data[10 : len(data) // 2].count(b"\n")
