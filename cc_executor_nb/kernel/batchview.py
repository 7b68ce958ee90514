"""How a batch looks: one table row per run and an aggregate bar, as HTML, as text, and as a widget.

:class:`Row` and :class:`Summary` are plain values the batch computes from its runs;
:func:`batch_html` and :func:`summary_text`/:func:`row_text` turn them into what is
shown (pure; every value that came from a child, a prompt or an item is escaped).
:class:`BatchView` is the widget: the bar and the table in **one** HTML widget (a render
is one comm message, however many runs changed), Cancel all and Pause queue buttons,
and a selector that expands one run into its own full widget, made only then.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocol import one_line
from ..terminaltext import printable, reveal
from .html import NO_MATH_CLASSES, STATUS_COLORS
from .runstate import format_duration, format_took

__all__ = ["BatchView", "Row", "Summary", "batch_html", "row_text", "summary_text"]

MAX_ROWS_SHOWN = 500
"""Rows the table shows at most (active ones first); the rest are counted in a note."""
LAST_LINE_CHARS = 120
# White text on each of them reads at WCAG AA (4.5:1) at least, as on the run's badges.
_EXTRA_COLORS = {"queued": "#6c757d", "placing": "#6c757d", "skipped": "#6c757d", "waiting": "#8a5a00"}


@dataclass(frozen=True)
class Row:
    """One run of a batch, as its row shows it."""

    index: int
    label: str
    status: str
    """queued, placing (submitted to a cluster), a run's status, waiting (for a limit's reset) or skipped."""
    elapsed: float | None = None
    cost_usd: float | None = None
    last_line: str = ""
    worker: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the row will not change any more."""
        return self.status in ("completed", "failed", "cancelled", "timeout", "error", "detached", "skipped")


@dataclass(frozen=True)
class Summary:
    """The aggregate bar: counts, cost, ETA and the queue's state."""

    total: int
    done: int
    """The runs that are over, however they ended (``failed`` and ``skipped`` among them)."""
    running: int
    queued: int
    failed: int
    skipped: int
    cost_usd: float | None
    """The runs' reported costs summed; None while none reported one (commands)."""
    cost_note: str | None = None
    """Why the total is an estimate (``custom endpoint``, ``subscription``), if it is one."""
    eta_seconds: float | None = None
    """Seconds until the batch is done, from the mean duration of its completed runs; None
    before one completed, and while the queue does not move (paused, cancelled, over budget, done)."""
    state: str = "running"
    """running, paused, held (a usage limit), budget (spent), cancelled, done, or detached (its
    process stopped following runs that go on as durable jobs)."""
    message: str = ""
    budget_usd: float | None = None
    completed: int = 0
    """Of the ``done`` runs, those that completed (the others failed, were cancelled or skipped)."""
    cancelled: int = 0
    detached: int = 0
    """Of the ``done`` runs, those this process stopped following: durable jobs that go on."""


def _cost(value: float | None) -> str:
    return "" if value is None else f"${value:.4f}"


def _counts(summary: Summary) -> str:
    return " · ".join([_done_text(summary), f"{summary.running} running", f"{summary.queued} queued"])


def _done_text(summary: Summary) -> str:
    """``5 done (3 completed, 1 failed, 1 skipped)``: the runs that are over, and how they ended."""
    ended = (summary.completed, summary.failed, summary.cancelled, summary.skipped, summary.detached)
    other = summary.done - sum(ended)  # not one of the named ends
    kinds = zip((*ended, other), ("completed", "failed", "cancelled", "skipped", "detached", "other"), strict=True)
    named = [f"{count} {kind}" for count, kind in kinds if count > 0]
    return f"{summary.done} done" + (f" ({', '.join(named)})" if named else "")


def _cost_text(summary: Summary) -> str:
    if summary.cost_usd is None:
        return "" if summary.budget_usd is None else f"$0 of ${summary.budget_usd:.4f} budget"
    text = f"{'≈ ' if summary.cost_note else ''}${summary.cost_usd:.4f}"
    if summary.budget_usd is not None:
        text += f" of ${summary.budget_usd:.4f} budget"
    if summary.cost_note:
        text += f" (estimate: {summary.cost_note})"
    return text


def summary_text(summary: Summary) -> str:
    """``[batch] 12/20 · 12 done (11 completed, 1 failed) · 4 running · 4 queued · $0.1234 · ETA 12 s``
    (and the queue's state)."""
    parts = [f"[batch] {summary.done}/{summary.total}", _counts(summary), _cost_text(summary)]
    parts = [part for part in parts if part]
    if summary.eta_seconds is not None and summary.state in ("running", "held"):
        parts.append(f"ETA {format_duration(summary.eta_seconds, whole=True)}")
    if summary.state not in ("running", "done"):
        parts.append(summary.state + (f": {summary.message}" if summary.message else ""))
    return " · ".join(parts)


