"""Views over a :class:`~cc_executor_nb.kernel.runstate.RunState`, and the one rate-limited update path.

- :class:`RunView` is a thin ipywidgets 8 view: :meth:`RunView.render` copies the
  state into the widgets, assigning only values that changed, inside
  ``hold_sync()``; so each widget sends at most one comm message per render and
  an unchanged state sends none. It does no asyncio and may be called from any
  thread.
- :class:`Coalescer` decides *when* to render: at most ``max_rate`` times a
  second however fast events arrive, plus a slow tick so timers advance.
- :class:`TextView` turns notifications into plain lines for text front ends.

Child output is untrusted: every piece of text reaching an ``HTML`` widget
goes through :func:`html.escape` first.

Typical wiring on the kernel's background loop::

    view = RunView("claude -p ...", on_cancel=cancel)
    coalescer = Coalescer(lambda: view.render(state, time.monotonic()))
    coalescer.attach(loop)
    # for each notification (on the loop thread):
    state.apply(method, params, time.monotonic()); coalescer.poke()
    # when the run ends:
    coalescer.flush(); coalescer.detach()
"""

from __future__ import annotations

import asyncio
import html
import math
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from typing import Any, Protocol

import ipywidgets as widgets
from traitlets import HasTraits

from .. import methods
from .runstate import (
    ACTIVE_STATUSES,
    Health,
    RunState,
    elapsed,
    format_duration,
    heartbeat_health,
    inactive_for,
    next_beat_in,
)

__all__ = [
    "Body",
    "Coalescer",
    "RunView",
    "TextView",
    "progress_text",
    "resources_text",
    "sparkline",
    "badge_html",
    "header_html",
    "heartbeat_html",
    "output_html",
]

Callback = Callable[[], object]
Scheduler = Callable[[float, Callable[[], None]], object]

STATUS_COLORS: dict[str, str] = {
    "starting": "#6c757d",
    "running": "#0d6efd",
    "thinking": "#6f42c1",
    "paused": "#fd7e14",
    "completed": "#198754",
    "failed": "#dc3545",
    "cancelled": "#495057",
    "timeout": "#d63384",
    "reconnecting": "#b58900",
    "error": "#dc3545",
}
HEALTH_COLORS: dict[str, str] = {
    "ok": "#dc3545",
    "waiting": "#6c757d",
    "overdue": "#fd7e14",
    "lost": "#6c757d",
}
STDERR_STYLE = "color:#b00020;background:#fff0f0"
# MathJax typesets HTML widget content; these classes make it leave child output alone.
NO_MATH_CLASSES = "tex2jax_ignore mathjax_ignore"


class Body(Protocol):
    """A hook for richer per-run rendering (for instance of Claude's stream-json).

    RunView shows ``widget`` below (or, with ``show_output=False``, instead of)
    the raw output and calls ``render`` after each of its own renders.
    """

    @property
    def widget(self) -> widgets.Widget:
        """The widget to place in the run's box."""
        ...

    def render(self, state: RunState, now: float) -> None:
        """Bring ``widget`` up to date with ``state``."""
        ...


# Pure HTML builders


