"""The plain-text renderer of Claude runs (claude/text.py), over the recorded streams and made-up snapshots."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import pytest

from cc_executor_nb.claude.interpreter import ClaudeInterpreter, ClaudeView
from cc_executor_nb.claude.streamjson import ToolCall
from cc_executor_nb.claude.text import (
    Chunk,
    ClaudeTextRenderer,
    answer_of,
    footer_line,
    join_chunks,
    permission_line,
    printable,
    render_text,
    tool_line,
)
from cc_executor_nb.demo.texts import THINKING_TEXT, haikus
from cc_executor_nb.kernel.claudetext import ClaudeTextView

from .test_streamjson import _sentence_and_call, feed_step, snapshot_steps

pytestmark = pytest.mark.timeout(30)

RECORDINGS = Path(__file__).with_name("data") / "streamjson"
NAMES = sorted(path.stem for path in RECORDINGS.glob("*.jsonl"))


def recording(name: str) -> str:
    return (RECORDINGS / f"{name}.jsonl").read_text(encoding="utf-8")


def result_of(name: str) -> dict[str, Any]:
    """The recording's result event (read here, never printed: some lines are long)."""
    lines = [json.loads(line) for line in recording(name).splitlines() if line.strip()]
    return next(event for event in lines if event.get("type") == "result")


def stream(name: str, piece: int = 97) -> tuple[list[Chunk], ClaudeInterpreter]:
    """Feed a recording in ``piece``-character pieces, rendering after each; then the final render."""
    data = recording(name)
    interpreter, renderer, chunks = ClaudeInterpreter(), ClaudeTextRenderer(), []
    for start in range(0, len(data), piece):
        interpreter.feed("stdout", data[start : start + piece])
        chunks += renderer.render(interpreter.snapshot())
    interpreter.finish()
    chunks += renderer.render(interpreter.snapshot(), final=True)
    return chunks, interpreter


def answer_text(chunks: list[Chunk]) -> str:
    return "".join(chunk.text for chunk in chunks if chunk.kind == "answer")


def notes(chunks: list[Chunk]) -> list[str]:
    return [chunk.text for chunk in chunks if chunk.kind == "note"]


def view(**fields: Any) -> ClaudeView:
    return ClaudeView(**fields)


# The recorded streams


@pytest.mark.parametrize("name", NAMES)
def test_no_json_line_reaches_the_text(name: str) -> None:
    """Whatever the recording, the rendered text carries no stream-json event."""
    text = join_chunks(stream(name)[0])
    assert '{"type":' not in text and '"session_id":' not in text


def test_haikus_come_out_as_the_answer_with_the_footer() -> None:
    """The three haikus come out as written, followed by one footer line with cost, tokens and session."""
    chunks, interpreter = stream("haiku")
    assert answer_text(chunks).strip() == haikus(3)
    result = result_of("haiku")
    assert notes(chunks) == [footer_line(interpreter.snapshot())]
    footer = notes(chunks)[0]
    assert footer.startswith("[result] done · $0.0092 · 2,004 in / 61 out tokens · 1 agent turn · 102 ms")
    assert footer.endswith(f"claude-opus-5-5 · session {result['session_id']}")


def test_a_long_answer_streams_in_whole_lines_and_words_without_added_newlines() -> None:
    """The story streams as it grows: chunks end at a line end or a space, and no newline is added."""
    chunks, interpreter = stream("story", piece=200)
    answers = [chunk.text for chunk in chunks if chunk.kind == "answer"]
    text = interpreter.snapshot().text
    assert "".join(answers) == text + "\n"  # the final newline ends the last line before the footer
    assert len(answers) > 10, "the answer came in one piece instead of growing"
    # All but the last words (written at the end) and the newline closing them.
    assert answers[-1] == "\n" and all(piece.endswith(("\n", " ")) for piece in answers[:-2])


def test_thinking_is_one_note_and_its_text_stays_out() -> None:
    """A thinking block shows as one '[thinking] N words' note; the thinking text is not printed."""
    chunks, _ = stream("think")
    text = join_chunks(chunks)
    assert notes(chunks)[0] == f"[thinking] {len(THINKING_TEXT.split())} words"
    assert THINKING_TEXT not in text
    assert answer_text(chunks).strip() == "Done thinking. The answer is 42."


