"""Permission questions in a real kernel: answered through stdin while the kernel is busy, or
with the widget's buttons when it is not; never a deadlock, never a hang.

The real claude CLI runs against the demo API; the kernel is driven over ZMQ like a front
end (``allow_stdin`` as JupyterLab sets it, or off as nbconvert does).
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from .kernel_utils import KernelHarness, Received
from .util import alive, eventually, scaled

REPO_ROOT = Path(__file__).resolve().parents[1]
CLAUDE = REPO_ROOT / "node_modules" / ".bin" / "claude"
WIDGET = "application/vnd.jupyter.widget-view+json"

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.claude,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not CLAUDE.exists(), reason="node_modules/.bin/claude is absent: run `npm ci`"),
]

BUSY_UNTIL_THE_TURN_ENDS = (
    "import time\n"
    "while r.status in ('starting', 'running', 'thinking'):\n"
    "    time.sleep(0.1)\n"
    "print(r.status)"
)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[KernelHarness]:
    """A kernel of its own (cwd: a fresh folder) with the extension and the project's claude."""
    harness = KernelHarness.start(tmp_path)
    harness.ok("%load_ext cc_executor_nb")
    harness.ok(f"%config CCExec.claude_command = {str(CLAUDE)!r}\n%config CCExec.history_path = 'none'")
    yield harness
    harness.shutdown()


def test_wait_asks_on_the_cells_stdin_and_the_answer_completes_the_run(
    kernel: KernelHarness, tmp_path: Path
) -> None:
    """%ccexec --wait: the question comes as the cell's input_request; "y" runs the command."""
    msg_id, started = kernel.submit(
        '%ccexec --demo --wait -o r "bash: echo via stdin > asked.txt && cat asked.txt"', allow_stdin=True
    )
    request = kernel.input_request(timeout=scaled(60))
    assert request["parent_header"]["msg_id"] == msg_id
    prompt = request["content"]["prompt"]
    assert prompt.startswith("Claude asks to use Bash: echo via stdin > asked.txt && cat asked.txt")
    assert "y = allow" in prompt and "n = deny" in prompt
    kernel.answer_input("y")
    execution = kernel.finish(msg_id, started, timeout=scaled(60))
    assert execution.ok, execution.error
    assert (tmp_path / "asked.txt").read_text() == "via stdin\n"
    # --wait is the one-shot use: it returned with the turn; the process stays for a follow-up.
    assert kernel.value("(r.status, r.alive, r.exit_code, r.answer)") == (
        "completed", True, None, "I ran `echo via stdin > asked.txt && cat asked.txt`. Output: via stdin")
    assert kernel.value("[(q.status, q.decided_by) for q in r.permission_requests]") == [("allowed", "stdin")]


def test_an_unclear_answer_is_asked_again_and_a_reason_reaches_claude(kernel: KernelHarness, tmp_path: Path) -> None:
    """A typo gets the question again; "n: reason" denies and Claude quotes the reason."""
    msg_id, started = kernel.submit('%ccexec --demo --wait -o r "bash: touch nope.txt"', allow_stdin=True)
    kernel.input_request(timeout=scaled(60))
    kernel.answer_input("maybe")
    again = kernel.input_request(timeout=scaled(10))
    assert again["content"]["prompt"].startswith("Please answer")
    kernel.answer_input("n: not in this folder")
    assert kernel.finish(msg_id, started, timeout=scaled(60)).ok
    assert not (tmp_path / "nope.txt").exists()
    assert kernel.value("r.answer") == "The command was not run: not in this folder"


def test_a_question_while_another_cell_runs_is_asked_in_that_cell(kernel: KernelHarness, tmp_path: Path) -> None:
    """A cell that waits in a loop for the run (a deadlock with widgets alone) gets the question."""
    shown = kernel.submit('r = %ccexec --demo "bash: echo busy > busy.txt && cat busy.txt"', allow_stdin=True)
    assert kernel.finish(*shown).ok
    msg_id, started = kernel.submit(BUSY_UNTIL_THE_TURN_ENDS, allow_stdin=True)
    request = kernel.input_request(timeout=scaled(60))
    assert request["parent_header"]["msg_id"] == msg_id
    assert request["content"]["prompt"].startswith("Claude asks to use Bash: echo busy > busy.txt")
    kernel.answer_input("a")
    execution = kernel.finish(msg_id, started, timeout=scaled(60))
    assert execution.ok and execution.stream() == "completed\n"
    assert (tmp_path / "busy.txt").read_text() == "busy\n"
    # The process lives on for a follow-up; a front end with an input box keeps the widget,
    # and the one display update of the turn's end carries the record under it.
    assert kernel.value("r.alive") is True
    # The update is sent just after the status the cell waited for: read IOPub until it is in.
    [update] = kernel.until(
        lambda: [m for m in kernel.log if m.type == "update_display_data" and m.parent_id == shown[0]],
        what="the turn's display update",
    )
    assert WIDGET in update.content["data"] and "Output: busy" in update.content["data"]["text/markdown"]
    assert kernel.value("[(q.status, q.decided_by, q.always) for q in r.permission_requests]") == [
        ("allowed", "stdin", True)]


