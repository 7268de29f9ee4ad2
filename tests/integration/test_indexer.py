"""Cold indexing in worker processes gives the index a single pass would."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from gastownd.core.index import EventIndex
from gastownd.indexer import index_here, index_range


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
