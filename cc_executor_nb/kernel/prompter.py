"""Who can answer a permission question, and where to ask it, so a busy kernel never deadlocks.

Widget clicks reach the kernel on the shell channel, behind the cell that runs; while a
cell blocks (``%ccexec ... --wait``, ``run.wait()``, ``time.sleep``) a question shown in
a widget cannot be answered. So a question goes where a person can answer it:

=====================================  ===============================================
the kernel is ...                      the question is asked ...
=====================================  ===============================================
idle (a widget front end)              on the run's approval card (no timeout)
busy in a cell that allows stdin       in that cell's input box (Jupyter's stdin
                                       channel): by ``input()`` when the cell waits for
                                       the run, else from a worker thread
busy in a cell without stdin           nowhere: denied with a clear message, at once
(nbconvert/nbclient, allow_stdin off)  when that cell waits for the run, else once it
                                       has run two seconds without answering (a cell
                                       that answers, ``run.approve()``, is quicker)
not a kernel (terminal IPython, a      on the terminal while the caller waits
script)                                (``run.wait()``); without a terminal, denied
terminal IPython, a run nobody holds   on the terminal, at the prompt (or while any
                                       caller waits): :meth:`Prompter.asks_at_prompt`
=====================================  ===============================================

:class:`Prompter` tracks the running cell with IPython's ``pre_run_cell`` and
``post_run_cell`` events, asks at most one question on stdin at a time, and stops asking
when the question was answered another way. :func:`route` is the pure decision.

An input box outlives the asking: a cell that stops waiting (``run.wait(timeout=...)``,
the cell's end) leaves it open, and the front end sends its reply whenever it is typed.
So each box sent is remembered while its question is open: a later ask in the same cell
polls that box instead of sending another, and the replies waiting on the stdin socket
are read before any new box is sent, in any later cell; a reply to an open question
answers it, a reply to a closed one is dropped with an INFO log line. Nothing reads the
socket between cells.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ..claude.control import END_OF_INPUT_MESSAGE, INTERRUPT_DENY_MESSAGE, NOBODY_MESSAGE
from ..claude.permissions import ANSWER_HELP, Answer, PermissionRequest, parse_answer, question_text

__all__ = [
    "NOBODY_GRACE",
    "NOBODY_MESSAGE",
    "STDIN_GRACE",
    "CellContext",
    "Prompter",
    "Question",
    "Route",
    "forget_prompter",
    "prompter_for",
    "route",
]

logger = logging.getLogger("cc_executor_nb.kernel.prompter")

Route = Literal["card", "stdin", "terminal", "nobody"]

STDIN_GRACE = 0.5
"""Seconds a new cell runs before a question is asked in its input box: a cell that
answers the question itself (``run.approve()``) is not interrupted by a prompt."""
NOBODY_GRACE = 2.0
"""Seconds a cell without an input box gets to answer a question itself before it is
denied (a script's ``while run.pending is None: ...; run.approve()``)."""
_POLL = 0.1


class Question:
    """One question offered to people: claimed by one asker at a time, answered once.

    ``answer(answer, via)``, ``is_open()`` and ``interrupted(via)`` are the conversation's
    (thread-safe).
    """

    def __init__(
        self,
        request: PermissionRequest,
        answer: Callable[[Answer, str], object],
        is_open: Callable[[], bool],
        *,
        asking: Callable[[bool], object] | None = None,
        interrupted: Callable[[str], object] | None = None,
        owner: object = None,
        label: Callable[[], str] | None = None,
    ) -> None:
        self.request = request
        self.owner = owner
        """Whose question it is (the run's conversation): an interrupt that cancels that run
        marks it interrupted, and no other run's question."""
        self.label = label
        """What starts each line of the question where it is asked: its run's label while its
        text lines carry one (``2│ ``, text mode beside other runs), else ``''``."""
        self._answer = answer
        self._is_open = is_open
        self._asking = asking
        self._interrupted = interrupted
        self._lock = threading.Lock()
        self._claimed = False

    def is_open(self) -> bool:
        """Whether the CLI still waits for an answer to this question."""
        return self._is_open()

    def claim(self) -> bool:
        """Become the one asker of this question; False when another one asks it."""
        with self._lock:
            if self._claimed or not self.is_open():
                return False
            self._claimed = True
            return True

    @property
    def claimed(self) -> bool:
        """Whether an asker asks this question now (on stdin: an input box, the terminal)."""
        return self._claimed

    def release(self) -> None:
        """Stop asking (the question may be asked elsewhere again)."""
        with self._lock:
            self._claimed = False

    def answer(self, answer: Answer, via: str) -> None:
        """Give the person's answer (ignored by the conversation once decided)."""
        self._answer(answer, via)

    def asking(self, on: bool) -> None:
        """The question is (no longer) shown in an input box: the card says so."""
        if self._asking is not None:
            self._asking(on)

    def interrupt(self, via: str) -> None:
        """The person asked interrupted instead of answering (Ctrl-C at the terminal, a kernel
        interrupt): the run is being cancelled, and the question reads cancelled by them."""
        if self._interrupted is not None:
            self._interrupted(via)

    def deny_for_nobody(self) -> None:
        """Nobody can answer: deny with :data:`NOBODY_MESSAGE`."""
        self._answer(Answer(False, message=NOBODY_MESSAGE), "auto")


@dataclass(frozen=True)
class CellContext:
    """The running cell's request, as the kernel routes its stdin: taken when it starts."""

    ident: Any
    parent: dict[str, Any]
    allow_stdin: bool
    started: float


@dataclass(frozen=True)
class _Box:
    """An input_request sent and not answered yet: its reply may come late, in a later cell."""

    question: Question
    cell: CellContext


def route(*, kernel: bool, cell: CellContext | None, waiting: bool, tty: bool) -> Route:
    """Where a person can answer now (see the module's table).

    ``waiting``: the caller blocks in ``run.wait()`` (outside a kernel, on the terminal).
    """
    if kernel:
        if cell is None:
            return "card"
        return "stdin" if cell.allow_stdin else "nobody"
    if waiting:
        return "terminal" if tty else "nobody"
    return "card"  # nothing blocks: run.approve() from code, or a widget elsewhere


class Prompter:
    """Asks open questions on stdin (the running cell's, or the terminal's) or denies them."""

    def __init__(self, shell: Any = None) -> None:
        self._shell = shell
        self._kernel = getattr(shell, "kernel", None) if shell is not None else None
        self._stdin = threading.Lock()  # one question on stdin at a time
        self._questions: list[Question] = []
        self._guard = threading.Lock()
        self._cell: CellContext | None = None
        self._registered = False
        # Boxes sent and not answered, by input_request msg_id, while their question is
        # open (guarded by _guard); the last one sent takes a reply that names no parent
        # (the classic Notebook's, jupyter_client's ``input()``).
        self._boxes: dict[str, _Box] = {}
        self._last_box: str | None = None
        self._askers = 0  # callers waiting that ask open questions themselves (guarded by _guard)
        self._interrupted_asking: Question | None = None  # asked here when an interrupt came (guarded)
        # The owners of runs nobody holds whose questions are asked at the prompt (guarded).
        self._at_prompt: weakref.WeakSet[Any] = weakref.WeakSet()
        # Set by a Ctrl-C while a question is asked at the prompt (None while none is; guarded).
        self._prompt_interrupt: threading.Event | None = None
        self._catches_sigint = False  # the prompt's <sigint> binding added (on the prompt's loop)

    @property
    def in_kernel(self) -> bool:
        """Whether questions can go to a Jupyter front end."""
        return self._kernel is not None

    # IPython's cell events (main thread)

    def register(self) -> None:
        """Follow the shell's cells (idempotent).

        Called from a cell (the first run, or ``%load_ext``), it takes that cell as the
        running one: its ``pre_run_cell`` has already passed.
        """
        if self._shell is None or self._registered or not self.in_kernel:
            return
        self._shell.events.register("pre_run_cell", self._cell_started)
        self._shell.events.register("post_run_cell", self._cell_finished)
        self._registered = True
        if threading.current_thread() is threading.main_thread():
            self._cell_started()

    def unregister(self) -> None:
        """Stop following the shell's cells and stop asking (idempotent)."""
        if self._registered:
            for name, callback in (("pre_run_cell", self._cell_started), ("post_run_cell", self._cell_finished)):
                with contextlib.suppress(ValueError):
                    self._shell.events.unregister(name, callback)
            self._registered = False
        self._cell = None
        with self._guard:
            self._boxes.clear()

    def _cell_started(self, info: object = None) -> None:
        kernel = self._kernel
        try:
            ident = kernel._parent_ident["shell"]  # type: ignore[union-attr]
            parent = dict(kernel.get_parent("shell"))  # type: ignore[union-attr]
            allow = bool(kernel._allow_stdin)  # type: ignore[union-attr]
        except (AttributeError, KeyError, TypeError):
            logger.debug("! this kernel does not expose its stdin routing; questions wait for the card")
            return
        self._cell = CellContext(ident, parent, allow, time.monotonic())
        for question in self._open():
            self._route(question)

    def _cell_finished(self, result: object = None) -> None:
        self._cell = None

    def cell_interrupted(self, owner: object = None) -> None:
        """The running cell was interrupted (a KeyboardInterrupt in ``run.wait()``): it asks
        nothing more, so no input box comes between the interrupt and the cell's end (the run
        is being cancelled: its questions are about to be withdrawn). The card still answers.

        ``owner``: the conversation of the run the interrupt cancels. Its question asked on
        stdin when the interrupt came (by this thread or a worker) was interrupted by the
        person asked: it reads cancelled by them, not withdrawn by Claude. Another run's
        question stays open (that run goes on).
        """
        self._cell = None
        if owner is None:
            return
        with self._guard:
            asked, self._interrupted_asking = self._interrupted_asking, None
        claimed = [question for question in self._open() if question.claimed]
        for question in ([asked] if asked is not None else []) + claimed:
            if question.owner is owner and question.is_open():
                question.interrupt("stdin")

    # Questions (the conversation's loop thread)

    def offer(self, question: Question) -> None:
        """A question needs a person: ask it where someone can answer, or deny it."""
        with self._guard:
            self._questions = [q for q in self._questions if q.is_open()] + [question]
        self._route(question)

    @property
    def asks(self) -> bool:
        """Whether an open question waits for a person."""
        return bool(self._open())

    @contextlib.contextmanager
    def waiting(self, *, awaited: bool = False) -> Iterator[None]:
        """A caller waits for the run and asks its questions (``while_waiting``) meanwhile:
        the main thread, or ``await run`` outside a kernel (``awaited``)."""
        asker = awaited or threading.current_thread() is threading.main_thread()
        with self._guard:
            self._askers += asker
        try:
            yield
        finally:
            with self._guard:
                self._askers -= asker

    @property
    def asks_on_terminal(self) -> bool:
        """Whether a question offered now is asked on the terminal right away (outside a
        kernel, by a caller that waits, with a terminal on stdin): its prompt says it all."""
        with self._guard:
            askers = self._askers
        return askers > 0 and not self.in_kernel and _is_tty()

    def asks_at_prompt(self, owner: object) -> bool:
        """Nobody holds ``owner``'s run any more (its handle was dropped, no widget shows it). In
        terminal IPython its questions can still be answered on the terminal: they are asked at
        the prompt (drawn again after the answer), or by a caller waiting for any run, now and
        from now on (True). Elsewhere (a kernel, a script, no terminal) nobody could: False."""
        # Terminal IPython with its prompt_toolkit prompt (``--simple-prompt`` has none to set aside).
        if self.in_kernel or getattr(self._shell, "pt_app", None) is None or not _is_tty():
            return False
        with self._guard:
            self._at_prompt.add(owner)
        for question in self._open():
            if question.owner is owner:
                self._route(question)
        return True

    def at_prompt(self, owner: object) -> bool:
        """Whether ``owner``'s questions are asked at terminal IPython's prompt (see :meth:`asks_at_prompt`)."""
        with self._guard:
            return owner is not None and owner in self._at_prompt

    def _open(self) -> list[Question]:
        with self._guard:
            self._questions = [q for q in self._questions if q.is_open()]
            self._boxes = {msg_id: box for msg_id, box in self._boxes.items() if box.question.is_open()}
            return list(self._questions)

    def _route(self, question: Question) -> None:
        if not self.in_kernel:
            if self.at_prompt(question.owner):
                threading.Thread(target=self._ask_at_prompt, args=(question,), name="cc_executor_nb-ask-at-prompt",
                                 daemon=True).start()
            return  # else outside a kernel only a waiting caller asks (while_waiting)
        cell = self._cell
        if cell is not None:  # busy: ask in that cell's input box, or deny if it has none
            worker = threading.Thread(
                target=self._ask_in_cell, args=(question, cell), name="cc_executor_nb-ask", daemon=True
            )
            worker.start()

    # Asking on the running cell's stdin from a worker thread (kernel busy with a cell)

    def _ask_in_cell(self, question: Question, cell: CellContext) -> None:
        # A grace after the cell started and after the question came: a cell that answers
        # itself gets no prompt, and a cell waiting in run.wait() asks with input() itself.
        nobody = route(kernel=True, cell=cell, waiting=False, tty=False) == "nobody"
        deadline = max(cell.started, time.monotonic()) + (NOBODY_GRACE if nobody else STDIN_GRACE)
        while time.monotonic() < deadline:
            if not self._still(question, cell):
                return
            time.sleep(_POLL)
        if nobody:
            if self._still(question, cell) and not self._answered_late(question):
                question.deny_for_nobody()
            return
        # Another question may be on stdin (two runs ask at once): wait for our turn.
        while not self._stdin.acquire(timeout=_POLL):
            if not self._still(question, cell):
                return
        try:
            # Checked under the lock: a waiting thread interrupted while it asked stops the
            # cell before it lets go of stdin, so this thread never asks again after it.
            if self._still(question, cell) and question.claim():
                try:
                    self._ask_until_answered(question, lambda prompt: self._stdin_request(prompt, question, cell))
                finally:
                    question.release()
        finally:
            self._stdin.release()

    def _answered_late(self, question: Question) -> bool:
        """Whether a reply typed late into an earlier box of ``question`` (it waits on
        stdin) answers it: a cell without input boxes reads it instead of denying."""
        with self._guard:
            if not any(box.question is question for box in self._boxes.values()):
                return False
        import zmq

        if not self._stdin.acquire(timeout=1.0):  # another thread asks on stdin
            return False
        try:
            text = self._read_replies(question, zmq)
        finally:
            self._stdin.release()
        if text is not None:
            _answer_late(question, text)
        return not question.is_open()

    def _still(self, question: Question, cell: CellContext) -> bool:
        return question.is_open() and self._cell is cell

    def _stdin_request(
        self, prompt: str, question: Question, cell: CellContext, deadline: float | None = None
    ) -> str | None:
        """The answer typed for ``question`` in an input box of ``cell``, or None once the
        question is answered elsewhere, the cell finishes or ``deadline`` passes.

        A reply already waiting (typed late into an earlier box) is the answer; else the
        box this cell already shows for the question is polled, or a new one is sent.
        ipykernel's own ``raw_input`` routes by the calling thread's context, drops
        earlier replies and waits forever; here the cell's identity was taken when it
        started. Called with the ``_stdin`` lock held.
        """
        import zmq

        late = self._read_replies(question, zmq)
        if late is not None:
            return late
        if not self._shows(question, cell):
            self._send_box(prompt, question, cell)
        socket = self._kernel.stdin_socket  # type: ignore[union-attr]
        while self._still(question, cell) and not _past(deadline):
            if socket.poll(int(_POLL * 1000)):
                text = self._read_replies(question, zmq)
                if text is not None:
                    return text
        return None

    def _shows(self, question: Question, cell: CellContext) -> bool:
        with self._guard:
            return any(box.question is question and box.cell is cell for box in self._boxes.values())

    def _send_box(self, prompt: str, question: Question, cell: CellContext) -> None:
        kernel = self._kernel
        _flush_output()
        content = {"prompt": prompt, "password": False}
        msg = kernel.session.send(  # type: ignore[union-attr]
            kernel.stdin_socket, "input_request", content, cell.parent, ident=cell.ident  # type: ignore[union-attr]
        )
        with self._guard:
            self._last_box = msg["header"]["msg_id"]
            self._boxes[self._last_box] = _Box(question, cell)

    def _read_replies(self, question: Question, zmq: Any) -> str | None:
        """Read the waiting replies until one answers ``question`` (its text); the others
        answer their own open question, or are dropped."""
        for reply in self._waiting_replies(zmq):
            text = self._take(reply, question)
            if text is not None:
                return text
        return None

    def _waiting_replies(self, zmq: Any) -> Iterator[dict[str, Any]]:
        kernel = self._kernel
        while True:
            _ident, reply = kernel.session.recv(kernel.stdin_socket, mode=zmq.NOBLOCK)  # type: ignore[union-attr]
            if reply is None:
                return
            yield reply

    def _take(self, reply: dict[str, Any], question: Question) -> str | None:
        """The reply's text if it answers ``question``; a reply to another open question
        answers that one, a reply to a closed (forgotten) one is dropped."""
        value = reply.get("content", {}).get("value", "")
        text = value if isinstance(value, str) else ""
        with self._guard:
            box = self._boxes.pop(reply.get("parent_header", {}).get("msg_id") or self._last_box or "", None)
        if box is None or not box.question.is_open():
            logger.info("< an input box was answered after its question was decided: the answer is dropped")
            return None
        if box.question is question:
            return text
        _answer_late(box.question, text)
        return None

    # Asking from the waiting thread (run.wait(): a --wait cell, or the terminal)

    def while_waiting(
        self, deadline: float | None = None, *, awaited: bool = False, stop: threading.Event | None = None
    ) -> None:
        """Called by ``run.wait()`` between waits: ask the open questions here, one at a time.

        Only the main thread asks (a cell's, or a terminal's); other waiting threads leave
        the questions to the card, the cell's input box or code. Asking stops when the
        question is answered another way or withdrawn (an interrupt), and at ``deadline``
        (``time.monotonic()``: the caller's timeout), with the question still open.
        ``awaited``: ``await run`` outside a kernel asks from a worker thread of the
        awaiting loop (the loop stays free), as the main thread would; ``stop``, once set
        (the awaiting task was cancelled), ends the asking on the terminal with the
        question still open.
        """
        if not awaited and threading.current_thread() is not threading.main_thread():
            return
        for question in self._open():
            if stop is not None and stop.is_set():
                return
            cell = self._cell
            where = route(kernel=self.in_kernel, cell=cell, waiting=True, tty=_is_tty())
            if where == "nobody":
                if not self._answered_late(question):
                    question.deny_for_nobody()
            elif where in ("stdin", "terminal"):
                self._ask_here(question, cell, deadline, stop)
            # "card": the kernel is not busy with this thread's cell (a thread other
            # than the main one waits); the card or code answers.

    def _ask_here(
        self, question: Question, cell: CellContext | None, deadline: float | None, stop: threading.Event | None
    ) -> None:
        if not self._stdin.acquire(blocking=False):
            return

        def read(prompt: str) -> str | None:
            if cell is not None:
                return self._stdin_request(prompt, question, cell, deadline)
            return _terminal_answer(prompt, question, deadline, stop)

        try:
            if question.claim():
                try:
                    self._ask_until_answered(question, read)
                except KeyboardInterrupt:
                    with self._guard:
                        self._interrupted_asking = question  # for the waiting run's cell_interrupted()
                    self.cell_interrupted()  # before stdin is free for a worker thread to ask
                    raise
                finally:
                    question.release()
        finally:
            self._stdin.release()

    # Asking at terminal IPython's prompt (a run nobody holds: see asks_at_prompt)

    def _ask_at_prompt(self, question: Question) -> None:
        """A worker thread: while ``question`` is open, ask it whenever the prompt is shown, with
        the prompt set aside (``run_in_terminal``: the terminal is the question's until answered).
        While a cell runs, the question waits for the prompt (or for a caller that waits)."""
        from .presenter import prompt_loop

        while question.is_open():
            loop = prompt_loop()
            # Not while it, or another question, is asked elsewhere (the prompt would be redrawn for nothing).
            if loop is not None and not question.claimed and not self._stdin.locked():
                self._ask_in_terminal(loop, question)
            time.sleep(_POLL)

    def _ask_in_terminal(self, loop: Any, question: Question) -> None:
        """Ask ``question`` on the prompt's ``loop``, the prompt set aside (until answered, or the loop is gone)."""
        from prompt_toolkit.application import run_in_terminal

        done, interrupted = threading.Event(), threading.Event()

        def ask() -> None:
            with self._guard:
                self._prompt_interrupt = interrupted
            try:
                self._ask_here(question, None, None, interrupted)
            except Exception:  # a thread of the pool: say it, the question stays open
                logger.warning("! asking a question at the prompt failed", exc_info=True)
            finally:
                with self._guard:
                    self._prompt_interrupt = None
            if interrupted.is_set() and question.is_open():
                # Nobody holds the run to answer it later (run.approve()): a Ctrl-C denies it.
                question.answer(Answer(False, message=INTERRUPT_DENY_MESSAGE), "stdin")

        def start() -> None:
            try:
                self._catch_sigint()
                asyncio.ensure_future(run_in_terminal(ask, in_executor=True)).add_done_callback(lambda _: done.set())
            except Exception:  # no app any more (the prompt ended meanwhile)
                done.set()

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed
            return
        while not done.wait(_POLL) and not loop.is_closed():
            pass

    def _catch_sigint(self) -> None:
        """On the prompt's loop, once: a Ctrl-C while a question is asked at the prompt is the
        question's. The prompt is set aside then (the terminal in cooked mode), so Ctrl-C is a
        SIGINT, which prompt_toolkit turns into its ``<sigint>`` key: the prompt's binding ended
        the prompt with a KeyboardInterrupt once the question was answered ("KeyboardInterrupt
        escaped interact()"). This binding, after the prompt's and only while a question is
        asked, sets the asking's interrupt instead."""
        if self._catches_sigint:
            return
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.key_binding import KeyBindings, merge_key_bindings

        def asking() -> bool:
            with self._guard:
                return self._prompt_interrupt is not None

        bindings = KeyBindings()

        @bindings.add("<sigint>", filter=Condition(asking))
        def _interrupt(event: Any) -> None:
            with self._guard:
                interrupt = self._prompt_interrupt
            if interrupt is not None:
                interrupt.set()

        session = self._shell.pt_app
        own = session.key_bindings
        session.key_bindings = bindings if own is None else merge_key_bindings([own, bindings])
        self._catches_sigint = True

    # Both ways

    def _ask_until_answered(self, question: Question, read: Callable[[str], str | None]) -> None:
        question.asking(True)
        try:
            self._read_answer(question, read)
        finally:
            question.asking(False)

    def _read_answer(self, question: Question, read: Callable[[str], str | None]) -> None:
        prompt = _labelled(question, f"{question_text(question.request)}\n{ANSWER_HELP} > ")
        while question.is_open():
            try:
                text = read(prompt)
            except EOFError:
                # Ctrl-D: the person has no more to say. Asking again (as it did) met every
                # Ctrl-D with the same prompt, without end; a denial lets the turn go on.
                question.answer(Answer(False, message=END_OF_INPUT_MESSAGE), "stdin")
                return
            except _stdin_refused() as exc:
                logger.info("no input box here (%s): the question is denied", exc)
                question.deny_for_nobody()
                return
            if text is None:
                return  # stopped asking: answered elsewhere, or the cell ended
            answer = parse_answer(text)
            if answer is not None:
                question.answer(answer, "stdin")
                return
            prompt = _labelled(question, f"Please answer {ANSWER_HELP} > ")


def _labelled(question: Question, text: str) -> str:
    """``text`` with the question's label at the start of each of its lines."""
    label = question.label() if question.label is not None else ""
    return "".join(label + line for line in text.splitlines(keepends=True))


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _flush_output() -> None:
    """Let what was printed before a question reach the front end before its input box."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


def _terminal_answer(
    prompt: str, question: Question, deadline: float | None, stop: threading.Event | None = None
) -> str | None:
    """Ask on the terminal; None once the question closes, ``deadline`` passes unanswered
    or ``stop`` is set.

    Like ``input()``, but it polls: a question answered from code or withdrawn by the CLI
    (an interrupt) stops being asked, and the caller's timeout is kept. What was typed
    of an abandoned answer is discarded, so it does not reach the next prompt.
    """
    import select

    from .presenter import terminal_held

    stdin = sys.stdin
    with terminal_held(), _question_stream() as out:
        out.write(prompt)
        out.flush()
        try:
            while question.is_open() and not _past(deadline) and not (stop is not None and stop.is_set()):
                if select.select([stdin], [], [], _POLL)[0]:
                    line = stdin.readline()
                    if not line:
                        raise EOFError
                    return line.rstrip("\r\n")
        except (KeyboardInterrupt, EOFError):
            _end_prompt_line(out, stdin)  # the run's next note, or prompt, would follow the ^C or ^D
            raise
        _end_prompt_line(out, stdin)
    return None


@contextlib.contextmanager
def _question_stream() -> Iterator[Any]:
    """Where a terminal question is written: stdout, unless stdout is redirected while stdin is a
    terminal (``script.py > out.txt``); then, as ``getpass`` does, the controlling terminal
    (``/dev/tty``), else stderr. The question went into the redirected file, unseen, while the
    terminal waited for its answer."""
    out = sys.stdout
    if type(out).__name__ == "StdoutProxy":  # at terminal IPython's prompt, set aside for the question
        out = sys.__stdout__
    if out is not None and (_isatty(out) or not _isatty(sys.stdin)):
        yield out
        return
    try:
        terminal = open("/dev/tty", "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    except OSError:
        yield sys.stderr
        return
    with terminal:
        yield terminal


def _isatty(stream: Any) -> bool:
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _end_prompt_line(out: Any, stdin: Any) -> None:
    out.write("\n")
    out.flush()
    _discard_typed(stdin)


def _discard_typed(stdin: Any) -> None:
    try:
        import termios
    except ImportError:
        return
    # termios.error is no OSError: a stdin that is no terminal raises it.
    with contextlib.suppress(termios.error, OSError, ValueError, AttributeError):
        termios.tcflush(stdin.fileno(), termios.TCIFLUSH)


def _is_tty() -> bool:
    return _isatty(sys.stdin)


def _stdin_refused() -> tuple[type[BaseException], ...]:
    """The error ipykernel raises for input() when the front end has no stdin."""
    try:
        from IPython.core.error import StdinNotImplementedError
    except ImportError:  # pragma: no cover - IPython is a dependency
        return (NotImplementedError,)
    return (StdinNotImplementedError, NotImplementedError)


def _answer_late(question: Question, text: str) -> None:
    """A late reply to ``question``, read while another question was asked."""
    answer = parse_answer(text)
    if answer is None:
        logger.info("< an unclear late answer to %s's question: it stays open", question.request.tool)
        return
    question.answer(answer, "stdin")


# One prompter per shell (it follows that shell's cells); made on first use.
_BY_SHELL: weakref.WeakKeyDictionary[Any, Prompter] = weakref.WeakKeyDictionary()
_BY_SHELL_LOCK = threading.Lock()


def prompter_for(shell: Any) -> Prompter:
    """The shell's prompter (one per shell), or a new one without a shell."""
    if shell is None:
        return Prompter(None)
    with _BY_SHELL_LOCK:
        prompter = _BY_SHELL.get(shell)
        if prompter is None:
            prompter = _BY_SHELL[shell] = Prompter(shell)
        return prompter


def forget_prompter(shell: Any) -> None:
    """Stop following the shell's cells (the extension's unload)."""
    with _BY_SHELL_LOCK:
        prompter = _BY_SHELL.pop(shell, None) if shell is not None else None
    if prompter is not None:
        prompter.unregister()
