"""The record of a run that a notebook keeps: Markdown, HTML and plain text.

A :class:`Transcript` reads a run (its label, :class:`~cc_executor_nb.kernel.runstate.RunState`,
options and, for Claude, its interpreter) and writes what a saved notebook, a file or a
terminal should show without a kernel or widget state: for Claude the thinking note (each
turn's in a conversation), the answer and the tool log in the stream's order (as the widget
shows them: :meth:`~cc_executor_nb.claude.streamjson.TurnView.parts`), retries, permission
questions and the footer (status, cost, tokens,
turns, duration, model, session id); for a command its whole line (when the label cuts
it), status, exit code and output tail.

- :meth:`Transcript.markdown` is ``run.transcript()``; :meth:`Transcript.document` is the
  page ``run.save("x.html")`` writes.
- :meth:`Transcript.bundle` is the ``text/html`` + ``text/markdown`` + ``text/plain``
  record the run's display carries (:mod:`cc_executor_nb.kernel.display`).

Everything from the model or the child is untrusted. The HTML is the widget's own
(:mod:`cc_executor_nb.claude.render`: Markdown without raw HTML, then an allow-list
sanitizer; output escaped). In the Markdown, the model's answer keeps its formatting
but :func:`safe_markdown` turns raw HTML into text, images into links and unsafe link
targets into text; every other untrusted string is escaped or fenced as code.
"""

from __future__ import annotations

import functools
import html
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from markdown_it import MarkdownIt

from ..claude.interpreter import ClaudeInterpreter, ClaudeView
from ..claude.render import (
    LIVE_ANSWER_HEIGHT,
    MAX_RECORD_THOUGHTS,
    MAX_RECORD_TOOL_CARDS,
    MAX_THINKING_CHARS,
    RenderMemo,
    TextMemo,
    claude_body_html,
    record_prompt,
    record_turns,
    retry_text,
    tool_change,
    tool_input_summary,
    tool_plan,
    tools_cut_words,
    turns_gap_words,
)
from ..claude.streamjson import (
    AnswerBudget,
    Cut,
    TextGap,
    Thought,
    ToolCall,
    ToolPlan,
    TurnPart,
    TurnView,
    TurnViews,
    text_places,
)
from ..claude.text import (
    TOOL_ERROR_CHARS,
    answer_of,
    error_line,
    footer_items,
    footer_line,
    parts_text,
    permission_line,
    permission_requests,
    printable,
    render_text,
    thinking_line,
)
from ..events import exit_words
from ..protocol import command_line
from ..terminaltext import MONOSPACE, terminal_text
from .html import NO_MATH_CLASSES, header_html, shown_error, tail_html
from .runstate import RunState, Tail, elapsed, format_duration, format_took, took_words, turn_took_text

__all__ = [
    "IN_PROGRESS_NOTE",
    "MAX_OUTPUT_CHARS",
    "MAX_RECORD_ANSWER_CHARS",
    "MAX_RECORD_TOOL_CHARS",
    "QUEUED_NOTE",
    "RecordCache",
    "Recordable",
    "Transcript",
    "code_span",
    "fenced",
    "markdown_escape",
    "safe_markdown",
]

MAX_OUTPUT_CHARS = 20_000
"""How much of a command's output (the tail) a transcript keeps, as the widget shows."""
MAX_RECORD_ANSWER_CHARS = 200_000
"""How much of Claude's answer the display's record carries; ``run.transcript()`` has all."""
MAX_RECORD_TOOL_CHARS = 200_000
"""How much of its tool cards' bodies (results, changes) a record carries in all; ``run.tool_calls``
has all. As much as the answer may take: 40 results at the widget's cap of 5,000 characters each,
more than most runs' tools print, while 200 calls made a record of 1.1 million characters."""

IN_PROGRESS_NOTE = "Still running when this record was made: this is not the run's final record."
"""What a record of a live run says: a notebook saved before the run ended keeps the record
its display had at the start (see :mod:`cc_executor_nb.kernel.display`), and an export of it
read "starting · no output" as if that were how the run went."""

QUEUED_NOTE = "Queued when this record was made: the run had not started."
"""What the record of a run that waits its turn (a batch's queue) says: it read "starting" and
"Still running when this record was made", as if it ran."""

_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}


class Recordable(Protocol):
    """What a transcript reads of a run (a :class:`~cc_executor_nb.kernel.run.Run` has it)."""

    @property
    def label(self) -> str: ...
    @property
    def state(self) -> RunState: ...
    @property
    def interpreter(self) -> Any: ...
    @property
    def options(self) -> dict[str, Any]: ...


class RecordCache:
    """What a run's record read and rendered, kept from one build of the record
    (:meth:`Transcript.bundle`) to the next: the conversation's turns
    (:class:`~cc_executor_nb.claude.streamjson.TurnViews`), their parts and what Claude's texts
    rendered to, as HTML and as Markdown (:class:`~cc_executor_nb.claude.render.RenderMemo`).

    The display's record of a conversation is built again at each turn's end, on the kernel's
    loop thread, where every run's stream waits: parsing the Markdown of every text it shows
    again was most of the build (0.5 s of CPU at 150 turns of 40 calls), and reading every turn
    again most of the rest past 200 turns (0.3 s at 1,000), then sorting each shown turn's texts
    and calls in order. With these, a build parses only the texts no earlier build showed (about
    one turn's) and reads only the turns since the last.
    Each is what a fresh read or render gives (the texts' are pure functions of the text; a turn
    changed late is read again), so the record is the same as one built afresh.
    """

    def __init__(self) -> None:
        self.turns = TurnViews()
        self.html = RenderMemo()
        self.markdown = TextMemo(_answer_text)

    def settle(self) -> None:
        """End a build: keep what it read and rendered, let go of what it no longer shows."""
        self.html.settle()
        self.markdown.settle()


