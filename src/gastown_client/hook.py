"""``gastown-hook``: the Claude Code hook entry point (reserved; see issue 5).

Until the hook protocol lands it does nothing and always succeeds: a hook
must never fail or slow the agent.
"""

from __future__ import annotations


def main() -> int:
    return 0
