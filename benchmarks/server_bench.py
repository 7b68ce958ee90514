"""Benchmarks of the enhanced handler over loopback: server and client in two processes.

Each benchmark takes the Mode and returns table rows. The server is a fresh
``python -m cc_executor_nb.server`` child for every benchmark. The single measurements
they repeat (``stack_throughput``, ``stack_latency``, ``concurrent_run``) take any running
server, so that ``benchmarks.workloads`` can run them against variants of the server too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import json
import math
import os
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from cc_executor_nb.client import Client, connect
from cc_executor_nb.errors import CCExecError
from cc_executor_nb.events import Completed, Event, Heartbeat, Output

from .harness import (
    MB,
    MIB,
    PRODUCER,
    Mode,
    Row,
    RssSampler,
    ServerProcess,
    median,
    percentile,
    producer,
    run_server,
)
from .pipe_reference import producer_alone, read_pipe
from .producer import block as lines_block

__all__ = [
    "CONCURRENCY_INTERVAL",
    "ConcurrentRun",
    "LineCpu",
    "ProducedLines",
    "ThroughputRun",
    "concurrency",
    "concurrency_flags",
    "concurrent_run",
    "idle_cost",
    "job_attach",
    "latency",
    "memory",
    "partial_line",
    "pipe_latency",
    "stack_latency",
    "stack_throughput",
    "throughput",
    "wait_no_sessions",
]

RUN_TIMEOUT = 600.0
CONCURRENCY_INTERVAL = 1.0
"""Seconds between heartbeats while many sessions stream."""


# -- Helpers ------------------------------------------------------------------------


def light_producer(size: int) -> list[str]:
    """``size`` bytes of identical 80-byte lines from coreutils (``yes | head``).

    A hundred Python producers starting at once would cost the machine ~2.5 CPU
    seconds of interpreter start-up, competing with the server it is meant to load;
    ``sh``, ``yes`` and ``head`` start in about a millisecond.
    """
    line = "y" * 79
    return ["/bin/sh", "-c", f"yes {line} | head -c {int(size)}"]


async def _open(server: ServerProcess, **kwargs: Any) -> Client:
    return await connect(server.url, server.token, **kwargs)


async def _drain_run(client: Client, argv: list[str], on_output: Callable[[str], None]) -> Completed:
    """Execute ``argv`` and feed every stdout piece to ``on_output`` until completion."""
    await client.execute(argv=argv)
    async for event in client.events():
        if isinstance(event, Output):
            if event.stream == "stdout":
                on_output(event.data)
        elif isinstance(event, Completed):
            return event
    raise RuntimeError(f"connection closed during the run: {client.close_reason}")


def _stamps(data: str, now_ns: int, into: list[float]) -> None:
    """Latencies (ms) of every ``T <ns>`` line in ``data`` received at ``now_ns``."""
    for line in data.splitlines():
        if line.startswith("T "):
            into.append((now_ns - int(line[2:])) / 1e6)


def _ms(values: list[float]) -> str:
    return "/".join(f"{v:.3g}" for v in values)


# -- Throughput ---------------------------------------------------------------------


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


@dataclass(frozen=True)
class ThroughputRun:
    """One run of output through server and client: its rate and who was busy."""

    rate: float
    """MB/s, from the ``execute`` call to ``process.completed``."""
    server_busy: float
    """Server CPU seconds per second (a share of one core)."""
    client_busy: float
    """This process's CPU seconds per second."""

    @property
    def server_ms_per_mb(self) -> float:
        """Server CPU milliseconds per MB of output: less sensitive to outside load than the rate."""
        return 1000 * self.server_busy / self.rate

    @property
    def client_ms_per_mb(self) -> float:
        """This process's CPU milliseconds per MB of output."""
        return 1000 * self.client_busy / self.rate


