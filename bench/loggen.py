"""Deterministic, realistic Gas Town event logs.

The mix of types, actors and payload shapes follows the reference log
(``/work/shared/data/sample-town.events.jsonl``: nudge, session_start, sling,
session_death, spawn, done, mail, handoff, hook, unhook, halt) plus the
patrol chatter a busy town adds (``patrol_*``, ``polecat_checked``, ...).
Lines are byte-compatible with what ``gt`` writes: fields in gt's order, the
payload's keys sorted, Go's HTML-safe escapes, ``\\n`` inside nudge text,
emoji and other non-ASCII text.

Timestamps are spread evenly (with jitter, in file order) over ``span_s``
seconds ending at ``END_TS``, a fixed instant: the same seed gives the same
bytes on every machine and every day. Benchmarks that care about "now" (the
prune) shift their TTLs by ``now - END_TS`` instead.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

# 2026-01-25T00:00:00Z: the generated logs end here.
END_TS = 1_769_299_200
DEFAULT_SPAN_S = 10 * 86_400
FORMAT_VERSION = 1

# Weights per 1000 lines: the reference's mix, plus patrol traffic.
TYPE_WEIGHTS: dict[str, int] = {
    "nudge": 190,
    "session_start": 135,
    "sling": 95,
    "session_death": 90,
    "spawn": 90,
    "done": 85,
    "mail": 80,
    "handoff": 20,
    "unhook": 14,
    "hook": 14,
    "halt": 2,
    "patrol_started": 55,
    "patrol_complete": 55,
    "polecat_checked": 35,
    "polecat_nudged": 10,
    "session_end": 20,
    "merge_started": 5,
    "merged": 5,
}

RIGS = ["gastown", "careops", "icecream", "beads", "longeye"]
POLECATS = [
    "nux",
    "furiosa",
    "slit",
    "rictus",
    "rust",
    "shiny",
    "nitro",
    "guzzle",
    "chrome",
    "raider",
    "pipboy",
    "fury",
    "thunder",
    "capable",
    "toast",
    "ace",
    "morsov",
    "keeper",
]
CREW = ["klip", "baker", "mint", "overseer", "max", "joe"]
ROLES = ["witness", "refinery"]
SERVICES = ["daemon", "deacon", "boot", "mayor"]
WORDS = [
    "bead",
    "merge",
    "review",
    "patrol",
    "refinery",
    "witness",
    "polecat",
    "branch",
    "rebase",
    "conflict",
    "tests",
    "green",
    "red",
    "flaky",
    "pipeline",
    "deploy",
    "queue",
    "batch",
    "cook",
    "story",
    "mail",
    "handoff",
    "context",
    "compaction",
    "session",
    "started",
    "stopped",
    "idle",
    "stuck",
    "escalate",
    "retry",
    "build",
    "lint",
    "mypy",
    "ruff",
    "pytest",
    "migration",
    "schema",
    "index",
    "cursor",
    "subscriber",
    "daemon",
    "socket",
    "lock",
    "append",
    "fdatasync",
    "prune",
    "retention",
    "wisp",
    "hook",
    "sling",
    "convoy",
    "formula",
    "molecule",
]
FLAVOUR = ["🚀", "✅", "⚠️", "🔥", "→", "café", "naïve", "日本語", "—", "…"]
HOME = "/home/user/gt"

_encoder = msgspec.json.Encoder()
_payload_encoder = msgspec.json.Encoder(order="sorted")


class _Line(msgspec.Struct):
    """gt's field order; payload pre-encoded with sorted keys."""

    ts: str
    source: str
    type: str
    actor: str
    payload: msgspec.Raw
    visibility: str


@dataclass(frozen=True)
class LogSpec:
    lines: int
    seed: int = 7
    span_s: int = DEFAULT_SPAN_S

    @property
    def key(self) -> str:
        text = f"v{FORMAT_VERSION}-seed{self.seed}-lines{self.lines}-span{self.span_s}"
        return f"{text}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def type_weights() -> dict[str, float]:
    total = sum(TYPE_WEIGHTS.values())
    return {name: weight / total for name, weight in TYPE_WEIGHTS.items()}


def _go_escape(data: bytes) -> bytes:
    if b"<" in data:
        data = data.replace(b"<", b"\\u003c")
    if b">" in data:
        data = data.replace(b">", b"\\u003e")
    if b"&" in data:
        data = data.replace(b"&", b"\\u0026")
    return data


class _Town:
    """Pools of names, sessions and texts drawn once from the seed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.polecats = [f"{rig}/polecats/{name}" for rig in RIGS for name in POLECATS]
        self.short_polecats = [f"{rig}/{name}" for rig in RIGS for name in POLECATS]
        self.crew = [f"{rig}/crew/{name}" for rig in RIGS for name in CREW]
        self.rig_roles = [f"{rig}/{role}" for rig in RIGS for role in ROLES]
        self.agents = self.polecats + self.crew + self.rig_roles + ["mayor", "deacon"]
        self.sessions = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(20_000)]
        self.texts = [self._text() for _ in range(4_000)]
        self.subjects = [self._sentence(2, 8) for _ in range(1_000)]
        self.beads = [
            f"{rng.choice(['gt', 'ca', 'ic', 'hq', 'bd'])}-"
            f"{'wisp-' if rng.random() < 0.3 else ''}"
            f"{rng.getrandbits(20):x}"
            for _ in range(5_000)
        ]

    def _sentence(self, low: int, high: int) -> str:
        rng = self.rng
        words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
        if rng.random() < 0.15:
            words.insert(rng.randrange(len(words) + 1), rng.choice(FLAVOUR))
        return " ".join(words)

    def _text(self) -> str:
        """Nudge text: mostly short, sometimes a paragraph (20..~700 bytes)."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.7:
            body = self._sentence(2, 8)
        elif roll < 0.93:
            body = self._sentence(10, 30)
        else:
            body = "\n".join(self._sentence(8, 20) for _ in range(rng.randint(2, 4)))
        if rng.random() < 0.1:
            body = f"<system-reminder>{body}</system-reminder> & check"
        return body


