"""Shared machinery: towns, daemon processes, worker processes, statistics, results."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from gastown_client import paths
from gastown_client.client import Client

BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = BENCH_DIR / "_work"
PYTHON = sys.executable
# What systemd's and launchd's units exec (``gastownd run``): the venv's console script, which
# imports ``gastownd.process.command`` directly; ``python -m gastownd`` would add runpy and
# ``importlib.util`` to every measured start.
GASTOWND = Path(PYTHON).parent / "gastownd"

NO_RETENTION = "[retention]\nenabled = false\n"


def loops() -> list[str]:
    """The event loops to measure: asyncio's own, and uvloop when it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


def with_loop(loop: str, config: str = NO_RETENTION) -> str:
    """``config`` with ``[server] event_loop`` set."""
    return f'[server]\nevent_loop = "{loop}"\n\n' + config


# ----------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest-rank on sorted data."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def ns_to_s(values: Sequence[int]) -> list[float]:
    return [value / 1e9 for value in values]


def fmt_time(seconds: float) -> str:
    """A duration with a unit that keeps 2-3 significant digits."""
    if math.isnan(seconds):
        return "—"
    magnitude = abs(seconds)
    if magnitude < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if magnitude < 1:
        return f"{seconds * 1e3:.2f} ms" if magnitude < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_rate(per_s: float, unit: str = "req/s") -> str:
    if per_s >= 10_000:
        return f"{per_s / 1000:.1f}k {unit}"
    return f"{per_s:,.0f} {unit}"


def fmt_mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


def fmt_ratio(value: float, suffix: str = "×") -> str:
    if math.isnan(value) or math.isinf(value):
        return "—"
    if value >= 100:
        return f"{value:,.0f}{suffix}"
    return f"{value:.2f}{suffix}"


@dataclass
class Row:
    """One line of the results table; cells are rendered text, ``data`` the raw figures."""

    name: str
    what: str
    baseline: str = "—"
    median: str = "—"
    p99: str = "—"
    ratio: str = "—"
    goal: str = "—"
    met: bool | None = None
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def met_text(self) -> str:
        return {True: "yes", False: "**no**", None: "n/a"}[self.met]


# ------------------------------------------------------------------- towns


def make_town(config: str = NO_RETENTION, log: Path | None = None) -> Path:
    """A town under /tmp (short socket path) with an optional copy of ``log``."""
    root = Path(tempfile.mkdtemp(prefix="gtb-", dir="/tmp"))
    (root / "mayor").mkdir()
    (root / "mayor" / "town.json").write_text('{"name": "bench"}\n')
    (root / "settings").mkdir()
    (root / "settings" / "gastownd.toml").write_text(config)
    if log is not None:
        copy_durably(log, root / paths.EVENTS_NAME)
    return root


def copy_durably(source: Path, target: Path) -> None:
    """Copy and fsync: else the daemon's first fdatasync pays for writing the whole copy."""
    shutil.copyfile(source, target)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_town(town: Path) -> None:
    shutil.rmtree(town, ignore_errors=True)


# ----------------------------------------------------------------- processes


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def live_rss_kb(pid: int) -> int:
    """VmRSS of ``pid``, 0 once it is gone (a worker may exit between listing and reading)."""
    try:
        return proc_rss_kb(pid)
    except (OSError, RuntimeError):
        return 0


def proc_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class DaemonError(RuntimeError):
    pass


_EXCEPTION_LINE = re.compile(r"^\s*[|+ ]*\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit)\b.*)$")


def crash_reason(log_text: str) -> str:
    """The gist of a daemon's JSON log: its last exception's message, else its last line."""
    records = []
    for line in log_text.splitlines():
        try:
            record = msgspec.json.decode(line)
        except msgspec.DecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    for record in reversed(records):
        text = record.get("exception")
        if isinstance(text, str):
            found = [m.group(1) for m in map(_EXCEPTION_LINE.match, text.splitlines()) if m]
            if found:
                return found[-1]
    if records:
        return str(records[-1].get("event", records[-1]))
    lines = [line for line in log_text.splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "(no log)"


class Daemon:
    """``gastownd run`` (the console script) as a child process, started at construction."""

    def __init__(self, town: Path) -> None:
        self.town = town
        self.socket = paths.socket_path(town)
        self.log_path = town / "daemon.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept for the process's life
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [GASTOWND, "run", "--town-root", str(town), "--log-format", "json"],
            stdout=self._log,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
        )
        self.ready_after_s = math.nan

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 120.0, poll_s: float = 0.002) -> Daemon:
        """Poll until a ping succeeds; ``ready_after_s`` is process start to that ping."""
        deadline = self.started + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(
                    f"daemon exited {self.proc.returncode}: {crash_reason(self.log_tail())}"
                )
            try:
                with Client(self.socket, connect_timeout_s=1.0, timeout_s=timeout_s) as client:
                    client.ping()
                self.ready_after_s = time.monotonic() - self.started
                return self
            except Exception:
                time.sleep(poll_s)
        raise DaemonError(f"daemon not ready in {timeout_s}s: {crash_reason(self.log_tail())}")

    def client(self, timeout_s: float | None = 60.0) -> Client:
        return Client(self.socket, timeout_s=timeout_s).connect()

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._log.close()
        return code

    def wait_idle(
        self, window_s: float = 0.5, share: float = 0.05, timeout_s: float = 180
    ) -> float:
        """Wait until the daemon's CPU use over ``window_s`` is below ``share``
        (after a start on a big log, it records sessions from every line);
        returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            before = self.cpu_s()
            time.sleep(window_s)
            if self.cpu_s() - before < share * window_s:
                break
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: no clean stop, nothing saved."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_daemon(town: Path, timeout_s: float = 120.0) -> Daemon:
    daemon = Daemon(town)
    try:
        return daemon.wait_ready(timeout_s)
    except BaseException:
        daemon.stop()
        raise


def wait_for_socket(path: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
            return
        except OSError:
            time.sleep(0.005)
        finally:
            probe.close()
    raise TimeoutError(f"nothing listening on {path}")


# ------------------------------------------------------------------ workers


class Workers:
    """``python -m bench.worker`` processes, each given a job as msgpack on stdin.

    Each prints one msgpack result on stdout. Start times are agreed on
    ``time.monotonic()`` (CLOCK_MONOTONIC is system-wide on Linux).
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, job: dict[str, Any]) -> None:
        proc = subprocess.Popen(
            [PYTHON, "-m", "bench.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=BENCH_DIR.parent,
        )
        assert proc.stdin is not None
        proc.stdin.write(msgspec.msgpack.encode(job))
        proc.stdin.close()
        self.procs.append(proc)

    def results(self, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            assert proc.stdout is not None
            data = proc.stdout.read()
            code = proc.wait(max(0.1, deadline - time.monotonic()))
            if code != 0:
                raise RuntimeError(f"bench worker failed with exit code {code}")
            out.append(msgspec.msgpack.decode(data))
        self.procs.clear()
        return out

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.procs.clear()


def run_workers(jobs: list[dict[str, Any]], timeout_s: float = 120.0) -> list[dict[str, Any]]:
    workers = Workers()
    try:
        for job in jobs:
            workers.spawn(job)
        return workers.results(timeout_s)
    finally:
        workers.kill()


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over at most ``parts`` non-empty shares."""
    parts = max(1, min(parts, total))
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def time_process(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of running ``argv`` to completion, in seconds."""
    started = time.perf_counter()
    subprocess.run(
        argv,
        check=True,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started
