"""Many runs as one: :func:`map` and the :class:`Batch` handle.

::

    import cc_executor_nb as ccx

    batch = ccx.map(["what is 2+2", "write a haiku"], demo=True)        # prompts
    batch = ccx.map("Summarise {item}", files, concurrency=8)           # a template and items
    batch = ccx.map("wc -l {item}", files, command=True)                # command lines
    batch = ccx.map(prompts, max_budget_usd=5.0, auto_resume=True)      # a budget; wait out usage limits
    batch = ccx.map(prompts, cluster=dask_client, resources={"claude": 1})   # on Dask workers

    batch.wait(); batch.results(); batch.to_dataframe(); batch.runs[3].transcript()

and in a notebook ``%%ccexec --each files`` over a cell whose body is the template.

Every item is an ordinary :class:`~cc_executor_nb.kernel.run.Run` (its own session,
interpreter, transcript, controls), built up front without a view. A queue on the
kernel's background loop starts them, at most ``concurrency`` at once, in input order,
and stops starting new ones when the queue is paused, cancelled, out of budget, or held
by a usage limit (until its reset). One coalescing path renders the batch: at most
``CCExec.max_updates_per_second`` renders a second for the whole batch, each one HTML
message, however many runs it holds; a run's own widget is made only when its row is
expanded.

Scheduling happens on the loop thread only; the public methods may be called from any
other thread (a cell, a button).

:func:`map` returns :meth:`Batch.user_handle`, an object the loop never holds, whose runs are
their own user handles (:meth:`Run.user_handle`): once nobody holds the batch or one of its runs
and no widget shows it, that run's questions are denied and, queued, it never starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import re
import shlex
import statistics
import sys
import threading
import time
import weakref
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .. import methods, shellwords
from ..claude.options import check_dollars, places
from ..declare import OptionError
from ..events import Event
from ..terminaltext import terminal_text
from . import api
from .batchview import BatchView, Row, Summary, batch_html, eta, row_text, summary_text
from .coalescer import Coalescer
from .config import CCExec
from .display import RunDisplay
from .html import stale_html
from .loop import KernelLoop, LoopStopped, shared_loop
from .run import CANCELLED_BY_YOU, CONTROL_TIMEOUT, LOOP_STOPPED, Run, _current_cell, call_back
from .runstate import shown_in_one_line, wait_seconds
from .textview import TextView

if TYPE_CHECKING:
    from .presenter import Presenter, WidgetPresenter

__all__ = ["Batch", "BatchItem", "Placement", "fill", "map"]

logger = logging.getLogger("cc_executor_nb.kernel.batch")

ON_BUDGET = ("finish", "cancel")
_BATCH_KEYWORDS = frozenset({"wait", "display", "quiet", "label"})
_ACTIVE = frozenset({"running", "thinking", "paused", "starting", "reconnecting"})
#: The statuses of a run that failed (the bar's "failed" count).
_FAILED = frozenset({"failed", "error", "timeout"})
#: The queue states with an ETA: a paused, cancelled, spent or finished queue starts nothing.
_MOVING = frozenset({"running", "held"})
_PLACEHOLDER = re.compile(r"\{item\}|\{index\}")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh"})
"""The shells whose ``-c`` script gets the item shell-quoted (see :func:`fill`)."""


def fill(template: str, item: Any, index: int, *, command: bool = False) -> str:
    """``template`` with ``{item}`` (and ``{index}``) replaced; other braces stay as they are.

    A command template is split into words first, as the server splits a command (shlex,
    no shell), then each word is filled: the item goes in as it is, since it is already
    inside one argument (``wc -l {item}`` with ``my file.txt`` stays one argument). In the
    script of a shell (``sh``, ``bash``, ``dash``, ``zsh`` or ``ksh`` with ``-c``, or a
    cluster such as ``-lc``: the first word after its options) the item is shell-quoted,
    so the inner shell sees it as one word and ``d;e`` stays text. The words are joined
    back with ``shlex.join``, which the server's split turns into exactly those words.
    Raises ValueError for a command template that cannot be split (an unclosed quote).
    """
    text, number = str(item), str(index)
    if not command:
        return _fill_word(template, text, number)
    try:
        words = shellwords.split(template)
    except ValueError as exc:
        raise ValueError(f"the command template cannot be split: {exc}: {template!r}") from None
    script = _script_index(words)
    quoted = shlex.quote(text)
    return shlex.join(_fill_word(word, quoted if at == script else text, number) for at, word in enumerate(words))


def _fill_word(word: str, item: str, index: str) -> str:
    values = {"{item}": item, "{index}": index}
    # One pass: an item that itself holds "{index}" or "{item}" is inserted as it is.
    return _PLACEHOLDER.sub(lambda match: values[match.group()], word)


def _script_index(words: Sequence[str]) -> int | None:
    """Where a shell's ``-c`` script is in ``words``: its first operand, if its options hold ``c``."""
    if not words or os.path.basename(words[0]) not in _SHELLS:
        return None
    at, script = 1, False
    while at < len(words) and words[at].startswith(("-", "+")) and words[at] not in ("-", "--"):
        word = words[at]
        if word in ("-o", "+o", "-O", "+O"):
            at += 2  # an option name follows (-o pipefail)
            continue
        script = script or (word.startswith("-") and not word.startswith("--") and "c" in word)
        at += 1
    if at < len(words) and words[at] == "--":
        at += 1
    return at if script and at < len(words) else None


