"""How deep a frame or an event-log line nests, counted before anything decodes it."""

from __future__ import annotations

import itertools
import re
from array import array

# Arrays and objects inside one another, the outermost counting as 1, that a
# frame or an event-log line may hold. Far above any Gas Town line or hook call
# (3 to 10 levels), far below where msgspec, which decodes recursively, raises
# RecursionError (near Python's recursion limit, so at a depth that depends on
# the caller's stack): checked before decoding, the answer is the same anywhere.
MAX_NESTING = 256

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
# Brackets as signed steps (array "b"): an opening one +1, a closing one -1.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_DEPTH_CHUNK = 1 << 16


def nesting_exceeds(data: bytes, limit: int = MAX_NESTING) -> bool:
    """True if ``data`` opens more than ``limit`` arrays or objects inside one another.

    Brackets inside strings do not count; for invalid JSON the answer is only
    an estimate, and the decoder's own error follows anyway. Cheap for the
    usual input: a text with at most ``limit`` opening brackets is not looked
    at further.
    """
    if len(data) <= limit or data.count(b"[") + data.count(b"{") <= limit:
        return False
    skeleton = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS).translate(_STEPS)
    depth = 0
    for start in range(0, len(skeleton), _DEPTH_CHUNK):
        steps = array("b", skeleton[start : start + _DEPTH_CHUNK])
        levels = list(itertools.accumulate(steps, initial=depth))
        if max(levels) > limit:
            return True
        depth = levels[-1]
    return False
