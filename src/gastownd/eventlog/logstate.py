"""The event log's bookkeeping files in ``<town>/.gastownd/``: seqmaps and the index snapshot.

A seqmap (``seqmap-<inode>.json``) records how seqs map onto the lines of
one file after a rewrite, plus a checkpoint (size and tail bytes) that tells
whether the file is still the one it describes. The index snapshot
(``index.snapshot``: a JSON header line, then the raw index columns) lets a
restart skip re-parsing the lines it already indexed. Both are written
atomically (temp file, fsync, rename, directory fsync) and are only ever a
shortcut: a missing or stale one costs time, never data. Also the file helpers
every writer of the log and its archive shares (``write_all``, the tail checks).
"""

from __future__ import annotations

import itertools
import os
import stat
import zlib
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path

import msgspec
import structlog

from gastownd.core.index import IndexHeader
from gastownd.core.retention import STEP, drive

log = structlog.get_logger("gastownd.logstate")

# How many of the log's last bytes a checkpoint keeps: a file whose bytes before the
# checkpoint's end differ is another file (rewritten or replaced), whatever its size.
TAIL_SIGNATURE = 64

# 2: 32-bit checksums and posting lists. 3: lines judged by the limits of
# ``core.events`` (nesting, numbers, UTF-8), which older snapshots did not apply.
# 4: a ts is strict (fields in range) and within years 1..9999 UTC; an older snapshot may
# hold such lines as well-formed, so it is rebuilt from the log once.
SNAPSHOT_VERSION = 4

# The most of a bookkeeping file (a seqmap, an archive's day catalogue or journal) read
# into memory; real ones are a few KiB. Past it the file is damaged, not read.
MAX_STATE_FILE_BYTES = 64 << 20
# The most the snapshot's JSON header line may take (it names every type and actor);
# past it the snapshot is ignored and the index rebuilt from the log.
MAX_SNAPSHOT_HEADER_BYTES = 64 << 20


class SeqMap(msgspec.Struct, kw_only=True):
    """How seqs map onto the lines of one file (one inode)."""

    epoch: int
    inode: int
    # (first seq, count) runs for the first lines of the file, in order.
    runs: list[tuple[int, int]] = msgspec.field(default_factory=list)
    # Seq of the first line after the runs; later lines count up from it.
    base: int = 0
    # Highest seq ever removed from the log.
    pruned_through: int = -1
    # Highest seq removed from the log and not kept in the archive: a cursor
    # before it must resync. None (a seqmap from before the archive kept seqs):
    # ``pruned_through``.
    unarchived_through: int | None = None
    # A checkpoint: the file had at least ``end`` bytes ending with ``tail``.
    end: int = 0
    tail: bytes = b""

    def lost_through(self) -> int:
        """Highest seq that neither the log nor the archive holds any more."""
        return self.pruned_through if self.unarchived_through is None else self.unarchived_through

    def seqs(self) -> Iterator[int]:
        for first, count in self.runs:
            yield from range(first, first + count)
        seq = self.base
        while True:
            yield seq
            seq += 1

    def seqs_from(self, skip: int) -> Iterator[int]:
        """``seqs()`` without its first ``skip`` seqs, skipped without counting through."""
        for first, count in self.runs:
            if skip >= count:
                skip -= count
                continue
            yield from range(first + skip, first + count)
            skip = 0
        yield from itertools.count(self.base + skip)