@dataclass
class BatchItem:
    """One item of a batch: its input, its run, and where the queue is with it."""

    index: int
    item: Any
    driven: Run
    """The run as the batch's queue drives it, which the loop holds: holding it keeps nobody's
    question waiting (see :attr:`run`)."""
    stage: str = "queued"
    """The queue's own record: queued, placing (handed to a cluster, not started yet),
    started (it stays so once the run is over) or skipped (never started)."""
    worker: str | None = None
    """Where the run runs (a Dask worker's address), when not here."""
    row: Row | None = None
    """The final row, once the run is over."""
    _handle: weakref.ref[Run] | None = dataclasses.field(default=None, repr=False, compare=False)
    _new_handle: Callable[[], Run] | None = dataclasses.field(default=None, repr=False, compare=False)
    """Makes a user's handle on the run again, once the last one is gone (see :attr:`run`)."""

    @property
    def run(self) -> Run:
        """The item's run: the user's handle on it (``batch.runs[i]``) while the batch's handle
        holds it or someone does (see :meth:`Batch.user_handle`). Once nobody does (the batch was
        dropped, its items kept), a new handle, watched as the first was: holding it keeps the run
        reachable (a queued one is not judged unreachable as it starts), letting it go is seen.
        The run the queue drives, for a batch that gave no handles."""
        handle = self._handle() if self._handle is not None else None
        if handle is None and self._new_handle is not None:
            handle = self._new_handle()
            self._handle = weakref.ref(handle)
        return handle if handle is not None else self.driven

    @property
    def unreachable(self) -> bool:
        """Whether the user had a handle on the run and nobody holds it any more."""
        return self._handle is not None and self._handle() is None

    @property
    def status(self) -> str:
        """The item's status: ``queued`` or ``placing`` until its run starts, ``skipped`` if
        it never will, else its run's status (``running``, ``completed``, ``cancelled`` ...,
        as ``runs[i].status``; never a stale ``started``)."""
        if self.stage == "skipped" or (self.stage in ("queued", "placing") and not self.driven.done):
            return self.stage
        return self.driven.status

    @property
    def finished(self) -> bool:
        """Whether nothing more will happen to this item."""
        return self.driven.done


class Placement(Protocol):
    """Where a batch's runs go. Called on the loop thread."""

    def start(self, entry: BatchItem, batch: Batch) -> None:
        """Start ``entry``'s run (or hand it to where it will start)."""
        ...

    def cancel(self, entry: BatchItem) -> None:
        """Withdraw an entry that was handed over but has not started."""
        ...

    def close(self) -> None:
        """The batch is over."""
        ...


class LocalPlacement:
    """Runs go to this kernel's server (or the one the run options name)."""

    def __init__(self, loop: KernelLoop) -> None:
        self.loop = loop

    def start(self, entry: BatchItem, batch: Batch) -> None:
        """Start the run at once; a conversation (host mode) ends with its first turn."""
        entry.stage = "started"
        entry.driven.start(self.loop)
        if entry.driven.conversation is not None:
            # Questions still come, and the process exits once the first turn has its
            # result, so the run frees its slot (unlike wait=True, which leaves it alive).
            entry.driven.end()

    def cancel(self, entry: BatchItem) -> None:
        """Nothing is ever placed without starting."""

    def close(self) -> None:
        """Nothing to release."""


_QUESTIONS = TextView(heartbeats=False)
"""Renders a run's questions as text (``[needs you] Claude asks to use ...``)."""


class _RowPresenter:
    """A batch run's presenter: tells the batch something changed; drives an expanded widget if any."""

    def __init__(self, batch: Batch, index: int) -> None:
        self.batch = batch
        self.index = index
        self.inner: Presenter | None = None
        self._cost: float | None = None
        """The run's cost as last seen (a change is a result: the budget is checked then)."""

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing to start: the batch's coalescer ticks."""

    def update(self, event: Event) -> None:
        """Ask the batch for a render; feed the expanded widget; say a question that needs a person."""
        inner = self.inner
        if inner is not None:
            inner.update(event)
        if event.method == methods.CONVERSATION_QUESTION:
            asked = _QUESTIONS.render_event(event.method, event.params)  # None: the policy answers it
            if asked is not None:
                self.batch._say(f"#{self.index} {asked} (this run is batch.runs[{self.index}])")
        elif event.method == methods.CONVERSATION_TURN and event.params.get("status") != "running":
            self.batch._cost_known()
        elif event.method == methods.PROCESS_OUTPUT and self._cost_changed():
            self.batch._cost_known()  # a one-shot run's result (no turn says it): its process may live on
        self.batch._poke()

    def _cost_changed(self) -> bool:
        cost = getattr(self.batch.items[self.index].driven.interpreter, "cost_usd", None)
        changed, self._cost = cost != self._cost, cost
        return changed

    def refresh(self) -> None:
        """Something shown changed without an event (a conversation's question)."""
        inner = self.inner
        if inner is not None:
            inner.refresh()
        self.batch._poke()

    def finish(self) -> None:
        """The run ended: the expanded widget shows its final state."""
        inner = self.inner
        if inner is not None:
            inner.finish()

    def show(self) -> None:
        """Displaying a batch's run shows its full widget (the one ``batch.expand(i)`` makes)."""
        if self.batch.mode == "widget":
            from IPython.display import display

            display(self.batch.expand(self.index))  # type: ignore[no-untyped-call]

    def shows_notices(self) -> bool:
        """While the run's own widget is expanded in the batch's view (it shows them)."""
        return self.inner is not None

    def mimebundle(self) -> dict[str, Any]:
        """Text: the run's one-line summary."""
        return {"text/plain": repr(self.batch.items[self.index].driven)}


