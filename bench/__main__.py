"""``python -m bench``: run the benchmark suites, print and write the results table."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench.context import Context, Sizes
from bench.harness import BENCH_DIR, Row, percentile

# Suite name -> module in bench.suites; run in this order.
SUITES: dict[str, str] = {
    "roundtrip": "roundtrip",
    "emit": "emit",
    "startup": "startup",
    "memory": "startup",
    "query": "query",
    "external": "external",
    "fanout": "fanout",
    "prune": "prune",
    "hooks": "hooks",
    "claude": "claude",
    "federation": "federation",
    "metrics": "metrics",
    "sessions": "sessions",
}
# Suites that use the shared daemon on the big log.
USES_BIG = {"startup", "memory", "query"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes and shorter windows (a smoke run)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these suites (repeat or comma-separate): {', '.join(SUITES)}",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated log")
    parser.add_argument(
        "--out",
        type=Path,
        default=BENCH_DIR,
        help="where results.md and results.json go (default: bench/)",
    )
    return parser.parse_args(argv)


def selected(only: list[str]) -> list[str]:
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise SystemExit(f"unknown suite(s): {', '.join(unknown)} (known: {', '.join(SUITES)})")
    return [n for n in SUITES if not names or n in names]


def summarise(trace: str, limit: int = 300) -> str:
    """The last line of a traceback, cut to ``limit`` characters."""
    text = trace.strip().splitlines()[-1]
    return text if len(text) <= limit else text[:limit] + "…"


def compact(value: object, limit: int = 100) -> object:
    """``value`` with every list of more than ``limit`` numbers replaced by its percentiles."""
    if isinstance(value, dict):
        return {key: compact(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        if len(value) > limit and all(isinstance(v, int | float) for v in value):
            numbers = [float(v) for v in value]
            return {
                "n": len(numbers),
                "min": min(numbers),
                "p50": percentile(numbers, 50),
                "p90": percentile(numbers, 90),
                "p99": percentile(numbers, 99),
                "max": max(numbers),
            }
        return [compact(item, limit) for item in value]
    return value


def machine() -> dict[str, object]:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def render(rows: list[Row], meta: dict[str, object], host: dict[str, object]) -> str:
    lines = [
        f"# gastownd benchmarks ({meta['mode']} run)",
        "",
        f"{meta['when']} · {host['cpu']} × {host['cpus']} · Linux {host['kernel']} · "
        f"Python {host['python']} · log: {meta['lines']:,} lines (seed {meta['seed']}) · "
        f"took {meta['duration_s']:.0f} s",
        "",
        "Every ratio is against a baseline measured in the same run (time ratios: "
        "gastownd / baseline; rates and speed-ups: higher is better, see each row).",
        "",
        "| Measured | Baseline | Median | p99 | Ratio | Goal | Met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row.what, row.baseline, row.median, row.p99, row.ratio, row.goal, row.met_text]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    notes = [f"- **{row.what}**: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", "Notes:", "", *notes]
    missed = [row for row in rows if row.met is False]
    lines += [
        "",
        f"Goals met: {sum(r.met is True for r in rows)}, missed: {len(missed)}, "
        f"not applicable: {sum(r.met is None for r in rows)}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = selected(args.only)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    ctx = Context(sizes, seed=args.seed, quick=args.quick)
    started = time.monotonic()
    rows: list[Row] = []
    failed: list[str] = []
    done_modules: set[str] = set()
    try:
        for position, name in enumerate(names):
            module_name = SUITES[name]
            if module_name not in done_modules:
                done_modules.add(module_name)
                print(f"[{time.monotonic() - started:6.1f}s] {name} ...", flush=True)
                try:
                    module = importlib.import_module(f"bench.suites.{module_name}")
                    run: Callable[[Context, list[str]], list[Row]] = module.run
                    rows += run(ctx, names)
                except Exception:
                    failed.append(name)
                    traceback.print_exc()
                    note = "the suite failed: " + summarise(traceback.format_exc())
                    rows.append(Row(name=name, what=f"suite `{name}`", met=False, note=note))
            if not USES_BIG.intersection(names[position + 1 :]):
                ctx.close_big()
    finally:
        ctx.close_big()
    duration = time.monotonic() - started
    host = machine()
    meta: dict[str, object] = {
        "mode": "quick" if args.quick else "full",
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": host,
        "lines": sizes.lines,
        "seed": args.seed,
        "duration_s": duration,
        "suites": names,
    }
    table = render(rows, meta, host)
    print()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table)
    (args.out / "results.json").write_text(
        json.dumps(
            {"meta": meta, "rows": [compact(asdict(r)) for r in rows]},
            indent=2,
            ensure_ascii=False,
            default=str,
        )
        + "\n"
    )
    print(
        f"wrote {args.out / 'results.md'} and {args.out / 'results.json'} in {duration:.0f} s",
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
