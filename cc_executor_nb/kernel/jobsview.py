"""The job table: plain text and escaped HTML from a list of jobs (pure), and its widget.

Everything shown comes from the job server and may have come from a child (labels are
prompts and command lines): it is escaped before it reaches the browser.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..events import stopping_signal
from ..protocol import one_line
from ..terminaltext import printable, reveal
from .html import STATUS_COLORS
from .runstate import format_duration, format_took

__all__ = ["HEADERS", "JobRow", "jobs_html", "jobs_text", "rows_of"]

_LOST_COLOR = "#6c757d"
_LABEL_CHARS = 60


@dataclass(frozen=True)
class JobRow:
    """What one line of the table shows."""

    job_id: str
    status: str
    label: str
    started_at: float
    ended_at: float | None
    exit_code: int | None
    cost_usd: float | None
    attached: int
    """Connections following the job now."""
    duration_seconds: float | None = None
    """The process's own duration, once it ended (the record's ``duration_seconds``)."""

    def duration(self, now: float) -> float:
        """Seconds the job ran (so far): once it ended, the process's own duration, as its
        run's end line says it; the server's start-to-end span when it has none (a lost job)."""
        if self.ended_at is not None and self.duration_seconds is not None:
            return max(0.0, self.duration_seconds)
        return max(0.0, (self.ended_at or now) - self.started_at)


def _started(when: float, now: float) -> str:
    local = time.localtime(when)
    same_day = time.localtime(now)[:3] == local[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", local)


def _cells(row: JobRow, now: float) -> list[str]:
    label = one_line(reveal(row.label), _LABEL_CHARS)  # a prompt or a command line: untrusted, maybe many lines
    return [
        row.job_id,
        row.status,
        _started(row.started_at, now),
        format_duration(row.duration(now)) if row.ended_at is None else format_took(row.duration(now)),
        _exit_cell(row),
        "" if row.cost_usd is None else f"${row.cost_usd:.4f}",
        _attached_cell(row.attached),
        label,
    ]


def _exit_cell(row: JobRow) -> str:
    """The exit code, or the signal that ended the job (``SIGTERM`` for -15, and for the
    CLI's 143 when the job was cancelled), as the run's record says it."""
    if row.exit_code is None:
        return ""
    return stopping_signal(row.exit_code, row.status) or str(row.exit_code)


def _attached_cell(count: int) -> str:
    """How many connections follow the job: "-" for none (an orphan: nobody answers its questions)."""
    return str(count) if count else "-"


HEADERS = ["job", "status", "started", "duration", "exit", "cost", "attached", "label"]


def jobs_text(rows: Sequence[JobRow], now: float) -> str:
    """The table as aligned plain text (newest first)."""
    if not rows:
        return "no durable jobs"
    table = [HEADERS, *(_cells(row, now) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[-1]]).rstrip()
        for line in table
    )


def jobs_html(rows: Sequence[JobRow], now: float) -> str:
    """The table as HTML; every value escaped."""
    if not rows:
        return "<div class='ccx-jobs'><em>no durable jobs</em></div>"
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{name}</th>" for name in HEADERS)
    body = "".join(_row_html(row, now) for row in rows)
    return (
        "<div class='ccx-jobs tex2jax_ignore mathjax_ignore'><table style='border-collapse:collapse;"
        f"font-size:90%'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _row_html(row: JobRow, now: float) -> str:
    cells = [html.escape(cell) for cell in _cells(row, now)]
    color = STATUS_COLORS.get(row.status, _LOST_COLOR)
    cells[0] = f"<code>{cells[0]}</code>"
    cells[1] = (
        f"<span class='ccx-badge ccx-status-{cells[1]}' style='background:{color};color:#fff;"
        f"border-radius:4px;padding:0 6px'>{cells[1]}</span>"
    )
    cells[-1] = f"<span title='{html.escape(printable(row.label), quote=True)}'>{cells[-1]}</span>"
    return "<tr>" + "".join(f"<td style='text-align:left;padding:2px 8px'>{cell}</td>" for cell in cells) + "</tr>"


def rows_of(jobs: Sequence[Any]) -> list[JobRow]:
    """Rows from :class:`~cc_executor_nb.kernel.jobs.JobInfo` values (anything with their fields)."""
    return [
        JobRow(j.job_id, j.status, j.label, j.started_at, j.ended_at, j.exit_code, j.cost_usd, j.attached,
               j.duration_seconds)
        for j in jobs
    ]
