"""Every shape that crosses the socket, by subsystem; imported from here.

Newline-delimited JSON; each request is one Struct of the ``Request`` union,
tagged on ``"op"``, with an optional ``id`` echoed in its reply. Replies are
``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": {"code",
"message"}}``; a subscription's pushed frames carry ``"push"`` instead of
``"ok"``. Wire rules: new fields always get a default, a field's type never
changes, an error code is never renamed or reused.

``envelope``: versions, error codes, the request base and the frames; ``nesting``: the
depth check run before decoding; ``daemon_ops``, ``log_ops``, ``session_ops``: each op's
request and result, by subsystem; ``op_table``: the one list of ops (``OP_TABLE``). Every
public name of these modules is a name of this package (a new op's structs need no line
here).
"""

from __future__ import annotations

from gastown_client.protocol.daemon_ops import *  # noqa: F403
from gastown_client.protocol.envelope import *  # noqa: F403
from gastown_client.protocol.log_ops import *  # noqa: F403
from gastown_client.protocol.nesting import *  # noqa: F403
from gastown_client.protocol.op_table import *  # noqa: F403
from gastown_client.protocol.session_ops import *  # noqa: F403
