"""Plain text of a Claude run: for terminals, text mode in notebooks and transcripts.

Pure functions and one small stateful renderer over snapshots of a run
(:class:`~cc_executor_nb.claude.interpreter.ClaudeView`, or anything with the same
attributes). No I/O, no widgets::

    renderer = ClaudeTextRenderer()
    for piece in pieces:                      # the CLI's stream-json output, any chunking
        interpreter.feed("stdout", piece)
        write(renderer.render(interpreter.snapshot()))
    write(renderer.render(interpreter.snapshot(), final=True))

:meth:`ClaudeTextRenderer.render` returns :class:`Chunk` values: ``answer`` chunks are
the model's text as it grows, in whole lines (a long line is cut at a space, never
mid-word, and never with a newline added), and ``note`` chunks are one line each:

- ``[thinking] 12 words`` once a thinking block is over (its text stays in
  ``run.thinking``),
- ``[retry] API overloaded (529), retry 1 of 2 in 0.5 s`` per API retry,
- ``[limit] 5-hour usage limit · resets 00:57:16 (in 4 s)`` when a usage limit refuses
  the run, and ``[resume] ...`` when an auto-resumed run waits for the reset and resumes,
- ``[permission] ...`` per permission question and per answer to it (the hook for
  interactive runs: any ``permission_requests`` the snapshot carries, each with
  ``tool``, ``input``, ``status`` pending/allowed/denied, ``decided_by`` and
  ``message``, as attributes or mapping keys),
- ``[tool] Bash · echo hi → ok, 1 line`` per finished tool call,
- ``[error] ...`` and ``[result] done · $0.0092 · ... · session ...`` at the end.

Model and tool text is untrusted: control characters (terminal escape sequences
included) are removed from everything returned here, and bidi controls shown as
``⟨U+202E⟩`` (:func:`~cc_executor_nb.terminaltext.printable`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..terminaltext import printable, terminal_text
from .limits import UsageLimit, describe_limit
from .render import (
    decision_reason,
    decision_words,
    format_cost,
    format_duration,
    retry_text,
    status_name,
    tool_input_summary,
)
from .streamjson import ApiRetry, Cut, TextGap, Thought, ToolCall, ToolPlan, TurnPart, text_and_result

__all__ = [
    "FLUSH_CHARS",
    "TOOL_ERROR_CHARS",
    "Chunk",
    "ClaudeSnapshot",
    "ClaudeTextRenderer",
    "answer_of",
    "asks_now",
    "error_line",
    "footer_items",
    "footer_line",
    "join_chunks",
    "limit_line",
    "parts_text",
    "permission_line",
    "printable",
    "render_text",
    "thinking_line",
    "tool_line",
]

FLUSH_CHARS = 160
"""An unfinished line longer than this is written up to its last space."""
TOOL_INPUT_CHARS = 80
TOOL_ERROR_CHARS = 100

ChunkKind = Literal["answer", "note"]

_ESCAPE_CHARS = 64
"""How far back a cut of the answer looks for an escape it would split (longer ones are rare)."""
_WHOLE_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[0-?@-Z\\-_])")


@dataclass(frozen=True)
class Chunk:
    """A piece of text to show: the model's answer (``answer``), or one line about the run (``note``).

    An ``answer`` chunk carries its own newlines; a ``note`` is one line without one.
    """

    kind: ChunkKind
    text: str


class ClaudeSnapshot(Protocol):
    """What the text renderer reads of a run (a ``ClaudeView`` has it all)."""

    @property
    def text(self) -> str: ...
    @property
    def answer(self) -> str: ...
    @property
    def thinking(self) -> str: ...
    @property
    def result(self) -> dict[str, Any] | None: ...
    @property
    def cost_usd(self) -> float | None: ...
    @property
    def usage(self) -> dict[str, Any]: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def session_begun(self) -> bool: ...
    @property
    def model(self) -> str | None: ...
    @property
    def tool_calls(self) -> Sequence[ToolCall]: ...
    @property
    def is_error(self) -> bool: ...
    @property
    def interrupted(self) -> bool: ...
    @property
    def api_error_status(self) -> int | None: ...
    @property
    def retries(self) -> Sequence[ApiRetry]: ...
    @property
    def num_turns(self) -> int | None: ...
    @property
    def turns(self) -> int: ...
    @property
    def phase(self) -> str: ...


# One line each


def thinking_line(thinking: str) -> str:
    """``[thinking] 12 words``: the note that stands for a thinking block."""
    words = len(thinking.split())
    return f"[thinking] {words:,} word{_plural(words)}"


def tool_line(tool: ToolCall) -> str:
    """``[tool] Bash · echo hi → ok, 1 line`` (or ``→ error: ...``, ``→ running``)."""
    name = printable(tool.name or "tool")
    summary = printable(tool_input_summary(tool.input, TOOL_INPUT_CHARS))
    head = f"[tool] {name} · {summary}" if summary and summary != "{}" else f"[tool] {name}"
    return f"{head} → {_tool_outcome(tool)}"


def _tool_outcome(tool: ToolCall) -> str:
    if tool.status != "done":
        return "no result"
    result = printable(terminal_text(tool.result or ""))
    if tool.is_error:
        first = next((line.strip() for line in result.splitlines() if line.strip()), "")
        return f"error: {_cut(first, TOOL_ERROR_CHARS)}" if first else "error"
    lines = tool.output_lines
    return f"ok, {lines} line{_plural(lines)}" if lines else "ok, no output"


def permission_line(item: Any) -> str:
    """One line for a permission question or its answer (interactive runs).

    ``item`` has ``tool``, ``input``, ``status`` (pending, allowed, denied),
    ``decided_by`` and ``message``, as attributes or as mapping keys.
    """
    tool = printable(str(_field(item, "tool") or "a tool"))
    status = str(_field(item, "status") or "pending")
    raw_input = _field(item, "input")
    summary = printable(tool_input_summary(raw_input, TOOL_INPUT_CHARS)) if isinstance(raw_input, (dict, str)) else ""
    what = f"{tool} · {summary}" if summary and summary != "{}" else tool
    if status == "pending":
        return f"[permission] {what} → waiting for an answer"
    decided_by = _field(item, "decided_by")
    words = decision_words(status, str(decided_by) if decided_by else None, bool(_field(item, "always")))
    line = f"[permission] {what} → {printable(words)}"
    message = decision_reason(str(_field(item, "message") or ""))
    return line + (f": {_cut(printable(message), TOOL_ERROR_CHARS)}" if message else "")


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def limit_line(limit: UsageLimit, now: float) -> str:
    """``[limit] 5-hour usage limit · resets 00:57:16 (in 4 s)``."""
    return "[limit] " + printable(describe_limit(limit, now))


def _limit_of(view: object) -> UsageLimit | None:
    """The snapshot's usage limit, if it carries one (an API retry says it in its own note)."""
    limit = getattr(view, "usage_limit", None)
    return limit if isinstance(limit, UsageLimit) and limit.source != "api_retry" else None


