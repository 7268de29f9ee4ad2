"""Notice lines other processes append to the event log.

Watches the town directory, not the file: a watch on the file's path goes
blind once the file is renamed over (gt's own pruning does exactly that).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import structlog
import watchfiles

from gastownd.eventlog.event_log import EventLog

log = structlog.get_logger("gastownd.watcher")


async def watch_eventlog(eventlog: EventLog, step_ms: int, stop: anyio.Event) -> None:
    """Catch up with the log whenever it changes, until ``stop`` is set.

    Set ``stop`` before cancelling: the watch runs in a thread that only
    notices ``stop`` (within one step), not a cancellation.
    """
    town = eventlog.path.parent
    name = eventlog.path.name

    def concerns_log(change: watchfiles.Change, path: str) -> bool:
        return Path(path).name == name

    while not stop.is_set():
        try:
            async for _changes in watchfiles.awatch(
                town,
                watch_filter=concerns_log,
                recursive=False,
                step=step_ms,
                debounce=max(step_ms * 5, 50),
                ignore_permission_denied=True,
                stop_event=stop,
                # Wake every 2 s with no change too: lines appended before the watch
                # was in place, or lost to an inotify overflow, are then found.
                rust_timeout=2000,
                yield_on_timeout=True,
            ):
                await eventlog.catch_up()
        except (OSError, RuntimeError) as exc:
            log.warning("watcher_restarting", error=str(exc))
            await anyio.sleep(1)