def _payload(town: _Town, event_type: str, actor: str) -> dict[str, Any]:
    """A payload shaped like the reference's for ``event_type`` (keys sorted)."""
    rng = town.rng
    if event_type == "nudge":
        return {
            "reason": f"[from {actor}] {rng.choice(town.texts)}",
            "rig": rng.choice(["", *RIGS]),
            "target": rng.choice(town.agents),
        }
    if event_type in ("session_start", "session_end"):
        payload: dict[str, Any] = {
            "actor_pid": f"{actor}-{rng.randint(1000, 99999)}",
            "cwd": f"{HOME}/{actor}",
            "role": actor,
            "session_id": rng.choice(town.sessions),
        }
        if rng.random() < 0.3:
            payload["topic"] = "patrol"
        return payload
    if event_type == "sling":
        return {
            "bead": rng.choice(town.beads),
            "formula": rng.choice(["story-cook-batch", "mol-polecat-work", "review"]),
            "target": rng.choice(town.agents),
        }
    if event_type == "session_death":
        return {
            "agent": actor,
            "caller": rng.choice(["gt done", "witness", "deacon"]),
            "reason": rng.choice(
                [
                    "self-clean: done means gone",
                    "stuck: no progress",
                    "context exhausted",
                    town.rng.choice(town.subjects),
                ]
            ),
            "session": f"gt-{actor.replace('/', '-')}",
        }
    if event_type == "spawn":
        rig, _, name = actor.partition("/polecats/")
        return {"polecat": name or rng.choice(POLECATS), "rig": rig}
    if event_type == "done":
        bead = rng.choice(town.beads)
        return {
            "bead": bead,
            "branch": f"polecat/{actor.rsplit('/', 1)[-1]}/{bead}@{rng.getrandbits(40):x}",
        }
    if event_type == "mail":
        return {"subject": rng.choice(town.subjects), "to": rng.choice(town.agents)}
    if event_type == "handoff":
        return {"subject": rng.choice(town.subjects), "to_session": rng.random() < 0.5}
    if event_type in ("hook", "unhook"):
        return {"bead": rng.choice(town.beads)}
    if event_type == "halt":
        return {"services": [*SERVICES, *rng.sample(town.rig_roles, 4)]}
    if event_type.startswith("patrol_"):
        return {
            "patrol": rng.choice(["witness", "refinery", "deacon"]),
            "rig": rng.choice(RIGS),
            "round": rng.randint(1, 5000),
        }
    if event_type in ("polecat_checked", "polecat_nudged"):
        return {
            "polecat": rng.choice(town.polecats),
            "status": rng.choice(["working", "idle", "stuck", "done"]),
        }
    return {"bead": rng.choice(town.beads), "branch": f"merge/{rng.getrandbits(24):x}"}


def _actor(town: _Town, event_type: str) -> str:
    rng = town.rng
    if event_type in ("spawn", "halt"):
        return "gt"
    if event_type in ("patrol_started", "patrol_complete", "polecat_checked", "polecat_nudged"):
        return rng.choice([*town.rig_roles, "deacon"])
    if event_type in ("done", "session_death"):
        return rng.choice(town.polecats if rng.random() < 0.8 else town.short_polecats)
    if event_type in ("merge_started", "merged"):
        return rng.choice(town.rig_roles)
    roll = rng.random()
    if roll < 0.15:
        return "mayor"
    if roll < 0.25:
        return "deacon"
    return rng.choice(town.agents)


def generate(spec: LogSpec, path: Path) -> None:
    """Write ``spec.lines`` lines to ``path`` (replaced atomically)."""
    rng = random.Random(spec.seed)
    town = _Town(rng)
    names = list(TYPE_WEIGHTS)
    weights = list(TYPE_WEIGHTS.values())
    start = END_TS - spec.span_s
    step = spec.span_s / max(spec.lines, 1)
    ts_cache: dict[int, str] = {}
    temp = path.with_suffix(".tmp")
    chunk: list[bytes] = []
    with open(temp, "wb") as out:
        types = rng.choices(names, weights, k=spec.lines)
        for n, event_type in enumerate(types):
            # Mostly in order; a few lines a second or two out of order, like gt's clocks.
            second = int(start + n * step) - (rng.random() < 0.01) * rng.randint(1, 2)
            ts = ts_cache.get(second)
            if ts is None:
                ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
                if len(ts_cache) > 4096:
                    ts_cache.clear()
                ts_cache[second] = ts
            actor = _actor(town, event_type)
            payload = _go_escape(_payload_encoder.encode(_payload(town, event_type, actor)))
            chunk.append(
                _encoder.encode(_Line(ts, "gt", event_type, actor, msgspec.Raw(payload), "feed"))
            )
            if len(chunk) >= 50_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    os.replace(temp, path)


def cached_log(spec: LogSpec, work_dir: Path) -> Path:
    """The log for ``spec`` under ``work_dir``, generated on first use."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"events-{spec.key}.jsonl"
    if not path.exists():
        generate(spec, path)
    return path
