"""Protocol fuzzing against one live daemon over raw sockets.

Random bytes, mutated valid requests of every op, frames over the 1 MiB limit, partial frames
followed by a disconnect, slow senders, abrupt disconnects. Every reply is a JSON frame: a
structured error with a known code (never ``internal``, never a traceback) or ``ok`` true;
each complete frame gets exactly one reply; the daemon answers ``ping`` after every case and
its memory stays bounded.
"""

from __future__ import annotations

import collections
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gastown_client import codec, protocol
from tests.conftest import DaemonProcess
from tests.reliability._support import make_town, rss_kib

MAX_FRAME = 1 << 20
PARTIAL_TIMEOUT_S = 0.5
FUZZ_CONFIG = f"""
[server]
max_frame_bytes = {MAX_FRAME}
partial_frame_timeout = "{int(PARTIAL_TIMEOUT_S * 1000)}ms"
"""
KNOWN_CODES = frozenset(code.value for code in protocol.ErrorCode)
RSS_LIMIT_KIB = 150 * 1024
REPLY_TIMEOUT_S = 15.0


# ------------------------------------------------------------------ the daemon


@pytest.fixture(scope="module")
def fuzz_daemon() -> Iterator[DaemonProcess]:
    root = Path(tempfile.mkdtemp(prefix="gt-fz-", dir="/tmp"))
    make_town(root, FUZZ_CONFIG)
    proc = DaemonProcess(root).wait_ready()
    try:
        yield proc
        assert proc.proc.poll() is None, f"daemon died: {proc.log()}"
        assert_clean_log(proc)
        assert proc.terminate() == 0, proc.log()
    finally:
        if proc.proc.poll() is None:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def assert_clean_log(proc: DaemonProcess) -> None:
    """No traceback anywhere in the daemon's log."""
    for raw in proc.log_path.read_text(errors="replace").splitlines():
        entry = json.loads(raw)
        assert "exception" not in entry and "Traceback" not in raw, raw


# ------------------------------------------------------------------ raw wire


def connect(proc: DaemonProcess, timeout_s: float = REPLY_TIMEOUT_S) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    sock.connect(str(proc.socket))
    return sock


def check_frame(line: bytes) -> dict[str, Any]:
    """One frame from the daemon: JSON, and a well-formed reply or push."""
    assert b"Traceback" not in line, line[:500]
    frame = json.loads(line)
    assert isinstance(frame, dict), line[:500]
    if "push" in frame:
        assert frame["push"] in ("event", "overflow", "end"), frame
        assert isinstance(frame["subscription"], int), frame
        return frame
    assert frame.get("ok") in (True, False), frame
    assert "id" in frame, frame
    if frame["ok"]:
        assert set(frame) == {"id", "ok", "result"}, frame
    else:
        assert set(frame) == {"id", "ok", "error"}, frame
        error = frame["error"]
        assert error["code"] in KNOWN_CODES, frame
        assert isinstance(error["message"], str) and error["message"], frame
    return frame


