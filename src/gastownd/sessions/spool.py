"""Hook requests spooled while the daemon was down: applied in order, exactly once.

``gastown-hook`` appends one frame per line to ``<town>/.gastownd/spool/hook-<uid>.jsonl``
when it cannot reach the daemon. The daemon sets such a file aside (rename to
``ingesting-…``), waits a short grace so a hook that already opened it has
written its line, then applies its lines in order. How far a file has been
applied is stored in the same SQLite transaction as each request's effects,
so a crash neither loses nor repeats one. A finished file is removed.

The hook also leaves notes there (``note-<uid>.jsonl``, one line per call it
had to cut whole values of, or lost: too deep, cut short, refused): they are
set aside the same way and logged (``hook_call_cut``, ``hook_call_lost``), at
most ``MAX_NOTES_LOGGED`` per pass and a count for the rest.

An entry the daemon cannot read as its own regular file (another uid's 0600 file left by a
hook run under ``sudo``, a directory, a FIFO, a symlink, a socket) is skipped, not fatal: it
is logged with why (``spool_entry_skipped``), counted, and looked at again only once it
changes, so it neither crashes the start nor holds back the files after it. A non-regular
entry is never opened (a FIFO would block) and a symlink is never followed.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec
import structlog

from gastown_client import codec
from gastown_client.protocol import ErrorCode, Hook, Request
from gastownd.ops import hooks
from gastownd.process.config import parse_duration
from gastownd.process.daemon import Daemon
from gastownd.process.refusals import DaemonError, StorageError
from gastownd.sessions.recorder import NO_CHANGE

log = structlog.get_logger("gastownd.spool")

PENDING_PREFIX = "hook-"
INGESTING_PREFIX = "ingesting-"
NOTE_PREFIX = "note-"
READING_PREFIX = "reading-"
# Notes logged one by one per pass; the rest are counted in one line.
MAX_NOTES_LOGGED = 20
# Bytes of a note file read: the hook writes ~300 bytes per note.
MAX_NOTE_FILE = 1 << 20
# How ``gastown-hook`` starts every frame (``hookclient.build_frame``), and how many of them
# past a line's head are tried when the line holds a torn frame before a whole one.
FRAME_HEAD = b'{"op":"hook","id":1,"payload":'
MAX_TORN_TRIES = 4
# Open flags for a spool entry: never follow a symlink, never block on a FIFO swapped in
# between the lstat and the open.
SAFE_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class SkippedEntry(Exception):
    """A spool entry that cannot be read as a regular file of the daemon's: the why."""


# What identifies one state of an entry: a skipped entry is looked at again once it changes
# (a chown, a chmod, an append, a replacement), never in a loop while it stays the same.
EntryState = tuple[int, int, int, int, int, int, int]


def _entry_state(info: os.stat_result) -> EntryState:
    return (
        info.st_dev,
        info.st_ino,
        info.st_mode,
        info.st_uid,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
    )


def _check_regular(info: os.stat_result) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise SkippedEntry("a symlink (never followed)")
    if not stat.S_ISREG(info.st_mode):
        raise SkippedEntry(f"not a regular file (mode {stat.filemode(info.st_mode)})")


def _read_entry(path: Path, limit: int = -1) -> bytes:
    """The bytes of the spool entry ``path`` (at most ``limit``), or ``SkippedEntry`` with
    why when it is not a regular file the daemon can read. The entry is lstat'ed first so a
    FIFO or a device is never opened; the open re-checks what it got (the entry may have
    been swapped in between)."""
    try:
        _check_regular(path.lstat())
        fd = os.open(path, SAFE_OPEN_FLAGS)
    except OSError as exc:
        raise SkippedEntry(f"cannot open: {exc.strerror} (errno {exc.errno})") from exc
    with open(fd, "rb") as file:
        _check_regular(os.fstat(fd))
        try:
            return file.read(limit)
        except OSError as exc:
            raise SkippedEntry(f"cannot read: {exc.strerror} (errno {exc.errno})") from exc


