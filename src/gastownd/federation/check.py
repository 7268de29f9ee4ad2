"""``gastownctl federation check``: gather the facts of this node's federation setup.

Reads the town's ``[federation]`` configuration, reaches every configured server with
this node's credentials and TLS, and asks JetStream what a daemon would need: the
stream, this node's permissions, the node-name lease, the server's clock and
``max_payload``. What the facts mean is decided in :mod:`gastownd.core.federation_checks`.

Nothing is written to the town: permission probes are built so that the server checks
the permission and JetStream then refuses the request (a publish that expects another
stream, a consumer whose name does not match its subject), and a fetch is probed only
while the node's consumer does not exist.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import anyio
import msgspec

from gastown_client import paths as town_paths
from gastownd.core.federation_checks import (
    CONSUMER_NOT_FOUND,
    PROBE_NODE,
    PROBE_STREAM,
    STREAM_NOT_FOUND,
    Finding,
    LeaseEntry,
    LeaseFacts,
    LocalDaemon,
    PermissionFacts,
    Reply,
    ServerFacts,
    StreamFacts,
    StreamLimits,
    clock_finding,
    cluster_size,
    coverage_finding,
    exit_code,
    identity_findings,
    jetstream_finding,
    lease_finding,
    max_payload_finding,
    permission_findings,
    render,
    server_finding,
    server_time_s,
    stream_finding,
    stream_limits_finding,
)
from gastownd.core.records import stream_name, subject, town_subjects
from gastownd.federation import node_and_town
from gastownd.federation.link import auth_options
from gastownd.process.config import FederationConfig
from gastownd.process.config_file import load_config
from gastownd.process.refusals import StartupError

CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 1.5


def main(
    town_root: str | None,
    config_path: str | None,
    *,
    as_json: bool,
    out: IO[str] = sys.stdout,
) -> int:
    """Run every check, print one line each (or a JSON document); 1 on a failure."""
    town = town_paths.find_town_root(town_root)
    path = Path(config_path) if config_path else town_paths.default_config_path(town)
    node, town_name = "", ""
    try:
        config = load_config(path if config_path or path.exists() else None).federation
    except StartupError as exc:
        findings = [Finding("config", "fail", str(exc), f"fix {path}")]
    else:
        node, town_name = node_and_town(config, town)
        findings = [Finding("config", "ok", f"{path}" if path.exists() else f"none ({path})")]
        if not config.enabled:
            findings.append(
                Finding(
                    "config",
                    "fail",
                    "federation is off: [federation] servers is empty",
                    f"set servers = [...] in [federation] of {path} (docs/federation.md, Setup)",
                )
            )
        else:
            findings += identity_findings(
                node=node,
                node_configured=bool(config.node),
                town=town_name,
                town_source=_town_source(config, town),
            )
            local = _local_daemon(town)
            try:
                findings += anyio.run(_hub_findings, config, node, town_name, local)
            except Exception as exc:  # a server that vanished mid-check, or a reply we misread
                findings.append(
                    Finding(
                        "hub",
                        "fail",
                        f"the check stopped: {type(exc).__name__}: {exc}"[:300],
                        "run it again; if it persists, report it with --json output",
                    )
                )
    code = exit_code(findings)
    if as_json:
        document = {"ok": code == 0, "node": node, "town": town_name, "checks": findings}
        out.write(msgspec.json.encode(document).decode() + "\n")
    else:
        for finding in findings:
            out.write(render(finding) + "\n")
    return code


def _town_source(config: FederationConfig, town: Path) -> str:
    if config.town:
        return "config"
    try:
        data = json.loads((town / town_paths.TOWN_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    named = isinstance(data, dict) and isinstance(data.get("name"), str) and data["name"]
    return "town.json" if named else "directory"


def _local_daemon(town: Path) -> LocalDaemon | None:
    """This town's daemon on this machine, if it answers."""
    from gastown_client.client import Client

    try:
        with Client(town_root=town, connect_timeout_s=0.5, timeout_s=2.0) as client:
            status = client.status()
    except Exception:  # not running, or not answering: no local holder
        return None
    instance = getattr(status.federation, "instance", None) if status.federation else None
    return LocalDaemon(
        pid=status.pid,
        host=socket.gethostname(),
        instance=instance if isinstance(instance, str) else "",
    )


