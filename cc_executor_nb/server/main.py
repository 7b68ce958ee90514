"""The standalone server: ``python -m cc_executor_nb.server``.

Binds 127.0.0.1:8003 by default and prints ``listening on ws://HOST:PORT/ws`` once
ready. The token comes from ``--token-file`` (read when the file exists), the
``CC_EXECUTOR_TOKEN`` environment variable, or ``--token`` (visible in ``ps``: prefer
the other two); without any, a random one is written to a 0600 file whose path is
printed and which is removed at shutdown (the token itself is never logged).
SIGINT or SIGTERM kills every run's process group and exits 0.

Every flag and ``WEBSOCKET_HEARTBEAT_INTERVAL`` is validated: a bad value is a
one-line usage error (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Sequence

from ..protocol import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_INACTIVITY_THRESHOLD, DEFAULT_KILL_GRACE
from .config import DEFAULT_HISTORY, ServerSettings, build_server
from .handler import EnhancedWebSocketHandler

__all__ = ["HEARTBEAT_ENV", "TOKEN_ENV", "build_handler", "main", "parse_args", "settings_from", "write_token_file"]

logger = logging.getLogger("cc_executor_nb.server")

TOKEN_ENV = "CC_EXECUTOR_TOKEN"
HEARTBEAT_ENV = "WEBSOCKET_HEARTBEAT_INTERVAL"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds, not {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, not {value}")
    return value


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {text!r}")
    return level


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cc_executor_nb.server",
        description="cc_executor_nb enhanced handler: run and stream CLI processes over WebSocket.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=_port, default=8003, help="port (default 8003; 0 picks one)")
    add("--token", help=f"bearer token (visible in ps; prefer env {TOKEN_ENV} or --token-file)")
    add("--token-file", help="read the token from this file if it exists, else write a generated one there (0600)")
    add("--no-token", action="store_true", help="serve without a token (loopback only)")
    add("--heartbeat-interval", type=_seconds, default=None,
        help=f"seconds between heartbeats (default {DEFAULT_HEARTBEAT_INTERVAL:g}, env {HEARTBEAT_ENV})")
    add("--inactivity-threshold", type=_seconds, default=DEFAULT_INACTIVITY_THRESHOLD,
        help=f"seconds of silence before process.status (default {DEFAULT_INACTIVITY_THRESHOLD:g})")
    add("--heartbeat-mode", choices=("fixed", "adaptive"), default="fixed",
        help="fixed: a beat every interval; adaptive: skip beats while other messages flow, "
        "beat faster while the child is silent (default fixed)")
    add("--min-heartbeat-interval", type=_seconds, default=1.0,
        help="shortest interval of the adaptive mode (default 1)")
    add("--metrics-interval", type=_seconds, default=1.0,
        help="seconds between process.metrics (progress, resources) of a run; 0 disables")
    add("--history-db", default=None,
        help="SQLite file of earlier run durations for progress estimates "
        "(default: ~/.cache/cc_executor_nb/history.sqlite3)")
    add("--no-history", action="store_true", help="keep no run history")
    add("--allowed-commands", default="",
        help="comma-separated programs allowed as argv[0] (default: all); see the README")
    add("--allowed-origins", default="",
        help="comma-separated browser origins allowed to connect (default: none)")
    add("--max-sessions", type=_count, default=None, help="at most this many sessions")
    add("--max-processes", type=_count, default=None, help="at most this many running processes")
    add("--max-message-size", type=_count, default=1 << 20, help="largest inbound frame in bytes")
    add("--handshake-timeout", type=_seconds, default=10.0,
        help="seconds a client has to finish the WebSocket handshake (default 10)")
    add("--ping-interval", type=_seconds, default=20.0,
        help="seconds between WebSocket pings (default 20; 0 disables)")
    add("--ping-timeout", type=_seconds, default=20.0,
        help="seconds to wait for a pong before dropping a dead peer (default 20)")
    add("--detach-ttl", type=_seconds, default=600.0,
        help="seconds a run outlives an abrupt drop, waiting for resume (default 600; 0 kills at once)")
    add("--replay-limit", type=_count, default=256 << 20,
        help="bytes of notifications kept per session for resume (default 256 MiB)")
    add("--kill-grace", type=_seconds, default=DEFAULT_KILL_GRACE,
        help=f"seconds between SIGTERM and SIGKILL on cancel (default {DEFAULT_KILL_GRACE:g})")
    add("--log-level", type=_log_level, default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the server's command line (environment defaults applied and checked here)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.heartbeat_interval is None:
        env = os.environ.get(HEARTBEAT_ENV)
        try:
            args.heartbeat_interval = _seconds(env) if env else DEFAULT_HEARTBEAT_INTERVAL
        except argparse.ArgumentTypeError as exc:
            parser.error(f"{HEARTBEAT_ENV}: {exc}")
    if args.no_token and (args.token or args.token_file):
        parser.error("--no-token excludes --token and --token-file")
    try:
        args.settings = settings_from(args, token=None)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def settings_from(args: argparse.Namespace, token: str | None) -> ServerSettings:
    """The server settings the flags describe (raises ValueError for a bad value)."""
    return ServerSettings(
        heartbeat_interval=args.heartbeat_interval,
        inactivity_threshold=args.inactivity_threshold,
        heartbeat_mode=args.heartbeat_mode,
        min_heartbeat_interval=args.min_heartbeat_interval,
        metrics_interval=args.metrics_interval,
        token=token,
        allow_no_token=args.no_token,
        allowed_origins=_names(args.allowed_origins),
        kill_grace=args.kill_grace,
        allowed_commands=_names(args.allowed_commands),
        max_processes=args.max_processes,
        max_sessions=args.max_sessions,
        detach_ttl=args.detach_ttl,
        replay_limit=args.replay_limit,
        max_message_size=args.max_message_size,
        handshake_timeout=args.handshake_timeout,
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout or None,
        history_path=None if args.no_history else (args.history_db or DEFAULT_HISTORY),
    )


def build_handler(args: argparse.Namespace, token: str | None) -> EnhancedWebSocketHandler:
    """The handler the flags describe."""
    return build_server(settings_from(args, token))


def write_token_file(token: str, path: str | None = None) -> str:
    """Write ``token`` to a file only we can read; return its path."""
    if path is None:
        fd, path = tempfile.mkstemp(prefix="cc_executor_token-", suffix=".txt")
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return path


def _read_token_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except FileNotFoundError:
        return None
    return token or None


def _resolve_token(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(token, path of a token file we generated and must remove at shutdown, or None)."""
    if args.no_token:
        return None, None
    if args.token_file:
        token = _read_token_file(args.token_file)
        if token:
            return token, None
    token = args.token or os.environ.get(TOKEN_ENV)
    if token:
        return token.strip(), None
    token = secrets.token_hex(32)  # hex: never starts with "-", so "--token X" always parses
    return token, write_token_file(token, args.token_file)


async def _serve(args: argparse.Namespace) -> int:
    token, token_path = _resolve_token(args)
    try:
        handler = build_handler(args, token)
        await handler.start(args.host, args.port)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        _remove(token_path)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if token_path:
        print(f"token written to {token_path}", flush=True)
    print(f"listening on {handler.url}", flush=True)
    try:
        await stop.wait()
        await handler.close()
    finally:
        _remove(token_path)
    logger.info("x [ENHANCED] stopped")
    return 0


def _remove(path: str | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(_serve(args))
