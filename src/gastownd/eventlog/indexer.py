"""Indexing a big log in worker processes, side by side, when there is no snapshot.

A cold start costs the decoding of every line. A stretch of the log longer
than ``PARALLEL_MIN_BYTES`` is cut at line boundaries into one part per CPU
(``MAX_WORKERS`` at most); ``python -m gastownd.eventlog.indexer`` indexes each part
in a process of its own, which imports only the pure index code, reads its
part through the log's descriptor (inherited: the file cannot change under
it) and writes the part's index to stdout in the snapshot's format. The
daemon appends the parts in order (``EventIndex.append_index``) and gives
them their seqs. Two gains: the parts are decoded at the same time, and the
garbage of decoding dies with the workers, so the daemon keeps the columns
and little else. A worker that fails is replaced by indexing its part here.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import IO

import msgspec

from gastownd.core.events import MAX_LINE_BYTES
from gastownd.core.index import EventIndex, IndexHeader
from gastownd.eventlog.line_count import spawn_range_worker

PARALLEL_MIN_BYTES = 64 << 20
MAX_WORKERS = 4
# Bytes decoded at a time: the per-line objects of one chunk are what indexing holds
# beyond the columns (16 MiB: about 170 MB at the peak for half the 1 M-line log,
# 2 MiB: about 90 MB, and no slower).
READ_CHUNK = 2 << 20
FIND_NEWLINE_WITHIN = 1 << 20
# glibc's mallopt parameter, and the size from which blocks are mapped (see
# ``fix_mmap_threshold``): the columns of a large index and their copies, not read chunks.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20


def index_range(
    fd: int,
    start: int,
    end: int,
    seqs: Iterator[int],
    *,
    parallel_min: int = PARALLEL_MIN_BYTES,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EventIndex:
    """The index of the whole lines in bytes ``start..end`` of ``fd``, seqs from ``seqs``.

    ``progress`` hears the offset indexed through, now and then.
    """
    if end - start >= MMAP_THRESHOLD:
        # A shorter stretch makes no block that large; a daemon whose index grows by
        # appends has it fixed by its housekeeping (``process/housekeeping.py``).
        fix_mmap_threshold()
    parts = workers if workers is not None else min(MAX_WORKERS, os.cpu_count() or 1)
    if end - start < parallel_min or parts < 2:
        return index_here(fd, start, end, seqs, progress)
    cuts = _cuts(fd, start, end, parts)
    spawned = [_spawn(fd, low, high) for low, high in itertools.pairwise(cuts)]
    whole: EventIndex | None = None
    for (low, high), worker in zip(itertools.pairwise(cuts), spawned, strict=True):
        part = _collect(worker)
        if part is None:
            part = index_here(fd, low, high, itertools.count())
        # The first part becomes the whole (no copy); the others are appended to it
        # and dropped at once, so that at most one part is held beside the whole.
        if whole is None:
            whole = part
        else:
            whole.append_index(part, consume=True)
        del part
        if progress is not None:
            progress(high)
    assert whole is not None  # ``cuts`` has at least one part
    whole.renumber(seqs)
    return whole


def fix_mmap_threshold() -> None:
    """Have glibc map every block of ``MMAP_THRESHOLD`` or more on its own, now and
    for the process's life, so that freeing one returns it to the system.

    An index's columns and their copies (a part being appended, a snapshot being
    written) are such blocks. By default glibc raises its threshold to the size of
    the first mapped block freed, after which blocks of that size come from the
    heap, where one small allocation above them keeps them resident: on the 1 M-line
    log, a daemon then stayed about 20 MB higher after a snapshot, in one start of
    three (peaks of 145 MB instead of 126).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # only here: no first answer needs it, and it costs a start about 1-2 ms

    with contextlib.suppress(OSError, AttributeError):  # not glibc: its own policy
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


class LongLine(msgspec.Struct, frozen=True):
    """A line longer than ``MAX_LINE_BYTES`` (never indexable), described, never held."""

    offset: int
    length: int  # newline included
    checksum: int  # crc32 of the line without its newline, as the index keeps it


