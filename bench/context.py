"""What the suites share: sizes for a full or quick run, the big log and its daemon."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.harness import WORK_DIR, Daemon, make_town, remove_town, start_daemon
from bench.loggen import LogSpec, cached_log


@dataclass(frozen=True)
class Sizes:
    lines: int
    ping_samples: int
    window_s: float
    rounds: int
    query_reps: int
    scan_reps: int
    startup_reps: int
    big_startup_reps: int
    external_lines: int
    idle_s: float
    fanout_emits: int
    prune_idle_s: float

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            lines=1_000_000,
            ping_samples=20_000,
            window_s=1.5,
            rounds=3,
            query_reps=300,
            scan_reps=3,
            startup_reps=10,
            big_startup_reps=3,
            external_lines=40,
            idle_s=5.0,
            fanout_emits=60,
            prune_idle_s=2.0,
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            lines=100_000,
            ping_samples=3_000,
            window_s=1.0,
            rounds=1,
            query_reps=50,
            scan_reps=2,
            startup_reps=3,
            big_startup_reps=2,
            external_lines=12,
            idle_s=2.0,
            fanout_emits=15,
            prune_idle_s=1.0,
        )


class Context:
    def __init__(self, sizes: Sizes, seed: int, quick: bool) -> None:
        self.sizes = sizes
        self.seed = seed
        self.quick = quick
        self.spec = LogSpec(lines=sizes.lines, seed=seed)
        self._big: Daemon | None = None
        self._big_town: Path | None = None
        self.log = print

    @property
    def lines_label(self) -> str:
        lines = self.sizes.lines
        return f"{lines // 1_000_000} M" if lines % 1_000_000 == 0 else f"{lines // 1000} k"

    def big_log(self) -> Path:
        path = WORK_DIR / f"events-{self.spec.key}.jsonl"
        if not path.exists():
            self.log(f"  generating a {self.sizes.lines:,}-line log (seed {self.seed}) ...")
        return cached_log(self.spec, WORK_DIR)

    def big_daemon(self) -> Daemon:
        """A daemon on a copy of the big log, started once and shared."""
        if self._big is None:
            log = self.big_log()
            town = make_town(log=log)
            self._big_town = town
            self._big = start_daemon(town)
        return self._big

    def close_big(self) -> None:
        if self._big is not None:
            self._big.stop()
            self._big = None
        if self._big_town is not None:
            remove_town(self._big_town)
            self._big_town = None
