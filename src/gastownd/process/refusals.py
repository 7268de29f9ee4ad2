"""Errors a handler raises to answer a request with a stable error code.

``server.py`` is the one place that turns them into error replies; anything
else escaping a handler is a bug, answered as ``internal``.
"""

from __future__ import annotations

import errno

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


# Exit statuses of ``gastownd run`` (docs/operations.md), after sysexits(3) where one fits.
EXIT_ENVIRONMENT = 1
EXIT_USAGE = 2
# A bug: an exception nothing expected. Never used for a problem the user can fix.
EXIT_SOFTWARE = 70
# EX_CONFIG: the unit's RestartPreventExitStatus= names it, so a bad file is no crash loop.
EXIT_CONFIG = 78


class StartupError(Exception):
    """The daemon refuses to start; the message names the path and says why and what to do.

    This base class is for the environment (directories, files, the socket, another
    daemon): it may be gone at the next try, so a supervisor may restart.
    """

    exit_code = EXIT_ENVIRONMENT
    # For sd_notify's ERRNO=, which systemd shows as the service's error.
    errno_code = errno.EIO

    def __init__(self, message: str, *, errno_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if errno_code:
            self.errno_code = errno_code


class ConfigError(StartupError):
    """The configuration cannot be used: refused at start, and at SIGHUP (the old one stays)."""

    exit_code = EXIT_CONFIG
    errno_code = errno.EINVAL
