"""A prune's plan, made in a worker process: which lines go, the byte ranges of those that
stay, and the index of the kept lines as the new file lays them out. This is the daemon's
side; the worker is ``prune_planner``.

Planning a million lines is seconds of Python. On the event loop, even in
slices, and in a thread, which holds the GIL while it runs Python, it delays
every request (an emit needs the GIL several times on its way). So the worker
does it, and the daemon only copies bytes: the index out, the plan in, in
worker threads that spend that time in system calls and ``memcpy``.

A worker that fails fails the prune, which leaves the log as it was.
"""

from __future__ import annotations

import contextlib
import gc
import subprocess
import sys
import time
from array import array
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec

from gastownd.core import index_snapshot
from gastownd.core.index import EventIndex, IndexHeader
from gastownd.core.index_columns import POSTING
from gastownd.core.index_postings import below
from gastownd.core.retention import RetentionPolicy
from gastownd.eventlog.prune_planner import (
    WIDE,
    ArchiveDone,
    ArchiveOrder,
    PlanHeader,
    PlanRequest,
    read_exactly,
)

A = TypeVar("A")
R = TypeVar("R")

# Runs turned into tuples at a time in the daemon's thread, which then lets the loop run.
RUNS_CHUNK = 8192
# How long a worker that was told to stop may take to (it only waits for its orders).
END_WAIT_S = 5.0
# Entries of a column copied at a time when the index is sent to the worker.
SEND_CHUNK = 1 << 16
# Posting lists cut at the planned count between two turns of the loop (about 1 ms).
POSTINGS_SLICE = 2048
PAUSE_S = 0.001


@dataclass(frozen=True)
class Plan:
    """A prune's plan, as the daemon holds it."""

    removed_by_type: dict[str, int]
    kept_lines: int
    kept_bytes: int
    removed: array[int]  # positions, ascending
    range_starts: array[int]  # the kept bytes: ranges of consecutive kept lines
    range_lengths: array[int]
    days: dict[str, int]
    removed_max: int
    kept: EventIndex | None
    runs: list[tuple[int, int]]  # the kept lines' seqs (see ``SeqMap.runs``)

    @property
    def removed_total(self) -> int:
        return sum(self.removed_by_type.values())


# ---------------------------------------------------------------- in the daemon


