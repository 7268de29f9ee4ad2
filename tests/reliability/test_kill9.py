"""kill -9 of the daemon while 32 clients emit and sessions are open, restarted each time.

After the last restart every acknowledged emit is in ``.events.jsonl`` exactly once, the file
has no torn line, every wisp whose start was acknowledged is open with every acknowledged
step, and each session that exists has exactly one ``session_start`` line.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gastown_client.client import Client
from gastown_client.errors import DaemonUnavailable, RequestRejected
from gastown_client.protocol import WispView
from tests.conftest import DaemonProcess
from tests.reliability._support import read_log

CLIENTS = 32
SESSIONS_BEFORE = 10
SESSIONS_PER_CYCLE = 2


@dataclass
class Ledger:
    """What the daemon acknowledged (and what we only attempted), shared by the threads."""

    acked: list[str] = field(default_factory=list)
    attempted: set[str] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)
    # session id -> whether its session_start was acknowledged
    sessions: dict[str, bool] = field(default_factory=dict)
    # session id -> step refs in the order sent, and the ones acknowledged
    steps_sent: dict[str, list[str]] = field(default_factory=dict)
    steps_acked: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def actor_of(session: str) -> str:
    return f"gastown/crew/{session}"


def emitter(socket: Path, cycle: int, who: int, ledger: Ledger, stop: threading.Event) -> None:
    """Emit until the daemon goes away; record each id once its reply arrived."""
    try:
        client = Client(socket, connect_timeout_s=2, timeout_s=10).connect()
    except DaemonUnavailable:
        return
    with client:
        i = 0
        while not stop.is_set():
            event_id = f"{cycle}.{who}.{i}"
            i += 1
            with ledger.lock:
                ledger.attempted.add(event_id)
            try:
                client.emit("rel_ack", f"rel/client{who}", {"id": event_id, "pad": "x" * (i % 97)})
            except DaemonUnavailable:
                return
            except RequestRejected as exc:
                ledger.rejected.append(f"{event_id}: {exc}")
                return
            ledger.acked.append(event_id)


def start_session(client: Client, session: str, ledger: Ledger) -> None:
    with ledger.lock:
        ledger.sessions.setdefault(session, False)
        ledger.steps_sent.setdefault(session, [])
        ledger.steps_acked.setdefault(session, [])
    result = client.session_start(session, actor_of(session), cwd="/town", topic="kill9")
    assert result.wisp.state == "open"
    with ledger.lock:
        ledger.sessions[session] = True


def add_step(client: Client, session: str, ref: str, ledger: Ledger) -> None:
    with ledger.lock:
        ledger.steps_sent[session].append(ref)
    client.session_step(session, "tool", ref=ref, payload={"ref": ref})
    with ledger.lock:
        ledger.steps_acked[session].append(ref)


def session_worker(
    socket: Path, cycle: int, ledger: Ledger, stop: threading.Event, rng: random.Random
) -> None:
    """Start this cycle's new sessions, then keep adding steps to acknowledged sessions."""
    try:
        with Client(socket, connect_timeout_s=2, timeout_s=10) as client:
            for n in range(SESSIONS_PER_CYCLE):
                start_session(client, f"kill9-c{cycle:03d}-{n}", ledger)
            k = 0
            while not stop.is_set():
                with ledger.lock:
                    open_ones = sorted(s for s, ok in ledger.sessions.items() if ok)
                add_step(client, rng.choice(open_ones), f"c{cycle}-k{k}", ledger)
                k += 1
                time.sleep(0.002)
    except DaemonUnavailable:
        return
    except RequestRejected as exc:
        ledger.rejected.append(f"session worker: {exc}")


def run_cycle(town: Path, cycle: int, ledger: Ledger, rng: random.Random) -> None:
    proc = DaemonProcess(town).wait_ready()
    stop = threading.Event()
    before = len(ledger.acked)
    threads = [
        threading.Thread(target=emitter, args=(proc.socket, cycle, who, ledger, stop))
        for who in range(CLIENTS)
    ]
    threads.append(
        threading.Thread(
            target=session_worker,
            args=(proc.socket, cycle, ledger, stop, random.Random(rng.random())),
        )
    )
    for thread in threads:
        thread.start()
    # Let the clients get going, then kill at a random moment of the traffic.
    deadline = time.monotonic() + 10
    while len(ledger.acked) - before < CLIENTS * 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.3))
    proc.kill()
    assert proc.proc.returncode == -9, proc.log()
    stop.set()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "a client thread hung after the kill"
    assert len(ledger.acked) - before >= CLIENTS * 4, f"cycle {cycle}: too few emits: {proc.log()}"


