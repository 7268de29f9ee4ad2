"""Federation when it is off: the same face as :class:`~gastownd.federation.link.Federation`,
doing nothing, so that no part holds an optional federation."""

from __future__ import annotations

from gastown_client.protocol import FederationInfo
from gastownd.metrics.buckets import BucketsView
from gastownd.sessions.recorder import SessionRecorder


class FederationOff:
    enabled = False
    clock_offset_s: float | None = None  # no server to measure this clock against

    def __init__(self, node: str, town: str, sessions: SessionRecorder) -> None:
        self.node = node
        self.town = town
        self.sessions = sessions

    def wake(self) -> None:
        """Nothing to publish."""

    def store_changed(self) -> None:
        """Nothing to publish."""

    def keep_after_seq(self) -> int | None:
        """Nothing waits to be published: no line is held back from a prune."""
        return None

    async def live_edge(self) -> int:
        """Remote lines stored by an earlier federated run still count."""
        sessions = self.sessions
        return await sessions.db(sessions.store.remote.last_arrival)

    def lag_view(self) -> BucketsView | None:
        return None

    async def info(self) -> FederationInfo:
        return FederationInfo(node=self.node, town=self.town)