def test_a_tool_call_is_one_line_between_the_texts_around_it() -> None:
    """The tool call's line, with its outcome, sits between the text before and after it."""
    lines = join_chunks(stream("tool")[0]).splitlines()
    assert lines[:3] == [
        "I will run a command.",
        "[tool] Bash · echo hi → ok, 1 line",
        "The command printed: hi",
    ]
    assert lines[3].startswith("[result] done · $0.0165") and len(lines) == 4


def test_a_tool_call_in_one_batch_with_the_text_after_it_stays_between_the_texts() -> None:
    """The tool line goes where the call came, even when the later text arrived with it."""
    chunks, _ = stream("tool", piece=len(recording("tool")))
    lines = join_chunks(chunks).splitlines()
    assert lines[:3] == ["I will run a command.", "[tool] Bash · echo hi → ok, 1 line", "The command printed: hi"]


def test_an_api_error_shows_the_retry_the_error_and_a_failed_footer() -> None:
    """error_529: a retry note, the error once, a 'failed' footer. The error's words are in the error
    line (they were written as the answer, the CLI's synthetic message, and the line said only
    "[error] API overloaded (529)")."""
    chunks, _ = stream("error_529")
    found = notes(chunks)
    assert found[0] == "[retry] API overloaded (529), retry 1 of 1 in 0.6 s"
    assert found[1].startswith("[error] API overloaded (529): API Error: 529 Overloaded.")
    assert answer_text(chunks) == ""
    assert found[2].startswith("[result] failed · $0.0000")
    assert join_chunks(chunks).count("API Error: 529 Overloaded") == 1


@pytest.mark.parametrize("name", NAMES)
def test_the_whole_run_at_once_has_the_answer_and_the_footer(name: str) -> None:
    """render_text of a finished recording holds the result's answer (or its error) and the footer."""
    interpreter = ClaudeInterpreter()
    interpreter.feed("stdout", recording(name))
    interpreter.finish()
    snapshot = interpreter.snapshot()
    text = render_text(snapshot)
    assert text.rstrip("\n").endswith(footer_line(snapshot))
    if not snapshot.is_error:
        assert printable(snapshot.answer).strip() in text


def test_the_whole_run_at_once_lists_tools_before_the_answer() -> None:
    """render_text keeps the widget's order: the tool log, then the answer, then the footer."""
    interpreter = ClaudeInterpreter()
    interpreter.feed("stdout", recording("tool"))
    interpreter.finish()
    text = render_text(interpreter.snapshot())
    assert text.index("[tool] Bash · echo hi") < text.index("The command printed: hi") < text.index("[result]")


def test_the_whole_run_at_once_keeps_the_text_written_before_a_tool_call() -> None:
    """render_text (the text record) has what Claude wrote before its tool call, then the final text once
    (it had only the result's text: "I will run a command." was lost)."""
    interpreter = ClaudeInterpreter()
    interpreter.feed("stdout", recording("tool"))
    interpreter.finish()
    text = render_text(interpreter.snapshot())
    assert text.index("I will run a command.") < text.index("The command printed: hi") < text.index("[result]")
    assert text.count("The command printed: hi") == 1


@pytest.mark.parametrize(
    ("text", "result", "shown"),
    [("Step 1 of 1.\n\nDone.", "Done.", "Step 1 of 1.\n\nDone."),
     ("Step 1 of 1.\n\nDone.", "  Done.\n", "Step 1 of 1.\n\nDone."),
     ("", "Done.", "Done."),
     ("Step 1 of 1.", "Done.", "Step 1 of 1.\n\nDone."),
     ("Step 1 of 1.", "", "Step 1 of 1.")],
)
def test_the_answer_is_all_the_text_then_the_result_once(text: str, result: str, shown: str) -> None:
    """answer_of a finished run: every text Claude wrote in order, then the result's text unless the
    text already ends with it (it was the result's text alone)."""
    assert answer_of(view(text=text, answer=result or text, result={"result": result}, phase="done")) == shown


def test_a_result_the_streamed_text_does_not_end_with_is_printed_too() -> None:
    """Text mode prints the result's text when the streamed text does not end with it, as the records
    show it (it printed "Step 1 of 1." only; "Done." was in every record but not here)."""
    done = view(text="Step 1 of 1.", answer="Done.", result={"result": "Done."}, phase="done")
    text = join_chunks(ClaudeTextRenderer(footer=False).render(done, final=True))
    assert text.index("Step 1 of 1.") < text.index("Done.") and text.count("Done.") == 1
    same = view(text="Step 1 of 1.\n\nDone.", answer="Done.", result={"result": "Done."}, phase="done")
    assert join_chunks(ClaudeTextRenderer(footer=False).render(same, final=True)).count("Done.") == 1


