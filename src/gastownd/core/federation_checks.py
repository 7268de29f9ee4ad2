"""``gastownctl federation check``: what the facts gathered about a node's setup mean.

Pure: every function takes facts (server INFO fields, JetStream API replies, probe
outcomes, the lease entry, times) and returns findings; the shell that gathers them is
:mod:`gastownd.federation.check`. A finding is ``ok``, ``warn`` (the town works but
something will bite) or ``fail`` (something is broken now or will break at setup), and
every warning or failure names its fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from gastownd.core.records import EVENT_RUN_BYTES, MAX_RECORD_BYTES, stream_name, town_subjects

Level = Literal["ok", "warn", "fail"]

# Past this, the town's receivers refuse our lines as dated in the future (issue 18, item 3).
CLOCK_FAIL_S = 300.0
# Past this, the clock is not synchronised (NTP keeps machines within milliseconds).
CLOCK_WARN_S = 2.0
# A run of lines plus its JSON envelope (ids, seqs, names): what every busy round sends.
RUN_MESSAGE_BYTES = EVENT_RUN_BYTES + (16 << 10)
# The stream replicas a hub of this many servers needs to survive losing one.
SAFE_REPLICAS = 3
# Never a stream's name: a probe carrying it as Nats-Expected-Stream is refused by
# JetStream after the server checked the publish permission, so nothing is stored.
PROBE_STREAM = "gastownd-federation-check"
PROBE_NODE = "gastownd-check-probe"
# JetStream API error codes.
STREAM_NOT_FOUND, CONSUMER_NOT_FOUND = 10059, 10014
DOCS = "docs/federation.md"
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str
    fix: str | None = None


@dataclass(frozen=True)
class ServerFacts:
    """One configured server, reached (or not) with this node's credentials and TLS."""

    url: str
    error: str | None = None
    name: str = ""
    version: str = ""
    max_payload: int = 0
    jetstream: bool = False
    cluster: str = ""
    connect_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reply:
    """What came back for a request: ``denied`` by the server's permissions, ``silent``
    (no reply in time), ``no_responders`` (nobody serves the subject), else a JSON API
    reply (``error_code`` 0: success)."""

    denied: bool = False
    silent: bool = False
    no_responders: bool = False
    error_code: int = 0
    error: str = ""

    @property
    def answered(self) -> bool:
        return not (self.denied or self.silent or self.no_responders)


@dataclass(frozen=True)
class StreamLimits:
    """The settings of a stream that decide whether it keeps every record for every node
    (``-1``: no limit). A daemon makes the stream with these defaults; someone else may not."""

    retention: str = "limits"
    discard: str = "old"
    max_msgs: int = -1
    max_bytes: int = -1
    max_msg_size: int = -1


@dataclass(frozen=True)
class StreamFacts:
    reply: Reply
    replicas: int = 0
    subjects: tuple[str, ...] = ()
    leader: str = ""
    limits: StreamLimits = StreamLimits()

    @property
    def exists(self) -> bool:
        return self.reply.answered and self.reply.error_code == 0


STREAM_LIMITS_FIX = (
    "as an administrator, make the stream again with retention limits, discard old and no "
    "max_msgs, max_bytes or max_msg_size (every daemon then publishes its history again: "
    f"{DOCS}, The stream or a consumer deleted), or accept what the message says"
)


def stream_limit_problems(limits: StreamLimits) -> list[tuple[Level, str]]:
    """What in a stream's settings loses the town's records or holds them back, and how
    bad it is; [] when nothing does (``stream_max_age`` is the town's own choice)."""
    problems: list[tuple[Level, str]] = []
    if limits.retention == "workqueue":
        problems.append(
            ("fail", "retention workqueue: only one node may consume it, and it takes each record")
        )
    elif limits.retention != "limits":
        problems.append(
            (
                "fail",
                f"retention {limits.retention}: a record goes once the nodes consuming now "
                "have it, so a node that joins later, or whose consumer is made again, never "
                "gets it",
            )
        )
    if 0 < limits.max_msg_size < MAX_RECORD_BYTES:
        problems.append(
            ("warn", f"max_msg_size {limits.max_msg_size}: larger records stay on their node")
        )
    if limits.max_msgs > 0 or limits.max_bytes > 0:
        full = f"max_msgs {limits.max_msgs}, max_bytes {limits.max_bytes}"
        if limits.discard == "new":
            problems.append(("fail", f"{full}, discard new: once full, no node can publish"))
        else:
            problems.append(
                ("warn", f"{full}: once full, the oldest records go, read or not by nodes away")
            )
    return problems


