"""Fixtures for the real Claude Code: the pinned client (installed once per machine), a
scripted model per test, and the client set up for an agent of the test's town."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.claude.harness import ClaudeCode
from tests.claude.install import Unavailable, claude_binary
from tests.claude.model import ScriptedModel

# A sliver of a real model's latency (see ScriptedModel.latency_s).
TURN_LATENCY_S = 0.05


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    try:
        return claude_binary()
    except Unavailable as exc:
        pytest.skip(f"the real Claude Code is not available: {exc}")


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    scripted = ScriptedModel(latency_s=TURN_LATENCY_S).start()
    yield scripted
    scripted.stop()


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="gtc-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def claude(claude_bin: Path, town: Path, model: ScriptedModel, scratch: Path) -> ClaudeCode:
    return ClaudeCode(claude_bin, town, model, scratch)