def error_line(view: ClaudeSnapshot, *, shown: str = "") -> str:
    """``[error] API overloaded (529): ...`` for a failed run; ``""`` otherwise.

    The message is left out when ``shown`` (the text already written) ends with it:
    the CLI also sends an API error as the assistant's text.
    """
    if not view.is_error:
        return ""
    if view.interrupted:
        return "[interrupted] the turn was interrupted"
    status = view.api_error_status
    title = f"API {status_name(status)} ({status})" if status is not None else "Claude run failed"
    message = " ".join(printable(view.answer).split())
    if not message or " ".join(printable(shown).split()).endswith(message):
        return f"[error] {title}"
    return f"[error] {title}: {message}"


def footer_items(view: ClaudeSnapshot, *, ended: bool = False) -> list[str]:
    """Status, cost, tokens, turns, duration, model and session id, as short items.

    The status is ``done``, ``interrupted``, ``failed`` or, without Claude's result,
    ``no result yet`` (``no result`` once the process ``ended``). Figures the CLI did not
    report are left out. Turns are named for what they count: the CLI's ``num_turns`` for
    one prompt ("3 agent turns"), the prompts of a conversation after a follow-up
    ("2 conversation turns"); an interrupted (or cancelled) turn's ``num_turns`` is left out.
    """
    result = view.result
    outcome = "interrupted" if view.interrupted else "failed" if view.is_error else "done"
    missing = "no result" if ended else "no result yet"
    items = [missing if result is None else outcome]
    if view.cost_usd is not None:
        items.append(format_cost(view.cost_usd))
    duration = _number(result, "duration_ms") if result is not None else None
    tokens, took = _token_items(view.usage), [format_duration(duration)] if duration is not None else []
    turns = getattr(view, "turns", 0)
    if turns > 1:
        # A conversation: the cost is the session's so far, the tokens and time the last turn's.
        items.append(f"{turns} conversation turns")
        if tokens or took:
            items.append("last turn " + ", ".join(tokens + took))
    else:
        items += tokens
        # After an interrupt (and so a cancel) the CLI's count is no count of what happened:
        # a turn stopped in its first answer reads "2 agent turns".
        if view.num_turns is not None and not view.interrupted:
            items.append(f"{view.num_turns} agent turn{_plural(view.num_turns)}")  # the CLI's num_turns
        if view.interrupted and took and result is not None:
            # The CLI's time to the interrupt, not the run's: "253 ms" beside the header's
            # "took 845 ms" (a cancel ends the process after its turn) read as two times for one run.
            items[0] = f"interrupted after {took.pop()}"
        items += took
    if view.model:
        items.append(printable(view.model))
    if view.session_id:
        items.append(f"session {printable(view.session_id)}")
    return items