class ProducedLines:
    """Checks that the text received is the producer's ``lines`` output, as it was sent.

    The producer repeats one block of numbered lines, so a piece is compared, in place (no
    copy, no hashing), with the same stretch of that block written twice (a piece may wrap
    around its end). Every piece's first and last ``width`` bytes are compared, which
    catches a piece lost, repeated or out of order, and every ``sample``-th piece whole, so
    that the check costs the client little CPU (figures in benchmarks/README.md).
    """

    def __init__(self, width: int = 80, sample: int = 16) -> None:
        block = lines_block(width).decode("ascii")
        self._period, self._twice, self._width, self._sample = len(block), block * 2, width, sample
        self.received = 0
        self.pieces = 0
        self.first_difference: int | None = None
        """The offset of the first byte found to differ from what was sent, None while none does."""

    def feed(self, data: str) -> None:
        """Take the next piece of stdout."""
        if self.first_difference is None:
            whole = self.pieces % self._sample == 0
            ends = ((0, len(data)),) if whole or len(data) <= 2 * self._width else (
                (0, self._width), (len(data) - self._width, len(data)))
            for first, last in ends:
                self._compare(data, first, last)
        self.pieces += 1
        self.received += len(data)  # ASCII: characters are bytes

    def _compare(self, data: str, first: int, last: int) -> None:
        at = first
        while at < last and self.first_difference is None:
            start = (self.received + at) % self._period
            length = min(last - at, self._period)
            piece = data if length == len(data) else data[at : at + length]
            if not self._twice.startswith(piece, start):
                sent = self._twice[start : start + length]
                self.first_difference = self.received + at + _same_until(piece, sent)
            at += length

    def check(self, size: int) -> None:
        """RuntimeError unless exactly ``size`` bytes came and none checked differs from the one sent."""
        if self.received != size:
            raise RuntimeError(f"client got {self.received} of {size} bytes")
        if self.first_difference is not None:
            raise RuntimeError(f"client got other bytes than were sent, from byte {self.first_difference}")


def _same_until(received: str, sent: str) -> int:
    """The index of the first character where ``received`` and ``sent`` differ (on a failure only)."""
    return next((i for i, (a, b) in enumerate(zip(received, sent, strict=False)) if a != b), len(received))


async def stack_throughput(server: ServerProcess, size: int) -> ThroughputRun:
    """``size`` bytes of 80-byte lines through server and client (raises unless they all
    arrive, each the byte sent)."""
    lines = ProducedLines()
    async with await _open(server) as client:
        cpu_server, cpu_client = server.cpu_seconds(), _own_cpu()
        started = time.perf_counter()
        done = await asyncio.wait_for(_drain_run(client, producer("lines", str(size)), lines.feed), RUN_TIMEOUT)
        seconds = time.perf_counter() - started
        cpu_server, cpu_client = server.cpu_seconds() - cpu_server, _own_cpu() - cpu_client
    if done.status != "completed":
        raise RuntimeError(f"throughput run ended {done.status}")
    lines.check(size)
    return ThroughputRun(size / MB / seconds, cpu_server / seconds, cpu_client / seconds)


async def throughput(mode: Mode) -> list[Row]:
    """200 MB of 80-byte lines: through server and client vs a plain asyncio pipe read."""
    size = mode.throughput_bytes
    argv = producer("lines", str(size))
    stack, pipe, alone, server_cpu, client_cpu = [], [], [], [], []
    with run_server() as server:
        for _ in range(mode.throughput_repeats):
            alone.append(size / MB / producer_alone(argv))
            got, seconds = await read_pipe(argv)
            if got != size:
                raise RuntimeError(f"pipe read got {got} of {size} bytes")
            pipe.append(size / MB / seconds)
            run = await stack_throughput(server, size)
            stack.append(run.rate)
            server_cpu.append(run.server_busy)
            client_cpu.append(run.client_busy)
    ratios = [s / p for s, p in zip(stack, pipe, strict=True)]
    ref = (f"pipe read {median(pipe):.0f} MB/s; producer alone {median(alone):.0f} MB/s; "
           f"busy: server {median(server_cpu):.0%}, client {median(client_cpu):.0%} of a core")
    return [
        Row("throughput", median(stack), "MB/s", ">= 250", ref, samples=stack),
        Row("throughput / pipe read", median(ratios), "ratio", ">= 0.5",
            f"pipe read {median(pipe):.0f} MB/s", samples=ratios),
    ]


# -- Latency ------------------------------------------------------------------------


CPU_WARMUP = 100
"""Stamped lines a latency run lets pass before its CPU clock starts (the run's start)."""


