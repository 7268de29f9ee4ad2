"""Commands on the event log: emit, events (query and follow)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from gastown_client.commands.common import (
    EXIT_OK,
    LIMIT_HELP,
    PAYLOAD_HELP,
    WHEN_HELP,
    Command,
    UsageError,
    client_for,
    count,
    indexing_text,
    json_object,
    moment,
    short,
    usage_checked,
)
from gastown_client.errors import RequestRejected


def _emit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("type")
    parser.add_argument("--actor", required=True)
    parser.add_argument("--payload", metavar="JSON|@FILE|-", help=PAYLOAD_HELP)
    parser.add_argument(
        "-p",
        dest="fields",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one payload field (string value); repeatable",
    )
    parser.add_argument("--visibility", choices=["feed", "audit", "both"], default="feed")
    parser.add_argument("--json", action="store_true", help="print the event as written")


def cmd_emit(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = json_object(args.payload or None, "--payload") or {}
    for field in args.fields:
        key, sep, value = field.partition("=")
        if not sep or not key:
            raise UsageError(f"-p expects KEY=VALUE, got {field!r}")
        payload[key] = value
    with client_for(args) as client, usage_checked():
        result = client.emit(args.type, args.actor, payload, args.visibility)
    if args.json:
        sys.stdout.write(bytes(result.event).decode() + "\n")
    else:
        print(f"appended {args.type} (cursor {result.cursor})")
    return EXIT_OK


def _events_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", dest="types", action="append", default=[], metavar="TYPE")
    parser.add_argument("--actor", help="substring of the actor")
    parser.add_argument("--session", help="payload.session_id")
    parser.add_argument("--since", help=f"from: {WHEN_HELP}")
    parser.add_argument("--until", help=f"up to: {WHEN_HELP}")
    parser.add_argument("-n", dest="limit", type=count, default=20, help=LIMIT_HELP)
    parser.add_argument("--oldest-first", action="store_true")
    parser.add_argument(
        "--archive", action="store_true", help="also search the lines retention archived"
    )
    parser.add_argument("--follow", "-f", action="store_true", help="then print new events live")
    parser.add_argument("--json", action="store_true", help="one stored JSON line per event")
    nodes = parser.add_mutually_exclusive_group()
    nodes.add_argument(
        "--all-nodes", action="store_true", help='every node of a federated town (adds "node")'
    )
    nodes.add_argument("--node", help='one node\'s events (adds "node")')


def cmd_events(args: argparse.Namespace) -> int:
    filters: dict[str, Any] = {
        "types": args.types,
        "actor": args.actor,
        "session": args.session,
        "since": moment(args.since, "--since") if args.since else None,
        "until": moment(args.until, "--until") if args.until else None,
        "all_nodes": args.all_nodes,
        "node": args.node,
    }
    show: Callable[[bytes], None] = show_json if args.json else show_human
    with client_for(args) as client:
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
        if result.indexing is not None:
            # On stderr, so that --json output stays the lines alone.
            print(
                f"gastownctl: partial answer: {indexing_text(result.indexing)}; "
                "it covers the lines indexed so far",
                file=sys.stderr,
            )
        if result.archive_unreadable:
            print(
                "gastownctl: partial answer: the archive's files of "
                f"{', '.join(result.archive_unreadable)} could not be read (see the daemon's "
                "log); their lines are missing",
                file=sys.stderr,
            )
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


def show_json(line: bytes) -> None:
    sys.stdout.write(line.decode("utf-8", "replace") + "\n")


def show_human(line: bytes) -> None:
    event = msgspec.json.decode(line)
    payload = event.get("payload") or {}
    details = " ".join(f"{short(k)}={short(v)}" for k, v in payload.items())
    node = f"{short(event['node']):<12} " if isinstance(event.get("node"), str) else ""
    # One event, one row: a field's newlines are shown as ⏎, a long one is cut.
    print(
        f"{event.get('ts', '?')}  {node}{short(event.get('type', '?')):<16} "
        f"{short(event.get('actor', '')):<28} {details}".rstrip()
    )


EMIT = Command("emit", "append an event to the town's log (durably)", cmd_emit, _emit_arguments)
EVENTS = Command("events", "query (and follow) the event log", cmd_events, _events_arguments)
