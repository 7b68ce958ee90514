"""The ipywidgets view of one run, a thin view over its :class:`~cc_executor_nb.kernel.runstate.RunState`.

:meth:`RunView.render` copies the state into the widgets, assigning only values that
changed, inside ``hold_sync()``; so each widget sends at most one comm message per
render and an unchanged state sends none. It does no asyncio and may be called from any
thread; :class:`~cc_executor_nb.kernel.coalescer.Coalescer` decides when. The HTML
comes from :mod:`cc_executor_nb.kernel.html`, which escapes all child output.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, Protocol

import ipywidgets as widgets
from traitlets import HasTraits

from ..events import ACTIVE_STATUSES
from .html import header_html, output_html
from .runstate import RunState

__all__ = ["Body", "Callback", "RunView", "close_tree"]

Callback = Callable[[], object]


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
        self.displayed = False
        """Whether IPython displayed this view itself (``display(run.view)``, or the view as a
        cell's value), apart from the run's own display: a cell shows its live widgets then.
        ``display(view.widget)``, or the widget inside a container of the user's, is not seen."""
        self._emptied = False  # the front ends hold none of its text (empty_in_front_ends)
        self.sent_chars = 0
        """Characters of HTML the last :meth:`render` sent to the page (the values it replaced,
        the body's included): what a presenter paces its renders by."""
        self.render_seconds = 0.0
        """The CPU time of the last :meth:`render` on its thread: what a presenter paces its renders by too."""

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
        started = time.thread_time()
        with self._lock:
            before = (self.header.value, self.output.value)
            # The body first: the badge never says a run ended before the body it sums up
            # (the answer, the footer) is on its way to the page.
            if self.body is not None:
                self.body.render(state, now)
            with ExitStack() as stack:
                for widget in self._synced:
                    stack.enter_context(widget.hold_sync())
                self._render_status(state, now)
                self._render_output(state)
                self._render_buttons(state)
            after = (self.header.value, self.output.value)
            self.sent_chars = sum(len(new) for new, old in zip(after, before, strict=True) if new != old)
            self.sent_chars += int(getattr(self.body, "sent_chars", 0))
            self.render_seconds = time.thread_time() - started

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
            # Between the turns of a conversation the process lives on: it may be cancelled.
            "cancel": state.status in ACTIVE_STATUSES or state.between_turns,
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

    def close(self, *, body: bool = False) -> None:
        """Close every widget the view made, layouts and styles included; the body's too with ``body``."""
        keep = self.body.widget if self.body is not None and not body else None
        close_tree(self.widget, keep)

    def empty_in_front_ends(self) -> None:
        """Empty every widget of the view in the front ends, keeping it open (see :func:`empty_tree`),
        unless IPython displayed the view itself (:attr:`displayed`: a cell of the user's shows it)."""
        if self.displayed:
            return
        self._emptied = True
        empty_tree(self.widget)

    def refill_front_ends(self) -> None:
        """Send the front ends every widget's whole state again (after :meth:`empty_in_front_ends`)."""
        self._emptied = False
        for widget in _tree(self.widget):
            widget.send_state()

    def bundle(self) -> Any:
        """The widget's MIME bundle for the run's own display (not counted in :attr:`displayed`)."""
        return self.widget._repr_mimebundle_()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        self.displayed = True  # only IPython's display asks for it: the run's own display takes bundle()
        if self._emptied:  # a view the record replaced is shown again: whole, not blank
            self.refill_front_ends()
        return self.widget._repr_mimebundle_(**kwargs)


def close_tree(widget: widgets.Widget, keep: widgets.Widget | None = None) -> None:
    """Close a widget, its layout and style, and its children except ``keep``, each emptied
    in the front ends first (:func:`empty_in_front_ends`)."""
    for child in getattr(widget, "children", ()):
        if child is not keep:
            close_tree(child, keep)
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(part, widgets.Widget):
            part.close()
    empty_in_front_ends(widget)
    widget.close()


def empty_tree(widget: widgets.Widget) -> None:
    """:func:`empty_in_front_ends` for a widget and its children, all of them left open."""
    for part in _tree(widget):
        empty_in_front_ends(part)


def _tree(widget: widgets.Widget) -> list[widgets.Widget]:
    """A widget and its children, theirs and so on (not layouts nor styles)."""
    return [widget, *(part for child in getattr(widget, "children", ()) for part in _tree(child))]


def empty_in_front_ends(widget: widgets.Widget) -> None:
    """Tell the front ends that ``widget`` holds no text (a string ``value``) and no children.

    Sent when no cell shows it any more: just before it closes, or while the record stands
    in its place between a conversation's turns. A closed model's views are gone, but
    nbclient (``nbconvert --execute``, papermill) saves the last state of every model it saw,
    closed or not, in the notebook's metadata: a conversation's HTML pieces kept the whole
    answer there (2 MB of a 2.7 MB notebook whose record is 600 KB). The widget keeps its
    values here (a kept ``run.view`` still reads them; :meth:`RunView.refill_front_ends`).
    """
    comm = widget.comm
    if comm is None:
        return
    state: dict[str, Any] = {}
    if "value" in widget.keys and isinstance(widget.value, str) and widget.value:
        state["value"] = ""
    if "children" in widget.keys and widget.children:
        state["children"] = []
    if state:
        comm.send(data={"method": "update", "state": state, "buffer_paths": []})


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
