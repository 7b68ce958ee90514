"""The record of a run (kernel/transcript.py): Markdown, HTML and text, made inert, saved to files."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mistune
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from cc_executor_nb import methods
from cc_executor_nb.claude import streamjson
from cc_executor_nb.claude.interpreter import ClaudeInterpreter
from cc_executor_nb.claude.permissions import PermissionRequest
from cc_executor_nb.claude.render import (
    MAX_RECORD_PROMPT_CHARS,
    MAX_RECORD_TEXTS,
    MAX_RECORD_THOUGHTS,
    MAX_RECORD_TOOL_CARDS,
    MAX_RECORD_TURNS,
    MAX_THINKING_CHARS,
    claude_body_html,
    render_tool_cards_html,
    tool_plan,
)
from cc_executor_nb.claude.streamjson import ToolCall
from cc_executor_nb.demo.texts import MARKDOWN_XSS, haikus
from cc_executor_nb.kernel import api
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.runstate import RunState
from cc_executor_nb.kernel.transcript import (
    IN_PROGRESS_NOTE,
    MAX_RECORD_ANSWER_CHARS,
    MAX_RECORD_TOOL_CHARS,
    RecordCache,
    Transcript,
    _tool_markdown,
    code_span,
    fenced,
    markdown_escape,
    safe_markdown,
)

from .test_approval_view import sentences_and_calls, think_run_think_answer, tool_turn_lines, turn_of
from .test_claude_render import HOSTILE, SHOWN, hostile_lines
from .test_streamjson import assistant, block_start, delta, line, result, streamed_text
from .test_streamjson import start as message_start
from .test_terminaltext import FORBIDDEN

pytestmark = pytest.mark.timeout(60)

RECORDINGS = Path(__file__).with_name("data") / "streamjson"
# A renderer that lets raw HTML through, as a careless Markdown viewer would.
PERMISSIVE = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
# Another parser (nbconvert's), with raw HTML let through too.
MISTUNE = mistune.create_markdown(escape=False, plugins=["table", "strikethrough"])
# What Markdown itself produces; any other tag came from raw HTML that got through.
MARKDOWN_TAGS = {
    "p", "em", "strong", "code", "pre", "a", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol",
    "li", "blockquote", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "s", "del",
}  # fmt: skip


def finished_state(
    status: str = "completed", exit_code: int = 0, pieces: tuple[tuple[str, str], ...] = (), duration: float = 1.5,
) -> RunState:
    state = RunState()
    state.apply(methods.PROCESS_STARTED, {"pid": 7, "pgid": 7, "argv": ["x"], "seq": 1}, now=0.0)
    for seq, (stream, data) in enumerate(pieces, start=2):
        state.apply(methods.PROCESS_OUTPUT, {"type": stream, "data": data, "seq": seq}, now=0.5)
    params = {"status": status, "exit_code": exit_code, "duration_seconds": duration, "seq": 100}
    state.apply(methods.PROCESS_COMPLETED, params, now=duration)
    return state


def claude_run(name: str, prompt: str = "a prompt", **options: Any) -> SimpleNamespace:
    """A finished Claude run replayed from a recording."""
    interpreter = ClaudeInterpreter(prompt=prompt)
    interpreter.feed("stdout", (RECORDINGS / f"{name}.jsonl").read_text(encoding="utf-8"))
    interpreter.finish()
    return SimpleNamespace(
        label=f"claude: {prompt}", state=finished_state(), interpreter=interpreter,
        options={"prompt": prompt, **options},
    )


def conversation_run() -> SimpleNamespace:
    """A finished two-turn conversation: turn 1 runs `touch one.txt` (allowed by you), the
    follow-up `touch two.txt` (denied by you)."""
    prompts = ("bash: touch one.txt", "bash: touch two.txt")
    interpreter = ClaudeInterpreter(prompt=prompts[0])
    requests = []
    for index, prompt in enumerate(prompts, start=1):
        interpreter.begin_turn(prompt)
        command, tool_id = prompt.removeprefix("bash: "), f"toolu_{index}"
        tool_result = {"type": "tool_result", "tool_use_id": tool_id, "content": "", "is_error": index == 2}
        for each in (
            assistant(f"m{index}", {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": command}}),
            line(type="user", message={"role": "user", "content": [tool_result]}),
            result(result=f"answer {index}"),
        ):
            interpreter.feed("stdout", each + "\n")
        status, message = ("allowed", "") if index == 1 else ("denied", "not now")
        requests.append(PermissionRequest(
            f"q{index}", "Bash", {"command": command}, status=status, decided_by="widget", message=message,
            tool_use_id=tool_id,
        ))
    interpreter.set_permission_requests(tuple(requests))
    interpreter.finish()
    return SimpleNamespace(
        label=f"claude: {prompts[0]}", state=finished_state(), interpreter=interpreter,
        options={"prompt": prompts[0]},
    )


def command_run(*pieces: tuple[str, str], status: str = "failed", exit_code: int = 3) -> SimpleNamespace:
    return SimpleNamespace(
        label="sh -c 'make test'", state=finished_state(status, exit_code, pieces), interpreter=None,
        options={"command": "sh -c 'make test'"},
    )


def tags(html_text: str) -> set[str]:
    return {tag.lower() for tag in re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", html_text)}


def assert_inert(html_text: str) -> None:
    """No tag but Markdown's own, no event handler, no script URL."""
    assert tags(html_text) <= MARKDOWN_TAGS, tags(html_text) - MARKDOWN_TAGS
    assert not re.search(r"<[^>]*\son\w+\s*=", html_text, re.IGNORECASE)
    assert not re.search(r"href=\"\s*(javascript|vbscript|data):", html_text, re.IGNORECASE)


# Claude runs


def test_markdown_of_a_claude_run_has_title_status_answer_and_footer() -> None:
    """run.transcript() of the haiku run: the title, the status line, the haikus and the footer."""
    md = Transcript(claude_run("haiku", "write 3 haikus")).markdown()
    assert md.startswith("### claude: write 3 haikus\n\n**completed** · exit code 0 · took 1.5 s\n\n")
    assert haikus(3) in md
    footer = md.rstrip("\n").rsplit("\n", 1)[-1]
    assert footer.startswith(r"done · \$0.0092 · 2,004 in / 61 out tokens · 1 agent turn · 102 ms · claude-opus-5-5")
    assert re.search(r"session `[0-9a-f-]{36}`$", footer)


def test_a_failed_run_keeps_the_text_claude_wrote_before_the_failure() -> None:
    """A story cut by the budget: the Markdown and text records keep what Claude wrote, then the
    failure (they kept only the failure; the HTML kept the text)."""
    interpreter = ClaudeInterpreter(prompt="write a story")
    lines = [*streamed_text("m1", "Once upon a time, ", "an old notebook"),
             result(subtype="error_max_budget_usd", is_error=True, result="Reached maximum budget ($0.001)")]
    interpreter.feed("stdout", "".join(each + "\n" for each in lines))
    interpreter.finish()
    run = SimpleNamespace(label="claude: write a story", state=finished_state("failed", 1), interpreter=interpreter,
                          options={"prompt": "write a story"})
    record = Transcript(run)
    for form in (record.markdown(), record.text()):
        assert "Once upon a time, an old notebook" in form and "Reached maximum budget" in form
        assert form.index("Once upon a time") < form.index("Reached maximum budget")


def test_markdown_lists_the_tool_calls_before_the_answer() -> None:
    """The tool log is a list with each call's outcome, above the answer."""
    md = Transcript(claude_run("tool")).markdown()
    assert "**Tools**\n\n- ✓ **Bash** `echo hi` → 1 line" in md
    assert md.index("**Tools**") < md.index("The command printed: hi")


@pytest.mark.parametrize("form", ["markdown", "text", "html"])
def test_every_record_keeps_the_text_claude_wrote_before_a_tool_call(form: str) -> None:
    """The tool run: each record has "I will run a command." (written before the call), then the final
    text once (they had only the result's text, the last message)."""
    record = getattr(Transcript(claude_run("tool")), form)()
    assert record.index("I will run a command.") < record.index("The command printed: hi")
    assert record.count("The command printed: hi") == 1


