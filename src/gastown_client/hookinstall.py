"""``gastownctl install-hooks``: wire ``gastown-hook`` into Claude Code's settings.

Claude Code reads hooks from ``settings.json``::

    {"hooks": {"<Event>": [{"matcher": "...",
                            "hooks": [{"type": "command", "command": "...", "timeout": 5}]}]}}

The command written calls the hook by absolute paths: this environment's
interpreter (never a pyenv-style shim, which costs ~150 ms a call) with
``-I -S`` and the installed ``hook.py`` as a self-contained script. Hooks
whose answer nobody reads get ``--async``; ``SessionStart`` stays synchronous
because its stdout may carry the predecessor's context.

Claude Code runs the command through a shell, and it is written as
``<command> || true``: the hook itself always exits 0, and so then does a
command whose interpreter or script is gone (a removed venv or checkout,
which would otherwise exit 127, or 2, which Claude Code takes for "block
this": a ``Stop`` hook exiting 2 keeps the agent from stopping).

Our entries are recognised by their command (it names ``gastown_client/hook.py``
or ``gastown-hook``), so a reinstall from a moved checkout replaces them in
place and ``--uninstall`` removes exactly them. Everything else in the file
(other hooks, other keys, key order) is kept; nothing is written when nothing
changes; a changed file is backed up first and replaced atomically.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import gastown_client.hook

MARKERS = ("gastown_client/hook.py", "gastown-hook")
HOOK_TIMEOUT_S = 5
# Bash calls, and the beads MCP server's changing tools under any server key
# (``mcp__beads__close``, ``mcp__plugin_beads_beads__update``, ...). Claude Code
# reads a matcher with regex characters as an unanchored regex: anchor it.
POST_TOOL_MATCHER = "^(Bash|mcp__.+__(close|update|reopen|create))$"


@dataclass(frozen=True, slots=True)
class HookSpec:
    event: str
    matcher: str | None
    detached: bool
    # Claude Code's own ``"async": true``: it starts the hook and goes on without waiting
    # for the process. Only for PostToolUse, the hook of every tool call, which sits between
    # the tool and the model's next turn: a hook that runs as the client exits (SessionEnd,
    # the last Stop) must be waited for, or the client may kill it before it has detached.
    background: bool = False


# Order is the order they are added to a settings file that has none.
HOOKS: tuple[HookSpec, ...] = (
    HookSpec("SessionStart", None, detached=False),
    HookSpec("SessionEnd", None, detached=True),
    HookSpec("PreCompact", None, detached=True),
    HookSpec("PostToolUse", POST_TOOL_MATCHER, detached=True, background=True),
    HookSpec("Stop", None, detached=True),
    HookSpec("UserPromptSubmit", None, detached=True),
)


class InvalidSettings(Exception):
    """The settings file cannot be merged safely; it is left as it was."""


def default_settings_path() -> Path:
    return Path.home() / ".claude" / "settings.json"


def hook_interpreter() -> str:
    """The interpreter to write into the command: absolute, never a shim.

    ``sys.executable`` is kept as is (a venv's ``bin/python`` is a real
    interpreter, and ``-I -S`` makes the venv irrelevant anyway) unless it is
    a shim, which is a shell script that re-resolves the version on every
    call: then the real interpreter behind it.
    """
    exe = os.path.abspath(sys.executable) if sys.executable else ""
    if exe and "/shims/" not in exe:
        return exe
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        os.path.realpath(exe) if exe else "",
        os.path.join(sys.base_prefix, "bin", f"python{version}"),
        os.path.join(sys.base_prefix, "bin", "python3"),
        getattr(sys, "_base_executable", ""),
    ]
    for candidate in candidates:
        if candidate and "/shims/" not in candidate and os.access(candidate, os.X_OK):
            return candidate
    return exe


def hook_script() -> str:
    return str(Path(gastown_client.hook.__file__).resolve())


def hook_command(*, detached: bool) -> str:
    command = f"{shlex.quote(hook_interpreter())} -I -S {shlex.quote(hook_script())}"
    return f"{command} --async" if detached else command


def installed_command(*, detached: bool) -> str:
    """What goes into the settings: the command, exiting 0 even if its files are gone."""
    return f"{hook_command(detached=detached)} || true"


def is_ours(hook: Any) -> bool:
    command = hook.get("command") if isinstance(hook, dict) else None
    return isinstance(command, str) and any(marker in command for marker in MARKERS)


def desired_group(spec: HookSpec) -> dict[str, Any]:
    group: dict[str, Any] = {}
    if spec.matcher is not None:
        group["matcher"] = spec.matcher
    group["hooks"] = [
        {
            "type": "command",
            "command": installed_command(detached=spec.detached),
            "timeout": HOOK_TIMEOUT_S,
        }
    ]
    if spec.background:
        group["hooks"][0]["async"] = True
    return group


# ---------------------------------------------------------------- pure merge


def parse_settings(text: str) -> dict[str, Any]:
    """A settings document, or ``InvalidSettings``. An empty file counts as ``{}``."""
    if not text.strip():
        return {}
    try:
        settings = json.loads(text)
    except ValueError as exc:
        raise InvalidSettings(f"not valid JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise InvalidSettings("the top level is not a JSON object")
    hooks = settings.get("hooks")
    if hooks is not None and not isinstance(hooks, dict):
        raise InvalidSettings('"hooks" is not a JSON object')
    return settings


def _groups(hooks: dict[str, Any], event: str) -> list[Any]:
    groups = hooks.get(event, [])
    if not isinstance(groups, list):
        raise InvalidSettings(f'"hooks.{event}" is not a JSON array')
    for index, group in enumerate(groups):
        if not isinstance(group, dict) or not isinstance(group.get("hooks", []), list):
            raise InvalidSettings(f'"hooks.{event}[{index}]" is not a matcher group')
    return groups


def _strip_ours(
    groups: list[Any], ours: Callable[[Any], bool] = is_ours
) -> tuple[list[Any], int | None]:
    """``groups`` without our hooks (groups we emptied dropped), and the
    position of the first group that held one."""
    kept: list[Any] = []
    first: int | None = None
    for group in groups:
        hooks = group.get("hooks") if isinstance(group, dict) else None
        if not isinstance(hooks, list) or not any(ours(hook) for hook in hooks):
            kept.append(group)
            continue
        if first is None:
            first = len(kept)
        remaining = [hook for hook in hooks if not ours(hook)]
        if remaining:
            kept.append({**group, "hooks": remaining})
    return kept, first


def merge_hooks(settings: dict[str, Any], specs: tuple[HookSpec, ...] = HOOKS) -> dict[str, Any]:
    """``settings`` with exactly one of our groups per event; input untouched."""
    merged = copy.deepcopy(settings)
    hooks = merged.get("hooks")
    if hooks is None:
        hooks = merged["hooks"] = {}
    for spec in specs:
        groups = _groups(hooks, spec.event)
        want = desired_group(spec)
        ours = [group for group in groups if any(is_ours(hook) for hook in group.get("hooks", []))]
        if ours == [want]:
            continue
        kept, first = _strip_ours(groups)
        kept.insert(len(kept) if first is None else first, want)
        hooks[spec.event] = kept
    return merged


def remove_hooks(settings: dict[str, Any], only_under: str | None = None) -> dict[str, Any]:
    """``settings`` without our hooks, and without the containers that held only them.

    ``only_under``: only the hooks whose command runs files under that directory
    (an installed copy removing its own, not a checkout's)."""

    def ours(hook: Any) -> bool:
        return is_ours(hook) and (only_under is None or only_under in hook["command"])

    merged = copy.deepcopy(settings)
    hooks = merged.get("hooks")
    if not isinstance(hooks, dict):
        return merged
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list):
            continue
        kept, first = _strip_ours(groups, ours)
        if first is None:
            continue
        if kept:
            hooks[event] = kept
        else:
            del hooks[event]
    if not hooks and settings.get("hooks"):
        del merged["hooks"]
    return merged


