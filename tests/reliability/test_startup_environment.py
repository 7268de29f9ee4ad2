"""Start-up in a hostile environment: one line naming the path, a documented exit status.

Each case is something a user or an operator can break outside the daemon (a directory where
a file belongs, a socket path that cannot be bound, a file the daemon may not read). The daemon
must refuse with exit status 1 (``EXIT_ENVIRONMENT``), one line ``gastownd: <path>: <reason>``
on stderr, no traceback, never 70 (kept for bugs), leave no socket behind, and leave what it
found as it was. Configuration problems exit 78 (tests/reliability/test_hostile_config.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from gastown_client import paths
from gastownd.process.refusals import EXIT_CONFIG, EXIT_ENVIRONMENT
from tests.reliability._support import daemon_argv, is_root

NOBODY = 65534


def start(
    town: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    environ.pop("GASTOWND_SOCKET", None)
    environ.update(env or {})
    try:
        return subprocess.run(
            [*prefix, *daemon_argv(town), *extra],
            capture_output=True,
            text=True,
            timeout=30,
            env=environ,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the daemon started instead of refusing: {exc.stderr!r}") from None


def refusal(result: subprocess.CompletedProcess[str], status: int, path: Path | str) -> str:
    """The one non-JSON line on stderr, checked: last, naming ``path``, with ``status``."""
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    plain = [line for line in result.stderr.splitlines() if not _is_json(line)]
    assert len(plain) == 1, result.stderr
    line = plain[0]
    assert result.stderr.rstrip("\n").endswith(line)
    assert line.startswith(f"gastownd: {path}: ") or line.startswith(f"gastownd: {path}/"), line
    return line


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def assert_no_socket(town: Path, socket_path: Path | None = None) -> None:
    path = socket_path or paths.socket_path(town, {})
    assert not os.path.lexists(path), f"{path} left behind"


def test_socket_path_too_long_is_refused_before_anything_is_bound(town: Path) -> None:
    long_path = Path("/tmp") / ("s" * 120)
    result = start(town, env={"GASTOWND_SOCKET": str(long_path)})
    line = refusal(result, EXIT_ENVIRONMENT, long_path)
    assert "the socket path is 125 bytes, longer than the 107" in line
    assert "GASTOWND_SOCKET" in line


def test_socket_in_a_missing_directory_is_refused(town: Path) -> None:
    socket_path = town / "nowhere" / "g.sock"
    result = start(town, env={"GASTOWND_SOCKET": str(socket_path)})
    line = refusal(result, EXIT_ENVIRONMENT, socket_path)
    assert f"the socket's directory {socket_path.parent} does not exist" in line
    assert not socket_path.parent.exists()


def test_socket_under_a_file_is_refused(town: Path) -> None:
    (town / "plain").write_text("x\n")
    socket_path = town / "plain" / "g.sock"
    line = refusal(
        start(town, env={"GASTOWND_SOCKET": str(socket_path)}), EXIT_ENVIRONMENT, socket_path
    )
    assert "is not a directory" in line
    assert (town / "plain").read_text() == "x\n"


@pytest.mark.parametrize("name", [".events.jsonl", ".events.jsonl.lock"])
def test_event_log_or_its_lock_that_is_a_directory_is_refused(town: Path, name: str) -> None:
    (town / name).mkdir()
    (town / name / "keep").write_text("k\n")
    line = refusal(start(town), EXIT_ENVIRONMENT, town / name)
    assert line.endswith("cannot open the event log: Is a directory")
    assert (town / name / "keep").read_text() == "k\n"
    assert_no_socket(town)


@pytest.mark.parametrize("name", ["archive", "quarantine"])
def test_a_file_where_recovery_needs_a_directory_is_refused(town: Path, name: str) -> None:
    paths.private_dir(town).mkdir(mode=0o700)
    (paths.private_dir(town) / name).write_text("x\n")
    # A torn tail: recovery must set it aside in quarantine/.
    paths.events_path(town).write_text('{"ts":"2026-01-01T00:00:00Z","source":"gt","type":"x"')
    # The path named is the file in the way, or one inside where a directory was expected.
    line = refusal(start(town), EXIT_ENVIRONMENT, paths.private_dir(town) / name)
    assert "cannot open the event log" in line
    assert (paths.private_dir(town) / name).read_text() == "x\n"


def test_instance_lock_that_is_a_directory_is_refused(town: Path) -> None:
    lock = paths.lock_path(town)
    lock.mkdir(parents=True)
    paths.private_dir(town).chmod(0o700)
    line = refusal(start(town), EXIT_ENVIRONMENT, lock)
    assert line.endswith("cannot open the instance lock: Is a directory")
    assert lock.is_dir()
    assert_no_socket(town)


def test_session_store_that_is_a_directory_is_refused(town: Path) -> None:
    store = paths.private_dir(town) / "gastownd.db"
    store.mkdir(parents=True)
    paths.private_dir(town).chmod(0o700)
    line = refusal(start(town), EXIT_ENVIRONMENT, store)
    assert "cannot open the session store" in line
    assert store.is_dir()
    assert_no_socket(town)


def test_session_store_of_a_newer_gastownd_is_refused_and_kept(town: Path) -> None:
    store = paths.private_dir(town) / "gastownd.db"
    store.parent.mkdir(parents=True)
    paths.private_dir(town).chmod(0o700)
    with sqlite3.connect(store) as db:
        db.execute("PRAGMA user_version = 999")
    line = refusal(start(town), EXIT_ENVIRONMENT, store)
    assert "written by a newer gastownd (schema 999" in line
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 999
    assert_no_socket(town)


def test_spool_directory_in_the_way_is_refused_and_no_socket_is_left(town: Path) -> None:
    spool = paths.spool_dir(town)
    paths.private_dir(town).mkdir(mode=0o700)
    spool.write_text("not a directory\n")
    line = refusal(start(town), EXIT_ENVIRONMENT, spool)
    assert "cannot create the spool directory" in line
    assert spool.read_text() == "not a directory\n"
    # Refused after the socket was bound: the socket must go with the daemon.
    assert_no_socket(town)


@pytest.mark.skipif(is_root() and shutil.which("setpriv") is None, reason="needs setpriv as root")
def test_event_log_that_cannot_be_read_is_refused(town: Path) -> None:
    events = paths.events_path(town)
    events.write_text('{"ts":"2026-01-01T00:00:00Z","source":"gt","type":"x"}\n')
    events.chmod(0o600)
    prefix: tuple[str, ...] = ()
    if is_root():
        # Root reads everything: the daemon runs as nobody in a town nobody owns,
        # except for the log.
        for path in [town, *town.rglob("*")]:
            if path != events:
                os.chown(path, NOBODY, NOBODY)
        os.chmod(town, 0o755)
        prefix = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    else:
        events.chmod(0)
    line = refusal(start(town, prefix=prefix), EXIT_ENVIRONMENT, events)
    assert line.endswith("cannot open the event log: Permission denied")
    events.chmod(0o600)
    assert events.read_text().startswith('{"ts"')


def test_default_town_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home-is-a-file"
    home.write_text("x\n")
    env = {"HOME": str(home)}
    environ = {k: v for k, v in os.environ.items() if k not in ("GT_TOWN_ROOT", "GT_ROOT")}
    environ.update(env)
    result = subprocess.run(
        [*daemon_argv(tmp_path)[:4], "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        env=environ,
        cwd=tmp_path,
    )
    line = refusal(result, EXIT_ENVIRONMENT, home / "gt")
    assert "cannot create the town" in line


def test_explicit_config_that_is_a_directory_is_a_config_refusal(town: Path) -> None:
    folder = town / "conf.d"
    folder.mkdir()
    line = refusal(start(town, "--config", str(folder)), EXIT_CONFIG, folder)
    assert line.endswith("the config file is a directory")


@pytest.mark.parametrize(
    ("breakage", "status", "errno_code"),
    [("config", EXIT_CONFIG, 22), ("environment", EXIT_ENVIRONMENT, 21)],
)
def test_a_refusal_is_told_to_systemd(
    town: Path, breakage: str, status: int, errno_code: int
) -> None:
    if breakage == "config":
        (town / "settings" / "gastownd.toml").write_bytes(b'log_level = "\xff"\n')
    else:
        (town / ".events.jsonl").mkdir()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(town / "notify.sock")
    notify.bind(address)
    notify.settimeout(10)
    try:
        result = start(town, env={"NOTIFY_SOCKET": address})
        assert result.returncode == status, result.stderr
        messages = []
        notify.settimeout(0.5)
        try:
            while True:
                messages.append(notify.recv(4096).decode())
        except TimeoutError:
            pass
    finally:
        notify.close()
    refused = [m for m in messages if m.startswith("STATUS=refused to start: ")]
    assert len(refused) == 1, messages
    assert refused[0].endswith(f"\nERRNO={errno_code}")
    assert not any("READY=1" in m for m in messages)


def test_a_town_that_is_fixed_starts_afterwards(town: Path) -> None:
    """A refusal changes nothing: remove the cause and the daemon starts."""
    (town / ".events.jsonl").mkdir()
    refusal(start(town), EXIT_ENVIRONMENT, town / ".events.jsonl")
    shutil.rmtree(town / ".events.jsonl")
    from tests.conftest import DaemonProcess

    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.ping().pong
    finally:
        assert proc.terminate() == 0, proc.log()