# Made-up snapshots


def test_a_restarted_answer_is_announced_and_written_again() -> None:
    """When the text no longer starts with what was written (a retried stream), a note says so."""
    renderer = ClaudeTextRenderer()
    first = renderer.render(view(text="The first try of an answer\n", phase="writing"))
    again = renderer.render(view(text="A second try\n", phase="writing"))
    assert answer_text(first) == "The first try of an answer\n"
    assert notes(again) == ["[retry] the answer restarted (the API stream was retried)"]
    assert answer_text(again) == "A second try\n"


def test_an_unfinished_short_line_waits_for_its_end() -> None:
    """A short line without its newline is held back until it ends (no one-delta-per-line output)."""
    renderer = ClaudeTextRenderer()
    assert renderer.render(view(text="Hel", phase="writing")) == []
    assert renderer.render(view(text="Hello wor", phase="writing")) == []
    assert answer_text(renderer.render(view(text="Hello world\nNe", phase="writing"))) == "Hello world\n"


def test_a_note_ends_an_unfinished_answer_line_first() -> None:
    """A note never lands in the middle of an answer line: the line is completed first."""
    renderer = ClaudeTextRenderer(flush_chars=10)
    started = renderer.render(view(text="one two three four", phase="writing"))
    assert answer_text(started) == "one two three " and renderer.line_open
    tool = ToolCall("t1", "Read", {"file_path": "/etc/hosts"}, result="a\nb", status="done")
    chunks = renderer.render(view(text="one two three four", phase="tool", tool_calls=(tool,)))
    assert join_chunks(chunks) == "four\n[tool] Read · /etc/hosts → ok, 2 lines\n"


@pytest.mark.parametrize(("result", "outcome"), [
    ("(Bash completed with no output)", "ok, no output"),
    ("", "ok, no output"),
    ("one\n", "ok, 1 line"),
    ("one\ntwo", "ok, 2 lines"),
])
def test_a_tool_line_counts_the_lines_the_tool_printed(result: str, outcome: str) -> None:
    """The CLI's stand-in for no output is no output (it read "ok, 1 line"), and a final
    newline ends the last line without starting another (it read "ok, 2 lines")."""
    tool = ToolCall("t1", "Bash", {"command": "touch a.txt"}, result=result, status="done")
    assert tool_line(tool) == f"[tool] Bash · touch a.txt → {outcome}"


def test_terminal_escapes_in_model_and_tool_text_are_removed() -> None:
    """Control characters (an escape sequence that would retitle the terminal) never reach the output."""
    tool = ToolCall("t1", "Bash\x1b[31m", {"command": "ls\x07"}, result="\x1b]0;pwned\x07x", status="done")
    chunks = ClaudeTextRenderer().render(
        view(text="\x1b]0;pwned\x07hi\x9b\n", phase="done", tool_calls=(tool,), result={}), final=True
    )
    text = join_chunks(chunks)
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "pwned" not in text and "hi\n" in text  # the whole sequence goes, not just its ESC
    assert "[tool] Bash · ls → ok" in text  # no "[31m" after the tool's name


def test_bidi_controls_in_tool_lines_and_the_answer_are_shown() -> None:
    """A tool's name and input and the answer show an override or isolate as ⟨U+202E⟩ (right-to-left
    letters stay): the line reads as the command runs."""
    tool = ToolCall("t1", "Bash\u2067", {"command": "echo \u202e; rm x"}, result="", status="done")
    assert tool_line(tool) == "[tool] Bash⟨U+2067⟩ · echo ⟨U+202E⟩; rm x → ok, no output"
    chunks = ClaudeTextRenderer().render(view(text="שלום \u202eevil\n", phase="done", result={}), final=True)
    assert "שלום ⟨U+202E⟩evil\n" in join_chunks(chunks)