def runs_of(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive seqs as (first, count) runs."""
    return drive(runs_steps(seqs))


def runs_steps(seqs: Sequence[int]) -> Generator[None, None, list[tuple[int, int]]]:
    """``runs_of`` in steps (yields every ``STEP`` seqs)."""
    runs: list[tuple[int, int]] = []
    for done, seq in enumerate(seqs):
        if done % STEP == 0:
            yield
        if runs and runs[-1][0] + runs[-1][1] == seq:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((seq, 1))
    return runs


def load_seqmaps(state_dir: Path) -> dict[int, SeqMap]:
    maps: dict[int, SeqMap] = {}
    for path in state_dir.glob("seqmap-*.json"):
        try:
            seqmap = msgspec.json.decode(read_state_file(path), type=SeqMap)
        except (OSError, msgspec.DecodeError, ValueError):
            log.warning("seqmap_unreadable", path=str(path))
            continue
        maps[seqmap.inode] = seqmap
    return maps


def write_seqmap(state_dir: Path, seqmap: SeqMap) -> None:
    """Atomically replace the seqmap of ``seqmap.inode``; keep only it and one more."""
    target = state_dir / f"seqmap-{seqmap.inode}.json"
    write_atomically(target, [msgspec.json.encode(seqmap)])
    others = sorted(
        (p for p in state_dir.glob("seqmap-*.json") if p != target),
        key=lambda p: p.lstat().st_mtime,  # a dangling symlink among them is stale too
    )
    for stale in others[:-1]:
        stale.unlink(missing_ok=True)


class SnapshotMeta(msgspec.Struct, kw_only=True):
    version: int
    inode: int
    epoch: int
    tail: bytes
    header: IndexHeader
    blob_sizes: list[int]
    # crc32 of the column bytes, one after the other: a damaged file is rebuilt from the
    # log, never trusted (None: not computed, as in ``indexer`` parts).
    blobs_crc: int | None = None


_snapshot_meta_decoder = msgspec.json.Decoder(SnapshotMeta)


def read_snapshot(path: Path) -> tuple[SnapshotMeta, list[bytes]] | None:
    """The saved header and column bytes, or None (missing or unreadable)."""
    try:
        with open(open_state_file(path), "rb") as handle:
            first = handle.readline(MAX_SNAPSHOT_HEADER_BYTES + 1)
            if len(first) > MAX_SNAPSHOT_HEADER_BYTES:
                raise ValueError(f"a header line longer than {MAX_SNAPSHOT_HEADER_BYTES} bytes")
            meta = _snapshot_meta_decoder.decode(first)
            size = os.fstat(handle.fileno()).st_size
            if min(meta.blob_sizes, default=0) < 0 or sum(meta.blob_sizes) != size - len(first):
                raise ValueError("the column sizes do not add up to the file's size")
            blobs = [handle.read(n) for n in meta.blob_sizes]
        if meta.blobs_crc is not None and meta.blobs_crc != blobs_checksum(blobs):
            raise ValueError("the columns do not match their checksum")
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, RecursionError, ValueError, MemoryError) as exc:
        log.warning("index_snapshot_unreadable", error=str(exc), action="rebuilt from the log")
        return None
    return meta, blobs


def write_snapshot(path: Path, meta: SnapshotMeta, blobs: Sequence[bytes]) -> None:
    """``blobs`` are read twice, one at a time (an index export copies each on demand)."""
    meta = msgspec.structs.replace(meta, blobs_crc=blobs_checksum(blobs))
    write_atomically(path, itertools.chain([msgspec.json.encode(meta) + b"\n"], blobs))


def blobs_checksum(blobs: Iterable[bytes]) -> int:
    crc = 0
    for blob in blobs:
        crc = zlib.crc32(blob, crc)
        del blob  # before the next is made: blobs may be copies made on demand
    return crc


def write_atomically(path: Path, parts: Iterable[bytes]) -> None:
    temp = path.with_suffix(".tmp")
    with open(temp, "wb") as handle:
        handle.writelines(parts)  # each part released before the next is made
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def open_state_file(path: Path) -> int:
    """A read-only descriptor of one of the daemon's own files, whatever is in its place.

    Opened without blocking (a FIFO in its place would wait for a writer for good) and only
    if it is a regular file (a device such as ``/dev/zero`` behind a symlink never ends):
    anything else raises ``OSError``, as a missing file does (``FileNotFoundError``).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_state_file(path: Path, limit: int = MAX_STATE_FILE_BYTES) -> bytes:
    """The whole of one of the daemon's own small files (``open_state_file``); a file of
    more than ``limit`` bytes raises ``ValueError`` instead of filling memory."""
    with open(open_state_file(path), "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: more than {limit} bytes")
    return data


def read_tail(fd: int, end: int) -> bytes:
    """The last ``TAIL_SIGNATURE`` bytes of the file before ``end``."""
    take = min(TAIL_SIGNATURE, end)
    return os.pread(fd, take, end - take) if take else b""


def tail_matches(fd: int, end: int, tail: bytes) -> bool:
    """The file's bytes before ``end`` end with ``tail`` (an empty tail always does).

    A tail longer than ``end`` (a damaged seqmap or snapshot) matches nothing.
    """
    if len(tail) > end:
        return False
    return not tail or os.pread(fd, len(tail), end - len(tail)) == tail


# Linux reads at most this many bytes in one read(2)/pread(2), whatever is asked.
MAX_SINGLE_READ = 0x7FFFF000


def pread_all(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes from ``offset``, or fewer only at the file's end.

    One ``os.pread`` returns at most ``MAX_SINGLE_READ`` bytes (about 2 GiB):
    a log or a window larger than that needs several.
    """
    if length <= MAX_SINGLE_READ:
        return os.pread(fd, length, offset)
    parts: list[bytes] = []
    while length > 0:
        part = os.pread(fd, min(length, MAX_SINGLE_READ), offset)
        if not part:
            break
        parts.append(part)
        offset += len(part)
        length -= len(part)
    return b"".join(parts)


def write_all(fd: int, data: bytes) -> None:
    """All of ``data``: one ``os.write`` may write less."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    """Make a rename or a new name in ``path`` survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
