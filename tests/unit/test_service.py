"""Service definitions for systemd and launchd, and installing them."""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gastown_client import paths
from gastownd.process import service
from gastownd.process.service import install_service
from gastownd.process.service_files import (
    ServiceError,
    launchd_label,
    render_launchd_plist,
    render_systemd_units,
    systemd_escape_path,
    systemd_socket_unit,
)

EXE = Path(sys.executable)
# Rendering never touches the town, so a path outside /tmp shows the default hardening.
FAR_TOWN = Path("/srv/gastown/alpha")
NO_ENV: dict[str, str] = {}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the ~104-108 byte limit of a socket path.
    with tempfile.TemporaryDirectory(prefix="gd-", dir="/tmp") as name:
        yield Path(name)


@pytest.fixture
def town(short_dir: Path) -> Path:
    root = short_dir / "town"
    (root / "mayor").mkdir(parents=True)
    (root / "mayor" / "town.json").write_text("{}")
    return root


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("GASTOWND_SOCKET", raising=False)
    return home


def directives(unit: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values, in order; enough of the unit-file grammar for these units."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def the(unit: str, section: str, key: str) -> str:
    (value,) = directives(unit)[section][key]
    return value


class FakeRunner:
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, kwargs))
        if self.fail is not None and self.fail in argv:
            raise subprocess.CalledProcessError(1, argv, output="", stderr="Access denied\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    @property
    def argvs(self) -> list[list[str]]:
        return [argv for argv, _ in self.calls]


def refuse_to_run(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"dry run ran {args}")


def tree(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.lstat().st_mode) for p in root.rglob("*"))


# --- systemd units -------------------------------------------------------------


def test_plain_units_are_the_socket_and_the_service() -> None:
    assert set(render_systemd_units(FAR_TOWN, EXE, environ=NO_ENV)) == {
        "gastownd.socket",
        "gastownd.service",
    }


def test_service_is_a_notify_service_with_watchdog_and_restart() -> None:
    service = render_systemd_units(FAR_TOWN, EXE, environ=NO_ENV)["gastownd.service"]

    assert the(service, "Service", "Type") == "notify"
    assert the(service, "Service", "NotifyAccess") == "main"
    assert the(service, "Service", "WatchdogSec") == "30"
    assert the(service, "Service", "Restart") == "on-failure"
    assert the(service, "Service", "TimeoutStopSec") == "10"
    assert the(service, "Service", "ExecReload") == "kill -HUP $MAINPID"
    assert the(service, "Unit", "Requires") == "gastownd.socket"


def test_service_runs_the_absolute_executable_for_the_town() -> None:
    service = render_systemd_units(FAR_TOWN, Path("/opt/gastownd/bin/gastownd"), environ=NO_ENV)[
        "gastownd.service"
    ]

    assert the(service, "Service", "ExecStart") == (
        "/opt/gastownd/bin/gastownd run --town-root /srv/gastown/alpha"
    )
    assert the(service, "Service", "Environment") == "GT_TOWN_ROOT=/srv/gastown/alpha"


def test_service_is_sandboxed_with_the_town_as_the_only_writable_path() -> None:
    service = render_systemd_units(FAR_TOWN, EXE, environ=NO_ENV)["gastownd.service"]

    assert the(service, "Service", "ReadWritePaths") == "/srv/gastown/alpha"
    assert the(service, "Service", "ProtectSystem") == "strict"
    assert the(service, "Service", "NoNewPrivileges") == "yes"
    assert the(service, "Service", "PrivateTmp") == "yes"


def test_town_under_tmp_keeps_the_shared_tmp(town: Path) -> None:
    service = render_systemd_units(town, EXE, environ=NO_ENV)["gastownd.service"]

    assert the(service, "Service", "PrivateTmp") == "no"


def test_socket_listens_privately_on_the_town_socket() -> None:
    socket_unit = render_systemd_units(FAR_TOWN, EXE, environ=NO_ENV)["gastownd.socket"]

    assert the(socket_unit, "Socket", "ListenStream") == str(paths.socket_path(FAR_TOWN, NO_ENV))
    assert the(socket_unit, "Socket", "SocketMode") == "0600"
    assert the(socket_unit, "Socket", "DirectoryMode") == "0700"
    assert the(socket_unit, "Socket", "FileDescriptorName") == "gastownd"


def test_town_too_deep_for_a_socket_path_gets_the_short_socket() -> None:
    deep = Path("/srv") / ("d" * 120)
    units = render_systemd_units(deep, EXE, environ=NO_ENV)
    short = paths.short_socket_path(deep)

    assert the(units["gastownd.socket"], "Socket", "ListenStream") == str(short)
    service = directives(units["gastownd.service"])["Service"]
    assert f"GASTOWND_SOCKET={short}" in service["Environment"]
    assert service["ReadWritePaths"] == [f"{deep} -{short.parent}"]
    assert service["PrivateTmp"] == ["no"]


