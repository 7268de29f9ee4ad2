"""A minimal Beads MCP server over stdio, shaped like ``beads-mcp``: the tools ``close``,
``update``, ``reopen``, ``create`` and ``show``, with the same inputs and JSON results. It keeps
nothing: a test only needs Claude Code to call it and the hooks to report the calls.
(``beads-mcp`` itself needs a real ``bd`` and its database.)

Run as ``python beads_mcp.py``; newline-delimited JSON-RPC 2.0, as MCP's stdio transport is.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

ISSUE_ID = {"type": "string", "description": "Issue ID (e.g. gt-a1b2)"}
TOOLS: list[dict[str, Any]] = [
    {
        "name": "close",
        "description": "Close (complete) an issue.",
        "inputSchema": {
            "type": "object",
            "properties": {"issue_id": ISSUE_ID, "reason": {"type": "string"}},
            "required": ["issue_id"],
        },
    },
    {
        "name": "update",
        "description": "Update an issue's status or fields.",
        "inputSchema": {
            "type": "object",
            "properties": {"issue_id": ISSUE_ID, "status": {"type": "string"}},
            "required": ["issue_id"],
        },
    },
    {
        "name": "reopen",
        "description": "Reopen closed issues.",
        "inputSchema": {
            "type": "object",
            "properties": {"issue_ids": {"type": "array", "items": {"type": "string"}}},
            "required": ["issue_ids"],
        },
    },
    {
        "name": "create",
        "description": "Create a new issue.",
        "inputSchema": {
            "type": "object",
            "properties": {"title": {"type": "string"}, "priority": {"type": "integer"}},
            "required": ["title"],
        },
    },
    {
        "name": "show",
        "description": "Show an issue.",
        "inputSchema": {
            "type": "object",
            "properties": {"issue_id": ISSUE_ID},
            "required": ["issue_id"],
        },
    },
]


def issue(issue_id: str, status: str, title: str = "an issue") -> dict[str, Any]:
    return {"id": issue_id, "title": title, "status": status, "priority": 2, "issue_type": "task"}


def call_tool(name: str, args: dict[str, Any]) -> Any:
    if name == "close":
        return [issue(args["issue_id"], "closed")]
    if name == "update":
        return issue(args["issue_id"], args.get("status") or "open")
    if name == "reopen":
        return [issue(i, "open") for i in args.get("issue_ids", [])]
    if name == "create":
        title = str(args.get("title", ""))
        return issue(f"gt-{hashlib.md5(title.encode()).hexdigest()[:4]}", "open", title)
    if name == "show":
        return issue(args["issue_id"], "open")
    raise KeyError(name)


def answer(request: dict[str, Any]) -> dict[str, Any] | None:
    method, params = request.get("method"), request.get("params") or {}
    if "id" not in request:
        return None  # a notification
    result: Any
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "beads", "version": "0.0.0-test"},
        }
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        try:
            data = call_tool(params.get("name", ""), params.get("arguments") or {})
            result = {"content": [{"type": "text", "text": json.dumps(data)}], "isError": False}
        except KeyError as exc:
            result = {"content": [{"type": "text", "text": f"Error: {exc}"}], "isError": True}
    elif method == "ping":
        result = {}
    else:
        error = {"code": -32601, "message": f"method not found: {method}"}
        return {"jsonrpc": "2.0", "id": request["id"], "error": error}
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


def main() -> None:
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        reply = answer(request)
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
