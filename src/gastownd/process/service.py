"""Installing the service for systemd (Linux) and launchd (macOS).

``plan_service`` turns the rendered files (``service_files.py``) into the
directories to make, files to write and commands to run, and ``install_service``
either describes the plan (``dry_run``) or carries it out.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gastown_client import paths
from gastownd.process.service_files import (
    FEDERATION_DROP_IN,
    ServiceError,
    absolute_path,
    federation_drop_in,
    launchd_label,
    render_launchd_plist,
    render_systemd_units,
    systemd_socket_unit,
)


@dataclass(frozen=True, slots=True)
class ServiceCommand:
    argv: tuple[str, ...]
    check: bool = True
    """False for clean-up steps whose failure only means there was nothing to clean."""


@dataclass(frozen=True, slots=True)
class ServicePlan:
    directories: Mapping[Path, int]
    """Directory -> mode for ``mkdir -p``; existing ones are left as they are."""
    files: Mapping[Path, bytes]
    commands: tuple[ServiceCommand, ...]


Runner = Callable[..., object]


def town_is_federated(town_root: Path) -> bool:
    """Whether the town's settings file configures federation; ``ServiceError`` if unreadable."""
    from gastownd.process.config_file import load_config

    path = paths.default_config_path(absolute_path(town_root))
    try:
        config = load_config(path if path.exists() else None)
    except Exception as exc:  # whatever the settings' own errors are: one line, not a traceback
        raise ServiceError(f"cannot read the town's settings ({path}): {exc}") from None
    return bool(config.federation.servers)


def plan_service(
    town_root: Path,
    *,
    gastownd_path: Path,
    home: Path,
    platform: str = sys.platform,
    templated: bool = False,
    environ: Mapping[str, str] = os.environ,
    uid: int | None = None,
    federated: bool = False,
) -> ServicePlan:
    """What installing means on ``platform``: directories, files and commands, in order."""
    town = absolute_path(town_root)
    if platform.startswith("linux"):
        unit_dir = _systemd_user_dir(home, environ)
        units = render_systemd_units(
            town, gastownd_path, templated=templated, environ=environ, federated=federated
        )
        files = {unit_dir / name: text.encode() for name, text in units.items()}
        directories = {unit_dir: 0o755}
        socket_unit = systemd_socket_unit(town, templated=templated)
        if templated and federated:
            drop_in_dir = unit_dir / (socket_unit.removesuffix(".socket") + ".service.d")
            directories[drop_in_dir] = 0o755
            files[drop_in_dir / FEDERATION_DROP_IN] = federation_drop_in().encode()
        return ServicePlan(
            directories=directories,
            files=files,
            commands=(
                ServiceCommand(("systemctl", "--user", "daemon-reload")),
                ServiceCommand(("systemctl", "--user", "enable", "--now", socket_unit)),
            ),
        )
    if platform == "darwin":
        if templated:
            raise ServiceError("launchd has no templates; install once per town instead")
        label = launchd_label(town)
        agents = home / "Library" / "LaunchAgents"
        log_dir = home / "Library" / "Logs" / "gastownd" / label.rsplit(".", 1)[-1]
        plist_path = agents / f"{label}.plist"
        domain = f"gui/{os.getuid() if uid is None else uid}"
        sock = paths.socket_path(town, environ)
        return ServicePlan(
            # launchd binds the socket itself but does not create its directory.
            directories={agents: 0o755, log_dir: 0o700, sock.parent: 0o700},
            files={plist_path: render_launchd_plist(town, gastownd_path, log_dir, environ=environ)},
            commands=(
                # Unload an older copy so bootstrap picks up the new plist.
                ServiceCommand(("launchctl", "bootout", f"{domain}/{label}"), check=False),
                ServiceCommand(("launchctl", "enable", f"{domain}/{label}")),
                ServiceCommand(("launchctl", "bootstrap", domain, str(plist_path))),
            ),
        )
    raise ServiceError(f"no service manager support for platform {platform!r} (linux, darwin)")


