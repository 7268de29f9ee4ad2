"""Federation over a real nats-server: replication lag, catch-up after an outage, local
emits with federation on (NATS up and down) vs off, and town-wide queries at 1 M remote lines.

Baselines, measured in the same run: nats-py itself (JetStream publish with ack, then a
pull consumer) for lag and catch-up; the same daemon with federation off for emits; the
same SQL straight from SQLite in this process for the remote query.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import msgspec
from tests.nats_cluster import NatsCluster, cluster, nats_server_binary

from bench.context import Context
from bench.harness import (
    NO_RETENTION,
    WORK_DIR,
    Daemon,
    Row,
    fmt_rate,
    fmt_ratio,
    fmt_time,
    make_town,
    median,
    remove_town,
    start_daemon,
)
from bench.harness import percentile as pct
from bench.suites.common import (
    NUDGE_ACTOR,
    NUDGE_PAYLOAD,
    alternate,
    closed_loop,
    gt_append_many,
    gt_line,
    nudge_emit,
)
from gastownd.core.events import decode_lines, parse_ts, session_of
from gastownd.core.records import MAX_EVENT_LINES, EventMessage, encode_message, message_id
from gastownd.store import Store

CLIENTS = 8


def fed_town(servers: list[str], node: str, town: str) -> Path:
    listed = ", ".join(f'"{s}"' for s in servers)
    return make_town(
        NO_RETENTION + f'\n[federation]\nservers = [{listed}]\nnode = "{node}"\ntown = "{town}"\n'
    )


def wait_connected(daemon: Daemon, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    with daemon.client() as client:
        while not client.status().federation.connected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{daemon.town}: federation did not connect")
            time.sleep(0.05)


@contextmanager
def fed_nodes(
    servers: list[str], town: str, nodes: Sequence[str]
) -> Iterator[tuple[list[Path], list[Daemon]]]:
    """A federated daemon per node of ``town``, connected; stopped and removed after."""
    towns: list[Path] = []
    daemons: list[Daemon] = []
    try:
        for node in nodes:
            towns.append(fed_town(servers, node, town))
            daemons.append(start_daemon(towns[-1]))
        for daemon in daemons:
            wait_connected(daemon)
        yield towns, daemons
    finally:
        for daemon in daemons:
            daemon.stop()
        for path in towns:
            remove_town(path)


def run(ctx: Context, names: list[str]) -> list[Row]:
    if nats_server_binary() is None:
        return [Row(name="federation", what="federation", note="nats-server is not installed")]
    hub = cluster(1).start()
    try:
        rows = [_lag(ctx, hub)]
        rows.append(_catch_up(ctx, hub))
        rows += _emits(ctx, hub)
        rows.append(_remote_query(ctx))
        return rows
    finally:
        hub.cleanup()


# ----------------------------------------------------------------- lag


def _lag(ctx: Context, hub: NatsCluster) -> Row:
    count = 60 if ctx.quick else 300
    town = f"lag{uuid.uuid4().hex[:6]}"
    with fed_nodes(hub.urls, town, "ab") as (_, daemons):
        acked: dict[str, float] = {}
        seen: dict[str, float] = {}
        ready = threading.Event()

        def watch() -> None:
            with daemons[1].client(timeout_s=None) as client:
                subscription = client.subscribe(all_nodes=True, types=["mail"])
                ready.set()
                for _cursor, raw in subscription:
                    event = msgspec.json.decode(bytes(raw))
                    seen[event["payload"]["tag"]] = time.perf_counter()
                    if len(seen) >= count:
                        return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        ready.wait(10)
        with daemons[0].client() as client:
            for n in range(count):
                client.emit("mail", "mayor", {"tag": str(n)})
                acked[str(n)] = time.perf_counter()
                time.sleep(0.01)
        watcher.join(60)
        lags = [seen[tag] - acked[tag] for tag in acked if tag in seen]
    raw = asyncio.run(_raw_lag(hub.urls, count))
    return Row(
        name="federation",
        what="replication lag: `emit` acknowledged on A → pushed to a subscriber on B",
        baseline=f"nats-py publish acked → pull fetch: {fmt_time(median(raw))} / "
        f"{fmt_time(pct(raw, 99))}",
        median=fmt_time(median(lags)),
        p99=fmt_time(pct(lags, 99)),
        ratio=fmt_ratio(median(lags) / median(raw)),
        goal="measured",
        met=None if len(lags) == count else False,
        note=f"{len(lags)} of {count} emits seen on B, one every 10 ms; one nats-server",
        data={"lags_s": lags, "raw_s": raw},
    )


async def _raw_lag(urls: list[str], count: int) -> list[float]:
    import nats

    nc = await nats.connect(urls)
    js = nc.jetstream()
    stream = f"RAWLAG{uuid.uuid4().hex[:6]}"
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    sub = await js.pull_subscribe(f"{stream}.>", durable="raw", stream=stream)
    lags: list[float] = []
    try:
        for n in range(count):
            await js.publish(f"{stream}.x", b"%d" % n, headers={"Nats-Msg-Id": f"m{n}"})
            acked = time.perf_counter()
            [message] = await sub.fetch(1, timeout=5)
            lags.append(time.perf_counter() - acked)
            await message.ack()
            await asyncio.sleep(0.01)
    finally:
        await js.delete_stream(stream)
        await nc.close()
    return lags


# ----------------------------------------------------------------- catch-up


def _catch_up(ctx: Context, hub: NatsCluster) -> Row:
    count = 3_000 if ctx.quick else 20_000
    town = f"cu{uuid.uuid4().hex[:6]}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [gt_line("nudge", NUDGE_ACTOR, {**NUDGE_PAYLOAD, "n": n}, stamp) for n in range(count)]
    with fed_nodes(hub.urls, town, "ab") as (towns, daemons):
        hub.stop()
        gt_append_many(towns[0], lines, batch=1000)
        with daemons[0].client() as client:
            deadline = time.monotonic() + 60
            while client.status().federation.backlog.get("events", 0) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError("the backlog did not build up")
                time.sleep(0.05)
        hub.start()
        started = time.perf_counter()
        with daemons[0].client() as client:
            while not client.status().federation.connected:
                time.sleep(0.01)
        connected = time.perf_counter()
        with daemons[1].client() as client:
            deadline = time.monotonic() + 300
            while True:
                nodes = {n.node: n.events for n in client.status().federation.nodes}
                if nodes.get("a", 0) >= count or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        elapsed = time.perf_counter() - connected
        reconnect_s = connected - started
        got = nodes.get("a", 0)
    records = [
        encode_message(
            EventMessage(
                town=town,
                node="a",
                id=message_id("a", "event", f"1:{first}-{first + len(run) - 1}"),
                epoch=1,
                seqs=list(range(first, first + len(run))),
                lines=[msgspec.Raw(line.rstrip(b"\n")) for line in run],
            )
        )
        for first in range(0, count, MAX_EVENT_LINES)
        for run in [lines[first : first + MAX_EVENT_LINES]]
    ]
    raw_s = asyncio.run(_raw_catch_up(hub.urls, records))
    rate, raw_rate = got / elapsed, count / raw_s  # lines per second, both
    return Row(
        name="federation",
        what=f"catch-up after an outage: {count:,} lines written on A while NATS was down",
        baseline=f"nats-py publish_async + pull fetch/ack of the same records "
        f"({MAX_EVENT_LINES} lines each): {fmt_rate(raw_rate, 'lines/s')}",
        median=fmt_rate(rate, "lines/s"),
        ratio=fmt_ratio(rate / raw_rate),
        goal="measured",
        met=None if got >= count else False,
        note=f"from A connected again to all {got:,} applied on B; A reconnected "
        f"{reconnect_s:.2f} s after the server was healthy",
        data={"elapsed_s": elapsed, "raw_s": raw_s, "applied": got, "reconnect_s": reconnect_s},
    )


async def _raw_catch_up(urls: list[str], records: list[bytes]) -> float:
    import nats

    nc = await nats.connect(urls)
    js = nc.jetstream()
    stream = f"RAWCU{uuid.uuid4().hex[:6]}"
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    sub = await js.pull_subscribe(f"{stream}.>", durable="raw", stream=stream)
    started = time.perf_counter()
    try:
        for n, data in enumerate(records):
            await js.publish_async(f"{stream}.a.event", data, headers={"Nats-Msg-Id": f"m{n}"})
        await js.publish_async_completed()
        received = 0
        while received < len(records):
            batch = await sub.fetch(256, timeout=5)
            for message in batch:
                await message.ack()
            received += len(batch)
        return time.perf_counter() - started
    finally:
        await js.delete_stream(stream)
        await nc.close()


# ----------------------------------------------------------------- local emits


def _emits(ctx: Context, hub: NatsCluster) -> list[Row]:
    window, rounds = ctx.sizes.window_s, ctx.sizes.rounds
    town = f"em{uuid.uuid4().hex[:6]}"
    towns = {
        "off": make_town(),
        "up": fed_town(hub.urls, "a", town),
        "down": fed_town(["nats://127.0.0.1:9"], "a", town),  # nothing listens there
    }
    daemons = {case: start_daemon(t) for case, t in towns.items()}
    rows: list[Row] = []
    try:
        wait_connected(daemons["up"])
        for case, label in (("up", "NATS up"), ("down", "NATS down")):
            ours, base = alternate(
                rounds,
                partial(closed_loop, daemons[case].socket, nudge_emit(), CLIENTS, window),
                partial(closed_loop, daemons["off"].socket, nudge_emit(), CLIENTS, window),
            )
            ratio = ours.rate / base.rate
            rows.append(
                Row(
                    name="federation",
                    what=f"durable `emit`, {CLIENTS} clients, federation on ({label}) vs off",
                    baseline=f"the same daemon, federation off: {fmt_rate(base.rate, 'ev/s')}",
                    median=fmt_rate(ours.rate, "ev/s"),
                    p99=f"ack p99 {fmt_time(pct(ours.latencies_s, 99))}",
                    ratio=fmt_ratio(ratio),
                    goal="≥ 0.9× off",
                    met=ratio >= 0.9 and ours.errors == 0,
                    note=f"median of {len(ours.rates)} windows of {window:g} s",
                    data={"rates": ours.rates, "baseline_rates": base.rates},
                )
            )
    finally:
        for daemon in daemons.values():
            daemon.stop()
        for t in towns.values():
            remove_town(t)
    return rows


# ----------------------------------------------------------------- remote query

_SQL = (
    "SELECT arrival, node, ts, type, actor, session, line FROM remote_events "
    "WHERE type = ? ORDER BY ts DESC, arrival DESC LIMIT 20"
)


def _remote_store(ctx: Context) -> Path:
    """A store holding the big log's lines as three other nodes' (built once, cached)."""
    path = WORK_DIR / f"remote-{ctx.spec.key}.db"
    if path.exists():
        return path
    ctx.log(f"  building a store with {ctx.sizes.lines:,} remote lines ...")
    path.parent.mkdir(parents=True, exist_ok=True)
    log_path = ctx.big_log()
    temp = path.with_suffix(".tmp")
    temp.unlink(missing_ok=True)
    Store(temp).close()
    db = sqlite3.connect(temp)
    db.execute("PRAGMA journal_mode=WAL")
    with open(log_path, "rb") as handle:
        seq = 0
        while chunk := handle.readlines(8 << 20):
            lines = [line.rstrip(b"\n") for line in chunk]
            rows = []
            for line, parsed in zip(lines, decode_lines(lines), strict=True):
                if parsed is None:
                    continue
                node = ("n1", "n2", "n3")[seq % 3]
                rows.append(
                    (node, 1, seq, parse_ts(parsed.ts) or 0, parsed.type, parsed.actor,
                     session_of(parsed), line)
                )  # fmt: skip
                seq += 1
            db.executemany(
                "INSERT INTO remote_events (node, epoch, seq, ts, type, actor, session, line) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    os.replace(temp, path)
    return path


def _remote_query(ctx: Context) -> Row:
    source = _remote_store(ctx)
    reps = ctx.sizes.query_reps
    direct = []
    db = sqlite3.connect(source)
    try:
        for _ in range(reps):
            started = time.perf_counter()
            db.execute(_SQL, ("session_start",)).fetchall()
            direct.append(time.perf_counter() - started)
    finally:
        db.close()
    town = make_town()
    private = town / ".gastownd"
    private.mkdir(mode=0o700)
    shutil.copyfile(source, private / "gastownd.db")
    daemon = start_daemon(town)
    latencies = []
    try:
        with daemon.client() as client:
            for _ in range(reps):
                started = time.perf_counter()
                result = client.query(all_nodes=True, types=["session_start"], limit=20)
                latencies.append(time.perf_counter() - started)
            assert len(result.events) == 20
    finally:
        daemon.stop()
        remove_town(town)
    return Row(
        name="federation",
        what=f"`query` all nodes: newest 20 `session_start` of {ctx.lines_label} remote lines",
        baseline=f"the same SQL in-process: {fmt_time(median(direct))}",
        median=fmt_time(median(latencies)),
        p99=fmt_time(pct(latencies, 99)),
        ratio=fmt_ratio(median(latencies) / median(direct)),
        goal="≤ 10 ms",
        met=median(latencies) <= 10e-3,
        note=f"{reps} queries through the socket (this node's own log is empty)",
        data={"latencies_s": latencies, "direct_s": direct},
    )
