"""The output a run leaves in its cells: the live widget while it runs, its record afterwards.

A front end keeps a run's display output in the saved notebook, but not the widget's
state (VS Code, GitHub, nbviewer, ``nbconvert --to html`` never have it; JupyterLab only
with "save widget state"). Reopened without it, a widget output shows nothing useful
(JupyterLab 4: "Error displaying widget: model not found" with a fresh kernel, "Loading
widget..." with none). So a :class:`RunDisplay`:

- shows the run with one ``display_data`` carrying a ``display_id``, the widget
  (``application/vnd.jupyter.widget-view+json``) **and** the record of the run so far
  (``text/html``, ``text/markdown``, ``text/plain`` from
  :class:`~cc_executor_nb.kernel.transcript.Transcript`). Front ends that render widgets
  pick the widget (JupyterLab, Notebook 7 and VS Code rank it first); the others show
  the record.
- when the run ends, replaces that output in every cell that showed it with the final
  record alone (``update_display_data``, sent from the kernel's loop thread under each
  cell's parent header, so it reaches cells that have finished). A live front end
  swaps the finished widget for the same picture as static HTML; a saved notebook keeps
  the answer, tool log and footer with no kernel and no widget state. The update also
  goes out under the cell executing at that moment, if another one: headless runners
  (nbclient, ``nbconvert --execute``) only listen to the running cell, and apply a
  display update to every output with its ``display_id``; JupyterLab ignores an update
  for an id the receiving cell does not show.

The record is not refreshed while a turn runs: any ``update_display_data`` makes
JupyterLab re-create the widget's view, which would reset scroll positions and collapse
what the user opened, several times a minute. A Claude conversation lives on after each
turn (for a follow-up), so the display is updated once at each turn's end
(:meth:`RunDisplay.turn_ended`): it then carries the record of every turn so far, under
the widget where a person can still use it (a cell from a front end with an input box,
and a run not used one-shot), else in the widget's place (headless runners: nbclient,
``nbconvert --execute``, papermill; and ``--wait``/``wait=True``/``arun``, which read as
a one-shot run always did). When a follow-up turn starts where the record had taken the
widget's place, the widget comes back (:meth:`RunDisplay.turn_started`), so its approval
card can be answered.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .textview import FOLLOW_UP_HINT

__all__ = ["WIDGET_MIME", "RunDisplay"]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

logger = logging.getLogger("cc_executor_nb.kernel.display")

Bundle = dict[str, Any]


class RunDisplay:
    """One run's display in the cells that show it (see the module docstring).

    ``record`` returns the record's MIME bundle; it is called on the caller's thread
    by :meth:`show` and on the loop thread by :meth:`finish`.
    """

    def __init__(self, record: Callable[[], Bundle]) -> None:
        self.record = record
        self.display_id = f"ccx-run-{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._parents: list[dict[str, Any]] = []
        self._publisher: Any = None
        self._person = False  # a cell that showed the run came from a front end with an input box
        self._terminal = False  # shown without a kernel (terminal IPython, a script): what was printed stays printed
        self._replaced = False  # the record alone stands in the cells (the widget was taken away)
        self._shown = False
        self._printed: str | None = None  # without a kernel: the text of the record a turn's end printed
        self.finished = False

    def bundle(self, live: Mapping[str, Any] | None = None) -> Bundle:
        """The record, with ``live`` (the widget's bundle) on top while the run is live and
        the widget was not taken away (a run used one-shot keeps its record when shown again)."""
        record = self.record()
        if self.finished or self._replaced or not live:
            return record
        return {**record, **{k: v for k, v in live.items() if k != "text/plain"}}

    def show(self, live: Mapping[str, Any] | None = None) -> None:
        """Display the run in the current cell (main thread); remember the cell for :meth:`finish`."""
        from IPython.display import display

        with self._lock:
            bundle = self.bundle(live)
            if _in_ipython():
                # IPython's display() carries no annotations.
                display(bundle, raw=True, display_id=self.display_id)  # type: ignore[no-untyped-call]
            else:  # a plain script: display() would print the bundle's dict
                print(bundle.get("text/plain", ""))
            self._shown = True
            self._remember_cell()

    def _remember_cell(self) -> None:
        publisher = _kernel_display_publisher()
        if publisher is None:
            # A terminal or a plain script: what was printed stays printed, and the final
            # record is printed at the end. A kernel whose cells cannot be targeted (ipykernel
            # 6) would put that in whatever cell runs then: there, what was shown stays.
            self._terminal = not _in_kernel()
            return
        self._publisher = publisher
        self._person = self._person or _front_end_has_stdin()
        parent = getattr(publisher, "parent_header", None)
        if isinstance(parent, dict) and parent and parent not in self._parents:
            self._parents.append(dict(parent))

    @property
    def in_cells(self) -> bool:
        """Whether the run was shown in a kernel's cell, where :meth:`finish` puts the record in the widget's place."""
        return bool(self._parents)

    @property
    def record_stands(self) -> bool:
        """Whether the final record stands where the run was shown once it :attr:`finished`: in a
        kernel's cells (in the widget's place), or printed below it in IPython without a kernel."""
        return self.finished and (self.in_cells or self._terminal)

    @property
    def widget_shown(self) -> bool:
        """Whether a cell shows the live widget now (not the record in its place)."""
        return self._shown and not self.finished and not self._replaced

    def finish(self) -> None:
        """Replace the run's output in every cell that showed it with the final record (any thread).

        Shown without a kernel (terminal IPython or a plain script, ``output_mode='widget'`` forced), where
        nothing printed can be replaced, the final record is printed: the last word was the
        record printed at the start, "[result] no result yet", for good. Where a turn's end
        printed the same turns already (a conversation ended between turns), only the
        record's head is printed: its status, how long it took, its notes; with the turns since
        where a last one ended with the process.
        """
        with self._lock:
            if self.finished:
                return
            self.finished = True
            terminal, printed = self._terminal, self._printed
        if terminal:
            _print(_news(self.record(), printed))
        self._publish_record()

    def turn_ended(self, live: Mapping[str, Any] | None) -> bool:
        """A conversation's turn ended and its process lives on: the cells get the record
        so far, under the widget (``live``, its bundle) where a person can use it, else in
        its place (``live`` None: a run used one-shot; or a headless runner). Any thread.

        Without a kernel, where nothing can be updated in place, the record so far is printed,
        as a kernel's cells then show it: after an earlier turn's end, only its head and the
        turns since (the earlier ones were printed then).

        Returns whether the record took the widget's place in the cells.
        """
        with self._lock:
            if self.finished:
                return False
            keep = live is not None and self._person
            self._replaced = not keep
            terminal = self._terminal
        if terminal:
            self._print_turns()
        self._publish_record(live if keep else None)
        return not keep and bool(self._parents)

    def _print_turns(self) -> None:
        record = self.record()
        with self._lock:
            printed, self._printed = self._printed, record.get("text/plain")
        _print(_with_follow_up_hint(_since(record, printed)))

    def turn_started(self, live: Mapping[str, Any], before: Callable[[], object] = lambda: None) -> None:
        """A follow-up turn starts: where the record took the widget's place, a person gets
        the widget back (its approval card, its follow-up box), ``before`` called just before
        it comes. Any thread."""
        with self._lock:
            if self.finished or not self._replaced or not self._person:
                return
            self._replaced = False
        before()
        self._publish_record(live)

    def _publish_record(self, live: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            parents, publisher = list(self._parents), self._publisher
        if publisher is None or not parents:
            return
        current = _executing_request_header()
        if current is not None and current not in parents:
            parents.append(current)
        bundle = self.bundle(live)
        for parent in parents:
            _publish_update(publisher, parent, bundle, self.display_id)


def _kernel_display_publisher() -> Any:
    """The kernel's display publisher, if this runs in a kernel that can target a cell."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    publisher = getattr(shell, "display_pub", None)
    return publisher if hasattr(publisher, "set_thread_parent") else None


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def _print(bundle: Bundle) -> None:
    """Show ``bundle`` where no display can be replaced (IPython prints its text)."""
    from IPython.display import display

    if not _in_ipython():
        print(bundle.get("text/plain", ""))
        return
    try:
        display(bundle, raw=True)  # type: ignore[no-untyped-call]
    except Exception:  # the shell is going away: the record printed at the start stays
        logger.exception("! could not print the record of a run")


