"""Server-level settings in one frozen value, and the one factory that builds a server.

Every way of starting a server goes through :func:`build_server`: the standalone
``python -m cc_executor_nb.server``, the terminal client's private server, the
in-kernel server, the self-test and the test suite. A :class:`ServerSettings` is
validated when it is made, so a bad interval or limit from any entry point (a flag, an
environment variable, ``%config``) is one clear ``ValueError``, never a spinning loop.

Settings that belong to one run (heartbeat interval, inactivity threshold, timeout,
kill grace) travel in ``execute``; these here are the server's own. A server is never
changed after it starts: the kernel side starts a new one when these differ.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..protocol import (
    CAPTURE_MODES,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_INACTIVITY_THRESHOLD,
    DEFAULT_KILL_GRACE,
    MIN_INTERVAL,
)
from .replay import MEMORY_TAIL
from .streams import CHUNK_LIMIT
from .supervisor import DEFAULT_KEEP_ENV, DEFAULT_SECRET_ENV

if TYPE_CHECKING:
    from .handler import EnhancedWebSocketHandler

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_JOB_RETENTION",
    "DEFAULT_JOB_STORAGE_LIMIT",
    "MIN_DISK_LIMIT",
    "ServerSettings",
    "build_server",
    "check_spool_dir",
]

DEFAULT_HISTORY = "default"
"""``history_path`` meaning ``~/.cache/cc_executor_nb/history.sqlite3``."""
DEFAULT_JOB_RETENTION = 7 * 24 * 3600.0
"""A week."""
DEFAULT_JOB_STORAGE_LIMIT = 1 << 30
"""1 GiB of job logs."""
MIN_DISK_LIMIT = 64 << 20
"""The smallest disk limit: room for what a run's capture files take before it stops."""


