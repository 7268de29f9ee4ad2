"""The real Claude Code, pinned: installed once per machine with npm into a cache directory.

``claude_binary()`` returns the native ``claude`` of ``VERSION``, installing it on first use
into ``~/.cache/gastownd-tests/claude-code-<VERSION>`` (``$XDG_CACHE_HOME`` honoured, or
``$GASTOWND_TEST_CACHE``). The npm package brings its native binary as an optional
dependency from the registry; nothing is downloaded when it runs. ``Unavailable`` says why
it cannot be had (no npm, no registry, no binary for this platform): tests skip with that.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PACKAGE = "@anthropic-ai/claude-code"
# The version the hooks are tested against (docs/hooks.md). Bump it deliberately: Claude
# Code changes its hook payloads often, and these tests are how a change is noticed.
VERSION = "2.1.332"
# A machine without the registry fails within this, not after npm's default retries.
INSTALL_TIMEOUT_S = 300


class Unavailable(Exception):
    """The pinned client cannot be had on this machine; the message says why."""


def cache_root() -> Path:
    explicit = os.environ.get("GASTOWND_TEST_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gastownd-tests"


def _binary_in(prefix: Path) -> Path | None:
    """The native binary of an install: the wrapper's ``bin/claude.exe`` once its postinstall
    has put the native binary there, else the platform package's own binary."""
    modules = prefix / "node_modules" / "@anthropic-ai"
    candidates = [modules / "claude-code" / "bin" / "claude.exe"]
    candidates += sorted(modules.glob("claude-code-*/claude"))
    for candidate in candidates:
        if _reports_version(candidate):
            return candidate
    return None


def _reports_version(binary: Path) -> bool:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    try:
        result = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": os.environ.get("PATH", ""), "DISABLE_AUTOUPDATER": "1"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.startswith(VERSION)


def claude_binary() -> Path:
    """The pinned native ``claude``, installed if needed (under a lock: one install at once)."""
    prefix = cache_root() / f"claude-code-{VERSION}"
    found = _binary_in(prefix)
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable("npm is not on PATH (.ci/run installs it)")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(prefix.parent / f".claude-code-{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _binary_in(prefix)
        if found is not None:
            return found
        # Installed aside and renamed into place: a killed install leaves no half copy.
        staging = Path(tempfile.mkdtemp(prefix=f".claude-code-{VERSION}-", dir=prefix.parent))
        try:
            result = subprocess.run(
                [
                    npm,
                    "install",
                    "--prefix",
                    str(staging),
                    "--no-audit",
                    "--no-fund",
                    "--no-save",
                    "--loglevel=error",
                    "--fetch-retries=1",
                    "--fetch-timeout=60000",
                    f"{PACKAGE}@{VERSION}",
                ],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
            )
            if result.returncode != 0:
                tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
                raise Unavailable(f"npm install {PACKAGE}@{VERSION} failed: {' / '.join(tail)}")
            if _binary_in(staging) is None:
                raise Unavailable(f"{PACKAGE}@{VERSION} has no native binary for this platform")
            shutil.rmtree(prefix, ignore_errors=True)
            staging.rename(prefix)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"npm install did not finish in {INSTALL_TIMEOUT_S}s") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    found = _binary_in(prefix)
    if found is None:
        raise Unavailable(f"{PACKAGE}@{VERSION} installed but its binary does not run")
    return found
