"""Claude Code hooks: the command ``install-hooks`` writes, the console script, fail-open.

Each call is a whole process, start to exit, fed a ``SessionStart`` payload
on stdin the way Claude Code runs it. The baseline is the same interpreter
running ``-c pass``, interleaved with the hook runs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import msgspec

from bench.context import Context
from bench.harness import (
    PYTHON,
    Row,
    fmt_ratio,
    fmt_time,
    make_town,
    median,
    remove_town,
    start_daemon,
)
from bench.harness import percentile as pct

ACTOR = "gastown/polecats/nux"


def _payload(town: Path) -> bytes:
    session = str(uuid.uuid4())
    return msgspec.json.encode(
        {
            "session_id": session,
            "transcript_path": f"/home/user/.claude/projects/-gt-gastown/{session}.jsonl",
            "cwd": str(town / "gastown" / "polecats" / "nux"),
            "hook_event_name": "SessionStart",
            "source": "startup",
        }
    )


def _hostile(town: Path) -> list[bytes]:
    """``PostToolUse`` calls the hook must cut by whole values: 100,000 levels deep,
    3.6 MB of short strings, and more stdin than it reads (8 MiB)."""
    head = msgspec.json.encode(
        {
            "session_id": str(uuid.uuid4()),
            "cwd": str(town),
            "hook_event_name": "PostToolUse",
            "tool_name": "Bash",
            "tool_input": {"command": "bd close gt-77"},
        }
    )[:-1]
    responses = [
        b"[" * 100_000 + b"]" * 100_000,
        msgspec.json.encode(["ab"] * 600_000),
        b'"' + b"y" * (9 << 20) + b'"',
    ]
    return [head + b',"tool_response":' + response + b"}" for response in responses]


def _env(town: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GT_", "BD_", "CLAUDE"))}
    env.update(
        GT_TOWN_ROOT=str(town),
        GT_ROLE="polecat",
        BD_ACTOR=ACTOR,
        GT_RIG="gastown",
        GT_POLECAT="nux",
    )
    return env


def _timed(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        argv,
        input=stdin,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def _not_yet(reason: str) -> list[Row]:
    goals = [
        (
            "the `install-hooks` command, `SessionStart` payload, daemon running",
            "median ≤ 1.25× `python -c pass`, p99 ≤ 100 ms",
        ),
        ("`gastown-hook` console script", "≤ 2×"),
        ("hook with the daemon stopped (fail-open)", "≤ 300 ms"),
    ]
    return [Row(name="hooks", what=what, goal=goal, note=reason) for what, goal in goals]


def run(ctx: Context, names: list[str]) -> list[Row]:
    try:
        from gastown_client.hookinstall import hook_command, hook_interpreter
    except ImportError:
        return _not_yet("not yet implemented (issue 5): no `install-hooks` yet")
    command = shlex.split(hook_command(detached=False))
    interpreter = hook_interpreter()
    script = Path(PYTHON).parent / "gastown-hook"
    reps = max(10, ctx.sizes.startup_reps * 3)
    base: list[float] = []
    hook: list[float] = []
    console: list[float] = []
    stopped: list[float] = []
    hostile: list[float] = []
    town = make_town()
    try:
        env = _env(town)
        daemon = start_daemon(town)
        try:
            with daemon.client() as client:
                before = client.status().requests
            # Warm the page cache for every binary involved.
            _timed([interpreter, "-c", "pass"], b"", env)
            _timed(command, _payload(town), env)
            for _ in range(reps):
                base.append(_timed([interpreter, "-c", "pass"], b"", env))
                hook.append(_timed(command, _payload(town), env))
                if script.exists():
                    console.append(_timed([str(script)], _payload(town), env))
            for _ in range(max(3, reps // 3)):
                for call in _hostile(town):
                    hostile.append(_timed(command, call, env))
            with daemon.client() as client:
                handled = client.status().requests - before - 1
        finally:
            daemon.stop()
        for _ in range(reps):
            stopped.append(_timed(command, _payload(town), env))
    finally:
        remove_town(town)

    b50 = median(base)
    h50, h99 = median(hook), pct(hook, 99)
    expected = 1 + len(hook) + len(console) + len(hostile)
    rows = [
        Row(
            name="hooks",
            what="the `install-hooks` command (`python -I -S hook.py`), `SessionStart` "
            "payload, daemon running",
            baseline=f"same interpreter `-c pass`: {fmt_time(b50)} / {fmt_time(pct(base, 99))}",
            median=fmt_time(h50),
            p99=fmt_time(h99),
            ratio=fmt_ratio(h50 / b50),
            goal="median ≤ 1.2× baseline, p99 ≤ 100 ms",
            met=h50 <= 1.2 * b50 and h99 <= 0.100,
            note=f"{reps} runs interleaved with the baseline; the daemon answered "
            f"{handled} requests for {expected} hook calls",
            data={"times_s": hook, "baseline_times_s": base, "daemon_requests": handled},
        )
    ]
    if console:
        c50 = median(console)
        rows.append(
            Row(
                name="hooks",
                what="`gastown-hook` console script, same payload, daemon running",
                baseline=f"same interpreter `-c pass`: {fmt_time(b50)}",
                median=fmt_time(c50),
                p99=fmt_time(pct(console, 99)),
                ratio=fmt_ratio(c50 / b50),
                goal="≤ 2× baseline",
                met=c50 <= 2 * b50,
                data={"times_s": console, "baseline_times_s": base},
            )
        )
    rows.append(
        Row(
            name="hooks",
            what="the `install-hooks` command, hostile `PostToolUse` calls cut by whole values "
            "(100,000 levels deep, 3.6 MB of short strings, 9 MiB on stdin), daemon running",
            baseline=f"same interpreter `-c pass`: {fmt_time(b50)}",
            median=fmt_time(median(hostile)),
            p99=fmt_time(pct(hostile, 99)),
            ratio=fmt_ratio(median(hostile) / b50),
            goal="≤ 300 ms (p99)",
            met=pct(hostile, 99) <= 0.300,
            data={"times_s": hostile, "baseline_times_s": base},
        )
    )
    s50, s99 = median(stopped), pct(stopped, 99)
    rows.append(
        Row(
            name="hooks",
            what="the `install-hooks` command with the daemon stopped (fail-open, spools)",
            baseline=f"same interpreter `-c pass`: {fmt_time(b50)}",
            median=fmt_time(s50),
            p99=fmt_time(s99),
            ratio=fmt_ratio(s50 / b50),
            goal="≤ 300 ms (p99)",
            met=s99 <= 0.300,
            data={"times_s": stopped, "baseline_times_s": base},
        )
    )
    return rows