def test_without_stdin_a_busy_cell_denies_unless_it_answers(kernel: KernelHarness, tmp_path: Path) -> None:
    """allow_stdin off: a busy cell that answers itself (run.approve()) is quicker than the denial."""
    execution = kernel.run(
        'r = %ccexec --demo "bash: touch scripted.txt"\n'
        "import time\n"
        "while r.pending is None: time.sleep(0.05)\n"
        "r.approve()\n"
        "r.wait()\n"
        "print(r.status)",
        timeout=scaled(60),
    )
    assert execution.ok and execution.stream() == "completed\n", execution.error
    assert (tmp_path / "scripted.txt").exists()
    assert kernel.value("[(q.status, q.decided_by) for q in r.permission_requests]") == [("allowed", "code")]
    slow = kernel.run(
        's = %ccexec --demo "bash: touch slow.txt"\n'
        "while s.pending is None: time.sleep(0.05)\n"
        f"time.sleep({scaled(5)})",
        timeout=scaled(60),
    )
    assert slow.ok
    assert kernel.value("[(q.status, q.decided_by) for q in s.permission_requests]") == [("denied", "auto")]


def test_without_stdin_a_waiting_cell_gets_an_immediate_denial(kernel: KernelHarness, tmp_path: Path) -> None:
    """allow_stdin off (nbconvert): nobody can answer, so the question is denied at once, no hang."""
    started = time.monotonic()
    execution = kernel.run('%ccexec --demo --wait -o r "bash: touch unattended.txt"', timeout=scaled(60))
    assert execution.ok, execution.error
    assert time.monotonic() - started < scaled(30)
    assert not (tmp_path / "unattended.txt").exists()
    decided = kernel.value("[(q.status, q.decided_by) for q in r.permission_requests]")
    assert decided == [("denied", "auto")]
    assert "nobody could answer" in kernel.value("r.answer")


def test_the_cards_allow_button_answers_while_the_kernel_is_idle(kernel: KernelHarness, tmp_path: Path) -> None:
    """Kernel idle: a click on the approval card's Allow (a comm message) runs the command."""
    kernel.ok('r = %ccexec --demo "write: clicked.txt"')
    # The card shows once the view renders (a few times a second), after the question came.
    kernel.wait_until("'Claude wants to use Write' in r.view.body.card.value", timeout=scaled(60))
    card = kernel.value("r.view.body.card.value")
    assert "Claude wants to use Write" in card and "+Hello from the cc_executor_nb demo." in card
    kernel.click(kernel.value("r.view.body.allow_button.model_id"))
    kernel.wait_until("r.status == 'completed'", timeout=scaled(60))
    assert (tmp_path / "clicked.txt").read_text() == "Hello from the cc_executor_nb demo.\n"
    assert kernel.value("[(q.status, q.decided_by) for q in r.permission_requests]") == [("allowed", "widget")]


def test_a_click_reaches_a_cell_that_awaits_the_run(kernel: KernelHarness, tmp_path: Path) -> None:
    """`await r` keeps the kernel's loop running: the widget's Deny click gets through (ipykernel 7),
    though the cell's input box asks too."""
    kernel.ok('r = %ccexec --demo "bash: touch awaited.txt"')
    kernel.wait_until("'Claude wants to use Bash' in r.view.body.card.value", timeout=scaled(60))
    deny = kernel.value("r.view.body.deny_button.model_id")
    msg_id, started = kernel.submit("await r\nprint(r.status)", allow_stdin=True)
    assert kernel.input_request(timeout=scaled(10))["parent_header"]["msg_id"] == msg_id
    kernel.click(deny)
    execution = kernel.finish(msg_id, started, timeout=scaled(60))
    assert execution.ok and execution.stream() == "completed\n"
    assert kernel.value("[(q.status, q.decided_by) for q in r.permission_requests]") == [("denied", "widget")]
    assert not (tmp_path / "awaited.txt").exists()


