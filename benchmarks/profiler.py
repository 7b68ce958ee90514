"""Profile the server (and optionally the client) under one workload.

    python -m benchmarks.profiler throughput|latency|concurrency [--tool py-spy|pyinstrument]
                                  [--variant NAME] [--repeats 3] [--rate 250] [--smoke] [--out DIR] [--client]

Workloads are those of ``benchmarks/workloads.py`` (full sizes: 200 MB of lines; 500
stamped lines 10 ms apart; 100 sessions x 5 MB), repeated on one server. The server runs
as a child under the profiler: py-spy (default; sampling from outside, so it barely slows
the server) writes collapsed stacks, summarised here as the functions with the most
samples, self and inclusive; pyinstrument writes its own text report. ``--variant``
profiles a variant of ``benchmarks/variants.py``; ``--client`` also profiles this process
(the client) with pyinstrument. Needs the ``bench`` extra (pyinstrument, py-spy).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .harness import FULL, SMOKE, Mode, ServerProcess
from .variants import VARIANTS
from .workloads import WORKLOADS

__all__ = ["main", "summarize_collapsed"]

# Leaf frames of threads that wait in a system call (py-spy may count them as active).
_IDLE = ("ThreadedChildWatcher._do_waitpid", "EpollSelector.select", "_worker ", "Thread.wait", "Condition.wait")


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """The functions with the most samples in a py-spy raw (collapsed) file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if any(frames[-1].startswith(idle) for idle in _IDLE):
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples (active, without threads blocked in waitpid/select)", "",
             "self %   function"]
    lines += [f"{100 * n / total:6.1f}   {name}" for name, n in own.most_common(top)]
    lines += ["", "incl %   function"]
    lines += [f"{100 * n / total:6.1f}   {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


async def _workload(name: str, server: ServerProcess, mode: Mode, repeats: int) -> str:
    started = time.perf_counter()
    runs = []
    for _ in range(repeats):
        figures = await WORKLOADS[name].measure(server, mode)
        runs.append(", ".join(f"{key} {value:.3g}" for key, value in figures.items()))
    return f"{name}: " + "; ".join(runs) + f" ({time.perf_counter() - started:.1f} s under the profiler)"


def _prefix(tool: str, out: Path, name: str, rate: int = 250) -> tuple[list[str], Path]:
    if tool == "py-spy":
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        target = out / f"server-{name}.collapsed"
        return [py_spy, "record", "--nonblocking", "--rate", str(rate), "--format", "raw", "--output", str(target),
                "--", sys.executable], target
    target = out / f"server-{name}.pyinstrument.txt"
    return [sys.executable, "-m", "pyinstrument", "--renderer", "text", "--show-all",
            "--outfile", str(target)], target


async def _profile(name: str, args: argparse.Namespace, out: Path) -> None:
    label = name if args.variant is None else f"{name}-{args.variant}"
    prefix, target = _prefix(args.tool, out, label, args.rate)
    mode = SMOKE if args.smoke else FULL
    server = ServerProcess(*WORKLOADS[name].flags(mode), prefix=prefix, variant=args.variant)
    profiler = None
    if args.client:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
        profiler.start()
    try:
        print(await _workload(name, server, mode, args.repeats))
    finally:
        if profiler is not None:
            profiler.stop()
            (out / f"client-{label}.pyinstrument.txt").write_text(profiler.output_text(show_all=True))
        server.stop(timeout=60)
    if args.tool == "py-spy":
        summary = summarize_collapsed(target)
        (out / f"server-{label}.summary.txt").write_text(summary + "\n")
        print(summary)
    print(f"server profile: {target}")


def main(argv: Sequence[str] | None = None) -> int:
    """Profile the named workloads; reports go to --out."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiler", description=__doc__.split("\n")[0])
    parser.add_argument("workloads", nargs="+", choices=list(WORKLOADS))
    parser.add_argument("--tool", choices=("py-spy", "pyinstrument"), default="py-spy")
    parser.add_argument("--variant", choices=list(VARIANTS), help="profile this variant of the server")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the workload on the one server")
    parser.add_argument("--rate", type=int, default=250, help="py-spy's samples per second")
    parser.add_argument("--smoke", action="store_true", help="smoke sizes: checks that profiling works")
    parser.add_argument("--out", default="benchmarks/profiles", help="directory for the reports")
    parser.add_argument("--client", action="store_true", help="also profile the client (pyinstrument)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.workloads:
        asyncio.run(_profile(name, args, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
