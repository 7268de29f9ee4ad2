"""Commands on sessions: session start/step/end, wisp, digest, cv, sessions, seance."""

from __future__ import annotations

import argparse
import os
import sys

from gastown_client.commands.common import (
    EXIT_OK,
    EXIT_REJECTED,
    LIMIT_HELP,
    PAYLOAD_HELP,
    Command,
    add_json,
    answer,
    client_for,
    count,
    human_duration,
    json_object,
    lookup,
    print_json,
    short,
    usage_checked,
)
from gastown_client.protocol import DigestView, SessionRow, SessionStartResult, WispView


def _start_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", required=True)
    parser.add_argument("--actor", required=True)
    parser.add_argument("--cwd")
    parser.add_argument("--topic")
    parser.add_argument(
        "--source", choices=["startup", "resume", "clear", "compact"], default="startup"
    )
    parser.add_argument("--parent", help="the session this one replaces (/clear, fork)")
    parser.add_argument("--tmux-session", help="tmux session name (default: $GT_SESSION)")
    add_json(parser)


def cmd_session_start(args: argparse.Namespace) -> int:
    with client_for(args) as client, usage_checked():
        started = client.session_start(
            args.session,
            args.actor,
            cwd=args.cwd,
            topic=args.topic,
            source=args.source,
            parent=args.parent,
            tmux_session=args.tmux_session or os.environ.get("GT_SESSION") or None,
        )
    return answer(args, started, _print_started)


def _print_started(started: SessionStartResult) -> None:
    verb = "opened" if started.created else "continued"
    print(
        f"{verb} wisp {started.wisp.session_id} "
        f"(segment {started.wisp.segment}, {started.wisp.step_count} steps)"
    )
    for ended in started.ended:
        print(f"  ended {ended} (replaced)")


def _step_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", required=True)
    parser.add_argument("--kind", required=True)
    parser.add_argument("--ref")
    parser.add_argument("--payload", metavar="JSON|@FILE|-", help=PAYLOAD_HELP)
    add_json(parser)


def cmd_session_step(args: argparse.Namespace) -> int:
    with client_for(args) as client, usage_checked():
        stepped = client.session_step(
            args.session,
            args.kind,
            ref=args.ref,
            payload=json_object(args.payload, "--payload"),
        )
    return answer(
        args,
        stepped,
        lambda stepped: print(
            f"{args.kind} recorded on {stepped.session_id} ({stepped.step_count} steps)"
        ),
    )


def _end_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", required=True)
    parser.add_argument("--reason", default="ended")
    add_json(parser)


def cmd_session_end(args: argparse.Namespace) -> int:
    with client_for(args) as client, usage_checked():
        digest = client.session_end(args.session, args.reason)
    return answer(args, digest, lambda digest: print(digest.summary))


def _print_wisp(wisp: WispView) -> None:
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


def _print_digest(digest: DigestView) -> None:
    print(f"{digest.title}  ({digest.digest_id})\n")
    print(digest.summary)


def _cv_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("actor")
    parser.add_argument("-n", dest="limit", type=count, default=20, help=LIMIT_HELP)
    parser.add_argument("--verify", action="store_true", help="recompute the hash chain")
    add_json(parser)


def cmd_cv(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        result = client.cv(args.actor, args.limit, args.verify)
    if args.json:
        print_json(result)
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
                f"{digest.end_reason:<12} {human_duration(digest.duration_s):>7}  "
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


def _sessions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", help="case-insensitive substring of the actor")
    parser.add_argument("--rig", help="case-insensitive substring of the actor")
    parser.add_argument("-n", dest="limit", type=count, default=20, help=LIMIT_HELP)
    parser.add_argument("--state", choices=["open", "squashed", "abandoned", "logged"])
    add_json(parser)
    nodes = parser.add_mutually_exclusive_group()
    nodes.add_argument("--node", help="only the sessions that ran on this node")
    nodes.add_argument("--local", action="store_true", help="only this node's sessions")


def cmd_sessions(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        result = client.sessions(
            role=args.role,
            rig=args.rig,
            limit=args.limit,
            state=args.state,
            node=args.node,
            local=args.local,
        )
    return answer(args, result.sessions, _print_sessions)


def _print_sessions(rows: list[SessionRow]) -> None:
    show_nodes = any(row.remote for row in rows)
    for row in rows:
        about = row.topic or row.summary or ""
        node = f"{row.node or '':<12} " if show_nodes else ""
        # No count for a session known only from the log (or from an older daemon).
        done = row.step_count
        steps = "" if done is None else f"{done} step" + ("" if done == 1 else "s")
        print(
            f"{row.last_started_at or row.started_at}  {row.session_id[:8]}  {node}{row.state:<9} "
            f"{short(row.actor):<28} {steps:<9} "
            f"{row.end_reason or '':<11} {short(about, 50)}".rstrip()
        )


def _seance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", metavar="ID_OR_PREFIX")
    parser.add_argument("-p", dest="prompt", help="ask this and print the answer")
    parser.add_argument("--print-command", action="store_true", help="print, do not run")


def transcript_path(cwd: str, session_id: str, home: str | None = None) -> str:
    """Where Claude Code keeps a session's transcript (Gas Town reference, section 4)."""
    project = "".join(ch if ch.isalnum() else "-" for ch in cwd)
    base = home if home is not None else os.path.expanduser("~")
    return os.path.join(base, ".claude", "projects", project, f"{session_id}.jsonl")


def cmd_seance(args: argparse.Namespace) -> int:
    import shlex
    import shutil

    with client_for(args) as client:
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


SESSION = Command(
    "session",
    "open, step and end session wisps",
    subcommands=(
        Command(
            "start", "open (or continue) a session's wisp", cmd_session_start, _start_arguments
        ),
        Command("step", "record a step in an open wisp", cmd_session_step, _step_arguments),
        Command("end", "squash a wisp into its digest", cmd_session_end, _end_arguments),
    ),
)
WISP = lookup(
    "wisp",
    "a session's wisp and its steps",
    "session",
    lambda client, session: client.wisp(session),
    _print_wisp,
    metavar="ID",
)
DIGEST = lookup(
    "digest",
    "a digest, by digest id or session id",
    "ref",
    lambda client, ref: client.digest(ref),
    _print_digest,
    "ID",
)
CV = Command("cv", "an actor's digests (its entity chain), newest first", cmd_cv, _cv_arguments)
SESSIONS = Command(
    "sessions", "sessions, newest first (the seance listing)", cmd_sessions, _sessions_arguments
)
SEANCE = Command(
    "seance", "resume a predecessor session (claude --resume)", cmd_seance, _seance_arguments
)