@dataclass
class LineCpu:
    """CPU seconds of server and client between the CPU_WARMUP-th and the last line."""

    lines: int = 0
    server: float = 0.0
    client: float = 0.0
    _start: tuple[float, float] | None = None

    def mark(self, server: ServerProcess, seen: int, total: int) -> None:
        """Called with the count of lines received so far: starts and stops the clocks."""
        if self._start is None and seen >= CPU_WARMUP:
            self._start = (_cpu_of(server.ps), _cpu_of(psutil.Process()))
            self.lines = -seen
        elif self._start is not None and seen >= total and self.lines <= 0:
            self.server = _cpu_of(server.ps) - self._start[0]
            self.client = _cpu_of(psutil.Process()) - self._start[1]
            self.lines += seen

    def per_line_us(self) -> tuple[float, float]:
        """(server, client) microseconds of CPU per line in the steady state."""
        return 1e6 * self.server / max(self.lines, 1), 1e6 * self.client / max(self.lines, 1)


def _cpu_of(process: psutil.Process) -> float:
    """CPU seconds of ``process``: to the nanosecond from its threads' ``schedstat`` (Linux;
    ``cpu_times`` counts clock ticks, 10 ms: 20 us a line over 500 lines), else psutil's."""
    try:
        tasks = os.listdir(f"/proc/{process.pid}/task")
        return sum(_schedstat(process.pid, task) for task in tasks) / 1e9
    except OSError:
        times = process.cpu_times()
        return float(times.user + times.system)


def _schedstat(pid: int, task: str) -> int:
    try:
        with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
            return int(stat.read().split()[0])
    except FileNotFoundError:
        return 0  # the thread ended meanwhile


async def stack_latency(server: ServerProcess, lines: int, cpu: LineCpu | None = None) -> list[float]:
    """A stamped line every 10 ms through server and client: each line's latency, ms
    (``cpu``: also the CPU both spend per line once the run is under way)."""
    samples: list[float] = []

    def on_event(event: Event) -> None:
        if isinstance(event, Output):
            _stamps(event.data, time.monotonic_ns(), samples)
            if cpu is not None and lines > CPU_WARMUP:
                cpu.mark(server, len(samples), lines)

    async with await _open(server) as client:
        client.add_listener(on_event)
        await asyncio.wait_for(_drain_run(client, producer("ticker", str(lines), "0.01"), lambda _: None),
                               RUN_TIMEOUT)
    if len(samples) != lines:
        raise RuntimeError(f"latency run: {len(samples)} of {lines} stamps arrived")
    return samples


async def pipe_latency(lines: int) -> list[float]:
    """The same stamped lines through a plain pipe read: each line's latency, ms."""
    samples: list[float] = []
    pending = bytearray()

    def on_data(data: bytes, now_ns: int) -> None:
        pending.extend(data)
        cut = pending.rfind(b"\n") + 1
        _stamps(pending[:cut].decode(), now_ns, samples)
        del pending[:cut]

    await read_pipe(producer("ticker", str(lines), "0.01"), on_data)
    return samples


async def latency(mode: Mode) -> list[Row]:
    """A line every 10 ms, stamped by the child: write to the client's receipt."""
    p50, p99, ref50, ref99 = [], [], [], []
    with run_server() as server:
        for _ in range(mode.repeats):
            direct = await pipe_latency(mode.latency_lines)
            ref50.append(percentile(direct, 50))
            ref99.append(percentile(direct, 99))
            samples = await stack_latency(server, mode.latency_lines)
            p50.append(percentile(samples, 50))
            p99.append(percentile(samples, 99))
    per_run = f"{mode.latency_lines} lines x {mode.repeats} runs"
    return [
        Row("latency p50", median(p50), "ms", "<= 0.5",
            f"pipe read p50 {median(ref50):.3f} ms; {per_run}", samples=p50),
        Row("latency p99", median(p99), "ms", "<= 1",
            f"pipe read p99 {median(ref99):.3f} ms; runs {_ms(p99)}", samples=p99),
    ]


# -- Partial line -------------------------------------------------------------------


