"""Federation in the store: other nodes' records, and what this node has sent.

Shares ``Store``'s connection (and its single-thread discipline). Remote
records are applied idempotently, so a record delivered twice (a redelivery,
a republish after the stream's duplicate window) changes nothing:

- event lines go to ``remote_events``, unique per ``(node, epoch, seq)``,
  numbered by ``arrival`` (never reused), which orders a subscriber's feed;
- session records are upserted per ``(session_id, node)``, the highest
  ``rev`` winning;
- digests are immutable (``digest_id``); the one that arrived last becomes
  the actor's chain head (what this node has seen, not what clocks say), so
  the next local digest links to it;
- attributions are unique per ``(node, origin_id)``.

What this node has published is tracked by high-water marks in ``meta``
(the event cursor, the session ``rev``, the digest ``rowid``, the attribution
``id``), so federation turned on later sends the whole history, and nothing
grows while it is off.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import msgspec

from gastownd.core.digest import Digest
from gastownd.core.events import parse_line, parse_ts, session_of
from gastownd.core.records import (
    AnyMessage,
    AttributionMessage,
    DigestMessage,
    EventMessage,
    SessionMessage,
    session_record,
)
from gastownd.core.session_record import SessionRecord, identity_key
from gastownd.store.schema import insert_digest, read_meta

MARK_EVENTS = "fed_events"
MARK_SESSIONS = "fed_sessions"
MARK_DIGESTS = "fed_digests"
MARK_ATTRIBUTIONS = "fed_attributions"
MARK_PRUNED = "fed_remote_pruned_through"
# The secret that keys this node's Nats-Msg-Ids (``core.records.dedupe_id``), made once.
MSG_ID_KEY = "fed_msg_id_key"
# When the stream the other marks refer to was made: a stream made again holds none of them.
MARK_STREAM = "fed_stream_created"
# The daemon run that last held this node's name with this store (federation_identity).
MARK_INSTANCE = "fed_instance"
# Remote records rejected so far, by reason (JSON): status shows them across restarts.
REJECTED_COUNTS = "fed_rejected"

_digest_decoder = msgspec.json.Decoder(Digest)

# A SessionRecord's columns are its fields; ``actor_key`` is derived from ``actor``.
_SESSION_COLUMNS = (*SessionRecord.__struct_fields__, "actor_key")
_SENT_SESSION_COLUMNS = ", ".join(c for c in SessionRecord.__struct_fields__ if c != "node")
# Another node's record: the highest ``rev`` wins, whole.
_UPSERT_SESSION = (
    f"INSERT INTO sessions ({', '.join(_SESSION_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_SESSION_COLUMNS))}) "
    "ON CONFLICT (session_id, node) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SESSION_COLUMNS if c not in ("session_id", "node"))
    + " WHERE excluded.rev > sessions.rev"
)


class RemoteEvent(msgspec.Struct, frozen=True):
    """A remote event line as stored: ``arrival`` orders the feed of remote lines."""

    arrival: int
    node: str
    ts: int
    type: str
    actor: str
    session: str | None
    line: bytes


class Applied(msgspec.Struct):
    """What one batch of remote records changed."""

    events: list[RemoteEvent] = msgspec.field(default_factory=list)
    # actor -> hash, for actors whose chain head is now another node's digest.
    heads: dict[str, str] = msgspec.field(default_factory=dict)
    duplicates: int = 0
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    # Records the store refused: (index in the batch, why). The rest were applied.
    failed: list[tuple[int, str]] = msgspec.field(default_factory=list)


class NodeRow(msgspec.Struct, frozen=True):
    node: str
    last_record_at: float
    events: int
    sessions: int
    digests: int
    attributions: int


class EventQuery(msgspec.Struct, frozen=True):
    """Filters of a remote event query (the same as ``core.query.EventFilter``)."""

    types: Sequence[str] = ()
    actor: str | None = None
    session: str | None = None
    since: int | None = None
    until: int | None = None
    node: str | None = None


class RemoteStore:
    def __init__(
        self, db: sqlite3.Connection, transaction: Callable[[], AbstractContextManager[None]]
    ) -> None:
        self._db = db
        self._transaction = transaction

    # ------------------------------------------------------------ applying

    def apply(self, messages: Sequence[AnyMessage], now: float) -> Applied:
        """Apply checked remote records in one transaction.

        A record the store still refuses (a value no column takes) costs only
        itself: the batch is applied again record by record, and the ones that
        fail are listed in ``Applied.failed`` for the caller to reject. The
        store's own trouble (``sqlite3.OperationalError``: a full disk, an I/O
        error) is no record's fault, and raises.
        """
        try:
            return self._apply_batch(messages, now)
        except sqlite3.OperationalError:
            raise
        except Exception:  # some record's fault: find which, below
            pass
        applied = Applied()
        for index, message in enumerate(messages):
            try:
                one = self._apply_batch([message], now)
            except sqlite3.OperationalError:
                raise
            except Exception as exc:  # this record's fault: it is rejected
                applied.failed.append((index, f"{type(exc).__name__}: {exc}"))
                continue
            applied.events += one.events
            applied.heads.update(one.heads)
            applied.duplicates += one.duplicates
            for kind, count in one.counts.items():
                applied.counts[kind] = applied.counts.get(kind, 0) + count
        return applied

    def _apply_batch(self, messages: Sequence[AnyMessage], now: float) -> Applied:
        applied = Applied()
        per_node: dict[str, Counter[str]] = {}
        with self._transaction():
            for message in messages:
                kind = type(message).__struct_config__.tag
                assert isinstance(kind, str)
                added = self._apply_one(message, applied, now)
                if not added:
                    applied.duplicates += 1
                    continue
                applied.counts[kind] = applied.counts.get(kind, 0) + added
                per_node.setdefault(message.node, Counter())[_NODE_COLUMNS[kind]] += added
            for node, counts in per_node.items():
                self._db.execute(
                    "INSERT INTO nodes (node, last_record_at, events, sessions, digests, "
                    "attributions) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node) DO UPDATE SET "
                    "last_record_at = excluded.last_record_at, "
                    "events = events + excluded.events, sessions = sessions + excluded.sessions, "
                    "digests = digests + excluded.digests, "
                    "attributions = attributions + excluded.attributions",
                    (node, now, *(counts[c] for c in _NODE_COLUMNS.values())),
                )
        return applied

    def _apply_one(self, message: AnyMessage, applied: Applied, now: float) -> int:
        """How many records (event lines) ``message`` added."""
        match message:
            case EventMessage():
                return self._apply_event(message, applied, now)
            case SessionMessage():
                return int(self._apply_session(message))
            case DigestMessage():
                return int(self._apply_digest(message, applied))
            case AttributionMessage():
                return int(self._apply_attribution(message))
        raise AssertionError(message)

    def _apply_event(self, message: EventMessage, applied: Applied, now: float) -> int:
        """Each line of the run once, received ``now``; returns how many were new."""
        fresh = 0
        for seq, raw in zip(message.seqs, message.lines, strict=True):
            line = bytes(raw)
            parsed = parse_line(line)
            assert parsed is not None  # checked by decode_message
            ts = parse_ts(parsed.ts) or 0
            session = session_of(parsed)
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO remote_events (node, epoch, seq, ts, type, actor, "
                "session, line, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.node,
                    message.epoch,
                    seq,
                    ts,
                    parsed.type,
                    parsed.actor,
                    session,
                    line,
                    now,
                ),
            )
            if cursor.rowcount == 0:
                continue
            assert cursor.lastrowid is not None
            applied.events.append(
                RemoteEvent(
                    cursor.lastrowid, message.node, ts, parsed.type, parsed.actor, session, line
                )
            )
            fresh += 1
        return fresh

    def _apply_session(self, message: SessionMessage) -> bool:
        record = session_record(message)
        values = [getattr(record, name) for name in SessionRecord.__struct_fields__]
        cursor = self._db.execute(_UPSERT_SESSION, (*values, identity_key(record.actor)))
        return cursor.rowcount > 0

    def _apply_digest(self, message: DigestMessage, applied: Applied) -> bool:
        """Store a digest; it becomes its actor's chain head unless one here already follows it.

        The head is the newest digest this node has *seen* (causal order: arrival), not
        the one that claims the latest ``ended_at``: clocks of machines disagree, and a
        node whose clock is behind would otherwise never be linked after, which makes
        false forks and skipped links. The stream delivers a digest after its
        predecessor; one redelivered late, that a digest here already links to, is old.
        """
        digest = message.digest
        if self._db.execute(
            "SELECT 1 FROM digests WHERE digest_id = ?", (digest.digest_id,)
        ).fetchone():
            return False
        row = self._db.execute(
            "SELECT length FROM heads WHERE actor = ?", (digest.actor,)
        ).fetchone()
        length = int(row[0]) if row else 0
        followed = self._db.execute(
            "SELECT 1 FROM digests WHERE actor = ? "
            "AND json_extract(CAST(body AS TEXT), '$.prev_hash') = ? LIMIT 1",
            (digest.actor, digest.hash),
        ).fetchone()
        insert_digest(self._db, digest, length, message.node)
        newest = followed is None
        self._db.execute(
            "INSERT INTO heads (actor, hash, length, ended_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (actor) DO UPDATE SET length = excluded.length, "
            "hash = CASE WHEN ? THEN excluded.hash ELSE hash END, "
            "ended_at = CASE WHEN ? THEN excluded.ended_at ELSE ended_at END",
            (digest.actor, digest.hash, length + 1, digest.ended_at, newest, newest),
        )
        if newest:
            applied.heads[digest.actor] = digest.hash
        return True

    def _apply_attribution(self, m: AttributionMessage) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO attributions (issue, session_id, segment, action, at, actor, "
            "rule, node, origin_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m.issue, m.session_id, m.segment, m.action, m.at, m.actor, m.rule, m.node, m.local_id),
        )
        return cursor.rowcount > 0

    # ------------------------------------------------------------ reading

    def last_arrival(self) -> int:
        [(arrival,)] = self._db.execute("SELECT coalesce(max(arrival), 0) FROM remote_events")
        seq_row = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'remote_events'"
        ).fetchone()
        # AUTOINCREMENT's counter survives deletions: the true high-water mark.
        return max(int(arrival), int(seq_row[0]) if seq_row else 0)

    def pruned_through(self) -> int:
        return int(read_meta(self._db, MARK_PRUNED) or 0)

    def query_events(self, flt: EventQuery, limit: int, *, oldest_first: bool) -> list[RemoteEvent]:
        """Matching remote lines by time, newest first unless asked; one index walk per type."""
        order = "ASC" if oldest_first else "DESC"
        found: list[RemoteEvent] = []
        types: list[str | None] = [*flt.types] if flt.types else [None]
        for type_ in types:
            where, args = _where(flt, type_)
            rows = self._db.execute(
                f"SELECT {_EVENT_COLUMNS} FROM remote_events WHERE {where} "
                f"ORDER BY ts {order}, arrival {order} LIMIT ?",
                (*args, limit),
            ).fetchall()
            found += [RemoteEvent(*row) for row in rows]
        found.sort(key=lambda e: (e.ts, e.arrival), reverse=not oldest_first)
        return found[:limit]

    def events_between(
        self, flt: EventQuery, after: int, through: int, limit: int
    ) -> list[RemoteEvent]:
        """Matching remote lines with ``after < arrival <= through``, in arrival order."""
        where, args = _where(flt, None)
        rows = self._db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM remote_events WHERE arrival > ? AND arrival <= ? "
            f"AND {where} ORDER BY arrival LIMIT ?",
            (after, through, *args, limit),
        ).fetchall()
        return [RemoteEvent(*row) for row in rows]

    def nodes(self) -> list[NodeRow]:
        rows = self._db.execute(
            "SELECT node, last_record_at, events, sessions, digests, attributions FROM nodes "
            "ORDER BY node"
        ).fetchall()
        return [NodeRow(*row) for row in rows]

    # ------------------------------------------------------------ pruning

    def prune_events(self, expired: Sequence[tuple[str, float]], batch: int = 5000) -> int:
        """Delete up to ``batch`` remote lines older than their type's cutoff, in one
        transaction; the caller repeats until it returns 0, so local work waits at most
        one batch.

        A line is older when its ``ts`` and the time it was received here both are: a peer
        whose clock is behind dates its lines in the past, and receivers would delete them
        as soon as they came (lines stored before schema 3 were received at 0)."""
        with self._transaction():
            arrivals: list[int] = []
            for type_, cutoff in expired:
                rows = self._db.execute(
                    "SELECT arrival FROM remote_events WHERE type = ? AND ts < ? "
                    "AND received < ? LIMIT ?",
                    (type_, cutoff, cutoff, batch - len(arrivals)),
                ).fetchall()
                arrivals += [r[0] for r in rows]
                if len(arrivals) >= batch:
                    break
            if not arrivals:
                return 0
            self._db.executemany(
                "DELETE FROM remote_events WHERE arrival = ?", [(a,) for a in arrivals]
            )
            self._db.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                "value = max(CAST(value AS INTEGER), excluded.value)",
                (MARK_PRUNED, max(arrivals)),
            )
        return len(arrivals)

    def remote_types(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT type FROM remote_events")]

    def newest_ts(self) -> int | None:
        """The newest ``ts`` of the remote lines held (None: none is)."""
        row = self._db.execute("SELECT MAX(ts) FROM remote_events").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # ------------------------------------------------------------ publishing

    def rejected_counts(self) -> dict[str, int]:
        try:
            counts = msgspec.json.decode(read_meta(self._db, REJECTED_COUNTS) or "{}")
        except msgspec.DecodeError:
            return {}
        if not isinstance(counts, dict):
            return {}
        return {str(k): v for k, v in counts.items() if isinstance(v, int)}

    def set_marks(self, marks: dict[str, str]) -> None:
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", marks.items())

    def sessions_after(self, rev: int, limit: int) -> list[dict[str, Any]]:
        """This node's session records changed after ``rev``, oldest change first, by
        field (without ``node``: the message header names it)."""
        return self._rows(
            f"SELECT {_SENT_SESSION_COLUMNS} FROM sessions WHERE node = '' AND rev > ? "
            "ORDER BY rev LIMIT ?",
            (rev, limit),
        )

    def digests_after(self, rowid: int, limit: int) -> list[tuple[int, Digest]]:
        rows = self._db.execute(
            "SELECT rowid, body FROM digests WHERE node = '' AND rowid > ? ORDER BY rowid LIMIT ?",
            (rowid, limit),
        ).fetchall()
        return [(int(r), _digest_decoder.decode(body)) for r, body in rows]

    def attributions_after(self, row_id: int, limit: int) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT id AS local_id, issue, session_id, segment, action, at, actor, rule "
            "FROM attributions WHERE node = '' AND id > ? ORDER BY id LIMIT ?",
            (row_id, limit),
        )

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        cursor = self._db.execute(sql, args)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def backlog(self, marks: dict[str, int]) -> dict[str, int]:
        """How many local records of each stored kind wait to be published."""
        counts = {}
        for kind, sql in (
            ("sessions", "SELECT count(*) FROM sessions WHERE node = '' AND rev > ?"),
            ("digests", "SELECT count(*) FROM digests WHERE node = '' AND rowid > ?"),
            ("attributions", "SELECT count(*) FROM attributions WHERE node = '' AND id > ?"),
        ):
            [(count,)] = self._db.execute(sql, (marks.get(kind, 0),))
            counts[kind] = int(count)
        return counts


_EVENT_COLUMNS = "arrival, node, ts, type, actor, session, line"
# Record kind -> its counter in ``nodes`` (in the table's column order).
_NODE_COLUMNS = {
    "event": "events",
    "session": "sessions",
    "digest": "digests",
    "attribution": "attributions",
}


def _where(flt: EventQuery, type_: str | None) -> tuple[str, list[Any]]:
    clauses = ["1=1"]
    args: list[Any] = []
    if type_ is not None:
        clauses.append("type = ?")
        args.append(type_)
    elif flt.types:
        clauses.append(f"type IN ({','.join('?' * len(flt.types))})")
        args += list(flt.types)
    for clause, value in (
        ("session = ?", flt.session),
        ("node = ?", flt.node),
        ("instr(actor, ?) > 0", flt.actor),
        ("ts >= ?", flt.since),
        ("ts <= ?", flt.until),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    return " AND ".join(clauses), args
