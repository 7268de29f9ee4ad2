"""Output a log line cannot use to drive the user's terminal.

Any writer can put free text in the log (an actor, a payload string), and ``gastownctl``
prints it. A terminal acts on control characters: ESC and CSI start sequences that move the
cursor, hide text, change the window title or, with OSC 52, write the clipboard; a carriage
return overwrites what was printed; bidi overrides reorder what is shown. ``gastownctl``
therefore writes every such character as its JSON escape, ``\\u001b``: visible, and in
``--json`` output (where they can only stand inside strings) the same JSON value. Lone
surrogates, which no terminal can show and UTF-8 cannot encode, get the same escape.
Newlines and tabs pass: they are the output's own layout.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO

_KEPT = {ord("\n"), ord("\t")}
_ESCAPED = (
    [c for c in range(0x20) if c not in _KEPT]
    + list(range(0x7F, 0xA0))  # DEL and the C1 controls (U+009B is CSI, U+009D OSC)
    + [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]  # bidi
    + list(range(0xD800, 0xE000))  # surrogates
)
_TABLE = {code: f"\\u{code:04x}" for code in _ESCAPED}


def inert(text: str) -> str:
    """``text`` with every character a terminal would act on written as ``\\uXXXX``."""
    return text.translate(_TABLE)


class InertWriter:
    """A text stream that writes through ``inert``; everything else is the stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(inert(text))
        return len(text)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextlib.contextmanager
def inert_output() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` write through ``inert`` while it lasts."""
    saved = sys.stdout, sys.stderr
    sys.stdout = InertWriter(sys.stdout)
    sys.stderr = InertWriter(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
