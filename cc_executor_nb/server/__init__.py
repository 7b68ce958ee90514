"""The server side: the enhanced handler that runs CLI processes and streams them.

Nothing here imports the kernel side, Claude, IPython or ipywidgets (a test enforces it):
the same code runs inside a kernel and standalone (``python -m cc_executor_nb.server``).

::

    handler = EnhancedWebSocketHandler(
        SessionManager(), ProcessManager(), StreamHandler(), heartbeat_interval=20
    )

Names load on first use, so ``python -m cc_executor_nb.server.watchdog`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EnhancedWebSocketHandler": "handler",
    "ProcessManager": "supervisor",
    "SessionManager": "session",
    "StreamHandler": "streams",
    "build_handler": "main",
    "main": "main",
    "parse_args": "main",
    "write_token_file": "main",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cc_executor_nb.server' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