def badge_html(state: RunState) -> str:
    """The status badge: escaped status text on a colour per status."""
    color = STATUS_COLORS.get(state.status, "#6c757d")
    text = html.escape(state.status)
    return (
        f'<span class="ccx-badge ccx-status-{text}" style="background:{color};color:#fff;'
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


def header_html(state: RunState, now: float, label: str | None = None) -> str:
    """Everything but the output in one HTML value, so a render is one message.

    Title; status badge, heartbeat indicator (while live), elapsed time and the
    inactivity timer; the progress bar with ETA (only with an estimate); CPU and
    memory (while live); after the run, exit code and error.
    """
    live = not state.finished
    parts = [
        _title_html(label, state),
        "<div class='ccx-status-line' style='display:flex;gap:1em;flex-wrap:wrap'>",
        badge_html(state),
    ]
    if live:
        beat, health = heartbeat_html(state, now)
        parts.append(f'<span class="ccx-heartbeat ccx-hb-{health}">{beat}</span>')
    parts.append(f'<span class="ccx-clock">{html.escape(_clock_text(state, now))}</span>')
    silence = _silence_text(state, now)
    if silence:
        parts.append(f'<span class="ccx-inactivity">{html.escape(silence)}</span>')
    parts.append("</div>")
    if live:
        parts.append(_measures_html(state))
    parts.append(_summary_html(state))
    return "".join(parts)


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
    tail = state.tail(max_chars)
    body = "".join(_piece_html(stream, text) for stream, text in tail.pieces)
    note = ""
    if tail.cut:
        note = (
            '<div class="ccx-cut" style="color:#6c757d;font-style:italic">'
            f"… {tail.cut_chars} earlier characters not shown (full output in run.stdout)</div>"
        )
    # A column-reverse flex box starts scrolled to its end, so new output stays in view.
    return (
        f'<div class="ccx-output {NO_MATH_CLASSES}" style="max-height:{html.escape(height)};'
        'overflow:auto;display:flex;flex-direction:column-reverse"><div>'
        f'{note}<pre style="margin:0;white-space:pre-wrap;word-break:break-word">{body}</pre>'
        "</div></div>"
    )


def _piece_html(stream: str, text: str) -> str:
    escaped = html.escape(text)
    if stream == "stderr":
        return f'<span class="ccx-stderr" style="{STDERR_STYLE}">{escaped}</span>'
    return escaped


def _heartbeat_text(state: RunState, health: Health, age: float | None, now: float) -> str:
    if health == "waiting" or age is None:
        return "waiting for heartbeat"
    ago = format_duration(age, whole=True)
    since = (
        f"last beat {ago} ago" if state.last_heartbeat_at is not None else f"no heartbeat for {ago}"
    )
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
        label = shlex.join(state.argv) if state.argv else "run"
    return f'<b class="ccx-title" style="font-family:monospace">{html.escape(label)}</b>'


def _clock_text(state: RunState, now: float) -> str:
    seconds = elapsed(state, now)
    if seconds is None:
        return ""
    if state.ended_at is not None:
        return f"took {format_duration(seconds)}"
    return f"elapsed {format_duration(seconds, whole=True)}"


def _silence_text(state: RunState, now: float) -> str:
    """'no output for N s' while running and silent for at least a second, else ''."""
    silent = inactive_for(state, now)
    if state.status not in ("running", "thinking") or silent is None or silent < 1:
        return ""
    return f"no output for {format_duration(silent, whole=True)}"


def _summary_html(state: RunState) -> str:
    if not state.finished:
        return ""
    parts = [] if state.exit_code is None else [f"exit code {state.exit_code}"]
    if state.error:
        parts.append(f'<span style="{STDERR_STYLE}">{html.escape(state.error)}</span>')
    return '<div class="ccx-summary">' + " · ".join(parts) + "</div>"


def _assign(obj: HasTraits, name: str, value: object) -> None:
    """Set a trait only when the value differs, so no comm message is sent for a no-op."""
    if getattr(obj, name) != value:
        setattr(obj, name, value)


def _show(widget: widgets.DOMWidget, visible: bool) -> None:
    _assign(widget.layout, "display", None if visible else "none")


class RunView:
    """An ipywidgets view of one run: title, status, heartbeat, timers, output and controls.

    ``on_pause``/``on_resume``/``on_cancel`` are called with no arguments when the
    button is clicked; a button whose callback is None stays hidden. ``body`` is
    an optional :class:`Body` shown after the raw output (or instead of it when
    ``show_output`` is false). Display it with ``display(view)``.
    """

    def __init__(
        self,
        label: str | None = None,
        *,
        on_pause: Callback | None = None,
        on_resume: Callback | None = None,
        on_cancel: Callback | None = None,
        max_chars: int = 20000,
        body: Body | None = None,
        show_output: bool = True,
        output_height: str = "24em",
        state: RunState | None = None,
        now: float | None = None,
    ) -> None:
        self.label = label
        self.max_chars = max_chars
        self.body = body
        self.show_output = show_output
        self.output_height = output_height
        self._lock = threading.RLock()
        self._callbacks = {"pause": on_pause, "resume": on_resume, "cancel": on_cancel}
        # Every widget is created with the values of the first render (of ``state``), so
        # they travel in the comm_open messages instead of a burst of updates after them.
        self._build_widgets(state, time.monotonic() if now is None else now)
        enabled = self._enabled(state) if state is not None else {}
        self.pause_button = _button("Pause", "pause", "", on_pause, enabled.get("pause", False))
        self.resume_button = _button("Resume", "play", "", on_resume, enabled.get("resume", False))
        self.cancel_button = _button("Cancel", "stop", "danger", on_cancel, enabled.get("cancel", False))
        self.widget = self._assemble()

    def _build_widgets(self, state: RunState | None, now: float) -> None:
        # Two synced widgets: a render changes at most the header and the output, so it
        # costs at most two comm messages however much of the state moved.
        self.header = widgets.HTML(**self._header_traits(state, now) if state is not None else {})
        visible = state is not None and self._output_visible(state)
        self.output = widgets.HTML(
            value=self._output_value(state) if state is not None and visible else "",
            layout=widgets.Layout(display=None if visible else "none"),
        )

    def _assemble(self) -> widgets.VBox:
        button_row = widgets.HBox(list(self.buttons.values()))
        extra = [self.body.widget] if self.body is not None else []
        return widgets.VBox([self.header, self.output, *extra, button_row], _dom_classes=("ccx-run",))

    @property
    def _synced(self) -> list[widgets.Widget]:
        """Every widget whose traits render() may change."""
        buttons = [self.pause_button, self.resume_button, self.cancel_button]
        return [self.header, self.output, self.output.layout, *buttons]

    def render(self, state: RunState, now: float) -> None:
        """Bring every widget up to date with ``state`` at ``now`` (any thread; no asyncio)."""
        with self._lock:
            with ExitStack() as stack:
                for widget in self._synced:
                    stack.enter_context(widget.hold_sync())
                self._render_status(state, now)
                self._render_output(state)
                self._render_buttons(state)
            if self.body is not None:
                self.body.render(state, now)

    def _header_traits(self, state: RunState, now: float) -> dict[str, Any]:
        return {
            "value": header_html(state, now, self.label),
            "_dom_classes": ("ccx-header", f"ccx-status-{state.status}"),
        }

    def _output_visible(self, state: RunState) -> bool:
        return self.show_output and state.output_chars > 0

    def _output_value(self, state: RunState) -> str:
        return output_html(state, self.max_chars, height=self.output_height)

    def _enabled(self, state: RunState) -> dict[str, bool]:
        """Which buttons may be clicked in ``state`` (a button without a callback never)."""
        allowed = {
            "pause": state.status in ("running", "thinking"),
            "resume": state.status == "paused",
            "cancel": state.status in ACTIVE_STATUSES,
        }
        return {name: allowed[name] and self._callbacks[name] is not None for name in allowed}

    def _render_status(self, state: RunState, now: float) -> None:
        for name, value in self._header_traits(state, now).items():
            _assign(self.header, name, value)

    def _render_output(self, state: RunState) -> None:
        visible = self._output_visible(state)
        if visible:
            _assign(self.output, "value", self._output_value(state))
        _show(self.output, visible)

    def _render_buttons(self, state: RunState) -> None:
        enabled = self._enabled(state)
        for name, button in self.buttons.items():
            _assign(button, "disabled", not enabled[name])

    @property
    def buttons(self) -> dict[str, widgets.Button]:
        """The control buttons by action name."""
        return {
            "pause": self.pause_button,
            "resume": self.resume_button,
            "cancel": self.cancel_button,
        }

    def close(self) -> None:
        """Close every widget the view made, layouts and styles included (not the body's)."""
        keep = self.body.widget if self.body is not None else None
        _close_tree(self.widget, keep)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _close_tree(widget: widgets.Widget, keep: widgets.Widget | None) -> None:
    """Close a widget, its layout and style, and its children except ``keep``."""
    for child in getattr(widget, "children", ()):
        if child is not keep:
            _close_tree(child, keep)
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(part, widgets.Widget):
            part.close()
    widget.close()


def _button(
    description: str, icon: str, style: str, callback: Callback | None, enabled: bool
) -> widgets.Button:
    layout = widgets.Layout(width="auto", display="none" if callback is None else None)
    button = widgets.Button(
        description=description, icon=icon, button_style=style, disabled=not enabled, layout=layout
    )
    if callback is not None:
        button.on_click(lambda _button: callback())
    return button


# The one rate-limited update path


class Coalescer:
    """Turn any number of "something changed" pokes into at most ``max_rate`` renders a second.

    The core is clock-driven and loop-agnostic: :meth:`poke` renders at once when
    the last render is at least ``1 / max_rate`` old, and otherwise arranges one
    later render through the scheduler (``schedule(delay, callback)``, or the
    loop given to :meth:`attach`). Without either, the owner drives deferred
    renders with :meth:`run_due` or :meth:`tick`. All methods may be called from
    any thread; renders never overlap.
    """

    def __init__(
        self,
        render: Callable[[], None],
        max_rate: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        tick_interval: float = 1.0,
        schedule: Scheduler | None = None,
    ) -> None:
        if max_rate <= 0:
            raise ValueError("max_rate must be positive")
        self._render = render
        self.min_interval = 1.0 / max_rate
        self.tick_interval = tick_interval
        self._clock = clock
        self._schedule = schedule
        self._lock = threading.RLock()
        self._render_lock = threading.RLock()
        self._dirty = False
        self._last_render: float | None = None
        self._timer_pending = False
        self.render_count = 0
        # Loop driving (attach/detach)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: object | None = None
        self._handles: dict[str, asyncio.TimerHandle] = {}

    @property
    def dirty(self) -> bool:
        """Whether a change is waiting to be rendered."""
        return self._dirty

    def due(self, now: float | None = None) -> float | None:
        """Seconds until the waiting render may run (0.0: now), or None when nothing waits."""
        with self._lock:
            if not self._dirty:
                return None
            if self._last_render is None:
                return 0.0
            now = self._clock() if now is None else now
            return max(0.0, self._last_render + self.min_interval - now)

    def poke(self) -> None:
        """Note a change: render now if the rate allows, else make sure one render follows."""
        with self._lock:
            self._dirty = True
            go = self._claim()
        if go:
            self._call_render()

    def tick(self) -> None:
        """Re-render for the passage of time (timers, heartbeat age), within the rate limit."""
        self.poke()

    def run_due(self) -> bool:
        """Render if a waiting render is due; return whether it rendered."""
        with self._lock:
            go = self._claim()
        if go:
            self._call_render()
        return go

    def flush(self) -> None:
        """Render now, whatever the rate (for the end of a run)."""
        with self._lock:
            self._mark_rendered(self._clock())
        self._call_render()

    def _claim(self) -> bool:
        """With the lock held: take the render slot if due, else schedule; True means render."""
        now = self._clock()
        wait = self.due(now)
        if wait is None:
            return False
        if wait > 0:
            self._defer(wait)
            return False
        self._mark_rendered(now)
        return True

    def _mark_rendered(self, now: float) -> None:
        self._dirty = False
        self._last_render = now
        self.render_count += 1

    def _call_render(self) -> None:
        with self._render_lock:
            self._render()

    def _defer(self, wait: float) -> None:
        if self._timer_pending:
            return
        if self._loop is not None:
            self._timer_pending = self._arm_on_loop(self._loop, self._token, wait)
        elif self._schedule is not None:
            self._timer_pending = True
            self._schedule(wait, self._on_timer)

    def _on_timer(self) -> None:
        with self._lock:
            self._timer_pending = False
        self.run_due()

    # Driving from an asyncio loop

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run deferred renders and a ``tick_interval`` ticker on ``loop`` (from any thread)."""
        with self._lock:
            if self._loop is not None:
                raise RuntimeError("Coalescer is already attached to a loop")
            self._loop, self._token = loop, object()
            self._timer_pending = False
            token = self._token
        loop.call_soon_threadsafe(self._next_tick, loop, token)
        if self.dirty:
            self.poke()

    def detach(self) -> None:
        """Stop the ticker and any deferred render; callbacks already queued become no-ops."""
        with self._lock:
            loop, handles = self._loop, self._handles
            self._loop, self._token, self._handles = None, None, {}
            self._timer_pending = False
        if loop is None:
            return
        _call_in_loop(loop, lambda: _cancel_all(handles.values()))

    @property
    def attached(self) -> bool:
        """Whether a loop drives this coalescer."""
        return self._loop is not None

    def _arm_on_loop(self, loop: asyncio.AbstractEventLoop, token: object, wait: float) -> bool:
        return _call_in_loop(
            loop,
            lambda: self._keep(token, "render", loop.call_later(wait, self._on_loop_timer, token)),
        )

    def _on_loop_timer(self, token: object) -> None:
        if token is self._token:
            self._on_timer()

    def _next_tick(self, loop: asyncio.AbstractEventLoop, token: object) -> None:
        self._keep(
            token,
            "tick",
            loop.call_later(self.tick_interval, self._on_tick, loop, token),
        )

    def _on_tick(self, loop: asyncio.AbstractEventLoop, token: object) -> None:
        if token is not self._token:
            return
        self.tick()
        self._next_tick(loop, token)

    def _keep(self, token: object, kind: str, handle: asyncio.TimerHandle) -> None:
        """Keep the latest handle of a kind for detach(), or cancel it if detach() already ran."""
        with self._lock:
            if token is self._token:
                self._handles[kind] = handle
                return
        handle.cancel()


def _cancel_all(handles: Iterable[asyncio.TimerHandle]) -> None:
    for handle in handles:
        handle.cancel()


def _call_in_loop(loop: asyncio.AbstractEventLoop, func: Callable[[], object]) -> bool:
    """Run ``func`` on ``loop``: directly when on it, else thread-safely; False if closed."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        func()
        return True
    try:
        loop.call_soon_threadsafe(func)
    except RuntimeError:  # The loop is closed; nothing will run on it any more.
        return False
    return True


# Plain text


class TextView:
    """Render notifications as plain lines for terminals and logs.

    Output text is returned as is (it already carries its own newlines); every
    other line is one ``[tag] message`` without a trailing newline. Returns None
    for notifications not worth a line (and for heartbeats when ``heartbeats``
    is false).
    """

    def __init__(self, *, heartbeats: bool = True) -> None:
        self.heartbeats = heartbeats

    def render_event(self, method: str, params: Mapping[str, Any]) -> str | None:
        """Return the text for one notification, or None to show nothing."""
        if method == methods.HEARTBEAT and not self.heartbeats:
            return None
        formatter = _TEXT_FORMATTERS.get(method)
        return formatter(params) if formatter is not None else None


def _text_connected(params: Mapping[str, Any]) -> str:
    return f"[connected] session {params.get('session_id', '?')}"


def _text_heartbeat(params: Mapping[str, Any]) -> str:
    return f"[heartbeat] {params.get('status', 'alive')}"


def _text_started(params: Mapping[str, Any]) -> str:
    argv = params.get("argv")
    command = shlex.join(str(a) for a in argv) if isinstance(argv, list) else ""
    return f"[started] pid {params.get('pid', '?')} {command}".rstrip()


def _text_output(params: Mapping[str, Any]) -> str | None:
    data = params.get("data")
    return data if isinstance(data, str) and data else None


def _text_status(params: Mapping[str, Any]) -> str:
    silent = params.get("inactive_seconds", params.get("no_output_for"))
    paused = "paused, " if params.get("status") == "paused" else ""
    if not isinstance(silent, (int, float)):
        return f"[status] {paused}no output yet"
    return f"[status] {paused}no output for {format_duration(silent, whole=True)}"


def _text_completed(params: Mapping[str, Any]) -> str:
    status = params.get("status") if isinstance(params.get("status"), str) else "completed"
    line = f"[{status}] exit {params.get('exit_code', '?')}"
    duration = params.get("duration_seconds")
    if isinstance(duration, (int, float)):
        line += f" in {format_duration(duration)}"
    error = params.get("error")
    return line + (f": {error}" if error else "")


def _text_error(params: Mapping[str, Any]) -> str:
    return f"[error] {params.get('error', 'unknown server error')}"


def _text_tag(tag: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda params: f"[{tag}]"


_TEXT_FORMATTERS: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    methods.CONNECTED: _text_connected,
    methods.HEARTBEAT: _text_heartbeat,
    methods.PROCESS_STARTED: _text_started,
    methods.PROCESS_OUTPUT: _text_output,
    methods.PROCESS_STATUS: _text_status,
    methods.PROCESS_PAUSED: _text_tag("paused"),
    methods.PROCESS_RESUMED: _text_tag("resumed"),
    methods.PROCESS_CANCELLED: _text_tag("cancelled"),
    methods.PROCESS_COMPLETED: _text_completed,
    methods.PROCESS_ERROR: _text_error,
}