async def _stack_partial(server: ServerProcess) -> float:
    seen: list[float] = []

    def on_event(event: Event) -> None:
        if isinstance(event, Output) and not seen and "Password " in event.data:
            stamp = int(event.data.split("Password ", 1)[1].split(":", 1)[0])
            seen.append((time.monotonic_ns() - stamp) / 1e6)

    async with await _open(server) as client:
        client.add_listener(on_event)
        await asyncio.wait_for(_drain_run(client, producer("prompt", "0.3"), lambda _: None), RUN_TIMEOUT)
    if not seen:
        raise RuntimeError("the prompt never reached the client")
    return seen[0]


async def _pipe_partial() -> float:
    seen: list[float] = []

    def on_data(data: bytes, now_ns: int) -> None:
        if not seen and b": " in data:
            seen.append((now_ns - int(data.split(b" ")[1].rstrip(b":"))) / 1e6)

    await read_pipe(producer("prompt", "0.3"), on_data)
    return seen[0]


async def partial_line(mode: Mode) -> list[Row]:
    """A prompt without a newline: time until the client sees it."""
    stack, direct = [], []
    with run_server() as server:
        for _ in range(mode.partial_repeats):
            direct.append(await _pipe_partial())
            stack.append(await _stack_partial(server))
    return [Row("partial line", median(stack), "ms", "<= 5",
                f"pipe read {median(direct):.2f} ms; the server sends a partial line once it has read "
                "all the pipe held and 1 ms passed",
                samples=stack)]


# -- Concurrency --------------------------------------------------------------------


@dataclass
class _Tracker:
    """Listener state for one of many concurrent sessions."""

    received: int = 0
    beats: list[tuple[float, float]] = field(default_factory=list)  # (server stamp, receipt)
    reconnects: int = 0
    failure: str | None = None
    done: asyncio.Future[Completed] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def __call__(self, event: Event) -> None:
        if isinstance(event, Output):
            self.received += len(event.data)
        elif isinstance(event, Heartbeat):
            self.beats.append((float(event.params["timestamp"]), time.time()))
        elif isinstance(event, Completed) and not self.done.done():
            self.done.set_result(event)
        elif event.method == "client.reconnecting":
            self.reconnects += 1
        elif event.method == "client.disconnected" and not self.done.done():
            self.failure = "client gave up reconnecting"
            self.done.set_exception(RuntimeError(self.failure))


async def _open_tracked(server: ServerProcess) -> tuple[Client, _Tracker]:
    client = await _open(server, buffer_events=False)
    tracker = _Tracker()
    client.add_listener(tracker)  # before any await: no heartbeat can slip past
    return client, tracker


def _lateness(
    beats: list[tuple[float, float]], sent: float, answered: float, interval: float
) -> tuple[list[float], float]:
    """(lateness of each beat after the run started, longest silence across ``execute``), in ms.

    A beat's lateness is how much longer than ``interval`` the client waited for it since
    the previous beat (receipt times; 0 when on time): what a client watching heartbeats
    sees. Only pairs of beats stamped after ``answered`` count, because ``execute``
    restarts the session's heartbeat timer somewhere between ``sent`` and ``answered``,
    which legitimately stretches one gap; the gap across it (last beat before ``sent`` to
    first after ``answered``) is returned apart, minus one interval.
    """
    before = [recv for stamp, recv in beats if stamp < sent]
    after = [recv for stamp, recv in beats if stamp > answered]
    late = [max(0.0, (b - a - interval) * 1e3) for a, b in itertools.pairwise(after)]
    across = (after[0] - before[-1] - interval) * 1e3 if before and after else float("nan")
    return late, across


def _stamp_lateness(beats: list[tuple[float, float]], answered: float, interval: float) -> list[float]:
    """Like ``_lateness`` but from the server's own stamps: how late its timer fired."""
    stamps = [stamp for stamp, _ in beats if stamp > answered]
    return [max(0.0, (b - a - interval) * 1e3) for a, b in itertools.pairwise(stamps)]


async def _execute_timed(client: Client, tracker: _Tracker, argv: list[str]) -> float:
    """Start the run; the time its reply arrived. A failed execute fails the tracker."""
    try:
        await client.execute(argv=argv)
    except CCExecError as exc:
        tracker.failure = f"execute failed: {type(exc).__name__}"
        if not tracker.done.done():
            tracker.done.set_exception(RuntimeError(tracker.failure))
    return time.time()


