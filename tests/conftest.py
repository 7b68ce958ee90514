"""Shared fixtures: a real server on 127.0.0.1:0, a real client, the fake CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pytest_timeout import get_env_settings
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

import cc_executor_nb.redaction as redaction_module
from cc_executor_nb.client import Client, connect
from cc_executor_nb.events import Completed, Event
from cc_executor_nb.redaction import SecretRedactor
from cc_executor_nb.server.config import ServerSettings, build_server
from cc_executor_nb.server.handler import EnhancedWebSocketHandler

from .util import scaled

# Claude's Bash tool starts a login shell; where ~/.bashrc runs `pyenv init` (this image),
# every such shell takes pyenv's rehash lock, and a shell killed while holding it (a test
# that cancels a run) leaves the lock behind: each later shell would wait pyenv's 60 s for
# it. Waiting 2 s bounds that to a delay; the rehash itself is not needed by any test.
os.environ.setdefault("PYENV_REHASH_TIMEOUT", "2")

# A suite started in the background of a shell without job control (`pytest ... &` in a
# script) inherits SIGINT ignored, and every child it starts would too: the tests that send a
# Ctrl-C to a client or a terminal IPython would fail for that reason alone (23 of
# test_terminal.py did). Its children get the signal's default, as from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

FAKE_CLI = str(Path(__file__).with_name("fake_cli.py"))
TOKEN = "test-token-0123456789"


def fake(*args: str) -> list[str]:
    """argv that runs the fake CLI with ``args``."""
    return [sys.executable, FAKE_CLI, *args]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stretch every test's timeout (its own mark, else the configured default) by the time scale."""
    default = get_env_settings(config).timeout
    for item in items:
        mark = item.get_closest_marker("timeout")
        args, kwargs = (list(mark.args), dict(mark.kwargs)) if mark is not None else ([], {})
        seconds = args.pop(0) if args else kwargs.pop("timeout", default)
        if seconds:  # 0 or None: no timeout, nothing to stretch
            item.add_marker(pytest.mark.timeout(scaled(float(seconds)), *args, **kwargs), append=False)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite's own ``$XDG_CACHE_HOME``: a run's history (progress estimates from earlier
    runs of a command) never comes from, nor goes to, the user's ``~/.cache``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(autouse=True)
def _redactor_secrets_per_test() -> Iterator[None]:
    """Each test starts with the log redactors' secrets it found and leaves none of its own.

    A client adds the token it sends to a process-wide redactor; without this, a test that
    connects with the token "x" made every later log line in the process read
    "[redacted]" for each "x" (a random job id in a checked warning, one run in three).
    """
    redactors = [
        f
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
        for f in logger.filters
        if isinstance(f, SecretRedactor)
    ]
    before = [set(r.secrets) for r in redactors]
    kept_out = set(redaction_module._KEPT_OUT)  # a client installs each token once
    held = redaction_module._HELD.copy()  # servers hold theirs until they close
    yield
    redaction_module._HELD.clear()
    redaction_module._HELD.update(held)
    redaction_module._KEPT_OUT.clear()
    redaction_module._KEPT_OUT.update(kept_out)
    for redactor, secrets in zip(redactors, before, strict=True):
        redactor.secrets = secrets
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            for f in logger.filters:
                if isinstance(f, SecretRedactor) and f not in redactors:
                    f.secrets = set()


TEST_SETTINGS = ServerSettings(token=TOKEN, kill_grace=2.0, history_path=None)
"""Test-friendly server settings: a known token, a short kill grace, never the user's cache."""


def make_handler(**changes: Any) -> EnhancedWebSocketHandler:
    """A handler built by the one server factory from ``TEST_SETTINGS`` with ``changes``."""
    if "allowed_commands" in changes:
        changes["allowed_commands"] = tuple(changes["allowed_commands"] or ())
    if "allowed_origins" in changes:
        changes["allowed_origins"] = tuple(changes["allowed_origins"])
    return build_server(TEST_SETTINGS.replace(**changes))


@pytest.fixture
async def server() -> AsyncIterator[EnhancedWebSocketHandler]:
    """A running handler on a free loopback port."""
    handler = make_handler()
    await handler.start("127.0.0.1", 0)
    yield handler
    await handler.close()


@pytest.fixture
async def client(server: EnhancedWebSocketHandler) -> AsyncIterator[Client]:
    """A connected client of ``server``."""
    async with await connect(server.url, TOKEN) as conn:
        yield conn


async def collect(client: Client, timeout: float = 30.0) -> list[Event]:
    """Events up to and including process.completed (within ``scaled(timeout)`` seconds)."""
    events: list[Event] = []

    async def gather() -> None:
        async for event in client.events():
            events.append(event)
            if isinstance(event, Completed):
                return

    await asyncio.wait_for(gather(), scaled(timeout))
    return events


def output_of(events: list[Event], stream: str = "stdout") -> str:
    """The concatenated output of one stream."""
    return "".join(e.params["data"] for e in events if e.method == "process.output" and e.params["type"] == stream)


def completed(events: list[Event]) -> Completed:
    """The single process.completed event."""
    done = [e for e in events if isinstance(e, Completed)]
    assert len(done) == 1
    return done[0]


def group_alive(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in a group."""
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                alive.append(proc.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return alive


@pytest.fixture
async def raw(server: EnhancedWebSocketHandler) -> AsyncIterator[ClientConnection]:
    """A bare WebSocket (no client library) past the ``connected`` notification."""
    async with ws_connect(
        server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, proxy=None
    ) as ws:
        assert json.loads(await ws.recv())["method"] == "connected"
        yield ws


async def reply(ws: ClientConnection, text: str | bytes) -> object:
    """Send a frame and return the next non-notification message."""
    await ws.send(text)
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), scaled(10)))
        if isinstance(message, list) or "method" not in message:
            return message


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private Jupyter runtime directory (never the user's) and notebook name; the shared loop
    and the job server are stopped afterwards. (Modules that need less define their own.)"""
    from cc_executor_nb.kernel.loop import stop_shared_loop
    from cc_executor_nb.server.runtime import RUNTIME_FILE_NAME, stop_job_server

    directory = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(directory))
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "this.ipynb"))
    yield directory
    stop_shared_loop()
    stop_job_server(directory / RUNTIME_FILE_NAME, timeout=scaled(60))
