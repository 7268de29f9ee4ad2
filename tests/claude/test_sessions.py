"""Sessions of the real Claude Code, driven end to end through the hooks ``install-hooks``
wrote, against the real daemon; only the model is scripted (``model.py``).

Each test asserts on the daemon (sessions, steps, digests, attributions, the CV) and on what
the model was shown. They fail if ``install-hooks`` writes a matcher or an option the real
client ignores, if a payload field the daemon relies on is renamed, or if the predecessor
note stops reaching the model.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gastown_client.client import Client
from gastown_client.errors import ClientError
from gastown_client.protocol import DigestView
from tests.claude.harness import ACTOR, TMUX, ClaudeCode
from tests.claude.model import ScriptedModel, bash, error, filling, text, tool
from tests.conftest import TEST_CONFIG, DaemonProcess
from tests.reliability._support import read_log

T = TypeVar("T")
# Text that would mean a hook failed where the model or the user can see it.
HOOK_ERROR_SIGNS = ("hook error", "Traceback", "gastown_client", "hook.py")


def wait_for(check: Callable[[], T | None], timeout_s: float = 10.0) -> T:
    """``check()``'s first truthy result: the detached hooks land just after the client exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except ClientError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def new_id(title: str) -> str:
    """The id the fake ``bd`` gives an issue with this title."""
    return "gt-" + hashlib.md5(title.encode()).hexdigest()[:4]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def ended(client: Client, session: str, segment: int = 1) -> DigestView:
    """The digest of ``session``'s ``segment``, once the session's end has been applied."""

    def check() -> DigestView | None:
        wisp = client.wisp(session)
        if wisp.state == "open" or wisp.segment < segment:
            return None
        digest = client.digest(session)
        return digest if digest.segment == segment else None

    return wait_for(check)


def log_lines(town: Path, kind: str, session: str) -> list[dict[str, Any]]:
    _, lines = read_log(town)
    return [
        line
        for line in lines
        if line.get("type") == kind and line.get("payload", {}).get("session_id") == session
    ]


def shown_errors(model: ScriptedModel) -> list[str]:
    return [
        sign
        for request in model.requests
        for sign in HOOK_ERROR_SIGNS
        if sign in request.text_shown()
    ]


@pytest.fixture
def daemon_with_context(town: Path) -> Iterator[DaemonProcess]:
    (town / "settings" / "gastownd.toml").write_text(
        TEST_CONFIG + "[hooks]\ninject_context = true\n"
    )
    proc = DaemonProcess(town).wait_ready()
    yield proc
    assert proc.terminate() == 0, proc.log()


# ------------------------------------------------------------------ the work


# What 2.1.332 sends, per event (``PostToolUse`` of a subagent adds ``agent_id`` and
# ``agent_type``, of an MCP tool ``mcp_server``; with a model that has effort levels, the
# events of a turn add ``effort``); docs/hooks.md lists what each is and why
# the daemon reads or ignores it. A new client that renames or drops one of these fails here.
SENT_FIELDS = {
    "SessionStart": {"session_id", "transcript_path", "cwd", "hook_event_name", "source"},
    "UserPromptSubmit": {
        "session_id",
        "transcript_path",
        "cwd",
        "hook_event_name",
        "permission_mode",
        "prompt_id",
        "prompt",
    },
    "PostToolUse": {
        "session_id",
        "transcript_path",
        "cwd",
        "hook_event_name",
        "permission_mode",
        "prompt_id",
        "tool_name",
        "tool_input",
        "tool_response",
        "tool_use_id",
        "duration_ms",
    },
    "Stop": {
        "session_id",
        "transcript_path",
        "cwd",
        "hook_event_name",
        "permission_mode",
        "prompt_id",
        "stop_hook_active",
        "last_assistant_message",
        "background_tasks",
        "session_crons",
    },
    "SessionEnd": {
        "session_id",
        "transcript_path",
        "cwd",
        "hook_event_name",
        "prompt_id",
        "reason",
    },
}


