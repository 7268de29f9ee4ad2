"""Where things live: town root, the daemon's private directory, socket, spool.

Used by the daemon and by every client, so both sides always agree. Stdlib
only (the hook imports it). Nothing here depends on per-shell variables such
as ``$TMPDIR``: two shells of the same user must find the same socket.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

PRIVATE_DIR_NAME = ".gastownd"
SOCKET_NAME = "gastownd.sock"
LOCK_NAME = "gastownd.lock"
EVENTS_NAME = ".events.jsonl"
EVENTS_LOCK_NAME = ".events.jsonl.lock"
CONFIG_RELATIVE = Path("settings") / "gastownd.toml"
TOWN_MARKER = Path("mayor") / "town.json"

# sun_path holds 108 bytes on Linux and 104 on the BSDs and macOS, NUL included.
SUN_PATH_MAX = 108 if sys.platform.startswith("linux") else 104


def find_town_root(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    create: bool = False,
) -> Path:
    """Resolve the town root the way ``gt`` does.

    Order: ``explicit``, ``GT_TOWN_ROOT`` (or ``GT_ROOT``), the outermost
    ancestor of ``cwd`` holding ``mayor/town.json`` (else one holding a
    ``mayor/`` directory), else ``~/gt``. The
    default town is created when ``create`` is true (the daemon does that,
    clients never do).
    """
    env = os.environ if environ is None else environ
    chosen: Path | None = None
    if explicit:
        chosen = Path(explicit).expanduser()
    elif env.get("GT_TOWN_ROOT"):
        chosen = Path(env["GT_TOWN_ROOT"]).expanduser()
    elif env.get("GT_ROOT"):
        chosen = Path(env["GT_ROOT"]).expanduser()
    else:
        chosen = _outermost_town(Path(cwd) if cwd is not None else Path.cwd())
    if chosen is None:
        home_dir = Path(home) if home is not None else Path.home()
        chosen = home_dir / "gt"
        if create:
            chosen.mkdir(mode=0o755, parents=True, exist_ok=True)
    return Path(os.path.abspath(chosen))


def _outermost_town(start: Path) -> Path | None:
    """The outermost ancestor with ``mayor/town.json``, else with a ``mayor/`` dir (as gt)."""
    with_marker: Path | None = None
    with_mayor: Path | None = None
    for candidate in (start, *start.parents):
        if (candidate / TOWN_MARKER).is_file():
            with_marker = candidate
        elif (candidate / TOWN_MARKER.parent).is_dir():
            with_mayor = candidate
    return with_marker or with_mayor


def private_dir(town: Path) -> Path:
    return town / PRIVATE_DIR_NAME


def lock_path(town: Path) -> Path:
    return private_dir(town) / LOCK_NAME


def spool_dir(town: Path) -> Path:
    return private_dir(town) / "spool"


def events_path(town: Path) -> Path:
    return town / EVENTS_NAME


def events_lock_path(town: Path) -> Path:
    return town / EVENTS_LOCK_NAME


def default_config_path(town: Path) -> Path:
    return town / CONFIG_RELATIVE


def socket_path(town: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The socket a client connects to and the daemon binds.

    ``GASTOWND_SOCKET`` wins. Otherwise ``<town>/.gastownd/gastownd.sock``,
    unless that path does not fit in ``sun_path``: then a short path derived
    only from the town's real path and the uid, so it is the same for every
    shell, every client and the daemon.
    """
    env = os.environ if environ is None else environ
    override = env.get("GASTOWND_SOCKET")
    if override:
        return Path(os.path.abspath(Path(override).expanduser()))
    preferred = private_dir(town) / SOCKET_NAME
    if len(os.fsencode(preferred)) < SUN_PATH_MAX:
        return preferred
    return short_socket_path(town)


def short_socket_path(town: Path) -> Path:
    import hashlib  # not at module level: the hook imports this module

    digest = hashlib.sha256(os.fsencode(os.path.realpath(town))).hexdigest()[:16]
    return Path(f"/tmp/gastownd-{os.getuid()}") / f"{digest}.sock"
