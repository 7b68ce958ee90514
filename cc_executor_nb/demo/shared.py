"""The process's shared demo backend: started on the first demo run, stopped on unload.

One :class:`~cc_executor_nb.demo.server.DemoBackend` and one private config directory
per process, thread-safe. :func:`stop_demo` stops it (the extension's unload hook; it
is also registered with :mod:`atexit` when the backend first starts).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading

from .env import demo_environment
from .server import DemoBackend

__all__ = ["demo_backend", "demo_environment_for", "stop_demo"]


class _SharedDemo:
    """One lazily started demo backend and config directory (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backend: DemoBackend | None = None
        self._root: str | None = None
        self._base_env: dict[str, str] = {}
        self._atexit_registered = False

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
        root = tempfile.mkdtemp(prefix="cc-executor-demo-")
        try:
            backend = DemoBackend().start()
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        # The config is written once, here: rewriting it per run could race with a
        # running CLI that keeps its own state in the same file.
        self._base_env = demo_environment(backend.url, f"{root}/config")
        self._backend, self._root = backend, root
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        return backend

    def stop(self) -> None:
        with self._lock:
            backend, root = self._backend, self._root
            self._backend, self._root, self._base_env = None, None, {}
        if backend is not None:
            backend.stop()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


_SHARED = _SharedDemo()


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
