"""Parse the ``claude`` CLI's stream-json output into a live run model.

The CLI, run as ``claude -p PROMPT --output-format stream-json --verbose
--include-partial-messages``, prints one JSON event per line. This module turns
that text into a :class:`ClaudeRun`: the answer so far, the thinking, the tool
calls, the API retries and the final result. It is pure: text goes in, state
comes out; there is no I/O and no asyncio here, so the parser is tested with
strings alone.

The parser never raises on what the CLI prints. Unknown event types are
counted, lines that are not JSON objects are kept (bounded) as raw text, and
an event whose fields have unexpected types is counted as malformed.

Two rules come from how the CLI behaves:

* Live text is built from ``stream_event`` deltas, but the ``assistant``
  message that follows is authoritative. When a stream fails midway the CLI
  retries without streaming, so partial deltas of a message that is never
  confirmed are dropped as soon as a different message starts or arrives.
* An API failure arrives as a ``result`` with ``subtype: "success"`` and
  ``is_error: true``; :attr:`ClaudeRun.is_error` looks at both. The CLI also sends
  the error's text as an ``assistant`` message of its own (``is_api_error_message:
  true``, model ``<synthetic>``): that is no text of Claude's and is not kept as
  such; the result carries the error.

In host mode (:mod:`cc_executor_nb.claude.control`) one process holds a conversation:
each user message is a *turn* that ends with its own ``result`` (``system``/``init``
comes again at the start of every turn), and control lines (questions, answers,
withdrawals) travel among the events. :meth:`ClaudeRun.begin_turn` marks where a turn
starts; control messages and turn ends are queued as *signals* for whoever drives the
conversation (:meth:`ClaudeRun.take_signals`); the parser only reads them.

Usage and rate limits (``rate_limit_event``, ``api_retry`` with 429, an error result
naming a reset time; see :mod:`cc_executor_nb.claude.limits`) set
:attr:`ClaudeRun.usage_limit`. A run started with ``auto_resume`` goes through
:mod:`cc_executor_nb.claude.autoresume`, whose own lines (``type: "cc_executor_nb"``)
say when it waits for a reset and when it resumes the session; one stream may then hold
several processes of the same Claude session, one after another.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import json
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Reversible, Sequence
from dataclasses import FrozenInstanceError, dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

from .control import ControlMessage, parse_control
from .limits import UsageLimit, cost_estimate_reason, limit_from_event, limit_from_result, limit_from_retry

__all__ = [
    "AnswerBudget",
    "ApiRetry",
    "ClaudeRun",
    "Cut",
    "FrozenDict",
    "FrozenList",
    "FrozenToolCall",
    "LineSplitter",
    "LiveGap",
    "Phase",
    "Signal",
    "TextGap",
    "TextKey",
    "TextPlan",
    "ThinkingBudget",
    "Thought",
    "ThoughtPlan",
    "ToolBudget",
    "ToolCall",
    "ToolPlan",
    "ToolStatus",
    "TurnEnded",
    "TurnPart",
    "TurnView",
    "TurnViews",
    "frozen",
    "kinds_words",
    "live_window",
    "outcome_mark",
    "summary",
    "text_and_result",
    "text_places",
]

_T = TypeVar("_T")

Phase = Literal["starting", "thinking", "writing", "tool", "done"]
ToolStatus = Literal["pending", "done"]


class LineSplitter:
    """Split a stream of text into complete lines, keeping the unfinished one.

    The pieces of an unfinished line are kept in a list and joined once, when
    its newline arrives, so a line of many megabytes fed in small chunks costs
    linear time. A trailing carriage return is removed from every line.
    """

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._pending = 0

    @property
    def pending(self) -> int:
        """Number of characters held for the unfinished line."""
        return self._pending

    def feed(self, text: str) -> list[str]:
        """Add ``text``; return the lines it completed, without their newlines."""
        if "\n" not in text:
            if text:
                self._pieces.append(text)
                self._pending += len(text)
            return []
        parts = text.split("\n")
        self._pieces.append(parts[0])
        lines = ["".join(self._pieces), *parts[1:-1]]
        rest = parts[-1]
        self._pieces = [rest] if rest else []
        self._pending = len(rest)
        return [_strip_cr(line) for line in lines]

    def flush(self) -> str:
        """Return the unfinished line (``""`` if none) and forget it."""
        rest = _strip_cr("".join(self._pieces))
        self._pieces = []
        self._pending = 0
        return rest


@dataclass
class ToolCall:
    """One tool call of the run.

    ``input`` is a partial JSON string while the call is being streamed, and
    the parsed object once it is complete. ``result`` is the tool's output as
    text, set together with ``status = "done"``. ``parent_tool_use_id`` is set
    for calls made by a subagent.
    """

    id: str
    name: str
    input: dict[str, Any] | str = ""
    result: str | None = None
    is_error: bool = False
    status: ToolStatus = "pending"
    parent_tool_use_id: str | None = None
    text_offset: int | None = None
    """How much of the run's text came before this call (where a transcript shows it)."""
    turn: int = 0
    """The conversation turn the call belongs to (0 for the first)."""

    @property
    def output_lines(self) -> int:
        """The lines of the tool's output: 0 for none, or for the CLI's stand-in for none
        (``(Bash completed with no output)``); a final newline ends a line, it starts none."""
        result = self.result or ""
        if not result.strip() or _NO_OUTPUT.fullmatch(result.strip()):
            return 0
        return len(result.rstrip("\n").split("\n"))


class FrozenToolCall(ToolCall):
    """A :class:`ToolCall` as a snapshot holds it (``run.tool_calls``, ``run.claude.tool_calls``):
    read-only, its input too (:func:`frozen`), so a reader cannot change what the run's records
    and widget show, nor what a later read returns. ``dataclasses.replace`` makes another; it
    compares equal to a :class:`ToolCall` of the same fields."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        call = ToolCall(*args, **kwargs)
        for name in _CALL_FIELDS:
            object.__setattr__(self, name, frozen(getattr(call, name)))

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: a run's tool calls are read-only")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}: a run's tool calls are read-only")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ToolCall):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _CALL_FIELDS)

    __hash__ = None  # type: ignore[assignment]  # equal to mutable calls, which have none

    @classmethod
    def of(cls, call: ToolCall) -> FrozenToolCall:
        """A read-only copy of ``call`` (its input copied too: the run's own call keeps changing)."""
        return cls(**{name: getattr(call, name) for name in _CALL_FIELDS})


_CALL_FIELDS = tuple(item.name for item in fields(ToolCall))


def _refused(self: object, *args: object, **kwargs: object) -> Any:
    raise TypeError(f"a run's {type(self).__name__} is read-only: copy it to change it (list(...), dict(...))")


class FrozenList(list[Any]):
    """A list that refuses changes (a run's, shared by every read: ``list(it)`` is a copy to change).
    A copy (``copy.copy``, ``copy.deepcopy``) is a plain list."""

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refused
    append = extend = insert = pop = remove = clear = sort = reverse = _refused

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [copy.deepcopy(item, memo) for item in self]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))


