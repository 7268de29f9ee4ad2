"""Helpers shared by the reliability tests: towns anywhere, a daemon child process we fully
control (log file outside the town, ``preexec_fn``), and reading the log back."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import TEST_CONFIG, daemon_argv


def make_town(root: Path, extra_config: str = "") -> Path:
    """A town at ``root`` set up as conftest's ``town`` fixture does, plus ``extra_config``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mayor").mkdir()
    (root / "mayor" / "town.json").write_text('{"name": "test"}\n')
    (root / "settings").mkdir()
    (root / "settings" / "gastownd.toml").write_text(TEST_CONFIG + extra_config)
    return root


def refused_start(town: Path, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run the daemon expecting it to refuse to start; returns the finished process."""
    try:
        return subprocess.run(daemon_argv(town), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:  # it started instead of refusing
        raise AssertionError(f"daemon did not refuse to start: {exc.stderr!r}") from None


def read_log(town: Path) -> tuple[bytes, list[dict[str, Any]]]:
    """The raw event log and its lines, asserting it is whole: no torn tail, every line JSON."""
    raw = (town / ".events.jsonl").read_bytes() if (town / ".events.jsonl").exists() else b""
    assert raw == b"" or raw.endswith(b"\n"), f"torn tail: {raw[-200:]!r}"
    lines = []
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line[:200]!r}") from None
    return raw, lines


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def is_root() -> bool:
    return os.geteuid() == 0
