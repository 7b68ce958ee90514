"""Single stack measurements against any running server, for the tools that compare or profile.

``python -m benchmarks.experiment`` runs a workload against variants of the server,
``python -m benchmarks.profiler`` runs one under a profiler. A workload names the
server flags it needs and measures one run, returning named figures; the Mode gives
the sizes (``FULL`` or ``SMOKE``). To add one, write its ``measure`` here (from the
helpers in ``server_bench``) and add it to ``WORKLOADS``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .harness import Mode, ServerProcess, percentile
from .server_bench import concurrency_flags, concurrent_run, stack_latency, stack_throughput, wait_no_sessions

__all__ = ["WORKLOADS", "Workload"]

Figures = dict[str, float]


@dataclass(frozen=True)
class Workload:
    """Server flags a workload needs, and one measurement of it."""

    flags: Callable[[Mode], list[str]]
    measure: Callable[[ServerProcess, Mode], Awaitable[Figures]]


def _no_flags(mode: Mode) -> list[str]:
    return []


async def _throughput(server: ServerProcess, mode: Mode) -> Figures:
    run = await stack_throughput(server, mode.throughput_bytes)
    return {"MB/s": run.rate, "server busy": run.server_busy, "client busy": run.client_busy,
            "server ms/MB": run.server_ms_per_mb, "client ms/MB": run.client_ms_per_mb}


async def _latency(server: ServerProcess, mode: Mode) -> Figures:
    samples = await stack_latency(server, mode.latency_lines)
    return {"p50 ms": percentile(samples, 50), "p99 ms": percentile(samples, 99)}


async def _concurrency(server: ServerProcess, mode: Mode) -> Figures:
    await wait_no_sessions(server)  # a repeat on the same server: the last one's sessions are gone
    run = await concurrent_run(server, mode)
    return {
        "MB/s": run.rate,
        "exact": float(run.exact),
        "beat p99 ms": percentile(run.lateness, 99) if run.lateness else float("nan"),
        "execute s": run.answered_after,
        "server busy": run.server_busy,
    }


WORKLOADS: dict[str, Workload] = {
    "throughput": Workload(_no_flags, _throughput),
    "latency": Workload(_no_flags, _latency),
    "concurrency": Workload(concurrency_flags, _concurrency),
}