def footer_line(view: ClaudeSnapshot, *, ended: bool = False) -> str:
    """``[result] done · $0.0092 · 2,004 in / 61 out tokens · 1 agent turn · 102 ms · model · session ID``
    (``ended``: the process is gone, see :func:`footer_items`)."""
    return "[result] " + " · ".join(footer_items(view, ended=ended))


def _token_items(usage: Mapping[str, Any]) -> list[str]:
    tokens_in, tokens_out = _number(usage, "input_tokens"), _number(usage, "output_tokens")
    items = []
    # An interrupted turn's result says 0 in / 0 out: noise beside its cost, so left out.
    if tokens_in or tokens_out:
        items.append(f"{round(tokens_in or 0):,} in / {round(tokens_out or 0):,} out tokens")
    read = _number(usage, "cache_read_input_tokens") or 0
    written = _number(usage, "cache_creation_input_tokens") or 0
    if read or written:
        items.append(f"cache {round(read):,} read / {round(written):,} written")
    return items


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def answer_of(view: ClaudeSnapshot) -> str:
    """The answer to show: all of Claude's text (before, between and after its tool calls),
    then the result's text unless the text ends with it (:func:`text_and_result`).

    A conversation of several turns: every turn's text. A failed run: the text Claude wrote
    before the failure (a story cut by the budget is paid for), but "" when that text is the
    failure itself (the CLI sends an API error as the assistant's text too).
    """
    if getattr(view, "turns", 0) > 1 or view.interrupted:
        return view.text  # (an interrupted turn: what came before the interrupt)
    if view.is_error:
        message, written = " ".join(view.answer.split()), " ".join(view.text.split())
        return "" if message and written.endswith(message) else view.text
    return text_and_result(view.text, view.answer) if view.result is not None else view.text


# A whole run at once


def render_text(
    view: ClaudeSnapshot, *, ended: bool = False, parts: Sequence[TurnPart | TextGap | Cut] | None = None,
    plan: ToolPlan | None = None,
) -> str:
    """The run as plain text at once: retries, permissions, then the thinking notes, text and
    tools, then the footer.

    ``parts``: the thinking, text and tool calls in the order they came, maybe cut
    (:meth:`~cc_executor_nb.claude.streamjson.TurnView.parts`); without them, a thinking note, the
    view's tool calls, then its answer (a snapshot does not know where each came among the text).
    The :class:`ClaudeTextRenderer` writes things as they happen instead. ``plan``: a bounded
    record's (:func:`parts_text`).
    """
    notes: list[str] = []
    if parts is None and view.thinking.strip():
        notes.append(thinking_line(view.thinking))
    notes += [f"[retry] {retry_text(retry, view.turns)}" for retry in view.retries]
    limit = _limit_of(view)
    if limit is not None:
        notes.append(limit_line(limit, time.time()))
    notes += [permission_line(item) for item in permission_requests(view)]
    shown: Sequence[TurnPart | TextGap | Cut] = (
        parts if parts is not None else [tuple(view.tool_calls), answer_of(view)]
    )
    blocks = ["\n".join(notes)] if notes else []
    blocks += parts_text(shown, plan)
    blocks.append("\n".join(filter(None, [error_line(view), footer_line(view, ended=ended)])))
    return "\n\n".join(blocks) + "\n"


