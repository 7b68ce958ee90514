"""Compare the throughput of two or more checkouts of the project, round by round.

    python -m benchmarks.compare TREE [TREE ...] [--rounds 4] [--size 200]

``benchmarks.experiment`` measures patches of the installed package; this measures
whole checkouts (``git worktree add /tmp/before HEAD~3``), server and client both, so a
change of the client or of a default can be compared too. Each round runs every tree
once, in turn, in its own interpreter (``PYTHONPATH`` and working directory set to the
tree): two throughput runs through server and client, each after a plain pipe read of
the same output. Interleaving spreads bursts of outside load over all trees; the
medians per tree are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .harness import median

__all__ = ["main"]

_ONE_TREE = """
import asyncio, json, sys
from benchmarks.harness import MB, producer, run_server
from benchmarks.pipe_reference import read_pipe
from benchmarks.server_bench import _stack_throughput

async def main(size):
    runs = []
    with run_server() as server:
        for _ in range(2):
            _, seconds = await read_pipe(producer("lines", str(size)))
            pipe = size / MB / seconds
            stack, _, server_busy, client_busy = await _stack_throughput(server, size)
            runs.append({"MB/s": stack, "ratio": stack / pipe, "server busy": server_busy,
                         "client busy": client_busy})
    print(json.dumps(runs))

asyncio.run(main(int(sys.argv[1])))
"""

COLUMNS = ("MB/s", "ratio", "server busy", "client busy")


def _run_tree(tree: Path, size: int) -> list[dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", _ONE_TREE, str(size)], cwd=tree, env=env, capture_output=True, text=True,
        check=False, timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr.strip()[-2000:]}")
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=Path, help="checkouts of the project")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--size", type=int, default=200, help="MB per throughput run")
    args = parser.parse_args(argv)
    trees = [tree.resolve() for tree in args.trees]
    # One list per position: the same tree given twice (an A/A run) shows the noise.
    results: list[list[dict[str, float]]] = [[] for _ in trees]
    for round_number in range(1, args.rounds + 1):
        for tree, kept in zip(trees, results, strict=True):
            runs = _run_tree(tree, args.size * 1_000_000)
            kept.extend(runs)
            shown = "  ".join(f"{run['MB/s']:.0f} MB/s ratio {run['ratio']:.3f}" for run in runs)
            print(f"# round {round_number} {tree}: {shown}", flush=True)
    print(f"throughput of {args.size} MB: medians of {2 * args.rounds} runs per tree, interleaved")
    print(f"{'tree':40} " + " ".join(f"{column:>12}" for column in COLUMNS))
    for tree, runs in zip(trees, results, strict=True):
        print(f"{str(tree)[-40:]:40} " + " ".join(f"{median([r[c] for r in runs]):12.3f}" for c in COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
