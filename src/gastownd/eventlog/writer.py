"""The only writer of ``<town>/.events.jsonl``: the file, Gas Town's lock, and one thread.

Every change to the log happens here: creating it, appending, cutting a torn
tail off, and replacing it with a pruned copy. ``LogFile`` (``log_file.py``)
holds the descriptors and does the blocking work, always under the writers'
lock (an exclusive BSD flock on ``.events.jsonl.lock``, exactly as ``gt``
takes it). While the daemon runs, only the ``Writer``'s thread uses it:
appends, catching up with other writers and the prune's swap go through one
queue, so they reach the file in the order they were asked for, and their
outcomes reach the event loop in the same order (``loop.call_soon_threadsafe``,
one wake-up per batch). Group commit falls out of it: the appends that arrive
while a batch is written and ``fdatasync``ed make the next batch; those of one
loop turn are handed to the thread together, at the turn's end.

Before every write the thread looks at what others did to the file since it
last looked (``Observation``): lines appended by ``gt`` are handed to the
loop to be indexed first, so ours follow theirs in file order; a file that
was replaced, truncated or rewritten is re-read and matched to the index
(``EventIndex.rematch``), after a barrier that lets the loop apply every
earlier outcome first.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import msgspec
import structlog

from gastownd.core.index import EventIndex, Known
from gastownd.eventlog.log_file import LogFile, Observation, Rewrite, copy_range, failed_batch
from gastownd.metrics.buckets import BATCH_LINES, Buckets
from gastownd.process.refusals import StorageError

# ``LogFile`` and its observations moved to ``log_file``; named here too for their importers.
__all__ = ["Append", "Batch", "LogFile", "Observation", "Rewrite", "Writer", "copy_range"]

log = structlog.get_logger("gastownd.writer")

MAX_BATCH_BYTES = 8 << 20
# How often an idle writer thread looks whether its task was cancelled.
IDLE_CHECK_S = 0.25


# ---------------------------------------------------------------- the thread


class Append(msgspec.Struct, eq=False):
    """One line to append; ``done`` is told its seq, or the error, on the event loop.

    A Struct: one is made per emit, and a Struct is made in C."""

    line: bytes
    done: Callable[[int | StorageError], None]
    known: Known | None = None  # its fields, when the appender has them


class _Call(msgspec.Struct, eq=False):
    """Work to run in the writer's thread, under the lock; its outcome goes to ``deliver``."""

    work: Callable[[LogFile], Any]
    deliver: Callable[[Any, BaseException | None], None]


class _Close(msgspec.Struct, eq=False):
    deliver: Callable[[Any, BaseException | None], None]


class Batch(msgspec.Struct):
    """What one group commit did, in file order: others' lines first, then ours."""

    observation: Observation
    items: list[Append]
    data: bytes
    error: StorageError | None


