"""Cutting a hook payload down to the daemon's frame limit.

``gastown-hook`` loads this module only for a payload that would not fit in
one frame (a ``bd close X && cat big.log``, a large MCP result), so the
common path never even compiles it. It imports nothing: it works on
Claude's raw JSON bytes (``json`` would drag in ``re``), finds the string
tokens, and cuts the middle out of the longest strings of the top-level
``tool_response`` (keeping a head and a tail, and leaving a marker that says
how much was cut) until the payload fits. If that is not enough, the long
strings of the rest of the payload are cut the same way. Short strings,
keys, numbers and the structure are never touched, so ``tool_input.command``
(what attribution reads) keeps its bytes unless it is itself huge. A cut
never splits an escape sequence, a UTF-8 character or a surrogate pair:
valid JSON stays valid.

A payload that is too deep (``MAX_DEPTH``), cut short (stdin over the
hook's cap), or whose bulk is not long strings (a huge array of short ones)
is cut by whole values instead (``fit``): its top-level members are kept as
they are, except the values too deep, incomplete or too big, which become a
marker string. ``tool_input`` (what attribution reads) is kept whole unless
it cannot be sent at all. The structure is found with a handful of passes of
``bytes`` methods and ``itertools`` (C loops, no Python loop per character or
per string), so even 32 MiB of short strings or 100,000 levels of nesting
take a few tens of milliseconds.
"""

from _bisect import bisect_right as bisect
from _operator import add, and_, eq, not_, sub
from itertools import accumulate, compress, count, repeat

MARK = b"[... %d bytes cut by gastown-hook ...]"
MARK_MAX = len(MARK % 10**12)
# A cut string keeps at least this many bytes, half at each end.
MIN_KEEP = 512
_BACKSLASH = 0x5C
_QUOTE = b'"'
# Nesting deeper than this is never sent (the daemon's decoder stops near 1,000
# levels, the frame adds one): such values are cut whole.
MAX_DEPTH = 128
# The per-string trimming walks the strings in Python: past this many it
# would blow the hook's time budget, and whole values are cut instead.
MAX_STRINGS = 40_000
# Top-level members looked at; a payload with more keeps the first ones.
MAX_MEMBERS = 256
# Brackets looked at: what follows the last of them is taken as cut short.
MAX_BRACKETS = 250_000
KEPT_WHOLE = b"tool_input"
_HIGH_SURROGATES = (b"d8", b"d9", b"da", b"db")
_LOW_SURROGATES = (b"dc", b"dd", b"de", b"df")


def trim(payload: bytes, budget: int) -> tuple[bytes, int]:
    """``payload`` with long strings cut so that it fits in ``budget`` bytes, and the bytes cut.

    What is not JSON is left as it is (the daemon rejects it anyway). The
    result can still be longer than ``budget`` when what is too big is not
    long strings (a huge array of short ones).
    """
    found = tokens(payload)
    if found is None:
        return payload, 0
    response, rest = _value_strings(payload, found)
    payload, total = _cut(payload, response, len(payload) - budget)
    if len(payload) > budget:
        if total:  # the positions moved
            found = tokens(payload)
            assert found is not None
            _, rest = _value_strings(payload, found)
        payload, cut = _cut(payload, rest, len(payload) - budget)
        total += cut
    return payload, total


def tokens(data: bytes) -> list[tuple[int, int, int, bool]] | None:
    """Every string token: (opening quote, closing quote, nesting depth, is a key).

    None when ``data`` is plainly not JSON: an unterminated string, or a
    string followed by something no JSON string is followed by. Depth counts
    the brackets outside strings: the top-level object's keys are at depth 1.
    """
    found: list[tuple[int, int, int, bool]] = []
    depth = 0
    position = 0
    size = len(data)
    while True:
        opening = data.find(_QUOTE, position)
        if opening < 0:
            return found
        between = data[position:opening]
        depth += between.count(b"{") + between.count(b"[")
        depth -= between.count(b"}") + between.count(b"]")
        closing = opening
        while True:
            closing = data.find(_QUOTE, closing + 1)
            if closing < 0:
                return None
            before = closing - 1
            while data[before] == _BACKSLASH:
                before -= 1
            if (closing - 1 - before) % 2 == 0:  # not escaped
                break
        after = closing + 1
        while after < size and data[after] in b" \t\r\n":
            after += 1
        follower = data[after : after + 1]
        if follower not in (b":", b",", b"}", b"]", b""):
            return None
        found.append((opening, closing, depth, follower == b":"))
        position = closing + 1


