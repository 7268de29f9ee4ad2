"""The town's event log: one writer appends, readers and followers are served from memory and
the index, expired lines move into day files (see docs/architecture.md).

The public face is :class:`EventLog` (``event_log.py``); the other modules are its parts.
"""

from gastownd.eventlog.event_log import Backlog, BacklogGap, EventLog

__all__ = ["Backlog", "BacklogGap", "EventLog"]
