"""Usage and rate limits as the ``claude`` CLI reports them, read without I/O.

The CLI tells of a limit in three ways (found by experiment with the pinned CLI, 2.1.332):

- ``rate_limit_event`` lines, ``{"rate_limit_info": {"status": "rejected", "resetsAt":
  EPOCH_SECONDS, "rateLimitType": "five_hour", ...}}``: what the API's
  ``anthropic-ratelimit-unified-*`` headers said. The CLI reads those headers only for
  subscription logins and Claude gateways; ``status`` is ``allowed`` while requests go
  through and ``rejected`` when the usage limit refused one.
- ``system``/``api_retry`` lines with ``error_status: 429``: a per-minute API rate limit
  (API keys); the CLI waits the ``retry-after`` the API sent (``retry_delay_ms``) and tries
  again, up to ``CLAUDE_CODE_MAX_RETRIES`` times.
- an error ``result`` with ``api_error_status: 429`` and the CLI's words, e.g.
  ``You've hit your 5-hour limit · resets 12:47am (UTC)`` or ``You've hit your weekly
  limit · resets Dec 6, 9:20am (Europe/Berlin)``, or ``API Error: Request rejected (429) ·
  Rate limited`` (no reset time: an API key's limit after the last retry).

:class:`UsageLimit` is one such refusal with its reset time (seconds since the epoch, or
None when nobody said); :func:`reset_from_text` reads a reset time out of the CLI's words.
Times in the text have minute precision: the reset is taken at the end of that minute,
so waiting for it never ends early.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "LIMIT_TITLES",
    "UsageLimit",
    "cost_estimate_reason",
    "describe_limit",
    "limit_from_event",
    "limit_from_result",
    "limit_from_retry",
    "reset_from_text",
]

LIMIT_TITLES = {
    "five_hour": "5-hour usage limit",
    "seven_day": "weekly usage limit",
    "seven_day_opus": "weekly Opus limit",
    "seven_day_sonnet": "weekly Sonnet limit",
    "seven_day_overage_included": "weekly usage limit",
    "overage": "usage credit limit",
    "rate_limit": "API rate limit",
}
"""How each kind of limit is named for people; other kinds show as "usage limit"."""

# "You've hit your 5-hour limit", "your weekly limit", "usage limit": a usage limit in words.
_LIMIT_WORDS = re.compile(r"\bhit your\b.*\blimit\b|\busage limit\b|\bout of usage\b", re.IGNORECASE)
_KIND_WORDS = (("5-hour", "five_hour"), ("weekly opus", "seven_day_opus"), ("weekly sonnet", "seven_day_sonnet"),
               ("weekly", "seven_day"))
_RESETS = re.compile(
    r"\bresets\s+(?:at\s+|on\s+)?"
    r"(?:(?P<month>[A-Za-z]{3})[a-z]*\.?\s+(?P<day>\d{1,2}),?\s+(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)?"
    r"(?:\s*\((?P<zone>[A-Za-z0-9_+\-/]{1,64})\))?",
    re.IGNORECASE,
)
_RESETS_IN = re.compile(r"\bresets\s+in\s+(?:(?P<h>\d{1,3})\s*h)?\s*(?:(?P<m>\d{1,2})\s*m(?:in)?)?", re.IGNORECASE)
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
# A time of day already this far in the past is today's (the reset just happened), not tomorrow's.
_JUST_PASSED = 300.0
_MINUTE = 60.0


@dataclass(frozen=True)
class UsageLimit:
    """A refusal by a usage or rate limit, and when it ends.

    ``kind`` is the CLI's ``rateLimitType`` (``five_hour``, ``seven_day``, ...),
    ``rate_limit`` for a per-minute API limit (429 without a usage window) or ``usage``
    when the words name no window. ``resets_at`` is seconds since the epoch (None: not
    said). ``source``: ``rate_limit_event``, ``api_retry`` or ``result``.
    """

    kind: str
    resets_at: float | None
    source: str
    message: str = ""

    @property
    def title(self) -> str:
        """``5-hour usage limit``, ``API rate limit``, ...: the limit's name for people."""
        return LIMIT_TITLES.get(self.kind, "usage limit")

    def seconds_left(self, now: float) -> float | None:
        """Seconds from ``now`` (epoch seconds) to the reset (0 once it passed); None when unknown."""
        if self.resets_at is None:
            return None
        return max(0.0, self.resets_at - now)


def limit_from_event(info: Any) -> UsageLimit | None:
    """The refusal a ``rate_limit_info`` reports (status ``rejected``); None for anything else."""
    if not isinstance(info, dict) or info.get("status") != "rejected":
        return None
    kind = info.get("rateLimitType")
    resets = _epoch(info.get("resetsAt"))
    if resets is None and info.get("isUsingOverage") is True:
        resets = _epoch(info.get("overageResetsAt"))
    return UsageLimit(kind if isinstance(kind, str) and kind else "usage", resets, "rate_limit_event")


def limit_from_retry(
    status: int | None, delay_seconds: float | None, at: float | None, message: str = ""
) -> UsageLimit | None:
    """The rate limit an ``api_retry`` with status 429 reports: it ends when the retry goes out.

    ``at`` is when the notice arrived (epoch seconds; None: unknown, and so is the reset).
    """
    if status != 429:
        return None
    resets = at + delay_seconds if at is not None and delay_seconds is not None else None
    return UsageLimit("rate_limit", resets, "api_retry", message)


