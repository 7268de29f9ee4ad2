"""``gastownctl``'s subcommands, one ``Command`` each, in the order ``--help`` lists them."""

from __future__ import annotations

from gastown_client.commands.common import Command
from gastown_client.commands.daemon_commands import METRICS, PING, PRUNE, SOCKNAME, STATUS
from gastown_client.commands.issues import ATTRIBUTE, ATTRIBUTION
from gastown_client.commands.log_commands import EMIT, EVENTS
from gastown_client.commands.session_commands import CV, DIGEST, SEANCE, SESSION, SESSIONS, WISP
from gastown_client.commands.setup import FEDERATION, INSTALL_HOOKS

COMMANDS: tuple[Command, ...] = (
    STATUS,
    PING,
    SOCKNAME,
    METRICS,
    EMIT,
    EVENTS,
    PRUNE,
    SESSION,
    WISP,
    DIGEST,
    CV,
    SESSIONS,
    SEANCE,
    ATTRIBUTE,
    ATTRIBUTION,
    INSTALL_HOOKS,
    FEDERATION,
)
