"""The user's job server, seen from a kernel: found, checked, started on demand, stopped.

Durable runs go to ``python -m cc_executor_nb.server --jobs``, one per user and machine,
outside every kernel. It listens on 127.0.0.1 with a fresh token that lives only in its
runtime file (0600, ``jupyter_runtime_dir()/cc_executor_nb-jobserver.json``; see
:mod:`cc_executor_nb.server.runtime`). :func:`job_server` reads that file, checks that
the process it names is a job server and that it accepts the token, and otherwise starts
one with ``--detach`` (the server's parent exits once it listens, so no kernel is its
parent and a kernel restart does not touch it). Kernels serialise this behind a lock
file, so two kernels never start two servers; the server's own lock on its jobs
directory would refuse a second one anyway.

Durable runs carry the kernel's environment (minus known secrets) and working
directory: the job server was started by whichever kernel came first, so its own
environment is not the one a run expects.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import logging
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import psutil
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as sync_connect

from ..client import Locator, os_reason
from ..errors import CCExecError
from ..redaction import install_redactor
from ..server.runtime import (
    RuntimeInfo,
    client_context,
    default_runtime_file,
    read_runtime_file,
    serves,
    stop_job_server,
    untrusted_because,
)
from ..server.supervisor import DEFAULT_KEEP_ENV, DEFAULT_SECRET_ENV, is_secret
from .config import CCExec

__all__ = [
    "START_TIMEOUT",
    "JobServerError",
    "differing_settings",
    "durable_environment",
    "job_server",
    "job_server_locator",
    "notebook_key",
    "readable_size",
    "server_arguments",
    "settings_note",
    "stop_server",
]

logger = logging.getLogger(__name__)

_SERVER_MODULE = "cc_executor_nb.server"
START_TIMEOUT = 60.0
"""Seconds to wait for the start lock and for a new server to listen."""
EXIT_BUSY = 3
"""The server's exit status when another server owns the jobs directory."""
_PROBE_TIMEOUT = 5.0


class JobServerError(CCExecError, RuntimeError):
    """The job server could not be started or reached."""


def job_server(settings: CCExec | None = None) -> RuntimeInfo:
    """The user's running job server, started (with ``settings``) if none answers."""
    runtime = default_runtime_file()
    with _start_lock(runtime.with_suffix(".lock")):
        info = read_runtime_file(runtime)
        if info is not None and _answers(info):
            return info
        if _start(settings or CCExec(), runtime) and (untrusted := untrusted_because(runtime)) is not None:
            # A server owns the jobs directory (ours refused to start), but its file is not
            # read: waiting would not change that, and the fix is the person's.
            why, fix = untrusted
            raise JobServerError(
                f"the job server's runtime file {runtime} is not trusted ({why}) and a job server owns its jobs "
                f"directory, so no other can start: {f'{fix}, or ' if fix else ''}end that server"
            )
        return _await_answer(runtime)


def job_server_locator(settings: CCExec | None = None) -> Locator:
    """Where the user's job server listens now, its token and how to verify its TLS
    certificate (:func:`client_context`), read from its runtime file at each call
    (None while the file names no live server of ours listening there): what a run
    following a job asks before each reconnect, since a job server that died and was
    started again has another port and token (and the follower dials nothing while None).

    With ``settings``, a follower whose job server is gone (no file, or its process is no
    job server) starts the next one itself, once: that server marks the job ``lost`` and
    the run ends saying so, rather than reconnecting until its limit. It blocks (call it
    off the loop).
    """
    runtime = default_runtime_file()  # this kernel's runtime directory, as when the run began
    tried = False

    def locate() -> tuple[str, str | None, ssl.SSLContext | None] | None:
        nonlocal tried
        info = read_runtime_file(runtime)
        if info is not None and not serves(info):
            info = None  # a stale file: its port may be anybody's now, never given the token
        if settings is not None and not tried and info is None:
            tried = True  # once: a server that cannot start is not started again at every attempt
            try:
                info = job_server(settings)
            except JobServerError as exc:
                logger.warning("! the job server is gone and could not be started again: %s", exc)
        return (info.url, info.token, client_context(info)) if info is not None else None

    return locate


def stop_server(timeout: float = 60.0) -> bool:
    """Stop the user's job server: its jobs are cancelled and no process is left.

    Returns False when none was running. Raises UntrustedRuntimeFile, naming the file, why
    and what to do, when its runtime file is not trusted and not a stale one of ours.
    """
    return stop_job_server(default_runtime_file(), timeout) is not None


