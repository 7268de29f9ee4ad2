"""Retention in the shell: where the policy comes from, the periodic prune, and the prune.

A prune removes the expired lines: it archives them, copies the kept ones to
a new file and swaps it in. The plan and the new index are computed in a
worker process (``prune_plan``), so requests keep flowing (the event loop,
or a thread holding the GIL, would delay them for seconds on a large log);
the bulk copy and the archive run in threads without the writers' lock,
which the writer's thread holds only to copy what was appended meanwhile and
rename. The archive is durable
before the rename, which commits it (see ``gastownd.eventlog.archive_files``). Appends,
ours and gt's, keep flowing and none is lost.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec
import structlog

from gastown_client.protocol import MAX_NESTING, PruneResult, nesting_exceeds
from gastownd.core import archive as archived
from gastownd.core.index import EventIndex
from gastownd.core.retention import (
    DAY_S,
    GAS_TOWN_TTLS_S,
    RetentionPolicy,
    clock_suspect,
    policy_from_krc,
)
from gastownd.eventlog.archive_files import PRUNE_FILE_MARK, crash_here_for_tests
from gastownd.eventlog.event_log import EventLog
from gastownd.eventlog.logstate import SeqMap, write_seqmap
from gastownd.eventlog.prune_plan import PruneWorker, prune_worker
from gastownd.eventlog.prune_steps import copy_kept
from gastownd.eventlog.remote_retention import prune_remote
from gastownd.eventlog.writer import LogFile, Observation
from gastownd.process.config import RetentionConfig, parse_duration
from gastownd.process.config_file import read_regular_file
from gastownd.process.daemon import Daemon
from gastownd.process.refusals import BadRequestError, StorageError

log = structlog.get_logger("gastownd.pruner")

KRC_NAME = ".krc.yaml"
# Gas Town writes a few hundred bytes; anything near this is not its file.
MAX_KRC_BYTES = 1 << 20
# The lines the newest ts is looked for among: out-of-order writers stay within it.
NEWEST_LINE_WINDOW = 1000


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


class KrcRefused(Exception):
    """``.krc.yaml`` exists but cannot be used; the message says why (not the path)."""

    def __init__(self, event: str, reason: str) -> None:
        super().__init__(reason)
        self.event = event  # krc_unreadable or krc_invalid
        self.reason = reason


def read_krc(path: Path, fallback: RetentionPolicy) -> RetentionPolicy:
    """The policy in ``path`` over ``fallback`` (``fallback`` itself when the file is absent).

    Blocking: called in a thread. Raises KrcRefused for a file that is not a regular
    file (a FIFO would block the reader for good), larger than ``MAX_KRC_BYTES`` (a
    symlink to /dev/zero), not JSON, nested too deep for the decoder, or holding a value
    outside its range.
    """
    try:
        raw = read_regular_file(path, MAX_KRC_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return fallback
    except OSError as exc:
        raise KrcRefused("krc_unreadable", exc.strerror or str(exc)) from None
    if len(raw) > MAX_KRC_BYTES:
        raise KrcRefused("krc_invalid", f"larger than {MAX_KRC_BYTES} bytes")
    # msgspec recurses once per level: 2,000 nested brackets raise RecursionError.
    if nesting_exceeds(raw):
        raise KrcRefused("krc_invalid", f"nests arrays and objects deeper than {MAX_NESTING}")
    try:
        data = msgspec.json.decode(raw)
        if not isinstance(data, dict):
            raise ValueError("must be a JSON object")
        return policy_from_krc(data, fallback)
    except (msgspec.DecodeError, ValueError) as exc:
        raise KrcRefused("krc_invalid", str(exc)[:200]) from None


async def load_policy(daemon: Daemon) -> RetentionPolicy:
    """``<town>/.krc.yaml`` (Gas Town's file, JSON) when present and valid, else our config.

    Read at every prune, so edits apply without a restart, and read in a thread: the
    event loop does no file I/O here. A refused file is logged and the configuration
    is used instead.
    """
    fallback = policy_from_config(daemon.config.retention)
    try:
        return await _load_krc(daemon, fallback)
    except KrcRefused as refused:
        log.warning(refused.event, path=str(daemon.paths.town / KRC_NAME), error=refused.reason)
        return fallback


async def _load_krc(daemon: Daemon, fallback: RetentionPolicy) -> RetentionPolicy:
    return await anyio.to_thread.run_sync(read_krc, daemon.paths.town / KRC_NAME, fallback)


async def prune_now(daemon: Daemon, *, dry_run: bool) -> PruneResult:
    """The ``prune`` op: the policy of now, applied. A refused ``.krc.yaml`` is the
    answer (naming the file), rather than a prune under a policy the caller did not mean.

    Requests that arrive while another waits for its turn share its run (``SharedRuns``):
    it starts after they asked, so its answer is theirs, and a flood of requests costs
    two runs, not one each."""
    return await daemon.eventlog.prune_requests.run(
        dry_run, lambda: _prune_now(daemon, dry_run=dry_run)
    )


async def _prune_now(daemon: Daemon, *, dry_run: bool) -> PruneResult:
    fallback = policy_from_config(daemon.config.retention)
    try:
        policy = await _load_krc(daemon, fallback)
    except KrcRefused as refused:
        path = daemon.paths.town / KRC_NAME
        log.warning(refused.event, path=str(path), error=refused.reason)
        raise BadRequestError(
            f"{path}: refused ({refused.reason}); fix or remove it to prune"
        ) from None
    return await prune_with(daemon, policy, dry_run=dry_run)


async def prune_with(daemon: Daemon, policy: RetentionPolicy, *, dry_run: bool) -> PruneResult:
    """The prune under ``policy``, as the op and the periodic prune run it."""
    if not dry_run:
        # What a line told about a session must be recorded before the line can go.
        await daemon.sessions.record_lines()
        await prune_remote(daemon, policy)
    retention = daemon.config.retention
    max_age = retention.archive_max_age
    try:
        return await prune(
            daemon.eventlog,
            policy,
            daemon.clock(),
            dry_run=dry_run,
            archive=retention.archive,
            archive_max_age_s=parse_duration(max_age) if max_age is not None else None,
            keep_after_seq=_read_by_everyone(daemon),
        )
    except OSError as exc:
        raise StorageError(f"prune failed: {exc.strerror or exc}; the log is unchanged") from None


def _read_by_everyone(daemon: Daemon) -> int | None:
    """The last seq that every reader of the log has read: retention keeps the lines after
    it, so no line goes before what it says is recorded (and, without the archive, where
    federation would read it too, sent)."""
    marks = [daemon.sessions.recorded_seq()]
    if not daemon.config.retention.archive:
        published = daemon.federation.keep_after_seq()
        if published is not None:
            marks.append(published)
    return min(marks)


async def run_periodic(daemon: Daemon) -> None:
    """Prune at start and then every ``prune_interval`` (both re-read on each round)."""
    while True:
        policy = await load_policy(daemon)
        if daemon.config.retention.enabled:
            try:
                await prune_with(daemon, policy, dry_run=False)
            except StorageError as exc:
                log.warning("prune_skipped", reason=exc.message)
            except Exception:
                # The housekeeping's task group waits on this task: one bad prune must
                # not stop the watcher, the spool and every later prune with it.
                log.exception("prune_failed")
        await anyio.sleep(policy.prune_interval_s)


# ---------------------------------------------------------------- the prune


@dataclass(frozen=True)
class _Plan:
    """Everything a prune decided before it touches a file."""

    index: EventIndex  # the index it planned from
    count: int  # the lines it looked at (later ones were appended during the prune)
    end: int  # where line ``count - 1`` ends
    kept: EventIndex  # the index of the kept lines, laid out as in the new file
    runs: list[tuple[int, int]]
    removed_max: int
    tail_base: int  # the seq after the planned lines
    archive: bool


async def prune(
    eventlog: EventLog,
    policy: RetentionPolicy,
    now_s: float,
    *,
    dry_run: bool,
    archive: bool,
    archive_max_age_s: float | None = None,
    keep_after_seq: int | None = None,
) -> PruneResult:
    """Remove expired lines: archive them, copy the kept ones to a new file, swap it in.

    Lines after ``keep_after_seq`` are kept whatever their age: others have
    not read them yet.
    """
    started = time.monotonic()
    async with eventlog.prune_lock:
        index = eventlog.index
        count = len(index)
        end = index.end
        # Before the prune: one that archives every line leaves none to judge the clock by.
        newest_line_s = _newest_line_s(index)
        protect_from = None if keep_after_seq is None else index.position_after(keep_after_seq)
        # Our own descriptor of the file planned from, which the worker reads the lines it
        # archives through and the copy the kept ones: a rewrite may close the log's.
        source_fd = os.dup(eventlog.fd)
        try:
            async with prune_worker(source_fd) as worker:
                # Appends only add positions past ``count``: the worker reads a stable prefix.
                decided = await worker.plan(
                    index, count, end, now_s, policy, protect_from=protect_from, select=not dry_run
                )
                removed_bytes = end - decided.kept_bytes
                result = PruneResult(
                    dry_run=dry_run,
                    pruned=dict(sorted(decided.removed_by_type.items())),
                    pruned_total=decided.removed_total,
                    kept=decided.kept_lines,
                    bytes_freed=removed_bytes,
                )
                if dry_run or decided.removed_total == 0:
                    if not dry_run:
                        eventlog.last_prune_at = now_s
                        eventlog.last_prune_removed = 0
                        await _expire_archive(eventlog, now_s, archive_max_age_s, newest_line_s)
                    result.duration_ms = round((time.monotonic() - started) * 1000, 3)
                    if not dry_run:
                        eventlog.prune_seconds.observe(time.monotonic() - started)
                    return result
                _announce(eventlog, len(decided.removed), removed_bytes, decided.days, archive)
                assert decided.kept is not None  # asked for, and lines go
                plan = _Plan(
                    index=index,
                    count=count,
                    end=end,
                    kept=decided.kept,
                    runs=decided.runs,
                    removed_max=decided.removed_max,
                    tail_base=index.seqs[count] if len(index) > count else index.next_seq(),
                    archive=archive,
                )
                planned = time.monotonic()
                # A batch whose rollback failed earlier must be settled before its file is
                # reused.
                await anyio.to_thread.run_sync(eventlog.archive.recover)
                if eventlog.index is not index:
                    raise StorageError("the log was replaced during the prune; retry")
                temp_path = eventlog.path.with_name(
                    f"{eventlog.path.name}{PRUNE_FILE_MARK}{os.getpid()}"
                )
                temp_fd = await anyio.to_thread.run_sync(
                    copy_kept, source_fd, decided.range_starts, decided.range_lengths, temp_path
                )
                copied = time.monotonic()
                async with eventlog.archive_lock:
                    archived_lines, swap_s = await _archive_and_swap(
                        eventlog, plan, worker, temp_fd, temp_path
                    )
                    swapped = time.monotonic()
                    if archive:
                        with anyio.CancelScope(shield=True):
                            crash_here_for_tests("swapped")
                            await anyio.to_thread.run_sync(eventlog.archive.commit)
                            eventlog.archive_generation += 1
        finally:
            # The last descriptor of the replaced file: closing it frees its blocks, which
            # takes a while for a big file; not on the event loop.
            await anyio.to_thread.run_sync(os.close, source_fd)
        await _expire_archive(eventlog, now_s, archive_max_age_s, newest_line_s)
    eventlog.last_prune_at = now_s
    eventlog.last_prune_removed = decided.removed_total
    result.archived = archived_lines
    result.duration_ms = round((time.monotonic() - started) * 1000, 3)
    eventlog.prune_seconds.observe(time.monotonic() - started)
    log.info(
        "eventlog_pruned",
        removed=decided.removed_total,
        archived=archived_lines,
        kept=len(eventlog.index),
        bytes_freed=removed_bytes,
        duration_ms=result.duration_ms,
        plan_ms=round((planned - started) * 1000),
        copy_ms=round((copied - planned) * 1000),
        archive_ms=round((swapped - copied - swap_s) * 1000),
        swap_ms=round(swap_s * 1000),
    )
    return result


def _announce(
    eventlog: EventLog, lines: int, size: int, days: dict[str, int], archive: bool
) -> None:
    """Say what a prune is about to move (or, with the archive off, delete) before it does."""
    fields = {
        "lines": lines,
        "bytes": size,
        "days": len(days),
        "first_day": next(iter(days), None),
        "last_day": next(reversed(days), None),
    }
    if archive:
        log.info("eventlog_archiving", to=str(eventlog.archive.folder), **fields)
    else:
        log.warning("eventlog_pruning_unarchived", reason="retention.archive is false", **fields)


async def _archive_and_swap(
    eventlog: EventLog, plan: _Plan, worker: PruneWorker, temp_fd: int, temp_path: Path
) -> tuple[int, float]:
    """Write the archive batch, then swap the new file in; undo both on failure.

    Returns the number of lines archived, and how long appends waited for the swap.
    """
    archived_lines = 0
    try:
        if plan.archive:
            archived_lines = await worker.archive(
                eventlog.archive.folder, eventlog.seqmap.epoch, temp_path
            )
            crash_here_for_tests("archive_written")
        if eventlog.index is not plan.index:
            raise StorageError("the log was replaced during the prune; retry")
        seqmap_before = eventlog.seqmap

        swap_s = 0.0

        def swap(file: LogFile) -> tuple[Observation, int, SeqMap]:
            """In the writer's thread, under the lock."""
            nonlocal swap_s
            began = time.monotonic()
            observation = file.observe(_refuse_rewrites)
            made: list[SeqMap] = []

            def record(inode: int, size: int, tail: bytes) -> None:
                lost = seqmap_before.lost_through()
                # Lines appended during the prune keep their consecutive seqs after the runs.
                seqmap = SeqMap(
                    epoch=seqmap_before.epoch,
                    inode=inode,
                    runs=plan.runs,
                    base=plan.tail_base,
                    pruned_through=max(seqmap_before.pruned_through, plan.removed_max),
                    unarchived_through=lost if plan.archive else max(lost, plan.removed_max),
                    end=size,
                    tail=tail,
                )
                write_seqmap(eventlog.state_dir, seqmap)
                made.append(seqmap)

            old_fd = file.replace(temp_fd, temp_path, plan.end, record)
            swap_s = time.monotonic() - began
            return observation, old_fd, made[0]

        def switch(outcome: tuple[Observation, int, SeqMap]) -> int:
            """On the event loop, in file order with the batches around the swap."""
            observation, old_fd, seqmap = outcome
            eventlog.apply_observation(observation)
            old_index = eventlog.index
            kept = plan.kept
            kept.seq_floor = plan.tail_base
            # Only what was appended during the prune is indexed here.
            kept.extend_from(old_index, range(plan.count, len(old_index)))
            eventlog.switch_to(kept, temp_fd, seqmap)
            return old_fd

        old_fd = await eventlog.writer.call(swap, switch)
        await anyio.to_thread.run_sync(os.close, old_fd)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_abandon, eventlog, temp_fd, temp_path, plan.archive)
        raise
    return archived_lines, swap_s


