"""The index as a header and raw column bytes, and back (snapshot files, worker parts).

The header carries the string tables and counts; each column is its
array's bytes, then the type and the session postings each as one run of
positions. Restoring checks what costs no pass over the lines, so that a
damaged snapshot costs a rebuild, never a wrong answer or a crash later.
"""

from __future__ import annotations

import bisect
import operator
from array import array
from collections.abc import Iterable, Sequence
from typing import overload

import msgspec

from gastownd.core.index_columns import POSTING, LineColumns
from gastownd.core.index_postings import NameTables, below


class IndexHeader(msgspec.Struct, kw_only=True):
    seq_floor: int = 0
    count: int
    end: int
    malformed: int
    type_names: list[str]
    actor_names: list[str]
    session_names: list[str]
    itemsizes: list[int]
    type_counts: list[int]
    session_counts: list[int]


class ColumnBlobs(Sequence[bytes]):
    """The column bytes of an export, each copied only when it is asked for, so that a
    snapshot writer holds one column's copy at a time rather than the whole index's.

    Safe in a worker thread while the event loop appends: each copy is made under
    the GIL, and the first ``count`` lines never change.
    """

    def __init__(
        self, columns: list[array[int]], postings: list[list[array[int]]], count: int
    ) -> None:
        self._columns, self._postings, self._count = columns, postings, count
        posting_size = array(POSTING).itemsize
        self.sizes = [column.itemsize * count for column in columns] + [
            sum(bisect.bisect_left(p, count) for p in lists) * posting_size for lists in postings
        ]

    def __len__(self) -> int:
        return len(self.sizes)

    @overload
    def __getitem__(self, item: int) -> bytes: ...

    @overload
    def __getitem__(self, item: slice) -> list[bytes]: ...

    def __getitem__(self, item: int | slice) -> bytes | list[bytes]:
        if isinstance(item, slice):
            return [self[i] for i in range(len(self))[item]]
        item = range(len(self))[item]  # negative ones, and IndexError past the end
        if item < len(self._columns):
            # One copy (not a slice and its bytes): the whole column, cut only if lines
            # were appended since the export (slicing bytes to their length is free).
            whole = self._columns[item].tobytes()
            size = self.sizes[item]
            return whole if len(whole) == size else whole[:size]
        lists = self._postings[item - len(self._columns)]
        return b"".join(below(p, self._count).tobytes() for p in lists)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(map(operator.eq, self, other))

    __hash__ = None  # type: ignore[assignment]  # compared by content, as a list is


def header(
    columns: LineColumns,
    tables: NameTables,
    count: int,
    end: int,
    type_counts: list[int],
    session_counts: list[int],
) -> IndexHeader:
    """The header of the first ``count`` lines, ending at byte ``end``, given how many
    entries of each type and session posting list fall below ``count`` (one per name,
    in name order: names interned after those counts were taken are left out, as no line
    below ``count`` uses them). Made on the loop thread, where the tables cannot grow
    meanwhile."""
    return IndexHeader(
        seq_floor=columns.seq_floor,
        type_counts=type_counts,
        session_counts=session_counts,
        count=count,
        end=end,
        malformed=count - sum(type_counts),
        type_names=tables.type_names[: len(type_counts)],
        actor_names=tables.actor_names[:],
        session_names=tables.session_names[: len(session_counts)],
        itemsizes=[getattr(columns, name).itemsize for name in columns.COLUMNS],
    )


def export(
    columns: LineColumns, tables: NameTables, count: int | None = None, end: int | None = None
) -> tuple[IndexHeader, ColumnBlobs]:
    """The first ``count`` lines (all by default), ending at byte ``end``, as a header
    and raw column bytes (copied when read: see ``ColumnBlobs``)."""
    count = len(columns) if count is None else count
    end = columns.end if end is None else end
    empty: array[int] = array(POSTING)
    type_postings = [tables.by_type.get(i, empty) for i in range(len(tables.type_names))]
    session_postings = [tables.by_session.get(i, empty) for i in range(len(tables.session_names))]
    blobs = ColumnBlobs(
        [getattr(columns, name) for name in columns.COLUMNS],
        [type_postings, session_postings],
        count,
    )
    type_counts = [bisect.bisect_left(p, count) for p in type_postings]
    session_counts = [bisect.bisect_left(p, count) for p in session_postings]
    return header(columns, tables, count, end, type_counts, session_counts), blobs


def restore(
    columns: LineColumns, tables: NameTables, header: IndexHeader, blobs: Iterable[bytes]
) -> None:
    """The inverse of ``export``, into empty ``columns`` and ``tables``; raises
    ValueError if the parts do not fit. ``blobs`` is taken one at a time (a reader
    may produce each as it is needed)."""
    parts = iter(blobs)
    if len(header.itemsizes) != len(columns.COLUMNS):
        raise ValueError("snapshot columns do not fit this build")
    for name, itemsize in zip(columns.COLUMNS, header.itemsizes, strict=True):
        column = getattr(columns, name)
        blob = next(parts, None)
        if blob is None or column.itemsize != itemsize or len(blob) != itemsize * header.count:
            raise ValueError(f"snapshot column {name} does not fit this build")
        column.frombytes(blob)
        del blob
    type_blob, session_blob = next(parts, None), next(parts, None)
    if type_blob is None or session_blob is None or next(parts, None) is not None:
        raise ValueError("snapshot parts do not fit this build")
    columns.end, columns.malformed = header.end, header.malformed
    columns.seq_floor = header.seq_floor
    tables.set_names(header.type_names, header.actor_names, header.session_names)
    tables.by_type = _split_postings(type_blob, header.type_counts, header.count)
    tables.by_session = _split_postings(session_blob, header.session_counts, header.count)
    _check(columns, tables, header)


def _check(columns: LineColumns, tables: NameTables, header: IndexHeader) -> None:
    """Raise ValueError unless a restored index fits together. Only what costs no pass
    over the lines (the snapshot file's checksum covers its bytes)."""
    count = len(columns)
    if len(header.type_counts) != len(tables.type_names) or len(header.session_counts) != len(
        tables.session_names
    ):
        raise ValueError("snapshot postings do not match its names")
    if header.malformed != count - sum(header.type_counts) or header.malformed < 0:
        raise ValueError("snapshot malformed count does not fit its postings")
    if not count:
        return
    offsets, seqs = columns.offsets, columns.seqs
    if not (0 <= offsets[0] <= offsets[-1] < columns.end) or not (0 <= seqs[0] <= seqs[-1]):
        raise ValueError("snapshot offsets or seqs out of order")
    if columns.seq_floor < 0:
        raise ValueError("snapshot seq floor is negative")


def _split_postings(blob: bytes, counts: list[int], lines: int) -> dict[int, array[int]]:
    whole = array(POSTING)
    if len(blob) % whole.itemsize:
        raise ValueError("snapshot postings are cut short")
    whole.frombytes(blob)
    if len(whole) != sum(counts) or min(counts, default=0) < 0:
        raise ValueError("snapshot postings do not fit their counts")
    postings: dict[int, array[int]] = {}
    start = 0
    for key, count in enumerate(counts):
        part = postings[key] = whole[start : start + count]
        start += count
        if part and not 0 <= part[0] <= part[-1] < lines:  # each list is sorted
            raise ValueError("snapshot postings point past its lines")
    return postings
