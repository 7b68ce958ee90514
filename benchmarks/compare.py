"""Compare the throughput (or latency) of two or more checkouts of the project, round by round.

    python -m benchmarks.compare TREE [TREE ...] [--rounds 4] [--size 200] [--workload latency]

``benchmarks.experiment`` measures settings of this checkout; this measures code: the
package of whole checkouts (``git worktree add /tmp/before HEAD~3``), server and client
both, so that any change can be compared, including one of the client or of a default.
The measuring code is this checkout's for every tree, so each is measured the same way
(it needs only the public client: ``connect``, ``execute``, ``events``). Each round runs
every tree once, in turn, in its own interpreter whose ``cc_executor_nb`` is the tree's:
two throughput runs through server and client, each after a plain pipe read of the same
output (``--workload latency``: two runs of stamped lines 10 ms apart, each after the
same through a plain pipe read, with the CPU server and client spend per line once the run
is under way: from its ``CPU_WARMUP``-th line to its last). Interleaving spreads bursts of
outside load over all trees; the medians per tree are printed at the end. Give the same tree
twice to see the noise (an A/A run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil

from .harness import BENCH_DIR, MB, median, percentile, producer, run_server
from .pipe_reference import read_pipe
from .server_bench import LineCpu, pipe_latency, stack_latency, stack_throughput

__all__ = ["TREE_TIMEOUT", "main", "measure_here", "stop_tree"]

TREE_TIMEOUT = 600.0
"""Seconds a tree's round may take before it is given up (``--tree-timeout``)."""

# Run in the tree (its directory first on the path), so that cc_executor_nb is the
# tree's; only then is this checkout's directory put in front, for benchmarks.
_ONE_TREE = """
import sys
import cc_executor_nb
sys.path.insert(0, sys.argv[1])
from benchmarks.compare import measure_here
measure_here(int(sys.argv[2]), sys.argv[3])
"""

COLUMNS = {
    "throughput": ("MB/s", "ratio", "server busy", "client busy", "server ms/MB", "client ms/MB"),
    "latency": ("p50 ms", "p99 ms", "pipe p50 ms", "pipe p99 ms", "server us/line", "client us/line"),
}


def measure_here(size: int, workload: str = "throughput") -> None:
    """Print, as JSON, two runs of ``workload`` through this interpreter's cc_executor_nb.

    ``size``: bytes per throughput run, or stamped lines (10 ms apart) per latency run.
    """
    import cc_executor_nb

    package = Path(cc_executor_nb.__file__).resolve().parent
    if not package.is_relative_to(Path.cwd().resolve()):
        raise RuntimeError(f"cc_executor_nb comes from {package}, not from the tree {Path.cwd()}")
    runs = _runs(size) if workload == "throughput" else _latency_runs(size)
    print(json.dumps(asyncio.run(runs)))


async def _runs(size: int) -> list[dict[str, float]]:
    runs = []
    with run_server() as server:
        for _ in range(2):
            _, seconds = await read_pipe(producer("lines", str(size)))
            run = await stack_throughput(server, size)
            runs.append({"MB/s": run.rate, "ratio": run.rate / (size / MB / seconds),
                         "server busy": run.server_busy, "client busy": run.client_busy,
                         "server ms/MB": run.server_ms_per_mb, "client ms/MB": run.client_ms_per_mb})
    return runs


async def _latency_runs(lines: int) -> list[dict[str, float]]:
    runs = []
    with run_server() as server:
        for _ in range(2):
            direct = await pipe_latency(lines)
            cpu = LineCpu()
            samples = await stack_latency(server, lines, cpu)
            server_us, client_us = cpu.per_line_us()
            runs.append({"p50 ms": percentile(samples, 50), "p99 ms": percentile(samples, 99),
                         "pipe p50 ms": percentile(direct, 50), "pipe p99 ms": percentile(direct, 99),
                         "server us/line": server_us, "client us/line": client_us})
    return runs


