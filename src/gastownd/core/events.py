"""The Gas Town event line: encode byte-compatibly, parse for indexing, find a torn tail.

Gas Town's Go CLI writes ``{"ts","source","type","actor","payload","visibility"}``
in that order, ``payload`` omitted when empty, its map keys sorted, with Go's
HTML-safe escaping of ``<``, ``>``, ``&``, U+2028 and U+2029.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Any

import msgspec

MAX_LINE_BYTES = 1 << 20
TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

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


_last_formatted: tuple[int, str] = (-1, "")


def format_ts(epoch_s: float) -> str:
    """Gas Town's timestamp of a moment; the last second formatted is kept (emits come
    many to a second)."""
    global _last_formatted
    second = int(epoch_s)
    if _last_formatted[0] == second:
        return _last_formatted[1]
    text = datetime.fromtimestamp(second, UTC).strftime(TS_FORMAT)
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
    try:
        return _line_decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


_batch_decoder = msgspec.json.Decoder(list[ParsedLine])
BATCH = 2048


def decode_lines(lines: list[bytes]) -> list[ParsedLine | None]:
    """``parse_line`` for many lines at once: batches decode in C, a bad batch line by line."""
    result: list[ParsedLine | None] = []
    for start in range(0, len(lines), BATCH):
        chunk = lines[start : start + BATCH]
        try:
            decoded = _batch_decoder.decode(b"[" + b",".join(chunk) + b"]")
        except (msgspec.DecodeError, UnicodeDecodeError):
            decoded = None
        # A malformed line can still join into valid JSON (two objects on one
        # line): the count tells.
        if decoded is not None and len(decoded) == len(chunk):
            result.extend(decoded)
        else:
            result.extend(parse_line(line) for line in chunk)
    return result


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
    """
    if len(text) == 20 and text[10] == "T" and text[19] == "Z" and text[16] == ":":
        minute = _minute_cache.get(text[:16])
        if minute is None:
            try:
                minute = calendar.timegm(
                    (
                        int(text[0:4]),
                        int(text[5:7]),
                        int(text[8:10]),
                        int(text[11:13]),
                        int(text[14:16]),
                        0,
                        0,
                        0,
                        0,
                    )
                )
            except ValueError:
                return None
            if len(_minute_cache) > 200_000:
                _minute_cache.clear()
            _minute_cache[text[:16]] = minute
        seconds = text[17:19]
        if not (seconds.isascii() and seconds.isdigit()):
            return None
        return minute + int(seconds)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