def test_follow_up_box_sends_a_second_turn(kernel: KernelHarness) -> None:
    """The follow-up text box and Send: a second turn in the same process."""
    kernel.ok('r = %ccexec --demo "echo: one"')
    kernel.wait_until("r.status == 'completed'", timeout=scaled(60))
    body = "r.view.body"
    kernel.ok(f"{body}.follow_up.value = 'echo: two'")
    kernel.click(kernel.value(f"{body}.send_button.model_id"))
    kernel.wait_until("r.state.turns == 2 and r.status == 'completed'", timeout=scaled(60))
    assert kernel.value("(r.answer, r.alive, len([e for e in r.events if e.method == 'process.started']))") == (
        "two", True, 1)
    kernel.wait_until(f"{body}.follow_up.value == ''", timeout=scaled(10))


def test_two_questions_at_once_are_asked_one_after_the_other(kernel: KernelHarness, tmp_path: Path) -> None:
    """Two runs ask while one cell waits for both: its input box asks one question, then the other."""
    kernel.ok('a = %ccexec --demo "bash: touch first.txt"\nb = %ccexec --demo "bash: touch second.txt"')
    busy = (
        "import time\n"
        "while {'starting', 'running', 'thinking'} & {a.status, b.status}:\n"
        "    time.sleep(0.1)\n"
        "print(a.status, b.status)"
    )
    msg_id, started = kernel.submit(busy, allow_stdin=True)
    asked = []
    for _ in range(2):
        asked.append(kernel.input_request(timeout=scaled(60))["content"]["prompt"].splitlines()[0])
        kernel.answer_input("y")
    execution = kernel.finish(msg_id, started, timeout=scaled(60))
    assert execution.ok and execution.stream() == "completed completed\n", execution.error
    assert sorted(asked) == ["Claude asks to use Bash: touch first.txt", "Claude asks to use Bash: touch second.txt"]
    assert (tmp_path / "first.txt").exists() and (tmp_path / "second.txt").exists()


# The record follows the turns; the kernel's end ends the conversation


def run_updates(kernel: KernelHarness, cell: str) -> list[Received]:
    """The display updates the kernel sent so far to the cell ``cell`` (a msg_id), oldest first."""
    return [m for m in kernel.log if m.type == "update_display_data" and m.parent_id == cell]


def person(kernel: KernelHarness, code: str) -> str:
    """Run ``code`` as JupyterLab would (with an input box), check it succeeded; its msg_id."""
    msg_id, started = kernel.submit(code, allow_stdin=True)
    execution = kernel.finish(msg_id, started, timeout=scaled(60))
    assert execution.ok, execution.error
    return msg_id


def test_the_record_follows_each_turn_under_the_widget(kernel: KernelHarness) -> None:
    """A conversation in a front end with an input box: each turn's end sends one update, the widget over
    the record of every turn so far."""
    cell = person(kernel, 'r = %ccexec --demo "echo: first answer"')
    kernel.until(lambda: len(run_updates(kernel, cell)) == 1, timeout=60, what="the first turn's update")
    person(kernel, 'r.send("echo: second answer")')
    kernel.until(lambda: len(run_updates(kernel, cell)) == 2, timeout=60, what="the second turn's update")
    first, second = (update.content["data"] for update in run_updates(kernel, cell))
    assert WIDGET in first and WIDGET in second
    assert "first answer" in first["text/markdown"] and "second answer" not in first["text/markdown"]
    for mime in ("text/markdown", "text/plain", "text/html"):
        assert "first answer" in second[mime] and "second answer" in second[mime]
    # The footer says which figures are the last turn's (the cost is the session's so far).
    assert all(" · 2 conversation turns · last turn " in second[mime] for mime in ("text/plain", "text/html"))
    kernel.drain(1.0)
    assert len(run_updates(kernel, cell)) == 2, "no update while a turn runs, one at its end"
    assert kernel.value("(r.alive, r.state.turns)") == (True, 2)


