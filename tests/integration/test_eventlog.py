"""The event log through the daemon: format, sharing with gt, recovery, queries, subscriptions."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from gastown_client.aclient import AsyncClient
from gastown_client.client import Client
from gastown_client.errors import DaemonUnavailable, RequestRejected
from tests.conftest import SAMPLE_LOG, DaemonProcess, InProcess, run_ctl

KEYS = ["ts", "source", "type", "actor", "payload", "visibility"]


def gt_append(town: Path, line: dict) -> None:
    """Append one line exactly as gt does: flock the sidecar, O_APPEND, one write."""
    data = json.dumps(line, separators=(",", ":")).encode() + b"\n"
    with open(town / ".events.jsonl.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fd = os.open(town / ".events.jsonl", os.O_APPEND | os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
            fcntl.flock(lock, fcntl.LOCK_UN)


def gt_line(
    n: int, type_: str = "nudge", actor: str = "gastown/witness", ts: str = "2026-11-25T00:00:00Z"
) -> dict:
    return {
        "ts": ts,
        "source": "gt",
        "type": type_,
        "actor": actor,
        "payload": {"n": n},
        "visibility": "feed",
    }


def log_lines(town: Path) -> list[dict]:
    return [json.loads(line) for line in (town / ".events.jsonl").read_bytes().splitlines()]


async def wait_for(predicate, deadline_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    with anyio.fail_after(deadline_s):
        while not await predicate():  # noqa: ASYNC110 - polling the daemon over its socket
            await anyio.sleep(0.01)


# ------------------------------------------------------------------- emit


async def test_emit_writes_gas_town_line_shape(daemon: InProcess, town: Path) -> None:
    async with daemon.client() as client:
        result = await client.emit(
            "session_start",
            "gastown/crew/joe",
            {"session_id": "4662", "role": "gastown/crew/joe", "cwd": "/home/u <&>"},
        )
        await client.emit("halt", "mayor")
    first, second = (town / ".events.jsonl").read_bytes().splitlines()
    assert bytes(result.event) == first
    assert list(json.loads(first)) == KEYS
    assert b'"payload":{"cwd":"/home/u \\u003c\\u0026\\u003e","role":' in first
    assert list(json.loads(second)) == ["ts", "source", "type", "actor", "visibility"]
    ts = json.loads(first)["ts"]
    assert len(ts) == 20 and ts.endswith("Z") and "." not in ts


async def test_rejected_emit_writes_nothing(daemon: InProcess, town: Path) -> None:
    async with daemon.client() as client:
        for kwargs in (
            {"type": "bad type", "actor": "x"},
            {"type": "ok", "actor": "  "},
            {"type": "x" * 129, "actor": "x"},
        ):
            with pytest.raises((RequestRejected, ValueError)):
                await client.emit(**kwargs)
        with pytest.raises(RequestRejected) as info:
            await client.emit("big", "x", {"blob": "y" * (1 << 20)})
        assert info.value.code in ("too_large",)
    events = town / ".events.jsonl"
    assert not events.exists() or events.read_bytes() == b""


def test_ctl_emit_json_prints_the_written_line(daemon_proc: DaemonProcess, town: Path) -> None:
    result = run_ctl(
        town,
        "emit",
        "mail",
        "--actor",
        "mayor",
        "-p",
        "to=deacon",
        "--payload",
        '{"subject":"hi"}',
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.encode() == (town / ".events.jsonl").read_bytes()
    assert json.loads(result.stdout)["payload"] == {"subject": "hi", "to": "deacon"}
    bad = run_ctl(town, "emit", "mail", "--actor", "mayor", "--payload", "[1]")
    assert bad.returncode == 2


# --------------------------------------------------------- sharing with gt


async def test_external_appends_are_indexed_and_pushed(daemon: InProcess, town: Path) -> None:
    async with daemon.client() as watcher, daemon.client() as client:
        pushes = await watcher.subscribe(types=["nudge"])
        gt_append(town, gt_line(1))
        started = time.monotonic()
        _cursor, event = await anext(pushes)
        assert time.monotonic() - started < 2
        assert json.loads(bytes(event))["payload"] == {"n": 1}
        result = await client.query(types=["nudge"])
        assert [json.loads(bytes(e))["payload"]["n"] for e in result.events] == [1]
        status = await client.status()
        assert status.eventlog.external == 1


def test_gt_processes_and_daemon_clients_append_concurrently(
    daemon_proc: DaemonProcess, town: Path
) -> None:
    per_writer = 200
    watcher = daemon_proc.client(timeout_s=30)
    subscription = watcher.subscribe(cursor=None)
    script = (
        "import fcntl, os, sys, json\n"
        "town, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        "for i in range(n):\n"
        "    line = json.dumps({'ts':'2026-11-25T00:00:00Z','source':'gt','type':'gt_write',"
        "'actor':who,'payload':{'i':i,'pad':'x'*(i%300)},'visibility':'feed'},"
        "separators=(',',':')).encode()+b'\\n'\n"
        "    with open(town+'/.events.jsonl.lock','a') as lock:\n"
        "        fcntl.flock(lock, fcntl.LOCK_EX)\n"
        "        fd=os.open(town+'/.events.jsonl', os.O_APPEND|os.O_CREAT|os.O_WRONLY, 0o644)\n"
        "        os.write(fd, line); os.close(fd)\n"
    )
    client_script = (
        "import sys\n"
        "from gastown_client.client import Client\n"
        "sock, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        "with Client(sock) as c:\n"
        "    for i in range(n):\n"
        "        c.emit('daemon_write', who, {'i': i})\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(town), f"gt{w}", str(per_writer)])
        for w in range(8)
    ] + [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                client_script,
                str(daemon_proc.socket),
                f"cl{w}",
                str(per_writer),
            ]
        )
        for w in range(8)
    ]
    assert all(p.wait(120) == 0 for p in procs)
    lines = log_lines(town)
    assert len(lines) == 16 * per_writer
    seen = {(line["actor"], line["payload"]["i"]) for line in lines}
    assert len(seen) == 16 * per_writer
    for w in range(8):  # each writer's lines appear in its own order
        mine = [line["payload"]["i"] for line in lines if line["actor"] == f"gt{w}"]
        assert mine == sorted(mine)
    pushed = []
    for _cursor, raw in subscription:
        pushed.append(json.loads(bytes(raw)))
        if len(pushed) == len(lines):
            break
    assert pushed == lines
    watcher.close()


# ------------------------------------------------------------------ recovery


@pytest.mark.parametrize(
    "tail", [b'{"ts":"2026-11-25T00:00:0', b"\0\0\0\0\0\0", b'{"ts":"x"}\0\0\0']
)
def test_torn_or_nul_padded_tail_is_cut_and_quarantined(town: Path, tail: bytes) -> None:
    good = b"".join(
        json.dumps(gt_line(i), separators=(",", ":")).encode() + b"\n" for i in range(3)
    )
    (town / ".events.jsonl").write_bytes(good + tail)
    proc = DaemonProcess(town).wait_ready()
    try:
        assert (town / ".events.jsonl").read_bytes() == good
        quarantine = list((town / ".gastownd" / "quarantine").iterdir())
        assert [q.read_bytes() for q in quarantine] == [tail]
        with proc.client() as client:
            status = client.status()
            assert status.eventlog.lines == 3
            assert status.eventlog.quarantined == 1
            client.emit("after_repair", "tester")
        assert all(json.loads(line) for line in (town / ".events.jsonl").read_bytes().splitlines())
        assert "eventlog_tail_repaired" in proc.log()
    finally:
        assert proc.terminate() == 0


def test_malformed_complete_lines_are_kept_skipped_and_counted(town: Path) -> None:
    lines = [
        json.dumps(gt_line(0), separators=(",", ":")).encode(),
        b"this is not json",
        b'{"no_ts": true}',
        json.dumps(gt_line(1), separators=(",", ":")).encode(),
    ]
    original = b"\n".join(lines) + b"\n"
    (town / ".events.jsonl").write_bytes(original)
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.status().eventlog.malformed == 2
            events = client.query_events()
            assert [e["payload"]["n"] for e in events] == [1, 0]
        assert (town / ".events.jsonl").read_bytes() == original
    finally:
        assert proc.terminate() == 0


async def test_external_truncation_and_rotation_are_followed(daemon: InProcess, town: Path) -> None:
    async with daemon.client() as client, daemon.client() as watcher:
        for i in range(3):
            await client.emit("before", "tester", {"i": i})
        pushes = await watcher.subscribe()
        # gt-style KRC rewrite: drop the first line, rename over the log.
        log = town / ".events.jsonl"
        kept = log.read_bytes().splitlines(keepends=True)[1:]
        temp = town / ".events.jsonl.tmp"
        temp.write_bytes(b"".join(kept) + json.dumps(gt_line(9)).encode() + b"\n")
        os.rename(temp, log)
        _cursor, event = await anext(pushes)
        assert json.loads(bytes(event))["payload"] == {"n": 9}  # only the new line, no duplicates

        async def three_lines() -> bool:
            return (await client.status()).eventlog.lines == 3

        await wait_for(three_lines)
        # Truncation in place, then a fresh line.
        os.truncate(log, 0)
        gt_append(town, gt_line(10))
        _cursor, event = await anext(pushes)
        assert json.loads(bytes(event))["payload"] == {"n": 10}
        result = await client.query()
        assert [json.loads(bytes(e))["payload"] for e in result.events] == [{"n": 10}]
        await client.emit("after", "tester")
        assert [line["type"] for line in log_lines(town)] == ["nudge", "after"]


# ------------------------------------------------------------------- queries


def test_sample_town_log_loads_indexes_and_queries(town: Path) -> None:
    shutil.copy(SAMPLE_LOG, town / ".events.jsonl")
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            status = client.status()
            assert status.eventlog.lines == 611
            assert status.eventlog.malformed == 0
            starts = client.query_events(types=["session_start"], limit=1000)
            assert len(starts) == 100
            assert [e["ts"] for e in starts] == sorted((e["ts"] for e in starts), reverse=True)
            deacon = client.query_events(actor="deacon", limit=1000)
            assert deacon and all("deacon" in e["actor"] for e in deacon)
            session = starts[0]["payload"]["session_id"]
            by_session = client.query_events(session=session, limit=1000)
            assert by_session and all(e["payload"]["session_id"] == session for e in by_session)
            oldest = client.query_events(limit=3, oldest_first=True)
            assert oldest[0]["ts"] == "2026-01-22T19:33:55Z"
            window = client.query_events(
                since="2026-01-23T00:00:00Z", until="2026-01-23T01:00:00Z", limit=1000
            )
            assert all("2026-01-23T00" <= e["ts"] <= "2026-01-23T01:00:00Z" for e in window)
            stored = SAMPLE_LOG.read_bytes().splitlines()
            raw = client.query(limit=1).events[0]
            assert bytes(raw) == stored[-1]  # the event exactly as stored
        listed = run_ctl(town, "events", "--type", "session_start", "-n", "5", "--json")
        assert listed.returncode == 0
        assert [line.encode() for line in listed.stdout.splitlines()] == [
            line for line in reversed(stored) if b'"type":"session_start"' in line
        ][:5]
        human = run_ctl(town, "events", "-n", "3")
        assert human.returncode == 0 and len(human.stdout.splitlines()) == 3
    finally:
        assert proc.terminate() == 0


# ------------------------------------------------------------- subscriptions


async def test_slow_subscriber_overflows_without_slowing_writers(town: Path) -> None:
    (town / "settings" / "gastownd.toml").write_text(
        "[retention]\nenabled = false\n[eventlog]\nsubscriber_queue = 5\n"
    )
    from gastown_client import paths
    from gastownd.process.app import App, build_state

    state = build_state(town, paths.default_config_path(town))
    app = App(state, install_signal_handlers=False)
    async with anyio.create_task_group() as tg:
        await tg.start(app.run)
        slow = AsyncClient(state.paths.socket)
        await slow.connect()
        pushes = await slow.subscribe()
        # Never read: the daemon must drop this subscriber, not wait for it.
        fast = AsyncClient(state.paths.socket)
        async with fast:
            for i in range(200):
                await fast.emit("flood", "tester", {"i": i, "pad": "z" * 2000})
            status = await fast.status()

        async def drain() -> None:
            async for _cursor, _event in pushes:
                pass

        with pytest.raises(RequestRejected) as info:
            await drain()
        assert info.value.code == "overflow"
        assert status.eventlog.appended == 200
        await slow.aclose()
        app.stop()


async def test_unsubscribe_ends_the_stream(daemon: InProcess) -> None:
    async with daemon.client() as client:
        from gastown_client.protocol import Subscribe, SubscribeResult, Unsubscribe

        sub = await client.call(Subscribe(), SubscribeResult)
        await client.send(Unsubscribe(subscription=sub.subscription))
        frames = [await client.read_frame(5), await client.read_frame(5)]
        kinds = {f.push or "reply" for f in frames}
        assert kinds == {"end", "reply"}
        with pytest.raises(RequestRejected):
            await client.call(Unsubscribe(subscription=999), SubscribeResult)


def test_cursor_resumes_across_restart_without_gaps_or_duplicates(town: Path) -> None:
    proc = DaemonProcess(town).wait_ready()
    with proc.client() as client:
        for i in range(5):
            client.emit("tick", "tester", {"i": i})
        subscription = client.subscribe(cursor="start")
        got = []
        for cursor, raw in subscription:
            got.append(json.loads(bytes(raw))["payload"]["i"])
            if len(got) == 3:
                resume_at = cursor
                break
    assert proc.terminate() == 0
    gt_append(town, gt_line(100, "tick"))
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            client.emit("tick", "tester", {"i": 5})
            subscription = client.subscribe(cursor=resume_at)
            assert not subscription.resync
            rest = []
            for _cursor, raw in subscription:
                payload = json.loads(bytes(raw))["payload"]
                rest.append(payload.get("i", payload.get("n")))
                if len(rest) == 4:
                    break
        assert got == [0, 1, 2]
        assert rest == [3, 4, 100, 5]
    finally:
        assert proc.terminate() == 0


def test_cursor_from_a_replaced_log_gets_resync(town: Path) -> None:
    proc = DaemonProcess(town).wait_ready()
    with proc.client() as client:
        cursor = client.emit("tick", "tester").cursor
    assert proc.terminate() == 0
    (town / ".events.jsonl").unlink()
    gt_append(town, gt_line(1))
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            subscription = client.subscribe(cursor=cursor)
            assert subscription.resync
            _cursor, raw = next(iter(subscription))
            assert json.loads(bytes(raw))["payload"] == {"n": 1}
    finally:
        assert proc.terminate() == 0


# ----------------------------------------------------------------- kill -9


def test_kill_9_while_emitting_loses_no_acknowledged_event(town: Path) -> None:
    cycles = int(os.environ.get("GASTOWND_KILL_CYCLES", "20"))
    acknowledged: list[str] = []
    for cycle in range(cycles):
        proc = DaemonProcess(town).wait_ready()
        client = proc.client()
        deadline = time.monotonic() + 0.15
        try:
            with client:
                i = 0
                while time.monotonic() < deadline:
                    client.emit("ack", "tester", {"id": f"{cycle}-{i}"})
                    acknowledged.append(f"{cycle}-{i}")
                    i += 1
                # Pipeline more without waiting, then kill mid-flight.
                for j in range(50):
                    client.send(_emit_request(f"{cycle}-p{j}"))
                proc.kill()
                try:
                    while True:
                        frame = client.read_frame()
                        if frame.ok and frame.id is not None:
                            pass
                except DaemonUnavailable:
                    pass
        except DaemonUnavailable:
            proc.kill()
    proc = DaemonProcess(town).wait_ready()
    try:
        raw = (town / ".events.jsonl").read_bytes()
        assert raw == b"" or raw.endswith(b"\n")
        ids = [json.loads(line)["payload"]["id"] for line in raw.splitlines()]
        assert len(ids) == len(set(ids))
        assert set(acknowledged) <= set(ids)
    finally:
        assert proc.terminate() == 0


def _emit_request(event_id: str):  # type: ignore[no-untyped-def]
    from gastown_client.protocol import Emit

    return Emit(type="ack", actor="tester", payload={"id": event_id})


def test_status_reports_eventlog_counters(daemon_proc: DaemonProcess, town: Path) -> None:
    with Client(daemon_proc.socket) as client:
        client.emit("x", "tester")
        status = client.status()
    assert status.eventlog.lines == 1
    assert status.eventlog.appended == 1
    assert status.eventlog.last_prune_at is None
    human = run_ctl(town, "status")
    assert "subscribers" in human.stdout and "last prune" in human.stdout


def test_index_snapshot_speeds_restart_and_stays_correct(town: Path) -> None:
    shutil.copy(SAMPLE_LOG, town / ".events.jsonl")
    proc = DaemonProcess(town).wait_ready()
    with proc.client() as client:
        before = client.query_events(types=["session_start"], limit=1000)
    assert proc.terminate() == 0
    assert (town / ".gastownd" / "index.snapshot").exists()
    gt_append(town, gt_line(1, "session_start"))  # appended while stopped
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.status().eventlog.lines == 612
            after = client.query_events(types=["session_start"], limit=1000)
            assert after[1:] == before and after[0]["payload"] == {"n": 1}
            assert client.query_events(session=before[0]["payload"]["session_id"])
        assert "index_snapshot_stale" not in proc.log()
    finally:
        assert proc.terminate() == 0
    # A rewrite behind our back makes the snapshot stale: the index is rebuilt.
    lines = (town / ".events.jsonl").read_bytes().splitlines(keepends=True)
    temp = town / "rewritten"
    temp.write_bytes(b"".join(lines[10:]))
    os.rename(temp, town / ".events.jsonl")
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.status().eventlog.lines == 602
            assert len(client.query_events(types=["session_start"], limit=1000)) == len(
                [x for x in lines[10:] if b'"session_start"' in x]
            )
        assert "index_snapshot_stale" in proc.log()
    finally:
        assert proc.terminate() == 0


def test_write_durability_acknowledges_and_still_syncs(town: Path) -> None:
    (town / "settings" / "gastownd.toml").write_text(
        '[retention]\nenabled = false\n[eventlog]\ndurability = "write"\nsync_interval = "20ms"\n'
    )
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            for i in range(20):
                client.emit("fast", "tester", {"i": i})
            assert client.status().eventlog.durability == "write"
        assert [line["payload"]["i"] for line in log_lines(town)] == list(range(20))
    finally:
        assert proc.terminate() == 0


def test_ctl_events_follow_prints_backlog_then_live_lines(
    daemon_proc: DaemonProcess, town: Path
) -> None:
    with daemon_proc.client() as client:
        client.emit("mail", "mayor", {"subject": "old"})
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gastown_client.cli",
            "--town-root",
            str(town),
            "events",
            "--follow",
            "--json",
            "--type",
            "mail",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["payload"] == {"subject": "old"}
        with daemon_proc.client() as client:
            client.emit("nudge", "mayor")  # filtered out
            client.emit("mail", "mayor", {"subject": "new"})
        assert json.loads(follower.stdout.readline())["payload"] == {"subject": "new"}
        gt_append(town, {**gt_line(1, "mail")})
        assert json.loads(follower.stdout.readline())["type"] == "mail"
    finally:
        follower.terminate()
        follower.wait(10)


async def test_a_stalled_subscriber_overflows_at_its_byte_cap_long_before_its_line_cap(
    town: Path,
) -> None:
    """Big lines fill a stalled subscriber's queue by bytes (``MAX_QUEUED_BYTES``) far below
    the default 10,000 lines: it is dropped the same way, not left holding gigabytes."""
    from gastown_client import paths
    from gastownd.process.app import App, build_state

    state = build_state(town, paths.default_config_path(town))
    app = App(state, install_signal_handlers=False)
    pad = "z" * 500_000
    # 3 x subscriptions.MAX_QUEUED_BYTES: well past the cap, even after socket buffers.
    lines = 3 * (8 << 20) // len(pad)
    async with anyio.create_task_group() as tg:
        await tg.start(app.run)
        slow = AsyncClient(state.paths.socket)
        await slow.connect()
        pushes = await slow.subscribe()
        fast = AsyncClient(state.paths.socket)
        async with fast:
            for i in range(lines):
                await fast.emit("flood", "tester", {"i": i, "pad": pad})

        async def drain() -> None:
            async for _cursor, _event in pushes:
                pass

        with pytest.raises(RequestRejected) as info, anyio.fail_after(30):
            await drain()
        assert info.value.code == "overflow"
        assert "8 MiB" in info.value.message
        await slow.aclose()
        app.stop()


async def test_a_flood_of_queries_leaves_the_daemons_own_threads_free(
    daemon: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads clients ask for take at most ``READ_THREADS`` worker threads: 60 slow queries in
    flight must leave anyio's other threads (the spool, prunes, snapshots) free at once."""
    from gastownd.eventlog import reads

    real_read_lines = reads.read_lines
    done = 0

    def slow_read_lines(*args: object) -> list[bytes]:
        nonlocal done
        time.sleep(0.05)
        done += 1
        return real_read_lines(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(reads, "read_lines", slow_read_lines)
    async with daemon.client() as client:
        for i in range(reads.INLINE_READ_LINES + 1):  # a query this long reads in a thread
            await client.emit("nudge", "gastown/crew/joe", {"i": i})

    async def query() -> None:
        async with daemon.client() as reader:
            result = await reader.query(types=["nudge"], limit=reads.INLINE_READ_LINES + 1)
            assert len(result.events) == reads.INLINE_READ_LINES + 1

    async with anyio.create_task_group() as tasks:
        for _ in range(60):
            tasks.start_soon(query)
        while done == 0:  # noqa: ASYNC110 - set in worker threads, where an Event cannot be
            await anyio.sleep(0.005)
        default = anyio.to_thread.current_default_thread_limiter()
        assert default.borrowed_tokens <= reads.READ_THREADS
        # The daemon's own work gets a thread at once, not after the flood's first 40.
        await anyio.to_thread.run_sync(lambda: None)
        assert done < 40, done


async def test_the_watcher_told_of_our_own_append_under_way_does_not_call_the_writer(
    daemon: InProcess, town: Path
) -> None:
    """Our appends wake the watcher too; while the writer's batch is on its way to the loop,
    the file ends where the writer is writing: no trip through the writer's thread (under
    gt's lock) for that. A change past it is still caught up."""
    eventlog = daemon.daemon.eventlog
    file = eventlog.file
    assert file is not None
    writer = eventlog.writer
    calls = []
    real_call = writer.call

    async def counted_call(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args)
        return await real_call(*args, **kwargs)

    writer.call = counted_call  # type: ignore[method-assign]
    data = json.dumps(gt_line(1), separators=(",", ":")).encode() + b"\n"
    # As the writer's thread does right before its write (lock held).
    file.writing_end = file.end + len(data)
    gt_append(town, gt_line(1))
    await eventlog.catch_up()
    await anyio.sleep(0.2)  # the watcher's own wake-up, too
    assert calls == []
    assert eventlog.external == 0
    # Not ours after all: the next change the watcher sees is caught up.
    file.writing_end = file.end
    await eventlog.catch_up()
    assert len(calls) >= 1
    assert eventlog.external == 1
