"""Event filters, compiled once and matched against indexed fields."""

from __future__ import annotations

import msgspec

from gastownd.core.events import parse_ts


class FilterError(ValueError):
    """A filter value that cannot be used (bad timestamp, inverted range)."""


class CompiledFilter(msgspec.Struct, frozen=True):
    types: frozenset[str] = msgspec.field(default_factory=frozenset)
    actor: str | None = None
    session: str | None = None
    since: int | None = None
    until: int | None = None

    def matches(self, type_: str, actor: str, session: str | None, ts: int) -> bool:
        if self.types and type_ not in self.types:
            return False
        if self.actor is not None and self.actor not in actor:
            return False
        if self.session is not None and session != self.session:
            return False
        if self.since is not None and ts < self.since:
            return False
        return not (self.until is not None and ts > self.until)


def compile_filter(
    *,
    types: list[str] | tuple[str, ...] = (),
    actor: str | None = None,
    session: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> CompiledFilter:
    since_s = _bound("since", since)
    until_s = _bound("until", until)
    if since_s is not None and until_s is not None and since_s > until_s:
        raise FilterError("since is after until")
    return CompiledFilter(
        types=frozenset(types),
        actor=actor or None,
        session=session or None,
        since=since_s,
        until=until_s,
    )


def _bound(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    value = parse_ts(text)
    if value is None:
        raise FilterError(
            f"{name}: {text[:64]!r} is not an RFC 3339 timestamp (2026-01-22T19:33:55Z) "
            "in years 1..9999 UTC"
        )
    return value