def test_colours_in_the_answer_leave_no_litter() -> None:
    """An answer with SGR colours reads as its words: no ``[31m`` left where an ESC was removed."""
    coloured = "the \x1b[31mred\x1b[0m word and \x1b[1;32mbold green\x1b[0m\n"
    streamed = ClaudeTextRenderer().render(view(text=coloured, phase="done", result={}), final=True)
    assert answer_text(streamed) == "the red word and bold green\n"
    whole = render_text(view(text=coloured, answer=coloured, phase="done", result={}))
    assert "the red word and bold green" in whole and "[" not in whole.split("\n\n")[0]


def test_a_long_line_is_never_cut_inside_an_escape() -> None:
    """A forced cut of a long line that would split ``ESC[31m`` waits for the whole sequence."""
    renderer = ClaudeTextRenderer(flush_chars=10)
    text = "x" * 9 + "\x1b[31mredredred\x1b[0m" + "y" * 12
    shown = ""
    for end in range(1, len(text) + 1):  # every prefix, as deltas could cut it
        shown += answer_text(renderer.render(view(text=text[:end], phase="writing")))
    shown += answer_text(renderer.render(view(text=text, phase="done", result={}), final=True))
    assert shown.rstrip("\n") == "x" * 9 + "redredred" + "y" * 12


def test_an_interrupted_turn_keeps_its_text_and_says_interrupted() -> None:
    """Text mode: the story so far stays, then ``[interrupted]`` and a footer that says so, not the CLI's diagnostic."""
    diagnostic = "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"
    done = view(text="Once upon a time\n", answer="Once upon a time\n", phase="done", is_error=True, interrupted=True,
                result={"subtype": "error_during_execution", "is_error": True, "errors": [diagnostic]})
    chunks = ClaudeTextRenderer().render(done, final=True)
    assert answer_text(chunks) == "Once upon a time\n"
    assert notes(chunks)[0] == "[interrupted] the turn was interrupted"
    assert notes(chunks)[1].startswith("[result] interrupted") and "ede_diagnostic" not in join_chunks(chunks)


def test_printable_drops_escape_sequences_and_controls() -> None:
    """``printable`` removes whole escape sequences (CSI, OSC) and the other controls; tabs and newlines stay."""
    assert printable("a\x1b[31mb\x1b]8;;http://x\x07c\x1b[0m\td\x07\n") == "abc\td\n"


def test_a_failed_tool_shows_the_first_line_of_its_error() -> None:
    """A tool error shows as '→ error: ' and its first non-empty line."""
    result = "\nFile does not exist.\nmore"
    tool = ToolCall("t", "Read", {"file_path": "/nope"}, result=result, is_error=True, status="done")
    assert tool_line(tool) == "[tool] Read · /nope → error: File does not exist."


def test_a_tool_without_result_at_the_end_says_so() -> None:
    """A call still pending when the run ends gets its line, marked 'no result'."""
    tool = ToolCall("t", "Bash", {"command": "sleep 100"})
    chunks = ClaudeTextRenderer().render(view(phase="tool", tool_calls=(tool,)), final=True)
    assert "[tool] Bash · sleep 100 → no result" in notes(chunks)


def test_subagent_tool_calls_are_left_out() -> None:
    """Calls made inside a subagent (parent_tool_use_id set) are not the run's own tool log."""
    inner = ToolCall("inner", "Grep", {"pattern": "x"}, result="", status="done", parent_tool_use_id="outer")
    chunks = ClaudeTextRenderer().render(view(phase="done", tool_calls=(inner,), result={}), final=True)
    assert not any("Grep" in note for note in notes(chunks))


@dataclasses.dataclass(frozen=True)
class InteractiveView(ClaudeView):
    """A snapshot of an interactive run, which carries permission questions."""

    permission_requests: tuple[dict[str, Any], ...] = ()


def test_permission_questions_and_answers_are_notes() -> None:
    """Each permission question shows once when asked and once when answered (the hook for interactive runs)."""
    renderer = ClaudeTextRenderer()
    ask = {"id": "p1", "tool": "Bash", "input": {"command": "rm -rf build"}, "status": "pending"}
    asked = renderer.render(InteractiveView(phase="tool", permission_requests=(ask,)))
    again = renderer.render(InteractiveView(phase="tool", permission_requests=(ask,)))
    denied = {**ask, "status": "denied", "decided_by": "user", "message": "not now"}
    answered = renderer.render(InteractiveView(phase="tool", permission_requests=(denied,)))
    assert notes(asked) == ["[permission] Bash · rm -rf build → waiting for an answer"]
    assert again == []
    assert notes(answered) == ["[permission] Bash · rm -rf build → denied by user: not now"]


