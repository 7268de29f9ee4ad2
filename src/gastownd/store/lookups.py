"""The session store's lookups: session records, digests, chains, attributions.

Reads only, on the store's one connection (``Store`` inherits them), so the
write path in ``local.py`` reads top to bottom without them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from gastownd.core.digest import Digest
from gastownd.core.session_record import AttributionRow, SessionRecord, identity_key
from gastownd.store.schema import read_meta

digest_decoder = msgspec.json.Decoder(Digest)


class DigestRow(msgspec.Struct, frozen=True):
    """A stored digest and the node it was made on ('' for this one)."""

    digest: Digest
    node: str = ""


# The columns of ``sessions`` that hold a SessionRecord: its fields, by name.
_RECORD_COLUMNS = ", ".join(SessionRecord.__struct_fields__)
_DIGEST_COLUMNS = "body, node"


class StoreLookups:
    """What ``Store`` answers without writing."""

    _db: sqlite3.Connection

    # ------------------------------------------------------------- sessions

    def sessions_with_prefix(self, prefix: str, limit: int = 4) -> list[str]:
        return self._ids_with_prefix("sessions", "session_id", prefix, limit)

    def session_record(self, session_id: str) -> SessionRecord | None:
        """The session's record: this node's when it ran here, else another node's."""
        row = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM sessions WHERE session_id = ? "
            "ORDER BY node != '', last_start_at DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        return _session_record(row) if row else None

    def session_step_count(self, session_id: str, node: str) -> int:
        """Steps over the session's segments on ``node``: its digests' counts, and on this
        node the open segment's steps (a segment's steps are deleted with its digest)."""
        [(digested,)] = self._db.execute(
            "SELECT coalesce(sum(json_extract(CAST(body AS TEXT), '$.step_count')), 0) "
            "FROM digests WHERE session_id = ? AND node = ?",
            (session_id, node),
        ).fetchall()
        if node:
            return int(digested)
        [(running,)] = self._db.execute(
            "SELECT count(*) FROM steps WHERE session_id = ?", (session_id,)
        ).fetchall()
        return int(digested) + int(running)

    def session_listing(
        self,
        *,
        actor_like: Sequence[str],
        state: str | None,
        limit: int,
        node: str | None = None,
    ) -> list[SessionRecord]:
        """Records, latest start first; ``actor_like``: case-insensitive substrings, all
        must match."""
        where = ["1=1"]
        args: list[Any] = []
        for needle in actor_like:
            where.append("instr(lower(actor), ?) > 0")
            args.append(needle.lower())
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if node is not None:
            where.append("node = ?")
            args.append(node)
        rows = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM sessions WHERE {' AND '.join(where)} "
            "ORDER BY last_start_at DESC, session_id LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_session_record(row) for row in rows]

    def latest_session_of(self, actor: str, *, excluding: str) -> SessionRecord | None:
        """The actor's most recently started session other than ``excluding``."""
        row = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM sessions WHERE actor_key = ? AND session_id != ? "
            "ORDER BY last_start_at DESC LIMIT 1",
            (identity_key(actor), excluding),
        ).fetchone()
        return _session_record(row) if row else None

    def session_counts(self) -> tuple[dict[str, int], int]:
        """This node's recorded sessions by state (``logged``: known only from lines), and
        how many other nodes' sessions are known."""
        local = dict(
            self._db.execute("SELECT state, count(*) FROM sessions WHERE node = '' GROUP BY state")
        )
        [(remote,)] = self._db.execute("SELECT count(*) FROM sessions WHERE node != ''")
        return local, int(remote)

    def meta(self, key: str) -> str | None:
        return read_meta(self._db, key)

    # ------------------------------------------------------------- digests

    def digest(self, digest_id: str) -> DigestRow | None:
        row = self._db.execute(
            f"SELECT {_DIGEST_COLUMNS} FROM digests WHERE digest_id = ?", (digest_id,)
        ).fetchone()
        return _digest_row(row) if row else None

    def digests_with_prefix(self, prefix: str, limit: int = 4) -> list[str]:
        return self._ids_with_prefix("digests", "digest_id", prefix, limit)

    def _ids_with_prefix(self, table: str, column: str, prefix: str, limit: int) -> list[str]:
        """Distinct ids that start with ``prefix``, in order (a range scan of the index)."""
        rows = self._db.execute(
            f"SELECT DISTINCT {column} FROM {table} WHERE {column} >= ? AND {column} < ? "
            f"ORDER BY {column} LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        ).fetchall()
        return [r[0] for r in rows]

    def latest_digest_of_session(self, session_id: str) -> DigestRow | None:
        row = self._db.execute(
            f"SELECT {_DIGEST_COLUMNS} FROM digests WHERE session_id = ? "
            "ORDER BY node != '', segment DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        return _digest_row(row) if row else None

    def chain(self, actor: str, limit: int | None = None) -> list[DigestRow]:
        """The actor's digests from every node, the newest this node has seen first (all
        when ``limit`` is None): ``chain_pos`` counts arrivals, which clocks cannot skew."""
        rows = self._db.execute(
            f"SELECT {_DIGEST_COLUMNS} FROM digests WHERE actor = ? "
            "ORDER BY chain_pos DESC LIMIT ?",
            (actor, -1 if limit is None else limit),
        ).fetchall()
        return [_digest_row(row) for row in rows]

    def chain_length(self, actor: str) -> int:
        row = self._db.execute("SELECT length FROM heads WHERE actor = ?", (actor,)).fetchone()
        return int(row[0]) if row else 0

    # ---------------------------------------------------------- attribution

    def attributions(self, issue: str) -> list[AttributionRow]:
        rows = self._db.execute(
            "SELECT a.issue, a.session_id, a.segment, a.action, a.at, a.actor, a.rule, "
            "d.digest_id, a.node FROM attributions a LEFT JOIN digests d "
            "ON d.session_id = a.session_id AND d.segment = a.segment AND d.node = a.node "
            "WHERE a.issue = ? ORDER BY a.at, a.id",
            (issue,),
        ).fetchall()
        names = AttributionRow.__struct_fields__
        return [AttributionRow(**dict(zip(names, row, strict=True))) for row in rows]


def _session_record(row: Sequence[Any]) -> SessionRecord:
    return SessionRecord(**dict(zip(SessionRecord.__struct_fields__, row, strict=True)))


def _digest_row(row: tuple[bytes, str]) -> DigestRow:
    return DigestRow(digest_decoder.decode(row[0]), row[1])
