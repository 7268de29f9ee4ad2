"""Counting the lines of a stretch of the log, two halves at once on a long one.

A start with no snapshot counts the lines it leaves to the background index
(their number gives the seqs of what follows): 220 MB take about 110 ms, all
of it before the first answer. A long stretch is cut in two: this file, run
as ``python -I -S line_count.py FD START END`` (the standard library only, so
that it starts in milliseconds), counts the first half in a process of its
own while the daemon counts the second. Every newline ends one line, so the
halves add up wherever the cut falls.
"""

from __future__ import annotations

import os
import subprocess
import sys

# A stretch at least this long is counted in two processes.
PARALLEL_MIN_BYTES = 64 << 20
CHUNK = 4 << 20


def count_lines(fd: int, start: int, end: int) -> int:
    """The newlines in bytes ``start..end`` of ``fd`` (fewer if the file is shorter)."""
    if end - start >= PARALLEL_MIN_BYTES and (os.cpu_count() or 1) >= 2:
        middle = start + (end - start) // 2
        helper = _spawn(fd, start, middle)
        if helper is not None:
            second = count_here(fd, middle, end)
            first = _collect(helper)
            return (first if first is not None else count_here(fd, start, middle)) + second
    return count_here(fd, start, end)


def count_here(fd: int, start: int, end: int) -> int:
    lines = 0
    offset = start
    # One buffer read into again and again: a fresh 4 MiB object per read costs as much
    # in page faults as the count itself.
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while offset < end:
        got = os.preadv(fd, [view[: min(CHUNK, end - offset)]], offset)
        if not got:
            break
        lines += buffer.count(b"\n", 0, got)
        offset += got
    return lines


def spawn_range_worker(
    command: list[str], fd: int, start: int, end: int
) -> subprocess.Popen[bytes] | None:
    """``command FD START END`` reading bytes ``start..end`` of the inherited ``fd``,
    answering on its stdout; ``None`` when it cannot be started (the caller does the work)."""
    try:
        return subprocess.Popen(
            [*command, str(fd), str(start), str(end)],
            pass_fds=[fd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None


def _spawn(fd: int, start: int, end: int) -> subprocess.Popen[bytes] | None:
    return spawn_range_worker([sys.executable, "-I", "-S", __file__], fd, start, end)


def _collect(helper: subprocess.Popen[bytes]) -> int | None:
    """The helper's count, or None if it failed (the caller counts that half itself)."""
    output, _ = helper.communicate()
    if helper.returncode != 0:
        return None
    try:
        return int(output)
    except ValueError:
        return None


if __name__ == "__main__":
    descriptor, first, last = (int(arg) for arg in sys.argv[1:])
    sys.stdout.write(f"{count_here(descriptor, first, last)}\n")