def whole_lines(
    fd: int, start: int, end: int, chunk: int = READ_CHUNK, longest: int = MAX_LINE_BYTES
) -> Iterator[bytes | LongLine]:
    """The whole lines of bytes ``start..end`` of ``fd``, in order: runs of lines as bytes
    (at most about ``chunk`` plus ``longest`` at a time), and a line found longer than
    ``longest`` while still unfinished as a ``LongLine``, read past in pieces, so that
    memory stays bounded whatever another writer appended. A last line with no newline
    is left out."""
    offset = start
    pending = b""  # the start of an unfinished line, which ends at ``offset``
    long: LongLine | None = None  # the line being read past, so far
    while offset < end:
        piece = os.pread(fd, min(chunk, end - offset), offset)
        if not piece:
            return
        offset += len(piece)
        if long is not None:
            newline = piece.find(b"\n")
            if newline < 0:
                long = LongLine(
                    long.offset, long.length + len(piece), zlib.crc32(piece, long.checksum)
                )
                continue
            yield LongLine(
                long.offset, long.length + newline + 1, zlib.crc32(piece[:newline], long.checksum)
            )
            long = None
            piece = piece[newline + 1 :]
        data = pending + piece
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        pending = data[cut:]
        if len(pending) > longest:
            long = LongLine(offset - len(pending), len(pending), zlib.crc32(pending))
            pending = b""


def index_here(
    fd: int,
    start: int,
    end: int,
    seqs: Iterator[int],
    progress: Callable[[int], None] | None = None,
) -> EventIndex:
    """Index bytes ``start..end`` of ``fd`` in this process."""
    index = EventIndex(start)
    for part in whole_lines(fd, start, end, READ_CHUNK):
        if isinstance(part, LongLine):
            index.add_unindexable(part.offset, part.length, next(seqs), part.checksum)
        else:
            index.add_lines(part, index.end, seqs)
        if progress is not None:
            progress(index.end)
    return index


def _cuts(fd: int, start: int, end: int, parts: int) -> list[int]:
    """``start``, the line boundaries nearest to equal shares, ``end``."""
    cuts = [start]
    for share in range(1, parts):
        target = start + (end - start) * share // parts
        window = os.pread(fd, min(FIND_NEWLINE_WITHIN, end - target), target)
        newline = window.find(b"\n")
        if newline >= 0 and target + newline + 1 > cuts[-1]:
            cuts.append(target + newline + 1)
    cuts.append(end)
    return cuts


def _spawn(fd: int, start: int, end: int) -> subprocess.Popen[bytes] | None:
    return spawn_range_worker([sys.executable, "-m", "gastownd.eventlog.indexer"], fd, start, end)


def _collect(worker: subprocess.Popen[bytes] | None) -> EventIndex | None:
    """The part a worker indexed, or None if it failed.

    Read column by column, each straight into the part's arrays: the daemon
    never holds a worker's whole output beside the part it makes of it.
    """
    if worker is None:
        return None
    stdout = worker.stdout
    assert stdout is not None  # spawned with stdout=PIPE
    try:
        header = _header_decoder.decode(stdout.readline())
        part: EventIndex | None = EventIndex.restore(
            header.index, (_read_exactly(stdout, size) for size in header.sizes)
        )
    except (ValueError, msgspec.DecodeError, OSError):
        part = None
    finally:
        stdout.close()  # a worker still writing gets EPIPE and ends
        worker.wait()
    return part if worker.returncode == 0 else None


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError(f"a worker's part ended {size - len(data)} bytes short")
    return data


class _PartHeader(msgspec.Struct):
    index: IndexHeader
    sizes: list[int]


_header_decoder = msgspec.json.Decoder(_PartHeader)


def main(argv: list[str]) -> int:
    """The worker: index a part of the log, write it to stdout."""
    fd, start, end = (int(arg) for arg in argv)
    index = index_here(fd, start, end, itertools.count())
    header, blobs = index.export()
    out = sys.stdout.buffer
    out.write(msgspec.json.encode(_PartHeader(index=header, sizes=blobs.sizes)))
    out.write(b"\n")
    out.writelines(blobs)  # one column's copy at a time
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
