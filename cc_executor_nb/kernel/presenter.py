"""How a run reaches the cell that started it, from the kernel's background loop thread.

A :class:`~cc_executor_nb.kernel.run.Run` hands every event to one presenter, on the loop
thread, right after folding it into its :class:`~cc_executor_nb.kernel.runstate.RunState`:

- :class:`WidgetPresenter` (Jupyter front ends with widgets). The
  :class:`~cc_executor_nb.kernel.views.RunView` is built and displayed on the kernel's
  main thread, so its ``comm_open`` belongs to the cell. Afterwards only trait
  changes travel: the loop thread renders through a
  :class:`~cc_executor_nb.kernel.coalescer.Coalescer` (at most ``max_rate`` renders a
  second, a 1 s tick for timers), and each render sends ``comm_msg`` updates
  through the kernel's IOPub socket, which is thread-safe (it hands frames to the
  kernel's IO thread). Front ends route comm messages by comm id, so the view keeps
  updating while the kernel is idle or busy with another cell.
- :class:`TextPresenter` (terminal IPython, ``--quiet``, ``output_mode="text"``).
  It turns events into plain lines with :class:`~cc_executor_nb.kernel.textview.TextView`
  and writes them from the loop thread. Inside a kernel, ``sys.stdout`` is
  ipykernel's ``OutStream``, which sends ``stream`` messages for the parent header
  of the *current context*; the presenter captures the cell's parent header when
  the run is shown and sets it around each write (``set_thread_parent``), so every
  line lands in the cell that started the run, even after that cell has finished
  (JupyterLab and Notebook keep a cell's output area listening until it runs
  again). Headless runners such as nbclient stop collecting a cell's output when
  it finishes: there, use ``--wait`` so the run ends inside its cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from .. import methods
from ..events import Event, Output
from ..protocol import one_line
from ..terminaltext import ColourFilter, keep_colours
from .coalescer import Coalescer
from .display import RunDisplay
from .runstate import RunState
from .textview import HELD_CHARS, LineRenderer, Piece, SharedLines, TextView, destination

if TYPE_CHECKING:
    from .views import RunView

__all__ = [
    "HELD_LONGEST",
    "HELD_QUIET",
    "LIVE_CHARS_PER_SECOND",
    "RENDER_SHARE",
    "Presenter",
    "TextPresenter",
    "WidgetPresenter",
    "kernel_has_widgets",
    "name_in_terminal",
    "prompt_loop",
    "terminal_held",
    "terminal_interrupted",
]


LIVE_CHARS_PER_SECOND = 500_000
"""At most about this many characters of HTML a second for one run's live widget: a render
waits ``sent / LIVE_CHARS_PER_SECOND`` seconds after one that sent ``sent`` characters, when
that is longer than the rate allows. A long conversation re-sends every turn at each render
(123 KB at 100 turns): its widget updates less often instead of flooding the page."""
RENDER_SHARE = 0.25
"""At most about this share of its thread's time for one run's live widget: a render waits
``cpu / RENDER_SHARE`` seconds after one that took ``cpu`` seconds of its thread, when that is
longer than the rate and ``LIVE_CHARS_PER_SECOND`` allow. A render reads every call of the live
turn (0.23 s at 20,000 calls): at 5 a second it took the whole loop thread."""
MAX_PACE = 2.0
"""The longest wait ``LIVE_CHARS_PER_SECOND`` and ``RENDER_SHARE`` make between two renders: a
question's card, the buttons and the timers never wait longer than that behind a huge render."""


class Presenter(Protocol):
    """Shows one run. ``update`` and ``finish`` run on the loop thread, ``show`` on the caller's."""

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start any timers on the loop (called once, before the first event)."""
        ...

    def update(self, event: Event) -> None:
        """The run's state changed because of ``event``."""
        ...

    def refresh(self) -> None:
        """Something shown changed without an event (e.g. a conversation's queue)."""
        ...

    def finish(self) -> None:
        """The run ended: show the final state and stop timers."""
        ...

    def show(self) -> None:
        """Display the run in the current cell (main thread)."""
        ...

    def mimebundle(self) -> dict[str, Any]:
        """The run's MIME bundle for ``_repr_mimebundle_``."""
        ...

    def shows_notices(self) -> bool:
        """Whether a notice of the run (``conversation.notice``) reaches a person now."""
        ...