def limit_from_result(result: Any, now: float | None, tz: dt.tzinfo | None = None) -> UsageLimit | None:
    """The limit an error ``result`` event reports, if it was refused by one; else None.

    A 429 status or words such as "You've hit your 5-hour limit" make it a limit; the
    reset time comes from the words ("resets 12:47am (UTC)") when ``now`` is given.
    """
    if not isinstance(result, dict):
        return None
    is_error = result.get("is_error") is True or result.get("subtype") not in (None, "success")
    raw = result.get("result")
    text = raw if isinstance(raw, str) else ""
    status = result.get("api_error_status")
    if not is_error or (status != 429 and not _LIMIT_WORDS.search(text)):
        return None
    resets = reset_from_text(text, now, tz) if now is not None else None
    return UsageLimit(_kind_of_words(text), resets, "result", text.strip())


def _kind_of_words(text: str) -> str:
    lowered = text.lower()
    for words, kind in _KIND_WORDS:
        if words in lowered:
            return kind
    return "usage" if _LIMIT_WORDS.search(text) else "rate_limit"


def reset_from_text(text: str, now: float, tz: dt.tzinfo | None = None) -> float | None:
    """The reset time (epoch seconds) in the CLI's words, or None when they give none.

    Reads ``resets 12:47am (UTC)``, ``resets Dec 6, 9:20am (Europe/Berlin)``, ``resets
    3pm``, ``resets 15:00`` and ``resets in 2h 5m``. A zone in parentheses wins over
    ``tz`` (default: this machine's). A time without a date is its next occurrence after
    ``now`` (one a few minutes past counts as now); the end of the named minute is returned.
    """
    relative = _RESETS_IN.search(text)
    if relative and (relative.group("h") or relative.group("m")):
        return now + 3600 * int(relative.group("h") or 0) + _MINUTE * int(relative.group("m") or 0)
    match = _RESETS.search(text)
    if match is None:
        return None
    clock = _clock(match)
    if clock is None:
        return None
    zone = _zone(match.group("zone")) or tz
    here = dt.datetime.fromtimestamp(now, zone) if zone is not None else dt.datetime.fromtimestamp(now).astimezone()
    month, day = _MONTHS.get((match.group("month") or "").lower()), match.group("day")
    if match.group("month") and (month is None or day is None):
        return None
    candidate = _on_day(here, clock, month, int(day) if day else None)
    return None if candidate is None else candidate.timestamp() + _MINUTE


def _clock(match: re.Match[str]) -> tuple[int, int] | None:
    hour, minute = int(match.group("hour")), int(match.group("minute") or 0)
    ampm = (match.group("ampm") or "").lower().replace(".", "")
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    elif match.group("minute") is None:
        return None  # "resets 5" alone is not a time
    return (hour, minute) if hour < 24 and minute < 60 else None


def _zone(name: str | None) -> dt.tzinfo | None:
    if not name:
        return None
    if name.upper() in ("UTC", "GMT", "Z"):
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _on_day(here: dt.datetime, clock: tuple[int, int], month: int | None, day: int | None) -> dt.datetime | None:
    """The named time on the named day, or the next day it comes, in ``here``'s zone."""
    hour, minute = clock
    if month is None or day is None:
        candidate = here.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if (here - candidate).total_seconds() > _JUST_PASSED:
            candidate += dt.timedelta(days=1)
        return candidate
    for year in (here.year, here.year + 1):
        try:
            candidate = here.replace(year=year, month=month, day=day, hour=hour, minute=minute, second=0, microsecond=0)
        except ValueError:
            return None
        if (here - candidate).total_seconds() <= _JUST_PASSED:
            return candidate
    return None


def describe_limit(limit: UsageLimit, now: float, *, zone: dt.tzinfo | None = None) -> str:
    """``5-hour usage limit · resets 00:47:15 (in 3 s)``, or ``... · reset time unknown``."""
    left = limit.seconds_left(now)
    if left is None or limit.resets_at is None:
        return f"{limit.title} · reset time unknown"
    when = dt.datetime.fromtimestamp(limit.resets_at, zone) if zone else dt.datetime.fromtimestamp(limit.resets_at)
    clock = when.strftime("%H:%M:%S") if left < 86400 else when.strftime("%b %d %H:%M")
    return f"{limit.title} · resets {clock} ({'now' if left <= 0 else 'in ' + _span(left)})"


def _span(seconds: float) -> str:
    """``3 s``, ``4 min 05 s``, ``2 h 10 min``, ``3 d 4 h``."""
    total = math.ceil(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    if total < 86400:
        return f"{total // 3600} h {total % 3600 // 60:02d} min"
    return f"{total // 86400} d {total % 86400 // 3600} h"


def cost_estimate_reason(init: Any) -> str | None:
    """Why the CLI's cost figure is only an estimate of what is billed, or None when it is the bill.

    From the ``system``/``init`` event: a run not served by Anthropic's own API (a custom
    ``ANTHROPIC_BASE_URL``: a gateway, a proxy, the demo) says ``custom endpoint``; one
    without an API key (a subscription login) says ``subscription``. None also when the
    init event is unknown or says neither.
    """
    if not isinstance(init, dict):
        return None
    if init.get("served_by_anthropic") is False:
        return "custom endpoint"
    source = init.get("apiKeySource")
    if isinstance(source, str) and (source == "none" or "login" in source.lower()):
        return "subscription"
    return None


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    # Some senders give milliseconds.
    return float(value) / 1000 if value > 1e11 else float(value)
