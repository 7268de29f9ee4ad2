"""Drives a temporary town for the editor tests: the daemon, the real hook, the real CLI.

The editors' own tests run it as a command (``python townctl.py --town T emit ...``) to act on
the town while their buffers are open. Every action is the real thing: the real ``gastownctl
emit``, the real ``gastown-hook`` fed Claude Code-shaped payloads, ``gt``-style appends (flock
on the sidecar, one ``O_APPEND`` write), and the daemon itself, which pytest owns
(``tests/editors/conftest.py`` serves ``start`` and ``stop`` on ``<town>/townctl.sock``).

    townctl.py --town T start                  start the daemon, return once it answers
    townctl.py --town T stop                   SIGTERM it, return once it has exited 0
    townctl.py --town T emit TYPE ACTOR [K=V]  gastownctl emit (returns after the ack)
    townctl.py --town T emit-json TYPE ACTOR J gastownctl emit --payload J (a JSON object)
    townctl.py --town T ctl ARG...             gastownctl ARG... (any subcommand)
    townctl.py --town T sample                 the real town's log (tests/data), as gt appends it
    townctl.py --town T hook SESSION start     SessionStart through gastown-hook
    townctl.py --town T hook SESSION close ID  PostToolUse of a Bash ``bd close ID``
    townctl.py --town T hook SESSION end       SessionEnd
    townctl.py --town T append MARK N [--old]  N gt-style lines (payload mark=MARK-i)
    townctl.py --town T prune                  gastownctl prune
    townctl.py --town T replace-log MARK N     a new log file (new inode) of N lines
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gastown_client import hook, paths  # noqa: E402
from tests.integration.test_eventlog import gt_append  # noqa: E402

ACTOR = "gastown/polecats/nux"
TMUX_SESSION = "gt-nux"
CONTROL_SOCKET = "townctl.sock"


def control(town: Path, command: str, timeout_s: float = 60.0) -> None:
    """Ask the pytest side to ``start`` or ``stop`` the daemon, and wait until it has.

    The daemon stays a child of pytest (``DaemonProcess``), which reaps it and
    checks its exit status; the editors only ask.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout_s)
        conn.connect(str(town / CONTROL_SOCKET))
        conn.sendall(command.encode() + b"\n")
        answer = conn.makefile("rb").readline().decode().strip()
    if answer != "ok":
        raise SystemExit(f"townctl {command}: {answer or 'no answer'}")


def gastownctl(town: Path, *args: str) -> None:
    console = Path(sys.executable).parent / "gastownctl"
    command = [str(console)] if console.exists() else [sys.executable, "-m", "gastown_client.cli"]
    done = subprocess.run(
        [*command, "--town-root", str(town), *args], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise SystemExit(f"gastownctl {args[0]} failed ({done.returncode}): {done.stderr}")


def emit(town: Path, event_type: str, actor: str, fields: list[str]) -> None:
    args = ["emit", event_type, "--actor", actor]
    for field in fields:
        args += ["-p", field]
    gastownctl(town, *args)


SAMPLE_LOG = ROOT / "tests" / "data" / "sample-town.events.jsonl"


def emit_json(town: Path, event_type: str, actor: str, payload: str) -> None:
    gastownctl(town, "emit", event_type, "--actor", actor, "--payload", payload)


def sample(town: Path) -> None:
    """The sample town's 611 lines in one gt-style append (flock on the sidecar, one write)."""
    data = SAMPLE_LOG.read_bytes()
    with open(town / ".events.jsonl.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fd = os.open(town / ".events.jsonl", os.O_APPEND | os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
            fcntl.flock(lock, fcntl.LOCK_UN)


def hook_payload(session: str, action: str, issue: str | None) -> dict[str, Any]:
    """A hook payload shaped as Claude Code sends it (Gas Town reference, section 4)."""
    base: dict[str, Any] = {
        "session_id": session,
        "transcript_path": f"/home/u/.claude/projects/-tmp/{session}.jsonl",
        "cwd": "/tmp",
        "permission_mode": "default",
    }
    if action == "start":
        return {**base, "hook_event_name": "SessionStart", "source": "startup"}
    if action == "end":
        return {**base, "hook_event_name": "SessionEnd", "reason": "prompt_input_exit"}
    if action == "close" and issue:
        return {
            **base,
            "hook_event_name": "PostToolUse",
            "tool_name": "Bash",
            "tool_use_id": "toolu_01",
            "tool_input": {"command": f"bd close {issue} --reason done", "description": "close"},
            "tool_response": {"stdout": "", "stderr": "", "interrupted": False, "isImage": False},
        }
    raise SystemExit(f"unknown hook action {action!r} (start, close ISSUE, end)")


def run_hook(town: Path, session: str, action: str, issue: str | None) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
        "GT_TOWN_ROOT": str(town),
        "GT_ROLE": ACTOR,
        "GT_SESSION": TMUX_SESSION,
    }
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(Path(hook.__file__).resolve())],
        input=json.dumps(hook_payload(session, action, issue)).encode(),
        capture_output=True,
        env=env,
        timeout=30,
    )
    if done.returncode != 0 or done.stdout or done.stderr:
        raise SystemExit(f"gastown-hook: exit {done.returncode} {done.stdout!r} {done.stderr!r}")


