"""Framing and (de)serialisation, shared by the daemon and both clients.

``FrameReader`` is sans-IO: feed it bytes, take whole lines out. It holds at
most ``max_frame`` bytes of an incomplete frame; past that it reports the
frame as too large once and skips the rest of it up to its newline, so one
oversize request costs its sender an error, not the connection.

A frame nested deeper than ``protocol.MAX_NESTING`` is refused before it is
decoded (see ``protocol.nesting_exceeds``).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from gastown_client.errors import RequestRejected
from gastown_client.protocol import (
    MAX_NESTING,
    OPS,
    ErrorBody,
    ErrorCode,
    ErrorReply,
    Frame,
    Request,
    RequestUnion,
    nesting_exceeds,
)

DEFAULT_MAX_FRAME = 1 << 20

_encoder = msgspec.json.Encoder()
_request_decoder: msgspec.json.Decoder[RequestUnion] = msgspec.json.Decoder(RequestUnion)
_frame_decoder = msgspec.json.Decoder(Frame)

T = TypeVar("T")


class FrameTooLarge(Exception):
    """A frame grew past the reader's cap before its newline arrived."""


class IncompleteFrame(Exception):
    """The stream ended in the middle of a frame."""


class FrameReader:
    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._scan_from = 0
        self._skipping = False

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole frame."""
        return len(self._buffer)

    def next_frame(self) -> bytes | None:
        """The next whole frame without its newline, or None when more is needed.

        Raises ``FrameTooLarge`` once per oversize frame.
        """
        while True:
            newline = self._buffer.find(b"\n", self._scan_from)
            if newline < 0:
                if self._skipping:
                    self._buffer.clear()
                    self._scan_from = 0
                    return None
                if len(self._buffer) > self.max_frame:
                    self._buffer.clear()
                    self._scan_from = 0
                    self._skipping = True
                    raise FrameTooLarge(f"frame exceeds {self.max_frame} bytes")
                self._scan_from = len(self._buffer)
                return None
            frame = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            self._scan_from = 0
            if self._skipping:
                self._skipping = False
                continue
            if len(frame) > self.max_frame:
                raise FrameTooLarge(f"frame exceeds {self.max_frame} bytes")
            return frame

    def close(self) -> None:
        """Call at EOF: raises ``IncompleteFrame`` if a partial frame is held."""
        if self._buffer and not self._skipping and self._buffer.strip():
            size = len(self._buffer)
            self._buffer.clear()
            raise IncompleteFrame(f"connection closed inside a frame ({size} bytes)")


def encode(message: Any) -> bytes:
    return _encoder.encode(message)


def encode_frame(message: Any) -> bytes:
    return _encoder.encode(message) + b"\n"


def emit_reply(request_id: int | str | None, epoch: int, seq: int, event: bytes) -> bytes:
    """The frame of an ``emit``'s acknowledgement: the same bytes as ``encode_frame(OkReply(
    id=request_id, result=EmitResult(cursor=f"{epoch}:{seq}", event=Raw(event))))`` (a
    cursor is ``"<epoch>:<seq>"``), formatted rather than built and encoded: the daemon
    renders one per emit. ``event`` is the line without its newline."""
    head = b"%d" % request_id if type(request_id) is int else _encoder.encode(request_id)
    return b'{"id":%b,"ok":true,"result":{"cursor":"%d:%d","event":%b}}\n' % (
        head,
        epoch,
        seq,
        event,
    )


class BadRequest(Exception):
    """A frame that is not a valid request; carries what the reply needs."""

    def __init__(self, code: ErrorCode, message: str, request_id: int | str | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


TOO_DEEP = f"the request nests arrays and objects deeper than {MAX_NESTING} levels"


class _Envelope(msgspec.Struct):
    op: Any = None
    id: Any = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)


def decode_request(frame: bytes) -> Request:
    """Decode one frame into its ``Request`` or raise ``BadRequest``.

    Which error applies is decided by re-decoding a lenient envelope, never
    by reading msgspec's message text. A frame nested deeper than
    ``MAX_NESTING`` is refused before it is decoded.
    """
    if nesting_exceeds(frame):
        raise BadRequest(ErrorCode.BAD_REQUEST, TOO_DEEP, None)
    try:
        return _request_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        detail = str(exc)
    except msgspec.DecodeError as exc:
        raise BadRequest(ErrorCode.BAD_REQUEST, f"invalid JSON: {exc}", None) from None
    except UnicodeDecodeError as exc:
        raise BadRequest(ErrorCode.BAD_REQUEST, f"invalid UTF-8: {exc.reason}", None) from None
    except RecursionError:  # not reached below MAX_NESTING; kept as the last guard
        raise BadRequest(ErrorCode.BAD_REQUEST, TOO_DEEP, None) from None
    try:
        envelope = _envelope_decoder.decode(frame)
    except msgspec.ValidationError:
        raise BadRequest(
            ErrorCode.BAD_REQUEST, "a request must be a JSON object with an 'op' field", None
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # Valid JSON for the typed decoder's first error, broken further on.
        raise BadRequest(ErrorCode.BAD_REQUEST, f"invalid JSON: {detail}", None) from None
    request_id = envelope.id if isinstance(envelope.id, int | str) else None
    if isinstance(request_id, bool):
        request_id = None
    if envelope.op is None:
        raise BadRequest(ErrorCode.BAD_REQUEST, "missing field 'op'", request_id)
    if isinstance(envelope.op, str) and envelope.op not in OPS:
        known = ", ".join(sorted(OPS))
        raise BadRequest(
            ErrorCode.UNKNOWN_OP, f"unknown op {envelope.op!r} (known: {known})", request_id
        )
    raise BadRequest(ErrorCode.BAD_REQUEST, detail, request_id)


def error_reply(request_id: int | str | None, code: str, message: str) -> ErrorReply:
    return ErrorReply(id=request_id, error=ErrorBody(code=str(code), message=message))


def decode_frame(data: bytes) -> Frame:
    return _frame_decoder.decode(data)


def result_of(frame: Frame, result_type: type[T]) -> T:
    """The typed result of a reply frame, or ``RequestRejected``."""
    if frame.ok is False or frame.error is not None:
        error = frame.error or ErrorBody(code=ErrorCode.INTERNAL, message="error without body")
        raise RequestRejected(error.code, error.message)
    raw = frame.result if len(frame.result) else msgspec.Raw(b"null")
    return msgspec.json.decode(raw, type=result_type)


def decode_raw(raw: msgspec.Raw, result_type: type[T]) -> T:
    return msgspec.json.decode(raw, type=result_type)
