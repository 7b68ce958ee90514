"""What every benchmark shares: result rows, statistics, the server as a child process.

The server runs in its own process (``python -m cc_executor_nb.server``), so that its
CPU time and memory can be read with psutil apart from the client's.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import psutil

__all__ = [
    "BENCH_DIR",
    "FULL",
    "MB",
    "MIB",
    "PRODUCER",
    "SMOKE",
    "Mode",
    "Row",
    "RssSampler",
    "ServerProcess",
    "median",
    "percentile",
    "producer",
    "run_server",
]

MB = 1_000_000
MIB = 1 << 20
BENCH_DIR = Path(__file__).resolve().parent
PRODUCER = str(BENCH_DIR / "producer.py")
_LISTENING = re.compile(r"listening on (ws://\S+)")


@dataclass(frozen=True)
class Mode:
    """Sizes and repeat counts of one run of the suite (full or smoke)."""

    name: str
    repeats: int
    throughput_bytes: int
    latency_lines: int
    partial_repeats: int
    sessions: int
    session_bytes: int
    memory_bytes: int
    idle_sessions: int
    idle_seconds: float
    idle_windows: int
    idle_reference_seconds: float
    kernel_bytes: int
    kernel_probes: int
    ingest_bytes: int
    peer_tries: int
    peer_first_tries: int
    widget_lines: int
    widget_seconds: float
    cold_starts: int
    claude_runs: int
    throughput_repeats: int
    approval_runs: int
    approval_questions: int
    interrupt_runs: int
    attach_bytes: int


FULL = Mode(
    name="full",
    repeats=3,
    throughput_bytes=200 * MB,
    latency_lines=500,
    partial_repeats=5,
    sessions=100,
    session_bytes=5 * MB,
    memory_bytes=1 << 30,
    idle_sessions=20,
    idle_seconds=60.0,
    idle_windows=3,
    idle_reference_seconds=10.0,
    kernel_bytes=100 * MB,
    kernel_probes=20,
    ingest_bytes=1 << 30,
    peer_tries=10,
    peer_first_tries=30,
    widget_lines=100_000,
    widget_seconds=5.0,
    cold_starts=3,
    claude_runs=41,
    throughput_repeats=7,
    approval_runs=5,
    approval_questions=40,
    interrupt_runs=10,
    attach_bytes=100 * MB,
)

SMOKE = Mode(
    name="smoke",
    repeats=1,
    throughput_bytes=4 * MB,
    latency_lines=30,
    partial_repeats=1,
    sessions=10,
    session_bytes=200_000,
    memory_bytes=20 * MB,
    idle_sessions=20,
    idle_seconds=2.0,
    idle_windows=1,
    idle_reference_seconds=1.0,
    kernel_bytes=4 * MB,
    kernel_probes=3,
    ingest_bytes=8 * MB,
    peer_tries=1,
    peer_first_tries=1,
    widget_lines=5_000,
    widget_seconds=1.0,
    cold_starts=1,
    claude_runs=1,
    throughput_repeats=1,
    approval_runs=1,
    approval_questions=3,
    interrupt_runs=1,
    attach_bytes=4 * MB,
)


@dataclass
class Row:
    """One line of the table. ``figure`` None means not measured (see ``note``)."""

    name: str
    figure: float | None
    unit: str
    target: str
    reference: str = ""
    note: str = ""
    samples: list[float] = field(default_factory=list)

    def figure_text(self) -> str:
        """The figure as printed: 3 significant digits, or the reason it is missing."""
        if self.figure is None:
            return self.note or "n/a"
        value = self.figure
        if value == 0 or abs(value) >= 100 or value.is_integer():
            return f"{value:.0f}"
        digits = max(0, 2 - math.floor(math.log10(abs(value))))
        return f"{value:.{digits}f}"


def median(values: Sequence[float]) -> float:
    """The median (the figure of every benchmark with repeats)."""
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on the sorted values."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def producer(*args: str) -> list[str]:
    """argv that runs the benchmark producer."""
    return [sys.executable, PRODUCER, *args]


class ServerProcess:
    """``python -m cc_executor_nb.server`` on 127.0.0.1:0 as a child, with psutil on it.

    ``prefix`` replaces the interpreter, e.g. to run the server under a profiler
    (``[py-spy, record, ..., --, python]``); ``ps`` is then the server itself, found
    among the wrapper's descendants, and ``stop`` signals the server, not the wrapper.
    ``variant`` names an entry of ``benchmarks.variants.VARIANTS``: the same server and
    flags, with some settings changed.
    """

    def __init__(
        self,
        *flags: str,
        prefix: Sequence[str] = (),
        variant: str | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.token = secrets.token_urlsafe(24)
        self._log = tempfile.TemporaryFile(prefix="ccexec-bench-server-")  # noqa: SIM115 - closed in stop()
        # The server keeps a run history under XDG_CACHE_HOME: give it a private one, so
        # that benchmarks neither read nor grow the user's.
        self._cache = tempfile.TemporaryDirectory(prefix="ccexec-bench-cache-")
        child_env = {**os.environ, "XDG_CACHE_HOME": self._cache.name, **(env or {})}
        server = ["-m", "cc_executor_nb.server"]
        if variant is not None:
            # The launcher keeps "-m cc_executor_nb.server" in its command line: the
            # server's own flags follow it, and _find_server recognises it.
            server = ["-m", "benchmarks.variants", variant, *server]
        argv = [*(prefix or [sys.executable]), *server, "--port", "0", f"--token={self.token}", *flags]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, text=True,
            env=child_env,
        )
        try:
            self.url = self._wait_listening(startup_timeout)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        self.ps = self._find_server()

    def _find_server(self) -> psutil.Process:
        wrapper = psutil.Process(self.proc.pid)
        for candidate in [*wrapper.children(recursive=True), wrapper]:
            with contextlib.suppress(psutil.Error):
                if "cc_executor_nb.server" in candidate.cmdline():
                    return candidate
        return wrapper

    def _wait_listening(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if not ready:
                if self.proc.poll() is not None:
                    break
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if match := _LISTENING.search(line):
                return match.group(1)
        raise RuntimeError("server did not start: " + "".join(seen) + self.log_text())

    def log_text(self) -> str:
        """What the server wrote to stderr so far."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def rss(self) -> int:
        """The server's resident memory in bytes."""
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        """User plus system CPU seconds the server process has used (not its children)."""
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Stop the server (SIGTERM: it kills its runs' groups), reap it, close files."""
        if self.proc.poll() is None:
            target = getattr(self, "ps", None)
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                if target is not None and target.pid != self.proc.pid:
                    target.send_signal(sig)
                else:
                    self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        self._cache.cleanup()
        return code


@contextlib.contextmanager
def run_server(
    *flags: str, prefix: Sequence[str] = (), variant: str | None = None, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A server child for the duration of a ``with`` block (arguments as ``ServerProcess``)."""
    server = ServerProcess(*flags, prefix=prefix, variant=variant, env=env)
    try:
        yield server
    finally:
        server.stop()


class RssSampler:
    """Samples a process's RSS in a thread; ``peak`` is the largest value seen."""

    def __init__(self, process: psutil.Process, interval: float = 0.01) -> None:
        self._process = process
        self._interval = interval
        self.baseline = int(process.memory_info().rss)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, int(self._process.memory_info().rss))

    @property
    def growth(self) -> int:
        """Peak minus baseline, in bytes."""
        return self.peak - self.baseline
