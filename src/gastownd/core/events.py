"""The Gas Town event line: encode byte-compatibly, parse for indexing, find a torn tail.

Gas Town's Go CLI writes ``{"ts","source","type","actor","payload","visibility"}``
in that order, ``payload`` omitted when empty, its map keys sorted, with Go's
HTML-safe escaping of ``<``, ``>``, ``&``, U+2028 and U+2029.

A line is *indexable* when every reader of the log can take it whole: at most
``MAX_LINE_BYTES`` long, nested at most ``MAX_NESTING`` deep, valid UTF-8, a
JSON object that msgspec decodes in full (so no ``NaN``, no number out of a
double's range, no lone surrogate, no second value after it) with string
``ts``, ``type`` and (if present) ``actor``, and a ``ts`` that is a
timestamp. Anything else is malformed: kept in the file, counted, and
skipped by every read. ``decode_lines`` is the one place that decides.
"""

from __future__ import annotations

import bisect
import itertools
from datetime import UTC, datetime
from typing import Any

import msgspec

from gastown_client.protocol import MAX_NESTING, nesting_exceeds

MAX_LINE_BYTES = 1 << 20

_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


class _Line(msgspec.Struct, kw_only=True, omit_defaults=True):
    ts: str
    source: str
    type: str
    actor: str
    payload: msgspec.Raw | None = None
    visibility: str


# Go marshals map keys sorted; struct fields keep their declared order.
_payload_encoder = msgspec.json.Encoder(order="sorted")
_line_encoder = msgspec.json.Encoder()


_GO_FIRST_BYTES = b"<>&\xe2"  # U+2028 and U+2029 start with 0xE2 in UTF-8


def go_escape(data: bytes) -> bytes:
    """Apply Go's HTML-safe escaping; these bytes only ever occur inside JSON strings."""
    if len(data.translate(None, _GO_FIRST_BYTES)) == len(data):
        return data  # the usual case: nothing to escape, one pass
    for raw, escaped in _GO_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


# The moments a stored time may name: years 1 to 9999 in UTC, what ``datetime`` (and so
# ``format_ts``, the archive's day names) can represent. A ts whose offset moves it
# outside (0001-01-01T00:00:00+01:00) is not a timestamp: the line is malformed.
MIN_TS_S = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TS_S = 253_402_300_799  # 9999-12-31T23:59:59Z


_last_formatted: tuple[int, str] = (-1, "")


def format_ts(epoch_s: float) -> str:
    """Gas Town's timestamp of a moment; the last second formatted is kept (emits come
    many to a second)."""
    global _last_formatted
    # Clamped: a time stored before ts were range-checked (an older snapshot or session
    # record) is shown at the nearest end of the range rather than failing the request.
    if not MIN_TS_S <= epoch_s <= MAX_TS_S:  # NaN too
        epoch_s = MAX_TS_S if epoch_s > MAX_TS_S else MIN_TS_S
    second = int(epoch_s)
    if _last_formatted[0] == second:
        return _last_formatted[1]
    # isoformat, not strftime: glibc's %Y does not pad years before 1000 to four digits.
    text = datetime.fromtimestamp(second, UTC).isoformat()[:19] + "Z"
    _last_formatted = (second, text)
    return text


def encode_line(
    *,
    ts: str,
    source: str,
    type: str,
    actor: str,
    payload: dict[str, Any],
    visibility: str,
) -> bytes:
    """One line, newline included, as ``gt`` would write it."""
    line = _Line(
        ts=ts,
        source=source,
        type=type,
        actor=actor,
        payload=msgspec.Raw(_payload_encoder.encode(payload)) if payload else None,
        visibility=visibility,
    )
    return go_escape(_line_encoder.encode(line)) + b"\n"


# ---------------------------------------------------------------- parsing


class _PayloadKeys(msgspec.Struct):
    session_id: Any = None


class ParsedLine(msgspec.Struct):
    """The fields the index needs; every other key is ignored."""

    ts: str
    type: str
    actor: str = ""
    payload: _PayloadKeys | None = None


_line_decoder = msgspec.json.Decoder(ParsedLine)


def parse_line(line: bytes) -> ParsedLine | None:
    """The indexed fields of one complete line (no newline), or None if malformed."""
    return decode_lines([line])[0]


_batch_decoder = msgspec.json.Decoder(list[ParsedLine])
_any_decoder = msgspec.json.Decoder()
BATCH = 2048
# Digits as one byte, "E" and "+" as "e": numbers out of range found with ``in``.
_NUMBER_SHAPES = bytes.maketrans(b"123456789E+", b"000000000ee")
# An exponent of three digits or more, or at least 309 digits in a row: the only
# ways to write a number msgspec cannot hold (a double's range; an integer's
# digits), and also many harmless strings, which then pay for a full decode.
_MAYBE_OUT_OF_RANGE = (b"e000", b"0" * 309)
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError)


def decode_lines(lines: list[bytes]) -> list[ParsedLine | None]:
    """The indexed fields of each line (None: malformed); see the module's docstring.

    Batches decode in C; a bad batch is decoded line by line. The typed
    decoder skips fields the index does not keep without looking inside
    them, so a line whose skipped parts could still break a full decode
    (invalid UTF-8, a huge exponent) is decoded in full once more.
    """
    result: list[ParsedLine | None] = []
    for start in range(0, len(lines), BATCH):
        result.extend(_decode_batch(lines[start : start + BATCH]))
    return result