def test_permission_line_says_always_and_who_as_the_widget_does() -> None:
    """"always allowed by you", as the widget and the HTML record say (the text and Markdown
    records said "allowed by widget", dropping "always")."""
    line = permission_line({"tool": "Bash", "input": {"command": "touch t1"}, "status": "allowed",
                            "decided_by": "widget", "always": True, "message": ""})
    assert line == "[permission] Bash · touch t1 → always allowed by you"


def test_permission_line_reads_attributes_too() -> None:
    """A permission request object with attributes (not a mapping) renders the same way."""
    request = dataclasses.make_dataclass("Request", ["tool", "input", "status", "decided_by", "message"])
    line = permission_line(request("Edit", {"file_path": "a.py"}, "allowed", "policy", ""))
    assert line == "[permission] Edit · a.py → allowed by the policy"


def test_a_question_answered_by_another_kernel_reads_elsewhere() -> None:
    """decided_by "elsewhere" (a durable job's question answered by another kernel) reads "allowed elsewhere"."""
    request = dataclasses.make_dataclass("Request", ["tool", "input", "status", "decided_by", "message"])
    line = permission_line(request("Bash", {"command": "make"}, "allowed", "elsewhere", ""))
    assert line == "[permission] Bash · make → allowed elsewhere"


def test_a_question_nobody_could_answer_says_automatically_once() -> None:
    """Denied for nobody: "denied automatically: nobody could answer…" (it read "denied
    automatically: Denied automatically: nobody could answer…")."""
    from cc_executor_nb.kernel.prompter import NOBODY_MESSAGE

    line = permission_line({"tool": "Bash", "input": {"command": "touch ip1.txt"}, "status": "denied",
                            "decided_by": "auto", "message": NOBODY_MESSAGE})
    assert line.startswith("[permission] Bash · touch ip1.txt → denied automatically: nobody could answer")


def test_a_policys_deny_says_by_the_policy_once() -> None:
    """The policy's own deny message is not repeated after "denied by the policy" (it read
    "denied by the policy: Denied by the notebook's permission policy.")."""
    from cc_executor_nb.kernel.conversation import POLICY_DENY_MESSAGE

    line = permission_line({"tool": "Bash", "input": {"command": "touch p.txt"}, "status": "denied",
                            "decided_by": "policy", "message": POLICY_DENY_MESSAGE})
    assert line == "[permission] Bash · touch p.txt → denied by the policy"


def test_a_deny_without_a_reason_says_by_you_once() -> None:
    """A person's deny without a reason is not followed by the CLI's stand-in reason (it read
    "denied by you: The user denied this tool call.")."""
    from cc_executor_nb.claude.control import DEFAULT_DENY_MESSAGE

    line = permission_line({"tool": "Bash", "input": {"command": "touch u.txt"}, "status": "denied",
                            "decided_by": "widget", "message": DEFAULT_DENY_MESSAGE})
    assert line == "[permission] Bash · touch u.txt → denied by you"


def test_footer_leaves_out_what_was_not_reported() -> None:
    """Before the result only 'no result yet' (and what is known) shows: no made-up figures."""
    assert footer_line(view(model="m", session_id="s")) == "[result] no result yet · m · session s"


def test_a_run_that_ended_without_a_result_does_not_say_yet() -> None:
    """Once the process is gone no result is coming: the footer says 'no result' (it said
    'no result yet' under a run that had ended, a lost job's included)."""
    assert footer_line(view(model="m"), ended=True) == "[result] no result · m"
    assert render_text(view(model="m"), ended=True).endswith("[result] no result · m\n")


def test_final_render_happens_once() -> None:
    """After the final render nothing more comes out, whatever is passed."""
    renderer = ClaudeTextRenderer()
    renderer.render(view(text="a\n", result={}, phase="done"), final=True)
    assert renderer.render(view(text="a\nb\n", result={}, phase="done"), final=True) == []


def test_an_answer_that_came_only_in_the_result_is_written() -> None:
    """A run whose text never streamed still shows its answer (the result's) at the end."""
    chunks = ClaudeTextRenderer().render(
        view(answer="Only in the result", result={"result": "Only in the result"}, phase="done"), final=True
    )
    assert answer_text(chunks) == "Only in the result\n"


