"""Prune of the big log with half its lines expired, and `emit` latency while it runs.

The generated log ends at a fixed instant (``loggen.END_TS``), so "expired"
is set by the TTLs, not the data: Gas Town's per-type TTLs are scaled so that
half the lines are past theirs, then shifted by ``now - END_TS``. They reach
the daemon through ``<town>/.krc.yaml`` (read at every prune), written only
once the daemon is up: it starts with nothing expiring, so its start-up prune
removes nothing, and the ``prune`` op then does the work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import msgspec

from bench.context import Context
from bench.harness import (
    Row,
    copy_durably,
    fmt_ratio,
    fmt_time,
    make_town,
    median,
    remove_town,
    start_daemon,
)
from bench.harness import percentile as pct
from bench.loggen import END_TS, type_weights
from bench.suites.common import NUDGE_ACTOR, NUDGE_PAYLOAD
from gastown_client.client import Client
from gastownd.core.events import parse_ts
from gastownd.core.retention import GAS_TOWN_TTLS_S, RetentionPolicy

# Retention on, nothing expiring (every Gas Town pattern named, so it holds
# whether configured TTLs replace or override the defaults), no periodic prune.
NEVER = "36500d"
CONFIG = (
    "[retention]\nenabled = true\n"
    f'default_ttl = "{NEVER}"\nprune_interval = "1000d"\n\n[retention.ttls]\n'
    + "".join(f'"{pattern}" = "{NEVER}"\n' for pattern in GAS_TOWN_TTLS_S)
)
EXPIRED_FRACTION = 0.5


def scale_for(fraction: float, span_s: float) -> float:
    """k such that, with TTLs k × Gas Town's, ``fraction`` of an even log has expired."""
    policy = RetentionPolicy()
    weights = type_weights()

    def expired(k: float) -> float:
        return sum(w * max(0.0, 1 - k * policy.ttl_for(t) / span_s) for t, w in weights.items())

    low, high = 0.0, 100.0
    for _ in range(60):
        middle = (low + high) / 2
        if expired(middle) > fraction:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def shifted_policy(scale: float, now_s: float) -> RetentionPolicy:
    shift = now_s - END_TS
    base = RetentionPolicy()
    return RetentionPolicy(
        default_ttl_s=base.default_ttl_s * scale + shift,
        ttls_s={pattern: ttl * scale + shift for pattern, ttl in GAS_TOWN_TTLS_S.items()},
    )


def krc_json(policy: RetentionPolicy) -> str:
    """Gas Town's ``.krc.yaml`` (JSON, durations in nanoseconds)."""
    return json.dumps(
        {
            "default_ttl": int(policy.default_ttl_s * 1e9),
            "ttls": {pattern: int(ttl * 1e9) for pattern, ttl in policy.ttls_s.items()},
        }
    )


class _Line(msgspec.Struct):
    ts: str
    type: str


def gt_prune(path: Path, policy: RetentionPolicy, now_s: float) -> tuple[int, int]:
    """The baseline: gt's way. Decode every line, keep the unexpired, write a copy, rename."""
    decoder = msgspec.json.Decoder(_Line)
    ttls: dict[str, float] = {}
    temp = path.with_suffix(".prune-tmp")
    kept = removed = 0
    with open(path, "rb") as source, open(temp, "wb") as target:
        out: list[bytes] = []
        for line in source:
            try:
                event = decoder.decode(line)
                ts = parse_ts(event.ts)
            except msgspec.DecodeError:
                ts = None
                event = None
            if event is not None and ts is not None:
                ttl = ttls.get(event.type)
                if ttl is None:
                    ttl = ttls[event.type] = policy.ttl_for(event.type)
                if ts < now_s - ttl:
                    removed += 1
                    continue
            kept += 1
            out.append(line)
            if len(out) >= 10_000:
                target.write(b"".join(out))
                out.clear()
        target.write(b"".join(out))
        target.flush()
        os.fsync(target.fileno())
    os.replace(temp, path)
    return kept, removed


class Emitter(threading.Thread):
    """Open-loop emits on one connection, one every ``INTERVAL_S``, each awaited.

    Latency counts from when the emit was due, not when it could be sent, so
    a stall shows in every emit it held up (no coordinated omission).
    """

    INTERVAL_S = 0.005

    def __init__(self, socket_path: Path) -> None:
        super().__init__(daemon=True)
        self.socket_path = socket_path
        # (due, latency from due)
        self.samples: list[tuple[float, float]] = []
        self.errors = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        with Client(self.socket_path, timeout_s=120) as client:
            due = time.monotonic()
            while not self.stop_flag.is_set():
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                try:
                    client.emit("nudge", NUDGE_ACTOR, NUDGE_PAYLOAD)
                except Exception:
                    self.errors += 1
                    client.close()
                    time.sleep(0.01)
                self.samples.append((due, time.monotonic() - due))
                due += self.INTERVAL_S

    def between(self, start: float, end: float) -> list[float]:
        return [latency for due, latency in self.samples if start <= due <= end]


