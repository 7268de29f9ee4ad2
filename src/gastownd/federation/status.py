"""What ``status`` and the metrics say of federation, gathered from its parts."""

from __future__ import annotations

from typing import Any

from gastown_client.protocol import FederationInfo, NodeConflict, NodeInfo
from gastownd.core.events import format_ts
from gastownd.eventlog import EventLog
from gastownd.federation.consumer import Consumer
from gastownd.federation.health import LinkHealth
from gastownd.federation.identity import Holder
from gastownd.federation.publisher import Publisher
from gastownd.process.config import FederationConfig
from gastownd.sessions.recorder import SessionRecorder
from gastownd.store.remote import MARK_ATTRIBUTIONS, MARK_DIGESTS, MARK_SESSIONS


async def federation_info(
    *,
    config: FederationConfig,
    node: str,
    town: str,
    stream: str,
    instance: str,
    connected: bool,
    connection: Any,
    node_conflict: Holder | None,
    clock_offset_s: float | None,
    eventlog: EventLog,
    sessions: SessionRecorder,
    publisher: Publisher,
    consumer: Consumer,
    health: LinkHealth,
) -> FederationInfo:
    """``connection``: the nats-py client of the session, if any."""
    remote = sessions.store.remote
    marks = {
        "sessions": publisher.row_mark(MARK_SESSIONS),
        "digests": publisher.row_mark(MARK_DIGESTS),
        "attributions": publisher.row_mark(MARK_ATTRIBUTIONS),
    }
    backlog = await sessions.db(remote.backlog, marks)
    index = eventlog.index
    after = index.position_after(publisher.published_seq(eventlog.seqmap.epoch))
    backlog["events"] = len(index) - after
    nodes = await sessions.db(remote.nodes)
    return FederationInfo(
        enabled=True,
        node=node,
        town=town,
        stream=stream,
        servers=list(config.servers),
        connected=connected,
        backlog=dict(sorted(backlog.items())),
        published=publisher.published,
        too_large=publisher.too_large,
        applied=consumer.applied,
        rejected=dict(sorted(health.rejected.items())),
        nodes=[
            NodeInfo(
                node=n.node,
                last_record_at=format_ts(n.last_record_at),
                events=n.events,
                sessions=n.sessions,
                digests=n.digests,
                attributions=n.attributions,
            )
            for n in nodes
        ],
        last_error=health.last_error,
        last_error_at=format_ts(health.last_error_at) if health.last_error_at else None,
        server=server_url(connection) if connected else None,
        server_name=_server_name(connection) if connected else None,
        instance=instance,
        node_conflict=(
            NodeConflict(
                node=node,
                instance=node_conflict.instance,
                host=node_conflict.host,
                since=node_conflict.since,
            )
            if node_conflict is not None
            else None
        ),
        clock_offset_s=clock_offset_s,
        errors=list(health.errors),
    )


def server_url(nc: Any) -> str | None:
    """The URL of the server ``nc`` is connected to, without credentials."""
    url = getattr(nc, "connected_url", None) if nc is not None else None
    if url is None or url.hostname is None:
        return None
    return (
        f"{url.scheme}://{url.hostname}:{url.port}"
        if url.port
        else f"{url.scheme}://{url.hostname}"
    )


def _server_name(nc: Any) -> str | None:
    info = getattr(nc, "_server_info", None) if nc is not None else None
    name = info.get("server_name") if isinstance(info, dict) else None
    return str(name) if name else None
