"""The real Claude Code in a Gas Town town: a throwaway ``HOME`` whose settings were written
by ``gastownctl install-hooks``, an agent's working directory (a git repository) with
``gt``-style identity variables, fake ``bd``/``gt`` on ``PATH``, and a scripted model.

Only the model is fake (``model.py``): the client, its hooks, ``git``, the hook process and
the daemon are the real ones. The environment keeps the client off the network: no update
check, telemetry, error reports or feature flags, a dummy API key, and a proxy that is the
scripted model, which records any ``CONNECT`` (``ScriptedModel.connects``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.claude.model import ScriptedModel

FAKES = Path(__file__).resolve().parent / "bin"
MCP_SERVER = Path(__file__).resolve().parent / "beads_mcp.py"
RECORDER = Path(__file__).resolve().parent / "record_payload.py"
# Every hook event Claude Code 2.1.332 knows (its own list, in its order).
ALL_EVENTS = (
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "PostToolBatch",
    "Notification",
    "UserPromptSubmit",
    "UserPromptExpansion",
    "SessionStart",
    "SessionEnd",
    "Stop",
    "StopFailure",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "PostCompact",
    "PermissionRequest",
    "PermissionDenied",
)
ACTOR = "gastown/polecats/nux"
TMUX = "gt-gastown-nux"
# What the client may do without asking (print mode cannot ask): the shell and the test's
# Beads MCP server.
ALLOWED_TOOLS = ["Bash", "mcp__beads"]
# Keeps the client to the one endpoint it is given. Found in the 2.1.332 binary; the
# nonessential-traffic switch covers update checks, telemetry and error reports.
OFFLINE_ENV = {
    "ANTHROPIC_API_KEY": "sk-ant-test-not-a-key",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_UPDATES": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_GROWTHBOOK": "1",
    "CLAUDE_CODE_DISABLE_FEATURE_FLAGS": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
    "CLAUDE_CODE_IDE_SKIP_AUTO_INSTALL": "1",
    "CLAUDE_CODE_ENABLE_TELEMETRY": "0",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


@dataclass
class Run:
    """One ``claude -p`` run."""

    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        return str(self.result["session_id"])


@dataclass
class ClaudeCode:
    """The pinned client, set up for one agent of one town."""

    binary: Path
    town: Path
    model: ScriptedModel
    root: Path
    hooks: bool = True
    # A second hook on every event, written before install-hooks runs, that appends each
    # payload to ``payloads.jsonl``: what the real client sends, and proof that
    # install-hooks keeps the hooks it did not write.
    record_payloads: bool = False
    actor: str = ACTOR
    tmux: str = TMUX

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.settings = self.home / ".claude" / "settings.json"
        self.settings.parent.mkdir(parents=True)
        settings: dict[str, Any] = {"permissions": {"allow": ALLOWED_TOOLS}}
        self.payload_log = self.root / "payloads.jsonl"
        if self.record_payloads:
            record = f"{sys.executable} -I {RECORDER} {self.payload_log}"
            group = {"hooks": [{"type": "command", "command": record}]}
            settings["hooks"] = {event: [group] for event in ALL_EVENTS}
        self.settings.write_text(json.dumps(settings))
        if self.hooks:
            install_hooks(self.settings)
        self.workdir = self.town / "gastown" / "polecats" / self.actor.rsplit("/", 1)[-1]
        if not (self.workdir / ".git").exists():
            make_repo(self.workdir)
        self.bd_log = self.root / "bd.log"
        self.gt_log = self.root / "gt.log"

    def env(self, **extra: str) -> dict[str, str]:
        git = shutil.which("git")
        path = [
            str(FAKES),
            os.path.dirname(git) if git else "",
            "/usr/local/bin",
            "/usr/bin",
            "/bin",
        ]
        rig, _, name = self.actor.partition("/polecats/")
        env = {
            "PATH": os.pathsep.join(p for p in path if p),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.root),
            "ANTHROPIC_BASE_URL": self.model.url,
            "HTTPS_PROXY": self.model.url,
            "HTTP_PROXY": self.model.url,
            **OFFLINE_ENV,
            # What gt sets in an agent's tmux session (reference, section 3).
            "GT_TOWN_ROOT": str(self.town),
            "GT_ROLE": self.actor,
            "BD_ACTOR": self.actor,
            "GT_RIG": rig,
            "GT_POLECAT": name,
            "GT_SESSION": self.tmux,
            "FAKE_BD_LOG": str(self.bd_log),
            "FAKE_GT_LOG": str(self.gt_log),
        }
        env.update(extra)
        return env

    def run(self, prompt: str, *args: str, timeout_s: float = 60.0, **extra_env: str) -> Run:
        argv = [
            str(self.binary),
            "-p",
            prompt,
            "--output-format",
            "json",
            "--model",
            "claude-sonnet-4-5",
            *args,
        ]
        started = time.monotonic()
        done = subprocess.run(
            argv,
            cwd=self.workdir,
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        elapsed = time.monotonic() - started
        try:
            result = json.loads(done.stdout)
        except ValueError:
            result = {}
        return Run(done.returncode, done.stdout, done.stderr, elapsed, result)

    def payloads(self) -> list[dict[str, Any]]:
        """What the recording hook saw, in order."""
        if not self.payload_log.exists():
            return []
        return [json.loads(line) for line in self.payload_log.read_text().splitlines() if line]

    def mcp_args(self) -> list[str]:
        """Arguments that give the session the test's Beads MCP server, under the key ``beads``."""
        config = self.root / "mcp.json"
        server = {"command": sys.executable, "args": ["-I", str(MCP_SERVER)]}
        config.write_text(json.dumps({"mcpServers": {"beads": server}}))
        return ["--mcp-config", str(config), "--strict-mcp-config"]


def install_hooks(settings: Path) -> None:
    """``gastownctl install-hooks`` exactly as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "gastown_client.cli", "install-hooks", "--settings", str(settings)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr + done.stdout


def make_repo(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(path), "GIT_CONFIG_NOSYSTEM": "1"}
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.name", "Nux"],
        ["git", "config", "user.email", "nux@gastown.test"],
        ["git", "config", "commit.gpgsign", "false"],
        ["git", "commit", "-q", "--allow-empty", "-m", "Initial commit"],
    ):
        subprocess.run(argv, cwd=path, env=env, check=True, capture_output=True, timeout=30)
