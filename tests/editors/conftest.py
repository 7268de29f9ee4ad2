"""A town with a real daemon for the editor tests, and the control socket the editors use.

An editor test asks ``townctl.py start|stop`` to stop or restart the daemon while its buffers
stay open; the request reaches the ``DaemonControl`` thread here, which does it with
``DaemonProcess`` (so pytest owns, reaps and checks every daemon it starts).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess
from tests.editors import townctl

REPO = Path(__file__).resolve().parents[2]
EDITORS = REPO / "editors"
TOWNCTL = Path(townctl.__file__).resolve()


@dataclass
class DaemonControl:
    """Serves ``start`` and ``stop`` on ``<town>/townctl.sock`` for the editor under test."""

    town: Path
    current: DaemonProcess | None = None
    exit_codes: list[int] = field(default_factory=list)
    _listener: socket.socket | None = None
    _thread: threading.Thread | None = None

    def start_daemon(self) -> None:
        if self.current is None:
            self.current = DaemonProcess(self.town).wait_ready()

    def stop_daemon(self) -> None:
        if self.current is not None:
            self.exit_codes.append(self.current.terminate())
            self.current = None

    def serve(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.town / townctl.CONTROL_SOCKET))
        listener.listen(4)
        listener.settimeout(0.05)  # so that close() is noticed promptly
        self._listener = listener
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed at teardown
            conn.settimeout(None)
            with conn:
                command = conn.makefile("rb").readline().decode().strip()
                try:
                    if command == "start":
                        self.start_daemon()
                    elif command == "stop":
                        self.stop_daemon()
                    else:
                        raise ValueError(f"unknown command {command!r}")
                    answer = "ok"
                except Exception as exc:  # the editor test shows it
                    answer = f"error: {exc}"
                conn.sendall(answer.encode() + b"\n")

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._thread is not None:
            self._thread.join(5)
        self.stop_daemon()


@pytest.fixture
def live_town(town: Path) -> Iterator[DaemonControl]:
    """The town with its daemon running; at the end every daemon must have exited 0."""
    control = DaemonControl(town)
    control.start_daemon()
    control.serve()
    yield control
    control.close()
    log = (town / "daemon.log").read_text(errors="replace")
    assert all(code == 0 for code in control.exit_codes), (control.exit_codes, log[-4000:])
    assert "Traceback" not in log, log[-4000:]


def editor_env(town: Path, home: Path) -> dict[str, str]:
    """What an editor test runs with: the venv's commands first on PATH, a private HOME."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GT_", "GASTOWND_", "NVIM", "VIM", "EMACS", "XDG_"))
        and key not in ("BD_ACTOR", "CLAUDE_CODE_SESSION_ID")
    }
    home.mkdir(exist_ok=True)
    env.update(
        {
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_STATE_HOME": str(home / ".local/state"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "GT_TOWN_ROOT": str(town),
            "GASTOWND_TEST_TOWN": str(town),
            "GASTOWND_TEST_PYTHON": sys.executable,
            "GASTOWND_TEST_CTL": str(TOWNCTL),
        }
    )
    return env
