"""What a durable Claude job keeps for the job list: its cost and session, from the result line.

The job server knows nothing of Claude. A Claude client asks it (``summary`` in a
durable ``execute``) to keep a few members of the last stdout line that is a JSON
object with ``"type": "result"``: the stream-json ``result`` event. :func:`cost_of`
and :func:`session_of` read them back from ``jobs.list``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["RESULT_SUMMARY", "cost_of", "session_of"]

RESULT_SUMMARY: dict[str, Any] = {
    "match": {"type": "result"},
    "fields": ["total_cost_usd", "session_id", "is_error", "num_turns", "subtype", "duration_ms"],
}
"""The ``summary`` of a durable Claude run's ``execute``."""


def cost_of(summary: Mapping[str, Any] | None) -> float | None:
    """The run's cost in US dollars, if the result line said."""
    cost = (summary or {}).get("total_cost_usd")
    return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None


def session_of(summary: Mapping[str, Any] | None) -> str | None:
    """Claude's session id, if the result line said."""
    session = (summary or {}).get("session_id")
    return session if isinstance(session, str) and session else None
