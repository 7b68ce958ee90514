"""Plain-text rendering of a run's notifications, for terminals, ``--quiet`` and logs.

No widgets here: the terminal client (``python -m cc_executor_nb run``) and the text
presenter in a kernel use the same renderer.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TextIO

from .. import methods
from ..events import stopping_signal
from ..protocol import command_line
from .runstate import STOPPED_WORDS, escaped_note, escaped_pids, format_duration, format_took

__all__ = ["HELD_CHARS", "Line", "LineEnds", "LineRenderer", "Piece", "SharedLines", "TextView", "destination"]

LineKind = Literal["stdout", "stderr", "note"]


@dataclass(frozen=True)
class Line:
    """Text to write: the run's output (``stdout``, ``stderr``) or a note about the run.

    Output carries its own newlines; a ``note`` is one line without one. Terminals put
    notes on stderr, a notebook cell on stdout.
    """

    kind: LineKind
    text: str


class LineRenderer(Protocol):
    """Turns notifications into lines (the :class:`TextView`, or the Claude one)."""

    def render(self, method: str, params: Mapping[str, Any]) -> list[Line]:
        """The lines one notification adds, in order."""
        ...


class LineEnds:
    """Which destinations the last text left mid-line, so that a note starts a line of its own.

    A child's output ends where it ends (``Password: ``, a failing program's last words
    without a newline); the note after it (``[failed] exit 3``) must not be glued to it.
    Streams that write to the same place (a terminal's stdout and stderr) are one
    destination; the output itself is never changed.
    """

    def __init__(self) -> None:
        self._open: set[object] = set()

    def wrote(self, stream: TextIO, text: str) -> None:
        """Note where ``text``, just written to ``stream``, left its destination."""
        if not text:
            return
        key = destination(stream)
        if text.endswith("\n"):
            self._open.discard(key)
        else:
            self._open.add(key)

    def before_note(self, stream: TextIO) -> str:
        """What to write before a note on ``stream``: a newline if its destination is mid-line."""
        key = destination(stream)
        if key not in self._open:
            return ""
        self._open.discard(key)
        return "\n"


Piece = tuple[Any, str]
"""Text to write and the stream (as the writer named it) to write it to."""

HELD_CHARS = 8192
"""The longest unfinished line held for its end while other runs print; a longer one is
written, ended by a newline (a progress bar redrawn with carriage returns never ends its line)."""

LABEL_MARK = "│"
"""What ends a run's label at the start of its lines (``2│ ``)."""


@dataclass
class _Writer:
    name: str
    active: bool = False
    label: str = ""
    introduced: bool = False
    pid: int | None = None
    held: dict[Any, str] = field(default_factory=dict)
    """Per stream, the start of a line held until its end (written while others printed)."""
    dests: dict[Any, Any] = field(default_factory=dict)
    """Per stream the writer wrote to, its dest."""
    started_line: dict[Any, Piece] = field(default_factory=dict)
    """Per dest it left mid-line while printing alone, the stream and the latest redraw of that
    line (see :func:`latest_redraw`): its start, written again with its rest once labelled."""

    def introduction(self) -> str:
        """The line that says which label is this run's: ``2│ [run] pid 1234 · NAME``."""
        pid = f"pid {self.pid} · " if self.pid is not None else ""
        return f"{self.label}[run] {pid}{self.name}\n"


class SharedLines:
    """The text of several runs that print to one place (a terminal, a notebook cell).

    A run printing alone writes its text as it comes, partial lines too. Once another run
    prints there as well, every line names its run with a short label (``2│ ``) and only
    whole lines are written: a run's partial line waits for its end, so no line is cut by
    another run's text, or for :meth:`quiet` (its run went quiet: a prompt is seen), or for
    :meth:`held_long` (held a while: a progress bar's latest redraw is seen). A run labelled
    after it printed alone is named once by a ``[run] NAME`` line (a run labelled from its
    start is named by its ``[started]`` line); a line it left unfinished then is ended, and its
    start is held, to be written again with its rest under its label. Text from one writer never glues
    onto another's unfinished line. No I/O: each call returns the pieces to write, in order.

    A writer without a name (a batch's rows) writes whole lines that never cut another's:
    while a run's line is unfinished there (``tick half``), they wait for its end, or for
    :data:`HELD_CHARS` more characters of it.

    ``dest`` keys say which streams share a line (a terminal's stdout and stderr).
    """

    def __init__(self) -> None:
        self._writers: dict[int, _Writer] = {}
        self._open: dict[Any, int] = {}  # dest -> the writer whose text left it mid-line
        self._tokens = itertools.count(1)
        # dest -> the lines of writers without a name that wait for its open line's end, and
        # how many characters that line has grown by since
        self._waiting: dict[Any, list[Piece]] = {}
        self._waited: dict[Any, int] = {}

    def join(self, name: str) -> int:
        """A new writer (not printing yet, see :meth:`printing`); its token. A writer without a
        ``name`` writes lines that name themselves (a batch's rows): they are never labelled."""
        token = next(self._tokens)
        self._writers[token] = _Writer(name)
        return token

    def started(self, token: int, pid: int) -> None:
        """The writer's process started as ``pid``: its ``[run]`` line names it (``[run] pid 12 · ls``),
        as its ``[started]`` line does, so two runs of one command are told apart."""
        self._writers[token].pid = pid

    def printing(self, token: int, active: bool) -> list[Piece]:
        """Whether the writer prints now (a run from its display to its end, not between a
        conversation's turns); a writer left alone writes the line it held."""
        self._writers[token].active = active
        return self._introduced() + self._alone_flushed() + self._released()

    def leave(self, token: int) -> list[Piece]:
        """The writer is done: its held partial lines end here."""
        writer = self._writers[token]
        writer.active = False
        pieces = self._held_ended(token)
        del self._writers[token]
        # Rows that waited for a line it left unfinished start on a line of their own.
        pieces += [(self._waiting[dest][0][0], "\n") for dest, who in self._open.items()
                   if who == token and dest in self._waiting]
        self._open = {dest: who for dest, who in self._open.items() if who != token}
        return pieces + self._alone_flushed() + self._released()

    def holds(self, token: int) -> bool:
        """Whether the writer holds a partial line (it waits for its end while others print)."""
        return bool(self._writers[token].held)

    def quiet(self, token: int) -> list[Piece]:
        """The writer has written nothing for a while: the partial lines it holds are written now,
        labelled and ended by a newline, as :data:`HELD_CHARS` ends a long one. A prompt
        (``Password: ``) waiting for an answer is seen while other runs print; what the writer
        writes next comes on a line of its own."""
        return self._held_ended(token)

    def held_long(self, token: int) -> list[Piece]:
        """The writer's partial lines were held long, though it never went quiet (a progress bar
        redrawn with carriage returns faster than :meth:`quiet` comes): the latest redraw of each
        is written, labelled and ended by a newline (the redraws before it are what a terminal
        would have drawn over). What the writer writes next comes on a line of its own."""
        writer = self._writers[token]
        pieces: list[Piece] = []
        for stream, text in list(writer.held.items()):
            latest = latest_redraw(text).rstrip("\r")
            if latest:
                writer.held[stream] = latest
                pieces += self.write(token, stream, writer.dests[stream], "\n")
        return pieces

    def _held_ended(self, token: int) -> list[Piece]:
        writer = self._writers[token]
        pieces: list[Piece] = []
        for stream in list(writer.held):
            pieces += self.write(token, stream, writer.dests[stream], "\n")
        return pieces

    def mid_line(self, dest: Any) -> None:
        """Something no writer wrote left ``dest`` mid-line (the ``^C`` a terminal echoes): the next
        text starts a line."""
        self._open[dest] = 0

    def empty(self) -> bool:
        """Whether no writer is left (the place can be forgotten)."""
        return not self._writers

    def labelled(self, token: int) -> bool:
        """Whether the writer's lines are labelled now: another writer is printing."""
        return bool(self._writers[token].name) and any(w.active for t, w in self._writers.items() if t != token)

    def label(self, token: int) -> str:
        """What starts the writer's lines now (``2│ ``), or ``''`` while they are unlabelled: text
        written for it elsewhere (a question asked on the terminal) carries it too."""
        return self._writers[token].label if self.labelled(token) else ""

    def write(self, token: int, stream: Any, dest: Any, text: str) -> list[Piece]:
        """The pieces that write ``text`` of this writer to ``stream``."""
        writer = self._writers[token]
        writer.dests[stream] = dest
        text = writer.held.pop(stream, "") + text
        if not writer.name and self._open.get(dest, token) not in (token, 0):
            self._waiting.setdefault(dest, []).append((stream, text))  # another's line is unfinished
            self._waited.setdefault(dest, 0)
            return []
        if dest in self._waited:
            self._waited[dest] += len(text)
        if not self.labelled(token):
            return self._straight(token, stream, dest, text) + self._released()
        cut = text.rfind("\n") + 1
        if len(text) - cut > HELD_CHARS:  # too long to wait for its end: written, ended here
            text, cut = text + "\n", len(text) + 1
        if cut < len(text):
            writer.held[stream] = text[cut:]
        return (self._labelled(token, stream, dest, text[:cut]) if cut else []) + self._released()

    def line_start(self, token: int, stream: Any, dest: Any) -> list[Piece]:
        """What makes the writer's next text start a line (a note): its held line ended, or a newline."""
        held = self._writers[token].held.pop(stream, "")
        if held:
            return self.write(token, stream, dest, held + "\n")
        return ([(stream, "\n")] if self._open.pop(dest, None) is not None else []) + self._released()

    def _straight(self, token: int, stream: Any, dest: Any, text: str) -> list[Piece]:
        pieces: list[Piece] = []
        opener = self._open.get(dest)
        if opener not in (token, None):
            pieces.append((stream, "\n"))  # another writer's unfinished line
        pieces.append((stream, text))
        if text.endswith("\n"):
            self._open.pop(dest, None)
        else:
            self._open[dest] = token
        writer = self._writers[token]
        if writer.name:  # the start of the line it leaves unfinished, for its label to come
            before = writer.started_line.pop(dest, (stream, ""))[1]
            line = (before if opener == token else "") + text
            line = latest_redraw(line[line.rfind("\n") + 1:])
            if 0 < len(line) <= HELD_CHARS:
                writer.started_line[dest] = (stream, line)
        return pieces

    def _labelled(self, token: int, stream: Any, dest: Any, lines: str) -> list[Piece]:
        writer = self._writers[token]
        if not writer.label:
            writer.label = self._free_label()
        text = _with_label(writer.label, lines)
        if not writer.introduced and not lines.startswith("[started]"):
            text = writer.introduction() + text
        writer.introduced = True
        pieces: list[Piece] = [(stream, "\n")] if self._open.pop(dest, None) is not None else []
        return [*pieces, (stream, text)]

    def _introduced(self) -> list[Piece]:
        """Once two or more print, the runs that printed unlabelled get their labels, in the order
        they joined, and those that printed already a ``[run] NAME`` line each that says which
        label is theirs."""
        active = [(t, w) for t, w in self._writers.items() if w.active]
        if len(active) < 2:
            return []
        pieces: list[Piece] = []
        for token, writer in active:
            if writer.name and not writer.label:
                writer.label = self._free_label()
            for dest, (stream, line) in writer.started_line.items():
                if self._open.get(dest) == token:  # its unfinished line ends here; its start is
                    del self._open[dest]  # written again with its rest, whole, under its label
                    pieces.append((stream, "\n"))
                    writer.held[stream] = line
            writer.started_line.clear()
            if writer.name and writer.dests and not writer.introduced:
                stream, dest = next(iter(writer.dests.items()))
                opened = [(stream, "\n")] if self._open.pop(dest, None) is not None else []
                pieces += [*opened, (stream, writer.introduction())]
                writer.introduced = True
        return pieces

    def _free_label(self) -> str:
        """The smallest number no writer here holds: labels stay short, a run's number is its own
        while it lasts and is given again once it ended."""
        taken = {writer.label for writer in self._writers.values()}
        return next(label for n in itertools.count(1) if (label := f"{n}{LABEL_MARK} ") not in taken)

    def _released(self) -> list[Piece]:
        """The waiting lines of writers without a name whose place's line ended (or its writer
        left), or grew by more than :data:`HELD_CHARS`: they are written then, ending it."""
        pieces: list[Piece] = []
        for dest in list(self._waiting):
            opener = self._open.get(dest)
            ended = opener is None or opener not in self._writers
            if not ended and self._waited[dest] <= HELD_CHARS:
                continue
            lines = self._waiting.pop(dest)
            del self._waited[dest]
            if self._open.pop(dest, None) is not None:
                pieces.append((lines[0][0], "\n"))  # too long to wait for: cut, as text that never ends
            pieces += lines
        return pieces

    def _alone_flushed(self) -> list[Piece]:
        """A writer printing alone now writes what it held (unlabelled, as it will go on)."""
        active = [(t, w) for t, w in self._writers.items() if w.active]
        if len(active) != 1:
            return []
        token, writer = active[0]
        pieces: list[Piece] = []
        for stream, text in list(writer.held.items()):
            del writer.held[stream]
            pieces += self._straight(token, stream, writer.dests[stream], text)
        return pieces


def latest_redraw(text: str) -> str:
    """The part of an unfinished line a terminal shows last: from its last carriage return that
    has text after it (``\\r 10%\\r 20%`` → `` 20%``; ``10%\\r20%\\r`` → ``20%\\r``), or all of it."""
    body = text.rstrip("\r")
    return body[body.rfind("\r") + 1:] + text[len(body):]


def _with_label(label: str, lines: str) -> str:
    """``lines`` (ending with a newline) with ``label`` at the start of each, and after each
    carriage return, where a progress bar redraws its line from its start."""
    return "".join(f"{label}{line.replace(chr(13), chr(13) + label)}\n" for line in lines[:-1].split("\n"))


def destination(stream: TextIO) -> object:
    """Which place ``stream`` writes to: streams to one terminal share lines."""
    if hasattr(stream, "set_thread_parent"):  # ipykernel's OutStream: an output area of its own
        return id(stream)
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no descriptor (io.UnsupportedOperation)
        return id(stream)
    return (info.st_dev, info.st_ino)


class TextView:
    """Render notifications as plain lines for terminals and logs.

    Output text is returned as is (it already carries its own newlines); every
    other line is one ``[tag] message`` without a trailing newline. Returns None
    for notifications not worth a line (and for heartbeats when ``heartbeats``
    is false).
    """

    def __init__(self, *, heartbeats: bool = True, notices: bool = True) -> None:
        self.heartbeats = heartbeats
        self.notices = notices

    def render_event(self, method: str, params: Mapping[str, Any]) -> str | None:
        """Return the text for one notification, or None to show nothing.

        With ``notices=False`` only the child's output is rendered.
        """
        if method == methods.HEARTBEAT and not self.heartbeats:
            return None
        if method not in (methods.PROCESS_OUTPUT, methods.CLIENT_OUTPUT_GAP) and not self.notices:
            return None  # lost output is said even then: what was shown is incomplete
        formatter = _TEXT_FORMATTERS.get(method)
        return formatter(params) if formatter is not None else None

    def render(self, method: str, params: Mapping[str, Any]) -> list[Line]:
        """The lines one notification adds: its output, or one note (or nothing)."""
        text = self.render_event(method, params)
        if text is None:
            return []
        if method == methods.PROCESS_OUTPUT:
            return [Line("stderr" if params.get("type") == "stderr" else "stdout", text)]
        return [Line("note", text)]


def _text_connected(params: Mapping[str, Any]) -> str:
    return f"[connected] session {params.get('session_id', '?')}"


def _text_heartbeat(params: Mapping[str, Any]) -> str:
    return f"[heartbeat] {params.get('status', 'alive')}"


def _text_started(params: Mapping[str, Any]) -> str:
    argv = params.get("argv")
    command = command_line([str(a) for a in argv]) if isinstance(argv, list) else ""
    job = job_words(params)
    return f"[started] pid {params.get('pid', '?')}{job}{' ·' if job else ''} {command}".rstrip()


def job_words(params: Mapping[str, Any]) -> str:
    """`` · job ID`` for a durable job's ``process.started`` (the id to attach with), else ''."""
    job_id = params.get("job_id")
    return f" · job {job_id}" if isinstance(job_id, str) and job_id else ""


def _text_output(params: Mapping[str, Any]) -> str | None:
    data = params.get("data")
    return data if isinstance(data, str) and data else None


def _text_status(params: Mapping[str, Any]) -> str:
    silent = params.get("inactive_seconds", params.get("no_output_for"))
    paused = "paused, " if params.get("status") == "paused" else ""
    if params.get("stopped") is True:
        paused = f"{STOPPED_WORDS}, "
    if not isinstance(silent, (int, float)):
        return f"[status] {paused}no output yet"
    # One line per status, never redrawn: tenths under ten seconds, as the server's message
    # (a 0.5 s threshold said "0 s", then "1 s").
    return f"[status] {paused}no output for {format_duration(silent)}"


def _text_completed(params: Mapping[str, Any]) -> str:
    status = params.get("status") if isinstance(params.get("status"), str) else "completed"
    error = params.get("error")
    code = params.get("exit_code", "?")
    if code is None:  # settled here, never exited under our eyes: "[cancelled] the loop was stopped"
        reason = str(error).removeprefix(f"{status}: ") if error else ""
        return f"[{status}] {reason}".rstrip()
    signal_name = stopping_signal(code, status) if isinstance(code, int) else None
    line = f"[{status}] " + (f"exit {code}" if signal_name is None else f"killed by {signal_name}")
    duration = params.get("duration_seconds")
    if isinstance(duration, (int, float)):
        line += f" in {format_took(duration)}"
    line += f": {error}" if error and not _restates(error, code) else ""
    note = escaped_note(escaped_pids(params.get("escaped_pids")), str(status), params.get("escaped_killed"))
    return line + (f"\n[note] {note}" if note else "")


def _restates(error: object, code: object) -> bool:
    """The server's error only restates the exit code or signal the line already shows."""
    return isinstance(code, int) and error in (f"exited with code {code}", f"killed by signal {-code}")


def _text_error(params: Mapping[str, Any]) -> str:
    return f"[error] {params.get('error', 'unknown server error')}"


def _text_gap(params: Mapping[str, Any]) -> str:
    first, last = params.get("missing_from", "?"), params.get("missing_to", "?")
    return f"[gap] output lost: notifications {first}-{last} were no longer kept by the server"


def _text_reconnecting(params: Mapping[str, Any]) -> str | None:
    """The first attempt's line, and one more once the server has not answered for a while
    (``still_unreached``): at most two lines per outage, however many dials it takes."""
    if params.get("still_unreached"):
        return _text_still_unreached(params)
    if params.get("attempt") != 1:
        return None
    reason = params.get("reason")
    because = f" ({reason})" if isinstance(reason, str) and reason else ""
    # Only the server's end says whether it lived: a server that died took the run with it.
    return (f"[reconnecting] the connection to the server dropped{because}; "
            "the run goes on there unless the server itself went down")


def _text_still_unreached(params: Mapping[str, Any]) -> str:
    down, left = params.get("down_for"), params.get("gives_up_in")
    down_words = format_duration(down, whole=True) if isinstance(down, (int, float)) else "a while"
    left_words = f" for {format_duration(left, whole=True)} more" if isinstance(left, (int, float)) else ""
    return (f"[reconnecting] {params.get('url') or 'the server'} has not answered for {down_words} "
            f"({params.get('unreachable')}): the server may be gone; still trying{left_words}")


def _text_reconnected(params: Mapping[str, Any]) -> str:
    return "[reconnected] following the run again, from where the connection dropped"


def _text_tag(tag: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda params: f"[{tag}]"


# A conversation's local events (interactive Claude runs)

_ANSWER_HINT = "answer with run.approve(), run.approve(always=True) or run.deny(message='why')"
FOLLOW_UP_HINT = "run.send('...') follows up; run.end() ends the conversation"
"""What a person may do once a turn ended and its process lives on."""


def _text_question(params: Mapping[str, Any]) -> str | None:
    """A question waiting for a person, with how to answer it (answers are the Claude text
    view's ``[permission]`` lines)."""
    request = params.get("request")
    if not isinstance(request, Mapping) or request.get("status") != "pending" or params.get("replay"):
        return None  # a question of an attached job's history is asked once the replay is read
    if params.get("policy"):
        return None  # the run's policy answers it (its [permission] line says how)
    what = f"{request.get('tool', 'tool')}: {request.get('summary', '')}".rstrip(": ")
    return f"[needs you] Claude asks to use {what} ({_ANSWER_HINT})"


def _text_turn(params: Mapping[str, Any]) -> str | None:
    status, turn = params.get("status"), params.get("turn")
    if params.get("last"):
        return None  # the conversation ends with this turn: the process's end says the rest
    if status == "running":
        return f"[turn {turn}] follow-up sent" if isinstance(turn, int) and turn > 1 else None
    return f"[turn {turn} {status}] {FOLLOW_UP_HINT}"


def _text_notice(params: Mapping[str, Any]) -> str:
    return f"[note] {params.get('message', '')}"


_TEXT_FORMATTERS: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    methods.CONNECTED: _text_connected,
    methods.HEARTBEAT: _text_heartbeat,
    methods.PROCESS_STARTED: _text_started,
    methods.PROCESS_OUTPUT: _text_output,
    methods.PROCESS_STATUS: _text_status,
    methods.PROCESS_PAUSED: _text_tag("paused"),
    methods.PROCESS_RESUMED: _text_tag("resumed"),
    methods.PROCESS_CANCELLED: _text_tag("cancelling"),  # stopping; the end line follows
    methods.PROCESS_COMPLETED: _text_completed,
    methods.PROCESS_ERROR: _text_error,
    methods.PROCESS_NOTICE: _text_notice,  # the server's word on lost or held output
    methods.CLIENT_OUTPUT_GAP: _text_gap,
    methods.CLIENT_RECONNECTING: _text_reconnecting,
    methods.CLIENT_RECONNECTED: _text_reconnected,
    methods.CONVERSATION_QUESTION: _text_question,
    methods.CONVERSATION_TURN: _text_turn,
    methods.CONVERSATION_NOTICE: _text_notice,
}
