"""The town's event log: one writer appends, readers and followers are served from memory and
the index, expired lines move into day files (see docs/architecture.md).

The public face is :class:`EventLog` (``event_log.py``, with its concerns mixed in from
``index_upkeep``, ``background_index``, ``index_checkpoints`` and ``reads``) and the
backlog a resuming subscriber replays; the other modules are its parts.
"""

from gastownd.eventlog.event_log import EventLog
from gastownd.eventlog.reads import Backlog, BacklogGap

__all__ = ["Backlog", "BacklogGap", "EventLog"]