def stream_limits_finding(stream: StreamFacts, *, town: str) -> Finding | None:
    """None when the stream is missing (a daemon makes it right) or not readable."""
    if not stream.exists:
        return None
    check = f"stream {stream_name(town)} limits"
    problems = stream_limit_problems(stream.limits)
    if not problems:
        return Finding(check, "ok", "retention limits, no limit on records")
    level: Level = "fail" if any(level == "fail" for level, _ in problems) else "warn"
    return Finding(check, level, "; ".join(text for _, text in problems), STREAM_LIMITS_FIX)


@dataclass(frozen=True)
class LeaseEntry:
    instance: str
    host: str
    pid: int
    since: str


@dataclass(frozen=True)
class LeaseFacts:
    """The node's key in the town's ``GASTOWN_<town>_nodes`` bucket."""

    bucket_missing: bool = False
    unreadable: str = ""
    entry: LeaseEntry | None = None


@dataclass(frozen=True)
class LocalDaemon:
    """This machine's daemon of this town, when it answers on its socket."""

    pid: int
    host: str
    instance: str = ""


def identity_findings(
    *, node: str, node_configured: bool, town: str, town_source: str
) -> list[Finding]:
    """``town_source``: ``config``, ``town.json`` or ``directory``."""
    if town_source == "directory":
        town_finding = Finding(
            "town",
            "warn",
            f"town name {town!r} comes from the town directory's name: machines whose "
            "directories differ become different towns",
            f'set town = "{town}" in [federation] (the same on every machine)',
        )
    else:
        where = "[federation] town" if town_source == "config" else '"name" in mayor/town.json'
        town_finding = Finding("town", "ok", f"town {town!r} (from {where})")
    if node_configured:
        node_finding = Finding("node", "ok", f"node {node!r} (configured)")
    else:
        node_finding = Finding(
            "node",
            "warn",
            f"node name {node!r} is the short host name: cloned machines share it, and two "
            "daemons with one node name split the town's records between them",
            f'set node = "<a name unique in the town>" in [federation] (now {node!r})',
        )
    return [town_finding, node_finding]


def server_finding(server: ServerFacts) -> Finding:
    check = f"server {server.url}"
    if server.error is not None:
        return Finding(
            check,
            "fail",
            f"cannot connect: {server.error}",
            "check the URL, that the server runs, the firewall, and creds/user/tls_* in "
            "[federation]",
        )
    what = f"{server.name or 'unnamed'}, nats-server {server.version}"
    if not server.jetstream:
        return Finding(
            check,
            "fail",
            f"{what}: JetStream is off",
            "add a jetstream { store_dir: ... } block to the server's configuration",
        )
    return Finding(check, "ok", f"{what}, JetStream on")


def cluster_size(servers: Sequence[ServerFacts]) -> int:
    """Servers in the hub: those reached, and those they announce (``connect_urls``)."""
    reached = {s.name or s.url for s in servers if s.error is None}
    announced = {url for s in servers if s.error is None for url in s.connect_urls}
    return max(len(reached), len(announced), 1 if reached else 0)


def coverage_finding(servers: Sequence[ServerFacts], size: int) -> Finding | None:
    """A warning when the hub has servers the configuration does not name: a daemon that
    starts while the named ones are down cannot learn of the others."""
    if len(servers) >= size:
        return None
    return Finding(
        "servers",
        "warn",
        f"{len(servers)} of the hub's {size} servers configured: if they are down when the "
        "daemon starts, it cannot reach the others",
        "list every hub server in servers = [...]",
    )


def jetstream_finding(stream: StreamFacts, domain: str | None) -> Finding:
    where = f"domain {domain!r}" if domain else "this account"
    reply = stream.reply
    if reply.no_responders or reply.silent:
        fix = (
            f"check jetstream_domain = {domain!r} against the hub's jetstream {{ domain }}"
            if domain
            else "enable JetStream on the servers; behind a leaf node, set jetstream_domain "
            "to the hub's domain"
        )
        return Finding("jetstream", "fail", f"JetStream does not answer for {where}", fix)
    if reply.denied:
        return Finding("jetstream", "warn", "not checked: the stream's INFO is denied (below)")
    return Finding("jetstream", "ok", f"JetStream answers for {where}")


