"""``install-hooks``: merge into Claude Code's settings without disturbing them."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gastown_client import hookinstall
from gastown_client.hookinstall import HOOKS, POST_TOOL_MATCHER, run_install

EVENTS = {spec.event for spec in HOOKS}

FOREIGN: dict[str, Any] = {
    "model": "opus",
    "env": {"BASH_DEFAULT_TIMEOUT_MS": "600000"},
    "hooks": {
        "SessionStart": [
            {"matcher": "startup", "hooks": [{"type": "command", "command": "echo hello"}]}
        ],
        "PostToolUse": [
            {
                "matcher": "Edit|Write",
                "hooks": [{"type": "command", "command": "prettier --write", "timeout": 30}],
            }
        ],
        "Notification": [{"hooks": [{"type": "command", "command": "notify-send claude"}]}],
    },
    "permissions": {"allow": ["Bash(git status)"]},
}


def run(path: Path, *, dry_run: bool = False, uninstall: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = run_install(path, dry_run=dry_run, uninstall=uninstall, out=out)
    return code, out.getvalue()


def write(path: Path, settings: Any, mode: int = 0o644) -> bytes:
    data = json.dumps(settings, indent=4).encode()
    path.write_bytes(data)
    path.chmod(mode)
    return data


def ours(settings: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for event, groups in settings.get("hooks", {}).items():
        for group in groups:
            for entry in group.get("hooks", []):
                if hookinstall.is_ours(entry):
                    found.setdefault(event, []).append(entry["command"])
    return found


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".bak-*"))


@pytest.fixture
def settings(tmp_path: Path) -> Path:
    return tmp_path / ".claude" / "settings.json"


def test_fresh_install_creates_the_file(settings: Path) -> None:
    code, message = run(settings)
    assert code == 0 and "created" in message
    document = json.loads(settings.read_text())
    assert set(ours(document)) == EVENTS
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600
    hooks = document["hooks"]
    [post] = hooks["PostToolUse"]
    assert post["matcher"] == POST_TOOL_MATCHER
    assert "matcher" not in hooks["Stop"][0]
    for event, groups in hooks.items():
        [group] = groups
        [entry] = group["hooks"]
        assert entry["type"] == "command" and entry["timeout"] == hookinstall.HOOK_TIMEOUT_S
        assert entry["command"].endswith(" || true")
        argv = entry["command"].removesuffix(" || true").split()
        assert argv[0] == hookinstall.hook_interpreter() and os.path.isabs(argv[0])
        assert "/shims/" not in argv[0]
        assert argv[1:4] == ["-I", "-S", str(Path(hookinstall.hook_script()))]
        assert argv[3].endswith("gastown_client/hook.py") and os.path.isfile(argv[3])
        # SessionStart may print context for Claude: it is the one that waits.
        assert (argv[4:] == ["--async"]) == (event != "SessionStart")


@pytest.mark.parametrize(
    ("tool", "matched"),
    [
        ("Bash", True),
        ("mcp__beads__close", True),
        ("mcp__beads__create", True),
        ("mcp__plugin_beads_beads__update", True),
        ("mcp__bd__reopen", True),
        ("BashOutput", False),
        ("Edit", False),
        ("mcp__beads__show", False),
        ("mcp__beads__close_all", False),
    ],
)
def test_post_tool_matcher_selects_bash_and_beads_changes(tool: str, matched: bool) -> None:
    # Claude Code evaluates a matcher with regex characters as a JavaScript regex;
    # this pattern reads the same under Python's re.
    assert bool(re.search(POST_TOOL_MATCHER, tool)) == matched


def test_an_older_bash_only_install_is_upgraded_in_place(settings: Path) -> None:
    assert run(settings)[0] == 0
    document = json.loads(settings.read_text())
    document["hooks"]["PostToolUse"][0]["matcher"] = "Bash"
    write(settings, document)
    assert run(settings)[0] == 0
    [post] = json.loads(settings.read_text())["hooks"]["PostToolUse"]
    assert post["matcher"] == POST_TOOL_MATCHER
    assert run(settings)[1].endswith("already installed\n")


def test_second_run_changes_nothing(settings: Path) -> None:
    settings.parent.mkdir()
    write(settings, FOREIGN)
    assert run(settings)[0] == 0
    after_first = settings.read_bytes()
    [backup] = backups(settings)
    code, message = run(settings)
    assert code == 0 and "already installed" in message
    assert settings.read_bytes() == after_first
    assert backups(settings) == [backup]


def test_foreign_hooks_and_keys_are_preserved_in_order(settings: Path) -> None:
    settings.parent.mkdir()
    write(settings, FOREIGN, mode=0o640)
    assert run(settings)[0] == 0
    document = json.loads(settings.read_text())
    assert list(document) == list(FOREIGN)  # key order kept
    for key in ("model", "env", "permissions"):
        assert document[key] == FOREIGN[key]
    hooks = document["hooks"]
    assert list(hooks)[:3] == ["SessionStart", "PostToolUse", "Notification"]
    assert hooks["SessionStart"][0] == FOREIGN["hooks"]["SessionStart"][0]
    assert hooks["PostToolUse"][0] == FOREIGN["hooks"]["PostToolUse"][0]
    assert hooks["Notification"] == FOREIGN["hooks"]["Notification"]
    assert set(ours(document)) == EVENTS
    assert all(len(commands) == 1 for commands in ours(document).values())
    assert stat.S_IMODE(settings.stat().st_mode) == 0o640  # mode kept
    assert settings.read_text().startswith('{\n  "model"')  # indent 2


def test_backup_holds_the_original(settings: Path) -> None:
    settings.parent.mkdir()
    original = write(settings, FOREIGN, mode=0o640)
    code, message = run(settings)
    [backup] = backups(settings)
    assert code == 0 and backup.name in message
    assert backup.read_bytes() == original
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640
    assert backup.name.startswith("settings.json.bak-" + time.strftime("%Y"))


@pytest.mark.parametrize(
    "content",
    [
        b'{"hooks": {',
        b"[1, 2]",
        b'{"hooks": []}',
        b'{"hooks": "none"}',
        b'{"hooks": {"Stop": {"hooks": []}}}',
        b'{"hooks": {"Stop": ["echo"]}}',
        b"\xff\xfe{}",
    ],
    ids=["truncated", "array", "hooks-list", "hooks-string", "event-object", "group-str", "utf16"],
)
def test_invalid_file_is_reported_and_left_as_it_was(settings: Path, content: bytes) -> None:
    settings.parent.mkdir()
    settings.write_bytes(content)
    before = settings.stat()
    for dry_run in (False, True):
        code, message = run(settings, dry_run=dry_run)
        assert code == 1 and "invalid settings file" in message
    assert settings.read_bytes() == content
    assert settings.stat().st_mtime_ns == before.st_mtime_ns
    assert backups(settings) == []
    assert sorted(p.name for p in settings.parent.iterdir()) == ["settings.json"]


def test_dry_run_prints_a_diff_and_writes_nothing(settings: Path) -> None:
    settings.parent.mkdir()
    original = write(settings, FOREIGN)
    code, output = run(settings, dry_run=True)
    assert code == 0
    lines = output.splitlines()
    assert lines[0].startswith("--- ") and lines[1].startswith("+++ ")
    added = [line for line in lines if line.startswith("+") and "gastown_client/hook.py" in line]
    assert len(added) == len(EVENTS)
    assert "nothing written" in lines[-1]
    assert settings.read_bytes() == original
    assert backups(settings) == []


def test_dry_run_on_a_missing_file_creates_nothing(settings: Path) -> None:
    code, output = run(settings, dry_run=True)
    assert code == 0 and "+++ " in output
    assert not settings.parent.exists()


def test_uninstall_removes_only_ours(settings: Path) -> None:
    settings.parent.mkdir()
    write(settings, FOREIGN)
    run(settings)
    code, message = run(settings, uninstall=True)
    assert code == 0 and "removed" in message
    assert json.loads(settings.read_text()) == FOREIGN
    assert len(backups(settings)) == 2
    code, message = run(settings, uninstall=True)
    assert code == 0 and "not installed" in message


def test_uninstall_drops_the_containers_it_emptied(settings: Path) -> None:
    settings.parent.mkdir()
    write(settings, {"model": "opus"})
    run(settings)
    run(settings, uninstall=True)
    assert json.loads(settings.read_text()) == {"model": "opus"}


def test_uninstall_keeps_foreign_hooks_sharing_our_group(settings: Path) -> None:
    settings.parent.mkdir()
    mixed = {
        "hooks": {
            "Stop": [
                {
                    "hooks": [
                        {"type": "command", "command": "/old/bin/gastown-hook --async"},
                        {"type": "command", "command": "say done"},
                    ]
                }
            ]
        }
    }
    write(settings, mixed)
    run(settings, uninstall=True)
    assert json.loads(settings.read_text()) == {
        "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]}
    }


def test_stale_entries_are_replaced_in_place_not_duplicated(settings: Path) -> None:
    settings.parent.mkdir()
    stale_cmd = "/old/venv/bin/python -I -S /old/src/gastown_client/hook.py --async"
    stale = {
        "hooks": {
            "Stop": [
                {"hooks": [{"type": "command", "command": "say first"}]},
                {"hooks": [{"type": "command", "command": stale_cmd}]},
                {"hooks": [{"type": "command", "command": "say last"}]},
                {"hooks": [{"type": "command", "command": "/usr/local/bin/gastown-hook"}]},
            ]
        }
    }
    write(settings, stale)
    assert run(settings)[0] == 0
    stop = json.loads(settings.read_text())["hooks"]["Stop"]
    commands = [group["hooks"][0]["command"] for group in stop]
    assert commands[0] == "say first" and commands[2] == "say last" and len(commands) == 3
    assert commands[1] == hookinstall.installed_command(detached=True)


def test_symlinked_settings_are_written_through(settings: Path, tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "claude-settings.json"
    target.parent.mkdir()
    write(target, FOREIGN)
    settings.parent.mkdir()
    settings.symlink_to(target)
    assert run(settings)[0] == 0
    assert settings.is_symlink()
    assert set(ours(json.loads(target.read_text()))) == EVENTS


def test_interpreter_is_never_a_shim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/home/u/.pyenv/shims/python3")
    interpreter = hookinstall.hook_interpreter()
    assert "/shims/" not in interpreter
    assert os.path.isabs(interpreter) and os.access(interpreter, os.X_OK)


def test_installed_command_runs_and_exits_0(settings: Path, tmp_path: Path) -> None:
    run(settings)
    document = json.loads(settings.read_text())
    for event in ("SessionStart", "Stop"):
        command = document["hooks"][event][0]["hooks"][0]["command"]
        result = subprocess.run(
            command,
            shell=True,
            input=json.dumps({"hook_event_name": event}).encode(),
            capture_output=True,
            env={"GT_TOWN_ROOT": str(tmp_path / "no-town"), "PATH": "/usr/bin:/bin"},
            timeout=30,
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


# ---------------------------------------------------------------- hostile settings, gone files


def test_a_directory_for_settings_is_refused_in_one_line(tmp_path: Path) -> None:
    code, message = run(tmp_path)
    assert code == 1 and "cannot read the settings file" in message
    assert message.count("\n") == 1


def test_deeply_nested_settings_are_refused_and_left_alone(settings: Path) -> None:
    data = b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_bytes(data)
    code, message = run(settings)
    assert code == 1 and "nested too deeply" in message
    assert settings.read_bytes() == data


def test_an_unwritable_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    tmp_path.chmod(0o500)
    try:
        code, message = run(tmp_path / "settings.json")
    finally:
        tmp_path.chmod(0o700)
    assert code == 1 and "cannot write" in message


@pytest.mark.parametrize("gone", ["interpreter", "script"])
def test_the_installed_command_exits_0_when_its_files_are_gone(
    settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gone: str
) -> None:
    missing = str(tmp_path / "removed-venv" / "bin" / "python")
    if gone == "interpreter":
        monkeypatch.setattr(hookinstall, "hook_interpreter", lambda: missing)
    else:
        monkeypatch.setattr(hookinstall, "hook_script", lambda: missing)
    assert run(settings)[0] == 0
    for commands in ours(json.loads(settings.read_text())).values():
        for command in commands:
            result = subprocess.run(
                ["/bin/sh", "-c", command], input=b"{}", capture_output=True, timeout=10
            )
            assert result.returncode == 0, (command, result.stderr)


def test_install_then_remove_restores_the_file_exactly(settings: Path) -> None:
    settings.parent.mkdir(parents=True, exist_ok=True)
    original = write(settings, {"model": "opus", "hooks": {"Stop": [{"hooks": [MINE]}]}})
    assert run(settings)[0] == 0
    assert run(settings, uninstall=True)[0] == 0
    assert json.loads(settings.read_bytes()) == json.loads(original)


MINE = {"type": "command", "command": "notify-send done"}


def test_uninstall_only_under_a_directory_keeps_the_others(settings: Path) -> None:
    checkout = "/home/u/src/.venv/bin/python -I -S /home/u/src/gastown_client/hook.py"
    installed = "/home/u/.local/share/gastownd/venv/bin/python -I -S /x/gastown_client/hook.py"
    groups = [{"hooks": [{"type": "command", "command": c}]} for c in (checkout, installed)]
    settings.parent.mkdir(parents=True, exist_ok=True)
    write(settings, {"hooks": {"Stop": groups}})
    out = io.StringIO()
    code = run_install(
        settings, dry_run=False, uninstall=True, out=out, only_under="/home/u/.local/share/gastownd"
    )
    assert code == 0
    assert ours(json.loads(settings.read_text())) == {"Stop": [checkout]}
