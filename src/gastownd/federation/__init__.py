"""Federation over NATS (off unless configured): the link to the other towns (``link.py``), the
claim on this node's name (``identity.py``) and the preflight check (``check.py``).

The names this node and this town go by (``node_and_town``) are here: every daemon needs them, with
federation on or off, and importing ``link`` costs start-up time a daemon without federation
should not pay.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from gastownd.core.records import NAME_PATTERN

if TYPE_CHECKING:
    from gastownd.process.config import FederationConfig


def node_and_town(config: FederationConfig, town: Path) -> tuple[str, str]:
    """This node's and this town's names: configured, else the host's and mayor/town.json's."""
    node = config.node or _token(socket.gethostname().split(".")[0]) or "node"
    return node, config.town or _town_name(town)


def _town_name(town: Path) -> str:
    try:
        data = json.loads((town / "mayor" / "town.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    name = data.get("name") if isinstance(data, dict) else None
    return _token(name if isinstance(name, str) else "") or _token(town.name) or "town"


def _token(text: str) -> str:
    """``text`` as a subject token: other characters become ``-``."""
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_-") else "-" for ch in text)
    cleaned = cleaned.strip("-")[:64]
    return cleaned if NAME_PATTERN.fullmatch(cleaned) else ""