class Batch:
    """Many runs with one queue, one view and one set of controls (see the module docstring).

    ``runs`` are the items' :class:`Run` handles in input order (a queued item's run has
    not started: its status is ``starting``; ``items[i].status`` says ``queued``, then its
    run's status, or ``skipped``).
    """

    def __init__(
        self,
        runs: Sequence[Run],
        inputs: Sequence[Any],
        loop: KernelLoop,
        *,
        concurrency: int = 4,
        max_budget_usd: float | None = None,
        on_budget: str = "finish",
        placement: Placement | None = None,
        settings: CCExec | None = None,
        mode: str = "widget",
    ) -> None:
        _check_batch(concurrency, max_budget_usd, on_budget)
        self.settings = settings or CCExec()
        self.loop = loop
        self.items = [BatchItem(i, item, run) for i, (item, run) in enumerate(zip(inputs, runs, strict=True))]
        self.concurrency = concurrency
        self.max_budget_usd = max_budget_usd
        self.on_budget = on_budget
        self.placement: Placement = placement or LocalPlacement(loop)
        self.mode = mode
        self.paused = False
        self.cancelled = False
        self.budget_spent = False
        self._budget_stopped = False
        """The budget kept runs from starting (or cancelled them): the batch ends ``budget``."""
        self.hold_until: float | None = None
        """While a usage limit holds the queue: when it resets (epoch seconds)."""
        self.placing_note: str | None = getattr(self.placement, "warning", None)
        """Why its items may wait ``placing`` (no Dask worker offers their resources), if so: said
        once in the batch's text and on each placing row."""
        self._finished = threading.Event()
        self._done: concurrent.futures.Future[Batch] = concurrent.futures.Future()
        self._done.set_running_or_notify_cancel()
        self._presenters = [_RowPresenter(self, item.index) for item in self.items]
        self._wake: asyncio.TimerHandle | None = None
        self._said: set[int] = set()
        self._last_state = "running"
        self._view: BatchView | None = None
        self._display: RunDisplay | None = None
        self._sink: Any = None
        self._expanded: dict[int, WidgetPresenter] = {}
        self._syncing = False
        self._complete = False
        self._over: asyncio.Future[None] | None = None
        """Set once the batch is over (its loop's task then ends without stopping it)."""
        self._shown_in: object = None
        self._user: weakref.ref[Batch] | None = None  # the user's handle (user_handle), never held here
        self._own: Batch = self
        """The loop's own object (a user's handle shares this dict): what the view's callbacks are
        bound to, so that the view this batch keeps never holds the handle."""
        for item, presenter in zip(self.items, self._presenters, strict=True):
            item.driven.presenter = presenter
            item.driven.enqueue()  # its record says queued until it starts
            self._watch(item)
        self.coalescer = Coalescer(self._refresh, self.settings.max_updates_per_second)

    def _watch(self, item: BatchItem) -> None:
        item.driven.add_done_callback(lambda _run: self._on_loop(lambda: self._ended(item)))

    # -- Reading ---------------------------------------------------------------------

    @property
    def runs(self) -> list[Run]:
        """Every item's run, in input order (the user's handle on each: see :meth:`user_handle`)."""
        return [item.run for item in self.items]

    @property
    def done(self) -> bool:
        """Whether every item is over."""
        return self._done.done()

    @property
    def cost_usd(self) -> float:
        """The sum of the runs' reported costs so far (see ``cost_note``)."""
        return float(sum(cost for item in self.items if (cost := item.driven.cost_usd) is not None))

    @property
    def cost_note(self) -> str | None:
        """Why the total is an estimate rather than the bill (``custom endpoint``, ``subscription``), if so."""
        for item in self.items:
            view = item.driven.claude
            reason = getattr(view, "cost_estimate_reason", None) if view is not None else None
            if reason:
                return str(reason)
        return None

    @property
    def status(self) -> str:
        """running, paused, held, budget, cancelled, done, or detached (over: its durable runs go on as jobs)."""
        return self._state(time.time())

    def results(self) -> list[str | None]:
        """Each item's result in input order: Claude's answer (None if the run failed: its
        ``error`` says why), or a command's stdout; None if it never ran."""
        return [None if item.stage == "skipped" else _result_of(item.driven) for item in self.items]

    def to_dataframe(self) -> Any:
        """A pandas DataFrame, one row per item (pandas must be installed; it is not a dependency)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("Batch.to_dataframe() needs pandas: pip install pandas") from None
        # The columns are named even for no items: a frame without them made
        # ``frame[frame.status == "failed"]`` an AttributeError for an empty batch.
        return pandas.DataFrame([_record_of(item) for item in self.items], columns=list(_RECORD_COLUMNS))

    def rows(self, now: float | None = None) -> list[Row]:
        """The table's rows as they are now."""
        now = time.time() if now is None else now
        return [self._row(item, now) for item in self.items]

    def summary(self, now: float | None = None) -> Summary:
        """The aggregate bar's figures as they are now."""
        now = time.time() if now is None else now
        rows = self.rows(now)
        return self._summary(rows, now)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Run:
        return self.items[index].run

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __repr__(self) -> str:
        return f"<Batch of {len(self.items)}: {summary_text(self.summary())}>"

    # -- Control (any thread) -----------------------------------------------------------

    def cancel(self) -> Batch:
        """Cancel all: no new run starts, running ones are cancelled (their processes killed).
        Returns self once the queue has acted (``status`` reads ``cancelled``)."""
        self._control(self._cancel_all)
        return self

    def pause(self) -> Batch:
        """Pause the queue: running runs go on, no new one starts until :meth:`resume` (items
        handed to a cluster that have not started are taken back: they read ``queued``).
        Returns self once the queue has acted (``status`` reads ``paused``)."""
        self._control(lambda: self._set_paused(True))
        return self

    def resume(self) -> Batch:
        """Resume the queue; returns self once the queue has acted."""
        self._control(lambda: self._set_paused(False))
        return self

    def wait(self, timeout: float | None = None) -> Batch:
        """Block until every item is over; returns self.

        Raises TimeoutError when ``timeout`` seconds pass first (the batch goes on). A
        KeyboardInterrupt (a kernel interrupt) cancels the batch, waits for it, then
        propagates.
        """
        timeout = wait_seconds(timeout)
        if self.loop.on_loop_thread():
            raise RuntimeError("Batch.wait() would block the loop thread; use 'await batch'")
        try:
            if not _wait_event(self._finished, timeout):
                raise TimeoutError(f"batch still {self.status} after {timeout} s")
        except KeyboardInterrupt as interrupt:
            self.cancel()
            _wait_event(self._finished, self.settings.kill_grace + 30.0)
            shown_in_one_line(interrupt, "the batch was cancelled")
            raise
        return self

    def wait_accepted(self, timeout: float) -> Batch:
        """Block until the queue has started what it may now, and the job server of each
        durable run among them has its job and its prompt (:attr:`Run.accepted`), or the batch is over, at most
        ``timeout`` s; returns self. Those jobs then outlive this process; items still
        queued (beyond ``concurrency``) start from this process when a slot frees."""
        deadline = time.monotonic() + timeout
        while not self.done and time.monotonic() < deadline and not self._accepted():
            time.sleep(0.005)
        return self

    def _accepted(self) -> bool:
        started = [item for item in self.items if item.stage != "queued"]
        settled = len(started) >= min(self.concurrency, len(self.items)) or not self._can_start(time.time())
        return settled and all(
            item.driven.accepted or item.driven.done for item in started if item.stage == "started"
        )

    @property
    def queued(self) -> int:
        """How many items wait in the queue (they start from this process, when a slot frees)."""
        return sum(1 for item in self.items if item.stage == "queued")

    def __await__(self) -> Generator[Any, None, Batch]:
        yield from asyncio.shield(asyncio.wrap_future(self._done)).__await__()
        return self  # the handle awaited (the loop's own object is not the user's: see user_handle)

    def add_done_callback(self, callback: Callable[[Batch], object]) -> None:
        """Call ``callback(batch)`` once every item is over; what it raises is logged."""
        self._done.add_done_callback(lambda future: call_back(callback, future.result()._for_user()))

    # -- The user's handle -------------------------------------------------------------

    def user_handle(self) -> Batch:
        """This batch as an object the background loop never holds, to give its user, as
        :meth:`Run.user_handle` gives a run's: the same batch, its attributes shared.

        Its runs (``runs``, ``batch[i]``) are their own user handles, which this one holds:
        once the batch's handle is gone, a run whose handle is gone too (``r = batch.runs[0]``
        keeps one) and that no widget shows (the batch's, or the run's expanded) is a run
        nobody can reach: its questions are denied and its conversation ends
        (:meth:`Conversation.nobody_left`), from its start when it was queued then (it still
        runs: a batch of commands, or of prompts with a policy, does its work unattended), unless
        it is durable (its job may be attached from anywhere).
        """
        # A durable run stays followed (let_go=False): the queue counts it until its job ends, and let
        # go it would free its slot at once, so a dropped batch would start all its items together.
        for item in self.items:
            item._new_handle = functools.partial(item.driven.user_handle,
                                                 functools.partial(self._shows_widget, item.index), let_go=False)
        runs = [item._new_handle() for item in self.items if item._new_handle is not None]
        for item, run in zip(self.items, runs, strict=True):
            item._handle = weakref.ref(run)  # items[i].run gives it, as runs[i] does
        handle = object.__new__(type(self))
        handle.__dict__ = self.__dict__
        self._user = weakref.ref(handle)
        weakref.finalize(handle, runs.clear).atexit = False  # the runs' handles go with it, unless held
        return handle

    def _for_user(self) -> Batch:
        """The user's handle on this batch while it lives (what callbacks are given), else this object."""
        handle = self._user() if self._user is not None else None
        return handle if handle is not None else self

    def _shows_widget(self, index: int) -> bool:
        """Whether a cell shows the batch's live widget (its rows expand a run, whose widget answers it)
        or run ``index``'s own."""
        display = self._display
        return (display is not None and display.widget_shown) or index in self._expanded

    def _unreachable(self, item: BatchItem) -> bool:
        """Whether nobody can reach ``item``'s run any more (its handle, and so the batch's, is gone)."""
        return item.unreachable and not item.driven.durable and not self._shows_widget(item.index)

    def _judge_at_start(self, item: BatchItem) -> None:
        """A run whose handle went while it was queued or placing could not be judged then (not
        started): judge it now it started (here, or on a Dask worker once it reported its job)."""
        if self._unreachable(item):
            item.driven.nobody_holds(functools.partial(self._shows_widget, item.index))

    # -- Display (caller's thread) -------------------------------------------------------

    def show(self) -> None:
        """Display the batch in the current cell (at most once per cell): its widget (with a record), or its text."""
        cell = _current_cell()
        if cell is not None and cell == self._shown_in:
            return
        self._shown_in = cell
        if self.mode == "text":
            from .presenter import _Sink

            if self._sink is None:
                self._sink = _Sink.capture()
            return
        if self._display is not None and self._view is None:
            self._display.show()  # its widget was let go at its end: the record alone
            return
        if self._view is None:
            own = self._own  # ``self`` may be the user's handle, which the view must not hold
            self._view = BatchView(
                [item.driven.label for item in self.items],
                on_cancel=own.cancel,
                on_pause=own._on_pause_button,
                expand=own.expand,
                collapse=own.collapse,
                html_value=self._html(time.time()),
            )
            self._display = RunDisplay(own._record)
        assert self._display is not None
        self._display.show(self._view._repr_mimebundle_())

    def _ipython_display_(self) -> None:
        from .presenter import name_in_terminal

        self.show()
        name_in_terminal(self)

    def expand(self, index: int) -> Any:
        """The full widget of run ``index`` (made now, then kept live until :meth:`collapse`)."""
        presenter = self._expanded.get(index)
        if presenter is None:
            run = self.items[index].driven
            presenter = api.widget_presenter(run, self.settings)
            self._expanded[index] = presenter
            self._presenters[index].inner = presenter
            if run.done:
                presenter.finish()
            else:
                presenter.attach(self.loop.loop)
        return presenter.view.widget

    def collapse(self, index: int) -> None:
        """Stop the widget of run ``index`` (its renders), close it and let go of it (``run.view`` None)."""
        presenter = self._expanded.pop(index, None)
        self._presenters[index].inner = None
        if presenter is not None:
            presenter.coalescer.detach()
            presenter.view.close(body=True)
            run = self.items[index].driven
            if run.view is presenter.view:
                run.view = None

    # -- Starting (caller's thread) --------------------------------------------------------

    def start(self) -> Batch:
        """Start the queue on the loop; returns once its first runs started (at most
        CONTROL_TIMEOUT s; a durable run's job may not be taken yet: see :meth:`wait_accepted`)."""
        if self.placing_note:
            logger.warning("! batch: %s", self.placing_note)
            self._say(f"[batch] {self.placing_note}")
        self.coalescer.attach(self.loop.loop)
        # Returns once the first runs started (up to ``concurrency``), as run() returns with its
        # run started: "queued" then means only what waits for a slot (and what a batch nobody
        # holds any more never starts).
        self._control(self._pump)
        with contextlib.suppress(LoopStopped):  # the queue could not start either: _on_loop said so
            self.loop.submit(self._until_the_loop_stops())
        return self

    async def _until_the_loop_stops(self) -> None:
        """A task of the loop's while the batch is not over: the loop's stop cancels it, and the batch
        ends then (items placing on a cluster waited for good: nothing on the loop could settle them)."""
        over = asyncio.get_running_loop().create_future()
        self._over = over
        if self._complete:
            return
        try:
            await over
        except asyncio.CancelledError:
            if not self._complete:
                self._loop_stopped()
            raise

    # -- The queue (loop thread) ----------------------------------------------------------

    def _on_loop(self, func: Callable[[], object]) -> bool:
        """Call ``func`` on the loop (now when on it); whether it was called or scheduled."""
        if self.loop.on_loop_thread():
            func()
            return True
        try:
            self.loop.loop.call_soon_threadsafe(func)
        except (LoopStopped, RuntimeError):
            logger.warning("! the background loop is gone: the batch cannot act any more")
            return False
        return True

    def _control(self, func: Callable[[], object]) -> None:
        """Call ``func`` on the loop and return once it ran (at most CONTROL_TIMEOUT s)."""
        acted = threading.Event()

        def act() -> None:
            try:
                func()
            finally:
                acted.set()

        if self._on_loop(act) and not acted.wait(CONTROL_TIMEOUT):
            logger.warning("! the background loop did not act on a batch control within %s s", CONTROL_TIMEOUT)

    def _poke(self) -> None:
        self.coalescer.poke()

    def _in_flight(self) -> int:
        return sum(1 for item in self.items if item.stage in ("placing", "started") and not item.finished)

    def _can_start(self, now: float) -> bool:
        if self.paused or self.cancelled or self.budget_spent:
            return False
        if self.hold_until is not None and now < self.hold_until:
            return False
        return self._in_flight() < self.concurrency

    def _pump(self) -> None:
        """Start queued items while the queue allows."""
        now = time.time()
        self._update_hold(now)  # a limit that just came holds the queue before anything starts
        # A cost known before its check (a one-shot run's result: no turn says it, its process may live
        # on) stops the queue before anything starts: resume() started the next item into a spent budget.
        self._check_budget()
        for item in self.items:
            if item.stage != "queued":
                continue
            if not self._can_start(now):
                break
            self._start(item)
        self._check_done()
        self._poke()

    def _start(self, item: BatchItem) -> None:
        item.stage = "placing"
        try:
            self.placement.start(item, self)
            self._judge_at_start(item)
        except LoopStopped:
            self._loop_stopped(item)
        except Exception as exc:
            logger.exception("! could not start item %d of a batch", item.index)
            item.driven.abandon(f"could not start: {type(exc).__name__}: {exc}")

    def _ended(self, item: BatchItem) -> None:
        if item.driven.error == LOOP_STOPPED and not self._complete:
            self._loop_stopped()
        item.row = self._row(item, time.time())
        self._say_row(item.row)
        self._check_budget()
        self._pump()

    def _cost_known(self) -> None:
        """A run's turn has its result, and so its cost: the budget is checked then, not when the run's
        process ends (it exits once its input is closed, up to EXIT_AFTER_END later): meanwhile the
        queue said running, and with on_budget="cancel" the other runs went on spending. Checked
        soon on the loop, out of the run's event (which skipping and cancelling runs would re-enter)."""
        with contextlib.suppress(LoopStopped, RuntimeError):
            self.loop.loop.call_soon_threadsafe(lambda: None if self._complete else self._check_budget())

    def _check_budget(self) -> None:
        if self.max_budget_usd is None or self.budget_spent or self.cost_usd < self.max_budget_usd:
            return
        self.budget_spent = True
        running = any(not item.finished and item.stage != "queued" and not _ends_by_itself(item.driven)
                      for item in self.items)
        skipped = self._skip_queued() + self._skip_placing()
        self._budget_stopped = skipped > 0 or (running and self.on_budget == "cancel")
        if self.on_budget == "cancel":
            self._cancel_running(f"cancelled: the batch budget (${self.max_budget_usd:g}) was spent")

    def _cancel_all(self) -> None:
        if self.done:
            return
        self.cancelled = True
        self._skip_queued()
        self._cancel_running()
        self._pump()

    def _cancel_running(self, reason: str = CANCELLED_BY_YOU) -> None:
        """Cancel each item handed over or started; one that cannot be reached never stops the
        others. A run whose turn already has its result, and was told to end, is left to end
        by itself: its work is done (and paid for), so it ends ``completed``, not cancelled."""
        for item in self.items:
            if item.finished or _ends_by_itself(item.driven):
                continue
            if item.stage == "placing":
                self._withdraw(item)
                item.stage = "skipped"  # its run never started here: a job that starts meanwhile is stopped
                item.driven.abandon("cancelled before the run started", status="cancelled")
            elif item.stage == "started":
                try:
                    item.driven.cancel(reason=reason)
                except Exception as exc:
                    logger.warning("! could not cancel item %d of a batch: %s", item.index, _describe(exc))

    def _withdraw(self, item: BatchItem) -> None:
        """Take a placing item back from its placement; one that cannot be reached is said and left."""
        try:
            self.placement.cancel(item)
        except Exception as exc:  # the item ends here all the same
            logger.warning("! could not withdraw item %d from its placement: %s", item.index, _describe(exc))

    def _loop_stopped(self, failed: BatchItem | None = None) -> None:
        """The loop stops under the batch (``failed`` could not start for it): the batch ends
        ``cancelled`` (it read ``done``, as if every item had run to its end), and its queued
        items, and those placing on a cluster (withdrawn), are skipped."""
        self.cancelled = True
        waiting = [item for item in self.items
                   if item is failed or (item.stage in ("queued", "placing") and not item.finished)]
        for item in waiting:  # all of them first: each abandon() may render the batch's line
            if item.stage == "placing":
                self._withdraw(item)
            item.stage = "skipped"
        for item in waiting:
            item.driven.abandon("skipped: the background loop was stopped", status="cancelled")

    def _skip_queued(self) -> int:
        """Queued items will not run: their handles end cancelled, without a process; how many."""
        queued = [item for item in self.items if item.stage == "queued"]
        for item in queued:  # all of them first: each abandon() may render the batch's line
            item.stage = "skipped"
        for item in queued:
            item.driven.abandon("skipped: the batch was cancelled or its budget spent", status="cancelled")
        return len(queued)

    def _skip_placing(self) -> int:
        """Items handed to a cluster whose runs have not started will not run (the budget is spent):
        withdrawn, they end as queued ones do; how many."""
        placing = [item for item in self.items if item.stage == "placing" and not item.finished]
        for item in placing:  # all of them first: each abandon() may render the batch's line
            self._withdraw(item)
            item.stage = "skipped"
        for item in placing:
            item.driven.abandon("skipped: the batch was cancelled or its budget spent", status="cancelled")
        return len(placing)

    def _set_paused(self, paused: bool) -> None:
        if self.paused != paused:
            self.paused = paused
            if paused:
                self._hold_placing()
            self._pump()

    def _hold_placing(self) -> None:
        """Take back the items handed to a cluster whose runs have not started (their tasks wait for
        a worker's slot): they are queued again, and start from the queue once it is resumed (or its
        usage limit reset). A job such a task started meanwhile is stopped (as a stray)."""
        for item in self.items:
            if item.stage == "placing" and not item.finished:
                self._withdraw(item)
                item.stage = "queued"

    def _on_pause_button(self, paused: bool) -> None:
        if not self._syncing:
            self._on_loop(lambda: self._set_paused(paused))

    def placed(
        self, item: BatchItem, start: Callable[[], None], worker: str | None = None,
        stray: Callable[[], object] | None = None,
    ) -> None:
        """A placement found where ``item`` runs: ``start()`` starts its handle (any thread).

        When the item no longer waits for it (cancelled meanwhile, or a second start of
        the same item), ``stray()`` is called instead, to stop what was started.
        """

        def go() -> None:
            # A batch cancelled (or its budget spent, with on_budget="cancel", or its loop
            # stopped) has already turned each placing item "skipped", on this same loop
            # thread, and places no new one: a placement that reports such an item lands
            # here, and its job is stopped as a stray.
            if item.finished or item.stage != "placing" or item.driven.cancel_requested:
                if stray is not None:
                    stray()
                item.driven.abandon("cancelled before the run started", status="cancelled")
                return
            item.worker = worker
            item.stage = "started"
            start()
            self._judge_at_start(item)
            self._poke()

        self._on_loop(go)

    def _check_done(self) -> None:
        if self._complete or not all(item.finished for item in self.items):
            return
        self._complete = True
        if self._over is not None and not self._over.done():
            self._over.set_result(None)
        self.coalescer.detach()
        self.coalescer.flush()
        self.placement.close()
        if self._display is not None:
            self._display.finish()
            if self._display.record_stands:  # in the cells, or printed without a kernel: as a run's
                self._release_view()
        self._say(summary_text(self.summary()))
        self._done.set_result(self)
        self._finished.set()

    def _release_view(self) -> None:
        """The record took the widget's place in the cells (or, without a kernel, was printed):
        close the widget (a run expanded in it too) and let go of it. A finished batch kept in a
        variable or ``Out`` held its open widgets (18 models) for good, in the kernel and in a
        saved notebook's widget state."""
        for index in list(self._expanded):
            self.collapse(index)
        view, self._view = self._view, None
        if view is not None:
            view.close()

    # -- Rendering (loop thread) -----------------------------------------------------------

    def _refresh(self) -> None:
        """The one coalesced path: rows, holds, the queue, then the view."""
        now = time.time()
        self._update_hold(now)
        if self._can_start(now) and any(item.stage == "queued" for item in self.items):
            self._pump_soon()
        if self._view is not None:
            self._syncing = True
            try:
                finished = self.done or self._all_finished()
                live = "" if finished else stale_html(now)  # a crashed kernel's table says it is not live
                self._view.render(self._html(now) + live, finished=finished, paused=self.paused)
            finally:
                self._syncing = False
        state = self._state(now)
        # (Once complete, _check_done said the totals: a batch that ended cancelled or
        # stopped by its budget must not say them twice.)
        if state not in (self._last_state, "done") and not self._complete:
            self._last_state = state
            self._say(summary_text(self.summary(now)))

    def _pump_soon(self) -> None:
        self.loop.loop.call_soon(self._pump)

    def _all_finished(self) -> bool:
        return all(item.finished for item in self.items)

    def _update_hold(self, now: float) -> None:
        """A usage limit on any run holds the queue until the latest reset among them."""
        until = None
        for item in self.items:
            if item.stage != "started":
                continue
            view = item.driven.claude
            if view is None:
                continue
            for moment in (getattr(view.usage_limit, "resets_at", None), view.waiting_until):
                if moment is not None and moment > now:
                    until = moment if until is None else max(until, moment)
        if until != self.hold_until:
            if until is not None:
                self._hold_placing()  # they would start into the same limit (taken back before it reads held)
            self.hold_until = until
            if until is not None:
                self._wake_at(until)

    def _wake_at(self, until: float) -> None:
        if self._wake is not None:
            self._wake.cancel()
        self._wake = self.loop.loop.call_later(max(0.0, until - time.time()) + 0.05, self._pump)

    def _state(self, now: float) -> str:
        if self._complete:
            # How it ended stays readable: runs that go on as jobs without us (this process's
            # loop stopped: a script ended), a cancelled batch, or one whose budget stopped runs.
            if self._detached():
                return "detached"
            return "cancelled" if self.cancelled else "budget" if self._budget_stopped else "done"
        if self.cancelled:
            return "cancelled"
        if self.budget_spent:
            return "budget"
        if self.paused:
            return "paused"
        if self.hold_until is not None and now < self.hold_until:
            return "held"
        return "running"

    def _detached(self) -> int:
        """How many runs went on as durable jobs that this process no longer follows."""
        return sum(1 for item in self.items if item.driven.status == "detached")

    def _row(self, item: BatchItem, now: float) -> Row:
        if item.row is not None:
            return item.row
        run = item.driven
        if item.stage in ("queued", "placing") and not run.done:
            note = self.placing_note if item.stage == "placing" else None
            return Row(item.index, run.label, item.stage, worker=item.worker, last_line=note or "")
        status = item.status
        if run.state.needs_you and not run.done:
            status = "needs you"  # the slot is held until someone answers
        view = run.claude
        if view is not None and not run.done and (view.waiting_until is not None or view.usage_limit is not None):
            status = "waiting"
        return Row(item.index, run.label, status, run.duration, run.cost_usd, _last_line(run, now), item.worker)

    def _summary(self, rows: Sequence[Row], now: float) -> Summary:
        done = [row for row in rows if row.finished]
        running = [row for row in rows if not row.finished and row.status not in ("queued", "placing")]
        durations = [row.elapsed for row in done if row.status == "completed" and row.elapsed is not None]
        mean = statistics.fmean(durations) if durations else None
        queued = sum(1 for row in rows if row.status in ("queued", "placing"))
        message = ""
        state = self._state(now)
        if state == "held" and self.hold_until is not None:
            message = f"a usage limit resets in {max(0, round(self.hold_until - now))} s"
        elif state == "budget":
            message = "no new runs"
        elif state == "detached":
            jobs = self._detached()
            message = f"its {jobs} job{'s go' if jobs > 1 else ' goes'} on in the job server"
        return Summary(
            total=len(rows),
            done=len(done),
            running=len(running),
            queued=queued,
            failed=sum(1 for row in done if row.status in _FAILED),
            skipped=sum(1 for row in done if row.status == "skipped"),
            completed=sum(1 for row in done if row.status == "completed"),
            cancelled=sum(1 for row in done if row.status == "cancelled"),
            detached=sum(1 for row in done if row.status == "detached"),
            cost_usd=self.cost_usd if any(item.driven.cost_usd is not None for item in self.items) else None,
            cost_note=self.cost_note,
            eta_seconds=eta(mean, queued, [row.elapsed or 0.0 for row in running], self.concurrency)
            if state in _MOVING else None,
            state=state,
            message=message,
            budget_usd=self.max_budget_usd,
        )

    def _html(self, now: float) -> str:
        rows = self.rows(now)
        return batch_html(self._summary(rows, now), rows)

    def _record(self) -> dict[str, Any]:
        """What a saved notebook keeps of the batch: the table as HTML and as text."""
        now = time.time()
        rows = self.rows(now)
        text = "\n".join([summary_text(self._summary(rows, now)), *(row_text(row) for row in rows)])
        return {"text/html": batch_html(self._summary(rows, now), rows), "text/plain": text}

    def _say_row(self, row: Row) -> None:
        if row.index not in self._said:
            self._said.add(row.index)
            self._say(row_text(row))

    def _say(self, line: str) -> None:
        sink = self._sink
        if sink is not None:
            sink.write(sink.out, line + "\n")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        if self._display is None:
            return {"text/plain": repr(self)}
        if self._view is None:
            return self._display.bundle()  # the record alone: the widget was let go at the end
        return self._display.bundle(self._view._repr_mimebundle_())


