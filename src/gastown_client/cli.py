"""``gastownctl``: talk to gastownd from a shell.

Output is written through ``terminal.inert``: no text from the log can drive the
terminal. Exit codes: 0 ok, 1 a failure (the daemon refused or could not do it; code
and message on stderr), 2 a usage error (bad arguments: argparse's, the
checks here, or the daemon's ``bad_request``), 3 the daemon could not be
reached. Never a traceback: whatever the arguments, one line on stderr.

The subcommands are in ``gastown_client.commands``, one ``Command`` each.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from gastown_client.commands import COMMANDS
from gastown_client.commands.common import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    MAX_LIMIT,
    MAX_PAYLOAD_BYTES,
    UsageError,
)
from gastown_client.commands.issues import ATTRIBUTION_ENV
from gastown_client.commands.session_commands import transcript_path
from gastown_client.errors import ClientError, DaemonUnavailable, RequestRejected
from gastown_client.terminal import inert_output
from gastown_client.version import __version__

__all__ = [
    "ATTRIBUTION_ENV",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "MAX_LIMIT",
    "MAX_PAYLOAD_BYTES",
    "UsageError",
    "build_parser",
    "main",
    "transcript_path",
]

# Arguments that name files: any bytes the file system allows, not only UTF-8.
_PATH_ARGS = frozenset({"town_root", "socket", "settings", "only_under"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gastownctl", description="Talk to gastownd.")
    parser.add_argument("--version", action="version", version=f"gastownctl {__version__}")
    parser.add_argument("--town-root", help="town directory (default: GT_TOWN_ROOT, cwd, ~/gt)")
    parser.add_argument("--socket", help="socket path (default: derived from the town)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_to(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Log lines carry any writer's text: none of it may drive the terminal.
    with inert_output():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_text(args)
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
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


if __name__ == "__main__":
    raise SystemExit(main())