def server_arguments(settings: CCExec) -> list[str]:
    """The job server's command line flags for ``settings``."""
    history = settings.history_path.strip()
    args = [
        "--jobs",
        "--idle-exit", repr(float(settings.job_server_idle_exit)),
        "--job-retention", repr(float(settings.job_retention)),
        "--job-storage-limit", str(int(settings.job_storage_limit)),
        "--kill-grace", repr(float(settings.kill_grace)),
        "--heartbeat-mode", settings.heartbeat_mode,
        "--min-heartbeat-interval", repr(float(settings.min_heartbeat_interval)),
    ]
    if history.lower() == "none":
        args.append("--no-history")
    elif history:  # absolute, as the in-kernel server opens it: the job server starts in the home directory
        args += ["--history-db", os.path.abspath(history)]
    if settings.allowed_commands:
        args += ["--allowed-commands", ",".join(settings.allowed_commands)]
    args += ["--secret-env", ",".join(settings.secret_env), "--keep-env", ",".join(settings.keep_env)]
    if settings.capture:  # '' is the server's choice, as its default is
        args += ["--capture", settings.capture]
    if settings.spool_dir:  # absolute: the server starts in the home directory
        args += ["--spool-dir", os.path.abspath(settings.spool_dir)]
    args += [
        "--disk-limit", str(int(settings.disk_limit)),  # 0: no limit, for both
        "--session-disk-limit", str(int(settings.session_disk_limit)),
    ]
    return args


_SERVER_SETTINGS = (
    ("job_server_idle_exit", "idle_exit"),
    ("job_retention", "job_retention"),
    ("job_storage_limit", "job_storage_limit"),
    ("kill_grace", "kill_grace"),
    ("heartbeat_mode", "heartbeat_mode"),
    ("min_heartbeat_interval", "min_heartbeat_interval"),
    ("history_path", "history_path"),
    ("allowed_commands", "allowed_commands"),
    ("secret_env", "secret_env"),
    ("keep_env", "keep_env"),
    ("capture", "capture"),
    ("spool_dir", "spool_dir"),
    ("disk_limit", "disk_limit"),
    ("session_disk_limit", "session_disk_limit"),
)
"""The CCExec settings :func:`server_arguments` gives a job server, and the server's names of them."""


def differing_settings(settings: CCExec, server_argv: Sequence[str]) -> list[str]:
    """The settings of ``settings`` that a job server started with the flags ``server_argv``
    has otherwise, each as ``CCExec.NAME (the job server's X, this kernel's Y)``; none when
    its flags do not parse (a server of another version: nothing is known).

    A difference between two defaults is not one: a job server the user started without
    ``--idle-exit`` never exits (its default), where a kernel's would after an hour (CCExec's),
    and neither was anybody's choice. A value that is not its side's default (a flag the user
    gave, a kernel's setting of CCExec, which every job server a kernel starts was given) is
    named whenever the other side has another."""
    from ..server.main import server_settings  # the kernel needs the server's parser only here

    theirs, ours = server_settings(server_argv), server_settings(server_arguments(settings))
    their_default, our_default = server_settings(["--jobs"]), server_settings(server_arguments(CCExec()))
    if theirs is None or ours is None or their_default is None or our_default is None:
        return []
    return [
        f"CCExec.{trait} (the job server's {_shown(name, getattr(theirs, name))}, "
        f"this kernel's {_shown(name, getattr(ours, name))})"
        for trait, name in _SERVER_SETTINGS
        if getattr(theirs, name) != getattr(ours, name)
        and not (getattr(theirs, name) == getattr(their_default, name)
                 and getattr(ours, name) == getattr(our_default, name))
    ]


_SIZES = frozenset({"job_storage_limit", "disk_limit", "session_disk_limit"})
"""The server settings that are bytes: shown as the README writes sizes (``1 GiB``)."""


def _shown(name: str, value: object) -> str:
    if isinstance(value, tuple):
        return repr(",".join(value)) if value else "(empty)"
    if isinstance(value, int) and name in _SIZES:
        return readable_size(value)
    if isinstance(value, float):
        return f"{value:g}"
    if value is None and name in _SIZES:
        return "no limit"
    return "none" if value is None else repr(value) if isinstance(value, str) else str(value)


def readable_size(count: int) -> str:
    """``count`` bytes in the largest unit of 1024 it reaches (``512 MiB``, ``1.5 GiB``,
    ``100 bytes``), to four significant digits."""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.4g} {unit}"
    return f"{count} bytes"


_noted: set[tuple[int, float, str]] = set()
"""The notes already given (job server, its start, what differs): once per kernel each."""


def settings_note(info: RuntimeInfo, settings: CCExec) -> str | None:
    """A note naming the settings of this kernel that the job server ``info`` names runs
    with otherwise (another kernel, or the user, started it: it keeps its own until it
    stops), the first time this kernel meets that server with those differences; else None."""
    differing = differing_settings(settings, _server_argv(info.pid))
    key = (info.pid, info.started_at, "; ".join(differing))
    if not differing or key in _noted:
        return None
    _noted.add(key)
    return (
        f"note: the job server (pid {info.pid}) was started with other settings than this kernel's, and keeps "
        f"its own until it stops: {', '.join(differing)}. To use this kernel's, stop it (cancelling its jobs: "
        "cc_executor_nb.jobs.stop_server()); the next durable run starts one with them"
    )


