"""The files a supervisor runs gastownd from: systemd units and a launchd plist.

Pure: town, executable and log directory in, file contents out (``service.py`` plans and
carries out their installation). The daemon never daemonises: both supervisors run it in
the foreground and hand it its listening socket.

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
from collections.abc import Mapping
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
    town = absolute_path(town_root)
    exe = absolute_path(gastownd_path)
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


def systemd_socket_unit(town_root: Path, *, templated: bool = False) -> str:
    """The unit to enable: the socket starts the service on the first connection."""
    if templated:
        return f"gastownd@{systemd_escape_path(absolute_path(town_root))}.socket"
    return "gastownd.socket"


def render_launchd_plist(
    town_root: Path,
    gastownd_path: Path,
    log_dir: Path,
    *,
    environ: Mapping[str, str] = os.environ,
) -> bytes:
    """A LaunchAgent for one town: started at login, restarted after a failure, socket-activated."""
    town = absolute_path(town_root)
    sock = paths.socket_path(town, environ)
    exe = absolute_path(gastownd_path)
    search = [str(exe.parent), *(d for d in LAUNCHD_PATH if d != str(exe.parent))]
    env = {"GT_TOWN_ROOT": str(town), "PATH": ":".join(search)}
    if sock != paths.private_dir(town) / paths.SOCKET_NAME:
        env["GASTOWND_SOCKET"] = str(sock)
    log = absolute_path(log_dir)
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


def _in_tmp(path: Path) -> bool:
    return any(path.is_relative_to(tmp) for tmp in (Path("/tmp"), Path("/var/tmp")))


def absolute_path(path: Path) -> Path:
    """``path`` made absolute, ``~`` expanded, without resolving links."""
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
