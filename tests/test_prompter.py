"""The prompter's input boxes over a fake stdin socket: late replies, kept boxes, drops.

The kernel's stdin channel is faked (a session that records what it sends and a socket
whose replies the test queues), so no kernel and no ZMQ are involved; the real kernel's
conversations are in ``test_kernel_conversation.py``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
import zmq

from cc_executor_nb.claude.permissions import Answer, PermissionRequest
from cc_executor_nb.kernel.prompter import CellContext, Prompter, Question

pytestmark = pytest.mark.timeout(30)


class FakeStdin:
    """The kernel's stdin socket and session: boxes sent are recorded, replies are queued."""

    def __init__(self) -> None:
        self.replies: deque[dict[str, Any]] = deque()
        self.sent: list[dict[str, Any]] = []

    def poll(self, milliseconds: int) -> int:
        if not self.replies:
            time.sleep(milliseconds / 1000)
        return len(self.replies)

    def send(self, socket: object, msg_type: str, content: dict[str, Any], parent: object, ident: object) -> Any:
        msg = {"header": {"msg_id": f"box{len(self.sent)}", "msg_type": msg_type}, "content": content}
        self.sent.append(msg)
        return msg

    def recv(self, socket: object, mode: int = 0) -> tuple[None, dict[str, Any] | None]:
        return None, (self.replies.popleft() if self.replies else None)

    def recv_multipart(self, flags: int = 0) -> list[bytes]:
        """A raw read, as a ZMQ socket has (what ipykernel drains stale replies with)."""
        if not self.replies:
            raise zmq.Again
        self.replies.popleft()
        return [b"reply"]

    def reply(self, box: dict[str, Any], value: str) -> None:
        self.replies.append({"parent_header": {"msg_id": box["header"]["msg_id"]}, "content": {"value": value}})


class Asked:
    """A question and the answers it was given (open until one is given or it is closed)."""

    def __init__(self, tool: str, owner: object = None) -> None:
        self.answers: list[tuple[Answer, str]] = []
        self.interrupted: list[str] = []
        self.closed = False
        self.question = Question(PermissionRequest(tool, tool, {}), self._answer, self._is_open,
                                 interrupted=self.interrupted.append, owner=owner)

    def _answer(self, answer: Answer, via: str) -> None:
        self.answers.append((answer, via))

    def _is_open(self) -> bool:
        return not self.closed and not self.answers


def prompter_in_a_cell(stdin: FakeStdin) -> Prompter:
    kernel = SimpleNamespace(session=stdin, stdin_socket=stdin)
    prompter = Prompter(SimpleNamespace(kernel=kernel))
    prompter._cell = new_cell()  # a busy cell with an input box (no cell events here)
    return prompter


def new_cell() -> CellContext:
    return CellContext(ident=[b"front end"], parent={}, allow_stdin=True, started=time.monotonic())


def wait_briefly(prompter: Prompter) -> None:
    prompter.while_waiting(time.monotonic() + 0.3)


def offered(prompter: Prompter, *tools: str) -> list[Asked]:
    asked = [Asked(tool) for tool in tools]
    cell, prompter._cell = prompter._cell, None  # offered while idle: no worker thread asks
    for one in asked:
        prompter.offer(one.question)
    prompter._cell = cell
    return asked


def test_a_late_reply_to_another_open_question_answers_that_question() -> None:
    """Two boxes left open; the second's reply, read while the first is asked again in a
    later cell, answers the second question, and the first box is read, not sent again."""
    stdin = FakeStdin()
    prompter = prompter_in_a_cell(stdin)
    first, second = offered(prompter, "Bash", "Write")
    wait_briefly(prompter)
    assert [box["header"]["msg_id"] for box in stdin.sent] == ["box0", "box1"]
    stdin.reply(stdin.sent[1], "n: not there")
    wait_briefly(prompter)  # the same cell: its boxes are polled
    assert second.answers == [(Answer(False, message="not there"), "stdin")]
    assert first.answers == [] and len(stdin.sent) == 2