def test_wait_puts_the_record_in_the_widgets_place_and_a_follow_up_brings_the_widget_back(
    kernel: KernelHarness,
) -> None:
    """--wait: the turn's record replaces the widget (the process lives); r.send() shows the widget again,
    and that turn's end puts the record of both turns in its place."""
    cell = person(kernel, '%ccexec --demo --wait -o r "echo: waited for"')
    [ended] = run_updates(kernel, cell)
    assert WIDGET not in ended.content["data"] and "waited for" in ended.content["data"]["text/plain"]
    assert kernel.value("(r.status, r.alive, r.exit_code, r.answer)") == ("completed", True, None, "waited for")
    person(kernel, 'r.send("echo: then more").wait()')
    back, again = run_updates(kernel, cell)[1:]
    assert WIDGET in back.content["data"]
    assert WIDGET not in again.content["data"]
    assert all(text in again.content["data"]["text/markdown"] for text in ("waited for", "then more"))


def front_end_texts(received: list[Received]) -> str:
    """Every widget's text values as a front end holds them after ``received`` (open and update messages)."""
    states: dict[str, dict[str, Any]] = {}
    for message in received:
        if message.type in ("comm_open", "comm_msg"):
            state = message.content.get("data", {}).get("state", {})
            states.setdefault(message.content["comm_id"], {}).update(state)
    return "\n".join(str(state.get("value", "")) for state in states.values())


def test_a_widget_the_record_replaced_holds_no_answer_until_a_follow_up_brings_it_back(
    kernel: KernelHarness,
) -> None:
    """--wait: once the record took the widget's place the front end's widget state holds no answer (what
    nbclient saves); the follow-up's widget comes back with the first answer in it."""
    cell = person(kernel, '%ccexec --demo --wait -o r "echo: waited for"')
    assert "waited for" not in front_end_texts(kernel.log)
    person(kernel, 'r.send("echo: then more").wait()')
    back = run_updates(kernel, cell)[1]
    assert WIDGET in back.content["data"]
    assert "waited for" in front_end_texts(kernel.log[: kernel.log.index(back)])


def test_a_waited_run_shown_again_shows_its_record_not_the_widget(kernel: KernelHarness) -> None:
    """--wait, then ``r`` in a later cell: the record alone (the widget came back, and a headless runner,
    which applies the update to every output with that display id, saved the widget in both cells)."""
    person(kernel, '%ccexec --demo --wait -o r "echo: waited for"')
    cell = person(kernel, "r")
    [shown] = [m for m in kernel.log if m.type == "display_data" and m.parent_id == cell]
    assert WIDGET not in shown.content["data"] and "waited for" in shown.content["data"]["text/plain"]
    assert kernel.value("r.alive") is True


def test_an_interrupt_with_no_widget_to_say_it_is_printed_in_its_cell_once(kernel: KernelHarness) -> None:
    """interrupt() once the conversation is over (its record took the widget's place): the notice is
    printed in the calling cell, once (it went only to run.events, which nobody sees); between turns,
    with the widget live, the widget says it and the cell prints nothing."""
    person(kernel, 'r = %ccexec --demo "echo: one"')
    kernel.wait_until("r.status == 'completed'", timeout=60)
    between = kernel.ok("r.interrupt()")
    assert between.stream() == ""
    kernel.ok("r.end()")
    kernel.wait_until("r.done", timeout=60)
    over = kernel.ok("r.interrupt()")
    assert over.stream() == "[note] Nothing to interrupt: the conversation is over.\n"
    assert kernel.ok("r.interrupt()").stream() == ""


def test_unload_ends_a_live_conversation_cleanly(kernel: KernelHarness) -> None:
    """%unload_ext: a conversation between turns is ended (its input closed), the CLI exits 0, nothing is left."""
    kernel.ok('%ccexec --demo --wait -o r "echo: then unload"')
    pid = kernel.value("r.state.pid")
    assert psutil.pid_exists(pid) and kernel.value("r.alive")
    kernel.ok("%unload_ext cc_executor_nb")
    assert kernel.value("(r.status, r.exit_code, r.alive, r.done)") == ("completed", 0, False, True)
    assert not alive(pid)


def test_a_kernel_shutdown_leaves_no_claude_process(kernel: KernelHarness) -> None:
    """Shutting the kernel down (as a front end does) ends its live conversations: no claude process is left."""
    kernel.ok('%ccexec --demo --wait -o r "echo: then shut down"')
    pid = kernel.value("r.state.pid")
    assert alive(pid)
    kernel.shutdown()
    eventually(lambda: not alive(pid), timeout=30, what="the claude process to end with the kernel")


