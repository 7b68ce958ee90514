"""Plain text of a Claude run's notifications: the answer and its notes instead of stream-json.

:class:`ClaudeTextView` is the :class:`~cc_executor_nb.kernel.textview.TextView` of Claude
runs (text mode in a kernel, terminal IPython, ``python -m cc_executor_nb claude``): the
CLI's stdout goes through the run's interpreter and comes out as the answer, one note
per thinking block, retry, permission question and tool call, and Claude's footer
(:mod:`cc_executor_nb.claude.text`); the run's own notices (start, silence, end) and
the CLI's stderr are the TextView's, except that a silence is not noted while a
permission question waits (the question is why; on a terminal the note would land on
its prompt line) nor between a conversation's turns (it waits for a follow-up).
``--raw`` runs keep the plain TextView and show the JSON lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .. import methods
from ..claude.text import Chunk, ClaudeSnapshot, ClaudeTextRenderer, asks_now
from .textview import Line, TextView, job_words

__all__ = ["ClaudeTextView", "SnapshotSource"]


class SnapshotSource(Protocol):
    """What the view reads a run from (a ``ClaudeInterpreter``)."""

    def snapshot(self) -> ClaudeSnapshot:
        """The run as it is now."""
        ...

    def finish(self) -> object:
        """The output is complete: apply a last line without newline (idempotent)."""
        ...


class ClaudeTextView:
    """Render a Claude run's notifications as readable text (see the module docstring).

    ``interpreter`` is read on each stdout piece, after the piece was fed to it; at the
    run's end it is told the output is complete. ``label`` names the run in the start
    line. With ``notices=False`` only the answer (and the CLI's stderr) is rendered.
    ``asked_here`` says whether a question is asked on the terminal right away (the
    caller waits there): its ``[needs you]`` line, with how to answer from code, is then
    left out, since the terminal's prompt that follows says it.
    """

    def __init__(
        self,
        interpreter: SnapshotSource,
        *,
        label: str = "claude",
        heartbeats: bool = False,
        notices: bool = True,
        asked_here: Callable[[], bool] | None = None,
    ) -> None:
        self.interpreter = interpreter
        self.asked_here = asked_here
        self.label = label
        self.notices = notices
        self.text_view = TextView(heartbeats=heartbeats, notices=notices)
        self.renderer = ClaudeTextRenderer(footer=notices)
        self.started = False
        """Whether the run's process started: a run refused before it has no answer or footer to show."""
        self.between_turns = False
        """Whether a conversation's turn ended and it waits for a follow-up (its silence is no news)."""

    def render(self, method: str, params: Mapping[str, Any]) -> list[Line]:
        """The lines one notification adds, in order: the answer as ``stdout``, notes, the CLI's ``stderr``."""
        if method == methods.PROCESS_OUTPUT:
            return self._output(params)
        if method in (methods.PROCESS_COMPLETED, methods.PROCESS_ERROR):
            self.interpreter.finish()  # every byte of output came before this notification
            if not self.started:
                return self._notice(method, params)
            lines = self._lines(self.renderer.render(self.interpreter.snapshot(), final=True))
            return lines + self._notice(method, params)
        if method == methods.PROCESS_STARTED:
            self.started = True
        if method == methods.PROCESS_STATUS and (self.between_turns or asks_now(self.interpreter.snapshot())):
            # Claude is silent because it waits for an answer, which the notes above ask
            # for, or for a follow-up: on a terminal this note would land on a prompt line.
            return []
        if method == methods.CONVERSATION_TURN:
            self.between_turns = params.get("status") != "running"
        if method == methods.CONVERSATION_TURN and params.get("status") != "running" and not params.get("last"):
            return self._turn_ended(method, params)
        lines = self._notice(method, params)
        if method == methods.CONVERSATION_QUESTION and params.get("policy"):
            # The run's policy answers it (a callable one on a worker thread, so the stream
            # shows it pending meanwhile): nobody waits for a person, only the answer gets a line.
            self._asked(params.get("request"))
        if method == methods.CONVERSATION_QUESTION and lines:
            self._asked(params.get("request"))
            if self.asked_here is not None and self.asked_here():
                return lines[:-1]  # the terminal's prompt asks it now (the answer's line is ended still)
        return lines

    def _turn_ended(self, method: str, params: Mapping[str, Any]) -> list[Line]:
        """A conversation's turn ended (the process lives on): its answer and footer, then how to go on."""
        snapshot = self.interpreter.snapshot()
        lines = self._lines(self.renderer.render(snapshot, turn=True))
        if not snapshot.session_begun:
            # The CLI refused its arguments (a --resume of no session) and exits now: no follow-up
            # can go to it, so the turn's line says no run.send() (the end line follows).
            return [*lines, Line("note", f"[turn {params.get('turn')} {params.get('status')}]")]
        return lines + self._notice(method, params)

    def _asked(self, request: object) -> None:
        """The ``[needs you]`` notice said it: no ``[permission] ... waiting`` line as well."""
        if isinstance(request, Mapping) and isinstance(request.get("id"), str):
            self.renderer.shown(request["id"])

    def _output(self, params: Mapping[str, Any]) -> list[Line]:
        data = params.get("data")
        if params.get("type") == "stderr":
            # The CLI's own complaints, as they are: they start on a line of their own.
            if not isinstance(data, str) or not data:
                return []
            return [*self._lines(self.renderer.end_line(self.interpreter.snapshot())), Line("stderr", data)]
        return self._lines(self.renderer.render(self.interpreter.snapshot()))

    def _notice(self, method: str, params: Mapping[str, Any]) -> list[Line]:
        if method == methods.PROCESS_STARTED and self.notices:
            text: str | None = f"[started] pid {params.get('pid', '?')}{job_words(params)} · {self.label}"
        else:
            text = self.text_view.render_event(method, params)
        if text is None:
            return []
        if method == methods.PROCESS_STARTED:
            # Nothing of the answer comes before the start; the snapshot is read now, which for
            # a run shown late (display=False, then show()) holds the whole answer already.
            return [Line("note", text)]
        return [*self._lines(self.renderer.end_line(self.interpreter.snapshot())), Line("note", text)]

    @staticmethod
    def _lines(chunks: list[Chunk]) -> list[Line]:
        return [Line("stdout" if chunk.kind == "answer" else "note", chunk.text) for chunk in chunks]