@dataclass(frozen=True)
class ServerSettings:
    """What a server is; compare two with ``==`` to know whether one can serve for the other."""

    # Timing
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    inactivity_threshold: float = DEFAULT_INACTIVITY_THRESHOLD
    heartbeat_mode: str = "fixed"
    min_heartbeat_interval: float = 1.0
    metrics_interval: float = 1.0
    """Seconds between ``process.metrics``; 0 sends none."""
    # Access
    token: str | None = field(default=None, repr=False)
    """None: a fresh random token (unless ``allow_no_token``)."""
    allow_no_token: bool = False
    allowed_origins: tuple[str, ...] = ()
    # Processes
    kill_grace: float = DEFAULT_KILL_GRACE
    allowed_commands: tuple[str, ...] = ()
    """Empty: any program. Names (looked up on PATH) or absolute paths, compared resolved."""
    secret_env: tuple[str, ...] = DEFAULT_SECRET_ENV
    """Patterns of the server's variables a child never gets."""
    keep_env: tuple[str, ...] = DEFAULT_KEEP_ENV
    """Patterns kept even when a ``secret_env`` pattern matches (what claude needs)."""
    max_processes: int | None = 128
    max_sessions: int | None = 128
    # Output
    capture: str = "file"
    """How runs capture stdout and stderr unless ``execute`` says: "file" or "pipe"."""
    chunk_limit: int = CHUNK_LIMIT
    """Characters per ``process.output`` piece."""
    output_memory_limit: int = 8 << 20
    """Characters of a run's output queued in memory before it spills to disk."""
    spool_dir: str | None = None
    """Where capture files, spools and replay logs live (unlinked); None: the temp dir."""
    # Reliability
    detach_ttl: float = 600.0
    replay_limit: int = 256 << 20
    replay_memory: int = MEMORY_TAIL
    """Bytes of a session's newest unacknowledged notifications kept in memory (0: all on disk)."""
    # Disk
    disk_limit: int | None = 4 << 30
    """Bytes of temporary files (spools, replay logs, capture files) for the whole server."""
    session_disk_limit: int | None = 1 << 30
    """The same for one session."""
    # Limits
    max_connections: int | None = 512
    """Connections at once, handshakes under way included."""
    max_message_size: int = 1 << 20
    handshake_timeout: float = 10.0
    ping_interval: float | None = 20.0
    """None (or 0 from a flag): no WebSocket pings."""
    ping_timeout: float | None = 20.0
    # Progress
    history_path: str | None = DEFAULT_HISTORY
    """SQLite file of run durations; ``"default"``: the user's cache; None: no history."""
    # Durable jobs (the job server)
    jobs_dir: str | None = None
    """Where durable jobs are kept; None: this server refuses ``durable: true``."""
    job_retention: float = DEFAULT_JOB_RETENTION
    """Seconds a finished job (record and output) is kept."""
    job_storage_limit: int = DEFAULT_JOB_STORAGE_LIMIT
    """Bytes the logs of all jobs may take; past it the oldest finished jobs go first."""
    idle_exit: float = 0.0
    """Seconds with no connection and no running job after which the server exits; 0: never."""

    def __post_init__(self) -> None:
        self._check_timing()
        self._check_limits()
        if self.capture not in CAPTURE_MODES:
            raise ValueError(f"capture must be 'file' or 'pipe', not {self.capture!r}")
        check_spool_dir(self.spool_dir)
        for name in ("secret_env", "keep_env", "allowed_commands", "allowed_origins"):
            _check_names(name, getattr(self, name))
        if self.token is not None and (not self.token or self.token != self.token.strip()):
            raise ValueError("token must be non-empty and have no surrounding blanks")

    def _check_timing(self) -> None:
        for name in ("heartbeat_interval", "inactivity_threshold", "min_heartbeat_interval"):
            _check_seconds(name, getattr(self, name), minimum=MIN_INTERVAL)
        for name in ("metrics_interval", "kill_grace", "detach_ttl", "job_retention", "idle_exit"):
            _check_seconds(name, getattr(self, name), minimum=0.0)
        _check_seconds("handshake_timeout", self.handshake_timeout, minimum=MIN_INTERVAL)
        for name in ("ping_interval", "ping_timeout"):
            value = getattr(self, name)
            if value is not None:
                _check_seconds(name, value, minimum=MIN_INTERVAL)
        if self.heartbeat_mode not in ("fixed", "adaptive"):
            raise ValueError(f"heartbeat_mode must be 'fixed' or 'adaptive', not {self.heartbeat_mode!r}")

    def _check_limits(self) -> None:
        _check_count("max_message_size", self.max_message_size, minimum=1024)
        _check_count("replay_limit", self.replay_limit, minimum=1)  # 0 kept the newest notification only
        _check_count("replay_memory", self.replay_memory, minimum=0)
        _check_count("chunk_limit", self.chunk_limit, minimum=1)
        _check_count("output_memory_limit", self.output_memory_limit, minimum=1)
        _check_count("job_storage_limit", self.job_storage_limit, minimum=0)
        if self.jobs_dir is not None and (not isinstance(self.jobs_dir, str) or not self.jobs_dir.strip()):
            raise ValueError(f"jobs_dir must be a directory path, not {self.jobs_dir!r}")
        for name in ("max_processes", "max_sessions", "max_connections"):
            if getattr(self, name) is not None:
                _check_count(name, getattr(self, name), minimum=1)
        for name in ("disk_limit", "session_disk_limit"):
            if getattr(self, name) is not None:
                _check_count(name, getattr(self, name), minimum=MIN_DISK_LIMIT)

    def replace(self, **changes: Any) -> ServerSettings:
        """A copy with ``changes`` applied (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return ServerSettings(**{**values, **changes})


def _check_seconds(name: str, value: object, *, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g} s, not {value!r}")


def _check_count(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, not {value!r}")


def _check_names(name: str, value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{name} must be a tuple of non-empty strings, not {value!r}")


def check_spool_dir(path: str | None, name: str = "spool_dir") -> None:
    """``path`` (None: the system's temporary directory) must be an existing directory; the error names ``name``."""
    if path is not None and not os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is not a directory")


def build_server(settings: ServerSettings | None = None) -> EnhancedWebSocketHandler:
    """The enhanced handler, assembled from its parts as ``settings`` say (not started)."""
    from .disk import DiskBudget
    from .handler import EnhancedWebSocketHandler
    from .jobs import JobStore
    from .session import SessionManager
    from .streams import StreamHandler
    from .supervisor import ProcessManager

    settings = settings or ServerSettings()
    return EnhancedWebSocketHandler(
        SessionManager(max_sessions=settings.max_sessions),
        ProcessManager(
            kill_grace=settings.kill_grace,
            allowed_commands=settings.allowed_commands or None,
            max_processes=settings.max_processes,
            secret_env_names=settings.secret_env,
            keep_env_names=settings.keep_env,
        ),
        StreamHandler(
            chunk_limit=settings.chunk_limit,
            memory_limit=settings.output_memory_limit,
            spool_dir=settings.spool_dir,
            capture=settings.capture,
        ),
        settings.heartbeat_interval,
        inactivity_threshold=settings.inactivity_threshold,
        heartbeat_mode=settings.heartbeat_mode,
        min_heartbeat_interval=settings.min_heartbeat_interval,
        metrics_interval=settings.metrics_interval,
        token=settings.token,
        allow_no_token=settings.allow_no_token,
        allowed_origins=settings.allowed_origins,
        detach_ttl=settings.detach_ttl,
        replay_limit=settings.replay_limit,
        replay_memory=settings.replay_memory,
        disk=DiskBudget(settings.disk_limit, settings.session_disk_limit, settings.spool_dir),
        max_connections=settings.max_connections,
        max_message_size=settings.max_message_size,
        open_timeout=settings.handshake_timeout,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        history_path=settings.history_path,
        jobs=None if settings.jobs_dir is None else JobStore(
            settings.jobs_dir, retention=settings.job_retention, storage_limit=settings.job_storage_limit
        ),
        settings=settings,
    )
