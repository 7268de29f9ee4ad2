"""Shared fixtures: a short temporary town, the daemon in-process and as a process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from gastown_client import paths
from gastown_client.aclient import AsyncClient
from gastown_client.client import Client
from gastownd.process.app import App, build_state
from gastownd.process.config import Config
from gastownd.process.config_file import load_config
from gastownd.process.daemon import Daemon

SAMPLE_LOG = Path(__file__).resolve().parents[1] / "tests" / "data" / "sample-town.events.jsonl"
# Test config: no background prune unless a test asks (the sample log is old).
TEST_CONFIG = """\
[retention]
enabled = false
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stress", action="store_true", help="run the reliability tests at full length"
    )


@pytest.fixture
def stress(request: pytest.FixtureRequest) -> bool:
    """True under ``make stress``: reliability tests then run their long versions."""
    return bool(request.config.getoption("--stress"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def town() -> Iterator[Path]:
    """A town under /tmp: pytest's tmp_path can exceed the sun_path limit."""
    root = Path(tempfile.mkdtemp(prefix="gt-", dir="/tmp"))
    (root / "mayor").mkdir()
    (root / "mayor" / "town.json").write_text('{"name": "test"}\n')
    (root / "settings").mkdir()
    (root / "settings" / "gastownd.toml").write_text(TEST_CONFIG)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def config_for(town: Path) -> Config:
    return load_config(paths.default_config_path(town))


@dataclass
class InProcess:
    app: App
    daemon: Daemon
    socket: Path

    def client(self, **kwargs: object) -> AsyncClient:
        return AsyncClient(self.socket, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def daemon(town: Path) -> AsyncIterator[InProcess]:
    """The daemon running in this event loop, stopped cleanly at the end."""
    state = build_state(town, paths.default_config_path(town))
    app = App(state, install_signal_handlers=False)
    async with anyio.create_task_group() as tg:
        running = await tg.start(app.run)
        yield InProcess(app, running, state.paths.socket)
        app.stop()


def daemon_argv(town: Path, *extra: str, log_format: str | None = "json") -> list[str]:
    """``python -m gastownd run`` for ``town``: the one place the tests spell it."""
    formats = ["--log-format", log_format] if log_format is not None else []
    return [sys.executable, "-m", "gastownd", "run", "--town-root", str(town), *formats, *extra]


class DaemonProcess:
    """``python -m gastownd run`` as a child process."""

    def __init__(
        self,
        town: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.town = town
        self.socket = paths.socket_path(town, env or os.environ)
        # Outside the town when the town's filesystem is meant to fill up.
        self.log_path = log_path or town / "daemon.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept for the process's life
        self.proc = subprocess.Popen(
            daemon_argv(town, *extra),
            stdout=self._log,
            stderr=self._log,
            env=env,
            preexec_fn=preexec_fn,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 15.0) -> DaemonProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log()}")
            try:
                with Client(self.socket, connect_timeout_s=0.5) as client:
                    client.ping()
                return self
            except Exception:
                time.sleep(0.02)
        raise AssertionError(f"daemon not ready in {timeout_s}s: {self.log()}")

    def client(self, **kwargs: object) -> Client:
        return Client(self.socket, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def terminate(self, timeout_s: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def daemon_proc(town: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(town).wait_ready()
    yield proc
    if proc.proc.poll() is None:
        code = proc.terminate()
        assert code == 0, proc.log()


def run_ctl(town: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gastown_client.cli", "--town-root", str(town), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