def test_a_reply_to_a_decided_question_is_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A box answered after its question was decided elsewhere: the reply decides nothing
    (not even the question asked now) and an INFO line says it was dropped."""
    stdin = FakeStdin()
    prompter = prompter_in_a_cell(stdin)
    [decided] = offered(prompter, "Bash")
    wait_briefly(prompter)
    decided.closed = True  # answered on the card
    stdin.reply(stdin.sent[0], "y")
    [asked] = offered(prompter, "Write")
    prompter._cell = new_cell()
    with caplog.at_level(logging.INFO, logger="cc_executor_nb.kernel.prompter"):
        wait_briefly(prompter)
    assert asked.answers == [] and decided.answers == []
    assert [box["content"]["prompt"].splitlines()[0] for box in stdin.sent] == [
        "Claude asks to use Bash", "Claude asks to use Write"]
    assert any("after its question was decided" in r.message and r.levelno == logging.INFO for r in caplog.records)
    assert list(prompter._boxes) == ["box1"]  # the decided question's box is forgotten


def test_ctrl_c_at_a_terminal_question_ends_its_prompt_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C at the terminal's question ends the prompt's line before the interrupt goes on, so the
    run's next note ('[permission] ... cancelled', '[cancelled] ...') starts a line of its own (it was
    written after the echoed '^C', on the prompt's line)."""
    import io
    import os
    import select
    import sys

    from cc_executor_nb.kernel.prompter import _terminal_answer

    def interrupted(*args: object) -> object:
        raise KeyboardInterrupt

    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as stdin:
        out = io.StringIO()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stdin", stdin)
        monkeypatch.setattr(select, "select", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _terminal_answer("y/n > ", SimpleNamespace(is_open=lambda: True), None)  # type: ignore[arg-type]
    os.close(write_end)
    assert out.getvalue() == "y/n > \n"


def test_ctrl_d_at_a_terminal_question_ends_its_prompt_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-D (end of file) at the terminal's question ends the prompt's line: what follows (the
    question's denial, '[permission] ... denied by you: end of input (Ctrl-D)') starts a line of its own
    (the question asked again was glued to the old prompt: '... (n: why, Claude asks to use Bash: ...')."""
    import io
    import os
    import sys

    from cc_executor_nb.kernel.prompter import _terminal_answer

    read_end, write_end = os.pipe()
    os.close(write_end)  # at end of file, as a terminal after Ctrl-D
    with os.fdopen(read_end) as stdin:
        out = io.StringIO()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stdin", stdin)
        with pytest.raises(EOFError):
            _terminal_answer("y/n > ", SimpleNamespace(is_open=lambda: True), None)  # type: ignore[arg-type]
    assert out.getvalue() == "y/n > \n"


class EndsOfInput:
    """A terminal's stdin at which the person pressed Ctrl-D ``times`` times, then typed ``y``."""

    def __init__(self, times: int) -> None:
        self.lines = [""] * times + ["y\n"]

    def readline(self) -> str:
        return self.lines.pop(0)

    def fileno(self) -> int:
        raise OSError("no terminal to flush")


def test_ctrl_d_at_a_terminal_question_denies_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-D at the terminal's question denies it, once, saying why (end of input): it asked the
    question again after every Ctrl-D, so a person pressing it three times, then 'y', allowed it."""
    import io
    import select
    import sys

    from cc_executor_nb.claude.control import END_OF_INPUT_MESSAGE
    from cc_executor_nb.kernel import prompter as prompter_module

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stdin", EndsOfInput(3))
    monkeypatch.setattr(select, "select", lambda readers, *rest: (readers, [], []))
    monkeypatch.setattr(prompter_module, "_is_tty", lambda: True)
    prompter = Prompter(None)
    [asked] = offered(prompter, "Bash")
    prompter.while_waiting()
    assert asked.answers == [(Answer(False, message=END_OF_INPUT_MESSAGE), "stdin")]
    assert out.getvalue().count("Claude asks to use Bash") == 1


@pytest.mark.parametrize(("cancelled", "interrupted"), [("this run", ["stdin"]), ("another run", [])])
def test_ctrl_c_at_a_terminal_question_marks_it_only_when_its_run_is_cancelled(
    monkeypatch: pytest.MonkeyPatch, cancelled: str, interrupted: list[str]
) -> None:
    """Ctrl-C while a run's question is asked at the terminal: the question reads interrupted by the
    person asked when the interrupt cancels its run; when the wait that asked it was another run's
    (wait() asks every run's questions), it stays open, to be answered later."""
    import io
    import select
    import sys

    from cc_executor_nb.kernel import prompter as prompter_module

    def ctrl_c(*args: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(sys, "stdin", EndsOfInput(0))
    monkeypatch.setattr(select, "select", ctrl_c)
    monkeypatch.setattr(prompter_module, "_is_tty", lambda: True)
    prompter, this_run = Prompter(None), object()
    asked = Asked("Bash", owner=this_run)
    prompter.offer(asked.question)
    with pytest.raises(KeyboardInterrupt):
        prompter.while_waiting()
    prompter.cell_interrupted(owner=this_run if cancelled == "this run" else object())
    assert asked.interrupted == interrupted and asked.answers == []