class _Source:
    """A run as the text view reads it: a snapshot that the test changes."""

    def __init__(self, snapshot: ClaudeView) -> None:
        self.snapshot_now = snapshot

    def snapshot(self) -> ClaudeView:
        return self.snapshot_now

    def finish(self) -> None:
        return None


def test_no_silence_note_while_a_question_waits() -> None:
    """process.status is no news while Claude waits for an answer (on a terminal it would hit the prompt line)."""
    ask = {"id": "p1", "tool": "Bash", "input": {"command": "make"}, "status": "pending"}
    source = _Source(InteractiveView(phase="tool", permission_requests=(ask,)))
    text_view = ClaudeTextView(source)
    status = {"status": "running", "inactive_seconds": 30.0}
    assert text_view.render("process.status", status) == []
    source.snapshot_now = InteractiveView(phase="tool", permission_requests=({**ask, "status": "allowed"},))
    assert [line.text for line in text_view.render("process.status", status)] == ["[status] no output for 30 s"]


def test_no_silence_note_between_turns_of_a_conversation() -> None:
    """A conversation waiting for a follow-up is not silent work: no "[status] no output for 30 s" every
    30 s above the terminal's prompt (there was one per interval until the idle end), as the widget shows
    none; a follow-up's silence is noted again."""
    text_view = ClaudeTextView(_Source(view(text="hi\n", result={}, phase="done")))
    status = {"status": "running", "inactive_seconds": 30.0}
    text_view.render("conversation.turn", {"status": "completed", "turn": 1, "last": False})
    assert text_view.render("process.status", status) == []
    text_view.render("conversation.turn", {"status": "running", "turn": 2})
    assert [line.text for line in text_view.render("process.status", status)] == ["[status] no output for 30 s"]


def test_a_note_follows_the_answer_text_that_came_before_it() -> None:
    """An unfinished answer line held back (no newline yet) is written before a note, not after it."""
    text_view = ClaudeTextView(_Source(view(text="Step 1 of 1.", phase="writing")))
    assert text_view.render("process.output", {"type": "stdout", "data": "(a stream-json line)\n"}) == []
    question = {"request": {"id": "p1", "tool": "Bash", "summary": "make", "status": "pending"}}
    lines = [(line.kind, line.text) for line in text_view.render("conversation.question", question)]
    assert lines[:2] == [("stdout", "Step 1 of 1."), ("stdout", "\n")]
    assert lines[2][0] == "note" and lines[2][1].startswith("[needs you] Claude asks to use Bash: make")
    assert len(lines) == 3


def test_a_question_announced_by_the_run_gets_no_second_waiting_line() -> None:
    """After the run's '[needs you]' notice, the same question's '[permission] ... waiting' line is left out;
    its answer still gets its line."""
    ask = {"id": "p1", "tool": "Bash", "input": {"command": "make"}, "status": "pending"}
    source = _Source(view(phase="tool"))
    text_view = ClaudeTextView(source)
    question = {"request": {"id": "p1", "tool": "Bash", "summary": "make", "status": "pending"}}
    assert [line.text[:11] for line in text_view.render("conversation.question", question)] == ["[needs you]"]
    source.snapshot_now = InteractiveView(phase="tool", permission_requests=(ask,))
    assert text_view.render("process.output", {"type": "stdout", "data": "(a line)\n"}) == []
    source.snapshot_now = InteractiveView(phase="tool", permission_requests=({**ask, "status": "allowed",
                                                                             "decided_by": "stdin"},))
    lines = text_view.render("process.output", {"type": "stdout", "data": "(a line)\n"})
    assert [line.text for line in lines] == ["[permission] Bash · make → allowed by you"]


def test_a_question_the_policy_answers_gets_no_waiting_line() -> None:
    """A question handed to a callable policy (answered on a worker thread, so the stream shows it
    pending first) prints no '[permission] ... waiting for an answer' line: nobody waits for a person;
    only the policy's answer gets its line."""
    ask = {"id": "p1", "tool": "Bash", "input": {"command": "make"}, "status": "pending"}
    source = _Source(view(phase="tool"))
    text_view = ClaudeTextView(source)
    question = {"request": {"id": "p1", "tool": "Bash", "summary": "make", "status": "pending"}, "policy": True}
    assert text_view.render("conversation.question", question) == []
    source.snapshot_now = InteractiveView(phase="tool", permission_requests=(ask,))
    assert text_view.render("process.output", {"type": "stdout", "data": "(a line)\n"}) == []
    source.snapshot_now = InteractiveView(phase="tool", permission_requests=({**ask, "status": "denied",
                                                                             "decided_by": "policy"},))
    lines = text_view.render("process.output", {"type": "stdout", "data": "(a line)\n"})
    assert [line.text for line in lines] == ["[permission] Bash · make → denied by the policy"]


