"""Cold indexing in worker processes gives the index a single pass would."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from gastownd.core.index import EventIndex
from gastownd.eventlog.indexer import _collect, _PartHeader, index_here, index_range


def write_log(path: Path, lines: int) -> None:
    rows = []
    for n in range(lines):
        if n % 97 == 13:
            rows.append(b"not json at all")
            continue
        event = {
            "ts": f"2026-01-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{(n * 7) % 60:02d}Z",
            "source": "gt",
            "type": ["nudge", "sling", "session_start", "mail"][n % 4],
            "actor": f"gastown/crew/a{n % 9}",
            "payload": {"session_id": f"s{n % 31}"} if n % 3 else {"bead": n},
            "visibility": "feed",
        }
        rows.append(json.dumps(event).encode())
    path.write_bytes(b"\n".join(rows) + b"\n")


@pytest.mark.parametrize("workers", [2, 3])
def test_parts_indexed_by_workers_make_the_same_index(tmp_path: Path, workers: int) -> None:
    log = tmp_path / "events.jsonl"
    write_log(log, 3000)
    fd = os.open(log, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        serial = index_here(fd, 0, size, itertools.count(100))
        parallel = index_range(fd, 0, size, itertools.count(100), parallel_min=0, workers=workers)
        head = EventIndex.restore(*index_here(fd, 0, size // 2, itertools.count(100)).export())
        tail_start = head.end
        head.append_index(
            index_range(
                fd,
                tail_start,
                size,
                itertools.count(100 + len(head)),
                parallel_min=0,
                workers=workers,
            )
        )
    finally:
        os.close(fd)
    assert parallel.export() == serial.export()
    assert head.export() == serial.export()
    assert serial.malformed == 31


# ------------------------------------------------------------------ lines too long to hold

import tempfile  # noqa: E402
import zlib  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gastownd.eventlog.indexer import LongLine, whole_lines  # noqa: E402

_GOOD = b'{"ts":"2026-11-25T00:00:00Z","type":"t","actor":"a"}'


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 60), max_size=12),
    chunk=st.integers(1, 40),
    longest=st.integers(1, 30),
    torn=st.binary(max_size=5).map(lambda b: b.replace(b"\n", b"")),
)
def test_whole_lines_cover_the_file_and_describe_long_lines(
    lengths: list[int], chunk: int, longest: int, torn: bytes
) -> None:
    lines = [(b"x" * n) if n % 3 else _GOOD[: max(1, n)] for n in lengths]
    data = b"".join(line + b"\n" for line in lines) + torn
    with tempfile.TemporaryFile() as handle:
        handle.write(data)
        handle.flush()
        fd = handle.fileno()
        parts = list(whole_lines(fd, 0, len(data), chunk, longest))
    offset = 0
    for part in parts:
        if isinstance(part, LongLine):
            assert part.offset == offset and part.length > longest
            line = data[offset : offset + part.length]
            assert line.endswith(b"\n") and line.count(b"\n") == 1
            assert part.checksum == zlib.crc32(line[:-1])
            offset += part.length
        else:
            assert data[offset : offset + len(part)] == part and part.endswith(b"\n")
            offset += len(part)
    assert offset == len(data) - len(torn)


def test_a_long_line_is_indexed_as_add_lines_would(tmp_path: Path) -> None:
    """The same index whether a line longer than a read (2 MiB) is read whole or read past
    in pieces."""
    log = tmp_path / "events.jsonl"
    long_line = _GOOD[:-1] + b',"p":"' + b"x" * (20 << 20) + b'"}'
    data = _GOOD + b"\n" + long_line + b"\n" + _GOOD + b"\n"
    log.write_bytes(data)
    fd = os.open(log, os.O_RDONLY)
    try:
        streamed = index_here(fd, 0, len(data), itertools.count())
    finally:
        os.close(fd)
    whole = EventIndex()
    whole.add_lines(data, 0, itertools.count())
    for name in EventIndex.COLUMNS:
        assert getattr(streamed, name) == getattr(whole, name), name
    assert streamed.malformed == whole.malformed == 1 and streamed.end == whole.end


def _worker_writing(output: bytes) -> subprocess.Popen[bytes]:
    """A real process that writes ``output`` as a worker's part would be written."""
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


@pytest.mark.parametrize("cut", ["none", "short", "header"])
def test_a_part_is_read_column_by_column_and_a_cut_one_refused(tmp_path: Path, cut: str) -> None:
    """The daemon reads a worker's part straight into its columns; a part cut short (a
    worker killed mid-write) is refused, never half taken, and indexed here instead."""
    log = tmp_path / "events.jsonl"
    write_log(log, 500)
    fd = os.open(log, os.O_RDONLY)
    try:
        expected = index_here(fd, 0, os.fstat(fd).st_size, itertools.count())
    finally:
        os.close(fd)
    header, blobs = expected.export()
    sizes = [len(blob) for blob in blobs]
    head = msgspec.json.encode(_PartHeader(index=header, sizes=sizes)) + b"\n"
    output = head + b"".join(blobs)
    output = {"none": output, "short": output[:-5], "header": head[:-9] + b"\n"}[cut]
    worker = _worker_writing(output)
    assert worker.stdin is not None
    worker.stdin.write(output)
    worker.stdin.close()
    part = _collect(worker)
    if cut == "none":
        assert part is not None and part.export() == expected.export()
    else:
        assert part is None


# ------------------------------------------------------------------ glibc's mmap threshold


def test_only_a_long_stretch_sets_the_mmap_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short stretch (an empty or small town's start) makes no block worth mapping on its
    own, and spares the start ctypes; one of ``MMAP_THRESHOLD`` or more sets it."""
    from gastownd.eventlog import indexer

    calls: list[int] = []
    monkeypatch.setattr(indexer, "fix_mmap_threshold", lambda: calls.append(1))
    log = tmp_path / "events.jsonl"
    line = b'{"ts":"2026-01-01T00:00:00Z","source":"gt","type":"nudge","actor":"a"}\n'
    log.write_bytes(line * (indexer.MMAP_THRESHOLD // len(line) + 1))
    fd = os.open(log, os.O_RDONLY)
    try:
        index_range(fd, 0, len(line) * 10, itertools.count())
        assert calls == []
        index_range(fd, 0, os.fstat(fd).st_size, itertools.count(), workers=1)
        assert calls == [1]
    finally:
        os.close(fd)
