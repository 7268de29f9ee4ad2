"""Bounds of every number a record may carry: what a store column and every view can hold.

SQLite's INTEGER is a signed 64-bit integer and every view formats times as
dates, so a remote record's counts and ids must fit in 63 bits and its times
must be dates (``1e999`` is not a number JSON can carry, ``2**63`` is not an
INTEGER). msgspec checks these at decode: a value outside them is a
``msgspec.ValidationError``, never an ``OverflowError`` in the store.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

MAX_COUNT: Final = 2**63 - 1
# 9999-12-31T23:59:59Z, the last second a date can name.
MAX_TIME: Final = 253_402_300_799.0

# A count, an id or a sequence number: never negative, an INTEGER.
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
# A time in epoch seconds, or a duration: never negative, a date.
Instant = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_TIME)]
