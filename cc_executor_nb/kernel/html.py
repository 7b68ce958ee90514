"""Pure HTML builders for a run's view: status badge, heartbeat, timers, measures, output.

Functions from a :class:`~cc_executor_nb.kernel.runstate.RunState` (and a time) to HTML
strings; :class:`~cc_executor_nb.kernel.views.RunView` only puts them in widgets. Child
output is untrusted: every piece of text is made
:func:`~cc_executor_nb.terminaltext.printable` (no terminal escape or control character,
bidi controls visible) and goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
import math

from ..events import exit_words
from ..protocol import command_line
from ..terminaltext import MONOSPACE, ansi_html, overwrite_lines, printable
from .runstate import (
    STOPPED_WORDS,
    Health,
    RunState,
    Tail,
    elapsed,
    format_duration,
    format_took,
    heartbeat_health,
    inactive_for,
    next_beat_in,
    took_words,
    turn_took_text,
)

__all__ = [
    "HEALTH_COLORS",
    "NOTICE_COLOR",
    "NO_MATH_CLASSES",
    "STALE_AFTER",
    "STATUS_COLORS",
    "STDERR_STYLE",
    "badge_html",
    "header_html",
    "heartbeat_html",
    "notices_html",
    "output_html",
    "progress_text",
    "resources_text",
    "shown_error",
    "sparkline",
    "tail_html",
]

STATUS_COLORS: dict[str, str] = {
    "starting": "#6c757d",
    "queued": "#6c757d",
    "running": "#0d6efd",
    "thinking": "#6f42c1",
    "paused": "#b45309",
    "completed": "#198754",
    "failed": "#dc3545",
    "cancelled": "#495057",
    "timeout": "#d63384",
    "reconnecting": "#8a6d00",
    "error": "#dc3545",
    "detached": "#6c757d",
    "needs you": "#c2410c",
}
HEALTH_COLORS: dict[str, str] = {
    "ok": "#dc3545",
    "waiting": "#6c757d",
    "overdue": "#fd7e14",
    "lost": "#6c757d",
}
STDERR_STYLE = "color:#b00020;background:#fff0f0"
NOTICE_COLOR = "#a66a00"
"""A notice's colour (as a Claude conversation's notices)."""
# MathJax typesets HTML widget content; these classes make it leave child output alone.
NO_MATH_CLASSES = "tex2jax_ignore mathjax_ignore"
STALE_AFTER = 15
"""Seconds without an update after which a live view says it is no longer live.