def stream_finding(
    stream: StreamFacts, *, town: str, servers: int, configured_replicas: int
) -> Finding:
    name = stream_name(town)
    check = f"stream {name}"
    wanted = min(SAFE_REPLICAS, servers)
    if not stream.reply.answered:
        return Finding(check, "warn", "not checked: JetStream did not answer")
    if not stream.exists:
        if stream.reply.error_code != STREAM_NOT_FOUND:
            return Finding(check, "fail", f"stream info refused: {stream.reply.error}")
        if configured_replicas < wanted:
            return Finding(
                check,
                "fail",
                f"missing, and the first daemon would create it with {configured_replicas} "
                f"replica(s) on a {servers}-server hub: losing one server would stop the town",
                f"set stream_replicas = {wanted} in [federation] before starting a daemon",
            )
        return Finding(
            check,
            "warn",
            f"missing: the first daemon allowed to create it will, with "
            f"{configured_replicas} replica(s)",
            f"start one daemon whose account may publish $JS.API.STREAM.CREATE.{name} "
            f"(see {DOCS}, Setup)",
        )
    subjects = town_subjects(town)
    if subjects not in stream.subjects:
        return Finding(
            check,
            "fail",
            f"captures {list(stream.subjects)}, not {subjects}: this town's records are not kept",
            f"recreate the stream with subjects [{subjects}]",
        )
    if stream.replicas < wanted:
        level: Level = "fail" if stream.replicas == 1 else "warn"
        return Finding(
            check,
            level,
            f"{stream.replicas} replica(s) on a {servers}-server hub: losing "
            f"{'its server' if stream.replicas == 1 else 'a server'} stops the town",
            f"as an administrator, raise its replicas to {wanted} while it runs: "
            f"nats stream edit {name} --replicas {wanted}, or the script of {DOCS} "
            f'("A stream made with 1 replica"); and set stream_replicas = {wanted} in '
            "[federation]",
        )
    extra = (
        ""
        if stream.replicas == configured_replicas
        else (
            f" (stream_replicas = {configured_replicas} in [federation] is only used at creation)"
        )
    )
    return Finding(check, "ok", f"{stream.replicas} replica(s) on {servers} server(s){extra}")


@dataclass(frozen=True)
class PermissionFacts:
    """Probe outcomes: each probe is built so that the server checks the permission
    and JetStream then refuses it (nothing is stored, created or consumed)."""

    own_subject: str
    own_publish: Reply
    other_subject: str
    other_publish: Reply
    consumer_info: Reply
    consumer_create: Reply
    fetch: Reply | None  # None: not probed (a consumer may exist: a fetch could take a record)
    ack: Reply
    inbox_denied: bool = False


