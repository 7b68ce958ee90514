"""What a person sees of a conversation, without a browser: the approval card, the follow-up
row, the turns, the badge and the text lines (widgets through a dummy comm)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest

from cc_executor_nb.claude import render as claude_render
from cc_executor_nb.claude.interpreter import ClaudeInterpreter
from cc_executor_nb.claude.permissions import ConversationView, PermissionRequest
from cc_executor_nb.claude.render import ClaudeBody, claude_body_html, permission_card_html, render_claude_html
from cc_executor_nb.claude.streamjson import ClaudeRun
from cc_executor_nb.kernel.html import badge_html, header_html
from cc_executor_nb.kernel.runstate import RunState
from cc_executor_nb.kernel.textview import TextView

from .test_claude_render import assert_inert
from .test_streamjson import assistant, block_start, delta, result, start, streamed_text, text
from .test_streamjson import line as json_line
from .test_terminaltext import FORBIDDEN
from .test_widgets import DummyComm, comms  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(30)

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
EDIT = PermissionRequest(
    "q-edit", "Edit", {"file_path": "/w/a.txt", "old_string": "hello", "new_string": "goodbye"},
    description="a.txt", tool_use_id="toolu_1",
)


class Source:
    """A conversation as the body reads it: one replaceable view."""

    def __init__(self, view: ConversationView) -> None:
        self.current = view

    def view(self) -> ConversationView:
        return self.current

    def update(self, **changes: Any) -> None:
        self.current = dataclasses.replace(self.current, version=self.current.version + 1, **changes)


class Controls:
    """Records what the body's buttons ask for."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def decide(self, request_id: str | None, allow: bool, **kwargs: Any) -> None:
        self.calls.append(("decide", request_id, allow, kwargs))

    def send(self, prompt: str) -> None:
        self.calls.append(("send", prompt))

    def interrupt(self) -> None:
        self.calls.append(("interrupt",))

    def end(self) -> None:
        raise RuntimeError("the conversation is over: no more input goes to this process")


@dataclasses.dataclass
class State:
    """The process state the body reads."""

    status: str = "running"
    exit_code: int | None = None
    alive: bool = True


@pytest.fixture
def body(comms: list[DummyComm]) -> Iterator[tuple[ClaudeBody, Source, Controls]]:  # noqa: F811
    """A Claude body over a live conversation with no question yet."""
    source = Source(ConversationView(mode="live", sent=1))
    controls = Controls()
    made = ClaudeBody(ClaudeInterpreter(), source)
    made.bind(controls)
    yield made, source, controls
    made.widget.close()


def test_a_long_answer_scrolls_in_the_live_widget_and_not_in_the_record(
    body: tuple[ClaudeBody, Source, Controls],
) -> None:
    """The live conversation's widget stops at 40em and scrolls (a 1,500-word answer made a cell
    2,898 px tall), as a reversed flex column whose scroll the browser anchors at the bottom (the
    newest text and the footer stay in view; it kept the top); the HTML it holds, which the
    record shares, sets no height of its own."""
    made, _source, _controls = body
    assert (made.html.layout.max_height, made.html.layout.overflow) == ("40em", "auto")
    assert made.html.layout.flex_flow == "column-reverse"
    made.interpreter.feed("stdout", result(result="word " * 1500) + "\n")
    made.render(State(status="completed", alive=False), 0.0)
    answer = re.search(r'<div class="cc-answer"[^>]*>', made.value)
    assert answer is not None and answer.group(0) == '<div class="cc-answer">'


