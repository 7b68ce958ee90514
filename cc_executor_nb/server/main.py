"""The standalone server: ``python -m cc_executor_nb.server``.

Binds 127.0.0.1:8003 by default and prints ``listening on ws://HOST:PORT/ws`` once
ready. The token comes from ``--token-file`` (read when the file exists), ``--token``
(visible in ``ps``: prefer the others) or the ``CC_EXECUTOR_TOKEN`` environment
variable; without any, a random one is written to ``--token-file`` (kept) or to a 0600
file whose path is printed and which is removed at shutdown (the token itself is never
logged).
SIGINT or SIGTERM kills every run's process group and exits 0.

``--jobs`` makes it the user's *job server* (durable jobs, see ``server/jobs.py``): jobs
under Jupyter's runtime directory, a fresh token written only to the runtime file
(``server/runtime.py``) that kernels read, any free port. ``--detach`` starts it in the
background and returns once it listens (exit 3: another job server owns the jobs
directory). ``python -m cc_executor_nb.server stop`` stops the job server: it cancels
its jobs first.

Every flag and ``WEBSOCKET_HEARTBEAT_INTERVAL`` is validated: a bad value is a
one-line usage error (exit 2), never a traceback. Sizes take a suffix (``100M``,
``4GiB``; powers of 1024).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import re
import secrets
import signal
import ssl
import stat
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NoReturn

from websockets.exceptions import WebSocketException

from .. import __version__
from ..declare import OneLineParser
from ..errors import CCExecError, UntrustedRuntimeFile
from ..interrupts import sigint_held
from ..protocol import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_INACTIVITY_THRESHOLD, DEFAULT_KILL_GRACE
from .access import is_loopback
from .config import (
    DEFAULT_HISTORY,
    DEFAULT_JOB_RETENTION,
    DEFAULT_JOB_STORAGE_LIMIT,
    ServerSettings,
    build_server,
)
from .handler import EnhancedWebSocketHandler
from .jobs import ACTIVE_STATUSES, JobsDirBusy
from .replay import MEMORY_TAIL
from .runtime import (
    RuntimeInfo,
    client_context,
    default_jobs_dir,
    default_runtime_file,
    invalid_because,
    read_runtime_file,
    remove_runtime_file,
    serves,
    stop_job_server,
    untrusted_because,
    write_runtime_file,
)
from .supervisor import DEFAULT_KEEP_ENV, DEFAULT_SECRET_ENV

__all__ = [
    "HEARTBEAT_ENV",
    "TOKEN_ENV",
    "build_handler",
    "cleartext_warning",
    "main",
    "parse_args",
    "server_settings",
    "settings_from",
    "short_token_warning",
    "tls_context",
    "write_token_file",
]

logger = logging.getLogger("cc_executor_nb.server")

TOKEN_ENV = "CC_EXECUTOR_TOKEN"
HEARTBEAT_ENV = "WEBSOCKET_HEARTBEAT_INTERVAL"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EXIT_BUSY = 3
"""Exit status when another job server owns the jobs directory."""
DETACH_TIMEOUT = 30.0
LOG_ROTATE_BYTES = 10 << 20


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds, not {text!r}")
    return value


_ORIGIN_FORM = "(scheme://host[:port], as a browser sends it: e.g. http://localhost:8888)"


def _origins(text: str) -> tuple[str, ...]:
    """Comma-separated origins, each as a browser's ``Origin`` header spells it (it is matched exactly)."""
    origins = _names(text)
    for origin in origins:
        problem = _origin_problem(origin)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{origin!r} is not an origin{problem} {_ORIGIN_FORM}")
    return origins


