"""Retention in the shell: where the policy comes from, and the periodic prune."""

from __future__ import annotations

import anyio
import msgspec
import structlog

from gastown_client.protocol import PruneResult
from gastownd.config import RetentionConfig, parse_duration
from gastownd.core.retention import GAS_TOWN_TTLS_S, RetentionPolicy, policy_from_krc
from gastownd.daemon import Daemon
from gastownd.errors import StorageError

log = structlog.get_logger("gastownd.pruner")

KRC_NAME = ".krc.yaml"


def policy_from_config(config: RetentionConfig) -> RetentionPolicy:
    # The configured TTLs override Gas Town's defaults type by type, as .krc.yaml's do.
    ttls: dict[str, float] = dict(GAS_TOWN_TTLS_S)
    ttls.update({k: parse_duration(v) for k, v in config.ttls.items()})
    return RetentionPolicy(
        default_ttl_s=parse_duration(config.default_ttl),
        ttls_s=ttls,
        min_retain_count=config.min_retain_count,
        prune_interval_s=parse_duration(config.prune_interval),
    )


def load_policy(daemon: Daemon) -> RetentionPolicy:
    """``<town>/.krc.yaml`` (Gas Town's file, JSON) when present, else our config.

    Read at every prune, so edits apply without a restart. A broken file is
    logged and the configuration is used instead.
    """
    fallback = policy_from_config(daemon.config.retention)
    path = daemon.paths.town / KRC_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return fallback
    except OSError as exc:
        log.warning("krc_unreadable", path=str(path), error=exc.strerror)
        return fallback
    try:
        data = msgspec.json.decode(raw)
        if not isinstance(data, dict):
            raise ValueError("must be a JSON object")
        return policy_from_krc(data, fallback)
    except (msgspec.DecodeError, ValueError) as exc:
        log.warning("krc_invalid", path=str(path), error=str(exc))
        return fallback


async def prune_now(daemon: Daemon, *, dry_run: bool) -> PruneResult:
    assert daemon.eventlog is not None
    if daemon.sessions is not None and not dry_run:
        # What a line told about a session must be recorded before the line can go.
        await daemon.sessions.record_lines()
        await prune_remote(daemon, load_policy(daemon))
    retention = daemon.config.retention
    max_age = retention.archive_max_age
    try:
        return await daemon.eventlog.prune(
            load_policy(daemon),
            daemon.clock(),
            dry_run=dry_run,
            archive=retention.archive,
            archive_max_age_s=parse_duration(max_age) if max_age is not None else None,
        )
    except OSError as exc:
        raise StorageError(f"prune failed: {exc.strerror or exc}; the log is unchanged") from None


async def prune_remote(daemon: Daemon, policy: RetentionPolicy) -> int:
    """Other nodes' lines expire with the same TTLs as this node's (their origin archives
    its own); deleted a batch per transaction."""
    sessions = daemon.sessions
    assert sessions is not None
    remote = sessions.store.remote
    now = daemon.clock()
    expired = [(t, now - policy.ttl_for(t)) for t in await sessions.db(remote.remote_types)]
    removed = 0
    while expired:
        done = await sessions.db(remote.prune_events, expired)
        if not done:
            break
        removed += done
    if removed:
        log.info("remote_events_pruned", removed=removed)
    return removed


async def run_periodic(daemon: Daemon) -> None:
    """Prune at start and then every ``prune_interval`` (both re-read on each round)."""
    while True:
        if daemon.config.retention.enabled:
            try:
                await prune_now(daemon, dry_run=False)
            except StorageError as exc:
                log.warning("prune_skipped", reason=exc.message)
        await anyio.sleep(load_policy(daemon).prune_interval_s)
