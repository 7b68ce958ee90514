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
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..protocol import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_INACTIVITY_THRESHOLD,
    DEFAULT_KILL_GRACE,
    MIN_INTERVAL,
)
from .streams import CHUNK_LIMIT

if TYPE_CHECKING:
    from .handler import EnhancedWebSocketHandler

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_JOB_RETENTION",
    "DEFAULT_JOB_STORAGE_LIMIT",
    "ServerSettings",
    "build_server",
]

DEFAULT_HISTORY = "default"
"""``history_path`` meaning ``~/.cache/cc_executor_nb/history.sqlite3``."""
DEFAULT_JOB_RETENTION = 7 * 24 * 3600.0
"""A week."""
DEFAULT_JOB_STORAGE_LIMIT = 1 << 30
"""1 GiB of job logs."""


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
    """Empty: any program."""
    max_processes: int | None = None
    max_sessions: int | None = None
    # Output
    chunk_limit: int = CHUNK_LIMIT
    """Characters per ``process.output`` piece."""
    output_memory_limit: int = 8 << 20
    """Characters of a run's output queued in memory before it spills to disk."""
    # Reliability
    detach_ttl: float = 600.0
    replay_limit: int = 256 << 20
    # Limits
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
        _check_count("max_message_size", self.max_message_size, minimum=1024)
        _check_count("replay_limit", self.replay_limit, minimum=0)
        _check_count("chunk_limit", self.chunk_limit, minimum=1)
        _check_count("output_memory_limit", self.output_memory_limit, minimum=1)
        _check_count("job_storage_limit", self.job_storage_limit, minimum=0)
        if self.jobs_dir is not None and (not isinstance(self.jobs_dir, str) or not self.jobs_dir.strip()):
            raise ValueError(f"jobs_dir must be a directory path, not {self.jobs_dir!r}")
        for name in ("max_processes", "max_sessions"):
            if getattr(self, name) is not None:
                _check_count(name, getattr(self, name), minimum=1)
        if self.token is not None and (not self.token or self.token != self.token.strip()):
            raise ValueError("token must be non-empty and have no surrounding blanks")

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


def build_server(settings: ServerSettings | None = None) -> EnhancedWebSocketHandler:
    """The enhanced handler, assembled from its parts as ``settings`` say (not started)."""
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
        ),
        StreamHandler(chunk_limit=settings.chunk_limit, memory_limit=settings.output_memory_limit),
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
