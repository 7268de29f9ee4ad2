"""What a Claude Code hook call means for the wisps: pure mapping, no I/O.

``plan_hook`` turns Claude's hook payload plus the environment the hook saw
into a ``HookPlan``: which session and actor, how the session starts or ends,
and which steps and attributions it adds. Bash tool calls are read as shell
scripts (:mod:`gastownd.core.command_words`) for ``git commit``, the ``bd`` verbs that
change issues and ``gt done``/``gt handoff``; beads MCP tool calls for the
issues they change (:mod:`gastownd.core.beads`). Everything else is ignored
cheaply. Prompt text is never decoded, let alone kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from gastownd.core.beads import (
    MCP_TOOL,
    BdCall,
    Change,
    bd_call,
    bd_changes,
    created_ids,
    is_create,
    mcp_changes,
    mcp_failed,
    response_text,
)
from gastownd.core.command_words import basename, option, simple_commands

COMMIT_LINE = re.compile(r"\[[^\]\s]+(?: \([^)]*\))* ([0-9a-f]{7,40})\] (.+)")
# The step a Beads change adds to the session's wisp.
STEP_OF_ACTION: dict[str, str] = {
    "closed": "issue_closed",
    "created": "issue_created",
    "updated": "issue_updated",
    "reopened": "issue_reopened",
}


class HookPayload(msgspec.Struct, kw_only=True):
    """The parts of Claude's hook JSON that gastownd reads (``prompt`` deliberately absent)."""

    hook_event_name: str = ""
    session_id: str | None = None
    cwd: str | None = None
    transcript_path: str | None = None
    source: str | None = None
    reason: str | None = None
    trigger: str | None = None
    tool_name: str | None = None
    tool_input: Any = None
    tool_response: Any = None


_payload_decoder = msgspec.json.Decoder(HookPayload)


def decode_payload(raw: bytes) -> HookPayload:
    """Raises ``msgspec.DecodeError`` (with its ``$.path``) when the payload is unusable."""
    return _payload_decoder.decode(raw)


class PlannedStep(msgspec.Struct, frozen=True):
    kind: str
    ref: str | None = None
    payload: dict[str, Any] | None = None


class PlannedAttribution(msgspec.Struct, frozen=True):
    issue: str
    action: str  # closed | created | updated | reopened


class HookPlan(msgspec.Struct):
    event: str
    session_id: str | None
    actor: str
    cwd: str | None = None
    tmux_session: str | None = None
    pid: int | None = None
    # "startup" | "resume" | "clear" | "compact" when the call starts a session.
    start: str | None = None
    end_reason: str | None = None
    steps: list[PlannedStep] = msgspec.field(default_factory=list)
    attributions: list[PlannedAttribution] = msgspec.field(default_factory=list)
    # A commit whose sha the tool response did not show: read it from the repository.
    commit_needs_lookup: bool = False
    ignored: str | None = None


def actor_of(env: Mapping[str, str]) -> str:
    return env.get("GT_ROLE") or env.get("BD_ACTOR") or "unknown"


def plan_hook(
    payload: HookPayload, env: Mapping[str, str], cwd: str | None, ppid: int | None
) -> HookPlan:
    session_id = payload.session_id or env.get("CLAUDE_CODE_SESSION_ID") or None
    plan = HookPlan(
        event=payload.hook_event_name,
        session_id=session_id,
        actor=actor_of(env),
        cwd=payload.cwd or cwd,
        tmux_session=env.get("GT_SESSION") or None,
        pid=ppid,
    )
    if session_id is None:
        plan.ignored = "no session id in the payload or the environment"
        return plan
    match payload.hook_event_name:
        case "SessionStart":
            source = payload.source or "startup"
            plan.start = (
                source if source in ("startup", "resume", "clear", "compact") else "startup"
            )
        case "SessionEnd":
            plan.end_reason = payload.reason or "other"
        case "PreCompact":
            plan.steps.append(PlannedStep("compaction", payload.trigger))
        case "Stop":
            plan.steps.append(PlannedStep("turn"))
        case "UserPromptSubmit":
            plan.steps.append(PlannedStep("prompt"))
        case "PostToolUse":
            tool = payload.tool_name or ""
            if tool == "Bash":
                _plan_bash(plan, payload.tool_input, payload.tool_response)
            elif MCP_TOOL.fullmatch(tool):
                _plan_mcp(plan, tool, payload.tool_input, payload.tool_response)
            else:
                plan.ignored = f"tool {payload.tool_name!r} is not watched"
        case "PostToolUseFailure":
            plan.ignored = "the tool call failed"
        case _:
            plan.ignored = f"hook event {payload.hook_event_name!r} is not mapped"
    return plan


