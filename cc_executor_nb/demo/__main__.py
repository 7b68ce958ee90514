"""Run the demo Messages API in the foreground: ``python -m cc_executor_nb.demo``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ..declare import OneLineParser
from .scenarios import DemoSettings
from .server import DemoBackend

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM); return the exit status."""
    args = _parser().parse_args(argv)
    settings = DemoSettings(
        words_per_second=args.words_per_second, think_seconds=args.think_seconds
    )
    log = _stderr_line if args.verbose else None
    done = threading.Event()
    _stop_on_signals(done)
    with DemoBackend(args.host, args.port, settings=settings, log=log) as backend:
        print(f"listening on {backend.url}", flush=True)
        try:
            # A timeout keeps the wait interruptible by Ctrl-C everywhere.
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m cc_executor_nb.demo",
        description="Mock Anthropic Messages API for running the claude CLI offline.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log requests to stderr")
    defaults = DemoSettings()
    parser.add_argument("--words-per-second", type=float, default=defaults.words_per_second)
    parser.add_argument("--think-seconds", type=float, default=defaults.think_seconds)
    return parser


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _stop_on_signals(done: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, handle)


if __name__ == "__main__":
    sys.exit(main())