class Writer:
    """The thread that does all the log's writing, and the queue that feeds it."""

    def __init__(
        self,
        file: LogFile,
        *,
        sync: bool,
        sync_interval_s: float,
        on_batch: Callable[[Batch], None],
        current_index: Callable[[], EventIndex],
    ) -> None:
        self.file = file
        self.sync = sync
        self.sync_interval_s = sync_interval_s
        self.on_batch = on_batch
        # Runs each ``on_batch`` on the loop (``around_batch(work)`` calls ``work`` once): the
        # server writes the replies a batch produced right after it, in the same callback.
        self.around_batch: Callable[[Callable[[], None]], None] = _just_run
        self.current_index = current_index
        self._queue: queue.SimpleQueue[list[Append] | _Call | _Close] = queue.SimpleQueue()
        # Appends of this loop turn, handed to the thread together at its end (``put``).
        self._turn: list[Append] = []
        self._turn_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.batch_lines = Buckets(BATCH_LINES)  # observed in the writer's thread only

    # ------------------------------------------------------------ event loop side

    async def run(self) -> None:
        """The writer's thread, for the daemon's lifetime (until ``close``)."""
        self._loop = asyncio.get_running_loop()
        try:
            await anyio.to_thread.run_sync(self._main, limiter=anyio.CapacityLimiter(1))
        except BaseException as exc:
            # Nothing runs the queue any more: ``close`` must not wait for it, and the
            # error goes on up, so the daemon stops (non-zero) instead of hanging.
            self.closed = True
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                log.critical("eventlog_writer_died", error=repr(exc))
            raise

    def put(self, item: Append) -> None:
        """Queue an append (event loop). The appends of one loop turn reach the thread
        together, at the turn's end (or once they fill a batch): one wake-up of the thread,
        and one handover of the GIL, per turn instead of per emit; and the turn's lines
        make one batch instead of the first of them one and the rest the next."""
        if self._loop is None:  # before ``run``: nothing to wait for
            self._queue.put([item])
            return
        turn = self._turn
        if not turn:
            self._loop.call_soon(self._hand_over)
        turn.append(item)
        self._turn_bytes += len(item.line)
        if self._turn_bytes >= MAX_BATCH_BYTES:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._turn:
            self._queue.put(self._turn)
            self._turn = []
            self._turn_bytes = 0

    async def call(
        self, work: Callable[[LogFile], Any], apply: Callable[[Any], Any] | None = None
    ) -> Any:
        """Run ``work(file)`` in the writer's thread, in turn with the appends.

        ``apply(result)`` then runs on the event loop in the same turn as
        the outcomes of the batches around it (in file order), and what it
        returns is returned.
        """
        done = anyio.Event()
        outcome: list[Any] = []

        def deliver(result: Any, error: BaseException | None) -> None:
            if error is None and apply is not None:
                try:
                    result = apply(result)
                except BaseException as exc:
                    result, error = None, exc
            outcome.append((result, error))
            done.set()

        self._hand_over()  # in order: the appends asked for before this call
        self._queue.put(_Call(work, deliver))
        with anyio.CancelScope(shield=True):  # once queued, it runs: wait for it
            await done.wait()
        result, error = outcome[0]
        if error is not None:
            raise error
        return result

    async def close(self) -> None:
        """Write what is queued, sync, and end the thread."""
        if self.closed:
            return
        self.closed = True
        done = anyio.Event()
        self._hand_over()
        self._queue.put(_Close(lambda result, error: done.set()))
        await done.wait()

    # ------------------------------------------------------------ the thread

    def _main(self) -> None:
        idle_s = self.sync_interval_s if not self.sync else IDLE_CHECK_S
        while True:
            try:
                job = self._queue.get(timeout=idle_s)
            except queue.Empty:
                anyio.from_thread.check_cancelled()
                self._sync_if_dirty()
                continue
            if isinstance(job, list):
                self._write(job)
            elif isinstance(job, _Call):
                self._run_call(job)
            else:
                self._sync_if_dirty()
                self._deliver(job.deliver, None, None)
                return

    def _write(self, first: list[Append]) -> None:
        items = first
        size = sum(len(item.line) for item in items)
        pending: _Call | _Close | None = None
        while size < MAX_BATCH_BYTES:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(job, list):
                pending = job  # runs right after this batch
                break
            items += job
            size += sum(len(item.line) for item in job)
        data = b"".join(item.line for item in items)
        self.batch_lines.observe(len(items))
        file = self.file
        try:
            with file.flocked():
                observation = file.observe(self.settled_index)
                error = file.append(data, self.sync)
        except Exception as exc:  # the thread must live on: the batch fails, the next one tries
            observation, error = Observation(), failed_batch(exc, len(data))
        batch = Batch(observation=observation, items=items, data=data, error=error)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._batch_done, batch)
        if pending is not None:
            self._queue_front(pending)

    def _batch_done(self, batch: Batch) -> None:
        self.around_batch(lambda: self.on_batch(batch))

    def _run_call(self, job: _Call) -> None:
        try:
            with self.file.flocked():
                result = job.work(self.file)
        except BaseException as exc:  # handed to the caller, who raises it
            self._deliver(job.deliver, None, exc)
        else:
            self._deliver(job.deliver, result, None)

    def _queue_front(self, job: _Call | _Close) -> None:
        """Run a job taken out of turn at once (it was next after the batch)."""
        if isinstance(job, _Call):
            self._run_call(job)
        else:
            # A close behind a batch: write whatever else is queued, then stop.
            self._queue.put(job)

    def _sync_if_dirty(self) -> None:
        try:
            self.file.sync()
        except OSError as exc:
            log.error("eventlog_sync_failed", error=exc.strerror)

    def settled_index(self) -> EventIndex:
        """The loop's index once every earlier outcome is applied (a barrier)."""
        assert self._loop is not None
        applied = threading.Event()
        self._loop.call_soon_threadsafe(applied.set)
        applied.wait()
        return self.current_index()

    def _deliver(
        self,
        deliver: Callable[[Any, BaseException | None], None],
        result: Any,
        error: BaseException | None,
    ) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(deliver, result, error)


def _just_run(work: Callable[[], None]) -> None:
    work()
