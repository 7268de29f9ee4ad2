"""The Neovim plugin, headless, against a real daemon (editors/nvim/tests/ holds the cases).

Each case runs in a fresh ``nvim --headless`` with its own town: the Lua runner prints one TAP
line per case and exits non-zero when one failed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.editors.conftest import EDITORS, DaemonControl, editor_env

NVIM = shutil.which("nvim")
pytestmark = pytest.mark.skipif(
    NVIM is None, reason="nvim is not on PATH (Debian: apt-get install neovim)"
)
PLUGIN = EDITORS / "nvim"

OFFLINE = [
    "format_time",
    "format_rows",
    "issue_under_cursor",
    "town_roots",
    "hung_daemon_times_out",
    "missing_gastownctl",
]
LIVE = [
    "feed_shows_new_event_within_1s",
    "feed_filters_types_and_all_nodes",
    "sessions_list_hook_session_and_open_digest",
    "who_shows_bd_close_attribution",
    "daemon_stopped_one_message",
    "feed_resumes_after_restart",
    "feed_resyncs_when_the_log_was_replaced",
    "feed_after_a_full_prune",
    "statusline_counts_open_sessions",
    # Issue 20: test_daily.lua.
    "sessions_sorted_by_the_start_they_show",
    "payloads_shown_as_the_cli_shows_them",
    "hostile_text_keeps_one_event_a_row",
    "who_float_closes_with_q_and_its_rows_align",
    "logged_session_shows_its_lines",
    "refresh_keeps_the_cursor_on_its_session",
    "all_nodes_feed_without_federation_tags_no_line",
    "feed_types_checked_completed_and_comma_separated",
    "feed_waits_then_enter_opens_the_session_and_question_mark_lists_keys",
]


def run_nvim(cases: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    assert NVIM is not None
    return subprocess.run(
        [
            NVIM,
            "--headless",
            "--clean",
            "--cmd",
            f"set rtp^={PLUGIN}",
            "-c",
            f"luafile {PLUGIN / 'tests' / 'run.lua'}",
        ],
        env={**env, "GASTOWND_TEST_CASES": ",".join(cases)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_passed(done: subprocess.CompletedProcess[str], cases: list[str]) -> None:
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    passed = [line for line in done.stdout.splitlines() if line.startswith("ok ")]
    assert len(passed) == len(cases), report
    assert "not ok" not in done.stdout, report


def test_nvim_version() -> None:
    assert NVIM is not None
    first = subprocess.run([NVIM, "--version"], capture_output=True, text=True).stdout
    major, minor = (int(part) for part in first.split()[1].lstrip("v").split(".")[:2])
    assert (major, minor) >= (0, 7), first


def test_offline(town: Path, tmp_path: Path) -> None:
    """Formatting, town roots, a hung daemon, a missing gastownctl: no daemon needed."""
    done = run_nvim(OFFLINE, editor_env(town, tmp_path / "home"), tmp_path)
    assert_passed(done, OFFLINE)


@pytest.mark.parametrize("case", LIVE)
def test_live(case: str, live_town: DaemonControl, tmp_path: Path) -> None:
    done = run_nvim([case], editor_env(live_town.town, tmp_path / "home"), tmp_path)
    assert_passed(done, [case])


def test_help(tmp_path: Path) -> None:
    """``:help gastownd`` finds the doc once its tags are made (as plugin managers do)."""
    assert NVIM is not None
    copy = tmp_path / "gastownd"
    shutil.copytree(PLUGIN, copy)
    done = subprocess.run(
        [
            NVIM,
            "--headless",
            "--clean",
            "--cmd",
            f"set rtp^={copy}",
            "-c",
            f"helptags {copy / 'doc'}",
            "-c",
            "help :GastownWho",
            "-c",
            "lua io.stdout:write(vim.fn.expand('%:t'), ' ', vim.fn.getline('.'))",
            "-c",
            "qa!",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gastownd.txt "), done.stdout
    assert "*:GastownWho*" in done.stdout, done.stdout
    assert not done.stderr.strip(), done.stderr


def test_helptags_leave_the_checkout_clean(tmp_path: Path) -> None:
    """``:helptags ALL``, as the docs say, writes ``doc/tags``: git ignores it (issue 20)."""
    assert NVIM is not None
    tags = PLUGIN / "doc" / "tags"
    existed = tags.exists()
    try:
        done = subprocess.run(
            # What `:helptags ALL` does for the plugin (without touching the system's doc/).
            [NVIM, "--headless", "--clean", "-c", f"helptags {PLUGIN / 'doc'}", "-c", "qa!"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert tags.exists()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", str(PLUGIN)],
            cwd=PLUGIN,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        assert "tags" not in status.stdout, status.stdout
    finally:
        if not existed:
            tags.unlink(missing_ok=True)
