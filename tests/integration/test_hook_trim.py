"""An oversized hook call is trimmed by the hook, not dropped: its steps and attributions count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, run_ctl
from tests.integration.test_hooks import SESSION, bash, payload, run_hook, wait_until


@pytest.mark.parametrize("detached", [False, True])
def test_a_3_mb_post_tool_use_is_trimmed_and_its_bd_close_attributed(
    daemon_proc: DaemonProcess, town: Path, detached: bool
) -> None:
    issue = "gt-trim-async" if detached else "gt-trim"
    assert run_hook(town, payload("SessionStart", source="startup")).returncode == 0
    output = "".join(
        f'{n:08d} a line of a big log, with ünïcödé and "quotes"\n' for n in range(50_000)
    )
    call = json.dumps(bash(f"bd close {issue} && cat big.log", output)).encode()
    assert len(call) > 3_000_000
    args = ["--async"] if detached else []
    result = run_hook(town, call, *args)
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b""

    def attributed() -> str:
        shown = run_ctl(town, "attribution", issue)
        return shown.stdout if shown.returncode == 0 and SESSION in shown.stdout else ""

    assert "closed" in wait_until(attributed)
    with daemon_proc.client() as client:
        assert client.status().hooks_trimmed == 1
        steps = client.wisp(SESSION).steps
    assert [s.ref for s in steps if s.kind == "issue_closed"] == [issue]
    assert "too_large" not in daemon_proc.log()
    status = run_ctl(town, "status")
    assert "hooks trimmed  1 calls cut to fit the frame limit" in status.stdout


def test_a_trimmed_call_spooled_while_the_daemon_was_down_is_applied_and_counted(
    town: Path,
) -> None:
    output = "x" * 3_000_000
    assert run_hook(town, payload("SessionStart", source="startup")).returncode == 0
    assert run_hook(town, json.dumps(bash("bd close gt-spooled", output)).encode()).returncode == 0
    spool = next((town / ".gastownd" / "spool").glob("hook-*.jsonl")).read_bytes()
    assert all(len(line) <= 1 << 20 for line in spool.splitlines())
    proc = DaemonProcess(town).wait_ready()
    try:
        wait_until(lambda: SESSION in run_ctl(town, "attribution", "gt-spooled").stdout)
        with proc.client() as client:
            assert client.status().hooks_trimmed == 1
    finally:
        assert proc.terminate() == 0
