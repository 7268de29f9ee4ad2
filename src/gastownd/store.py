"""The only SQLite user: wisps, steps, digests, chain heads, attributions, outbox.

Synchronous by design: the shell calls it through ``anyio.to_thread`` with one
``CapacityLimiter(1)``, so the single connection is used strictly serially.
Every public write is one transaction; with WAL and ``synchronous=FULL`` a
committed transaction survives a crash or power loss.

Schema changes: bump ``SCHEMA_VERSION`` and add a step to ``MIGRATIONS``;
``PRAGMA user_version`` records where a database stands.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from gastownd.core.digest import Digest
from gastownd.core.wisp import AppendStep, Effect, EmitLine, SaveDigest, SaveWisp, Step, Wisp

SCHEMA_VERSION = 1

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE wisps (
        session_id TEXT PRIMARY KEY,
        segment INTEGER NOT NULL,
        state TEXT NOT NULL,
        actor TEXT NOT NULL,
        tmux_session TEXT,
        started_at REAL NOT NULL,
        last_activity_at REAL NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX wisps_state ON wisps(state, last_activity_at);
    CREATE INDEX wisps_actor ON wisps(actor, started_at);
    CREATE INDEX wisps_started ON wisps(started_at);
    CREATE TABLE steps (
        session_id TEXT NOT NULL,
        segment INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (session_id, segment, seq)
    );
    CREATE TABLE digests (
        digest_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        segment INTEGER NOT NULL,
        actor TEXT NOT NULL,
        chain_pos INTEGER NOT NULL,
        ended_at REAL NOT NULL,
        body BLOB NOT NULL
    );
    CREATE UNIQUE INDEX digests_chain ON digests(actor, chain_pos);
    CREATE INDEX digests_session ON digests(session_id, segment);
    CREATE TABLE heads (
        actor TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        length INTEGER NOT NULL
    );
    CREATE TABLE attributions (
        id INTEGER PRIMARY KEY,
        issue TEXT NOT NULL,
        session_id TEXT NOT NULL,
        segment INTEGER,
        action TEXT NOT NULL,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        rule TEXT NOT NULL
    );
    CREATE INDEX attributions_issue ON attributions(issue, at);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        body BLOB NOT NULL
    );
    CREATE TABLE spool_progress (
        name TEXT PRIMARY KEY,
        offset INTEGER NOT NULL
    );
    """,
}

_wisp_encoder = msgspec.json.Encoder()
_wisp_decoder = msgspec.json.Decoder(Wisp)
_step_decoder = msgspec.json.Decoder(Step)
_digest_decoder = msgspec.json.Decoder(Digest)
_emit_decoder = msgspec.json.Decoder(EmitLine)


@dataclass(frozen=True)
class NewAttribution:
    issue: str
    session_id: str
    segment: int | None
    action: str
    at: float
    actor: str
    rule: str


