"""Hostile requests on the socket, and connections that hold a slot and say nothing.

docs/reliability.md ("Requests" and "Connections") gives the limits: a frame nested deeper
than 256 levels, or one msgspec cannot decode, gets one ``bad_request`` reply (``id`` null
when it cannot be read) on the same connection, which stays open; at ``max_connections`` a
new client is served by closing the connection idle longest that holds no request,
subscription or partial frame (it gets a ``timeout`` frame); subscribers are never closed
for idleness; refusals and rejections are logged once per cause and interval, with counts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gastown_client import paths, protocol
from gastown_client.codec import encode_frame
from tests.conftest import DaemonProcess
from tests.reliability._support import make_town
from tests.reliability.test_fuzz import Wire, ping_ok
from tests.reliability.test_hostile_log import (
    NUMBERS,
    STRINGS,
    assert_no_traceback,
    check_consistent,
    deep,
    restart_both_ways,
    stop,
)
from tests.reliability.test_poison_input import append_like_gt

TOO_DEEP = f"nests arrays and objects deeper than {protocol.MAX_NESTING} levels"


@pytest.fixture
def request_town() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="gt-hr-", dir="/tmp"))
    make_town(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def connect(proc: DaemonProcess, timeout_s: float = 15.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    sock.connect(str(proc.socket))
    return sock


def exchange(sock: socket.socket, wire: Wire, frame: bytes) -> dict[str, Any]:
    """Send one frame, return its one reply, then check the connection still answers."""
    sock.sendall(frame + b"\n")
    [reply] = wire.replies(1)
    sock.sendall(encode_frame(protocol.Ping(id="after")))
    [pong] = wire.replies(1)
    assert pong == {"id": "after", "ok": True, "result": {"pong": True}}, pong
    return reply


# ------------------------------------------------------------------ the reported case


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[DaemonProcess]:
    """One daemon for the cases that change nothing."""
    root = Path(tempfile.mkdtemp(prefix="gt-hr-", dir="/tmp"))
    proc = DaemonProcess(make_town(root)).wait_ready()
    try:
        yield proc
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("depth", [protocol.MAX_NESTING + 1, 1_000, 100_000])
@pytest.mark.parametrize("place", ["ping-field", "emit-payload", "hook-payload"])
def test_deep_request_gets_bad_request_on_the_same_connection(
    shared_daemon: DaemonProcess, depth: int, place: str
) -> None:
    """Before: the connection was dropped with no reply and a traceback hit the log."""
    value = deep(depth)
    frame = {
        "ping-field": b'{"op":"ping","id":3,"x":' + value + b"}",
        "emit-payload": b'{"op":"emit","id":3,"type":"t","actor":"a","payload":{"v":'
        + value
        + b"}}",
        "hook-payload": b'{"op":"hook","id":3,"payload":{"hook_event_name":"Stop","v":'
        + value
        + b'},"env":{}}',
    }[place]
    proc = shared_daemon
    with connect(proc) as sock:
        reply = exchange(sock, Wire(sock), frame)
    assert reply["ok"] is False and reply["id"] is None, reply
    assert reply["error"]["code"] == "bad_request" and TOO_DEEP in reply["error"]["message"]
    assert_no_traceback(proc)
    assert '"request_rejected"' in proc.log()
    check_consistent(proc, proc.town, [])


def test_nesting_at_the_limit_is_accepted(request_town: Path) -> None:
    """256 levels in all: the frame, ``payload`` and 254 more."""
    value = deep(protocol.MAX_NESTING - 2)
    frame = b'{"op":"emit","id":4,"type":"t","actor":"a","payload":{"v":' + value + b"}}"
    proc = DaemonProcess(request_town).wait_ready()
    try:
        with connect(proc) as sock:
            reply = exchange(sock, Wire(sock), frame)
        assert reply["ok"] is True, reply
        check_consistent(proc, request_town, [])
        proc = restart_both_ways(proc, request_town, [])
        with proc.client() as client:
            assert len(client.query(types=["t"]).events) == 1
    finally:
        stop(proc)


def hook_frame(payload: bytes, town: Path) -> bytes:
    return (
        b'{"op":"hook","id":1,"payload":'
        + payload
        + b',"env":{"GT_ROLE":"gastown/crew/deep"},"cwd":"'
        + str(town).encode()
        + b'","pid":1,"ppid":1,"at":1.0,"spooled_at":2.0}\n'
    )


def test_deep_spooled_hook_is_rejected_and_the_rest_is_applied(request_town: Path) -> None:
    """Before: ``spooled_request_failed`` with a traceback. Now it is rejected like any bad
    request, and the spooled call after it is still applied."""
    town = request_town
    spool = paths.spool_dir(town)
    spool.mkdir(parents=True, mode=0o700)
    deep_payload = b'{"hook_event_name":"Stop","session_id":"deep-1","v":' + deep(5_000) + b"}"
    good_payload = b'{"hook_event_name":"SessionStart","session_id":"ok-1","source":"startup"}'
    (spool / f"hook-{os.getuid()}.jsonl").write_bytes(
        hook_frame(deep_payload, town) + hook_frame(good_payload, town)
    )
    proc = DaemonProcess(town).wait_ready()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(spool.iterdir()):
            time.sleep(0.05)
        assert list(spool.iterdir()) == []
        with proc.client() as client:
            assert client.wisp("ok-1").session_id == "ok-1"
        log = proc.log()
        assert "spooled_request_rejected" in log and TOO_DEEP in log, log
        assert "spooled_request_failed" not in log, log
        assert_no_traceback(proc)
    finally:
        stop(proc)


# ------------------------------------------------------------------ the property


KNOWN_CODES = frozenset(code.value for code in protocol.ErrorCode) - {"internal"}


@st.composite
def hostile_frames(draw: st.DrawFn, max_depth: int) -> bytes:
    kind = draw(st.sampled_from(["deep", "number", "string", "truncated", "long", "junk"]))
    if kind == "deep":
        depth = draw(
            st.one_of(
                st.sampled_from([protocol.MAX_NESTING - 2, protocol.MAX_NESTING + 1, max_depth]),
                st.integers(1, max_depth),
            )
        )
        value = deep(depth, draw(st.sampled_from([b"[", b"{"])))
    elif kind == "number":
        value = draw(st.sampled_from(NUMBERS))
    elif kind == "string":
        value = draw(st.sampled_from(STRINGS))
    elif kind == "long":
        value = b'"' + b"x" * draw(st.sampled_from([1 << 10, 900 << 10, 2 << 20])) + b'"'
    else:
        value = draw(st.binary(min_size=1, max_size=64)).replace(b"\n", b" ")
    template = draw(
        st.sampled_from(
            [
                b'{"op":"ping","id":%s}',
                b'{"op":"ping","id":1,"x":%s}',
                b'{"op":"emit","id":2,"type":"t","actor":"a","payload":{"v":%s}}',
                b'{"op":"emit","id":2,"type":"t","actor":%s}',
                b'{"op":"query","id":3,"limit":%s}',
                b'{"op":"hook","id":4,"payload":{"hook_event_name":"Stop","v":%s},"env":{}}',
                b'{"op":"session_start","id":5,"session":%s,"actor":"gastown/crew/x"}',
                b"%s",
            ]
        )
    )
    frame = template % value
    if kind == "truncated":
        frame = frame[: draw(st.integers(1, max(1, len(frame) - 1)))]
    bom = draw(st.booleans())
    return (b"\xef\xbb\xbf" if bom else b"") + frame


def test_hostile_requests_are_answered(request_town: Path, stress: bool) -> None:
    town = request_town
    examples = 1_000 if stress else 40
    max_depth = 100_000 if stress else 5_000
    proc = DaemonProcess(town).wait_ready()
    acknowledged = 0
    try:
        with connect(proc) as sock:
            wire = Wire(sock)

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(frame=hostile_frames(max_depth))
            def answer(frame: bytes) -> None:
                nonlocal acknowledged
                reply = exchange(sock, wire, frame)
                if reply["ok"] is False:
                    assert reply["error"]["code"] in KNOWN_CODES, reply
                elif reply["id"] == 2:
                    acknowledged += 1

            answer()
        ping_ok(proc, "end")
        assert_no_traceback(proc)
        check_consistent(proc, town, [])
        with proc.client() as client:
            assert len(client.query(types=["t"], limit=100_000).events) == acknowledged
        proc = restart_both_ways(proc, town, [])
        with proc.client() as client:
            assert len(client.query(types=["t"], limit=100_000).events) == acknowledged
    finally:
        stop(proc)


# ------------------------------------------------------------------ connections


def log_entries(proc: DaemonProcess, event: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in proc.log_path.read_text().splitlines()]
    return [entry for entry in entries if entry.get("event") == event]


def test_silent_connections_never_lock_a_client_out(request_town: Path) -> None:
    """The report: 512 silent connections and every new client got ``busy``, each refusal
    logged. Now the longest-idle one is closed for the newcomer, who is served at once."""
    proc = DaemonProcess(request_town).wait_ready()
    silent: list[socket.socket] = []
    try:
        for _ in range(512):
            silent.append(connect(proc))
        time.sleep(0.2)
        for attempt in range(20):
            started = time.monotonic()
            with proc.client(connect_timeout_s=1.0, timeout_s=1.0) as client:
                assert client.ping().pong
            assert time.monotonic() - started < 1.0, attempt
        # The oldest silent connections were told why, then closed.
        first = silent[0]
        first.settimeout(5)
        frame = json.loads(first.recv(1 << 16).split(b"\n")[0])
        assert frame["ok"] is False and frame["error"]["code"] == "timeout", frame
        assert "connection limit" in frame["error"]["message"]
        assert first.recv(1 << 16) == b""
        assert log_entries(proc, "connection_refused") == []
        evicted = log_entries(proc, "connection_evicted")
        assert 1 <= len(evicted) <= 3, evicted
    finally:
        for sock in silent:
            sock.close()
        stop(proc)


LIMIT_CONFIG = """
[server]
max_connections = 8
"""


def test_subscribers_are_never_evicted_and_refusals_are_logged_once_per_interval() -> None:
    root = Path(tempfile.mkdtemp(prefix="gt-hr-", dir="/tmp"))
    town = make_town(root, LIMIT_CONFIG)
    proc = DaemonProcess(town).wait_ready()
    subscribers: list[tuple[socket.socket, Wire]] = []
    try:
        for number in range(8):
            sock = connect(proc, timeout_s=10)
            sock.sendall(encode_frame(protocol.Subscribe(id=number)))
            wire = Wire(sock)
            [reply] = wire.replies(1)
            assert reply["ok"] is True, reply
            subscribers.append((sock, wire))
        time.sleep(0.1)
        refusals = 300
        for _ in range(refusals):
            with connect(proc) as sock:
                [reply] = Wire(sock).replies(1)
            assert reply["error"]["code"] == "busy", reply
        # Every subscriber is still there and still gets lines.
        line = b'{"ts":"2026-11-25T00:00:00Z","source":"gt","type":"live","actor":"a"}\n'
        append_like_gt(town, line)
        for _sock, wire in subscribers:
            push = next(frame for frame in wire.frames() if "push" in frame)
            assert push["push"] == "event" and push["event"]["type"] == "live", push
        refused = log_entries(proc, "connection_refused")
        assert 1 <= len(refused) <= 3, refused
        assert refused[0]["reason"] == "too_many_connections" and refused[0]["count"] == 1
        assert log_entries(proc, "connection_evicted") == []
    finally:
        for sock, _wire in subscribers:
            sock.close()
    # Once they are gone, the refusals held back are logged with their count.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        refused = log_entries(proc, "connection_refused")
        if refused[-1]["total"] == refusals:
            break
        time.sleep(0.2)
    assert refused[-1]["total"] == refusals, refused
    assert sum(entry["count"] for entry in refused) == refusals
    stop(proc)
    shutil.rmtree(root, ignore_errors=True)


def test_a_connection_with_a_partial_frame_is_not_evicted() -> None:
    root = Path(tempfile.mkdtemp(prefix="gt-hr-", dir="/tmp"))
    town = make_town(root, "\n[server]\nmax_connections = 2\n")
    proc = DaemonProcess(town).wait_ready()
    try:
        with connect(proc) as partial, connect(proc) as idle:
            time.sleep(0.05)
            partial.sendall(b'{"op":"ping","id":"p"')
            time.sleep(0.1)
            ping_ok(proc, "newcomer")  # takes the idle one's place
            idle.settimeout(5)
            assert b'"timeout"' in idle.recv(1 << 16)
            partial.sendall(b"}\n")
            [reply] = Wire(partial).replies(1)
            assert reply == {"id": "p", "ok": True, "result": {"pong": True}}
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def test_a_flood_of_big_pipelined_requests_is_held_to_the_request_bytes(
    request_town: Path,
) -> None:
    """10 connections pipeline 64 session steps of 256 KiB each (160 MiB). Each waits for the
    store in turn, so all taken at once they were all held in memory (peak RSS 204 MiB here;
    at the defaults 512 x 64 x 1 MiB = 32 GiB could be). Past ``max_inflight_bytes`` only
    connections with nothing in flight take a request (47 MiB here); every step is still
    answered, and a new client is served during the flood."""
    from tests.reliability._support import rss_kib

    (request_town / "settings" / "gastownd.toml").write_text(
        "[server]\nmax_inflight_bytes = 1048576\n"
    )
    proc = DaemonProcess(request_town).wait_ready()
    session = "0123456789abcdef0123456789abcdef0123"
    socks = [connect(proc, timeout_s=120) for _ in range(10)]
    peak = 0
    try:
        with connect(proc) as sock:
            sock.sendall(encode_frame(protocol.SessionStart(id=0, session=session, actor="a/b")))
            assert Wire(sock).replies(1)[0]["ok"]
        step = {"blob": "x" * (256 << 10)}
        frames = b"".join(
            encode_frame(protocol.SessionStep(id=i, session=session, kind="note", payload=step))
            for i in range(64)
        )
        answered: list[list[dict[str, Any]]] = []
        workers = [threading.Thread(target=sock.sendall, args=(frames,)) for sock in socks]
        workers += [
            threading.Thread(target=lambda s=sock: answered.append(Wire(s).replies(64)))
            for sock in socks
        ]
        for worker in workers:
            worker.start()
        ping_ok(proc, "during")  # a new connection is served at once
        while any(worker.is_alive() for worker in workers):
            peak = max(peak, rss_kib(proc.pid))
            time.sleep(0.01)
        assert len(answered) == 10
        for replies in answered:
            assert sorted(r["id"] for r in replies) == list(range(64))
            assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:1]
    finally:
        for sock in socks:
            sock.close()
        stop(proc)
    assert peak < 100 * 1024, f"peak RSS {peak // 1024} MiB"