@dataclass
class ConcurrentRun:
    """What one concurrent run measured (times in ms unless named otherwise)."""

    exact: int
    """Sessions whose run completed with every byte."""
    lateness: list[float]
    """Each heartbeat gap beyond the interval after the ``execute`` replies, as clients saw it."""
    stamp_lateness: list[float]
    """The same from the server's own heartbeat timestamps."""
    across: list[float]
    """Per session, the gap spanning its ``execute`` beyond one interval."""
    answered_after: float
    """Seconds from sending the ``execute`` requests to the last reply."""
    rate: float
    """Aggregate MB/s."""
    reconnects: int
    failures: collections.Counter[str]
    server_busy: float
    client_busy: float


def concurrency_flags(mode: Mode) -> list[str]:
    """Server flags for ``concurrent_run``: the beat interval and room for every session."""
    return ["--heartbeat-interval", f"{CONCURRENCY_INTERVAL:g}", "--max-sessions", str(mode.sessions + 5)]


async def concurrent_run(server: ServerProcess, mode: Mode, interval: float = CONCURRENCY_INTERVAL) -> ConcurrentRun:
    """``mode.sessions`` sessions each stream ``mode.session_bytes`` at once (see ``concurrency_flags``)."""
    opened = await asyncio.gather(*(_open_tracked(server) for _ in range(mode.sessions)))
    try:
        # Every session gets a beat on the old schedule first (the reference phase).
        await asyncio.sleep(interval * 1.2)
        argv = light_producer(mode.session_bytes)
        sent = time.time()
        started = time.perf_counter()
        cpu_server, cpu_client = server.cpu_seconds(), _own_cpu()
        answered = await asyncio.gather(*(_execute_timed(client, t, argv) for client, t in opened))
        results = await asyncio.wait_for(asyncio.gather(*(t.done for _, t in opened), return_exceptions=True),
                                         RUN_TIMEOUT)
        seconds = time.perf_counter() - started
        cpu_server, cpu_client = server.cpu_seconds() - cpu_server, _own_cpu() - cpu_client
        # A run shorter than an interval (smoke mode) still needs a beat or two to measure.
        await asyncio.sleep(max(0.0, sent + 2.2 * interval - time.time()))
    finally:
        await asyncio.gather(*(client.close() for client, _ in opened), return_exceptions=True)
    exact = sum(1 for (_, t), r in zip(opened, results, strict=True)
                if isinstance(r, Completed) and r.status == "completed" and t.received == mode.session_bytes)
    failures = collections.Counter(t.failure for _, t in opened if t.failure)
    lateness, stamp_lateness, across = [], [], []
    for (_, tracker), at in zip(opened, answered, strict=True):
        late, gap = _lateness(tracker.beats, sent, at, interval)
        lateness.extend(late)
        stamp_lateness.extend(_stamp_lateness(tracker.beats, at, interval))
        across.append(gap)
    return ConcurrentRun(exact, lateness, stamp_lateness, across, max(answered) - sent,
                       mode.sessions * mode.session_bytes / MB / seconds, sum(t.reconnects for _, t in opened),
                       failures, cpu_server / seconds, cpu_client / seconds)


async def wait_no_sessions(server: ServerProcess, timeout: float = 30.0) -> float:
    """Poll ``/health`` until the server holds no session; the seconds that took."""
    started = time.perf_counter()
    url = server.url.replace("ws://", "http://", 1).rsplit("/", 1)[0] + "/health"
    while True:
        with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
            if json.load(response)["sessions"] == 0:
                return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"sessions still open {timeout:g} s after their clients closed")
        await asyncio.sleep(0.02)