class Wire:
    """Frames read off one raw connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.eof = False

    def frames(self) -> Iterator[dict[str, Any]]:
        """Every frame until EOF (or the socket's timeout, which fails the test)."""
        while True:
            newline = self.buffer.find(b"\n")
            if newline >= 0:
                line, self.buffer = self.buffer[:newline], self.buffer[newline + 1 :]
                frame = check_frame(line)
                if frame.get("ok") is False:
                    assert frame["error"]["code"] != "internal", f"a daemon bug: {frame}"
                yield frame
                continue
            data = self.sock.recv(1 << 16)
            if not data:
                self.eof = True
                assert self.buffer == b"", f"torn reply frame: {self.buffer[:300]!r}"
                return
            self.buffer += data

    def replies(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` replies (pushes are checked and skipped)."""
        got: list[dict[str, Any]] = []
        if count == 0:
            return got
        for frame in self.frames():
            if "push" not in frame:
                got.append(frame)
                if len(got) == count:
                    return got
        raise AssertionError(f"connection closed after {len(got)} of {count} replies: {got}")


def split_frames(data: bytes, *, tail_completed: bool) -> tuple[list[bytes], bytes]:
    """The complete frames in ``data`` and its unfinished tail (none when completed)."""
    *complete, tail = data.split(b"\n")
    if tail_completed:
        return [*complete, tail], b""
    return complete, tail


def expected_replies(data: bytes, *, tail_completed: bool) -> int:
    """How many replies the daemon owes for ``data``: one per complete non-blank frame, one
    per frame over the limit (``too_large``), none for blank lines or an unfinished tail."""
    complete, tail = split_frames(data, tail_completed=tail_completed)
    owed = sum(1 for part in complete if len(part) > MAX_FRAME or part.strip())
    return owed + (1 if len(tail) > MAX_FRAME else 0)


def ping_ok(proc: DaemonProcess, tag: str) -> None:
    with connect(proc, 10) as sock:
        sock.sendall(codec.encode_frame(protocol.Ping(id=tag)))
        [reply] = Wire(sock).replies(1)
    assert reply == {"id": tag, "ok": True, "result": {"pong": True}}


# ------------------------------------------------------------ seed requests


def seed_requests() -> list[protocol.Request]:
    """A valid request of every op, built from the protocol's own structs; an op whose
    request needs no field is its own seed."""
    written = _written_seeds()
    seeded = {type(request) for request in written}
    return written + [
        op.request()
        for op in protocol.OP_TABLE.values()
        if op.request not in seeded and not _required_fields(op.request)
    ]


def _required_fields(request: type[protocol.Request]) -> bool:
    return any(
        field.default is msgspec.NODEFAULT and field.default_factory is msgspec.NODEFAULT
        for field in msgspec.structs.fields(request)
    )


def _written_seeds() -> list[protocol.Request]:
    hook_payload = {"hook_event_name": "SessionStart", "session_id": "fz-hook", "source": "startup"}
    return [
        protocol.Hello(protocol=protocol.PROTOCOL_VERSION, client="fuzz/1"),
        protocol.Ping(),
        protocol.Status(),
        protocol.Emit(type="fuzz", actor="fuzz/actor", payload={"n": 1, "s": "é<&>"}),
        protocol.Query(types=["fuzz"], actor="fuzz", limit=5, since="2026-01-01T00:00:00Z"),
        protocol.Subscribe(types=["fuzz"]),
        protocol.Unsubscribe(subscription=1),
        protocol.Prune(dry_run=True),
        protocol.SessionStart(session="fz-1", actor="gastown/crew/fz", cwd="/t", topic="fuzz"),
        protocol.SessionStep(session="fz-1", kind="tool", ref="r1", payload={"a": [1, 2]}),
        protocol.WispGet(session="fz-1"),
        protocol.SessionEnd(session="fz-1", reason="done"),
        protocol.DigestGet(ref="fz-1"),
        protocol.Cv(actor="gastown/crew/fz", limit=5, verify=True),
        protocol.Sessions(role="crew", limit=5),
        protocol.ResolveSession(session="fz-1"),
        protocol.Attribute(issue="gt-1", session="fz-1", action="closed"),
        protocol.Attribution(issue="gt-1"),
        protocol.Metrics(),
        protocol.Hook(
            payload=msgspec.Raw(msgspec.json.encode(hook_payload)),
            env={"GT_ROLE": "gastown/crew/fzhook"},
            cwd="/t",
        ),
    ]


SEEDS: list[dict[str, Any]] = [json.loads(codec.encode(r)) for r in seed_requests()]


def test_every_op_has_a_seed_frame() -> None:
    assert {seed["op"] for seed in SEEDS} == set(protocol.OPS)


def test_seed_frames_are_valid_requests(fuzz_daemon: DaemonProcess) -> None:
    """The seeds in order on one connection, each answered ``ok`` true with its id."""
    subscription = -1
    with connect(fuzz_daemon) as sock:
        wire = Wire(sock)
        for number, seed in enumerate(SEEDS):
            frame = dict(seed, id=f"seed-{number}")
            if frame["op"] == "unsubscribe":
                frame["subscription"] = subscription
            if frame["op"] in ("session_start", "session_step", "wisp", "session_end"):
                frame["session"] = "fz-seed"
            if frame["op"] in ("digest",):
                frame["ref"] = "fz-seed"
            if frame["op"] in ("resolve_session", "attribute"):
                frame["session"] = "fz-seed"
            sock.sendall(json.dumps(frame).encode() + b"\n")
            [reply] = wire.replies(1)
            assert reply["id"] == f"seed-{number}" and reply["ok"] is True, (frame, reply)
            if frame["op"] == "subscribe":
                subscription = reply["result"]["subscription"]


# ------------------------------------------------------------------ strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(1 << 80), max_value=1 << 80)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["", " ", "start", "0:0", "1:-1", "…", "a" * 300, "gt-1", "fz-1"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@dataclass
class Case:
    kind: str
    data: bytes
    # "probe": finish the frame, send a ping, read every reply; "half_close": shut our
    # side, read every reply and EOF; "close": hang up without reading.
    ending: str
    chunks: int = 1


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    frame: Any = dict(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["drop", "add", "set", "op", "id", "wrap", "none"]))
        if not isinstance(frame, dict):
            break
        keys = sorted(frame)
        if action == "drop" and keys:
            frame.pop(draw(st.sampled_from(keys)))
        elif action == "add":
            frame[draw(st.text(max_size=10))] = draw(json_values)
        elif action == "set" and keys:
            frame[draw(st.sampled_from(keys))] = draw(json_values)
        elif action == "op":
            frame["op"] = draw(st.sampled_from(sorted(protocol.OPS)) | json_values)
        elif action == "id":
            frame["id"] = draw(json_values)
        elif action == "wrap":
            frame = draw(st.sampled_from([[frame], {"op": frame}, {"request": frame}]))
    data = json.dumps(frame, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["truncate", "insert", "flip", "dup", "escape"]))
        at = draw(st.integers(0, len(data)))
        if action == "truncate":
            data = data[:at]
        elif action == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif action == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif action == "dup":
            data = data[:at] + data[at // 2 : at] + data[at:]
        elif action == "escape":
            inserted = draw(st.sampled_from([b"\\ud800", b"\\u0000", b"\\", b'"']))
            data = data[:at] + inserted + data[at:]
    return data


def huge_frames() -> st.SearchStrategy[bytes]:
    def build(size: int, shape: str) -> bytes:
        if shape == "emit":
            head = b'{"op":"emit","type":"big","actor":"fuzz","payload":{"blob":"'
            return head + b"y" * max(0, size - len(head) - 4) + b'"}}'
        if shape == "spaces":
            return b" " * size
        return (b"\x00\xffjunk" * (size // 6 + 1))[:size]

    return st.builds(
        build,
        st.integers(MAX_FRAME - 64, MAX_FRAME + (MAX_FRAME // 2)),
        st.sampled_from(["emit", "spaces", "junk"]),
    )


endings = st.sampled_from(["probe", "probe", "half_close", "close"])
cases = st.one_of(
    st.builds(Case, kind=st.just("random"), data=st.binary(max_size=2048), ending=endings),
    st.builds(
        Case,
        kind=st.just("mutated"),
        data=st.lists(mutated_frames(), min_size=1, max_size=4).map(b"\n".join),
        ending=endings,
        chunks=st.integers(1, 6),
    ),
    st.builds(
        Case,
        kind=st.just("huge"),
        data=st.tuples(huge_frames(), st.sampled_from([b"", b"\n"])).map(b"".join),
        ending=endings,
    ),
    st.builds(
        Case,
        kind=st.just("partial"),
        data=st.builds(
            lambda seed, cut: seed[: max(1, int(len(seed) * cut))],
            st.sampled_from([json.dumps(s).encode() for s in SEEDS]),
            st.floats(0.0, 0.99),
        ),
        ending=st.just("close"),
    ),
    st.builds(
        Case,
        kind=st.just("abrupt"),
        data=st.lists(st.sampled_from([json.dumps(s).encode() for s in SEEDS]), max_size=30).map(
            lambda frames: b"".join(f + b"\n" for f in frames)
        ),
        ending=st.just("close"),
    ),
)


# ------------------------------------------------------------------ running a case


def run_case(proc: DaemonProcess, case: Case, number: int, seen: collections.Counter[str]) -> None:
    probe_id = f"probe-{number}"
    data = case.data
    with connect(proc) as sock:
        wire = Wire(sock)
        step = max(1, len(data) // case.chunks)
        for start in range(0, len(data), step):
            try:
                sock.sendall(data[start : start + step])
            except (BrokenPipeError, ConnectionResetError):
                break  # the daemon may close first (e.g. on a timeout); it is judged below
            if case.chunks > 1:
                time.sleep(0.002)
        if case.ending == "close":
            seen["closed"] += 1
            return
        if case.ending == "half_close":
            sock.shutdown(socket.SHUT_WR)
            owed = expected_replies(data, tail_completed=False)
            replies = [f for f in wire.frames() if "push" not in f]
            assert wire.eof
        else:
            sock.sendall(b"\n" + codec.encode_frame(protocol.Ping(id=probe_id)))
            owed = expected_replies(data, tail_completed=True)
            replies = wire.replies(owed + 1)
            probes = [r for r in replies if r["id"] == probe_id]
            assert probes == [{"id": probe_id, "ok": True, "result": {"pong": True}}], replies
            replies.remove(probes[0])
        assert len(replies) == owed, (case, replies)
        for reply in replies:
            seen["ok" if reply["ok"] else reply["error"]["code"]] += 1


def test_protocol_fuzz(fuzz_daemon: DaemonProcess, stress: bool) -> None:
    examples = 10_000 if stress else 200
    seen: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    rss: list[int] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def fuzz(case: Case) -> None:
        number = sum(kinds.values())
        kinds[case.kind] += 1
        run_case(fuzz_daemon, case, number, seen)
        ping_ok(fuzz_daemon, f"after-{number}")
        if number % 50 == 0:
            rss.append(rss_kib(fuzz_daemon.proc.pid))
            assert rss[-1] < RSS_LIMIT_KIB, f"RSS {rss[-1]} KiB after {number} cases"

    fuzz()
    ping_ok(fuzz_daemon, "final")
    final_rss = rss_kib(fuzz_daemon.proc.pid)
    assert final_rss < RSS_LIMIT_KIB, f"RSS {final_rss} KiB, samples {rss}"
    assert sum(kinds.values()) >= examples
    assert set(kinds) == {"random", "mutated", "huge", "partial", "abrupt"}, kinds
    assert seen["ok"] > 0 and seen["bad_request"] > 0 and seen["too_large"] > 0, seen
    assert_clean_log(fuzz_daemon)


# ------------------------------------------------------------------ slow senders


def read_all(sock: socket.socket) -> list[dict[str, Any]]:
    wire = Wire(sock)
    frames = list(wire.frames())
    assert wire.eof
    return frames


def test_trickling_sender_is_cut_off_after_partial_frame_timeout(
    fuzz_daemon: DaemonProcess,
) -> None:
    """One byte every 60 ms: the frame deadline runs from its first byte, not the last."""
    frame = codec.encode_frame(protocol.Ping(id="trickle"))
    started = time.monotonic()
    with connect(fuzz_daemon) as sock:
        for byte in frame[:-1]:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.06)
            if time.monotonic() - started > PARTIAL_TIMEOUT_S * 4:
                break
        frames = read_all(sock)
    elapsed = time.monotonic() - started
    assert len(frames) == 1, frames
    assert frames[0]["id"] is None and frames[0]["ok"] is False
    assert frames[0]["error"]["code"] == "timeout"
    assert PARTIAL_TIMEOUT_S * 0.9 <= elapsed < PARTIAL_TIMEOUT_S * 4 + 1
    ping_ok(fuzz_daemon, "after-trickle")


def test_stalled_partial_frame_gets_timeout_then_close(fuzz_daemon: DaemonProcess) -> None:
    with connect(fuzz_daemon) as sock:
        sock.sendall(codec.encode_frame(protocol.Ping(id="ok-first")) + b'{"op":"pi')
        started = time.monotonic()
        frames = read_all(sock)
        elapsed = time.monotonic() - started
    assert [f["id"] for f in frames] == ["ok-first", None]
    assert frames[0]["ok"] is True
    assert frames[1]["error"]["code"] == "timeout" and "stalled" in frames[1]["error"]["message"]
    assert PARTIAL_TIMEOUT_S * 0.9 <= elapsed < PARTIAL_TIMEOUT_S + 5
    ping_ok(fuzz_daemon, "after-stall")


def test_slow_sender_within_the_timeout_and_idle_connection_are_served(
    fuzz_daemon: DaemonProcess,
) -> None:
    frame = codec.encode_frame(protocol.Ping(id="slow-ok"))
    with connect(fuzz_daemon) as sock:
        time.sleep(PARTIAL_TIMEOUT_S * 1.6)  # idle, no partial frame: not a stall
        third = len(frame) // 3
        for part in (frame[:third], frame[third : 2 * third], frame[2 * third :]):
            sock.sendall(part)
            time.sleep(PARTIAL_TIMEOUT_S / 6)
        [reply] = Wire(sock).replies(1)
    assert reply == {"id": "slow-ok", "ok": True, "result": {"pong": True}}


def test_pipelined_burst_is_answered_in_full(fuzz_daemon: DaemonProcess) -> None:
    """5000 requests written while the replies pile up: each answered once, none lost."""
    count = 5000
    payload = b"".join(codec.encode_frame(protocol.Ping(id=i)) for i in range(count))
    with connect(fuzz_daemon) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        replies = Wire(sock).replies(count)
        sender.join(30)
    assert sorted(r["id"] for r in replies) == list(range(count))
    assert all(r["ok"] for r in replies)


def test_huge_frame_costs_an_error_not_the_connection(fuzz_daemon: DaemonProcess) -> None:
    with connect(fuzz_daemon) as sock:
        sock.sendall(b'{"op":"ping","id":"' + b"z" * (3 * MAX_FRAME) + b'"}\n')
        sock.sendall(codec.encode_frame(protocol.Ping(id="after-huge")))
        first, second = Wire(sock).replies(2)
    assert first["id"] is None and first["error"]["code"] == "too_large"
    assert second == {"id": "after-huge", "ok": True, "result": {"pong": True}}


# ------------------------------------------------------------------ found by fuzzing
# Each of these once answered ``internal`` with a traceback; now ``bad_request``.


def send_one(proc: DaemonProcess, frame: bytes) -> dict[str, Any]:
    with connect(proc) as sock:
        sock.sendall(frame + b"\n")
        [reply] = Wire(sock).replies(1)
    return reply


@pytest.mark.parametrize(
    "frame",
    [
        b'{"op":"ping","id":1.5',
        b'{"op":"hello","protocol":1,"client":null',
        b'{"op":"nope","id":2',
        b'{"op":"query","limit":"x"}}',
    ],
)
def test_type_error_before_json_syntax_error_is_bad_request(
    fuzz_daemon: DaemonProcess, frame: bytes
) -> None:
    reply = send_one(fuzz_daemon, frame)
    assert reply["id"] is None and reply["ok"] is False
    assert reply["error"]["code"] == "bad_request", reply


@pytest.mark.parametrize(
    "frame",
    [
        b'{"op":"ping","id":"\xff"}',
        b'{"op":"emit","type":"x","actor":"a","payload":{"k":"\xc3"},"id":7}',
        b'{"op":"session_start","session":"\xf4\x90\x80\x80","actor":"a/b","id":8}',
    ],
)
def test_invalid_utf8_in_a_string_is_bad_request(fuzz_daemon: DaemonProcess, frame: bytes) -> None:
    reply = send_one(fuzz_daemon, frame)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "bad_request", reply


def test_invalid_utf8_in_a_hook_payload_is_bad_request(fuzz_daemon: DaemonProcess) -> None:
    frame = (
        b'{"op":"hook","id":9,"payload":{"hook_event_name":"SessionStart",'
        b'"session_id":"s\xff1","source":"startup"},"env":{},"cwd":"/t"}'
    )
    reply = send_one(fuzz_daemon, frame)
    assert reply["id"] == 9 and reply["ok"] is False
    assert reply["error"]["code"] == "bad_request", reply