def kernel_has_widgets(shell: object | None) -> bool:
    """Whether ``shell`` runs inside a Jupyter kernel, where widgets can reach a front end."""
    return shell is not None and getattr(shell, "kernel", None) is not None


def _summary_again(summary: str) -> None:
    """Display ``summary`` in the current cell; in terminal IPython :func:`name_in_terminal` does."""
    from IPython import get_ipython
    from IPython.display import display

    shell = get_ipython()
    if shell is not None and not type(shell).__module__.startswith("IPython.terminal."):
        display({"text/plain": summary}, raw=True)  # type: ignore[no-untyped-call]


def name_in_terminal(obj: object) -> None:
    """In terminal IPython, print ``repr(obj)``: a displayed run or batch streams its text
    as it comes, so the ``Out[n]:`` prompt would otherwise stand alone."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and type(shell).__module__.startswith("IPython.terminal."):
        print(repr(obj))


class WidgetPresenter:
    """Drives a :class:`RunView` from the loop thread through one :class:`Coalescer`.

    With ``record`` (the run's record as a MIME bundle), the view is displayed together
    with the record, the record follows each turn of a conversation, and it replaces the
    view when the run ends (:class:`~cc_executor_nb.kernel.display.RunDisplay`).
    ``keep_widget`` says whether the view stays above the record between turns (False:
    a run used one-shot, whose record takes the view's place at each turn's end).
    ``on_release`` is called when the run ended and its record took the view's place in
    the cells: the presenter then lets go of the closed view (see :meth:`finish`).
    """

    def __init__(
        self,
        state: RunState,
        view: RunView,
        *,
        max_rate: float = 10.0,
        record: Callable[[], dict[str, Any]] | None = None,
        keep_widget: Callable[[], bool] = lambda: True,
        on_release: Callable[[], object] = lambda: None,
    ) -> None:
        self.state = state
        self._view: RunView | None = view
        self.coalescer = Coalescer(self._render, max_rate, pace=self._pace)
        self.display = RunDisplay(record) if record is not None else None
        self.keep_widget = keep_widget
        self.on_release = on_release
        self._shown = False  # shown without a record (with one, the display knows)
        self._render()

    @property
    def view(self) -> RunView:
        """The live view; RuntimeError once the run's record took its place (:attr:`released`)."""
        if self._view is None:
            raise RuntimeError("the run ended and its record took the widget's place: the widget is gone")
        return self._view

    @property
    def released(self) -> bool:
        """Whether the view was closed and let go at the run's end."""
        return self._view is None

    def _render(self) -> None:
        if self._view is not None:
            self._view.render(self.state, time.monotonic())

    def _pace(self) -> float:
        """Seconds the last render's HTML and work should be spread over (see ``LIVE_CHARS_PER_SECOND``
        and ``RENDER_SHARE``)."""
        view = self._view  # finish() may let go of it meanwhile (another thread may ask)
        if view is None:
            return 0.0
        return min(max(view.sent_chars / LIVE_CHARS_PER_SECOND, view.render_seconds / RENDER_SHARE), MAX_PACE)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the coalescer's ticker and deferred renders on ``loop``."""
        self.coalescer.attach(loop)

    def update(self, event: Event) -> None:
        """Ask for a render; the coalescer keeps the rate under the cap.

        At the end of a conversation's turn the view renders at once and the display
        carries the record so far (:meth:`RunDisplay.turn_ended`); when a follow-up turn
        starts, the view comes back where the record had taken its place
        (:meth:`RunDisplay.turn_started`).
        """
        if self._view is None:
            return  # the run ended: nothing is live to update
        if self.display is not None and _turn_ended(event):
            self.coalescer.flush()
            if self.display.turn_ended(self._live() if self.keep_widget() else None):
                # No cell shows the widget now: its answer would only linger in the widget
                # state nbclient (nbconvert --execute, papermill) or JupyterLab saves.
                self._view.empty_in_front_ends()
            return
        if self.display is not None and _follow_up_started(event):
            self.display.turn_started(self._live(), before=self._view.refill_front_ends)
        self.coalescer.poke()

    def _live(self) -> dict[str, Any]:
        return dict(self.view.bundle())

    def _live_or_none(self) -> dict[str, Any] | None:
        """The widget's bundle, or None when the run's end closed the widgets meanwhile."""
        try:
            return self._live()
        except TypeError:  # a closed widget has no comm left to name
            return None

    def refresh(self) -> None:
        """Ask for a render (through the same coalescer)."""
        self.coalescer.poke()

    def finish(self) -> None:
        """Stop the ticker, render the final state at once, then put the record in its place.

        Where the record took the widget's place in the cells (or, without a kernel, was
        printed), the closed view is let go too: a finished run kept in ``Out`` or a variable
        held its whole widget tree (about 40 KB a run) for nothing anybody could show again.
        """
        self.coalescer.detach()
        self.coalescer.flush()
        if self.display is not None and self._view is not None:
            self.display.finish()
            # The record took the widget's place in every cell: its models would only
            # linger in the kernel and in a saved notebook's widget state.
            self._view.close(body=True)
            if self.display.record_stands:
                self._view = None
                self.on_release()

    def show(self) -> None:
        """Display the view (one more synchronised view of the same widgets), with the record."""
        if self.display is not None:
            self.display.show(None if self.display.finished else self._live_or_none())
            return
        from IPython.display import display

        # IPython's display() carries no annotations.
        display(self.view.widget)  # type: ignore[no-untyped-call]
        self._shown = True

    def shows_notices(self) -> bool:
        """While a cell shows the widget: not before it is shown, nor once the record took its place;
        or while the view that the user displayed (``display(run.view)``) is live."""
        shown = self._shown if self.display is None else self.display.widget_shown
        view = self._view
        return shown or (view is not None and view.displayed and not self.state.finished)

    def mimebundle(self) -> dict[str, Any]:
        """The widget's bundle with the record while live; the record alone once the run ended."""
        if self.display is not None and (self.display.finished or self._view is None):
            return self.display.bundle()  # the record alone (the widgets are closed)
        live = dict(self.view.bundle())
        return self.display.bundle(live) if self.display is not None else live


def _turn_ended(event: Event) -> bool:
    """A conversation's turn ended and its process lives on (the last turn is the run's end).

    Turns read from an attached job's replay (``replay``) are history: no update for them.
    """
    params = event.params
    return (
        event.method == methods.CONVERSATION_TURN and params.get("status") != "running"
        and not params.get("last") and not params.get("replay")
    )


def _follow_up_started(event: Event) -> bool:
    """A conversation's second (or later) turn started (not in a replay)."""
    params, turn = event.params, event.params.get("turn")
    return (
        event.method == methods.CONVERSATION_TURN and params.get("status") == "running"
        and isinstance(turn, int) and turn > 1 and not params.get("replay")
    )


BACKLOG_CHARS = 1 << 20
"""Characters of output a text run not shown yet keeps for when it is shown (the newest)."""


class TextPresenter:
    """Writes each event as plain text to the streams of the cell that showed the run.

    Until the run is shown (``display=False`` runs may never be), events wait in a
    backlog that keeps every note but only the newest :data:`BACKLOG_CHARS` characters
    of output: the run itself keeps all of it (``run.stdout``, ``run.output``).
    """

    def __init__(
        self, describe: Callable[[], str], *, view: LineRenderer | None = None, label: str = "",
    ) -> None:
        self._describe = describe
        self._label = label
        self.view: LineRenderer = view or TextView(heartbeats=False)
        self._lock = threading.Lock()
        self._backlog: list[Event] = []
        self._backlog_chars = 0
        self._skipped_chars = 0
        self._sink: _Sink | None = None
        self._finished = False
        self._between_turns = False  # a conversation waiting for a follow-up does not print
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep ``loop``: a partial line held while other runs print is shown from it once the run
        went quiet (see :data:`HELD_QUIET`)."""
        with self._lock:
            self._loop = loop
            if self._sink is not None:
                self._sink.loop = loop

    def update(self, event: Event) -> None:
        """Write the event's text now if the run is shown, else keep it for ``show``."""
        with self._lock:
            self._between_turns = _turn_ended(event) or (self._between_turns and not _follow_up_started(event))
            if self._sink is None:
                self._keep(event)
                return
            if _follow_up_started(event):
                self._sink.printing(True)
            self._sink.write_event(self.view, event)
            if _turn_ended(event):
                self._sink.printing(False)  # it waits for a follow-up: other runs' lines go unlabelled

    def _keep(self, event: Event) -> None:
        self._backlog.append(event)
        if isinstance(event, Output):
            self._backlog_chars += len(event.data)
            if self._backlog_chars > 2 * BACKLOG_CHARS:  # trimmed now and then, not per event
                self._trim_backlog()

    def _trim_backlog(self) -> None:
        """Drop the oldest output events down to :data:`BACKLOG_CHARS` characters; keep every note."""
        kept: list[Event] = []
        budget = BACKLOG_CHARS
        for event in reversed(self._backlog):
            if isinstance(event, Output):
                if budget <= 0:
                    self._skipped_chars += len(event.data)
                    continue
                budget -= len(event.data)
            kept.append(event)
        kept.reverse()
        self._backlog = kept
        self._backlog_chars = BACKLOG_CHARS - budget

    def refresh(self) -> None:
        """Nothing to do: text follows events."""

    def finish(self) -> None:
        """Make sure everything written so far leaves the process."""
        with self._lock:
            self._finished = True
            if self._sink is not None:
                self._sink.leave()
                self._sink.flush()

    def show(self) -> None:
        """Bind output to the current cell, write what came so far, then follow live.

        Shown again (its text already went to an earlier cell): its one-line summary here, as
        a run shown with a widget shows its record again (it showed nothing at all)."""
        with self._lock:
            if self._sink is not None:
                _summary_again(self._describe())
                return
            self._sink = _Sink.capture(self._label)
            self._sink.loop = self._loop
            self._sink.printing(not (self._finished or self._between_turns))
            skipped = self._skipped_chars if isinstance(self.view, TextView) else 0
            for event in self._backlog:
                if skipped and isinstance(event, Output):
                    self._sink.note(f"[… {skipped:,} characters of earlier output not shown: "
                                    "run.stdout and run.output have them]")
                    skipped = 0
                self._sink.write_event(self.view, event)
            self._backlog.clear()
            self._backlog_chars = self._skipped_chars = 0
            if self._finished:
                self._sink.leave()

    def shows_notices(self) -> bool:
        """Once shown: every note is printed as it comes (``[note] ...``)."""
        return self._sink is not None

    def line_label(self) -> str:
        """The label that starts the run's lines now (``2│ ``), or ``''`` (unlabelled, or not shown)."""
        with self._lock:
            return self._sink.line_label() if self._sink is not None else ""

    def mimebundle(self) -> dict[str, Any]:
        """A one-line text summary of the run."""
        return {"text/plain": self._describe()}


class _AbovePrompt:
    """Text for the terminal while terminal IPython waits at its prompt, drawn above it in
    the order written.

    Terminal IPython replaces ``sys.stdout`` and ``sys.stderr`` by prompt_toolkit's
    ``StdoutProxy`` (``patch_stdout``) only while it shows its prompt. A run's sink holds
    the terminal's own stream, captured while the cell ran; written to straight, its text
    would land on the prompt's line (``In [3]: [completed] exit 0``). Text is drawn above
    the prompt instead, on the prompt's loop (``run_in_terminal``). The proxy itself cannot
    be used for that: the text it handed to the prompt's loop waits for the next prompt
    when this one ends first (Enter pressed), while what comes next is written at once,
    so ``run.wait()`` right after ``--attach last`` printed the job's replay before its
    ``[started]``. Here the text waits in :attr:`_pending`, and whatever the prompt did
    not draw is written first by the next write that goes straight to the terminal, or
    after :data:`PROMPT_GRACE` seconds when the prompt is gone by then and nothing else
    came (``run.wait()`` on a run gone quiet would show nothing).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[TextIO, str]] = []
        self._scheduled: asyncio.AbstractEventLoop | None = None
        self._held = 0

    def write(self, stream: TextIO, text: str) -> None:
        """Write ``text`` to ``stream`` (a terminal's): above the prompt if one is shown, else now
        (after a question asked on the terminal, while one is: see :meth:`holding`)."""
        loop = _prompt_loop(stream)
        with self._lock:
            if self._held:
                self._pending.append((stream, text))
                return
            if loop is None:
                self._write_now([*self._take(), (stream, text)])
                return
            self._pending.append((stream, text))
            if self._scheduled is loop:
                return  # the prompt draws it with what waits already
            self._scheduled = loop
        try:
            loop.call_soon_threadsafe(self._draw)
        except RuntimeError:  # the prompt's loop is closed: nobody would draw it
            self.drain()
            return
        timer = threading.Timer(PROMPT_GRACE, self._drain_if_no_prompt, args=(stream,))
        timer.daemon = True
        timer.start()

    def _drain_if_no_prompt(self, stream: TextIO) -> None:
        """What the prompt did not draw before it ended, written now (a timer's thread)."""
        if _prompt_loop(stream) is None:
            self.drain()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """While a question is asked on the terminal, the runs' text waits and comes after it:
        written at once, it landed on the question's line, where the answer is typed."""
        with self._lock:
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
            self.drain()  # a question is asked while its caller waits: no IPython prompt is shown

    def drain(self) -> None:
        """Write what waits now (unless a question holds it)."""
        with self._lock:
            if not self._held:
                self._write_now(self._take())

    def _draw(self) -> None:
        """On the prompt's loop: erase the prompt, write what waits, draw the prompt again."""
        from prompt_toolkit.application import run_in_terminal

        run_in_terminal(self._drain_lines, in_executor=False)

    def _drain_lines(self) -> None:
        """Above the prompt: write what waits up to its last line end. An unfinished line waits
        for its end (or for a write once the prompt is gone): the prompt, drawn after it, wrote
        over it, and a run's ``working...`` vanished dot by dot."""
        with self._lock:
            if self._held:
                return
            pending = self._take()
            last = max((i for i, (_stream, text) in enumerate(pending) if "\n" in text), default=-1)
            if sum(len(text) for _stream, text in pending[last + 1:]) > HELD_CHARS:
                # Too long to wait for its end (a progress bar redrawn with carriage returns
                # never ends its line): written, ended by a newline, so the prompt keeps off it.
                self._write_now([*pending, (pending[-1][0], "\n")])
                return
            if last < 0:
                self._pending = pending
                return
            stream, text = pending[last]
            end = text.rindex("\n") + 1
            self._pending = [(stream, text[end:])] * (end < len(text)) + pending[last + 1:]
            self._write_now([*pending[:last], (stream, text[:end])])

    def _take(self) -> list[tuple[TextIO, str]]:
        pending, self._pending, self._scheduled = self._pending, [], None
        return pending

    @staticmethod
    def _write_now(pieces: list[tuple[TextIO, str]]) -> None:
        for stream, text in pieces:
            stream.write(text)
            stream.flush()


PROMPT_GRACE = 0.5
"""Seconds text for terminal IPython's prompt may wait for it, once the prompt is gone."""


def _prompt_loop(stream: TextIO) -> asyncio.AbstractEventLoop | None:
    """The loop of terminal IPython's prompt if it is shown now and ``stream`` is the terminal's."""
    current = sys.stdout
    if type(current).__name__ != "StdoutProxy" or stream not in (sys.__stdout__, sys.__stderr__):
        return None
    app = getattr(getattr(current, "app_session", None), "app", None)
    loop = getattr(app, "loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


_above_prompt = _AbovePrompt()


def prompt_loop() -> asyncio.AbstractEventLoop | None:
    """The loop of terminal IPython's prompt while it is shown, else None."""
    return _prompt_loop(sys.__stdout__) if sys.__stdout__ is not None else None


def terminal_interrupted() -> None:
    """A Ctrl-C typed at the terminal: the ``^C`` it echoed left the cursor mid-line, so the runs'
    next text there starts a line of its own (``[cancelling]`` followed it on its line)."""
    stream = sys.__stdout__
    if stream is None or not (_isatty(stream) and _isatty(sys.__stdin__)):
        return
    with _places_lock:
        place = _places.get(destination(stream))
        if place is not None:
            place.mid_line(destination(stream))


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # closed, or no file at all
        return False


def terminal_held() -> contextlib.AbstractContextManager[None]:
    """Hold the runs' text for the terminal while a question is asked there (see :meth:`_AbovePrompt.holding`)."""
    return _above_prompt.holding()


def _saved(stream: TextIO) -> bool:
    """Whether text written to ``stream`` is saved in a notebook (ipykernel's ``OutStream``)."""
    return hasattr(stream, "set_thread_parent")


HELD_QUIET = 0.5
"""Seconds a run may write nothing before the partial line it holds while other runs print is
written (labelled, ended by a newline): a prompt (``Password: ``) waiting for an answer, a
progress bar between two redraws, a half-written line, were hidden until the run's next line."""

HELD_LONGEST = 1.0
"""Seconds a partial line may be held while other runs print although its run never went quiet
(a progress bar redrawn every 0.2 s): its latest redraw is then written (labelled, ended by a
newline), and so at most once per this many seconds while the bar goes on. It was shown only at
:data:`~cc_executor_nb.kernel.textview.HELD_CHARS` characters or at its run's end."""

LABEL_CHARS = 60
"""The most of a run's label a note names it with."""

_places: dict[object, SharedLines] = {}
"""The places runs print to (the terminal, a notebook cell), each with its shared lines."""
_places_lock = threading.Lock()


class _Sink:
    """The caller's stdout/stderr and, in a kernel, the parent header to write under.

    Runs that write to the same place (the terminal outside a kernel, one cell in a kernel)
    share its lines through one :class:`~cc_executor_nb.kernel.textview.SharedLines`: while
    more than one prints, each line starts with its run's label (``2│ ``) and only whole
    lines are written. Outside a kernel, a note written unlabelled after another run's lines
    names its run (``[completed] exit 0 in 0.5 s · claude: what is 2+2``; a ``[started]``
    line names its command already), or it would read as the other run's (a conversation
    ends when ``end()`` is called, often after the next run started).
    """

    _last_shared: _Sink | None = None
    """The sink that last wrote to the shared streams (outside a kernel)."""

    def __init__(self, out: TextIO, err: TextIO, parent: Mapping[str, Any] | None, label: str = "") -> None:
        self.out, self.err, self.parent = out, err, parent
        self.label = one_line(label, LABEL_CHARS) if label else ""
        # A kernel's stream output is saved in the notebook, where JupyterLab renders SGR
        # colours only: every other escape (a title, a clipboard write, a hyperlink) is
        # dropped, as in the widget and the record. A terminal gets the output as it is.
        self.filters = {"stdout": ColourFilter(), "stderr": ColourFilter()} if _saved(out) else None
        self._place_key: object = ("cell", parent.get("msg_id")) if parent else destination(out)
        self._token: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop that shows a held partial line once the run went quiet (none: never)."""
        self._wrote_at = 0.0
        self._held_since: float | None = None
        """When the partial line held now began to be held (see :data:`HELD_LONGEST`)."""
        self._quiet_armed = False

    @classmethod
    def capture(cls, label: str = "") -> _Sink:
        """The current streams and the current cell's parent header (call on the cell's thread)."""
        parent = getattr(sys.stdout, "parent_header", None)
        return cls(sys.stdout, sys.stderr, dict(parent) if parent else None, label)

    def write_event(self, view: LineRenderer, event: Event) -> None:
        if event.method == methods.CONNECTED:
            return  # session bookkeeping, not news to the reader
        if event.method == methods.PROCESS_STARTED and isinstance(event.params.get("pid"), int):
            with _places_lock:
                place, token = self._joined()
                place.started(token, event.params["pid"])
        for line in view.render(event.method, event.params):
            if line.kind == "note":
                self.note(line.text)
            else:
                text = line.text if self.filters is None else self.filters[line.kind].feed(line.text)
                if text:
                    self.write(self.err if line.kind == "stderr" else self.out, text)

    def note(self, text: str) -> None:
        """A line of its own on stdout (labelled, or naming the run after another run's lines)."""
        with _places_lock:
            place, token = self._joined()
            if not place.labelled(token) and self.parent is None and self.label and (
                _Sink._last_shared not in (None, self) and not text.startswith("[started]")  # names its command
            ):
                text = f"{text} · {self.label}"
            if self.filters is not None:
                text = keep_colours(text)  # a note can quote a child (an error, a question's command)
            dest = destination(self.out)
            held = place.holds(token)
            self._emit(place.line_start(token, self.out, dest) + place.write(token, self.out, dest, text + "\n"))
            self._watch_held(place, token, held)

    def write(self, stream: TextIO, text: str) -> None:
        """Write ``text`` (output, or whole lines) to ``stream``, as the place's other runs allow."""
        with _places_lock:
            place, token = self._joined()
            held = place.holds(token)
            self._emit(place.write(token, stream, destination(stream), text))
            self._watch_held(place, token, held)

    def _watch_held(self, place: SharedLines, token: int, held: bool) -> None:
        """Just wrote (with the places' lock held; ``held``: a partial line was held before): if a
        partial line is held now, it is shown once the run wrote nothing for :data:`HELD_QUIET`
        seconds, or at the latest :data:`HELD_LONGEST` seconds after it began to be held (one
        timer, pushed on by each write up to that bound)."""
        self._wrote_at = time.monotonic()
        if not place.holds(token):
            self._held_since = None
            return
        if not held or self._held_since is None:
            self._held_since = self._wrote_at
        if self._quiet_armed or self.loop is None:
            return
        self._quiet_armed = self._call_later(HELD_QUIET)

    def _call_later(self, delay: float) -> bool:
        """Arm :meth:`_when_quiet` on the loop (from any thread); False if the loop is closed."""
        loop = self.loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(loop.call_later, delay, self._when_quiet)
        except RuntimeError:  # the loop is closed: nothing runs on it any more
            return False
        return True

    def _when_quiet(self) -> None:
        """On the loop: the held partial lines are written if the run stayed quiet, their latest
        redraw if they were held :data:`HELD_LONGEST` seconds; else the timer waits on for the
        rest of the quiet time since the run's last write, or of that bound."""
        with _places_lock:
            self._quiet_armed = False
            if self._token is None:
                return  # the run ended: its held lines were written then
            place, token = self._joined()
            if not place.holds(token):
                self._held_since = None
                return  # its line ended meanwhile (or it printed alone again)
            now = time.monotonic()
            since = now if self._held_since is None else self._held_since
            quiet_left, long_left = self._wrote_at + HELD_QUIET - now, since + HELD_LONGEST - now
            if quiet_left <= 0:
                self._emit(place.quiet(token))
            elif long_left <= 0:
                self._emit(place.held_long(token))
            else:
                self._quiet_armed = self._call_later(min(quiet_left, long_left))
                return
            # Shown: a line held from now on (an empty redraw still held) waits its own bound.
            self._held_since = now if place.holds(token) else None
            if self._held_since is not None:
                self._quiet_armed = self._call_later(min(HELD_QUIET, HELD_LONGEST))

    def line_label(self) -> str:
        """The label that starts the run's lines now (see :meth:`SharedLines.label`)."""
        with _places_lock:
            place = _places.get(self._place_key)
            return place.label(self._token) if place is not None and self._token is not None else ""

    def printing(self, active: bool) -> None:
        """Whether the run prints now (see :meth:`SharedLines.printing`)."""
        with _places_lock:
            place, token = self._joined()
            self._emit(place.printing(token, active))

    def leave(self) -> None:
        """The run ended: its held partial lines are written; the place forgets it."""
        with _places_lock:
            if self._token is None:
                return
            place, token = self._joined()
            self._token = None
            self._emit(place.leave(token))
            if place.empty():
                del _places[self._place_key]

    def _joined(self) -> tuple[SharedLines, int]:
        place = _places.setdefault(self._place_key, SharedLines())
        if self._token is None:
            self._token = place.join(self.label)
        return place, self._token

    def _emit(self, pieces: list[Piece]) -> None:
        for stream, text in pieces:
            self._emit_one(stream, text)

    def _emit_one(self, stream: TextIO, text: str) -> None:
        if self.parent is None:
            _Sink._last_shared = self
        setter = getattr(stream, "set_thread_parent", None)
        if self.parent is None or setter is None:
            _above_prompt.write(stream, text)
            return
        # ipykernel's OutStream buffers per parent header and flushes on its IO thread.
        token = setter(self.parent)
        try:
            stream.write(text)
        finally:
            stream.reset_thread_parent(token)  # type: ignore[attr-defined]

    def flush(self) -> None:
        for stream in (self.out, self.err):
            if getattr(stream, "set_thread_parent", None) is None:
                stream.flush()
