"""``gastownd run`` pauses the garbage collector for the start-up, and always resumes it."""

from __future__ import annotations

import argparse
import gc

import pytest

from gastownd.process import command


def test_run_pauses_the_collector_while_serving_and_resumes_it_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bool] = []

    def serve(args: argparse.Namespace) -> int:
        seen.append(gc.isenabled())
        return 0

    monkeypatch.setattr(command, "serve", serve)
    assert gc.isenabled()
    assert command.run(argparse.Namespace()) == 0
    assert seen == [False]
    assert gc.isenabled()


def test_a_crashed_start_resumes_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    def serve(args: argparse.Namespace) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(command, "serve", serve)
    with pytest.raises(RuntimeError):
        command.run(argparse.Namespace())
    assert gc.isenabled()


def test_importing_the_command_leaves_the_collector_alone() -> None:
    # Tests and tools import it without running a daemon: nothing is paused for them.
    assert gc.isenabled()
