"""Compare the throughput of two or more checkouts of the project, round by round.

    python -m benchmarks.compare TREE [TREE ...] [--rounds 4] [--size 200]

``benchmarks.experiment`` measures settings of this checkout; this measures code: the
package of whole checkouts (``git worktree add /tmp/before HEAD~3``), server and client
both, so that any change can be compared, including one of the client or of a default.
The measuring code is this checkout's for every tree, so each is measured the same way
(it needs only the public client: ``connect``, ``execute``, ``events``). Each round runs
every tree once, in turn, in its own interpreter whose ``cc_executor_nb`` is the tree's:
two throughput runs through server and client, each after a plain pipe read of the same
output. Interleaving spreads bursts of outside load over all trees; the medians per tree
are printed at the end. Give the same tree twice to see the noise (an A/A run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .harness import BENCH_DIR, MB, median, producer, run_server
from .pipe_reference import read_pipe
from .server_bench import stack_throughput

__all__ = ["main", "measure_here"]

# Run in the tree (its directory first on the path), so that cc_executor_nb is the
# tree's; only then is this checkout's directory put in front, for benchmarks.
_ONE_TREE = """
import sys
import cc_executor_nb
sys.path.insert(0, sys.argv[1])
from benchmarks.compare import measure_here
measure_here(int(sys.argv[2]))
"""

COLUMNS = ("MB/s", "ratio", "server busy", "client busy")


def measure_here(size: int) -> None:
    """Print, as JSON, two throughput runs of this interpreter's cc_executor_nb."""
    import cc_executor_nb

    package = Path(cc_executor_nb.__file__).resolve().parent
    if not package.is_relative_to(Path.cwd().resolve()):
        raise RuntimeError(f"cc_executor_nb comes from {package}, not from the tree {Path.cwd()}")
    print(json.dumps(asyncio.run(_runs(size))))


async def _runs(size: int) -> list[dict[str, float]]:
    runs = []
    with run_server() as server:
        for _ in range(2):
            _, seconds = await read_pipe(producer("lines", str(size)))
            run = await stack_throughput(server, size)
            runs.append({"MB/s": run.rate, "ratio": run.rate / (size / MB / seconds),
                         "server busy": run.server_busy, "client busy": run.client_busy})
    return runs


def _run_tree(tree: Path, size: int) -> list[dict[str, float]]:
    # The server child inherits the working directory and PYTHONPATH: the tree's too.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", _ONE_TREE, str(BENCH_DIR.parent), str(size)], cwd=tree, env=env,
        capture_output=True, text=True, check=False, timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr.strip()[-2000:]}")
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the trees interleaved and print the medians per tree."""
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
            runs = _run_tree(tree, args.size * MB)
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
