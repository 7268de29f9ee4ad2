"""The event log's ops: emit, query, subscribe, unsubscribe, prune."""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from gastown_client.protocol.envelope import Request, Returning

EVENT_TYPE_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
Visibility = Literal["feed", "audit", "both"]


class Emit(Returning["EmitResult"], tag="emit"):
    """Append an event durably."""

    type: str
    """Matches ``[A-Za-z0-9_.:-]{1,128}``; the set of types is open."""
    actor: str
    """Not empty or blank."""
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    """Any JSON object; omitted from the line when empty."""
    visibility: Visibility = "feed"
    """Where Gas Town shows the event."""

    def __post_init__(self) -> None:
        if self.type not in _CHECKED_TYPES:
            if not EVENT_TYPE_PATTERN.fullmatch(self.type):
                raise ValueError("type must match [A-Za-z0-9_.:-]{1,128}")
            if len(_CHECKED_TYPES) < 4096:  # types repeat: remember the good ones
                _CHECKED_TYPES.add(self.type)
        if not self.actor.strip():
            raise ValueError("actor must not be empty")


_CHECKED_TYPES: set[str] = set()


class EmitResult(msgspec.Struct, kw_only=True):
    cursor: str
    event: msgspec.Raw


class EventFilter(Request):
    """Filters shared by ``query`` and ``subscribe``; never sent itself."""

    types: list[str] = msgspec.field(default_factory=list)
    """Any of these types (empty: all types)."""
    actor: str | None = None
    """A case-sensitive substring of ``actor``."""
    session: str | None = None
    """Equals ``payload.session_id``."""
    since: str | None = None
    """Inclusive lower bound on ``ts``, RFC 3339 (``2026-01-22T19:33:55Z``; offsets and
    fractions are accepted)."""
    until: str | None = None
    """Inclusive upper bound on ``ts``, as ``since``."""
    all_nodes: bool = False
    """Federation: every node's lines, not just this node's log; each event then
    carries a top-level ``"node"`` key (see [federation](federation.md))."""
    node: str | None = None
    """Federation: one node's lines (this node's name: its own log)."""


class IndexingProgress(msgspec.Struct, kw_only=True):
    """The older lines the daemon is still indexing after a start with no snapshot:
    until then queries see only the lines indexed so far."""

    lines: int  # lines to index in the background
    bytes_done: int
    bytes_total: int


class Query(EventFilter, Returning["QueryResult"], tag="query"):
    """Read events from the index, newest first."""

    limit: int = 20
    """1 to 100000."""
    oldest_first: bool = False
    """Oldest first instead."""
    archive: bool = False
    """Also search the lines retention moved to the archive (see
    [durability](durability.md#the-archive))."""

    def __post_init__(self) -> None:
        if not 0 < self.limit <= 100_000:
            raise ValueError("limit must be between 1 and 100000")


class QueryResult(msgspec.Struct, kw_only=True):
    events: list[msgspec.Raw]
    cursor: str
    # Set when the answer comes from the lines indexed so far, not from all of them.
    indexing: IndexingProgress | None = None
    # With ``archive``: the archive's days (``YYYY-MM-DD``) whose file could not be read (a
    # damaged or unreadable day file); their lines are missing from this answer.
    archive_unreadable: list[str] | None = None


class Subscribe(EventFilter, Returning["SubscribeResult"], tag="subscribe"):
    """A live stream of the matching lines after ``cursor``.

    ``None``: only lines appended from now on; ``"start"``: from the oldest
    retained line; else a cursor received earlier (``EPOCH:SEQ``).
    """

    cursor: str | None = None
    """Resume after this line (``"EPOCH:SEQ"``, from the archive if retention moved
    it); ``"start"``: from the oldest line of the live log; null: only lines appended from
    now on. With a cursor (or ``"start"``), the reply waits until older lines indexed in
    the background after a start with no snapshot are all indexed (see [`status`](#status))."""


class SubscribeResult(msgspec.Struct, kw_only=True):
    subscription: int
    cursor: str
    resync: bool = False


class Unsubscribe(Returning["UnsubscribeResult"], tag="unsubscribe"):
    """End a stream."""

    subscription: int
    """The id ``subscribe`` returned on this connection."""


class UnsubscribeResult(msgspec.Struct, kw_only=True):
    subscription: int


class Prune(Returning["PruneResult"], tag="prune"):
    """Apply retention now."""

    dry_run: bool = False
    """Only say what would be pruned."""


class PruneResult(msgspec.Struct, kw_only=True):
    dry_run: bool
    pruned: dict[str, int]
    pruned_total: int
    kept: int
    bytes_freed: int
    archived: int = 0
    duration_ms: float = 0.0