def test_a_kernel_interrupt_while_wait_asks_shows_no_input_box_again(kernel: KernelHarness) -> None:
    """A kernel interrupt while --wait asks in the input box: the run is cancelled and no input
    box comes again (the worker thread waiting for the box claimed the question before the
    cancel closed it, and asked it once more)."""
    msg_id, started = kernel.submit('%ccexec --demo --wait -o r "bash: touch never.txt"', allow_stdin=True)
    kernel.input_request(timeout=scaled(60))
    time.sleep(1.0)  # past the worker thread's grace: it waits for the input box to be free
    kernel.manager.interrupt_kernel()
    execution = kernel.finish(msg_id, started, timeout=scaled(30))
    assert execution.error is not None and execution.error[0] == "KeyboardInterrupt"
    with pytest.raises(TimeoutError):
        again = kernel.input_request(timeout=scaled(2))
        pytest.fail(f"an input box came after the interrupt: {again['content']['prompt']!r}")
    assert kernel.value("(r.status, r.done)") == ("cancelled", True)
    assert kernel.value("[q.status for q in r.permission_requests]") == ["cancelled"]
    # The person asked interrupted: the question reads cancelled by them, not by Claude (the CLI's withdrawal).
    assert kernel.value("[q.decided_by for q in r.permission_requests]") == ["stdin"]


# An input box still open when its cell stops asking: its answer counts, whenever it comes

WAIT_BRIEFLY = (
    "import time\n"
    "while r.pending is None: time.sleep(0.05)\n"
    "for _ in range({times}):\n"
    "    try:\n"
    "        r.wait(timeout={seconds})\n"
    "    except TimeoutError:\n"
    "        print('timed out')"
)


def test_an_answer_typed_after_its_cell_ended_decides_the_question(kernel: KernelHarness, tmp_path: Path) -> None:
    """A box left open by a cell that stopped waiting, answered later: the next wait() takes
    that answer and sends no second box (the answer was dropped and the question asked again)."""
    kernel.ok('r = %ccexec --demo "bash: touch late.txt"')
    msg_id, started = kernel.submit(WAIT_BRIEFLY.format(times=1, seconds=scaled(2)), allow_stdin=True)
    request = kernel.input_request(timeout=scaled(60))
    assert request["parent_header"]["msg_id"] == msg_id
    first = kernel.finish(msg_id, started, timeout=scaled(30))
    assert first.ok and first.stream() == "timed out\n", first.error
    kernel.answer_box(request, "y")
    # The next cell does not spin on r.pending (the late answer may decide the question before it
    # looks: the hang CI met). It starts late on purpose, so the cell's asking thread (after its
    # half-second grace) is the one that finds the answer waiting, as on a loaded machine.
    wait_then_status = (
        "import time\ntime.sleep(1.5)\n"
        f"try:\n    r.wait(timeout={scaled(20)})\nexcept TimeoutError:\n    print('timed out')\n"
        "print(r.status)"
    )
    msg_id, started = kernel.submit(wait_then_status, allow_stdin=True)
    execution = kernel.finish(msg_id, started, timeout=scaled(60))
    assert [r["content"]["prompt"] for r in kernel.input_requests(scaled(1))] == []
    assert execution.ok and execution.stream() == "completed\n", execution.error
    assert kernel.value("[(q.status, q.decided_by) for q in r.permission_requests]") == [("allowed", "stdin")]
    assert (tmp_path / "late.txt").exists()


def test_a_late_answer_decides_the_question_in_a_cell_without_input_boxes(
    kernel: KernelHarness, tmp_path: Path
) -> None:
    """The late answer waits on stdin; the next cell allows no input (allow_stdin off, as a
    client that runs cells without boxes): it reads that answer instead of denying the
    question for nobody (it was denied: "nobody could answer")."""
    kernel.ok('r = %ccexec --demo "bash: touch late2.txt"')
    msg_id, started = kernel.submit(WAIT_BRIEFLY.format(times=1, seconds=scaled(2)), allow_stdin=True)
    request = kernel.input_request(timeout=scaled(60))
    first = kernel.finish(msg_id, started, timeout=scaled(30))
    assert first.ok and first.stream() == "timed out\n", first.error
    kernel.answer_box(request, "y")
    msg_id, started = kernel.submit("r.wait()\nprint(r.status)", allow_stdin=False)
    execution = kernel.finish(msg_id, started, timeout=scaled(60))
    assert execution.ok and execution.stream() == "completed\n", execution.error
    assert kernel.value("[(q.status, q.decided_by) for q in r.permission_requests]") == [("allowed", "stdin")]
    assert (tmp_path / "late2.txt").exists()


