"""Measure variants of the server side by side, before changing a default.

    python -m benchmarks.experiment [throughput|latency|concurrency] [--variants A B ...]
                                    [--rounds 3] [--smoke]

Each variant (``benchmarks/variants.py``) is the server with some settings changed. The
variants run interleaved, round after round, each in a fresh server, so that a burst of
load from elsewhere on the machine spreads over all of them; the medians per variant
are printed, every round's figures too (on stderr). ``--smoke`` uses the smoke sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from .harness import FULL, SMOKE, Mode, median, run_server
from .variants import VARIANTS
from .workloads import WORKLOADS, Figures

__all__ = ["format_medians", "main"]


async def _measure(workload: str, variant: str, mode: Mode) -> Figures:
    chosen = WORKLOADS[workload]
    with run_server(*chosen.flags(mode), variant=variant) as server:
        return await chosen.measure(server, mode)


def format_medians(results: dict[str, list[Figures]]) -> str:
    """One line per variant: the median of each figure over its rounds ("n/a" if none ran)."""
    keys = next((list(runs[0]) for runs in results.values() if runs), [])
    lines = ["variant".ljust(16) + "rounds".rjust(7) + "".join(k.rjust(14) for k in keys)]
    for name, runs in results.items():
        cells = [f"{median([r[k] for r in runs]):14.3g}" if runs else "n/a".rjust(14) for k in keys]
        lines.append(name.ljust(16) + str(len(runs)).rjust(7) + "".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the variants and print a table of medians; 1 if some round could not run."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiment", description=__doc__.split("\n")[0])
    parser.add_argument("workload", nargs="?", choices=list(WORKLOADS), default="throughput")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="NAME",
                        help=f"variants to run ({', '.join(VARIANTS)})")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="smoke sizes: checks that the variants run")
    args = parser.parse_args(argv)
    mode = SMOKE if args.smoke else FULL
    results: dict[str, list[Figures]] = {name: [] for name in args.variants}
    failed = False
    for round_number in range(1, args.rounds + 1):
        for name in args.variants:
            try:
                figures = asyncio.run(_measure(args.workload, name, mode))
            except Exception as exc:  # one broken variant must not hide the others
                failed = True
                print(f"# round {round_number} {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            else:
                results[name].append(figures)
                shown = ", ".join(f"{key} {value:.3g}" for key, value in figures.items())
                print(f"# round {round_number} {name}: {shown}", file=sys.stderr, flush=True)
    print(f"{args.workload} ({mode.name} sizes): medians of {args.rounds} interleaved rounds")
    print(format_medians(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