async def concurrency(mode: Mode) -> list[Row]:
    """Many sessions streaming at once, heartbeat every second: bytes exact, beats on time."""
    interval = CONCURRENCY_INTERVAL
    runs: list[ConcurrentRun] = []
    with run_server(*concurrency_flags(mode)) as server:
        settled: list[float] = []
        for repeat in range(mode.repeats):
            if repeat:
                # The last repeat's sessions end on the server just after their clients
                # close: wait for them, or the next 100 would find the session cap full.
                settled.append(await wait_no_sessions(server))
            runs.append(await concurrent_run(server, mode, interval))
    exact = [float(r.exact) for r in runs]
    total = f"{mode.sessions} x {mode.session_bytes / MB:g} MB"
    ref = (f"{total}; aggregate {median([r.rate for r in runs]):.0f} MB/s; busy: server "
           f"{median([r.server_busy for r in runs]):.0%}, client {median([r.client_busy for r in runs]):.0%} "
           f"of a core; all {mode.sessions} execute replies took {median([r.answered_after for r in runs]):.2f} s; "
           f"reconnects {sum(r.reconnects for r in runs)}")
    if settled:
        ref += f"; sessions gone {max(settled) * 1e3:.0f} ms after the last close"
    failures = sum((r.failures for r in runs), collections.Counter())
    if failures:
        ref += "; " + ", ".join(f"{n} x {why}" for why, n in failures.items())
    rows = [Row("concurrency sessions exact", min(exact), "sessions", f"= {mode.sessions}", ref, samples=exact)]
    p99s = [percentile(r.lateness, 99) for r in runs if r.lateness]
    if p99s:
        across = [a for r in runs for a in r.across if not math.isnan(a)]
        beats = median([len(r.lateness) for r in runs])
        across_text = f"; longest beat gap across execute +{max(across):.0f} ms" if across else ""
        stamped = median([percentile(r.stamp_lateness, 99) for r in runs if r.stamp_lateness] or [float("nan")])
        rows.append(Row("concurrency heartbeat p99", median(p99s), "ms late", "<= 100",
                        f"runs {_ms(p99s)}, worst gap +{max(max(r.lateness) for r in runs if r.lateness):.0f}; "
                        f"client-seen gap beyond the 1 s interval, {beats:.0f} gaps/run; server timer p99 "
                        f"{stamped:.0f} ms{across_text}", samples=p99s))
    else:
        rows.append(Row("concurrency heartbeat p99", None, "ms late", "<= 100", note="no heartbeat measured"))
    return rows


# -- Memory -------------------------------------------------------------------------


def _producer_gone_at(process: psutil.Process, stop: threading.Event) -> Callable[[], float | None]:
    """A poller (run in a thread) returning when the server's producer child exited.

    Only children running ``producer.py`` count: the server keeps other children (its
    orphan watchdog) for its whole life.
    """

    def producers() -> bool:
        found = False
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                found = found or PRODUCER in child.cmdline()
        return found

    def poll() -> float | None:
        seen = False
        while not stop.is_set():
            try:
                alive = producers()
            except psutil.Error:
                return None
            seen = seen or alive
            if seen and not alive:
                return time.perf_counter()
            time.sleep(0.05)
        return None

    return poll


def _spool_bytes(pid: int) -> int:
    """Bytes in the server's temporary files (output spool, replay log), deleted or not."""
    total = 0
    fd_dir = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                if "ccexec-" in os.readlink(f"{fd_dir}/{fd}"):
                    total += os.stat(f"{fd_dir}/{fd}").st_size
    return total


