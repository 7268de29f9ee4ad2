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
"""

MARK = b"[... %d bytes cut by gastown-hook ...]"
MARK_MAX = len(MARK % 10**12)
# A cut string keeps at least this many bytes, half at each end.
MIN_KEEP = 512
_BACKSLASH = 0x5C
_QUOTE = b'"'
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
