"""Benchmarks in a real Jupyter kernel, driven with jupyter_client.

They need the notebook extension (``%load_ext cc_executor_nb`` and ``%ccexec``); when
``cc_executor_nb.load_ipython_extension`` cannot be imported, their rows read
"n/a (extension missing)". Kernel messages carry the kernel's send time in
``header.date``; those stamps are compared with this process's ``time.time()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import json
import os
import queue
import re
import shlex
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import psutil

from .harness import BENCH_DIR, MB, MIB, Mode, Row, RssSampler, median, percentile, producer

__all__ = ["Kernel", "cold_start", "extension_missing", "ingest", "responsiveness", "widget_traffic"]

REPLY_TIMEOUT = 120.0
RUN_NAME = "_ccx_bench_run"
# The view shows the last CCExec.max_output_chars characters (20,000 by default).
VIEW_CHARS = 20_000
_HI = re.compile(r"(?:^|[>\n])hi\n")


def extension_missing() -> str | None:
    """Why the kernel benchmarks cannot run, or None when they can."""
    try:
        package = importlib.import_module("cc_executor_nb")
        _ = package.load_ipython_extension
    except (ImportError, AttributeError):
        return "n/a (extension missing)"
    except Exception as exc:  # a half-written module must not stop the suite
        return f"n/a (extension import failed: {type(exc).__name__})"
    return None


def _stamp(message: dict[str, Any]) -> float:
    date = message["header"]["date"]
    return float(date.timestamp()) if hasattr(date, "timestamp") else time.time()


def message_bytes(message: dict[str, Any]) -> int:
    """Size of a message's content and binary buffers, as sent to the front end."""
    content = len(json.dumps(message["content"], default=str))
    return content + sum(len(buffer) for buffer in message.get("buffers") or [])


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class Kernel:
    """A fresh ipykernel (this interpreter) with a blocking client; iopub is kept."""

    def __init__(self) -> None:
        from jupyter_client.manager import KernelManager

        self._log = tempfile.TemporaryFile(prefix="ccexec-bench-kernel-")  # noqa: SIM115 - closed in close()
        # The in-kernel server keeps a run history under XDG_CACHE_HOME: a private one.
        self._cache = tempfile.TemporaryDirectory(prefix="ccexec-bench-cache-")
        env = {**os.environ, "XDG_CACHE_HOME": self._cache.name}
        self.km = KernelManager(kernel_name="python3")
        started = time.perf_counter()
        self.km.start_kernel(cwd=str(BENCH_DIR.parent), env=env, stdout=self._log, stderr=self._log)
        self.kc = self.km.blocking_client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=60)
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.perf_counter() - started
        self.iopub: list[dict[str, Any]] = []

    @property
    def process(self) -> psutil.Process:
        """The kernel process (for its memory)."""
        provisioner = self.km.provisioner
        pid = getattr(getattr(provisioner, "process", None), "pid", None)
        if pid is None:
            raise RuntimeError("cannot find the kernel's pid")
        return psutil.Process(pid)

    def value(self, expression: str) -> str:
        """The ``text/plain`` of ``expression`` evaluated in the kernel (not counted as a cell)."""
        content, _ = self.execute("pass", user_expressions={"v": expression})
        result = content["user_expressions"]["v"]
        if result.get("status") != "ok":
            raise RuntimeError(f"cannot read {expression}: {result.get('evalue')}")
        return str(result["data"]["text/plain"])

    def close(self) -> None:
        """Stop the channels and the kernel process."""
        with contextlib.suppress(Exception):
            self.kc.stop_channels()
        with contextlib.suppress(Exception):
            self.km.shutdown_kernel(now=True)
        self._log.close()
        self._cache.cleanup()

    def log_text(self) -> str:
        """What the kernel wrote to stdout and stderr."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def send(self, code: str, **kwargs: Any) -> tuple[str, float]:
        """Send an execute_request; (msg_id, time.time() just before sending)."""
        sent = time.time()
        return self.kc.execute(code, store_history=False, **kwargs), sent

    def reply(self, msg_id: str, timeout: float = REPLY_TIMEOUT) -> tuple[dict[str, Any], float]:
        """The execute_reply to ``msg_id`` and the time.time() it was read."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            if message["parent_header"].get("msg_id") == msg_id:
                return message, time.time()

    def execute(self, code: str, timeout: float = REPLY_TIMEOUT, **kwargs: Any) -> tuple[dict[str, Any], float]:
        """Run ``code``; (reply content, seconds from send to reply). Raises on error."""
        msg_id, sent = self.send(code, **kwargs)
        reply, received = self.reply(msg_id, timeout)
        content = reply["content"]
        if content.get("status") != "ok":
            raise RuntimeError(f"{code!r} failed: {content.get('ename')}: {content.get('evalue')}")
        return content, received - sent

    def drain(self, until_idle: str | None = None, timeout: float = REPLY_TIMEOUT) -> list[dict[str, Any]]:
        """Read iopub: everything queued now, or up to the idle status of ``until_idle``."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            wait = 0.0 if until_idle is None else max(0.01, deadline - time.monotonic())
            try:
                message = self.kc.get_iopub_msg(timeout=wait)
            except queue.Empty:
                if until_idle is None or time.monotonic() >= deadline:
                    break
                continue
            got.append(message)
            if (until_idle is not None and message["msg_type"] == "status"
                    and message["content"].get("execution_state") == "idle"
                    and message["parent_header"].get("msg_id") == until_idle):
                break
        self.iopub.extend(got)
        return got


@contextlib.contextmanager
def kernel() -> Iterator[Kernel]:
    """A fresh kernel for the duration of a ``with`` block."""
    k = Kernel()
    try:
        yield k
    finally:
        k.close()


def _ccexec(argv: list[str], *options: str) -> str:
    command = shlex.join(argv)
    if '"' in command:
        raise ValueError(f"cannot quote {command!r} for the magic line")
    return " ".join(['%ccexec -c', f'"{command}"', *options])


def _loaded(k: Kernel) -> float:
    """Load the extension; seconds it took."""
    _, seconds = k.execute("%load_ext cc_executor_nb")
    return seconds


# -- Kernel responsiveness ----------------------------------------------------------


def _run_done(k: Kernel) -> bool:
    content, _ = k.execute("pass", user_expressions={"done": f"{RUN_NAME}.done"})
    result = content["user_expressions"]["done"]
    if result.get("status") != "ok":
        raise RuntimeError(f"cannot read {RUN_NAME}.done: {result.get('evalue')}")
    return bool(result["data"]["text/plain"] == "True")


def _probe_while_streaming(mode: Mode) -> tuple[list[float], list[float], float]:
    """(probe replies while streaming, idle probe replies, run seconds), all in ms/s."""
    with kernel() as k:
        _loaded(k)
        k.execute(_ccexec(["echo", "warm"], "--wait"))  # loop thread and server now run
        idle = [k.execute("1+1")[1] * 1e3 for _ in range(5)]
        started = time.perf_counter()
        k.execute(_ccexec(producer("lines", str(mode.kernel_bytes)), "-o", RUN_NAME))
        busy: list[float] = []
        deadline = time.monotonic() + REPLY_TIMEOUT * 2
        while time.monotonic() < deadline:
            for _ in range(5):
                busy.append(k.execute("1+1")[1] * 1e3)
                time.sleep(0.02)
            k.drain()
            if _run_done(k):
                break
        else:
            raise RuntimeError("the run did not finish in time")
        seconds = time.perf_counter() - started
        status = k.execute("pass", user_expressions={"s": f"{RUN_NAME}.status, len({RUN_NAME}.stdout)"})[0]
        summary = status["user_expressions"]["s"]["data"]["text/plain"]
        if summary != f"('completed', {mode.kernel_bytes})":
            raise RuntimeError(f"run ended as {summary}")
    return busy, idle, seconds


async def responsiveness(mode: Mode) -> list[Row]:
    """While a run streams into the widget, a ``1+1`` cell: time to its reply."""
    missing = extension_missing()
    if missing:
        return [Row("kernel 1+1 while streaming", None, "ms", "<= 50", note=missing)]
    busy, idle, seconds = await asyncio.to_thread(_probe_while_streaming, mode)
    ref = (f"idle {median(idle):.1f} ms; p90 {percentile(busy, 90):.1f}, max {max(busy):.1f} ms "
           f"over {len(busy)} probes; {mode.kernel_bytes / MB:g} MB run took {seconds:.1f} s")
    return [Row("kernel 1+1 while streaming", median(busy), "ms", "<= 50", ref, samples=busy)]


# -- Kernel ingest ------------------------------------------------------------------


def _ingest_run(mode: Mode) -> dict[str, Any]:
    """One big run into a ``Run`` in a fresh kernel, with ``1+1`` probes and RSS sampling."""
    size = mode.ingest_bytes
    with kernel() as k:
        _loaded(k)
        k.execute(_ccexec(["echo", "warm"], "--wait"))
        idle = [k.execute("1+1")[1] * 1e3 for _ in range(5)]
        k.drain()
        probes: list[float] = []
        with RssSampler(k.process) as rss:
            started = time.monotonic()
            k.execute(_ccexec(producer("lines", str(size)), "-o", RUN_NAME))
            deadline = started + REPLY_TIMEOUT * 5
            while time.monotonic() < deadline:
                for _ in range(5):
                    probes.append(k.execute("1+1")[1] * 1e3)
                    time.sleep(0.02)
                k.drain()
                if _run_done(k):
                    break
            else:
                raise RuntimeError("the ingest run did not finish in time")
        # The Run's own clock (CLOCK_MONOTONIC, shared): when process.completed was folded in.
        ended = float(k.value(f"{RUN_NAME}.state.ended_at"))
        summary = k.value(f"({RUN_NAME}.status, {RUN_NAME}.output.chars['stdout'])")
        if summary != f"('completed', {size})":
            raise RuntimeError(f"ingest run ended as {summary}")
    return {"rate": size / MB / (ended - started), "seconds": ended - started, "growth": rss.growth / MIB,
            "baseline": rss.baseline / MIB, "probes": probes, "idle": idle}


async def ingest(mode: Mode) -> list[Row]:
    """1 GiB from a ``-c`` run into a ``Run`` in a real kernel: rate, kernel RSS growth, ``1+1`` meanwhile."""
    missing = extension_missing()
    rows = [("kernel ingest", "MB/s", ">= 200"), ("kernel ingest RSS growth", "MiB", "<= 64"),
            ("kernel ingest 1+1 max", "ms", "<= 50")]
    if missing:
        return [Row(name, None, unit, target, note=missing) for name, unit, target in rows]
    run = await asyncio.to_thread(_ingest_run, mode)
    probes: list[float] = run["probes"]
    size = f"{mode.ingest_bytes / MIB:.0f} MiB"
    return [
        Row("kernel ingest", run["rate"], "MB/s", ">= 200",
            f"{size} in {run['seconds']:.1f} s, from the cell's request to process.completed in the Run; "
            f"widget shown"),
        Row("kernel ingest RSS growth", run["growth"], "MiB", "<= 64",
            f"kernel RSS {run['baseline']:.0f} MiB before the run, sampled every 10 ms"),
        Row("kernel ingest 1+1 max", max(probes), "ms", "<= 50",
            f"median {median(probes):.1f}, p90 {percentile(probes, 90):.1f} ms over {len(probes)} probes; "
            f"idle {median(run['idle']):.1f} ms", samples=probes),
    ]


# -- Widget traffic -----------------------------------------------------------------


def _peak_per_second(stamps: list[float]) -> int:
    """The most stamps in any one-second window."""
    ordered, best, start = sorted(stamps), 0, 0
    for end, stamp in enumerate(ordered):
        while stamp - ordered[start] > 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def _bursts(stamps: list[float], gap: float = 0.02) -> int:
    """How many renders: groups of messages less than ``gap`` seconds apart."""
    ordered = sorted(stamps)
    return sum(1 for a, b in itertools.pairwise([float("-inf"), *ordered]) if b - a > gap)


def _widget_run(mode: Mode) -> dict[str, float]:
    size = mode.widget_lines * 80
    with kernel() as k:
        _loaded(k)
        k.execute(_ccexec(["echo", "warm"], "--wait"))
        k.drain()
        argv = producer("lines", str(size), "80", str(mode.widget_seconds))
        msg_id, sent = k.send(_ccexec(argv, "--wait", "-o", RUN_NAME))
        reply, received = k.reply(msg_id)
        if reply["content"].get("status") != "ok":
            raise RuntimeError(f"widget run failed: {reply['content'].get('evalue')}")
        messages = k.drain(until_idle=msg_id)
        check = k.execute("pass", user_expressions={"n": f"len({RUN_NAME}.stdout)"})[0]
        if check["user_expressions"]["n"]["data"]["text/plain"] != str(size):
            raise RuntimeError("the widget run lost output")
    updates = [m for m in messages if m["msg_type"] == "comm_msg"]
    front_end = [m for m in messages if m["msg_type"] in ("comm_msg", "comm_open", "display_data",
                                                          "update_display_data", "stream", "execute_result")]
    # The record that replaces the widget at the end (issue 14) carries the output's tail
    # three times (text/plain, text/markdown, text/html): measured on its own row.
    records = [m for m in front_end if m["msg_type"] == "update_display_data"]
    live = [m for m in front_end if m["msg_type"] != "update_display_data"]
    stamps = [_stamp(m) for m in updates]
    span = max(stamps) - min(stamps) if len(stamps) > 1 else 0.0
    return {
        "peak": float(_peak_per_second(stamps)),
        "renders": float(_bursts(stamps)),
        "updates": float(len(updates)),
        "mean_rate": len(updates) / span if span else float(len(updates)),
        "seconds": received - sent,
        "max_bytes": float(max((message_bytes(m) for m in live), default=0)),
        "record_bytes": float(max((message_bytes(m) for m in records), default=0)),
        "total_bytes": float(sum(message_bytes(m) for m in front_end)),
        "output_bytes": float(size),
    }


async def widget_traffic(mode: Mode) -> list[Row]:
    """A run printing many lines in a kernel: widget messages per second and their bytes."""
    missing = extension_missing()
    if missing:
        return [Row("widget updates", None, "msg/s peak", "<= ~10", note=missing),
                Row("widget bytes", None, "KB max msg", f"<= ~{VIEW_CHARS * 1.25 / 1000:.0f}", note=missing),
                Row("record bytes", None, "KB", f"<= ~{VIEW_CHARS * 3.25 / 1000:.0f}", note=missing)]
    runs = [await asyncio.to_thread(_widget_run, mode) for _ in range(max(1, mode.repeats - 1))]
    pick = {key: median([r[key] for r in runs]) for key in runs[0]}
    rate_ref = (f"{pick['updates']:.0f} comm_msg in ~{pick['renders']:.0f} renders over "
                f"{pick['seconds']:.1f} s (mean {pick['mean_rate']:.1f} msg/s) for {mode.widget_lines:,} "
                f"lines paced over {mode.widget_seconds:g} s")
    bytes_ref = (f"total {pick['total_bytes'] / 1000:.0f} KB to the front end for "
                 f"{pick['output_bytes'] / MB:.1f} MB of output ({pick['total_bytes'] / pick['output_bytes']:.3f}x); "
                 f"view {VIEW_CHARS:,} chars")
    return [
        Row("widget updates", pick["peak"], "msg/s peak", "<= ~10", rate_ref,
            samples=[r["peak"] for r in runs]),
        Row("widget bytes", pick["max_bytes"] / 1000, "KB max msg", f"<= ~{VIEW_CHARS * 1.25 / 1000:.0f}",
            bytes_ref, samples=[r["max_bytes"] / 1000 for r in runs]),
        Row("record bytes", pick["record_bytes"] / 1000, "KB", f"<= ~{VIEW_CHARS * 3.25 / 1000:.0f}",
            "the final record replacing the widget: the output's tail as text/plain, text/markdown and "
            "text/html", samples=[r["record_bytes"] / 1000 for r in runs]),
    ]


# -- Cold start ---------------------------------------------------------------------


def _first_hi(messages: list[dict[str, Any]]) -> float | None:
    for message in messages:
        if message["msg_type"] in ("status", "execute_input"):
            continue
        if any(_HI.search(text) for text in _strings(message["content"])):
            return _stamp(message)
    return None


def _cold_start() -> tuple[float, float, float]:
    """(ms from the magic call to the first output, ms of %load_ext, kernel start s)."""
    with kernel() as k:
        load = _loaded(k)
        k.drain()
        msg_id, sent = k.send('%ccexec -c "echo hi" --wait')
        reply, _ = k.reply(msg_id)
        if reply["content"].get("status") != "ok":
            raise RuntimeError(f"cold start run failed: {reply['content'].get('evalue')}")
        first = _first_hi(k.drain(until_idle=msg_id))
        if first is None:
            raise RuntimeError("the output 'hi' never reached the front end")
        return (first - sent) * 1e3, load * 1e3, k.startup_seconds


async def cold_start(mode: Mode) -> list[Row]:
    """``%load_ext`` then ``%ccexec -c "echo hi" --wait`` in a fresh kernel: first output."""
    missing = extension_missing()
    if missing:
        return [Row("cold start", None, "ms", "<= 300", note=missing)]
    runs = [await asyncio.to_thread(_cold_start) for _ in range(mode.cold_starts)]
    first = [r[0] for r in runs]
    ref = (f"%load_ext {median([r[1] for r in runs]):.0f} ms; kernel start "
           f"{median([r[2] for r in runs]):.1f} s; {len(runs)} fresh kernels")
    return [Row("cold start", median(first), "ms", "<= 300", ref, samples=first)]