def render(settings: dict[str, Any]) -> str:
    return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- file I/O


def _backup(path: Path, data: bytes, mode: int) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    serial = 1
    while backup.exists():
        serial += 1
        backup = path.with_name(f"{path.name}.bak-{stamp}-{serial}")
    fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return backup


def _write_atomically(path: Path, text: str, mode: int) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def run_install(
    settings_path: Path | None,
    *,
    dry_run: bool,
    uninstall: bool,
    out: TextIO,
    err: TextIO | None = None,
    only_under: str | None = None,
) -> int:
    """Merge (or with ``uninstall`` remove) our hooks; 0 ok, 1 invalid settings file.

    Reports go to ``out``, the invalid-file error to ``err`` (default ``out``).
    """
    shown = Path(settings_path).expanduser() if settings_path else default_settings_path()
    # Write through a symlink (dotfile managers), never over it.
    path = Path(os.path.realpath(shown))
    try:
        if path.exists() and not path.is_file():
            raise IsADirectoryError(f"not a regular file: {path}")
        original = path.read_bytes()
        mode: int | None = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        original, mode = b"", None
    except OSError as exc:
        print(f"{shown}: cannot read the settings file: {exc}", file=err or out)
        return 1
    try:
        return _apply(
            shown,
            path,
            original,
            mode,
            dry_run=dry_run,
            uninstall=uninstall,
            out=out,
            only_under=only_under,
        )
    except InvalidSettings as exc:
        print(f"{shown}: invalid settings file, left unchanged: {exc}", file=err or out)
        return 1
    except OSError as exc:
        print(f"{shown}: cannot write the settings file, left unchanged: {exc}", file=err or out)
        return 1


def _apply(
    shown: Path,
    path: Path,
    original: bytes,
    mode: int | None,
    *,
    dry_run: bool,
    uninstall: bool,
    out: TextIO,
    only_under: str | None,
) -> int:
    try:
        before_text = original.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSettings(str(exc)) from None
    try:
        before = parse_settings(before_text)
    except RecursionError:
        raise InvalidSettings("nested too deeply") from None
    after = remove_hooks(before, only_under) if uninstall else merge_hooks(before)
    if after == before:
        message = "not installed, nothing to remove" if uninstall else "already installed"
        print(f"{shown}: {message}", file=out)
        return 0
    after_text = render(after)
    if dry_run:
        diff = difflib.unified_diff(
            before_text.splitlines(keepends=True),
            after_text.splitlines(keepends=True),
            fromfile=str(shown),
            tofile=f"{shown} (after install-hooks{' --uninstall' if uninstall else ''})",
        )
        out.writelines(line if line.endswith("\n") else line + "\n" for line in diff)
        print(f"{shown}: dry run, nothing written", file=out)
        return 0
    if mode is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, after_text, 0o600)
        print(f"{shown}: created with gastown hooks", file=out)
        return 0
    backup = _backup(path, original, mode)
    _write_atomically(path, after_text, mode)
    verb = "removed gastown hooks from" if uninstall else "installed gastown hooks in"
    print(f"{verb} {shown} (backup: {backup.name})", file=out)
    return 0
