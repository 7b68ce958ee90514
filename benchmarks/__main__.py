"""Run the benchmark suite: ``python -m benchmarks [--smoke] [--only NAME ...] [--json FILE]``.

Prints one table: benchmark, figure, unit, target, and the reference measured in the
same run. Figures are medians over repeats. Nothing is asserted: a missed target is
printed, not failed. The exit status is 1 only when a benchmark could not run at all
(an exception), so the smoke mode catches rot; "n/a" rows (a missing optional part)
do not count as failures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from typing import Any

import psutil

from . import claude_bench, conversation_bench, kernel_bench, peer_bench, server_bench
from .harness import FULL, SMOKE, Mode, Row

__all__ = ["BENCHMARKS", "format_table", "main"]

Benchmark = Callable[[Mode], Coroutine[Any, Any, list[Row]]]

# name -> (function, rows it prints when it cannot run); the names are what --only takes.
BENCHMARKS: dict[str, tuple[Benchmark, list[tuple[str, str, str]]]] = {
    "throughput": (server_bench.throughput, [("throughput", "MB/s", ">= 250"),
                                             ("throughput / pipe read", "ratio", ">= 0.5")]),
    "latency": (server_bench.latency, [("latency p50", "ms", "<= 0.5"), ("latency p99", "ms", "<= 1")]),
    "partial": (server_bench.partial_line, [("partial line", "ms", "<= 5")]),
    "concurrency": (server_bench.concurrency, [("concurrency sessions exact", "sessions", "= all"),
                                               ("concurrency heartbeat p99", "ms late", "<= 100")]),
    "memory": (server_bench.memory, [("memory RSS growth", "MiB", "<= 64")]),
    "idle": (server_bench.idle_cost, [("idle CPU", "% of a core", "<= 1")]),
    "kernel": (kernel_bench.responsiveness, [("kernel 1+1 while streaming", "ms", "<= 50")]),
    "ingest": (kernel_bench.ingest, [("kernel ingest", "MB/s", ">= 200"),
                                     ("kernel ingest RSS growth", "MiB", "<= 64"),
                                     ("kernel ingest 1+1 max", "ms", "<= 50")]),
    "widget": (kernel_bench.widget_traffic, [("widget updates", "msg/s peak", "<= ~10"),
                                             ("widget bytes", "KB max msg", "view-bounded"),
                                             ("record bytes", "KB", "3 x view")]),
    "cold-start": (kernel_bench.cold_start, [("cold start", "ms", "<= 300")]),
    "approval": (conversation_bench.approval, conversation_bench.APPROVAL_ROWS),
    "interrupt": (conversation_bench.interrupt, conversation_bench.INTERRUPT_ROWS),
    "attach": (server_bench.job_attach, [("job attach replay", "MB/s", ">= 200")]),
    "claude": (claude_bench.overhead, [("claude overhead", "ms added", "<= 5")]),
    "peers": (peer_bench.peers, peer_bench.ROWS),
}

HEADER = ("benchmark", "figure", "unit", "target", "reference (same run)")


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned plain-text table."""
    cells = [HEADER, *[(r.name, r.figure_text(), r.unit, r.target, r.reference) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = []
    for index, row in enumerate(cells):
        lines.append("  ".join(
            [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]),
             row[3].ljust(widths[3]), row[4]]
        ).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in [*widths, len(HEADER[4])]))
    return "\n".join(lines)


def _failed_rows(name: str, reason: str) -> list[Row]:
    return [Row(row, None, unit, target, note=reason) for row, unit, target in BENCHMARKS[name][1]]


def _run_one(name: str, mode: Mode) -> tuple[list[Row], bool]:
    """Run one benchmark; (rows, ok). An exception gives "error" rows and ok=False."""
    function = BENCHMARKS[name][0]
    try:
        return asyncio.run(function(mode)), True
    except Exception as exc:  # a benchmark that breaks must not hide the others
        traceback.print_exc(file=sys.stderr)
        return _failed_rows(name, f"error: {type(exc).__name__}"), False


def _busy_seconds() -> tuple[float, float]:
    """(CPU seconds the machine was busy, CPU seconds of this process and its reaped children)."""
    machine = psutil.cpu_times()
    busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system


def _foreign_load(before: tuple[float, float], seconds: float) -> float:
    """Percent of the machine's CPU used by processes outside the suite since ``before``."""
    busy, own = _busy_seconds()
    other = (busy - before[0]) - (own - before[1])
    return max(0.0, other / (seconds * (psutil.cpu_count() or 1)) * 100)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and one repeat (under a minute): checks that every benchmark runs")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks and print the table; 1 if any could not run."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    mode = SMOKE if args.smoke else FULL
    names = args.only or list(BENCHMARKS)
    rows: list[Row] = []
    failures = []
    started = time.monotonic()
    load_before = _busy_seconds()
    for name in names:
        began = time.monotonic()
        print(f"# {name} ...", file=sys.stderr, flush=True)
        result, ok = _run_one(name, mode)
        rows.extend(result)
        if not ok:
            failures.append(name)
        print(f"# {name}: {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    foreign = _foreign_load(load_before, elapsed)
    print(f"\ncc_executor_nb benchmarks ({mode.name} mode, {elapsed:.0f} s, {psutil.cpu_count()} CPUs; "
          f"other processes used {foreign:.0f}% of the machine meanwhile)\n")
    print(format_table(rows))
    if failures:
        print(f"\nfailed to run: {', '.join(failures)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            report = {"mode": mode.name, "seconds": elapsed, "foreign_load_percent": foreign,
                      "rows": [asdict(r) for r in rows]}
            json.dump(report, handle, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
