"""hello, ping, status, version."""

from __future__ import annotations

import os
import platform

from gastown_client import __version__
from gastown_client.protocol import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Hello,
    HelloResult,
    PathsInfo,
    Ping,
    PingResult,
    SessionsInfo,
    Status,
    StatusResult,
    Version,
    VersionResult,
)
from gastownd.core.events import format_ts
from gastownd.process.daemon import Daemon
from gastownd.process.refusals import UnsupportedProtocolError

CAPABILITIES = [
    "events",
    "subscribe",
    "prune",
    "sessions",
    "attribution",
    "hooks",
    "archive",
    "metrics",
]


def hello(daemon: Daemon, request: Hello) -> HelloResult:
    if not MIN_PROTOCOL_VERSION <= request.protocol <= PROTOCOL_VERSION:
        raise UnsupportedProtocolError(
            f"client speaks protocol {request.protocol}; this daemon ({__version__}) speaks "
            f"{MIN_PROTOCOL_VERSION}..{PROTOCOL_VERSION}: upgrade the "
            f"{'daemon' if request.protocol > PROTOCOL_VERSION else 'client'}"
        )
    return HelloResult(
        daemon_version=__version__,
        protocol=PROTOCOL_VERSION,
        min_protocol=MIN_PROTOCOL_VERSION,
        capabilities=CAPABILITIES,
        pid=os.getpid(),
        started_at=format_ts(daemon.started_at.timestamp()),
    )


def ping(daemon: Daemon, request: Ping) -> PingResult:
    return PingResult()


def version(daemon: Daemon, request: Version) -> VersionResult:
    return VersionResult(
        daemon_version=__version__,
        protocol=PROTOCOL_VERSION,
        min_protocol=MIN_PROTOCOL_VERSION,
        python=platform.python_version(),
    )


async def status(daemon: Daemon, request: Status) -> StatusResult:
    paths = daemon.paths
    server = daemon.server
    eventlog = daemon.eventlog.info()
    eventlog.subscribers = daemon.subscriptions.count()
    counts, remote = await daemon.sessions.read(daemon.sessions.store.session_counts)
    sessions = SessionsInfo(
        known=sum(counts.values()) + remote,
        open=counts.get("open", 0),
        ended=counts.get("squashed", 0) + counts.get("abandoned", 0),
        logged=counts.get("logged", 0),
        remote=remote,
    )
    return StatusResult(
        daemon_version=__version__,
        protocol=PROTOCOL_VERSION,
        pid=os.getpid(),
        started_at=format_ts(daemon.started_at.timestamp()),
        uptime_s=round(daemon.uptime_s(), 3),
        town_root=str(paths.town),
        paths=PathsInfo(
            socket=str(paths.socket),
            private_dir=str(paths.private_dir),
            events=str(paths.events),
            config=str(paths.config) if paths.config else None,
        ),
        connections=len(server.connections),
        requests=server.requests,
        eventlog=eventlog,
        sessions=sessions,
        federation=await daemon.federation.info(),
        hooks_trimmed=daemon.counters.hooks_trimmed,
        hooks_lost=daemon.counters.hooks_lost,
        spool_entries_skipped=daemon.counters.spool_entries_skipped,
        config_restart_pending=list(daemon.restart_pending),
        indexing=daemon.eventlog.indexing,
    )
