"""The process's shared demo backend: started on the first demo run, stopped on unload.

One :class:`~cc_executor_nb.demo.server.DemoBackend` and one private config directory
per process, thread-safe. :func:`stop_demo` stops it (the extension's unload hook; it
is also registered with :mod:`atexit` when the backend first starts). The config
directory is a temporary one, removed on stop, unless :func:`keep_demo_config` named a
lasting one until then: the terminal client and the kernel's runs name the user's
(:func:`default_demo_config_dir`), so one invocation, or a kernel after a restart, resumes
another's session.
"""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

from .env import demo_environment
from .server import DemoBackend

__all__ = [
    "default_demo_config_dir",
    "demo_backend",
    "demo_environment_for",
    "keep_demo_config",
    "private_directory",
    "stop_demo",
]


class _SharedDemo:
    """One lazily started demo backend and config directory (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backend: DemoBackend | None = None
        self._root: str | None = None
        self._base_env: dict[str, str] = {}
        self._atexit_registered = False
        self._kept_config: Path | None = None

    def keep_config(self, directory: Path) -> None:
        with self._lock:
            self._kept_config = directory

    def environment(self, max_retries: int) -> dict[str, str]:
        with self._lock:
            self._ensure_started()
            return {**self._base_env, "CLAUDE_CODE_MAX_RETRIES": str(max_retries)}

    def backend(self) -> DemoBackend:
        with self._lock:
            return self._ensure_started()

    def _ensure_started(self) -> DemoBackend:
        if self._backend is not None:
            return self._backend
        config, root = self._config_directory()
        try:
            backend = DemoBackend().start()
        except BaseException:
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)
            raise
        # The config is written once, here: rewriting it per run could race with a
        # running CLI that keeps its own state in the same file.
        self._base_env = demo_environment(backend.url, config)
        self._backend, self._root = backend, root
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        return backend

    def _config_directory(self) -> tuple[str, str | None]:
        """The config directory, and the temporary root to remove on stop (None for a kept one)."""
        if self._kept_config is not None:
            return str(private_directory(self._kept_config)), None
        root = tempfile.mkdtemp(prefix="cc-executor-demo-")
        return f"{root}/config", root

    def stop(self) -> None:
        with self._lock:
            backend, root = self._backend, self._root
            self._backend, self._root, self._base_env = None, None, {}
            # Back to the first state: whoever starts the next backend says where its config lives.
            self._kept_config = None
        if backend is not None:
            backend.stop()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def private_directory(directory: Path) -> Path:
    """``directory``, created 0700 (and made 0700 if it was looser); refused unless it is ours."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ValueError(f"the demo config directory {directory} is not a directory of this user's")
    if stat.S_IMODE(info.st_mode) != 0o700:
        directory.chmod(0o700)
    return directory


_SHARED = _SharedDemo()


def default_demo_config_dir() -> Path:
    """``$XDG_CACHE_HOME/cc_executor_nb/demo-claude-config`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cc_executor_nb" / "demo-claude-config"


def keep_demo_config(directory: Path | None = None) -> None:
    """Keep the demo CLI's config (its sessions) in ``directory``, kept after stop.

    Default: :func:`default_demo_config_dir`. It takes effect when the backend next starts
    (a running one keeps its config) and lasts until :func:`stop_demo`; the directory is
    created 0700 then, and refused unless it is this user's. The user's own ``~/.claude``
    is still never used.
    """
    _SHARED.keep_config(directory or default_demo_config_dir())


def demo_environment_for(max_retries: int) -> dict[str, str]:
    """The environment that points a child CLI at the shared backend (started if needed)."""
    return _SHARED.environment(max_retries)


def demo_backend() -> DemoBackend:
    """The shared demo backend, started if it is not running (e.g. to read its requests)."""
    return _SHARED.backend()


def stop_demo() -> None:
    """Stop the shared demo backend and remove its config directory; idempotent.

    A later demo run starts a fresh one.
    """
    _SHARED.stop()
