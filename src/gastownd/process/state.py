"""What the daemon knows before any part runs: configuration, paths, identity, clock, counters.

Built once (``app.build_state``) before start; the running parts are in ``process/daemon.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from gastownd.metrics.buckets import Counters
from gastownd.process.config import Config

# TEST-ONLY: this daemon's wall clock runs this many seconds off (a machine whose clock
# is wrong; federation's clock tests).
TEST_CLOCK_OFFSET_ENV = "GASTOWND_TEST_CLOCK_OFFSET_S"


def wall_clock() -> Callable[[], float]:
    """``time.time``, shifted by ``GASTOWND_TEST_CLOCK_OFFSET_S`` when that is set."""
    try:
        offset = float(os.environ.get(TEST_CLOCK_OFFSET_ENV) or 0)
    except ValueError:
        offset = 0.0
    if not offset:
        return time.time
    return lambda: time.time() + offset


class DaemonPaths(msgspec.Struct):
    town: Path
    private_dir: Path
    socket: Path
    lock: Path
    events: Path
    events_lock: Path
    # The settings file in use; None while it is absent (all defaults).
    config: Path | None
    # The file read at start and at every SIGHUP: --config, else <town>/settings/gastownd.toml.
    config_file: Path | None = None
    # --config must exist; the default file may appear or vanish while the daemon runs.
    config_required: bool = False


class DaemonState(msgspec.Struct):
    config: Config
    paths: DaemonPaths
    started_at: datetime = msgspec.field(default_factory=lambda: datetime.now(UTC))
    started_monotonic: float = msgspec.field(default_factory=time.monotonic)
    # What handlers count for the metrics (hook calls by event, spooled hook calls).
    counters: Counters = msgspec.field(default_factory=Counters)
    # Wall clock in epoch seconds; tests inject their own.
    clock: Callable[[], float] = msgspec.field(default_factory=wall_clock)
    # This node's and this town's names (federation; always known, federated or not).
    node: str = "local"
    town_name: str = "town"
    # Keys the settings file changed that apply only at the next start (see SIGHUP).
    restart_pending: list[str] = msgspec.field(default_factory=list)

    def uptime_s(self) -> float:
        return time.monotonic() - self.started_monotonic

    def node_name(self, stored: str) -> str:
        """The name of a node as stored ('' is this node)."""
        return stored or self.node
