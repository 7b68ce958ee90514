"""The terminal client: ``python -m cc_executor_nb run [options] -- CMD ARGS...``.

Streams a run from a server (``--server URL``; default: a private server started in
this process) to the terminal: the child's stdout to stdout, its stderr to stderr,
heartbeats and inactivity as dim lines on stderr. Exits with the child's exit code
(128 + N when killed by signal N).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TextIO

from . import methods
from .client import Client, connect
from .errors import CCExecError
from .events import Completed, Event, Output
from .kernel.textview import TextView
from .protocol import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_INACTIVITY_THRESHOLD
from .server.config import ServerSettings, build_server

__all__ = ["exit_status", "main", "render_event"]


def exit_status(event: Completed) -> int:
    """The shell exit status for a completed run."""
    code = event.exit_code
    if code is None:
        return 1
    return 128 - code if code < 0 else code


def render_event(event: Event, view: TextView, out: TextIO, err: TextIO) -> None:
    """Write one event to the terminal: output to its stream, notices to stderr."""
    if event.method == methods.CONNECTED:
        return
    text = view.render_event(event.method, event.params)
    if text is None:
        return
    if isinstance(event, Output):
        stream = err if event.stream == "stderr" else out
        stream.write(text)
        stream.flush()
        return
    err.write((f"\x1b[2m{text}\x1b[0m" if err.isatty() else text) + "\n")
    err.flush()


@contextlib.asynccontextmanager
async def _session(args: argparse.Namespace) -> AsyncIterator[Client]:
    if args.server:
        token = os.environ.get(args.token_env) if args.token_env else None
        async with await connect(args.server, token) as client:
            yield client
        return
    handler = build_server(ServerSettings(heartbeat_interval=args.heartbeat))
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, handler.token) as client:
            yield client
    finally:
        await handler.close()


async def _run(args: argparse.Namespace) -> int:
    async with _session(args) as client:
        events = client.run_events(
            argv=args.command,
            cwd=args.cwd,
            timeout=args.timeout,
            heartbeat_interval=args.heartbeat,
            inactivity_threshold=args.inactivity,
        )
        view = TextView(heartbeats=not args.quiet, notices=not args.quiet)
        async for event in events:
            render_event(event, view, sys.stdout, sys.stderr)
            if isinstance(event, Completed):
                return exit_status(event)
    return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cc_executor_nb")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run a command and stream it to the terminal")
    run.add_argument("--server", help="ws://HOST:PORT/ws of a running server (default: private)")
    run.add_argument("--token-env", default="CC_EXECUTOR_TOKEN",
                     help="environment variable holding the server's token")
    run.add_argument("--cwd")
    run.add_argument("--timeout", type=float)
    run.add_argument("--heartbeat", type=float, default=DEFAULT_HEARTBEAT_INTERVAL, help="heartbeat interval (s)")
    run.add_argument("--inactivity", type=float, default=DEFAULT_INACTIVITY_THRESHOLD, help="inactivity threshold (s)")
    run.add_argument("--quiet", action="store_true", help="only the child's output")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cc_executor_nb`` and the ``ccexec`` script."""
    args = _parser().parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        print("error: give a command after --", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except CCExecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