def test_spaces_percent_and_dollar_are_escaped() -> None:
    odd = Path("/srv/my town/100%/$HOME")
    service = render_systemd_units(odd, EXE, environ=NO_ENV)["gastownd.service"]

    assert the(service, "Service", "ExecStart").endswith('--town-root "/srv/my town/100%%/$$HOME"')
    assert the(service, "Service", "ReadWritePaths") == '"/srv/my town/100%%/$HOME"'


@pytest.mark.parametrize("bad", ['/srv/a"b', "/srv/a\\b", "/srv/a\nb"])
def test_paths_a_unit_file_cannot_hold_are_refused(bad: str) -> None:
    with pytest.raises(ServiceError, match="cannot write"):
        render_systemd_units(Path(bad), EXE, environ=NO_ENV)


def test_templated_units_take_the_town_from_the_instance_name() -> None:
    units = render_systemd_units(FAR_TOWN, EXE, templated=True, environ=NO_ENV)

    assert set(units) == {"gastownd@.socket", "gastownd@.service"}
    service = units["gastownd@.service"]
    assert the(service, "Service", "ExecStart") == f'{EXE} run --town-root "%f"'
    assert the(service, "Service", "ReadWritePaths") == '"%f"'
    assert the(service, "Unit", "Requires") == "gastownd@%i.socket"
    socket_unit = units["gastownd@.socket"]
    assert the(socket_unit, "Socket", "ListenStream") == "%f/.gastownd/gastownd.sock"


def test_templated_instance_is_the_escaped_town_path() -> None:
    assert systemd_socket_unit(FAR_TOWN, templated=True) == "gastownd@srv-gastown-alpha.socket"
    assert systemd_socket_unit(FAR_TOWN) == "gastownd.socket"


def test_templated_units_refuse_a_town_they_cannot_express(town: Path) -> None:
    with pytest.raises(ServiceError, match="per-town units"):
        render_systemd_units(town, EXE, templated=True, environ=NO_ENV)
    with pytest.raises(ServiceError, match="per-town units"):
        render_systemd_units(Path("/srv") / ("d" * 120), EXE, templated=True, environ=NO_ENV)


@pytest.mark.parametrize(
    ("path", "escaped"),
    [
        ("/home/ann/gt", "home-ann-gt"),
        ("/", "-"),
        ("/srv//gt/", "srv-gt"),
        ("/.hidden/x", "\\x2ehidden-x"),
        ("/srv/town x/é-a_b:c.d", "srv-town\\x20x-\\xc3\\xa9\\x2da_b:c.d"),
    ],
)
def test_systemd_escape_path(path: str, escaped: str) -> None:
    assert systemd_escape_path(Path(path)) == escaped


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="needs systemd-escape")
@pytest.mark.parametrize("path", ["/home/ann/gt", "/srv/town x/é-a_b:c.d", "/.hidden/x"])
def test_systemd_escape_path_agrees_with_systemd(path: str) -> None:
    ours = systemd_escape_path(Path(path))
    theirs = subprocess.run(
        ["systemd-escape", "--path", path], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert ours == theirs


def _verify(
    unit_dir: Path, names: list[str], runtime_dir: Path
) -> subprocess.CompletedProcess[str]:
    # A user manager needs a runtime directory; a private one keeps the test hermetic.
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)}
    files = [str(unit_dir / n) for n in names]
    result = subprocess.run(
        ["systemd-analyze", "--user", "verify", *files], env=env, capture_output=True, text=True
    )
    if "Failed to initialize manager" in result.stderr:
        result = subprocess.run(
            ["systemd-analyze", "verify", *files], env=env, capture_output=True, text=True
        )
    return result


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("templated", [False, True], ids=["plain", "templated"])
def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path, templated: bool) -> None:
    unit_dir = tmp_path / "units"
    runtime_dir = tmp_path / "runtime"
    unit_dir.mkdir()
    runtime_dir.mkdir(mode=0o700)
    # verify insists that ExecStart names an existing executable.
    units = render_systemd_units(FAR_TOWN, EXE, templated=templated, environ=NO_ENV)
    if templated:
        # The template itself and one instance of it, as `enable` would create.
        instance = systemd_escape_path(FAR_TOWN)
        units |= {name.replace("@", f"@{instance}"): text for name, text in units.items()}
    for name, text in units.items():
        (unit_dir / name).write_text(text)

    result = _verify(unit_dir, sorted(units), runtime_dir)

    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "gastownd" in line] == []