def _value_strings(
    data: bytes, found: list[tuple[int, int, int, bool]]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The long value strings inside the top-level ``tool_response``, and all the others."""
    start = end = -1
    for number, (opening, closing, depth, is_key) in enumerate(found):
        if depth == 1 and is_key and data[opening + 1 : closing] == b"tool_response":
            start = closing
            end = next(
                (o for o, _, d, k in found[number + 1 :] if d == 1 and k),
                len(data),
            )
            break
    response: list[tuple[int, int]] = []
    rest: list[tuple[int, int]] = []
    for opening, closing, _, is_key in found:
        if not is_key and closing - opening - 1 > MIN_KEEP + MARK_MAX:
            (response if start < opening < end else rest).append((opening, closing))
    return response, rest


def _cut(data: bytes, spans: list[tuple[int, int]], excess: int) -> tuple[bytes, int]:
    """Cut the strings at ``spans`` to one common length that saves ``excess`` bytes."""
    if excess <= 0:
        return data, 0
    lengths = [closing - opening - 1 for opening, closing in spans]
    keep = _common_length(lengths, excess)
    if keep is None:
        return data, 0
    parts: list[bytes] = []
    position = 0
    total = 0
    for (opening, closing), length in zip(spans, lengths, strict=True):
        if length - keep - MARK_MAX <= 0:
            continue
        low, high = opening + 1, closing
        head = boundary_before(data, low, low + keep // 2)
        tail = boundary_after(data, low, high, high - (keep - keep // 2))
        if tail <= head:
            continue
        parts += [data[position:head], MARK % (tail - head)]
        position = tail
        total += tail - head
    parts.append(data[position:])
    return b"".join(parts), total


def _common_length(lengths: list[int], excess: int) -> int | None:
    """The largest length to cut strings down to that saves at least ``excess`` bytes.

    ``MIN_KEEP`` when even that is not enough; None when nothing can be cut.
    """

    def saving(keep: int) -> int:
        return sum(length - keep - MARK_MAX for length in lengths if length > keep + MARK_MAX)

    most = saving(MIN_KEEP)  # 0 without lengths
    if most <= 0:
        return None
    if most < excess:
        return MIN_KEEP
    low, high = MIN_KEEP, max(lengths)
    while low < high:
        middle = (low + high + 1) // 2
        if saving(middle) >= excess:
            low = middle
        else:
            high = middle - 1
    return low


# ---------------------------------------------------------------- safe cut points
#
# A cut point ``i`` lies between ``data[i - 1]`` and ``data[i]``, inside the
# content ``data[low:high]`` of one JSON string.


def _escape_start(data: bytes, low: int, at: int) -> bool:
    """True when the backslash at ``at`` begins an escape (an even run precedes it)."""
    run = at
    while run > low and data[run - 1] == _BACKSLASH:
        run -= 1
    return (at - run) % 2 == 0


def _escape_around(data: bytes, low: int, i: int) -> tuple[int, int] | None:
    """The escape sequence that cut point ``i`` would split: (start, end), or None."""
    for at in range(i - 1, max(low, i - 6) - 1, -1):
        if data[at] != _BACKSLASH:
            continue
        if not _escape_start(data, low, at):
            return None  # the second half of ``\\``, which ends before ``i``
        end = at + (6 if data[at + 1 : at + 2] == b"u" else 2)
        return (at, end) if end > i else None
    return None


def _surrogate_at(data: bytes, low: int, at: int, halves: tuple[bytes, ...]) -> bool:
    return (
        at >= low
        and data[at : at + 2] == b"\\u"
        and data[at + 2 : at + 4].lower() in halves
        and _escape_start(data, low, at)
    )


def boundary_before(data: bytes, low: int, i: int) -> int:
    """The last cut point at or before ``i`` that splits no character."""
    while i > low and 0x80 <= data[i] < 0xC0:  # inside a UTF-8 character
        i -= 1
    escape = _escape_around(data, low, i)
    if escape is not None:
        i = escape[0]
    if _surrogate_at(data, low, i - 6, _HIGH_SURROGATES):
        i -= 6  # keep a surrogate pair whole
    return i


def boundary_after(data: bytes, low: int, high: int, i: int) -> int:
    """The first cut point at or after ``i`` that splits no character."""
    while i < high and 0x80 <= data[i] < 0xC0:
        i += 1
    escape = _escape_around(data, low, i)
    if escape is not None:
        i = escape[1]
    if i + 6 <= high and _surrogate_at(data, low, i, _LOW_SURROGATES):
        i += 6  # the low half of a pair whose high half was cut
    return i


# ---------------------------------------------------------------- cutting whole values

_BRACKETS = b"{}[]"
# Brackets become ``|`` (and a stray ``|`` ``_``): splitting on ``|`` gives the gaps between them.
_TO_BAR = bytes.maketrans(_BRACKETS + b"|", b"||||_")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(_BRACKETS)))
# Per bracket, one more than what it does to the depth.
_STEP = bytes.maketrans(_BRACKETS, b"\x02\x00\x02\x00")
# Inside strings, structural bytes become ``_``.
_NEUTRAL = bytes.maketrans(b"{}[],:", b"______")


def fit(payload: bytes, budget: int, *, complete: bool = True) -> tuple[bytes, int, bytes | None]:
    """``payload`` made sendable: at most ``budget`` bytes and ``MAX_DEPTH`` deep.

    Returns the payload, the bytes cut, and why the call could not be kept
    whole when it lost what attribution reads (``tool_input``), or could not
    be sent at all (then the payload is empty). ``complete`` is False when
    ``payload`` is only the start of what Claude sent.
    """
    structure = Structure(payload)
    complete = complete and structure.limit == len(payload)
    if complete and max(structure.depths, default=0) <= MAX_DEPTH:
        if len(payload) <= budget:
            return payload, 0, None
        if payload.count(_QUOTE) <= 2 * MAX_STRINGS:
            trimmed, cut = trim(payload, budget)
            if len(trimmed) <= budget:
                return trimmed, cut, None
    return _cut_values(payload, structure, budget, complete)


class Structure:
    """The brackets of ``data`` that are not inside strings: where, and the depth after each.

    Found with C loops only (``bytes`` methods, ``itertools``): the work is a
    few passes over the bytes plus a little per bracket, however many strings.
    """

    def __init__(self, data: bytes) -> None:
        # Escapes become ``__`` (same length): no quote inside a string is left.
        self.masked = data.replace(b"\\\\", b"__").replace(b'\\"', b"__")
        gaps = self.masked.translate(_TO_BAR).split(b"|", MAX_BRACKETS)
        every = list(map(add, accumulate(map(len, gaps[:-1])), count()))
        # Past ``MAX_BRACKETS`` brackets the rest is not looked at: taken as cut short.
        self.limit = every[-1] if len(every) == MAX_BRACKETS else len(data)
        kinds = self.masked[: self.limit + 1].translate(None, _NOT_BRACKETS)
        if self.masked.count(_QUOTE) < len(every) and not _brackets_in_strings(self.masked):
            self.positions = every  # few strings, none holding a bracket: all count
        else:
            # A bracket is outside strings when an even number of quotes precede it.
            quotes = accumulate(map(bytes.count, gaps[:-1], repeat(_QUOTE)))
            outside = list(map(not_, map(and_, quotes, repeat(1))))
            kinds = bytes(compress(kinds, outside))
            self.positions = list(compress(every, outside))
        self.depths = list(map(sub, accumulate(kinds.translate(_STEP)), count(1)))


def _brackets_in_strings(masked: bytes) -> bool:
    """Whether a bracket lies inside a string (work in proportion to the strings)."""
    inside = b"".join(masked.split(_QUOTE)[1::2])
    return len(inside.translate(None, _NOT_BRACKETS)) > 0


def _separators(masked: bytes, low: int, high: int, found: list[tuple[int, bytes]]) -> None:
    """The ``:`` and ``,`` of ``masked[low:high]``, a stretch of the top-level object."""
    parts = masked[low:high].split(_QUOTE, 4 * MAX_MEMBERS)
    if len(parts) > 1:  # the odd parts are inside strings
        parts[1::2] = _QUOTE.join(parts[1::2]).translate(_NEUTRAL).split(_QUOTE)
    outside = _QUOTE.join(parts)
    for mark in (b":", b","):
        at = outside.find(mark)
        while at >= 0:
            found.append((low + at, mark))
            at = outside.find(mark, at + 1)


def _cut_values(
    payload: bytes, structure: Structure, budget: int, complete: bool
) -> tuple[bytes, int, bytes | None]:
    start = len(payload) - len(payload.lstrip())
    positions, depths = structure.positions, structure.depths
    if payload[start : start + 1] != b"{" or not positions or positions[0] != start:
        return b"", len(payload), b"not a JSON object"
    closing = depths.index(0) if 0 in depths else len(depths)
    end = positions[closing] if closing < len(depths) else structure.limit
    # The stretches between brackets that lie in the top-level object itself.
    separators: list[tuple[int, bytes]] = []
    for index in compress(range(closing), map(eq, depths, repeat(1))):
        high = positions[index + 1] if index + 1 < len(positions) else structure.limit
        _separators(structure.masked, positions[index] + 1, min(high, end), separators)
        if len(separators) >= 2 * MAX_MEMBERS:
            break
    separators.sort()
    del separators[2 * MAX_MEMBERS :]
    separators.append((end, b"}"))
    members: list[tuple[bytes, bytes, bool]] = []  # key, value, sendable
    key_from = start + 1
    colon = -1
    for at, mark in separators:
        if mark == b":":
            colon = at
            continue
        if colon >= 0:
            whole = mark == b"," or closing < len(depths)
            inside = depths[bisect(positions, colon) : bisect(positions, at)]
            deep = max(inside, default=1) > MAX_DEPTH
            key = payload[key_from:colon].strip()
            value = payload[colon + 1 : at].strip()
            members.append((key, value, whole and not deep and bool(value)))
        key_from = at + 1
        colon = -1
    if not (complete and closing < len(depths)):
        why = b"cut short"
    elif max(depths) > MAX_DEPTH:
        why = b"too deep"
    else:
        why = b"too big"
    return _assemble(payload, members, budget, why)


def _assemble(
    payload: bytes, members: list[tuple[bytes, bytes, bool]], budget: int, why: bytes
) -> tuple[bytes, int, bytes]:
    """The object of ``members``, the unsendable values and then the biggest cut to fit."""
    values = [value if sendable else None for _, value, sendable in members]
    whole = b'"' + KEPT_WHOLE + b'"'
    if any(key == whole and not sendable for key, _, sendable in members):
        why += b", tool_input cut"

    def size() -> int:
        return 2 + sum(
            len(key) + 1 + (len(value) if value is not None else MARK_MAX + 2) + 1
            for (key, _, _), value in zip(members, values, strict=True)
        )

    # The biggest values first, ``tool_input`` last; a value no longer than a mark stays.
    order = sorted(
        (n for n, value in enumerate(values) if value is not None and len(value) > MARK_MAX + 2),
        key=lambda n: (members[n][0] == whole, -len(members[n][1])),
    )
    for number in order:
        if size() <= budget:
            break
        values[number] = None
        if members[number][0] == whole:
            why += b", tool_input cut"
    parts = [
        key + b":" + (value if value is not None else b'"' + MARK % len(original) + b'"')
        for (key, original, _), value in zip(members, values, strict=True)
    ]
    result = b"{" + b",".join(parts) + b"}"
    if len(result) > budget:  # thousands of keys: nothing sensible to send
        return b"", len(payload), why + b", too many members"
    return result, max(1, len(payload) - len(result)), why