def _refuse_rewrites() -> EventIndex:
    raise StorageError("the log was replaced during the prune; retry")


def _abandon(eventlog: EventLog, temp_fd: int, temp_path: Path, archive: bool) -> None:
    """A prune that did not swap: undo its archive batch, then drop its new file."""
    os.close(temp_fd)
    if archive:
        try:
            eventlog.archive.rollback()
        except OSError as exc:
            # The new file stays: by it the next recovery knows to undo the batch.
            log.error("archive_rollback_failed", error=exc.strerror)
            return
    temp_path.unlink(missing_ok=True)


def _newest_line_s(index: EventIndex) -> int | None:
    """The newest ts among the log's last lines (appended in time order, give or take a
    writer's skew), or None for an empty log. Malformed lines count as 0."""
    tail = index.ts[max(0, len(index) - NEWEST_LINE_WINDOW) : len(index)]
    return max(tail) if len(tail) else None


async def _expire_archive(
    eventlog: EventLog, now_s: float, max_age_s: float | None, newest_line_s: int | None
) -> None:
    """Delete archived days older than ``archive_max_age``; later cursors into them resync.

    Not while the clock looks wrong (``clock_suspect``): the deletion is for good.
    """
    archive = eventlog.archive
    if max_age_s is None:
        await anyio.to_thread.run_sync(archive.refresh_summary)
        return
    if newest_line_s is None:
        # An empty log: the archive's last day stands for the newest line.
        last_day = (await anyio.to_thread.run_sync(archive.refresh_summary)).last_day
        newest_line_s = archived.day_start(last_day) + DAY_S - 1 if last_day else None
    suspect = clock_suspect(now_s, newest_line_s, eventlog.last_prune_at, max_age_s)
    if suspect is not None:
        log.warning(
            "prune_clock_suspect",
            reason=suspect,
            now=now_s,
            newest_line=newest_line_s,
            last_prune=eventlog.last_prune_at,
            archive_max_age_s=max_age_s,
            action="no archived day deleted",
        )
        await anyio.to_thread.run_sync(archive.refresh_summary)
        return
    before_day = archived.day_name(int(now_s - max_age_s))
    async with eventlog.archive_lock:
        removed = await anyio.to_thread.run_sync(archive.expire, before_day)
        await anyio.to_thread.run_sync(archive.refresh_summary)
        lost = removed.get(eventlog.seqmap.epoch, -1)
        if lost > eventlog.seqmap.lost_through():
            await eventlog.forget_through(lost)
            eventlog.archive_generation += 1
