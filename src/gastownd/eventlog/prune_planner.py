"""The prune's worker process: ``python -m gastownd.eventlog.prune_planner SOURCE_FD``.

It reads from stdin the index of the lines to plan (a ``PlanRequest`` line, then the columns,
as a snapshot holds them), writes to stdout the plan (a ``PlanHeader`` line, then arrays and
the kept index's columns), then waits for an order: an ``ArchiveOrder`` line makes it write
the archive batch of the lines it removes, read through ``SOURCE_FD`` (``ArchiveDone``);
the end of its input ends it. The daemon's side is ``prune_plan``.

It imports no event loop: it starts, plans and ends while the daemon serves.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import msgspec

from gastownd.core.index import EventIndex, IndexHeader
from gastownd.core.retention import RetentionPolicy, drive, plan_prune_steps
from gastownd.eventlog.archive_files import Archive, crash_here_for_tests, days_of
from gastownd.eventlog.logstate import runs_of

# Typecode of the position and offset arrays the plan carries (64-bit, as the index's).
WIDE = "q"
# How often the worker checks that the daemon still runs.
ORPHAN_POLL_S = 0.01


class PlanRequest(msgspec.Struct, kw_only=True):
    """What the worker plans: the first ``index.count`` lines, under this policy."""

    index: IndexHeader
    sizes: list[int]  # of the index's blobs, which follow the header line
    now_s: float
    default_ttl_s: float
    ttls_s: dict[str, float]
    min_retain_count: int
    protect_from: int | None  # lines at this position and after are kept (see ``prune``)
    select: bool  # build the kept lines' index (not for a dry run)


class PlanHeader(msgspec.Struct, kw_only=True):
    removed_by_type: dict[str, int]
    kept_lines: int
    kept_bytes: int
    days: dict[str, int]  # removed lines per UTC day
    removed_max: int  # the highest seq removed (-1: none)
    kept: IndexHeader | None  # the kept lines' index, when asked and lines go
    # Blobs after the header line: removed positions, range starts, range lengths, runs
    # (flat pairs), then the kept index's columns.
    sizes: list[int]


class ArchiveOrder(msgspec.Struct, kw_only=True):
    """Go ahead: write the archive batch (``Archive.write``) of the removed lines."""

    folder: str
    epoch: int
    commit_path: str


class ArchiveDone(msgspec.Struct, kw_only=True):
    lines: int = 0
    error: str | None = None  # the OSError that stopped it (its batch is then undone)
    errno: int = 0


def make_plan(
    index: EventIndex, request: PlanRequest
) -> tuple[PlanHeader, list[bytes], array[int]]:
    """The plan for every line of ``index`` (what the worker computes): its header, its
    blobs, and the removed positions."""
    count = len(index)
    policy = RetentionPolicy(
        default_ttl_s=request.default_ttl_s,
        ttls_s=request.ttls_s,
        min_retain_count=request.min_retain_count,
    )
    decided = drive(
        plan_prune_steps(
            index.types,
            index.type_names,
            index.ts,
            count,
            request.now_s,
            policy,
            index.by_type,
            request.protect_from,
        )
    )
    starts, lengths = kept_ranges(index, decided.keep)
    removed = removed_positions(decided.keep, count)
    kept = index.select(decided.keep) if request.select and removed else None
    runs = array(WIDE, itertools.chain.from_iterable(runs_of(kept.seqs))) if kept else array(WIDE)
    blobs = [removed.tobytes(), starts.tobytes(), lengths.tobytes(), runs.tobytes()]
    kept_header = None
    if kept is not None:
        kept_header, kept_blobs = kept.export()
        blobs += kept_blobs
    header = PlanHeader(
        removed_by_type=dict(decided.removed),
        kept_lines=len(decided.keep),
        kept_bytes=sum(lengths),
        days=days_of(index, removed),
        removed_max=index.seqs[removed[-1]] if removed else -1,
        kept=kept_header,
        sizes=[len(blob) for blob in blobs],
    )
    return header, blobs, removed


def kept_ranges(index: EventIndex, positions: Sequence[int]) -> tuple[array[int], array[int]]:
    """The kept lines as byte ranges (starts, lengths), consecutive lines merged."""
    starts, lengths = array(WIDE), array(WIDE)
    start = end = -1
    offsets = index.offsets
    for position in positions:
        offset = offsets[position]
        length = index.length(position)
        if offset == end:
            end += length
            continue
        if start >= 0:
            starts.append(start)
            lengths.append(end - start)
        start, end = offset, offset + length
    if start >= 0:
        starts.append(start)
        lengths.append(end - start)
    return starts, lengths


def removed_positions(keep: Sequence[int], count: int) -> array[int]:
    """The positions below ``count`` that ``keep`` (sorted) leaves out."""
    removed = array(WIDE)
    previous = -1
    for kept in itertools.chain(keep, (count,)):
        if kept > previous + 1:
            removed.extend(range(previous + 1, min(kept, count)))
        previous = kept
    return removed


def read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("the request is cut short")
    return data


def _exit_with(parent: int) -> None:
    """An orphan must not write on: the next daemon may be undoing its batch."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_S)
    os._exit(1)


def main(argv: list[str]) -> int:
    """The worker: read the request, write the plan; then, if told to, the archive batch."""
    os.nice(10)  # background work: the daemon's threads come first
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    source_fd = int(argv[0])
    answers = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed or logged stays out of the answers
    orders = sys.stdin.buffer
    request = msgspec.json.decode(orders.readline(), type=PlanRequest)
    blobs = [read_exactly(orders, size) for size in request.sizes]
    index = EventIndex.restore(request.index, blobs)
    del blobs
    header, out, removed = make_plan(index, request)
    crash_here_for_tests("planner")
    answers.write(msgspec.json.encode(header) + b"\n")
    for blob in out:
        answers.write(blob)
    answers.flush()
    del out
    line = orders.readline()
    if not line:
        return 0  # no archive: the prune stopped there
    order = msgspec.json.decode(line, type=ArchiveOrder)
    try:
        report = Archive(Path(order.folder)).write(
            source_fd,
            index,
            removed,
            (len(index), index.end),
            header.days,
            order.epoch,
            Path(order.commit_path),
        )
        done = ArchiveDone(lines=report.lines)
    except OSError as exc:
        done = ArchiveDone(error=exc.strerror or str(exc), errno=exc.errno or 0)
    answers.write(msgspec.json.encode(done) + b"\n")
    answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
