"""Run one command against a private demo backend: ``python -m cc_executor_nb.demo.runner``.

::

    python -m cc_executor_nb.demo.runner [--max-retries N] -- claude -p ... PROMPT

Why: a kernel's demo backend (:mod:`.shared`) lives in the kernel, so a durable job
pointed at it would lose its API when the kernel restarts. A durable demo run is
wrapped in this runner instead: the backend lives in the run's own process, in the
run's process group, and goes with it (cancel, timeout, the job server's end). The
command inherits stdout and stderr, so its output is the run's output, byte for byte;
the runner exits with the command's status (or dies of the same signal).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from types import FrameType

from ..declare import OneLineParser
from .env import demo_environment
from .server import DemoBackend
from .shared import default_demo_config_dir, private_directory

__all__ = ["main", "runner_argv"]

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def runner_argv(argv: Sequence[str], max_retries: int, *, python: str | None = None) -> list[str]:
    """``argv`` wrapped in the runner (with ``python``, default this interpreter)."""
    runner = [python or sys.executable, "-m", "cc_executor_nb.demo.runner"]
    return [*runner, "--max-retries", str(max_retries), "--", *argv]


def main(argv: Sequence[str] | None = None) -> int:
    """Start the backend, run the command with the demo environment, return its status."""
    parser = OneLineParser(prog="python -m cc_executor_nb.demo.runner", description=__doc__)
    parser.add_argument("--max-retries", type=int, default=2, help="CLAUDE_CODE_MAX_RETRIES (default 2)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    code = _run(command, args.max_retries)
    if code < 0:
        # Die of the same signal, so the run's status says what happened to the command
        # (SIGKILL and SIGSTOP have no handler to reset).
        with contextlib.suppress(OSError, ValueError):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _run(command: list[str], max_retries: int) -> int:
    root = tempfile.mkdtemp(prefix="cc-executor-demo-")
    try:
        with DemoBackend() as backend:
            config = _config_directory(root)
            env = {**os.environ, **demo_environment(backend.url, config, max_retries=max_retries)}
            child = subprocess.Popen(command, env=env)
            _forward_signals(child)
            return child.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _config_directory(root: str) -> str:
    """The user's lasting demo config (a later ``--demo --resume ID`` finds the session, as
    for kernels and the terminal client); a temporary one under ``root`` if it is refused."""
    try:
        return str(private_directory(default_demo_config_dir()))
    except (OSError, ValueError) as exc:
        print(f"[demo] {exc}: this run's sessions are not kept", file=sys.stderr)
        return f"{root}/config"


def _forward_signals(child: subprocess.Popen[bytes]) -> None:
    """A signal for the runner alone is passed on; the runner waits for the command either way."""

    def forward(signum: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for sig in _FORWARDED:
        signal.signal(sig, forward)


if __name__ == "__main__":
    sys.exit(main())