def parts_text(parts: Iterable[TurnPart | TextGap | Cut], plan: ToolPlan | None = None) -> list[str]:
    """A turn's thinking, text and tool calls in order as blocks of text: each text, the thinking
    at one place as its ``[thinking]`` note, the calls made at one place as ``[tool]`` lines (a
    subagent's left out), a cut as ``… N more characters`` under the text it cuts, the texts a
    bounded record leaves out as one ``[text]`` line. ``plan``: a bounded record's, whose calls left
    out are one ``[tools]`` line where the first of them stood."""
    blocks: list[str] = []
    previous: TurnPart | TextGap | Cut | None = None
    for part in parts:
        if isinstance(part, Cut):
            text = blocks.pop() if isinstance(previous, str) else ""
            blocks.append(f"{text}\n… {part.chars:,} more characters".lstrip("\n"))
        elif isinstance(part, str):
            blocks.append(printable(part).strip("\n"))
        elif isinstance(part, TextGap):
            blocks.append(f"[text] {printable(part.words)}: run.text has all of them")
        elif isinstance(part, Thought):
            blocks.append(_planned_thought_line(part, plan))
        else:
            blocks.append("\n".join(filter(None, (_planned_line(tool, plan) for tool in part))))
        previous = part
    return [block for block in blocks if block]


def _planned_thought_line(thought: Thought, plan: ToolPlan | None) -> str:
    """A place of thinking's ``[thinking]`` note, the line of the places ``plan`` leaves out, or ""."""
    state = plan.thoughts.state(thought) if plan is not None else "shown"
    if state == "gap" and plan is not None:
        return f"[thinking] {plan.thoughts.gap_words()}: run.thinking has all of it"
    return "" if state == "hidden" else thinking_line(thought.text)


def _planned_line(tool: ToolCall, plan: ToolPlan | None) -> str:
    """A call's ``[tool]`` line, the ``[tools]`` line of the calls ``plan`` leaves out, or ""."""
    state = plan.state(tool) if plan is not None else "whole"
    if state == "gap" and plan is not None:
        return f"[tools] {printable(plan.gap_words())}: run.tool_calls has all of them"
    return "" if state == "hidden" or tool.parent_tool_use_id is not None else tool_line(tool)


def permission_requests(view: object) -> tuple[Any, ...]:
    """The snapshot's permission questions, if it carries any (interactive runs)."""
    items = getattr(view, "permission_requests", None)
    return tuple(items) if isinstance(items, Iterable) and not isinstance(items, (str, bytes)) else ()


def asks_now(view: object) -> bool:
    """Whether one of the snapshot's permission questions still waits for an answer."""
    return any(str(_field(item, "status") or "pending") == "pending" for item in permission_requests(view))


def join_chunks(chunks: Iterable[Chunk]) -> str:
    """The chunks as one text: answers as they are, each note on a line of its own."""
    return "".join(chunk.text if chunk.kind == "answer" else chunk.text + "\n" for chunk in chunks)


# As it happens


