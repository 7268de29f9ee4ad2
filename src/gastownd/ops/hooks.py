"""hook: Claude Code hook calls forwarded by gastown-hook (mapping comes with issue 5)."""

from __future__ import annotations

from gastown_client.protocol import Hook, HookResult
from gastownd.daemon import Daemon


async def hook(daemon: Daemon, request: Hook) -> HookResult:
    return HookResult(handled="ignored")
