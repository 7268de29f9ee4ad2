"""The index's string tables and posting lists.

Types, actors and sessions are interned: a line's columns hold small ids,
the tables map ids to names and back. Types and sessions also keep a
posting list each (the sorted positions of their lines), which queries
naming a type or a session walk instead of every line. Pure.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from array import array
from collections.abc import Collection, Iterable, Iterator, Sequence

from gastownd.core.index_columns import MALFORMED, NO_SESSION, POSTING
from gastownd.core.query import CompiledFilter

# The type ids and actor ids a filter accepts (None: any), and its session id.
FilterIds = tuple[set[int] | None, set[int] | None, int]
# An id not interned yet, while a batch is looked up.
_UNSEEN = -2


class NameTables:
    """Interned type, actor and session names, and the type and session postings."""

    def __init__(self) -> None:
        self.type_names: list[str] = []
        self._type_ids: dict[str, int] = {}
        self.actor_names: list[str] = []
        self._actor_ids: dict[str, int] = {}
        self.session_names: list[str] = []
        self._session_ids: dict[str, int] = {}
        self.by_type: dict[int, array[int]] = {}
        self.by_session: dict[int, array[int]] = {}

    def set_names(
        self, type_names: list[str], actor_names: list[str], session_names: list[str]
    ) -> None:
        """Take these tables (ids are list positions); postings are the caller's."""
        self.type_names, self.actor_names = type_names, actor_names
        self.session_names = session_names
        self._type_ids = {name: i for i, name in enumerate(type_names)}
        self._actor_ids = {name: i for i, name in enumerate(actor_names)}
        self._session_ids = {name: i for i, name in enumerate(session_names)}

    def copy_names(self, other: NameTables) -> None:
        """Share ``other``'s ids (copies of its tables), with no postings yet."""
        self.type_names, self._type_ids = list(other.type_names), dict(other._type_ids)
        self.actor_names, self._actor_ids = list(other.actor_names), dict(other._actor_ids)
        self.session_names = list(other.session_names)
        self._session_ids = dict(other._session_ids)

    # ------------------------------------------------------------ interning

    def intern(self, type_: str, actor: str, session: str | None) -> tuple[int, int, int]:
        type_id = interned(type_, self._type_ids, self.type_names, self.by_type)
        actor_id = interned(actor, self._actor_ids, self.actor_names, None)
        session_id = (
            NO_SESSION
            if session is None
            else interned(session, self._session_ids, self.session_names, self.by_session)
        )
        return type_id, actor_id, session_id

    def type_ids_of(self, values: list[str | None]) -> list[int]:
        return ids_of(values, self._type_ids, self.type_names, self.by_type, MALFORMED)

    def actor_ids_of(self, values: list[str | None]) -> list[int]:
        return ids_of(values, self._actor_ids, self.actor_names, None, 0)

    def session_ids_of(self, values: list[str | None]) -> list[int]:
        return ids_of(values, self._session_ids, self.session_names, self.by_session, NO_SESSION)

    def ids_from(self, other: NameTables) -> tuple[list[int], list[int], list[int]]:
        """What ``other``'s type, actor and session ids are here, interning its names."""
        return (
            [interned(n, self._type_ids, self.type_names, self.by_type) for n in other.type_names],
            [interned(n, self._actor_ids, self.actor_names, None) for n in other.actor_names],
            [
                interned(n, self._session_ids, self.session_names, self.by_session)
                for n in other.session_names
            ],
        )

    def post_line(self, position: int, type_id: int, session_id: int) -> None:
        if type_id != MALFORMED:
            self.by_type[type_id].append(position)
            if session_id != NO_SESSION:
                self.by_session[session_id].append(position)

    # -------------------------------------------------------------- lookups

    def filter_ids(
        self, flt: CompiledFilter
    ) -> tuple[set[int] | None, set[int] | None, int] | None:
        """The type ids, actor ids (None: any) and session id (``NO_SESSION``: any) a
        filter accepts; None when no line can match."""
        type_ids = None
        if flt.types:
            type_ids = {i for i in map(self._type_ids.get, flt.types) if i is not None}
            if not type_ids:
                return None
        actor_ids = None
        if flt.actor is not None:
            actor_ids = {i for i, name in enumerate(self.actor_names) if flt.actor in name}
            if not actor_ids:
                return None
        session_id = NO_SESSION
        if flt.session is not None:
            found = self._session_ids.get(flt.session)
            if found is None:
                return None
            session_id = found
        return type_ids, actor_ids, session_id

    def candidates(self, session: str | None, types: Collection[str]) -> list[array[int]] | None:
        """Posting lists to walk for a filter (None: every line)."""
        if session is not None:
            session_id = self._session_ids.get(session)
            return [self.by_session[session_id]] if session_id is not None else []
        if types:
            return [self.by_type[self._type_ids[t]] for t in types if t in self._type_ids]
        return None


def walk_postings(
    candidates: list[array[int]], oldest_first: bool, after_position: int
) -> Iterator[int]:
    """The positions in ``candidates`` from ``after_position`` on, merged, in order."""
    if len(candidates) == 1:
        postings = candidates[0]
        first = bisect.bisect_left(postings, after_position)
        if oldest_first:
            yield from (postings[i] for i in range(first, len(postings)))
        else:
            yield from (postings[i] for i in range(len(postings) - 1, first - 1, -1))
        return
    if oldest_first:
        yield from heapq.merge(*(p[bisect.bisect_left(p, after_position) :] for p in candidates))
    else:
        lists: list[Iterable[int]] = [
            reversed(p[bisect.bisect_left(p, after_position) :]) for p in candidates
        ]
        yield from heapq.merge(*lists, reverse=True)


def interned(
    name: str, table: dict[str, int], names: list[str], postings: dict[int, array[int]] | None
) -> int:
    """The id of ``name``, a new one (with an empty posting list) when it has none yet."""
    found = table.get(name)
    if found is None:
        found = table[name] = len(names)
        names.append(name)
        if postings is not None:
            postings[found] = array(POSTING)
    return found


def ids_of(
    values: list[str | None],
    table: dict[str, int],
    names: list[str],
    postings: dict[int, array[int]] | None,
    absent: int,
) -> list[int]:
    """The interned ids of ``values`` (``absent`` for None), interning new ones."""
    get = table.get
    ids = [get(v, _UNSEEN) if v is not None else absent for v in values]
    if _UNSEEN in ids:
        for position in [i for i, found in enumerate(ids) if found == _UNSEEN]:
            value = values[position]
            assert value is not None
            ids[position] = interned(value, table, names, postings)
    return ids


def post(postings: dict[int, array[int]], ids: Sequence[int], first: int, absent: int) -> None:
    """Add positions ``first + i`` to the posting list of ``ids[i]`` (unless ``absent``)."""
    order = sorted(range(len(ids)), key=ids.__getitem__)
    for key, group in itertools.groupby(order, ids.__getitem__):
        if key != absent:
            postings[key].extend([first + i for i in group])


def below(postings: array[int], count: int) -> array[int]:
    """The positions of a posting list below ``count``."""
    return postings[: bisect.bisect_left(postings, count)]