A live header changes every second (its clock, and :func:`stale_html`'s stamp), and each
change replaces its HTML, which restarts the note's CSS animation; a view whose kernel
restarted, stopped or lost its page's connection gets no more changes, so the note shows.
The page needs no script for it: a saved notebook reopened shows it too.
"""
STALE_TEXT = (
    f"Not live: no update from the kernel for over {STALE_AFTER} s. It may have restarted or "
    "stopped, or this page lost its connection; a durable job can be followed again with "
    "%ccexec --attach."
)


def badge_html(state: RunState, status: str | None = None) -> str:
    """The status badge: escaped status text on a colour per status ("needs you" while a
    permission question waits for a person); ``status`` in place of the state's (a record's
    ``queued``)."""
    label = "needs you" if state.needs_you else status or state.status
    color = STATUS_COLORS.get(label, "#6c757d")
    text = html.escape(label)
    css = html.escape(label.replace(" ", "-"))
    return (
        f'<span class="ccx-badge ccx-status-{css}" style="background:{color};color:#fff;'
        f'padding:1px 8px;border-radius:9px;font-weight:600">{text}</span>'
    )


def heartbeat_html(state: RunState, now: float) -> tuple[str, Health]:
    """The heartbeat indicator and its health; the heart glyph alternates with each beat."""
    health, age = heartbeat_health(state, now)
    color = HEALTH_COLORS[health]
    beat = state.heartbeat_count % 2
    glyph = {"lost": "✕", "waiting": "○"}.get(health, "♡" if beat else "♥")
    text = _heartbeat_text(state, health, age, now)
    return (
        f'<span class="ccx-heart ccx-beat-{beat}" style="color:{color}">{glyph}</span> '
        f'<span class="ccx-hb-text" style="color:{color if health != "ok" else "inherit"}">'
        f"{html.escape(text)}</span>"
    ), health


def header_html(
    state: RunState, now: float, label: str | None = None, *, record: bool = False, status: str | None = None
) -> str:
    """Everything but the output in one HTML value, so a render is one message.

    Title; status badge, heartbeat indicator (while live), elapsed time and the
    inactivity timer; the progress bar with ETA (only with an estimate); CPU and
    memory (while live); after the run, its exit code (on the status line, before the time)
    and its error (a line of its own). ``record``: for a saved
    record, which shows no live-only parts (no heartbeat, measures, silence timer or
    ticking clock): a conversation between turns says how long its latest turn took, a
    live run how long it had been running (as the Markdown record says). ``status``: the
    badge's, in place of the state's.
    """
    idle_turn = record and state.between_turns
    live = not state.finished and not idle_turn
    live_view = live and not record
    parts = [
        _title_html(label, state),
        "<div class='ccx-status-line' style='display:flex;gap:1em;flex-wrap:wrap'>",
        badge_html(state, status),
    ]
    if state.finished and state.exit_code is not None:
        # Where the text and Markdown records say it: "completed · exit code 0 · took 1.9 s".
        parts.append(f'<span class="ccx-exit">{html.escape(exit_words(state.exit_code, state.status))}</span>')
    if live_view:
        beat, health = heartbeat_html(state, now)
        parts.append(f'<span class="ccx-heartbeat ccx-hb-{health}">{beat}</span>')
    parts.append(f'<span class="ccx-clock">{html.escape(_header_clock(state, now, record=record))}</span>')
    if state.job_id:
        parts.append(f'<span class="ccx-job">job {html.escape(printable(state.job_id))}</span>')
    silence = _silence_text(state, now) if live_view else ""
    if silence:
        parts.append(f'<span class="ccx-inactivity">{html.escape(silence)}</span>')
    parts.append("</div>")
    parts.append(notices_html(state))
    if live_view:
        parts.append(_measures_html(state))
        parts.append(stale_html(now))
    parts.append(_summary_html(state))
    return "".join(parts)


_TEXT_LINE_HEIGHT = "line-height:var(--jp-content-line-height,1.6)"
"""A note that wraps is spaced as text in the record is: the live widget's HTML box sets 28 px lines."""


def notices_html(state: RunState) -> str:
    """The server's notices of lost or held output, one ``note:`` line each (escaped), or ""."""
    return "".join(
        f'<div class="ccx-notice" style="color:{NOTICE_COLOR};{_TEXT_LINE_HEIGHT}">'
        f"note: {html.escape(printable(message))}</div>"
        for message in state.notices
    )


def _header_clock(state: RunState, now: float, *, record: bool) -> str:
    """The widget's clock, or a record's: the latest turn's time between turns, and "running
    for 3.1 s" for a live run (a saved "elapsed 3 s" read as a counter that stopped)."""
    if record and state.between_turns:
        return turn_took_text(state)
    seconds = elapsed(state, now)
    if record and not state.finished and seconds is not None:
        return f"running for {format_duration(seconds)}"
    return _clock_text(state, now)


def stale_html(now: float) -> str:
    """The hidden note a live view shows once it has had no update for :data:`STALE_AFTER` s.

    ``now`` stamps it, so the header's value changes at every tick, even when its clock
    reads the same (``1 h 02 min``).
    """
    return (
        "<style>@keyframes ccx-stale{to{max-height:6em;visibility:visible}}</style>"
        f'<div class="ccx-stale" data-tick="{int(now)}" style="max-height:0;overflow:hidden;'
        f"visibility:hidden;animation:ccx-stale 0s linear {STALE_AFTER}s forwards;"
        f'color:#9a3412;font-size:90%">&#9888; {html.escape(STALE_TEXT)}</div>'
    )


