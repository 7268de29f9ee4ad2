"""Hostile event-log lines: whatever another writer appends to ``.events.jsonl`` under gt's lock.

docs/reliability.md ("Event log lines") gives the limits: a line is indexed only if every
reader can take it whole (at most 1 MiB, nested at most 256 deep, valid UTF-8, a JSON object
msgspec decodes in full, string ``ts``/``type``/``actor``, a ``ts`` that is a timestamp); any
other line is kept in the file untouched, counted as malformed and skipped by queries and
subscriptions. Each case here asserts that the daemon still answers ``ping``, that every
acknowledged emit is still served, that exactly the lines the oracle below calls indexable
are served (by a query and by a subscription from the start, byte for byte), and, at the end
of each run, that a snapshot restart and a cold start both succeed and agree.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gastown_client.protocol import MAX_NESTING
from gastownd.core.events import MAX_LINE_BYTES, parse_ts
from tests.conftest import DaemonProcess, run_ctl
from tests.reliability._support import make_town
from tests.reliability.test_poison_input import append_like_gt

SNAPSHOT = Path(".gastownd") / "index.snapshot"
TS = b'"2026-11-25T00:00:00Z"'
SETTLE_S = 10.0


# ------------------------------------------------------------------ the oracle


def nesting(line: bytes) -> int:
    """Deepest bracket nesting outside strings: a plain loop, independent of the daemon's."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def indexable(line: bytes) -> bool:
    """What docs/reliability.md promises about one line (no newline)."""
    if len(line) > MAX_LINE_BYTES or nesting(line) > MAX_NESTING:
        return False
    try:
        value = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError):
        return False
    if not isinstance(value, dict):
        return False
    ts, type_, actor = value.get("ts"), value.get("type"), value.get("actor", "")
    return (
        isinstance(ts, str)
        and isinstance(type_, str)
        and isinstance(actor, str)
        and parse_ts(ts) is not None
    )


# ------------------------------------------------------------------ hostile lines


def line_with(
    fragment: bytes, *, at: str = "payload", actor: bytes = b'"hostile"', tag: int = 0
) -> bytes:
    """A gt-shaped line with ``fragment`` as a payload value, key, actor or type, or whole."""
    if at == "whole":
        return fragment
    payload = b'{"n":%d,"v":%s}' % (tag, fragment)
    type_ = b'"hostile"'
    if at == "key":
        payload = b'{"n":%d,%s:1}' % (tag, fragment)
    elif at == "actor":
        actor = fragment
    elif at == "type":
        type_ = fragment
    elif at == "ts":
        return b'{"ts":%s,"source":"gt","type":"hostile","actor":%s,"payload":{"n":%d}}' % (
            fragment,
            actor,
            tag,
        )
    return b'{"ts":%s,"source":"gt","type":%s,"actor":%s,"payload":%s,"visibility":"feed"}' % (
        TS,
        type_,
        actor,
        payload,
    )


def deep(depth: int, opener: bytes = b"[") -> bytes:
    """A value nested ``depth`` deep: arrays, or objects with one key each."""
    if opener == b"[":
        return b"[" * depth + b"]" * depth
    return b'{"k":' * depth + b"1" + b"}" * depth


NUMBERS = [
    b"9223372036854775807",
    b"9223372036854775808",  # 2**63
    b"-18446744073709551616",  # -2**64
    b"1" + b"0" * 400,
    b"1" * 5000,
    b"1e400",
    b"-1e400",
    b"1E+309",
    b"1.7976931348623157e308",
    b"1e-400",
    b"0." + b"0" * 400 + b"1",
    b"NaN",
    b"Infinity",
    b"-Infinity",
]
STRINGS = [
    b'"\xff\xfe"',  # invalid UTF-8
    b'"\xc3"',  # a truncated sequence
    b'"\xed\xa0\x80"',  # a surrogate encoded as UTF-8
    b'"\\ud800"',  # a lone high surrogate
    b'"\\udc00x"',  # a lone low surrogate
    b'"\\ud83d\\ude00"',  # a valid pair
    b'"a\x00b"',  # a raw NUL
    b'"a\\u0000b"',  # an escaped NUL
    b'"\xef\xbb\xbfbom"',  # a BOM inside a string
    b'"\\"\\\\[[[["',  # brackets and escapes inside a string
]
WHOLE_LINES = [
    b"",
    b"   ",
    b"\x00" * 32,
    b"\xef\xbb\xbf" + line_with(b"1"),  # a BOM before the line
    b"[1,2,3]",
    b'"just a string"',
    line_with(b"1") + line_with(b"2"),  # two objects on one line
    b'{"ts":"2026-11-25T00:00:00Z","ts":"2026-11-25T00:00:01Z","type":"dup","actor":"a"}',
    b'{"ts":"2026-11-25T00:00:00Z","type":"dup","actor":"a","payload":{"k":1,"k":2}}',
    b'{"ts":"9999-99-99T00:00:00Z","type":"t","actor":"a"}',
    b'{"ts":"2026-11-25T00:00:00Z"}',
    b"{" * 100_000,
]