# --- launchd -------------------------------------------------------------------


def test_plist_parses_and_has_the_required_keys(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    plist = plistlib.loads(render_launchd_plist(FAR_TOWN, EXE, logs, environ=NO_ENV))

    assert plist["Label"] == launchd_label(FAR_TOWN)
    assert plist["Label"].startswith("com.gastown.gastownd.")
    assert plist["ProgramArguments"] == [str(EXE), "run", "--town-root", str(FAR_TOWN)]
    assert Path(plist["ProgramArguments"][0]).is_absolute()
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert Path(plist["StandardOutPath"]).parent == logs
    assert Path(plist["StandardErrorPath"]).parent == logs
    env = plist["EnvironmentVariables"]
    assert env["GT_TOWN_ROOT"] == str(FAR_TOWN)
    # launchd gives jobs /usr/bin:/bin:/usr/sbin:/sbin: the daemon's own directory and
    # Homebrew's come first, so that git (commit lookups) is the user's.
    assert env["PATH"].split(":")[:3] == [str(EXE.parent), "/opt/homebrew/bin", "/usr/local/bin"]
    assert set(env) == {"GT_TOWN_ROOT", "PATH"}
    assert plist["ThrottleInterval"] == 10
    sockets = plist["Sockets"]["gastownd"]
    assert sockets["SockPathName"] == str(paths.socket_path(FAR_TOWN, NO_ENV))
    assert sockets["SockPathMode"] == 0o600 == 384


def test_each_town_gets_its_own_stable_label() -> None:
    assert launchd_label(FAR_TOWN) == launchd_label(FAR_TOWN)
    assert launchd_label(FAR_TOWN) != launchd_label(FAR_TOWN.with_name("beta"))


# --- install -------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_dry_run_touches_nothing_and_shows_what_it_would_do(
    home: Path, town: Path, platform: str
) -> None:
    before = tree(home.parent), tree(town)

    actions = install_service(
        town, dry_run=True, platform=platform, runner=refuse_to_run, gastownd_path=EXE
    )

    assert (tree(home.parent), tree(town)) == before
    text = "\n".join(actions)
    if platform == "linux":
        assert f"write {home}/.config/systemd/user/gastownd.service:" in text
        assert "Type=notify" in text
        assert "run systemctl --user enable --now gastownd.socket" in text
    else:
        assert f"write {home}/Library/LaunchAgents/{launchd_label(town)}.plist:" in text
        assert "<key>SockPathName</key>" in text
        assert f"run launchctl bootstrap gui/{os.getuid()} " in text


def test_install_on_linux_writes_the_units_and_enables_the_socket(home: Path, town: Path) -> None:
    runner = FakeRunner()

    install_service(town, dry_run=False, platform="linux", runner=runner, gastownd_path=EXE)

    unit_dir = home / ".config" / "systemd" / "user"
    expected = render_systemd_units(town, EXE)
    assert {p.name: p.read_text() for p in unit_dir.iterdir()} == expected
    assert runner.argvs == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "gastownd.socket"],
    ]
    assert all(kwargs["check"] for _, kwargs in runner.calls)


def test_templated_install_enables_the_town_instance(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = FakeRunner()
    monkeypatch.setattr(service, "town_exists", lambda town: town == FAR_TOWN)

    install_service(
        FAR_TOWN,
        dry_run=False,
        platform="linux",
        runner=runner,
        gastownd_path=EXE,
        templated=True,
    )

    unit_dir = home / ".config" / "systemd" / "user"
    assert sorted(p.name for p in unit_dir.iterdir()) == ["gastownd@.service", "gastownd@.socket"]
    assert runner.argvs[-1] == [
        "systemctl",
        "--user",
        "enable",
        "--now",
        "gastownd@srv-gastown-alpha.socket",
    ]


def test_install_honours_xdg_config_home(
    home: Path, town: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))

    install_service(town, dry_run=False, platform="linux", runner=FakeRunner(), gastownd_path=EXE)

    assert (tmp_path / "xdg" / "systemd" / "user" / "gastownd.service").is_file()
    assert not (home / ".config").exists()


def test_install_on_macos_writes_the_agent_and_bootstraps_it(home: Path, town: Path) -> None:
    runner = FakeRunner()

    install_service(town, dry_run=False, platform="darwin", runner=runner, gastownd_path=EXE)

    label = launchd_label(town)
    plist_path = home / "Library" / "LaunchAgents" / f"{label}.plist"
    plist = plistlib.loads(plist_path.read_bytes())
    assert plist["Label"] == label
    assert Path(plist["StandardOutPath"]).parent.is_dir()
    private = paths.private_dir(town)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    domain = f"gui/{os.getuid()}"
    assert runner.argvs == [
        ["launchctl", "bootout", f"{domain}/{label}"],
        ["launchctl", "enable", f"{domain}/{label}"],
        ["launchctl", "bootstrap", domain, str(plist_path)],
    ]
    assert [kwargs["check"] for _, kwargs in runner.calls] == [False, True, True]


