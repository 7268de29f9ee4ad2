"""``python -m bench.federation_sim``: N daemons of one town against one nats-server.

Each node's log gets gt-style lines at a fixed rate for a while; every node
federates. Reported per N: the lines offered (N × rate), the records every
node applied per second meanwhile (each applies the N-1 others' lines), and
the convergence time: from the last line written to the moment every node
holds every other node's lines. The capacity plan in docs/federation.md comes
from this table; the machine runs the server, the daemons and the writers.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from pathlib import Path

from tests.nats_cluster import cluster

from bench.harness import Daemon
from bench.suites.common import gt_line
from bench.suites.external import gt_append
from bench.suites.federation import fed_nodes


def write_lines(town: Path, node: str, rate: float, seconds: float) -> int:
    """gt's way: flock the sidecar, one O_APPEND write per line, ``rate`` lines a second."""
    written = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        payload = {"node": node, "n": written, "target": "gastown/polecats/nux"}
        gt_append(town, gt_line("nudge", "gastown/witness", payload, stamp))
        written += 1
        time.sleep(max(0.0, started + written / rate - time.monotonic()))
    return written


def applied_from_others(daemon: Daemon) -> int:
    with daemon.client() as client:
        return sum(n.events for n in client.status().federation.nodes)


def simulate(nodes: int, rate: float, seconds: float) -> dict[str, float]:
    hub = cluster(1).start()
    town = f"sim{uuid.uuid4().hex[:6]}"
    try:
        with fed_nodes(hub.urls, town, [f"n{n}" for n in range(nodes)]) as (towns, daemons):
            return _run(towns, daemons, rate, seconds)
    finally:
        hub.cleanup()


def _run(towns: list[Path], daemons: list[Daemon], rate: float, seconds: float) -> dict[str, float]:
    nodes = len(towns)
    counts = [0] * nodes

    def writer(n: int) -> None:
        counts[n] = write_lines(towns[n], f"n{n}", rate, seconds)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(nodes)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    written_s = time.monotonic() - started
    during = sum(applied_from_others(d) for d in daemons)
    total = sum(counts)
    expected = [total - counts[n] for n in range(nodes)]
    deadline = time.monotonic() + 600
    while True:
        got = [applied_from_others(d) for d in daemons]
        if all(g >= e for g, e in zip(got, expected, strict=True)):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"not converged: {got} of {expected}")
        time.sleep(0.05)
    converged_s = time.monotonic() - started - written_s
    return {
        "nodes": nodes,
        "offered": total / written_s,
        "applied_per_s": during / written_s,
        "applied_total": float(sum(expected)),
        "converged_s": converged_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.federation_sim", description=__doc__)
    parser.add_argument("--nodes", default="2,4,8", help="node counts to try (default 2,4,8)")
    parser.add_argument("--rate", type=float, default=100.0, help="lines/s per node (100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long nodes write (10)")
    args = parser.parse_args()
    print(
        "| nodes | lines offered/s (all nodes) | records applied/s (all nodes) | "
        "convergence after the last line |"
    )
    print("|---|---|---|---|")
    for nodes in (int(n) for n in args.nodes.split(",")):
        row = simulate(nodes, args.rate, args.seconds)
        print(
            f"| {nodes} | {row['offered']:,.0f} | {row['applied_per_s']:,.0f} | "
            f"{row['converged_s']:.2f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