@st.composite
def hostile_lines(draw: st.DrawFn, max_depth: int) -> bytes:
    kind = draw(st.sampled_from(["deep", "number", "string", "whole", "truncated", "long"]))
    at = draw(st.sampled_from(["payload", "key", "actor", "type", "ts"]))
    if kind == "deep":
        depth = draw(
            st.one_of(
                st.sampled_from([MAX_NESTING - 2, MAX_NESTING - 1, MAX_NESTING, 1_000, max_depth]),
                st.integers(1, max_depth),
            )
        )
        opener = draw(st.sampled_from([b"[", b"{"]))
        return line_with(deep(depth, opener), at="payload" if at in ("key", "ts") else at)
    if kind == "number":
        return line_with(draw(st.sampled_from(NUMBERS)), at=at if at != "key" else "payload")
    if kind == "string":
        return line_with(draw(st.sampled_from(STRINGS)), at=at)
    if kind == "whole":
        return draw(st.sampled_from(WHOLE_LINES))
    if kind == "truncated":
        whole = line_with(draw(st.sampled_from(NUMBERS + STRINGS)), at=at)
        return whole[: draw(st.integers(0, len(whole) - 1))]
    # Lines near the 1 MiB limit: test_line_length_limit (here they would add up past
    # what one query reply may hold).
    size = draw(st.sampled_from([1 << 10, 64 << 10]))
    return line_with(b'"' + b"x" * size + b'"')


# ------------------------------------------------------------------ checks


def served(proc: DaemonProcess) -> list[bytes]:
    """Every line the daemon serves, oldest first, as stored."""
    with proc.client() as client:
        return [bytes(raw) for raw in client.query(limit=100_000, oldest_first=True).events]


def subscribed(proc: DaemonProcess, count: int) -> list[bytes]:
    """The first ``count`` lines of a subscription from the start."""
    lines: list[bytes] = []
    if count == 0:
        return lines
    with proc.client(timeout_s=15.0) as client:
        for _cursor, raw in client.subscribe(cursor="start"):
            lines.append(bytes(raw))
            if len(lines) == count:
                return lines
    return lines


def expected(town: Path) -> tuple[list[bytes], int]:
    """The lines the oracle calls indexable, and how many it does not."""
    raw = (town / ".events.jsonl").read_bytes()
    assert raw == b"" or raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    good = [line for line in lines if indexable(line)]
    return good, len(lines) - len(good)


def wait_indexed(proc: DaemonProcess, town: Path) -> None:
    size = (town / ".events.jsonl").stat().st_size
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        with proc.client() as client:
            if client.status().eventlog.bytes == size:
                return
        time.sleep(0.02)
    raise AssertionError(f"the daemon did not index up to byte {size}: {proc.log()}")


def check_consistent(proc: DaemonProcess, town: Path, acknowledged: list[bytes]) -> None:
    wait_indexed(proc, town)
    good, malformed = expected(town)
    lines = served(proc)
    assert lines == good
    for line in lines:  # every served line decodes whole, for every client
        msgspec.json.decode(line)
        json.loads(line)
    assert subscribed(proc, len(good)) == good
    with proc.client() as client:
        assert client.ping().pong
        status = client.status().eventlog
    assert status.malformed == malformed
    assert status.lines == len(good) + malformed
    missing = [line for line in acknowledged if line not in lines]
    assert not missing, missing[:3]


