"""Claude Code hook payloads mapped to session effects, without a daemon."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gastownd.core.hookmap import (
    STEP_OF_ACTION,
    PlannedAttribution,
    PlannedStep,
    decode_payload,
    plan_hook,
    predecessor_context,
)
from tests.attribution_forms import FORMS, Form

ENV = {"GT_ROLE": "gastown/polecats/nux", "GT_SESSION": "gt-nux"}


def plan(event: str, env: dict[str, str] = ENV, **fields: Any):  # type: ignore[no-untyped-def]
    raw = msgspec.json.encode({"session_id": "s-1", "hook_event_name": event, **fields})
    return plan_hook(decode_payload(raw), env, "/tmp", 4242)


def bash(command: str, stdout: str = "", **response: Any):  # type: ignore[no-untyped-def]
    return plan(
        "PostToolUse",
        tool_name="Bash",
        tool_input={"command": command},
        tool_response={"stdout": stdout, "stderr": "", **response},
    )


@pytest.mark.parametrize("source", ["startup", "resume", "clear", "compact"])
def test_session_start_sources(source: str) -> None:
    result = plan("SessionStart", source=source)
    assert (result.start, result.actor, result.tmux_session, result.pid) == (
        source,
        "gastown/polecats/nux",
        "gt-nux",
        4242,
    )


def test_end_compaction_turn_and_prompt_counters() -> None:
    assert plan("SessionEnd", reason="logout").end_reason == "logout"
    assert plan("PreCompact", trigger="auto").steps == [PlannedStep("compaction", "auto")]
    assert plan("Stop").steps == [PlannedStep("turn")]
    prompt = plan("UserPromptSubmit", prompt="very secret")
    assert prompt.steps == [PlannedStep("prompt")]
    assert "very secret" not in repr(prompt)


def test_actor_falls_back_to_bd_actor_then_unknown() -> None:
    assert plan("Stop", env={"BD_ACTOR": "mayor"}).actor == "mayor"
    assert plan("Stop", env={}).actor == "unknown"


def test_no_session_id_anywhere_is_ignored() -> None:
    raw = msgspec.json.encode({"hook_event_name": "Stop"})
    assert plan_hook(decode_payload(raw), {}, None, None).ignored
    with_env = plan_hook(decode_payload(raw), {"CLAUDE_CODE_SESSION_ID": "s-9"}, None, None)
    assert with_env.session_id == "s-9" and with_env.ignored is None


def test_unknown_events_and_other_tools_are_ignored() -> None:
    assert plan("Notification", message="hi").ignored
    assert plan("PostToolUse", tool_name="Edit", tool_input={}).ignored
    assert bash("ls -la").ignored
    assert bash("git status").ignored


def test_git_commit_reads_sha_and_subject_from_the_output() -> None:
    result = bash("cd r && git commit -am 'Fix it'", "[main 1a2b3c4] Fix it\n 1 file changed")
    assert result.steps == [PlannedStep("commit", "1a2b3c4", {"subject": "Fix it"})]
    root = bash("git -C r commit -m first", "[main (root-commit) abcdef0] first\n")
    assert root.steps == [PlannedStep("commit", "abcdef0", {"subject": "first"})]
    quiet = bash("git commit -q -m x")
    assert quiet.commit_needs_lookup and quiet.ignored is None


def test_failed_commands_record_nothing() -> None:
    assert bash("git commit -m x", "[main 1a2b3c4] x", exit_code=1).ignored
    assert bash("bd close gt-1", interrupted=True).ignored


def test_bd_close_update_and_create() -> None:
    closed = bash("bd close gt-1 gt-2 --reason 'done; really'")
    assert [s.ref for s in closed.steps] == ["gt-1", "gt-2"]
    assert closed.attributions == [
        PlannedAttribution("gt-1", "closed"),
        PlannedAttribution("gt-2", "closed"),
    ]
    assert bash("bd update gt-3 --status closed").attributions == [
        PlannedAttribution("gt-3", "closed")
    ]
    assert bash("bd update gt-3 --status=closed").steps == [PlannedStep("issue_closed", "gt-3")]
    assert bash("bd update gt-4 --status in_progress").ignored
    created = bash("bd create --title 'New thing' -p 2", "✓ Created issue: gt-9\n")
    assert created.steps == [PlannedStep("issue_created", "gt-9")]
    assert bash("bd create --title x", "error: no db\n").ignored


def test_gt_done_and_handoff_keep_quoted_separators_in_their_words() -> None:
    handoff = bash("gt handoff -s 'gt-300 fixed; gt-301 needs triage' && gt done")
    assert handoff.steps == [
        PlannedStep("handoff", None, {"subject": "gt-300 fixed; gt-301 needs triage"}),
        PlannedStep("done"),
    ]


def test_env_prefixes_and_sudo_are_skipped() -> None:
    assert bash("FOO=1 BAR=2 bd close gt-5").attributions == [PlannedAttribution("gt-5", "closed")]
    assert bash("sudo bd close gt-6").attributions == [PlannedAttribution("gt-6", "closed")]


def test_predecessor_context_is_short_and_names_the_seance_command() -> None:
    text = predecessor_context(
        actor="gastown/crew/joe",
        started_at="2026-11-24T00:00:00Z",
        ended_at="2026-11-25T00:00:00Z",
        end_reason="logout",
        issues_closed=[f"gt-{i}" for i in range(50)],
        commits=["abc Fix"] * 50,
        handoff_subject="x" * 2000,
        session_id="6f1c2d3e-4a5b",
    )
    assert len(text.encode()) <= 1024
    assert "gastownctl seance 6f1c2d3e" in text or text.endswith("...")


def test_predecessor_known_only_from_the_log_is_named_with_its_start() -> None:
    text = predecessor_context(
        actor="gastown/crew/joe",
        session_id="6f1c2d3e-4a5b",
        started_at="2026-11-24T00:00:00Z",
        ended_at=None,
        end_reason=None,
        topic="patrol",
    )
    assert "started 2026-11-24T00:00:00Z; no end was recorded" in text
    assert "Topic: patrol" in text and "gastownctl seance 6f1c2d3e" in text


@pytest.mark.parametrize("form", FORMS, ids=lambda form: form.name)
def test_every_form_agents_use_is_attributed_and_no_decoy_is(form: Form) -> None:
    result = plan(
        "PostToolUse",
        tool_name=form.tool_name,
        tool_input=form.tool_input,
        tool_response=form.tool_response,
    )
    found = {(a.issue, a.action) for a in result.attributions}
    assert found == form.expected
    steps = {(s.ref, s.kind) for s in result.steps if s.kind.startswith("issue_")}
    assert steps == {(issue, STEP_OF_ACTION[action]) for issue, action in form.expected}
