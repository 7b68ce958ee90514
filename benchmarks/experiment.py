"""Measure candidate optimisations side by side, before anyone edits the package.

    python -m benchmarks.experiment [throughput|concurrency] [--rounds 3] [--variants A B ...]
                                    [--extra-path DIR]

Each variant runs the server with extra flags and/or patches from
``benchmarks/patched_server.py`` (and, for ``client-orjson``, patches this process's
client). Variants run interleaved, round after round, so that a burst of load from
elsewhere on the machine spreads over all of them; the medians are printed.
``--extra-path`` puts a directory on the import path of both sides, e.g. one where
``pip install --target DIR orjson`` put orjson without touching the virtualenv.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cc_executor_nb import protocol

from .harness import FULL, MB, median, percentile, run_server
from .server_bench import _concurrent_run, _stack_throughput

__all__ = ["VARIANTS", "main"]


@dataclass(frozen=True)
class Variant:
    """Server flags, server patches and whether the client uses orjson."""

    flags: tuple[str, ...] = ()
    patches: tuple[str, ...] = ()
    client_orjson: bool = False


VARIANTS: dict[str, Variant] = {
    "baseline": Variant(),
    "no-history": Variant(flags=("--no-history",)),
    "no-metrics": Variant(flags=("--metrics-interval", "0")),
    "no-replay": Variant(flags=("--detach-ttl", "0")),
    "write-limit": Variant(patches=("write-limit",)),
    "chunk-256k": Variant(patches=("chunk-256k",)),
    "yield-pump": Variant(patches=("yield-pump",)),
    "heartbeat-timer": Variant(patches=("heartbeat-timer",)),
    "timer+yield": Variant(patches=("heartbeat-timer", "yield-pump")),
    "timer+yield+orjson": Variant(patches=("heartbeat-timer", "yield-pump", "orjson"), client_orjson=True),
    "orjson": Variant(patches=("orjson",)),
    "client-orjson": Variant(client_orjson=True),
    "orjson-both": Variant(patches=("orjson",), client_orjson=True),
    "orjson-both-256k": Variant(patches=("orjson", "chunk-256k"), client_orjson=True),
    "orjson-everything": Variant(flags=("--no-history", "--detach-ttl", "0"),
                                 patches=("orjson", "chunk-256k", "write-limit"), client_orjson=True),
}


@contextlib.contextmanager
def _client_loads(use_orjson: bool) -> Iterator[None]:
    if not use_orjson:
        yield
        return
    import orjson

    original = protocol.loads
    protocol.loads = orjson.loads  # the client parses frames through protocol.loads
    try:
        yield
    finally:
        protocol.loads = original


async def _measure(workload: str, variant: Variant, env: dict[str, str]) -> dict[str, float]:
    prefix = [sys.executable, "-m", "benchmarks.patched_server", "--patches=" + ",".join(variant.patches)]
    flags = list(variant.flags)
    if workload == "concurrency":
        flags += ["--heartbeat-interval", "1", "--max-sessions", "200"]
    with run_server(*flags, prefix=prefix, env=env) as server, _client_loads(variant.client_orjson):
        if workload == "throughput":
            rate, received, cpu_server, cpu_client = await _stack_throughput(server, 200 * MB)
            if received != 200 * MB:
                raise RuntimeError(f"got {received} bytes")
            return {"MB/s": rate, "server busy": cpu_server, "client busy": cpu_client}
        run = await _concurrent_run(server, FULL, 1.0)
        return {
            "MB/s": run.rate,
            "exact": float(run.exact),
            "beat p99 ms": percentile(run.lateness, 99) if run.lateness else float("nan"),
            "execute s": run.answered_after,
        }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the variants and print a table of medians."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiment", description=__doc__.split("\n")[0])
    parser.add_argument("workload", nargs="?", choices=("throughput", "concurrency"), default="throughput")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--extra-path", help="directory added to the import path (e.g. holding orjson)")
    args = parser.parse_args(argv)
    env: dict[str, str] = {}
    if args.extra_path:
        sys.path.append(args.extra_path)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), args.extra_path]))
    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.variants}
    for round_ in range(args.rounds):
        for name in args.variants:
            try:
                results[name].append(asyncio.run(_measure(args.workload, VARIANTS[name], env)))
            except Exception as exc:  # e.g. orjson missing: report, go on
                print(f"# round {round_ + 1} {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            else:
                print(f"# round {round_ + 1} {name}: {results[name][-1]}", file=sys.stderr)
    keys = next((list(r[0]) for r in results.values() if r), [])
    print(f"{args.workload}: medians of {args.rounds} interleaved rounds (best MB/s: the round least "
          "disturbed by other load)")
    print("variant".ljust(20) + "best MB/s".rjust(12) + "".join(k.rjust(14) for k in keys))
    for name, runs in results.items():
        best = f"{max(r['MB/s'] for r in runs):12.1f}" if runs else "n/a".rjust(12)
        cells = [f"{median([r[k] for r in runs]):14.2f}" if runs else "n/a".rjust(14) for k in keys]
        print(name.ljust(20) + best + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