def wisp_or_none(client: Client, session: str) -> WispView | None:
    try:
        return client.wisp(session)
    except RequestRejected as exc:
        if exc.code == "not_found":
            return None
        raise


def early_kill(town: Path, rng: random.Random) -> None:
    """kill -9 during start-up (recovery, indexing, outbox replay)."""
    proc = DaemonProcess(town)
    time.sleep(rng.uniform(0.05, 0.35))
    proc.kill()


def test_kill9_under_32_emitters_loses_no_acknowledged_event(town: Path, stress: bool) -> None:
    cycles = 50 if stress else 5
    rng = random.Random(f"kill9-{time.time_ns()}")
    ledger = Ledger()

    proc = DaemonProcess(town).wait_ready()
    with proc.client() as client:
        for n in range(SESSIONS_BEFORE):
            session = f"kill9-pre-{n:02d}"
            start_session(client, session, ledger)
            add_step(client, session, f"pre-{n}", ledger)
    assert proc.terminate() == 0, proc.log()

    for cycle in range(cycles):
        run_cycle(town, cycle, ledger, rng)
        if cycle % 3 == 2:
            early_kill(town, rng)
    assert ledger.rejected == []

    proc = DaemonProcess(town).wait_ready()
    try:
        _raw, lines = read_log(town)
        ids = collections.Counter(
            line["payload"]["id"] for line in lines if line.get("type") == "rel_ack"
        )
        # Every acknowledged emit exactly once; nothing written twice or out of thin air.
        assert len(ledger.acked) >= cycles * CLIENTS * 4
        assert [i for i in ledger.acked if ids[i] != 1] == []
        assert [i for i, n in ids.items() if n > 1] == []
        assert set(ids) <= ledger.attempted
        for who in range(CLIENTS):  # one connection's emits are written in the order sent
            mine = [
                line["payload"]["id"]
                for line in lines
                if line.get("actor") == f"rel/client{who}" and line.get("type") == "rel_ack"
            ]
            order = [(int(c), int(i)) for c, _w, i in (m.split(".") for m in mine)]
            assert order == sorted(order), f"client {who} lines out of order"

        starts = collections.Counter(
            line["payload"]["session_id"] for line in lines if line.get("type") == "session_start"
        )
        assert set(starts) <= set(ledger.sessions)
        assert sum(ledger.sessions.values()) >= SESSIONS_BEFORE + cycles
        with proc.client() as client:
            for session, acknowledged in sorted(ledger.sessions.items()):
                wisp = wisp_or_none(client, session)
                if wisp is None:
                    assert not acknowledged, f"acknowledged session {session} lost"
                    assert starts[session] == 0, f"{session}: session_start line without wisp"
                    continue
                assert starts[session] == 1, f"{session}: {starts[session]} session_start lines"
                assert wisp.state == "open", (session, wisp.state)
                assert wisp.actor == actor_of(session)
                refs = [step.ref for step in wisp.steps]
                acked_refs = ledger.steps_acked[session]
                sent = ledger.steps_sent[session]
                assert set(acked_refs) <= set(refs), f"{session}: acknowledged step lost"
                assert set(refs) <= set(sent), f"{session}: unknown step"
                assert refs == [r for r in sent if r in set(refs)], f"{session}: step order"
                assert len(refs) == len(set(refs)), f"{session}: step stored twice"
                assert wisp.step_count == len(refs)
            status = client.status()
        assert status.eventlog.lines == len(lines)
        assert status.eventlog.malformed == 0
    finally:
        assert proc.terminate() == 0, proc.log()


def test_ledger_records_only_acknowledged_steps(town: Path) -> None:
    """The bookkeeping the kill test relies on: a rejected step is sent but not acknowledged."""
    ledger = Ledger()
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            start_session(client, "kill9-book", ledger)
            add_step(client, "kill9-book", "ok-step", ledger)
            ledger.steps_sent["kill9-missing"] = []
            with pytest.raises(RequestRejected) as info:
                add_step(client, "kill9-missing", "lost-step", ledger)
            assert info.value.code == "not_found"
        assert ledger.sessions == {"kill9-book": True}
        assert ledger.steps_acked["kill9-book"] == ["ok-step"]
        assert ledger.steps_sent["kill9-missing"] == ["lost-step"]
    finally:
        assert proc.terminate() == 0, proc.log()
