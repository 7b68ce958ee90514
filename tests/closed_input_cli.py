"""A claude CLI that exits before reading its prompt, for the long one-shot prompt tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from cc_executor_nb.client import Client

from .util import scaled


def cli_that_exits_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``claude`` that closes its input at once, then exits 2 with ``error: unknown
    option`` on stderr; ``Client.input`` is held until it has closed its input, so a prompt
    written on stdin meets a closed input every time, without a timed sleep."""
    closed, executable = tmp_path / "stdin-closed", tmp_path / "claude"
    executable.write_text(f"#!/bin/sh\nexec 0<&-\ntouch '{closed}'\nsleep 0.5\n"
                          "echo 'error: unknown option' >&2\nexit 2\n")
    executable.chmod(0o755)
    real_input = Client.input

    async def input_once_closed(self: Client, data: str, **kwargs: Any) -> dict[str, Any]:
        deadline = time.monotonic() + scaled(30)
        while not closed.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return await real_input(self, data, **kwargs)

    monkeypatch.setattr(Client, "input", input_once_closed)
    return executable
