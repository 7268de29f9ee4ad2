"""Service definitions for systemd (Linux) and launchd (macOS), and their installation.

Rendering is pure: town, executable and log directory in, file contents out.
``plan_service`` turns that into the files to write and commands to run, and
``install_service`` either describes the plan (``dry_run``) or carries it out.
The daemon never daemonises: both supervisors run it in the foreground and
hand it its listening socket.

The sandbox allows Unix sockets only, unless the town's settings configure
federation (``[federation] servers``): then also ``AF_INET``/``AF_INET6``, in
the per-town service, or for a templated instance in a drop-in
(``gastownd@<instance>.service.d/federation.conf``). A configuration error
(exit 78, ``EX_CONFIG``) is not restarted: it would fail the same way.
"""

from __future__ import annotations

import hashlib
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gastown_client import paths
from gastownd.process.systemd import FD_NAME

WATCHDOG_SEC = 30
TIMEOUT_STOP_SEC = 10
LAUNCHD_LABEL_PREFIX = "com.gastown.gastownd"
# Exit status of a configuration error (sysexits' EX_CONFIG): never restarted.
EXIT_CONFIG = 78
# launchd waits this long between two starts of a job that keeps exiting.
LAUNCHD_THROTTLE_S = 10
# Where launchd jobs find git and friends: it gives them only /usr/bin:/bin:/usr/sbin:/sbin.
LAUNCHD_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")
UNIX_ONLY = "AF_UNIX"
WITH_NETWORK = "AF_UNIX AF_INET AF_INET6"
FEDERATION_DROP_IN = "federation.conf"

# A character the unit-file parser would take as a quote, escape or line break.
_UNSAFE_IN_UNITS = frozenset("\"'\\") | frozenset(chr(c) for c in range(32)) | {"\x7f"}

# Hardening a per-user service manager can apply: the namespace options make it
# imply PrivateUsers=yes, the seccomp ones need NoNewPrivileges=yes (set).
_HARDENING = """\
# Sandboxing a per-user manager can apply; the town is the only writable path.
NoNewPrivileges=yes
ProtectSystem=strict
{read_write_paths}
{private_tmp}
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
SystemCallArchitectures=native
RestrictAddressFamilies={address_families}"""

_SERVICE = """\
# Rendered by `gastownd install-service`; re-run it instead of editing this file.
[Unit]
Description=gastownd for the Gas Town at {town_text}
Requires={socket_unit}
After={socket_unit}

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=kill -HUP $MAINPID
{environment}
Restart=on-failure
RestartSec=1s
RestartPreventExitStatus={exit_config}
TimeoutStopSec={timeout_stop}
WatchdogSec={watchdog}
{hardening}

[Install]
WantedBy=default.target
Also={socket_unit}
"""

_SOCKET = """\
# Rendered by `gastownd install-service`; re-run it instead of editing this file.
[Unit]
Description=gastownd socket for the Gas Town at {town_text}

[Socket]
ListenStream={listen}
SocketMode=0600
DirectoryMode=0700
FileDescriptorName={fd_name}

[Install]
WantedBy=sockets.target
"""


class ServiceError(Exception):
    """Installing the service cannot go ahead; the message says why and what to do."""


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


def systemd_escape_path(path: Path) -> str:
    """The instance name ``systemd-escape --path`` gives; ``%f`` turns it back into ``path``."""
    text = os.path.normpath(path).strip("/")
    if not text:
        return "-"
    out: list[str] = []
    for i, byte in enumerate(os.fsencode(text)):
        char = chr(byte)
        if char == "/":
            out.append("-")
        elif byte < 128 and (char.isalnum() or char in ":_" or (char == "." and i > 0)):
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def launchd_label(town_root: Path) -> str:
    digest = hashlib.sha256(os.fsencode(os.path.realpath(town_root))).hexdigest()[:12]
    return f"{LAUNCHD_LABEL_PREFIX}.{digest}"


