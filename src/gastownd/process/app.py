"""The composition root: every running part, one task group, start and stop.

Start: private dir checks → instance lock → event log recovery (and the
index, unless a long stretch has no snapshot: then it is built in the
background while the daemon serves) → task group (indexing, writer, server
via ``tg.start``, signals) → ready → after the first answer, the housekeeping
(watcher, pruner, spool ingester, reaper: ``housekeeping.py``). Stop
(SIGTERM/SIGINT or ``Daemon.stop``): stop accepting, end subscriptions, let
in-flight requests finish, flush the log, exit.

Only what the first answer needs is imported before it: federation when it is
on, the metrics endpoint when it listens, the housekeeping's parts after.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog

from gastown_client import paths as town_paths
from gastown_client.protocol import Request
from gastownd import ops
from gastownd.eventlog import EventLog
from gastownd.eventlog.subscriptions import Published, Subscriptions
from gastownd.federation import node_and_town
from gastownd.federation.off import FederationOff
from gastownd.process.config import Config, parse_duration, plan_reload
from gastownd.process.config_file import read_config_file
from gastownd.process.daemon import Daemon
from gastownd.process.housekeeping import run_housekeeping
from gastownd.process.instance import (
    InstanceLock,
    check_socket_path,
    clear_stale_socket,
    ensure_private_dir,
)
from gastownd.process.refusals import ConfigError, StartupError, StorageError
from gastownd.process.state import DaemonPaths, DaemonState
from gastownd.process.systemd import (
    ActivationError,
    Notifier,
    activated_listen_socket,
    maybe_hang_for_tests,
    watchdog_loop,
)
from gastownd.server.listener import Server
from gastownd.server.socket_server import InlineHandler
from gastownd.sessions.recorder import SessionRecorder
from gastownd.sessions.spool import SpoolIngester
from gastownd.store import Store

if TYPE_CHECKING:
    from gastownd.federation.link import Federation

log = structlog.get_logger("gastownd.app")

GIL_SWITCH_INTERVAL_S = 0.0005
INDEXING_STATUS_EVERY_S = 1.0


def resolve_paths(town: Path, config_path: Path | None) -> DaemonPaths:
    config_file = town_paths.default_config_path(town) if config_path is None else config_path
    return DaemonPaths(
        town=town,
        private_dir=town_paths.private_dir(town),
        socket=town_paths.socket_path(town),
        lock=town_paths.lock_path(town),
        events=town_paths.events_path(town),
        events_lock=town_paths.events_lock_path(town),
        config=config_file if config_file.exists() else None,
        config_file=config_file,
        config_required=config_path is not None,
    )


def build_state(
    town: Path, config_path: Path | None = None, config: Config | None = None
) -> DaemonState:
    paths = resolve_paths(town, config_path)
    if config is None:
        assert paths.config_file is not None
        loaded = read_config_file(paths.config_file, required=paths.config_required)
        paths.config = paths.config_file if loaded is not None else None
        config = loaded or Config()
    if config.federation.enabled:
        _require_nats(paths.config_file)
    node, town_name = node_and_town(config.federation, town)
    return DaemonState(config=config, paths=paths, node=node, town_name=town_name)


def _require_nats(settings: Path | None) -> None:
    """Federation is configured: refuse at once, in one line, when its library is missing."""
    import importlib.util  # only with federation on: the console script has not imported it

    if importlib.util.find_spec("nats") is None:
        raise ConfigError(
            f"{settings}: [federation] servers is set but nats-py is not installed: "
            "pip install 'gastownd[federation]'"
        )


class App:
    """Owns the daemon's lifetime. ``run`` returns when it has stopped cleanly; it hands the
    running :class:`Daemon` (every part started) to whoever started it."""

    def __init__(
        self,
        state: DaemonState,
        *,
        install_signal_handlers: bool = True,
        supervised: bool = False,
    ) -> None:
        self.state = state
        self.install_signal_handlers = install_signal_handlers
        # Under a supervisor: adopt an activated socket, speak sd_notify.
        self.supervised = supervised
        self.notifier = Notifier.from_environ() if supervised else Notifier(None)
        self._stop = anyio.Event()
        self.on_reload: list[Callable[[Config], None]] = []
        self._reload_requested = False
        if install_signal_handlers:
            # SIGHUP's default action is to terminate, and the signal receiver only runs
            # after recovery and indexing (seconds on a big log): until then, note it.
            signal.signal(signal.SIGHUP, self._note_early_reload)

    def _note_early_reload(self, signum: int, frame: object) -> None:
        self._reload_requested = True

    def stop(self) -> None:
        self._stop.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[Daemon] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        paths = self.state.paths
        if not paths.town.is_dir():
            raise StartupError(f"town root {paths.town} is not a directory")
        ensure_private_dir(paths.private_dir)
        if paths.socket.parent != paths.private_dir:
            _ensure_socket_dir(paths.socket.parent)
        lock = InstanceLock(paths.lock)
        lock.acquire()
        try:
            await self._run_locked(task_status)
        finally:
            lock.release()

    async def _run_locked(self, task_status: anyio.abc.TaskStatus[Daemon]) -> None:
        # Worker threads run long Python loops (prune planning, index copies):
        # a short switch interval keeps the event loop's wait for the GIL short.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        state = self.state
        config = state.config
        paths = state.paths
        notifier = self.notifier
        try:
            adopted = activated_listen_socket() if self.supervised else None
        except ActivationError as exc:
            raise StartupError(f"socket activation failed: {exc}") from None
        if adopted is None:
            # Before the minutes a big log's recovery may take, not after.
            check_socket_path(paths.socket)
        notifier.status("recovering and indexing the event log")
        subscriptions = Subscriptions(
            config.eventlog.subscriber_queue,
            config.eventlog.max_subscriptions,
            config.eventlog.max_subscriptions_per_connection,
        )
        # Who hears of appended lines besides the subscribers: the recorder, then federation,
        # each from the moment it runs.
        observers: list[Callable[[list[Published]], None]] = []

        def publish(items: list[Published]) -> None:
            subscriptions.publish(items)
            for observe in observers:
                observe(items)

        eventlog = EventLog(
            paths.events, paths.events_lock, paths.private_dir, config.eventlog, publish
        )
        # A seqmap is written at every start: one there now says a daemon ran here before.
        ran_here_before = any(paths.private_dir.glob("seqmap-*.json"))
        with _refusing("cannot open the event log", paths.events):
            # A long stretch with no snapshot is indexed while the daemon serves.
            await eventlog.open(background=True)
        store_path = paths.private_dir / "gastownd.db"
        with _refusing("cannot open the session store", store_path):
            store = await anyio.to_thread.run_sync(Store, store_path)
        if store.created and ran_here_before:
            # Not silent: what only the store held (digests, open wisps, the records of
            # sessions whose lines were archived) is gone; the live log's lines come back.
            log.warning(
                "session_store_recreated",
                path=str(store_path),
                reason="missing or empty while this town's daemon had run here before",
                action="restore it from a backup with the daemon stopped, if there is one",
            )
        sessions = SessionRecorder(store, eventlog, config.eventlog.source, lambda: state.clock())
        # The server answers its first request only once ``serve`` runs, after ``daemon`` is
        # built below.
        daemon: Daemon
        # The ops answered without a task, bound to ``daemon`` once it is built, below.
        inline: dict[type[Request], InlineHandler] = {}
        server = Server(
            config.server,
            lambda req, conn: ops.dispatch(daemon, req, conn),
            expected_uid=os.geteuid(),
            inline=inline,
        )
        eventlog.writer.around_batch = server.replying

        listener: anyio.abc.SocketListener
        if adopted is not None:
            # The supervisor owns this socket (and its file): never unlink it.
            listener = await anyio.abc.SocketListener.from_socket(adopted)
        else:
            clear_stale_socket(paths.socket)
            with _refusing("cannot listen on the socket", paths.socket):
                listener = await anyio.create_unix_listener(paths.socket, mode=0o600)
        try:
            async with anyio.create_task_group() as services:
                # Before anything may prune: it holds the prune lock until it is done.
                await services.start(eventlog.run_indexing)
                services.start_soon(eventlog.run_writer)
                services.start_soon(eventlog.run_checkpoints)
                # The outbox replay appends to the log, so the writer must be running.
                # Lines indexed during open must reach the recorder: attach it first.
                observers.append(sessions.observe)
                with _refusing("cannot recover the session store", store_path):
                    await sessions.open()
                federation: Federation | FederationOff
                link: Federation | None = None
                if config.federation.enabled:
                    # Only when on: a daemon without federation never imports it.
                    from gastownd.federation.link import Federation

                    federation = link = Federation(
                        state, config.federation, eventlog, sessions, subscriptions
                    )
                    observers.append(lambda _items: federation.wake())
                    sessions.on_commit = federation.store_changed
                else:
                    federation = FederationOff(state.node, state.town_name, sessions)
                daemon = Daemon(state, server, eventlog, subscriptions, sessions, federation)
                inline.update(ops.inline_handlers(daemon))
                ingester = SpoolIngester(daemon, town_paths.spool_dir(paths.town))
                with _refusing("cannot create the spool directory", ingester.folder):
                    await anyio.to_thread.run_sync(ingester.prepare)
                watch_stop = anyio.Event()
                answered = anyio.Event()
                server.meter.on_first_answer = answered.set
                async with anyio.create_task_group() as front:
                    if self.install_signal_handlers:
                        # Before the first answer: whoever saw us serve may signal us at once.
                        await front.start(self._handle_signals)
                    await front.start(server.serve, listener)
                    front.start_soon(sessions.run_recorder)
                    front.start_soon(run_housekeeping, daemon, ingester, answered, watch_stop)
                    if link is not None:
                        # Never waits for the network: it connects in the background. Its
                        # publisher reads the log from a cursor: it starts once all is indexed.
                        if eventlog.indexing is None:
                            await front.start(link.run)
                        else:
                            front.start_soon(_once_indexed, eventlog, front, link.run)
                    interval = notifier.watchdog_interval_s()
                    if interval is not None:
                        front.start_soon(watchdog_loop, notifier, interval)
                    hang = maybe_hang_for_tests() if self.supervised else None
                    if hang is not None:
                        front.start_soon(hang)
                    if config.metrics.listen:
                        # Only when it listens: the endpoint brings the stdlib's HTTP server.
                        from gastownd.metrics.http import MetricsEndpoint

                        # /metrics and /healthz: bound once everything else runs (up means ready).
                        await front.start(MetricsEndpoint(daemon).serve)
                    log.info(
                        "daemon_ready",
                        town=str(paths.town),
                        socket=str(paths.socket),
                        pid=os.getpid(),
                        socket_activated=adopted is not None,
                        loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
                    )
                    notifier.ready(_serving_status(paths.town, eventlog))
                    if eventlog.indexing is not None:
                        front.start_soon(_report_indexing, eventlog, notifier, paths.town)
                    task_status.started(daemon)
                    await self._stop.wait()
                    log.info("daemon_stopping")
                    notifier.stopping()
                    watch_stop.set()
                    await self._drain(server, subscriptions)
                    front.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await eventlog.close()
                    await anyio.to_thread.run_sync(store.close)
                services.cancel_scope.cancel()
        finally:
            # Also when start-up failed past this point: a socket nobody serves is a trap.
            if adopted is None:
                _unlink_socket(paths.socket)
        notifier.close()
        log.info("daemon_stopped")

    async def _drain(self, server: Server, subscriptions: Subscriptions) -> None:
        """Stop taking requests; wait (bounded) for the in-flight ones."""
        server.stop()
        subscriptions.close_all()
        deadline = parse_duration(self.state.config.server.shutdown_timeout)
        with anyio.move_on_after(deadline) as scope:
            await server.wait_drained()
        if scope.cancelled_caught:
            log.warning("shutdown_deadline_reached", open_connections=len(server.connections))

    async def _handle_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            # Handlers are installed before READY, so an early SIGHUP never kills us.
            task_status.started()
            if self._reload_requested:
                self._reload()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._reload()
                    continue
                log.info("signal_received", signal=signal.Signals(signum).name)
                self.stop()
                return

    def _reload(self) -> None:
        """SIGHUP: read the settings file again (even one created since start) and apply it.

        A file that cannot be used changes nothing: it is logged, and the daemon keeps
        serving with the configuration it has. Keys read only at start keep their
        running value until a restart, and the log, ``status`` and the supervisor say which.
        """
        state = self.state
        paths = state.paths
        self.notifier.reloading()
        assert paths.config_file is not None
        try:
            loaded = read_config_file(paths.config_file, required=paths.config_required)
        except ConfigError as exc:
            log.error(
                "config_reload_failed",
                path=str(paths.config_file),
                error=exc.message,
                kept="previous configuration",
            )
            self.notifier.ready(f"reload refused, serving with the previous configuration: {exc}")
            return
        plan = plan_reload(state.config, loaded or Config())
        state.config = plan.config
        state.restart_pending = plan.waiting
        paths.config = paths.config_file if loaded is not None else None
        for callback in self.on_reload:
            callback(plan.config)
        log.info(
            "config_reloaded",
            path=str(paths.config) if paths.config is not None else None,
            applied=plan.applied,
            restart_required=plan.waiting,
        )
        self.notifier.ready(_serving(paths.town, plan.waiting))


async def _once_indexed(
    eventlog: EventLog,
    group: anyio.abc.TaskGroup,
    run: Callable[..., Coroutine[Any, Any, None]],
) -> None:
    await eventlog.wait_indexed()
    await group.start(run)


def _serving_status(town: Path, eventlog: EventLog) -> str:
    progress = eventlog.indexing
    if progress is None:
        return f"serving {town} ({len(eventlog.index)} events indexed)"
    share = progress.bytes_done * 100 // max(progress.bytes_total, 1)
    return f"serving {town}; indexing {progress.lines} older events ({share}%)"


async def _report_indexing(eventlog: EventLog, notifier: Notifier, town: Path) -> None:
    """``STATUS=`` follows the background index until it is done."""
    while not await eventlog.wait_indexed(INDEXING_STATUS_EVERY_S):
        notifier.status(_serving_status(town, eventlog))
    notifier.status(_serving_status(town, eventlog))


def _serving(town: Path, waiting: list[str]) -> str:
    if not waiting:
        return f"serving {town}"
    return f"serving {town}; restart to apply {', '.join(waiting)}"


@contextmanager
def _refusing(what: str, path: Path) -> Iterator[None]:
    """Turn what the OS or SQLite (or the session store) says at start-up into a one-line
    refusal naming the path."""
    try:
        yield
    except OSError as exc:
        where = exc.filename if exc.filename else path
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError):
            reason = "something that is not a directory is in the way"
        raise StartupError(f"{where}: {what}: {reason}", errno_code=exc.errno) from None
    except sqlite3.Error as exc:
        raise StartupError(f"{path}: {what}: {exc}") from None
    except StorageError as exc:  # the store's own trouble, already said in one line
        raise StartupError(f"{path}: {what}: {exc.message}") from None


def _ensure_socket_dir(folder: Path) -> None:
    if folder.name.startswith("gastownd-"):
        folder.mkdir(mode=0o700, exist_ok=True)
        ensure_private_dir(folder)


def _unlink_socket(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("socket_unlink_failed", error=exc.strerror)
