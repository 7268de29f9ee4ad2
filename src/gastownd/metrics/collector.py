"""At scrape time: copy every part's counters into a :class:`Snapshot`, on the event loop.

``gather`` runs on the event loop, where the parts change, so one scrape
sees one instant; the only waits are the two store reads ``status`` makes
too (session counts, federation backlog). ``exposition.render`` turns a
snapshot into text off the loop (the HTTP thread, a worker thread).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gastown_client import __version__
from gastown_client.protocol import EventLogInfo, FederationInfo
from gastownd.metrics.buckets import BucketsView
from gastownd.process.daemon import Daemon

# Reported even at zero, so that a rate or an alert has a series from the start.
SESSION_STATES = ("open", "squashed", "abandoned", "logged")


@dataclass(frozen=True)
class OpView:
    count: int
    errors: dict[str, int]
    seconds: BucketsView


@dataclass
class Snapshot:
    """Every value one scrape reports, copied on the event loop."""

    version: str
    started_at: float
    connections: int = 0
    requests: dict[str, OpView] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    subscribers: int = 0
    eventlog: EventLogInfo | None = None
    fsync_seconds: BucketsView | None = None
    batch_lines: BucketsView | None = None
    prune_seconds: BucketsView | None = None
    sessions: dict[str, int] | None = None
    hook_calls: dict[str, int] = field(default_factory=dict)
    hooks_spooled: int = 0
    hooks_trimmed: int = 0
    attributions: dict[str, int] = field(default_factory=dict)
    digests: int = 0
    federation: FederationInfo | None = None
    federation_lag: BucketsView | None = None


async def gather(daemon: Daemon) -> Snapshot:
    """Copy the daemon's counters (event loop)."""
    snapshot = Snapshot(version=__version__, started_at=daemon.started_at.timestamp())
    server = daemon.server
    snapshot.connections = len(server.connections)
    snapshot.requests = {
        _op_name(op): OpView(stats.count, dict(stats.errors), stats.seconds.view())
        for op, stats in list(server.meter.ops.items())
    }
    snapshot.refused = dict(server.meter.refused)
    snapshot.subscribers = daemon.subscriptions.count()
    eventlog = daemon.eventlog
    if eventlog.file is not None:
        snapshot.eventlog = eventlog.info()
        snapshot.fsync_seconds = eventlog.file.fsync_seconds.view()
        snapshot.batch_lines = eventlog.writer.batch_lines.view()
        snapshot.prune_seconds = eventlog.prune_seconds.view()
    counters = daemon.counters
    snapshot.hook_calls = dict(counters.hook_calls)
    snapshot.hooks_spooled = counters.hooks_spooled
    snapshot.hooks_trimmed = counters.hooks_trimmed
    sessions = daemon.sessions
    snapshot.attributions = dict(sessions.attributions_recorded)
    snapshot.digests = sessions.digests_saved
    counts, remote = await sessions.read(sessions.store.session_counts)
    snapshot.sessions = {**dict.fromkeys(SESSION_STATES, 0), **counts, "remote": remote}
    federation = daemon.federation
    if federation.enabled:
        snapshot.federation_lag = federation.lag_view()
        snapshot.federation = await federation.info()
    return snapshot


def _op_name(op: type) -> str:
    tag = op.__struct_config__.tag  # type: ignore[attr-defined]
    return tag if isinstance(tag, str) else op.__name__.lower()
