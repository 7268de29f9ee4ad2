"""The scripted model itself, over HTTP, without the client: what each script entry becomes
on the wire (plain JSON, SSE, errors), and which requests consume the script."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.claude.model import ScriptedModel, bash, error, text

TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def post(
    model: ScriptedModel, path: str, body: dict[str, Any], **headers: str
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        model.url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :])
        for line in raw.decode().splitlines()
        if line.startswith("data: ")
    ]


def test_plain_json_and_streaming_replies(model: ScriptedModel) -> None:
    model.load(bash("bd close gt-1"), text("Done."))
    status, raw = post(model, "/v1/messages", {"tools": TOOLS, "messages": []})
    message = json.loads(raw)
    assert status == 200 and message["stop_reason"] == "tool_use"
    [call] = message["content"]
    assert call["name"] == "Bash" and call["input"]["command"] == "bd close gt-1"
    assert call["id"].startswith("toolu_")

    status, raw = post(model, "/v1/messages", {"tools": TOOLS, "messages": [], "stream": True})
    events = sse_events(raw)
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[2]["delta"] == {"type": "text_delta", "text": "Done."}
    assert events[4]["delta"]["stop_reason"] == "end_turn"


def test_side_calls_and_count_tokens_consume_nothing(model: ScriptedModel) -> None:
    model.load(text("the turn"))
    _, raw = post(model, "/v1/messages", {"messages": [{"role": "user", "content": "title?"}]})
    assert json.loads(raw)["content"] == [{"type": "text", "text": "ok"}]
    status, raw = post(model, "/v1/messages/count_tokens", {"messages": []})
    assert status == 200 and json.loads(raw)["input_tokens"] >= 0
    _, raw = post(model, "/v1/messages", {"tools": TOOLS, "messages": []})
    assert json.loads(raw)["content"][0]["text"] == "the turn"
    assert [r.turn for r in model.requests] == [False, False, True]


def test_a_subagent_has_a_script_of_its_own(model: ScriptedModel) -> None:
    model.load(text("main"), subagent=(text("sub"),))
    _, raw = post(model, "/v1/messages", {"tools": TOOLS}, **{"x-claude-code-agent-id": "a1"})
    assert json.loads(raw)["content"][0]["text"] == "sub"
    _, raw = post(model, "/v1/messages", {"tools": TOOLS})
    assert json.loads(raw)["content"][0]["text"] == "main"


@pytest.mark.parametrize(
    ("status", "kind"), [(429, "rate_limit_error"), (500, "api_error"), (529, "overloaded_error")]
)
def test_errors(model: ScriptedModel, status: int, kind: str) -> None:
    model.load(error(status))
    code, raw = post(model, "/v1/messages", {"tools": TOOLS})
    assert code == status and json.loads(raw)["error"]["type"] == kind
