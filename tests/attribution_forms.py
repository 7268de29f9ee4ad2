"""The ways agents touch Beads (Gas Town reference, section 7), as PostToolUse calls.

One table, read by the pure mapping's unit test and by the integration test
that sends every row through the real hook and socket. Each row: a name, the
tool call (``tool_name``, ``tool_input``, ``tool_response``) and the
attributions it must produce, as ``(issue, action)`` pairs. Decoys expect
none. Issue ids are unique across rows, so every row can share one session.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Form:
    name: str
    tool_name: str
    tool_input: dict[str, Any]
    tool_response: Any
    expected: frozenset[tuple[str, str]]
    decoy_issues: tuple[str, ...] = ()


def ok(stdout: str = "") -> dict[str, Any]:
    return {"stdout": stdout, "stderr": "", "interrupted": False, "isImage": False}


def bash(
    name: str, command: str, *expected: tuple[str, str], stdout: str = "", response: Any = None
) -> Form:
    return Form(
        name,
        "Bash",
        {"command": command, "description": name},
        ok(stdout) if response is None else response,
        frozenset(expected),
    )


def decoy(name: str, command: str, *issues: str, stdout: str = "", response: Any = None) -> Form:
    form = bash(name, command, stdout=stdout, response=response)
    return Form(form.name, form.tool_name, form.tool_input, form.tool_response, frozenset(), issues)


def mcp(
    name: str, tool: str, args: dict[str, Any], result: Any, *expected: tuple[str, str]
) -> Form:
    return Form(name, tool, args, result, frozenset(expected))


def mcp_decoy(name: str, tool: str, args: dict[str, Any], result: Any, *issues: str) -> Form:
    return Form(name, tool, args, result, frozenset(), issues)


def text_blocks(value: Any) -> list[dict[str, str]]:
    return [{"type": "text", "text": json.dumps(value)}]


def issue(issue_id: str, status: str = "open") -> dict[str, Any]:
    return {"id": issue_id, "title": "A task", "status": status, "priority": 2}


CREATED_JSON = json.dumps(issue("fm-d4"), indent=2)

FORMS: tuple[Form, ...] = (
    # ------------------------------------------------------------ bd close / update
    bash("plain close", "bd close fm-a1", ("fm-a1", "closed"), stdout="✓ Closed fm-a1: A task"),
    bash(
        "several ids",
        "bd close fm-a2 fm-a3 --reason 'done; merged'",
        ("fm-a2", "closed"),
        ("fm-a3", "closed"),
    ),
    bash("--no-daemon first", "bd --no-daemon close fm-b1", ("fm-b1", "closed")),
    bash("--actor NAME first", "bd --actor gastown/crew/joe close fm-b2", ("fm-b2", "closed")),
    bash("--actor=NAME first", "bd --actor=gastown/crew/joe close fm-b3", ("fm-b3", "closed")),
    bash("--json first", "bd --json close fm-b4", ("fm-b4", "closed"), stdout="[]"),
    bash(
        "--db PATH then update --status closed",
        "bd --db /home/u/gt/.beads/beads.db update fm-b5 fm-b6 --status closed",
        ("fm-b5", "closed"),
        ("fm-b6", "closed"),
    ),
    bash(
        "several global flags",
        "bd --lock-timeout 5s --sandbox --allow-stale -q --no-auto-flush close fm-b7",
        ("fm-b7", "closed"),
    ),
    bash("--status=closed", "bd update fm-c1 --status=closed", ("fm-c1", "closed")),
    bash("-s closed", "bd update -s closed fm-c0", ("fm-c0", "closed")),
    bash("bash -c", "bash -c 'bd close fm-c2'", ("fm-c2", "closed")),
    bash("sh -c with cd", 'sh -c "cd /repo && bd close fm-c3"', ("fm-c3", "closed")),
    bash("bash -lc", "bash -lc 'bd --no-daemon close fm-d9'", ("fm-d9", "closed")),
    bash("env wrapper", "env BD_ACTOR=gastown/crew/joe bd close fm-c4", ("fm-c4", "closed")),
    bash("timeout wrapper", "timeout 30 bd close fm-c5", ("fm-c5", "closed")),
    bash("timeout with options", "timeout -s KILL 1m bd close fm-e2", ("fm-e2", "closed")),
    bash("command wrapper", "command bd close fm-c6", ("fm-c6", "closed")),
    bash("subshell", "(cd /repo && bd close fm-c7)", ("fm-c7", "closed")),
    bash("group", "{ cd /repo; bd close fm-c8; }", ("fm-c8", "closed")),
    bash(
        "multi-line script",
        "cd /repo\nbd sync\nbd close fm-c9 \\\n  --reason 'shipped'\ngit status",
        ("fm-c9", "closed"),
    ),
    bash("VAR=value prefix", "BEADS_NO_DAEMON=1 bd close fm-d1", ("fm-d1", "closed")),
    bash(
        "cd && close && push",
        "cd /repo && bd close fm-d2 && git push",
        ("fm-d2", "closed"),
    ),
    bash("absolute path to bd", "/usr/local/bin/bd close fm-d7", ("fm-d7", "closed")),
    bash("redirections", "bd close fm-d8 2>&1 | tail -1", ("fm-d8", "closed")),
    bash("heredoc fed to bash", "bash <<'EOF'\nbd close fm-e1\nEOF", ("fm-e1", "closed")),
    bash("reopen", "bd reopen fm-d6", ("fm-d6", "reopened")),
    # ------------------------------------------------------------ bd create / q
    bash(
        "create",
        "bd create 'Fix login' -p 1 -t bug",
        ("fm-d3", "created"),
        stdout="✓ Created issue: fm-d3\n  Title: Fix login\n  Priority: P1\n  Status: open",
    ),
    bash("create --json", "bd create 'A task' --json", ("fm-d4", "created"), stdout=CREATED_JSON),
    bash(
        "--json before create",
        "bd --json create 'A task' -p 2",
        ("fm-e3", "created"),
        stdout=json.dumps(issue("fm-e3")),
    ),
    bash("q", "bd q 'Quick capture'", ("fm-d5", "created"), stdout="fm-d5\n"),
    bash(
        "create then close",
        "bd create 'Spin-off' && bd close fm-e5",
        ("fm-e4", "created"),
        ("fm-e5", "closed"),
        stdout="✓ Created issue: fm-e4\n✓ Closed fm-e5: Old",
    ),
    # ------------------------------------------------------------ beads MCP tools
    mcp(
        "MCP close",
        "mcp__beads__close",
        {"issue_id": "fm-m1", "reason": "done"},
        text_blocks([issue("fm-m1", "closed")]),
        ("fm-m1", "closed"),
    ),
    mcp(
        "plugin MCP update to closed",
        "mcp__plugin_beads_beads__update",
        {"issue_id": "fm-m2", "status": "closed"},
        text_blocks(issue("fm-m2", "closed")),
        ("fm-m2", "closed"),
    ),
    mcp(
        "MCP reopen",
        "mcp__beads__reopen",
        {"issue_ids": ["fm-m3"], "reason": "regressed"},
        text_blocks([issue("fm-m3")]),
        ("fm-m3", "reopened"),
    ),
    mcp(
        "MCP create, JSON text",
        "mcp__beads__create",
        {"title": "New task", "priority": 2},
        json.dumps(issue("fm-m4")),
        ("fm-m4", "created"),
    ),
    mcp(
        "MCP create, text blocks",
        "mcp__plugin_beads_beads__create",
        {"title": "Another", "issue_type": "bug"},
        text_blocks(issue("fm-m6")),
        ("fm-m6", "created"),
    ),
    mcp(
        "MCP close under another server key",
        "mcp__bd__close",
        {"issue_id": "fm-m5"},
        "closed",
        ("fm-m5", "closed"),
    ),
    mcp(
        "MCP create, structured result",
        "mcp__beads__create",
        {"title": "Structured"},
        {"content": text_blocks(issue("fm-m7"))},
        ("fm-m7", "created"),
    ),
    # ------------------------------------------------------------ decoys
    decoy("echo of a command", 'echo "bd close fm-x1"', "fm-x1"),
    decoy("grep for a command", "grep 'bd close fm-x2' notes.md", "fm-x2"),
    decoy("unquoted echo", "echo bd close fm-y1", "fm-y1"),
    decoy("printf", "printf 'bd close fm-y2\\n'", "fm-y2"),
    decoy("read-only show", "bd show fm-x3", "fm-x3", stdout=json.dumps(issue("fm-x3"))),
    decoy("read-only list", "bd list --status open --json", "fm-y3", stdout="[]"),
    decoy("read-only ready", "bd ready", "fm-y4", stdout="fm-y4  A task"),
    decoy(
        "failed close (exit code)",
        "bd close fm-x4",
        "fm-x4",
        response={"stdout": "", "stderr": "not found", "exit_code": 1},
    ),
    decoy(
        "failed close (is_error)",
        "bd close fm-y5",
        "fm-y5",
        response={"stdout": "", "stderr": "Error: not found", "is_error": True},
    ),
    decoy(
        "interrupted close",
        "bd close fm-y6",
        "fm-y6",
        response={"stdout": "", "stderr": "", "interrupted": True, "isImage": False},
    ),
    decoy("update to in_progress", "bd update fm-x5 --status in_progress", "fm-x5"),
    decoy(
        "commit message naming a close",
        'git commit -m "bd close fm-x6"',
        "fm-x6",
        stdout="[main 1a2b3c4] bd close fm-x6\n 1 file changed",
    ),
    decoy("heredoc data", "cat <<EOF > notes.md\nbd close fm-x7\nEOF", "fm-x7"),
    decoy("comment", "ls # then bd close fm-x8", "fm-x8"),
    decoy("help", "bd close --help fm-y7", "fm-y7"),
    decoy("unknown id", "bd close $NEXT_ID", "$NEXT_ID"),
    mcp_decoy("MCP show", "mcp__beads__show", {"issue_id": "fm-x9"}, text_blocks(issue("fm-x9"))),
    mcp_decoy(
        "MCP close that failed",
        "mcp__beads__close",
        {"issue_id": "fm-y8"},
        {"content": [{"type": "text", "text": "Error: issue not found"}], "isError": True},
        "fm-y8",
    ),
    mcp_decoy(
        "MCP update without close",
        "mcp__beads__update",
        {"issue_id": "fm-y9", "status": "in_progress"},
        text_blocks(issue("fm-y9", "in_progress")),
        "fm-y9",
    ),
    mcp_decoy(
        "another server's close tool",
        "mcp__github__close",
        {"number": 12},
        "closed",
    ),
)


def expected_attributions() -> set[tuple[str, str]]:
    return {pair for form in FORMS for pair in form.expected}


def decoy_issues() -> set[str]:
    return {issue for form in FORMS for issue in form.decoy_issues}