def _check_cluster(cluster: object) -> None:
    """``cluster`` must be a Dask client (an address or a cluster object is not one)."""
    client_type = getattr(sys.modules.get("distributed"), "Client", None)
    if client_type is None or not isinstance(cluster, client_type):
        raise TypeError(
            "cluster must be a dask.distributed Client, e.g. Client('tcp://scheduler:8786') or "
            f"Client(LocalCluster()), not {type(cluster).__name__}"
        )


_CLUSTERED = "cluster=..."
"""How errors name a batch's ``cluster`` (the magic spells it ``--cluster``)."""
_WHERE_KEYWORDS = ("server", "token", "token_env")
"""Where a run goes, and its server's token: a cluster's runs go to its workers' handlers."""
_CLUSTER_UNCONFIGURED = ("durable", "default_server", "token_env")
"""The settings that choose where a run goes when it is not told: a cluster batch's runs go to
its workers, so their configured values do not apply there (no local job server is started)."""


def _refuse_unused(cluster: object, resources: Mapping[str, float] | None, run_keywords: Mapping[str, Any]) -> None:
    """Options that the batch's runs would not use are an OptionError (a ValueError), never ignored."""
    if cluster is None:
        if resources:
            raise OptionError("{0} applies only to a batch on a cluster ({1}): without one, nothing holds them",
                              ["resources", _CLUSTERED])
        return
    if run_keywords.get("durable"):
        raise OptionError("a batch on a cluster ({0}) takes no {1}: each run is already a durable job of its "
                          "Dask worker's handler", [_CLUSTERED, "durable=True"])
    where = [name for name in _WHERE_KEYWORDS if run_keywords.get(name)]
    if where:
        raise OptionError("a batch on a cluster ({0}) takes no " + places(1, len(where)) + ": its runs go to the "
                          "handlers on the Dask workers, with the cluster's own token", [_CLUSTERED, *where])