def test_a_failing_command_is_reported_with_its_output(home: Path, town: Path) -> None:
    runner = FakeRunner(fail="enable")

    with pytest.raises(ServiceError, match=r"enable --now gastownd\.socket failed.*Access denied"):
        install_service(town, dry_run=False, platform="linux", runner=runner, gastownd_path=EXE)


def test_unsupported_platform_is_refused(home: Path, town: Path) -> None:
    with pytest.raises(ServiceError, match="win32"):
        install_service(
            town, dry_run=True, platform="win32", runner=refuse_to_run, gastownd_path=EXE
        )


def test_reference_units_in_systemd_dir_match_the_renderer() -> None:
    """systemd/ holds what install-service renders, with %h for the home directory."""
    from gastownd.process.service_files import render_systemd_units as render

    folder = Path(__file__).resolve().parents[2] / "systemd"
    town, exe = Path("/home/USER/gt"), Path("/home/USER/.local/bin/gastownd")
    for templated in (False, True):
        for name, text in render(town, exe, templated=templated).items():
            assert (folder / name).read_text() == text.replace("/home/USER", "%h"), name


# --- hostile environments --------------------------------------------------------


def test_a_configuration_error_is_never_restarted() -> None:
    for templated in (False, True):
        units = render_systemd_units(FAR_TOWN, EXE, templated=templated)
        service_unit = next(text for name, text in units.items() if name.endswith(".service"))
        assert the(service_unit, "Service", "RestartPreventExitStatus") == "78"


def test_only_a_federated_town_may_open_tcp_connections() -> None:
    plain = render_systemd_units(FAR_TOWN, EXE)["gastownd.service"]
    assert the(plain, "Service", "RestrictAddressFamilies") == "AF_UNIX"
    federated = render_systemd_units(FAR_TOWN, EXE, federated=True)["gastownd.service"]
    assert the(federated, "Service", "RestrictAddressFamilies") == "AF_UNIX AF_INET AF_INET6"


def test_install_renders_tcp_from_the_towns_federation_settings(home: Path, town: Path) -> None:
    (town / "settings").mkdir()
    (town / "settings" / "gastownd.toml").write_text(
        '[federation]\nservers = ["nats://hub.example:4222"]\n'
    )
    install_service(town, dry_run=False, platform="linux", runner=FakeRunner(), gastownd_path=EXE)
    unit = (home / ".config" / "systemd" / "user" / "gastownd.service").read_text()
    assert the(unit, "Service", "RestrictAddressFamilies") == "AF_UNIX AF_INET AF_INET6"


def test_a_federated_templated_instance_gets_a_drop_in(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "town_exists", lambda town: True)
    monkeypatch.setattr(service, "town_is_federated", lambda town: True)
    install_service(
        FAR_TOWN,
        dry_run=False,
        platform="linux",
        runner=FakeRunner(),
        gastownd_path=EXE,
        templated=True,
    )
    unit_dir = home / ".config" / "systemd" / "user"
    drop_in = unit_dir / "gastownd@srv-gastown-alpha.service.d" / "federation.conf"
    assert the(drop_in.read_text(), "Service", "RestrictAddressFamilies") == (
        "AF_UNIX AF_INET AF_INET6"
    )
    template = (unit_dir / "gastownd@.service").read_text()
    assert the(template, "Service", "RestrictAddressFamilies") == "AF_UNIX"


def test_a_town_that_does_not_exist_is_refused(home: Path, short_dir: Path) -> None:
    with pytest.raises(ServiceError, match=r"there is no town at .*missing"):
        install_service(
            short_dir / "missing",
            dry_run=True,
            platform="linux",
            runner=refuse_to_run,
            gastownd_path=EXE,
        )
    assert not (short_dir / "missing").exists()


def test_no_user_bus_says_what_to_do(home: Path, town: Path) -> None:
    def no_bus(argv: list[str], **kwargs: Any) -> None:
        raise subprocess.CalledProcessError(
            1, argv, output="", stderr="Failed to connect to bus: No medium found\n"
        )

    with pytest.raises(ServiceError, match=r"no systemd user manager.*make install SERVICE=no"):
        install_service(town, dry_run=False, platform="linux", runner=no_bus, gastownd_path=EXE)
