"""Interactive Claude runs end to end: the real claude CLI against the demo API, through the
real server and client (the in-kernel one, and a standalone server as a subprocess).

Approvals, denials, "always", a question left pending with heartbeats, interrupt, follow-ups
in the same process, the idle end, policies, and the fall-back for a CLI without host mode.
``CCX_TEST_CLAUDE=/path/to/claude`` runs them against another CLI (e.g. an older one).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cc_executor_nb as ccx
from cc_executor_nb.claude.permissions import Answer, PermissionRequest
from cc_executor_nb.client import Client
from cc_executor_nb.demo.shared import stop_demo
from cc_executor_nb.demo.texts import haikus
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.loop import KernelLoop, stop_shared_loop
from cc_executor_nb.kernel.prompter import NOBODY_MESSAGE
from cc_executor_nb.kernel.run import UNREACHABLE_CANCEL, Run
from cc_executor_nb.kernel.transcript import Transcript

from .closed_input_cli import cli_that_exits_before_reading
from .conftest import group_alive
from .proxy import FaultyProxy, on_loop
from .servers import ServerProcess, start_server
from .util import all_objects, assert_no_command_line_shows, eventually, new_objects, scaled

REPO_ROOT = Path(__file__).resolve().parents[1]
CLAUDE = Path(os.environ.get("CCX_TEST_CLAUDE") or REPO_ROOT / "node_modules" / ".bin" / "claude")
REMOTE_TOKEN = "conversation-test-token-0123456789"

pytestmark = [
    pytest.mark.claude,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not CLAUDE.exists(), reason=f"{CLAUDE} is absent: run `npm ci` in the project root"),
]


@pytest.fixture(scope="module", autouse=True)
def clean_up() -> Iterator[None]:
    """Stop the shared loop (and every run on it) and the demo backend after the module."""
    yield
    stop_shared_loop()
    stop_demo()


@pytest.fixture(scope="module")
def remote() -> Iterator[ServerProcess]:
    """A standalone server as a subprocess, on loopback with a token."""
    server = start_server("--token", REMOTE_TOKEN, "--kill-grace", "2")
    yield server
    server.finish()


@pytest.fixture(params=["local", "remote"])
def where(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Run on the in-kernel server, or on the standalone one."""
    if request.param == "local":
        return {}
    server: ServerProcess = request.getfixturevalue("remote")
    return {"server": server.url, "token": REMOTE_TOKEN}


def settings() -> CCExec:
    """Settings for tests: no history file, a short kill grace."""
    config = CCExec()
    config.history_path = "none"
    config.kill_grace = 2.0
    return config


def start(prompt: str, cwd: Path, **options: Any) -> Run:
    """An interactive Claude run against the demo API, shown nowhere (``settings``: shared ones)."""
    options.setdefault("heartbeat", 1.0)
    options.setdefault("settings", settings())
    options.setdefault("display", False)
    return ccx.run(prompt, executable=str(CLAUDE), demo=True, cwd=str(cwd), **options)


def question(run: Run, timeout: float = 30.0) -> PermissionRequest:
    """The run's first pending question, once it is asked."""
    return eventually(lambda: run.pending, timeout=timeout, what="a permission question")


def pending_questions(run: Run) -> list[dict[str, Any]]:
    """The params of the run's ``conversation.question`` events that announce a pending question."""
    return [event.params for event in run.events
            if event.method == "conversation.question" and event.params["request"]["status"] == "pending"]


def turn_over(run: Run, timeout: float = 30.0) -> Run:
    """Wait for the current turn to end (no question may be pending)."""
    return run.wait(scaled(timeout))


def ended(run: Run, timeout: float = 30.0) -> Run:
    """End the conversation and wait for the process to exit."""
    run.end()
    eventually(lambda: run.done, timeout=timeout, what="the process to exit")
    return run


# Questions


def test_approve_runs_the_command_and_the_answer_reports_it(tmp_path: Path, where: dict[str, Any]) -> None:
    """Allow: the Bash command writes the file and Claude's answer quotes its output."""
    run = start("bash: echo hello > notes.txt && cat notes.txt", tmp_path, **where)
    asked = question(run)
    assert (asked.tool, asked.input["command"], run.state.needs_you) == (
        "Bash", "echo hello > notes.txt && cat notes.txt", True)
    run.approve()
    turn_over(run)
    assert run.status == "completed" and run.alive
    assert (tmp_path / "notes.txt").read_text() == "hello\n"
    assert run.answer == "I ran `echo hello > notes.txt && cat notes.txt`. Output: hello"
    (decided,) = run.permission_requests
    assert (decided.status, decided.decided_by, decided.always) == ("allowed", "code", False)
    ended(run)


def test_deny_with_a_message_writes_nothing_and_the_model_quotes_it(tmp_path: Path, where: dict[str, Any]) -> None:
    """Deny with a reason: no file, and Claude's next message repeats the reason."""
    run = start("bash: touch denied.txt", tmp_path, **where)
    question(run)
    run.deny(message="Not today: use the staging directory")
    turn_over(run)
    assert not (tmp_path / "denied.txt").exists()
    assert run.answer == "The command was not run: Not today: use the staging directory"
    (decided,) = run.permission_requests
    assert (decided.status, decided.message) == ("denied", "Not today: use the staging directory")
    ended(run)


def test_a_deny_message_that_is_not_utf8_is_refused_and_the_question_waits(tmp_path: Path) -> None:
    """deny(message=...) with a lone surrogate raises a ValueError naming where it is (the model got U+FFFD
    in its place); the question stays pending and a valid message then reaches the model."""
    run = start("bash: touch denied.txt", tmp_path)
    question(run)
    with pytest.raises(ValueError, match=r"^the message is not valid UTF-8 \(U\+D800, a lone surrogate at index 3\)"):
        run.deny(message="no \ud800 way")
    assert [request.status for request in run.permission_requests] == ["pending"]
    run.deny(message="no way")
    assert turn_over(run).answer == "The command was not run: no way"
    ended(run)


def test_a_decide_message_that_is_not_utf8_is_refused_and_the_question_waits(tmp_path: Path) -> None:
    """run.decide(..., message=...) (what the widget's card calls) refuses a lone surrogate as deny()
    does (the model got U+FFFD in its place); the question stays pending."""
    run = start("bash: touch denied.txt", tmp_path)
    asked = question(run)
    with pytest.raises(ValueError, match=r"^the message is not valid UTF-8 \(U\+D800, a lone surrogate at index 3\)"):
        run.decide(asked.id, False, message="no \ud800 way", via="widget")
    assert [request.status for request in run.permission_requests] == ["pending"]
    run.deny(message="no way")
    assert turn_over(run).answer == "The command was not run: no way"
    ended(run)


def test_a_typed_reason_that_is_not_utf8_is_denied_with_a_clear_note(tmp_path: Path) -> None:
    """A reason that reaches the conversation by another way than code (a prompt that read bytes of
    another encoding) is not sent mangled: the question is denied, and the model told the reason
    could not be passed on."""
    run = start("bash: touch denied.txt", tmp_path)
    asked = question(run)
    answer = Answer(False, message="no \udcff way")
    run._converse(lambda c: c.decide(asked.id, answer, via="stdin", strict=False))
    note = ("Denied; the reason given could not be passed on: the reason given is not valid UTF-8 "
            "(byte 0xff at index 3).")
    assert turn_over(run).answer == f"The command was not run: {note}"
    assert [(r.status, r.message) for r in run.permission_requests] == [("denied", note)]
    ended(run)


def test_always_answers_the_second_identical_call_without_asking(tmp_path: Path, where: dict[str, Any]) -> None:
    """Always allow: the same command a second time runs without a second question."""
    run = start("bash twice: touch twice.txt", tmp_path, **where)
    question(run)
    run.approve(always=True)
    turn_over(run)
    assert run.status == "completed"
    assert [r.status for r in run.permission_requests] == ["allowed"]
    assert run.permission_requests[0].always
    bash = [t for t in run.tool_calls if t.name == "Bash"]
    assert len(bash) == 2 and all(t.status == "done" and not t.is_error for t in bash)
    assert run.answer.count("I ran `touch twice.txt`") == 2
    assert not (tmp_path / ".claude").exists()  # the rule stayed in the process, not in a settings file
    ended(run)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_question_pending_a_minute_keeps_heartbeats_and_never_times_out(tmp_path: Path) -> None:
    """Pending 60 s with heartbeat 1 s: heartbeats keep coming, no timeout, then approval completes."""
    run = start("bash: echo late > late.txt && cat late.txt", tmp_path, heartbeat=1.0, inactivity=5.0)
    question(run)
    asked_at = time.monotonic()
    beats_before = run.state.heartbeat_count
    time.sleep(60)  # the subject of the test: a person takes a minute to answer
    waited = time.monotonic() - asked_at
    # "running", not "thinking": the silence is the person's
    assert run.pending is not None and run.status == "running" and run.state.needs_you
    assert run.state.heartbeat_count - beats_before >= 50, (waited, run.state.heartbeat_count)
    assert not any(e.method == "process.completed" for e in run.events)
    run.approve()
    turn_over(run)
    assert run.status == "completed" and (tmp_path / "late.txt").read_text() == "late\n"
    assert run.result is not None and run.result["duration_ms"] >= 60_000
    ended(run)


# Turns


def test_a_follow_up_continues_the_same_process_and_session(tmp_path: Path, where: dict[str, Any]) -> None:
    """run.send after a turn: same process, same Claude session id, a second answer."""
    run = start("echo: first answer", tmp_path, **where)
    turn_over(run)
    assert (run.status, run.answer, run.alive, run.exit_code) == ("completed", "first answer", True, None)
    pid, session = run.state.pid, run.session_id
    run.send("echo: second answer")
    assert run.status == "running"
    turn_over(run)
    assert (run.status, run.answer) == ("completed", "second answer")
    assert run.state.pid == pid and run.session_id == session and session
    assert sum(e.method == "process.started" for e in run.events) == 1
    assert run.state.turns == 2 and "first answer" in run.text and "second answer" in run.text
    ended(run)
    assert (run.status, run.exit_code) == ("completed", 0)


