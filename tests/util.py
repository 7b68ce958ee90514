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
import os
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

__all__ = ["TIME_SCALE", "eventually", "eventually_async", "scaled"]

T = TypeVar("T")


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
