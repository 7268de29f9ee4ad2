"""Wire views of the core's records, derived mechanically, never copied field by field.

A record (``Wisp``, ``Digest``, ``SessionRecord``) is the one shape of its
concept: the store keeps it, federation sends it, the engine computes with it.
Its wire view in ``gastown_client.protocol`` cannot be the same struct: the
client library must import without the daemon, and the wire shows instants as
Gas Town timestamps (``2026-01-02T03:04:05Z``) where the core keeps epoch
seconds (digest hashes cover those). So :func:`to_view` derives the view by one
rule: every field of the record, nested records included, under the same name
(or the one ``renames`` gives, for wire names older than the record), each
instant (a field named ``at`` or ``*_at``) formatted, enums as their values;
plus what only the view has (``extra``). A field the view does not declare is
dropped; ``tests/unit/test_record_shapes.py`` keeps each pair's field sets
equal but for a declared list.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from gastownd.core.events import format_ts

_View = TypeVar("_View", bound=msgspec.Struct)


def to_view(
    record: msgspec.Struct,
    view: type[_View],
    *,
    renames: Mapping[str, str] | None = None,
    **extra: Any,
) -> _View:
    """``record`` as a ``view`` (see the module's rule); ``extra`` sets or overrides fields."""
    fields = _plain(record)
    if renames:
        fields = {renames.get(name, name): value for name, value in fields.items()}
    fields.update(extra)
    return msgspec.convert(fields, view)


def is_instant(name: str) -> bool:
    """Whether a record field holds epoch seconds that the wire shows as a timestamp."""
    return name == "at" or name.endswith("_at")


def _plain(record: msgspec.Struct) -> dict[str, Any]:
    # Not msgspec.to_builtins: it omits fields at their default (``omit_defaults``),
    # which the views declare without one.
    fields = {name: _value(getattr(record, name)) for name in record.__struct_fields__}
    for name, value in fields.items():
        if is_instant(name) and isinstance(value, int | float):
            fields[name] = format_ts(value)
    return fields


def _value(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        return _plain(value)
    if isinstance(value, tuple | list):
        return [_value(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value
