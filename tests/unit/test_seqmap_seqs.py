"""``SeqMap.seqs_from``: the seqs of a file from a line on, without counting through."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from gastownd.eventlog.logstate import SeqMap

runs = st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 50)), max_size=6)


@given(runs=runs, base=st.integers(0, 10**9), skip=st.integers(0, 400))
def test_seqs_from_is_seqs_without_the_first(
    runs: list[tuple[int, int]], base: int, skip: int
) -> None:
    seqmap = SeqMap(epoch=1, inode=1, runs=runs, base=base)
    expected = list(itertools.islice(seqmap.seqs(), skip, skip + 60))
    assert list(itertools.islice(seqmap.seqs_from(skip), 60)) == expected
