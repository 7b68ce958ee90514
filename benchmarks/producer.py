"""Child programs for the benchmarks: tiny, stdlib only, fast.

Run as ``python producer.py MODE ARGS...``:

  lines TOTAL [WIDTH [SECONDS]]
                           TOTAL bytes of WIDTH-byte numbered lines on stdout, written
                           as pre-built 1 MiB blocks with os.write (the last block is
                           cut short, so TOTAL need not be a multiple of WIDTH); with
                           SECONDS, paced evenly over that time in 10 ms slices
  ticker COUNT INTERVAL    COUNT lines ``T <monotonic_ns>`` INTERVAL seconds apart,
                           each stamped just before its write
  prompt HOLD              ``Password <monotonic_ns>: `` with no newline, then silence
                           for HOLD seconds
  tap ARGV...              run ARGV with its stdout on a pipe read here in 64 KiB
                           chunks and passed through unchanged; stamps (monotonic_ns)
                           this script's start and the moment the first
                           ``"type":"stream_event"`` line was read, on stderr as
                           ``TAP start=N first=N``

Timestamps are ``time.monotonic_ns()``: CLOCK_MONOTONIC is one clock for every
process on the machine, so the reader can subtract them from its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

BLOCK = 1 << 20


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def block(width: int) -> bytes:
    """About 1 MiB of distinct WIDTH-byte lines, numbered within the block."""
    count = max(1, BLOCK // width)
    if width < 9:
        return (("x" * (width - 1) + "\n") * count).encode()
    pad = "x" * (width - 9)
    return "".join(f"{i:07d} {pad}\n" for i in range(count)).encode()


def lines(total: str, width: str = "80", seconds: str = "0") -> None:
    """Write TOTAL bytes of WIDTH-byte lines, as fast as the reader takes them or paced."""
    remaining, lines_block = int(total), block(int(width))
    if float(seconds) > 0:
        _paced(remaining, int(width), float(seconds), lines_block)
        return
    while remaining > 0:
        piece = lines_block if remaining >= len(lines_block) else lines_block[:remaining]
        _write_all(1, piece)
        remaining -= len(piece)


def _paced(total: int, width: int, seconds: float, lines_block: bytes) -> None:
    """Whole lines every 10 ms so that TOTAL bytes take SECONDS."""
    slices = max(1, int(seconds / 0.01))
    per_slice = max(width, total // slices // width * width)
    next_at, offset, remaining = time.monotonic(), 0, total
    while remaining > 0:
        size = min(per_slice, remaining)
        if offset + size > len(lines_block):
            offset = 0
        _write_all(1, lines_block[offset : offset + size])
        offset, remaining = offset + size, remaining - size
        next_at += 0.01
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def ticker(count: str, interval: str) -> None:
    """One stamped line every INTERVAL seconds, on a drift-free schedule."""
    step = float(interval)
    next_at = time.monotonic()
    for _ in range(int(count)):
        _write_all(1, b"T %d\n" % time.monotonic_ns())
        next_at += step
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def prompt(hold: str) -> None:
    """A prompt without a newline, then silence (as a CLI waiting for input)."""
    _write_all(1, b"Password %d: " % time.monotonic_ns())
    time.sleep(float(hold))


def tap(*argv: str) -> None:
    """Pass a child's stdout through, stamping the first stream_event line."""
    start = time.monotonic_ns()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert child.stdout is not None
    fd, first, pending = child.stdout.fileno(), 0, b""
    while chunk := os.read(fd, 1 << 16):
        if not first:
            pending += chunk
            if b'"type":"stream_event"' in pending:
                first = time.monotonic_ns()
                pending = b""
            else:
                pending = pending[pending.rfind(b"\n") + 1 :]
        _write_all(1, chunk)
    code = child.wait()
    _write_all(2, b"TAP start=%d first=%d\n" % (start, first))
    sys.exit(code)


MODES: dict[str, Callable[..., None]] = {"lines": lines, "ticker": ticker, "prompt": prompt, "tap": tap}

if __name__ == "__main__":
    MODES[sys.argv[1]](*sys.argv[2:])