def _measures_html(state: RunState) -> str:
    """Progress bar and ETA (only with an estimate), then CPU and memory."""
    label = progress_text(state.progress)
    figures = resources_text(state.resources, state.cpu_history)
    pieces = []
    if label:
        width = max(0.0, min(float(state.progress["fraction"]), 1.0)) * 100  # type: ignore[index]
        pieces.append(
            '<span class="ccx-progress" style="display:inline-flex;align-items:center;gap:.5em">'
            '<span style="display:inline-block;width:12em;height:.7em;background:#e9ecef;'
            'border-radius:4px"><span class="ccx-progress-bar" style="display:block;height:100%;'
            f'width:{width:.1f}%;background:#0d6efd;border-radius:4px"></span></span>'
            f"{html.escape(label)}</span>"
        )
    if figures:
        pieces.append(f'<span class="ccx-resources">{html.escape(figures)}</span>')
    if not pieces:
        return ""
    row = "<div class='ccx-measures' style='display:flex;gap:1em;flex-wrap:wrap'>"
    return row + "".join(pieces) + "</div>"


def output_html(state: RunState, max_chars: int = 20000, *, height: str = "24em") -> str:
    """The output tail as escaped HTML, stderr tinted, in a scroll box pinned to its end."""
    return tail_html(state.tail(max_chars), height=height)


def tail_html(tail: Tail, *, height: str = "24em") -> str:
    """:func:`output_html` of a tail already taken."""
    body = "".join(_piece_html(stream, text) for stream, text in tail.pieces)
    note = ""
    if tail.cut:
        note = (
            '<div class="ccx-cut" style="color:#6c757d;font-style:italic">'
            f"… {tail.cut_chars:,} earlier characters not shown "
            "(the whole output is in run.stdout while this kernel runs)</div>"
        )
    # A column-reverse flex box starts scrolled to its end, so new output stays in view.
    return (
        f'<div class="ccx-output {NO_MATH_CLASSES}" style="max-height:{html.escape(height)};'
        'overflow:auto;display:flex;flex-direction:column-reverse"><div>'
        f'{note}<pre style="margin:0;white-space:pre-wrap;word-break:break-word;{MONOSPACE}">{body}</pre>'
        "</div></div>"
    )


def _piece_html(stream: str, text: str) -> str:
    escaped = ansi_html(overwrite_lines(text))
    if stream == "stderr":
        return f'<span class="ccx-stderr" style="{STDERR_STYLE}">{escaped}</span>'
    return escaped


def _heartbeat_text(state: RunState, health: Health, age: float | None, now: float) -> str:
    beat = state.last_heartbeat_at
    if health == "waiting" or age is None:
        first = next_beat_in(state, now) if beat is None and age is not None else None
        if first is None:
            return "waiting for heartbeat"
        return f"alive · first beat in ~{format_duration(math.ceil(first), whole=True)}"
    # The age of the beat itself: other messages keep the health "ok", but are no beats.
    ago = format_duration(age if beat is None else max(0.0, now - beat), whole=True)
    since = f"last beat {ago} ago" if beat is not None else f"no heartbeat for {ago}"
    if health == "lost":
        return f"connection lost ({since})"
    if health == "overdue":
        return f"{since} (overdue)"
    upcoming = next_beat_in(state, now)
    if upcoming is None:
        return since
    # A countdown rounds up, so it changes once per whole second like the other timers.
    return f"{since} · next in ~{format_duration(math.ceil(upcoming), whole=True)}"


_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], top: float = 100.0) -> str:
    """A text sparkline of values from 0 to ``top`` (at least one block per value)."""
    scale = max(top, max(values, default=0.0), 1e-9)
    return "".join(_SPARKS[min(int(v / scale * (len(_SPARKS) - 1) + 0.5), len(_SPARKS) - 1)] for v in values)


