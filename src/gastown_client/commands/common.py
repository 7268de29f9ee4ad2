"""What every ``gastownctl`` subcommand shares: the ``Command`` shape, exit codes,
argument types, and the helpers that turn results into lines."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from gastown_client.client import Client
from gastown_client.protocol import IndexingProgress

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

T = TypeVar("T")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The most a listing asks for (the daemon's own bound on ``query``).
MAX_LIMIT = 100_000
# The most ``--payload @FILE`` or ``--payload -`` reads; the daemon's frame limit
# (1 MiB by default) refuses far less.
MAX_PAYLOAD_BYTES = 64 << 20

LIMIT_HELP = f"how many, 1 to {MAX_LIMIT} (default 20)"
PAYLOAD_HELP = (
    "payload: a JSON object, @FILE to read it from a file, or - from stdin "
    f"(at most {MAX_PAYLOAD_BYTES >> 20} MiB read; the daemon takes frames of 1 MiB by default)"
)
WHEN_HELP = "a duration back from now (30s, 30m, 2h, 7d, 1w) or a timestamp (2026-01-31T12:00:00Z)"


class UsageError(Exception):
    pass


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class Command:
    """One subcommand: its arguments, and what it does with them (an exit code).

    A command with ``subcommands`` is a group (``session start``): the chosen one runs.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace], int] | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    subcommands: tuple[Command, ...] = ()

    def add_to(self, parsers: Any) -> None:
        parser = parsers.add_parser(self.name, help=self.help)
        self.add_arguments(parser)
        if self.subcommands:
            group = parser.add_subparsers(dest=f"{self.name}_command", required=True)
            for command in self.subcommands:
                command.add_to(group)
        else:
            parser.set_defaults(run=self.run)


def lookup(
    name: str,
    help: str,
    key: str,
    fetch: Callable[[Client, str], T],
    human: Callable[[T], int | None],
    metavar: str | None = None,
) -> Command:
    """A command that fetches one thing by one id and shows it (``wisp ID``): ``--json``
    prints what the daemon answered, else ``human`` prints it."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(key, metavar=metavar)
        add_json(parser)

    def run(args: argparse.Namespace) -> int:
        with client_for(args) as client:
            result = fetch(client, getattr(args, key))
        return answer(args, result, human)

    return Command(name, help, run, add_arguments)


def count(text: str) -> int:
    """An ``-n`` value: an integer from 1 to ``MAX_LIMIT``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MAX_LIMIT}")
    return value


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")


def client_for(args: argparse.Namespace) -> Client:
    return Client(args.socket, town_root=args.town_root)


@contextmanager
def usage_checked() -> Iterator[None]:
    """A request refused by its own validation, before it is sent, is a usage error."""
    try:
        yield
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def answer(args: argparse.Namespace, result: T, human: Callable[[T], int | None]) -> int:
    """Print ``result``: as JSON under ``--json``, else its human form; the exit status.

    ``human`` prints and returns nothing (success) or the exit status it chose.
    """
    if args.json:
        print_json(result)
        return EXIT_OK
    status = human(result)
    return EXIT_OK if status is None else status


def json_object(text: str | None, option: str) -> dict[str, Any] | None:
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


def moment(text: str, option: str) -> str:
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


def short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    text = text.replace("\n", "⏎")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def indexing_text(progress: IndexingProgress) -> str:
    """How far the daemon's background indexing of older lines has come."""
    total = progress.bytes_total
    share = f"{min(100, progress.bytes_done * 100 // total)}% of " if total > 0 else ""
    return f"{progress.lines:,} older lines still being indexed ({share}{human_bytes(total)} read)"


def human_duration(seconds: float) -> str:
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