class SpoolIngester:
    def __init__(self, daemon: Daemon, folder: Path) -> None:
        self.daemon = daemon
        self.folder = folder
        self.applied = 0
        self._lock = anyio.Lock()
        # Entries skipped, by name, in the state they were skipped in.
        self._skipped: dict[str, EntryState] = {}

    def prepare(self) -> None:
        self.folder.mkdir(mode=0o700, exist_ok=True)

    async def run(self, stop: anyio.Event) -> None:
        import watchfiles  # not at start: it runs after the first answer (process/housekeeping.py)

        while not stop.is_set():
            try:
                # Inside the try: a pass that fails (the folder gone...) is retried, not fatal.
                await self.ingest()
                async for _changes in watchfiles.awatch(
                    self.folder,
                    recursive=False,
                    stop_event=stop,
                    # Also wake every 2 s with no change: a file written before the
                    # watch was in place (just after start) is then still found.
                    rust_timeout=2000,
                    yield_on_timeout=True,
                    step=50,
                    debounce=200,
                ):
                    await self.ingest()
            except (OSError, RuntimeError, StorageError) as exc:
                log.warning("spool_watch_restarting", error=str(exc))
                await anyio.sleep(1)

    async def ingest(self) -> int:
        """Apply every spooled request; returns how many were applied."""
        async with self._lock:
            set_aside = await anyio.to_thread.run_sync(self._set_aside)
            if set_aside:
                await anyio.sleep(parse_duration(self.daemon.config.hooks.spool_grace))
            notes = await anyio.to_thread.run_sync(self._take_notes)
            self.daemon.counters.hooks_lost += _log_notes(notes)
            count = 0
            for path in sorted(self.folder.glob(f"{INGESTING_PREFIX}*")):
                if not self._unchanged_since_skipped(path):
                    count += await self._ingest_file(path)
            if count:
                log.info("spool_ingested", requests=count)
            self.applied += count
            return count

    def _unchanged_since_skipped(self, path: Path) -> bool:
        """Whether ``path`` was skipped and has not changed since (then it is not looked at)."""
        skipped = self._skipped.get(path.name)
        if skipped is None:
            return False
        try:
            return _entry_state(path.lstat()) == skipped
        except OSError:
            return False

    def _skip(self, path: Path, why: SkippedEntry) -> None:
        """Log once that ``path`` is skipped and why; count it once per state it is in."""
        try:
            state = _entry_state(path.lstat())
        except OSError:
            return  # gone: nothing left to skip
        if self._skipped.get(path.name) == state:
            return
        self._skipped[path.name] = state
        self.daemon.counters.spool_entries_skipped += 1
        log.warning("spool_entry_skipped", file=path.name, reason=str(why))

    def _set_aside(self) -> int:
        moved = 0
        for prefix, aside in ((PENDING_PREFIX, INGESTING_PREFIX), (NOTE_PREFIX, READING_PREFIX)):
            for path in sorted(self.folder.glob(f"{prefix}*.jsonl")):
                if self._unchanged_since_skipped(path):
                    continue
                try:
                    info = path.lstat()
                    _check_regular(info)
                    if info.st_size == 0:
                        continue
                    # Only a file the daemon can open is set aside: another uid's stays under
                    # its own name, where its hook keeps appending.
                    os.close(os.open(path, SAFE_OPEN_FLAGS))
                except SkippedEntry as why:
                    self._skip(path, why)
                    continue
                except OSError as exc:
                    self._skip(
                        path, SkippedEntry(f"cannot open: {exc.strerror} (errno {exc.errno})")
                    )
                    continue
                stamp = f"{time.time_ns():020d}"
                try:
                    os.rename(path, path.with_name(f"{aside}{stamp}-{path.name}"))
                except OSError as exc:
                    self._skip(path, SkippedEntry(f"cannot rename: {exc.strerror}"))
                    continue
                self._skipped.pop(path.name, None)
                moved += 1
        return moved

    def _take_notes(self) -> list[bytes]:
        """The lines of the notes set aside (after the grace), whose files are then removed."""
        lines: list[bytes] = []
        for path in sorted(self.folder.glob(f"{READING_PREFIX}*")):
            if self._unchanged_since_skipped(path):
                continue
            try:
                lines += _read_entry(path, MAX_NOTE_FILE).splitlines()
                path.unlink()
            except SkippedEntry as why:
                self._skip(path, why)
            except OSError as exc:
                self._skip(path, SkippedEntry(f"cannot remove: {exc.strerror}"))
        return lines

    async def _ingest_file(self, path: Path) -> int:
        sessions = self.daemon.sessions
        name = path.name
        offset = await sessions.db(sessions.store.spool_offset, name)
        try:
            data = await anyio.to_thread.run_sync(_read_entry, path)
        except SkippedEntry as why:
            # Left where it is, its offset kept: applied from there once it can be read.
            self._skip(path, why)
            return 0
        self._skipped.pop(name, None)
        count = 0
        while offset < len(data):
            newline = data.find(b"\n", offset)
            if newline < 0:
                log.warning("spool_torn_line", file=name, offset=offset)
                break
            frame = data[offset:newline]
            offset = newline + 1
            mark = (name, offset)
            try:
                request = _decode_spooled(frame, name, offset)
                if not isinstance(request, Hook):
                    raise codec.BadRequest(
                        ErrorCode.BAD_REQUEST, "only hook requests are spooled", None
                    )
                await hooks.hook(self.daemon, request, spool_mark=mark)
                count += 1
            except StorageError:
                # The store's trouble, not the call's: nothing was applied and the offset
                # stays; the watch tries this line again (never a call dropped as rejected).
                raise
            except (codec.BadRequest, DaemonError) as exc:
                log.warning(
                    "spooled_request_rejected",
                    file=name,
                    offset=offset,
                    reason=getattr(exc, "message", str(exc)),
                )
                await sessions.apply(NO_CHANGE, spool_mark=mark)
            except Exception:
                # A poisoned line must not crash every start: log it, skip it.
                log.exception("spooled_request_failed", file=name, offset=offset)
                await sessions.apply(NO_CHANGE, spool_mark=mark)
        await anyio.to_thread.run_sync(path.unlink)
        await sessions.db(sessions.store.forget_spool_file, name)
        return count