def progress_text(progress: dict[str, object] | None) -> str:
    """'42% · about 12 s left · counted against the prompt's words', or '' without an estimate."""
    if not progress or not isinstance(progress.get("fraction"), (int, float)):
        return ""
    parts = [f"{float(progress['fraction']) * 100:.0f}%"]  # type: ignore[arg-type]
    eta = progress.get("eta_seconds")
    if isinstance(eta, (int, float)):
        parts.append(f"about {format_duration(float(eta), whole=True)} left")
    basis = str(progress.get("basis") or "")
    if basis.startswith("prompt:"):
        parts.append(f"counted against the prompt's {basis.split(':', 1)[1]}")
    elif basis == "history":
        parts.append("from earlier runs of this command")
    return " · ".join(parts)


def resources_text(resources: dict[str, object] | None, cpu_history: list[float]) -> str:
    """'CPU 97% ▂▅█ · memory 212.4 MB · 2 processes', or '' before the first sample."""
    if not resources:
        return ""
    cpu = float(resources.get("cpu_percent") or 0.0)  # type: ignore[arg-type]
    rss = int(resources.get("rss_bytes") or 0)  # type: ignore[call-overload]
    count = int(resources.get("num_processes") or 0)  # type: ignore[call-overload]
    spark = f" {sparkline(cpu_history[-20:])}" if len(cpu_history) > 1 else ""
    plural = "es" if count != 1 else ""
    return f"CPU {cpu:.0f}%{spark} · memory {rss / 1e6:.1f} MB · {count} process{plural}"


def _title_html(label: str | None, state: RunState) -> str:
    if label is None:
        label = command_line(state.argv) if state.argv else "run"
    return f'<b class="ccx-title" style="font-family:monospace">{html.escape(printable(label))}</b>'


def _clock_text(state: RunState, now: float) -> str:
    seconds = elapsed(state, now)
    if seconds is None:
        return ""
    if state.ended_at is not None:
        return f"{took_words(state)} {format_took(seconds)}"
    if state.between_turns and state.turn_ended_at is not None:
        # The turn is over ("completed"): a clock still counting would read as a stuck run.
        return f"waiting for a follow-up for {format_duration(max(0.0, now - state.turn_ended_at), whole=True)}"
    return f"elapsed {format_duration(seconds, whole=True)}"


def _silence_text(state: RunState, now: float) -> str:
    """'no output for N s' while running and silent for at least a second, else ''.

    While a question waits: 'waiting for you for N s' (never a timeout).
    """
    if state.needs_you and state.waiting_since is not None:
        return f"waiting for you for {format_duration(max(0.0, now - state.waiting_since), whole=True)}"
    if state.status == "reconnecting" and state.unreachable:
        return _unreachable_text(state, now)
    silent = inactive_for(state, now)
    if state.status not in ("running", "thinking") or silent is None or silent < 1:
        return ""
    stopped = f"{STOPPED_WORDS}, " if state.stopped else ""
    return f"{stopped}no output for {format_duration(silent, whole=True)}"


def _unreachable_text(state: RunState, now: float) -> str:
    """While reconnecting to a server the last dial could not reach: why, and for how long
    the client goes on trying ('cannot reach the server: Connection refused; gives up in 4 min 12 s')."""
    text = f"cannot reach the server: {state.unreachable}"
    if state.reconnect_gives_up_at is not None:
        text += f"; gives up in {format_duration(max(0.0, state.reconnect_gives_up_at - now), whole=True)}"
    return text


def shown_error(state: RunState) -> str | None:
    """The run's error to show beside its exit code: None when it only restates that code
    ("exit code 3 · exited with code 3" says the same thing twice), or when it is the failed
    last turn's own, which the body shows with that turn (below its follow-up prompt)."""
    code = state.exit_code
    if code is not None and state.error in (f"exited with code {code}", f"killed by signal {-code}"):
        return None
    if state.turn_error:
        return None
    return state.error


def _summary_html(state: RunState) -> str:
    """The finished run's error and lost note, in red on a line of their own (an error can be
    long; the status line above it says the status, exit code and time)."""
    if not state.finished:
        return ""
    problems = [problem for problem in (shown_error(state), state.lost_note) if problem]
    if not problems:
        return ""
    spans = [f'<span style="{STDERR_STYLE}">{html.escape(printable(problem))}</span>' for problem in problems]
    return '<div class="ccx-summary">' + " · ".join(spans) + "</div>"
