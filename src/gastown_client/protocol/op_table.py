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

from gastown_client.protocol import daemon_ops, log_ops, session_ops
from gastown_client.protocol.envelope import Request, Returning

# In the order docs/protocol.md lists them: the daemon's own ops, the event log's, the sessions'.
RequestUnion = (
    daemon_ops.Hello
    | daemon_ops.Ping
    | daemon_ops.Version
    | daemon_ops.Status
    | daemon_ops.Metrics
    | log_ops.Emit
    | log_ops.Query
    | log_ops.Subscribe
    | log_ops.Unsubscribe
    | log_ops.Prune
    | session_ops.SessionStart
    | session_ops.SessionStep
    | session_ops.SessionEnd
    | session_ops.WispGet
    | session_ops.DigestGet
    | session_ops.Cv
    | session_ops.Sessions
    | session_ops.ResolveSession
    | session_ops.Attribute
    | session_ops.Attribution
    | session_ops.Hook
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
