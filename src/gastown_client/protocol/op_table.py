"""The op table: every op the protocol knows, one line each.

A new op is a request struct naming its result (``class Version(Returning["VersionResult"],
tag="version")``) and that result, next to each other in the module of its subsystem
(``daemon_ops``, ``log_ops``, ``session_ops``), and a line in ``RequestUnion`` here. The
daemon finds its handler by signature (``gastownd.ops``), both clients' ``call`` returns its
result, and ``scripts/gen_protocol_docs.py`` writes its section of docs/protocol.md.
"""

from __future__ import annotations

import sys
import typing
from typing import Any, NamedTuple

from gastown_client.protocol.daemon_ops import Hello, Metrics, Ping, Status, Version
from gastown_client.protocol.envelope import Request, Returning
from gastown_client.protocol.log_ops import Emit, Prune, Query, Subscribe, Unsubscribe
from gastown_client.protocol.session_ops import (
    Attribute,
    Attribution,
    Cv,
    DigestGet,
    Hook,
    ResolveSession,
    SessionEnd,
    Sessions,
    SessionStart,
    SessionStep,
    WispGet,
)

# In the order docs/protocol.md lists them: the daemon's own ops, the event log's, the sessions'.
RequestUnion = (
    Hello
    | Ping
    | Version
    | Status
    | Metrics
    | Emit
    | Query
    | Subscribe
    | Unsubscribe
    | Prune
    | SessionStart
    | SessionStep
    | SessionEnd
    | WispGet
    | DigestGet
    | Cv
    | Sessions
    | ResolveSession
    | Attribute
    | Attribution
    | Hook
)
OPS: frozenset[str] = frozenset(cls.__struct_config__.tag for cls in typing.get_args(RequestUnion))


class OpSpec(NamedTuple):
    """One op as the wire knows it: its name (the request's tag), request and result."""

    name: str
    request: type[Returning[Any]]
    result: type[Any]


def result_type(request: type[Returning[Any]]) -> type[Any]:
    """The ``ResultT`` a request class was declared with (``Returning["XResult"]``), a name
    looked up in the request's own module."""
    namespace = vars(sys.modules[request.__module__])
    for base in getattr(request, "__orig_bases__", ()):
        for arg in typing.get_args(base):
            result = (
                namespace.get(arg.__forward_arg__) if isinstance(arg, typing.ForwardRef) else arg
            )
            if isinstance(result, type):
                return result
    raise TypeError(f"{request.__name__} does not name its result: Returning['XResult']")


# Every op, by name, derived from ``RequestUnion``: the daemon's dispatcher, both
# clients and docs/protocol.md are checked against this table.
OP_TABLE: dict[str, OpSpec] = {
    request.__struct_config__.tag: OpSpec(
        request.__struct_config__.tag, request, result_type(request)
    )
    for request in typing.get_args(RequestUnion)
}
RESULT_TYPES: dict[type[Request], type[Any]] = {op.request: op.result for op in OP_TABLE.values()}