def connect_options(config: FederationConfig, node: str) -> dict[str, Any]:
    """nats-py options for this node's credentials and TLS, as the daemon connects."""
    options: dict[str, Any] = {
        "name": f"gastownd-check-{node}",
        "allow_reconnect": False,
        "connect_timeout": CONNECT_TIMEOUT_S,
        # nats-py reads 0 as "forever": one retry, soon, then a refused server is reported.
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.1,
        "inbox_prefix": f"_INBOX_{node}",
        **auth_options(config),
    }
    return options


class _Connection:
    """One nats-py connection, with the server's asynchronous errors kept for the probes."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Any = None

    async def open(self, servers: list[str], options: dict[str, Any]) -> None:
        import nats

        async def record(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(servers=servers, error_cb=record, **options)

    async def close(self) -> None:
        if self.nc is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self.nc.close()

    def denied(self, verb: str, subject_name: str) -> bool:
        needle = f'permissions violation for {verb} to "{subject_name}'.lower()
        return any(needle in e.lower() for e in self.errors)

    async def request(self, subject_name: str, data: bytes = b"", **kw: Any) -> tuple[Reply, Any]:
        """A JetStream API request: the reply's facts and its decoded body."""
        import nats.errors

        try:
            msg = await self.nc.request(subject_name, data, timeout=REQUEST_TIMEOUT_S, **kw)
        except nats.errors.NoRespondersError:
            return Reply(no_responders=True), None
        except (nats.errors.TimeoutError, TimeoutError):
            await self._settle()
            return Reply(denied=self.denied("publish", subject_name), silent=True), None
        try:
            body = json.loads(msg.data)
        except ValueError:
            return Reply(error_code=-1, error=f"not JSON: {msg.data[:80]!r}"), None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = error.get("err_code")
            reply = Reply(error_code=code if isinstance(code, int) else -1, error=str(error)[:200])
            return reply, body
        return Reply(), body

    async def publish(self, subject_name: str) -> Reply:
        """A plain publish: refused or not (the server says so before its PONG)."""
        await self.nc.publish(subject_name, b"")
        await self._settle()
        return Reply(denied=self.denied("publish", subject_name))

    async def _settle(self) -> None:
        # The server answers a refused publish before the PONG of a PING sent after it. nats-py
        # writes a flush's PING at once but a publish through its flusher task, so the first
        # PING may overtake the publish; by its PONG the flusher has run: the second follows it.
        with anyio.move_on_after(REQUEST_TIMEOUT_S):
            await self.nc.flush(timeout=REQUEST_TIMEOUT_S)
            await self.nc.flush(timeout=REQUEST_TIMEOUT_S)


async def _server_facts(url: str, options: dict[str, Any]) -> ServerFacts:
    connection = _Connection()
    try:
        with anyio.fail_after(CONNECT_TIMEOUT_S + 1):
            await connection.open([url], options)
        info = connection.nc._server_info
        facts = ServerFacts(
            url=url,
            name=str(info.get("server_name", ""))[:100],
            version=str(info.get("version", ""))[:40],
            max_payload=int(info.get("max_payload", 0)),
            jetstream=bool(info.get("jetstream", False)),
            cluster=str(info.get("cluster", ""))[:100],
            connect_urls=tuple(str(u)[:200] for u in info.get("connect_urls") or ()),
        )
    except Exception as exc:
        causes = [e for e in connection.errors if e] or [f"{type(exc).__name__}: {exc}"]
        return ServerFacts(url=url, error=causes[-1].removeprefix("nats: "))
    finally:
        await connection.close()
    return facts


