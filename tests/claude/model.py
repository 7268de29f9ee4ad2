"""A scripted stand-in for the Messages API: the one part of a Claude Code session that a
test machine cannot have, the model.

``ScriptedModel`` serves ``POST /v1/messages`` (streaming SSE or plain JSON) and
``/v1/messages/count_tokens`` on a free loopback port. Each reply of the conversation comes
from the test's script, in order: a tool call (``tool``), text (``text``), or an HTTP error
(``error``: 429, 500, 529 overloaded); a subagent's requests (they carry the
``x-claude-code-agent-id`` header) take theirs from a script of their own. Requests that are
not a turn of the conversation (they offer no tools: the client's side calls) get a short
text and consume nothing. Every request is recorded, so a test can assert what the model was
shown.

It also answers proxy ``CONNECT`` requests with 403 and records the host: with
``HTTPS_PROXY`` pointing here, any attempt of the client to reach the network is seen.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "claude-sonnet-4-5"
SUBAGENT_HEADER = "x-claude-code-agent-id"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: content blocks, or an HTTP error status."""

    blocks: tuple[dict[str, Any], ...] = ()
    status: int = 200
    error_type: str = ""
    # The prompt size the reply claims: near the context window, the client compacts.
    input_tokens: int = 10

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(b["type"] == "tool_use" for b in self.blocks) else "end_turn"


def text(answer: str) -> Reply:
    return Reply(({"type": "text", "text": answer},))


def tool(name: str, tool_input: dict[str, Any], *, call_id: str | None = None) -> Reply:
    return Reply(({"type": "tool_use", "id": call_id or "", "name": name, "input": tool_input},))


def bash(command: str, *, call_id: str | None = None) -> Reply:
    return tool("Bash", {"command": command, "description": "run it"}, call_id=call_id)


def filling(reply: Reply, input_tokens: int = 190_000) -> Reply:
    """``reply``, claiming a conversation that nearly fills the context window."""
    return Reply(reply.blocks, reply.status, reply.error_type, input_tokens)


def error(status: int) -> Reply:
    kinds = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
    return Reply(status=status, error_type=kinds.get(status, "api_error"))


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    turn: bool  # a turn of the scripted conversation (consumed a reply)
    # time.monotonic() when the request arrived and when its reply was sent: the gap from
    # one turn's reply to the next turn's request is the client's own time (tools, hooks).
    arrived: float = 0.0
    answered: float = 0.0

    @property
    def subagent(self) -> bool:
        return any(k.lower() == SUBAGENT_HEADER for k in self.headers)

    def text_shown(self) -> str:
        """Everything the model was shown as text: system prompt and messages."""
        return json.dumps([self.body.get("system"), self.body.get("messages")])

    def tool_results(self) -> list[dict[str, Any]]:
        results = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, list):
                results += [b for b in content if b.get("type") == "tool_result"]
        return results


@dataclass
class ScriptedModel:
    script: list[Reply] = field(default_factory=list)
    subagent_script: list[Reply] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    connects: list[str] = field(default_factory=list)
    # How long a turn's reply takes. A real model takes seconds; tests keep a little of that
    # so that a detached hook of one tool call lands before the client's next hooks, as it
    # does with a real model. The bench uses 0 (the hooks' cost against an instant model).
    latency_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _calls: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def turns(self) -> list[Request]:
        return [r for r in self.requests if r.turn]

    def load(self, *replies: Reply, subagent: tuple[Reply, ...] = ()) -> None:
        """Replace the scripts (what is left of the previous ones is dropped)."""
        with self._lock:
            self.script = list(replies)
            self.subagent_script = list(subagent)

    def start(self) -> ScriptedModel:
        model = self

        class Handler(_Handler):
            scripted = model

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _next(self, request: Request) -> Reply | None:
        """The reply for a request to ``/v1/messages``; None for a side call."""
        with self._lock:
            self.requests.append(request)
            if not request.turn:
                return None
            script = self.subagent_script if request.subagent else self.script
            if not script:
                return text("(the script has no more replies)")
            self._calls += 1
            reply = script.pop(0)
            blocks = tuple(
                {**b, "id": b["id"] or f"toolu_{self._calls:04d}"} if b["type"] == "tool_use" else b
                for b in reply.blocks
            )
            return Reply(blocks, reply.status, reply.error_type, reply.input_tokens)


def is_turn(body: dict[str, Any]) -> bool:
    """A request of the agent loop (main agent or subagent): it offers tools."""
    return bool(body.get("tools"))


def sse(reply: Reply, message_id: str) -> Iterator[bytes]:
    def event(kind: str, data: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    yield event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1},
            },
        },
    )
    for index, block in enumerate(reply.blocks):
        if block["type"] == "tool_use":
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        yield event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
        yield event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )
        yield event("content_block_stop", {"type": "content_block_stop", "index": index})
    yield event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": 5},
        },
    )
    yield event("message_stop", {"type": "message_stop"})


class _Handler(BaseHTTPRequestHandler):
    scripted: ScriptedModel
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_CONNECT(self) -> None:
        with self.scripted._lock:
            self.scripted.connects.append(self.path)
        self._json(403, {"error": "no network in tests"})

    def do_GET(self) -> None:
        with self.scripted._lock:
            self.scripted.connects.append(f"GET {self.path}")
        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "no"}})

    def do_HEAD(self) -> None:
        self._json(200, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        path = self.path.split("?")[0]
        if path.endswith("/count_tokens"):
            with self.scripted._lock:
                self.scripted.requests.append(Request(path, dict(self.headers), body, False))
            self._json(200, {"input_tokens": len(raw) // 4})
            return
        if not path.endswith("/v1/messages"):
            with self.scripted._lock:
                self.scripted.connects.append(f"POST {self.path}")
            self._json(
                404, {"type": "error", "error": {"type": "not_found_error", "message": "no"}}
            )
            return
        request = Request(path, dict(self.headers), body, is_turn(body), time.monotonic())
        reply = self.scripted._next(request) or text("ok")
        if request.turn and self.scripted.latency_s:
            time.sleep(self.scripted.latency_s)
        try:
            self._answer(reply, body)
        finally:
            request.answered = time.monotonic()

    def _answer(self, reply: Reply, body: dict[str, Any]) -> None:
        if reply.status != 200:
            self._json(
                reply.status,
                {"type": "error", "error": {"type": reply.error_type, "message": "scripted"}},
                retry_after="0",
            )
            return
        message_id = f"msg_{len(self.scripted.requests):04d}"
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL,
                    "content": list(reply.blocks),
                    "stop_reason": reply.stop_reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": reply.input_tokens, "output_tokens": 5},
                },
            )
            return
        chunks = list(sse(reply, message_id))
        payload = b"".join(chunks)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, data: dict[str, Any], retry_after: str | None = None) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        if retry_after is not None:
            self.send_header("retry-after", retry_after)
        self.end_headers()
        self.wfile.write(payload)