def test_a_run_refused_before_it_started_shows_its_error_and_no_footer() -> None:
    """A Claude run whose server refused it (no process.started) ends on its error alone (text mode printed
    "[result] no result" first, as if Claude had run); one that started keeps its footer."""
    refused = {"error": "ws://h:1/ws refused the connection: HTTP 401 (Unauthorized: missing or wrong bearer token)"}
    lines = ClaudeTextView(_Source(view(model="m"))).render("process.error", refused)
    assert [line.text for line in lines] == [f"[error] {refused['error']}"]
    started = ClaudeTextView(_Source(view(model="m")))
    started.render("process.started", {"pid": 7})
    assert "[result] no result · m" in [line.text for line in started.render("process.error", refused)]


def test_an_error_the_cli_sends_as_text_is_shown_as_the_error_not_as_the_answer() -> None:
    """A prompt too long for the model: the CLI sends "Prompt is too long" as a synthetic assistant
    message (is_api_error_message) and as the result with is_error. It was written as the answer and
    then "[error] Claude run failed" said nothing more; it is the error line now, and no answer."""
    chunks, interpreter = stream("prompt_too_long")
    assert answer_text(chunks) == ""
    assert "[error] Claude run failed: Prompt is too long" in notes(chunks)
    view = interpreter.snapshot()
    assert (view.is_error, view.text, answer_of(view), view.answer) == (True, "", "", "Prompt is too long")


class _FullWalk(ClaudeTextRenderer):
    """The renderer as it was: every call read at each render."""

    def _tools_to_read(self, calls: Sequence[ToolCall]) -> list[int]:
        return list(range(len(calls)))


@pytest.mark.parametrize("name", [None, *NAMES])
def test_a_render_reading_the_new_and_waiting_calls_writes_what_reading_every_call_did(name: str | None) -> None:
    """Over a made-up conversation (calls done, pending, forgotten, a subagent's, three turns) and
    each recording, rendered at every line: the same chunks as a renderer that reads every call."""
    steps = snapshot_steps() if name is None else [each for each in recording(name).splitlines() if each.strip()]
    interpreter, renderer, full = ClaudeInterpreter(), ClaudeTextRenderer(), _FullWalk()
    for step in steps:
        feed_step(interpreter, step)
        turn_ended = isinstance(step, str) and '"type": "result"' in step and name is None
        assert renderer.render(interpreter.snapshot(), turn=turn_ended) == full.render(
            interpreter.snapshot(), turn=turn_ended)
    interpreter.finish()
    assert renderer.render(interpreter.snapshot(), final=True) == full.render(interpreter.snapshot(), final=True)


class _CountedCalls(Sequence[ToolCall]):
    """A snapshot's calls that count how many are read."""

    def __init__(self, calls: Sequence[ToolCall], reads: list[int]) -> None:
        self.calls, self.reads = calls, reads

    def __len__(self) -> int:
        return len(self.calls)

    @overload
    def __getitem__(self, index: int) -> ToolCall: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ToolCall]: ...
    def __getitem__(self, index: int | slice) -> ToolCall | Sequence[ToolCall]:
        item = self.calls[index]
        self.reads[0] += len(item) if isinstance(item, Sequence) else 1
        return item


def test_a_render_reads_the_new_calls_not_every_call() -> None:
    """A render at each line of 300 calls reads a few calls (the new ones, the last one read before),
    not every call: reading them all made text mode quadratic in the number of calls."""
    interpreter, renderer, reads = ClaudeInterpreter(), ClaudeTextRenderer(), [0]
    renders = 0
    for index in range(300):
        for each in _sentence_and_call(index):
            interpreter.feed("stdout", each + "\n")
            snapshot = interpreter.snapshot()
            counted = _CountedCalls(snapshot.tool_calls, reads)
            chunks = renderer.render(dataclasses.replace(snapshot, tool_calls=counted))
            renders += 1
    assert reads[0] <= 3 * renders
    assert chunks[-1] == Chunk("note", tool_line(snapshot.tool_calls[-1]))
