"""The background index: the old lines ``EventLog.open`` left, indexed while the daemon serves.

A long stretch with no snapshot to cover it (see ``recovery``) is indexed
in a thread of its own (and the indexer's worker processes), then put in
front of the lines appended since. Until then ``index`` holds only those,
``indexing`` says how far the rest is, and whatever needs every line waits
(``wait_indexed``; the writer's thread, through ``whole_index``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable

import anyio
import anyio.abc
import structlog

from gastown_client.protocol import IndexingProgress
from gastownd.core.index import EventIndex
from gastownd.eventlog.logstate import SeqMap
from gastownd.eventlog.recovery import PendingIndex, index_pending

log = structlog.get_logger("gastownd.eventlog")

# TEST-ONLY: background indexing waits until this file exists (see ``run_indexing``).
TEST_HOLD_INDEXING_ENV = "GASTOWND_TEST_HOLD_INDEXING"


class BackgroundIndexing:
    """``EventLog``'s background index (its state is set up by ``EventLog``)."""

    index: EventIndex
    seqmap: SeqMap
    fd: int
    prune_lock: anyio.Lock
    cold_start_s: float
    _pending: PendingIndex | None
    _indexed: anyio.Event
    _indexed_for_writer: threading.Event

    def _log_indexed(self) -> None:
        log.info(
            "eventlog_indexed",
            lines=len(self.index),
            malformed=self.index.malformed,
            bytes=self.index.end,
            epoch=self.seqmap.epoch,
        )

    @property
    def indexing(self) -> IndexingProgress | None:
        """How far the background index is (``None``: every line is indexed).

        Until it is done, ``index`` holds only the lines appended since the
        daemon started: queries wait for the rest (bounded) and say so if
        they answer without it, subscriptions from a cursor wait for it.
        """
        pending = self._pending
        if pending is None:
            return None
        return IndexingProgress(
            lines=pending.lines,
            bytes_done=pending.done,
            bytes_total=pending.end - pending.start,
        )

    def indexed_after(self, seq: int) -> bool:
        """Every line after ``seq`` is in ``index`` (the background may add only older ones)."""
        pending = self._pending
        return pending is None or seq >= pending.next_seq - 1

    async def wait_indexed(self, timeout_s: float | None = None) -> bool:
        """Wait until every line is indexed (at most ``timeout_s``); True if it is."""
        if timeout_s is None:
            await self._indexed.wait()
        else:
            with anyio.move_on_after(timeout_s):
                await self._indexed.wait()
        return self._indexed.is_set()

    async def run_indexing(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Index the lines ``open`` left, in a worker thread (and its worker processes),
        then put them in front of the lines appended since. Holds the prune lock all
        along: a prune needs the whole index. Started before anything may prune."""
        pending = self._pending
        if pending is None:
            task_status.started()
            return
        async with self.prune_lock:
            task_status.started()
            started = time.monotonic()
            try:
                old = await _in_daemon_thread(_index_in_background, os.dup(self.fd), pending)
            except (OSError, ValueError) as exc:
                # A read error, or the file changed in place under us. Serving on with
                # part of the index would let a prune drop what it lacks: stop, as a
                # failed start does; the next start indexes the file as it then is.
                log.error("eventlog_background_index_failed", error=str(exc))
                raise
            live = self.index
            old.append_index(live)
            old.seq_floor = max(old.seq_floor, live.seq_floor)
            self.index = old
            self.cold_start_s = time.monotonic() - started
            self._pending = None
            self._indexed.set()
            self._indexed_for_writer.set()
            self._log_indexed()

    def _whole_index(self) -> EventIndex:
        """The index for the writer's thread: a rewrite is matched against every line, so
        it waits for the background index (which the event loop merges meanwhile)."""
        # ``run_indexing`` lives until after ``close``: this wait always ends.
        self._indexed_for_writer.wait()
        return self.index


async def _in_daemon_thread(
    work: Callable[[int, PendingIndex], EventIndex], fd: int, pending: PendingIndex
) -> EventIndex:
    """``work(fd, pending)`` in a thread of its own that a stop abandons: a daemon thread
    (which the interpreter's exit does not wait for), owning ``fd``."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[EventIndex] = loop.create_future()

    def settle(result: EventIndex | None, error: BaseException | None) -> None:
        if future.done():  # abandoned
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    def run() -> None:
        try:
            result: EventIndex | None = work(fd, pending)
            error: BaseException | None = None
        except BaseException as exc:  # handed to the loop, which raises it
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="gastownd-indexer", daemon=True).start()
    return await future


def _index_in_background(fd: int, pending: PendingIndex) -> EventIndex:
    try:
        hold = os.environ.get(TEST_HOLD_INDEXING_ENV)
        if hold:
            while not os.path.exists(hold):
                time.sleep(0.01)
        return index_pending(fd, pending)
    finally:
        os.close(fd)
