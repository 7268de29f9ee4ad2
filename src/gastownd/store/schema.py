"""The store's schema: one SQL script per version, applied in order by ``Store``.

``PRAGMA user_version`` records where a database stands. A step may also have
a Python backfill (``local.BACKFILLS``), run in the same transaction. Every
released schema has a database in ``tests/data/`` that must still open.

Schema 2: a permanent record per session the town has seen (``sessions``,
one per session and node), ``meta`` checkpoints, and federation: the
``node`` of digests and attributions ('' for this node), remote event lines
(``remote_events``, their ``arrival`` order is the remote part of a
cursor), and what is known of each other node (``nodes``).

Schema 3: when each remote line was received (``remote_events.received``, this node's clock;
0 for lines stored before): a remote line expires when its ``ts`` and its arrival both are
past its TTL, so a peer whose clock is behind cannot make receivers delete its lines early.
"""

from __future__ import annotations

import sqlite3

import msgspec

from gastownd.core.digest import Digest

_encoder = msgspec.json.Encoder()

SCHEMA_VERSION = 3

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
    # One permanent record per session the town has seen (hook, op or log line).
    2: """
    CREATE TABLE sessions (
        session_id TEXT NOT NULL,
        node TEXT NOT NULL DEFAULT '',
        actor TEXT NOT NULL,
        actor_key TEXT NOT NULL,
        role TEXT,
        topic TEXT,
        cwd TEXT,
        actor_pid TEXT,
        first_start_at REAL NOT NULL,
        last_start_at REAL NOT NULL,
        last_activity_at REAL NOT NULL,
        starts INTEGER NOT NULL,
        segments INTEGER NOT NULL,
        state TEXT NOT NULL,
        ended_at REAL,
        end_reason TEXT,
        rev INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (session_id, node)
    );
    CREATE INDEX sessions_recent ON sessions(last_start_at);
    CREATE INDEX sessions_unended ON sessions(actor_key, last_start_at) WHERE ended_at IS NULL;
    CREATE INDEX sessions_rev ON sessions(rev) WHERE node = '';
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    ALTER TABLE digests ADD COLUMN node TEXT NOT NULL DEFAULT '';
    ALTER TABLE heads ADD COLUMN ended_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE attributions ADD COLUMN node TEXT NOT NULL DEFAULT '';
    ALTER TABLE attributions ADD COLUMN origin_id INTEGER;
    CREATE UNIQUE INDEX attributions_origin ON attributions(node, origin_id)
        WHERE origin_id IS NOT NULL;
    CREATE TABLE remote_events (
        arrival INTEGER PRIMARY KEY AUTOINCREMENT,
        node TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        type TEXT NOT NULL,
        actor TEXT NOT NULL,
        session TEXT,
        line BLOB NOT NULL,
        UNIQUE (node, epoch, seq)
    );
    CREATE INDEX remote_events_type ON remote_events(type, ts);
    CREATE INDEX remote_events_ts ON remote_events(ts);
    CREATE INDEX remote_events_session ON remote_events(session, ts) WHERE session IS NOT NULL;
    CREATE INDEX remote_events_node ON remote_events(node, ts);
    CREATE TABLE nodes (
        node TEXT PRIMARY KEY,
        last_record_at REAL NOT NULL,
        events INTEGER NOT NULL DEFAULT 0,
        sessions INTEGER NOT NULL DEFAULT 0,
        digests INTEGER NOT NULL DEFAULT 0,
        attributions INTEGER NOT NULL DEFAULT 0
    );
    """,
    # When a remote line was received, by this node's clock (see ``RemoteStore.prune_events``).
    3: """
    ALTER TABLE remote_events ADD COLUMN received REAL NOT NULL DEFAULT 0;
    """,
}


def insert_digest(db: sqlite3.Connection, digest: Digest, chain_pos: int, node: str) -> None:
    """One digest row: this node's ('') or another's; its body is the digest as JSON."""
    db.execute(
        "INSERT INTO digests (digest_id, session_id, segment, actor, chain_pos, ended_at, body, "
        "node) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            digest.digest_id,
            digest.session_id,
            digest.segment,
            digest.actor,
            chain_pos,
            digest.ended_at,
            _encoder.encode(digest),
            node,
        ),
    )


def read_meta(db: sqlite3.Connection, key: str) -> str | None:
    """A value of the ``meta`` table (checkpoints and marks), or None when unset."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else None