def row_text(row: Row) -> str:
    """``#3 completed · 1.2 s · $0.0081 · claude: write a haiku → last line``."""
    parts = [f"#{row.index} {row.status}"]
    if row.elapsed is not None:
        parts.append(_elapsed_text(row.elapsed, row.finished, whole=False))
    if row.cost_usd is not None:
        parts.append(_cost(row.cost_usd))
    if row.worker:
        parts.append(row.worker)
    text = " · ".join([*parts, _one_line(row.label)])
    return text + (f" → {_one_line(row.last_line)}" if row.last_line else "")


def _one_line(text: str) -> str:
    """A label or a child's last line (untrusted text) on one line, inert (controls dropped,
    bidi controls visible)."""
    return one_line(reveal(text), LAST_LINE_CHARS)


def batch_html(summary: Summary, rows: Sequence[Row], *, now: float = 0.0) -> str:
    """The aggregate bar and the table as one escaped HTML value."""
    return (
        f"<div class='ccx-batch {NO_MATH_CLASSES}'>{_bar_html(summary)}{_table_html(rows)}</div>"
    )


def _bar_html(summary: Summary) -> str:
    fraction = summary.done / summary.total if summary.total else 1.0
    color = {"held": "#8a5a00", "budget": "#dc3545", "cancelled": "#495057", "paused": STATUS_COLORS["paused"]}.get(
        summary.state, "#198754" if summary.state == "done" else "#0d6efd"
    )
    items = [item for item in (_counts(summary), _cost_text(summary)) if item]
    if summary.eta_seconds is not None and summary.state in ("running", "held"):
        items.append(f"ETA {format_duration(summary.eta_seconds, whole=True)}")
    state = summary.state + (f": {summary.message}" if summary.message else "")
    return (
        "<div class='ccx-batch-bar' style='margin-bottom:4px'>"
        f"<div style='display:flex;gap:1em;flex-wrap:wrap'><strong>{summary.done}/{summary.total}</strong>"
        + "".join(f"<span>{html.escape(item)}</span>" for item in items)
        + f"<span class='ccx-batch-state ccx-batch-{html.escape(summary.state)}' style='color:{color}'>"
        f"{html.escape(state)}</span></div>"
        f"<div style='background:#8882;border-radius:3px;height:6px;margin-top:2px'>"
        f"<div style='background:{color};width:{fraction * 100:.1f}%;height:6px;border-radius:3px'></div></div>"
        "</div>"
    )


# Each heading and how wide its column is. The last line is one line of up to LAST_LINE_CHARS
# characters that cannot wrap: as wide as it needed, it took the table's width and a long prompt's
# run wrapped over 9 lines at 1280 px. It takes 35% of the table (its cells' max-width:0 lets the
# column shrink to that share), cut with an ellipsis (the cell's title has it whole); the number,
# status, time and cost are as wide as they need (1%: no more), and the run has the rest, to read
# in a line or two. JupyterLab lays out a record's tables as fixed (the first row's widths): the
# table says auto.
_NARROW = ";width:1%;white-space:nowrap"
_HEADERS = (("#", _NARROW), ("status", _NARROW), ("elapsed", _NARROW), ("cost", _NARROW),
            ("run", ";min-width:12em"), ("last line", ";width:35%"))


def _table_html(rows: Sequence[Row]) -> str:
    shown = _rows_shown(rows)
    head = "".join(f"<th style='text-align:left;padding:1px 6px{width}'>{name}</th>" for name, width in _HEADERS)
    body = "".join(_row_html(row) for row in shown)
    more = len(rows) - len(shown)
    note = f"<div><em>{more} more rows not shown</em></div>" if more > 0 else ""
    return (
        "<div style='max-height:24em;overflow:auto'><table class='ccx-batch-table' style='border-collapse:collapse;"
        f"font-size:90%;width:100%;table-layout:auto'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}</div>"
    )


def _rows_shown(rows: Sequence[Row]) -> list[Row]:
    """Every row when they fit; else the unfinished ones first, then the latest finished."""
    if len(rows) <= MAX_ROWS_SHOWN:
        return list(rows)
    active = [row for row in rows if not row.finished]
    finished = [row for row in rows if row.finished]
    keep = active[:MAX_ROWS_SHOWN] + finished[-max(0, MAX_ROWS_SHOWN - len(active)) :]
    return sorted(keep[:MAX_ROWS_SHOWN], key=lambda row: row.index)


def _elapsed_text(seconds: float, finished: bool, *, whole: bool) -> str:
    """A row's time: a finished run's as its records write it (``15 ms``, ``1.2 s``: it read
    ``0.0 s`` under a second), a running one's as a timer (``whole``: changing once a second)."""
    return format_took(seconds) if finished else format_duration(seconds, whole=whole)