class _DiskSampler(threading.Thread):
    """Peak of ``_spool_bytes`` while running."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, _spool_bytes(self.pid))


async def memory(mode: Mode) -> list[Row]:
    """A child writes far more than the client reads (10 MB/s): server RSS growth."""
    size, rate = mode.memory_bytes, 10 * MB
    received = 0
    with run_server() as server:
        async with await _open(server, max_events=16) as client:
            await asyncio.sleep(0.2)
            stop = threading.Event()
            disk = _DiskSampler(server.ps.pid)
            disk.start()
            with RssSampler(server.ps) as rss:
                started = time.perf_counter()
                writer_done = asyncio.ensure_future(asyncio.to_thread(_producer_gone_at(server.ps, stop)))
                await client.execute(argv=producer("lines", str(size)))
                async for event in client.events():
                    if isinstance(event, Output):
                        received += len(event.data)
                        ahead = received / rate - (time.perf_counter() - started)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
                    elif isinstance(event, Completed):
                        break
                seconds = time.perf_counter() - started
                stop.set()
                disk.stop.set()
                finished_at = await writer_done
    if received != size:
        raise RuntimeError(f"memory run: client got {received} of {size} bytes")
    wrote = f"child done in {finished_at - started:.1f} s" if finished_at else "child exit not seen"
    ref = (f"baseline RSS {rss.baseline / MIB:.0f} MiB; {size / MIB:.0f} MiB read in {seconds:.0f} s "
           f"({received / MB / seconds:.1f} MB/s); {wrote}; temp files peaked at {disk.peak / MIB:.0f} MiB")
    return [Row("memory RSS growth", rss.growth / MIB, "MiB", "<= 64", ref)]


# -- Idle cost ----------------------------------------------------------------------


def _count_beat(beats: list[int], index: int, event: Event) -> None:
    if isinstance(event, Heartbeat):
        beats[index] += 1


async def idle_cost(mode: Mode) -> list[Row]:
    """Idle sessions with a heartbeat every second: the server's CPU share."""
    interval = 1.0
    with run_server("--heartbeat-interval", str(interval)) as server:
        await asyncio.sleep(0.5)
        before = server.cpu_seconds()
        await asyncio.sleep(mode.idle_reference_seconds)
        empty = (server.cpu_seconds() - before) / mode.idle_reference_seconds * 100
        beats: list[int] = []
        clients = [await _open(server, buffer_events=False) for _ in range(mode.idle_sessions)]
        for index, client in enumerate(clients):
            beats.append(0)
            client.add_listener(functools.partial(_count_beat, beats, index))
        try:
            await asyncio.sleep(1.0)
            window = mode.idle_seconds / mode.idle_windows
            shares = []
            for _ in range(mode.idle_windows):
                before = server.cpu_seconds()
                await asyncio.sleep(window)
                shares.append((server.cpu_seconds() - before) / window * 100)
        finally:
            for client in clients:
                await client.close()
    ref = (f"no sessions {empty:.2f}%; {mode.idle_sessions} sessions x {mode.idle_seconds:g} s, "
           f"{median(beats):.0f} beats per session")
    return [Row("idle CPU", median(shares), "% of a core", "<= 1", ref, samples=shares)]


# -- Job attach ---------------------------------------------------------------------


async def _durable_run(client: Client, size: int) -> tuple[str, float]:
    """A durable job writing ``size`` bytes, followed live to its end: (job id, MB/s)."""
    received = 0

    def count(data: str) -> None:
        nonlocal received
        received += len(data)

    started = time.perf_counter()
    await client.execute(argv=producer("lines", str(size)), durable=True, label="bench attach")
    async for event in client.events():
        if isinstance(event, Output) and event.stream == "stdout":
            count(event.data)
        elif isinstance(event, Completed):
            break
    seconds = time.perf_counter() - started
    if received != size or client.job_id is None:
        raise RuntimeError(f"durable run: {received} of {size} bytes")
    return client.job_id, size / MB / seconds


async def _replay(server: ServerProcess, job_id: str, size: int) -> float:
    """Attach to the finished job on a fresh connection: seconds until its replay ends, bytes checked."""
    received = 0
    async with await _open(server) as client:
        started = time.perf_counter()
        await client.attach(job_id)
        async for event in client.events():
            if isinstance(event, Output) and event.stream == "stdout":
                received += len(event.data)
            elif isinstance(event, Completed):
                break
        seconds = time.perf_counter() - started
    if received != size:
        raise RuntimeError(f"replay: {received} of {size} bytes")
    return seconds


async def job_attach(mode: Mode) -> list[Row]:
    """Attach to a finished durable job: how fast its output replays (from the log on disk)."""
    size = mode.attach_bytes
    replays: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ccexec-bench-jobs-") as jobs, run_server("--jobs-dir", jobs) as server:
        async with await _open(server) as client:
            job_id, live = await asyncio.wait_for(_durable_run(client, size), RUN_TIMEOUT)
        for _ in range(mode.repeats):
            seconds = await asyncio.wait_for(_replay(server, job_id, size), RUN_TIMEOUT)
            replays.append(size / MB / seconds)
    return [Row("job attach replay", median(replays), "MB/s", ">= 200",
                f"{size / MB:.0f} MB job; followed live at {live:.0f} MB/s; replays {_ms(replays)} MB/s",
                samples=replays)]
