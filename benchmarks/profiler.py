"""Profile the server (and optionally the client) under one benchmark workload.

    python -m benchmarks.profiler throughput [--tool py-spy|pyinstrument] [--out DIR] [--client]

Workloads: ``throughput`` (three 200 MB runs), ``latency`` (1000 stamped lines, 10 ms
apart), ``concurrency`` (100 sessions x 5 MB). The server runs as a child under the
profiler: py-spy (default; sampling from outside, so it barely slows the server) writes
collapsed stacks, summarised here as the functions with the most samples, self and
inclusive; pyinstrument writes its own text report. ``--client`` also profiles this
process (the client) with pyinstrument. Needs the ``bench`` extra (pyinstrument) and,
for py-spy, the ``py-spy`` package.
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

from .harness import FULL, MB, ServerProcess
from .server_bench import _concurrent_run, _stack_latency, _stack_throughput

__all__ = ["main", "summarize_collapsed"]

WORKLOADS = ("throughput", "latency", "concurrency")
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


async def _workload(name: str, server: ServerProcess) -> str:
    started = time.perf_counter()
    if name == "throughput":
        runs = [await _stack_throughput(server, 200 * MB) for _ in range(3)]
        summary = "; ".join(f"{rate:.0f} MB/s (server {cs:.0%}, client {cc:.0%} of a core)"
                            for rate, _, cs, cc in runs)
    elif name == "latency":
        samples = sorted(await _stack_latency(server, 1000))
        summary = f"p50 {samples[len(samples) // 2]:.3f} ms, p99 {samples[int(len(samples) * 0.99)]:.3f} ms"
    else:
        run = await _concurrent_run(server, FULL, 1.0)
        late = sorted(run.lateness) or [float("nan")]
        summary = (f"{run.exact} exact, {run.rate:.0f} MB/s, execute replies after {run.answered_after:.2f} s, "
                   f"heartbeat p99 {late[int(len(late) * 0.99)]:.0f} ms, failures {dict(run.failures)}")
    return f"{name}: {summary} ({time.perf_counter() - started:.1f} s under the profiler)"


def _prefix(tool: str, out: Path, name: str) -> tuple[list[str], Path]:
    if tool == "py-spy":
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        target = out / f"server-{name}.collapsed"
        return [py_spy, "record", "--nonblocking", "--rate", "250", "--format", "raw", "--output", str(target),
                "--", sys.executable], target
    target = out / f"server-{name}.pyinstrument.txt"
    return [sys.executable, "-m", "pyinstrument", "--renderer", "text", "--show-all",
            "--outfile", str(target)], target


async def _profile(name: str, tool: str, out: Path, client: bool) -> None:
    prefix, target = _prefix(tool, out, name)
    flags = ["--heartbeat-interval", "1", "--max-sessions", "200"] if name == "concurrency" else []
    server = ServerProcess(*flags, prefix=prefix)
    profiler = None
    if client:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
        profiler.start()
    try:
        print(await _workload(name, server))
    finally:
        if profiler is not None:
            profiler.stop()
            (out / f"client-{name}.pyinstrument.txt").write_text(profiler.output_text(show_all=True))
        server.stop(timeout=60)
    if tool == "py-spy":
        summary = summarize_collapsed(target)
        (out / f"server-{name}.summary.txt").write_text(summary + "\n")
        print(summary)
    print(f"server profile: {target}")


def main(argv: Sequence[str] | None = None) -> int:
    """Profile the named workloads; reports go to --out."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiler", description=__doc__.split("\n")[0])
    parser.add_argument("workloads", nargs="+", choices=WORKLOADS)
    parser.add_argument("--tool", choices=("py-spy", "pyinstrument"), default="py-spy")
    parser.add_argument("--out", default="benchmarks/profiles", help="directory for the reports")
    parser.add_argument("--client", action="store_true", help="also profile the client (pyinstrument)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.workloads:
        asyncio.run(_profile(name, args.tool, out, args.client))
    return 0


if __name__ == "__main__":
    sys.exit(main())