def _row_html(row: Row) -> str:
    color = STATUS_COLORS.get(row.status) or _EXTRA_COLORS.get(row.status, "#6c757d")
    status = html.escape(row.status)
    label = _one_line(row.label)
    where = f" <small style='opacity:.7'>@{html.escape(row.worker)}</small>" if row.worker else ""
    last = _one_line(row.last_line)
    cells = [
        _cell(str(row.index)),
        _cell(f"<span class='ccx-badge ccx-status-{status}' style='background:{color};color:#fff;border-radius:4px;"
              f"padding:0 6px'>{status}</span>"),
        _cell("" if row.elapsed is None else html.escape(_elapsed_text(row.elapsed, row.finished, whole=True))),
        _cell(html.escape(_cost(row.cost_usd))),
        _cell(f"<span title='{html.escape(printable(row.label), quote=True)}'>{html.escape(label)}</span>{where}"),
        _cell(f"<code style='white-space:pre'>{html.escape(last)}</code>", _LAST_LINE_CELL, title=last),
    ]
    return "<tr>" + "".join(cells) + "</tr>"


_LAST_LINE_CELL = "max-width:0;overflow:hidden;text-overflow:ellipsis;white-space:pre"


def _cell(content: str, style: str = "", *, title: str | None = None) -> str:
    """A ``<td>`` left-aligned as its heading is (Jupyter's stylesheet right-aligns cells in an output)."""
    hint = f" title='{html.escape(title, quote=True)}'" if title else ""
    return f"<td style='text-align:left;padding:1px 6px{';' + style if style else ''}'{hint}>{content}</td>"


def eta(mean_seconds: float | None, queued: int, running_elapsed: Sequence[float], slots: int) -> float | None:
    """Seconds until the batch is done, from the mean duration of finished runs; None before one finished."""
    if mean_seconds is None or slots <= 0:
        return None
    left = queued * mean_seconds + sum(max(0.0, mean_seconds - spent) for spent in running_elapsed)
    workers = max(1, min(slots, queued + len(running_elapsed)))
    return math.ceil(left / workers)


class BatchView:
    """The batch's widget: the bar and table (one HTML widget), buttons, and one expandable run.

    ``labels`` name the runs in the selector; ``expand(index)`` returns the widget of run
    ``index`` (made on demand) and ``collapse(index)`` lets it go. Callbacks run on the
    kernel's main thread (widget events).
    """

    def __init__(
        self,
        labels: Sequence[str],
        *,
        on_cancel: Callable[[], object],
        on_pause: Callable[[bool], object],
        expand: Callable[[int], Any],
        collapse: Callable[[int], object],
        html_value: str = "",
    ) -> None:
        import ipywidgets as widgets

        self._expand, self._collapse = expand, collapse
        self.table = widgets.HTML(value=html_value)
        self.cancel_button = widgets.Button(description="Cancel all", icon="stop", button_style="danger",
                                            layout=widgets.Layout(width="auto"))
        self.pause_button = widgets.ToggleButton(description="Pause queue", icon="pause", value=False,
                                                 layout=widgets.Layout(width="auto"))
        options = [("show a run…", -1), *((f"#{i} {_one_line(label)[:60]}", i) for i, label in enumerate(labels))]
        self.selector = widgets.Dropdown(options=options, value=-1, layout=widgets.Layout(width="auto"))
        self.expanded = widgets.VBox([])
        self.cancel_button.on_click(lambda _button: on_cancel())
        self.pause_button.observe(lambda change: on_pause(bool(change["new"])), names="value")
        self.selector.observe(self._on_select, names="value")
        controls = widgets.HBox([self.cancel_button, self.pause_button, self.selector])
        self.widget = widgets.VBox([self.table, controls, self.expanded], _dom_classes=("ccx-batch-view",))
        self.shown: int | None = None

    def render(self, value: str, *, finished: bool, paused: bool) -> None:
        """Put the new HTML in (only if it changed) and disable the buttons once the batch is over."""
        if self.table.value != value:
            self.table.value = value
        if finished and not self.cancel_button.disabled:
            self.cancel_button.disabled = True
            self.pause_button.disabled = True
        if self.pause_button.value != paused:
            self.pause_button.value = paused
        # A click toggles the value before the batch pauses: the label follows the batch.
        label, icon = ("Resume queue", "play") if paused else ("Pause queue", "pause")
        if self.pause_button.description != label:
            self.pause_button.description, self.pause_button.icon = label, icon

    def _on_select(self, change: dict[str, Any]) -> None:
        index = int(change["new"])
        previous, self.shown = self.shown, (index if index >= 0 else None)
        if previous is not None:
            self._collapse(previous)
        self.expanded.children = [self._expand(index)] if index >= 0 else []

    def close(self) -> None:
        """Close every widget this view made, layouts and styles included."""
        from .views import close_tree

        close_tree(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