@dataclass(frozen=True)
class AttributionRow(NewAttribution):
    """A stored attribution, with the digest of its segment once it exists."""

    digest_id: str | None


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema {version}, newer than this gastownd ({SCHEMA_VERSION})"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # One script, one transaction: a crash leaves the old version intact.
            self._db.executescript(
                f"BEGIN IMMEDIATE;{MIGRATIONS[target]}PRAGMA user_version = {target};COMMIT;"
            )

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

    def sessions_with_prefix(self, prefix: str, limit: int = 4) -> list[str]:
        rows = self._db.execute(
            "SELECT session_id FROM wisps WHERE session_id >= ? AND session_id < ? "
            "ORDER BY session_id LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        ).fetchall()
        return [r[0] for r in rows]

    def known_sessions(self, session_ids: Iterable[str]) -> set[str]:
        ids = list(session_ids)
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT session_id FROM wisps WHERE session_id IN ({marks})", chunk
            )
            found.update(r[0] for r in rows)
        return found

    def wisps_listing(
        self, *, actor_like: Sequence[str], state: str | None, limit: int
    ) -> list[Wisp]:
        """Wisps newest start first; ``actor_like``: case-insensitive substrings, all must match."""
        where = ["1=1"]
        args: list[Any] = []
        for needle in actor_like:
            where.append("instr(lower(actor), ?) > 0")
            args.append(needle.lower())
        if state is not None:
            where.append("state = ?")
            args.append(state)
        rows = self._db.execute(
            f"SELECT body FROM wisps WHERE {' AND '.join(where)} ORDER BY started_at DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_wisp_decoder.decode(body) for (body,) in rows]

    # ------------------------------------------------------------- digests

    def digest(self, digest_id: str) -> Digest | None:
        row = self._db.execute(
            "SELECT body FROM digests WHERE digest_id = ?", (digest_id,)
        ).fetchone()
        return _digest_decoder.decode(row[0]) if row else None

    def digests_with_prefix(self, prefix: str, limit: int = 4) -> list[str]:
        rows = self._db.execute(
            "SELECT digest_id FROM digests WHERE digest_id >= ? AND digest_id < ? "
            "ORDER BY digest_id LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        ).fetchall()
        return [r[0] for r in rows]

    def latest_digest_of_session(self, session_id: str) -> Digest | None:
        row = self._db.execute(
            "SELECT body FROM digests WHERE session_id = ? ORDER BY segment DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        return _digest_decoder.decode(row[0]) if row else None

    def chain(self, actor: str, limit: int | None = None) -> list[Digest]:
        """The actor's digests, newest first (all of them when ``limit`` is None)."""
        rows = self._db.execute(
            "SELECT body FROM digests WHERE actor = ? ORDER BY chain_pos DESC LIMIT ?",
            (actor, -1 if limit is None else limit),
        ).fetchall()
        return [_digest_decoder.decode(body) for (body,) in rows]

    def chain_length(self, actor: str) -> int:
        row = self._db.execute("SELECT length FROM heads WHERE actor = ?", (actor,)).fetchone()
        return int(row[0]) if row else 0

    # --------------------------------------------------------------- writes

    def apply(
        self,
        effects: Sequence[Effect],
        attributions: Sequence[NewAttribution] = (),
        spool_mark: tuple[str, int] | None = None,
    ) -> list[int]:
        """Persist one op in one transaction: its effects, the attributions it records
        and, for a spooled request, how far its spool file has been applied.

        Returns the outbox ids of the event-log lines it causes.
        """
        with self._transaction():
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
                case EmitLine():
                    cursor = self._db.execute(
                        "INSERT INTO outbox (body) VALUES (?)", (_wisp_encoder.encode(effect),)
                    )
                    assert cursor.lastrowid is not None
                    outbox.append(cursor.lastrowid)
        return outbox

    def _save_digest(self, digest: Digest) -> None:
        length = self.chain_length(digest.actor)
        self._db.execute(
            "INSERT INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                digest.digest_id,
                digest.session_id,
                digest.segment,
                digest.actor,
                length,
                digest.ended_at,
                _wisp_encoder.encode(digest),
            ),
        )
        self._db.execute(
            "DELETE FROM steps WHERE session_id = ? AND segment = ?",
            (digest.session_id, digest.segment),
        )
        self._db.execute(
            "INSERT OR REPLACE INTO heads VALUES (?, ?, ?)", (digest.actor, digest.hash, length + 1)
        )

    def pending_lines(self) -> list[tuple[int, EmitLine]]:
        rows = self._db.execute("SELECT id, body FROM outbox ORDER BY id").fetchall()
        return [(row_id, _emit_decoder.decode(body)) for row_id, body in rows]

    def lines_done(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._transaction():
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    # ---------------------------------------------------------- attribution

    def attributions(self, issue: str) -> list[AttributionRow]:
        rows = self._db.execute(
            "SELECT a.issue, a.session_id, a.segment, a.action, a.at, a.actor, a.rule, "
            "d.digest_id FROM attributions a LEFT JOIN digests d "
            "ON d.session_id = a.session_id AND d.segment = a.segment "
            "WHERE a.issue = ? ORDER BY a.at, a.id",
            (issue,),
        ).fetchall()
        return [AttributionRow(*row) for row in rows]

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