def test_the_body_says_how_much_html_its_last_render_sent(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """What a presenter paces by: the conversation HTML a render replaced, and 0 for a render
    that changed nothing."""
    made, _source, _controls = body
    made.interpreter.feed("stdout", result(result="word " * 1500) + "\n")
    made.render(State(), 0.0)
    assert made.sent_chars == len(made.value) > 7500
    made.render(State(), 0.5)
    assert made.sent_chars == 0


# The card's HTML


def test_the_card_shows_the_tool_and_the_diff() -> None:
    """An Edit's card names the tool and shows -old / +new lines."""
    html = permission_card_html(EDIT)
    assert "Claude wants to use Edit" in html
    assert ">-hello</div>" in html and ">+goodbye</div>" in html and "cc-line-remove" in html


def test_the_card_escapes_everything_from_the_cli() -> None:
    """A hostile command, description, path and tool name stay text."""
    request = PermissionRequest(f"q{HOSTILE}", f"Bash{HOSTILE}", {"command": HOSTILE},
                                description=HOSTILE, blocked_path=HOSTILE)
    html = permission_card_html(request, waiting=2, on_stdin=True)
    assert_inert(html)
    assert "&lt;script&gt;" in html and "2 more questions waiting" in html and "input box" in html


def test_the_card_shows_terminal_and_bidi_controls_instead_of_carrying_them() -> None:
    """OSC 52, OSC 0, CSI, C1, NUL and U+202E in the tool, command, description and path are
    shown (``\\x1b``, ``⟨U+202E⟩``), never carried raw: the card reads as the command runs."""
    evil = "\x1b]52;c;UFdOR\x07\x1b]0;T\x07\x1b[2J\x9b\x00\u202e"
    shown = "\\x1b]52;c;UFdOR\\x07\\x1b]0;T\\x07\\x1b[2J\\x9b\\x00⟨U+202E⟩"
    bash = PermissionRequest("q", "Bash", {"command": f"ls{evil}"}, description=f"d{evil}", blocked_path=f"/p{evil}")
    html = permission_card_html(bash) + permission_card_html(PermissionRequest("r", f"Tool{evil}", {}))
    assert not FORBIDDEN.search(html), FORBIDDEN.findall(html)
    for part in (f"use Tool{shown}</strong>", f"$ ls{shown}</div>", f">d{shown}</div>", f"<code>/p{shown}</code>"):
        assert part in html


def test_turns_show_later_prompts_escaped_and_the_interrupt() -> None:
    """A conversation renders each turn: the follow-up prompt as text, an interrupted turn marked."""
    run = ClaudeRun()
    run.begin_turn("first")
    for line in [*streamed_text("m1", "one"), assistant("m1", text("one")), result(result="one")]:
        run.feed_line(line)
    run.begin_turn(f"second {HOSTILE}")
    for line in streamed_text("m2", "partial"):
        run.feed_line(line)
    run.note_interrupt()
    run.feed_line(result(subtype="error_during_execution", is_error=True, result=None))
    html = render_claude_html(run)
    assert_inert(html)
    assert 'class="cc-prompt"' in html and "second &lt;script&gt;" in html
    assert "Interrupted" in html and "partial" in html and "one" in html
    assert "Claude run failed" not in html  # an interrupt is not shown as an error


def test_a_decided_call_says_who_decided() -> None:
    """Tool cards carry the decision: allowed by you, or denied with the reason."""
    run = ClaudeRun()
    tool = {"type": "tool_use", "id": "toolu_1", "name": "Edit", "input": {"file_path": "/w/a.txt"}}
    run.feed_line(assistant("m1", tool))
    allowed = dataclasses.replace(EDIT, status="allowed", decided_by="widget")
    assert "allowed by you" in render_claude_html(run, decisions={"toolu_1": allowed})
    denied = dataclasses.replace(EDIT, status="denied", decided_by="policy", message=HOSTILE)
    html = render_claude_html(run, decisions={"toolu_1": denied})
    assert "denied by the policy: &lt;script&gt;" in html
    assert_inert(html)


def test_a_tool_card_says_denied_automatically_once() -> None:
    """A call denied for nobody reads "denied automatically: nobody could answer…" on its card
    (it read "denied automatically: Denied automatically: …")."""
    from cc_executor_nb.kernel.prompter import NOBODY_MESSAGE

    run = ClaudeRun()
    run.feed_line(assistant("m1", {"type": "tool_use", "id": "toolu_1", "name": "Edit", "input": {}}))
    denied = dataclasses.replace(EDIT, status="denied", decided_by="auto", message=NOBODY_MESSAGE)
    html = render_claude_html(run, decisions={"toolu_1": denied})
    assert "denied automatically: nobody could answer" in html and "Denied automatically" not in html


# The widgets


def test_the_card_appears_with_a_question_and_goes_with_its_answer(
    body: tuple[ClaudeBody, Source, Controls],
) -> None:
    """Hidden without a question; shown (with the diff) while one waits; hidden once decided."""
    widget, source, _ = body
    widget.render(State(), 0.0)
    assert widget.card_box.layout.display == "none"
    source.update(requests=(EDIT,))
    widget.render(State(), 1.0)
    assert widget.card_box.layout.display is None and "+goodbye" in widget.card.value
    source.update(requests=(dataclasses.replace(EDIT, status="allowed", decided_by="widget"),))
    widget.render(State(), 2.0)
    assert widget.card_box.layout.display == "none"


def test_the_buttons_answer_the_question_shown(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """Allow, Always allow and Deny (with the typed reason) decide the shown question, via the widget."""
    widget, source, controls = body
    source.update(requests=(EDIT,))
    widget.render(State(), 0.0)
    widget.allow_button.click()
    widget.always_button.click()
    widget.reason.value = "not that file"
    widget.deny_button.click()
    assert controls.calls == [
        ("decide", "q-edit", True, {"always": False, "message": "", "via": "widget"}),
        ("decide", "q-edit", True, {"always": True, "message": "", "via": "widget"}),
        ("decide", "q-edit", False, {"always": False, "message": "not that file", "via": "widget"}),
    ]


def test_the_follow_up_row_sends_and_empties(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """Send passes the text and empties the box; Interrupt is enabled once the new turn runs."""
    widget, source, controls = body
    source.update(turn_running=False)
    widget.render(State(status="completed"), 0.0)
    assert widget.follow_up_box.layout.display is None and not widget.send_button.disabled
    assert widget.interrupt_button.disabled  # no turn runs
    widget.follow_up.value = "  and now the tests  "
    widget.send_button.click()
    assert controls.calls == [("send", "and now the tests")] and widget.follow_up.value == ""
    source.update(sent=2, turn_running=True)
    widget.render(State(), 1.0)
    assert not widget.interrupt_button.disabled
    widget.interrupt_button.click()
    assert controls.calls[-1] == ("interrupt",)


def test_a_queued_follow_up_cannot_be_sent_twice(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """Send during a turn queues the text and empties the box: a second click sends nothing."""
    widget, source, controls = body
    source.update(turn_running=True)
    widget.render(State(), 0.0)
    widget.follow_up.value = "echo: from the box"
    widget.send_button.click()
    source.update(queued=1)
    widget.render(State(), 1.0)
    widget.send_button.click()
    assert controls.calls == [("send", "echo: from the box")]


def test_a_draft_typed_after_a_queued_follow_up_survives_its_turn(
    body: tuple[ClaudeBody, Source, Controls],
) -> None:
    """Text typed after a queued follow-up's click stays in the box when that follow-up's turn begins."""
    widget, source, _ = body
    source.update(turn_running=True)
    widget.render(State(), 0.0)
    widget.follow_up.value = "echo: from the box"
    widget.send_button.click()
    widget.follow_up.value = "a draft for later"
    source.update(sent=2)
    widget.render(State(), 1.0)
    assert widget.follow_up.value == "a draft for later"


def test_a_refused_follow_up_stays_in_the_box(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """A follow-up the run refuses (the conversation is over) is kept for the user, with the reason."""
    widget, _, controls = body

    def refuse(prompt: str) -> None:
        raise RuntimeError("the conversation is over: no more input goes to this process")

    controls.send = refuse  # type: ignore[method-assign]
    widget.follow_up.value = "echo: too late"
    widget.send_button.click()
    assert widget.follow_up.value == "echo: too late" and "the conversation is over" in widget.note.value


def test_a_late_click_says_why_instead_of_raising(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """End after the conversation is over: the note says so; nothing raises in the comm handler."""
    widget, _, _ = body
    widget.end_button.click()
    assert "the conversation is over" in widget.note.value


def test_the_row_closes_with_the_process(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """Once the process is gone there is nothing to follow up: the row hides, the notices stay."""
    widget, source, _ = body
    source.update(mode="over", turn_running=False)
    widget.render(State(status="completed", exit_code=0, alive=False), 0.0)
    assert widget.follow_up_box.layout.display == "none"
    source.update(notices=("Ended after 10 min 00 s without a follow-up (idle_timeout); everything is kept.",))
    widget.render(State(status="completed", exit_code=0, alive=False), 1.0)
    assert widget.follow_up_box.layout.display is None and "without a follow-up" in widget.note.value
    assert widget.send_button.disabled


def test_renders_are_skipped_when_nothing_changed(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """Same interpreter version, conversation version and status: no new render."""
    widget, source, _ = body
    widget.render(State(), 0.0)
    count = widget.render_count
    widget.render(State(), 5.0)
    assert widget.render_count == count
    source.update(queued=1)
    widget.render(State(), 6.0)
    assert widget.render_count == count + 1



# A long conversation's turns in the live widget


def fresh_html(made: ClaudeBody, source: Source, state: State) -> str:
    """The body's HTML built from nothing, as the record builds it."""
    decisions = {r.tool_use_id: r for r in source.current.requests if r.tool_use_id}
    stderr = made.interpreter.snapshot().stderr
    with made.interpreter.locked() as run:
        return claude_body_html(run, status=state.status, exit_code=state.exit_code, stderr=stderr,
                                decisions=decisions)


def tool_turn_lines(index: int, answer: str) -> list[str]:
    """A turn that runs ``echo {index}`` and then answers ``answer`` in two streamed pieces."""
    tool_id = f"toolu_{index}"
    call = {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": f"echo {index}"}}
    output = {"type": "tool_result", "tool_use_id": tool_id, "content": f"{index}\n"}
    half = len(answer) // 2
    return [
        assistant(f"call{index}", call), json_line(type="user", message={"role": "user", "content": [output]}),
        *streamed_text(f"m{index}", answer[:half], answer[half:]), assistant(f"m{index}", text(answer)),
        result(result=answer),
    ]


def converse(made: ClaudeBody, source: Source, prompts: range) -> None:
    """Turns of tool calls and Markdown answers, each line followed by a render that must show
    what a fresh build shows."""
    for index in prompts:
        made.interpreter.begin_turn(f"prompt {index}")
        for each in tool_turn_lines(index, f"## Turn {index}\n\n- **bold** `code`\n- [a link](https://x.org/{index})"):
            made.interpreter.feed("stdout", each + "\n")
            made.render(State(), 0.0)
            assert made.value == fresh_html(made, source, State())


def test_the_live_widget_shows_a_long_conversation_as_a_fresh_build_does(
    body: tuple[ClaudeBody, Source, Controls],
) -> None:
    """At every render of a twelve-turn conversation (tool calls, Markdown, decisions, an
    interrupted turn, the end) the widget's HTML is the one built from nothing: keeping the
    finished turns' HTML changes nothing on the page."""
    made, source, _ = body
    converse(made, source, range(6))
    source.update(requests=(dataclasses.replace(EDIT, id="q3", status="allowed", decided_by="widget",
                                                tool_use_id="toolu_3"),))
    converse(made, source, range(6, 11))
    made.interpreter.begin_turn("stopped")
    for each in streamed_text("cut", "half an ans"):
        made.interpreter.feed("stdout", each + "\n")
    made.interpreter.note_interrupt()
    made.interpreter.feed("stdout", result(subtype="error_during_execution", is_error=True, result=None) + "\n")
    for state in (State(), State(status="completed", exit_code=0, alive=False)):
        made.render(state, 0.0)
        assert made.value == fresh_html(made, source, state)
    assert made.value.count('class="cc-turn ') == 12 and "allowed by you" in made.value


def test_a_finished_turn_is_not_built_again_at_a_later_render(
    body: tuple[ClaudeBody, Source, Controls], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With three turns finished and a fourth streaming, a render builds the fourth turn's HTML
    alone (each render parsed every earlier turn's Markdown again: 11.8 ms at 100 turns)."""
    made, source, _ = body
    converse(made, source, range(3))
    made.interpreter.begin_turn("the fourth")
    for each in streamed_text("m4", "streaming"):
        made.interpreter.feed("stdout", each + "\n")
    made.render(State(), 0.0)
    built: list[int] = []
    build = claude_render._turn_html
    monkeypatch.setattr(claude_render, "_turn_html", lambda turn, decisions, **bounds: built.append(turn.index)
                        or build(turn, decisions, **bounds))
    made.interpreter.feed("stdout", delta(0, "text_delta", text=" on") + "\n")
    made.render(State(), 0.0)
    assert built == [3]
    assert made.value == fresh_html(made, source, State())


def test_a_render_while_a_turn_streams_reads_none_of_the_finished_turns(
    body: tuple[ClaudeBody, Source, Controls], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thirty turns finished and a thirty-first streaming: a render reads the last turn's messages
    and calls alone (one turn view, one turn compared with its kept key) and copies no tool call
    (each render built every turn's view, compared every finished turn and took a snapshot of
    every call: 4.5 ms a render at 500 turns, 23 ms at 2,000)."""
    made, source, _ = body
    for index in range(30):
        made.interpreter.begin_turn(f"prompt {index}")
        made.interpreter.feed("stdout", "\n".join(tool_turn_lines(index, f"answer {index}")) + "\n")
    made.interpreter.begin_turn("the live one")
    made.interpreter.feed("stdout", "\n".join(streamed_text("live", "streaming")) + "\n")
    made.render(State(), 0.0)
    views: list[int] = []
    keys: list[int] = []
    take_views, key_of = ClaudeRun.turn_views, claude_render._turn_key
    monkeypatch.setattr(ClaudeRun, "turn_views", lambda run, *first: views.extend(
        view.index for view in take_views(run, *first)) or take_views(run, *first))
    monkeypatch.setattr(claude_render, "_turn_key", lambda turn, decisions: keys.append(turn.index) or key_of(
        turn, decisions))
    monkeypatch.setattr(made.interpreter, "snapshot", lambda: pytest.fail("a render took a snapshot"))
    for piece in (" on", " and on"):
        made.interpreter.feed("stdout", delta(0, "text_delta", text=piece) + "\n")
        made.render(State(), 0.0)
    assert views == keys == [30, 30] and "streaming on and on" in made.value
    monkeypatch.undo()
    assert made.value == fresh_html(made, source, State())


def test_a_late_result_for_a_finished_turns_call_shows_at_the_next_render(
    body: tuple[ClaudeBody, Source, Controls],
) -> None:
    """A call of the first turn whose result comes while the second runs (the finished turns' HTML
    is kept while nothing of theirs changes): its card shows the result at the next render."""
    made, source, _ = body
    made.interpreter.begin_turn("prompt 0")
    call = {"type": "tool_use", "id": "toolu_late", "name": "Bash", "input": {"command": "sleep 9"}}
    for each in (assistant("call", call), result(result="started it")):
        made.interpreter.feed("stdout", each + "\n")
    converse(made, source, range(1, 3))
    assert "late output" not in made.value
    output = {"type": "tool_result", "tool_use_id": "toolu_late", "content": "late output"}
    made.interpreter.feed("stdout", json_line(type="user", message={"role": "user", "content": [output]}) + "\n")
    made.render(State(), 0.0)
    assert "late output" in made.value and made.value == fresh_html(made, source, State())


def test_a_streamed_input_of_an_earlier_turns_call_shows_at_the_render_that_settles_it(
    body: tuple[ClaudeBody, Source, Controls],
) -> None:
    """A call of the first turn still streams its input after the second turn began (the message
    it is in never stopped): the render that reads the new piece shows it (the widget's guard of
    the test below: here the footer's summary settles the input before the turns are read)."""
    made, source, _ = body
    made.interpreter.begin_turn("prompt 0")
    call = {"type": "tool_use", "id": "toolu_slow", "name": "Bash", "input": {}}
    for each in (start("m0"), block_start(0, call), delta(0, "input_json_delta", partial_json='{"command": "ec')):
        made.interpreter.feed("stdout", each + "\n")
    made.interpreter.begin_turn("prompt 1")
    made.render(State(), 0.0)
    made.render(State(), 0.0)  # the finished turn's HTML is kept now
    made.interpreter.feed("stdout", delta(0, "input_json_delta", partial_json='ho LATE-PIECE') + "\n")
    made.render(State(), 0.0)
    assert "LATE-PIECE" in made.value and made.value == fresh_html(made, source, State())


def test_the_turn_cache_shows_an_earlier_turns_input_that_reading_the_last_turn_settled() -> None:
    """The kept HTML of the turns before the last is stamped with :attr:`ClaudeRun.past_version`
    after the turns are read: reading the last turn's view settles a call's streamed input from an
    earlier turn (which bumps the stamp). The stamp was read before: the cache returned the first
    turn as before the new piece, and kept it so (the stamp it held was already the new one)."""
    run = ClaudeRun()
    run.begin_turn("prompt 0")
    call = {"type": "tool_use", "id": "toolu_slow", "name": "Bash", "input": {}}
    for each in (start("m0"), block_start(0, call), delta(0, "input_json_delta", partial_json='{"command": "ec')):
        run.feed_line(each)
    run.begin_turn("prompt 1")
    cache, decisions = claude_render.TurnCache(), {}  # the same mapping at each render, as the widget's
    cache.conversation(run, decisions)
    cache.conversation(run, decisions)  # the first turn's HTML is kept now
    run.feed_line(delta(0, "input_json_delta", partial_json="ho LATE-PIECE"))
    for _ in range(2):  # the render that reads the piece, and the next one
        (first,), _last = cache.conversation(run, decisions)
        assert "LATE-PIECE" in first
        assert first == claude_render._turn_html(run.turn_views()[0], {}, window=claude_render.MAX_LIVE_PIECES)


def test_a_change_to_a_finished_turn_shows_at_the_next_render(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """A question still pending when its turn ended is cancelled afterwards: the finished turn's
    tool card says so at the next render, while a later turn runs."""
    made, source, _ = body
    pending = dataclasses.replace(EDIT, id="q1", tool_use_id="toolu_1")
    source.update(requests=(pending,))
    converse(made, source, range(3))
    assert "cc-decision" not in made.value
    source.update(requests=(dataclasses.replace(pending, status="cancelled", message="the turn ended"),))
    made.render(State(), 0.0)
    assert made.value.count("cc-decision-cancelled") == 1
    assert made.value == fresh_html(made, source, State())


def sent_values(recorded: list[DummyComm], since: list[int]) -> str:
    """Every HTML ``value`` the widgets sent after ``since`` (each comm's message count then), joined."""
    starts = since + [0] * (len(recorded) - len(since))  # a comm made since then: all its messages
    messages = [m for c, start in zip(recorded, starts, strict=True) for m in c.messages[start:]]
    return "".join(str(m.get("state", {}).get("value", "")) for m in messages if isinstance(m, dict))


def test_a_render_while_a_turn_streams_sends_no_finished_turns_html(
    body: tuple[ClaudeBody, Source, Controls], comms: list[DummyComm],  # noqa: F811
) -> None:
    """Twenty turns finished and a twenty-first streaming: a render sends that turn and the footer,
    not the finished turns' HTML again (every render sent the whole conversation: 102.7 K
    characters at 100 turns, up to several renders a second)."""
    made, _source, _ = body
    for index in range(20):
        made.interpreter.begin_turn(f"prompt {index}")
        for each in tool_turn_lines(index, f"## Turn {index}\n\n- **bold** `code`"):
            made.interpreter.feed("stdout", each + "\n")
            made.render(State(), 0.0)
    made.interpreter.begin_turn("the live one")
    for each in streamed_text("live", "streaming"):
        made.interpreter.feed("stdout", each + "\n")
    made.render(State(), 0.0)
    made.interpreter.feed("stdout", delta(0, "text_delta", text=" on") + "\n")
    since = [len(c.messages) for c in comms]
    made.render(State(), 0.0)
    sent = sent_values(comms, since)
    assert "streaming on" in sent and 'class="cc-turn cc-turn-20"' in sent and "cc-footer" in sent
    assert [index for index in range(20) if f'class="cc-turn cc-turn-{index}"' in sent] == []
    assert made.sent_chars == len(sent) < 2000


def thinking_lines(message_id: str, *pieces: str) -> list[str]:
    """A message that streams one thinking block made of ``pieces`` (not confirmed yet)."""
    deltas = [delta(0, "thinking_delta", thinking=piece) for piece in pieces]
    return [start(message_id), block_start(0, {"type": "thinking", "thinking": ""}), *deltas]


def think_then_answer(made: ClaudeBody, index: int, thought: str) -> None:
    """A turn that streams ``thought`` as thinking, then answers ``answer {index}``."""
    made.interpreter.begin_turn(f"prompt {index}")
    lines = [*thinking_lines(f"t{index}", thought),
             assistant(f"t{index}", {"type": "thinking", "thinking": thought}),
             assistant(f"a{index}", text(f"answer {index}")), result(result=f"answer {index}")]
    for each in lines:
        made.interpreter.feed("stdout", each + "\n")
        made.render(State(), 0.0)


def turn_of(html: str, index: int) -> str:
    """The HTML from turn ``index``'s opening tag to the next turn's (or the end)."""
    begin = html.index(f'<div class="cc-turn cc-turn-{index}">')
    after = html.find('<div class="cc-turn cc-turn-', begin + 1)
    return html[begin : after if after >= 0 else len(html)]


def test_a_turns_thinking_is_shown_inside_that_turn(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """Five turns of which the third thinks: its thinking is folded inside the third turn, not
    above the first one (the whole run's thinking was one block above turn 0)."""
    made, source, _ = body
    for index in range(5):
        if index == 2:
            think_then_answer(made, index, "weighing the third prompt")
        else:
            converse(made, source, range(index, index + 1))
    html = made.value
    assert "weighing the third prompt" not in html[: html.index('<div class="cc-turn cc-turn-0">')]
    third = turn_of(html, 2)
    assert third.count("weighing the third prompt") == 1 and html.count("weighing the third prompt") == 1
    assert '<details class="cc-thinking"><summary' in third and ">Thinking</summary>" in third
    assert made.value == fresh_html(made, source, State())


def test_a_thinking_delta_sends_the_live_turn_alone(
    body: tuple[ClaudeBody, Source, Controls], comms: list[DummyComm],  # noqa: F811
) -> None:
    """Three finished turns, the second with 20,000 characters of thinking, and a fourth thinking
    live: a thinking delta sends the live turn and the footer, no finished turn's HTML, and
    under 2,000 characters (the whole run's thinking went again with each delta)."""
    made, source, _ = body
    converse(made, source, range(1))
    think_then_answer(made, 1, "deep " * 4000)
    converse(made, source, range(2, 3))
    made.interpreter.begin_turn("the live one")
    for each in thinking_lines("live", "hmm"):
        made.interpreter.feed("stdout", each + "\n")
    made.render(State(), 0.0)
    assert ">Thinking…</summary>" in turn_of(made.value, 3)
    made.interpreter.feed("stdout", delta(0, "thinking_delta", thinking=", let me see") + "\n")
    since = [len(c.messages) for c in comms]
    made.render(State(), 0.0)
    sent = sent_values(comms, since)
    assert "hmm, let me see" in sent and 'class="cc-turn cc-turn-3"' in sent
    assert [index for index in range(3) if f'class="cc-turn cc-turn-{index}"' in sent] == []
    assert "deep deep" not in sent and made.sent_chars == len(sent) < 2000
    assert made.value == fresh_html(made, source, State())


def test_the_live_widget_keeps_each_turns_thinking_cap_and_sends_a_thinking_delta_alone(
    body: tuple[ClaudeBody, Source, Controls], comms: list[DummyComm],  # noqa: F811
) -> None:
    """Two finished turns of 60,000 characters of thinking (more than a record shows in all) and a
    third thinking live: each finished turn shows the last MAX_THINKING_CHARS of its own thinking
    (the record's total budget is not the widget's), and a thinking delta sends the live turn alone,
    under 2,000 characters."""
    made, source, _ = body
    for index in range(2):
        think_then_answer(made, index, f"{index}" * 60_000)
    made.interpreter.begin_turn("the live one")
    for each in thinking_lines("live", "hmm"):
        made.interpreter.feed("stdout", each + "\n")
    made.render(State(), 0.0)
    for index in range(2):
        shown = turn_of(made.value, index)
        assert shown.count(f"{index}" * 1000) == claude_render.MAX_THINKING_CHARS // 1000
        assert "… 10,000 earlier characters not shown …" in shown
    line = delta(0, "thinking_delta", thinking=", let me see")
    sends_the_live_turn_alone(made, source, comms, line, "hmm, let me see", finished=2, bound=2000)


def sends_the_live_turn_alone(
    made: ClaudeBody, source: Source, comms: list[DummyComm], line: str, shown: str, *, finished: int, bound: int,  # noqa: F811
) -> None:
    """Feeding ``line`` to the live turn, a render sends ``shown`` and none of the ``finished``
    turns, fewer than ``bound`` characters in all, and the widget still equals a fresh build."""
    made.interpreter.feed("stdout", line + "\n")
    since = [len(c.messages) for c in comms]
    made.render(State(), 0.0)
    sent = sent_values(comms, since)
    assert shown in sent and [index for index in range(finished) if f"cc-turn-{index}" in sent] == []
    assert made.sent_chars == len(sent) < bound
    assert made.value == fresh_html(made, source, State())


def big_tool_turn_lines(index: int, calls: int) -> list[str]:
    """A turn of ``calls`` Bash calls, each printing 10,000 characters, then its result."""
    lines = []
    for number in range(calls):
        tool_id = f"toolu_{index}_{number}"
        call = {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": f"echo {index}.{number}"}}
        output = {"type": "tool_result", "tool_use_id": tool_id, "content": "r" * 10_000}
        lines += [assistant(f"m{index}.{number}", call),
                  json_line(type="user", message={"role": "user", "content": [output]})]
    return [*lines, result(result="done")]


def test_the_live_widget_keeps_each_cards_result_and_a_tool_call_sends_the_live_turn_alone(
    body: tuple[ClaudeBody, Source, Controls], comms: list[DummyComm],  # noqa: F811
) -> None:
    """Two finished turns of 30 calls each printing 10,000 characters (more than a record shows of
    tool results in all) and a third running a tool: every finished card shows its result's first
    MAX_TOOL_RESULT_CHARS (the record's total budget is not the widget's), and the live turn's tool
    result sends that turn alone, under 12,000 characters."""
    made, source, _ = body
    for index in range(2):
        made.interpreter.begin_turn(f"prompt {index}")
        for each in big_tool_turn_lines(index, 30):
            made.interpreter.feed("stdout", each + "\n")
    made.interpreter.begin_turn("the live one")
    *calls, _ = big_tool_turn_lines(2, 2)
    for each in calls[:3]:
        made.interpreter.feed("stdout", each + "\n")
    made.render(State(), 0.0)
    for index in range(2):
        shown = turn_of(made.value, index)
        assert shown.count("<details>") == 30 and shown.count("r" * claude_render.MAX_TOOL_RESULT_CHARS) == 30
    sends_the_live_turn_alone(made, source, comms, calls[3], "echo 2.1", finished=2, bound=12_000)


def test_a_conversation_that_thinks_is_shown_as_a_fresh_build_does_and_its_head_holds_no_thinking(
    body: tuple[ClaudeBody, Source, Controls],
) -> None:
    """Turns with and without thinking, each line followed by a render: the widgets join into
    the HTML built from nothing, and the piece above the turns never holds thinking."""
    made, source, _ = body
    for index in range(12):
        if index % 3 == 1:
            think_then_answer(made, index, f"thought {index}")
            assert made.value == fresh_html(made, source, State())
        else:
            converse(made, source, range(index, index + 1))
        assert "cc-thinking" not in pieces_of(made)[0].value
    assert made.value.count('<details class="cc-thinking">') == 4


def test_a_one_prompt_run_shows_its_thinking_above_its_answer_as_before() -> None:
    """A run of one prompt keeps its one thinking block first, before its tools and answer."""
    run = ClaudeRun()
    for each in [*thinking_lines("t", "first, think"), assistant("t", {"type": "thinking", "thinking": "first, think"}),
                 assistant("a", text("the answer")), result(result="the answer")]:
        run.feed_line(each)
    html = claude_body_html(run, status="completed", exit_code=0)
    assert html.index('<details class="cc-thinking">') < html.index("the answer")
    assert "cc-turn" not in html and html.count("first, think") == 1


def announce_run_and_report(message: str) -> list[str]:
    """A turn as the demo's tool prompt streams it: ``I will run a command.``, the Bash call
    (in the same message), its output, then ``The command printed: hi``."""
    call = {"type": "tool_use", "id": f"toolu_{message}", "name": "Bash", "input": {"command": "echo hi"}}
    output = {"type": "tool_result", "tool_use_id": f"toolu_{message}", "content": "hi"}
    return [
        *streamed_text(message, "I will run a command."), assistant(message, text("I will run a command."), call),
        json_line(type="user", message={"role": "user", "content": [output]}),
        *streamed_text(f"{message}-after", "The command printed: hi"),
        assistant(f"{message}-after", text("The command printed: hi")), result(result="The command printed: hi"),
    ]


def in_stream_order(html: str) -> bool:
    """Whether the announcement, the tool card and the report read top to bottom in that order."""
    where = [html.index(mark) for mark in ("I will run a command.", 'class="cc-tool ', "The command printed: hi")]
    return where == sorted(where)


def test_a_turns_text_and_tool_cards_read_in_the_order_they_came(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """A turn that says "I will run a command.", runs it and reports: the sentence is above the
    tool card and the report below it, as they streamed (the card came first, the sentence
    below the command's result)."""
    made, source, _ = body
    made.interpreter.begin_turn("use a tool")
    for each in announce_run_and_report("m0"):
        made.interpreter.feed("stdout", each + "\n")
        made.render(State(), 0.0)
    assert in_stream_order(made.value)
    made.interpreter.begin_turn("a follow-up")
    for each in streamed_text("m1", "streaming"):
        made.interpreter.feed("stdout", each + "\n")
    made.render(State(), 0.0)
    assert in_stream_order(turn_of(made.value, 0)) and made.value.count("The command printed: hi") == 1
    assert made.value == fresh_html(made, source, State())


def think_run_think_answer(message: str, first: str = "first, run it", second: str = "then, read it") -> list[str]:
    """A turn as "think, then use a tool" streams it: thinking ``first``, the Bash call, its output,
    then thinking ``second`` (streamed, then confirmed) and the answer ``It printed hi``."""
    call = {"type": "tool_use", "id": f"toolu_{message}", "name": "Bash", "input": {"command": "echo hi"}}
    output = {"type": "tool_result", "tool_use_id": f"toolu_{message}", "content": "hi"}
    return [
        assistant(message, {"type": "thinking", "thinking": first}, call),
        json_line(type="user", message={"role": "user", "content": [output]}),
        *thinking_lines(f"{message}-after", second),
        assistant(f"{message}-after", {"type": "thinking", "thinking": second}, text("It printed hi")),
        result(result="It printed hi"),
    ]


def thought_where_it_came(html: str, first: str = "first, run it", second: str = "then, read it") -> bool:
    """Whether the first thinking, the tool card, the second thinking and the answer read top to
    bottom in that order, each thinking in a block of its own."""
    where = [html.index(mark) for mark in (first, 'class="cc-tool ', second, "It printed hi")]
    return where == sorted(where) and html.count('<details class="cc-thinking">') == 2


def test_a_turns_thinking_stands_where_it_came_among_its_tool_cards(
    body: tuple[ClaudeBody, Source, Controls],
) -> None:
    """A turn that thinks, runs a command, thinks again and answers: each thinking is folded where
    it came, the first above the card and the second below it (both were one block at the turn's
    top); while the second streams it alone says Thinking…, and a record built afresh is the same."""
    made, source, _ = body
    made.interpreter.begin_turn("think, then use a tool")
    lines = think_run_think_answer("m0")
    for index, each in enumerate(lines):
        made.interpreter.feed("stdout", each + "\n")
        made.render(State(), 0.0)
        if index == 4:  # the second thinking has streamed, not confirmed yet
            assert made.value.count(">Thinking…</summary>") == 1 and made.value.count(">Thinking</summary>") == 1
            assert made.value.index(">Thinking</summary>") < made.value.index(">Thinking…</summary>")
    assert thought_where_it_came(made.value), made.value
    made.interpreter.begin_turn("a follow-up")
    made.render(State(), 0.0)
    assert thought_where_it_came(turn_of(made.value, 0))
    assert made.value == fresh_html(made, source, State())


def test_a_turns_thinking_at_two_places_keeps_the_widgets_cap_for_the_turn(
    body: tuple[ClaudeBody, Source, Controls],
) -> None:
    """A turn that thinks 30,000 characters, runs a command and thinks 30,000 more: the widget shows
    the turn's last MAX_THINKING_CHARS, the second thinking whole and the first's end after a note
    of the 10,000 characters before it."""
    made, _, _ = body
    made.interpreter.begin_turn("think, then use a tool")
    for each in think_run_think_answer("m0", "∴" * 30_000, "∵" * 30_000):
        made.interpreter.feed("stdout", each + "\n")
    made.render(State(), 0.0)
    html = made.value
    assert (html.count("∴"), html.count("∵")) == (claude_render.MAX_THINKING_CHARS - 30_000, 30_000)
    assert html.index("… 10,000 earlier characters not shown …") < html.index("∴") < html.index("∵")


def test_the_scrolling_box_still_reads_as_the_html_shown(body: tuple[ClaudeBody, Source, Controls]) -> None:
    """``view.body.html.value`` (the quickstart's way to read the HTML the browser gets, when
    ``html`` was one HTML widget) is still the whole conversation's HTML, now joined from its pieces."""
    made, source, _ = body
    converse(made, source, range(12))
    assert made.html.value == made.value
    assert 'class="cc-turn cc-turn-0"' in made.html.value and 'class="cc-turn cc-turn-11"' in made.html.value


def pieces_of(made: ClaudeBody) -> list[Any]:
    """The HTML widgets the conversation is shown in, top to bottom."""
    (column,) = made.html.children
    return list(column.children)


def test_each_piece_of_the_live_widget_is_whole_html_and_finished_turns_go_ten_to_a_piece(
    body: tuple[ClaudeBody, Source, Controls],
) -> None:
    """At every render of a 23-turn conversation the widgets join into a fresh build (see
    converse()), each holds whole HTML inside the elements a turn sits in (so MathJax skips it and
    the page's structure is the record's), and the 22 finished turns are in three widgets."""
    made, source, _ = body
    converse(made, source, range(23))
    opening, closing = claude_render.TURN_CONTEXT
    head, *blocks, live = [piece.value for piece in pieces_of(made)]
    assert head.startswith(opening[: opening.index('<div class="cc-run">')]) and head.endswith(closing)
    assert all(block.startswith(opening) and block.endswith(closing) for block in blocks)
    assert live.startswith(opening + '<div class="cc-turn cc-turn-22">') and live.endswith("</div>")
    for value in (head, *blocks, live):
        assert value.count("<div") == value.count("</div>")
    assert [block.count('class="cc-turn ') for block in blocks] == [10, 10, 2]


def test_a_turn_that_joins_its_group_hides_its_copy_in_the_live_piece_with_the_same_message(
    body: tuple[ClaudeBody, Source, Controls],
) -> None:
    """A turn moves from the live piece into its group when the next turn starts: two widgets, two
    messages, and the browser drew the turn twice between them. The group's piece carries, in the
    value that brings the turn, a style that hides that turn in this conversation's live piece
    (scoped to this body: another conversation's turn 11 stays shown)."""
    made, source, _ = body
    converse(made, source, range(13))
    *_, last_group, live = pieces_of(made)
    scope = next(name for name in made.html._dom_classes if name.startswith("ccx-body-"))
    assert "ccx-live-piece" in live._dom_classes
    rule = re.search(r"<style>(.*?)\{display:none\}</style>", last_group.value)
    assert rule is not None
    assert rule.group(1).split(",") == [f".{scope} .ccx-live-piece .cc-turn-{n}" for n in (10, 11)]
    other = ClaudeBody(ClaudeInterpreter(), Source(ConversationView(mode="live", sent=1)))
    assert scope not in other.html._dom_classes
    other.widget.close()


def test_a_finished_turns_piece_is_sent_again_only_when_a_turn_joins_it_or_changes(
    body: tuple[ClaudeBody, Source, Controls], comms: list[DummyComm],  # noqa: F811
) -> None:
    """A turn's end sends the piece it joins once; a decision on a finished turn's tool call
    (a question cancelled after its turn) sends that turn's piece, and no other."""
    made, source, _ = body
    pending = dataclasses.replace(EDIT, id="q1", tool_use_id="toolu_1")
    source.update(requests=(pending,))
    converse(made, source, range(14))
    since = [len(c.messages) for c in comms]
    made.interpreter.begin_turn("prompt 14")
    made.render(State(), 0.0)
    sent = sent_values(comms, since)
    assert sent.count('class="cc-turn cc-turn-13"') == 1 and 'class="cc-turn cc-turn-10"' in sent
    assert 'class="cc-turn cc-turn-9"' not in sent
    since = [len(c.messages) for c in comms]
    source.update(requests=(dataclasses.replace(pending, status="cancelled", message="the turn ended"),))
    made.render(State(), 0.0)
    sent = sent_values(comms, since)
    assert "cc-decision-cancelled" in sent and 'class="cc-turn cc-turn-9"' in sent
    assert 'class="cc-turn cc-turn-10"' not in sent and 'class="cc-turn cc-turn-13"' not in sent
    assert made.value == fresh_html(made, source, State())


# Badge, header and text


def test_the_badge_says_needs_you_and_the_timer_counts_the_wait() -> None:
    """A pending question: "needs you" in the attention colour, "waiting for you for N s"."""
    state = RunState()
    state.apply("process.started", {"pid": 1, "pgid": 1, "argv": ["claude"], "seq": 1}, 0.0)
    state.apply("conversation.question", {"pending": 1}, 10.0)
    assert ">needs you<" in badge_html(state) and "#c2410c" in badge_html(state)
    assert "waiting for you for 25 s" in header_html(state, 35.0)
    state.apply("conversation.question", {"pending": 0}, 40.0)
    assert ">running<" in badge_html(state)


@pytest.mark.parametrize(
    ("method", "params", "line"),
    [
        ("conversation.question",
         {"pending": 1, "request": {"tool": "Bash", "summary": "touch x", "status": "pending"}},
         "[needs you] Claude asks to use Bash: touch x (answer with run.approve(), "
         "run.approve(always=True) or run.deny(message='why'))"),
        ("conversation.question",  # the run's policy answers it: nobody is asked
         {"pending": 1, "policy": True, "request": {"tool": "Bash", "summary": "touch x", "status": "pending"}},
         None),
        ("conversation.question",  # answers are the Claude text view's [permission] lines
         {"pending": 0, "request": {"tool": "Bash", "summary": "touch x", "status": "denied",
                                    "decided_by": "stdin", "message": "no"}},
         None),
        ("conversation.turn", {"status": "completed", "turn": 1},
         "[turn 1 completed] run.send('...') follows up; run.end() ends the conversation"),
        ("conversation.turn", {"status": "running", "turn": 2}, "[turn 2] follow-up sent"),
        ("conversation.turn", {"status": "running", "turn": 1}, None),
        ("conversation.notice", {"message": "hello"}, "[note] hello"),
    ],
)
def test_conversation_events_as_text(method: str, params: dict[str, Any], line: str | None) -> None:
    """Terminals and --quiet get one line per question, decision, turn end and notice."""
    assert TextView().render_event(method, params) == line


def test_the_questions_hint_denies_with_its_text_as_the_message() -> None:
    """The deny call the [needs you] line shows passes its text as the message (run.deny('why') took 'why' as
    a question's id: "ValueError: no permission question 'why' in this run")."""
    import inspect

    from cc_executor_nb.kernel.run import Run

    params = {"pending": 1, "request": {"tool": "Bash", "summary": "touch x", "status": "pending"}}
    line = TextView().render_event("conversation.question", params) or ""
    call = re.search(r"run\.deny\((.*?)\)\)$", line)
    assert call is not None, line
    bound = eval(f"(lambda *a, **k: (a, k))({call.group(1)})")  # our own hint's arguments, never user text
    arguments = inspect.signature(Run.deny).bind(None, *bound[0], **bound[1]).arguments
    assert (arguments.get("request"), arguments.get("message")) == (None, "why")


# Text mode and the record of a conversation


def turn_lines(message_id: str, answer: str) -> list[str]:
    """The stream-json lines of one turn that answers ``answer``."""
    return [*streamed_text(message_id, answer), assistant(message_id, text(answer)), result(result=answer)]


def test_text_renders_each_turn_then_its_footer_once() -> None:
    """A turn's end writes the rest of its answer and a footer; the next turn goes on; the end adds none twice."""
    from cc_executor_nb.claude.text import ClaudeTextRenderer, join_chunks

    interpreter = ClaudeInterpreter(prompt="one")
    renderer = ClaudeTextRenderer()
    interpreter.begin_turn("one")
    for line in turn_lines("m1", "first answer"):
        interpreter.feed("stdout", line + "\n")
    first = join_chunks(renderer.render(interpreter.snapshot(), turn=True))
    assert first.startswith("first answer\n") and "[result] done" in first
    interpreter.begin_turn("two")
    for line in turn_lines("m2", "second answer"):
        interpreter.feed("stdout", line + "\n")
    second = join_chunks(renderer.render(interpreter.snapshot(), turn=True))
    assert second.startswith("second answer\n") and second.count("[result] done") == 1
    assert join_chunks(renderer.render(interpreter.snapshot(), final=True)) == ""


def test_the_snapshot_carries_the_questions_for_text_and_record() -> None:
    """The conversation's questions reach run.claude, the text renderer's [permission] lines and the record."""
    from cc_executor_nb.claude.text import ClaudeTextRenderer, join_chunks

    interpreter = ClaudeInterpreter(prompt="edit")
    version = interpreter.version
    interpreter.set_permission_requests((EDIT,))
    assert interpreter.version > version and interpreter.snapshot().permission_requests == (EDIT,)
    renderer = ClaudeTextRenderer()
    pending = join_chunks(renderer.render(interpreter.snapshot()))
    assert "[permission] Edit · /w/a.txt → waiting for an answer" in pending
    interpreter.set_permission_requests((dataclasses.replace(EDIT, status="denied", decided_by="stdin", message="no"),))
    assert "[permission] Edit · /w/a.txt → denied by you: no" in join_chunks(renderer.render(interpreter.snapshot()))


def test_the_card_shows_a_long_command_whole() -> None:
    """The approval card shows what runs after 420 blanks (it cut the command at 400 characters)."""
    html = permission_card_html(PermissionRequest("r", "Bash", {"command": "du -sh ." + " " * 420 + "; echo HIDDEN"}))
    assert "$ du -sh .⟨420 blanks⟩; echo HIDDEN" in html


# A long turn in the live widget


def sentences_and_calls(calls: range) -> str:
    """Messages of a sentence and a Bash call each, with each call's result."""
    lines = []
    for index in calls:
        call = {"type": "tool_use", "id": f"toolu_{index}", "name": "Bash", "input": {"command": f"echo {index}"}}
        output = {"type": "tool_result", "tool_use_id": f"toolu_{index}", "content": "ok"}
        lines += [assistant(f"m{index}", text(f"Step {index} of the plan."), call),
                  json_line(type="user", message={"role": "user", "content": [output]})]
    return "\n".join(lines) + "\n"


def long_turn_widget_value(calls: int, *, conversation: bool) -> str:
    """The live widget's HTML of a run whose turn made ``calls`` calls (a sentence before each),
    in a run of one prompt, or as the first turn of a conversation followed by a short one."""
    interpreter = ClaudeInterpreter(prompt="p")
    made = ClaudeBody(interpreter, Source(ConversationView(mode="live", sent=1)) if conversation else None)
    try:
        interpreter.begin_turn("p") if conversation else None
        interpreter.feed("stdout", sentences_and_calls(range(calls)) + result(result="done") + "\n")
        if conversation:
            interpreter.begin_turn("and then?")
            interpreter.feed("stdout", "\n".join(tool_turn_lines(calls, "ok")) + "\n")
        made.render(State(), 0.0)
        return str(made.value)
    finally:
        made.widget.close()


@pytest.mark.parametrize("conversation", [False, True])
def test_the_live_widget_shows_a_long_turns_start_and_end_and_counts_the_middle(
    comms: list[DummyComm], conversation: bool,  # noqa: F811
) -> None:
    """A turn of 2,000 and one of 4,000 sentences and calls make live widgets of the same size but
    for the figures of one line, which stands for the middle of the turn: its first 100 pieces
    (sentences and cards), then the line counting the calls and texts left out, then its last 100
    (the widget showed every card, rendered again at each frame: 20,000 calls made a value of 11 MB,
    and 2.4 s a frame)."""
    small, big = (long_turn_widget_value(calls, conversation=conversation) for calls in (2_000, 4_000))
    assert abs(len(big) - len(small)) < 40
    turn = turn_of(big, 0) if conversation else big
    assert turn.count('class="cc-tool cc-tool-') == claude_render.MAX_LIVE_PIECES // 2
    words = ("3,900 tool calls (Bash ✓ 3,900) and 3,901 texts (84,822 characters) of this turn not shown: "
             "<code>run.text</code>, <code>run.thinking</code> and <code>run.tool_calls</code> have all of it")
    gap = turn.index(f"… {words} …")
    assert turn.index(">echo 49<") < gap < turn.index(">echo 3950<") < turn.index("Step 3951 of") < turn.index("3999<")
    assert "Step 50 of" not in turn and ">echo 50<" not in turn and "Step 3950 of" not in turn


def test_the_live_widget_of_a_long_turn_paces_its_renders_by_their_work(comms: list[DummyComm]) -> None:  # noqa: F811
    """A live view of a turn of 10,000 calls: a render reads every call (0.23 s at 20,000), and the
    next waits four times the CPU the last took (RENDER_SHARE) when that is longer than the rate
    and the HTML sent allow (it waited 0.11 s, for the 55 KB sent: at 5 renders a second the widget
    took the whole loop thread)."""
    import time

    from cc_executor_nb.kernel.presenter import LIVE_CHARS_PER_SECOND, MAX_PACE, RENDER_SHARE, WidgetPresenter
    from cc_executor_nb.kernel.views import RunView

    from .test_widgets import emit, running

    interpreter = ClaudeInterpreter(prompt="p")
    state = running()
    view = RunView("claude", state=state, now=0.0, body=ClaudeBody(interpreter), show_output=False)
    presenter = WidgetPresenter(state, view, max_rate=10.0)
    interpreter.feed("stdout", sentences_and_calls(range(10_000)))
    emit(state, "process.output", 0.5, type="stdout", data="x")
    started = time.thread_time()
    view.render(state, 0.5)
    took = time.thread_time() - started
    assert presenter.coalescer.interval >= min(0.99 * took / RENDER_SHARE, MAX_PACE)
    assert presenter.coalescer.interval > view.sent_chars / LIVE_CHARS_PER_SECOND
    view.close()


def turns_in_widget(made: ClaudeBody, turns: range) -> None:
    """Turns that run ``echo {index}`` and answer, a render at each one's end."""
    for index in turns:
        made.interpreter.begin_turn(f"prompt {index}")
        made.interpreter.feed("stdout", "\n".join(tool_turn_lines(index, f"answer {index}")) + "\n")
        made.render(State(), 0.0)


def test_the_live_widget_of_a_long_conversation_keeps_its_first_and_last_turns_and_counts_the_middle(
    comms: list[DummyComm],  # noqa: F811
) -> None:
    """Conversations of 250 and 300 turns, rendered at each turn's end: each widget holds the first
    100 turns and the last 100 (ten widgets of ten each, and the live one), one widget between
    counting the turns left out, and the two are of the same size (every turn stayed in the page,
    its widget state and the notebook saved: 300 turns held 36,500 characters more than 250)."""
    values, pieces = [], []
    for turns in (250, 300):
        made = ClaudeBody(ClaudeInterpreter(), Source(ConversationView(mode="live", sent=1)))
        turns_in_widget(made, range(turns))
        values.append(made.value)
        pieces.append([piece.value for piece in pieces_of(made)])
        made.widget.close()
    assert abs(len(values[1]) - len(values[0])) < 20
    _head, *firsts, gap = pieces[1][: 1 + claude_render.MAX_LIVE_TURN_PIECES // 2 + 1]
    assert [block.count('class="cc-turn ') for block in firsts] == [10] * 10
    assert "100 turns not shown (follow-ups 100 to 199)" in gap and 'class="cc-turn ' not in gap
    assert len(pieces[1]) == 1 + claude_render.MAX_LIVE_TURN_PIECES + 1 + 1
    assert ">echo 99<" in values[1] and ">echo 100<" not in values[1] and ">echo 199<" not in values[1]
    assert ">echo 200<" in values[1] and ">echo 299<" in values[1]


def long_prompts_widget_value(chars: int) -> str:
    """The live widget's HTML of a conversation whose two follow-ups are ``chars`` characters long,
    the first answered, the second's turn under way."""
    made = ClaudeBody(ClaudeInterpreter(), Source(ConversationView(mode="live", sent=1)))
    try:
        turns_in_widget(made, range(1))
        made.interpreter.begin_turn("F" * chars)
        made.interpreter.feed("stdout", "\n".join(tool_turn_lines(1, "answer 1")) + "\n")
        made.render(State(), 0.0)
        made.interpreter.begin_turn("S" * chars)
        made.render(State(), 0.0)
        return str(made.value)
    finally:
        made.widget.close()


def test_the_live_widget_shows_a_long_follow_ups_start_and_says_where_it_is_whole(
    comms: list[DummyComm],  # noqa: F811
) -> None:
    """Follow-ups of 1 MB and of 2 MB, one answered, one whose turn runs, make live widgets of the
    same size but for the figures of their lines: each shows its first MAX_RECORD_PROMPT_CHARS
    characters and one line counting the rest, which says where the prompt is whole (the widget
    showed each prompt whole, in its value and the saved notebook at each frame: 2 MB more)."""
    small, big = (long_prompts_widget_value(chars) for chars in (1_000_000, 2_000_000))
    assert abs(len(big) - len(small)) < 40
    kept = claude_render.MAX_RECORD_PROMPT_CHARS
    line = f"… {2_000_000 - kept:,} more characters of this prompt not shown: run.transcript() has it whole"
    for index, letter in ((1, "F"), (2, "S")):
        turn = turn_of(big, index)
        assert letter * kept + "\n" + line in turn and letter * (kept + 1) not in turn
