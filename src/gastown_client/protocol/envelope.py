"""The envelope every op shares: versions, error codes, the request base, reply and push frames.

Newline-delimited JSON; each request is one Struct of the ``Request`` union
(``op_table``), tagged on ``"op"``, with an optional ``id`` echoed in its reply.
Replies are ``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error":
{"code", "message"}}``; a subscription's pushed frames carry ``"push"`` instead of
``"ok"``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

import msgspec

PROTOCOL_VERSION = 1
# The oldest client protocol this daemon still serves.
MIN_PROTOCOL_VERSION = 1


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    UNKNOWN_OP = "unknown_op"
    FORBIDDEN = "forbidden"
    INTERNAL = "internal"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    IO_ERROR = "io_error"
    NOT_FOUND = "not_found"
    AMBIGUOUS = "ambiguous"
    SHUTTING_DOWN = "shutting_down"
    TIMEOUT = "timeout"
    BUSY = "busy"
    CONFLICT = "conflict"


ResultT = TypeVar("ResultT")


class Request(msgspec.Struct, tag_field="op", kw_only=True):
    """Base of every request; never sent itself."""

    id: int | str | None = None


class Returning(Request, Generic[ResultT]):
    """A request whose reply carries a ``ResultT``: ``class Ping(Returning["PingResult"])``
    (a string: the results are declared further down). Never sent itself."""


# ---------------------------------------------------------------- frames


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class OkReply(msgspec.Struct, kw_only=True):
    id: int | str | None
    ok: bool = True
    result: Any


class ErrorReply(msgspec.Struct, kw_only=True):
    id: int | str | None
    ok: bool = False
    error: ErrorBody


PushKind = Literal["event", "overflow", "end"]


class Push(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A frame the daemon sends unasked, on a subscribed connection."""

    push: PushKind
    subscription: int
    cursor: str | None = None
    event: msgspec.Raw | None = None
    message: str | None = None
    # On a subscription to other nodes' lines: the node the event comes from.
    node: str | None = None


class Frame(msgspec.Struct, kw_only=True):
    """What a client decodes first: a reply or a push, told apart by fields."""

    id: int | str | None = None
    ok: bool | None = None
    # msgspec.Raw cannot be optional; an empty Raw means "absent".
    result: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    error: ErrorBody | None = None
    push: str | None = None
    subscription: int | None = None
    cursor: str | None = None
    event: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    message: str | None = None
    node: str | None = None