def test_prompts_bigger_than_the_servers_message_limit_arrive_whole(tmp_path: Path) -> None:
    """A server started with --max-message-size 200000: a 230 KB first prompt and follow-up go in
    input requests sized to the limit its ``connected`` gives, and come back whole (one request
    was refused: "the server refused a message too big for it (...)", and the run failed)."""
    server = start_server("--token", REMOTE_TOKEN, "--max-message-size", "200000")
    try:
        first, second = "y" * 230_000, "z" * 230_000
        run = start(f"echo: {first}", tmp_path, server=server.url, token=REMOTE_TOKEN)
        turn_over(run)
        assert (run.status, run.answer) == ("completed", first), run.error
        run.send(f"echo: {second}")
        turn_over(run)
        assert (run.status, run.answer) == ("completed", second), run.error
        ended(run)
    finally:
        server.finish()


def test_interrupt_ends_the_turn_with_a_result_and_the_process_exits_cleanly(
    tmp_path: Path, where: dict[str, Any]
) -> None:
    """Interrupt during a 5000-word story: a result within 2 s; after end() the process exits on its own."""
    run = start("write a 5000 word story at 200 words per second", tmp_path, **where)
    eventually(lambda: len(run.text.split()) >= 40, timeout=30, what="the story to stream")
    asked = time.monotonic()
    run.interrupt()
    turn_over(run)
    took = time.monotonic() - asked
    assert took < scaled(2.0), took
    assert run.status == "cancelled" and run.alive
    assert run.result is not None and run.result["subtype"] == "error_during_execution"
    assert 40 <= len(run.text.split()) < 5000
    # The answer and the record keep the story so far, marked interrupted (not the CLI's diagnostic).
    assert run.answer == run.text and run.claude is not None and run.claude.interrupted
    record = run.transcript()
    assert run.text.split("\n")[0] in record and "**Interrupted**" in record and "ede_diagnostic" not in record
    ended(run, timeout=10)
    # Ended by end(): a normal end (it read "cancelled, exit 1"); the CLI's exit code is kept as it
    # is (1 after an interrupted last turn), and it is no failure: text mode read "[failed] exit 1
    # ...: exited with code 1", and run.error said so.
    assert run.exit_code in (0, 1) and run.status == "completed"  # exited by itself: never signalled
    assert not any(e.method == "process.cancelled" for e in run.events)
    assert run.error is None
    (end,) = [e for e in run.events if e.method == "process.completed"]
    assert end.params["status"] == "completed" and not end.params.get("error")
    # The interrupted turn is still recorded as interrupted.
    assert run.claude.interrupted and "**Interrupted**" in run.transcript()
    assert run.transcript().split("\n")[2].startswith("**completed**")


def test_a_conversation_ended_after_a_failed_turn_keeps_the_turns_reason(tmp_path: Path) -> None:
    """A turn that failed (the turn limit), then end(): the run's error is still the turn's reason
    (it became "exited with code 1", which says nothing of why)."""
    run = turn_over(start("bash: echo hi > hi.txt", tmp_path, max_turns=1, approve="all"))
    assert run.status == "failed" and run.error == "Reached maximum number of turns (1)"
    ended(run)
    assert (run.status, run.exit_code, run.error) == ("failed", 1, "Reached maximum number of turns (1)")
    (end,) = [e for e in run.events if e.method == "process.completed"]
    assert end.params["error"] == "Reached maximum number of turns (1)"


def test_an_interrupt_between_turns_says_there_is_nothing_to_interrupt(tmp_path: Path) -> None:
    """interrupt() with no turn running: a notice says nothing was interrupted and why (it did
    nothing, silently); the turn's status stays, and the next turn runs uninterrupted."""
    run = turn_over(start("echo: one", tmp_path))
    assert run.conversation is not None
    assert run._converse(lambda c: c.interrupt()) is False
    run.interrupt()
    notice = "Nothing to interrupt: no turn is running (the conversation waits for a follow-up)."
    assert run.conversation.view().notices == (notice,)  # said once, however often asked
    assert [e.params["message"] for e in run.events if e.method == "conversation.notice"] == [notice]
    assert (run.status, run.answer, run.alive) == ("completed", "one", True)
    turn_over(run.send("echo: two"))
    assert (run.status, run.answer) == ("completed", "two")
    ended(run)


def test_an_interrupt_after_the_conversation_is_over_says_so(tmp_path: Path) -> None:
    """interrupt() once the conversation is over: a notice says it is over (it said nothing),
    once however often asked; the run's end stays as it was."""
    run = ended(turn_over(start("echo: one", tmp_path)))
    assert run.conversation is not None
    before = (run.status, run.exit_code, run.error)
    run.interrupt()
    run.interrupt()
    notice = "Nothing to interrupt: the conversation is over."
    assert run.conversation.view().notices == (notice,)
    assert [e.params["message"] for e in run.events if e.method == "conversation.notice"] == [notice]
    assert (run.status, run.exit_code, run.error) == before and run.done


