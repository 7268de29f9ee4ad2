"""``gastownd``: run the daemon in the foreground (supervisors do the rest)."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gastown_client import __version__
from gastown_client import paths as town_paths

if TYPE_CHECKING:
    from gastownd.process.config import Config
    from gastownd.process.refusals import StartupError


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, with the terminal's width read without ``shutil``: argparse builds a
    formatter for every ``add_argument``, and importing ``shutil`` (which brings bz2 and lzma)
    would cost every start a few milliseconds for a help text it does not print."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=terminal_columns() - 2)


def terminal_columns(fallback: int = 80) -> int:
    """``shutil.get_terminal_size().columns``: ``$COLUMNS``, else stdout's terminal."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    stdout = sys.__stdout__
    if stdout is None:
        return fallback
    try:
        return os.get_terminal_size(stdout.fileno()).columns or fallback
    except (ValueError, OSError):
        return fallback


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gastownd",
        description="The Gas Town daemon: event log and agent sessions.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gastownd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run the daemon in the foreground", formatter_class=HelpFormatter
    )
    run.add_argument("--town-root", type=Path, help="town directory (default: see docs)")
    run.add_argument(
        "--config",
        type=Path,
        help="TOML config (default: <town>/settings/gastownd.toml if present)",
    )
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", choices=["auto", "json", "console"])
    run.add_argument(
        "--no-supervisor", action="store_true", help="ignore LISTEN_FDS/NOTIFY_SOCKET even when set"
    )
    install = commands.add_parser(
        "install-service",
        help="install and enable the systemd user units (launchd on macOS)",
        formatter_class=HelpFormatter,
    )
    install.add_argument("--town-root", type=Path, help="town directory")
    install.add_argument("--dry-run", action="store_true", help="print what would be done")
    install.add_argument(
        "--templated",
        action="store_true",
        help="use the gastownd@.service template (several towns)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    if args.command == "install-service":
        return install(args)
    return 2


def install(args: argparse.Namespace) -> int:
    from gastownd.process.service import install_service
    from gastownd.process.service_files import ServiceError

    town = town_paths.find_town_root(args.town_root)
    try:
        for action in install_service(town, dry_run=args.dry_run, templated=args.templated):
            print(action)
    except ServiceError as exc:
        print(f"gastownd: {exc}", file=sys.stderr)
        return 1
    return 0


def loop_options(choice: str) -> dict[str, bool]:
    """anyio's asyncio backend options: uvloop when asked for, or (``auto``) installed."""
    if choice == "asyncio":
        return {}
    if choice == "auto":
        try:
            import uvloop  # noqa: F401 - the ``fast`` extra
        except ImportError:
            return {}
    return {"use_uvloop": True}


def run(args: argparse.Namespace) -> int:
    """Exit 0 after a clean stop; a refusal (docs/operations.md) is one line on stderr.

    The cyclic garbage collector is paused from here to the first answer: the start-up
    (importing the daemon's modules, then building its parts) allocates hundreds of thousands
    of objects and frees almost none, so the collections it triggers find nothing and cost
    about 4 % of a start's instructions. The housekeeping resumes it once the first answer
    is out (``process/housekeeping.py``); so does the end of this call, whatever happened.
    """
    gc.disable()
    try:
        return serve(args)
    finally:
        gc.enable()


def serve(args: argparse.Namespace) -> int:
    """``run``'s work. The daemon's modules are imported here, with the collector paused."""
    import anyio
    import structlog

    from gastownd.process.app import App, build_state
    from gastownd.process.logsetup import configure_logging
    from gastownd.process.refusals import EXIT_SOFTWARE, StartupError

    configure_logging("info", args.log_format or "auto")
    log = structlog.get_logger("gastownd")
    try:
        town = town_paths.find_town_root(args.town_root, create=True)
        state = build_state(town, args.config)
    except StartupError as exc:
        return refuse(exc, supervised=not args.no_supervisor)
    except OSError as exc:
        # Creating the default town (~/gt) failed.
        where = exc.filename or args.town_root
        return refuse(
            StartupError(f"{where}: cannot create the town: {exc.strerror or exc}"),
            supervised=not args.no_supervisor,
        )
    config = state.config
    level = args.log_level or config.log_level
    configure_logging(level, args.log_format or config.log_format)
    app = App(state, supervised=not args.no_supervisor)

    def relog(new_config: Config) -> None:
        configure_logging(
            args.log_level or new_config.log_level, args.log_format or new_config.log_format
        )

    app.on_reload.append(relog)
    try:
        anyio.run(app.run, backend_options=loop_options(config.server.event_loop))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        refusal = startup_error(exc)
        if refusal is not None:
            return refuse(refusal, supervised=not args.no_supervisor)
        log.exception("daemon_crashed")
        return EXIT_SOFTWARE
    return 0


def startup_error(exc: BaseException) -> StartupError | None:
    """The refusal ``exc`` is, or holds alone (raised inside a task group), else None."""
    from gastownd.process.refusals import StartupError

    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        refusals, others = exc.split(StartupError)
        if others is None and refusals is not None:
            return startup_error(refusals.exceptions[0])
    return None


def refuse(exc: StartupError, *, supervised: bool) -> int:
    """One line on stderr (and the same to systemd), and the refusal's exit status."""
    from gastownd.process.systemd import Notifier

    message = " ".join(exc.message.splitlines())
    print(f"gastownd: {message}", file=sys.stderr)
    if supervised:
        notifier = Notifier.from_environ()
        notifier.failed(message, exc.errno_code)
        notifier.close()
    return exc.exit_code
