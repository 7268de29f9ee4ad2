"""``gastownctl``: talk to gastownd from a shell.

Exit codes: 0 ok, 1 a failure (the daemon refused or could not do it; code
and message on stderr), 2 a usage error (bad arguments: argparse's, the
checks here, or the daemon's ``bad_request``), 3 the daemon could not be
reached. Never a traceback: whatever the arguments, one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from gastown_client import __version__, paths, protocol
from gastown_client.client import Client
from gastown_client.errors import ClientError, DaemonUnavailable, RequestRejected
from gastown_client.protocol import FederationInfo, StatusResult

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The most a listing asks for (the daemon's own bound on ``query``).
MAX_LIMIT = 100_000
# The most ``--payload @FILE`` or ``--payload -`` reads; the daemon's frame limit
# (1 MiB by default) refuses far less.
MAX_PAYLOAD_BYTES = 64 << 20
# Arguments that name files: any bytes the file system allows, not only UTF-8.
_PATH_ARGS = frozenset({"town_root", "socket", "settings", "only_under"})


class UsageError(Exception):
    pass


def _count(text: str) -> int:
    """An ``-n`` value: an integer from 1 to ``MAX_LIMIT``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MAX_LIMIT}")
    return value


_LIMIT_HELP = f"how many, 1 to {MAX_LIMIT} (default 20)"
_PAYLOAD_HELP = (
    "payload: a JSON object, @FILE to read it from a file, or - from stdin "
    f"(at most {MAX_PAYLOAD_BYTES >> 20} MiB read; the daemon takes frames of 1 MiB by default)"
)
_WHEN_HELP = "a duration back from now (30s, 30m, 2h, 7d, 1w) or a timestamp (2026-01-31T12:00:00Z)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gastownctl", description="Talk to gastownd.")
    parser.add_argument("--version", action="version", version=f"gastownctl {__version__}")
    parser.add_argument("--town-root", help="town directory (default: GT_TOWN_ROOT, cwd, ~/gt)")
    parser.add_argument("--socket", help="socket path (default: derived from the town)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub = commands.add_parser("status", help="daemon status and counters")
    sub.add_argument("--json", action="store_true")
    sub = commands.add_parser("ping", help="check that the daemon answers")
    sub.add_argument("--json", action="store_true")
    commands.add_parser("sockname", help="print the socket path a client would use")
    sub = commands.add_parser("metrics", help="the daemon's metrics (OpenMetrics text)")
    sub.add_argument(
        "--format",
        choices=("openmetrics", "prometheus"),
        default="openmetrics",
        help="OpenMetrics (default) or Prometheus' classic text format",
    )

    sub = commands.add_parser("emit", help="append an event to the town's log (durably)")
    sub.add_argument("type")
    sub.add_argument("--actor", required=True)
    sub.add_argument("--payload", metavar="JSON|@FILE|-", help=_PAYLOAD_HELP)
    sub.add_argument(
        "-p",
        dest="fields",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one payload field (string value); repeatable",
    )
    sub.add_argument("--visibility", choices=["feed", "audit", "both"], default="feed")
    sub.add_argument("--json", action="store_true", help="print the event as written")

    sub = commands.add_parser("events", help="query (and follow) the event log")
    sub.add_argument("--type", dest="types", action="append", default=[], metavar="TYPE")
    sub.add_argument("--actor", help="substring of the actor")
    sub.add_argument("--session", help="payload.session_id")
    sub.add_argument("--since", help=f"from: {_WHEN_HELP}")
    sub.add_argument("--until", help=f"up to: {_WHEN_HELP}")
    sub.add_argument("-n", dest="limit", type=_count, default=20, help=_LIMIT_HELP)
    sub.add_argument("--oldest-first", action="store_true")
    sub.add_argument(
        "--archive", action="store_true", help="also search the lines retention archived"
    )
    sub.add_argument("--follow", "-f", action="store_true", help="then print new events live")
    sub.add_argument("--json", action="store_true", help="one stored JSON line per event")
    nodes = sub.add_mutually_exclusive_group()
    nodes.add_argument(
        "--all-nodes", action="store_true", help='every node of a federated town (adds "node")'
    )
    nodes.add_argument("--node", help='one node\'s events (adds "node")')

    sub = commands.add_parser("prune", help="apply retention now")
    sub.add_argument("--dry-run", action="store_true")
    sub.add_argument("--json", action="store_true")

    session = commands.add_parser("session", help="open, step and end session wisps")
    session_commands = session.add_subparsers(dest="session_command", required=True)
    sub = session_commands.add_parser("start", help="open (or continue) a session's wisp")
    sub.add_argument("--session", required=True)
    sub.add_argument("--actor", required=True)
    sub.add_argument("--cwd")
    sub.add_argument("--topic")
    sub.add_argument(
        "--source", choices=["startup", "resume", "clear", "compact"], default="startup"
    )
    sub.add_argument("--parent", help="the session this one replaces (/clear, fork)")
    sub.add_argument("--tmux-session", help="tmux session name (default: $GT_SESSION)")
    sub.add_argument("--json", action="store_true")
    sub = session_commands.add_parser("step", help="record a step in an open wisp")
    sub.add_argument("--session", required=True)
    sub.add_argument("--kind", required=True)
    sub.add_argument("--ref")
    sub.add_argument("--payload", metavar="JSON|@FILE|-", help=_PAYLOAD_HELP)
    sub.add_argument("--json", action="store_true")
    sub = session_commands.add_parser("end", help="squash a wisp into its digest")
    sub.add_argument("--session", required=True)
    sub.add_argument("--reason", default="ended")
    sub.add_argument("--json", action="store_true")

    sub = commands.add_parser("wisp", help="a session's wisp and its steps")
    sub.add_argument("session", metavar="ID")
    sub.add_argument("--json", action="store_true")
    sub = commands.add_parser("digest", help="a digest, by digest id or session id")
    sub.add_argument("ref", metavar="ID")
    sub.add_argument("--json", action="store_true")
    sub = commands.add_parser("cv", help="an actor's digests (its entity chain), newest first")
    sub.add_argument("actor")
    sub.add_argument("-n", dest="limit", type=_count, default=20, help=_LIMIT_HELP)
    sub.add_argument("--verify", action="store_true", help="recompute the hash chain")
    sub.add_argument("--json", action="store_true")
    sub = commands.add_parser("sessions", help="sessions, newest first (the seance listing)")
    sub.add_argument("--role", help="case-insensitive substring of the actor")
    sub.add_argument("--rig", help="case-insensitive substring of the actor")
    sub.add_argument("-n", dest="limit", type=_count, default=20, help=_LIMIT_HELP)
    sub.add_argument("--state", choices=["open", "squashed", "abandoned", "logged"])
    sub.add_argument("--json", action="store_true")
    nodes = sub.add_mutually_exclusive_group()
    nodes.add_argument("--node", help="only the sessions that ran on this node")
    nodes.add_argument("--local", action="store_true", help="only this node's sessions")
    sub = commands.add_parser("seance", help="resume a predecessor session (claude --resume)")
    sub.add_argument("session", metavar="ID_OR_PREFIX")
    sub.add_argument("-p", dest="prompt", help="ask this and print the answer")
    sub.add_argument("--print-command", action="store_true", help="print, do not run")
    sub = commands.add_parser("attribute", help="record which session touched an issue")
    sub.add_argument("issue", help="a Beads issue id: prefix-hash, e.g. gt-a1b2 or gt-a1b2.3")
    sub.add_argument("--session", help="default: resolved from the environment")
    sub.add_argument(
        "--action", choices=["closed", "created", "updated", "reopened"], default="closed"
    )
    sub.add_argument("--json", action="store_true")
    sub = commands.add_parser("attribution", help="every session that touched an issue")
    sub.add_argument("issue")
    sub.add_argument("--json", action="store_true")
    sub = commands.add_parser("install-hooks", help="add gastown-hook to Claude Code settings")
    sub.add_argument("--settings", help="settings.json (default: ~/.claude/settings.json)")
    sub.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    sub.add_argument(
        "--uninstall",
        "--remove",
        action="store_true",
        help="remove gastownd's entries (and only them)",
    )
    sub.add_argument(
        "--only-under",
        metavar="DIR",
        help="with --uninstall: only the entries that run files under DIR (make uninstall)",
    )
    _add_federation_parser(commands)
    return parser


def _add_federation_parser(commands: Any) -> None:
    federation = commands.add_parser("federation", help="federation tools (NATS JetStream)")
    federation_commands = federation.add_subparsers(dest="federation_command", required=True)
    sub = federation_commands.add_parser(
        "check", help="check this node's federation setup: run before and after setup"
    )
    sub.add_argument("--config", help="TOML config (default: <town>/settings/gastownd.toml)")
    sub.add_argument("--json", action="store_true")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = _COMMANDS[args.command]
    try:
        _check_text(args)
        return handler(args)
    except UsageError as exc:
        print(f"gastownctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RequestRejected as exc:
        print(f"gastownctl: rejected ({exc.code}): {exc.message}", file=sys.stderr)
        # The daemon found the request itself malformed: the arguments were.
        return EXIT_USAGE if exc.code == "bad_request" else EXIT_REJECTED
    except DaemonUnavailable as exc:
        print(f"gastownctl: {exc}\n  start it with: gastownd run   (or: make run)", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ClientError as exc:
        print(f"gastownctl: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # a file named on the command line, stdout, ...
        print(f"gastownctl: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except Exception as exc:  # a bug: still one line, never a traceback
        print(f"gastownctl: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_REJECTED


def _check_text(args: argparse.Namespace) -> None:
    """Every text argument is valid UTF-8 (bad bytes arrive as lone surrogates)."""
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        for text in values:
            if name in _PATH_ARGS or not isinstance(text, str):
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                option = "--" + name.replace("_", "-")
                raise UsageError(f"{option}: {text!r} is not valid UTF-8") from None


def _client(args: argparse.Namespace) -> Client:
    return Client(args.socket, town_root=args.town_root)


def _print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


# ---------------------------------------------------------------- commands


def cmd_sockname(args: argparse.Namespace) -> int:
    if args.socket:
        print(args.socket)
    else:
        print(paths.socket_path(paths.find_town_root(args.town_root)))
    return EXIT_OK


def cmd_ping(args: argparse.Namespace) -> int:
    with _client(args) as client:
        started = time.perf_counter()
        client.ping()
        elapsed_ms = (time.perf_counter() - started) * 1000
    if args.json:
        _print_json({"pong": True, "rtt_ms": round(elapsed_ms, 3)})
    else:
        print(f"pong from {client.socket_path} in {elapsed_ms:.2f} ms")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.status()
    if args.json:
        _print_json(status)
        return EXIT_OK
    log = status.eventlog
    rows = [
        (
            "daemon",
            f"gastownd {status.daemon_version} (protocol {status.protocol}), pid {status.pid}",
        ),
        ("up since", f"{status.started_at} ({_human_duration(status.uptime_s)})"),
        ("town", status.town_root),
        ("socket", status.paths.socket),
        ("config", _config_row(status)),
        ("connections", f"{status.connections} open, {status.requests} requests served"),
        ("event log", f"{status.paths.events}"),
        ("  lines", f"{log.lines} ({log.malformed} malformed), {_human_bytes(log.bytes)}"),
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
            f"{_human_bytes(archive.bytes)}, {archive.days} days "
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
    rows += _federation_rows(status.federation)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return EXIT_OK


def _federation_rows(fed: FederationInfo) -> list[tuple[str, str]]:
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


def cmd_metrics(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.call(protocol.Metrics(format=args.format), protocol.MetricsResult)
    sys.stdout.write(result.text)
    return EXIT_OK


def cmd_emit(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = _json_object(args.payload or None, "--payload") or {}
    for field in args.fields:
        key, sep, value = field.partition("=")
        if not sep or not key:
            raise UsageError(f"-p expects KEY=VALUE, got {field!r}")
        payload[key] = value
    with _client(args) as client:
        try:
            result = client.emit(args.type, args.actor, payload, args.visibility)
        except ValueError as exc:  # the request's own validation, before sending
            raise UsageError(str(exc)) from None
    if args.json:
        sys.stdout.write(bytes(result.event).decode() + "\n")
    else:
        print(f"appended {args.type} (cursor {result.cursor})")
    return EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    filters: dict[str, Any] = {
        "types": args.types,
        "actor": args.actor,
        "session": args.session,
        "since": _moment(args.since, "--since") if args.since else None,
        "until": _moment(args.until, "--until") if args.until else None,
        "all_nodes": args.all_nodes,
        "node": args.node,
    }
    show: Callable[[bytes], None] = _show_json if args.json else _show_human
    with _client(args) as client:
        result = client.query(
            limit=args.limit, oldest_first=args.oldest_first, archive=args.archive, **filters
        )
        events = result.events
        if args.follow and not args.oldest_first:
            # Followed output reads top to bottom in time, like tail -f.
            events = list(reversed(events))
        for raw in events:
            show(bytes(raw))
        sys.stdout.flush()
        if not args.follow:
            return EXIT_OK
        subscription = client.subscribe(cursor=result.cursor, **filters)
        client.set_timeout(None)
        try:
            for _cursor, raw in subscription:
                show(bytes(raw))
                sys.stdout.flush()
        except RequestRejected as exc:
            if exc.code != "end":
                raise
            print("gastownctl: the daemon ended the stream (stopping?)", file=sys.stderr)
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.prune(dry_run=args.dry_run)
    if args.json:
        _print_json(result)
        return EXIT_OK
    verb = "would remove" if result.dry_run else "removed"
    print(
        f"{verb} {result.pruned_total} lines ({_human_bytes(result.bytes_freed)}), "
        f"kept {result.kept}" + (f", archived {result.archived}" if result.archived else "")
    )
    for event_type, count in result.pruned.items():
        print(f"  {event_type:<24} {count}")
    return EXIT_OK


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    """``text`` as a JSON object: given inline, ``@FILE`` or ``-`` (stdin)."""
    if text is None:
        return None
    if text == "-":
        data = sys.stdin.buffer.read(MAX_PAYLOAD_BYTES + 1)
        where = f"{option} - (stdin)"
    elif text.startswith("@"):
        try:
            with open(os.fsencode(text[1:]), "rb") as handle:
                data = handle.read(MAX_PAYLOAD_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"{option} {text}: {exc.strerror or exc}") from None
        where = f"{option} {text}"
    else:
        data = os.fsencode(text)  # bytes that were not UTF-8 come back as they were
        where = option
    if len(data) > MAX_PAYLOAD_BYTES:
        raise UsageError(f"{where}: more than {MAX_PAYLOAD_BYTES >> 20} MiB")
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise UsageError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"{where} is nested too deeply") from None
    if not isinstance(decoded, dict):
        raise UsageError(f"{where} must be a JSON object")
    return decoded


def cmd_session(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            if args.session_command == "start":
                started = client.session_start(
                    args.session,
                    args.actor,
                    cwd=args.cwd,
                    topic=args.topic,
                    source=args.source,
                    parent=args.parent,
                    tmux_session=args.tmux_session or os.environ.get("GT_SESSION") or None,
                )
                if args.json:
                    _print_json(started)
                else:
                    verb = "opened" if started.created else "continued"
                    print(
                        f"{verb} wisp {started.wisp.session_id} "
                        f"(segment {started.wisp.segment}, {started.wisp.step_count} steps)"
                    )
                    for ended in started.ended:
                        print(f"  ended {ended} (replaced)")
                return EXIT_OK
            if args.session_command == "step":
                stepped = client.session_step(
                    args.session,
                    args.kind,
                    ref=args.ref,
                    payload=_json_object(args.payload, "--payload"),
                )
                if args.json:
                    _print_json(stepped)
                else:
                    print(
                        f"{args.kind} recorded on {stepped.session_id} ({stepped.step_count} steps)"
                    )
                return EXIT_OK
            digest = client.session_end(args.session, args.reason)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.json:
        _print_json(digest)
    else:
        print(digest.summary)
    return EXIT_OK


def cmd_wisp(args: argparse.Namespace) -> int:
    with _client(args) as client:
        wisp = client.wisp(args.session)
    if args.json:
        _print_json(wisp)
        return EXIT_OK
    print(f"{wisp.session_id}  {wisp.actor}  {wisp.state} (segment {wisp.segment})")
    print(
        f"  started {wisp.started_at}, last activity {wisp.last_activity_at}"
        + (f", ended {wisp.ended_at} ({wisp.end_reason})" if wisp.ended_at else "")
    )
    for field, value in (
        ("topic", wisp.topic),
        ("cwd", wisp.cwd),
        ("tmux", wisp.tmux_session),
        ("parent", wisp.parent_session),
    ):
        if value:
            print(f"  {field}: {value}")
    for step in wisp.steps:
        print(f"  {step.at}  {step.kind:<14} {step.ref or ''}".rstrip())
    return EXIT_OK


def cmd_digest(args: argparse.Namespace) -> int:
    with _client(args) as client:
        digest = client.digest(args.ref)
    if args.json:
        _print_json(digest)
    else:
        print(f"{digest.title}  ({digest.digest_id})\n")
        print(digest.summary)
    return EXIT_OK


def cmd_cv(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.cv(args.actor, args.limit, args.verify)
    if args.json:
        _print_json(result)
    if not result.total:
        print(
            f"gastownctl: {args.actor}: no digests: an actor this town has seen no ended "
            "session of (see: gastownctl sessions --role ...)",
            file=sys.stderr,
        )
        return EXIT_REJECTED
    if not args.json:
        print(f"{result.actor}: {result.total} digests")
        show_nodes = len({d.node for d in result.digests}) > 1
        for digest in result.digests:
            extras = [f"on {digest.node}"] if show_nodes and digest.node else []
            if digest.issues_closed:
                extras.append(f"closed {', '.join(digest.issues_closed)}")
            if digest.commits:
                extras.append(f"{len(digest.commits)} commits")
            print(
                f"  {digest.ended_at}  {digest.digest_id}  {digest.session_id[:8]}  "
                f"{digest.end_reason:<12} {_human_duration(digest.duration_s):>7}  "
                f"{'; '.join(extras)}".rstrip()
            )
    if args.verify:
        for fork in result.forks:
            print(
                f"fork: {len(fork.digest_ids)} digests follow "
                f"{fork.prev_hash[:12] or '(the start)'}: "
                + ", ".join(f"{d} ({n})" for d, n in zip(fork.digest_ids, fork.nodes, strict=True)),
                file=sys.stderr if args.json else sys.stdout,
            )
        if result.verified:
            if not args.json:
                print(
                    "chain verified"
                    + (" (with forks: one identity on several machines)" if result.forks else "")
                )
        else:
            print(f"chain BROKEN at {result.broken_at}: {result.broken_reason}", file=sys.stderr)
            return EXIT_REJECTED
    return EXIT_OK


def cmd_sessions(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.sessions(
            role=args.role,
            rig=args.rig,
            limit=args.limit,
            state=args.state,
            node=args.node,
            local=args.local,
        )
    if args.json:
        _print_json(result.sessions)
        return EXIT_OK
    show_nodes = any(row.remote for row in result.sessions)
    for row in result.sessions:
        about = row.topic or row.summary or ""
        node = f"{row.node or '':<12} " if show_nodes else ""
        print(
            f"{row.last_started_at or row.started_at}  {row.session_id[:8]}  {node}{row.state:<9} "
            f"{row.actor:<28} "
            f"{row.end_reason or '':<11} {_short(about, 50)}".rstrip()
        )
    return EXIT_OK


def transcript_path(cwd: str, session_id: str, home: str | None = None) -> str:
    """Where Claude Code keeps a session's transcript (Gas Town reference, section 4)."""
    project = "".join(ch if ch.isalnum() else "-" for ch in cwd)
    base = home if home is not None else os.path.expanduser("~")
    return os.path.join(base, ".claude", "projects", project, f"{session_id}.jsonl")


def cmd_seance(args: argparse.Namespace) -> int:
    import shlex
    import shutil

    with _client(args) as client:
        row = client.resolve_session(args.session)
    command = ["claude", "--fork-session", "--resume", row.session_id]
    if args.prompt:
        command += ["-p", args.prompt]
    if row.remote:
        # The transcript lives on the machine that ran the session: never run claude here.
        where = f"cd {shlex.quote(row.cwd)} && " if row.cwd else ""
        if not args.print_command:
            print(
                f"gastownctl: session {row.session_id} ran on node {row.node}; "
                "its transcript is there. Run this on that machine:",
                file=sys.stderr,
            )
        print(f"{where}{shlex.join(command)}")
        return EXIT_OK if args.print_command else EXIT_REJECTED
    cwd = row.cwd or os.getcwd()
    if args.print_command:
        print(f"cd {shlex.quote(cwd)} && {shlex.join(command)}")
        return EXIT_OK
    if not os.path.isdir(cwd):
        print(
            f"gastownctl: the session's directory {cwd} no longer exists; "
            f"its digest: gastownctl digest {row.session_id}",
            file=sys.stderr,
        )
        return EXIT_REJECTED
    claude = shutil.which("claude")
    if claude is None:
        print(
            "gastownctl: 'claude' is not on PATH; install Claude Code or use --print-command",
            file=sys.stderr,
        )
        return EXIT_REJECTED
    transcript = transcript_path(cwd, row.session_id)
    if not os.path.exists(transcript):
        print(
            f"gastownctl: the transcript of {row.session_id} no longer exists "
            f"({transcript}); Claude Code deletes transcripts after 30 days. "
            f"Its digest: gastownctl digest {row.session_id}",
            file=sys.stderr,
        )
        return EXIT_REJECTED
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT")}
    import subprocess

    return subprocess.run([claude, *command[1:]], cwd=cwd, env=env).returncode


ATTRIBUTION_ENV = ("CLAUDE_CODE_SESSION_ID", "GT_ROLE", "BD_ACTOR", "GT_SESSION")


def cmd_attribute(args: argparse.Namespace) -> int:
    env = {k: os.environ[k] for k in ATTRIBUTION_ENV if os.environ.get(k)}
    runtime = os.path.join(os.getcwd(), ".runtime", "session_id")
    try:
        with open(runtime, encoding="utf-8") as handle:
            first = handle.readline().strip()
        if first:
            env["GT_RUNTIME_SESSION_ID"] = first
    except OSError:
        pass
    with _client(args) as client:
        result = client.attribute(
            args.issue, session=args.session, action=args.action, env=env, cwd=os.getcwd()
        )
    if args.json:
        _print_json(result)
    else:
        print(
            f"{result.issue} {result.action} by session {result.session_id} "
            f"({result.actor}; rule: {result.rule})"
        )
    return EXIT_OK


def cmd_attribution(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.attribution(args.issue)
    if args.json:
        _print_json(result)
        return EXIT_OK
    if not result.records:
        print(f"no session is recorded as touching {result.issue}")
    for record in result.records:
        print(
            f"{record.at}  {record.action:<8} {record.session_id}  {record.actor}"
            + (f"  digest {record.digest_id}" if record.digest_id else "")
            + (f"  on {record.node}" if record.node else "")
        )
    return EXIT_OK


def cmd_install_hooks(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gastown_client.hookinstall import run_install

    settings = Path(args.settings).expanduser() if args.settings else None
    if args.only_under and not args.uninstall:
        raise UsageError("--only-under goes with --uninstall")
    return run_install(
        settings,
        dry_run=args.dry_run,
        uninstall=args.uninstall,
        out=sys.stdout,
        err=sys.stderr,
        only_under=os.path.abspath(args.only_under) if args.only_under else None,
    )


def cmd_federation(args: argparse.Namespace) -> int:
    """Runs in gastownd (it reads the daemon's configuration and speaks NATS): imported
    only here, so that gastown_client stays usable without either."""
    try:
        import nats  # noqa: F401

        from gastownd.federation import check as federation_check
    except ImportError as exc:
        print(
            f"gastownctl: federation check needs gastownd and nats-py ({exc.name or exc} is "
            "missing): pip install gastownd",
            file=sys.stderr,
        )
        return EXIT_REJECTED
    return federation_check.main(args.town_root, args.config, as_json=args.json)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": cmd_status,
    "ping": cmd_ping,
    "sockname": cmd_sockname,
    "metrics": cmd_metrics,
    "emit": cmd_emit,
    "events": cmd_events,
    "prune": cmd_prune,
    "session": cmd_session,
    "wisp": cmd_wisp,
    "digest": cmd_digest,
    "cv": cmd_cv,
    "sessions": cmd_sessions,
    "seance": cmd_seance,
    "attribute": cmd_attribute,
    "attribution": cmd_attribution,
    "install-hooks": cmd_install_hooks,
    "federation": cmd_federation,
}


# ---------------------------------------------------------------- helpers


def _moment(text: str, option: str) -> str:
    """A ``--since``/``--until`` value as a UTC timestamp: a duration back from now, or a time."""
    match = _DURATION.match(text.strip())
    try:
        if match:
            seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
            moment = datetime.now(UTC).timestamp() - seconds
            return datetime.fromtimestamp(int(moment), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        if match is None:
            raise UsageError(
                f"{option} {text!r}: expected a duration (30s, 30m, 2h, 7d, 1w) "
                "or a timestamp (2026-01-31T12:00:00Z)"
            ) from None
        raise UsageError(f"{option} {text!r}: too far back") from None
    except (OverflowError, OSError):  # 1e400d, year 0 or 10000
        raise UsageError(f"{option} {text!r}: out of range") from None


def _show_json(line: bytes) -> None:
    sys.stdout.write(line.decode("utf-8", "replace") + "\n")


def _show_human(line: bytes) -> None:
    event = msgspec.json.decode(line)
    payload = event.get("payload") or {}
    details = " ".join(f"{k}={_short(v)}" for k, v in payload.items())
    node = f"{event['node']:<12} " if isinstance(event.get("node"), str) else ""
    print(
        f"{event.get('ts', '?')}  {node}{event.get('type', '?'):<16} "
        f"{event.get('actor', ''):<28} {details}".rstrip()
    )


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    text = text.replace("\n", "⏎")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _config_row(status: StatusResult) -> str:
    row = status.paths.config or "(defaults)"
    if status.config_restart_pending:
        row += f" (restart to apply: {', '.join(status.config_restart_pending)})"
    return row


def _human_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


if __name__ == "__main__":
    raise SystemExit(main())
