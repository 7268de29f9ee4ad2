"""Errors a handler raises to answer a request with a stable error code.

``server.py`` is the one place that turns them into error replies; anything
else escaping a handler is a bug, answered as ``internal``.
"""

from __future__ import annotations

from gastown_client.protocol import ErrorCode


class DaemonError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequestError(DaemonError):
    code = ErrorCode.BAD_REQUEST


class TooLargeError(DaemonError):
    code = ErrorCode.TOO_LARGE


class NotFoundError(DaemonError):
    code = ErrorCode.NOT_FOUND


class AmbiguousError(DaemonError):
    code = ErrorCode.AMBIGUOUS


class StorageError(DaemonError):
    """Writing to disk failed; nothing was acknowledged and nothing half-written remains."""

    code = ErrorCode.IO_ERROR


class ShuttingDownError(DaemonError):
    code = ErrorCode.SHUTTING_DOWN


class UnsupportedProtocolError(DaemonError):
    code = ErrorCode.UNSUPPORTED_PROTOCOL


class StartupError(Exception):
    """The daemon refuses to start; the message says why and what to do."""
