"""Reading a rewritten or replaced log without holding the writers' lock for it.

Re-reading a whole log and matching it to the index takes seconds on a big
file; every ``gt`` in the town would wait for it if it were done under the
lock. So ``LogFile`` reads and matches the file's whole lines with the lock
released, then, with the lock held again, checks that what it read is still
the start of the file the log's name leads to (``still_the_start``), and
only catches up with the lines appended since. When the check fails (the
file changed again meanwhile), it reads again under the lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from gastownd.eventlog.logstate import TAIL_SIGNATURE, pread_all, tail_matches


def whole_lines_now(fd: int) -> bytes:
    """The file's bytes up to its last newline (lock not held: a line may be mid-write)."""
    size = os.fstat(fd).st_size
    data = pread_all(fd, size, 0) if size else b""
    if data.endswith(b"\n"):  # the usual case: no copy of a file that may be gigabytes
        return data
    return data[: data.rfind(b"\n") + 1]


def still_the_start(path: Path, fd: int, start: bytes) -> bool:
    """``start`` is still how the log begins (lock held).

    The name must still lead to ``fd``'s file, which must be at least as long
    and still hold ``start``'s last bytes where they were: the same test that
    tells an append from a rewrite everywhere else (``tail_matches``).
    """
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
        return False
    return held.st_size >= len(start) and tail_matches(fd, len(start), start[-TAIL_SIGNATURE:])
