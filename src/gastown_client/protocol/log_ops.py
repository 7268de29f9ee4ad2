"""The event log's ops: emit, query, subscribe, unsubscribe, prune."""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from gastown_client.protocol.envelope import Request, Returning

EVENT_TYPE_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
Visibility = Literal["feed", "audit", "both"]


class Emit(Returning["EmitResult"], tag="emit"):
    type: str
    actor: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    visibility: Visibility = "feed"

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
    """Filters shared by ``query`` and ``subscribe``; never sent itself.

    ``types``: any of these types (empty: all). ``actor``: case-sensitive
    substring of the actor. ``session``: equals ``payload.session_id``.
    ``since``/``until``: inclusive bounds, RFC 3339 UTC (``...Z``).
    """

    types: list[str] = msgspec.field(default_factory=list)
    actor: str | None = None
    session: str | None = None
    since: str | None = None
    until: str | None = None
    # Federation: the whole town's lines (``all_nodes``) or one node's (``node``); each
    # event then carries a top-level ``"node"`` key. Without either: this node's log.
    all_nodes: bool = False
    node: str | None = None


class IndexingProgress(msgspec.Struct, kw_only=True):
    """The older lines the daemon is still indexing after a start with no snapshot:
    until then queries see only the lines indexed so far."""

    lines: int  # lines to index in the background
    bytes_done: int
    bytes_total: int


class Query(EventFilter, Returning["QueryResult"], tag="query"):
    """``archive``: also search the lines retention moved to the archive."""

    limit: int = 20
    oldest_first: bool = False
    archive: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.limit <= 100_000:
            raise ValueError("limit must be between 1 and 100000")


class QueryResult(msgspec.Struct, kw_only=True):
    events: list[msgspec.Raw]
    cursor: str
    # Set when the answer comes from the lines indexed so far, not from all of them.
    indexing: IndexingProgress | None = None


class Subscribe(EventFilter, Returning["SubscribeResult"], tag="subscribe"):
    """Push every matching line after ``cursor``.

    ``None``: only lines appended from now on; ``"start"``: from the oldest
    retained line; else a cursor received earlier (``EPOCH:SEQ``).
    """

    cursor: str | None = None


class SubscribeResult(msgspec.Struct, kw_only=True):
    subscription: int
    cursor: str
    resync: bool = False


class Unsubscribe(Returning["UnsubscribeResult"], tag="unsubscribe"):
    subscription: int


class UnsubscribeResult(msgspec.Struct, kw_only=True):
    subscription: int


class Prune(Returning["PruneResult"], tag="prune"):
    dry_run: bool = False


class PruneResult(msgspec.Struct, kw_only=True):
    dry_run: bool
    pruned: dict[str, int]
    pruned_total: int
    kept: int
    bytes_freed: int
    archived: int = 0
    duration_ms: float = 0.0
