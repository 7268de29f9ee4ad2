"""Hostile settings files, at start and at SIGHUP.

At start a file the daemon cannot use is refused with exit status 78 (``EX_CONFIG``) and one
line ``gastownd: <file>: <reason>``, before anything in the town is touched. At SIGHUP the same
file is refused with a ``config_reload_failed`` log entry, the configuration in effect stays,
and the daemon keeps serving. A good file applies what it can and names the keys that wait for
a restart; a file that appears after start is read.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gastown_client import paths
from gastownd.process import command as cli
from gastownd.process.app import App, build_state
from gastownd.process.config import KEYS, Key
from gastownd.process.config_file import load_config
from gastownd.process.refusals import EXIT_CONFIG, ConfigError, StartupError
from tests.conftest import SAMPLE_LOG, DaemonProcess
from tests.reliability._support import daemon_argv, make_town
from tests.unit.test_config_and_paths import HOSTILE, toml_for

# The cases the issue names, and their neighbours: (file contents, words of the refusal).
HOSTILE_FILES: list[tuple[bytes, str]] = [
    (b'[retention]\nprune_interval = "0s"\n', "retention.prune_interval = '0s' is out of range"),
    (b'[wisps]\nreap_interval = "0ms"\n', "wisps.reap_interval = '0ms' is out of range"),
    (b'[eventlog]\nwatch_step = "0ms"\n', "eventlog.watch_step = '0ms' is out of range"),
    (b'[server]\npartial_frame_timeout = "0s"\n', "server.partial_frame_timeout = '0s'"),
    (b"[server]\nmax_frame_bytes = 9223372036854775807\n", "server.max_frame_bytes"),
    (b'[retention]\ndefault_ttl = "99999999999d"\n', "retention.default_ttl = '99999999999d'"),
    (b"[server]\nmax_connections = -5\n", "server.max_connections = -5"),
    (b"[server]\nmax_connections = nan\n", "Expected `int`, got `float`"),
    (b'[hooks]\nspool_grace = "500ms; rm -rf"\n', "hooks.spool_grace: invalid duration"),
    (b"[server]\nshutdown_timeout = 4\n", "Expected `str`, got `int`"),
    (b'log_level = "\xff\xfe"\n', "the config file is not UTF-8 (byte 0xff at offset 13)"),
    (b"\x00\x01\x02", "not valid TOML"),
    (b"[server]\nmax_connections = " + b"9" * 5000 + b"\n", "a number has too many digits"),
    (b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n", "not valid TOML"),
]
IDS = [
    "prune_interval-0s",
    "reap_interval-0ms",
    "watch_step-0ms",
    "partial_frame_timeout-0s",
    "max_frame_bytes-2**63-1",
    "default_ttl-huge",
    "negative",
    "nan",
    "junk-after-duration",
    "wrong-type",
    "not-utf8",
    "binary",
    "5000-digits",
    "deep-nesting",
]


def settings_path(town: Path) -> Path:
    return paths.default_config_path(town)


def one_refusal_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# ---------------------------------------------------------------- at start


@pytest.mark.parametrize(("raw", "needle"), HOSTILE_FILES, ids=IDS)
def test_a_hostile_file_is_refused_at_start_with_one_line_and_exit_78(
    town: Path, raw: bytes, needle: str
) -> None:
    settings_path(town).write_bytes(raw)
    result = subprocess.run(daemon_argv(town), capture_output=True, text=True, timeout=30)
    assert result.returncode == EXIT_CONFIG, result.stderr
    line = one_refusal_line(result.stderr)
    assert line.startswith(f"gastownd: {settings_path(town)}: "), line
    assert needle in line, line
    # Refused before anything was touched: no private directory, no socket, no lock.
    assert not paths.private_dir(town).exists()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(key=st.sampled_from(KEYS), value=HOSTILE)
def test_any_refused_value_stops_the_gastownd_command_with_78(
    capsys: pytest.CaptureFixture[str], key: Key, value: Any
) -> None:
    """The real ``gastownd run`` entry point, in-process: refused before any daemon starts."""
    with tempfile.TemporaryDirectory(prefix="gt-h-", dir="/tmp") as folder:
        town = Path(folder)
        (town / "settings").mkdir()
        settings_path(town).write_text(toml_for(key, value), errors="surrogatepass")
        try:
            load_config(settings_path(town))
        except ConfigError:
            pass
        else:
            assume(False)  # a value inside the range would start a daemon
        capsys.readouterr()
        # The command configures structlog for the process: leave it as it was.
        logging_before = structlog.get_config()
        try:
            status = cli.main(["run", "--town-root", folder, "--log-format", "json"])
        finally:
            structlog.configure(**logging_before)
        stderr = capsys.readouterr().err
        assert status == EXIT_CONFIG
        assert one_refusal_line(stderr).startswith(f"gastownd: {settings_path(town)}: ")
        assert not paths.private_dir(town).exists()


# ---------------------------------------------------------------- at SIGHUP


def wait_for_entries(proc: DaemonProcess, event: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entries = []
        for line in proc.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(f"not a JSON log line: {line!r}") from None
            if entry.get("event") == event:
                entries.append(entry)
        if len(entries) >= count:
            return entries
        assert proc.proc.poll() is None, f"daemon exited {proc.proc.returncode}: {proc.log()}"
        time.sleep(0.02)
    raise AssertionError(f"no {count} x {event} in: {proc.log()}")


def test_hostile_files_at_sighup_are_refused_and_the_daemon_keeps_serving(town: Path) -> None:
    settings_path(town).write_text(
        "[retention]\nenabled = false\n"
        '[server]\nmax_connections = 100\npartial_frame_timeout = "5s"\n'
    )
    proc = DaemonProcess(town).wait_ready()
    try:
        hostile = [raw for raw, _needle in HOSTILE_FILES]
        for count, raw in enumerate(hostile, 1):
            settings_path(town).write_bytes(raw)
            proc.proc.send_signal(signal.SIGHUP)
            entry = wait_for_entries(proc, "config_reload_failed", count)[-1]
            assert entry["level"] == "error"
            assert entry["path"] == str(settings_path(town))
            assert entry["error"].startswith(f"{settings_path(town)}: ")
            assert entry["kept"] == "previous configuration"
            with proc.client() as client:
                assert client.ping().pong
                status = client.status()
            assert status.paths.config == str(settings_path(town))
            assert status.config_restart_pending == []
        # Nor is a FIFO (reading it would block the event loop) or a directory in its place.
        settings_path(town).unlink()
        os.mkfifo(settings_path(town))
        proc.proc.send_signal(signal.SIGHUP)
        entry = wait_for_entries(proc, "config_reload_failed", len(hostile) + 1)[-1]
        assert entry["error"].endswith("it is a FIFO or a socket, not a file")
        settings_path(town).unlink()
        settings_path(town).mkdir()
        proc.proc.send_signal(signal.SIGHUP)
        entry = wait_for_entries(proc, "config_reload_failed", len(hostile) + 2)[-1]
        assert entry["error"].endswith("the config file is a directory")
        with proc.client() as client:
            assert client.ping().pong
        assert '"config_reloaded"' not in proc.log()
    finally:
        assert proc.terminate() == 0, proc.log()
    assert "daemon_crashed" not in proc.log()
    assert not paths.socket_path(town, {}).exists()


def test_a_file_created_after_start_is_read_and_restart_only_keys_are_named(town: Path) -> None:
    settings_path(town).unlink()
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.status().paths.config is None
        settings_path(town).write_text(
            '[retention]\nenabled = false\n[hooks]\nspool_grace = "1s"\n'
            "[server]\nmax_connections = 7\n"
        )
        proc.proc.send_signal(signal.SIGHUP)
        entry = wait_for_entries(proc, "config_reloaded", 1)[-1]
        assert entry["path"] == str(settings_path(town))
        assert entry["applied"] == ["retention.enabled", "hooks.spool_grace"]
        assert entry["restart_required"] == ["server.max_connections"]
        with proc.client() as client:
            status = client.status()
        assert status.paths.config == str(settings_path(town))
        assert status.config_restart_pending == ["server.max_connections"]
        # The running limit is still the one the server started with.
        opened = [proc.client(connect_timeout_s=2) for _ in range(12)]
        try:
            for client in opened:
                assert client.ping().pong
        finally:
            for client in opened:
                client.close()
        # The file goes away: all defaults again, and nothing waits any more.
        settings_path(town).unlink()
        proc.proc.send_signal(signal.SIGHUP)
        entry = wait_for_entries(proc, "config_reloaded", 2)[-1]
        assert entry["path"] is None
        assert entry["restart_required"] == []
        with proc.client() as client:
            status = client.status()
        assert status.paths.config is None
        assert status.config_restart_pending == []
    finally:
        assert proc.terminate() == 0, proc.log()


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(KEYS), value=HOSTILE)
def test_any_reload_keeps_the_running_config_or_applies_only_what_can_apply(
    key: Key, value: Any
) -> None:
    """SIGHUP's handler, driven directly: refused files change nothing; restart-only keys
    never change under a running daemon."""
    with tempfile.TemporaryDirectory(prefix="gt-h-", dir="/tmp") as folder:
        town = make_town(Path(folder) / "town")
        app = App(build_state(town), install_signal_handlers=False)
        before = app.state.config
        settings_path(town).write_text(toml_for(key, value), errors="surrogatepass")
        with capture_logs() as logs:
            app._reload()
        events = [entry["event"] for entry in logs]
        after = app.state.config
        if events == ["config_reload_failed"]:
            assert after is before
            assert logs[0]["error"].startswith(f"{settings_path(town)}: ")
            return
        assert events == ["config_reloaded"]
        for declared in KEYS:
            if not declared.reload:
                assert declared.get(after) == declared.get(before), declared.name
        taken = key.get(after)
        key.check(taken)
        if key.reload:
            assert taken == value or (isinstance(value, float) and math.isnan(value))
        else:
            assert app.state.restart_pending == logs[0]["restart_required"]
            assert (key.name in app.state.restart_pending) == (value != key.get(before))


def test_a_sighup_during_start_up_is_kept_for_when_the_daemon_serves(town: Path) -> None:
    """Recovery and indexing take seconds on a big log; a SIGHUP then must not kill."""
    sample = SAMPLE_LOG.read_bytes()
    with paths.events_path(town).open("wb") as log:
        for _ in range(200):
            log.write(sample)
    proc = DaemonProcess(town)
    try:
        deadline = time.monotonic() + 10
        lock = paths.lock_path(town)
        # The lock holds the pid once the daemon has begun recovery.
        while not (lock.exists() and lock.read_text().strip() == str(proc.pid)):
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.log()
            time.sleep(0.005)
        settings_path(town).write_text('log_level = "debug"\n[retention]\nenabled = false\n')
        proc.proc.send_signal(signal.SIGHUP)
        proc.wait_ready(timeout_s=30)
        log_lines = proc.log_path.read_text().splitlines()
        events = [json.loads(line)["event"] for line in log_lines]
        assert events.index("config_reloaded") < events.index("daemon_ready"), events
    finally:
        assert proc.terminate() == 0, proc.log()


def test_a_bug_inside_a_task_group_is_still_a_crash_not_a_refusal() -> None:
    """Refusals raised in a task group come wrapped; a bug next to one is still exit 70."""
    refusal = StartupError("/x: cannot create the spool directory: no")
    assert cli.startup_error(ExceptionGroup("tg", [refusal])) is refusal
    assert cli.startup_error(ExceptionGroup("tg", [ExceptionGroup("inner", [refusal])])) is refusal
    assert cli.startup_error(ExceptionGroup("tg", [refusal, KeyError("bug")])) is None
    assert cli.startup_error(KeyError("bug")) is None
