"""The hooks inside the real Claude Code: a scripted session of 20 Bash tool calls with the
hooks ``install-hooks`` writes, against the same session without hooks, in the same run.

The client is the pinned ``@anthropic-ai/claude-code`` of ``tests/claude`` (installed once
per machine with npm), the model the scripted stand-in of those tests, the daemon real.
Sessions alternate (bare, hooked, hooked, bare, ...) so that drift in the machine's load
hits both sides alike; the ratio is of the medians. Whole sessions vary a lot on a loaded
machine, so the note also gives the client's own time per tool call, seen from the scripted
model: from its reply with the tool call to the client's next request (the tool, the hooks
the client waits for, the client's bookkeeping), median over every call of every session.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from tests.claude.harness import ClaudeCode
from tests.claude.install import VERSION, Unavailable, claude_binary
from tests.claude.model import Reply, ScriptedModel, bash, text

from bench.context import Context
from bench.harness import Row, fmt_ratio, fmt_time, make_town, median, remove_town, start_daemon
from bench.harness import percentile as pct

TOOL_CALLS = 20
WHAT = f"Claude Code {VERSION}, scripted session of {TOOL_CALLS} Bash tool calls, hooks installed"
GOAL = "median ≤ 1.15× the same session without hooks"


def session_script() -> list[Reply]:
    """20 Bash calls as an agent makes them: mostly reads, every fifth one a ``bd close``."""
    calls = [
        bash(f"bd close gt-{900 + i} --reason done") if i % 5 == 4 else bash(f"ls -a && echo {i}")
        for i in range(TOOL_CALLS)
    ]
    return [*calls, text("Done.")]


def timed_session(claude: ClaudeCode, model: ScriptedModel) -> tuple[float, list[float]]:
    """The session's wall time, and the client's own time for each tool call."""
    model.load(*session_script())
    first = len(model.requests)
    run = claude.run("Work through the queue.")
    if run.returncode != 0 or run.result.get("num_turns", 0) < TOOL_CALLS:
        raise RuntimeError(f"scripted session failed: {run.stderr[-300:] or run.stdout[-300:]}")
    turns = [r for r in model.requests[first:] if r.turn]
    gaps = [after.arrived - before.answered for before, after in itertools.pairwise(turns)]
    return run.elapsed_s, gaps


def run(ctx: Context, names: list[str]) -> list[Row]:
    try:
        binary = claude_binary()
    except Unavailable as exc:
        return [Row(name="claude", what=WHAT, goal=GOAL, note=f"skipped: {exc}")]
    pairs = max(5, ctx.sizes.startup_reps)
    town = make_town()
    scratch = Path(tempfile.mkdtemp(prefix="gtbc-", dir="/tmp"))
    model = ScriptedModel().start()
    bare_times: list[float] = []
    hooked_times: list[float] = []
    gaps: dict[bool, list[float]] = {False: [], True: []}
    try:
        daemon = start_daemon(town)
        try:
            bare = ClaudeCode(binary, town, model, scratch / "bare", hooks=False)
            hooked = ClaudeCode(binary, town, model, scratch / "hooked")
            timed_session(bare, model)  # warm the page cache and the client's own caches
            timed_session(hooked, model)
            for index in range(pairs):
                order = [(bare, bare_times), (hooked, hooked_times)]
                for claude, times in order if index % 2 == 0 else reversed(order):
                    wall, calls = timed_session(claude, model)
                    times.append(wall)
                    gaps[claude.hooks] += calls
        finally:
            daemon.stop()
    finally:
        model.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        remove_town(town)
    b50, h50 = median(bare_times), median(hooked_times)
    ratios = sorted(h / b for h, b in zip(hooked_times, bare_times, strict=True))
    per_call_ms = (h50 - b50) / TOOL_CALLS * 1000
    call_bare, call_hooked = median(gaps[False]), median(gaps[True])
    return [
        Row(
            name="claude",
            what=WHAT,
            baseline=f"same session, no hooks: {fmt_time(b50)}",
            median=fmt_time(h50),
            p99=fmt_time(pct(hooked_times, 99)),
            ratio=fmt_ratio(h50 / b50),
            goal=GOAL,
            met=h50 <= 1.15 * b50,
            note=f"{pairs} pairs, alternating; pair ratios {ratios[0]:.2f}–{ratios[-1]:.2f}×; "
            f"{per_call_ms:+.1f} ms per tool call from the medians; the client's own time "
            f"per tool call {fmt_time(call_hooked)} with hooks, {fmt_time(call_bare)} without "
            f"({(call_hooked - call_bare) * 1000:+.1f} ms)",
            data={
                "times_s": hooked_times,
                "baseline_times_s": bare_times,
                "call_times_s": gaps[True],
                "baseline_call_times_s": gaps[False],
            },
        )
    ]
