"""Errors a client can see. Stdlib only."""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error raised by the gastownd clients."""


class DaemonUnavailable(ClientError):
    """The daemon could not be reached (not running, socket missing, timeout)."""

    def __init__(self, socket_path: str, reason: str) -> None:
        super().__init__(f"gastownd is not reachable at {socket_path}: {reason}")
        self.socket_path = socket_path
        self.reason = reason


class RequestRejected(ClientError):
    """The daemon answered with an error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProtocolMismatch(ClientError):
    """The daemon speaks a protocol version this client does not understand."""