def marked_line(mark: str, number: int, old: bool = False) -> dict[str, Any]:
    """A gt-style line; ``old`` ones (2020) are past every retention TTL."""
    return {
        "ts": "2020-01-01T00:00:00Z" if old else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": "gt",
        "type": "nudge",
        "actor": "gastown/witness",
        "payload": {"mark": f"{mark}-{number}"},
        "visibility": "feed",
    }


def append(town: Path, mark: str, count: int, old: bool = False) -> None:
    for number in range(1, count + 1):
        gt_append(town, marked_line(mark, number, old))


def prune(town: Path) -> None:
    """``gastownctl prune``: the daemon applies its retention policy now."""
    gastownctl(town, "prune")


def replace_log(town: Path, mark: str, count: int) -> None:
    """Swap in a new log file, as Gas Town's own pruning does: a new inode, a new epoch."""
    events = paths.events_path(town)
    fresh = events.with_name(events.name + ".new")
    fresh.write_bytes(
        b"".join(
            json.dumps(marked_line(mark, n), separators=(",", ":")).encode() + b"\n"
            for n in range(1, count + 1)
        )
    )
    os.replace(fresh, events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="townctl")
    parser.add_argument("--town", required=True, type=Path)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("start")
    commands.add_parser("stop")
    sub = commands.add_parser("emit")
    sub.add_argument("type")
    sub.add_argument("actor")
    sub.add_argument("fields", nargs="*")
    sub = commands.add_parser("emit-json")
    sub.add_argument("type")
    sub.add_argument("actor")
    sub.add_argument("payload")
    commands.add_parser("sample")
    sub = commands.add_parser("ctl")
    sub.add_argument("args", nargs=argparse.REMAINDER)
    sub = commands.add_parser("hook")
    sub.add_argument("session")
    sub.add_argument("action", choices=["start", "close", "end"])
    sub.add_argument("issue", nargs="?")
    for name in ("append", "replace-log"):
        sub = commands.add_parser(name)
        sub.add_argument("mark")
        sub.add_argument("count", type=int)
        if name == "append":
            sub.add_argument("--old", action="store_true", help="dated 2020: past every TTL")
    commands.add_parser("prune")
    args = parser.parse_args(argv)
    town: Path = args.town
    if args.command in ("start", "stop"):
        control(town, args.command)
    elif args.command == "emit":
        emit(town, args.type, args.actor, args.fields)
    elif args.command == "emit-json":
        emit_json(town, args.type, args.actor, args.payload)
    elif args.command == "ctl":
        gastownctl(town, *args.args)
    elif args.command == "sample":
        sample(town)
    elif args.command == "hook":
        run_hook(town, args.session, args.action, args.issue)
    elif args.command == "append":
        append(town, args.mark, args.count, args.old)
    elif args.command == "prune":
        prune(town)
    else:
        replace_log(town, args.mark, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