class Transcript:
    """The record of one run at this moment, as Markdown, HTML or plain text.

    ``output_chars`` bounds a command's output tail (and the Claude CLI's stderr note);
    ``answer_chars`` bounds Claude's answer (None: all of it); ``thinking_chars`` the thinking the
    HTML shows, in all turns together (the widget shows up to :data:`MAX_THINKING_CHARS` of each
    turn's: a record of many turns grew without bound; None: that). The Markdown and the text
    note the thinking without its text. ``tool_chars`` bounds the tool cards' bodies (the HTML's
    results and changes, the Markdown's changes; the text has none) in all, in reading order: each
    card keeps its tool, input and outcome, and one note counts the bodies left out (None: each
    card's, as the widget shows). ``tool_cards`` bounds how many calls it shows (None: all): the
    first half and the last half in reading order, one line counting the ones between by tool and
    outcome. The three forms read one :func:`~cc_executor_nb.claude.render.tool_plan`, so they leave
    out the same calls and bodies. ``max_turns`` bounds how many turns of a conversation it shows
    (None: all, as ``run.transcript()`` and ``run.save()`` show; the display's record shows
    :data:`~cc_executor_nb.claude.render.MAX_RECORD_TURNS`): the first half and the last half, one
    line between counting the ones left out. ``thoughts`` bounds how many places of thinking it shows
    (None: all): the first half and the last half in reading order, one line counting the ones
    between and their words; the three forms read it with the plan of the calls. ``text_pieces``
    bounds how many of Claude's texts it shows (None: all) in the same way, one line counting the
    ones between and their characters (the display's record shows
    :data:`~cc_executor_nb.claude.render.MAX_RECORD_TEXTS`; ``run.transcript()`` and ``run.save()``
    every text, as they show all of the answer). ``texts``: what
    Claude's texts rendered to in this run's earlier records (the display's, built at each turn's
    end); :meth:`bundle` keeps what it rendered there for the next.
    """

    def __init__(
        self,
        run: Recordable,
        *,
        output_chars: int = MAX_OUTPUT_CHARS,
        answer_chars: int | None = None,
        thinking_chars: int | None = MAX_THINKING_CHARS,
        tool_chars: int | None = MAX_RECORD_TOOL_CHARS,
        tool_cards: int | None = MAX_RECORD_TOOL_CARDS,
        max_turns: int | None = None,
        thoughts: int | None = MAX_RECORD_THOUGHTS,
        text_pieces: int | None = None,
        texts: RecordCache | None = None,
    ) -> None:
        self.run = run
        self.texts = texts
        self._read: list[list[TurnPart]] | None = None
        self._parts_by_turn: list[list[TurnPart | TextGap | Cut]] | None = None
        self.output_chars = output_chars
        self.answer_chars = answer_chars
        self.thinking_chars = thinking_chars
        self.tool_chars = tool_chars
        self.tool_cards = tool_cards
        self.max_turns = max_turns
        interpreter = run.interpreter
        raw = bool(run.options.get("raw"))
        self.claude = interpreter if isinstance(interpreter, ClaudeInterpreter) and not raw else None
        self.view: ClaudeView | None = None
        self.turns: list[TurnView] = []
        """Claude's turns as the view has them (one for a run of one prompt)."""
        if self.claude is not None:
            with self.claude.locked() as claude_run:  # the view and its turns at the same moment
                views = texts.turns.read(claude_run) if texts is not None else claude_run.turn_views()
                self.view, self.turns = self.claude.snapshot(), views
        self.before, self.left_out, self.after = record_turns(self.turns, max_turns if self._conversation else None)
        """The turns the record shows (those before the line of the turns it leaves out, and after)
        and the ones it leaves out (:func:`~cc_executor_nb.claude.render.record_turns`)."""
        self.plan: ToolPlan | None = None
        """Which tool calls and bodies every form shows (None: all of them)."""
        bounds = (tool_chars, tool_cards, thoughts, text_pieces)
        if self.claude is not None and any(bound is not None for bound in bounds):
            read = self._read_turns()
            places = [part for parts in read for part in parts if isinstance(part, Thought)]
            said = [text for turn, parts in zip(self._read_shown, read, strict=True)
                    for text in text_places(turn.index, parts)]
            self.plan = tool_plan([tool for turn in self.shown for tool in turn.tools], tool_chars, tool_cards,
                                  places, thoughts, texts=said, pieces=text_pieces)

    # Facts shared by every form

    @property
    def shown(self) -> list[TurnView]:
        """The turns the record shows, in order."""
        return self.before + self.after

    def _turns_gap(self, position: int) -> str:
        """The words of the turns left out when the record's ``position``-th shown turn comes after
        them, else ""."""
        return turns_gap_words(self.left_out) if self.left_out and position == len(self.before) else ""

    @property
    def state(self) -> RunState:
        return self.run.state

    def _status_items(self) -> list[str]:
        """``completed``, ``exit code 0``, ``took 3.1 s`` and the error, if any."""
        state = self.state
        items: list[str] = [self.status]
        if state.exit_code is not None:
            items.append(exit_words(state.exit_code, state.status))
        seconds = elapsed(state, time.monotonic())
        # Between the turns of a conversation the process lives on: the turn's time, not a clock.
        if state.between_turns:
            items += [turn_took_text(state)] if state.turn_ended_at is not None else []
        elif seconds is not None:
            items.append(self._clock_item(seconds))
        if state.job_id:
            items.append(f"job {state.job_id}")
        if state.lost_note:
            items.append(state.lost_note)
        return items

    @property
    def queued(self) -> bool:
        """Whether the run waits to be started (a batch's queued run), so nothing of it ran."""
        return bool(getattr(self.run, "queued", False)) and not self.state.finished

    @property
    def status(self) -> str:
        """The run's status, or ``queued`` for one that waits to be started (its state says ``starting``)."""
        return "queued" if self.queued else self.state.status

    @property
    def in_progress(self) -> bool:
        """Whether the run is live (a conversation between turns is not: its turns so far are
        done; nor is a queued run: it has not started)."""
        return not self.state.finished and not self.state.between_turns and not self.queued

    def _notes(self) -> list[str]:
        """What the record says of a run that is not over: in progress, or queued."""
        return [IN_PROGRESS_NOTE] if self.in_progress else [QUEUED_NOTE] if self.queued else []

    def _clock_item(self, seconds: float) -> str:
        """``took 78 ms`` as Claude's footer counts, or ``running for 3.1 s`` while it runs."""
        if self.state.finished:
            return f"{took_words(self.state)} {format_took(seconds)}"
        return f"running for {format_duration(seconds)}"

    def _prompt(self) -> str | None:
        """The full prompt when the label does not already show it."""
        prompt = self.run.options.get("prompt")
        if not isinstance(prompt, str) or self.claude is None:
            return None
        return None if self.run.label == f"claude: {prompt}" else record_prompt(prompt, self._bounded)

    @property
    def _bounded(self) -> bool:
        """Whether this is a bounded record (the display's): its prompts are cut too."""
        return self.answer_chars is not None

    def _command(self) -> str | None:
        """A command's whole line when the label cuts it (or folds its lines), else None."""
        command = self.run.options.get("command")
        if self.claude is not None or not command:
            return None
        line = command if isinstance(command, str) else command_line(list(command))
        return None if self.run.label == line else printable(line)

    def _parts(self) -> list[list[TurnPart | TextGap | Cut]]:
        """Each turn's text and tool calls in the order they came (as the HTML has them), the texts
        the plan leaves out gone, the text bounded by ``answer_chars`` in reading order (read once:
        every form reads them)."""
        if self._parts_by_turn is None:
            budget = AnswerBudget(self.answer_chars)
            plan = self.plan
            self._parts_by_turn = [
                budget.spend(plan.texts.select(turn.index, parts) if plan is not None else parts)
                for turn, parts in zip(self._read_shown, self._read_turns(), strict=True)
            ]
        return self._parts_by_turn

    @property
    def _read_shown(self) -> list[TurnView]:
        """The turns whose parts :meth:`_read_turns` reads: the shown ones, or the one of a run of one prompt."""
        return self.shown if self._conversation else self.turns[:1]

    def _read_turns(self) -> list[list[TurnPart]]:
        """Each turn's parts as read, whole (read once)."""
        if self._read is None:
            assert self.view is not None
            read = self.texts.html.parts if self.texts is not None else TurnView.parts
            if not self._conversation:
                self._read = [_one_turn_parts(self.view, self.turns[0], read)]
            else:
                self._read = [_turn_parts(turn, read) for turn in self.shown]
        return self._read

    @property
    def _conversation(self) -> bool:
        """Whether the run is a conversation of several turns (the record shows each)."""
        return self.view is not None and self.view.turns > 1 and len(self.turns) > 1

    # Markdown

    def markdown(self) -> str:
        """The record as Markdown (``run.transcript()``)."""
        parts = [f"### {markdown_escape(self.run.label)}", self._status_markdown()]
        parts += [f"*{markdown_escape(note)}*" for note in self._notes()]
        parts += [f"*note: {_inline_escape(message)}*" for message in self.state.notices]
        prompt = self._prompt()
        if prompt is not None:
            parts.append(_quote(prompt))
        command = self._command()
        parts += ["**command**", fenced(command)] if command is not None else []
        parts += self._claude_markdown() if self.view is not None else self._output_markdown()
        return "\n\n".join(part for part in parts if part) + "\n"

    def _status_markdown(self) -> str:
        items = self._status_items()
        line = " · ".join([f"**{markdown_escape(items[0])}**", *map(_inline_escape, items[1:])])
        error = shown_error(self.state)
        return line + (f" · {_inline_escape(error)}" if error else "")

    def _claude_markdown(self) -> list[str]:
        view = self.view
        assert view is not None
        asked = _requests_by_turn(view, self.turns if self._conversation else [])
        parts_by_turn = self._parts()
        tools = self.plan
        # A conversation's retries are listed after its turns, as in the HTML, each naming its turn.
        retries = _retries_markdown(view)
        if not self._conversation:
            parts = [*retries, _permissions_markdown(asked[0])]
            parts += self._answer_markdown(view, parts_by_turn[0], tools)
        else:
            parts = self._turns_markdown(parts_by_turn, asked, tools) + retries
        diffs_left_out = self._diffs_left_out()
        if diffs_left_out:
            words = markdown_escape(tools_cut_words(diffs_left_out, "changes"))
            parts.append(f"*… {words}: `run.tool_calls` has all of them*")
        parts += self._no_result_markdown()
        parts.append("---\n\n" + " · ".join(_footer_markdown(view, ended=self.state.finished)))
        return parts

    def _diffs_left_out(self) -> int:
        """How many of the edits the Markdown lists it lists without their change's diff."""
        plan = self.plan
        if plan is None:
            return 0
        calls = [tool for turn in self.shown for tool in turn.tools if tool.parent_tool_use_id is None]
        return sum(1 for tool in calls if plan.state(tool) == "bare" and tool_change(tool) is not None)

    def _answer_markdown(
        self, view: ClaudeView, shown: list[TurnPart | TextGap | Cut], tools: ToolPlan | None,
    ) -> list[str]:
        """One turn: its text and tools in order (the text cut to ``answer_chars``, the changes to
        ``tools``) and how it failed."""
        parts = _parts_markdown(shown, "of the answer: `run.transcript()` has all of it", tools, self._answer_text)
        error = error_line(view)
        if view.interrupted:
            parts.append("**Interrupted**")
        elif error:
            parts.append(f"**{markdown_escape(error.removeprefix('[error] '))}**")
        return parts

    def _turns_markdown(
        self, parts_by_turn: list[list[TurnPart | TextGap | Cut]], asked: list[list[Any]], tools: ToolPlan | None,
    ) -> list[str]:
        """A conversation: each turn's follow-up prompt, thinking note, permission questions, text
        and tools in the order they came, and how it ended."""
        parts: list[str] = []
        for position, (turn, shown) in enumerate(zip(self.shown, parts_by_turn, strict=True)):
            gap = self._turns_gap(position)
            parts += [f"*… {markdown_escape(gap, line_start=False)} …*"] if gap else []
            if turn.index > 0:
                parts.append(f"**Follow-up {turn.index}**\n\n{_quote(record_prompt(turn.prompt, self._bounded))}")
            parts.append(_permissions_markdown(asked[turn.index]))
            parts += _parts_markdown(shown, "of this answer: `run.text` has all of it", tools, self._answer_text)
            failure = _turn_failure(turn)
            if failure:
                parts.append(f"**{markdown_escape(failure)}**")
        return parts

    def _answer_text(self, text: str) -> str:
        """Claude's ``text`` as inert Markdown (the one an earlier record of the run made, if any)."""
        return self.texts.markdown(text) if self.texts is not None else _answer_text(text)

    def _no_result_markdown(self) -> list[str]:
        assert self.view is not None
        if self.view.result is not None or not self.state.finished:
            return []
        note = f"**No result from Claude**: the run ended {markdown_escape(self.state.status)}"
        stderr = self.view.stderr.strip()
        return [note, fenced(stderr[-self.output_chars :])] if stderr else [note]

    def _output_markdown(self) -> list[str]:
        parts = []
        for stream in ("stdout", "stderr"):
            tail, total = self._stream_tail(stream)
            if total:
                cut = total > len(tail)
                heading = f"**{stream}**" + (f" (the last {len(tail):,} of {total:,} characters)" if cut else "")
                parts += [heading, fenced(printable(terminal_text(tail)))]
        return parts or ["*no output yet*" if self.in_progress or self.queued else "*no output*"]

    # HTML

    def html(self) -> str:
        """The record as an HTML fragment that looks like the finished widget (sanitized)."""
        state = self.state
        parts = [
            f'<div class="ccx-record ccx-run {NO_MATH_CLASSES}">',
            f'<div class="ccx-header ccx-status-{html.escape(self.status)}">',
            header_html(state, time.monotonic(), self.run.label, record=True, status=self.status),
            "</div>",
        ]
        for note in self._notes():
            kind = "ccx-in-progress" if note == IN_PROGRESS_NOTE else "ccx-queued"
            parts.append(f'<div class="{kind}" style="font-style:italic">{html.escape(note)}</div>')
        prompt = self._prompt()
        if prompt is not None:
            parts.append(
                # A long prompt (a pasted file) scrolls in its own box: it made a record cell
                # 6,463 px tall, nearly all prompt. The display's record bounds it as every form
                # does (record_prompt); run.transcript() and run.save() keep it whole.
                '<blockquote class="ccx-prompt" style="white-space:pre-wrap;margin:4px 0 4px 1em;'
                'max-height:12em;overflow:auto">'
                f"{html.escape(printable(prompt))}</blockquote>"
            )
        command = self._command()
        if command is not None:
            style = f"white-space:pre-wrap;margin:4px 0;{MONOSPACE}"
            parts.append(f'<pre class="ccx-command" style="{style}">{html.escape(command)}</pre>')
        parts.append(_scrolled_answers(self._claude_html()) if self.claude is not None else self._output_html())
        parts.append("</div>")
        return without_blank_lines("".join(parts))

    def _output_html(self) -> str:
        if not self.state.output_chars:
            words = "no output yet" if self.in_progress or self.queued else "no output"
            return f'<div class="ccx-output" style="opacity:0.75"><em>{words}</em></div>'
        return tail_html(self._output_tail())

    def _output_tail(self) -> Tail:
        """The output's last ``output_chars`` characters, from a line's start as the text and
        Markdown have them: the HTML began inside a cut line (a ``--raw`` run's 17 KB JSON line)
        and so showed, and counted as not shown, other characters than the text beside it."""
        tail = self.state.tail(self.output_chars + 1)
        shown = sum(len(text) for _, text in tail.pieces)
        if shown <= self.output_chars or not tail.pieces:
            return tail
        (stream, first), rest = tail.pieces[0], tail.pieces[1:]
        before, first = first[0], first[1:]
        kept = first if before == "\n" else _from_a_line_start(first)
        return Tail([(stream, kept), *rest], tail.cut_chars + 1 + len(first) - len(kept))

    def _claude_html(self) -> str:
        assert self.claude is not None
        state = self.state
        stderr = self.claude.snapshot().stderr[-self.output_chars :]
        requests = self.view.permission_requests if self.view is not None else ()
        decisions = {r.tool_use_id: r for r in requests if r.tool_use_id}
        with self.claude.locked() as run:
            return claude_body_html(
                run, status=state.status, exit_code=state.exit_code, stderr=stderr, decisions=decisions,
                answer_chars=self.answer_chars, thinking_chars=self.thinking_chars, plan=self.plan,
                max_turns=self.max_turns, memo=self.texts.html if self.texts is not None else None,
                views=self.turns,
            )

    def document(self) -> str:
        """A standalone HTML page of the record (what ``run.save("x.html")`` writes).

        Its Content-Security-Policy allows no script, no image and no remote load. Long
        answers, prompts and output are shown in full: the page scrolls, not boxes in it.
        """
        title = html.escape(printable(self.run.label))
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{title}</title>\n<style>{_PAGE_STYLE}</style>\n</head>\n"
            f"<body>\n{self.html()}\n</body></html>\n"
        )

    # Plain text

    def text(self) -> str:
        """The record as plain text: a title line, the status, then the answer and notes or the output."""
        lines = [printable(self.run.label), " · ".join(self._status_items())]
        error = shown_error(self.state)
        if error:
            lines[-1] += f" · {printable(error)}"
        lines += [f"[in progress] {IN_PROGRESS_NOTE}"] if self.in_progress else []
        lines += [f"[queued] {QUEUED_NOTE}"] if self.queued else []
        lines += [f"[note] {' '.join(printable(message).split())}" for message in self.state.notices]
        prompt = self._prompt()
        body = ["> " + "\n> ".join(printable(prompt).splitlines())] if prompt is not None else []
        command = self._command()
        body += [f"[command]\n{command}"] if command is not None else []
        if self.view is not None:
            body.append(self._claude_text())
        else:
            body += self._output_text()
        return "\n".join(lines) + "\n\n" + "\n\n".join(part.strip("\n") for part in body if part) + "\n"

    def _claude_text(self) -> str:
        assert self.view is not None
        if self._conversation:
            return self._turns_text()
        text = render_text(self.view, ended=self.state.finished, parts=self._parts()[0], plan=self.plan)
        if self.view.result is None and self.state.finished:
            text += f"[no result] the run ended {self.state.status} without Claude's result\n"
        return text

    def _turns_text(self) -> str:
        """A conversation as text: each turn (its follow-up prompt, thinking note, permission
        questions, text and tools in the order they came, and how it ended), the retries, then
        Claude's footer."""
        view = self.view
        assert view is not None
        asked = _requests_by_turn(view, self.turns)
        parts: list[str] = []
        for position, (turn, shown) in enumerate(zip(self.shown, self._parts(), strict=True)):
            gap = self._turns_gap(position)
            parts += [f"[turns] {gap}"] if gap else []
            if turn.index > 0:
                prompt = printable(record_prompt(turn.prompt, self._bounded))
                parts.append(f"[follow-up {turn.index}]\n> " + "\n> ".join(prompt.splitlines()))
            parts.append("\n".join(map(permission_line, asked[turn.index])))
            parts += parts_text(shown, self.plan)
            failure = _turn_failure(turn)
            if turn.interrupted and turn.result is not None:
                parts.append("[interrupted] the turn was interrupted")
            elif failure:
                parts.append(f"[error] {printable(failure)}")
        if view.retries:
            parts.append("\n".join(f"[retry] {retry_text(retry, view.turns)}" for retry in view.retries))
        parts.append(footer_line(view, ended=self.state.finished))
        return "\n\n".join(part for part in parts if part) + "\n"

    def _output_text(self) -> list[str]:
        parts = []
        for stream in ("stdout", "stderr"):
            tail, total = self._stream_tail(stream)
            if total:
                cut = total > len(tail)
                note = f" (the last {len(tail):,} of {total:,} characters)" if cut else ""
                parts.append(f"[{stream}]{note}\n{printable(terminal_text(tail))}")
        return parts or ["[no output yet]" if self.in_progress or self.queued else "[no output]"]

    def _stream_tail(self, stream: str) -> tuple[str, int]:
        """(the last ``output_chars`` characters of ``stream``, from a line's start; its
        length): read from the end of the run's output, never the whole of a huge one."""
        output = self.state.output
        tail = output.last(self.output_chars + 1, stream)
        if len(tail) <= self.output_chars:
            return tail, output.chars[stream]
        before, tail = tail[0], tail[1:]
        return (tail if before == "\n" else _from_a_line_start(tail)), output.chars[stream]

    # All of it

    def bundle(self) -> dict[str, str]:
        """``text/plain``, ``text/markdown`` and ``text/html`` of the record."""
        bundle = {"text/plain": self.text(), "text/markdown": self.markdown(), "text/html": self.html()}
        if self.texts is not None:
            self.texts.settle()
        return bundle

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the Markdown (``.md``, ``.markdown``) or the HTML page (``.html``, ``.htm``) to
        ``path`` (``~`` is your home, as in a shell)."""
        target = Path(path).expanduser()
        kind = _SUFFIXES.get(target.suffix.lower())
        if target.is_dir():
            raise ValueError(f"save() takes a file name ending .md or .html, not the directory {str(target)!r}")
        if kind is None:
            raise ValueError(f"save() writes .md or .html files, not {target.suffix or 'a name without suffix'!r}")
        content = self.markdown() if kind == "markdown" else self.document()
        target.write_text(content, encoding="utf-8")
        return target


_PAGE_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:60em;"
    "margin:2em auto;padding:0 1em;line-height:1.45}"
    "pre,code{font-family:ui-monospace,monospace}pre{background:#f6f8fa;padding:.5em}"
    # A page of its own scrolls as a whole: the notebook's scroll boxes (an answer at 40em, a
    # prompt at 12em, output at 24em) would box a long answer in it. !important beats their
    # inline styles, so the page keeps the record's HTML as the notebook has it.
    ".cc-answer,.ccx-prompt,.ccx-output{max-height:none!important;overflow:visible!important}"
)


_ANSWER_OPEN = '<div class="cc-answer">'
_SCROLLED_ANSWER_OPEN = f'<div class="cc-answer" style="max-height:{LIVE_ANSWER_HEIGHT};overflow:auto">'


def _scrolled_answers(body: str) -> str:
    """Claude's HTML with each answer in a box that scrolls past the live widget's height.

    A 1,500-word answer made an exported record cell thousands of px tall; nothing is cut,
    and the Markdown and text keep every answer unscrolled. Only the renderer writes this
    tag: the model's text reaches it escaped (no raw HTML), so no answer can match it.
    """
    return body.replace(_ANSWER_OPEN, _SCROLLED_ANSWER_OPEN)


_BLANK_LINE_AHEAD = re.compile(r"\n(?=[ \t]*\n)")


def without_blank_lines(fragment: str) -> str:
    """``fragment`` with each newline that starts a blank line written ``&#10;``: the same HTML
    to a browser, but one HTML block to a Markdown parser (``nbconvert --to markdown`` pastes
    the record into Markdown, where a blank line would end the block and parse the rest)."""
    return _BLANK_LINE_AHEAD.sub("&#10;", fragment)


def _tool_markdown(tool: ToolCall, plan: ToolPlan | None = None) -> str:
    """One list item: the call and its outcome, then an edit's change as a diff under it, unless
    ``plan`` (a bounded record's) leaves it out."""
    change = tool_change(tool)
    if change is None:
        return _tool_item(tool)
    lines, more, counts = change
    text = "\n".join(line.text for line in lines) + (f"\n… {more:,} more lines not shown" if more else "")
    block = "\n".join("  " + line for line in fenced(text, "diff").split("\n"))
    item = f"{_tool_item(tool)} · change {counts}"
    return item if plan is not None and plan.state(tool) == "bare" else f"{item}\n\n{block}\n"


def _tool_item(tool: ToolCall) -> str:
    mark = "…" if tool.status != "done" else "✗" if tool.is_error else "✓"
    name = markdown_escape(printable(tool.name or "tool"))
    summary = printable(tool_input_summary(tool.input))
    item = f"- {mark} **{name}**" + (f" {code_span(summary)}" if summary and summary != "{}" else "")
    if tool.status != "done":
        return item + " (no result)"
    result = printable(terminal_text(tool.result or ""))
    if tool.is_error:
        first = next((line.strip() for line in result.splitlines() if line.strip()), "")
        cut = first if len(first) <= TOOL_ERROR_CHARS else first[: TOOL_ERROR_CHARS - 1] + "…"
        return item + (f" → error: {markdown_escape(cut)}" if first else " → error")
    lines = result.count("\n") + 1 if result else 0
    return item + f" → {lines} line{'' if lines == 1 else 's'}"


def _retries_markdown(view: ClaudeView) -> list[str]:
    """The API retries as a list under its label; [] for none."""
    if not view.retries:
        return []
    return ["**Retries**\n\n" + "\n".join(f"- {markdown_escape(retry_text(r, view.turns))}" for r in view.retries)]


def _permissions_markdown(items: list[Any]) -> str:
    """Permission questions and how each was answered, as a list under its label; "" for none."""
    if not items:
        return ""
    return "**Permission questions**\n\n" + "\n".join(map(_permission_markdown, items))


def _permission_markdown(item: Any) -> str:
    return f"- {markdown_escape(permission_line(item).removeprefix('[permission] '))}"


def _requests_by_turn(view: ClaudeView, turns: list[TurnView]) -> list[list[Any]]:
    """The run's permission questions, by the turn they were asked in: the one holding the
    tool call a question is about (its ``tool_use_id``). Without turns (a run of one turn),
    and for a question no call matches, the first turn: where a one-turn run lists them."""
    requests = permission_requests(view)
    # Most conversations ask nothing: then no call is looked at (40,000 calls at 1,000 turns).
    turn_of = {tool.id: turn.index for turn in turns for tool in turn.tools} if requests else {}
    asked: list[list[Any]] = [[] for _ in range(max(1, len(turns)))]
    for request in requests:
        asked[turn_of.get(getattr(request, "tool_use_id", None) or "", 0)].append(request)
    return asked


def _footer_markdown(view: ClaudeView, *, ended: bool = False) -> list[str]:
    items = footer_items(view, ended=ended)
    rendered = []
    for index, item in enumerate(items):
        if item.startswith("session "):
            rendered.append("session " + code_span(item.removeprefix("session ")))
        else:
            rendered.append(markdown_escape(item, line_start=index == 0))
    return rendered


def _answer_text(text: str) -> str:
    """Claude's text as inert Markdown (escapes and controls removed)."""
    return safe_markdown(printable(text).strip("\n"))


_Parts = Callable[..., list[TurnPart]]
"""What reads a turn's parts: :meth:`TurnView.parts`, or a record's memo of them (the same arguments,
the view first)."""


def _one_turn_parts(view: ClaudeView, turn: TurnView, read: _Parts = TurnView.parts) -> list[TurnPart]:
    """A run of one prompt in the order it came, saying what :func:`answer_of` says: the text so
    far when interrupted, none when it is only the failure, else the result's text once."""
    if view.interrupted:
        return read(turn)
    if view.is_error:
        return read(turn, said=bool(answer_of(view)))
    return read(turn, view.answer if view.result is not None else "")


def _turn_parts(turn: TurnView, read: _Parts = TurnView.parts) -> list[TurnPart]:
    """A conversation's turn in the order it came.

    A failed turn's text is often the failure itself (a usage limit, an API error): it is
    then shown once, as the failure (:func:`_turn_failure`), never as if it were Claude's answer.
    """
    if not turn.is_error:
        return read(turn, turn.answer)
    if turn.result is None or turn.interrupted:
        return read(turn)
    return read(turn, said=turn.text.strip() != _turn_failure(turn).strip())


def _turn_failure(turn: TurnView) -> str:
    """The line that says how a conversation's turn failed (\"\" if it did not)."""
    if not turn.is_error or turn.result is None:
        return ""
    if turn.interrupted:
        return turn.error_message.rstrip(".") or "Interrupted"
    return turn.error_message or "The turn failed."


def _parts_markdown(
    shown: list[TurnPart | TextGap | Cut], cut_words: str, plan: ToolPlan | None = None,
    answer_text: Callable[[str], str] | None = None,
) -> list[str]:
    """A turn's thinking, text and tools in order: each text as inert Markdown, the thinking at one
    place as its note, the calls at one place as a list under **Tools** (``plan``, a bounded
    record's, leaves some changes and calls out: one item counts those), a cut as the note
    ``… N more characters {cut_words}``; ``answer_text`` writes each text (:func:`_answer_text`)."""
    write = answer_text or _answer_text
    parts = []
    for part in shown:
        if isinstance(part, Cut):
            parts.append(f"*… {part.chars:,} more characters {cut_words}*")
        elif isinstance(part, str):
            parts.append(write(part) if part.strip() else "")
        elif isinstance(part, TextGap):
            parts.append(f"*… {markdown_escape(part.words)}: `run.text` has all of them …*")
        elif isinstance(part, Thought):
            parts.append(_planned_thought_markdown(part, plan))
        elif items := [item for item in (_planned_markdown(tool, plan) for tool in part) if item]:
            parts.append("**Tools**\n\n" + "\n".join(items))
    return parts


def _planned_markdown(tool: ToolCall, plan: ToolPlan | None) -> str:
    """A call's list item, the item of the calls ``plan`` leaves out, or "" (a subagent's call)."""
    state = plan.state(tool) if plan is not None else "whole"
    if state == "gap" and plan is not None:
        return f"- *… {markdown_escape(plan.gap_words(), line_start=False)}: `run.tool_calls` has all of them …*"
    return "" if state == "hidden" or tool.parent_tool_use_id is not None else _tool_markdown(tool, plan)


def _planned_thought_markdown(thought: Thought, plan: ToolPlan | None) -> str:
    """A place of thinking's note, the note of the places ``plan`` leaves out, or ""."""
    state = plan.thoughts.state(thought) if plan is not None else "shown"
    if state == "gap" and plan is not None:
        return f"*… {markdown_escape(plan.thoughts.gap_words())}: `run.thinking` has all of it …*"
    return "" if state == "hidden" else _thinking_markdown(thought.text)


def _thinking_markdown(thinking: str) -> str:
    """The note that stands for thinking (its words counted, its text left out); "" for none."""
    if not thinking.strip():
        return ""
    return f"*{markdown_escape(thinking_line(thinking).removeprefix('[thinking] '))} of thinking (in `run.thinking`)*"


def _quote(text: str) -> str:
    return "\n".join("> " + markdown_escape(line) if line.strip() else ">" for line in printable(text).splitlines())


# Markdown helpers

_MD_INLINE = re.compile(r"([\\`*_\[\]<>&$~|])")
_MD_LINE_START = re.compile(r"^([#>+=-]|\d+[.)])")


def markdown_escape(text: str, *, line_start: bool = True) -> str:
    """``text`` as literal inline Markdown on one line (what would format or link is escaped).

    ``line_start``: the text may begin a line, where ``#``, ``>``, ``-`` or ``1.`` would
    start a heading, quote or list; False for text that follows others on its line, where
    they are literal (a duration ``1.3 s`` then keeps no backslash).
    """
    flat = _MD_INLINE.sub(r"\\\1", " ".join(printable(text).split()))
    if not line_start:
        return flat
    return _MD_LINE_START.sub(lambda m: m.group(1)[:-1] + "\\" + m.group(1)[-1], flat)


def _inline_escape(text: str) -> str:
    """:func:`markdown_escape` for text after others on its line."""
    return markdown_escape(text, line_start=False)


def code_span(text: str) -> str:
    """``text`` (on one line) as an inline code span, whatever backticks it holds."""
    flat = " ".join(text.split())
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def fenced(text: str, info: str = "") -> str:
    """``text`` as a fenced code block, with a fence longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{fence}{info}\n{body}{fence}"


_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_BACKTICKS = re.compile(r"`+")
_ESCAPE_OR_BACKTICKS = re.compile(r"\\[!-/:-@\[-`{-~]|`+")
_ESCAPED = re.compile(r"(\\[!-/:-@\[-`{-~])")
_LINK_DEST = re.compile(r"(\]\()(\s*)([^\s)]*)")
_REF_DEF = re.compile(r"^( {0,3})(\[[^\]\n]+\]:)(\s*)(\S+)", re.MULTILINE)
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
_SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
_BACKSLASH_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_URL_IGNORED = re.compile(r"[\x00-\x20\x7f]")


def safe_markdown(text: str) -> str:
    """Untrusted Markdown that renders its formatting but no HTML, no image and no unsafe link.

    Outside code (fenced blocks, and code spans on one line) ``<`` becomes ``&lt;``, so no
    renderer sees a tag, a comment or an autolink; ``![`` becomes ``\\![`` (a link, not
    an image fetched on sight); ``$`` becomes ``\\$`` (no math typeset); a link or
    reference whose target has a scheme other than http, https or mailto (after decoding
    entities and escapes, as renderers do) loses its link syntax. Code is left as written:
    renderers escape it themselves.

    The result is then parsed by a CommonMark parser that lets raw HTML through; if it
    still finds raw HTML, an image or an unsafe link (the line-by-line reading above can
    be fooled, e.g. by a code span that starts on an earlier line or a fence that a list
    item ends), the whole text is returned as one fenced code block instead.
    """
    candidate = _neutralize(text)
    return candidate if _inert(candidate) else fenced(text)


def _neutralize(text: str) -> str:
    out: list[str] = []
    prose: list[str] = []
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        if fence is not None:
            out.append(line)
            if _closes(line, fence):
                fence = None
            continue
        opened = _FENCE_OPEN.match(line.rstrip("\n"))
        if opened and not (opened.group(1)[0] == "`" and "`" in opened.group(2)):
            out.append(_safe_prose("".join(prose)))
            prose = []
            fence = opened.group(1)
            out.append(line)
        else:
            prose.append(line)
    out.append(_safe_prose("".join(prose)))
    neutral = "".join(out)
    if fence is None:
        return neutral
    # Cut or interrupted inside a code block: closed here, or what follows it in the record
    # (the next turn, the footer) would be read as code too.
    return neutral + ("" if neutral.endswith("\n") else "\n") + fence


class _Checker(MarkdownIt):
    """CommonMark with raw HTML on and every link kept: what a careless renderer would show."""

    def validateLink(self, url: str) -> bool:  # markdown-it's name
        """Keep every link, so that the check sees unsafe ones too."""
        return True


@functools.cache
def _checker() -> MarkdownIt:
    return _Checker("commonmark", {"html": True}).enable(["table", "strikethrough"])


def _inert(markdown_text: str) -> bool:
    """Whether a CommonMark reading of ``markdown_text`` has no raw HTML, image or unsafe link."""
    pending = list(_checker().parse(markdown_text))
    while pending:
        token = pending.pop()
        if token.type in ("html_block", "html_inline", "image"):
            return False
        if token.type == "link_open" and _unsafe_target(str(token.attrGet("href") or "")):
            return False
        pending.extend(token.children or ())
    return True


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return (
        len(line) - len(line.lstrip(" ")) <= 3
        and len(stripped) >= len(fence)
        and set(stripped) == {fence[0]}
    )


def _safe_prose(text: str) -> str:
    if not text:
        return text
    text = _REF_DEF.sub(_neutralize_definition, text)
    return "".join(_safe_line(line) for line in text.splitlines(keepends=True))


def _safe_line(line: str) -> str:
    """One line of prose, read left to right as CommonMark does: escapes, code spans, the rest."""
    out: list[str] = []
    prose_start = index = 0
    while (found := _ESCAPE_OR_BACKTICKS.search(line, index)) is not None:
        index = found.end()
        if found.group().startswith("\\"):
            continue  # an escaped character stays escaped (and literal)
        run = len(found.group())
        closing = _closing_backticks(line, index, run)
        if closing < 0:
            continue  # no closing run: the backticks are literal
        out += [_safe_inline(line[prose_start : found.start()]), line[found.start() : closing + run]]
        index = prose_start = closing + run
    out.append(_safe_inline(line[prose_start:]))
    return "".join(out)


def _closing_backticks(line: str, start: int, run: int) -> int:
    """Where a backtick run of exactly ``run`` starts at or after ``start``, or -1."""
    for match in _BACKTICKS.finditer(line, start):
        if len(match.group()) == run:
            return match.start()
    return -1


def _safe_inline(text: str) -> str:
    """Prose outside code: no tag can open, no image loads, no unsafe link stays a link, and
    no ``$`` pair is typeset as math (JupyterLab, GitHub), as the HTML record typesets none."""
    pieces = _ESCAPED.split(text)
    # split() keeps the escaped pairs at odd positions: those stay as they are.
    for position in range(0, len(pieces), 2):
        pieces[position] = pieces[position].replace("<", "&lt;").replace("![", "\\![").replace("$", "\\$")
    return _LINK_DEST.sub(_neutralize_link, "".join(pieces))


def _neutralize_link(match: re.Match[str]) -> str:
    if _unsafe_target(match.group(3)):
        return "]\\(" + match.group(2) + match.group(3)
    return match.group(0)


def _neutralize_definition(match: re.Match[str]) -> str:
    if _unsafe_target(match.group(4)):
        return match.group(1) + "\\" + match.group(2) + match.group(3) + match.group(4)
    return match.group(0)


def _unsafe_target(target: str) -> bool:
    """Whether a link target, read as a renderer and a browser would, has a scheme we do not allow."""
    decoded = _URL_IGNORED.sub("", html.unescape(_BACKSLASH_ESCAPE.sub(r"\1", target.strip("<>"))))
    scheme = _SCHEME.match(decoded.lower())
    return scheme is not None and scheme.group(1) not in _SAFE_SCHEMES


def _from_a_line_start(tail: str) -> str:
    """``tail`` (the end of a stream, cut in a line) from where a terminal starts a line: past
    the cut line, or at its last redraw. A progress bar redrawn with ``\r`` is one line of
    every redraw (tqdm's: megabytes), longer than the tail: dropped whole, the record lost the
    bar (``done`` alone under a finished training loop); its last redraw starts at column 0."""
    end = tail.find("\n")
    redraw = tail[: max(end, 0)].rstrip("\r").rfind("\r")  # "\r\n" ends a line: no redraw
    start = redraw + 1 if redraw >= 0 else end + 1
    return tail[start:] if 0 < start < len(tail) else tail