def _plan_bash(plan: HookPlan, tool_input: Any, tool_response: Any) -> None:
    command = tool_input.get("command") if isinstance(tool_input, dict) else None
    if not isinstance(command, str) or not _mentions_watched_tool(command):
        plan.ignored = "bash command not watched"
        return
    if _failed(tool_response):
        plan.ignored = "bash command failed"
        return
    output = response_text(tool_response)
    creates: list[BdCall] = []
    for words in simple_commands(command):
        tool, rest = basename(words[0].text), [w.text for w in words[1:]]
        if tool == "git" and _git_subcommand(rest) == "commit":
            _plan_commit(plan, output)
        elif tool == "bd":
            call = bd_call(words[1:])
            if call is None:
                continue
            if is_create(call):
                creates.append(call)
            else:
                _add_changes(plan, bd_changes(call))
        elif tool == "gt" and rest and rest[0] in ("done", "handoff"):
            subject = option(rest[1:], "-s", "--subject", "-m", "--message")
            plan.steps.append(PlannedStep(rest[0], None, {"subject": subject} if subject else None))
    if creates:
        _add_changes(plan, [Change(issue, "created") for issue in created_ids(output, creates)])
    if not plan.steps and not plan.commit_needs_lookup:
        plan.ignored = "bash command not watched"


def _plan_mcp(plan: HookPlan, tool: str, tool_input: Any, tool_response: Any) -> None:
    if mcp_failed(tool_response):
        plan.ignored = "MCP tool call failed"
        return
    changes = mcp_changes(tool, tool_input, tool_response)
    if not changes:
        plan.ignored = f"tool {tool!r} changed no Beads issue"
        return
    _add_changes(plan, changes)


def _add_changes(plan: HookPlan, changes: list[Change]) -> None:
    for change in changes:
        plan.steps.append(PlannedStep(STEP_OF_ACTION[change.action], change.issue))
        plan.attributions.append(PlannedAttribution(change.issue, change.action))


def _mentions_watched_tool(command: str) -> bool:
    return any(word in command for word in ("git", "bd", "gt"))


def _failed(response: Any) -> bool:
    if isinstance(response, str):
        return response.lstrip().startswith(("Error", "Exit code"))
    if not isinstance(response, dict):
        return False
    if any(response.get(k) is True for k in ("is_error", "isError", "interrupted")):
        return True
    for key in ("exit_code", "exitCode", "returncode", "return_code"):
        code = response.get(key)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            return True
    return False


def _git_subcommand(args: list[str]) -> str | None:
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("-C", "-c", "--git-dir", "--work-tree"):
            skip = True
            continue
        if not arg.startswith("-"):
            return arg
    return None


def _plan_commit(plan: HookPlan, output: str) -> None:
    match = COMMIT_LINE.search(output)
    if match:
        plan.steps.append(PlannedStep("commit", match.group(1), {"subject": match.group(2)}))
    else:
        plan.commit_needs_lookup = True


def predecessor_context(
    *,
    actor: str,
    session_id: str,
    started_at: str,
    ended_at: str | None,
    end_reason: str | None,
    topic: str | None = None,
    issues_closed: list[str] | None = None,
    commits: list[str] | None = None,
    handoff_subject: str | None = None,
    limit: int = 1024,
) -> str:
    """The short note a new session gets about its predecessor (at most ``limit`` bytes)."""
    head = f"[gastownd] Your predecessor as {actor} (session {session_id}) "
    if ended_at is not None:
        head += f"ended {ended_at} ({end_reason or 'ended'})."
    else:
        head += f"started {started_at}; no end was recorded."
    lines = [head]
    if topic:
        lines.append(f"Topic: {topic}")
    if issues_closed:
        lines.append("Issues closed: " + ", ".join(issues_closed[:10]))
    if commits:
        lines.append("Commits: " + "; ".join(commits[:5]))
    if handoff_subject:
        lines.append(f"Last handoff: {handoff_subject}")
    lines.append(f"To ask it: gastownctl seance {session_id[:8]} -p '<question>'")
    text = "\n".join(lines)
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", "ignore") + "..."