def render_systemd_units(
    town_root: Path,
    gastownd_path: Path,
    *,
    templated: bool = False,
    environ: Mapping[str, str] = os.environ,
    federated: bool = False,
) -> dict[str, str]:
    """User units for one town: file name -> content.

    ``federated`` (the town's settings configure federation) lets the service
    open TCP connections to NATS; the template never does (see
    ``federation_drop_in``).

    Plain: ``gastownd.socket`` and ``gastownd.service`` with this town's
    absolute paths. ``templated``: ``gastownd@.socket`` and
    ``gastownd@.service``, where the instance is the town path escaped by
    ``systemd_escape_path`` (see ``systemd_socket_unit``); ``town_root`` is then
    only checked to fit the template.
    """
    town = _absolute(town_root)
    exe = _absolute(gastownd_path)
    _check_unit_safe(exe)
    _check_unit_safe(town)
    sock = paths.socket_path(town, environ)
    default_sock = paths.private_dir(town) / paths.SOCKET_NAME
    if templated:
        return _render_template(town, exe, sock, default_sock)

    rw_paths = [_unit_arg(str(town))]
    extra_env: list[tuple[str, str]] = []
    socket_outside = not sock.is_relative_to(town)
    if sock != default_sock:
        # The short fallback or an override: tell the daemon, which cannot derive it.
        extra_env.append(("GASTOWND_SOCKET", str(sock)))
    if socket_outside:
        # "-": the socket unit creates this directory; its absence must not block a start.
        rw_paths.append(_unit_arg(f"-{sock.parent}"))
    shared_tmp = _in_tmp(town) or (socket_outside and _in_tmp(sock))
    hardening = _HARDENING.format(
        read_write_paths="ReadWritePaths=" + " ".join(rw_paths),
        # A private /tmp would hide a town or socket that lives in the shared one.
        private_tmp="PrivateTmp=no" if shared_tmp else "PrivateTmp=yes",
        address_families=WITH_NETWORK if federated else UNIX_ONLY,
    )
    environment = "\n".join(
        f"Environment={_unit_arg(f'{k}={v}')}" for k, v in [("GT_TOWN_ROOT", str(town)), *extra_env]
    )
    service = _SERVICE.format(
        town_text=_unit_text(str(town)),
        socket_unit="gastownd.socket",
        exec_start=" ".join(_exec_arg(a) for a in (str(exe), "run", "--town-root", str(town))),
        environment=environment,
        exit_config=EXIT_CONFIG,
        timeout_stop=TIMEOUT_STOP_SEC,
        watchdog=WATCHDOG_SEC,
        hardening=hardening,
    )
    socket_unit = _SOCKET.format(
        town_text=_unit_text(str(town)), listen=_unit_text(str(sock)), fd_name=FD_NAME
    )
    return {"gastownd.socket": socket_unit, "gastownd.service": service}


def _render_template(town: Path, exe: Path, sock: Path, default_sock: Path) -> dict[str, str]:
    if sock != default_sock:
        raise ServiceError(
            f"the socket for {town} is {sock}, not inside the town (path too long for a "
            "Unix socket, or GASTOWND_SOCKET is set); the templated units cannot express "
            "that, install the per-town units instead"
        )
    if _in_tmp(town):
        raise ServiceError(
            f"{town} is under a temporary directory, which the templated units make private "
            "(PrivateTmp=yes); install the per-town units instead"
        )
    if "$" in str(town):
        raise ServiceError(
            f"{town} contains '$', which systemd would expand in the templated ExecStart; "
            "install the per-town units instead"
        )
    # %f is the unescaped instance with its leading "/": the town path again.
    hardening = _HARDENING.format(
        read_write_paths='ReadWritePaths="%f"',
        private_tmp="PrivateTmp=yes",
        address_families=UNIX_ONLY,
    )
    service = _SERVICE.format(
        town_text="%f",
        socket_unit="gastownd@%i.socket",
        exec_start=f'{_exec_arg(str(exe))} run --town-root "%f"',
        environment='Environment="GT_TOWN_ROOT=%f"',
        exit_config=EXIT_CONFIG,
        timeout_stop=TIMEOUT_STOP_SEC,
        watchdog=WATCHDOG_SEC,
        hardening=hardening,
    )
    relative_sock = default_sock.relative_to(town)
    socket_unit = _SOCKET.format(
        town_text="%f", listen=f"%f/{_unit_text(str(relative_sock))}", fd_name=FD_NAME
    )
    return {"gastownd@.socket": socket_unit, "gastownd@.service": service}


