"""cc_executor_nb: run long Claude Code and CLI jobs from Jupyter, streamed live.

Server side (the "enhanced handler")::

    from cc_executor_nb import (
        EnhancedWebSocketHandler, ProcessManager, SessionManager, StreamHandler,
    )
    handler = EnhancedWebSocketHandler(
        SessionManager(), ProcessManager(), StreamHandler(), heartbeat_interval=20
    )

In a notebook::

    %load_ext cc_executor_nb
    %ccexec -c "pytest -q" --wait        # or a Claude prompt: %ccexec Explain this repo
    r = cc_executor_nb.run("make", command=True)   # the same from Python
    %ccexec --durable -c "python train.py"   # a job that outlives the kernel
    cc_executor_nb.jobs(); cc_executor_nb.attach("last")
    b = cc_executor_nb.map("Summarise {item}", files)   # many runs as one Batch

Importing this package has no side effects; names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EnhancedWebSocketHandler": "server.handler",
    "SessionManager": "server.session",
    "ProcessManager": "server.supervisor",
    "StreamHandler": "server.streams",
    "Client": "client",
    "connect": "client",
    "CCExec": "kernel.config",
    "Run": "kernel.run",
    "run": "kernel.api",
    "arun": "kernel.api",
    "jobs": "kernel.jobs",
    "map": "kernel.batch",
    "Batch": "kernel.batch",
    "attach": "kernel.jobs",
    "load_ipython_extension": "kernel.magic",
    "unload_ipython_extension": "kernel.magic",
}

# Spelled out (not built from _EXPORTS) so static tools can read it; tests/test_layout.py
# checks that the two agree.
__all__ = [
    "Batch",
    "CCExec",
    "Client",
    "EnhancedWebSocketHandler",
    "ProcessManager",
    "Run",
    "SessionManager",
    "StreamHandler",
    "__version__",
    "arun",
    "attach",
    "connect",
    "jobs",
    "load_ipython_extension",
    "map",
    "run",
    "unload_ipython_extension",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cc_executor_nb' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