def test_waiting_twice_in_a_cell_asks_in_one_box(kernel: KernelHarness) -> None:
    """wait(timeout=...) twice in one cell while the question is open: one input_request, the
    second wait polls the box the first one opened (two boxes for one question before)."""
    kernel.ok('r = %ccexec --demo "bash: touch twice.txt"')
    msg_id, started = kernel.submit(WAIT_BRIEFLY.format(times=2, seconds=scaled(1.5)), allow_stdin=True)
    execution = kernel.finish(msg_id, started, timeout=scaled(60))
    assert execution.ok and execution.stream() == "timed out\ntimed out\n", execution.error
    requests = kernel.input_requests(scaled(1))
    assert [r["parent_header"]["msg_id"] for r in requests] == [msg_id]
    kernel.answer_box(requests[0], "n")
    person(kernel, "r.wait()")
    assert kernel.value("[(q.status, q.decided_by) for q in r.permission_requests]") == [("denied", "stdin")]


def test_demo_resume_finds_the_session_of_a_kernel_before_a_restart(tmp_path: Path) -> None:
    """%ccexec --demo --resume ID in a new kernel resumes a session an earlier kernel made (it read
    "No conversation found with session ID": each kernel had a temporary demo config of its own,
    removed at its exit); the config is the terminal client's lasting 0700 one, never ~/.claude."""
    cache, home = tmp_path / "cache", tmp_path / "home"
    env = {"XDG_CACHE_HOME": str(cache), "HOME": str(home)}
    setup = f"%load_ext cc_executor_nb\n%config CCExec.claude_command = {str(CLAUDE)!r}\n" \
            "%config CCExec.history_path = 'none'"
    answers = []
    for turn in ("first", "second"):
        harness = KernelHarness.start(tmp_path, env=env)
        try:
            harness.ok(setup)
            resume = f"--resume {answers[0][1]} " if answers else ""
            harness.ok(f'%ccexec --demo --no-interactive --wait --quiet {resume}-o r "echo: the {turn} turn"',
                       timeout=scaled(90))
            answers.append(harness.value("(r.status, r.session_id, r.text, r.error)"))
        finally:
            harness.shutdown()
    session = answers[0][1]
    assert answers == [("completed", session, "the first turn", None), ("completed", session, "the second turn", None)]
    config = cache / "cc_executor_nb" / "demo-claude-config"
    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    [transcript] = config.glob(f"projects/*/{session}.jsonl")
    assert "the first turn" in transcript.read_text() and "the second turn" in transcript.read_text()
    assert not (home / ".claude").exists() and not (home / ".claude.json").exists()


# Each render of the live widget, kept in the kernel: the footer's words, the follow-up row's note.
RECORD_RENDERS = """
import re
body = r.view.body
renders = []
def recorded(state, now, render=body.render):
    render(state, now)
    footer = body.value.rsplit('class="cc-footer"', 1)[-1]
    renders.append((re.sub(r"<[^>]+>", " ", footer.split(">", 1)[-1]).split("·")[0].strip(),
                    re.sub(r"<[^>]+>", " ", body.note.value).strip()))
body.render = recorded
"""


def test_the_follow_up_row_says_the_turn_is_over_in_the_render_whose_footer_does(kernel: KernelHarness) -> None:
    """At a turn's end the footer said it was over while the follow-up row still said "Claude is
    working" for one render (180-200 ms in JupyterLab): the widget rendered on the turn's end before
    the conversation published it. No render shows the one without the other."""
    kernel.ok('r = %ccexec --demo "echo: one"')
    kernel.wait_until("r.status == 'completed'", timeout=scaled(60))
    kernel.ok(RECORD_RENDERS)
    kernel.ok('r.send("write a 60 word story at 60 words per second")')
    kernel.wait_until("r.state.turns == 2 and r.status == 'completed'", timeout=scaled(60))
    kernel.wait_until("renders and not renders[-1][1].startswith('Claude is working')", timeout=scaled(10))
    renders = kernel.value("renders")
    print(f"\n{len(renders)} renders: {renders}")
    assert any(footer.startswith("running") for footer, _note in renders), renders  # it saw the turn run
    mixed = [(footer, note) for footer, note in renders
             if not footer.startswith("running") and note.startswith("Claude is working")]
    assert mixed == [], renders
