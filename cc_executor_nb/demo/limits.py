"""The demo account's usage and rate limits: which request a limit refuses, and how.

Pure state over an injected clock (no I/O). Two prompts open a limit window:

``usage limit reset in N s`` (also ``... resets in N seconds``)
    A subscription's usage limit (the "5-hour limit"). Refused requests get HTTP 429
    with the headers Anthropic's API sends for it: ``anthropic-ratelimit-unified-status:
    rejected``, ``anthropic-ratelimit-unified-reset`` (epoch seconds),
    ``anthropic-ratelimit-unified-representative-claim: five_hour``, ``retry-after``
    and ``x-should-retry: false`` (a usage limit is not worth retrying within seconds).
    The CLI reads the unified headers only for subscription logins and Claude gateways:
    the demo presents a gateway credential (see :mod:`.env`), so the CLI prints a
    ``rate_limit_event`` (status ``rejected``, ``resetsAt``) and ends with "You've hit
    your 5-hour limit · resets ...".
``rate limit reset in N s``
    An API key's per-minute rate limit: 429 with ``retry-after`` and
    ``anthropic-ratelimit-requests-limit/-remaining/-reset`` (RFC 3339). The CLI
    retries after ``retry-after`` (``system``/``api_retry`` with ``error_status:
    429``) as long as it has retries left.

A window is account-wide, like the real limits: while it is open every main-loop
request is refused, whoever sends it. It opens once per conversation (the CLI's
``X-Claude-Code-Session-Id``, which stays the same when a session is resumed), so the
same conversation is answered once the reset has passed. What follows ``then`` in the
prompt is the task answered after the reset (``usage limit reset in 3 s, then what is
2+2``); without it the answer is :data:`LIMIT_ANSWER`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LIMIT_ANSWER", "LimitRefusal", "LimitWindows", "follow_on", "limit_scenario"]

LIMIT_ANSWER = "The usage limit has reset; the work went on."

_SCENARIO = re.compile(
    r"\b(?P<kind>usage|rate)[\s-]+limit\b.*?\breset(?:s)?\s+(?:in\s+)?(?P<seconds>\d+(?:\.\d+)?)\s*"
    r"(?:s|secs?|seconds?)\b",
    re.IGNORECASE | re.DOTALL,
)
_THEN = re.compile(r"\bthen\b[\s,:]*(?P<rest>.+)", re.IGNORECASE | re.DOTALL)
_MAX_SECONDS = 24 * 3600.0

_USAGE_MESSAGE = "You have reached your usage limit. It resets at the time given in the headers."
_RATE_MESSAGE = "Number of requests has exceeded your per-minute rate limit. Please try again later."


def limit_scenario(prompt: str) -> tuple[str, float] | None:
    """``("usage" | "rate", seconds)`` when ``prompt`` asks for a limit window, else None."""
    match = _SCENARIO.search(prompt)
    if match is None:
        return None
    return match.group("kind").lower(), min(float(match.group("seconds")), _MAX_SECONDS)


def follow_on(prompt: str) -> str:
    """The task after ``then`` in a limit prompt (up to a blank line), or ``""``."""
    match = _THEN.search(prompt)
    return match.group("rest").split("\n\n", 1)[0].strip() if match else ""


@dataclass(frozen=True)
class LimitRefusal:
    """A request refused by an open window: the 429 to send."""

    kind: str
    """``usage`` or ``rate``."""
    resets_at: float
    """Epoch seconds."""
    now: float

    @property
    def retry_after(self) -> int:
        """Whole seconds until the reset (at least 1)."""
        return max(1, math.ceil(self.resets_at - self.now))

    @property
    def message(self) -> str:
        """The message of the ``rate_limit_error`` body."""
        return _USAGE_MESSAGE if self.kind == "usage" else _RATE_MESSAGE

    def headers(self) -> list[tuple[str, str]]:
        """The response headers that say which limit, and when it resets."""
        reset = math.ceil(self.resets_at)
        if self.kind == "usage":
            return [
                ("retry-after", str(self.retry_after)),
                ("x-should-retry", "false"),
                ("anthropic-ratelimit-unified-status", "rejected"),
                ("anthropic-ratelimit-unified-reset", str(reset)),
                ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
                ("anthropic-ratelimit-unified-5h-status", "rejected"),
                ("anthropic-ratelimit-unified-5h-reset", str(reset)),
            ]
        stamp = dt.datetime.fromtimestamp(reset, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return [
            ("retry-after", str(self.retry_after)),
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", stamp),
        ]


class LimitWindows:
    """The account's limit windows (thread-safe; ``clock`` gives epoch seconds)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._open: tuple[str, float] | None = None
        self._opened_for: set[str] = set()

    def check(self, conversation: str, prompt: str) -> LimitRefusal | None:
        """The refusal for a main-loop request of ``conversation``, or None to answer it."""
        now = self._clock()
        with self._lock:
            if self._open is not None and now >= self._open[1]:
                self._open = None
            if self._open is None:
                scenario = limit_scenario(prompt)
                if scenario is None or conversation in self._opened_for:
                    return None
                self._opened_for.add(conversation)
                self._open = (scenario[0], now + scenario[1])
            kind, until = self._open
            return LimitRefusal(kind, until, now)

    @property
    def open_until(self) -> float | None:
        """When the open window ends (epoch seconds), or None when none is open."""
        with self._lock:
            if self._open is None or self._clock() >= self._open[1]:
                return None
            return self._open[1]