class ClaudeTextRenderer:
    """Turns successive snapshots of one run into the text to add, in the order things happened.

    Call :meth:`render` with each new snapshot and once more with ``final=True`` at
    the end. Every note starts on a line of its own: an unfinished answer line is
    completed first (that is the only newline the renderer ever adds to the answer).
    If the answer restarts (the CLI retried a failed stream), a note says so and the
    new text follows.
    """

    def __init__(
        self, *, flush_chars: int = FLUSH_CHARS, footer: bool = True, clock: Callable[[], float] = time.time
    ) -> None:
        self.flush_chars = flush_chars
        self.footer = footer
        self.clock = clock
        self._limit_seen: UsageLimit | None = None
        self._resume_seen: tuple[int, str] | None = None
        self._consumed = 0  # characters of ``view.text`` already written
        self._tail = ""  # the last characters written, to notice a restarted answer
        self._line_open = False  # the last answer chunk did not end its line
        self._after_note = False  # a note came after the last answer text
        self._shown_any = False  # some answer text was written
        self._thinking_seen = 0
        self._retries_seen = 0
        self._tools_seen: set[str] = set()
        # The calls read so far (how many, the id of the last) and, of those, the top-level ones
        # not shown yet (their places): a render reads these and the new calls, not every call.
        self._tools_read: tuple[int, str | None] = (0, None)
        self._tools_waiting: list[int] = []
        self._permissions_seen: set[tuple[str, str]] = set()
        self._done = False
        self._footer_at: int | None = None  # _consumed when a turn's footer was written

    @property
    def line_open(self) -> bool:
        """Whether the last answer chunk left its line unfinished."""
        return self._line_open

    def close_line(self) -> list[Chunk]:
        """A newline ending an unfinished answer line (before text from elsewhere), or nothing."""
        if not self._line_open:
            return []
        self._line_open = False
        self._after_note = True
        return [Chunk("answer", "\n")]

    def shown(self, request_id: str, status: str = "pending") -> None:
        """A permission question's line in this status was shown another way (the run's
        ``[needs you]`` notice): no ``[permission]`` line repeats it."""
        self._permissions_seen.add((request_id, status))

    def end_line(self, view: ClaudeSnapshot) -> list[Chunk]:
        """The answer text held back so far and a newline ending its line: what goes before
        a note from elsewhere (the run's notices), so that the note keeps its place in time."""
        if self._done:
            return []
        out: list[Chunk] = []
        self._flush_answer(view, out)
        return out + self.close_line()

    def render(self, view: ClaudeSnapshot, *, final: bool = False, turn: bool = False) -> list[Chunk]:
        """The chunks that ``view`` adds to what was rendered before (all of the rest if ``final``).

        ``turn``: a conversation's turn ended and the process lives on: the rest of this
        turn and its footer, and rendering goes on with the next turn.
        """
        if self._done:
            return []
        out: list[Chunk] = []
        final = final or turn
        self._thinking(view, final, out)
        self._retries(view, out)
        self._limits(view, out)
        self._permissions(view, out)
        self._tools(view, final, out)
        self._answer(view, final, out)
        if final:
            self._end(view, out, turn=turn)
        return out

    # Notes

    def _note(self, text: str, out: list[Chunk]) -> None:
        if self._line_open:
            out.append(Chunk("answer", "\n"))
            self._line_open = False
        out.append(Chunk("note", text))
        self._after_note = True

    def _thinking(self, view: ClaudeSnapshot, final: bool, out: list[Chunk]) -> None:
        thinking = view.thinking
        if len(thinking) <= self._thinking_seen or (view.phase == "thinking" and not final):
            return  # nothing new, or still thinking: one note once the block is over
        new = thinking[self._thinking_seen :]
        self._thinking_seen = len(thinking)
        if new.strip():
            self._note(thinking_line(new), out)

    def _retries(self, view: ClaudeSnapshot, out: list[Chunk]) -> None:
        for retry in view.retries[self._retries_seen :]:
            self._note(f"[retry] {retry_text(retry)}", out)
        self._retries_seen = max(self._retries_seen, len(view.retries))

    def _limits(self, view: ClaudeSnapshot, out: list[Chunk]) -> None:
        limit = _limit_of(view)
        if limit is not None and limit != self._limit_seen:
            self._limit_seen = limit
            self._note(limit_line(limit, self.clock()), out)
        note = getattr(view, "resume_note", None)
        key = (int(getattr(view, "resumes", 0) or 0), str(note))
        if isinstance(note, str) and note and key != self._resume_seen:
            self._resume_seen = key
            self._note("[resume] " + printable(note), out)

    def _permissions(self, view: ClaudeSnapshot, out: list[Chunk]) -> None:
        for index, item in enumerate(permission_requests(view)):
            key = (str(_field(item, "id") or index), str(_field(item, "status") or "pending"))
            if key not in self._permissions_seen:
                self._permissions_seen.add(key)
                self._flush_answer(view, out)
                self._note(permission_line(item), out)

    def _tools(self, view: ClaudeSnapshot, final: bool, out: list[Chunk]) -> None:
        calls = view.tool_calls
        waiting, self._tools_waiting = self._tools_to_read(calls), []
        self._tools_read = (len(calls), calls[-1].id if calls else None)
        for index in waiting:
            tool = calls[index]
            if tool.id in self._tools_seen or tool.parent_tool_use_id is not None:
                continue  # a subagent's calls are its own business
            if tool.status == "done" or final:
                self._tools_seen.add(tool.id)
                self._flush_answer(view, out, upto=tool.text_offset)
                self._note(tool_line(tool), out)
            else:
                self._tools_waiting.append(index)

    def _tools_to_read(self, calls: Sequence[ToolCall]) -> list[int]:
        """The places of the calls a render reads: those not shown yet of the ones read before, and
        the new ones; every call when the ones read before moved (a call was forgotten). Reading
        every call at each render was quadratic (a render per line of a run of thousands of calls)."""
        count, last = self._tools_read
        if len(calls) < count or (count and calls[count - 1].id != last):
            return list(range(len(calls)))
        return [*self._tools_waiting, *range(count, len(calls))]

    # The answer

    def _answer(self, view: ClaudeSnapshot, final: bool, out: list[Chunk]) -> None:
        text = view.text
        if self._restarted(text):
            self._note("[retry] the answer restarted (the API stream was retried)", out)
            self._consumed, self._tail = 0, ""
        pending = text[self._consumed :]
        cut = len(pending) if final else _cut_point(pending, self.flush_chars)
        if cut:
            self._write(pending[:cut], out)

    def _flush_answer(self, view: ClaudeSnapshot, out: list[Chunk], upto: int | None = None) -> None:
        """Write the answer so far, or up to ``upto`` (where a tool call came): a note follows."""
        end = len(view.text) if upto is None else min(upto, len(view.text))
        if not self._restarted(view.text) and end > self._consumed:
            self._write(view.text[self._consumed : end], out)

    def _restarted(self, text: str) -> bool:
        start = self._consumed - len(self._tail)
        return self._consumed > 0 and (len(text) < self._consumed or text[start : self._consumed] != self._tail)

    def _write(self, piece: str, out: list[Chunk]) -> None:
        self._consumed += len(piece)
        self._tail = (self._tail + piece)[-32:]
        shown = printable(piece)
        if self._after_note or not self._shown_any:
            shown = shown.lstrip("\n")  # the separator between messages, after a note or at the start
        if not shown:
            return
        self._after_note, self._shown_any = False, True
        out.append(Chunk("answer", shown))
        self._line_open = not shown.endswith("\n")

    def _end(self, view: ClaudeSnapshot, out: list[Chunk], *, turn: bool = False) -> None:
        self._done = not turn
        if self._footer_at is not None and self._footer_at == self._consumed and not out:
            return  # the last turn's footer is already written and nothing came since
        self._footer_at = self._consumed if turn else None
        answer = answer_of(view)
        if not self._consumed and answer.strip():
            # The answer came whole in the result, never as streamed text.
            self._write(answer, out)
        else:
            self._write_result_beyond_text(view, answer, out)
        error = error_line(view, shown=view.text[: self._consumed])
        if error:
            self._note(error, out)
        if self.footer:
            self._note(footer_line(view, ended=not turn), out)
        elif self._line_open:
            out.append(Chunk("answer", "\n"))
            self._line_open = False

    def _write_result_beyond_text(self, view: ClaudeSnapshot, answer: str, out: list[Chunk]) -> None:
        """The result's text, when the streamed text does not end with it (as the records
        show it, :func:`~.streamjson.text_and_result`): it was never printed."""
        streamed = view.text.rstrip()
        if view.is_error or not answer.startswith(streamed):
            return
        extra = answer[len(streamed):]
        if extra.strip():
            if self._line_open:
                out.append(Chunk("answer", "\n"))
                self._line_open = False
            self._write(extra.lstrip("\n") + "\n", out)


def _cut_point(pending: str, flush_chars: int) -> int:
    """How much of the unwritten answer to write now: whole lines, or a long line up to a space."""
    newline = pending.rfind("\n")
    if newline >= 0:
        return newline + 1
    if len(pending) < flush_chars:
        return 0
    space = pending.rfind(" ")
    cut = space + 1 if space > 0 else len(pending)
    # Never inside an escape sequence: its two halves would each be shown as litter.
    escape = pending.rfind("\x1b", max(0, cut - _ESCAPE_CHARS), cut)
    if escape > 0 and not _WHOLE_ESCAPE.match(pending, escape, cut):
        return escape
    return cut


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(count: float) -> str:
    return "" if count == 1 else "s"