class PruneWorker:
    """The worker process of one prune: it plans, then, if the prune goes ahead, writes the
    archive batch of the lines it removes (it holds their index already)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    async def plan(
        self,
        index: EventIndex,
        count: int,
        end: int,
        now_s: float,
        policy: RetentionPolicy,
        *,
        protect_from: int | None,
        select: bool,
    ) -> Plan:
        """The plan for ``index``'s first ``count`` lines, which end at byte ``end`` (appends
        never change them)."""
        header, pieces = await _index_in_pieces(index, count, end)
        request = PlanRequest(
            index=header,
            sizes=_blob_sizes(header),
            now_s=now_s,
            default_ttl_s=policy.default_ttl_s,
            ttls_s=dict(policy.ttls_s),
            min_retain_count=policy.min_retain_count,
            protect_from=protect_from,
            select=select,
        )
        answer, blobs = await self._in_thread(_ask_plan, _request_pieces(request, pieces))
        return await anyio.to_thread.run_sync(_read_plan, answer, blobs)

    async def archive(self, folder: Path, epoch: int, commit_path: Path) -> int:
        """Write the archive batch of the removed lines (``Archive.write``: durable when it
        returns, undone by ``Archive.rollback``); returns the number of lines."""
        order = ArchiveOrder(folder=str(folder), epoch=epoch, commit_path=str(commit_path))
        return await self._in_thread(_ask_archive, order)

    async def _in_thread(self, ask: Callable[[subprocess.Popen[bytes], A], R], arg: A) -> R:
        try:
            # Abandoned when the prune is cancelled: ending the worker ends the thread.
            return await anyio.to_thread.run_sync(ask, self._process, arg, abandon_on_cancel=True)
        except BaseException:
            # Gone before anyone undoes what it may have written, or retries.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_end, self._process, True)
            raise


@asynccontextmanager
async def prune_worker(source_fd: int) -> AsyncIterator[PruneWorker]:
    """A worker that reads the log's lines through ``source_fd`` (the file planned from);
    ended on the way out."""
    process = await anyio.to_thread.run_sync(_spawn, source_fd)
    try:
        yield PruneWorker(process)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_end, process, False)


def _request_pieces(
    request: PlanRequest, pieces: Iterator[array[int]]
) -> Iterator[bytes | array[int]]:
    yield msgspec.json.encode(request) + b"\n"
    yield from pieces


async def _index_in_pieces(
    index: EventIndex, count: int, end: int
) -> tuple[IndexHeader, Iterator[array[int]]]:
    """What ``index.export(count, end)`` gives (the snapshot's format), as a header and the
    blobs' bytes in pieces of at most ``SEND_CHUNK`` entries, each copied when sent: one
    copy of a whole column would hold the GIL for milliseconds.

    The posting lists are cut at ``count`` a slice at a time, letting the loop run between
    slices (a log of tens of thousands of sessions would otherwise stall it for as many
    milliseconds); lines appended meanwhile add only positions past ``count``, and names
    interned meanwhile are left out (no line below ``count`` uses them)."""
    columns = [getattr(index, name) for name in EventIndex.COLUMNS]
    type_postings = await _postings_below(index.by_type, len(index.type_names), count)
    session_postings = await _postings_below(index.by_session, len(index.session_names), count)
    header = index_snapshot.header(
        index,
        index,
        count,
        end,
        [len(p) for p in type_postings],
        [len(p) for p in session_postings],
    )

    def pieces() -> Iterator[array[int]]:
        for column in columns:
            for start in range(0, count, SEND_CHUNK):
                yield column[start : min(count, start + SEND_CHUNK)]
        yield from type_postings
        yield from session_postings

    return header, pieces()


async def _postings_below(
    postings: dict[int, array[int]], names: int, count: int
) -> list[array[int]]:
    """The posting lists of names ``0 .. names - 1``, cut at ``count``, ``POSTINGS_SLICE``
    names between two turns of the loop."""
    empty: array[int] = array(POSTING)
    cut: list[array[int]] = []
    for first in range(0, names, POSTINGS_SLICE):
        cut.extend(
            below(postings.get(i, empty), count)
            for i in range(first, min(names, first + POSTINGS_SLICE))
        )
        if names > POSTINGS_SLICE:
            await anyio.lowlevel.checkpoint()
    return cut


def _blob_sizes(header: IndexHeader) -> list[int]:
    posting = array(POSTING).itemsize
    return [size * header.count for size in header.itemsizes] + [
        posting * sum(header.type_counts),
        posting * sum(header.session_counts),
    ]


def _spawn(source_fd: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gastownd.eventlog.prune_planner", str(source_fd)],
        pass_fds=[source_fd],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def _ask_plan(
    process: subprocess.Popen[bytes], pieces: Iterable[bytes | array[int]]
) -> tuple[PlanHeader, list[bytes]]:
    """Send the request, read the plan. Each blob is read into a buffer of its own size: no
    copy of the whole answer, which would hold the GIL for as long as a copy of tens of
    megabytes takes."""
    assert process.stdin is not None and process.stdout is not None
    try:
        for piece in pieces:
            process.stdin.write(piece)
        process.stdin.flush()
        header = _plan_decoder.decode(process.stdout.readline())
        blobs = [read_exactly(process.stdout, size) for size in header.sizes]
    except (OSError, msgspec.DecodeError, ValueError) as exc:
        raise OSError(0, f"the prune's planner failed: {_ended(process, exc)}") from None
    return header, blobs


def _ask_archive(process: subprocess.Popen[bytes], order: ArchiveOrder) -> int:
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(msgspec.json.encode(order) + b"\n")
        process.stdin.flush()
        done = _done_decoder.decode(process.stdout.readline())
    except (OSError, msgspec.DecodeError) as exc:
        raise OSError(0, f"the prune's archive writer failed: {_ended(process, exc)}") from None
    if done.error is not None:
        raise OSError(done.errno, done.error)
    return done.lines


def _ended(process: subprocess.Popen[bytes], error: Exception) -> str:
    """Why a worker did not answer: its exit status, once it is gone."""
    _end(process, True)
    return f"{error or type(error).__name__} (exit status {process.returncode})"


def _end(process: subprocess.Popen[bytes], kill: bool) -> None:
    """End the worker: one that waits for an order ends when its input does; ``kill`` (or a
    worker that does not end) is killed. Then collect it."""
    if kill and process.poll() is None:
        process.kill()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        process.wait(timeout=END_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _read_plan(header: PlanHeader, blobs: list[bytes]) -> Plan:
    """The worker's answer as the daemon holds it, in a thread (the runs in chunks that
    leave the loop the GIL between them)."""
    try:
        removed, starts, lengths, flat_runs = (_wide(blob) for blob in blobs[:4])
        kept = EventIndex.restore(header.kept, blobs[4:]) if header.kept is not None else None
    except ValueError as exc:
        raise OSError(0, f"the prune's planner answered nonsense: {exc}") from None
    del blobs[:]
    runs: list[tuple[int, int]] = []
    # Hundreds of thousands of new tuples would set off the collector's full pass over
    # the daemon's objects, which holds the GIL throughout: collected young instead, a
    # chunk at a time (the tuples are untracked then: they hold only ints).
    collecting = gc.isenabled()
    gc.disable()
    try:
        for first in range(0, len(flat_runs), 2 * RUNS_CHUNK):
            chunk = flat_runs[first : first + 2 * RUNS_CHUNK]
            runs.extend(zip(chunk[::2], chunk[1::2], strict=True))
            gc.collect(0)
            time.sleep(PAUSE_S)
    finally:
        if collecting:
            gc.enable()
    return Plan(
        removed_by_type=header.removed_by_type,
        kept_lines=header.kept_lines,
        kept_bytes=header.kept_bytes,
        removed=removed,
        range_starts=starts,
        range_lengths=lengths,
        days=header.days,
        removed_max=header.removed_max,
        kept=kept,
        runs=runs,
    )


def _wide(blob: bytes) -> array[int]:
    values = array(WIDE)
    if len(blob) % values.itemsize:
        raise ValueError("an array is cut short")
    values.frombytes(blob)
    return values


_plan_decoder = msgspec.json.Decoder(PlanHeader)
_done_decoder = msgspec.json.Decoder(ArchiveDone)
