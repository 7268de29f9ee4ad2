"""Fan-out: one emit delivered to 100 subscribers; time from the acknowledgement to each."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.harness import (
    Row,
    Workers,
    fmt_ratio,
    fmt_time,
    make_town,
    median,
    remove_town,
    start_daemon,
)
from bench.harness import percentile as pct
from bench.suites.common import NUDGE_ACTOR, NUDGE_PAYLOAD, broker
from gastown_client import codec
from gastown_client.client import Client
from gastown_client.protocol import Subscribe

SUBSCRIBERS = 100
PROCESSES = 2


def _wait_files(files: list[Path], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(f.exists() for f in files):
        if time.monotonic() > deadline:
            raise TimeoutError("a subscriber worker never became ready")
        time.sleep(0.01)


def measure(socket_path: Path, emits: int, seed: int, folder: Path) -> dict[str, Any]:
    """Emit ``emits`` events while ``SUBSCRIBERS`` connections listen; ack → arrival times."""
    per_process = SUBSCRIBERS // PROCESSES
    deadline = time.monotonic() + emits * 0.1 + 30
    workers = Workers()
    ready = [folder / f"fanout-{i}.ready" for i in range(PROCESSES)]
    rng = random.Random(seed)
    acks: dict[int, int] = {}
    sends: dict[int, int] = {}
    try:
        for path in ready:
            workers.spawn(
                {
                    "kind": "subscribe",
                    "socket": str(socket_path),
                    "connections": per_process,
                    "expect": emits,
                    "frame": codec.encode_frame(Subscribe(id=1, types=["nudge"])),
                    "deadline": deadline,
                    "ready_file": str(path),
                }
            )
        _wait_files(ready)
        with Client(socket_path) as client:
            for n in range(emits):
                payload = dict(NUDGE_PAYLOAD, n=n)
                sends[n] = time.monotonic_ns()
                client.emit("nudge", NUDGE_ACTOR, payload)
                acks[n] = time.monotonic_ns()
                time.sleep(rng.uniform(0.03, 0.07))
        results = workers.results()
    finally:
        workers.kill()
        for path in ready:
            path.unlink(missing_ok=True)
    arrivals = [a for r in results for a in r["arrivals"]]
    after_ack = [max(0, arrival - acks[n]) / 1e9 for _, n, _, arrival in arrivals if n in acks]
    after_send = [(arrival - sends[n]) / 1e9 for _, n, _, arrival in arrivals if n in sends]
    emit_s = [(acks[n] - sends[n]) / 1e9 for n in acks]
    return {
        "after_ack": after_ack,
        "after_send": after_send,
        "emit_s": emit_s,
        "missing": emits * SUBSCRIBERS - len(after_ack),
    }


def run(ctx: Context, names: list[str]) -> list[Row]:
    emits = ctx.sizes.fanout_emits
    town = make_town()
    try:
        daemon = start_daemon(town)
        try:
            ours = measure(daemon.socket, emits, ctx.seed, town)
        finally:
            daemon.stop()
        with broker() as path:
            theirs = measure(path, emits, ctx.seed, town)
    finally:
        remove_town(town)
    lat, base = ours["after_ack"], theirs["after_ack"]
    p99, b99 = pct(lat, 99), pct(base, 99)
    sent, base_sent = ours["after_send"], theirs["after_send"]
    s99, bs99 = pct(sent, 99), pct(base_sent, 99)
    emit_s, base_emit_s = ours["emit_s"], theirs["emit_s"]
    return [
        Row(
            name="fanout",
            what=f"fan-out to {SUBSCRIBERS} subscribers: `emit` acknowledged → delivered",
            baseline=f"asyncio broker, same subscribers: {fmt_time(median(base))} / "
            f"{fmt_time(b99)}",
            median=fmt_time(median(lat)),
            p99=fmt_time(p99),
            ratio=fmt_ratio(p99 / b99) + " (p99)" if b99 > 0 else "—",
            goal="p99 ≤ 20 ms",
            met=p99 <= 0.020 and ours["missing"] == 0,
            note=(f"{ours['missing']} deliveries missing; " if ours["missing"] else "")
            + f"{emits} emits 30-70 ms apart; a delivery that arrives before the emitter "
            "has its acknowledgement counts as 0 (see the next row)",
            data={"after_ack_s": lat, "baseline_after_ack_s": base, "missing": ours["missing"]},
        ),
        Row(
            name="fanout",
            what=f"fan-out to {SUBSCRIBERS} subscribers: `emit` sent → delivered (for reference)",
            baseline=f"asyncio broker: {fmt_time(median(base_sent))} / {fmt_time(bs99)}",
            median=fmt_time(median(sent)),
            p99=fmt_time(s99),
            ratio=fmt_ratio(s99 / bs99) + " (p99)" if bs99 > 0 else "—",
            goal="—",
            note=f"the emit's own round trip with {SUBSCRIBERS} subscribers: median "
            f"{fmt_time(median(emit_s))}, p99 {fmt_time(pct(emit_s, 99))} "
            f"(broker {fmt_time(median(base_emit_s))})",
            data={
                "after_send_s": sent,
                "baseline_after_send_s": base_sent,
                "emit_s": emit_s,
                "baseline_emit_s": base_emit_s,
            },
        ),
    ]
