"""Time in tests: one scale factor and one way to wait for a condition.

Every time-sensitive assertion and every deadline goes through :func:`scaled`, so a slow
machine (or a loaded CI runner) can stretch them all at once with the environment
variable ``CCX_TEST_TIME_SCALE`` (default 1; e.g. 3 on a busy 2-core box); conftest.py
stretches every test's pytest-timeout by the same factor. Waiting for something to
happen is :func:`eventually` (threads) or :func:`eventually_async` (coroutines): poll
with a deadline, never a fixed sleep, and fail with a message that says what never
happened. A sleep stays only where it is the behaviour under test (a child that is
silent for 2 s, a reader that stalls), with any tolerance around it ``scaled()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

__all__ = ["TIME_SCALE", "alive", "eventually", "eventually_async", "redacted_secrets", "scaled"]

T = TypeVar("T")


CTRL_C_AS_THE_PROTOCOL_LOADS = """
import atexit, importlib.abc, runpy, signal, sys, time

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cc_executor_nb.protocol":
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.2)
            print("loading went on", flush=True)
        return None

sys.meta_path.insert(0, CtrlC())
"""
"""The start of a ``python -c`` script: SIGINT is raised as ``cc_executor_nb.protocol`` starts to
load, then Python work goes on in that import (it prints ``loading went on``); the script's
rest loads an entry point of the package and says at exit what got loaded."""


def _scale_from_env() -> float:
    text = os.environ.get("CCX_TEST_TIME_SCALE", "1")
    try:
        value = float(text)
    except ValueError:
        raise RuntimeError(f"CCX_TEST_TIME_SCALE must be a number, not {text!r}") from None
    if not value > 0:
        raise RuntimeError(f"CCX_TEST_TIME_SCALE must be positive, not {text!r}")
    return value


TIME_SCALE = _scale_from_env()
"""How much slower than a quiet 2-core machine this one is allowed to be."""


def scaled(seconds: float) -> float:
    """A deadline or time limit of ``seconds`` on a quiet machine, stretched by the scale."""
    return seconds * TIME_SCALE


def eventually(
    check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = "the condition"
) -> T:
    """Call ``check`` until it returns a truthy value, and return that value.

    Fails (AssertionError) after ``scaled(timeout)`` seconds with ``what`` and the last
    value seen. For use from plain (non-async) tests and threads.
    """
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {scaled(timeout):g} s (last: {value!r})")
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = "the condition"
) -> T:
    """Like :func:`eventually`, awaiting between polls so the event loop keeps running."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {scaled(timeout):g} s (last: {value!r})")
        await asyncio.sleep(interval)


def gone(pid: int) -> bool:
    """No such process, or only a zombie (it may vanish between two looks: never an error)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def cmdlines_with_a_cli(pid: int | None) -> list[list[str]] | None:
    """The command lines of ``pid`` and its descendants once a one-shot claude CLI (``-p``,
    stream-json) is among them, else None: what ``ps`` shows every local user of a live run."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    lines = []
    for process in tree:
        try:
            lines.append(process.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return lines if any("-p" in line and "stream-json" in line for line in lines) else None


def assert_no_command_line_shows(pid: Callable[[], int | None], text: str, timeout: float) -> None:
    """Once the run whose pid ``pid()`` gives has its one-shot CLI live, no process of its tree
    has ``text`` in its command line (what ``ps`` shows every local user)."""
    lines = eventually(lambda: cmdlines_with_a_cli(pid()), timeout=timeout, what="the live CLI")
    assert not [line for line in lines if any(text in arg for arg in line)], lines


def new_objects(kind: type, old: list[object]) -> list[object]:
    """The ``kind`` objects alive now (after a collection) that are not in ``old``: those made
    since ``old`` was listed. ``old`` holds the earlier ones, so none of them can be collected
    meanwhile and change a count."""
    import gc

    gc.collect()
    known = {id(obj) for obj in old}
    return [obj for obj in gc.get_objects() if isinstance(obj, kind) and id(obj) not in known]


def all_objects(kind: type) -> list[object]:
    """Every ``kind`` object alive now (after a collection)."""
    import gc

    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, kind)]


def interrupt_main_once_in(name: str, timeout: float = 30.0) -> threading.Thread:
    """A thread that sends the main thread a KeyboardInterrupt once the main thread runs a
    function called ``name`` (``wait``): a fixed delay could fire before the call was entered."""
    import _thread
    import sys as _sys

    main = threading.main_thread().ident

    def inside() -> bool:
        frame = _sys._current_frames().get(main or 0)
        while frame is not None:
            if frame.f_code.co_name == name:
                return True
            frame = frame.f_back
        return False

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if inside():
                time.sleep(0.05)  # into its blocking wait
                _thread.interrupt_main()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def redacted_secrets() -> set[str]:
    """Every secret some log redactor (on a logger of ours or of websockets) scans for."""
    from cc_executor_nb.redaction import SecretRedactor

    return {
        secret
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
        for found in logger.filters
        if isinstance(found, SecretRedactor)
        for secret in found.secrets
    }


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
