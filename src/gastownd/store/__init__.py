"""The only SQLite user (a package: local records in ``local``, other nodes' in ``remote``).

Synchronous by design: the shell calls it through ``anyio.to_thread`` with one
``CapacityLimiter(1)``, so the single connection is used strictly serially.
Every public write is one transaction; with WAL and ``synchronous=FULL`` a
committed transaction survives a crash or power loss.
"""

from gastownd.core.session_record import AttributionRow, NewAttribution, SessionRecord
from gastownd.store.local import (
    LINES_RECORDED,
    LineFacts,
    Store,
)

__all__ = [
    "LINES_RECORDED",
    "AttributionRow",
    "LineFacts",
    "NewAttribution",
    "SessionRecord",
    "Store",
]