def test_beads_git_and_gt_through_the_bash_tool(
    claude_bin: Path, town: Path, model: ScriptedModel, scratch: Path, daemon_proc: DaemonProcess
) -> None:
    claude = ClaudeCode(claude_bin, town, model, scratch, record_payloads=True)
    title = "Follow up on the flake"
    model.load(
        bash("bd close gt-101 --reason 'fixed the flake'"),
        bash(f"bd create --json '{title}' -p 2"),
        bash("ls -a"),
        bash("echo fixed > notes.txt && git add notes.txt && git commit -m 'Record the fix'"),
        bash("gt handoff -s 'gt-101 fixed; follow-up filed'"),
        text("All done."),
    )
    run = claude.run("Fix gt-101, file the follow-up, commit and hand off.")
    # Nothing on stderr: the client found nothing wrong in the settings install-hooks wrote.
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert run.result["result"] == "All done." and run.result["num_turns"] == 6
    session = run.session_id
    sha = git(claude.workdir, "rev-parse", "--short=7", "HEAD")

    with daemon_proc.client() as client:
        digest = ended(client, session)
        closed = client.attribution("gt-101").records
        created = client.attribution(new_id(title)).records
        cv = client.cv(ACTOR, verify=True)
        sessions = client.sessions().sessions
    assert digest.counts == {
        "prompt": 1,
        "issue_closed": 1,
        "issue_created": 1,
        "commit": 1,
        "handoff": 1,
        "turn": 1,
    }
    assert list(digest.issues_closed) == ["gt-101"]
    assert list(digest.issues_created) == [new_id(title)]
    assert [(c.sha, c.subject) for c in digest.commits] == [(sha, "Record the fix")]
    assert [h.subject for h in digest.handoffs] == ["gt-101 fixed; follow-up filed"]
    assert (digest.actor, digest.tmux_session, digest.end_reason) == (ACTOR, TMUX, "other")
    assert digest.cwd == str(claude.workdir)
    assert [(r.session_id, r.action, r.rule) for r in closed] == [(session, "closed", "hook")]
    assert [(r.session_id, r.action, r.rule) for r in created] == [(session, "created", "hook")]
    assert cv.verified is True and [d.session_id for d in cv.digests] == [session]
    assert [s.session_id for s in sessions] == [session]
    assert len(log_lines(town, "session_start", session)) == 1

    # The model saw the real tools' output: bd's JSON, gt's handoff.
    results = json.dumps(model.turns[-1].tool_results())
    assert new_id(title) in results and "Handing off" in results
    assert shown_errors(model) == [] and model.connects == []

    # What the client really sent: every field gastownd reads, under its name.
    sent: dict[str, set[str]] = {}
    for payload in claude.payloads():
        if payload.get("tool_name", "Bash") == "Bash":
            sent.setdefault(payload["hook_event_name"], set()).update(payload)
    for event, fields in SENT_FIELDS.items():
        assert sent.get(event, set()) - {"effort"} == fields, (event, sent.get(event))
    bash_calls = [p for p in claude.payloads() if p["hook_event_name"] == "PostToolUse"]
    assert [p["tool_input"]["command"].split()[0] for p in bash_calls] == [
        "bd",
        "bd",
        "ls",
        "echo",
        "gt",
    ]
    assert all(set(p["tool_response"]) >= {"stdout", "stderr", "interrupted"} for p in bash_calls)


def test_a_beads_mcp_server_s_tools(
    claude: ClaudeCode, model: ScriptedModel, daemon_proc: DaemonProcess
) -> None:
    title = "Filed over MCP"
    model.load(
        tool("mcp__beads__close", {"issue_id": "gt-501", "reason": "done"}),
        tool("mcp__beads__create", {"title": title, "priority": 2}),
        tool("mcp__beads__show", {"issue_id": "gt-502"}),
        text("Closed and filed."),
    )
    run = claude.run("Close gt-501 with the beads tools.", *claude.mcp_args())
    assert run.returncode == 0, run.stderr
    # 2.1.332 offers MCP tools as deferred tools, named in the conversation.
    assert "mcp__beads__close" in json.dumps(model.turns[0].body)
    with daemon_proc.client() as client:
        digest = ended(client, run.session_id)
        closed = client.attribution("gt-501").records
        shown = client.attribution("gt-502").records
    assert list(digest.issues_closed) == ["gt-501"]
    assert list(digest.issues_created) == [new_id(title)]
    assert [(r.session_id, r.action) for r in closed] == [(run.session_id, "closed")]
    assert shown == []
    assert "gt-501" in json.dumps(model.turns[1].tool_results())