def _run_tree(tree: Path, amount: int, workload: str, timeout: float = TREE_TIMEOUT) -> list[dict[str, float]]:
    # The server child inherits the working directory and PYTHONPATH: the tree's too.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # In a session of its own, so that its server (and the server's runs) can be stopped
    # with it whatever happens: a run that never completes, a crash, a Ctrl-C here.
    child = subprocess.Popen(
        [sys.executable, "-c", _ONE_TREE, str(BENCH_DIR.parent), str(amount), workload], cwd=tree, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{tree}: no result in {timeout:g} s (--tree-timeout); its server was stopped") from None
    finally:
        stop_tree(child)
    if child.returncode != 0:
        raise RuntimeError(f"{tree}: {err.strip()[-2000:]}")
    return list(json.loads(out.strip().splitlines()[-1]))


def stop_tree(child: subprocess.Popen[str], grace: float = 10.0) -> None:
    """Stop a tree's interpreter and everything it started, and reap it.

    SIGTERM goes to its process group (the interpreter and its server, even one the
    interpreter left behind when it died) and to each of its descendants (the server's
    runs, in groups of their own); SIGKILL to what is left after ``grace`` seconds.
    """
    family = _descendants(child.pid) if child.poll() is None else []
    _signal_all(child.pid, family, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(grace)
    _, alive = psutil.wait_procs(family, timeout=grace)
    if child.poll() is None or alive or _group_alive(child.pid):
        _signal_all(child.pid, alive, signal.SIGKILL)
    child.wait()
    for stream in (child.stdout, child.stderr):
        if stream is not None:
            stream.close()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _signal_all(group: int, processes: list[psutil.Process], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _shown(run: dict[str, float], workload: str) -> str:
    if workload == "throughput":
        return (f"{run['MB/s']:.0f} MB/s ratio {run['ratio']:.3f} "
                f"server {run['server ms/MB']:.2f} client {run['client ms/MB']:.2f} ms/MB")
    return (f"p50 {run['p50 ms']:.3f} ms p99 {run['p99 ms']:.3f} ms (pipe p50 {run['pipe p50 ms']:.3f} ms) "
            f"server {run['server us/line']:.0f} client {run['client us/line']:.0f} us/line")


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the trees interleaved and print the medians per tree."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=Path, help="checkouts of the project")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--size", type=int, default=200, help="MB per throughput run")
    parser.add_argument("--workload", choices=list(COLUMNS), default="throughput")
    parser.add_argument("--lines", type=int, default=500, help="stamped lines per latency run (10 ms apart)")
    parser.add_argument("--tree-timeout", type=float, default=TREE_TIMEOUT, metavar="SECONDS",
                        help="give a tree's round up after this long (its server is stopped)")
    args = parser.parse_args(argv)
    columns = COLUMNS[args.workload]
    trees = [tree.resolve() for tree in args.trees]
    # One list per position: the same tree given twice (an A/A run) shows the noise.
    results: list[list[dict[str, float]]] = [[] for _ in trees]
    for round_number in range(1, args.rounds + 1):
        for tree, kept in zip(trees, results, strict=True):
            amount = args.size * MB if args.workload == "throughput" else args.lines
            runs = _run_tree(tree, amount, args.workload, args.tree_timeout)
            kept.extend(runs)
            shown = "  ".join(_shown(run, args.workload) for run in runs)
            print(f"# round {round_number} {tree}: {shown}", flush=True)
    what = f"throughput of {args.size} MB" if args.workload == "throughput" else f"latency of {args.lines} lines"
    print(f"{what}: medians of {2 * args.rounds} runs per tree, interleaved")
    print(f"{'tree':40} " + " ".join(f"{column:>12}" for column in columns))
    for tree, runs in zip(trees, results, strict=True):
        print(f"{str(tree)[-40:]:40} " + " ".join(f"{median([r[c] for r in runs]):12.3f}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