def _news(record: Bundle, printed: str | None) -> Bundle:
    """``record``, or only its head (the lines before its body) where its body is the one in
    ``printed``: the turns printed already need not be printed again (a turn since: see :func:`_since`)."""
    text = record.get("text/plain")
    if not isinstance(text, str) or printed is None:
        return record
    head, _, body = text.partition("\n\n")
    if body != printed.partition("\n\n")[2]:
        return _since(record, printed)
    return {"text/plain": head + "\n"}


def _with_follow_up_hint(bundle: Bundle) -> Bundle:
    """``bundle`` with a last line saying how to go on, as text mode's turn line says it: a
    printed record has no follow-up box."""
    text = bundle.get("text/plain")
    if not isinstance(text, str):
        return bundle
    return {**bundle, "text/plain": f"{text.rstrip(chr(10))}\n\n[turn ended] {FOLLOW_UP_HINT}\n"}


def _since(record: Bundle, printed: str | None) -> Bundle:
    """``record`` less the turns in ``printed`` (the record a turn's end printed): its head and
    what its body gained since, or all of it where its body does not go on from that one."""
    text = record.get("text/plain")
    if not isinstance(text, str) or printed is None:
        return record
    head, _, body = text.partition("\n\n")
    # Less its last paragraph: the footer ("[result] ..."), which the next turn's replaces.
    seen = printed.partition("\n\n")[2].rpartition("\n\n")[0]
    if not seen or not body.startswith(seen + "\n\n"):
        return record
    return {"text/plain": f"{head}\n\n{body[len(seen) + 2:]}"}


def _front_end_has_stdin() -> bool:
    """Whether the request being executed came from a front end with an input box."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return bool(getattr(getattr(get_ipython(), "kernel", None), "_allow_stdin", False))


def _executing_request_header() -> dict[str, Any] | None:
    """The header of the latest execute request the kernel received, if any (any thread)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    get_parent = getattr(getattr(get_ipython(), "kernel", None), "get_parent", None)
    if not callable(get_parent):
        return None
    # In an empty context the kernel answers with its latest request, not the one this
    # thread's task was started from.
    parent = contextvars.Context().run(get_parent, "shell")
    header = parent.get("header") if isinstance(parent, dict) else None
    if not isinstance(header, dict) or header.get("msg_type") != "execute_request":
        return None
    return dict(header)


def _publish_update(publisher: Any, parent: dict[str, Any], bundle: Bundle, display_id: str) -> None:
    """``update_display_data`` for ``display_id`` under the cell's ``parent`` header."""
    token = publisher.set_thread_parent(parent)
    try:
        publisher.publish(bundle, {}, transient={"display_id": display_id}, update=True)
    except Exception:  # the kernel is going away: the live view stays as it is
        logger.exception("! could not publish the record of a run")
    finally:
        publisher.reset_thread_parent(token)
