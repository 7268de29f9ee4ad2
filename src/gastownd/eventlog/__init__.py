"""The town's event log: one writer appends, readers and followers are served from memory and
the index, expired lines move into day files (see docs/architecture.md).

The public face is :class:`EventLog` (``event_log.py``); the other modules are its parts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gastownd.eventlog.event_log import Backlog, BacklogGap, EventLog

__all__ = ["Backlog", "BacklogGap", "EventLog"]


def __getattr__(name: str) -> object:
    # Resolved on first use: an index worker (``python -m gastownd.eventlog.indexer``) imports
    # this package, and must not pay at every cold start for the event log it never uses
    # (asyncio, anyio, structlog, the store).
    if name in __all__:
        from gastownd.eventlog import event_log

        return getattr(event_log, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
