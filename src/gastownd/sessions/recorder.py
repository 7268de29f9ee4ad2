"""The wisp engine's shell: the book in memory, the store on disk, lines to the log.

Every op runs under one lock, in this order: make sure the book holds the
sessions it names (loading them from the store), apply the pure transition,
persist its effects in one SQLite transaction (the event-log lines it causes
go to an outbox in that same transaction), append those lines to the event
log, then clear them from the outbox (``outbox.py``). Session lines in the log
(the daemon's and ``gt``'s) are recorded by ``line_recorder.py``, through the
same ops. The book keeps only open wisps: ended ones live in the store.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec
import structlog

from gastown_client.protocol import ErrorCode
from gastownd.core.records import AnyMessage, DigestMessage
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
from gastownd.process.refusals import DaemonError, NotFoundError, StorageError
from gastownd.sessions.line_recorder import LineRecorder
from gastownd.sessions.outbox import Outbox
from gastownd.store import LineFacts, NewAttribution, Store
from gastownd.store.remote import Applied

log = structlog.get_logger("gastownd.sessions")

T = TypeVar("T")


class WispOp(msgspec.Struct, frozen=True):
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
        self._db = anyio.CapacityLimiter(1)
        # Clients' reads take the store's thread one at a time (see ``read``).
        self._reads = anyio.Lock()
        self.outbox = Outbox(store, self.db, eventlog, source)
        self.lines = LineRecorder(store, self.db, eventlog, self._apply_lines, clock)
        # Called after each commit that may change what federation publishes.
        self.on_commit: Callable[[], None] | None = None
        # Counted for the metrics: digests saved, attributions recorded by action.
        self.digests_saved = 0
        self.attributions_recorded: Counter[str] = Counter()

    async def db(self, func: Callable[..., T], *args: Any) -> T:
        """Run a store call in the store's single worker thread."""
        return await anyio.to_thread.run_sync(func, *args, limiter=self._db)

    async def read(self, func: Callable[..., T], *args: Any) -> T:
        """``db`` for a read a client asked for (``sessions``, ``cv``, ``status``, …).

        The store has one thread, taken in arrival order. Clients can pipeline thousands of
        reads; queued there, they would hold every hook's session change behind them. So at
        most one client read waits for the thread at a time, the others behind it here: the
        daemon's own work (ops, recorded lines, the outbox, federation) waits for two reads
        at most."""
        async with self._reads:
            return await self.db(func, *args)

    async def open(self) -> None:
        """Load open wisps and chain heads; replay lines left in the outbox; record the
        session lines logged while the daemon was down."""
        wisps = await self.db(self.store.open_wisps)
        heads = await self.db(self.store.heads)
        self.book = WispBook(wisps={w.session_id: w for w in wisps}, heads=heads)
        await self.outbox.replay()
        log.info("wisps_restored", open=len(wisps), actors=len(heads))
        await self.lines.open()

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
                await self._commit(effects, records, spool_mark, lines)
                self.digests_saved += sum(isinstance(e, SaveDigest) for e in effects)
                self.attributions_recorded.update(r.action for r in records)
                if self.on_commit is not None:
                    self.on_commit()
            # Committed: the book follows the store even if the log append below fails.
            self.book = _open_only(book)
            if any(isinstance(e, EmitLine) for e in effects) or self.outbox.stuck:
                await self.outbox.flush()
            return book, effects

    async def _commit(
        self,
        effects: Sequence[Effect],
        records: Sequence[NewAttribution],
        spool_mark: tuple[str, int] | None,
        lines: LineFacts | None,
    ) -> None:
        """``store.apply``; the store's own trouble (locked by another process past the busy
        timeout, a full disk, read-only, an I/O error) is ``io_error``, not a bug: the
        transaction was rolled back, nothing changed, and the client is told so."""
        try:
            await self.db(self.store.apply, effects, records, spool_mark, lines)
        except sqlite3.OperationalError as exc:
            log.warning("session_store_write_failed", path=str(self.store.path), error=str(exc))
            raise StorageError(
                f"the session store could not be written ({exc}); nothing was changed"
            ) from None

    async def _apply_lines(
        self, transition: Callable[[WispBook], Outcome], facts: LineFacts
    ) -> tuple[Effect, ...]:
        _, effects = await self.apply(WispOp(transition=transition), lines=facts)
        return effects

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

    # ------------------------------------------------------ lines and reaping

    def recorded_seq(self) -> int:
        """The last line of this epoch the recorder has read and recorded (-1: none)."""
        return self.lines.recorded_seq()

    def observe(self, items: Sequence[Published]) -> None:
        """Called with every indexed line; wakes the recorder for the lines it reads."""
        self.lines.observe(items)

    async def run_recorder(self) -> None:
        """Record session lines as they are indexed, in log order."""
        await self.lines.run()

    async def record_lines(self) -> int:
        """Record every session line past the checkpoint; returns how many were read."""
        return await self.lines.record_lines()

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
            with contextlib.suppress(StorageError):  # logged; the next round tries again
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


def _open_only(book: WispBook) -> WispBook:
    if all(w.state == WispState.OPEN for w in book.wisps.values()):
        return book
    wisps = {k: w for k, w in book.wisps.items() if w.state == WispState.OPEN}
    return WispBook(wisps=wisps, heads=book.heads)


def _illegal(exc: IllegalTransition) -> DaemonError:
    if exc.state is None:
        return NotFoundError(f"no wisp for session {exc.session_id!r}")
    return ConflictError(f"{exc}; resume it with source 'resume'")
