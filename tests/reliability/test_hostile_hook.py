"""Hostile hook payloads through the real hook process and the real daemon.

Deep, huge, cut-short, truncated and non-UTF-8 stdin: the hook exits 0 within
its budget, and the call is either applied (cut to fit, ``tool_input`` kept,
so its ``bd close`` is attributed) or leaves a log line in the daemon's log
(``hook_call_cut``, ``hook_call_lost``, ``hook_rejected``). Never a lost call
without a trace, never a daemon that stops answering.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gastown_client import hook
from tests.conftest import DaemonProcess, run_ctl
from tests.integration.test_hooks import SESSION, bash, payload, run_hook, wait_until

# The hook holds itself to 300 ms; a loaded 2-CPU machine gets slack (this is
# not a benchmark: the figures are in docs/hooks.md).
HOOK_BUDGET_S = 0.3
ASSERT_BUDGET_S = 2.0


def timed_hook(town: Path, raw: bytes, *args: str) -> float:
    started = time.perf_counter()
    result = run_hook(town, raw, *args)
    elapsed = time.perf_counter() - started
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    return elapsed


def with_response(issue: str, response: bytes) -> bytes:
    """A Bash ``bd close`` call whose ``tool_response`` is ``response``, spliced raw."""
    head = json.dumps(bash(f"bd close {issue}")).encode()
    cut = head.index(b'"tool_response"')
    return head[:cut] + b'"tool_response":' + response + b',"tool_use_id":"toolu_02"}'


def attributed(town: Path, issue: str) -> bool:
    shown = run_ctl(town, "attribution", issue)
    return shown.returncode == 0 and SESSION in shown.stdout


HOSTILE = {
    "deep": with_response("gt-deep", b"[" * 100_000 + b"]" * 100_000),
    "deep-objects": with_response("gt-deepobj", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    "short-strings": with_response("gt-short", json.dumps(["ab"] * 600_000).encode()),
    "past-the-cap": with_response("gt-cap", b'"' + b"y" * hook.MAX_STDIN + b'"'),
}
ISSUE = {"deep": "gt-deep", "deep-objects": "gt-deepobj", "short-strings": "gt-short"}
ISSUE["past-the-cap"] = "gt-cap"
WHY = {
    "deep": "too deep",
    "deep-objects": "too deep",
    "short-strings": "too big",
    "past-the-cap": "cut short",
}


@pytest.mark.parametrize("detached", [False, True])
def test_hostile_calls_are_cut_attributed_and_logged(
    daemon_proc: DaemonProcess, town: Path, detached: bool
) -> None:
    assert run_hook(town, json.dumps(payload("SessionStart", source="startup")).encode())
    for case in sorted(HOSTILE):
        elapsed = timed_hook(town, HOSTILE[case], *(["--async"] if detached else []))
        assert elapsed < ASSERT_BUDGET_S, case
    for case in sorted(HOSTILE):
        wait_until(lambda case=case: attributed(town, ISSUE[case]))

    def cut() -> list[dict[str, object]]:
        rows = [json.loads(row) for row in daemon_proc.log().splitlines() if "hook_call" in row]
        return rows if len(rows) >= len(HOSTILE) else []

    rows = wait_until(cut)
    assert all(row["event"] == "hook_call_cut" and row["session_id"] == SESSION for row in rows)
    assert sorted(row["reason"] for row in rows) == sorted(WHY.values())
    with daemon_proc.client() as client:
        client.ping()


@pytest.mark.parametrize(
    "raw",
    [
        b'{"hook_event_name":"Stop","session_id":"' + SESSION.encode() + b'","x":[1,2',
        b'{"hook_event_name":"Stop","session_id":"' + SESSION.encode() + b'","x":"\x00\\ud800"}',
    ],
    ids=["truncated", "nul-and-lone-surrogate"],
)
def test_a_call_the_daemon_refuses_leaves_a_log_line(
    daemon_proc: DaemonProcess, town: Path, raw: bytes
) -> None:
    assert timed_hook(town, raw) < ASSERT_BUDGET_S
    wait_until(lambda: "hook_call_lost" in daemon_proc.log())
    line = next(
        json.loads(row) for row in daemon_proc.log().splitlines() if "hook_call_lost" in row
    )
    assert line["reason"].startswith("refused: bad_request")
    assert (line["hook_event"], line["session_id"]) == ("Stop", SESSION)
    with daemon_proc.client() as client:
        client.ping()


def test_invalid_utf8_in_a_value_the_daemon_never_reads_is_applied(
    daemon_proc: DaemonProcess, town: Path
) -> None:
    raw = b'{"hook_event_name":"Stop","session_id":"' + SESSION.encode() + b'","x":"\xff\xfe"}'
    assert timed_hook(town, raw) < ASSERT_BUDGET_S
    with daemon_proc.client() as client:
        assert [step.kind for step in client.wisp(SESSION).steps] == ["turn"]


def test_a_deep_call_spooled_while_the_daemon_was_down_is_applied_and_logged(town: Path) -> None:
    assert timed_hook(town, json.dumps(payload("SessionStart", source="startup")).encode())
    assert timed_hook(town, HOSTILE["deep"]) < ASSERT_BUDGET_S
    proc = DaemonProcess(town).wait_ready()
    try:
        wait_until(lambda: attributed(town, "gt-deep"))
        wait_until(lambda: "hook_call_cut" in proc.log())
        assert "spooled_request_failed" not in proc.log()
    finally:
        assert proc.terminate() == 0


# Bytes that make JSON hard: brackets, quotes, escapes, invalid UTF-8, NUL, BOM, surrogates.
PIECES = st.sampled_from(
    [
        b"{",
        b"}",
        b"[",
        b"]",
        b'"',
        b"\\",
        b":",
        b",",
        b"\xff",
        b"\x00",
        b"\xef\xbb\xbf",
        b'"\\ud800"',
        b"1e400",
        b"18446744073709551616",
        b'"tool_input":',
        b"\n",
        b"a" * 1000,
    ]
)


def test_random_hostile_stdin_exits_0_and_the_daemon_keeps_answering(
    daemon_proc: DaemonProcess, town: Path, stress: bool
) -> None:
    @settings(
        max_examples=200 if stress else 12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(parts=st.lists(PIECES, max_size=40), repeat=st.sampled_from([1, 10, 1_000, 50_000]))
    def check(parts: list[bytes], repeat: int) -> None:
        raw = b'{"hook_event_name":"Stop",' + b"".join(parts) * repeat
        assert timed_hook(town, raw[: 2 * hook.MAX_STDIN]) < ASSERT_BUDGET_S
        with daemon_proc.client() as client:
            client.ping()

    check()


def test_a_flood_of_notes_is_logged_once_per_pass_and_counted(
    daemon_proc: DaemonProcess, town: Path
) -> None:
    note = json.dumps({"lost": True, "reason": "refused: too_large: frame", "bytes": 9}).encode()
    lines = [note] * 49 + [b"\xff not a note {{{" + b"[" * 10_000]
    spool = town / ".gastownd" / "spool"
    (spool / f"note-{os.getuid()}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    wait_until(lambda: "hook_notes_suppressed" in daemon_proc.log())
    rows = [json.loads(row) for row in daemon_proc.log().splitlines() if '"hook_' in row]
    assert sum(row["event"] == "hook_call_lost" for row in rows) == 20
    assert next(row for row in rows if row["event"] == "hook_notes_suppressed")["notes"] == 30
    assert not list(spool.glob("*note*"))
    with daemon_proc.client() as client:
        client.ping()
