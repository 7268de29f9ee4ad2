"""The real gastown-hook against the real daemon: Claude-shaped payloads become wisps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gastown_client import hook
from gastown_client.protocol import Hook
from tests.conftest import DaemonProcess
from tests.integration.test_eventlog import gt_append, log_lines

HOOK_CMD = [sys.executable, "-I", "-S", str(Path(hook.__file__).resolve())]
SESSION = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
NEXT = "7a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
ACTOR = "gastown/polecats/nux"


def payload(event: str, session: str = SESSION, **extra: Any) -> dict[str, Any]:
    """A hook payload shaped as Claude Code sends it (Gas Town reference, section 4)."""
    return {
        "session_id": session,
        "transcript_path": f"/home/u/.claude/projects/-tmp/{session}.jsonl",
        "cwd": "/tmp",
        "hook_event_name": event,
        "permission_mode": "default",
        **extra,
    }


def bash(command: str, stdout: str = "", session: str = SESSION) -> dict[str, Any]:
    return payload(
        "PostToolUse",
        session,
        tool_name="Bash",
        tool_use_id="toolu_01",
        tool_input={"command": command, "description": "run"},
        tool_response={"stdout": stdout, "stderr": "", "interrupted": False, "isImage": False},
    )


def run_hook(
    town: Path, data: dict[str, Any] | bytes, *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
        "GT_TOWN_ROOT": str(town),
        "GT_ROLE": ACTOR,
        "GT_SESSION": "gt-nux",
        **(env_extra or {}),
    }
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return subprocess.run([*HOOK_CMD, *args], input=raw, capture_output=True, env=env, timeout=10)


def wait_until(check: Any, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_a_whole_session_through_hooks(daemon_proc: DaemonProcess, town: Path) -> None:
    calls = [
        payload("SessionStart", source="startup", model="claude-opus"),
        payload("UserPromptSubmit", prompt="secret prompt text that must never be stored"),
        bash(
            "cd repo && git commit -am 'Fix the frobnicator'",
            "[main 1a2b3c4d] Fix the frobnicator\n 1 file changed, 2 insertions(+)",
        ),
        bash("bd close gt-101 gt-102 --reason done"),
        bash("bd update gt-103 --status closed"),
        bash("bd update gt-104 --status in_progress"),
        bash("bd create --title 'Follow-up' -p 2", "✓ Created issue: gt-200\n"),
        bash("ls -la"),
        payload("PreCompact", trigger="auto", custom_instructions=""),
        payload("SessionStart", source="compact"),
        payload("Stop", stop_hook_active=False),
        bash("gt handoff -s 'over to the next one'"),
        bash("gt done"),
        payload("SessionEnd", reason="prompt_input_exit"),
    ]
    for call in calls:
        result = run_hook(town, call)
        assert result.returncode == 0 and result.stdout == b"" and result.stderr == b""
    with daemon_proc.client() as client:
        digest = client.digest(SESSION)
        attribution = client.attribution("gt-101")
        created = client.attribution("gt-200")
        untouched = client.attribution("gt-104")
    assert digest.end_reason == "prompt_input_exit"
    assert digest.counts == {
        "prompt": 1,
        "commit": 1,
        "issue_closed": 3,
        "issue_created": 1,
        "compaction": 1,
        "turn": 1,
        "handoff": 1,
        "done": 1,
    }
    assert [(c.sha, c.subject) for c in digest.commits] == [("1a2b3c4d", "Fix the frobnicator")]
    assert list(digest.issues_closed) == ["gt-101", "gt-102", "gt-103"]
    assert list(digest.issues_created) == ["gt-200"]
    assert digest.actor == ACTOR and digest.tmux_session == "gt-nux"
    assert [(r.session_id, r.action, r.rule) for r in attribution.records] == [
        (SESSION, "closed", "hook")
    ]
    assert [r.action for r in created.records] == ["created"]
    assert untouched.records == []
    stored = (town / ".gastownd" / "gastownd.db").read_bytes()
    assert b"secret prompt text" not in stored
    assert b"secret prompt text" not in (town / ".events.jsonl").read_bytes()
    types = [line["type"] for line in log_lines(town)]
    assert types == ["session_start", "session_end"]


def test_commit_sha_is_read_from_the_repository_when_the_output_lacks_it(
    daemon_proc: DaemonProcess, town: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f").write_text("x")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Quiet commit"], check=True)
    sha = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    run_hook(town, payload("SessionStart", source="startup"))
    call = bash("git commit -q -m 'Quiet commit'")
    call["cwd"] = str(repo)
    assert run_hook(town, call).returncode == 0
    with daemon_proc.client() as client:
        [step] = [s for s in client.wisp(SESSION).steps if s.kind == "commit"]
    assert step.ref == sha and step.payload == {"subject": "Quiet commit"}


def test_clear_ends_the_predecessor_and_links_the_new_session(
    daemon_proc: DaemonProcess, town: Path
) -> None:
    run_hook(town, payload("SessionStart", source="startup"))
    run_hook(town, payload("SessionEnd", reason="clear"))
    run_hook(town, payload("SessionStart", NEXT, source="clear"))
    with daemon_proc.client() as client:
        assert client.digest(SESSION).end_reason == "clear"
        new = client.wisp(NEXT)
    assert new.state == "open" and new.source == "clear"
    # SessionEnd(clear) is missing sometimes: the start alone must still end the parent.
    third = "8b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"
    run_hook(town, payload("SessionStart", third, source="clear"))
    with daemon_proc.client() as client:
        assert client.digest(NEXT).end_reason == "clear"
        assert client.wisp(third).parent_session == NEXT


def test_resume_continues_and_unknown_events_are_ignored(
    daemon_proc: DaemonProcess, town: Path
) -> None:
    run_hook(town, payload("SessionStart", source="startup"))
    run_hook(town, payload("SessionStart", source="resume"))
    run_hook(town, payload("Notification", message="hi"))
    run_hook(town, payload("PreToolUse", tool_name="Bash", tool_input={"command": "ls"}))
    run_hook(town, b"this is not json")
    run_hook(town, b"")
    with daemon_proc.client() as client:
        wisp = client.wisp(SESSION)
    assert wisp.state == "open" and wisp.segment == 1 and wisp.steps == []
    assert "hook_rejected" in daemon_proc.log()


def test_a_step_delivered_after_the_end_it_preceded_opens_no_segment(
    daemon_proc: DaemonProcess, town: Path
) -> None:
    run_hook(town, payload("SessionStart", source="startup"))
    run_hook(town, bash("bd close gt-301"))
    tool_ran_at = time.time()  # an async PostToolUse from here is delivered after SessionEnd
    run_hook(town, payload("SessionEnd", reason="logout"))
    late = bash("bd close gt-302 && git commit -am late", "[main 9f8e7d6c] late")
    with daemon_proc.client() as client:
        result = client.call(
            Hook(
                payload=msgspec.Raw(json.dumps(late).encode()),
                env={"GT_ROLE": ACTOR, "GT_SESSION": "gt-nux"},
                cwd="/tmp",
                at=tool_ran_at,
            )
        )
        wisp = client.wisp(SESSION)
        digest = client.digest(SESSION)
        closed = client.attribution("gt-302")
        [row] = client.sessions(limit=10).sessions
    assert result.handled == "PostToolUse"
    assert (wisp.state, wisp.segment) == ("squashed", 1)  # not reopened as segment 2
    assert (digest.segment, digest.issues_closed) == (1, ["gt-301"])  # the digest is final
    # What the late call changed is attributed to the ended segment, its digest linked.
    assert [(r.session_id, r.action, r.digest_id) for r in closed.records] == [
        (SESSION, "closed", digest.digest_id)
    ]
    assert (row.session_id, row.state, row.segments) == (SESSION, "squashed", 1)
    assert [line["type"] for line in log_lines(town)] == ["session_start", "session_end"]
    assert "hook_steps_after_end" in daemon_proc.log()


def test_a_session_whose_end_never_comes_is_ended_by_its_death(
    daemon_proc: DaemonProcess, town: Path
) -> None:
    run_hook(town, payload("SessionStart", source="startup"))
    run_hook(town, payload("Stop"))
    gt_append(
        town,
        {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1)),
            "source": "gt",
            "type": "session_death",
            "actor": "gastown/witness",
            "payload": {"session": "gt-nux", "agent": ACTOR, "reason": "killed"},
            "visibility": "feed",
        },
    )
    with daemon_proc.client() as client:
        digest = wait_until(lambda: client.digest(SESSION))
    assert digest.end_reason == "killed" and digest.counts == {"turn": 1}


def test_daemon_down_spools_fast_and_start_applies_each_once_in_order(town: Path) -> None:
    calls = [
        payload("SessionStart", source="startup"),
        payload("UserPromptSubmit", prompt="p"),
        bash("bd close gt-7"),
        payload("Stop"),
        payload("SessionEnd", reason="logout"),
    ]
    for call in calls:
        started = time.monotonic()
        result = run_hook(town, call)
        assert result.returncode == 0 and result.stdout == b""
        assert time.monotonic() - started < 1.0  # the hook's own bound is 300 ms
    spooled = list((town / ".gastownd" / "spool").iterdir())
    assert len(spooled) == 1 and len(spooled[0].read_bytes().splitlines()) == 5
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            digest = wait_until(lambda: client.digest(SESSION))
            assert digest.end_reason == "logout"
            assert digest.counts == {"prompt": 1, "issue_closed": 1, "turn": 1}
            assert [s.kind for s in []] == []
            assert [r.action for r in client.attribution("gt-7").records] == ["closed"]
        wait_until(lambda: not list((town / ".gastownd" / "spool").iterdir()))
        assert [line["type"] for line in log_lines(town)] == ["session_start", "session_end"]
    finally:
        assert proc.terminate() == 0
    # A restart applies nothing twice.
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.cv(ACTOR).total == 1
    finally:
        assert proc.terminate() == 0


def test_spool_written_while_running_is_picked_up(daemon_proc: DaemonProcess, town: Path) -> None:
    line = (
        b'{"op":"hook","id":1,"payload":'
        + json.dumps(payload("SessionStart", source="startup")).encode()
        + b',"env":{"GT_ROLE":"'
        + ACTOR.encode()
        + b'"},"spooled_at":1.0}\n'
    )
    spool = town / ".gastownd" / "spool" / "hook-0.jsonl"
    fd = os.open(spool, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, line)
    os.close(fd)
    with daemon_proc.client() as client:
        wisp = wait_until(lambda: client.wisp(SESSION))
    assert wisp.actor == ACTOR


@pytest.mark.parametrize("inject", [True, False])
def test_predecessor_context_is_printed_on_startup_when_enabled(town: Path, inject: bool) -> None:
    (town / "settings" / "gastownd.toml").write_text(
        f"[retention]\nenabled = false\n[hooks]\ninject_context = {str(inject).lower()}\n"
    )
    proc = DaemonProcess(town).wait_ready()
    try:
        run_hook(town, payload("SessionStart", source="startup"))
        run_hook(town, bash("bd close gt-55"))
        run_hook(town, bash("gt handoff -s 'finish the frobnicator'"))
        run_hook(town, payload("SessionEnd", reason="logout"))
        result = run_hook(town, payload("SessionStart", NEXT, source="startup"))
        assert result.returncode == 0
        text = result.stdout.decode()
        if not inject:
            assert text == ""
            return
        assert len(result.stdout) <= 1024
        assert SESSION in text and "gt-55" in text and "logout" in text
        assert "finish the frobnicator" in text
        assert f"gastownctl seance {SESSION[:8]}" in text
    finally:
        assert proc.terminate() == 0
