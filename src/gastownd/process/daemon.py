"""The running daemon, as handlers see it: the state and every part, all started.

Built once by ``app.py`` after the parts have started; nothing in it is ever missing (federation
that is off is :class:`FederationOff`). Handlers receive it and never build their own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from gastownd.eventlog import EventLog
from gastownd.eventlog.subscriptions import Subscriptions
from gastownd.federation.off import FederationOff
from gastownd.metrics.buckets import Counters
from gastownd.process.config import Config
from gastownd.process.state import DaemonPaths, DaemonState
from gastownd.server.listener import Server
from gastownd.sessions.recorder import SessionRecorder

if TYPE_CHECKING:
    # Only imported when federation is on (app.py): its modules cost start-up time.
    from gastownd.federation.link import Federation


class Daemon(msgspec.Struct, frozen=True):
    state: DaemonState
    server: Server
    eventlog: EventLog
    subscriptions: Subscriptions
    sessions: SessionRecorder
    federation: Federation | FederationOff

    # What the state holds, read through: its config changes on SIGHUP, tests move its clock.
    @property
    def config(self) -> Config:
        return self.state.config

    @property
    def paths(self) -> DaemonPaths:
        return self.state.paths

    @property
    def clock(self) -> Callable[[], float]:
        return self.state.clock

    @property
    def counters(self) -> Counters:
        return self.state.counters

    @property
    def node(self) -> str:
        return self.state.node

    @property
    def town_name(self) -> str:
        return self.state.town_name

    @property
    def started_at(self) -> datetime:
        return self.state.started_at

    @property
    def restart_pending(self) -> list[str]:
        return self.state.restart_pending

    def uptime_s(self) -> float:
        return self.state.uptime_s()

    def node_name(self, stored: str) -> str:
        return self.state.node_name(stored)
