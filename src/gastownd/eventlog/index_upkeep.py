"""The index kept current: our batches' lines, others' appends and rewrites, a prune's swap.

Every change runs on the event loop, in file order, and publishes the new
lines to the subscribers (see ``EventLog``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from gastownd.core.index import MALFORMED, EventIndex, Known
from gastownd.eventlog.indexer import LongLine
from gastownd.eventlog.logstate import SeqMap, runs_of, write_seqmap
from gastownd.eventlog.subscriptions import Published
from gastownd.eventlog.writer import Append, Observation
from gastownd.server.ratelog import RateLimitedLog


class IndexUpkeep:
    """``EventLog``'s index upkeep (its state is set up by ``EventLog``)."""

    index: EventIndex
    seqmap: SeqMap
    fd: int
    inode: int
    state_dir: Path
    external: int
    warnings: RateLimitedLog
    _publish: Callable[[list[Published]], None]

    def apply_observation(self, observation: Observation) -> None:
        """Bring the index up to date with what others did (event loop, in file order)."""
        rewrite = observation.rewrite
        if rewrite is not None:
            if rewrite.new_fd is not None:
                os.close(self.fd)
                self.fd = rewrite.new_fd
                self.inode = os.fstat(rewrite.new_fd).st_ino
            self.index = rewrite.index
            fresh = list(range(rewrite.fresh_from, len(self.index)))
            self.external += len(fresh)
            self._publish_positions(fresh, rewrite.data, 0)
            self.seqmap = SeqMap(
                epoch=self.seqmap.epoch,
                inode=self.inode,
                runs=runs_of(self.index.seqs),
                base=self.index.next_seq(),
                pruned_through=max(self.seqmap.pruned_through, rewrite.removed_max),
                # Lines others removed never reached the archive.
                unarchived_through=max(self.seqmap.lost_through(), rewrite.removed_max),
            )
            checkpoint = msgspec.structs.replace(
                self.seqmap, end=len(rewrite.data), tail=rewrite.tail
            )
            write_seqmap(self.state_dir, checkpoint)
        # Lines appended by others (after a rewrite: those appended while it was read).
        for part in observation.appended:
            if isinstance(part, LongLine):
                self._index_long_line(part)
            else:
                self._index_bytes(part, external=True)

    def switch_to(self, index: EventIndex, fd: int, seqmap: SeqMap) -> None:
        """A prune's swap (event loop): the new file, its index and its seqmap."""
        self.index = index
        self.fd = fd
        self.inode = seqmap.inode
        self.seqmap = seqmap

    def _index_bytes(self, data: bytes, *, external: bool) -> list[int]:
        """Index whole lines appended at ``index.end``; returns their positions."""
        index = self.index
        first = len(index)
        offset = index.end
        malformed = index.malformed
        index.add_lines(data, offset, itertools.count(index.next_seq()))
        positions = list(range(first, len(index)))
        if external:
            self.external += len(positions)
        if index.malformed > malformed:
            at = next(p for p in positions if index.types[p] == MALFORMED)
            self.warnings.warning(
                "eventlog_malformed_lines",
                "not_indexable",
                lines=index.malformed - malformed,
                first_offset=index.offsets[at],
            )
        self._publish_positions(positions, data, offset)
        return positions

    def _index_long_line(self, line: LongLine) -> None:
        """Another writer's line too long to index: counted, never read whole."""
        index = self.index
        index.add_unindexable(line.offset, line.length, index.next_seq(), line.checksum)
        self.external += 1
        self.warnings.warning(
            "eventlog_malformed_lines", "not_indexable", lines=1, first_offset=line.offset
        )

    def _index_known(self, items: list[Append], known: list[Known]) -> range:
        """Index and publish a batch of lines whose fields are ``known`` (ours), at
        ``index.end``, in one call; returns their positions."""
        index = self.index
        seq = index.next_seq()
        lines = [item.line for item in items]
        first = index.add_known_lines(lines, index.end, seq, known)
        self._publish(
            [
                Published(at, fields.type, fields.actor, fields.session, fields.ts, line[:-1])
                for at, fields, line in zip(itertools.count(seq), known, lines)
            ]
        )
        return range(first, first + len(lines))

    def _publish_positions(self, positions: list[int], data: bytes, data_offset: int) -> None:
        index = self.index
        items = []
        for position in positions:
            if index.types[position] == MALFORMED:
                continue
            entry = index.entry(position)
            start = entry.offset - data_offset
            assert entry.type is not None
            items.append(
                Published(
                    entry.seq,
                    entry.type,
                    entry.actor,
                    entry.session,
                    entry.ts,
                    data[start : start + entry.length - 1],
                )
            )
        self._publish(items)