def install_service(
    town_root: Path,
    *,
    dry_run: bool,
    platform: str = sys.platform,
    runner: Runner = subprocess.run,
    gastownd_path: Path | None = None,
    templated: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    """Install and start the service for ``town_root``; return what was (or would be) done.

    With ``dry_run`` nothing is touched and each file's action carries its
    rendered content. Raises ``ServiceError`` when a step fails.
    """
    if not town_exists(absolute_path(town_root)):
        raise ServiceError(
            f"there is no town at {absolute_path(town_root)} (no such directory); create it first "
            "(gt install), or pass --town-root (make install TOWN=...)"
        )
    exe = gastownd_path if gastownd_path is not None else find_gastownd()
    home = Path(environ.get("HOME") or Path.home())
    plan = plan_service(
        town_root,
        gastownd_path=exe,
        home=home,
        platform=platform,
        templated=templated,
        environ=environ,
        federated=town_is_federated(town_root),
    )
    actions = describe_plan(plan, with_content=dry_run)
    if dry_run:
        return actions
    for directory, mode in plan.directories.items():
        directory.mkdir(mode=mode, parents=True, exist_ok=True)
    for path, content in plan.files.items():
        _write_atomically(path, content)
    for command in plan.commands:
        _run(runner, command)
    return actions


def describe_plan(plan: ServicePlan, *, with_content: bool) -> list[str]:
    actions = [f"create directory {d} (mode {m:04o})" for d, m in plan.directories.items()]
    for path, content in plan.files.items():
        if with_content:
            body = content.decode().rstrip("\n").replace("\n", "\n    ")
            actions.append(f"write {path}:\n    {body}")
        else:
            actions.append(f"write {path}")
    for command in plan.commands:
        suffix = "" if command.check else "  (may fail: nothing to unload)"
        actions.append(f"run {shlex.join(command.argv)}{suffix}")
    return actions


def town_exists(town: Path) -> bool:
    return town.is_dir()


def find_gastownd() -> Path:
    """The ``gastownd`` executable to put in the unit: ours first, then the one on PATH."""
    beside_python = Path(sys.executable).parent / "gastownd"
    if os.access(beside_python, os.X_OK) and beside_python.is_file():
        return absolute_path(beside_python)
    found = shutil.which("gastownd")
    if found is None:
        raise ServiceError(
            "cannot find the gastownd executable; install the package first (make install)"
        )
    return absolute_path(Path(found))


def _run(runner: Runner, command: ServiceCommand) -> None:
    argv = list(command.argv)
    try:
        runner(argv, check=command.check, capture_output=True, text=True)
    except FileNotFoundError:
        raise ServiceError(f"{argv[0]} not found on PATH; cannot run {shlex.join(argv)}") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip() if isinstance(exc.stderr, str) else ""
        hint = ""
        if "--user" in argv and ("connect to bus" in detail or "DBUS_SESSION_BUS" in detail):
            hint = (
                "; there is no systemd user manager here (a container, WSL, or ssh without "
                "lingering: loginctl enable-linger). Run the daemon yourself (gastownd run), "
                "or install without the service: make install SERVICE=no"
            )
        raise ServiceError(
            f"{shlex.join(argv)} failed with exit status {exc.returncode}"
            + (f": {detail}" if detail else "")
            + hint
        ) from None


def _write_atomically(path: Path, content: bytes) -> None:
    # A half-written unit must never be what a daemon-reload picks up.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _systemd_user_dir(home: Path, environ: Mapping[str, str]) -> Path:
    # systemd reads $XDG_CONFIG_HOME/systemd/user; only an absolute value counts.
    config_home = environ.get("XDG_CONFIG_HOME", "")
    base = Path(config_home) if os.path.isabs(config_home) else home / ".config"
    return base / "systemd" / "user"