async def _hub_findings(
    config: FederationConfig, node: str, town: str, local: LocalDaemon | None
) -> list[Finding]:
    try:
        options = connect_options(config, node)
    except (OSError, ssl.SSLError) as exc:  # the daemon fails the same way at every connect
        return [
            Finding(
                "tls",
                "fail",
                f"cannot load the TLS files: {type(exc).__name__}: {exc}"[:300],
                "name PEM files this user can read in tls_ca, tls_cert and tls_key of [federation]",
            )
        ]
    servers: list[ServerFacts] = [ServerFacts(url=url) for url in config.servers]

    async def reach(index: int, url: str) -> None:
        servers[index] = await _server_facts(url, options)

    async with anyio.create_task_group() as tasks:
        for index, url in enumerate(config.servers):
            tasks.start_soon(reach, index, url)
    findings = [server_finding(s) for s in servers]
    reachable = [s.url for s in servers if s.error is None]
    if not reachable:
        return findings
    size = cluster_size(servers)
    coverage = coverage_finding(servers, size)
    findings += [coverage] if coverage else []
    connection = _Connection()
    try:
        await connection.open(reachable, options)
        findings += await _jetstream_findings(connection, config, node, town, size, local)
    finally:
        await connection.close()
    findings.append(max_payload_finding([s.max_payload for s in servers if s.error is None]))
    return findings


async def _jetstream_findings(
    connection: _Connection,
    config: FederationConfig,
    node: str,
    town: str,
    size: int,
    local: LocalDaemon | None,
) -> list[Finding]:
    api = api_prefix(config)
    stream = stream_name(town)
    sent = time.time()
    info_reply, info = await connection.request(f"{api}.STREAM.INFO.{stream}")
    received = time.time()
    stream_facts = _stream_facts(info_reply, info)
    findings = [
        jetstream_finding(stream_facts, config.jetstream_domain),
        stream_finding(
            stream_facts, town=town, servers=size, configured_replicas=config.stream_replicas
        ),
    ]
    limits = stream_limits_finding(stream_facts, town=town)
    if limits is not None:
        findings.append(limits)
    if info_reply.denied:
        findings.append(
            Finding(
                "permissions: stream",
                "fail",
                f"may not ask for the stream's INFO ({api}.STREAM.INFO.{stream})",
                f'allow publish "{api}.STREAM.INFO.{stream}" (docs/federation.md, Security)',
            )
        )
    server_now = server_time_s(info.get("ts")) if isinstance(info, dict) else None
    if server_now is None:
        findings.append(clock_finding(None))
    else:
        findings.append(clock_finding(server_now - (sent + received) / 2, (received - sent) / 2))

    results: dict[str, Any] = {}

    async def run(key: str, call: Callable[[], Any]) -> None:
        results[key] = await call()

    durable = f"gastownd_{node}"
    own = subject(town, node, "event")
    other = subject(town, PROBE_NODE if node != PROBE_NODE else f"{node}-x", "event")
    probe_header = {"Nats-Expected-Stream": PROBE_STREAM}
    bad_consumer = json.dumps(
        {"stream_name": stream, "config": {"durable_name": f"{durable}-check-probe"}}
    ).encode()
    async with anyio.create_task_group() as tasks:
        probes: dict[str, Callable[[], Any]] = {
            "own": lambda: connection.request(own, headers=probe_header),
            "other": lambda: connection.request(other, headers=probe_header),
            "consumer_info": lambda: connection.request(f"{api}.CONSUMER.INFO.{stream}.{durable}"),
            "consumer_create": lambda: connection.request(
                f"{api}.CONSUMER.CREATE.{stream}.{durable}.{town_subjects(town)}", bad_consumer
            ),
            "ack": lambda: connection.publish(f"$JS.ACK.{stream}.{durable}.check-probe"),
            "lease": lambda: _lease(connection, config, town, node),
        }
        for key, call in probes.items():
            tasks.start_soon(run, key, call)
    consumer_info: Reply = results["consumer_info"][0]
    fetch: Reply | None = None
    if consumer_info.answered and consumer_info.error_code in (
        CONSUMER_NOT_FOUND,
        STREAM_NOT_FOUND,
    ):
        # No consumer: a fetch has nobody to answer it and takes nothing (with a consumer,
        # it could take one of the daemon's records).
        fetch, _ = await connection.request(
            f"{api}.CONSUMER.MSG.NEXT.{stream}.{durable}", b'{"batch":1,"no_wait":true}'
        )
    permissions = PermissionFacts(
        own_subject=own,
        own_publish=results["own"][0],
        other_subject=other,
        other_publish=results["other"][0],
        consumer_info=consumer_info,
        consumer_create=results["consumer_create"][0],
        fetch=fetch,
        ack=results["ack"],
        inbox_denied=any("subscription to" in e.lower() for e in connection.errors),
    )
    findings += permission_findings(permissions, town=town, node=node)
    findings.append(lease_finding(results["lease"], town=town, node=node, local=local))
    return findings


