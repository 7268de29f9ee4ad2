"""The wisp engine's shell: the book in memory, the store on disk, lines to the log.

Every op runs under one lock, in this order: make sure the book holds the
sessions it names (loading them from the store), apply the pure transition,
persist its effects in one SQLite transaction (the event-log lines it causes
go to an outbox in that same transaction), append those lines to the event
log, then clear them from the outbox. A crash between the commit and the
append replays the outbox at start; a line already in the log (found by the
index) is not written twice. The book keeps only open wisps: ended ones live
in the store.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec
import structlog

from gastown_client.protocol import ErrorCode
from gastownd.core.events import encode_line, format_ts
from gastownd.core.query import compile_filter
from gastownd.core.records import AnyMessage, DigestMessage
from gastownd.core.session_record import (
    RECORDED_TYPES,
    LineEnd,
    SessionRecord,
    line_end,
    start_seen,
)
from gastownd.core.wisp import (
    Effect,
    EmitLine,
    IllegalTransition,
    Outcome,
    SaveDigest,
    Wisp,
    WispBook,
    WispState,
)
from gastownd.eventlog import EventLog
from gastownd.eventlog.subscriptions import Published
from gastownd.process.refusals import DaemonError, NotFoundError
from gastownd.store import LINES_RECORDED, LineFacts, NewAttribution, Store
from gastownd.store.remote import Applied

log = structlog.get_logger("gastownd.sessions")

T = TypeVar("T")

# Recorded lines read and committed at a time (the loop's share is the index and the reads).
RECORD_CHUNK = 256
# Up to this many session lines waiting at start are recorded before READY (about 0.5 s).
RECORD_BEFORE_READY = 10_000
_RECORDED_FILTER = compile_filter(types=sorted(RECORDED_TYPES))


@dataclass(frozen=True)
class WispOp:
    """One change to the wisps, applied whole by :meth:`SessionRecorder.apply`: the sessions it
    names (loaded from the store first), the pure transition, and the attributions it records
    (read from the book after the transition)."""

    names: Sequence[str] = ()
    transition: Callable[[WispBook], Outcome] | None = None
    attributions: Callable[[WispBook], Sequence[NewAttribution]] | None = None


# Nothing changes but what goes with it in the same transaction (a spool mark).
NO_CHANGE = WispOp()


class ConflictError(DaemonError):
    code = ErrorCode.CONFLICT


class SessionRecorder:
    def __init__(
        self, store: Store, eventlog: EventLog, source: str, clock: Callable[[], float]
    ) -> None:
        self.store = store
        self.eventlog = eventlog
        self.source = source
        self.clock = clock
        self.book = WispBook()
        self._lock = anyio.Lock()
        # Lines the log refused (disk full) wait in the outbox; retried on each op.
        self._outbox_stuck = False
        self._db = anyio.CapacityLimiter(1)
        self._record_lock = anyio.Lock()
        self._lines_waiting = anyio.Event()
        # (epoch, seq) of the last line recorded; None before the first.
        self._recorded: tuple[int, int] | None = None
        # (epoch, seq) of the last line read by the recorder, session line or not.
        self._read_through: tuple[int, int] | None = None
        # Called after each commit that may change what federation publishes.
        self.on_commit: Callable[[], None] | None = None
        # Counted for the metrics: digests saved, attributions recorded by action.
        self.digests_saved = 0
        self.attributions_recorded: Counter[str] = Counter()

    async def db(self, func: Callable[..., T], *args: Any) -> T:
        """Run a store call in the store's single worker thread."""
        return await anyio.to_thread.run_sync(func, *args, limiter=self._db)

    # ----------------------------------------------------------------- start

    async def open(self) -> None:
        """Load open wisps and chain heads; replay lines left in the outbox."""
        wisps = await self.db(self.store.open_wisps)
        heads = await self.db(self.store.heads)
        self.book = WispBook(wisps={w.session_id: w for w in wisps}, heads=heads)
        pending = await self.db(self.store.pending_lines)
        if pending:
            # The replay looks for its lines in the log: in all of it.
            await self.eventlog.wait_indexed()
            log.info("outbox_replayed", lines=len(pending))
            self._outbox_stuck = True
            await self._flush_outbox()
        log.info("wisps_restored", open=len(wisps), actors=len(heads))
        checkpoint = await self.db(self.store.meta, LINES_RECORDED)
        if checkpoint is not None:
            epoch, _, seq = checkpoint.partition(":")
            self._recorded = (int(epoch), int(seq))
        # Lines gt wrote while we were down are recorded before the daemon serves, so a
        # death logged meanwhile has ended its wisp by the first request. A large backlog
        # (a first start on a long log) goes to the recorder after READY; a prune waits.
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

    # ------------------------------------------------------------------- ops

    async def apply(
        self,
        op: WispOp,
        *,
        spool_mark: tuple[str, int] | None = None,
        lines: LineFacts | None = None,
    ) -> tuple[WispBook, tuple[Effect, ...]]:
        """Apply one op: load, transition, persist, emit. Returns the book after it.

        The op's attributions, the spool mark and the lines' facts are stored in the same
        transaction as the transition's effects.
        """
        async with self._lock:
            await self._load(op.names)
            book: WispBook = self.book
            effects: tuple[Effect, ...] = ()
            try:
                if op.transition is not None:
                    book, effects = op.transition(self.book)
            except IllegalTransition as exc:
                raise _illegal(exc) from None
            except ValueError as exc:
                raise DaemonError(str(exc), code=ErrorCode.BAD_REQUEST) from None
            records = op.attributions(book) if op.attributions is not None else ()
            if effects or records or spool_mark is not None or lines is not None:
                await self.db(self.store.apply, effects, records, spool_mark, lines)
                self.digests_saved += sum(isinstance(e, SaveDigest) for e in effects)
                self.attributions_recorded.update(r.action for r in records)
                if self.on_commit is not None:
                    self.on_commit()
            # Committed: the book follows the store even if the log append below fails.
            self.book = _open_only(book)
            if any(isinstance(e, EmitLine) for e in effects) or self._outbox_stuck:
                await self._flush_outbox()
            return book, effects

    async def apply_remote(self, records: Sequence[AnyMessage], now: float) -> Applied:
        """Apply other nodes' records; a newer remote digest becomes its actor's chain head.

        Digests take the wisp lock (a local squash reads the heads), the rest only
        the store's worker.
        """
        if not any(isinstance(r, DigestMessage) for r in records):
            return await self.db(self.store.remote.apply, records, now)
        async with self._lock:
            applied = await self.db(self.store.remote.apply, records, now)
            if applied.heads:
                heads = {**self.book.heads, **applied.heads}
                self.book = WispBook(wisps=self.book.wisps, heads=heads)
            return applied

    async def _flush_outbox(self) -> None:
        """Append every pending line, oldest first; a failure leaves them for next time.

        The op that caused a line is already durable in the store, so its
        reply does not depend on the log: the line follows as soon as the log
        takes it again (at the next op or the next start).
        """
        pending = await self.db(self.store.pending_lines)
        try:
            await self._emit(pending, replay=self._outbox_stuck)
            self._outbox_stuck = False
        except DaemonError as exc:
            self._outbox_stuck = True
            log.warning("outbox_pending", lines=len(pending), error=exc.message)

    async def _load(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n and n not in self.book.wisps]
        if not missing:
            return
        wisps = dict(self.book.wisps)
        for name in missing:
            wisp = await self.db(self.store.wisp, name)
            if wisp is not None:
                wisps[name] = wisp
        self.book = WispBook(wisps=wisps, heads=self.book.heads)

    async def _emit(self, lines: list[tuple[int, EmitLine]], *, replay: bool = False) -> None:
        done: list[int] = []
        try:
            for outbox_id, line in lines:
                if not (replay and self._already_logged(line)):
                    encoded = encode_line(
                        ts=format_ts(line.at),
                        source=self.source,
                        type=line.type,
                        actor=line.actor,
                        payload=line.payload,
                        visibility="feed",
                    )
                    await self.eventlog.append(encoded)
                done.append(outbox_id)
        finally:
            with anyio.CancelScope(shield=True):
                await self.db(self.store.lines_done, done)

    def _already_logged(self, line: EmitLine) -> bool:
        session = line.payload.get("session_id")
        if not isinstance(session, str):
            return False
        flt = compile_filter(types=[line.type], session=session)
        for position in self.eventlog.index.search(flt, 64):
            if line.type == "session_start":
                return True
            entry = self.eventlog.read_lines([position])[0]
            if str(line.payload.get("digest_id", "")).encode() in entry:
                return True
        return False

    # ------------------------------------------------------ lines and reaping

    def recorded_seq(self) -> int:
        """The last line of this epoch the recorder has read and recorded (-1: none)."""
        epoch = self.eventlog.seqmap.epoch
        marks = [m[1] for m in (self._recorded, self._read_through) if m and m[0] == epoch]
        return max(marks, default=-1)

    def observe(self, items: Sequence[Published]) -> None:
        """Called with every indexed line; wakes the recorder for the lines it reads."""
        if any(item.type in RECORDED_TYPES for item in items):
            self._lines_waiting.set()

    async def run_recorder(self) -> None:
        """Record session lines as they are indexed, in log order."""
        while True:
            await self._lines_waiting.wait()
            self._lines_waiting = anyio.Event()
            await self.record_lines()

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
            _, effects = await self.apply(WispOp(transition=self._ending(items)), lines=facts)
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

    async def reap(self, idle_timeout_s: float) -> list[str]:
        now = self.clock()

        def reap(book: WispBook) -> Outcome:
            return book.reap(now=now, idle_timeout_s=idle_timeout_s)

        _, effects = await self.apply(WispOp(transition=reap))
        reaped = [e.digest.session_id for e in effects if isinstance(e, SaveDigest)]
        if reaped:
            log.info("wisps_reaped", sessions=reaped)
        return reaped

    async def run_reaper(self, idle_timeout_s: float, interval_s: float) -> None:
        while True:
            await anyio.sleep(interval_s)
            await self.reap(idle_timeout_s)

    # ---------------------------------------------------------------- reading

    def open_wisp_of(self, *, actor: str | None = None, tmux: str | None = None) -> Wisp | None:
        """The newest open wisp of an actor (or tmux session), from the book."""
        found = [
            w
            for w in self.book.wisps.values()
            if w.state == WispState.OPEN
            and (
                (actor is not None and w.actor == actor)
                or (tmux is not None and w.tmux_session == tmux)
            )
        ]
        return max(found, key=lambda w: w.started_at) if found else None


def _payload(line: bytes) -> dict[str, Any] | None:
    try:
        decoded = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    payload = decoded.get("payload") if isinstance(decoded, dict) else None
    return payload if isinstance(payload, dict) else None


@dataclass(frozen=True, slots=True)
class _SessionLine:
    """A session line as the recorder reads it: indexed fields and the decoded payload."""

    seq: int
    type: str
    actor: str
    ts: int
    payload: dict[str, Any] | None


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


def _open_only(book: WispBook) -> WispBook:
    if all(w.state == WispState.OPEN for w in book.wisps.values()):
        return book
    wisps = {k: w for k, w in book.wisps.items() if w.state == WispState.OPEN}
    return WispBook(wisps=wisps, heads=book.heads)


def _illegal(exc: IllegalTransition) -> DaemonError:
    if exc.state is None:
        return NotFoundError(f"no wisp for session {exc.session_id!r}")
    return ConflictError(f"{exc}; resume it with source 'resume'")