def _decode_batch(chunk: list[bytes]) -> list[ParsedLine | None]:
    refused = [
        i
        for i, line in enumerate(chunk)
        if len(line) > MAX_NESTING and (len(line) > MAX_LINE_BYTES or nesting_exceeds(line))
    ]
    if refused:
        taken = set(refused)
        kept = [i for i in range(len(chunk)) if i not in taken]
        found: list[ParsedLine | None] = [None] * len(chunk)
        for position, parsed in zip(kept, _decode_batch([chunk[i] for i in kept]), strict=True):
            found[position] = parsed
        return found
    joined = b",".join(chunk)
    decoded: list[ParsedLine | None]
    try:
        decoded = list(_batch_decoder.decode(b"[" + joined + b"]"))
    except _DECODE_ERRORS:
        decoded = []
    # A malformed line can still join into valid JSON (two objects on one
    # line): the count tells.
    if len(decoded) != len(chunk):
        decoded = [_decode_one(line) for line in chunk]
    suspects = _suspects(joined, chunk)
    for i in suspects:
        if decoded[i] is not None and not _decodes_whole(chunk[i]):
            decoded[i] = None
    return decoded


def _decode_one(line: bytes) -> ParsedLine | None:
    try:
        return _line_decoder.decode(line)
    except _DECODE_ERRORS:
        return None


def _suspects(joined: bytes, chunk: list[bytes]) -> set[int]:
    """The lines of ``chunk`` (joined by commas) whose skipped parts may not decode."""
    found: set[int] = set()
    if not joined.isascii():
        found.update(i for i, line in enumerate(chunk) if not line.isascii() and not _is_utf8(line))
    shapes = joined.translate(_NUMBER_SHAPES)
    hits = [
        at for shape in _MAYBE_OUT_OF_RANGE if shape in shapes for at in _occurrences(shapes, shape)
    ]
    if hits:
        starts = list(itertools.accumulate((len(line) + 1 for line in chunk[:-1]), initial=0))
        found.update(bisect.bisect_right(starts, at) - 1 for at in hits)
    return found


def _occurrences(data: bytes, needle: bytes) -> list[int]:
    found = []
    at = data.find(needle)
    while at >= 0:
        found.append(at)
        at = data.find(needle, at + len(needle))
    return found


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decodes_whole(line: bytes) -> bool:
    try:
        _any_decoder.decode(line)
    except _DECODE_ERRORS:
        return False
    return True


def sessions_of(parsed: list[ParsedLine | None]) -> list[str | None]:
    """``session_of`` for many lines (None stays None), without a call per line."""
    raw = [
        p.payload.session_id if p is not None and p.payload is not None else None for p in parsed
    ]
    return [s if type(s) is str and s else None for s in raw]


def session_of(parsed: ParsedLine) -> str | None:
    if parsed.payload is None:
        return None
    value = parsed.payload.session_id
    return value if isinstance(value, str) and value else None


_minute_cache: dict[str, int] = {}


_SECONDS = {f"{n:02d}": n for n in range(60)}
_MISSING = -(1 << 60)


def parse_stamps(texts: list[str | None]) -> list[int | None]:
    """``parse_ts`` for many (None stays None): Gas Town's shape, in a minute already
    seen, takes no call per line."""
    minute, second = _minute_cache.get, _SECONDS.get
    found: list[int | None] = [
        minute(t[:16], _MISSING) + second(t[17:19], _MISSING)
        if t is not None and len(t) == 20 and t[19] == "Z" and t[16] == ":"
        else _MISSING
        for t in texts
    ]
    for position in [i for i, v in enumerate(found) if v < _MISSING // 2]:  # type: ignore[operator]
        text = texts[position]
        found[position] = parse_ts(text) if text is not None else None
    return found


def parse_ts(text: str) -> int | None:
    """Epoch seconds of a line's ``ts``; None when it is not a timestamp.

    Gas Town's exact shape takes a fast path (minutes are cached: lines come
    many to a minute); older tools' fractions and offsets are accepted too.
    Strict: every field in its range (no 2026-01-45T99:99:99Z), the moment within
    ``MIN_TS_S`` .. ``MAX_TS_S``.
    """
    if len(text) == 20 and text[10] == "T" and text[19] == "Z" and text[16] == ":":
        minute = _minute_cache.get(text[:16])
        if minute is None:
            minute = _parse_minute(text)
            if minute is None:
                return None
            if len(_minute_cache) > 200_000:
                _minute_cache.clear()
            _minute_cache[text[:16]] = minute
        second = _SECONDS.get(text[17:19])
        return None if second is None else minute + second
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        value = int(moment.timestamp())
    except (OverflowError, ValueError):
        return None
    return value if MIN_TS_S <= value <= MAX_TS_S else None


def _parse_minute(text: str) -> int | None:
    """Epoch seconds of ``YYYY-MM-DDTHH:MM`` (the first 16 characters of ``text``)."""
    digits = text[0:4] + text[5:7] + text[8:10] + text[11:13] + text[14:16]
    if not (digits.isascii() and digits.isdigit()) or text[4] + text[7] + text[13] != "--:":
        return None
    try:
        # datetime checks every field (calendar.timegm would take day 45 as a later month).
        moment = datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return int(moment.timestamp())
