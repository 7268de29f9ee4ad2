"""What a Claude Code hook call means for the wisps: pure mapping, no I/O.

``plan_hook`` turns Claude's hook payload plus the environment the hook saw
into a ``HookPlan``: which session and actor, how the session starts or ends,
and which steps and attributions it adds. Bash tool calls are read for
``git commit``, ``bd close``/``update --status closed``/``create``, ``gt done``
and ``gt handoff``; everything else is ignored cheaply. Prompt text is never
decoded, let alone kept.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

COMMIT_LINE = re.compile(r"\[[^\]\s]+(?: \([^)]*\))* ([0-9a-f]{7,40})\] (.+)")
CREATED_ISSUE = re.compile(r"Created issue:?\s+([A-Za-z0-9][\w.-]*)")
# bd options that take a value, so the value is not mistaken for an issue id.
BD_VALUE_OPTIONS = frozenset(
    {
        "--reason",
        "-r",
        "--session",
        "--actor",
        "--db",
        "--status",
        "-s",
        "--message",
        "-m",
        "--title",
        "-t",
        "--priority",
        "-p",
        "--type",
        "--assignee",
        "-a",
        "--description",
        "-d",
    }
)


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


@dataclass(frozen=True)
class PlannedStep:
    kind: str
    ref: str | None = None
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class PlannedAttribution:
    issue: str
    action: str  # closed | created | updated


@dataclass
class HookPlan:
    event: str
    session_id: str | None
    actor: str
    cwd: str | None = None
    tmux_session: str | None = None
    pid: int | None = None
    # "startup" | "resume" | "clear" | "compact" when the call starts a session.
    start: str | None = None
    end_reason: str | None = None
    steps: list[PlannedStep] = field(default_factory=list)
    attributions: list[PlannedAttribution] = field(default_factory=list)
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
            if payload.tool_name != "Bash":
                plan.ignored = f"tool {payload.tool_name!r} is not watched"
            else:
                _plan_bash(plan, payload.tool_input, payload.tool_response)
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
    output = _response_text(tool_response)
    for words in _commands(command):
        tool, rest = words[0].rsplit("/", 1)[-1], words[1:]
        if tool == "git" and _git_subcommand(rest) == "commit":
            _plan_commit(plan, output)
        elif tool == "bd" and rest:
            _plan_bd(plan, rest[0], rest[1:], output)
        elif tool == "gt" and rest and rest[0] in ("done", "handoff"):
            subject = _option(rest[1:], "-s", "--subject", "-m", "--message")
            plan.steps.append(PlannedStep(rest[0], None, {"subject": subject} if subject else None))
    if not plan.steps and not plan.commit_needs_lookup:
        plan.ignored = "bash command not watched"


def _mentions_watched_tool(command: str) -> bool:
    return any(word in command for word in ("git", "bd ", "gt "))


def _failed(response: Any) -> bool:
    if not isinstance(response, dict):
        return False
    if response.get("is_error") is True or response.get("interrupted") is True:
        return True
    code = response.get("exit_code", response.get("exitCode", 0))
    return isinstance(code, int) and not isinstance(code, bool) and code != 0


def _response_text(response: Any) -> str:
    if isinstance(response, str):
        return response
    if isinstance(response, dict):
        parts = [response.get(k) for k in ("stdout", "output", "stderr")]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _commands(command: str) -> list[list[str]]:
    """Simple commands of a shell line, as words, without leading VAR=value words.

    Quotes are honoured before splitting at ``;``, ``&&``, ``||``, ``|`` and
    newlines, so a quoted ``;`` stays inside its word.
    """
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    lexer.whitespace = " \t\r"
    found: list[list[str]] = []
    words: list[str] = []
    try:
        tokens = list(lexer)
    except ValueError:  # an unterminated quote: fall back to plain words
        tokens = command.split()
    for token in [*tokens, ";"]:
        if token and set(token) <= set(";&|\n"):
            found += _simple(words)
            words = []
        elif "\n" in token:
            head, _, tail = token.partition("\n")
            found += _simple([*words, head] if head else words)
            words = [tail] if tail else []
        else:
            words.append(token)
    return found


def _simple(words: list[str]) -> list[list[str]]:
    while words and "=" in words[0] and not words[0].startswith("-"):
        words = words[1:]
    if words and words[0] in ("sudo", "env", "command", "exec"):
        words = words[1:]
    return [words] if words else []


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


def _plan_bd(plan: HookPlan, verb: str, args: list[str], output: str) -> None:
    if verb == "close":
        for issue in _positionals(args):
            plan.steps.append(PlannedStep("issue_closed", issue))
            plan.attributions.append(PlannedAttribution(issue, "closed"))
    elif verb == "update":
        status = _option(args, "--status", "-s")
        if status == "closed":
            for issue in _positionals(args):
                plan.steps.append(PlannedStep("issue_closed", issue))
                plan.attributions.append(PlannedAttribution(issue, "closed"))
    elif verb == "create":
        match = CREATED_ISSUE.search(output)
        if match:
            issue = match.group(1).rstrip(".:,")
            plan.steps.append(PlannedStep("issue_created", issue))
            plan.attributions.append(PlannedAttribution(issue, "created"))


def _positionals(args: list[str]) -> list[str]:
    found = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in BD_VALUE_OPTIONS
            continue
        found.append(arg)
    return found


def _option(args: list[str], *names: str) -> str | None:
    for position, arg in enumerate(args):
        for name in names:
            if arg == name and position + 1 < len(args):
                return args[position + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def predecessor_context(
    *,
    actor: str,
    ended_at: str,
    end_reason: str,
    issues_closed: list[str],
    commits: list[str],
    handoff_subject: str | None,
    session_id: str,
    limit: int = 1024,
) -> str:
    """The short note a new session gets about its predecessor (at most ``limit`` bytes)."""
    lines = [
        f"[gastownd] Your predecessor as {actor} (session {session_id}) "
        f"ended {ended_at} ({end_reason}).",
    ]
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
