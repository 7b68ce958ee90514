"""Finding the ``claude`` executable a run starts (configured, project-local, or on PATH)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["find_claude"]

_INSTALL_HINT = (
    "the claude CLI was not found. Install it with `npm ci` in the "
    "cc_executor_nb project (it pins @anthropic-ai/claude-code in package.json), "
    "or globally with `npm install -g @anthropic-ai/claude-code`, "
    "or pass the path of the executable."
)


def find_claude(configured: str | None = None) -> str:
    """Return the ``claude`` executable to run.

    Order: ``configured`` (a path or a command name), then
    ``node_modules/.bin/claude`` under the project root or the current
    directory, then ``claude`` on ``PATH``. Raises `FileNotFoundError` with
    install instructions when none exists.
    """
    if configured:
        found = shutil.which(configured)
        if found:
            return found
        raise FileNotFoundError(f"{configured!r} is not an executable; {_INSTALL_HINT}")
    for candidate in _local_candidates():
        if os.access(candidate, os.X_OK) and candidate.is_file():
            return str(candidate)
    found = shutil.which("claude")
    if found:
        return found
    raise FileNotFoundError(_INSTALL_HINT)


def _local_candidates() -> list[Path]:
    # The package sits one level below the project root in a source checkout;
    # the current directory covers a project that depends on this package.
    project_root = Path(__file__).resolve().parents[2]
    relative = Path("node_modules", ".bin", "claude")
    return [project_root / relative, Path.cwd() / relative]
