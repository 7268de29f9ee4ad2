"""Commands that set things up: install-hooks, federation check."""

from __future__ import annotations

import argparse
import os
import sys

from gastown_client.commands.common import EXIT_REJECTED, Command, UsageError, add_json


def _install_hooks_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", help="settings.json (default: ~/.claude/settings.json)")
    parser.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    parser.add_argument(
        "--uninstall",
        "--remove",
        action="store_true",
        help="remove gastownd's entries (and only them)",
    )
    parser.add_argument(
        "--only-under",
        metavar="DIR",
        help="with --uninstall: only the entries that run files under DIR (make uninstall)",
    )


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


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config (default: <town>/settings/gastownd.toml)")
    add_json(parser)


def cmd_federation(args: argparse.Namespace) -> int:
    """Runs in gastownd (it reads the daemon's configuration and speaks NATS): imported
    only here, so that gastown_client stays usable without either."""
    try:
        import nats  # noqa: F401

        from gastownd.federation import check as federation_check
    except ImportError as exc:
        print(
            f"gastownctl: federation check needs gastownd and nats-py ({exc.name or exc} is "
            "missing): pip install 'gastownd[federation]'",
            file=sys.stderr,
        )
        return EXIT_REJECTED
    return federation_check.main(args.town_root, args.config, as_json=args.json)


INSTALL_HOOKS = Command(
    "install-hooks",
    "add gastown-hook to Claude Code settings",
    cmd_install_hooks,
    _install_hooks_arguments,
)
FEDERATION = Command(
    "federation",
    "federation tools (NATS JetStream)",
    subcommands=(
        Command(
            "check",
            "check this node's federation setup: run before and after setup",
            cmd_federation,
            _check_arguments,
        ),
    ),
)
