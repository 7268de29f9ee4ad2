"""The prune's plan as its worker process makes it: the same decisions as the plan made in
place, the index sent in pieces exactly as ``export`` lays it out, and a real worker's
plan and archive batch."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gastownd.core.index import EventIndex
from gastownd.core.retention import DAY_S, RetentionPolicy, drive, plan_prune_steps
from gastownd.eventlog.archive_files import Archive, days_of
from gastownd.eventlog.prune_plan import (
    POSTINGS_SLICE,
    _blob_sizes,
    _index_in_pieces,
    prune_worker,
)
from gastownd.eventlog.prune_planner import PlanRequest, make_plan

NOW = 1_780_000_000
TYPES = ["nudge", "mail", "patrol_started", "session_start", "done"]

line_strategy = st.one_of(
    st.tuples(st.sampled_from(TYPES), st.integers(0, 40 * DAY_S), st.integers(0, 3)),
    st.just(None),  # a malformed line, always kept
)


def render(spec: tuple[str, int, int] | None, i: int) -> bytes:
    if spec is None:
        return b"not json %d\n" % i
    event_type, age_s, session = spec
    stamp = NOW - age_s
    event = {
        "ts": f"{_iso(stamp)}",
        "source": "gt",
        "type": event_type,
        "actor": f"gastown/crew/a{i % 3}",
        "payload": {"i": i, "session_id": f"s{session}"},
        "visibility": "feed",
    }
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _iso(stamp: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def index_of(data: bytes) -> EventIndex:
    index = EventIndex()
    index.add_lines(data, 0, itertools.count(100))
    return index


def request_for(
    index: EventIndex, count: int, policy: RetentionPolicy, protect_from: int | None
) -> tuple[PlanRequest, EventIndex]:
    """The request the daemon sends, and the index the worker restores from it."""
    end = index.offsets[count] if count < len(index) else index.end
    header, pieces = anyio.run(_index_in_pieces, index, count, end)
    sent = b"".join(piece.tobytes() for piece in pieces)
    sizes = _blob_sizes(header)
    blobs, at = [], 0
    for size in sizes:
        blobs.append(sent[at : at + size])
        at += size
    assert at == len(sent)
    request = PlanRequest(
        index=header,
        sizes=sizes,
        now_s=NOW,
        default_ttl_s=policy.default_ttl_s,
        ttls_s=dict(policy.ttls_s),
        min_retain_count=policy.min_retain_count,
        protect_from=protect_from,
        select=True,
    )
    return request, EventIndex.restore(header, blobs)


@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(line_strategy, min_size=0, max_size=60),
    cut=st.integers(0, 60),
    protect=st.one_of(st.none(), st.integers(0, 60)),
    min_retain=st.integers(0, 3),
)
def test_the_worker_decides_as_the_plan_made_in_place(
    specs: list[tuple[str, int, int] | None], cut: int, protect: int | None, min_retain: int
) -> None:
    data = b"".join(render(spec, i) for i, spec in enumerate(specs))
    index = index_of(data)
    count = min(cut, len(index))
    policy = RetentionPolicy(min_retain_count=min_retain)
    request, restored = request_for(index, count, policy, protect)
    header, blobs, removed = make_plan(restored, request)

    expected = drive(
        plan_prune_steps(
            index.types, index.type_names, index.ts, count, NOW, policy, index.by_type, protect
        )
    )
    assert header.removed_by_type == dict(expected.removed)
    assert header.kept_lines == len(expected.keep)
    gone = [p for p in range(count) if p not in set(expected.keep)]
    assert list(removed) == gone
    assert header.days == days_of(index, gone)
    assert header.removed_max == (index.seqs[gone[-1]] if gone else -1)
    lines = data.splitlines(keepends=True)
    kept_bytes = b"".join(lines[p] for p in expected.keep)
    assert header.kept_bytes == len(kept_bytes)
    starts, lengths = (_wide(blob) for blob in blobs[1:3])
    assert b"".join(data[s : s + n] for s, n in zip(starts, lengths, strict=True)) == kept_bytes
    if header.kept is None:
        assert not gone
        return
    kept = EventIndex.restore(header.kept, blobs[4:])
    in_place = index.select(expected.keep)
    for column in EventIndex.COLUMNS:
        assert getattr(kept, column) == getattr(in_place, column), column
    assert (kept.type_names, kept.end, kept.malformed) == (
        in_place.type_names,
        in_place.end,
        in_place.malformed,
    )


def _wide(blob: bytes) -> list[int]:
    from array import array

    values = array("q")
    values.frombytes(blob)
    return list(values)


@pytest.mark.anyio
async def test_the_index_goes_out_in_pieces_exactly_as_export_lays_it_out() -> None:
    data = b"".join(render((TYPES[i % 5], i * 600, i % 7), i) for i in range(5000))
    index = index_of(data + render(None, 5000))
    for count in (0, 1, 4321, len(index)):
        end = index.offsets[count] if count < len(index) else index.end
        header, pieces = await _index_in_pieces(index, count, end)
        exported_header, exported = index.export(count, end)
        assert header == exported_header
        assert b"".join(piece.tobytes() for piece in pieces) == b"".join(exported)
        assert _blob_sizes(header) == [len(blob) for blob in exported]


@pytest.mark.anyio
async def test_lines_and_names_added_while_the_index_is_cut_are_left_out() -> None:
    """The posting lists are cut a slice at a time, the loop running between slices: what
    it appends meanwhile (new sessions, new types, more lines of old ones) is not sent."""
    sessions = 3 * POSTINGS_SLICE
    data = b"".join(render((TYPES[i % 5], i, i), i) for i in range(sessions))
    index = index_of(data)
    count, end = len(index), index.end
    expected_header, expected = index.export(count, end)
    expected_bytes = b"".join(expected)
    appended = 0

    async def append_meanwhile() -> None:
        nonlocal appended
        for i in range(sessions, sessions + 50):
            spec = ("brand_new_type", i, i) if i % 2 else (TYPES[0], i, i % 5)
            index.add_lines(render(spec, i), index.end, itertools.count(10_000 + i))
            appended += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(append_meanwhile)
        header, pieces = await _index_in_pieces(index, count, end)
    assert appended == 50 and len(index) == count + 50
    assert len(index.session_names) > len(header.session_names)  # some came meanwhile
    assert header == expected_header
    assert b"".join(piece.tobytes() for piece in pieces) == expected_bytes


@pytest.mark.anyio
async def test_a_real_worker_plans_then_writes_the_archive_batch(tmp_path: Path) -> None:
    specs = [(TYPES[i % 5], (i % 20) * DAY_S // 2, i % 4) for i in range(400)]
    data = b"".join(render(spec, i) for i, spec in enumerate(specs))
    log = tmp_path / "events.jsonl"
    log.write_bytes(data)
    index = index_of(data)
    fd = os.open(log, os.O_RDONLY)
    try:
        async with prune_worker(fd) as worker:
            plan = await worker.plan(
                index, len(index), index.end, NOW, RetentionPolicy(), protect_from=None, select=True
            )
            assert 0 < plan.removed_total < len(index)
            folder = tmp_path / "archive"
            lines = await worker.archive(folder, 7, tmp_path / "new-log")
    finally:
        os.close(fd)
    assert lines == plan.removed_total == len(plan.removed)
    all_lines = data.splitlines()
    archive = Archive(folder)
    archived = [line for member in archive.catalogue() for _, line in archive.read(member)]
    assert sorted(archived) == sorted(all_lines[p] for p in plan.removed)
    assert plan.kept is not None and len(plan.kept) == plan.kept_lines
    # The journal stays until the prune commits (renames its new log): still pending here.
    assert (folder / "pending.json").exists()