def permission_findings(facts: PermissionFacts, *, town: str, node: str) -> list[Finding]:
    stream, durable = stream_name(town), f"gastownd_{node}"
    docs_fix = f"give node {node!r} the permissions of {DOCS}, Security"
    findings: list[Finding] = []
    if facts.inbox_denied:
        findings.append(
            Finding(
                "permissions: replies",
                "fail",
                f"may not subscribe to _INBOX_{node}.>: no JetStream reply can reach it",
                f'allow subscribe "_INBOX_{node}.>"; {docs_fix}',
            )
        )
    if facts.own_publish.denied:
        findings.append(
            Finding(
                "permissions: publish",
                "fail",
                f"may not publish its own records on {facts.own_subject}",
                f'allow publish "gastown.{town}.{node}.>"; {docs_fix}',
            )
        )
    else:
        findings.append(
            Finding("permissions: publish", "ok", f"may publish on gastown.{town}.{node}.>")
        )
    if facts.other_publish.denied:
        findings.append(
            Finding("permissions: others", "ok", f"may not publish as another node "
                    f"({facts.other_subject} refused)")
        )  # fmt: skip
    else:
        findings.append(
            Finding(
                "permissions: others",
                "warn",
                f"may publish as another node ({facts.other_subject}): without per-node "
                "permissions anyone with these credentials can write records as any node",
                f"give each node only its own subjects: {DOCS}, Security",
            )
        )
    consume = [
        ("consumer info", f"$JS.API.CONSUMER.INFO.{stream}.{durable}", facts.consumer_info),
        ("consumer create", f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>", facts.consumer_create),
        ("fetch", f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", facts.fetch),
        ("acknowledge", f"$JS.ACK.{stream}.{durable}.>", facts.ack),
    ]
    denied = [(what, subject) for what, subject, reply in consume if reply and reply.denied]
    if denied:
        findings.append(
            Finding(
                "permissions: consume",
                "fail",
                "may not " + ", ".join(what for what, _ in denied) + f" on its consumer {durable}",
                "allow publish " + ", ".join(f'"{s}"' for _, s in denied) + f"; {docs_fix}",
            )
        )
    else:
        probed = "" if facts.fetch is not None else " (fetch not probed: it could take a record)"
        findings.append(
            Finding("permissions: consume", "ok", f"may read the town through {durable}{probed}")
        )
    return findings


def lease_finding(lease: LeaseFacts, *, town: str, node: str, local: LocalDaemon | None) -> Finding:
    bucket = f"{stream_name(town)}_nodes"
    check = "node name unique"
    if lease.bucket_missing:
        return Finding(
            check,
            "warn",
            f"no lease held: bucket {bucket} does not exist (no daemon of this version holds "
            "its name yet), so a duplicate node cannot be seen",
            f'make sure no other machine uses node = "{node}"; start the daemon to take the '
            f"name (with least-privilege accounts an administrator creates {bucket} first: "
            f"{DOCS}, Node identity)",
        )
    if lease.unreadable:
        return Finding(
            check,
            "warn",
            f"cannot read {bucket}: {lease.unreadable}",
            f"allow this node to read the key {node!r} of bucket {bucket} ({DOCS}, Security)",
        )
    entry = lease.entry
    if entry is None:
        if local is not None:
            return Finding(
                check,
                "warn",
                f"no lease held for {node!r} although this town's daemon runs (pid {local.pid})",
                "see the daemon's log (federation section of gastownctl status)",
            )
        return Finding(check, "ok", f"node name {node!r} is free")
    if local is not None and held_by(entry, local):
        return Finding(check, "ok", f"held by this machine's daemon (pid {local.pid})")
    return Finding(
        check,
        "fail",
        f"node name {node!r} is held by another daemon: instance {entry.instance} on host "
        f"{entry.host!r} (pid {entry.pid}) since {entry.since}",
        'give one of the two machines another name: node = "<unique>" in [federation], '
        "then restart its daemon (or stop the other daemon, whose lease then expires)",
    )


def held_by(entry: LeaseEntry, local: LocalDaemon) -> bool:
    if local.instance:
        return entry.instance == local.instance
    short = local.host.split(".")[0]
    return entry.pid == local.pid and entry.host in (local.host, short)


def clock_finding(offset_s: float | None, uncertainty_s: float = 0.0) -> Finding:
    """``offset_s``: the server's clock minus ours (None: not measured)."""
    if offset_s is None:
        return Finding(
            "clock",
            "warn",
            "not measured: no JetStream reply carried the server's time (the stream is missing)",
            "run the check again once the stream exists",
        )
    text = f"{abs(offset_s):.3f} s {'behind' if offset_s > 0 else 'ahead of'} the server"
    text += f" (±{uncertainty_s:.3f} s)"
    fix = "synchronise this machine's clock (NTP: timedatectl set-ntp true, chrony)"
    margin = abs(offset_s) - uncertainty_s
    if margin > CLOCK_FAIL_S:
        return Finding(
            "clock",
            "fail",
            f"{text}: other nodes refuse lines dated more than {CLOCK_FAIL_S:.0f} s ahead",
            fix,
        )
    if margin > CLOCK_WARN_S:
        return Finding("clock", "warn", text, fix)
    return Finding("clock", "ok", text)


def max_payload_finding(max_payloads: Sequence[int]) -> Finding:
    """The servers' ``max_payload`` against the records this node sends: runs of lines of
    about EVENT_RUN_BYTES, and a single line up to MAX_RECORD_BYTES."""
    if not max_payloads:
        return Finding("max_payload", "warn", "not checked: no server reached")
    smallest = min(max_payloads)
    fix = "set max_payload: 4MB in every server's configuration"
    if smallest < RUN_MESSAGE_BYTES:
        return Finding(
            "max_payload",
            "fail",
            f"{smallest} bytes: a run of lines (up to {RUN_MESSAGE_BYTES} bytes) cannot be sent",
            fix,
        )
    if smallest < MAX_RECORD_BYTES:
        return Finding(
            "max_payload",
            "warn",
            f"{smallest} bytes: lines over about {smallest >> 10} KiB (Gas Town allows 1 MiB) "
            "cannot leave this node (counted as too_large)",
            fix,
        )
    return Finding(
        "max_payload", "ok", f"{smallest} bytes (a record is at most {MAX_RECORD_BYTES})"
    )


def server_time_s(text: object) -> float | None:
    """The epoch seconds of a JetStream reply's ``ts`` (RFC 3339, nanoseconds), or None."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return moment.timestamp() + (int(fraction[:9].ljust(9, "0")) / 1e9 if fraction else 0.0)


def exit_code(findings: Sequence[Finding]) -> int:
    """1 when anything failed, else 0 (warnings alone do not fail the check)."""
    return 1 if any(f.level == "fail" for f in findings) else 0


def render(finding: Finding) -> str:
    label = {"ok": "ok", "warn": "warn", "fail": "FAIL"}[finding.level]
    line = f"{label:<5} {finding.check}: {finding.message}"
    return f"{line}; fix: {finding.fix}" if finding.fix and finding.level != "ok" else line