def stepped_conversation_run(thinks_in: int | None = None) -> SimpleNamespace:
    """A finished two-turn conversation whose turns each write "Step 1 of 1." before their tool call
    and "answer N" after it (as the demo's approval scenarios do); turn ``thinks_in`` thinks first."""
    interpreter = ClaudeInterpreter(prompt="bash: touch one.txt")
    for index in (1, 2):
        interpreter.begin_turn(f"bash: touch {index}.txt")
        tool_id = f"toolu_{index}"
        thought = [{"type": "thinking", "thinking": "weigh it carefully"}] if index == thinks_in else []
        tool_result = {"type": "tool_result", "tool_use_id": tool_id, "content": "", "is_error": False}
        for each in (
            assistant(f"m{index}", *thought, {"type": "text", "text": "Step 1 of 1."},
                      {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": "touch"}}),
            line(type="user", message={"role": "user", "content": [tool_result]}),
            assistant(f"m{index}b", {"type": "text", "text": f"answer {index}"}),
            result(result=f"answer {index}"),
        ):
            interpreter.feed("stdout", each + "\n")
    interpreter.finish()
    return SimpleNamespace(label="claude: bash: touch one.txt", state=finished_state(), interpreter=interpreter,
                           options={"prompt": "bash: touch one.txt"})


@pytest.mark.parametrize("form", ["markdown", "text", "html"])
def test_every_record_of_a_conversation_keeps_each_turns_text_before_its_tool_call(form: str) -> None:
    """Each turn's record has its "Step 1 of 1." then its answer once (it had only the answer)."""
    record = getattr(Transcript(stepped_conversation_run()), form)()
    assert record.count("Step 1 of 1.") == 2
    assert record.count("answer 1") == 1 and record.count("answer 2") == 1
    first_step = record.index("Step 1 of 1.")
    second_step = record.index("Step 1 of 1.", first_step + 1)
    assert first_step < record.index("answer 1") < second_step < record.index("answer 2")


TOOL_MARK = {"markdown": "**Bash**", "text": "[tool] Bash", "html": 'class="cc-tool-name">Bash'}


@pytest.mark.parametrize("form", ["markdown", "text"])
def test_the_markdown_and_text_records_put_a_tool_call_where_it_came(form: str) -> None:
    """The tool run: "I will run a command.", then the Bash call, then "The command printed: hi", as
    the stream had them and the HTML shows them (the tools were listed above all of the text)."""
    record = getattr(Transcript(claude_run("tool")), form)()
    said = record.index("I will run a command.")
    assert said < record.index(TOOL_MARK[form]) < record.index("The command printed: hi")


@pytest.mark.parametrize("form", ["markdown", "text"])
def test_each_turn_of_a_conversations_record_puts_its_tool_call_where_it_came(form: str) -> None:
    """Each turn's "Step 1 of 1.", its Bash call, then its answer (the call came above the step)."""
    record = getattr(Transcript(stepped_conversation_run()), form)()
    at, places = 0, []
    for piece in ("Step 1 of 1.", TOOL_MARK[form], "answer 1", "Step 1 of 1.", TOOL_MARK[form], "answer 2"):
        at = record.index(piece, at)
        places.append(at)
    assert places == sorted(places)


def thinking_conversation_run() -> SimpleNamespace:
    """A finished two-turn conversation whose follow-up alone thinks ("weigh it carefully") before
    it writes "Step 1 of 1.", runs Bash and answers "answer 2"."""
    return stepped_conversation_run(thinks_in=2)


@pytest.mark.parametrize(("form", "note", "follow_up"), [
    ("markdown", "*3 words of thinking (in `run.thinking`)*", "**Follow-up 1**"),
    ("text", "[thinking] 3 words", "[follow-up 1]"),
])
def test_a_conversations_record_notes_each_turns_thinking_in_that_turn(form: str, note: str, follow_up: str) -> None:
    """The follow-up's thinking is noted once, in the follow-up, above its text (it was one note for
    the whole run above the first turn, as the HTML had it before each turn showed its own)."""
    record = getattr(Transcript(thinking_conversation_run()), form)()
    assert record.count(note) == 1
    second_step = record.index("Step 1 of 1.", record.index("Step 1 of 1.") + 1)
    assert record.index(follow_up) < record.index(note) < second_step
    assert "carefully" not in record


@pytest.mark.parametrize("form", ["markdown", "text", "html"])
def test_a_cut_answer_keeps_the_streams_order_up_to_the_cut(form: str) -> None:
    """answer_chars of 21 (the length of "I will run a command."): every record says that text, then
    the Bash call, then that the 23 characters of "The command printed: hi" are left out (the HTML
    showed the card above all of the text, the Markdown and text the tools above it)."""
    record = getattr(Transcript(claude_run("tool"), answer_chars=len("I will run a command.")), form)()
    said = record.index("I will run a command.")
    assert said < record.index(TOOL_MARK[form]) < record.index("23 more characters")
    assert "The command printed" not in record


def test_a_cut_conversations_html_record_shows_its_turns_and_each_turns_thinking() -> None:
    """A conversation whose answer is cut: the HTML record still has each turn, the follow-up's
    prompt and its thinking inside it, its text before its card, and the cut note (it was the
    whole run's thinking, all cards, then the answer's head, with no turns)."""
    cut = len("Step 1 of 1.answer 1Step 1 of 1.")
    page = Transcript(thinking_conversation_run(), answer_chars=cut).html()
    first, second = page.split('class="cc-turn cc-turn-1"')
    assert 'class="cc-turn cc-turn-0"' in first and "cc-thinking" not in first
    assert "bash: touch 2.txt" in second and '<details class="cc-thinking">' in second
    assert second.index("cc-thinking") < second.index("Step 1 of 1.") < second.index(TOOL_MARK["html"])
    assert "answer 2" not in page and "8 more characters" in second


def think_run_think_answer_run(first: str = "first, run it", second: str = "then, read it") -> SimpleNamespace:
    """A finished run of one prompt that thinks ``first``, runs a command, thinks ``second`` and answers."""
    interpreter = ClaudeInterpreter(prompt="think, then use a tool")
    interpreter.feed("stdout", "".join(each + "\n" for each in think_run_think_answer("m0", first, second)))
    interpreter.finish()
    return SimpleNamespace(label="claude: think, then use a tool", state=finished_state(), interpreter=interpreter,
                           options={"prompt": "think, then use a tool"})


FOLLOW_UP_MARK = {"markdown": "**Follow-up 1**", "text": "[follow-up 1]"}
THINKING_MARK = {"markdown": ("*3 words of thinking", "*3 words of thinking"),
                 "text": ("[thinking] 3 words", "[thinking] 3 words"), "html": ("first, run it", "then, read it")}


@pytest.mark.parametrize("form", ["markdown", "text", "html"])
@pytest.mark.parametrize("conversation", [False, True])
def test_a_records_thinking_stands_where_it_came_among_the_tool_calls(form: str, conversation: bool) -> None:
    """A turn that thinks, runs a command, thinks again and answers: every record has the first
    thinking above the call and the second between the call and the answer, in a run of one prompt
    and in a conversation's turn (each turn's thinking was one note or block at its top)."""
    run = think_run_think_answer_run()
    if conversation:
        run.interpreter.begin_turn("think, then use a tool")  # the first prompt's turn, then a follow-up
        run.interpreter.begin_turn("and again")
        run.interpreter.feed("stdout", "".join(each + "\n" for each in think_run_think_answer("m1")))
    record = getattr(Transcript(run), form)()
    body = record
    if conversation:  # the follow-up's turn
        body = turn_of(record, 1) if form == "html" else record[record.index(FOLLOW_UP_MARK[form]):]
    first, second = THINKING_MARK[form]
    where = [body.index(first), body.index(TOOL_MARK[form]), body.index(second, body.index(first) + 1),
             body.index("It printed hi")]
    assert where == sorted(where), body


def test_a_records_thinking_budget_keeps_the_end_of_a_turn_that_thought_at_two_places() -> None:
    """A turn thinks 30,000 characters, runs a command and thinks 30,000 more: the record shows the
    last 50,000 of them, the second thinking whole and the first's end after a note of the 10,000
    before it that says run.thinking has all of it."""
    page = Transcript(think_run_think_answer_run("∴" * 30_000, "∵" * 30_000)).html()
    assert (page.count("∴"), page.count("∵")) == (MAX_THINKING_CHARS - 30_000, 30_000)
    note = "… 10,000 earlier characters not shown: run.thinking has all of it …"
    assert page.index(note) < page.index("∴") < page.index(TOOL_MARK["html"]) < page.index("∵")


THOUGHT = "∴"  # a character no markup holds: counting it counts the thinking a record shows


def long_thinking_conversation_run(turns: int, chars: int) -> SimpleNamespace:
    """A finished conversation of ``turns`` turns, each thinking ``chars`` characters, then answering "ok"."""
    interpreter = ClaudeInterpreter(prompt="prompt 0")
    for index in range(turns):
        interpreter.begin_turn(f"prompt {index}")
        thought = {"type": "thinking", "thinking": THOUGHT * chars}
        for each in (assistant(f"m{index}", thought, {"type": "text", "text": "ok"}), result(result="ok")):
            interpreter.feed("stdout", each + "\n")
    interpreter.finish()
    return SimpleNamespace(label="claude: prompt 0", state=finished_state(), interpreter=interpreter,
                           options={"prompt": "prompt 0"})


def test_a_records_thinking_is_bounded_in_total() -> None:
    """Ten turns of 60,000 characters of thinking: the displayed record shows MAX_THINKING_CHARS of
    thinking in all and is under MAX_THINKING_CHARS + 10,000 characters (each turn showed its own
    50,000: 500,000 characters of thinking, a record of 506,201)."""
    page = Transcript(long_thinking_conversation_run(10, 60_000), answer_chars=MAX_RECORD_ANSWER_CHARS).html()
    assert page.count(THOUGHT) == MAX_THINKING_CHARS
    assert len(page) < MAX_THINKING_CHARS + 10_000


def test_a_records_thinking_goes_to_the_first_turns_and_each_cut_turn_says_what_is_left_out() -> None:
    """Three turns of 30,000 characters of thinking: the first shows all of its thinking, the second
    its last 20,000 after a note of the 10,000 earlier ones, the third a note of its 30,000; each
    note says run.thinking has all of it (every turn showed 30,000, with no note)."""
    page = Transcript(long_thinking_conversation_run(3, 30_000)).html()
    first, second, third = (turn_of(page, index) for index in range(3))
    assert first.count(THOUGHT) == 30_000 and "not shown" not in first
    assert second.count(THOUGHT) == 20_000
    assert "… 10,000 earlier characters not shown: run.thinking has all of it …" in second
    assert third.count(THOUGHT) == 0
    assert "Thinking: 30,000 characters not shown: run.thinking has all of it" in third


def test_a_record_made_while_a_turn_thinks_past_the_budget_says_it_still_thinks() -> None:
    """A follow-up thinks (1,000 characters so far) after a turn whose 60,000 spent the record's
    budget: its note read "Thinking…: 1,000 characters not shown"; it says Claude still thinks."""
    run = long_thinking_conversation_run(1, 60_000)
    run.interpreter.begin_turn("prompt 1")
    thinking = [message_start("m1"), block_start(0, {"type": "thinking", "thinking": ""}),
                delta(0, "thinking_delta", thinking=THOUGHT * 1_000)]
    run.interpreter.feed("stdout", "".join(each + "\n" for each in thinking))
    run.state = RunState()
    run.state.apply(methods.PROCESS_STARTED, {"pid": 7, "pgid": 7, "argv": ["x"], "seq": 1}, now=0.0)
    second = turn_of(Transcript(run).html(), 1)
    assert second.count(THOUGHT) == 0
    assert "Still thinking: 1,000 characters so far not shown: run.thinking has all of it" in second, second


def test_a_one_prompt_records_thinking_keeps_its_end_and_says_where_the_rest_is() -> None:
    """A run of one prompt with 60,000 characters of thinking: its record shows the last 50,000
    after a note of the 10,000 before them that says run.thinking has all of it."""
    page = Transcript(long_thinking_conversation_run(1, 60_000)).html()
    assert page.count(THOUGHT) == MAX_THINKING_CHARS
    assert "… 10,000 earlier characters not shown: run.thinking has all of it …" in page


def many_thoughts_run(places: int, words: Any = lambda index: 2) -> SimpleNamespace:
    """A finished run of one prompt that thinks at ``places`` places, the ``index``-th ``words(index)``
    words, with a Bash call after each, then answers."""
    lines = []
    for index in range(places):
        thought = {"type": "thinking", "thinking": "w " * words(index)}
        call = {"type": "tool_use", "id": f"toolu_{index}", "name": "Bash", "input": {"command": f"echo {index}"}}
        output = {"type": "tool_result", "tool_use_id": f"toolu_{index}", "content": "r", "is_error": False}
        answer = line(type="user", message={"role": "user", "content": [output]})
        lines += [assistant(f"m{index}", thought, call), answer]
    interpreter = ClaudeInterpreter(prompt="p")
    interpreter.feed("stdout", "\n".join([*lines, result(result="done")]) + "\n")
    interpreter.finish()
    return SimpleNamespace(label="claude: p", state=finished_state(), interpreter=interpreter, options={"prompt": "p"})


THINKING_NOTE = {"html": 'class="cc-thinking"', "markdown": " of thinking (in `run.thinking`)*", "text": "[thinking] "}


def test_a_records_size_does_not_grow_with_its_places_of_thinking() -> None:
    """Runs that think at 2,000 and at 4,000 places (a call after each) make displayed records of the
    same size in each form, but for the figures of their lines of the calls and thoughts left out,
    each with MAX_RECORD_THOUGHTS notes of thinking and one line for the rest (past the thinking
    budget each place still took a note of its own: 20,000 places made an HTML record of 3.1 MB,
    a Markdown one of 0.87 MB, a text one of 0.41 MB)."""
    small, big = (Transcript(many_thoughts_run(places), answer_chars=MAX_RECORD_ANSWER_CHARS)
                  for places in (2_000, 4_000))
    for form in ("html", "markdown", "text"):
        record = getattr(big, form)()
        assert abs(len(record) - len(getattr(small, form)())) < 40, form
        assert record.count(THINKING_NOTE[form]) == MAX_RECORD_THOUGHTS + (form == "text"), form
        assert record.count("3,800 places of thinking not shown (7,600 words)") == 1, form


def test_a_records_forms_show_the_same_places_of_thinking_and_count_the_ones_left_out() -> None:
    """400 places of thinking, the n-th of n words: the Markdown and the text note the first 100 and
    the last 100, the HTML shows those 200, and where the 101st stood one line in each counts the
    200 left out and their words and says run.thinking has all of it (each form noted all 400)."""
    transcript = Transcript(many_thoughts_run(400, lambda index: index + 1))
    kept = [*range(1, 101), *range(301, 401)]
    noted = re.findall(r"\*([\d,]+) words? of thinking", transcript.markdown())
    assert [int(words.replace(",", "")) for words in noted] == kept
    text = transcript.text()
    assert [int(words.replace(",", "")) for words in re.findall(r"\[thinking\] ([\d,]+) words?\n", text)] == kept
    page = transcript.html()
    assert page.count('class="cc-thinking"') == 200
    words = "200 places of thinking not shown (40,100 words)"
    assert f"[thinking] {words}: run.thinking has all of it" in text
    assert f"*… {words}: `run.thinking` has all of it …*" in transcript.markdown()
    gap = page.index(f"… {words}: <code>run.thinking</code> has all of it …")
    assert page.index(">echo 99<") < gap < page.index("200 tool calls not shown") < page.index(">echo 300<")


def many_texts_run(steps: int) -> SimpleNamespace:
    """A finished run of one prompt that writes ``steps`` sentences, a Bash call after each, then
    answers "done"."""
    interpreter = ClaudeInterpreter(prompt="p")
    interpreter.feed("stdout", sentences_and_calls(range(steps)) + result(result="done") + "\n")
    interpreter.finish()
    return SimpleNamespace(label="claude: p", state=finished_state(), interpreter=interpreter, options={"prompt": "p"})


TEXTS_GAP = {"html": "… {}: <code>run.text</code> has all of them …",
             "markdown": "*… {}: `run.text` has all of them …*", "text": "[text] {}: run.text has all of them"}


def test_a_records_size_does_not_grow_with_its_texts() -> None:
    """Runs of 2,000 and of 4,000 sentences (a call after each) make displayed records of the same
    size in each form, but for the figures of their lines of the calls and texts left out, each with
    MAX_RECORD_TEXTS texts and one line for the rest (each text took its wrapper: the HTML record of
    4,000 grew 194,000 characters past the one of 2,000; 20,000 made 985 KB)."""
    small, big = (Transcript(many_texts_run(steps), answer_chars=MAX_RECORD_ANSWER_CHARS, text_pieces=MAX_RECORD_TEXTS)
                  for steps in (2_000, 4_000))
    for form in ("html", "markdown", "text"):
        record = getattr(big, form)()
        assert abs(len(record) - len(getattr(small, form)())) < 40, form
        assert record.count(" of the plan.") == MAX_RECORD_TEXTS - 1, form  # and "done"
        assert record.count(TEXTS_GAP[form].format("3,801 texts not shown (82,722 characters)")) == 1, form
    bundle = api._record(many_texts_run(4_000), CCExec())()  # type: ignore[arg-type]  # the display's
    assert bundle["text/markdown"].count(" of the plan.") == MAX_RECORD_TEXTS - 1


@pytest.mark.parametrize("form", ["html", "markdown", "text"])
def test_a_records_forms_show_the_same_texts_and_count_the_ones_left_out(form: str) -> None:
    """400 sentences, a call after each, then the answer: each form shows the first 100 texts and
    the last 100 (the answer the last), and where the 101st stood one line counts the 201 left out
    and their characters and says run.text has all of them (each form showed all 401)."""
    record = getattr(Transcript(many_texts_run(400), text_pieces=MAX_RECORD_TEXTS), form)()
    shown = [int(step) for step in re.findall(r"Step (\d+) of the plan\.", record)]
    assert shown == [*range(100), *range(301, 400)]
    gap = record.index(TEXTS_GAP[form].format("201 texts not shown (4,221 characters)"))
    assert record.index("echo 99") < gap < record.index("200 tool calls not shown") < record.index("echo 300")


def test_run_transcript_and_save_keep_every_text() -> None:
    """run.transcript() and run.save() (a Transcript's defaults) show all 400 sentences: they have
    all of the answer, where the display's record says run.text has what it leaves out."""
    transcript = Transcript(many_texts_run(400))
    for form in ("html", "markdown", "text"):
        record = getattr(transcript, form)()
        assert [int(step) for step in re.findall(r"Step (\d+) of the plan\.", record)] == list(range(400)), form
        assert "texts not shown" not in record, form


CHANGE = {"file_path": "/w/x.txt", "old_string": "\n".join(["o" * 200] * 100),
          "new_string": "\n".join(["n" * 200] * 100)}


def feed_tool_calls(
    interpreter: ClaudeInterpreter, calls: range, *, edits: bool = True, failed: int = -1, printed: int = 10_000,
) -> None:
    """Tool calls, Bash and (with ``edits``) an edit of 100 lines of 200 characters by turns, each
    printing ``printed`` characters (the call ``failed`` fails), then the turn's result."""
    lines = []
    for index in calls:
        tool_id = f"toolu_{index}"
        name, given = ("Edit", CHANGE) if edits and index % 2 else ("Bash", {"command": f"echo {index}"})
        call = {"type": "tool_use", "id": tool_id, "name": name, "input": given}
        output = {"type": "tool_result", "tool_use_id": tool_id, "content": "r" * printed, "is_error": index == failed}
        lines += [assistant(f"m{index}", call), line(type="user", message={"role": "user", "content": [output]})]
    interpreter.feed("stdout", "\n".join([*lines, result(result="done")]) + "\n")


def many_tools_run(calls: int, failed: int = -1, *, turns: int = 1, printed: int = 10_000) -> SimpleNamespace:
    """A finished run that makes ``calls`` tool calls (:func:`feed_tool_calls`), a conversation of
    ``turns`` turns (the calls shared out among them) when more than one."""
    interpreter = ClaudeInterpreter(prompt="p")
    each = calls // turns
    for turn in range(turns):
        if turns > 1:
            interpreter.begin_turn(f"prompt {turn}")
        feed_tool_calls(interpreter, range(turn * each, calls if turn == turns - 1 else (turn + 1) * each),
                        failed=failed, printed=printed)
    interpreter.finish()
    return SimpleNamespace(label="claude: p", state=finished_state(), interpreter=interpreter, options={"prompt": "p"})


CUT_CARD_CHARS = 500
"""The most a record's card without its body may take (its tool, input summary and outcome)."""


@pytest.mark.parametrize("form", ["html", "markdown", "text"])
def test_a_records_tool_cards_are_bounded_in_total(form: str) -> None:
    """200 tool calls (Bash and 100-line edits by turns, each printing 10,000 characters): each form
    of the displayed record is under MAX_RECORD_TOOL_CHARS + CUT_CARD_CHARS a card (the HTML was
    2,822,024 characters, the Markdown 1,218,159: each card's body was capped, their number not;
    the text, 7,241, has no bodies: a guard)."""
    record = getattr(Transcript(many_tools_run(200), answer_chars=MAX_RECORD_ANSWER_CHARS), form)()
    assert len(record) < MAX_RECORD_TOOL_CHARS + 200 * CUT_CARD_CHARS
    assert "echo 198" in record


def test_a_records_cards_past_its_tool_budget_keep_their_tool_input_and_outcome() -> None:
    """The same 200 calls, the last failing: the first cards show their bodies whole, every later
    card its tool, input and outcome ("✗ Edit /w/x.txt change · +100 −100 · error · 1 line") and
    no body, and one note after the turns counts the bodies left out and says run.tool_calls has
    them (every card showed its body)."""
    page = Transcript(many_tools_run(200, failed=199)).html()
    cards = page.split('<div class="cc-tool cc-tool-')[1:]
    whole = [index for index, card in enumerate(cards) if "<details" in card]
    assert len(cards) == 200 and 0 < len(whole) < 200 and whole == list(range(len(whole)))
    bash, edit = cards[-2], cards[-1]
    assert '<strong class="cc-tool-name">Bash</strong>' in bash and ">echo 198</code>" in bash
    assert "✓" in bash and "result · 1 line" in bash and "rrr" not in bash
    assert edit.startswith('error"') and "✗" in edit and '<strong class="cc-tool-name">Edit</strong>' in edit
    assert ">/w/x.txt</code>" in edit and "change · +100 −100 · error · 1 line" in edit and "rrr" not in edit
    note = (f"… the results and changes of {200 - len(whole)} tool calls not shown: <code>run.tool_calls</code> "
            "has all of them")
    assert page.count("cc-tools-cut") == 1 and note in page


def test_a_markdown_records_edits_past_its_tool_budget_keep_their_call_and_change_counts() -> None:
    """The same 200 calls in the Markdown (run.transcript()): the first edits show their diffs, every
    later one its call, outcome and change counts without the diff, and one note counts the diffs
    left out and says run.tool_calls has them (all 100 diffs were shown)."""
    record = Transcript(many_tools_run(200, failed=199)).markdown()
    diffs = record.count("```diff")
    assert 0 < diffs < 100 and len(record) < MAX_RECORD_TOOL_CHARS + 200 * CUT_CARD_CHARS
    items = [item for item in record.splitlines() if item.startswith("- ")]
    assert len(items) == 200 and items[-1] == f"- ✗ **Edit** `/w/x.txt` → error: {'r' * 99}… · change +100 −100"
    assert record.count(f"*… the changes of {100 - diffs} tool calls not shown: `run.tool_calls` has all of them*") == 1


TOOL_RECORD_BOUND = MAX_RECORD_TOOL_CHARS + MAX_RECORD_TOOL_CARDS * CUT_CARD_CHARS
"""The most a record of any number of tool calls takes, in any form: the bodies' budget and its cards."""


@pytest.mark.parametrize("turns", [1, 40])
def test_a_records_size_is_bounded_whatever_the_number_of_tool_calls(turns: int) -> None:
    """2,000 tool calls (Bash and edits by turns, each printing 1,000 characters), in one turn or
    spread over a conversation of 40: each form of the record is under TOOL_RECORD_BOUND (each card
    past the body budget still took about 470 characters: 5,000 calls made an HTML record of 1.9 MB),
    and it shows the first call and the last."""
    transcript = Transcript(many_tools_run(2_000, turns=turns, printed=1_000), answer_chars=MAX_RECORD_ANSWER_CHARS)
    for record in (transcript.html(), transcript.markdown(), transcript.text()):
        assert len(record) < TOOL_RECORD_BOUND
        assert "echo 0" in record and "echo 1998" in record and "echo 1000" not in record


def shown_calls(record: str, form: str) -> list[str]:
    """The calls a record shows, in order: ``Bash echo 12`` or ``Edit`` (and ``+`` when it shows
    the edit's change), and ``gap`` for the line of the calls it leaves out."""
    if form == "html":
        cards = re.split(r'(?=<div class="cc-tool cc-tool-|<div class="cc-tools-gap")', record)[1:]
        return ["gap" if card.startswith('<div class="cc-tools-gap"') else card_call(card) for card in cards]
    items = re.split(r"\n(?=- )", record)
    if form == "markdown":
        return ["gap" if item.startswith("- *…") else f"Bash {item.split('`')[1]}" if "**Bash**" in item
                else "Edit" + "+" * ("```diff" in item) for item in items if item.startswith("- ")]
    lines = record.splitlines()
    return ["gap" if item.startswith("[tools]") else f"Bash {item.split(' · ')[1].split(' →')[0]}"
            if item.startswith("[tool] Bash") else "Edit" for item in lines if item.startswith("[tool")]


def card_call(card: str) -> str:
    """An HTML card's call as :func:`shown_calls` names it."""
    name = re.search(r'cc-tool-name">(\w+)<', card)
    given = re.search(r'cc-tool-input">([^<]*)<', card)
    assert name is not None and given is not None
    return f"Bash {given.group(1)}" if name.group(1) == "Bash" else "Edit" + "+" * ("cc-tool-change" in card)


def test_a_records_forms_show_the_same_calls_and_count_the_ones_left_out_exactly() -> None:
    """1,000 calls, the last Edit failing: the HTML, the Markdown and the text show the same calls
    (the first 100 and the last 100), the HTML and the Markdown the same edits' changes (each spent
    its own budget by its own markup: the Markdown showed diffs the HTML left out), and where the
    101st stood one line in each counts the 800 left out by tool and outcome."""
    transcript = Transcript(many_tools_run(1_000, failed=999))
    html_calls, markdown_calls = shown_calls(transcript.html(), "html"), shown_calls(transcript.markdown(), "markdown")
    half = MAX_RECORD_TOOL_CARDS // 2
    assert len(html_calls) == MAX_RECORD_TOOL_CARDS + 1 and html_calls[half] == "gap"
    assert html_calls[0] == "Bash echo 0" and html_calls[half + 1] == "Bash echo 900"
    assert html_calls[-2] == "Bash echo 998"
    assert markdown_calls == html_calls and 0 < html_calls.count("Edit+") < half
    assert shown_calls(transcript.text(), "text") == [call.rstrip("+") for call in html_calls]
    words = "800 tool calls not shown (Bash ✓ 400 · Edit ✓ 400)"
    assert transcript.plan is not None and transcript.plan.gap_words() == words
    assert f"… {words}: <code>run.tool_calls</code> has all of them …" in transcript.html()
    assert f"- *… {words}: `run.tool_calls` has all of them …*" in transcript.markdown()
    assert f"[tools] {words}: run.tool_calls has all of them" in transcript.text()


def test_the_line_of_calls_left_out_names_a_dozen_kinds_and_counts_the_rest() -> None:
    """Calls of 30 tools (the model names them: there may be any number), five of each: the line
    names the 12 most frequent kinds and counts the others together, their names on one line."""
    tools = [ToolCall(f"t{n}", f"tool\n{n % 30}", {}, result="x", status="done") for n in range(150)]
    words = tool_plan(tools, None, 0).gap_words()
    assert words.startswith("150 tool calls not shown (tool 0 ✓ 5 · tool 1 ✓ 5 · ")
    assert words.endswith("tool 11 ✓ 5 · 90 of 18 other kinds)") and words.count("·") == 12


def long_conversation(turns: int) -> SimpleNamespace:
    """A finished conversation of ``turns`` turns, each running ``echo {index}`` and answering."""
    interpreter = ClaudeInterpreter(prompt="prompt 0")
    for index in range(turns):
        interpreter.begin_turn(f"prompt {index}")
        interpreter.feed("stdout", "\n".join(tool_turn_lines(index, f"answer {index}")) + "\n")
    interpreter.finish()
    return SimpleNamespace(label="claude: prompt 0", state=finished_state(), interpreter=interpreter,
                           options={"prompt": "prompt 0"})


def test_a_conversations_record_does_not_grow_with_its_turns() -> None:
    """A conversation of 600 turns and one of 1,000 make displayed records of the same size in each
    form, but for the figures of their line of the turns left out (each turn took its prompt and
    frame: 5,000 turns made an HTML record of 1.5 MB); run.transcript() keeps every turn."""
    small, big = (Transcript(long_conversation(turns), max_turns=MAX_RECORD_TURNS) for turns in (600, 1_000))
    for form in ("html", "markdown", "text"):
        assert abs(len(getattr(big, form)()) - len(getattr(small, form)())) < 20
    assert Transcript(long_conversation(300)).markdown().count("**Follow-up ") == 299


def test_the_displayed_record_of_a_conversation_shows_at_most_max_record_turns() -> None:
    """The record a run's display carries (its text/html, text/markdown and text/plain) bounds the
    turns; run.transcript() above keeps them all."""
    bundle = api._record(long_conversation(300), CCExec())()  # type: ignore[arg-type]
    assert bundle["text/markdown"].count("**Follow-up ") == MAX_RECORD_TURNS - 1
    assert all("100 turns not shown (follow-ups 100 to 199" in form for form in bundle.values())


def test_a_conversations_record_forms_show_the_same_turns_and_count_the_ones_left_out() -> None:
    """Three hundred turns: the HTML, the Markdown and the text show the first 100 and the last 100,
    and between them one line counts the 100 left out, which follow-ups they were and their calls."""
    transcript = Transcript(long_conversation(300), max_turns=MAX_RECORD_TURNS)
    page, markdown, text = transcript.html(), transcript.markdown(), transcript.text()
    half = MAX_RECORD_TURNS // 2
    shown = [*range(half), *range(300 - half, 300)]
    assert [int(n) for n in re.findall(r'class="cc-turn cc-turn-(\d+)"', page)] == shown
    assert [int(n) for n in re.findall(r"\*\*Follow-up (\d+)\*\*", markdown)] == shown[1:]
    assert [int(n) for n in re.findall(r"\[follow-up (\d+)\]", text)] == shown[1:]
    words = "100 turns not shown (follow-ups 100 to 199, with 100 tool calls): "
    assert page.count(words) == markdown.count(words) == text.count(words) == 1
    assert page.index(words) < page.index('class="cc-turn cc-turn-200"')
    assert markdown.index("**Follow-up 99**") < markdown.index(words) < markdown.index("**Follow-up 200**")
    assert "echo 150" not in page + markdown + text and "echo 250" in page + markdown + text


def test_a_conversations_record_shows_earlier_turns_cards_as_it_did_at_their_end() -> None:
    """Four turns of 30 Bash calls each printing 10,000 characters: the record made at the end of the
    fourth shows the first two turns as the one made at the end of the third did (the budget is
    spent in reading order: the first turn's results whole, the second's first ones, none after)."""
    interpreter = ClaudeInterpreter(prompt="prompt 0")
    run = SimpleNamespace(label="claude: prompt 0", state=finished_state(), interpreter=interpreter,
                          options={"prompt": "prompt 0"})
    pages = []
    for index in range(4):
        interpreter.begin_turn(f"prompt {index}")
        feed_tool_calls(interpreter, range(30 * index, 30 * index + 30), edits=False)
        pages.append(Transcript(run).html())
    assert [turn_of(pages[3], index) for index in range(2)] == [turn_of(pages[2], index) for index in range(2)]
    assert [turn_of(pages[3], index).count("<details") for index in range(3)][::2] == [30, 0]
    assert 0 < turn_of(pages[3], 1).count("<details") < 30


def test_a_long_tool_error_is_cut_with_an_ellipsis() -> None:
    """A failed tool's first line is cut at 100 characters and says so with "…" (it was cut silently)."""
    tool = ToolCall("t1", "Bash", {"command": "make"}, result="E" * 150 + "\nmore", status="done", is_error=True)
    line = _tool_markdown(tool)
    assert line.endswith(" → error: " + "E" * 99 + "…")


def edit_call(old: str, new: str, **more: Any) -> ToolCall:
    change = {"file_path": "/w/notes.txt", "old_string": old, "new_string": new, **more}
    return ToolCall("t1", "Edit", change, result="The file has been updated.", status="done")


def test_the_markdown_record_shows_an_edits_change_as_a_diff_under_its_call() -> None:
    """An Edit's record gives its change (it said only the file and "1 line"): a diff block
    under the call, with the lines added and removed; the list stays one list."""
    item = _tool_markdown(edit_call("beta\ngamma", "BETA\ngamma"))
    assert item.startswith("- ✓ **Edit** `/w/notes.txt` → 1 line · change +1 −1\n\n  ```diff\n")
    tokens = MarkdownIt("commonmark").parse(item)
    fences = [token for token in tokens if token.type == "fence"]
    assert [(fence.info, fence.content) for fence in fences] == [("diff", "@@ edit @@\n-beta\n+BETA\n gamma\n")]
    assert [token.type for token in tokens].count("bullet_list_open") == 1


def test_an_edits_change_cannot_break_out_of_its_block() -> None:
    """Backticks and HTML in the edited text stay inside the diff block (Markdown) and are
    escaped (HTML); a change of 500 lines shows its first 60 and says how many more."""
    hostile = edit_call("x", "```\n<img src=x onerror=alert(1)>\n# heading")
    assert_inert(PERMISSIVE.render(_tool_markdown(hostile)))
    html_card = render_tool_cards_html(SimpleNamespace(tool_calls=[hostile]))
    assert "<img" not in html_card and "&lt;img src=x onerror=alert(1)&gt;" in html_card
    long = _tool_markdown(edit_call("", "\n".join(f"line {n}" for n in range(500))))
    assert "+line 58\n" in long and "+line 59\n" not in long and "… 441 more lines not shown" in long
    assert "change +500 −0" in long


def test_an_edits_hunk_headers_carry_no_line_numbers_that_read_as_the_files() -> None:
    """The tool input says what is replaced, not where: a change of the file's line 40 read
    ``@@ -1 +1 @@`` (lines of the snippet). Now an edit's first hunk reads ``@@ edit @@``,
    a MultiEdit's ``@@ edit 2 of 2 @@``, a later hunk ``@@ … @@``, in Markdown and HTML."""
    far = [f"line {n}" for n in range(12)]
    changed = [*far[:1], "LINE 1", *far[2:10], "LINE 10", *far[11:]]
    multi = ToolCall("t2", "MultiEdit", {"file_path": "/w/a.py", "edits": [
        {"old_string": "a", "new_string": "b"}, {"old_string": "c", "new_string": "d"}]},
        result="ok", status="done")
    tools = [edit_call("\n".join(far), "\n".join(changed)), multi]
    markdown = "\n".join(map(_tool_markdown, tools))
    html_cards = render_tool_cards_html(SimpleNamespace(tool_calls=tools))
    headers = ["@@ edit @@", "@@ … @@", "@@ edit 1 of 2 @@", "@@ edit 2 of 2 @@"]
    assert re.findall(r"@@ [^@]* @@", markdown) == headers
    assert re.findall(r"@@ [^@]* @@", html_cards) == headers
    assert not re.search(r"@@ -\d", markdown + html_cards)


def test_the_html_record_folds_an_edits_change_under_its_call() -> None:
    """The tool card of an Edit carries its diff, folded: ``change · +1 −1``."""
    html_card = render_tool_cards_html(SimpleNamespace(tool_calls=[edit_call("beta", "BETA")]))
    assert '<details class="cc-tool-change"><summary' in html_card and "change · +1 −1</summary>" in html_card
    assert re.search(r'cc-line-remove"[^>]*>-beta</div>.*cc-line-add"[^>]*>\+BETA</div>', html_card)


# A theme's text and background, where the HTML sets none: JupyterLab's light and dark.
THEMES = {"light": ((0, 0, 0), (255, 255, 255)), "dark": ((255, 255, 255), (17, 17, 17))}


def _style(element: str, name: str) -> str | None:
    found = re.search(rf'style="[^"]*(?<![-\w]){name}:([^;"]+)', element)
    return found.group(1).strip() if found else None


def _rgb(value: str | None, unset: tuple[int, int, int]) -> tuple[int, int, int]:
    if value is None:
        return unset
    digits = value[1:] if len(value) == 7 else "".join(2 * digit for digit in value[1:4])  # #fff
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _contrast(text: tuple[float, ...], background: tuple[float, ...]) -> float:
    """WCAG 2 contrast ratio of two sRGB colours."""
    def luminance(rgb: tuple[float, ...]) -> float:
        linear = [v / 3294.6 if v <= 10.0164 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in rgb]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    light, dark = sorted([luminance(text), luminance(background)], reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_an_edits_change_is_readable_in_a_light_and_a_dark_theme() -> None:
    """Each line of the folded change (hunk, removed, added, context, "… more lines") has a
    contrast of 4.5:1 or more in JupyterLab's light and dark themes: in the dark one the hunk
    line's #0550ae sat on the theme's near-black at 2:1, as the block set no background."""
    change = edit_call("\n".join(f"old {n}" for n in range(70)), "\n".join(f"new {n}" for n in range(70)) + "\nsame")
    card = render_tool_cards_html(SimpleNamespace(tool_calls=[change]))
    block = re.search(r'<details class="cc-tool-change">.*?<pre [^>]*>', card)
    assert block, card
    lines = re.findall(r'<div class="cc-line cc-line-\w+"[^>]*>', card)
    assert {"hunk", "remove", "note"} <= {re.search(r"cc-line-(\w+)", each).group(1) for each in lines}  # type: ignore[union-attr]
    for theme, (text, background) in THEMES.items():
        pre_text, pre_ground = _rgb(_style(block[0], "color"), text), _rgb(_style(block[0], "background"), background)
        for each in lines:
            ground, own = _rgb(_style(each, "background"), pre_ground), _rgb(_style(each, "color"), pre_text)
            opacity = float(_style(each, "opacity") or 1)
            colour = tuple(opacity * c + (1 - opacity) * g for c, g in zip(own, ground, strict=True))
            assert _contrast(colour, ground) >= 4.5, (theme, each, _contrast(colour, ground))


def test_a_claude_error_is_readable_in_a_light_and_a_dark_theme() -> None:
    """A failed run's error, a failed follow-up's and the note of a run that ended without a
    result have a contrast of 4.5:1 or more in both themes: their #b00020 on the dark theme's
    near-black read at 2.6:1 ("No result from Claude: the run was cancelled")."""
    from cc_executor_nb.claude.render import claude_body_html, render_claude_html, render_error_html
    from cc_executor_nb.claude.streamjson import ClaudeRun

    from .test_claude_render import error_run
    from .test_streamjson import conversation

    failed_turn = result(subtype="error_during_execution", is_error=True, errors=["boom"])
    follow_up = conversation(("hi", [*streamed_text("m1", "hello"), result(result="hello")]), ("again", [failed_turn]))
    rendered = {"error": render_error_html(error_run()), "follow-up": render_claude_html(follow_up, True),
                "no result": claude_body_html(ClaudeRun(), status="cancelled", exit_code=-15)}
    for name, html_text in rendered.items():
        element = re.search(r'<div class="cc-(?:error|no-result)"[^>]*>', html_text)
        assert element, (name, html_text)
        for theme, (text, background) in THEMES.items():
            colour, ground = _rgb(_style(element[0], "color"), text), _rgb(_style(element[0], "background"), background)
            assert _contrast(colour, ground) >= 4.5, (name, theme, element[0], _contrast(colour, ground))


def test_a_tools_decision_is_readable_in_a_light_and_a_dark_theme() -> None:
    """The words after a tool ("allowed by the policy", "denied by you: no", "cancelled") have a
    contrast of 4.5:1 or more in both themes: their colour at opacity 0.75 on the dark theme's
    near-black read at 2.9:1 (allowed) and 1.9:1 (denied)."""
    decided = {"allowed": "policy", "denied": "widget", "cancelled": "cli"}
    calls = [ToolCall(f"t-{status}", "Bash", {"command": "ls"}) for status in decided]
    decisions = {f"t-{status}": PermissionRequest(f"q-{status}", "Bash", {"command": "ls"}, status=status,
                                                  decided_by=who, message="no", tool_use_id=f"t-{status}")
                 for status, who in decided.items()}
    cards = render_tool_cards_html(SimpleNamespace(tool_calls=calls), decisions)
    words = re.findall(r'<span class="cc-decision cc-decision-\w+"[^>]*>', cards)
    assert len(words) == 3, cards
    for theme, (text, background) in THEMES.items():
        for each in words:
            ground, own = _rgb(_style(each, "background"), background), _rgb(_style(each, "color"), text)
            opacity = float(_style(each, "opacity") or 1)
            colour = tuple(opacity * c + (1 - opacity) * g for c, g in zip(own, ground, strict=True))
            assert _contrast(colour, ground) >= 4.5, (theme, each, _contrast(colour, ground))


def test_markdown_notes_thinking_and_retries_without_their_text() -> None:
    """Thinking is a one-line note; an API retry and the error are named."""
    think = Transcript(claude_run("think")).markdown()
    assert "*12 words of thinking (in `run.thinking`)*" in think and "carefully" not in think
    failed = Transcript(claude_run("error_529")).markdown()
    assert "- API overloaded (529), retry 1 of 1 in 0.6 s" in failed
    assert "**API overloaded (529): API Error: 529 Overloaded." in failed


def test_the_markdown_record_lists_each_decision_under_its_turn() -> None:
    """A conversation's Markdown: turn 1's decision before "Follow-up 1", the follow-up's after it
    (every decision was listed at the top, the follow-up's section had none)."""
    md = Transcript(conversation_run()).markdown()
    first, second = "- Bash · touch one.txt → allowed by you", "- Bash · touch two.txt → denied by you: not now"
    assert md.index(first) < md.index("**Follow-up 1**") < md.index(second)


def test_the_markdown_record_labels_its_retries_and_permission_questions() -> None:
    """The retries and the decisions are lists under a label saying what they are (they were
    bare bullets, with nothing to tell a retry list from a list of approvals)."""
    retried = Transcript(claude_run("error_529")).markdown()
    assert "**Retries**\n\n- API overloaded (529), retry 1 of 1 in 0.6 s" in retried
    md = Transcript(conversation_run()).markdown()
    assert "**Permission questions**\n\n- Bash · touch one.txt → allowed by you" in md
    assert "**Permission questions**\n\n- Bash · touch two.txt → denied by you: not now" in md


def test_the_html_record_keeps_the_retries_the_markdown_does() -> None:
    """The HTML record of a finished run lists its retries, collapsed (it had none: the retry
    line is only drawn while the run is live)."""
    html = Transcript(claude_run("error_529")).html()
    assert "1 API retry</summary>" in html and "API overloaded (529), retry 1 of 1 in 0.6 s" in html


def test_the_markdown_records_figures_keep_no_needless_backslash() -> None:
    """A footer's duration reads "1.3 s", not "1\\.3 s" (each item was escaped as if it began a
    line, where "1." starts a list); a figure that does begin a line is still escaped."""
    interpreter = ClaudeInterpreter(prompt="p")
    interpreter.feed("stdout", result(result="ok", duration_ms=1300, total_cost_usd=0.5) + "\n")
    interpreter.finish()
    run = SimpleNamespace(label="claude: p", state=finished_state(), interpreter=interpreter, options={"prompt": "p"})
    footer = Transcript(run).markdown().rstrip("\n").rsplit("\n", 1)[-1]
    assert " · 1.3 s" in footer and "\\." not in footer
    assert r"\$0.5000" in footer  # a dollar sign still cannot open math
    assert markdown_escape("1. not a list") == r"1\. not a list"
    assert markdown_escape("1. <b>", line_start=False) == r"1. \<b\>"


def test_the_text_record_puts_each_decision_in_its_turn() -> None:
    """A conversation's text record: turn 1's [permission] line before "[follow-up 1]", the
    follow-up's after it (every decision came before turn 1's tools)."""
    text = Transcript(conversation_run()).text()
    first, second = "[permission] Bash · touch one.txt → allowed by you", "[permission] Bash · touch two.txt → denied"
    assert text.index(first) < text.index("[follow-up 1]") < text.index(second)


def test_the_html_record_marks_each_decision_on_its_turns_tool() -> None:
    """A conversation's HTML: each decision on its own tool's card, in its own turn."""
    page = Transcript(conversation_run()).html()
    turn_1, turn_2 = page.split('class="cc-turn cc-turn-1"')
    assert "allowed by you" in turn_1 and "denied by you: not now" in turn_2 and "denied" not in turn_1


def test_a_conversation_between_turns_records_how_long_its_turn_took() -> None:
    """A `--wait` run whose process waits for a follow-up: every form's header says how long
    the turn took (it had no time at all: "completed · exit code ..." with no "took"); a
    follow-up's header counts that turn alone."""
    state = RunState()
    state.apply(methods.PROCESS_STARTED, {"pid": 7, "pgid": 7, "argv": ["claude"], "seq": 1}, now=0.0)
    state.apply(methods.CONVERSATION_TURN, {"status": "running", "turn": 1}, now=0.2)
    state.apply(methods.CONVERSATION_TURN, {"status": "completed", "turn": 1}, now=5.1)
    run = SimpleNamespace(label="claude: p", state=state, interpreter=ClaudeInterpreter(prompt="p"),
                          options={"prompt": "p"})
    assert state.between_turns and not state.finished
    record = Transcript(run)
    assert record.markdown().startswith("### claude: p\n\n**completed** · took 5.1 s\n")
    assert record.text().splitlines()[1] == "completed · took 5.1 s"
    assert '<span class="ccx-clock">took 5.1 s</span>' in record.html()
    state.apply(methods.CONVERSATION_TURN, {"status": "running", "turn": 2}, now=60.0)
    state.apply(methods.CONVERSATION_TURN, {"status": "completed", "turn": 2}, now=63.2)
    assert Transcript(run).text().splitlines()[1] == "completed · turn 2 took 3.2 s"


def test_a_short_run_or_turn_records_milliseconds_as_the_footer_does() -> None:
    """A run of 78 ms reads "took 78 ms" in every form (it read "took 0.0 s" above a footer's
    "102 ms"), and so does a follow-up turn of 78 ms."""
    run = claude_run("haiku", "write 3 haikus")
    run.state = finished_state(duration=0.078)
    record = Transcript(run)
    assert record.markdown().startswith("### claude: write 3 haikus\n\n**completed** · exit code 0 · took 78 ms\n")
    assert record.text().splitlines()[1] == "completed · exit code 0 · took 78 ms"
    assert '<span class="ccx-clock">took 78 ms</span>' in record.html()
    state = RunState()
    state.apply(methods.PROCESS_STARTED, {"pid": 7, "pgid": 7, "argv": ["claude"], "seq": 1}, now=0.0)
    for turn, (start, end) in enumerate([(0.1, 0.5), (60.0, 60.078)], start=1):
        state.apply(methods.CONVERSATION_TURN, {"status": "running", "turn": turn}, now=start)
        state.apply(methods.CONVERSATION_TURN, {"status": "completed", "turn": turn}, now=end)
    run.state = state
    assert Transcript(run).text().splitlines()[1] == "completed · turn 2 took 78 ms"


def test_an_interrupted_turns_footer_keeps_its_cost_without_zero_tokens() -> None:
    """An interrupted turn's result reports 0 in / 0 out tokens and a cost: every footer (HTML,
    Markdown, text) keeps the cost and drops the zeros (they read "$0.0042 · 0 in / 0 out
    tokens"); a turn with tokens keeps them."""
    interpreter = ClaudeInterpreter(prompt="p")
    interpreter.feed("stdout", result(subtype="error_during_execution", is_error=True, total_cost_usd=0.0042,
                                      usage={"input_tokens": 0, "output_tokens": 0}, duration_ms=300) + "\n")
    interpreter.finish()
    run = SimpleNamespace(label="claude: p", state=finished_state(), interpreter=interpreter, options={"prompt": "p"})
    record = Transcript(run)
    for form in (record.html(), record.markdown(), record.text()):
        assert "0.0042 · " in form and "out tokens" not in form, form
    spent = ClaudeInterpreter(prompt="p")
    spent.feed("stdout", result(usage={"input_tokens": 0, "output_tokens": 7}) + "\n")
    spent.finish()
    run.interpreter = spent
    assert "0 in / 7 out tokens" in Transcript(run).markdown()


def test_a_cancelled_runs_footer_leaves_out_the_clis_turn_count() -> None:
    """A story cancelled in its first answer read "interrupted · $0.0090 · 2 agent turns": after
    an interrupt the CLI's num_turns counts no turn that happened. Every footer (HTML, Markdown,
    text) now leaves it out; a completed run keeps "1 agent turn"."""
    interpreter = ClaudeInterpreter(prompt="story")
    interpreter.begin_turn("story")
    interpreter.feed("stdout", "".join(each + "\n" for each in streamed_text("m1", "Once upon")))
    interpreter.note_interrupt()
    interpreter.feed("stdout", result(subtype="error_during_execution", is_error=True, total_cost_usd=0.009,
                                      num_turns=2) + "\n")
    interpreter.finish()
    run = SimpleNamespace(label="claude: story", state=finished_state("cancelled", 143), interpreter=interpreter,
                          options={"prompt": "story"})
    record = Transcript(run)
    footers = [re.search(r'class="cc-footer"[^>]*>([^<]*)<', record.html()).group(1),  # type: ignore[union-attr]
               record.markdown().rstrip().splitlines()[-1], record.text().rstrip().splitlines()[-1]]
    for footer in footers:
        assert "interrupted" in footer and "0.0090" in footer and "agent turn" not in footer, footer
    completed = Transcript(claude_run("haiku"))
    assert all("· 1 agent turn ·" in form for form in (completed.html(), completed.markdown(), completed.text()))


def test_an_interrupted_runs_footer_says_its_time_is_the_turns() -> None:
    """A cancelled run's header read "took 845 ms" and its footer "interrupted · $0.0090 ·
    253 ms" (the CLI's time to the interrupt): two times for one run. Every footer now says
    whose time it is, "interrupted after 253 ms", and gives it once."""
    interpreter = ClaudeInterpreter(prompt="story")
    interpreter.begin_turn("story")
    interpreter.feed("stdout", "".join(each + "\n" for each in streamed_text("m1", "Once upon")))
    interpreter.note_interrupt()
    interpreter.feed("stdout", result(subtype="error_during_execution", is_error=True, total_cost_usd=0.009,
                                      duration_ms=253) + "\n")
    interpreter.finish()
    run = SimpleNamespace(label="claude: story", state=finished_state("cancelled", 143, duration=0.845),
                          interpreter=interpreter, options={"prompt": "story"})
    record = Transcript(run)
    footers = [re.search(r'class="cc-footer"[^>]*>([^<]*)<', record.html()).group(1),  # type: ignore[union-attr]
               record.markdown().rstrip().splitlines()[-1], record.text().rstrip().splitlines()[-1]]
    for footer in footers:
        assert "interrupted after 253 ms · " in footer and footer.count("253 ms") == 1, footer
    assert "took 845 ms" in record.text()


def test_an_interrupted_run_killed_before_its_result_says_no_result_in_every_footer() -> None:
    """Interrupted, then killed before Claude's result: the text and Markdown footers read "no result
    · model · session", while the widget's and the HTML record's had no status at all ("claude-test ·
    session s1"). Every form now says "no result" first, and none "interrupted after" a time it lacks."""
    interpreter = ClaudeInterpreter(prompt="story")
    interpreter.begin_turn("story")
    interpreter.feed("stdout", "".join(each + "\n" for each in streamed_text("m1", "Once upon")))
    interpreter.note_interrupt()
    interpreter.finish()
    run = SimpleNamespace(label="claude: story", state=finished_state("cancelled", -15, duration=0.845),
                          interpreter=interpreter, options={"prompt": "story"})
    record = Transcript(run)
    with interpreter.locked() as claude:  # as the widget's body renders it
        widget = claude_body_html(claude, status="cancelled", exit_code=-15)
    footers = [re.search(r'class="cc-footer"[^>]*>([^<]*)<', page).group(1)  # type: ignore[union-attr]
               for page in (widget, record.html())]
    footers += [record.markdown().rstrip().splitlines()[-1], record.text().rstrip().splitlines()[-2]]
    for footer in footers:
        assert re.sub(r"[`\\]", "", footer).endswith("no result · claude-test · session s1"), footers


def test_a_live_runs_record_says_it_is_not_the_final_one() -> None:
    """A record made while the run is live (what a notebook saved mid-run keeps) read
    "starting · no output", as if the command had printed nothing: every form now says the run
    was still running and this is not its final record, and "no output yet"; once it ended,
    neither."""
    state = RunState()
    state.apply(methods.PROCESS_STARTED, {"pid": 7, "pgid": 7, "argv": ["x"], "seq": 1}, now=0.0)
    live = Transcript(SimpleNamespace(label="sleep 30", state=state, interpreter=None, options={"command": "sleep 30"}))
    text, markdown, page = live.text(), live.markdown(), html.unescape(live.html())
    assert f"[in progress] {IN_PROGRESS_NOTE}" in text and "[no output yet]" in text
    assert f"*{markdown_escape(IN_PROGRESS_NOTE)}*" in markdown and "*no output yet*" in markdown
    assert IN_PROGRESS_NOTE in page and "<em>no output yet</em>" in page
    ended = Transcript(command_run())
    assert not any(IN_PROGRESS_NOTE in html.unescape(form) or "output yet" in form
                   for form in (ended.text(), ended.markdown(), ended.html()))


def test_a_live_runs_html_record_has_no_live_only_indicators() -> None:
    """A record saved mid-run showed "○ waiting for heartbeat", "elapsed 3 s", "no output for
    2 s" and the CPU and memory figures: a live widget's indicators, frozen in a saved page
    beside the note that the run was still running. It now says how long the run had been
    running, as the Markdown does, and nothing live."""
    state, now = RunState(), time.monotonic() - 3
    state.apply(methods.CONNECTED, {"session_id": "s", "heartbeat_interval": 20, "inactivity_threshold": 1}, now=now)
    state.apply(methods.PROCESS_STARTED, {"pid": 7, "pgid": 7, "argv": ["x"], "seq": 1}, now=now)
    resources = {"cpu_percent": 97.0, "rss_bytes": 2_000_000, "num_processes": 1}
    state.apply(methods.PROCESS_METRICS, {"resources": resources, "seq": 2}, now=now + 1)
    live = Transcript(SimpleNamespace(label="sleep 30", state=state, interpreter=None, options={"command": "sleep 30"}))
    page = live.html()
    assert IN_PROGRESS_NOTE in html.unescape(page) and "running for " in page
    for indicator in ("ccx-heartbeat", "heartbeat", "elapsed", "ccx-resources", "CPU", "ccx-inactivity", "ccx-stale"):
        assert indicator not in page, indicator


def test_a_long_prompt_is_quoted_in_full_when_the_label_cuts_it() -> None:
    """When the label does not show the whole prompt, the record quotes it (escaped)."""
    prompt = "write 3 haikus\n<b>about</b> the sea"
    run = claude_run("haiku", prompt)
    run.label = "claude: write 3 haikus <b>about</b>…"
    md = Transcript(run).markdown()
    assert "> write 3 haikus\n> \\<b\\>about\\</b\\> the sea" in md
    assert "<b>" not in Transcript(run).html()


def test_a_long_prompt_scrolls_in_its_own_box_in_the_html_record_and_is_kept_whole() -> None:
    """A 260-line prompt made the exported record cell 6,463 px tall, nearly all prompt: its
    quote is now a 12em scroll box; every line is still there (and whole in the Markdown)."""
    prompt = "\n".join(f"line {n} of a pasted file" for n in range(260))
    run = claude_run("haiku", prompt)
    run.label = "claude: line 0 of a pasted file…"
    page = Transcript(run).html()
    quote = re.search(r'<blockquote class="ccx-prompt" style="([^"]*)">(.*?)</blockquote>', page, re.DOTALL)
    assert quote is not None and "max-height:12em;overflow:auto" in quote.group(1)
    assert quote.group(2).count("of a pasted file") == 260
    assert Transcript(run).markdown().count("of a pasted file") == 261  # and once in the title


def test_a_long_answer_scrolls_in_its_own_box_in_the_html_record_and_is_kept_whole() -> None:
    """A 1,500-word answer made an exported record cell thousands of px tall (the live widget
    scrolls at 40em, the record did not): in the HTML each answer, of one prompt, of a
    conversation's turns and cut at the display's bound, is a 40em scroll box that keeps all
    of its text; the Markdown and text have no box and every word."""
    words = " ".join(f"word{n}" for n in range(1500))
    interpreter = ClaudeInterpreter(prompt="long")
    interpreter.feed("stdout", "".join(each + "\n" for each in [*streamed_text("m1", words), result(result=words)]))
    interpreter.finish()
    one = SimpleNamespace(label="claude: long", state=finished_state(), interpreter=interpreter,
                          options={"prompt": "long"})
    forms = {"one": Transcript(one).html(), "turns": Transcript(conversation_run()).html(),
             "cut": Transcript(one, answer_chars=100).html()}
    for name, page in forms.items():
        boxes = re.findall(r'<div class="cc-answer"([^>]*)>', page)
        assert boxes and all(box == ' style="max-height:40em;overflow:auto"' for box in boxes), (name, boxes)
    assert forms["one"].count("word") == 1500
    assert all(form.count("word") == 1500 and "max-height" not in form
               for form in (Transcript(one).markdown(), Transcript(one).text()))


def claude_run_answering(answer: str, prompt: str) -> Any:
    """A finished one-prompt Claude run whose answer is ``answer``, its title cutting ``prompt``."""
    interpreter = ClaudeInterpreter(prompt=prompt)
    interpreter.feed("stdout", "".join(each + "\n" for each in [*streamed_text("m1", answer), result(result=answer)]))
    interpreter.finish()
    return Transcript(SimpleNamespace(label="claude: " + prompt.partition("\n")[0] + "…", state=finished_state(),
                                      interpreter=interpreter, options={"prompt": prompt}))


def test_a_saved_html_page_shows_long_answers_prompts_and_output_in_full(tmp_path: Path) -> None:
    """run.save("x.html") boxed a 1,500-word answer at 40em (and a long prompt at 12em, a
    command's output at 24em): the notebook's scroll boxes, in a page of its own where the
    page itself scrolls. The page's style now lifts every such box (its !important beats
    their inline style), so each shows in full; the notebook's record keeps its boxes
    (test_browser measures it in Chromium)."""
    one = claude_run_answering(" ".join(f"word{n}" for n in range(1500)),
                               "\n".join(f"line {n} of a pasted file" for n in range(260)))
    command = command_run(("stdout", "".join(f"line {n}\n" for n in range(500))))
    for record in (one, Transcript(conversation_run()), Transcript(command)):
        page = record.save(tmp_path / "x.html").read_text(encoding="utf-8")
        (style,) = re.findall(r"<style>(.*?)</style>", page.split("<body>")[0], re.DOTALL)
        lifted = re.search(r"([^{}]*)\{max-height:none!important;overflow:visible!important\}", style)
        assert lifted is not None, style
        boxed = set(re.findall(r'class="((?:cc-answer|ccx-prompt|ccx-output)\b)[^"]*" style="[^"]*max-height', page))
        assert boxed and boxed <= {name.strip(" .") for name in lifted.group(1).split(",")}, (boxed, lifted.group(1))
    assert "max-height:none" not in one.html()  # the notebook's record keeps its boxes
    page = one.document()
    assert page.count("word") == 1500 and page.count("of a pasted file") == 262  # and in <title> and header


def test_the_text_record_quotes_every_line_of_a_long_prompt() -> None:
    """The plain-text record marked only a prompt's first line with '> ', so a pasted prompt
    with a blank line ran into the answer; every line is quoted, as a follow-up's are."""
    run = claude_run("haiku", "first line\n\nthe file goes on")
    run.label = "claude: first line…"
    text = Transcript(run).text()
    assert "> first line\n> \n> the file goes on\n" in text


def test_the_html_record_is_the_widgets_conversation_under_its_header() -> None:
    """The HTML has the header (title, badge, time), the rendered answer and the footer."""
    page = Transcript(claude_run("haiku", "write 3 haikus")).html()
    assert page.startswith('<div class="ccx-record ccx-run tex2jax_ignore mathjax_ignore">')
    assert 'class="ccx-badge ccx-status-completed"' in page and "took 1.5 s" in page
    assert "Morning kernel wakes<br>\nstreams of tokens softly flow" in page  # a line break per line
    assert re.search(r'class="cc-footer"[^>]*>\$0\.0092 · 2,004 in / 61 out tokens', page)


def test_plain_text_record_has_title_status_answer_and_footer() -> None:
    """text/plain: the title, the status line, the answer, the footer line."""
    text = Transcript(claude_run("haiku", "write 3 haikus")).text()
    lines = text.splitlines()
    assert lines[:2] == ["claude: write 3 haikus", "completed · exit code 0 · took 1.5 s"]
    assert haikus(3) in text and lines[-1].startswith("[result] done · $0.0092")


def test_the_xss_answer_is_inert_in_html_and_markdown() -> None:
    """The markdown xss answer: no img or script element in the HTML, nor in any Markdown rendering."""
    bundle = Transcript(claude_run("markdown_xss")).bundle()
    record = bundle["text/html"]
    assert "<img" not in record and "<script" not in record
    assert "&lt;img src=x onerror=alert(1)&gt;" in record  # shown as text
    rendered = PERMISSIVE.render(bundle["text/markdown"])
    assert_inert(rendered)
    assert "&lt;img src=x onerror=alert(1)&gt;" in rendered and "<h1>Demo report</h1>" in rendered
    assert "<img src=x onerror=alert(1)>" in bundle["text/plain"]  # plain text is text


def test_no_form_of_a_claude_record_carries_terminal_or_bidi_controls(tmp_path: Path) -> None:
    """A run whose prompt, thinking, tool name, input and result, model and session id hold
    OSC 52, OSC 0, CSI, C1, NUL and U+202E: the HTML record, the Markdown, the text and the
    page run.save() writes hold none of them raw (``cat``/``nbconvert --stdout`` stay inert)."""
    prompt = f"ask{HOSTILE}"
    interpreter = ClaudeInterpreter(prompt=prompt)
    lines = hostile_lines(f"THINK\tx\n{HOSTILE}", f"Evil{HOSTILE}", f"ls{HOSTILE}")
    interpreter.feed("stdout", "\n".join(lines) + "\n")
    interpreter.finish()
    run = SimpleNamespace(label=f"claude: {prompt[:5]}", state=finished_state(), interpreter=interpreter,
                          options={"prompt": prompt})
    transcript = Transcript(run)
    page = transcript.save(tmp_path / "run.html").read_text(encoding="utf-8")
    for form in [*transcript.bundle().values(), page]:
        assert not FORBIDDEN.search(form), FORBIDDEN.findall(form)
        assert "⟨U+202E⟩" in form
    assert f"ask{SHOWN}</blockquote>" in page and f"Evil{SHOWN}</strong>" in page


def test_raw_claude_runs_record_their_json_lines() -> None:
    """With raw, a Claude run is recorded like a command: its stream-json output, fenced."""
    run = claude_run("echo", raw=True)
    data = (RECORDINGS / "echo.jsonl").read_text(encoding="utf-8")
    run.state = finished_state(pieces=(("stdout", data),))
    md = Transcript(run, output_chars=len(data)).markdown()
    assert '{"type":"system"' in md and "```\n{" in md


def test_a_claude_run_without_result_says_so_with_the_clis_stderr() -> None:
    """A run that ended without Claude's result gets a note and the CLI's stderr, fenced."""
    interpreter = ClaudeInterpreter()
    interpreter.feed("stderr", "Error: <b>boom</b>\n")
    interpreter.finish()
    run = SimpleNamespace(label="claude: x", state=finished_state("failed", 1), interpreter=interpreter,
                          options={"prompt": "x"})
    md = Transcript(run).markdown()
    assert "**No result from Claude**: the run ended failed" in md
    assert "```\nError: <b>boom</b>\n```" in md
    assert_inert(PERMISSIVE.render(md))
    assert "[no result]" in Transcript(run).text()


def test_the_displayed_answer_is_cut_with_a_note() -> None:
    """answer_chars bounds the answer in every form and says how much was left out."""
    transcript = Transcript(claude_run("story"), answer_chars=100)
    total = len(transcript.view.answer) if transcript.view else 0
    for form in (transcript.markdown(), transcript.html(), transcript.text()):
        assert f"{total - 100:,} more characters" in form
    assert transcript.view is not None and transcript.view.answer[100:200] not in transcript.markdown()


# Commands


def test_a_command_record_says_its_exit_code_once() -> None:
    """The Markdown and text records read "exit code 3", not "exit code 3 · ... · exited with code 3"."""
    run = command_run(("stdout", "out\n"))
    run.state.error = "exited with code 3"
    assert "**failed** · exit code 3 · took 1.5 s\n" in Transcript(run).markdown()
    assert Transcript(run).text().splitlines()[1] == "failed · exit code 3 · took 1.5 s"
    run.state.error = "timed out after 2 s"
    assert "**failed** · exit code 3 · took 1.5 s · timed out after 2 s\n" in Transcript(run).markdown()


def test_a_command_record_has_status_exit_code_and_output_tails() -> None:
    """A command: status and exit code, stdout and stderr tails as fenced blocks."""
    run = command_run(("stdout", "to stdout\n"), ("stderr", "to <stderr>\n"))
    md = Transcript(run).markdown()
    assert md.startswith("### sh -c 'make test'\n\n**failed** · exit code 3 · took 1.5 s")
    assert "**stdout**\n\n```\nto stdout\n```" in md
    assert "**stderr**\n\n```\nto <stderr>\n```" in md
    html_record = Transcript(run).html()
    assert "to &lt;stderr&gt;" in html_record and "<stderr>" not in html_record


def test_a_command_record_shows_zero_width_characters_and_keeps_emoji_sequences() -> None:
    """A zero-width space and hidden tag text in a command's output read as markers in every
    form of its record (they passed unmarked, hiding text); an emoji ZWJ sequence stays whole."""
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    run = command_run(("stdout", f"r\u200bm -rf {family}\n"), ("stderr", "ok\U000e0041\n"))
    for form in Transcript(run).bundle().values():
        assert "r⟨U+200B⟩m -rf" in form and family in form and "ok⟨U+E0041⟩" in form, form
        assert "\u200b" not in form and "\U000e0041" not in form


def test_a_command_records_html_has_no_c1_control_or_nul() -> None:
    """C1 controls (CSI, OSC, ST as U+009B, U+009D, U+009C) and NUL in a command's output leave
    its HTML record; colours, the last redraw of a line, tabs and newlines stay."""
    stdout = "a\tb\x00\x9b2J\n\x1b[32m 1%\r\x1b[32m99%\x1b[0m\n"
    run = command_run(("stdout", stdout), ("stderr", "\x9d0;T\x9c\u202e!\n"))
    record = Transcript(run).html()
    assert not FORBIDDEN.search(record), FORBIDDEN.findall(record)
    assert "a\tb2J\n" in record and '<span style="color:#00a250">99%</span>' in record and "⟨U+202E⟩!" in record


def test_output_with_backtick_fences_cannot_break_out_of_its_block() -> None:
    """Output holding ``` and HTML stays inside one fenced block."""
    run = command_run(("stdout", "```\n<img src=x onerror=alert(1)>\n````\n"))
    md = Transcript(run).markdown()
    assert "`````\n```\n<img" in md
    assert_inert(PERMISSIVE.render(md))


def test_only_the_tail_of_a_long_output_is_kept() -> None:
    """output_chars keeps the last characters and says how many there were."""
    run = command_run(("stdout", "x" * 500 + "END\n"), status="completed", exit_code=0)
    md = Transcript(run, output_chars=50).markdown()
    assert "(the last 50 of 504 characters)" in md and md.count("x") < 60 and "END" in md


def test_the_tail_of_a_long_output_starts_at_a_line() -> None:
    """A tail that would start in the middle of a line starts at the next line instead (it began
    with the end of a cut line, 'y' alone on its line); a long single line is kept as cut."""
    lines = "".join(f"{i:04d} yyyy\n" for i in range(100))  # 10 characters a line
    record = Transcript(command_run(("stdout", lines), status="completed", exit_code=0), output_chars=25)
    assert "[stdout] (the last 20 of 1,000 characters)\n0098 yyyy\n0099 yyyy" in record.text()
    assert "(the last 20 of 1,000 characters)" in record.markdown()


def test_the_html_records_tail_starts_at_the_line_the_texts_does() -> None:
    """The HTML record shows the tail the text and Markdown show, from a line's start, and counts
    the rest as not shown: it began inside the cut line ('yyyy' alone) and said 975 characters
    were not shown beside a text that said the last 20 of 1,000."""
    lines = "".join(f"{i:04d} yyyy\n" for i in range(100))  # 10 characters a line
    record = Transcript(command_run(("stdout", lines), status="completed", exit_code=0), output_chars=25)
    page = record.html()
    assert "… 980 earlier characters not shown" in page and ">0098 yyyy\n0099 yyyy\n</pre>" in page
    exact = Transcript(command_run(("stdout", lines), status="completed", exit_code=0), output_chars=30)
    assert "… 970 earlier characters not shown" in exact.html() and ">0097 yyyy\n" in exact.html()


def test_the_html_records_tail_keeps_a_long_single_line_as_cut() -> None:
    """With no line start in the tail, the HTML keeps the cut line, as the text does."""
    record = Transcript(command_run(("stdout", "x" * 500 + "END"), status="completed", exit_code=0), output_chars=50)
    assert "… 453 earlier characters not shown" in record.html() and ">" + "x" * 47 + "END</pre>" in record.html()
    assert "(the last 50 of 503 characters)" in record.text()


@pytest.mark.parametrize("form", ["text", "markdown"])
def test_the_tail_keeps_a_progress_bar_redrawn_past_its_start(form: str) -> None:
    """A progress bar redrawn with \r is one line longer than the tail (tqdm's, under a training
    loop): the record shows its last redraw, as a terminal leaves it. It dropped the cut line
    whole, so the record read 'done' alone ('the last 5 of 23,406 characters')."""
    bar = "".join(f"\rprogress {i:04d} " + "x" * 60 for i in range(300)) + "\ndone\n"
    record = Transcript(command_run(("stdout", bar), status="completed", exit_code=0), output_chars=1000)
    assert "progress 0299 " + "x" * 60 + "\ndone\n" in getattr(record, form)()
    assert "0298" not in getattr(record, form)()


def test_the_tail_ends_no_line_at_a_cut_lines_crlf() -> None:
    """A cut line ended by \r\n is dropped as any cut line (its \r is no redraw)."""
    lines = "".join(f"{i:04d} yyyy\r\n" for i in range(100))  # 11 characters a line
    record = Transcript(command_run(("stdout", lines), status="completed", exit_code=0), output_chars=27)
    assert "[stdout] (the last 22 of 1,100 characters)\n0098 yyyy\n0099 yyyy" in record.text()


def test_the_record_of_a_huge_output_reads_only_its_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Markdown, text and HTML records never read a stream's whole text (a GiB run stays cheap)."""
    run = command_run(("stdout", "y" * 100 + "\n"), ("stderr", "oops\n"), ("stdout", "x" * 500 + "END\n"))
    monkeypatch.setattr(type(run.state.output), "text", lambda *_: pytest.fail("read the whole output"))
    record = Transcript(run, output_chars=50)
    assert "(the last 50 of 605 characters)" in record.markdown()
    assert "(the last 50 of 605 characters)" in record.text() and "END" in record.html()


def test_a_command_without_output_says_so() -> None:
    """No output: the record says so instead of an empty block."""
    assert "*no output*" in Transcript(command_run(status="completed", exit_code=0)).markdown()


# Saving


def test_save_writes_markdown_or_a_page_by_suffix(tmp_path: Path) -> None:
    """.md gets the Markdown; .html a standalone page that allows no script, image or remote load."""
    transcript = Transcript(claude_run("markdown_xss"))
    md = transcript.save(tmp_path / "run.md")
    page = transcript.save(tmp_path / "run.HTML")
    assert md.read_text(encoding="utf-8") == transcript.markdown()
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and transcript.html() in text
    assert "default-src 'none'; style-src 'unsafe-inline'" in text
    assert "<script" not in text and "<img" not in text


def test_save_expands_a_tilde_to_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``save("~/run.md")`` writes into the home directory, not into a folder named ``~``."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    saved = Transcript(command_run()).save("~/run.md")
    assert saved == tmp_path / "run.md" and saved.exists() and not (tmp_path / "~").exists()


def test_save_refuses_another_suffix(tmp_path: Path) -> None:
    """Any other suffix is a ValueError naming it, and nothing is written."""
    with pytest.raises(ValueError, match=r"\.md or \.html.*'\.txt'"):
        Transcript(command_run()).save(tmp_path / "run.txt")
    assert not (tmp_path / "run.txt").exists()


def test_save_to_a_directory_says_it_wants_a_file_name(tmp_path: Path) -> None:
    """save(a directory): a ValueError saying a file name is wanted (it said "not 'a name without suffix'")."""
    with pytest.raises(ValueError, match=r"^save\(\) takes a file name ending \.md or \.html, not the directory "):
        Transcript(command_run()).save(tmp_path)


# Markdown helpers


def test_safe_markdown_keeps_formatting_and_code() -> None:
    """Headings, emphasis, lists, links and code (with its <tags>) render as before."""
    md = safe_markdown(MARKDOWN_XSS + "\nInline `<b>kept</b>` and\n\n~~~\n<i>x</i>\n~~~\n")
    rendered = PERMISSIVE.render(md)
    assert "<h1>Demo report</h1>" in rendered and "<strong>bold</strong>" in rendered
    assert '<a href="https://example.com">link</a>' in rendered
    assert "<code>&lt;b&gt;kept&lt;/b&gt;</code>" in rendered and "&lt;i&gt;x&lt;/i&gt;" in rendered
    assert "print('done')" in rendered
    assert_inert(rendered)


@pytest.mark.parametrize(
    "attack",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](&#106;avascript:alert(1))",
        "[x](java&#x09;script:alert(1))",
        "[x](javascript\\:alert(1))",
        "[x](\njavascript:alert(1))",
        "[x][r]\n\n[r]: javascript:alert(1)",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "<javascript:alert(1)>",
        "![x](https://tracker.example/pixel.png)",
        "<!-- <img src=x onerror=alert(1)> -->",
        "`a\n<div onclick=alert(1)>\n`",
        "<a href='`'>`</a>",
        "`\n`<img src=x onerror=alert(1)>`",
        "1. x\n   ```\n   code\n<img src=x onerror=alert(1)>\n   ```",
    ],
)
def test_safe_markdown_neutralizes_a_known_attack(attack: str) -> None:
    """Each classic injection renders without a tag, handler, image or script URL."""
    rendered = PERMISSIVE.render(safe_markdown(attack))
    assert_inert(rendered)
    assert "<img" not in rendered and "javascript:" not in rendered.split("href=")[-1][:12]


def test_what_the_line_reading_misses_falls_back_to_a_code_block() -> None:
    """A code span opened on an earlier line fools the line-by-line pass: the text comes back fenced."""
    text = "`\n`<img src=x onerror=alert(1)>`"
    assert safe_markdown(text) == fenced(text)
    assert safe_markdown(MARKDOWN_XSS) != fenced(MARKDOWN_XSS)  # the usual answer keeps its formatting


FRAGMENTS = st.sampled_from([
    "<", ">", "<img src=x onerror=alert(1)>", "<script>", "</script>", "`", "``", "```", "~~~",
    "\n", "\n\n", "    ", "[", "]", "(", ")", "](", "javascript:", "&#106;", "&lt;", "!", "\\",
    "<!--", "-->", "<div>", "a", " ", "*", "# ", "> ", "- ", "1. ", "|", "http://x", ":",
])  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(FRAGMENTS, max_size=30).map("".join))
def test_safe_markdown_output_is_inert_for_any_mix(text: str) -> None:
    """However the dangerous fragments are mixed, two permissive renderers' HTML stays inert."""
    safe = safe_markdown(text)
    assert_inert(PERMISSIVE.render(safe))
    assert_inert(str(MISTUNE(safe)))  # a second parser, not the one safe_markdown checks with


def test_markdown_escape_renders_literally() -> None:
    """Escaped text renders as the same characters, not as Markdown or HTML."""
    text = "# *a* _b_ [c](d) <e> `f` $5 & ~g~ | 1. h"
    rendered = PERMISSIVE.render(markdown_escape(text))
    assert rendered == "<p># *a* _b_ [c](d) &lt;e&gt; `f` $5 &amp; ~g~ | 1. h</p>\n"


def test_code_span_and_fence_hold_any_backticks() -> None:
    """A code span or fence is longer than any backtick run inside, so the content stays code."""
    assert PERMISSIVE.render(code_span("a `` b")) == "<p><code>a `` b</code></p>\n"
    block = fenced("x\n```\n<b>y</b>")
    assert PERMISSIVE.render(block) == "<pre><code>x\n```\n&lt;b&gt;y&lt;/b&gt;\n</code></pre>\n"


def test_the_html_record_stays_one_html_block_in_a_markdown_export() -> None:
    """``nbconvert --to markdown`` pastes the ``text/html`` record into Markdown, where a blank
    line ends an HTML block: the record has none, so a child's or a prompt's blank line cannot
    turn the text after it into Markdown (a heading, emphasis), yet reads the same in a browser."""
    stdout = "line one\n\n# Not a heading\n \n*emph* [x](javascript:alert(1))\n\n"
    prompt = "write 3 haikus\n\n# about the sea\n\n*now*"
    for run, text in ((command_run(("stdout", stdout)), stdout), (claude_run("haiku", prompt), prompt)):
        run.label = run.label[:20] + "…"
        record = Transcript(run).html()
        for renderer in (PERMISSIVE.render, MISTUNE):
            assert str(renderer(record)).strip() == record, "the Markdown parser left the HTML block"
        assert text.strip("\n") in html.unescape(re.sub(r"<[^>]+>", "", record))


def test_dollar_signs_in_an_answer_are_not_math_in_the_markdown_record() -> None:
    """JupyterLab's and GitHub's Markdown typeset ``$...$`` as math, so ``costs $5 and $10``
    would lose its dollars; the answer's ``$`` outside code is escaped (the HTML record does not
    typeset math either), and code keeps its ``$`` as written."""
    md = safe_markdown("costs $5 and $10, run `echo $HOME`\n\n```sh\necho $PATH\n```\n")
    assert "costs \\$5 and \\$10" in md and "`echo $HOME`" in md and "echo $PATH" in md
    rendered = PERMISSIVE.render(md)
    assert "costs $5 and $10" in rendered and "<code>echo $HOME</code>" in rendered


def retried_conversation_run() -> SimpleNamespace:
    """A finished two-turn conversation whose follow-up met an API retry (529) before its answer."""
    retry = line(type="system", subtype="api_retry", attempt=1, max_retries=1, retry_delay_ms=584,
                 error_status=529, error="overloaded")
    interpreter = ClaudeInterpreter(prompt="write a story")
    for index, prompt in enumerate(("write a story", "and another"), start=1):
        interpreter.begin_turn(prompt)
        feed = [retry] if index == 2 else []
        for each in (*feed, assistant(f"m{index}", {"type": "text", "text": f"story {index}"}),
                     result(result=f"story {index}")):
            interpreter.feed("stdout", each + "\n")
    interpreter.finish()
    return SimpleNamespace(label="claude: write a story", state=finished_state(), interpreter=interpreter,
                           options={"prompt": "write a story"})


@pytest.mark.parametrize("form", ["markdown", "text", "html"])
def test_a_conversations_retries_are_not_put_in_its_first_turn(form: str) -> None:
    """A follow-up's API retry is listed after the turns in every form (the Markdown put it above
    the first turn's answer, as if that turn had met it, and the text record left it out)."""
    record = getattr(Transcript(retried_conversation_run()), form)()
    assert "API overloaded (529), retry 1 of 1 in 0.6 s" in record
    assert record.index("story 1") < record.index("story 2") < record.index("API overloaded (529), retry")


@pytest.mark.parametrize("form", ["markdown", "text", "html"])
def test_a_conversations_retry_names_the_turn_it_came_in(form: str) -> None:
    """Listed after the turns, a conversation's retry says which turn met it (it named none:
    the reader could not tell the first prompt's from a follow-up's)."""
    record = getattr(Transcript(retried_conversation_run()), form)()
    assert "API overloaded (529), retry 1 of 1 in 0.6 s (follow-up 1)" in record


def test_a_one_prompt_runs_retry_names_no_turn() -> None:
    """A run of one prompt has one turn: its retries carry no turn label."""
    retry = line(type="system", subtype="api_retry", attempt=1, max_retries=1, retry_delay_ms=584,
                 error_status=529, error="overloaded")
    interpreter = ClaudeInterpreter(prompt="write a story")
    for each in (retry, assistant("m1", {"type": "text", "text": "story"}), result(result="story")):
        interpreter.feed("stdout", each + "\n")
    interpreter.finish()
    run = SimpleNamespace(label="claude: write a story", state=finished_state(), interpreter=interpreter,
                          options={"prompt": "write a story"})
    for form in ("markdown", "text", "html"):
        record = getattr(Transcript(run), form)()
        assert "retry 1 of 1 in 0.6 s" in record and "retry 1 of 1 in 0.6 s (" not in record, form


@pytest.mark.parametrize("form", ["markdown", "text", "html"])
def test_a_command_record_keeps_the_whole_command_line_its_title_cuts(form: str) -> None:
    """A long command line is cut in the title ("…"): the record shows it whole below (it had
    only the cut title, so the record could not tell what ran); a title that shows it all is
    not repeated."""
    command = "python train.py --epochs 30 --learning-rate 0.0003 --data /srv/corpus --out runs/7"
    run = command_run(("stdout", "ok\n"), status="completed", exit_code=0)
    run.options, run.label = {"command": command}, command[:59] + "…"
    record = getattr(Transcript(run), form)()
    assert "--out runs/7" in record
    argv_run = command_run(("stdout", "ok\n"))
    argv_run.options = {"command": ["sh", "-c", "make test"]}
    assert getattr(Transcript(argv_run), form)().count("make test") == 1


@pytest.mark.parametrize("fence", ["```python", "~~~~"])
def test_an_answer_cut_inside_a_code_block_does_not_swallow_the_rest_of_the_record(fence: str) -> None:
    """An answer interrupted (or cut) inside a fenced block is closed: what the record adds after
    it (the "Interrupted" note, the next turn, the footer) stays outside the code (it was code)."""
    md = safe_markdown(f"see this\n\n{fence}\nprint(1)") + "\n\n**Interrupted**\n\n---\n\ndone · 1 agent turn"
    rendered = PERMISSIVE.render(md)
    assert "print(1)\n</code></pre>" in rendered
    assert "<strong>Interrupted</strong>" in rendered and "<hr />" in rendered
    assert "<p>done · 1 agent turn</p>" in rendered


REOPENED = ('the process reopened its own stdout by path for writing (e.g. "echo x > /dev/stdout"): '
            'with capture "file" that truncates it, and output not yet read is lost; run it with capture "pipe"')


def test_every_form_of_the_record_says_what_the_server_noticed() -> None:
    """A ``process.notice`` (output lost to a reopened capture file, a run held by the disk
    limit) was in no record: the run read "completed" with half its output gone. Each form now
    says it after the status line, as text mode does, once per message, and escaped."""
    run = command_run(("stdout", "x\nb\n"), status="completed", exit_code=0)
    for seq, message in enumerate((REOPENED, "held <b>x</b>\n*y*", REOPENED), start=101):
        run.state.apply(methods.PROCESS_NOTICE, {"kind": "capture_reopened", "message": message, "seq": seq}, now=1.0)
    record = Transcript(run)
    assert record.text().splitlines()[2:4] == [f"[note] {REOPENED}", "[note] held <b>x</b> *y*"]
    md = record.markdown()
    assert md.count("*note: the process reopened its own stdout by path") == 1
    assert "*note: held \\<b\\>x\\</b\\> \\*y\\**" in md
    assert_inert(PERMISSIVE.render(md))
    page = record.html()
    assert page.count('class="ccx-notice"') == 2 and "note: held &lt;b&gt;x&lt;/b&gt;" in page
    assert html.escape(REOPENED) in page and "<b>x" not in page


def test_the_displayed_record_shows_the_start_of_each_long_prompt_and_counts_the_rest() -> None:
    """A first prompt of 50,000 characters and a follow-up of 100,000 (pasted documents): the display's
    record shows the first MAX_RECORD_PROMPT_CHARS of each, in every form, and counts the rest (the
    record was as big as its prompts); run.transcript() keeps them whole."""
    first, follow = "first " * 8_333 + "ab", "follow " * 14_285 + "fine."
    assert (len(first), len(follow)) == (50_000, 100_000)
    interpreter = ClaudeInterpreter(prompt=first)
    for index, prompt in enumerate((first, follow)):
        interpreter.begin_turn(prompt)
        interpreter.feed("stdout", "\n".join(tool_turn_lines(index, f"answer {index}")) + "\n")
    interpreter.finish()
    run = SimpleNamespace(label="claude: first first first …", state=finished_state(), interpreter=interpreter,
                          options={"prompt": first})
    bundle = api._record(run, CCExec())()  # type: ignore[arg-type]
    for form in ("text/plain", "text/markdown", "text/html"):
        shown = bundle[form]
        assert len(shown) < 4 * MAX_RECORD_PROMPT_CHARS, form
        assert f"… {50_000 - MAX_RECORD_PROMPT_CHARS:,} more characters of this prompt not shown" in shown, form
        assert f"… {100_000 - MAX_RECORD_PROMPT_CHARS:,} more characters of this prompt not shown" in shown, form
    whole = Transcript(run)  # type: ignore[arg-type]
    for form in (whole.text(), whole.markdown(), whole.html()):
        assert first in form and follow.strip() in form and "more characters of this prompt" not in form


# A conversation's record, built again at each turn's end


def _conversation_turn(index: int) -> list[str]:
    """Turn ``index`` of a made-up conversation: thinking around a call, a call and Markdown, or
    a call and a streamed sentence that the CLI confirms late, with more words (in turn ``index + 5``)."""
    if index % 3 == 0:
        return think_run_think_answer(f"th{index}", f"first, run {index}", f"then, read {index}")
    if index % 3 == 1:
        return tool_turn_lines(index, f"**Answer {index}**: `code` and a [link](https://example.com/{index}).")
    call = {"type": "tool_use", "id": f"toolu_late{index}", "name": "Bash", "input": {"command": f"sleep {index}"}}
    return [assistant(f"call{index}", call), *streamed_text(f"late{index}", "Waiting ", f"on {index}."),
            result(result="")]


def _grow_conversation(interpreter: ClaudeInterpreter, index: int) -> None:
    """Feed turn ``index``, after the late confirmation of turn ``index - 5``'s sentence when it had one."""
    interpreter.begin_turn(f"follow-up {index}")
    late = index - 5
    confirmed = {"type": "text", "text": f"Waiting on {late}: it woke."}
    lines = [assistant(f"late{late}", confirmed)] if late >= 0 and late % 3 == 2 else []
    interpreter.feed("stdout", "\n".join([*lines, *_conversation_turn(index)]) + "\n")


def test_a_record_built_again_at_each_turns_end_is_the_one_built_afresh() -> None:
    """A conversation of thinking, tool calls and Markdown whose record leaves turns, calls,
    thinking, text and bodies out, and whose earlier turns change late (a sentence confirmed with
    more words five turns on): at each
    turn's end the record built with what the earlier builds kept (RecordCache) is, in every form,
    the one built from nothing."""
    interpreter = ClaudeInterpreter(prompt="follow-up 0")
    run = SimpleNamespace(label="claude: follow-up 0", state=finished_state(), interpreter=interpreter,
                          options={"prompt": "follow-up 0"})
    bounds: dict[str, Any] = {"answer_chars": 120, "thinking_chars": 60, "tool_chars": 40, "tool_cards": 5,
                              "max_turns": 8, "thoughts": 4}
    kept = RecordCache()
    for index in range(24):
        _grow_conversation(interpreter, index)
        cached = Transcript(run, texts=kept, **bounds).bundle()  # type: ignore[arg-type]
        assert cached == Transcript(run, **bounds).bundle(), index  # type: ignore[arg-type]
    text = cached["text/plain"]
    assert "turns not shown" in text and "tool calls not shown" in text and "places of thinking not shown" in text
    assert "more characters of this answer" in cached["text/markdown"]
    assert "Waiting on 2: it woke." in text  # turn 2's sentence, confirmed in turn 7


def _record_work(monkeypatch: pytest.MonkeyPatch, turns: int) -> dict[str, int]:
    """The Markdown parses, turn views built and turns' parts read of the display's record built at
    the end of the last of ``turns`` like turns (four sentences and calls each), the record having
    been built at each turn's end before."""
    counts = {"parses": 0, "views": 0, "parts": 0}

    def parse(self: MarkdownIt, *args: Any, **kwargs: Any) -> Any:
        counts["parses"] += 1
        return real_parse(self, *args, **kwargs)

    def view(*args: Any, **kwargs: Any) -> streamjson.TurnView:
        counts["views"] += 1
        return real_view(*args, **kwargs)

    def parts(self: streamjson.TurnView, *args: Any, **kwargs: Any) -> list[streamjson.TurnPart]:
        counts["parts"] += 1
        return real_parts(self, *args, **kwargs)

    real_parse, real_view, real_parts = MarkdownIt.parse, streamjson.TurnView, streamjson.TurnView.parts
    interpreter = ClaudeInterpreter(prompt="turn 0")
    run = SimpleNamespace(label="claude: turn 0", state=finished_state(), interpreter=interpreter,
                          options={"prompt": "turn 0"})
    record = api._record(run, CCExec())  # type: ignore[arg-type]
    for index in range(turns):
        interpreter.begin_turn(f"turn {index}")
        interpreter.feed("stdout", sentences_and_calls(range(4 * index, 4 * index + 4)) + result(result="done") + "\n")
        if index == turns - 1:
            monkeypatch.setattr(MarkdownIt, "parse", parse)
            monkeypatch.setattr(streamjson, "TurnView", view)
            monkeypatch.setattr(real_view, "parts", parts)
        record()
    return counts


def test_a_conversations_record_at_a_turns_end_parses_and_reads_only_that_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The display's record, built at each turn's end, parses the Markdown of the texts that turn
    added and reads the turns since the last build, and their parts: as many at turn 40 as at turn 4
    (it parsed every text shown and read every turn again: 2 parses a text, 2 views and 2 reads of
    the parts a turn)."""
    early = _record_work(monkeypatch, 4)
    monkeypatch.undo()
    late = _record_work(monkeypatch, 40)
    assert late == early
    assert min(early.values()) > 0


def test_the_displayed_record_past_its_turns_bound_is_the_one_built_afresh() -> None:
    """The display's record (api._record, built at each turn's end) of a conversation past
    MAX_RECORD_TURNS turns, some changed five turns late: around the bound and at the end it is, in
    every form, the record a new display builds from nothing."""
    interpreter = ClaudeInterpreter(prompt="follow-up 0")
    run = SimpleNamespace(label="claude: follow-up 0", state=finished_state(), interpreter=interpreter,
                          options={"prompt": "follow-up 0"})
    record = api._record(run, CCExec())  # type: ignore[arg-type]
    last = MAX_RECORD_TURNS + 6
    for index in range(last):
        _grow_conversation(interpreter, index)
        built = record()
        if index in (1, MAX_RECORD_TURNS - 1, MAX_RECORD_TURNS, MAX_RECORD_TURNS + 1, last - 1):
            assert built == api._record(run, CCExec())(), index  # type: ignore[arg-type]
    assert "6 turns not shown" in built["text/plain"] and "Waiting on 2: it woke." in built["text/plain"]
