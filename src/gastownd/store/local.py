"""The only SQLite user: session records, wisps, steps, digests, chain heads,
attributions, outbox.

Synchronous by design: the shell calls it through ``anyio.to_thread`` with one
``CapacityLimiter(1)``, so the single connection is used strictly serially.
Every public write is one transaction; with WAL and ``synchronous=FULL`` a
committed transaction survives a crash or power loss.

Schema changes: bump ``SCHEMA_VERSION`` and add a step to ``MIGRATIONS`` (SQL,
plus an optional Python backfill in ``BACKFILLS``), run in one transaction;
``PRAGMA user_version`` records where a database stands. Every released schema
has a database in ``tests/data/`` that must still open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from gastownd.core.digest import Digest
from gastownd.core.session_record import (
    LOGGED,
    LineEnd,
    NewAttribution,
    SessionRecord,
    identity_key,
)
from gastownd.core.wisp import (
    AppendStep,
    CountStart,
    Effect,
    EmitLine,
    SaveDigest,
    SaveWisp,
    Step,
    Wisp,
)
from gastownd.process.refusals import StartupError
from gastownd.store.lookups import StoreLookups, digest_decoder
from gastownd.store.remote import RemoteStore
from gastownd.store.schema import MIGRATIONS, SCHEMA_VERSION, insert_digest

# Meta key: the last event-log line whose session facts are recorded ("EPOCH:SEQ").
LINES_RECORDED = "lines_recorded"

_wisp_encoder = msgspec.json.Encoder()
_wisp_decoder = msgspec.json.Decoder(Wisp)
_step_decoder = msgspec.json.Decoder(Step)
_emit_decoder = msgspec.json.Decoder(EmitLine)


class LineFacts(msgspec.Struct, frozen=True):
    """Session facts read from event-log lines, in log order, up to ``checkpoint``."""

    facts: Sequence[SessionRecord | LineEnd]
    checkpoint: str
    rescan: bool = False


class Store(StoreLookups):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self.remote = RemoteStore(self._db, self._transaction)

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        # This open made the database: it was missing, or empty (a 0-byte file).
        self.created = version == 0
        if version > SCHEMA_VERSION:
            raise StartupError(
                f"{self.path}: written by a newer gastownd (schema {version}, this one reads "
                f"up to {SCHEMA_VERSION}); run that version or a later one"
            )
        if version == SCHEMA_VERSION:
            return
        # Every step in one transaction: a crash leaves the old version intact.
        with self._transaction():
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                backfill = BACKFILLS.get(target)
                if backfill is not None:
                    backfill(self)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # ------------------------------------------------------------- loading

    def open_wisps(self) -> list[Wisp]:
        rows = self._db.execute(
            "SELECT body FROM wisps WHERE state = 'open' ORDER BY started_at"
        ).fetchall()
        return [self._with_steps(_wisp_decoder.decode(body)) for (body,) in rows]

    def wisp(self, session_id: str) -> Wisp | None:
        row = self._db.execute(
            "SELECT body FROM wisps WHERE session_id = ?", (session_id,)
        ).fetchone()
        return self._with_steps(_wisp_decoder.decode(row[0])) if row else None

    def _with_steps(self, wisp: Wisp) -> Wisp:
        rows = self._db.execute(
            "SELECT body FROM steps WHERE session_id = ? AND segment = ? ORDER BY seq",
            (wisp.session_id, wisp.segment),
        ).fetchall()
        steps = tuple(_step_decoder.decode(body) for (body,) in rows)
        return msgspec.structs.replace(wisp, steps=steps)

    def heads(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT actor, hash FROM heads").fetchall())

    # --------------------------------------------------------------- writes

    def apply(
        self,
        effects: Sequence[Effect],
        attributions: Sequence[NewAttribution] = (),
        spool_mark: tuple[str, int] | None = None,
        lines: LineFacts | None = None,
    ) -> list[int]:
        """Persist one op in one transaction: its effects, the attributions it records,
        for a spooled request how far its spool file has been applied, and for
        event-log lines the session facts they carry and how far they are read.

        Returns the outbox ids of the event-log lines it causes.
        """
        with self._transaction():
            if lines is not None:
                self._record_lines(lines)
            for record in attributions:
                self._db.execute(
                    "INSERT INTO attributions (issue, session_id, segment, action, at, actor, "
                    "rule) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.issue,
                        record.session_id,
                        record.segment,
                        record.action,
                        record.at,
                        record.actor,
                        record.rule,
                    ),
                )
            if spool_mark is not None:
                self._db.execute("INSERT OR REPLACE INTO spool_progress VALUES (?, ?)", spool_mark)
            return self._apply(effects)

    def _apply(self, effects: Sequence[Effect]) -> list[int]:
        outbox: list[int] = []
        for effect in effects:
            match effect:
                case SaveWisp(wisp=wisp):
                    self._record_wisp(wisp)
                    header = msgspec.structs.replace(wisp, steps=())
                    self._db.execute(
                        "INSERT OR REPLACE INTO wisps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            wisp.session_id,
                            wisp.segment,
                            str(wisp.state),
                            wisp.actor,
                            wisp.tmux_session,
                            wisp.started_at,
                            wisp.last_activity_at,
                            _wisp_encoder.encode(header),
                        ),
                    )
                case AppendStep(session_id=sid, segment=segment, seq=seq, step=step):
                    self._db.execute(
                        "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?)",
                        (sid, segment, seq, _wisp_encoder.encode(step)),
                    )
                case SaveDigest(digest=digest):
                    self._save_digest(digest)
                case CountStart(session_id=sid, at=at):
                    self._db.execute(
                        "UPDATE sessions SET starts = starts + 1, "
                        "last_start_at = max(last_start_at, ?), rev = ? "
                        "WHERE session_id = ? AND node = ''",
                        (at, self._next_rev(), sid),
                    )
                case EmitLine():
                    cursor = self._db.execute(
                        "INSERT INTO outbox (body) VALUES (?)", (_wisp_encoder.encode(effect),)
                    )
                    assert cursor.lastrowid is not None
                    outbox.append(cursor.lastrowid)
        return outbox

    def _next_rev(self) -> int:
        """The next change number of this node's session records (what federation sends)."""
        [(rev,)] = self._db.execute(
            "SELECT coalesce(max(rev), 0) + 1 FROM sessions WHERE node = ''"
        )
        return int(rev)

    def _record_wisp(self, wisp: Wisp) -> None:
        """The session record follows its wisp (state, end, metadata)."""
        self._db.execute(
            "INSERT INTO sessions (session_id, actor, actor_key, role, topic, cwd, actor_pid, "
            "first_start_at, last_start_at, last_activity_at, starts, segments, state, "
            "ended_at, end_reason, rev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?) "
            "ON CONFLICT (session_id, node) DO UPDATE SET rev = excluded.rev, "
            "topic = coalesce(excluded.topic, topic), cwd = coalesce(excluded.cwd, cwd), "
            "actor_pid = coalesce(excluded.actor_pid, actor_pid), "
            "first_start_at = min(first_start_at, excluded.first_start_at), "
            "last_start_at = max(last_start_at, excluded.last_start_at), "
            "last_activity_at = max(last_activity_at, excluded.last_activity_at), "
            "segments = excluded.segments, state = excluded.state, "
            "ended_at = excluded.ended_at, end_reason = excluded.end_reason",
            (
                wisp.session_id,
                wisp.actor,
                identity_key(wisp.actor),
                wisp.actor,
                wisp.topic,
                wisp.cwd,
                f"{wisp.actor}-{wisp.pid}" if wisp.pid is not None else None,
                wisp.started_at,
                wisp.started_at,
                wisp.last_activity_at,
                wisp.segment,
                str(wisp.state),
                wisp.ended_at,
                wisp.end_reason,
                self._next_rev(),
            ),
        )

    def _record_lines(self, lines: LineFacts) -> None:
        """Session facts from event-log lines, in log order, and the new checkpoint."""
        for fact in lines.facts:
            if isinstance(fact, SessionRecord):
                self._record_start(fact, rescan=lines.rescan)
            else:
                self._record_end(fact)
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", (LINES_RECORDED, lines.checkpoint)
        )

    def _record_start(self, start: SessionRecord, *, rescan: bool) -> None:
        """Merge the record of one start (:func:`start_seen`) into the stored one."""
        # A rescan (the log was replaced while the daemon was down) reads lines it
        # may have recorded before: only a start later than the last one counts.
        counted = "1" if not rescan else "(excluded.last_start_at > last_start_at)"
        self._db.execute(
            "INSERT INTO sessions (session_id, actor, actor_key, role, topic, cwd, actor_pid, "
            "first_start_at, last_start_at, last_activity_at, starts, segments, state, rev) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (session_id, node) DO UPDATE SET rev = excluded.rev, "
            f"starts = starts + {counted}, "
            "role = coalesce(role, excluded.role), "
            "topic = coalesce(excluded.topic, topic), cwd = coalesce(excluded.cwd, cwd), "
            "actor_pid = coalesce(excluded.actor_pid, actor_pid), "
            "first_start_at = min(first_start_at, excluded.first_start_at), "
            "last_start_at = max(last_start_at, excluded.last_start_at), "
            "last_activity_at = max(last_activity_at, excluded.last_activity_at), "
            # A logged session started again after its recorded end was resumed.
            "ended_at = CASE WHEN state = 'logged' AND ended_at < excluded.last_start_at "
            "THEN NULL ELSE ended_at END, "
            "end_reason = CASE WHEN state = 'logged' AND ended_at < excluded.last_start_at "
            "THEN NULL ELSE end_reason END",
            (
                start.session_id,
                start.actor,
                identity_key(start.actor),
                start.role,
                start.topic,
                start.cwd,
                start.actor_pid,
                start.first_start_at,
                start.last_start_at,
                start.last_activity_at,
                start.starts,
                start.segments,
                start.state,
                self._next_rev(),
            ),
        )

    def _record_end(self, end: LineEnd) -> None:
        """End the open records, known only from lines, of the identities ``end`` names."""
        marks = ",".join("?" * len(end.identities))
        ended = self._db.execute(
            "SELECT session_id FROM sessions WHERE ended_at IS NULL AND state = ? "
            f"AND node = '' AND actor_key IN ({marks}) AND last_start_at <= ?",
            (LOGGED, *sorted(end.identities), end.at),
        ).fetchall()
        for (session_id,) in ended:
            self._db.execute(
                "UPDATE sessions SET ended_at = ?, end_reason = ?, rev = ?, "
                "last_activity_at = max(last_activity_at, ?) "
                "WHERE session_id = ? AND node = ''",
                (end.at, end.reason, self._next_rev(), end.at, session_id),
            )

    def _save_digest(self, digest: Digest) -> None:
        length = self.chain_length(digest.actor)
        insert_digest(self._db, digest, length, "")
        self._db.execute(
            "DELETE FROM steps WHERE session_id = ? AND segment = ?",
            (digest.session_id, digest.segment),
        )
        self._db.execute(
            "INSERT OR REPLACE INTO heads (actor, hash, length, ended_at) VALUES (?, ?, ?, ?)",
            (digest.actor, digest.hash, length + 1, digest.ended_at),
        )

    def pending_lines(self) -> list[tuple[int, EmitLine]]:
        rows = self._db.execute("SELECT id, body FROM outbox ORDER BY id").fetchall()
        return [(row_id, _emit_decoder.decode(body)) for row_id, body in rows]

    def lines_done(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._transaction():
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    # ------------------------------------------------------------------ spool

    def spool_offset(self, name: str) -> int:
        row = self._db.execute(
            "SELECT offset FROM spool_progress WHERE name = ?", (name,)
        ).fetchone()
        return int(row[0]) if row else 0

    def forget_spool_file(self, name: str) -> None:
        """A spool file was fully applied and removed: drop its progress row."""
        with self._transaction():
            self._db.execute("DELETE FROM spool_progress WHERE name = ?", (name,))


def _backfill_session_records(store: Store) -> None:
    """Schema 2: a record for every session that already has a wisp."""
    db = store._db
    first_starts: dict[str, float] = {}
    for (body,) in db.execute("SELECT body FROM digests"):
        digest = digest_decoder.decode(body)
        known = first_starts.get(digest.session_id, digest.started_at)
        first_starts[digest.session_id] = min(known, digest.started_at)
    for (body,) in db.execute("SELECT body FROM wisps").fetchall():
        wisp = _wisp_decoder.decode(body)
        first = min(wisp.started_at, first_starts.get(wisp.session_id, wisp.started_at))
        store._record_wisp(msgspec.structs.replace(wisp, started_at=first))
        # Each reopened segment was a start; the first start is counted from the
        # session_start line the wisp emitted, when the recorder reads it.
        db.execute(
            "UPDATE sessions SET starts = ?, last_start_at = ? WHERE session_id = ?",
            (wisp.segment - 1, wisp.started_at, wisp.session_id),
        )


def _backfill_v2(store: Store) -> None:
    _backfill_session_records(store)
    # Chain heads learn when their digest ended (the newest decides the head).
    store._db.execute(
        "UPDATE heads SET ended_at = coalesce((SELECT d.ended_at FROM digests d "
        "WHERE d.actor = heads.actor ORDER BY d.chain_pos DESC LIMIT 1), 0)"
    )


BACKFILLS: dict[int, Callable[[Store], None]] = {2: _backfill_v2}


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