def test_an_interrupt_of_a_run_shown_nowhere_prints_its_notice_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run shown nowhere (display=False): interrupt()'s notice is printed where it was called, once
    however often asked (it went only to run.events)."""
    run = turn_over(start("echo: one", tmp_path))
    capsys.readouterr()
    run.interrupt()
    run.interrupt()
    between = "[note] Nothing to interrupt: no turn is running (the conversation waits for a follow-up).\n"
    assert capsys.readouterr().out == between
    ended(run)
    run.interrupt()
    run.interrupt()
    assert capsys.readouterr().out == "[note] Nothing to interrupt: the conversation is over.\n"


def test_continue_resumes_the_conversation_used_last_not_the_one_ended_last(tmp_path: Path) -> None:
    """Two conversations; the second is used last, then the first is ended last: --continue
    resumes the second (the first's exit overwrote the session to continue)."""
    shared = settings()
    first = turn_over(start("echo: one", tmp_path, settings=shared))
    second = turn_over(start("echo: two", tmp_path, settings=shared))
    assert shared.last_session_id == second.session_id != first.session_id
    ended(second)
    ended(first)
    assert shared.last_session_id == second.session_id


def test_an_interrupt_during_the_start_stops_the_first_turn_once_it_runs(tmp_path: Path) -> None:
    """interrupt() right after run(), before the CLI is in host mode: the first turn is
    interrupted once it runs (it was dropped silently, and all 5000 words came)."""
    run = start("write a 5000 word story at 200 words per second", tmp_path)
    turn_over(run.interrupt())  # the CLI takes hundreds of ms to show host mode
    assert run.status == "cancelled" and run.alive
    assert run.result is not None and run.result["subtype"] == "error_during_execution"
    assert len(run.text.split()) < 5000
    ended(run)


def test_a_cancel_while_the_start_is_under_way_ends_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cancel() while the execute request waits for the server's answer: once the process is
    up, the cancel reaches it. It was lost (the conversation had no connection yet, and the
    prompt was never written): the CLI waited on its input for ever, the run ``running``."""
    from cc_executor_nb.client import Client

    execute, runs = Client.execute, []

    async def cancel_first(self: Client, *args: Any, **kwargs: Any) -> Any:
        while not runs:
            await asyncio.sleep(0.01)
        runs[0].cancel(timeout=None)  # the request is in flight: nothing to send it to yet
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(Client, "execute", cancel_first)
    runs.append(start("echo: hi", tmp_path))
    eventually(lambda: runs[0].done, timeout=20, what="the cancelled run to end")
    run = runs[0]
    assert run.status == "cancelled" and not run.alive, (run.status, run.error)
    assert run.state.pid is not None  # it did start, and was stopped


def test_a_follow_up_after_an_interrupt_is_answered(tmp_path: Path) -> None:
    """After an interrupted turn the same process takes the next prompt."""
    run = start("write a 5000 word story at 200 words per second", tmp_path)
    eventually(lambda: len(run.text.split()) >= 20, timeout=30, what="the story to stream")
    turn_over(run.interrupt())
    run.send("what is 6*7")
    turn_over(run)
    assert (run.status, run.answer) == ("completed", "42")
    ended(run)


def test_a_follow_up_after_an_interrupted_question_is_answered(tmp_path: Path) -> None:
    """Interrupt while a question waits, then a follow-up: the demo answers the follow-up (it
    answered "The command printed: The user doesn't want to proceed…", the rejected call's result)."""
    run = start("bash: touch intq.txt", tmp_path)
    question(run)
    turn_over(run.interrupt())
    run.send("echo: after")
    turn_over(run)
    assert (run.status, run.answer) == ("completed", "after")
    ended(run)


def test_a_failed_follow_ups_error_is_recorded_once_with_its_turn(tmp_path: Path) -> None:
    """A follow-up fails (API error 500) and the conversation is ended: run.error is Claude's
    message, and every form of the record shows it once, under the follow-up (it read a second
    time in the status line, beside "exit code 1")."""
    run = start("what is 2+2", tmp_path)
    turn_over(run)
    run.send("error 500")
    turn_over(run)
    ended(run)
    assert run.status == "failed" and (run.error or "").startswith("API Error: 500"), (run.status, run.error)
    record = Transcript(run)
    for form in (record.markdown(), record.text(), record.html()):
        assert form.count("500 Internal server error") == 1, form
        assert form.index("error 500") < form.index("500 Internal server error")
    assert record.text().splitlines()[1].startswith("failed · exit code 1 · took ")


def test_the_markdown_record_keeps_each_turn_with_its_follow_up_prompt(tmp_path: Path) -> None:
    """transcript(): the first answer, then "Follow-up 1" with its prompt quoted and its own
    answer, in order (the answers ran together, the follow-up prompt missing)."""
    run = start("what is 2+2", tmp_path)
    turn_over(run)
    run.send("write 3 haikus about the sea")
    turn_over(run)
    ended(run)
    record = run.transcript()
    first, follow_up = record.index("\n4\n"), record.index("**Follow-up 1**\n\n> write 3 haikus about the sea")
    haiku = record.index(haikus(3).splitlines()[0].replace(".", "\\."))
    assert first < follow_up < haiku
    # The text record (text/plain) too, and a footer that says which figures are the last turn's.
    text = Transcript(run).text()
    first, follow_up = text.index("\n4\n"), text.index("[follow-up 1]\n> write 3 haikus about the sea")
    assert first < follow_up < text.index(haikus(3).splitlines()[0])
    footer = text.strip().splitlines()[-1]
    assert footer.startswith("[result] done · $") and " · 2 conversation turns · last turn " in footer


def footers(run: Run) -> dict[str, str]:
    """Claude's footer in each form of the record: text (text mode's line), Markdown, HTML."""
    record = Transcript(run)
    html = re.search(r'class="cc-footer"[^>]*>([^<]*)<', record.html())
    assert html is not None
    return {"text": record.text().strip().splitlines()[-1], "markdown": record.markdown().strip().splitlines()[-1],
            "html": html.group(1)}


def test_the_footer_tells_the_clis_turns_from_the_conversations(tmp_path: Path) -> None:
    """One prompt: the CLI's num_turns reads "N agent turns"; after a follow-up the count of
    prompts reads "N conversation turns" (both read "N turns", in every form of the record)."""
    run = turn_over(start("what is 2+2", tmp_path))
    assert run.num_turns is not None
    agent = f" · {run.num_turns} agent turn{'s' if run.num_turns != 1 else ''} · "
    assert all(agent in footer for footer in footers(run).values()), footers(run)
    run.send("echo: again")
    turn_over(run)
    assert all(" · 2 conversation turns · last turn " in footer for footer in footers(run).values()), footers(run)
    assert not any(re.search(r"\d turns? ·", footer.replace("agent turn", "").replace("conversation turn", ""))
                   for footer in footers(run).values())
    ended(run)


def test_a_failed_turn_reads_as_a_failure_in_the_records(tmp_path: Path) -> None:
    """A turn that failed (a usage limit), then a follow-up: the records show the limit as the
    turn's failure, never as its answer (it read as an ordinary answer in Markdown and text)."""
    run = start("usage limit reset in 1 s, then what is 2+2", tmp_path)
    turn_over(run)
    # Between the turns, run.error says why the turn failed (it was None with status failed).
    assert run.status == "failed" and run.error is not None and "limit" in run.error
    time.sleep(1.5)  # past the limit's reset: the follow-up is answered
    run.send("what is 3+3")
    turn_over(run)
    assert run.status == "completed" and run.error is None  # the latest turn went well
    ended(run)
    record, text = run.transcript(), Transcript(run).text()
    (failure,) = re.findall(r"^\[error\] (You've hit your .*limit.*)$", text, re.MULTILINE)
    assert text.count(failure) == 1 and text.index(failure) < text.index("[follow-up 1]") < text.index("\n4\n")
    shown = record.replace("\\", "")  # Markdown escapes
    assert f"**{failure}**" in shown and shown.count(failure) == 1


def test_a_follow_up_sent_during_a_turn_runs_after_it(tmp_path: Path) -> None:
    """send() while a turn runs: queued, then its own turn once the first has its result."""
    # The story streams for 5 s, the window for send() to find the turn still running (it
    # streamed for 1 s: a test stalled that long under load sent after the turn's end).
    run = start("write a 1500 word story at 300 words per second", tmp_path)
    eventually(lambda: run.text, timeout=30, what="the story to start")
    run.send("echo: queued")
    assert run.conversation is not None and run.conversation.view().queued == 1
    eventually(lambda: run.answer == "queued" and run.status == "completed", timeout=30, what="the queued turn")
    assert len(run.text.split()) >= 1500 and run.state.turns == 2
    ended(run)


def test_end_during_a_turn_lets_it_finish_then_exits(tmp_path: Path) -> None:
    """end() while a turn runs: the turn completes (its whole answer), then the process exits 0."""
    run = start("write a 200 word story at 200 words per second", tmp_path)
    eventually(lambda: run.text, timeout=30, what="the story to start")
    run.end()
    run.wait(scaled(30))  # after end(), wait() waits for the exit
    assert run.done and (run.status, run.exit_code) == ("completed", 0)
    assert len(run.answer.split()) == 200


def test_ended_conversations_hold_no_connection(tmp_path: Path) -> None:
    """Three ended conversations kept alive (as IPython's Out cache keeps a magic's runs) hold
    no Client: every client made for them is collected (each conversation kept its closed
    client, with its websocket connection, queues and futures)."""
    before = all_objects(Client)
    runs = [ended(turn_over(start(f"echo: {i}", tmp_path))) for i in range(3)]
    assert [run.answer for run in runs] == ["0", "1", "2"]
    eventually(lambda: not new_objects(Client, before), what="the ended conversations' clients to be collected")


@pytest.mark.parametrize("ended_first", [False, True])
def test_exiting_with_a_conversation_whose_cli_hangs_on_its_closed_input_is_quick(
    tmp_path: Path, ended_first: bool
) -> None:
    """A script exits while its conversation waits for a follow-up (or was just ended), and the
    CLI does not exit when its input is closed (as an unlogged CLI after a failed turn): the
    process is cancelled within seconds and the exit is quiet (it waited 15 s for the exit,
    then said "could not confirm the end"; on a loaded machine the loop's stop timed out with
    a traceback)."""
    wrapper = tmp_path / "hanging-claude"
    wrapper.write_text(f'#!/bin/sh\n"{CLAUDE}" "$@"\nexec sleep 60\n')
    wrapper.chmod(0o755)
    script = (
        "import cc_executor_nb as ccx\n"
        "from cc_executor_nb.kernel.config import CCExec\n"
        "s = CCExec(history_path='none', kill_grace=2.0)\n"
        f"r = ccx.run('echo: first', executable={str(wrapper)!r}, demo=True, display=False, settings=s)\n"
        "r.wait(60)\n"
        f"{'r.end()' if ended_first else 'pass'}\n"
        "print(r.status, r.alive, flush=True)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=tmp_path)
    try:
        assert child.stdout is not None and child.stdout.readline().split() == ["completed", "True"]
        turned = time.monotonic()
        _, stderr = child.communicate(timeout=scaled(40))
        took = time.monotonic() - turned
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0
    assert took < scaled(8), f"the exit took {took:.1f} s"
    assert "Traceback" not in stderr and "could not confirm" not in stderr, stderr


def test_an_idle_conversation_ends_by_itself_and_keeps_everything(tmp_path: Path) -> None:
    """idle_timeout: with no follow-up the process exits by itself; the answer is kept."""
    run = start("echo: still here", tmp_path, idle_timeout=1.0)
    turn_over(run)
    eventually(lambda: run.done, timeout=15, what="the idle process to end")
    assert (run.status, run.exit_code, run.answer) == ("completed", 0, "still here")
    assert run.conversation is not None
    assert any("without a follow-up" in notice for notice in run.conversation.view().notices)
    with pytest.raises(RuntimeError) as refused:
        run.send("too late")
    # Why, and how to go on (it said only "the conversation is over").
    assert str(refused.value) == (
        "the conversation is over (ended after its idle timeout without a follow-up): no more input goes to "
        f"this process; follow up in a new run with --resume {run.session_id} (resume='{run.session_id}')"
    )


def test_a_conversation_whose_timeout_passes_between_turns_ends_completed(tmp_path: Path) -> None:
    """timeout: the answer came and the process waited for a follow-up when the timeout ended it.
    Nothing was cut, so the run reads completed with a note (it read timeout, "timed out after
    N s", under the whole answer); a timeout that cuts a turn stays a timeout."""
    run = start("echo: still here", tmp_path, timeout=scaled(5))
    turn_over(run)
    eventually(lambda: run.done, timeout=scaled(20), what="the timeout to end the process")
    assert (run.status, run.error, run.answer) == ("completed", None, "still here")
    assert run.conversation is not None
    (notice,) = run.conversation.view().notices
    assert notice.startswith("Ended at its timeout (") and notice.endswith(") without a follow-up; everything is kept.")
    cut = start("think for 30 seconds, then answer", tmp_path, timeout=scaled(2))
    eventually(lambda: cut.done, timeout=scaled(20), what="the timeout to end the turn")
    assert (cut.status, cut.error) == ("timeout", f"timed out after {scaled(2):g} s")


REFUSED_START = "the conversation is over (the CLI refused its start): no more input goes to this process"


def test_a_conversation_the_cli_refused_at_its_start_suggests_no_resume(tmp_path: Path) -> None:
    """A CLI that refused its arguments (--resume of no session) kept no session: a refused
    follow-up does not tell you to --resume the id its error result named (that run fails
    with 'No conversation found with session ID: ...')."""
    run = start("what is 2+2", tmp_path, resume="notauuid")
    eventually(lambda: run.done, timeout=30, what="the CLI to exit")
    assert run.status == "failed" and run.session_id  # the error result names an id all the same
    with pytest.raises(RuntimeError) as refused:
        run.send("what is 3+3")
    assert str(refused.value) == REFUSED_START


def test_a_follow_up_right_after_a_refused_start_is_refused_not_lost(tmp_path: Path) -> None:
    """A follow-up sent once the refused start's error result came (wait=True returns then, the
    CLI not gone yet) raises as after the process's end: it went nowhere and no turn 2 began."""
    run = start("what is 2+2", tmp_path, resume="notauuid", wait=True)
    with pytest.raises(RuntimeError) as refused:
        run.send("what is 3+3")
    assert str(refused.value) == REFUSED_START
    eventually(lambda: run.done, timeout=30, what="the CLI to exit")
    turns = [event.params["turn"] for event in run.events if event.method == "conversation.turn"]
    assert run.status == "failed" and set(turns) == {1}


def test_a_follow_up_queued_during_a_refused_start_is_dropped_with_a_notice(tmp_path: Path) -> None:
    """A follow-up sent during the start waits for the first turn; when the CLI refuses its start
    it is not written to the exiting process: a notice says it was not sent."""
    run = start("what is 2+2", tmp_path, resume="notauuid")
    run.send("what is 3+3")
    eventually(lambda: run.done, timeout=30, what="the CLI to exit")
    assert run.conversation is not None
    assert run.conversation.view().notices == ("1 follow-up not sent: the CLI refused its start",)
    turns = [event.params["turn"] for event in run.events if event.method == "conversation.turn"]
    assert run.status == "failed" and set(turns) == {1}


def test_a_conversation_the_cli_refused_at_its_start_prints_no_follow_up_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In text mode the refused start's turn line is bare: it said "run.send('...') follows up"
    just before the process exited, where no follow-up can go."""
    run = start("what is 2+2", tmp_path, resume="notauuid", display=True)
    eventually(lambda: run.done, timeout=30, what="the CLI to exit")
    out = capsys.readouterr().out
    assert run.status == "failed" and "[turn" not in out and "follows up" not in out
    assert out.rstrip("\n").splitlines()[-1].startswith("[failed] exit 1")


def test_a_refused_starts_turn_is_its_last(tmp_path: Path) -> None:
    """The refused start's turn is announced as the conversation's last (as a turn end() was asked
    during): what follows it (a widget's follow-up box, a printed record's hint) is not offered."""
    run = start("what is 2+2", tmp_path, resume="notauuid")
    eventually(lambda: run.done, timeout=30, what="the CLI to exit")
    turns = [event.params for event in run.events if event.method == "conversation.turn"]
    assert turns[-1] == {"status": "failed", "turn": 1, "last": True}


def test_a_refused_start_in_widget_mode_without_a_kernel_prints_no_follow_up_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """output_mode='widget' where no kernel shows widgets prints the record: at the refused start's
    turn it ended "[turn ended] run.send('...') follows up", where no follow-up can go."""
    config = settings()
    config.output_mode = "widget"
    run = start("what is 2+2", tmp_path, resume="notauuid", display=True, settings=config)
    eventually(lambda: run.done, timeout=30, what="the CLI to exit")
    out = capsys.readouterr().out
    assert run.status == "failed" and "[result] failed" in out and "follows up" not in out


def test_a_claude_run_whose_tool_escaped_its_group_says_so_on_its_text_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text mode: a Claude run whose Bash call left a process outside the run's group (setsid) ends
    with the same [note] line as a command, under its end line, not only in its record."""
    run = turn_over(start("bash: setsid -f sleep 60 >/dev/null 2>&1", tmp_path, approve="all", display=True))
    ended(run)
    try:
        (escaped,) = run.escaped_pids
        out = capsys.readouterr().out.splitlines()
        note = (f"[note] pid {escaped} left the run's process group (setsid), so the run's end did not stop it: "
                f"it may still be running (kill {escaped}).")
        assert out[-2].startswith("[completed] exit 0") and out[-1] == note
    finally:
        for pid in run.escaped_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def test_past_max_idle_conversations_the_longest_waiting_one_ends(tmp_path: Path) -> None:
    """max_idle_conversations=1: a second conversation waiting for a follow-up ends the first
    (its CLI process exits; every live conversation kept its ~190 MiB CLI for the idle
    timeout, 600 s, so 100 prompts in 10 min meant 100 CLIs); its answer is kept."""
    config = settings()
    config.max_idle_conversations = 1
    first = turn_over(start("echo: first", tmp_path, settings=config))
    second = turn_over(start("echo: second", tmp_path, settings=config))
    eventually(lambda: first.done, timeout=15, what="the first conversation to end")
    assert (first.status, first.exit_code, first.answer) == ("completed", 0, "first")
    assert first.conversation is not None
    assert any("max_idle_conversations" in notice for notice in first.conversation.view().notices)
    with pytest.raises(RuntimeError, match=r"more conversations than max_idle_conversations"):
        first.send("too late")
    assert second.alive
    ended(second)


def test_a_conversation_ended_by_max_idle_conversations_says_so_in_its_ending(tmp_path: Path) -> None:
    """The conversation.ending of a conversation ended by max_idle_conversations names that
    limit (it said reason "idle", as an idle timeout's does); an idle timeout's says "idle"."""
    config = settings()
    config.max_idle_conversations = 1
    first = turn_over(start("echo: first", tmp_path, settings=config))
    second = turn_over(start("echo: second", tmp_path, settings=config, idle_timeout=0.5))
    eventually(lambda: first.done and second.done, timeout=15, what="both conversations to end")
    reasons = [[e.params["reason"] for e in run.events if e.method == "conversation.ending"] for run in (first, second)]
    assert reasons == [["max_idle_conversations"], ["idle"]]


def test_an_idle_end_after_an_interrupted_turn_is_a_normal_end(tmp_path: Path) -> None:
    """Interrupted, then nobody follows up: the idle timeout ends the conversation as completed
    (it read "cancelled, exit 1"), the turn still reads "Interrupted" in its record."""
    run = start("write a 5000 word story at 200 words per second", tmp_path, idle_timeout=1.0)
    eventually(lambda: len(run.text.split()) >= 20, timeout=30, what="the story to stream")
    turn_over(run.interrupt())
    assert run.status == "cancelled" and run.alive  # the turn's status, between turns
    eventually(lambda: run.done, timeout=15, what="the idle process to end")
    assert (run.status, run.error) == ("completed", None) and run.exit_code in (0, 1)
    assert run.claude is not None and run.claude.interrupted
    record = run.transcript()
    assert record.split("\n")[2].startswith("**completed**") and "**Interrupted**" in record
    (turn,) = [e.params for e in run.events if e.method == "conversation.turn" and e.params["status"] != "running"]
    assert turn["status"] == "cancelled"


def test_cancel_interrupts_the_turn_first(tmp_path: Path) -> None:
    """cancel() during a turn: the turn ends with its result, then the process is cancelled."""
    run = start("write a 5000 word story at 200 words per second", tmp_path)
    eventually(lambda: len(run.text.split()) >= 20, timeout=30, what="the story to stream")
    run.cancel()
    eventually(lambda: run.done, timeout=15, what="the cancelled run to end")
    assert run.status == "cancelled"
    assert run.result is not None and run.result["subtype"] == "error_during_execution"
    methods = [e.method for e in run.events]
    turn_end = max(i for i, e in enumerate(run.events) if e.method == "conversation.turn"
                   and e.params.get("status") == "cancelled")
    assert turn_end < methods.index("process.cancelled")


def test_a_cancelled_command_and_a_cancelled_claude_run_read_the_same(tmp_path: Path) -> None:
    """A cancelled `sleep 30` (exit code -15) and a cancelled Claude run (143: the CLI exits
    128 + 15) both read "killed by SIGTERM" in their records (they read "exit code -15" and
    "exit code 143"); run.exit_code keeps each number."""
    command = ccx.run("sleep 30", command=True, display=False, settings=settings(), cwd=str(tmp_path))
    eventually(lambda: command.state.pid is not None, timeout=20, what="sleep to start")
    claude = start("write a 5000 word story at 200 words per second", tmp_path)
    eventually(lambda: len(claude.text.split()) >= 5, timeout=30, what="the story to stream")
    for run in (command, claude):
        run.cancel()
        eventually(lambda run=run: run.done, timeout=15, what="the cancelled run to end")  # type: ignore[misc]
    assert (command.exit_code, claude.exit_code) == (-15, 143)
    for run in (command, claude):
        record = Transcript(run)
        assert record.text().splitlines()[1].startswith("cancelled · killed by SIGTERM · took "), record.text()
        assert record.markdown().splitlines()[2].startswith("**cancelled** · killed by SIGTERM · took ")
        assert '<span class="ccx-exit">killed by SIGTERM</span>' in record.html()
        assert "exit code" not in record.text().splitlines()[1]


def test_a_cancel_after_an_interrupted_turn_reads_as_your_cancel(tmp_path: Path) -> None:
    """A turn interrupted cleanly, then the conversation cancelled: its end read "killed by
    SIGTERM · took 713 ms · cancelled by the client", the server's words for any client; a
    cancel asked from this kernel now reads "cancelled by you" in run.error and every record."""
    run = start("write a 5000 word story at 200 words per second", tmp_path)
    eventually(lambda: len(run.text.split()) >= 20, timeout=30, what="the story to stream")
    turn_over(run.interrupt())
    run.cancel()
    run.wait(scaled(20))
    assert (run.status, run.error) == ("cancelled", "cancelled by you")
    record = Transcript(run)
    assert record.text().splitlines()[1].endswith(" · cancelled by you"), record.text()
    assert record.markdown().splitlines()[2].endswith(" · cancelled by you")
    assert ">cancelled by you</span></div>" in record.html()
    assert not any("by the client" in form for form in (record.text(), record.markdown(), record.html()))


def test_after_cancel_wait_waits_for_the_process_and_send_is_refused(tmp_path: Path) -> None:
    """cancel() then wait(): wait returns once the process is gone (it returned at the turn's
    end, the process still alive); a send() after cancel() is a RuntimeError, never lost."""
    run = start("write a 5000 word story at 200 words per second", tmp_path)
    eventually(lambda: len(run.text.split()) >= 20, timeout=30, what="the story to stream")
    run.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        run.send("what is 2+2")
    run.wait(scaled(20))
    assert run.done and not run.alive and run.exit_code is not None and run.status == "cancelled"


def test_cancel_between_turns_makes_wait_wait_for_the_end(tmp_path: Path) -> None:
    """A live conversation between turns, cancelled: wait() returns with the process gone."""
    run = start("echo: first", tmp_path)
    turn_over(run)
    assert run.alive
    run.cancel()
    run.wait(scaled(20))
    assert run.done and not run.alive and run.exit_code is not None


# Policies and who answers


def test_a_policy_callable_answers_and_is_recorded(tmp_path: Path) -> None:
    """on_permission: the callable sees the request; "allow" runs the command, decided by the policy."""
    seen: list[PermissionRequest] = []

    def policy(request: PermissionRequest) -> str:
        seen.append(request)
        return "allow"

    run = start("bash: touch by-policy.txt", tmp_path, on_permission=policy)
    turn_over(run)
    assert (tmp_path / "by-policy.txt").exists()
    assert [r.tool for r in seen] == ["Bash"]
    assert [(r.status, r.decided_by) for r in run.permission_requests] == [("allowed", "policy")]
    # Announced as the policy's: text mode prints no "[needs you]" for it.
    assert [params.get("policy") for params in pending_questions(run)] == [True]
    ended(run)


def test_approve_none_denies_every_call(tmp_path: Path) -> None:
    """--approve none: the call is denied with the policy's message; nothing is written."""
    run = start("write: refused.txt", tmp_path, approve="none")
    turn_over(run)
    assert not (tmp_path / "refused.txt").exists()
    assert [(r.tool, r.status, r.decided_by) for r in run.permission_requests] == [("Write", "denied", "policy")]
    assert "Denied by the notebook's permission policy." in run.answer
    ended(run)


def test_a_policy_returning_none_asks_a_person(tmp_path: Path) -> None:
    """A policy that returns None leaves the question to a person (here: code)."""
    run = start("write: asked.txt", tmp_path, on_permission=lambda request: None)
    asked = question(run)
    assert asked.tool == "Write" and asked.input["content"]
    # The policy's first, then (it returned None) a question for people.
    eventually(lambda: len(pending_questions(run)) == 2, timeout=10, what="the question handed to people")
    assert [params.get("policy") for params in pending_questions(run)] == [True, None]
    run.approve(asked)
    turn_over(run)
    assert (tmp_path / "asked.txt").read_text() == "Hello from the cc_executor_nb demo.\n"
    ended(run)


def test_a_failing_policy_is_one_line_and_asks_a_person(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A policy that raises is said in one line (the error and where it was raised), not a
    traceback, and its question goes to people."""
    def strict_policy(request: PermissionRequest) -> str:
        return {"Read": "allow"}[request.tool]

    with caplog.at_level(logging.WARNING, logger="cc_executor_nb"):
        run = start("write: failed-policy.txt", tmp_path, on_permission=strict_policy)
        asked = question(run)
        eventually(lambda: len(pending_questions(run)) == 2, timeout=10, what="the question handed to people")
    failed = [r for r in caplog.records if "policy failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None
    assert failed[0].getMessage() == (
        "! the permission policy failed on Write: KeyError: 'Write' (test_conversation.py:"
        f"{strict_policy.__code__.co_firstlineno + 1} in strict_policy); asking a person"
    )
    run.deny(asked)
    turn_over(run)
    ended(run)


def test_an_edit_question_carries_the_change(tmp_path: Path) -> None:
    """Edit asks with the old and new text (the card's diff); allowed, the file changes."""
    (tmp_path / "notes.txt").write_text("hello world\n")
    run = start("edit: notes.txt: hello => goodbye", tmp_path)
    asked = question(run)
    assert (asked.tool, asked.input["old_string"], asked.input["new_string"]) == ("Edit", "hello", "goodbye")
    run.approve()
    turn_over(run)
    assert (tmp_path / "notes.txt").read_text() == "goodbye world\n"
    ended(run)


def test_waiting_where_nobody_can_answer_denies_at_once(tmp_path: Path) -> None:
    """wait() with no terminal and no kernel: the question is denied at once, never a hang."""
    run = start("bash: touch never.txt", tmp_path)
    question(run)
    started = time.monotonic()
    turn_over(run)
    assert time.monotonic() - started < scaled(10)
    (decided,) = run.permission_requests
    assert (decided.status, decided.decided_by, decided.message) == ("denied", "auto", NOBODY_MESSAGE)
    assert not (tmp_path / "never.txt").exists()
    ended(run)


def test_awaiting_where_nobody_can_answer_denies_at_once(tmp_path: Path) -> None:
    """await run with no terminal and no kernel: the question is denied at once, as wait()
    does (the await hung: nobody was asked, and the caller had no run to answer with)."""
    run = start("bash: touch never.txt", tmp_path)
    question(run)

    async def awaiting() -> Run:
        return await run

    awaited = asyncio.run(asyncio.wait_for(awaiting(), scaled(10)))
    assert awaited is run
    (decided,) = run.permission_requests
    assert (decided.status, decided.decided_by, decided.message) == ("denied", "auto", NOBODY_MESSAGE)
    assert not (tmp_path / "never.txt").exists()
    ended(run)


def test_an_interrupted_question_is_withdrawn_not_denied_for_nobody(tmp_path: Path) -> None:
    """interrupt() then wait() with nobody to ask: the question ends cancelled by the CLI (it was
    denied by "auto" for nobody before the CLI withdrew it), and wait() returns with the turn."""
    run = start("bash: touch interrupted.txt", tmp_path)
    question(run)
    run.interrupt()
    turn_over(run)
    (withdrawn,) = run.permission_requests
    assert (withdrawn.status, withdrawn.decided_by) == ("cancelled", "cli")
    assert not (tmp_path / "interrupted.txt").exists()
    ended(run)


def test_an_async_policy_is_awaited(tmp_path: Path) -> None:
    """An ``async def`` policy's verdict counts (its coroutine was never awaited: a person was asked)."""

    async def policy(request: PermissionRequest) -> str:
        return "allow"

    run = start("bash: touch by-async-policy.txt", tmp_path, on_permission=policy)
    turn_over(run)
    assert [(r.status, r.decided_by) for r in run.permission_requests] == [("allowed", "policy")]
    assert (tmp_path / "by-async-policy.txt").exists()
    ended(run)


@pytest.mark.parametrize("verdict", [1, 1.0, 0])
def test_a_policy_answering_a_number_asks_a_person(tmp_path: Path, verdict: float) -> None:
    """Only "allow", "always", "deny" (and True/False) are answers: 1 and 0 compared equal to True
    and False, and 1 allowed the call."""
    run = start("bash: touch numbered.txt", tmp_path, on_permission=lambda request: verdict)
    asked = question(run)
    eventually(lambda: len(pending_questions(run)) == 2, timeout=10, what="the question handed to people")
    assert run.permission_requests[0].status == "pending"
    run.deny(asked)
    turn_over(run)
    assert [(r.status, r.decided_by) for r in run.permission_requests] == [("denied", "code")]
    ended(run)


def test_a_policy_answering_an_unknown_word_says_so_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A policy's answer that is not one (``"yes"``) is warned about as the failing policy is: the
    tool, and that a person is asked (the line ended ": asking" and named no tool)."""
    with caplog.at_level(logging.WARNING, logger="cc_executor_nb"):
        run = start("bash: touch worded.txt", tmp_path, on_permission=lambda request: "yes")
        asked = question(run)
        eventually(lambda: len(pending_questions(run)) == 2, timeout=10, what="the question handed to people")
    said = [r.getMessage() for r in caplog.records if "policy answered" in r.getMessage()]
    assert said == ["! the permission policy answered 'yes' on Bash (not allow, always, deny or None); asking a person"]
    run.deny(asked)
    turn_over(run)
    ended(run)


def test_a_cancelled_turn_offers_no_follow_up(tmp_path: Path) -> None:
    """cancel() during a turn: its turn event is the last one (text mode said "run.send('...')
    follows up" although send() is refused after a cancel)."""
    run = start("write a 5000 word story at 200 words per second", tmp_path)
    eventually(lambda: len(run.text.split()) >= 20, timeout=30, what="the story to stream")
    run.cancel()
    run.wait(scaled(20))
    (turn,) = [e.params for e in run.events if e.method == "conversation.turn" and e.params["status"] != "running"]
    assert turn["status"] == "cancelled" and turn["last"] is True


def test_answering_twice_is_refused(tmp_path: Path) -> None:
    """A decided question cannot be decided again; with nothing pending approve() says so."""
    run = start("bash: touch answered.txt", tmp_path)
    asked = question(run)
    run.approve(asked)
    with pytest.raises(ValueError, match="already allowed"):
        run.deny(asked)
    turn_over(run)
    with pytest.raises(ValueError, match="no permission question is pending"):
        run.approve()
    ended(run)


async def _drop(proxy: FaultyProxy) -> None:
    proxy.drop()


def test_a_dropped_connection_resumes_and_the_question_stays_answerable(tmp_path: Path, remote: ServerProcess) -> None:
    """The connection drops while a question waits: the client resumes, heartbeats go on, the answer works."""
    helper = KernelLoop(thread_name="proxy-loop").start()
    proxy = FaultyProxy(int(remote.url.rsplit(":", 1)[1].split("/")[0]))
    try:
        helper.call(proxy.start())
        run = start("bash: echo again > resumed.txt && cat resumed.txt", tmp_path,
                    server=proxy.url(), token=REMOTE_TOKEN)
        question(run)
        helper.call(_drop(proxy))
        eventually(lambda: any(e.method == "client.reconnected" for e in run.events), timeout=20,
                   what="the client to resume")
        beats = run.state.heartbeat_count
        eventually(lambda: run.state.heartbeat_count > beats, timeout=10, what="a heartbeat after the resume")
        assert run.pending is not None and run.state.needs_you
        run.approve()
        turn_over(run)
        assert run.answer == "I ran `echo again > resumed.txt && cat resumed.txt`. Output: again"
        ended(run)
    finally:  # failed or not, the proxy's connections are closed before its loop is
        helper.call(proxy.close(), scaled(30))
        helper.stop()


def test_a_cancel_of_the_conversations_own_timer_lost_with_its_connection_is_sent_once_it_is_back(
    tmp_path: Path, remote: ServerProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The handshake's timeout cancels a CLI that never answers in host mode (so do an interrupt
    with no result and an end the CLI does not exit after). That cancel, lost with a connection
    found dead before the server answered (a frozen server), was dropped: after the reconnect the
    CLI lived on and the run stayed running with nothing left to end it. It is sent again once
    the connection is back, and the run goes one-shot as after any handshake timeout."""
    from cc_executor_nb.kernel import conversation

    monkeypatch.setattr(conversation, "HANDSHAKE_TIMEOUT", scaled(4.0))
    no_host_mode = 'for a in "$@"; do if [ "$a" = "--input-format" ]; then exec sleep 300; fi; done\n'
    with _run_through_proxy(tmp_path, remote, no_host_mode + f'exec {CLAUDE} "$@"\n',
                            "echo: after a frozen start") as (run, proxy, helper):
        helper.call(on_loop(proxy.freeze))
        eventually(lambda: run.state.status == "reconnecting" and "did not answer in host mode" in caplog.text,
                   timeout=30, what="the handshake's timeout, and the connection found lost")
        helper.call(on_loop(proxy.cut_and_thaw))
        run.wait(scaled(40))
        assert (run.status, run.answer) == ("completed", "after a frozen start")


@contextlib.contextmanager
def _run_through_proxy(
    tmp_path: Path, remote: ServerProcess, script: str, prompt: str
) -> Iterator[tuple[Run, FaultyProxy, KernelLoop]]:
    """A started run of ``prompt`` whose CLI is ``script`` (a shell script as ``claude``), with
    heartbeats every 0.5 s, through a proxy the test may freeze or cut (on ``helper``'s loop)."""
    fake = tmp_path / "claude"
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    helper = KernelLoop(thread_name="proxy-loop").start()
    proxy = FaultyProxy(int(remote.url.rsplit(":", 1)[1].split("/")[0]))
    try:
        helper.call(proxy.start())
        run = ccx.run(prompt, executable=str(fake), demo=True, display=False, cwd=str(tmp_path),
                      settings=settings(), heartbeat=0.5, server=proxy.url(), token=REMOTE_TOKEN)
        try:
            eventually(lambda: run.state.pgid is not None, what="the CLI to start")
            yield run, proxy, helper
        finally:
            if not run.done:
                run.cancel(timeout=None)
    finally:  # failed or not, the proxy's connections are closed before its loop is
        helper.call(proxy.close(), scaled(30))
        helper.stop()


def test_a_conversations_cancel_in_flight_when_its_connection_is_lost_reaches_the_server_once_it_is_back(
    tmp_path: Path, remote: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.cancel() of a conversation whose connection is found dead before the server answers
    (a frozen server): the run ends cancelled here, and the cancel is sent again once the
    connection is back, so the CLI ends there too (Conversation.cancel lets ConnectionLost
    through to the run)."""
    from cc_executor_nb.kernel import conversation

    monkeypatch.setattr(conversation, "HANDSHAKE_TIMEOUT", 300.0)
    with _run_through_proxy(tmp_path, remote, "exec sleep 300\n", "echo: never answered") as (run, proxy, helper):
        pgid = run.state.pgid
        assert pgid is not None
        helper.call(on_loop(proxy.freeze))
        run.cancel(timeout=scaled(10))  # returns once three heartbeats were missed
        assert (run.status, run.error) == ("cancelled", UNREACHABLE_CANCEL)
        helper.call(on_loop(proxy.cut_and_thaw))
        eventually(lambda: not group_alive(pgid), timeout=30, what="the CLI to be cancelled on the server")


def test_a_forced_widget_conversation_outside_a_kernel_prints_each_turns_record_and_its_end_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside a kernel (here a plain script) a forced widget conversation printed nothing at a turn's end:
    its answer came only with the final record, at run.end() or the idle end (10 min later). Each turn's end
    now prints the record so far, as a kernel's cell then shows it; the end, with no turn since, prints only
    the record's head (its status), not the same turns again."""
    config = settings()
    config.output_mode = "widget"
    run = ccx.run("echo: first answer", executable=str(CLAUDE), demo=True, cwd=str(tmp_path), settings=config)
    printed: list[str] = []

    def seen(text: str) -> str | None:
        printed.append(capsys.readouterr().out)
        return text if text in "".join(printed) else None

    turn_over(run)
    eventually(lambda: seen("[result] done"), what="the first turn's record")
    assert "first answer" in "".join(printed)
    run.send("echo: second answer")
    turn_over(run)
    eventually(lambda: seen("second answer"), what="the second turn's record")
    ended(run)
    eventually(lambda: seen("completed · exit code 0"), what="the end's record")
    out = "".join(printed)
    assert out.count("\nsecond answer\n") == 1 and out.count("[follow-up 1]") == 1
    end = out[out.index("completed · exit code 0"):]
    assert "first answer" not in end and "[result]" not in end


# One-shot use of an interactive run


def test_wait_true_is_the_one_shot_use_and_still_asks(tmp_path: Path) -> None:
    """wait=True: the question is answered (by the policy here); it returns with the turn, the process stays."""
    run = start("bash: touch waited.txt", tmp_path, wait=True, on_permission=lambda request: "allow")
    assert (run.status, run.exit_code, run.alive, run.done) == ("completed", None, True, False)
    assert run.interactive and run.one_shot and (tmp_path / "waited.txt").exists()
    assert [(q.status, q.decided_by) for q in run.permission_requests] == [("allowed", "policy")]
    ends = [e for e in run.events if e.method == "conversation.turn" and e.params["status"] != "running"]
    assert [e.params["last"] for e in ends] == [False]
    run.send("echo: and a follow-up")
    assert turn_over(run).answer == "and a follow-up" and run.alive
    assert ended(run).exit_code == 0 and run.status == "completed"


def test_arun_is_the_one_shot_use_too(tmp_path: Path) -> None:
    """await arun(...): the answer once the turn ended; the process lives until end() (then exit code 0)."""
    import asyncio

    run = asyncio.run(ccx.arun("echo: awaited", executable=str(CLAUDE), demo=True, display=False,
                               cwd=str(tmp_path), settings=settings()))
    assert (run.status, run.exit_code, run.answer, run.alive) == ("completed", None, "awaited", True)
    assert ended(run).exit_code == 0


def test_a_one_shot_run_still_ends_after_the_idle_timeout(tmp_path: Path) -> None:
    """wait=True leaves the process for a follow-up; left idle, it ends by itself with nothing lost."""
    run = start("echo: then idle", tmp_path, wait=True, idle_timeout=1.0)
    assert run.alive and run.answer == "then idle"
    eventually(lambda: run.done, timeout=30, what="the idle end")
    assert (run.status, run.exit_code, run.answer) == ("completed", 0, "then idle")


# One-shot mode


def test_no_interactive_is_the_one_shot_mode(tmp_path: Path) -> None:
    """interactive=False: the prompt on the CLI's stdin (not its command line), the process ends with the answer."""
    run = start("echo: one shot", tmp_path, interactive=False, wait=True)
    assert run.done and (run.status, run.exit_code, run.answer) == ("completed", 0, "one shot")
    assert run.state.argv is not None and "-p" in run.state.argv
    assert "--" not in run.state.argv and "echo: one shot" not in run.state.argv
    with pytest.raises(RuntimeError, match="no conversation"):
        run.send("more")


LONG_PROMPT = "echo: " + "long " * 40_000  # 200,006 bytes: more than one argument may hold


def test_a_one_shot_run_sends_a_prompt_too_long_for_its_command_line_on_stdin(tmp_path: Path) -> None:
    """interactive=False with 200 KB (more than one argument may hold): the prompt goes to the CLI's
    stdin, as the terminal client sends it (it was refused up front), and comes back whole."""
    run = start(LONG_PROMPT, tmp_path, interactive=False, wait=True)
    assert (run.status, run.answer) == ("completed", LONG_PROMPT.removeprefix("echo: ").rstrip())
    assert run.conversation is None and "--" not in (run.state.argv or [])


def test_a_one_shot_prompt_bigger_than_the_servers_message_limit_comes_back_whole(tmp_path: Path) -> None:
    """interactive=False, 230 KB, a server started with --max-message-size 200000: the execute that would
    carry the prompt does not fit, so it goes in input requests that do (the execute was refused, "the
    server refused a message too big for it (...)", and the run failed)."""
    server = start_server("--token", REMOTE_TOKEN, "--max-message-size", "200000")
    try:
        words = "y" * 230_000
        run = start(f"echo: {words}", tmp_path, interactive=False, wait=True, server=server.url, token=REMOTE_TOKEN)
        assert (run.status, run.answer) == ("completed", words), run.error
    finally:
        server.finish()


def test_a_one_shot_cli_that_exits_before_its_long_prompt_is_written_fails_with_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long one-shot prompt goes to stdin once the CLI started; a CLI that exited first (a bad
    option, no login) fails with its exit code and stderr, not as an 'error' of the input's
    refusal ("the process's input is closed", exit code None)."""
    executable = cli_that_exits_before_reading(tmp_path, monkeypatch)
    run = ccx.run(LONG_PROMPT, executable=str(executable), interactive=False, display=False,
                  cwd=str(tmp_path), settings=settings(), wait=True)
    assert (run.status, run.exit_code) == ("failed", 2), run.error
    assert "unknown option" in run.stderr


def test_auto_resume_sends_a_prompt_too_long_for_a_command_line_on_stdin(tmp_path: Path) -> None:
    """--auto-resume with 200 KB (more than one argument may hold): the supervisor's first CLI reads it
    on stdin and it comes back whole (it was refused up front: "... cannot send it on stdin")."""
    run = start(LONG_PROMPT, tmp_path, auto_resume=True, wait=True)
    assert (run.status, run.answer) == ("completed", LONG_PROMPT.removeprefix("echo: ").rstrip()), run.error


def test_a_one_shot_prompt_does_not_wait_on_a_late_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server writes a one-shot prompt at the start (execute's input): input requests that would come
    4 s late (a cell holding the GIL, a slow link) change nothing, where the CLI, which waits 3 s for its
    stdin, failed ("no stdin data received in 3s ... Input must be provided ...")."""
    send = Client.input

    async def late(self: Client, data: str, **more: Any) -> dict[str, Any]:
        await asyncio.sleep(4)  # the lateness under test
        return await send(self, data, **more)

    monkeypatch.setattr(Client, "input", late)
    run = start("echo: on time", tmp_path, interactive=False, wait=True)
    assert (run.status, run.answer) == ("completed", "on time"), (run.error, run.stderr)


# A job server of an earlier version: its execute takes no input (and ignores one given).
OLD_SERVER = [sys.executable, "-c", (
    "import sys\nfrom cc_executor_nb import methods, protocol\nfrom cc_executor_nb.server import handler\n"
    "handler.CAPABILITIES.remove(methods.EXECUTE_INPUT)\nprotocol._execute_input = lambda params: None\n"
    "from cc_executor_nb.server.main import main\nsys.exit(main())"
)]


def test_a_durable_one_shot_prompt_goes_to_a_server_without_execute_input_in_input_requests(tmp_path: Path) -> None:
    """A job server whose capabilities lack execute.input (an earlier version, still running) would ignore
    execute's input and its job would wait on its stdin for ever: the kernel writes the prompt there itself."""
    server = start_server("--token", REMOTE_TOKEN, "--jobs-dir", str(tmp_path / "jobs"), launcher=OLD_SERVER)
    try:
        run = start("echo: to an old job server", tmp_path, interactive=False, durable=True,
                    server=server.url, token=REMOTE_TOKEN)
        run.wait(scaled(60))
        assert (run.status, run.answer) == ("completed", "to an old job server"), run.error
    finally:
        server.finish()


PRIVATE = "private-7f3a9c"
SLOW_PRIVATE_PROMPT = f"story 40 words at 8 words per second, {PRIVATE}"
"""About 5 s of answer: long enough to read the command lines of the live run's processes."""


@pytest.mark.parametrize("mode", [{"interactive": False}, {"auto_resume": True}])
def test_a_one_shot_prompt_is_in_no_command_line_of_the_run(tmp_path: Path, mode: dict[str, bool]) -> None:
    """A one-shot run (interactive=False, auto_resume) sends its prompt on the CLI's stdin: while it
    runs, no process of its tree (supervisor, CLI) shows it to ``ps`` (the prompt was the CLI's last
    argument, readable by every local user in /proc/PID/cmdline)."""
    run = start(SLOW_PRIVATE_PROMPT, tmp_path, **mode)
    try:
        assert_no_command_line_shows(lambda: run.state.pid, PRIVATE, timeout=30)
    finally:
        run.wait(scaled(60))
    assert run.status == "completed" and len(run.answer.split()) == 40, run.error


def test_host_mode_takes_a_prompt_too_long_for_a_command_line(tmp_path: Path) -> None:
    """The default sends the prompt on stdin: 200 KB comes back whole, and the one-shot fall-back kept
    sends it on stdin too (none was kept: its command line could not hold the prompt)."""
    run = start(LONG_PROMPT, tmp_path, wait=True)
    try:
        assert run.conversation is not None and run.conversation.fallback is not None
        assert run.conversation.fallback.input == LONG_PROMPT and "--" not in (run.conversation.fallback.argv or [])
        assert (run.status, run.answer) == ("completed", LONG_PROMPT.removeprefix("echo: ").rstrip())
    finally:
        run.end().wait(scaled(30))


def cli_without_host_mode(tmp_path: Path) -> Path:
    """A claude that rejects the host-mode flags (as one too old for them)."""
    fake = tmp_path / "claude"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do if [ "$a" = "--input-format" ]; then\n'
        "  echo \"error: unknown option '--input-format'\" >&2; exit 1; fi; done\n"
        f'exec {CLAUDE} "$@"\n'
    )
    fake.chmod(0o755)
    return fake


def test_a_cli_without_host_mode_falls_back_to_one_shot(tmp_path: Path) -> None:
    """A claude that rejects the host-mode flags: one-shot run instead, with a clear note."""
    fake = cli_without_host_mode(tmp_path)
    run = ccx.run("echo: from an old cli", executable=str(fake), demo=True, display=False, cwd=str(tmp_path),
                  settings=settings(), wait=True)
    assert run.done and (run.status, run.exit_code, run.answer) == ("completed", 0, "from an old cli")
    assert not run.interactive and run.conversation is not None
    (notice,) = run.conversation.view().notices
    assert "did not start in host mode" in notice and "unknown option '--input-format'" in notice
    assert "--no-interactive" in notice
    assert "unknown option" not in run.stderr  # the failed attempt's output is not the run's
    assert sum(e.method == "process.started" for e in run.events) == 2
    with pytest.raises(RuntimeError, match="one-shot"):
        run.send("more")


def test_an_interrupt_of_a_run_fallen_back_to_one_shot_is_refused_as_send_is(tmp_path: Path) -> None:
    """A run that fell back to one-shot has no control channel: interrupt() says so and what stops it
    (it returned, did nothing and said nothing)."""
    fake = cli_without_host_mode(tmp_path)
    run = ccx.run("a 2000 word story at 100 words per second", executable=str(fake), demo=True, display=False,
                  cwd=str(tmp_path), settings=settings())
    try:
        eventually(lambda: run.text, timeout=30, what="the one-shot story to start")
        with pytest.raises(RuntimeError, match=r"one-shot \(no host mode\): it cannot be interrupted; cancel\(\)"):
            run.interrupt()
    finally:
        run.cancel().wait(scaled(30))


def test_an_interrupt_while_cancelling_says_so(tmp_path: Path) -> None:
    """interrupt() after cancel() while the process is still exiting says there is nothing to interrupt
    (it said nothing)."""
    run = start("echo: to cancel", tmp_path)
    turn_over(run)
    run.cancel()
    run.interrupt()
    run.wait(scaled(30))
    assert "Nothing to interrupt: the run is being cancelled." in run.conversation.view().notices


def test_a_follow_up_that_is_no_text_is_refused_as_such(tmp_path: Path) -> None:
    """send(5) says a follow-up must be a string (it said "the follow-up is empty"); the conversation goes on."""
    run = start("what is 2+2", tmp_path, wait=True)
    try:
        with pytest.raises(ValueError, match="a follow-up must be a string, not 5"):
            run.send(5)  # type: ignore[arg-type]
        assert run.send("what is 3+3").wait(scaled(30)).answer.endswith("6")
    finally:
        run.end().wait(scaled(30))


@pytest.mark.parametrize("interactive", [True, False])
def test_a_prompt_that_is_not_utf8_is_refused_before_anything_starts(tmp_path: Path, interactive: bool) -> None:
    """run() with a lone surrogate in the prompt raises a ValueError naming where it is, in both modes (an
    interactive run sent U+FFFD in its place; a one-shot one ended 'error' as its execute failed)."""
    with pytest.raises(ValueError, match=r"^the prompt is not valid UTF-8 \(U\+D800, a lone surrogate at index 7\)"):
        start("echo: x\ud800y", tmp_path, interactive=interactive)


def test_a_command_or_option_that_is_not_utf8_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """A byte that was not UTF-8 in a command, its cwd or a Claude option is a ValueError naming it, not a run
    that ends 'error'."""
    with pytest.raises(ValueError, match=r"^the command's argument 1 is not valid UTF-8 \(byte 0xff at index 1\)"):
        ccx.run(["echo", "a\udcffb"], command=True, display=False, settings=settings())
    with pytest.raises(ValueError, match=r"^cwd is not valid UTF-8 \(byte 0xff at index 4\)"):
        ccx.run("echo hi", command=True, cwd="/tmp\udcff", display=False, settings=settings())
    with pytest.raises(ValueError, match=r"^argument \d+ of the command the run starts is not valid UTF-8"):
        start("echo: hi", tmp_path, append_system_prompt="be \udcff brief")


def test_a_follow_up_that_is_not_utf8_is_refused_and_the_conversation_goes_on(tmp_path: Path) -> None:
    """send() with a lone surrogate raises a ValueError naming where it is (it sent U+FFFD in its place);
    the conversation takes the next follow-up."""
    run = start("what is 2+2", tmp_path, wait=True)
    try:
        refused = r"^the follow-up is not valid UTF-8 \(U\+D800, a lone surrogate at index 2\)"
        with pytest.raises(ValueError, match=refused):
            run.send("a \ud800 b")
        assert run.send("what is 3+3").wait(scaled(30)).answer.endswith("6")
    finally:
        run.end().wait(scaled(30))


def test_an_option_both_modes_pass_fails_the_run_without_a_one_shot_retry(tmp_path: Path) -> None:
    """The real CLI refusing a bad --permission-mode value is no missing host mode: one attempt, its error shown."""
    run = ccx.run("echo: never", executable=str(CLAUDE), demo=True, display=False, cwd=str(tmp_path),
                  settings=settings(), permission_mode="yolo", wait=True)
    assert run.done and (run.status, run.exit_code) == ("failed", 1)
    assert "option '--permission-mode <mode>' argument 'yolo' is invalid" in run.stderr
    assert sum(e.method == "process.started" for e in run.events) == 1
    assert run.conversation is not None and run.conversation.view().notices == ()


def test_a_cli_that_never_answers_falls_back_after_the_handshake_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No stream-json answer in time: the attempt is cancelled and the run goes one-shot, with a note."""
    from cc_executor_nb.kernel import conversation

    monkeypatch.setattr(conversation, "HANDSHAKE_TIMEOUT", 2.0)
    fake = tmp_path / "claude"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do if [ "$a" = "--input-format" ]; then exec sleep 60; fi; done\n'
        f'exec {CLAUDE} "$@"\n'
    )
    fake.chmod(0o755)
    run = ccx.run("echo: after a silent start", executable=str(fake), demo=True, display=False,
                  cwd=str(tmp_path), settings=settings(), wait=True)
    assert (run.status, run.exit_code, run.answer) == ("completed", 0, "after a silent start")
    assert run.conversation is not None and not run.interactive
    (notice,) = run.conversation.view().notices
    assert "no stream-json answer within 2 s" in notice


TERMINAL_SCRIPT = """
import cc_executor_nb as ccx
from cc_executor_nb.kernel.config import CCExec
settings = CCExec(history_path="none")
run = ccx.run("bash: echo typed > typed.txt && cat typed.txt", executable={claude!r}, demo=True,
              settings=settings, wait=True, inactivity={inactivity!r})
print("STATUS", run.status, "|", run.answer, "|", run.permission_requests[0].decided_by, flush=True)
run.end().wait()
"""


class Terminal:
    """A Python script on a pseudo-terminal: what it showed so far, and what a person types."""

    def __init__(self, script: str, cwd: Path) -> None:
        import pty
        import subprocess
        import sys

        self.leader, follower = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-c", script], stdin=follower, stdout=follower,
                                     stderr=follower, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        os.close(follower)
        self.seen = b""

    def read(self, timeout: float) -> bool:
        """Add what the script writes within ``timeout`` s; False at the terminal's end."""
        import select

        if not select.select([self.leader], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(self.leader, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            return False
        self.seen += chunk
        return bool(chunk)

    def read_until(self, marker: bytes, timeout: float) -> str:
        deadline = time.monotonic() + scaled(timeout)
        while marker not in self.seen and time.monotonic() < deadline and self.read(0.1):
            pass
        assert marker in self.seen, self.seen.decode(errors="replace")
        return self.seen.decode(errors="replace")

    def read_to_end(self) -> str:
        while self.read(0.2) and self.proc.poll() is None:
            pass
        while self.read(0.2):  # the rest of the output, up to the end
            pass
        return self.seen.decode(errors="replace")

    def type(self, text: str) -> None:
        os.write(self.leader, text.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.leader)


def test_a_script_on_a_terminal_is_asked_there(tmp_path: Path) -> None:
    """Outside a kernel, wait() on a terminal asks the question there; "y" runs the command."""
    terminal = Terminal(TERMINAL_SCRIPT.format(claude=str(CLAUDE), inactivity=None), tmp_path)
    try:
        text = terminal.read_until(b"y = allow", 60)
        assert "Claude asks to use Bash: echo typed > typed.txt && cat typed.txt" in text
        terminal.type("y\n")
        terminal.read_until(b"STATUS", 60)
        assert terminal.proc.wait(scaled(30)) == 0
        shown = terminal.read_to_end()
        assert "STATUS completed | I ran `echo typed > typed.txt && cat typed.txt`. Output: typed | stdin" in shown
        assert (tmp_path / "typed.txt").read_text() == "typed\n"
    finally:
        terminal.close()


AWAITING_SCRIPT = """
import asyncio
import contextlib
import cc_executor_nb as ccx
from cc_executor_nb.kernel.config import CCExec
settings = CCExec(history_path="none")
async def main():
    ticks = 0
    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1
    ticker = asyncio.ensure_future(tick())
    run = await ccx.arun("bash: echo typed > typed.txt", executable={claude!r}, demo=True, settings=settings)
    before = ticks
    await asyncio.sleep(0.3)
    decided = run.permission_requests[0].decided_by
    print("STATUS", run.status, "|", decided, "| loop free", ticks > before, "|", flush=True)
    ticker.cancel()
    await run.end()
asyncio.run(main())
"""


def test_a_script_awaiting_on_a_terminal_is_asked_there(tmp_path: Path) -> None:
    """Outside a kernel, await arun(...) on a terminal asks the question there (it asked nobody and
    hung); "y" runs the command and the await returns with the run."""
    terminal = Terminal(AWAITING_SCRIPT.format(claude=str(CLAUDE)), tmp_path)
    try:
        text = terminal.read_until(b"y = allow", 60)
        assert "Claude asks to use Bash: echo typed > typed.txt" in text
        terminal.type("y\n")
        shown = terminal.read_until(b"loop free True |", 60)  # the whole line (it was read in pieces)
        assert "STATUS completed | stdin | loop free True |" in shown
        assert terminal.proc.wait(scaled(30)) == 0
        assert (tmp_path / "typed.txt").read_text() == "typed\n"
    finally:
        terminal.close()


WAITING_SCRIPT = """
import time
import traceback
import cc_executor_nb as ccx
from cc_executor_nb.kernel.config import CCExec
settings = CCExec(history_path="none")
run = ccx.run("bash: echo typed > typed.txt", executable={claude!r}, demo=True, settings=settings, quiet=True)
while not run.pending:
    time.sleep(0.05)
{then}
started = time.monotonic()
try:
    run.wait(timeout={timeout})
    print("RETURNED", flush=True)
except TimeoutError:
    print("TIMEOUT", flush=True)
print("WAITED %.1f" % (time.monotonic() - started), [(r.status, r.decided_by) for r in run.permission_requests],
      "END", flush=True)
run.cancel()
run.wait()
"""


def waited(text: str) -> float:
    return float(text.split("WAITED ", 1)[1].split(maxsplit=1)[0])


def test_a_terminal_question_withdrawn_by_an_interrupt_stops_being_asked(tmp_path: Path) -> None:
    """interrupt() then wait() on a terminal: wait returns with the turn, the question cancelled by
    the CLI; it asked the withdrawn question and waited until somebody typed an answer."""
    script = WAITING_SCRIPT.format(claude=str(CLAUDE), then="run.interrupt()", timeout=scaled(20))
    terminal = Terminal(script, tmp_path)
    try:
        text = terminal.read_until(b" END", 30)
        assert "RETURNED" in text, text  # before the timeout: nobody ever types here
        assert "[('cancelled', 'cli')]" in text
        assert terminal.proc.wait(scaled(30)) == 0
    finally:
        terminal.close()


def test_wait_keeps_its_timeout_while_asking_on_the_terminal(tmp_path: Path) -> None:
    """wait(timeout=3) with a question asked on the terminal and nobody typing: TimeoutError after
    about 3 s, the question still pending (the prompt blocked the timeout until an answer came)."""
    terminal = Terminal(WAITING_SCRIPT.format(claude=str(CLAUDE), then="pass", timeout=3), tmp_path)
    try:
        text = terminal.read_until(b" END", 30)
        assert "y = allow" in text and "TIMEOUT" in text
        assert 2.9 <= waited(text) < 3 + scaled(2), text
        assert "[('pending', None)]" in text
        assert terminal.proc.wait(scaled(30)) == 0
    finally:
        terminal.close()


def test_a_terminal_question_keeps_its_prompt_line_while_nobody_answers(tmp_path: Path) -> None:
    """No "[status] no output" note lands on the question's prompt while Claude waits for the answer."""
    terminal = Terminal(TERMINAL_SCRIPT.format(claude=str(CLAUDE), inactivity=0.5), tmp_path)
    try:
        terminal.read_until(b"tells Claude) > ", 60)
        asked_at = len(terminal.seen)
        deadline = time.monotonic() + 2.5  # five inactivity thresholds
        while time.monotonic() < deadline:
            terminal.read(0.1)
        assert terminal.seen[asked_at:] == b""
        terminal.type("y\n")
        terminal.read_until(b"STATUS", 60)
        assert terminal.proc.wait(scaled(30)) == 0
        assert "STATUS completed" in terminal.read_to_end()
    finally:
        terminal.close()


CANCELLED_AWAIT_SCRIPT = """
import asyncio
import contextlib
import time
import traceback
import cc_executor_nb as ccx
from cc_executor_nb.kernel.config import CCExec
settings = CCExec(history_path="none")
run = ccx.run("bash: echo typed > typed.txt", executable={claude!r}, demo=True, settings=settings, quiet=True)
def asking():
    return bool(run.conversation.view().asked_on_stdin)
async def awaiting():
    await run
async def until(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
async def main():
    task = asyncio.ensure_future(awaiting())
    await until(asking, {seconds!r})
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await until(lambda: not asking(), {seconds!r})
    print("ASKING", asking(), "| PENDING", run.pending is not None, "|", flush=True)
    run.approve()
asyncio.run(main())
run.wait()
print("STATUS", run.status, [(r.status, r.decided_by) for r in run.permission_requests], "END", flush=True)
run.end().wait()
"""


def test_a_cancelled_await_on_a_terminal_stops_asking(tmp_path: Path) -> None:
    """await run on a terminal, cancelled while it asks: the asking thread stops (it asked until
    the question was decided), the question stays open and code can still answer it."""
    terminal = Terminal(CANCELLED_AWAIT_SCRIPT.format(claude=str(CLAUDE), seconds=scaled(10)), tmp_path)
    try:
        text = terminal.read_until(b"PENDING", 60)
        assert "y = allow" in text
        assert "ASKING False | PENDING True |" in terminal.read_until(b"PENDING True |", 10)
        text = terminal.read_until(b" END", 60)
        assert "STATUS completed [('allowed', 'code')] END" in text, text
        assert terminal.proc.wait(scaled(30)) == 0
    finally:
        terminal.close()


def test_a_refused_call_is_raised_from_the_run_method_called(tmp_path: Path) -> None:
    """send(), approve() or deny() refused: the traceback's last frame is the method the user
    called, whose line is the last thing above the message (it ended on the raise in the private
    _converse, an internal frame the user cannot act on)."""
    run = ended(turn_over(start("echo: done", tmp_path)))
    for name, refused in (("send", lambda: run.send("too late")), ("approve", run.approve), ("deny", run.deny)):
        with pytest.raises((RuntimeError, ValueError)) as caught:
            refused()
        frames = traceback.extract_tb(caught.value.__traceback__)
        assert frames[-1].name == name, [frame.name for frame in frames]


def test_a_refused_follow_up_or_answer_shows_the_callers_frames_only(tmp_path: Path) -> None:
    """send() after the end, or approve() with no question: the traceback ends in the Run
    method called, with the reason; it went on through concurrent.futures and the
    background loop's frames (loop.py, the lambda), which say nothing to the user."""
    run = ended(turn_over(start("echo: done", tmp_path)))
    for refused in (lambda: run.send("too late"), run.approve):
        with pytest.raises((RuntimeError, ValueError)) as caught:
            refused()
        files = [os.path.basename(frame.filename) for frame in traceback.extract_tb(caught.value.__traceback__)]
        ours = list(itertools.dropwhile(lambda name: name == "test_conversation.py", files))
        assert ours and set(ours) == {"run.py"}, files
        assert caught.value.__suppress_context__ and caught.value.__cause__ is None