def restart_both_ways(proc: DaemonProcess, town: Path, acknowledged: list[bytes]) -> DaemonProcess:
    """A clean stop (which saves the snapshot), a start from it, then a cold start."""
    assert proc.terminate() == 0, proc.log()
    assert (town / SNAPSHOT).exists()
    proc = DaemonProcess(town).wait_ready()
    check_consistent(proc, town, acknowledged)
    log = proc.log()
    assert "index_snapshot_unusable" not in log and "index_snapshot_unreadable" not in log, log
    assert proc.terminate() == 0, proc.log()
    (town / SNAPSHOT).unlink()
    proc = DaemonProcess(town).wait_ready()
    check_consistent(proc, town, acknowledged)
    return proc


def assert_no_traceback(proc: DaemonProcess) -> None:
    for raw in proc.log_path.read_text(errors="replace").splitlines():
        entry = json.loads(raw)
        assert "exception" not in entry and "Traceback" not in raw, raw


@pytest.fixture
def hostile_town() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="gt-hl-", dir="/tmp"))
    make_town(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def stop(proc: DaemonProcess) -> None:
    if proc.proc.poll() is None:
        assert proc.terminate() == 0, proc.log()


# ------------------------------------------------------------------ the reported case


def test_deep_line_appended_while_running_is_skipped_and_start_up_survives(
    hostile_town: Path,
) -> None:
    """The report: a line ~1,000 levels deep made the watcher lose its place, the CLI crash,
    and every later cold start exit 70."""
    town = hostile_town
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            before = bytes(client.emit("before", "tester").event)
        append_like_gt(town, line_with(deep(1_000)) + b"\n")
        append_like_gt(town, line_with(b"1", tag=1) + b"\n")
        with proc.client() as client:
            after = bytes(client.emit("after", "tester").event)
        check_consistent(proc, town, [before, after])
        assert len(served(proc)) == 3
        assert '"eventlog_malformed_lines"' in proc.log()
        proc = restart_both_ways(proc, town, [before, after])
        assert_no_traceback(proc)
    finally:
        stop(proc)


def test_deep_line_present_at_cold_start_is_skipped(hostile_town: Path) -> None:
    town = hostile_town
    good = line_with(b"1") + b"\n"
    (town / ".events.jsonl").write_bytes(good + line_with(deep(100_000, b"{")) + b"\n" + good)
    proc = DaemonProcess(town).wait_ready()
    try:
        check_consistent(proc, town, [good[:-1]])
        with proc.client() as client:
            assert client.status().eventlog.malformed == 1
        proc = restart_both_ways(proc, town, [good[:-1]])
    finally:
        stop(proc)


@pytest.mark.parametrize(
    "line",
    [
        line_with(b"1e400"),
        line_with(b'"\xff"'),
        line_with(b'"\xff"', at="key"),
        line_with(b'"\\ud800"'),
        line_with(b"1" * 5000),
    ],
    ids=["1e400", "invalid-utf8-value", "invalid-utf8-key", "lone-surrogate", "5000-digits"],
)
def test_line_a_client_cannot_decode_is_never_served(hostile_town: Path, line: bytes) -> None:
    """Before: the index skipped the payload unread, so such a line was served and
    ``gastownctl events`` (msgspec) crashed on it."""
    town = hostile_town
    (town / ".events.jsonl").write_bytes(line + b"\n" + line_with(b"2") + b"\n")
    proc = DaemonProcess(town).wait_ready()
    try:
        check_consistent(proc, town, [line_with(b"2")])
        assert served(proc) == [line_with(b"2")]
        shown = run_ctl(town, "events", "-n", "50")
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
        assert shown.stdout.count("\n") == 1 and "v=2" in shown.stdout, shown.stdout
    finally:
        stop(proc)


@pytest.mark.parametrize("extra", [-1, 0, 1, 1000])
def test_line_length_limit(hostile_town: Path, extra: int) -> None:
    """A line of exactly 1 MiB is indexed; one byte more is malformed (kept, skipped)."""
    town = hostile_town
    shell = len(line_with(b'""'))
    line = line_with(b'"' + b"x" * (MAX_LINE_BYTES - shell + extra) + b'"')
    assert len(line) == MAX_LINE_BYTES + extra
    (town / ".events.jsonl").write_bytes(line + b"\n" + line_with(b"2") + b"\n")
    proc = DaemonProcess(town).wait_ready()
    try:
        append_like_gt(town, line + b"\n")
        check_consistent(proc, town, [line_with(b"2")])
        assert len(served(proc)) == (3 if extra <= 0 else 1)
    finally:
        stop(proc)


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_a_line_of_any_length_is_never_held_whole(hostile_town: Path) -> None:
    """A 128 MiB line, at start-up and appended while running: malformed, and the daemon's
    peak memory stays below the line's size (it used to read it whole, about 3 times)."""
    town = hostile_town
    huge = line_with(b'"' + b"x" * (128 << 20) + b'"')
    good = line_with(b"1")
    (town / ".events.jsonl").write_bytes(good + b"\n" + huge + b"\n")
    proc = DaemonProcess(town).wait_ready(60)
    try:
        append_like_gt(town, huge + b"\n" + good + b"\n")
        wait_indexed(proc, town)
        with proc.client() as client:
            status = client.status().eventlog
        assert (status.lines, status.malformed) == (4, 2)
        assert served(proc) == [good, good]
        assert peak_rss_kib(proc.pid) < (128 << 10), peak_rss_kib(proc.pid)
        proc = restart_both_ways(proc, town, [good])
        assert peak_rss_kib(proc.pid) < (128 << 10), peak_rss_kib(proc.pid)
    finally:
        stop(proc)


# ------------------------------------------------------------------ snapshots


def saved_snapshot(town: Path) -> bytes:
    proc = DaemonProcess(town).wait_ready()
    with proc.client() as client:
        client.emit("one", "tester")
        client.emit("two", "tester")
    assert proc.terminate() == 0, proc.log()
    return (town / SNAPSHOT).read_bytes()


def corruptions(snapshot: bytes) -> list[tuple[str, bytes]]:
    head, _, blobs = snapshot.partition(b"\n")
    meta = json.loads(head)
    wrong_ids = dict(meta)
    wrong_ids["header"] = dict(meta["header"], type_names=[])
    wrong_count = dict(meta)
    wrong_count["header"] = dict(meta["header"], malformed=1)
    return [
        ("empty", b""),
        ("garbage", b"\x00\xff" * 100),
        ("header-only", head + b"\n"),
        ("deep-header", b"[" * 100_000 + b"\n" + blobs),
        ("cut-blobs", snapshot[:-5]),
        ("flipped-blobs", head + b"\n" + bytes(b ^ 0xFF for b in blobs)),
        ("ids-out-of-range", json.dumps(wrong_ids).encode() + b"\n" + blobs),
        ("malformed-count", json.dumps(wrong_count).encode() + b"\n" + blobs),
        ("negative-sizes", json.dumps(dict(meta, blob_sizes=[-1] * 10)).encode() + b"\n" + blobs),
    ]


def test_a_damaged_snapshot_costs_a_rebuild_never_the_start(hostile_town: Path) -> None:
    town = hostile_town
    snapshot = saved_snapshot(town)
    good, _ = expected(town)
    assert len(good) == 2
    for name, damaged in corruptions(snapshot):
        (town / SNAPSHOT).write_bytes(damaged)
        proc = DaemonProcess(town).wait_ready()
        try:
            check_consistent(proc, town, good)
        finally:
            stop(proc)
        assert proc.proc.returncode == 0, (name, proc.log())


# ------------------------------------------------------------------ the property


def test_hostile_lines_never_break_the_index(hostile_town: Path, stress: bool) -> None:
    """Random hostile lines appended gt-style between acknowledged emits; after each batch
    the daemon serves exactly the indexable lines; then both restarts agree."""
    town = hostile_town
    examples = 1_000 if stress else 40
    max_depth = 100_000 if stress else 5_000
    acknowledged: list[bytes] = []
    proc = DaemonProcess(town).wait_ready()
    try:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(lines=st.lists(hostile_lines(max_depth), min_size=1, max_size=4))
        def append_hostile(lines: list[bytes]) -> None:
            for line in lines:
                append_like_gt(town, line + b"\n")
            with proc.client() as client:
                acknowledged.append(bytes(client.emit("acked", "tester", {"n": 1}).event))
                assert client.ping().pong

        append_hostile()
        check_consistent(proc, town, acknowledged)
        proc = restart_both_ways(proc, town, acknowledged)
        assert_no_traceback(proc)
    finally:
        stop(proc)