def _origin_problem(origin: str) -> str | None:
    """Why ``origin`` can never equal a browser's ``Origin`` header ("" for no form at all), or None."""
    if origin == "*":
        return ": every origin is refused unless listed, there is no wildcard"
    try:
        parts = urllib.parse.urlsplit(origin)
        port = parts.port
    except ValueError:
        return ""
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", parts.scheme) or not parts.hostname or "://" not in origin:
        return ""
    if parts.path or parts.query or parts.fragment or origin.endswith(("/", "?", "#")):
        return ": it has a path"
    if parts.username is not None or parts.password is not None:
        return ": it has user info"
    if parts.netloc != parts.netloc.lower() or port == 0:
        return ": a browser sends the host in lower case and a port from 1 to 65535"
    return None


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


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _size(text: str) -> int:
    """Bytes: an integer with an optional K, M, G or T suffix (``B``/``iB`` allowed)."""
    raw = text.strip().lower().removesuffix("b").removesuffix("i")
    number, unit = (raw[:-1], raw[-1]) if raw[-1:].isalpha() else (raw, "")
    try:
        if unit not in _UNITS:
            raise ValueError(unit)
        return int(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size in bytes (e.g. 100M): {text!r}") from None


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {text!r}")
    return level


def _parser(kind: type[OneLineParser] = OneLineParser) -> argparse.ArgumentParser:
    parser = kind(
        prog="python -m cc_executor_nb.server",
        description="cc_executor_nb enhanced handler: run and stream CLI processes over WebSocket.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=_port, default=None, help="port (default 8003, with --jobs 0; 0 picks one)")
    add("--token", help=f"bearer token (visible in ps; prefer env {TOKEN_ENV} or --token-file)")
    add("--token-file", help="read the token from this file if it exists, else write a generated one there (0600)")
    add("--no-token", action="store_true", help="serve without a token (loopback only)")
    add("--certfile", metavar="PATH",
        help="serve wss:// (TLS) with this PEM certificate chain (and its key, unless --keyfile)")
    add("--keyfile", metavar="PATH", help="the certificate's private key (PEM, not encrypted), if not in --certfile")
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
    add("--allowed-origins", type=_origins, default=(),
        help="comma-separated browser origins allowed to connect, each scheme://host[:port] as a browser "
        "sends it (default: none)")
    add("--secret-env", default=",".join(DEFAULT_SECRET_ENV),
        help="comma-separated patterns of variables never passed to a child (default: see the README)")
    add("--keep-env", default=",".join(DEFAULT_KEEP_ENV),
        help="comma-separated patterns passed even when a secret pattern matches (default: "
        "what claude needs, ANTHROPIC_*, CLAUDE_*, AWS_*, GOOGLE_*, CLOUD_ML_*)")
    add("--max-sessions", type=_count, default=128, help="at most this many sessions (default 128)")
    add("--max-processes", type=_count, default=128, help="at most this many running processes (default 128)")
    add("--max-connections", type=_count, default=512,
        help="at most this many connections, handshakes under way included (default 512)")
    add("--max-message-size", type=_size, default=1 << 20, help="largest inbound frame in bytes")
    add("--handshake-timeout", type=_seconds, default=10.0,
        help="seconds a client has to finish the WebSocket handshake (default 10)")
    add("--ping-interval", type=_seconds, default=20.0,
        help="seconds between WebSocket pings (default 20; 0 disables)")
    add("--ping-timeout", type=_seconds, default=20.0,
        help="seconds to wait for a pong before dropping a dead peer (default 20)")
    add("--detach-ttl", type=_seconds, default=600.0,
        help="seconds a run outlives an abrupt drop, waiting for resume (default 600; 0 kills at once)")
    add("--replay-limit", type=_size, default=256 << 20,
        help="bytes of notifications kept per session for resume (default 256M)")
    add("--replay-memory", type=_size, default=MEMORY_TAIL,
        help="bytes of a session's newest unacknowledged notifications kept in memory, not on disk "
        "(default 16M; 0: all on disk)")
    add("--capture", choices=("file", "pipe"), default="file",
        help="how runs capture stdout/stderr unless execute says: file (default; nothing can be "
        "dropped) or pipe")
    add("--spool-dir", default=None, help="directory of the temporary files (default: the temp dir)")
    add("--disk-limit", type=_size, default=4 << 30,
        help="bytes of temporary files for the whole server (default 4G; 0: no limit)")
    add("--session-disk-limit", type=_size, default=1 << 30,
        help="bytes of temporary files per session (default 1G; 0: no limit)")
    add("--kill-grace", type=_seconds, default=DEFAULT_KILL_GRACE,
        help=f"seconds between SIGTERM and SIGKILL on cancel (default {DEFAULT_KILL_GRACE:g})")
    add("--log-level", type=_log_level, default="INFO", help=f"{', '.join(LOG_LEVELS)} (default INFO)")
    jobs = parser.add_argument_group("durable jobs (the job server)")
    jobs.add_argument("--jobs", action="store_true",
                      help="be the user's job server: keep durable jobs under Jupyter's runtime directory, "
                      "write the runtime file kernels read, use a fresh token and any free port")
    jobs.add_argument("--jobs-dir", metavar="DIR",
                      help="keep durable jobs in DIR (default with --jobs: JUPYTER_RUNTIME_DIR/cc_executor_nb-jobs)")
    jobs.add_argument("--runtime-file", metavar="PATH",
                      help="write url, token and pid here (0600) once listening; removed at exit "
                      "(default with --jobs: JUPYTER_RUNTIME_DIR/cc_executor_nb-jobserver.json)")
    jobs.add_argument("--job-retention", type=_seconds, default=DEFAULT_JOB_RETENTION, metavar="SECONDS",
                      help="seconds a finished job and its output are kept (default a week)")
    jobs.add_argument("--job-storage-limit", type=_size, default=DEFAULT_JOB_STORAGE_LIMIT, metavar="BYTES",
                      help="bytes all job logs may take; the oldest finished jobs go first (default 1 GiB)")
    jobs.add_argument("--idle-exit", type=_seconds, default=0.0, metavar="SECONDS",
                      help="exit after this many seconds with no connection and no running job (default 0: never)")
    jobs.add_argument("--detach", action="store_true",
                      help="start in the background (own session; log to --log-file) and exit once it listens")
    jobs.add_argument("--log-file", metavar="PATH",
                      help="where the server's output goes once it listens (what comes before, such as "
                      "a refusal to start, stays on stderr); with --detach the default is the runtime "
                      "file with .log")
    # --detach's child: what it wrote before it listened (to a file --detach reads) opens its log.
    jobs.add_argument("--log-early-output", action="store_true", help=argparse.SUPPRESS)
    return parser


class _Refusing(OneLineParser):
    """A parser whose usage error raises ValueError: nothing printed, no exit."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def server_settings(argv: Sequence[str]) -> ServerSettings | None:
    """The settings of a server whose command line, after ``-m cc_executor_nb.server``, is
    ``argv`` (defaults applied); None when it does not parse (a server of another version)."""
    try:
        settings: ServerSettings = parse_args(argv, parser=_parser(_Refusing)).settings
    except ValueError:
        return None
    return settings


def parse_args(
    argv: Sequence[str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    """Parse the server's command line (environment defaults applied and checked here)."""
    parser = parser or _parser()
    args = parser.parse_args(argv)
    if args.heartbeat_interval is None:
        env = os.environ.get(HEARTBEAT_ENV)
        try:
            args.heartbeat_interval = _seconds(env) if env else DEFAULT_HEARTBEAT_INTERVAL
        except argparse.ArgumentTypeError as exc:
            parser.error(f"{HEARTBEAT_ENV}: {exc}")
    if args.no_token and (args.token or args.token_file):
        parser.error("--no-token excludes --token and --token-file")
    if args.keyfile and not args.certfile:
        parser.error("--keyfile needs --certfile (the certificate it is the key of)")
    _apply_job_defaults(args)
    if args.no_token and args.runtime_file:
        parser.error("a job server needs a token: --no-token excludes --jobs and --runtime-file")
    if args.detach and not args.runtime_file:
        parser.error("--detach needs --jobs or --runtime-file (readiness is read from the runtime file)")
    if args.replay_limit == 0:
        # Not "keep nothing": the log keeps its newest notification, so a resume lost all the
        # output in flight at the drop but that one (client.output_gap), each notification
        # was written to a file of its own, and a detached client's output waited at once.
        parser.error("--replay-limit must be more than 0: 0 keeps only the newest notification, so a "
                     "resume loses the output in flight (--detach-ttl 0 turns resume off)")
    try:
        args.settings = settings_from(args, token=None)
    except ValueError as exc:
        parser.error(_as_typed(str(exc), parser))
    return args


def _as_typed(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with a leading settings field (``max_sessions must ...``) spelled as its flag."""
    field, _, rest = message.partition(" ")
    flag = "--" + field.replace("_", "-")
    return f"{flag} {rest}" if flag in parser._option_string_actions else message


def _apply_job_defaults(args: argparse.Namespace) -> None:
    """``--jobs`` fills in the jobs directory, the runtime file and port 0."""
    if args.jobs:
        args.jobs_dir = args.jobs_dir or str(default_jobs_dir())
        args.runtime_file = args.runtime_file or str(default_runtime_file())
    if args.port is None:
        args.port = 0 if args.jobs else 8003


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
        allowed_origins=args.allowed_origins,
        kill_grace=args.kill_grace,
        allowed_commands=_names(args.allowed_commands),
        secret_env=_names(args.secret_env),
        keep_env=_names(args.keep_env),
        max_processes=args.max_processes,
        max_sessions=args.max_sessions,
        capture=args.capture,
        spool_dir=args.spool_dir,
        detach_ttl=args.detach_ttl,
        replay_limit=args.replay_limit,
        replay_memory=args.replay_memory,
        disk_limit=args.disk_limit or None,
        session_disk_limit=args.session_disk_limit or None,
        max_connections=args.max_connections,
        max_message_size=args.max_message_size,
        handshake_timeout=args.handshake_timeout,
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout or None,
        history_path=None if args.no_history else (args.history_db or DEFAULT_HISTORY),
        jobs_dir=args.jobs_dir,
        job_retention=args.job_retention,
        job_storage_limit=args.job_storage_limit,
        idle_exit=args.idle_exit,
    )


def build_handler(args: argparse.Namespace, token: str | None) -> EnhancedWebSocketHandler:
    """The handler the flags describe."""
    return build_server(settings_from(args, token))


def write_token_file(token: str, path: str | None = None) -> str:
    """Write ``token`` to a file only we can read; return its path."""
    if path is None:
        fd, path = tempfile.mkstemp(prefix="cc_executor_token-", suffix=".txt")
    else:
        # Never through a symbolic link: one planted in a shared folder would have the token
        # written (and the file it points at truncated) wherever it points.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return path


def _read_token_file(path: str) -> str | None:
    """The token in ``path`` (None when the file is missing or blank); ValueError if unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ValueError(f"cannot read the token file {path}: {reason}") from None
    return token or None


def _warn_if_shared(path: str) -> None:
    """Warn when a token file others could read or write holds the token (like ssh's key check)."""
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if info.st_mode & 0o077 or info.st_uid != os.getuid():
            print(
                f"warning: the token file {path} is not private (mode {stat.S_IMODE(info.st_mode):04o}, "
                f"owner uid {info.st_uid}): others may read or set the token; chmod 600 it",
                file=sys.stderr,
                flush=True,
            )


def _resolve_token(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(token, path of a token file we generated, or None).

    ValueError or OSError when ``--token-file`` can be neither read nor written.
    """
    if args.no_token:
        return None, None
    if args.runtime_file and not args.token_file:
        # A job server's token is fresh and lives only in its runtime file: never the
        # environment's (a kernel may hold a remote server's token there).
        return args.token or secrets.token_hex(32), None
    if args.token_file:
        token = _read_token_file(args.token_file)
        if token:
            _warn_if_shared(args.token_file)
            return token, None
    token = args.token or os.environ.get(TOKEN_ENV)
    if token:
        return token.strip(), None
    token = secrets.token_hex(32)  # hex: never starts with "-", so "--token X" always parses
    try:
        return token, write_token_file(token, args.token_file)
    except OSError as exc:
        raise ValueError(f"cannot write the token file {args.token_file}: {exc.strerror or exc}") from None


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    raise _EncryptedKey  # never ask on a terminal: the server may run unattended


def tls_context(certfile: str | None, keyfile: str | None = None) -> ssl.SSLContext | None:
    """The server-side TLS context of ``--certfile``/``--keyfile`` (None without a certificate).

    Raises ValueError, naming the file, when they cannot be loaded.
    """
    if certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    files = f"{certfile} (key {keyfile})" if keyfile else certfile
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except _EncryptedKey:
        raise ValueError(f"cannot load the TLS certificate {files}: its key is encrypted") from None
    except OSError as exc:  # ssl.SSLError is one: not PEM, no key, a key that does not match
        reason = re.sub(r" \(_ssl\.c:\d+\)$", "", exc.strerror or str(exc))
        raise ValueError(f"cannot load the TLS certificate {files}: {reason}") from None
    return context


SHORT_TOKEN = 16
"""A token shorter than this many characters is warned about (a generated one has 64)."""


def short_token_warning(token: str | None) -> str | None:
    """What to tell the user whose token is short enough to guess (and to redact from logs
    wherever those characters appear)."""
    if token is None or len(token) >= SHORT_TOKEN:
        return None
    return (
        f"warning: the token has only {len(token)} characters: it can be guessed; give {SHORT_TOKEN} or more "
        "random characters, or let the server generate one"
    )


def cleartext_warning(host: str, tls: bool) -> str | None:
    """What to tell the user who serves plain ``ws://`` beyond this machine."""
    if tls or is_loopback(host):
        return None
    return (
        f"warning: serving ws:// on {host}: the token and every run's output cross the network unencrypted; "
        "give --certfile (wss://) or reach a loopback server through an SSH tunnel"
    )


async def _serve(args: argparse.Namespace, sigint: Sequence[int] = ()) -> int:
    """Serve until SIGINT or SIGTERM; ``sigint``: Ctrl-Cs held until the loop took SIGINT over."""
    try:
        token, written = _resolve_token(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # A generated token goes with the server, unless it went to the user's --token-file:
    # kept there, the next start reads the same token and clients keep working.
    token_path = written if written is not None and not args.token_file else None
    if args.token:
        print(
            f"warning: --token shows the token to anyone who can list processes (ps); "
            f"prefer {TOKEN_ENV} or --token-file",
            file=sys.stderr,
            flush=True,
        )
    try:
        context = tls_context(args.certfile, args.keyfile)
        handler = build_handler(args, token)
        await handler.start(args.host, args.port, ssl=context)
    except JobsDirBusy as exc:
        print(f"error: {exc}{_running_server(args.runtime_file)}", file=sys.stderr)
        _remove(token_path)
        return EXIT_BUSY
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        _remove(token_path)
        return 2
    if args.log_file and not _logs_to(Path(args.log_file), early=args.log_early_output):
        await handler.close()
        _remove(token_path)
        return 2
    stop = asyncio.Event()
    _stop_on_signals(stop, sigint)
    if written:
        print(f"token written to {written}", flush=True)
    for warning in (short_token_warning(token), cleartext_warning(args.host, handler.tls)):
        if warning:
            print(warning, file=sys.stderr, flush=True)
    if args.runtime_file:
        certfile = os.path.abspath(args.certfile) if args.certfile else None
        info = RuntimeInfo(handler.url, handler.token or "", os.getpid(), args.jobs_dir, __version__, time.time(),
                           certfile)
        write_runtime_file(args.runtime_file, info)
    print(f"listening on {handler.url}", flush=True)
    idle = asyncio.ensure_future(_exit_when_idle(handler, args.settings.idle_exit, stop))
    try:
        await stop.wait()
        await handler.close()
    finally:
        idle.cancel()
        _remove(token_path)
        if args.runtime_file:
            remove_runtime_file(args.runtime_file, os.getpid())
    logger.info("x [ENHANCED] stopped")
    return 0


def _stop_on_signals(stop: asyncio.Event, sigint: Sequence[int]) -> None:
    """SIGINT and SIGTERM set ``stop`` from now on; a Ctrl-C held while the server started
    (``sigint``) sets it at once, so the server stops as at any later one."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if sigint:
        stop.set()


async def _exit_when_idle(handler: EnhancedWebSocketHandler, seconds: float, stop: asyncio.Event) -> None:
    """Set ``stop`` once no connection and no running job existed for ``seconds`` (0: never)."""
    if seconds <= 0:
        return
    idle_since: float | None = None
    while True:
        now = time.monotonic()
        if handler.sessions.sessions or handler.jobs.running_count:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= seconds:
            logger.info("x [ENHANCED] idle for %g s: exiting", seconds)
            stop.set()
            return
        await asyncio.sleep(min(1.0, seconds / 4))


def _running_server(runtime_file: str | None) -> str:
    info = read_runtime_file(runtime_file) if runtime_file else None
    return f" (pid {info.pid}, {info.url})" if info is not None else ""


def _remove(path: str | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def main(argv: Sequence[str] | None = None, *, sigint: list[int] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM (or ``stop`` the job server).

    A Ctrl-C before the server's loop takes SIGINT over is held (see :mod:`..interrupts`;
    ``sigint`` holds those of ``python -m``'s start, while the modules loaded): the server
    then stops as soon as it has started, as at a later Ctrl-C (exit 0); ``stop`` and
    ``--detach`` end before they act, with one line (exit 130)."""
    pending = [] if sigint is None else sigint
    with sigint_held(pending):
        words = list(sys.argv[1:] if argv is None else argv)
        args = None if words[:1] == ["stop"] else parse_args(words)
        if args is not None and not args.detach:
            logging.basicConfig(
                level=args.log_level,
                format="%(asctime)s %(levelname)s %(name)s %(message)s",
                stream=sys.stderr,
            )
            return asyncio.run(_serve(args, pending))
    if pending:
        print("[cancelled] by Ctrl-C before the command started", file=sys.stderr)
        return 130
    return stop_main(words[1:]) if args is None else _detach(words, args)


# The job server in the background, and stopping it


def _detach(words: list[str], args: argparse.Namespace) -> int:
    """Start the server in its own session, wait for its runtime file, print where it listens.

    The server is spawned by this short-lived process, which exits once the server is
    ready: the server is then nobody's child but init's (or the subreaper's), so no
    caller has to reap it, and it lives on when the caller (a kernel) goes.

    Until it owns the jobs directory and listens, its output goes to a file of this
    process's, printed here if it exits: a server refused at its start (another job server
    owns the directory, exit 3) says so on this stderr and leaves the running server's log
    alone (it appended its refusal there, and could rotate that log away from it). From
    then on it writes to its log itself (``--log-file``, see :func:`_output_to`).
    """
    runtime = Path(args.runtime_file)
    log_path = Path(args.log_file) if args.log_file else runtime.with_suffix(".log")
    words = [word for word in words if word != "--detach"] + ["--log-early-output"]
    if not args.log_file:
        words += ["--log-file", str(log_path)]
    argv = [sys.executable, "-m", "cc_executor_nb.server", *words]
    with tempfile.TemporaryFile() as early:
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fds = ((null_fd, 0), (early.fileno(), 1), (early.fileno(), 2))
            actions = [(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in fds]
            pid = os.posix_spawn(sys.executable, argv, dict(os.environ), file_actions=actions, setsid=True)
        finally:
            os.close(null_fd)
        try:
            return _await_ready(pid, runtime, log_path, early)
        except KeyboardInterrupt:
            return _cancel_start(pid)


def _cancel_start(pid: int) -> int:
    """A Ctrl-C while --detach waits: the server it started is stopped (as at a start that took
    too long), not left to start unseen after a traceback."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    start = "\n" if sys.stderr.isatty() else ""  # after the ^C a terminal echoes
    print(f"{start}[cancelled] by Ctrl-C: the job server being started (pid {pid}) was stopped", file=sys.stderr)
    return 130


def _logs_to(log_path: Path, *, early: bool) -> bool:
    """:func:`_output_to`, or False when the log cannot be written (the error printed)."""
    try:
        _output_to(log_path, early=early)
    except OSError as exc:
        print(f"error: the log file {log_path}: {exc}", file=sys.stderr)
        return False
    return True


def _output_to(log_path: Path, *, early: bool = False) -> None:
    """From here on the server's output (stdout, stderr, its log lines) goes to ``log_path``,
    rotated first when it grew past ``LOG_ROTATE_BYTES``. Called once the server owns its jobs
    directory and listens: a server that could not start never touches the log (another's).

    ``early`` (a --detach child): its stderr is the file --detach gave it, whose lines so far
    (its start, a ``--token`` warning) are copied into the log first, as they belonged there."""
    sys.stdout.flush()
    sys.stderr.flush()
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _rotate(log_path)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        if early:
            _copy_from_start(2, log_fd)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
    finally:
        os.close(log_fd)


def _copy_from_start(source: int, target: int) -> None:
    """Append what the file open as ``source`` holds, from its start, to ``target``."""
    offset = 0
    while chunk := os.pread(source, 65536, offset):
        os.write(target, chunk)
        offset += len(chunk)


def _await_ready(pid: int, runtime: Path, log_path: Path, early: IO[bytes]) -> int:
    deadline = time.monotonic() + DETACH_TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            said = _tail(early) or f"error: the server exited with status {code} (see {log_path})"
            print(said, file=sys.stderr)
            return code if code > 0 else 2
        info = read_runtime_file(runtime)
        if info is not None and info.pid == pid:
            print(f"listening on {info.url}", flush=True)
            print(f"pid {pid}, runtime file {runtime}, log {log_path}", flush=True)
            return 0
        time.sleep(0.02)
    print(f"error: the server did not start within {DETACH_TIMEOUT:g} s (see {log_path})", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return 2


def _rotate(log_path: Path) -> None:
    with contextlib.suppress(OSError):
        if log_path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))


def _tail(early: IO[bytes], lines: int = 5) -> str:
    """The last lines the server wrote before it wrote to its log."""
    early.seek(0)
    text = early.read().decode("utf-8", errors="replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def stop_main(argv: Sequence[str]) -> int:
    """``python -m cc_executor_nb.server stop``: 0 when it stopped the job server, 1 when none ran,
    2 when it could not (still alive after ``--timeout``; a runtime file not trusted)."""
    parser = OneLineParser(
        prog="python -m cc_executor_nb.server stop",
        description="Stop the user's job server: it cancels its jobs (no process is left) and exits.",
    )
    parser.add_argument("--runtime-file", metavar="PATH",
                        help="the job server's runtime file "
                        "(default: JUPYTER_RUNTIME_DIR/cc_executor_nb-jobserver.json)")
    parser.add_argument("--timeout", type=_seconds, default=60.0, help="seconds to wait for it (default 60)")
    args = parser.parse_args(argv)
    path = args.runtime_file or str(default_runtime_file())
    info = read_runtime_file(path)
    # Only a live job server is asked: a stale file's port may be another service's now.
    active = _active_jobs(info) if info is not None and serves(info) else "it did not say how many"
    untrusted, invalid = untrusted_because(path), invalid_because(path)
    try:
        pid = stop_job_server(path, args.timeout)
    except (TimeoutError, UntrustedRuntimeFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if pid is None or info is None:
        removed = ""
        if untrusted:
            removed = f"; its stale runtime file, not trusted ({untrusted[0]}), was removed"
        elif invalid and not os.path.lexists(path):
            removed = f"; the file was no job server's runtime file ({invalid}) and was removed"
        elif invalid:
            removed = f"; the file is no job server's runtime file ({invalid}): left as it is"
        print(f"no job server runs ({path}){removed}")
        return 1
    print(f"stopped the job server at {info.url} (pid {pid}); {_cancelled(active)}")
    return 0


def _active_jobs(info: RuntimeInfo) -> Counter[str] | str:
    """How many jobs the server runs and holds paused now (by status): those stopping it
    cancels. Otherwise why that is not known: it did not answer within a few seconds, or
    it could not be reached (its TLS certificate not trusted, said as a client says it)."""
    from ..client import connect, os_reason  # the server itself never needs the client

    context = client_context(info)

    async def count() -> Counter[str]:
        async with await connect(info.url, info.token, auto_reconnect=False, ssl=context) as client:
            return Counter(str(job.get("status")) for job in await client.jobs()
                           if job.get("status") in ACTIVE_STATUSES)

    try:
        return asyncio.run(asyncio.wait_for(count(), 5.0))
    except TimeoutError:  # before OSError, whose subclass it is
        return "it did not say how many"
    except OSError as exc:
        logger.debug("could not list the job server's jobs: %r", exc)
        return f"how many is not known: {os_reason(info.url, exc)}"
    except (CCExecError, WebSocketException) as exc:
        logger.debug("could not list the job server's jobs: %r", exc)
        return "it did not say how many"


def _cancelled(active: Counter[str] | str) -> str:
    """What stopping cancelled, for the stop command's line: paused jobs are named as such,
    never counted among the running ones."""
    if isinstance(active, str):
        return f"it cancelled its running and paused jobs ({active})"
    running, paused = active["running"], active["paused"]
    if running + paused == 0:
        return "no jobs were running"
    if paused == 0:
        return f"cancelled {running} running job{'s' if running != 1 else ''}"
    if running == 0:
        return f"cancelled {paused} paused job{'s' if paused != 1 else ''}"
    return f"cancelled {running + paused} jobs ({running} running, {paused} paused)"