def federation_drop_in() -> str:
    """What a federated town's templated instance adds: TCP to NATS (lists of families merge)."""
    return (
        "# Rendered by `gastownd install-service`: this town's settings configure federation.\n"
        f"[Service]\nRestrictAddressFamilies={WITH_NETWORK}\n"
    )


def town_is_federated(town_root: Path) -> bool:
    """Whether the town's settings file configures federation; ``ServiceError`` if unreadable."""
    from gastownd.process.config_file import load_config

    path = paths.default_config_path(_absolute(town_root))
    try:
        config = load_config(path if path.exists() else None)
    except Exception as exc:  # whatever the settings' own errors are: one line, not a traceback
        raise ServiceError(f"cannot read the town's settings ({path}): {exc}") from None
    return bool(config.federation.servers)


def systemd_socket_unit(town_root: Path, *, templated: bool = False) -> str:
    """The unit to enable: the socket starts the service on the first connection."""
    if templated:
        return f"gastownd@{systemd_escape_path(_absolute(town_root))}.socket"
    return "gastownd.socket"


def render_launchd_plist(
    town_root: Path,
    gastownd_path: Path,
    log_dir: Path,
    *,
    environ: Mapping[str, str] = os.environ,
) -> bytes:
    """A LaunchAgent for one town: started at login, restarted after a failure, socket-activated."""
    town = _absolute(town_root)
    sock = paths.socket_path(town, environ)
    exe = _absolute(gastownd_path)
    search = [str(exe.parent), *(d for d in LAUNCHD_PATH if d != str(exe.parent))]
    env = {"GT_TOWN_ROOT": str(town), "PATH": ":".join(search)}
    if sock != paths.private_dir(town) / paths.SOCKET_NAME:
        env["GASTOWND_SOCKET"] = str(sock)
    log = _absolute(log_dir)
    plist = {
        "Label": launchd_label(town),
        "ProgramArguments": [str(exe), "run", "--town-root", str(town)],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        # A job that keeps failing (a configuration error) is retried this often, no more.
        "ThrottleInterval": LAUNCHD_THROTTLE_S,
        "StandardOutPath": str(log / "gastownd.out.log"),
        "StandardErrorPath": str(log / "gastownd.err.log"),
        "EnvironmentVariables": env,
        "Sockets": {
            FD_NAME: {
                "SockType": "stream",
                "SockPathName": str(sock),
                "SockPathMode": 0o600,
            }
        },
    }
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML)


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
    town = _absolute(town_root)
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
    if not town_exists(_absolute(town_root)):
        raise ServiceError(
            f"there is no town at {_absolute(town_root)} (no such directory); create it first "
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
        return _absolute(beside_python)
    found = shutil.which("gastownd")
    if found is None:
        raise ServiceError(
            "cannot find the gastownd executable; install the package first (make install)"
        )
    return _absolute(Path(found))


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


def _in_tmp(path: Path) -> bool:
    return any(path.is_relative_to(tmp) for tmp in (Path("/tmp"), Path("/var/tmp")))


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser()))


def _check_unit_safe(path: Path) -> None:
    bad = sorted({c for c in str(path) if c in _UNSAFE_IN_UNITS})
    if bad:
        raise ServiceError(
            f"cannot write {str(path)!r} into a unit file: it contains {bad!r}; "
            "move it to a path without quotes, backslashes or control characters"
        )


def _unit_text(value: str) -> str:
    return value.replace("%", "%%")


def _unit_arg(value: str) -> str:
    text = _unit_text(value)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def _exec_arg(value: str) -> str:
    # Exec lines also expand $VAR, so a literal "$" is written "$$".
    return _unit_arg(value.replace("$", "$$"))
