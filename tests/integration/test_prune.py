"""Retention through the daemon: what a prune removes, keeps, and never loses."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import DaemonProcess, run_ctl
from tests.integration.test_eventlog import gt_append

NOW = datetime.now(UTC)


def line(type_: str, age: timedelta, **payload: object) -> bytes:
    ts = (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        json.dumps(
            {
                "ts": ts,
                "source": "gt",
                "type": type_,
                "actor": "gastown/witness",
                "payload": payload,
                "visibility": "feed",
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
    )


def write_log(town: Path, lines: list[bytes]) -> None:
    (town / ".events.jsonl").write_bytes(b"".join(lines))


def configure(town: Path, extra: str = "") -> None:
    (town / "settings" / "gastownd.toml").write_text("[retention]\nenabled = false\n" + extra)


def test_prune_removes_expired_by_type_and_keeps_the_rest_in_order(town: Path) -> None:
    configure(town)
    lines = [
        line("patrol_started", timedelta(days=2), i=0),  # patrol_* 1d: expired
        line("mail", timedelta(days=2), i=1),  # 30d: kept
        b"garbage that is not json\n",  # malformed: kept
        line("nudge", timedelta(days=4), i=3),  # 3d: expired
        line("mass_death", timedelta(days=60), i=4),  # 90d: kept
        line("custom", timedelta(days=8), i=5),  # default 7d: expired
        line("nudge", timedelta(hours=1), i=6),  # kept
    ]
    write_log(town, lines)
    proc = DaemonProcess(town).wait_ready()
    try:
        inode = os.stat(town / ".events.jsonl").st_ino
        with proc.client() as client:
            dry = client.prune(dry_run=True)
            assert dry.pruned == {"custom": 1, "nudge": 1, "patrol_started": 1}
            assert os.stat(town / ".events.jsonl").st_ino == inode
            cursor = client.query(limit=1).cursor
            result = client.prune()
            assert result.pruned_total == 3
            assert result.kept == 4
            assert result.bytes_freed == len(lines[0]) + len(lines[3]) + len(lines[5])
            expected = [lines[1], lines[2], lines[4], lines[6]]
            assert (town / ".events.jsonl").read_bytes() == b"".join(expected)
            events = client.query_events(limit=10)
            assert [e["payload"]["i"] for e in events] == [6, 4, 1]
            assert client.query_events(types=["nudge"]) == [events[0]]
            status = client.status()
            assert status.eventlog.last_prune_removed == 3
            assert status.eventlog.lines == 4
            again = client.prune()
            assert again.pruned_total == 0
            # A cursor taken before the prune still resumes after it.
            client.emit("after", "tester")
            subscription = client.subscribe(cursor=cursor)
            _c, raw = next(iter(subscription))
            assert json.loads(bytes(raw))["type"] == "after"
        inode_after = os.stat(town / ".events.jsonl").st_ino
        with proc.client() as client:
            client.prune()
        assert os.stat(town / ".events.jsonl").st_ino == inode_after  # no-op: no rewrite
    finally:
        assert proc.terminate() == 0


def test_ctl_prune_reports_counts(town: Path) -> None:
    configure(town)
    write_log(town, [line("nudge", timedelta(days=5)), line("mail", timedelta(days=1))])
    proc = DaemonProcess(town).wait_ready()
    try:
        dry = run_ctl(town, "prune", "--dry-run")
        assert dry.returncode == 0 and "would remove 1 lines" in dry.stdout
        done = run_ctl(town, "prune", "--json")
        assert json.loads(done.stdout)["pruned"] == {"nudge": 1}
    finally:
        assert proc.terminate() == 0


def test_krc_file_and_min_retain_count_are_honoured(town: Path) -> None:
    configure(town)
    hour_ns = 3600 * 10**9
    (town / ".krc.yaml").write_text(
        json.dumps({"default_ttl": hour_ns, "ttls": {"mail": 2 * hour_ns}, "min_retain_count": 1})
    )
    write_log(
        town,
        [
            line("mail", timedelta(hours=5), i=0),
            line("mail", timedelta(hours=3), i=1),  # newest mail: kept by min_retain_count
            line("custom", timedelta(hours=3), i=2),  # default_ttl 1h: expired
            line("custom", timedelta(hours=2), i=3),  # newest custom: kept by min_retain_count
        ],
    )
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            result = client.prune()
        assert result.pruned == {"custom": 1, "mail": 1}
        kept = [
            json.loads(x)["payload"]["i"]
            for x in (town / ".events.jsonl").read_bytes().splitlines()
        ]
        assert kept == [1, 3]
    finally:
        assert proc.terminate() == 0


def test_archive_keeps_pruned_lines_in_daily_gzip_files(town: Path) -> None:
    configure(town, "archive = true\n")
    old = line("nudge", timedelta(days=10), i=0)
    write_log(town, [old, line("nudge", timedelta(hours=1), i=1)])
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.prune().archived == 1
        day = (NOW - timedelta(days=10)).strftime("%Y-%m-%d")
        archived = town / ".gastownd" / "archive" / f"events-{day}.jsonl.gz"
        assert gzip.decompress(archived.read_bytes()) == old
    finally:
        assert proc.terminate() == 0


def test_appends_racing_a_prune_are_never_lost(town: Path) -> None:
    configure(town)
    expired = [
        line("patrol_complete", timedelta(days=3), i=i, pad="p" * 200) for i in range(60_000)
    ]
    fresh = [line("mail", timedelta(minutes=5), i=i) for i in range(1000)]
    mixed = [x for pair in zip(expired[:1000], fresh, strict=True) for x in pair] + expired[1000:]
    write_log(town, mixed)
    proc = DaemonProcess(town).wait_ready()
    try:
        stop = threading.Event()
        emitted: list[int] = []

        def emitter() -> None:
            with proc.client() as client:
                n = 0
                while not stop.is_set() or n < 50:
                    client.emit("during_prune", "tester", {"n": n})
                    emitted.append(n)
                    n += 1

        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; sys.path.insert(0, '.');"
                "from tests.integration.test_eventlog import gt_append, gt_line;"
                "from pathlib import Path;"
                # Dated now: whether they arrive before or after the prune plans, they are
                # not expired (a fixed date expires as the calendar moves on).
                f"ts = {NOW.strftime('%Y-%m-%dT%H:%M:%SZ')!r};"
                f"[gt_append(Path({str(town)!r}), gt_line(i, 'gt_during', ts=ts))"
                " for i in range(300)]",
            ],
            cwd=Path(__file__).resolve().parents[2],
        )
        thread = threading.Thread(target=emitter)
        thread.start()
        with proc.client(timeout_s=120) as client:
            result = client.prune()
        stop.set()
        thread.join(60)
        assert writer.wait(60) == 0
        assert result.pruned == {"patrol_complete": 60_000}
        lines = [json.loads(x) for x in (town / ".events.jsonl").read_bytes().splitlines()]
        assert [x["payload"]["i"] for x in lines if x["type"] == "mail"] == list(range(1000))
        assert sorted(x["payload"]["n"] for x in lines if x["type"] == "during_prune") == emitted
        assert sorted(x["payload"]["n"] for x in lines if x["type"] == "gt_during") == list(
            range(300)
        )
        assert not any(x["type"] == "patrol_complete" for x in lines)
        with proc.client() as client:
            assert client.status().eventlog.lines == len(lines)
            assert len(client.query_events(types=["gt_during"], limit=1000)) == 300
        gt_append(town, json.loads(line("late", timedelta(0))))
    finally:
        assert proc.terminate() == 0


def test_seqs_of_pruned_newest_lines_are_never_reused(town: Path) -> None:
    """A prune can remove the newest lines (a short TTL type after long ones): the next
    line still gets a seq above every line ever seen, now and after a restart."""
    configure(town)
    write_log(
        town,
        [
            line("mail", timedelta(days=2), i=0),  # kept (30d)
            line("patrol_started", timedelta(days=2), i=1),  # expired (1d)
            line("patrol_started", timedelta(days=2), i=2),  # expired: the newest lines
        ],
    )
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            head = client.query(limit=1).cursor
            assert client.prune().pruned_total == 2
            after = client.emit("nudge", "gastown/witness").cursor
            assert int(after.split(":")[1]) > int(head.split(":")[1])
            subscription = client.subscribe(cursor=head)
            cursor, _event = next(iter(subscription))
            assert cursor == after
    finally:
        assert proc.terminate() == 0, proc.log()
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.query(limit=1).cursor == after
            later = client.emit("nudge", "gastown/witness").cursor
            assert int(later.split(":")[1]) == int(after.split(":")[1]) + 1
    finally:
        assert proc.terminate() == 0, proc.log()


def test_a_prune_that_empties_the_log_keeps_counting_seqs(town: Path) -> None:
    configure(town)
    write_log(town, [line("nudge", timedelta(days=9), i=n) for n in range(3)])
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            head = client.query(limit=1).cursor
            assert client.prune().kept == 0
            after = client.emit("nudge", "gastown/witness").cursor
            assert int(after.split(":")[1]) == int(head.split(":")[1]) + 1
    finally:
        assert proc.terminate() == 0, proc.log()


def test_a_flood_of_prune_requests_costs_a_few_runs_and_every_one_is_answered(
    town: Path,
) -> None:
    """Pipelined on four connections, two of which leave without reading: 240 requests would
    take a worker each, one after the other, and hold every later prune behind them."""
    from tests.integration.test_metrics import samples

    configure(town)  # no periodic prune: every run counted is a request's
    write_log(town, [line("nudge", timedelta(days=5)), line("mail", timedelta(days=1))])
    proc = DaemonProcess(town).wait_ready()
    per_connection = 60
    try:
        socks = []
        for _ in range(4):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            sock.connect(str(proc.socket))
            sock.sendall(b"".join(b'{"op":"prune","id":%d}\n' % i for i in range(per_connection)))
            socks.append(sock)
        for sock in socks[2:]:
            sock.close()
        for sock in socks[:2]:
            replies = read_frames(sock, per_connection)
            assert [r["id"] for r in replies] == list(range(per_connection))
            assert all(r["ok"] for r in replies), replies
            removed = [r["result"]["pruned"] for r in replies]
            # The first run removes the nudge; a run that starts later finds nothing to.
            assert all(p in ({"nudge": 1}, {}) for p in removed), removed
            sock.close()
        metrics = run_ctl(town, "metrics")
        assert metrics.returncode == 0, metrics.stderr
        runs = samples(metrics.stdout)[("gastownd_prune_seconds_count", ())]
        assert 1 <= runs <= 4, runs
        # And a prune asked now is answered by a run of its own.
        assert json.loads(run_ctl(town, "prune", "--json").stdout)["pruned"] == {}
    finally:
        assert proc.terminate() == 0


def read_frames(sock: socket.socket, count: int) -> list[dict[str, object]]:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(1 << 16)
        assert chunk, data
        data += chunk
    return [json.loads(frame) for frame in data.splitlines()]
