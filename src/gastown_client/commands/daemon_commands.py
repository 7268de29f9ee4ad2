"""Commands about the daemon itself: status, ping, sockname, metrics, prune."""

from __future__ import annotations

import argparse
import sys
import time

from gastown_client import paths
from gastown_client.commands.common import (
    EXIT_OK,
    Command,
    add_json,
    answer,
    client_for,
    human_bytes,
    human_duration,
    indexing_text,
    print_json,
)
from gastown_client.protocol import FederationInfo, PruneResult, StatusResult


def cmd_sockname(args: argparse.Namespace) -> int:
    if args.socket:
        print(args.socket)
    else:
        print(paths.socket_path(paths.find_town_root(args.town_root)))
    return EXIT_OK


def cmd_ping(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        started = time.perf_counter()
        client.ping()
        elapsed_ms = (time.perf_counter() - started) * 1000
    if args.json:
        print_json({"pong": True, "rtt_ms": round(elapsed_ms, 3)})
    else:
        print(f"pong from {client.socket_path} in {elapsed_ms:.2f} ms")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        status = client.status()
    return answer(args, status, _print_status)


def _print_status(status: StatusResult) -> None:
    log = status.eventlog
    rows = [
        (
            "daemon",
            f"gastownd {status.daemon_version} (protocol {status.protocol}), pid {status.pid}",
        ),
        ("up since", f"{status.started_at} ({human_duration(status.uptime_s)})"),
        ("town", status.town_root),
        ("socket", status.paths.socket),
        ("config", config_row(status)),
        ("connections", f"{status.connections} open, {status.requests} requests served"),
        ("event log", f"{status.paths.events}"),
        ("  lines", f"{log.lines} ({log.malformed} malformed), {human_bytes(log.bytes)}"),
    ]
    if status.indexing is not None:
        rows.append(("  indexing", indexing_text(status.indexing)))
    rows += [
        (
            "  appended",
            f"{log.appended} by gastownd, {log.external} by other writers "
            f"(durability: {log.durability})",
        ),
        ("  subscribers", str(log.subscribers)),
        (
            "  last prune",
            f"{log.last_prune_at} ({log.last_prune_removed} removed)"
            if log.last_prune_at
            else "never",
        ),
    ]
    archive = log.archive
    rows.append(
        (
            "  archive",
            f"{human_bytes(archive.bytes)}, {archive.days} days "
            f"({archive.first_day} to {archive.last_day})"
            if archive.days
            else "empty",
        )
    )
    if log.quarantined:
        rows.append(("  quarantined", f"{log.quarantined} torn tail(s) cut and saved"))
    known = status.sessions
    rows.append(
        (
            "sessions",
            f"{known.known} known: {known.open} open, {known.ended} ended, "
            f"{known.logged} only from gt's lines"
            + (f", {known.remote} on other nodes" if known.remote else ""),
        )
    )
    if status.hooks_trimmed:
        rows.append(("hooks trimmed", f"{status.hooks_trimmed} calls cut to fit the frame limit"))
    if status.hooks_lost:
        rows.append(("hooks lost", f"{status.hooks_lost} calls not applied (hook_call_lost)"))
    if status.spool_entries_skipped:
        rows.append(
            ("spool skipped", f"{status.spool_entries_skipped} entries (spool_entry_skipped)")
        )
    rows += federation_rows(status.federation)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def federation_rows(fed: FederationInfo) -> list[tuple[str, str]]:
    if not fed.enabled:
        return [("federation", f"off (this node: {fed.node}, town: {fed.town})")]
    if fed.connected and fed.server:
        name = f" ({fed.server_name})" if fed.server_name else ""
        state = f"connected to {fed.server}{name}"
    else:
        state = f"NOT connected (servers: {', '.join(fed.servers)})"
    rows = [
        ("federation", f"node {fed.node}, town {fed.town}, {state}"),
        ("  stream", fed.stream),
        (
            "  backlog",
            ", ".join(f"{n} {kind}" for kind, n in fed.backlog.items()) + " to publish",
        ),
        ("  traffic", f"{fed.published} records published, {fed.applied} applied since start"),
    ]
    if fed.node_conflict is not None:
        held = fed.node_conflict
        rows.append(
            (
                "  NODE CONFLICT",
                f"{held.node!r} is held by {held.host} (instance {held.instance}, since "
                f"{held.since}): set a unique [federation] node",
            )
        )
    if fed.clock_offset_s is not None:
        rows.append(("  clock", f"server clock {fed.clock_offset_s:+.3f}s from this node's"))
    if fed.rejected:
        rejected = ", ".join(f"{reason} {n}" for reason, n in fed.rejected.items())
        rows.append(("  rejected", rejected))
    if fed.too_large:
        rows.append(("  too large", f"{fed.too_large} records over the server's max_payload"))
    for node in fed.nodes:
        rows.append(
            (
                f"  node {node.node}",
                f"last record {node.last_record_at}: {node.events} events, "
                f"{node.sessions} session updates, {node.digests} digests, "
                f"{node.attributions} attributions",
            )
        )
    if fed.last_error:
        rows.append(("  last error", f"{fed.last_error_at}  {fed.last_error}"))
    return rows


def config_row(status: StatusResult) -> str:
    row = status.paths.config or "(defaults)"
    if status.config_restart_pending:
        row += f" (restart to apply: {', '.join(status.config_restart_pending)})"
    return row


def _metrics_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("openmetrics", "prometheus"),
        default="openmetrics",
        help="OpenMetrics (default) or Prometheus' classic text format",
    )


def cmd_metrics(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        result = client.metrics(format=args.format)
    sys.stdout.write(result.text)
    return EXIT_OK


def _prune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true")
    add_json(parser)


def cmd_prune(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        result = client.prune(dry_run=args.dry_run)
    return answer(args, result, _print_prune)


def _print_prune(result: PruneResult) -> None:
    verb = "would remove" if result.dry_run else "removed"
    print(
        f"{verb} {result.pruned_total} lines ({human_bytes(result.bytes_freed)}), "
        f"kept {result.kept}" + (f", archived {result.archived}" if result.archived else "")
    )
    for event_type, count in result.pruned.items():
        print(f"  {event_type:<24} {count}")


STATUS = Command("status", "daemon status and counters", cmd_status, add_json)
PING = Command("ping", "check that the daemon answers", cmd_ping, add_json)
SOCKNAME = Command("sockname", "print the socket path a client would use", cmd_sockname)
METRICS = Command(
    "metrics", "the daemon's metrics (OpenMetrics text)", cmd_metrics, _metrics_arguments
)
PRUNE = Command("prune", "apply retention now", cmd_prune, _prune_arguments)