def _server_argv(pid: int) -> list[str]:
    """The flags the job server ``pid`` was started with (after ``-m cc_executor_nb.server``)."""
    try:
        words = psutil.Process(pid).cmdline()
        return words[words.index(_SERVER_MODULE) + 1:]
    except (psutil.Error, ValueError):
        return ["--not-a-server-flag"]  # parses as nothing: no note


def durable_environment(
    extra: Mapping[str, str] | None,
    secret: Iterable[str] = DEFAULT_SECRET_ENV,
    keep: Iterable[str] = DEFAULT_KEEP_ENV,
    guarded: Iterable[str] = (),
) -> dict[str, str]:
    """The environment a durable run asks for: this kernel's, minus secrets (the patterns
    of ``secret`` not matched by ``keep``, as for any run) and the variables ``guarded``
    names (those a server with an allow-list refuses: the job server keeps its own), plus
    ``extra`` (the run's own ``env``, sent as given)."""
    secret, keep, guarded = tuple(secret), tuple(keep), tuple(guarded)
    own = {k: v for k, v in os.environ.items()
           if not is_secret(k, secret, keep) and not any(fnmatch.fnmatchcase(k, p) for p in guarded)}
    return {**own, **(extra or {})}


def notebook_key() -> str:
    """What identifies "this notebook" across kernel restarts (see the module docstring)."""
    session = os.environ.get("JPY_SESSION_NAME")
    if session:
        return session
    connection = _connection_file()
    if connection:
        return "kernel:" + os.path.basename(connection)
    return "cwd:" + os.getcwd()


def _connection_file() -> str | None:
    """The kernel's connection file; None outside a kernel (a script, terminal IPython)."""
    try:
        from ipykernel.connect import get_connection_file
        from traitlets.config.configurable import MultipleInstanceError
    except ImportError:
        return None
    try:
        return str(get_connection_file())
    except (RuntimeError, MultipleInstanceError):  # terminal IPython's app is the singleton there
        return None


# Starting


@contextlib.contextmanager
def _start_lock(path: Path) -> Iterator[None]:
    """Hold ``path`` exclusively (flock), waiting at most START_TIMEOUT seconds."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise JobServerError(f"another process holds {path} (starting the job server?)") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _start(settings: CCExec, runtime: Path) -> bool:
    """Start a job server detached; True when it found another owning the jobs directory."""
    argv = [
        sys.executable, "-m", "cc_executor_nb.server", *server_arguments(settings),
        "--runtime-file", str(runtime), "--detach",
    ]
    home = os.path.expanduser("~")
    proc = subprocess.run(
        argv,
        cwd=home if os.path.isdir(home) else "/",
        env=durable_environment(None),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    if proc.returncode not in (0, EXIT_BUSY):
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise JobServerError("the job server did not start: " + (detail[-1] if detail else f"exit {proc.returncode}"))
    return proc.returncode == EXIT_BUSY


def _await_answer(runtime: Path) -> RuntimeInfo:
    """The runtime file of a server that answers (a busy exit means another is starting)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        info = read_runtime_file(runtime)
        if info is not None and _answers(info):
            return info
        time.sleep(0.05)
    raise JobServerError(f"no job server answers ({runtime}; see its .log next to it)")


def _answers(info: RuntimeInfo) -> bool:
    """Whether the named process is a job server of ours, listening on the file's port,
    that accepts the token (the token goes nowhere else). Raises JobServerError, saying
    why, when it is one whose TLS certificate is not trusted."""
    if not serves(info):
        return False
    install_redactor(info.token)  # websockets logs the Authorization header and frames at DEBUG
    try:
        with sync_connect(
            info.url,
            additional_headers={"Authorization": f"Bearer {info.token}"},
            ssl=client_context(info),  # None for ws:// (and the default context for wss://)
            open_timeout=_PROBE_TIMEOUT,
            proxy=None,
            compression=None,
        ) as ws:
            ws.recv(timeout=_PROBE_TIMEOUT)  # the "connected" notification
    except ssl.SSLCertVerificationError as exc:
        # A job server started with --certfile whose certificate this kernel does not trust
        # (neither the system's store nor the certificate its runtime file names, moved since):
        # it is ours and listening, so another cannot start (its jobs directory is taken).
        raise JobServerError(f"the job server at {info.url} cannot be used: {os_reason(info.url, exc)}") from None
    except (OSError, TimeoutError, WebSocketException):
        return False
    return True
