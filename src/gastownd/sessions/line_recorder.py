"""Session lines read from the log, in log order, and recorded.

Every ``session_start``, death and handoff in the log (the daemon's own and
``gt``'s) is recorded in the store's permanent record of sessions, and a death
or handoff ends its open wisp. The recorder reads them from the index in
chunks after a checkpoint ``(epoch, seq)`` stored with each chunk's effects,
so a crash neither loses nor repeats a line; lines written while the daemon
was down are recorded at start, before it serves.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import structlog

from gastownd.core.query import compile_filter
from gastownd.core.session_record import (
    RECORDED_TYPES,
    LineEnd,
    SessionRecord,
    line_end,
    start_seen,
)
from gastownd.core.wisp import Effect, Outcome, SaveDigest, WispBook
from gastownd.eventlog import EventLog
from gastownd.eventlog.subscriptions import Published
from gastownd.process.refusals import StorageError
from gastownd.sessions.outbox import StoreCall
from gastownd.store import LINES_RECORDED, LineFacts, Store

log = structlog.get_logger("gastownd.sessions")

# Recorded lines read and committed at a time (the loop's share is the index and the reads).
RECORD_CHUNK = 256
# Up to this many session lines waiting at start are recorded before READY (about 0.5 s).
RECORD_BEFORE_READY = 10_000
# After the store could not be written (a full disk, another process holding its lock), the
# recorder tries again this much later, new lines or not.
STORE_RETRY_S = 1.0
_RECORDED_FILTER = compile_filter(types=sorted(RECORDED_TYPES))

# Applies a chunk's transition and stores its facts and checkpoint in one transaction.
ApplyLines = Callable[[Callable[[WispBook], Outcome], LineFacts], Awaitable[tuple[Effect, ...]]]


class LineRecorder:
    # A plain class: a dataclass's generated methods cost every start a few tenths of a ms.
    def __init__(
        self,
        store: Store,
        db: StoreCall,
        eventlog: EventLog,
        apply: ApplyLines,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.db = db
        self.eventlog = eventlog
        self.apply = apply
        self.clock = clock
        self._record_lock = anyio.Lock()
        self._lines_waiting = anyio.Event()
        # (epoch, seq) of the last line recorded; None before the first.
        self._recorded: tuple[int, int] | None = None
        # (epoch, seq) of the last line read by the recorder, session line or not.
        self._read_through: tuple[int, int] | None = None

    async def open(self) -> None:
        """Load the checkpoint and record the lines written while the daemon was down.

        They are recorded before the daemon serves, so a death logged meanwhile has
        ended its wisp by the first request. A large backlog (a first start on a long
        log) goes to the recorder after READY; a prune waits.
        """
        checkpoint = await self.db(self.store.meta, LINES_RECORDED)
        if checkpoint is not None:
            epoch, _, seq = checkpoint.partition(":")
            self._recorded = (int(epoch), int(seq))
        if not self.eventlog.indexed_after(self.recorded_seq()):
            # Lines to record are in the stretch indexed in the background: they are
            # recorded once it is (``record_lines`` waits for it).
            log.info("session_lines_recorded_after_indexing")
            self._lines_waiting.set()
            return
        waiting = self._pending_lines()
        if waiting <= RECORD_BEFORE_READY:
            await self.record_lines()
        else:
            log.info("session_lines_recorded_in_background", lines=waiting)
            self._lines_waiting.set()

    def recorded_seq(self) -> int:
        """The last line of this epoch the recorder has read and recorded (-1: none)."""
        epoch = self.eventlog.seqmap.epoch
        marks = [m[1] for m in (self._recorded, self._read_through) if m and m[0] == epoch]
        return max(marks, default=-1)

    def observe(self, items: Sequence[Published]) -> None:
        """Called with every indexed line; wakes the recorder for the lines it reads."""
        if any(item.type in RECORDED_TYPES for item in items):
            self._lines_waiting.set()

    async def run(self) -> None:
        """Record session lines as they are indexed, in log order."""
        while True:
            await self._lines_waiting.wait()
            self._lines_waiting = anyio.Event()
            try:
                await self.record_lines()
            except StorageError:
                # Logged by the store's caller; the lines stay unrecorded (and retention keeps
                # them) until a try succeeds: never a crash of the daemon for a full disk.
                await anyio.sleep(STORE_RETRY_S)
                self._lines_waiting.set()

    def _pending_lines(self) -> int:
        """How many session lines the recorder has not read yet (from the index's postings)."""
        index = self.eventlog.index
        recorded = self._recorded
        if recorded is not None and recorded[0] != self.eventlog.seqmap.epoch:
            recorded = None
        after = index.position_after(-1 if recorded is None else recorded[1])
        return len(
            index.search(
                _RECORDED_FILTER, RECORD_BEFORE_READY + 1, oldest_first=True, after_position=after
            )
        )

    async def record_lines(self) -> int:
        """Record every session line past the checkpoint; returns how many were read."""
        async with self._record_lock:
            # In log order: never a line past old lines the background has not indexed.
            if not self.eventlog.indexed_after(self.recorded_seq()):
                await self.eventlog.wait_indexed()
            started = time.monotonic()
            total = await self._record_pending()
            if total > RECORD_CHUNK:
                log.info(
                    "session_lines_recorded",
                    lines=total,
                    duration_ms=round((time.monotonic() - started) * 1000),
                )
            return total

    async def _record_pending(self) -> int:
        epoch = self.eventlog.seqmap.epoch
        rescan_through = -1
        if self._recorded is not None and self._recorded[0] != epoch:
            # The log was replaced while we were down: its seqs start over.
            rescan_through = self.eventlog.index.next_seq() - 1
            self._recorded = None
            log.warning("session_lines_rescanned", epoch=epoch)
        total = 0
        while True:
            index = self.eventlog.index
            after = -1 if self._recorded is None else self._recorded[1]
            # Search and read with no await between: the index cannot change meanwhile.
            positions = index.search(
                _RECORDED_FILTER,
                RECORD_CHUNK,
                oldest_first=True,
                after_position=index.position_after(after),
            )
            if not positions:
                # Every line of the index has been read, recorded or not a session line.
                self._read_through = (epoch, index.next_seq() - 1)
                return total
            entries = [index.entry(p) for p in positions]
            lines = self.eventlog.read_lines(positions)
            # Decoding payloads is the costly part: in a worker thread, off the loop.
            payloads = await anyio.to_thread.run_sync(_payloads, lines)
            items = [
                _SessionLine(e.seq, e.type or "", e.actor, e.ts, payload)
                for e, payload in zip(entries, payloads, strict=True)
            ]
            last = entries[-1].seq
            facts = LineFacts(
                facts=_facts_of(items),
                checkpoint=f"{epoch}:{last}",
                rescan=entries[0].seq <= rescan_through,
            )
            effects = await self.apply(self._ending(items), facts)
            self._recorded = (epoch, last)
            total += len(items)
            ended = [e.digest.session_id for e in effects if isinstance(e, SaveDigest)]
            if ended:
                log.info("wisps_ended_by_line", sessions=ended)

    def _ending(self, items: list[_SessionLine]) -> Callable[[WispBook], Outcome]:
        """The wisps these lines end (deaths, handoffs), applied in log order."""
        now = self.clock()

        def observe(book: WispBook) -> Outcome:
            effects: list[Effect] = []
            for item in items:
                if item.type == "session_start":
                    continue
                book, more = book.observe_line(
                    type=item.type,
                    actor=item.actor,
                    payload=item.payload,
                    at=float(item.ts),
                    now=now,
                )
                effects += more
            return book, tuple(effects)

        return observe


class _SessionLine(msgspec.Struct, frozen=True):
    """A session line as the recorder reads it: indexed fields and the decoded payload."""

    seq: int
    type: str
    actor: str
    ts: int
    payload: dict[str, Any] | None


def _payload(line: bytes) -> dict[str, Any] | None:
    try:
        decoded = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    payload = decoded.get("payload") if isinstance(decoded, dict) else None
    return payload if isinstance(payload, dict) else None


def _payloads(lines: list[bytes]) -> list[dict[str, Any] | None]:
    return [_payload(line) for line in lines]


def _facts_of(items: list[_SessionLine]) -> list[SessionRecord | LineEnd]:
    facts: list[SessionRecord | LineEnd] = []
    for item in items:
        fact = (
            start_seen(item.actor, item.payload, item.ts)
            if item.type == "session_start"
            else line_end(item.type, item.actor, item.payload, item.ts)
        )
        if fact is not None:
            facts.append(fact)
    return facts