def prune_phases(log_text: str) -> str:
    """The daemon's own account of where the prune's time went (its eventlog_pruned line)."""
    for line in reversed(log_text.splitlines()):
        if '"eventlog_pruned"' in line:
            entry = json.loads(line)
            keys = ("plan_ms", "copy_ms", "archive_ms", "swap_ms")
            return ", ".join(f"{key} {entry[key]} ms" for key in keys if key in entry)
    return "no eventlog_pruned line"


def run(ctx: Context, names: list[str]) -> list[Row]:
    sizes = ctx.sizes
    log = ctx.big_log()
    scale = scale_for(EXPIRED_FRACTION, ctx.spec.span_s)
    town = make_town(config=CONFIG, log=log)
    try:
        daemon = start_daemon(town)
        try:
            time.sleep(0.5)
            with daemon.client(timeout_s=300) as client:
                # The start-up prune must be over before .krc.yaml changes the policy.
                deadline = time.monotonic() + 300
                while client.status().eventlog.last_prune_at is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the start-up prune did not finish in 300 s")
                    time.sleep(0.05)
                lines_before = client.status().eventlog.lines
                daemon.wait_idle()
                if lines_before != sizes.lines:
                    raise RuntimeError(
                        f"the start-up prune left {lines_before:,} of {sizes.lines:,} lines: "
                        "the benchmark's 'nothing expires' configuration no longer holds"
                    )
                emitter = Emitter(daemon.socket)
                emitter.start()
                time.sleep(sizes.prune_idle_s)
                now = time.time()
                policy = shifted_policy(scale, now)
                (town / ".krc.yaml").write_text(krc_json(policy))
                started = time.monotonic()
                result = client.prune()
                ended = time.monotonic()
                time.sleep(0.3)
                emitter.stop_flag.set()
                emitter.join(30)
                lines_after = client.status().eventlog.lines
        finally:
            daemon.stop()
        phases = prune_phases(daemon.log_path.read_text(errors="replace"))
    finally:
        remove_town(town)

    folder = Path(tempfile.mkdtemp(prefix="gtb-prune-", dir="/tmp"))
    try:
        copy = folder / ".events.jsonl"
        copy_durably(log, copy)
        base_started = time.monotonic()
        kept, removed = gt_prune(copy, policy, now)
        base_s = time.monotonic() - base_started
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    idle = emitter.between(started - sizes.prune_idle_s, started)
    during = emitter.between(started, ended)
    duration = ended - started
    i99, d99 = pct(idle, 99), pct(during, 99)
    agree = result.pruned_total == removed
    fraction = result.pruned_total / max(1, result.pruned_total + result.kept)
    return [
        Row(
            name="prune",
            what=f"prune of the {ctx.lines_label}-line log, {fraction:.0%} expired "
            "(`prune` op, round trip)",
            baseline=f"gt's way in Python (decode all, rewrite, rename): {fmt_time(base_s)}",
            median=fmt_time(duration),
            p99="—",
            ratio=fmt_ratio(duration / base_s),
            goal="— (report)",
            met=None if agree else False,
            note=f"removed {result.pruned_total:,}, kept {result.kept:,} "
            f"(daemon says {result.duration_ms / 1000:.2f} s: {phases}; "
            f"{lines_after:,} lines after)"
            + ("" if agree else f"; the baseline removed {removed:,}: they disagree!"),
            data={
                "duration_s": duration,
                "daemon_duration_ms": result.duration_ms,
                "baseline_s": base_s,
                "pruned": result.pruned_total,
                "kept": result.kept,
                "baseline_kept": kept,
                "baseline_removed": removed,
            },
        ),
        Row(
            name="prune",
            what=f"`emit` latency while that prune runs (1 client, one every "
            f"{Emitter.INTERVAL_S * 1000:g} ms, from when due)",
            baseline=f"the same emits just before: {fmt_time(median(idle))} / {fmt_time(i99)}",
            median=fmt_time(median(during)),
            p99=fmt_time(d99),
            ratio=fmt_ratio(d99 / i99) + " (p99)",
            goal="p99 ≤ 20 ms",
            met=d99 <= 0.020 and emitter.errors == 0,
            note=f"{len(during)} emits due during the prune, "
            f"worst {fmt_time(max(during, default=0))}"
            + (f"; {emitter.errors} emits failed" if emitter.errors else ""),
            data={
                "during_s": during,
                "idle_p50_s": median(idle),
                "idle_p99_s": i99,
                "errors": emitter.errors,
            },
        ),
    ]