def _decode_spooled(line: bytes, name: str, offset: int) -> Request:
    """The request on ``line``, or when it does not decode, the whole frame after a torn one:
    a hook whose write fell short (a full disk) leaves a fragment without its newline, and
    the next call's frame follows it on the same line. The hook starts every frame with
    ``FRAME_HEAD``; the first of at most ``MAX_TORN_TRIES`` such starts past the line's
    head that decodes is taken, and the fragment before it is logged, never applied."""
    try:
        return codec.decode_request(line)
    except codec.BadRequest:
        start = line.find(FRAME_HEAD, 1)
        for _ in range(MAX_TORN_TRIES):
            if start < 0:
                break
            try:
                request = codec.decode_request(line[start:])
            except codec.BadRequest:
                start = line.find(FRAME_HEAD, start + 1)
                continue
            log.warning("spool_torn_line", file=name, offset=offset, dropped_bytes=start)
            return request
        raise


class _Note(msgspec.Struct, forbid_unknown_fields=False):
    lost: bool = True
    reason: str = "unknown"
    hook_event: str = ""
    session_id: str = ""
    bytes: int = 0
    pid: int = 0


_note_decoder = msgspec.json.Decoder(_Note)


def _log_notes(lines: list[bytes]) -> int:
    """Log the notes (``MAX_NOTES_LOGGED`` of them, a count for the rest); returns how
    many say a call was lost, all counted (one that cannot be read is taken as lost)."""
    lost = 0
    for index, line in enumerate(lines):
        try:
            note = _note_decoder.decode(line)
        except (msgspec.DecodeError, RecursionError):
            note = _Note(reason="unreadable note")
        lost += note.lost
        if index >= MAX_NOTES_LOGGED:
            continue
        log.warning(
            "hook_call_lost" if note.lost else "hook_call_cut",
            reason=note.reason,
            hook_event=note.hook_event or None,
            session_id=note.session_id or None,
            bytes=note.bytes,
            pid=note.pid,
        )
    if len(lines) > MAX_NOTES_LOGGED:
        log.warning("hook_notes_suppressed", notes=len(lines) - MAX_NOTES_LOGGED)
    return lost