def _check_batch(concurrency: object, budget: object, on_budget: object) -> None:
    # OptionErrors: the magic names its flags (--concurrency, --on-budget), the API its keywords.
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise OptionError("{0} must be a positive integer, not {1!r}", ["concurrency"], concurrency)
    check_dollars("max_budget_usd", budget)
    if on_budget not in ON_BUDGET:
        raise OptionError("{0} must be 'finish' or 'cancel', not {1!r}", ["on_budget"], on_budget)


def _ends_by_itself(run: Run) -> bool:
    """Whether a conversation's turn has its result and its input is closed: the process exits on its own
    (a batch ends each run after its first turn; the conversation cancels one that does not exit); or a
    one-shot run has its result, a success (an error's may be a usage limit that auto-resume waits out)."""
    if run.conversation is None:
        view = run.claude
        return view is not None and view.result is not None and not view.is_error
    state = run.state
    return state.between_turns and state.ending


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _wait_event(event: threading.Event, timeout: float | None) -> bool:
    # Waiting in slices keeps the main thread responsive to signals on every platform.
    deadline = None if timeout is None else time.monotonic() + timeout
    while not event.is_set():
        remaining = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        if remaining <= 0:
            return False
        event.wait(remaining)
    return True


def _result_of(run: Run) -> str | None:
    """Claude's answer (None when the run failed: its text is then the error, which stays in
    ``run.error``), or a command's stdout; None for a run that never started."""
    if run.state.started_at is None:
        return None  # never started (queued, skipped, or its placement failed)
    if run.interpreter is None:
        return run.stdout
    return None if run.status in _FAILED else str(run.text or "")


