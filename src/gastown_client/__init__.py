"""Thin clients for gastownd: protocol, blocking and async clients, CLI and hook.

Importing this package costs nothing beyond the standard library: the public
names are resolved lazily so that the hook entry point stays fast.
"""

from __future__ import annotations

# Not ``from typing import ...``: importing typing costs the hook ~14 ms.
TYPE_CHECKING = False

_LAZY = {
    "__version__": "gastown_client.version",
    "Client": "gastown_client.client",
    "AsyncClient": "gastown_client.aclient",
    "ClientError": "gastown_client.errors",
    "DaemonUnavailable": "gastown_client.errors",
    "RequestRejected": "gastown_client.errors",
    "ProtocolMismatch": "gastown_client.errors",
}

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "DaemonUnavailable",
    "ProtocolMismatch",
    "RequestRejected",
    "__version__",
]

if TYPE_CHECKING:
    from typing import Any

    from gastown_client.aclient import AsyncClient
    from gastown_client.client import Client
    from gastown_client.errors import (
        ClientError,
        DaemonUnavailable,
        ProtocolMismatch,
        RequestRejected,
    )
    from gastown_client.version import __version__


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'gastown_client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