def test_a_subagent_s_work_is_the_parent_session_s(
    claude: ClaudeCode, model: ScriptedModel, daemon_proc: DaemonProcess
) -> None:
    task = {
        "description": "Close the issue",
        "prompt": "Close gt-301 with bd.",
        "subagent_type": "general-purpose",
        "run_in_background": False,
    }
    model.load(
        tool("Agent", task),
        text("The subagent closed it."),
        subagent=(bash("bd close gt-301"), text("Closed gt-301.")),
    )
    run = claude.run("Delegate gt-301.")
    assert run.returncode == 0, run.stderr
    assert run.result["result"] == "The subagent closed it."
    sub = [r for r in model.turns if r.subagent]
    assert len(sub) == 2 and "Close gt-301 with bd." in sub[0].text_shown()
    with daemon_proc.client() as client:
        digest = ended(client, run.session_id)
        closed = client.attribution("gt-301").records
        sessions = client.sessions().sessions
    assert [(r.session_id, r.action) for r in closed] == [(run.session_id, "closed")]
    assert list(digest.issues_closed) == ["gt-301"]
    assert [s.session_id for s in sessions] == [run.session_id]


# ------------------------------------------------------------- the lifecycle


def test_resume_continue_compact_and_clear(
    claude: ClaudeCode, model: ScriptedModel, daemon_proc: DaemonProcess, town: Path
) -> None:
    model.load(bash("bd close gt-201"), text("Closed."))
    first = claude.run("Close gt-201.")
    session = first.session_id
    with daemon_proc.client() as client:
        assert ended(client, session, 1).issues_closed == ["gt-201"]

        model.load(text("Resumed."))
        assert claude.run("Go on.", "--resume", session).session_id == session
        assert ended(client, session, 2).counts == {"prompt": 1, "turn": 1}
        assert client.wisp(session).source == "resume"

        model.load(text("Continued."))
        assert claude.run("Go on again.", "--continue").session_id == session
        ended(client, session, 3)

        # /compact: PreCompact (manual), then SessionStart with source compact, in one segment.
        model.load(text("<summary>Closed gt-201.</summary>"))
        assert claude.run("/compact", "--resume", session).session_id == session
        compacted = ended(client, session, 4)
        assert compacted.counts == {"compaction": 1}

        # /clear: the old session ends (reason clear), a new one starts (source clear).
        cleared = claude.run("/clear", "--resume", session)
        successor = cleared.session_id
        assert successor != session
        assert ended(client, session, 5).end_reason == "clear"
        new = ended(client, successor)
        sessions = {s.session_id: s for s in client.sessions().sessions}
        cv = client.cv(ACTOR, verify=True)
        wisp = client.wisp(successor)
    assert set(sessions) == {session, successor}
    assert sessions[session].segments == 5
    assert wisp.source == "clear" and new.actor == ACTOR
    assert cv.verified is True and len(cv.digests) == 6
    assert len(log_lines(town, "session_start", session)) == 1
    assert len(log_lines(town, "session_start", successor)) == 1
    # The resumed session's model saw the first session's conversation.
    assert (
        "Close gt-201." in model.turns[-1].text_shown()
        or "Closed gt-201" in model.turns[-1].text_shown()
    )


def test_an_automatic_compaction_mid_session(
    claude: ClaudeCode, model: ScriptedModel, daemon_proc: DaemonProcess, town: Path
) -> None:
    # The first reply claims a conversation near the (shrunk) context window: before its next
    # request the client summarises (the second reply), then goes on with the work.
    model.load(
        filling(bash("bd close gt-211")),
        text("<analysis>Closing issues.</analysis><summary>Closed gt-211.</summary>"),
        bash("bd close gt-212"),
        text("Done."),
    )
    run = claude.run("Close gt-211 and gt-212.", CLAUDE_CODE_AUTO_COMPACT_WINDOW="200000")
    assert run.returncode == 0 and run.result["result"] == "Done.", run.stderr
    assert "Closed gt-211." in model.turns[2].text_shown()
    with daemon_proc.client() as client:
        digest = ended(client, run.session_id)
        wisp = client.wisp(run.session_id)
    assert wisp.segment == 1
    assert digest.counts == {"prompt": 1, "issue_closed": 2, "compaction": 1, "turn": 1}
    assert "[compaction]** " in digest.summary and " auto\n" in digest.summary
    assert list(digest.issues_closed) == ["gt-211", "gt-212"]
    assert len(log_lines(town, "session_start", run.session_id)) == 1


def test_the_predecessor_note_reaches_the_model(
    claude: ClaudeCode, model: ScriptedModel, daemon_with_context: DaemonProcess
) -> None:
    model.load(bash("bd close gt-7 && git commit --allow-empty -m 'Close gt-7'"), text("Done."))
    first = claude.run("Close gt-7.")
    with daemon_with_context.client() as client:
        ended(client, first.session_id)
    model.load(text("Hello."))
    second = claude.run("What did my predecessor do?")
    assert second.returncode == 0, second.stderr
    shown = model.turns[-1].text_shown()
    assert f"[gastownd] Your predecessor as {ACTOR} (session {first.session_id})" in shown
    assert "Issues closed: gt-7" in shown and "Close gt-7" in shown
    assert f"gastownctl seance {first.session_id[:8]}" in shown


