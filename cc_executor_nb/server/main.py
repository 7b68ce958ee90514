"""The standalone server: ``python -m cc_executor_nb.server``.

Binds 127.0.0.1:8003 by default and prints ``listening on ws://HOST:PORT/ws`` once
ready. The token comes from ``--token`` or ``CC_EXECUTOR_TOKEN``; without either a
random one is written to a 0600 file whose path is printed (the token itself is never
logged). SIGINT or SIGTERM kills every run's process group and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Sequence

from .handler import EnhancedWebSocketHandler
from .supervisor import ProcessManager
from .session import SessionManager
from .streams import StreamHandler

__all__ = ["build_handler", "main", "parse_args", "write_token_file"]

logger = logging.getLogger("cc_executor_nb.server")


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be a non-negative number of seconds")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the server's command line (environment defaults applied here)."""
    env_interval = os.environ.get("WEBSOCKET_HEARTBEAT_INTERVAL")
    parser = argparse.ArgumentParser(
        prog="python -m cc_executor_nb.server",
        description="cc_executor_nb enhanced handler: run and stream CLI processes over WebSocket.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8003, help="port (default 8003; 0 picks one)")
    parser.add_argument("--token", help="bearer token (default: env CC_EXECUTOR_TOKEN, else random)")
    parser.add_argument("--token-file", help="where a generated token is written (mode 0600)")
    parser.add_argument("--no-token", action="store_true", help="serve without a token (loopback only)")
    parser.add_argument(
        "--heartbeat-interval", type=_seconds, default=float(env_interval or 20),
        help="seconds between heartbeats (default 20, env WEBSOCKET_HEARTBEAT_INTERVAL)",
    )
    parser.add_argument("--inactivity-threshold", type=_seconds, default=30.0,
                        help="seconds of silence before process.status (default 30)")
    parser.add_argument("--heartbeat-mode", choices=("fixed", "adaptive"), default="fixed",
                        help="fixed: a beat every interval; adaptive: skip beats while other "
                             "messages flow, beat faster while the child is silent (default fixed)")
    parser.add_argument("--min-heartbeat-interval", type=_seconds, default=1.0,
                        help="shortest interval of the adaptive mode (default 1)")
    parser.add_argument("--metrics-interval", type=_seconds, default=1.0,
                        help="seconds between process.metrics (progress, resources) of a run; 0 disables")
    parser.add_argument("--history-db", default=None,
                        help="SQLite file of earlier run durations for progress estimates "
                             "(default: ~/.cache/cc_executor_nb/history.sqlite3)")
    parser.add_argument("--no-history", action="store_true", help="keep no run history")
    parser.add_argument("--allowed-commands", default="",
                        help="comma-separated program names allowed as argv[0] (default: all)")
    parser.add_argument("--allowed-origins", default="",
                        help="comma-separated browser origins allowed to connect (default: none)")
    parser.add_argument("--max-sessions", type=int, default=None, help="at most this many sessions")
    parser.add_argument("--max-processes", type=int, default=None, help="at most this many running processes")
    parser.add_argument("--max-message-size", type=int, default=1 << 20, help="largest inbound frame in bytes")
    parser.add_argument("--handshake-timeout", type=_seconds, default=10.0,
                        help="seconds a client has to finish the WebSocket handshake (default 10)")
    parser.add_argument("--ping-interval", type=_seconds, default=20.0,
                        help="seconds between WebSocket pings (default 20; 0 disables)")
    parser.add_argument("--ping-timeout", type=_seconds, default=20.0,
                        help="seconds to wait for a pong before dropping a dead peer (default 20)")
    parser.add_argument("--detach-ttl", type=_seconds, default=600.0,
                        help="seconds a run outlives an abrupt drop, waiting for resume (default 600; 0 kills at once)")
    parser.add_argument("--replay-limit", type=int, default=256 << 20,
                        help="bytes of notifications kept per session for resume (default 256 MiB)")
    parser.add_argument("--kill-grace", type=_seconds, default=5.0,
                        help="seconds between SIGTERM and SIGKILL on cancel (default 5)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return parser.parse_args(argv)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


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


def build_handler(args: argparse.Namespace, token: str | None) -> EnhancedWebSocketHandler:
    """The handler the flags describe."""
    return EnhancedWebSocketHandler(
        SessionManager(max_sessions=args.max_sessions),
        ProcessManager(
            kill_grace=args.kill_grace,
            allowed_commands=_names(args.allowed_commands) or None,
            max_processes=args.max_processes,
        ),
        StreamHandler(),
        heartbeat_interval=args.heartbeat_interval,
        inactivity_threshold=args.inactivity_threshold,
        heartbeat_mode=args.heartbeat_mode,
        min_heartbeat_interval=args.min_heartbeat_interval,
        metrics_interval=args.metrics_interval,
        history_path=None if args.no_history else (args.history_db or "default"),
        token=token,
        allow_no_token=args.no_token,
        allowed_origins=_names(args.allowed_origins),
        max_message_size=args.max_message_size,
        open_timeout=args.handshake_timeout,
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout or None,
        detach_ttl=args.detach_ttl,
        replay_limit=args.replay_limit,
    )


def _resolve_token(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(token, path of a generated token file or None)."""
    if args.no_token:
        return None, None
    token = args.token or os.environ.get("CC_EXECUTOR_TOKEN")
    if token:
        return token, None
    token = secrets.token_hex(32)  # hex: never starts with "-", so "--token X" always parses
    return token, write_token_file(token, args.token_file)


async def _serve(args: argparse.Namespace) -> int:
    token, token_path = _resolve_token(args)
    handler = build_handler(args, token)
    try:
        await handler.start(args.host, args.port)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if token_path:
        print(f"token written to {token_path}", flush=True)
    print(f"listening on {handler.url}", flush=True)
    await stop.wait()
    await handler.close()
    logger.info("x [ENHANCED] stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.no_token and args.token:
        print("error: --no-token and --token exclude each other", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args))