def _last_line(run: Run, now: float) -> str:
    """The run's latest line: Claude's text (or a limit note), or the output's last line."""
    view = run.claude
    if view is not None:
        limit = view.usage_limit
        if limit is not None and not run.done:
            from ..claude.limits import describe_limit

            return describe_limit(limit, now)
        text = view.text or (view.answer if view.result is not None else "")
        return _last_of(text)
    tail = run.state.tail(2000)
    return _last_of(terminal_text("".join(text for _stream, text in tail.pieces)))


def _last_of(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""


_RECORD_COLUMNS = ("item", "label", "status", "exit_code", "duration", "cost_usd", "session_id", "result", "error",
                   "worker")
"""The columns of :meth:`Batch.to_dataframe`, in order (the keys of each item's record)."""


def _record_of(item: BatchItem) -> dict[str, Any]:
    run = item.driven
    return {
        "item": item.item,
        "label": run.label,
        "status": item.status,
        "exit_code": run.exit_code,
        "duration": run.duration,
        "cost_usd": run.cost_usd,
        "session_id": run.session_id,
        "result": None if item.stage == "skipped" else _result_of(run),
        "error": run.error,
        "worker": item.worker,
    }


# The API


def map(
    prompts: str | Iterable[Any],
    items: Iterable[Any] | None = None,
    *,
    concurrency: int | None = None,
    max_budget_usd: float | None = None,
    on_budget: str | None = None,
    cluster: Any = None,
    resources: Mapping[str, float] | None = None,
    run_max_budget_usd: float | None = None,
    wait: bool = False,
    display: bool = True,
    quiet: bool = False,
    settings: CCExec | None = None,
    **run_keywords: Any,
) -> Batch:
    """Run many prompts (or command lines) as one :class:`Batch`, and return it at once.

    ``prompts`` is a list of prompts, or with ``items`` a template whose ``{item}`` (and
    ``{index}``) each item fills in (a command template word by word, the item quoted
    only inside a shell's ``-c`` script: see :func:`fill`). ``concurrency`` runs at most that many at once
    (default ``CCExec.batch_concurrency``, 4); ``max_budget_usd`` stops starting new runs
    once the runs' reported costs reach it (``on_budget="cancel"`` also cancels the
    running ones; default ``"finish"`` lets them finish; given without ``max_budget_usd``, a
    ValueError: it would never act, as ``max_budget_usd`` with ``command=True`` would: a
    command reports no cost); ``run_max_budget_usd`` is each
    run's own ``--max-budget-usd``. ``cluster`` (a ``dask.distributed.Client``) places
    the runs on Dask workers (``resources``, e.g. ``{"claude": 1}``, are what each run
    holds there; the configured ``CCExec.durable``, ``default_server`` and ``token_env``
    do not apply to them). ``wait`` blocks until all are over; ``display=False`` shows nothing
    (``display(batch)`` later); ``quiet`` prints text lines instead of the widget. Every
    other keyword is a keyword of :func:`~cc_executor_nb.kernel.api.run` for each run
    (``command``, ``demo``, ``model``, ``auto_resume``, ``timeout``, ...).
    """
    settings = settings or api.current_settings()
    inputs, texts = _texts(prompts, items, command=bool(run_keywords.get("command")))
    bad = sorted(set(run_keywords) & _BATCH_KEYWORDS)
    if bad:
        raise TypeError(f"map() takes no per-run {bad[0]!r} (it applies to the whole batch)")
    if run_max_budget_usd is not None:
        run_keywords["max_budget_usd"] = run_max_budget_usd
    concurrency = settings.batch_concurrency if concurrency is None else concurrency
    _check_batch(concurrency, max_budget_usd, "finish" if on_budget is None else on_budget)
    if on_budget is not None and max_budget_usd is None:
        raise OptionError("{0} needs {1}: without a batch budget it never acts",
                          [f"on_budget={on_budget!r}", "max_budget_usd"])
    if max_budget_usd is not None and run_keywords.get("command"):
        raise OptionError("{0} needs Claude runs: a command reports no cost, so the budget never acts",
                          ["max_budget_usd"])
    on_budget = on_budget or "finish"
    _refuse_unused(cluster, resources, run_keywords)
    unconfigured = _CLUSTER_UNCONFIGURED if cluster is not None else ()
    prepared = _prepare(texts, settings, unconfigured, run_keywords)
    loop = prepared[0].loop if prepared else shared_loop()
    placement: Placement | None = None
    if cluster is not None:
        _check_cluster(cluster)
        from ..cluster.placement import DaskPlacement

        placement = DaskPlacement(cluster, loop, prepared, texts, settings=settings, resources=resources)
    batch = Batch(
        [p.run for p in prepared], inputs, loop,
        concurrency=concurrency, max_budget_usd=max_budget_usd, on_budget=on_budget,
        placement=placement, settings=settings, mode=api.output_mode(settings, quiet),
    )
    handle = batch.user_handle()  # the loop holds ``batch``; once nobody holds this, nobody can reach it
    if display:
        handle.show()
    batch.start()
    # Nothing to run: the loop settles the batch at once, so it is returned done.
    empty = not batch.items and not loop.on_loop_thread()
    if wait or empty:
        return handle.wait()
    if prepared and placement is None and prepared[0].options.durable and not loop.on_loop_thread():
        # As run(..., durable=True): the first runs' jobs outlive a script that ends now.
        handle.wait_accepted(api.DURABLE_ACCEPT_TIMEOUT)
        _warn_at_exit(batch)
    return handle


def _prepare(
    texts: list[str], settings: CCExec, unconfigured: Collection[str], run_keywords: dict[str, Any],
) -> list[api.Prepared]:
    """Each text's run, prepared; an option error names map()'s keywords (``run_max_budget_usd``
    for each run's budget: ``max_budget_usd`` is the batch's)."""
    try:
        if not texts:  # no run to prepare: the options are checked all the same
            api.check_run_options(settings, run_keywords, unconfigured=unconfigured)
        prepared = [api.prepare(text, settings=settings, view=False, unconfigured=unconfigured, **run_keywords)
                    for text in texts]
    except OptionError as exc:
        raise OptionError(exc.template, [_map_keyword(name) for name in exc.names], *exc.values) from None
    for each in prepared:
        _close_after_first_result(each.run)
    return prepared


def _close_after_first_result(run: Run) -> None:
    """A durable conversation's job closes its own input after its first result: the batch
    ends each run after its first turn (:class:`LocalPlacement`), and it must also when the
    process that started it is gone (a script that ended: its CLI waited the idle timeout)."""
    job = run.spec.job
    if job is not None and run.conversation is not None:
        run.spec = dataclasses.replace(run.spec, job={**job, "stdin_close_on_summary": True})


def _map_keyword(name: str) -> str:
    """A run's option name (maybe with its value) as map() takes it."""
    return f"run_{name}" if name.partition("=")[0] == "max_budget_usd" else name


def _warn_at_exit(batch: Batch) -> None:
    """At the interpreter's exit, say how many items of a durable batch never started: its
    queue lives in this process (the started ones are jobs and go on). Said before the
    loop's own exit hook skips them."""
    import weakref

    from .loop import _register_exit_hook

    ref = weakref.ref(batch)

    def warn() -> None:
        alive = ref()
        left = alive.queued if alive is not None else 0
        if left:
            print(
                f"cc_executor_nb: {left} item{'s' if left > 1 else ''} of a durable batch never started: "
                "its queue lived in this process (its started runs go on as jobs). "
                "End with batch.wait() to run them all, or give concurrency >= the number of items.",
                file=sys.stderr,
            )

    _register_exit_hook(warn)


def _texts(prompts: str | Iterable[Any], items: Iterable[Any] | None, *, command: bool) -> tuple[list[Any], list[Any]]:
    """The inputs (for results and tables) and the prompt or command of each run."""
    if items is None:
        if isinstance(prompts, str):
            raise TypeError("map() takes a list of prompts, or a template and the items to fill it with")
        given = list(prompts)
        return given, given
    if not isinstance(prompts, str):
        raise TypeError("with items, the first argument is a template string with {item}")
    if isinstance(items, (str, bytes)):  # it would run once per character
        shown = f"{items!r:.40}"
        raise TypeError(f"the items are one string ({shown}): give a list of items ([{shown}] for one)")
    if not _PLACEHOLDER.search(prompts):  # a typo ("{file}") would pay for the same run once per item
        raise ValueError(f"the template {prompts!r:.60} has no {{item}} or {{index}}: every run would be the same")
    values = list(items)
    return values, [fill(prompts, value, index, command=command) for index, value in enumerate(values)]