def test_no_note_without_inject_context(
    claude: ClaudeCode, model: ScriptedModel, daemon_proc: DaemonProcess
) -> None:
    model.load(bash("bd close gt-8"), text("Done."))
    first = claude.run("Close gt-8.")
    with daemon_proc.client() as client:
        ended(client, first.session_id)
    model.load(text("Hello."))
    claude.run("Anything from before?")
    assert "[gastownd]" not in model.turns[-1].text_shown()
    assert first.session_id not in model.turns[-1].text_shown()


# ------------------------------------------------------------------ failures


def test_the_daemon_down_for_the_whole_session(
    claude_bin: Path, claude: ClaudeCode, model: ScriptedModel, town: Path, scratch: Path
) -> None:
    script = (
        bash("bd close gt-601"),
        bash("git commit --allow-empty -m 'While the daemon was down'"),
        text("Done."),
    )
    bare = ClaudeCode(claude_bin, town, model, scratch / "bare", hooks=False)
    model.load(*script)
    baseline = bare.run("Close gt-601.")
    model.load(*script)
    run = claude.run("Close gt-601.")
    assert run.returncode == 0 and run.result["result"] == "Done.", run.stderr

    def spooled() -> list[dict[str, Any]] | None:
        calls = [
            json.loads(line)
            for spool in (town / ".gastownd" / "spool").glob("hook-*.jsonl")
            for line in spool.read_text().splitlines()
        ]
        return calls if len(calls) == 6 else None

    # Every call is spooled (the last ones by detached hooks, just after the client exits);
    # none may cost more than the hook's 300 ms budget.
    calls = wait_for(spooled)
    assert sorted(c["payload"]["hook_event_name"] for c in calls) == sorted(
        ["SessionStart", "UserPromptSubmit", "PostToolUse", "PostToolUse", "Stop", "SessionEnd"]
    )
    assert run.elapsed_s <= baseline.elapsed_s + 0.3 * len(calls) + 0.5
    assert shown_errors(model) == []

    daemon = DaemonProcess(town).wait_ready()
    try:
        with daemon.client() as client:
            digest = ended(client, run.session_id)
            closed = client.attribution("gt-601").records
    finally:
        assert daemon.terminate() == 0, daemon.log()
    assert digest.counts == {"prompt": 1, "issue_closed": 1, "commit": 1, "turn": 1}
    assert digest.commits[0].subject == "While the daemon was down"
    assert [(r.session_id, r.action) for r in closed] == [(run.session_id, "closed")]
    assert not list((town / ".gastownd" / "spool").glob("*.jsonl"))


def test_the_model_failing_mid_session(
    claude: ClaudeCode, model: ScriptedModel, daemon_proc: DaemonProcess, town: Path
) -> None:
    # A 500 then a 200; later a 429 storm, then the API overloaded: the client retries.
    model.load(
        error(500),
        bash("bd close gt-401"),
        error(429),
        error(429),
        error(529),
        bash("bd close gt-402"),
        text("Done."),
    )
    run = claude.run("Close gt-401 and gt-402.", CLAUDE_CODE_OVERLOADED_RETRY_BASE_DELAY_MS="50")
    assert run.returncode == 0 and run.result["result"] == "Done.", run.stderr
    assert len(model.turns) == 7
    with daemon_proc.client() as client:
        digest = ended(client, run.session_id)
    assert digest.counts == {"prompt": 1, "issue_closed": 2, "turn": 1}

    # A model that keeps failing: the client gives up, the session still ends whole.
    model.load(error(500), error(500))
    failed = claude.run("Close gt-403.", CLAUDE_CODE_MAX_RETRIES="1")
    assert failed.returncode != 0 and failed.result.get("is_error") is True
    with daemon_proc.client() as client:
        broken = ended(client, failed.session_id)
        cv = client.cv(ACTOR, verify=True)
        open_wisps = [s for s in client.sessions().sessions if s.state == "open"]
    assert broken.counts == {"prompt": 1} and broken.end_reason == "other"
    assert cv.verified is True and len(cv.digests) == 2
    assert open_wisps == []
    assert len(log_lines(town, "session_end", failed.session_id)) == 1