def api_prefix(config: FederationConfig) -> str:
    """The subjects' prefix of JetStream's API, in the hub's domain when one is set."""
    return f"$JS.{config.jetstream_domain}.API" if config.jetstream_domain else "$JS.API"


def _stream_facts(reply: Reply, info: Any) -> StreamFacts:
    if not isinstance(info, dict) or reply.error_code:
        return StreamFacts(reply=reply)
    stream_config = info.get("config") or {}
    cluster = info.get("cluster") or {}
    return StreamFacts(
        reply=reply,
        replicas=int(stream_config.get("num_replicas") or 1),
        subjects=tuple(str(s) for s in stream_config.get("subjects") or ()),
        leader=str(cluster.get("leader", "")),
        limits=StreamLimits(
            retention=str(stream_config.get("retention", "limits")),
            discard=str(stream_config.get("discard", "old")),
            max_msgs=_integer(stream_config.get("max_msgs")),
            max_bytes=_integer(stream_config.get("max_bytes")),
            max_msg_size=_integer(stream_config.get("max_msg_size")),
        ),
    )


def _integer(value: Any) -> int:
    """A limit from the server's JSON: -1 (none) unless it is an integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


async def _lease(
    connection: _Connection, config: FederationConfig, town: str, node: str
) -> LeaseFacts:
    """The node's entry in the town's node-name bucket (``GASTOWN_<town>_nodes``)."""
    import nats.js.errors

    js = connection.nc.jetstream(domain=config.jetstream_domain, timeout=REQUEST_TIMEOUT_S)
    bucket = f"{stream_name(town)}_nodes"
    try:
        kv = await js.key_value(bucket)
        entry = await kv.get(node)
    except nats.js.errors.BucketNotFoundError:
        return LeaseFacts(bucket_missing=True)
    except nats.js.errors.KeyNotFoundError:  # also a deleted or purged key
        return LeaseFacts()
    except Exception as exc:
        info = f"{api_prefix(config)}.STREAM.INFO.KV_{bucket}"
        if connection.denied("publish", info):
            return LeaseFacts(unreadable=f"denied (may not publish {info})")
        return LeaseFacts(unreadable=f"{type(exc).__name__}: {exc}".rstrip(": "))
    try:
        value = msgspec.json.decode(entry.value or b"")
        # Another machine wrote it: bounded before it reaches a message.
        return LeaseFacts(
            entry=LeaseEntry(
                instance=str(value["instance"])[:100],
                host=str(value["host"])[:100],
                pid=int(value["pid"]),
                since=str(value["since"])[:40],
            )
        )
    except (
        msgspec.DecodeError,
        KeyError,
        TypeError,
        ValueError,
        OverflowError,
        RecursionError,
    ) as exc:
        return LeaseFacts(unreadable=f"its entry for {node!r} is not a lease: {exc}"[:300])