class FrozenDict(dict[str, Any]):
    """A dict that refuses changes (a call's input, as a snapshot holds it: ``dict(it)`` is a copy
    to change). A copy (``copy.copy``, ``copy.deepcopy``) is a plain dict."""

    __setitem__ = __delitem__ = __ior__ = _refused
    pop = popitem = clear = setdefault = update = _refused

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return {key: copy.deepcopy(value, memo) for key, value in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


def frozen(value: Any) -> Any:
    """``value`` copied read-only: its dicts and lists (at any depth) as :class:`FrozenDict` and
    :class:`FrozenList`; what JSON holds besides is immutable already."""
    if isinstance(value, dict):
        return value if type(value) is FrozenDict else FrozenDict({key: frozen(item) for key, item in value.items()})
    if isinstance(value, list):
        return value if type(value) is FrozenList else FrozenList(frozen(item) for item in value)
    return value


_NO_OUTPUT = re.compile(r"\(\w+ completed with no output\)")
"""What the CLI puts in a tool's result when the tool printed nothing."""


@dataclass(frozen=True)
class TurnEnded:
    """A signal: the current turn ended with this ``result`` event."""

    result: dict[str, Any]


Signal = ControlMessage | TurnEnded
"""What :meth:`ClaudeRun.take_signals` hands to the conversation's driver."""


@dataclass(frozen=True)
class Thought:
    """A piece of a turn's thinking (its blocks that came together, joined by blank lines), where it
    came among the turn's texts and tool calls (:meth:`TurnView.parts`)."""

    text: str
    key: tuple[int, int] = field(default=(0, 0), compare=False)
    """Its turn's index and its first block's among the turn's: what a record's :class:`ThoughtPlan`
    knows it by."""


TurnPart = str | tuple[ToolCall, ...] | Thought
"""A piece of a turn as it reads (:meth:`TurnView.parts`): a text, the tool calls made at one place
among its texts, or the thinking that came there."""


@dataclass(frozen=True)
class TurnView:
    """One turn of a conversation as the renderer shows it."""

    index: int
    prompt: str
    text: str
    tools: tuple[ToolCall, ...]
    result: dict[str, Any] | None
    interrupted: bool
    thinking: str = ""
    """The turn's thinking, its blocks joined by blank lines (:attr:`ClaudeRun.thinking` is every turn's)."""
    thinking_estimate: int | None = None
    """While the turn is thinking, the CLI's estimate of the thinking tokens (0 without one); else None."""
    texts: tuple[str, ...] = ()
    """The turn's text blocks in the order they came (:attr:`text` joins them by blank lines)."""
    tool_places: tuple[int, ...] = ()
    """For each of :attr:`tools`, how many of :attr:`texts` came before it (where it shows among them)."""
    thoughts: tuple[str, ...] = ()
    """The turn's thinking blocks in the order they came (:attr:`thinking` joins them by blank lines)."""
    thought_places: tuple[tuple[int, int], ...] = ()
    """For each of :attr:`thoughts`, how many of :attr:`texts` and of :attr:`tools` came before it."""

    @property
    def answer(self) -> str:
        """The result text when the turn succeeded, else its text so far."""
        result = self.result
        text = _get_str(result, "result") if result is not None and not _is_error_result(result) else None
        return text or self.text

    @property
    def full_answer(self) -> str:
        """Everything the turn wrote, then its result text unless that text ends with it
        (see :func:`text_and_result`); when the turn did not succeed, its text so far."""
        return text_and_result(self.text, self.answer)

    def parts(self, result_text: str = "", *, said: bool = True) -> list[TurnPart]:
        """The turn as it reads: its texts, thinking and tool calls in the order they came (texts,
        thinking blocks or calls that came together in one part each), then ``result_text`` unless
        the texts end with it (said once, as :func:`text_and_result` does). The last part is a
        text, maybe ``""``. ``said``: False leaves the texts out (they only repeat the error shown
        instead)."""
        texts = self.texts if said else ()
        whole = "\n\n".join(texts)
        extra = "" if text_and_result(whole, result_text) == whole else result_text
        parts = [_joined(list(items)) for _kind, items in itertools.groupby(self._stream(texts), key=type)]
        last = parts.pop() if parts else ""
        rest = last if isinstance(last, str) else ""
        parts += [] if isinstance(last, str) else [last]
        parts.append(f"{rest.rstrip()}\n\n{extra.lstrip()}" if rest.strip() and extra else rest or extra)
        return parts

    def _stream(self, texts: tuple[str, ...]) -> list[str | ToolCall | Thought]:
        """``texts``, the tool calls and the thinking blocks in the order they came, sorted by how
        many texts and calls came before each: a thought before what came after it at its place."""
        places = self.tool_places + (0,) * (len(self.tools) - len(self.tool_places))
        keyed: list[tuple[tuple[int, int, int], str | ToolCall | Thought]] = [
            ((place, index, 1), tool) for index, (tool, place) in enumerate(zip(self.tools, places, strict=True))
        ]
        ordered = sorted(places)  # how many calls came before text i: those placed at i or before
        keyed += [((index, bisect.bisect_right(ordered, index), 2), text) for index, text in enumerate(texts)]
        keyed += [((texts_before, tools_before, 0), Thought(thought, (self.index, index)))
                  for index, (thought, (texts_before, tools_before))
                  in enumerate(zip(self.thoughts, self.thought_places, strict=True))]
        return [item for _key, item in sorted(keyed, key=lambda pair: pair[0])]

    @property
    def is_error(self) -> bool:
        """Whether the turn ended with an error (an interrupt counts as one)."""
        return self.result is not None and _is_error_result(self.result)

    @property
    def error_message(self) -> str:
        """The turn's error in plain words (``"Interrupted."`` when we interrupted it); ``""`` if none."""
        if not self.is_error or self.result is None:
            return ""
        return "Interrupted." if self.interrupted else _error_of_result(self.result) or "The turn failed."


def _joined(items: list[str | ToolCall | Thought]) -> TurnPart:
    """Items of a kind that came together as one part: texts joined by a blank line, as thinking
    blocks; calls made at one place as a tuple. Joined at once: a part grown an item at a time
    was quadratic (20,000 calls at one place took 4.4 s to read)."""
    if isinstance(items[0], ToolCall):
        return tuple(item for item in items if isinstance(item, ToolCall))
    if isinstance(items[0], Thought):
        thoughts = [item for item in items if isinstance(item, Thought)]
        return Thought("\n\n".join(item.text for item in thoughts), thoughts[0].key)
    return "\n\n".join(item for item in items if isinstance(item, str))


@dataclass(frozen=True)
class Cut:
    """Where a bounded record stops a turn's text: ``chars`` more characters of it are left out."""

    chars: int


@dataclass
class AnswerBudget:
    """How many characters of Claude's text a bounded record still shows (None: all of it),
    spent turn after turn in the order they are read."""

    chars: int | None = None

    def spend(self, parts: Iterable[TurnPart | TextGap]) -> list[TurnPart | TextGap | Cut]:
        """A turn's ``parts`` as the record shows them: the text that overruns the budget is cut
        there and a :class:`Cut` after it counts what is left out of the turn's texts (the later
        ones too); its tool calls all stay."""
        shown: list[TurnPart | TextGap | Cut] = []
        cut_at, left_out = -1, 0
        for part in parts:
            if not isinstance(part, str) or self.chars is None:
                shown.append(part)
            elif cut_at >= 0:
                left_out += len(part)
            elif len(part) > self.chars:
                shown.append(part[: self.chars])
                cut_at, left_out, self.chars = len(shown), len(part) - self.chars, 0
            else:
                shown.append(part)
                self.chars -= len(part)
        return shown if cut_at < 0 else [*shown[:cut_at], Cut(left_out), *shown[cut_at:]]


@dataclass
class ThinkingBudget:
    """How many characters of thinking a bounded record still shows, spent turn after turn in the
    order they are read, as :class:`AnswerBudget` spends the text: the first turns' thinking whole,
    the end of the turn's where it runs out (what led to its answer), none after.

    Reading order keeps the thinking beside the answers the record keeps, and the record made at a
    turn's end shows the earlier turns' thinking as the one made at theirs did.
    """

    chars: int

    def spend(self, thinking: str) -> tuple[str, int]:
        """(The end of ``thinking`` the record shows, how many characters before it are left out)."""
        kept = min(len(thinking), self.chars)
        self.chars -= kept
        return thinking[len(thinking) - kept :], len(thinking) - kept

    def spend_turn(self, thoughts: Sequence[str]) -> list[tuple[str, int]]:
        """:meth:`spend` for a turn that thought at several places: the end of the turn's thinking
        is kept, so its last ``thoughts`` whole and the end of the one where the budget runs out.
        For each thought, what the record shows of it and how many characters before are left out."""
        left = self.chars
        shown: list[tuple[str, int]] = []
        for thought in reversed(thoughts):
            kept = min(len(thought), left)
            left -= kept
            shown.append((thought[len(thought) - kept :], len(thought) - kept))
        self.chars = left
        return shown[::-1]


@dataclass
class ToolBudget:
    """How many characters of tool cards' bodies (results, changes) a bounded record still shows,
    spent card after card in the order they are read: the first cards' bodies whole, none from
    the first that does not fit on. A card without its body keeps its tool, input and outcome.

    Whole bodies, not cut ones: each is already capped (a result's first characters, a change's
    first lines). Reading order, as :class:`AnswerBudget`: the record made at a turn's end shows
    the earlier turns' cards as the one made at theirs did.
    """

    chars: int
    left_out: int = 0
    """How many cards' bodies the record left out so far."""

    def spend(self, body: str) -> bool:
        """Whether the record shows ``body`` (as it is written in the record); counted if so."""
        if len(body) > self.chars:
            self.chars, self.left_out = 0, self.left_out + 1
            return False
        self.chars -= len(body)
        return True


CardState = Literal["whole", "bare", "gap", "hidden"]
"""What a bounded record shows of one tool call (:class:`ToolPlan`): its card with its body, its card
without it (tool, input and outcome), the one line that counts the calls left out (this call the
first of them), or nothing (a later call left out)."""

MAX_GAP_KINDS = 12
"""How many kinds of call (tool and outcome) the line of the calls a record leaves out names; the
rest it counts together (a tool's name is the model's: their number is not bounded)."""


class ToolPlan:
    """Which tool calls a bounded record shows, and how: every form of the record (HTML, Markdown,
    text) reads the same plan, so they leave out the same calls.

    ``tools`` in reading order: the first ``first`` and the last ``last`` are shown, their bodies
    spending ``budget`` in that order (None: all shown; ``body``: a call's body as the record writes it, the HTML's,
    the largest form), the ones between are left out, and where the first of them stood one line
    counts them by tool and outcome. A record then grows with neither the number of calls nor of
    turns: a call past its budget still took a card of about 470 characters (5,000 calls: 2.3 MB).
    ``thoughts``: which places of thinking it shows (None: all), read by every form with the calls;
    ``texts``: which texts (:class:`TextPlan`).
    """

    def __init__(
        self, tools: Sequence[ToolCall], budget: ToolBudget | None, body: Callable[[ToolCall], str], *,
        first: int, last: int, thoughts: ThoughtPlan | None = None, texts: TextPlan | None = None,
    ) -> None:
        gap = range(first, len(tools) - last) if len(tools) > first + last else range(0)
        self._states: dict[int, CardState] = {}
        kinds: dict[tuple[str, str], int] = {}
        for index, tool in enumerate(tools):
            if index in gap:
                self._states[id(tool)] = "gap" if index == gap.start else "hidden"
                kind = (tool.name or "tool", outcome_mark(tool))
                kinds[kind] = kinds.get(kind, 0) + 1
            else:
                self._states[id(tool)] = "whole" if budget is None or budget.spend(body(tool)) else "bare"
        self.left_out = len(gap)
        """How many calls the record leaves out (counted in one line)."""
        self.bodies_left_out = budget.left_out if budget is not None else 0
        """How many of the calls it shows it shows without their bodies."""
        self.kinds = tuple(sorted(kinds.items(), key=lambda item: -item[1]))
        """The calls left out by (tool, outcome mark), the most frequent first."""
        self.thoughts = thoughts if thoughts is not None else ThoughtPlan()
        """Which places of thinking the record shows (all, unless it was given a plan of them)."""
        self.texts = texts if texts is not None else TextPlan()
        """Which texts the record shows (all, unless it was given a plan of them)."""

    def state(self, tool: ToolCall) -> CardState:
        """What the record shows of ``tool`` (a call the plan did not see, made since: its card whole)."""
        return self._states.get(id(tool), "whole")

    def gap_words(self) -> str:
        """The line of the calls left out, without where they are: ``4,800 tool calls not shown
        (Bash ✓ 2,400 · Edit ✓ 2,399 · Edit ✗ 1)``."""
        calls = "call" if self.left_out == 1 else "calls"
        return f"{self.left_out:,} tool {calls} not shown ({kinds_words(self.kinds)})"


TextKey = tuple[int, int, int]
"""A text of a record as a :class:`TextPlan` knows it: its turn's index, and how many tool calls and
places of thinking of that turn came before it (the same whether or not the turn's error is said
instead of its texts, and whatever result text ends it)."""


def text_places(turn: int, parts: Iterable[TurnPart]) -> list[tuple[TextKey, str]]:
    """The texts among turn ``turn``'s ``parts`` that show something, each with its key."""
    calls = thoughts = 0
    texts: list[tuple[TextKey, str]] = []
    for part in parts:
        if isinstance(part, tuple):
            calls += len(part)
        elif isinstance(part, Thought):
            thoughts += 1
        elif part.strip():
            texts.append(((turn, calls, thoughts), part))
    return texts


@dataclass(frozen=True)
class TextGap:
    """Where a bounded record leaves texts out (:class:`TextPlan`): the first of them stood here."""

    words: str
    """``19,800 texts not shown (446,773 characters)``."""


class TextPlan:
    """Which of Claude's texts a bounded record shows: every form of the record (HTML, Markdown,
    text) reads the same plan (a :class:`ToolPlan`'s), so they leave out the same.

    ``texts`` (from :func:`text_places`) in reading order: the first ``first`` and the last ``last``
    are shown, the ones between are left out, and where the first of them stood one line counts them
    and their characters. The answer's character budget bounded the text, not the pieces: each piece
    took its wrapper, and 20,000 sentences, a tool call after each, made an HTML record of 985 KB.
    """

    def __init__(self, texts: Sequence[tuple[TextKey, str]] = (), *, first: int = 0, last: int = 0) -> None:
        gap = range(first, len(texts) - last) if len(texts) > first + last else range(0)
        self._states: dict[TextKey, Literal["gap", "hidden"]] = {
            texts[index][0]: "gap" if index == gap.start else "hidden" for index in gap
        }
        self.left_out = len(gap)
        """How many texts the record leaves out (counted in one line)."""
        self.chars = sum(len(texts[index][1]) for index in gap)
        """How many characters they hold."""

    def select(self, turn: int, parts: Sequence[TurnPart]) -> list[TurnPart | TextGap]:
        """Turn ``turn``'s ``parts`` as the record shows them: the texts it leaves out gone, a
        :class:`TextGap` where the first of them stood; ``parts`` itself when it leaves none out."""
        if not self._states:
            return list(parts)
        shown: list[TurnPart | TextGap] = []
        calls = thoughts = 0
        for part in parts:
            state = self._states.get((turn, calls, thoughts)) if isinstance(part, str) and part.strip() else None
            if state == "gap":
                shown.append(TextGap(self.gap_words()))
            elif state is None:
                shown.append(part)
            calls += len(part) if isinstance(part, tuple) else 0
            thoughts += isinstance(part, Thought)
        return shown

    def gap_words(self) -> str:
        """The line of the texts left out, without where they are: ``19,800 texts not shown
        (446,773 characters)``."""
        return f"{self.left_out:,} text{_s(self.left_out)} not shown ({self.chars:,} characters)"


def kinds_words(kinds: Sequence[tuple[tuple[str, str], int]]) -> str:
    """Calls counted by (tool, outcome mark), the most frequent first, as words: ``Bash ✓ 2,400 ·
    Edit ✓ 2,399 · Edit ✗ 1``, the :data:`MAX_GAP_KINDS` most frequent named, the rest counted."""
    named = [f"{_one_line_name(name)} {mark} {count:,}" for (name, mark), count in kinds[:MAX_GAP_KINDS]]
    rest = kinds[MAX_GAP_KINDS:]
    if rest:
        named.append(f"{sum(count for _kind, count in rest):,} of {len(rest):,} other kinds")
    return " · ".join(named)


@dataclass(frozen=True)
class LiveGap:
    """The middle of a long turn the live widget leaves out (:func:`live_window`): what it holds."""

    kinds: tuple[tuple[tuple[str, str], int], ...]
    """Its calls by (tool, outcome mark), the most frequent first."""
    texts: int
    text_chars: int
    thoughts: int
    thought_chars: int

    def words(self) -> str:
        """``19,800 tool calls (Bash ✓ 19,800) and 19,800 texts (430,000 characters) of this turn
        not shown``."""
        calls = sum(count for _kind, count in self.kinds)
        what = [f"{calls:,} tool call{_s(calls)} ({kinds_words(self.kinds)})"] if calls else []
        what += [f"{self.texts:,} text{_s(self.texts)} ({self.text_chars:,} characters)"] if self.texts else []
        what += ([f"{self.thoughts:,} place{_s(self.thoughts)} of thinking ({self.thought_chars:,} characters)"]
                 if self.thoughts else [])
        listed = ", ".join(what[:-1]) + " and " + what[-1] if len(what) > 1 else "".join(what)
        return f"{listed} of this turn not shown"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def live_window(parts: Sequence[TurnPart], keep: int) -> list[TurnPart | LiveGap]:
    """A turn's ``parts`` as the live widget shows them: its first ``keep`` // 2 pieces (texts,
    places of thinking, tool calls: each call one) and its last, one :class:`LiveGap` between
    counting the ones left out; ``parts`` itself when it has ``keep`` pieces or fewer."""
    items: list[str | ToolCall | Thought] = []
    for part in parts:
        items += part if isinstance(part, tuple) else [part]
    if len(items) <= keep:
        return list(parts)
    first, last = (keep + 1) // 2, keep // 2
    middle = items[first : len(items) - last]
    kinds: dict[tuple[str, str], int] = {}
    for item in middle:
        if isinstance(item, ToolCall):
            kind = (item.name or "tool", outcome_mark(item))
            kinds[kind] = kinds.get(kind, 0) + 1
    texts = [item for item in middle if isinstance(item, str) and item.strip()]
    thoughts = [item.text for item in middle if isinstance(item, Thought)]
    gap = LiveGap(tuple(sorted(kinds.items(), key=lambda item: -item[1])), len(texts), sum(map(len, texts)),
                  len(thoughts), sum(map(len, thoughts)))
    return [*_regrouped(items[:first]), gap, *_regrouped(items[len(items) - last :])]


def _regrouped(items: Sequence[str | ToolCall | Thought]) -> list[TurnPart]:
    """Pieces of a turn back in parts: the calls that come together in one tuple."""
    parts: list[TurnPart] = []
    calls: list[ToolCall] = []
    for item in items:
        if isinstance(item, ToolCall):
            calls.append(item)
            continue
        if calls:
            parts.append(tuple(calls))
            calls = []
        parts.append(item)
    return [*parts, tuple(calls)] if calls else parts


class ThoughtPlan:
    """Which places of thinking (:class:`Thought`) a bounded record shows: every form of the record
    (HTML, Markdown, text) reads the same plan (a :class:`ToolPlan`'s), so they leave out the same.

    ``thoughts`` in reading order: the first ``first`` and the last ``last`` are shown, the ones
    between are left out, and where the first of them stood one line counts them and their words.
    Past the thinking budget each place still took a note of its own (20,000 places of thinking
    made an HTML record of 3.1 MB, a Markdown one of 0.9 MB, a text one of 0.4 MB).
    """

    def __init__(self, thoughts: Sequence[Thought] = (), *, first: int = 0, last: int = 0) -> None:
        gap = range(first, len(thoughts) - last) if len(thoughts) > first + last else range(0)
        self._states: dict[tuple[int, int], Literal["gap", "hidden"]] = {
            thoughts[index].key: "gap" if index == gap.start else "hidden" for index in gap
        }
        self.left_out = len(gap)
        """How many places of thinking the record leaves out (counted in one line)."""
        self.words = sum(len(thoughts[index].text.split()) for index in gap)
        """How many words they hold."""

    def state(self, thought: Thought) -> Literal["shown", "gap", "hidden"]:
        """What the record shows of ``thought``: it (as the form shows thinking), the one line of the
        places left out (it the first of them), or nothing; a place the plan did not see: it."""
        return self._states.get(thought.key, "shown")

    def gap_words(self) -> str:
        """The line of the places left out, without where they are: ``19,800 places of thinking
        not shown (59,400 words)``."""
        places = "place" if self.left_out == 1 else "places"
        words = "word" if self.words == 1 else "words"
        return f"{self.left_out:,} {places} of thinking not shown ({self.words:,} {words})"


def outcome_mark(tool: ToolCall) -> str:
    """A call's outcome as the records mark it: ✓ done, ✗ failed, ○ no result (yet)."""
    if tool.status != "done":
        return "○"
    return "✗" if tool.is_error else "✓"


def _one_line_name(name: str) -> str:
    """A tool's name on one line, at most 40 characters (the model's: any length, any character)."""
    flat = " ".join(name.split())
    return flat if len(flat) <= 40 else flat[:39] + "…"


def text_and_result(text: str, result_text: str) -> str:
    """The answer to show: all of the assistant's ``text`` (before, between and after tool calls),
    then ``result_text`` unless the text already ends with it.

    The CLI's result text is its last message's text, so the text usually ends with it: it is
    not said twice. A result that came without streamed text is the whole answer. Whitespace
    is ignored in the comparison (the CLI may trim the result).
    """
    if not text.strip():
        return result_text
    if "".join(text.split()).endswith("".join(result_text.split())):
        return text
    return f"{text.rstrip()}\n\n{result_text.lstrip()}"


@dataclass
class _Turn:
    """A turn: the prompt that started it, its result once it came, and whether we interrupted it."""

    prompt: str
    result: dict[str, Any] | None = None
    interrupted: bool = False


@dataclass(frozen=True)
class ApiRetry:
    """One ``system``/``api_retry`` notice: the CLI is about to retry the API.

    ``message`` is the CLI's error category or message (``"overloaded"``,
    ``"rate_limit"``, ...), ``""`` when none was given.
    """

    attempt: int | None
    max_retries: int | None
    delay_seconds: float | None
    error_status: int | None
    message: str
    at: float | None = field(default=None, compare=False)
    """When the notice was read (epoch seconds), if the parser has a clock; not part of equality."""
    turn: int = field(default=0, compare=False)
    """The turn it came in (0: the first prompt's, N: the N-th follow-up's)."""


@dataclass
class _Block:
    """A content block being streamed: its kind and its text pieces so far."""

    kind: str
    pieces: list[str] = field(default_factory=list)
    tool_id: str | None = None


@dataclass
class _Message:
    """One top-level assistant message: streamed blocks and confirmed blocks.

    ``final`` holds the content blocks of ``assistant`` events in order; its
    n-th entry replaces the streamed block with index n.
    """

    id: str
    live: dict[int, _Block] = field(default_factory=dict)
    final: list[dict[str, Any]] = field(default_factory=list)
    turn: int = 0
    settled: bool = False
    """Never confirmed, and kept as streamed: its turn ended (interrupted) before it was."""
    seq: int = 0
    """The run's count of messages when it was made: the messages' order (see ClaudeRun._texts)."""
    _blocks: list[tuple[str, str, str | None]] | None = field(default=None, repr=False, compare=False)

    def blocks(self) -> list[tuple[str, str, str | None]]:
        """``(kind, text, tool id)`` for each block (:func:`_message_blocks`), kept until :meth:`changed`:
        the text and the turns of a long conversation are read at each render, while only the
        latest message changes."""
        if self._blocks is None:
            self._blocks = _message_blocks(self)
        return self._blocks

    def changed(self) -> None:
        """A block started or grew, or the message was confirmed: :meth:`blocks` reads it again."""
        self._blocks = None


_KIND_BY_TYPE = {
    "text": "text",
    "thinking": "thinking",
    "redacted_thinking": "thinking",
    "tool_use": "tool_use",
    "server_tool_use": "tool_use",
    "mcp_tool_use": "tool_use",
}
_PHASE_BY_KIND: dict[str, Phase] = {
    "text": "writing",
    "thinking": "thinking",
    "tool_use": "tool",
}
_DELTA_KIND = {
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
    "input_json_delta": ("tool_use", "partial_json"),
}
_QUIET_STREAM_EVENTS = frozenset({"message_delta", "message_stop", "ping", "error"})

# Retry fields have been spelled several ways across CLI versions; the first
# present wins. Keys ending in "ms" are milliseconds, the others seconds.
_ATTEMPT_KEYS = ("attempt", "retry_attempt", "retryAttempt")
_MAX_RETRY_KEYS = ("max_retries", "maxRetries", "max_attempts", "maxAttempts")
_DELAY_MS_KEYS = ("retry_delay_ms", "retryDelayMs", "retry_in_ms", "retryInMs", "delay_ms")
_DELAY_S_KEYS = ("retry_delay", "delay_seconds", "retry_after", "delay")
_STATUS_KEYS = ("error_status", "errorStatus", "status", "status_code")

_API_STATUS_RE = re.compile(r"API Error:?\s*(\d{3})\b")
_INT_RE = re.compile(r"-?\d{1,18}", re.ASCII)
_FLOAT_RE = re.compile(r"-?\d{1,18}(\.\d{1,18})?", re.ASCII)
_EXCEPTIONS_OF_BAD_EVENTS = (
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
)


class ClaudeRun:
    """The state of one ``claude`` run, built from its stream-json output.

    Feed it text with :meth:`feed` (any chunking) or whole lines with
    :meth:`feed_line`, and call :meth:`feed_eof` at the end of the stream.
    :attr:`version` grows with every applied line, so a view can skip
    re-rendering when it has not changed. A run is not thread-safe: feed it
    and read it from one thread, or guard both with one lock.

    Attributes set from events: ``session_id``, ``model``, ``tools``,
    ``cwd`` and ``init`` (the whole init event) from ``system``/``init``;
    ``retries`` from ``system``/``api_retry``; ``thinking_tokens`` (the CLI's
    estimate, also sent when thinking text is not shown) from
    ``system``/``thinking_tokens``; ``result``, ``is_error``,
    ``api_error_status``, ``cost_usd``, ``usage``, ``num_turns``,
    ``duration_ms`` and ``duration_api_ms`` from ``result``; ``usage_limit`` (the
    limit refusing the run now, see :mod:`.limits`), ``usage_limits`` (every refusal
    seen), ``rate_limit_info`` (the latest ``rate_limit_event``), ``waiting_until`` and
    ``resumes`` (auto-resume). ``clock`` (epoch seconds; default None) stamps API retries
    and reads reset times given in words; without it those stay unknown. Diagnostics:
    ``raw_lines`` (non-JSON lines, the last :attr:`MAX_RAW_LINES`),
    ``unknown_events`` and ``malformed_events``.
    """

    # Limits
    MAX_RAW_LINES = 200
    MAX_RAW_LINE_CHARS = 2000
    MAX_SIGNALS = 10_000

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock
        self.session_id: str | None = None
        self.model: str | None = None
        self.tools: list[str] = []
        self.cwd: str | None = None
        self.init: dict[str, Any] | None = None
        self.retries: list[ApiRetry] = []
        self.thinking_tokens: int | None = None
        self.result: dict[str, Any] | None = None
        self.is_error = False
        self.api_error_status: int | None = None
        self.cost_usd: float | None = None
        self.usage: dict[str, Any] = {}
        self.num_turns: int | None = None
        self.duration_ms: int | None = None
        self.duration_api_ms: int | None = None
        self.rate_limit_info: dict[str, Any] | None = None
        self.usage_limit: UsageLimit | None = None
        self.usage_limits: list[UsageLimit] = []
        self.waiting_until: float | None = None
        self.resumes = 0
        self.resume_note: str | None = None
        self.raw_lines: deque[str] = deque(maxlen=self.MAX_RAW_LINES)
        self.unknown_events = 0
        self.malformed_events = 0
        self.phase: Phase = "starting"
        self.version = 0
        # Counts the changes to a turn before the current one (a late tool result, a message settled
        # or confirmed after its turn): while it and the number of turns stand, the turns before the
        # last show as they did, and a renderer may keep their HTML (see render.TurnCache).
        self.past_version = 0
        self._splitter = LineSplitter()
        self._messages: dict[str, _Message] = {}
        self._current: _Message | None = None
        self._anonymous = 0
        self._tools: dict[str, ToolCall] = {}
        self._inputs: dict[str, list[str]] = {}
        self._dirty_inputs: set[str] = set()
        # The run's text and thinking, joined, and for each message joined (in order) its (seq, turn,
        # where its text and its thinking end): a change rejoins from the first message changed since
        # (_join_from, a seq; None: none), the ones before it are kept (see _texts).
        self._joined = ("", "")
        self._join_marks: list[tuple[int, int, int, int]] = []
        self._join_from: int | None = None
        self._messages_made = 0
        # len(self.text) without the join: each message's (characters, text blocks) and their
        # sums, the messages changed since read again when asked (see _text_length).
        self._text_stats: dict[str, tuple[int, int]] = {}
        self._text_totals = (0, 0)
        self._text_stale: set[str] = set()
        # The messages neither confirmed (an assistant event's content) nor settled, in order:
        # what _drop_unconfirmed looks at, without walking every message at each event.
        self._unconfirmed: dict[str, _Message] = {}
        # For readers that keep copies of the calls (changed_tools): a count of the changes to calls,
        # each call's id at the count of its last change (the latest last), each call's start number
        # (their order), and the count when a call was last forgotten.
        self._tool_changes = 0
        self._tool_log: dict[str, int] = {}
        self._tool_starts: dict[str, int] = {}
        self._tools_started = 0
        self._tool_forgotten_at = 0
        self.turns: list[_Turn] = []
        self.signals: deque[Signal] = deque(maxlen=self.MAX_SIGNALS)

    def __repr__(self) -> str:
        return (
            f"<ClaudeRun phase={self.phase} session={self.session_id} "
            f"text={len(self.text)} chars tools={len(self._tools)} v{self.version}>"
        )

    # Feeding

    def feed(self, text: str) -> int:
        """Apply every line that ``text`` completes; return how many."""
        lines = self._splitter.feed(text)
        for line in lines:
            self.feed_line(line)
        return len(lines)

    def feed_eof(self) -> None:
        """Apply the last line if the stream did not end with a newline."""
        rest = self._splitter.flush()
        if rest:
            self.feed_line(rest)

    # Turns (host mode)

    def begin_turn(self, prompt: str) -> int:
        """A user message was sent: what follows belongs to a new turn. Returns its index."""
        self.turns.append(_Turn(prompt))
        self.version += 1
        if self.phase == "done":
            self.phase = "starting"
        return len(self.turns) - 1

    def note_interrupt(self) -> None:
        """We asked the CLI to interrupt the current turn."""
        if self.turns and self.turns[-1].result is None:
            self.turns[-1].interrupted = True
            self.version += 1

    def take_signals(self) -> list[Signal]:
        """Control messages and turn ends parsed since the last call, in order."""
        signals = list(self.signals)
        self.signals.clear()
        return signals

    @property
    def turn_open(self) -> bool:
        """Whether a turn was begun and has no result yet."""
        return bool(self.turns) and self.turns[-1].result is None

    @property
    def _turn_index(self) -> int:
        return max(0, len(self.turns) - 1)

    def _touch(self, turn: int) -> None:
        """Something of ``turn`` changed: counted in :attr:`past_version` when it is not the current turn."""
        if turn < self._turn_index:
            self.past_version += 1

    def turn_views(self, first: int = 0) -> list[TurnView]:
        """Every turn with its own text, tool calls and result (at least one); from turn ``first`` on
        (its index), reading only those turns' messages and calls: a widget that keeps the earlier
        turns' HTML builds the last alone, whatever the number of turns before it."""
        count = max(1, len(self.turns))
        first = min(first, count - 1)
        shown = count - first  # the lists below hold turns first.. at 0..
        texts: list[list[str]] = [[] for _ in range(shown)]
        thoughts: list[list[str]] = [[] for _ in range(shown)]
        thought_places: list[list[tuple[int, int]]] = [[] for _ in range(shown)]  # (texts, calls) before each
        calls = [0] * shown  # how many of the turn's calls its messages held so far
        texts_before: dict[str, int] = {}  # by tool id: how many of its turn's text blocks came before the call
        for message in _since(self._messages.values(), first, lambda message: message.turn):
            at = min(message.turn, count - 1) - first
            for kind, text, tool_id in message.blocks():
                if tool_id is not None:
                    texts_before[tool_id] = len(texts[at])
                    calls[at] += 1
                elif not text.strip():
                    continue
                elif kind == "text":  # as _texts() sorts them
                    texts[at].append(text)
                else:
                    thoughts[at].append(text)
                    thought_places[at].append((len(texts[at]), calls[at]))
        tools: list[list[ToolCall]] = [[] for _ in range(shown)]
        self._settle_inputs()
        for tool in _since(self._tools.values(), first, lambda tool: tool.turn):  # one pass (per turn: quadratic)
            tools[min(tool.turn, count - 1) - first].append(tool)
        views = []
        for at in range(shown):
            index = first + at
            turn = self.turns[index] if index < len(self.turns) else _Turn("", self.result)
            views.append(TurnView(
                index, turn.prompt, "\n\n".join(texts[at]), tuple(tools[at]), turn.result, turn.interrupted,
                "\n\n".join(thoughts[at]), texts=tuple(texts[at]),
                tool_places=_places(tools[at], texts_before), thoughts=tuple(thoughts[at]),
                thought_places=tuple(thought_places[at]),
            ))
        if self.phase == "thinking":
            views[-1] = replace(views[-1], thinking_estimate=self.thinking_tokens or 0)
        return views

    def _last_turn_text(self) -> str:
        """``turn_views()[-1].text`` without building the other turns, nor walking their messages:
        the end of :attr:`text`, from where the earlier turns' text ends (a snapshot reads it at each
        line of a conversation)."""
        text = self.text
        last = max(1, len(self.turns)) - 1
        first = bisect.bisect_left(self._join_marks, last, key=lambda mark: mark[1])
        end = self._join_marks[first - 1][2] if first else 0
        return text[end + 2 :] if end else text  # past the blank line after the earlier turns' text

    def feed_line(self, line: str) -> None:
        """Apply one line of output; blank lines are ignored. Never raises."""
        stripped = line.strip()
        if not stripped:
            return
        self.version += 1
        try:
            event = json.loads(stripped)
        except (ValueError, RecursionError):
            event = None
        if not isinstance(event, dict):
            self._keep_raw(line)
            return
        try:
            self._apply(event)
        except _EXCEPTIONS_OF_BAD_EVENTS:
            # A field of an unexpected shape must not stop the stream: count
            # the event and keep its text for diagnosis.
            self.malformed_events += 1
            self._keep_raw(line)

    # Derived views

    @property
    def text(self) -> str:
        """The assistant's text over the run, messages joined by blank lines."""
        return self._texts()[1]

    @property
    def thinking(self) -> str:
        """The assistant's thinking over the run, blocks joined by blank lines."""
        return self._texts()[2]

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Tool calls in the order they started."""
        self._settle_inputs()
        return list(self._tools.values())

    def _settle_inputs(self) -> None:
        """The streamed inputs of the pending calls, as far as they came."""
        for tool_id in self._dirty_inputs:
            tool = self._tools.get(tool_id)
            if tool is not None and tool.status == "pending":
                tool.input = "".join(self._inputs.get(tool_id, ()))
                self._touch(tool.turn)
                self._tool_changed(tool)
        self._dirty_inputs.clear()

    def changed_tools(self, since: int = 0) -> tuple[int, list[ToolCall] | None]:
        """``(mark, calls)`` for a reader that keeps copies of the calls: the calls started or changed
        since ``since`` (a mark given before; 0: since the run began), in the order they started, or
        None when a call was forgotten since (read :attr:`tool_calls` again). Costs what changed,
        not the number of calls: a snapshot per line copied every call (quadratic)."""
        self._settle_inputs()
        if self._tool_forgotten_at > since:
            return self._tool_changes, None
        changed: list[ToolCall] = []
        for tool_id, at in reversed(self._tool_log.items()):
            if at <= since:
                break
            changed.append(self._tools[tool_id])
        changed.sort(key=lambda tool: self._tool_starts[tool.id])
        return self._tool_changes, changed

    @property
    def subtype(self) -> str | None:
        """The result's subtype (``"success"``, ``"error_max_turns"``, ...)."""
        return None if self.result is None else _get_str(self.result, "subtype")

    @property
    def answer(self) -> str:
        """What to show as the answer: the error, the result text, or the text.

        In a conversation: the latest turn's (while it runs, its text so far).
        """
        if len(self.turns) > 1 and (self.turn_open or self.interrupted):
            return self._last_turn_text()
        if self.interrupted:
            return self.text  # what came before the interrupt, not the CLI's diagnostic
        if self.is_error:
            return self.error_message
        result_text = None if self.result is None else _get_str(self.result, "result")
        return result_text or self.text

    @property
    def cost_estimate_reason(self) -> str | None:
        """Why ``cost_usd`` is only an estimate of the bill (``custom endpoint``,
        ``subscription``), or None when it is the bill or nothing says otherwise."""
        return cost_estimate_reason(self.init)

    @property
    def interrupted(self) -> bool:
        """Whether the latest turn ended because we interrupted it (``run.interrupt()``)."""
        return self.is_error and bool(self.turns) and self.turns[-1].interrupted and self.turns[-1].result is not None

    @property
    def error_message(self) -> str:
        """The error of a failed run in plain words (``"Interrupted."`` for an interrupted
        turn: the CLI's own text for it is a diagnostic); ``""`` if it did not fail."""
        if not self.is_error or self.result is None:
            return ""
        if self.interrupted:
            return "Interrupted."
        return _error_of_result(self.result)

    # Dispatch

    def _apply(self, event: dict[str, Any]) -> None:
        if self.session_id is None:
            self.session_id = _get_str(event, "session_id", "sessionId")
        handler = _HANDLERS.get(_get_str(event, "type") or "")
        if handler is None:
            self.unknown_events += 1
            return
        handler(self, event)

    def _keep_raw(self, line: str) -> None:
        limit = self.MAX_RAW_LINE_CHARS
        self.raw_lines.append(line if len(line) <= limit else line[:limit] + "…")

    # system

    def _on_system(self, event: dict[str, Any]) -> None:
        subtype = _get_str(event, "subtype")
        if subtype == "init":
            self._on_init(event)
        elif subtype == "api_retry":
            retry = replace(_parse_retry(event, self._now()), turn=self._turn_index)
            self.retries.append(retry)
            self._note_limit(limit_from_retry(retry.error_status, retry.delay_seconds, retry.at, retry.message))
        elif subtype == "thinking_tokens":
            self.thinking_tokens = _get_int(event, "estimated_tokens") or self.thinking_tokens
            self.phase = "thinking"
        # Other subtypes (hooks, status, compaction) carry nothing we show.

    def _on_init(self, event: dict[str, Any]) -> None:
        self.init = event
        self.session_id = _get_str(event, "session_id", "sessionId") or self.session_id
        self.model = _get_str(event, "model") or self.model
        self.cwd = _get_str(event, "cwd") or self.cwd
        self.tools = [name for name in map(_tool_name, _get_list(event, "tools")) if name]

    # stream_event

    def _on_stream_event(self, event: dict[str, Any]) -> None:
        if _get_str(event, "parent_tool_use_id"):
            return  # A subagent's stream is not part of the main answer.
        inner = _get_dict(event, "event")
        kind = _get_str(inner, "type") or ""
        handler = _STREAM_HANDLERS.get(kind)
        if handler is not None:
            handler(self, inner)
        elif kind not in _QUIET_STREAM_EVENTS:
            self.unknown_events += 1

    def _on_message_start(self, inner: dict[str, Any]) -> None:
        message = _get_dict(inner, "message")
        self._drop_unconfirmed()
        if self.usage_limit is not None and self.usage_limit.source == "api_retry":
            self.usage_limit = None  # the retry went through
        self._current = self._message(_get_str(message, "id"))
        self._note_model(message)

    def _on_block_start(self, inner: dict[str, Any]) -> None:
        message = self._streaming_message()
        block = _get_dict(inner, "content_block")
        kind = _KIND_BY_TYPE.get(_get_str(block, "type") or "", "other")
        live = _Block(kind)
        text = _get_str(block, "text", "thinking")
        if text and kind in ("text", "thinking"):
            live.pieces.append(text)
        if kind == "tool_use":
            live.tool_id = self._start_tool(block)
        message.live[self._block_index(inner, message)] = live
        self._changed(message)
        self.phase = _PHASE_BY_KIND.get(kind, self.phase)

    def _on_block_delta(self, inner: dict[str, Any]) -> None:
        delta = _get_dict(inner, "delta")
        kind, key = _DELTA_KIND.get(_get_str(delta, "type") or "", ("", ""))
        piece = _get_str(delta, key) if key else None
        if piece is None:
            return  # signature_delta, citations_delta: nothing to show.
        message = self._streaming_message()
        self._changed(message)
        index = self._block_index(inner, message)
        block = message.live.get(index)
        if block is None or block.kind != kind:
            block = message.live[index] = _Block(kind)
            if kind == "tool_use":
                block.tool_id = self._start_tool({})
        if block.tool_id is not None:
            pieces = self._inputs.get(block.tool_id)
            if pieces is None:
                return  # The input is complete or confirmed; late pieces are stale.
            pieces.append(piece)
            self._dirty_inputs.add(block.tool_id)
        else:
            block.pieces.append(piece)
        self.phase = _PHASE_BY_KIND[kind]

    def _on_block_stop(self, inner: dict[str, Any]) -> None:
        if self._current is None:
            return
        block = self._current.live.get(self._block_index(inner, self._current))
        if block is None or block.tool_id is None or block.tool_id not in self._inputs:
            return
        tool = self._tools.get(block.tool_id)
        pieces = self._inputs.pop(block.tool_id)
        self._dirty_inputs.discard(block.tool_id)
        if tool is not None:
            tool.input = _parse_input("".join(pieces))
            self._touch(tool.turn)
            self._tool_changed(tool)

    # assistant, user

    def _on_assistant(self, event: dict[str, Any]) -> None:
        message = _get_dict(event, "message")
        content = _content_blocks(message)
        parent = _get_str(event, "parent_tool_use_id")
        message_id = _get_str(message, "id")
        if not parent:
            self._drop_unconfirmed(keep=message_id)
        if event.get("is_api_error_message") is True and not parent:
            return  # The CLI's own error message: the (is_error) result says it, as the error.
        for block in content:
            if _KIND_BY_TYPE.get(_get_str(block, "type") or "") == "tool_use":
                self._confirm_tool(block, parent)
        if parent:
            return  # A subagent's text is not part of the main answer.
        target = self._message(message_id)
        target.final = _merge_content(target.final, content)
        if target.final:
            self._unconfirmed.pop(target.id, None)
        self._changed(target)
        self._note_model(message)
        if content:
            last_kind = _KIND_BY_TYPE.get(_get_str(content[-1], "type") or "", "")
            self.phase = _PHASE_BY_KIND.get(last_kind, self.phase)

    def _on_user(self, event: dict[str, Any]) -> None:
        for block in _content_blocks(_get_dict(event, "message")):
            if _get_str(block, "type") == "tool_result":
                self._finish_tool(block, _get_str(event, "parent_tool_use_id"))

    # result

    def _on_result(self, event: dict[str, Any]) -> None:
        self.result = event
        subtype = _get_str(event, "subtype")
        self.is_error = event.get("is_error") is True or subtype not in (None, "success")
        self.api_error_status = _get_int(event, "api_error_status")
        if self.api_error_status is None and self.is_error:
            self.api_error_status = _status_in_text(_get_str(event, "result") or "")
        self.cost_usd = _get_float(event, "total_cost_usd", "cost_usd")
        self.usage = _get_dict(event, "usage")
        self.num_turns = _get_int(event, "num_turns")
        self.duration_ms = _get_int(event, "duration_ms")
        self.duration_api_ms = _get_int(event, "duration_api_ms")
        if self.model is None:
            self.model = next(iter(_get_dict(event, "modelUsage")), None)
        self.session_id = _get_str(event, "session_id") or self.session_id
        self.phase = "done"
        if self.turns and self.turns[-1].result is None:
            self.turns[-1].result = event
        self.signals.append(TurnEnded(event))
        self._limit_of_result(event)

    def _limit_of_result(self, event: dict[str, Any]) -> None:
        """An error result caused by a limit keeps (or finds) that limit; any other result ends it."""
        found = limit_from_result(event, self._now())
        if found is None:
            self.usage_limit = None
            return
        current = self.usage_limit
        if current is not None and current.source == "rate_limit_event":
            return  # the event's reset time is exact; the words have minutes only
        if current is not None and found.resets_at is None and current.resets_at is not None:
            found = UsageLimit(found.kind, current.resets_at, found.source, found.message)
        self._note_limit(found)

    # rate_limit_event (what the API's rate-limit headers said)

    def _on_rate_limit(self, event: dict[str, Any]) -> None:
        info = _get_dict(event, "rate_limit_info")
        self.rate_limit_info = info
        limit = limit_from_event(info)
        if limit is not None:
            self._note_limit(limit)
        elif self.usage_limit is not None and self.usage_limit.source == "rate_limit_event":
            self.usage_limit = None  # allowed again

    def _note_limit(self, limit: UsageLimit | None) -> None:
        if limit is not None:
            self.usage_limit = limit
            self.usage_limits.append(limit)

    def _now(self) -> float | None:
        return self.clock() if self.clock is not None else None

    # cc_executor_nb lines (the auto-resume wrapper's)

    def _on_wrapper(self, event: dict[str, Any]) -> None:
        subtype = _get_str(event, "subtype")
        if subtype == "auto_resume_wait":
            self.waiting_until = _get_float(event, "resumes_at")
            self.resume_note = _get_str(event, "message")
        elif subtype == "auto_resume":
            self.resumes += 1
            self.waiting_until = None
            self.usage_limit = None
            self.resume_note = _get_str(event, "message")
            self.phase = "starting"
        elif subtype == "auto_resume_stopped":
            self.waiting_until = None
            self.resume_note = _get_str(event, "message")

    # control lines (host mode)

    def _on_control(self, event: dict[str, Any]) -> None:
        # A control line we could not answer (no request id) is dropped: the CLI
        # never sends one, and there is nothing to do with it.
        message = parse_control(event)
        if message is not None:
            self.signals.append(message)

    # Messages

    def _message(self, message_id: str | None) -> _Message:
        if message_id is None:
            self._anonymous += 1
            message_id = f"\0anonymous-{self._anonymous}"
        message = self._messages.get(message_id)
        if message is None:
            self._messages_made += 1
            message = _Message(message_id, turn=self._turn_index, seq=self._messages_made)
            self._messages[message_id] = message
            self._text_stale.add(message_id)
            self._unconfirmed[message_id] = message
            self._rejoin_from(message)
        self._touch(message.turn)  # an earlier turn's message confirmed late
        return message

    def _streaming_message(self) -> _Message:
        if self._current is None:
            self._current = self._message(None)
        return self._current

    def _drop_unconfirmed(self, keep: str | None = None) -> None:
        """Forget streamed messages of this turn that no ``assistant`` event confirmed, and the
        unconfirmed tool calls of any. An earlier turn's words stay with it: the CLI never
        confirms the message it was interrupted in."""
        doomed = [m for m in self._unconfirmed.values() if m.id != keep]
        for message in doomed:
            del self._unconfirmed[message.id]
            for block in message.live.values():
                if block.tool_id is not None:
                    self._forget_tool(block.tool_id)
            if self._current is message:
                self._current = None
            if message.turn < self._turn_index:
                message.settled = True
                self._touch(message.turn)
            else:
                del self._messages[message.id]
                self._text_stale.add(message.id)
                self._rejoin_from(message)

    def _note_model(self, message: dict[str, Any]) -> None:
        model = _get_str(message, "model")
        # Synthetic messages (API errors) name their model "<synthetic>".
        if self.model is None and model and not model.startswith("<"):
            self.model = model

    @staticmethod
    def _block_index(inner: dict[str, Any], message: _Message) -> int:
        index = _get_int(inner, "index")
        return index if index is not None else max(message.live, default=-1) + 1

    def _changed(self, message: _Message) -> None:
        """A block of ``message`` started or grew, or it was confirmed."""
        message.changed()
        self._text_stale.add(message.id)
        self._rejoin_from(message)

    def _rejoin_from(self, message: _Message) -> None:
        """``message`` was made, changed or dropped: the joined text is read again from it on."""
        if self._join_from is None or message.seq < self._join_from:
            self._join_from = message.seq

    def _text_length(self) -> int:
        """``len(self.text)``, without joining the text: a tool call's start asks for it, and
        joining every message's text at each of thousands of calls was quadratic (20,000 calls
        fed in 101 s). Only the messages changed since the last call are read again."""
        chars, count = self._text_totals
        for message_id in self._text_stale:
            old_chars, old_count = self._text_stats.pop(message_id, (0, 0))
            chars, count = chars - old_chars, count - old_count
            message = self._messages.get(message_id)
            if message is not None:
                texts = [text for kind, text, _tool in message.blocks() if kind == "text" and text.strip()]
                stat = self._text_stats[message_id] = (sum(map(len, texts)), len(texts))
                chars, count = chars + stat[0], count + stat[1]
        self._text_stale.clear()
        self._text_totals = (chars, count)
        return chars + 2 * max(count - 1, 0)  # the blank line between two messages' texts

    def _texts(self) -> tuple[int, str, str]:
        """``(version, text, thinking)``: every message's text blocks joined by blank lines, and its
        thinking blocks. Only the messages from the first one changed since are read again, the
        text before them kept: joining every message at each line was quadratic (a snapshot per
        line of 4,000 calls, each after a sentence, took 55 s)."""
        if self._join_from is not None:
            self._rejoin(self._join_from)
            self._join_from = None
        return (self.version, *self._joined)

    def _rejoin(self, first: int) -> None:
        """Join the text again from the message numbered ``first`` on (the ones before it stand)."""
        keep = bisect.bisect_left(self._join_marks, first, key=lambda mark: mark[0])
        text_end, thinking_end = self._join_marks[keep - 1][2:] if keep else (0, 0)
        del self._join_marks[keep:]
        text, thinking = self._joined
        texts = [text[:text_end]] if text_end else []
        thoughts = [thinking[:thinking_end]] if thinking_end else []
        for message in _since(self._messages.values(), first, lambda message: message.seq):
            for kind, piece, _tool in message.blocks():
                if not piece.strip():
                    continue
                if kind == "text":
                    texts.append(piece)
                    text_end += len(piece) + (2 if text_end else 0)
                else:
                    thoughts.append(piece)
                    thinking_end += len(piece) + (2 if thinking_end else 0)
            self._join_marks.append((message.seq, message.turn, text_end, thinking_end))
        self._joined = ("\n\n".join(texts), "\n\n".join(thoughts))

    # Tools

    def _tool_changed(self, tool: ToolCall) -> None:
        """``tool`` started or changed (see :meth:`changed_tools`)."""
        self._tool_changes += 1
        self._tool_log.pop(tool.id, None)
        self._tool_log[tool.id] = self._tool_changes

    def _add_tool(self, tool: ToolCall) -> ToolCall:
        self._tools[tool.id] = tool
        self._tools_started += 1
        self._tool_starts[tool.id] = self._tools_started
        self._tool_changed(tool)
        return tool

    def _start_tool(self, block: dict[str, Any]) -> str:
        tool_id = _get_str(block, "id") or f"\0tool-{len(self._tools) + 1}"
        if tool_id not in self._tools:
            self._add_tool(ToolCall(
                tool_id, _get_str(block, "name") or "", turn=self._turn_index, text_offset=self._text_length()
            ))
        self._inputs[tool_id] = []
        self._dirty_inputs.add(tool_id)
        return tool_id

    def _confirm_tool(self, block: dict[str, Any], parent: str | None) -> None:
        tool_id = _get_str(block, "id")
        if tool_id is None:
            return
        tool = self._tools.get(tool_id)
        if tool is None:
            tool = self._add_tool(ToolCall(
                tool_id, "", parent_tool_use_id=parent, turn=self._turn_index, text_offset=self._text_length()
            ))
        tool.name = _get_str(block, "name") or tool.name
        tool.input = _get_dict(block, "input")
        self._touch(tool.turn)
        self._tool_changed(tool)
        self._inputs.pop(tool_id, None)
        self._dirty_inputs.discard(tool_id)

    def _finish_tool(self, block: dict[str, Any], parent: str | None) -> None:
        tool_id = _get_str(block, "tool_use_id") or f"\0tool-{len(self._tools) + 1}"
        tool = self._tools.get(tool_id)
        if tool is None:
            tool = self._add_tool(ToolCall(tool_id, "", parent_tool_use_id=parent, turn=self._turn_index))
        tool.result = _tool_result_text(block.get("content"))
        tool.is_error = block.get("is_error") is True
        tool.status = "done"
        self._touch(tool.turn)
        self._tool_changed(tool)

    def _forget_tool(self, tool_id: str) -> None:
        tool = self._tools.get(tool_id)
        if tool is not None and tool.status == "pending":
            self._touch(tool.turn)
            del self._tools[tool_id]
            del self._tool_log[tool_id], self._tool_starts[tool_id]
            self._tool_changes += 1
            self._tool_forgotten_at = self._tool_changes
            self._inputs.pop(tool_id, None)
            self._dirty_inputs.discard(tool_id)


_Handler = Callable[[ClaudeRun, dict[str, Any]], None]
_HANDLERS: dict[str, _Handler] = {
    "system": ClaudeRun._on_system,
    "stream_event": ClaudeRun._on_stream_event,
    "assistant": ClaudeRun._on_assistant,
    "user": ClaudeRun._on_user,
    "result": ClaudeRun._on_result,
    "control_request": ClaudeRun._on_control,
    "control_response": ClaudeRun._on_control,
    "control_cancel_request": ClaudeRun._on_control,
    "rate_limit_event": ClaudeRun._on_rate_limit,
    "cc_executor_nb": ClaudeRun._on_wrapper,
}
_STREAM_HANDLERS: dict[str, _Handler] = {
    "message_start": ClaudeRun._on_message_start,
    "content_block_start": ClaudeRun._on_block_start,
    "content_block_delta": ClaudeRun._on_block_delta,
    "content_block_stop": ClaudeRun._on_block_stop,
}


def summary(run: ClaudeRun) -> dict[str, Any]:
    """Facts for a footer: status, cost, tokens, turns, duration, model, session.

    ``status`` is ``"running"`` until the result arrives, then ``"success"`` or
    ``"error"``. Token counts come from the result's ``usage``; any value the
    CLI did not report is ``None``.
    """
    usage = run.usage
    open_turn = run.result is None or run.turn_open
    status = "running" if open_turn else "error" if run.is_error else "success"
    return {
        "status": status,
        "subtype": run.subtype,
        "cost_usd": run.cost_usd,
        "input_tokens": _get_int(usage, "input_tokens"),
        "output_tokens": _get_int(usage, "output_tokens"),
        "cache_read_tokens": _get_int(usage, "cache_read_input_tokens"),
        "cache_creation_tokens": _get_int(usage, "cache_creation_input_tokens"),
        "turns": run.num_turns,
        "duration_ms": run.duration_ms,
        "duration_api_ms": run.duration_api_ms,
        "model": run.model,
        "session_id": run.session_id,
        "api_error_status": run.api_error_status,
        "tool_calls": len(run.tool_calls),
        "retries": len(run.retries),
    }


# Helpers over untrusted JSON: each returns None or an empty value when the
# field is missing or has another type.


def _get_str(obj: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None


def _get_int(obj: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return int(value)
        if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
            return int(value)
    return None


def _get_float(obj: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            number = _finite_float(value)
            if number is not None:
                return number
    return None


def _finite_float(value: int | float | str) -> float | None:
    if isinstance(value, str) and not _FLOAT_RE.fullmatch(value.strip()):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _get_dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _get_list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    return value if isinstance(value, list) else []


def _is_error_result(result: dict[str, Any]) -> bool:
    return result.get("is_error") is True or _get_str(result, "subtype") not in (None, "success")


def _strip_cr(line: str) -> str:
    return line[:-1] if line.endswith("\r") else line


def _tool_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    return _get_str(value, "name") if isinstance(value, dict) else None


def _content_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The content blocks of an API message; a bare string is one text block."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _merge_content(
    final: list[dict[str, Any]], content: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Merge a new ``assistant`` event into the blocks already confirmed.

    The CLI may send one event per content block or resend the whole message;
    a resend starts with the blocks we have, anything else is appended.
    """
    if content[: len(final)] == final:
        return list(content)
    return final + content


class TurnViews:
    """A conversation's :meth:`ClaudeRun.turn_views`, kept between reads of one reader (a run's
    record, built again at each turn's end).

    Each read built every turn's view again from all its messages and calls: at 1,000 turns of
    40 calls, 0.16 s a read, most of a record that shows 200 of them. While the turns before the
    last stand (:attr:`ClaudeRun.past_version` counts every change to them), their views are the
    ones kept and only the turns from the last kept one on are read; else all are read again.
    The views are the same as a fresh read's.
    """

    def __init__(self) -> None:
        self._kept: tuple[int, list[TurnView]] = (-1, [])

    def read(self, run: ClaudeRun) -> list[TurnView]:
        """Every turn's view, as ``run.turn_views()`` gives them now."""
        version, kept = self._kept
        fresh = version == run.past_version and len(kept) < max(1, len(run.turns))
        views = kept + run.turn_views(len(kept)) if fresh else run.turn_views()
        if fresh and run.past_version != version:  # reading settled a streamed input of an earlier turn
            views = run.turn_views()
        self._kept = (run.past_version, views[: max(1, len(run.turns)) - 1])
        return views


def _since(items: Reversible[_T], first: int, turn: Callable[[_T], int]) -> list[_T]:
    """``items`` (messages or calls, made in the order of their turns) of turn ``first`` and later,
    read from the end: the earlier turns' are not looked at."""
    if first <= 0:
        return list(items)
    kept: list[_T] = []
    for item in reversed(items):
        if turn(item) < first:
            break
        kept.append(item)
    return kept[::-1]


def _places(tools: list[ToolCall], texts_before: dict[str, int]) -> tuple[int, ...]:
    """Where each tool call of a turn stands among the turn's text blocks: as its message has it;
    a call no message of the turn holds (a subagent's) stands where the call before it does."""
    places: list[int] = []
    for tool in tools:
        before = places[-1] if places else 0
        places.append(max(before, texts_before.get(tool.id, before)))
    return tuple(places)


def _message_blocks(message: _Message) -> list[tuple[str, str, str | None]]:
    """``(kind, text, tool id)`` for each block: confirmed where known, else streamed (the id
    only for a tool call's block)."""
    blocks: list[tuple[str, str, str | None]] = []
    for index, block in enumerate(message.final):
        kind = _KIND_BY_TYPE.get(_get_str(block, "type") or "", "other")
        text = (_get_str(block, kind) or "") if kind in ("text", "thinking") else ""
        live = message.live.get(index)
        # Some models confirm thinking with an empty text after streaming it.
        if not text and kind == "thinking" and live is not None and live.kind == kind:
            text = "".join(live.pieces)
        blocks.append((kind, text, _get_str(block, "id") if kind == "tool_use" else None))
    for index in sorted(i for i in message.live if i >= len(message.final)):
        live = message.live[index]
        blocks.append((live.kind, "".join(live.pieces), live.tool_id))
    return blocks


def _parse_input(text: str) -> dict[str, Any] | str:
    """A completed tool input as an object, or the text if it is not one."""
    try:
        value = json.loads(text) if text.strip() else {}
    except (ValueError, RecursionError):
        return text
    return value if isinstance(value, dict) else text


def _tool_result_text(content: Any) -> str:
    """A ``tool_result`` content (string or list of blocks) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_result_block_text(block) for block in content)
    return json.dumps(content, ensure_ascii=False)


def _result_block_text(block: Any) -> str:
    if isinstance(block, dict):
        text = _get_str(block, "text")
        if text is not None:
            return text
        return f"[{_get_str(block, 'type') or 'content'}]"
    return block if isinstance(block, str) else json.dumps(block, ensure_ascii=False)


def _parse_retry(event: dict[str, Any], at: float | None = None) -> ApiRetry:
    delay_ms = _get_float(event, *_DELAY_MS_KEYS)
    delay = delay_ms / 1000 if delay_ms is not None else _get_float(event, *_DELAY_S_KEYS)
    return ApiRetry(
        attempt=_get_int(event, *_ATTEMPT_KEYS),
        max_retries=_get_int(event, *_MAX_RETRY_KEYS),
        delay_seconds=delay,
        error_status=_get_int(event, *_STATUS_KEYS),
        message=_error_text(event.get("error")) or _get_str(event, "message") or "",
        at=at,
    )


def _error_text(value: Any, depth: int = 0) -> str:
    """The message inside an error value: a string, or ``{"message": ...}``."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or depth > 3:
        return ""
    return (
        _get_str(value, "message")
        or _error_text(value.get("error"), depth + 1)
        or _get_str(value, "type")
        or ""
    )


def _status_in_text(text: str) -> int | None:
    match = _API_STATUS_RE.search(text)
    return int(match.group(1)) if match else None


def _plain_error(text: str) -> str:
    """``API Error: 529 {"error": {"message": "Overloaded"}}`` -> ``API Error: 529 Overloaded``."""
    start = text.find("{")
    if start < 0:
        return text.strip()
    try:
        body = json.loads(text[start:])
    except (ValueError, RecursionError):
        return text.strip()
    message = _error_text(body)
    return f"{text[:start].strip()} {message}".strip() if message else text.strip()


def _error_of_result(result: dict[str, Any]) -> str:
    text = _get_str(result, "result")
    if text and text.strip():
        return _plain_error(text)
    errors = [e for e in map(_error_text, _get_list(result, "errors")) if e]
    if errors:
        return "\n".join(errors)
    subtype = _get_str(result, "subtype") or "error"
    if subtype == "error_max_turns":
        turns = _get_int(result, "num_turns")
        return f"Stopped after reaching the maximum number of turns ({turns})."
    if subtype == "error_max_budget_usd":
        cost = _get_float(result, "total_cost_usd", "cost_usd")
        spent = f" (${cost:.4f} spent)" if cost is not None else ""
        return f"Stopped: the run reached its budget (--max-budget-usd){spent}."
    return f"Claude run failed ({subtype})."
