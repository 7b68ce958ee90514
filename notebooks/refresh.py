"""Execute the example notebooks top to bottom and store their outputs in place.

nbval (``make test``) compares a fresh run of every notebook with the outputs stored
in it, so run this after changing a notebook or a behaviour a notebook shows::

    .venv/bin/python notebooks/refresh.py                  # every notebook here
    .venv/bin/python notebooks/refresh.py 02_long_thinking.ipynb

Each notebook runs in a fresh kernel of this interpreter, in this folder, as nbval
runs it. Neither widget state nor execution timings are stored: the notebooks stay
small and a refresh changes only what a run really changed (and the random widget
model ids, which nbval ignores).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

__all__ = ["refresh"]

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT = 120


def refresh(path: Path) -> float:
    """Execute the notebook at ``path``, write it back with its outputs; return seconds taken."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
        store_widget_state=False,
    )
    started = time.monotonic()
    client.execute()
    seconds = time.monotonic() - started
    nbformat.write(notebook, path)
    return seconds


def main(argv: list[str]) -> int:
    paths = [HERE / name for name in argv] or sorted(HERE.glob("[0-9]*.ipynb"))
    for path in paths:
        print(f"{path.name}: {refresh(path):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
