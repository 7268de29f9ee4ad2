"""Other nodes' lines in the session store: they expire with this node's TTLs (their origin
archives its own), deleted a batch per transaction so local work waits at most one batch,
and never while this clock looks wrong (``core.retention.remote_clock_suspect``): the
deletion is for good, since the town's stream does not deliver an acknowledged record again.
"""

from __future__ import annotations

import structlog

from gastownd.core.retention import RetentionPolicy, remote_clock_suspect
from gastownd.process.config import parse_duration
from gastownd.process.daemon import Daemon

log = structlog.get_logger("gastownd.pruner")


async def prune_remote(daemon: Daemon, policy: RetentionPolicy) -> int:
    """Delete the other nodes' lines past their TTL; how many went."""
    sessions = daemon.sessions
    remote = sessions.store.remote
    now = daemon.clock()
    ttls = {t: policy.ttl_for(t) for t in await sessions.db(remote.remote_types)}
    if not ttls:
        return 0
    skew_s = parse_duration(daemon.config.federation.max_clock_skew)
    suspect = remote_clock_suspect(
        now,
        await sessions.db(remote.newest_ts),
        daemon.eventlog.last_prune_at,
        max(ttls.values()),
        daemon.federation.clock_offset_s,
        skew_s,
    )
    if suspect is not None:
        log.warning(
            "remote_prune_clock_suspect",
            reason=suspect,
            now=now,
            clock_offset_s=daemon.federation.clock_offset_s,
            action="no remote line deleted",
        )
        return 0
    expired = [(t, now - ttl) for t, ttl in ttls.items()]
    removed = 0
    while expired:
        done = await sessions.db(remote.prune_events, expired)
        if not done:
            break
        removed += done
    if removed:
        log.info("remote_events_pruned", removed=removed)
    return removed
