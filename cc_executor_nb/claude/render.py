"""Render a :class:`~cc_executor_nb.claude.streamjson.ClaudeRun` as HTML for the widget.

Pure functions from a run to HTML strings; the widget only puts them on the
page. Every piece of text that comes from the model, a tool or the CLI is untrusted:
it is made :func:`~cc_executor_nb.terminaltext.printable` (no terminal escape or
control character, which ``cat`` or ``nbconvert --stdout`` would hand to a terminal,
and bidi controls visible) and escaped with :func:`html.escape`. The answer is Markdown: it is rendered by
markdown-it-py with raw HTML disabled and links restricted to http, https and
mailto, and then, when ``nh3`` is installed, cleaned again against a short
allow-list (no images, scripts, styles, frames or event handlers) as defence
in depth.

A conversation (host mode) adds an approval card per permission question (the tool,
its input made readable: the command, a diff, the path; Allow, Always allow, Deny with
an optional reason) and a follow-up row (a text box, Send, Interrupt, End). Their
buttons call the run's controls; every widget change still happens in
:meth:`ClaudeBody.render`, which the presenter calls at its limited rate.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from html import escape
from types import MappingProxyType, ModuleType
from typing import Any, Protocol

from markdown_it import MarkdownIt
from markdown_it.rules_block.state_block import StateBlock
from markdown_it.rules_block.table import getLine as _line_text
from markdown_it.rules_block.table import table as _gfm_table

from ..events import FINAL_STATUSES, exit_words
from ..protocol import one_line
from ..terminaltext import MONOSPACE, ansi_html, overwrite_lines, printable
from .control import (
    DEFAULT_DENY_MESSAGE,
    END_OF_INPUT_MESSAGE,
    INTERRUPT_DENY_MESSAGE,
    NOBODY_MESSAGE,
    POLICY_DENY_MESSAGE,
)
from .interpreter import ClaudeInterpreter
from .limits import describe_limit
from .permissions import ConversationView, Line, PermissionRequest, input_lines, readable_input
from .permissions import printable as visible_controls
from .streamjson import (
    AnswerBudget,
    ApiRetry,
    ClaudeRun,
    Cut,
    LiveGap,
    TextGap,
    TextKey,
    TextPlan,
    ThinkingBudget,
    Thought,
    ThoughtPlan,
    ToolBudget,
    ToolCall,
    ToolPlan,
    TurnPart,
    TurnView,
    live_window,
    summary,
)

_nh3: ModuleType | None
try:
    import nh3 as _nh3
except ImportError:  # pragma: no cover - nh3 is optional at runtime.
    _nh3 = None

__all__ = [
    "MAX_LIVE_PIECES",
    "MAX_RECORD_PROMPT_CHARS",
    "MAX_RECORD_TEXTS",
    "MAX_RECORD_THOUGHTS",
    "MAX_RECORD_TOOL_CARDS",
    "MAX_RECORD_TURNS",
    "TURN_CONTEXT",
    "BodyPieces",
    "ClaudeBody",
    "Controls",
    "RenderMemo",
    "RunStatus",
    "TextMemo",
    "TurnCache",
    "claude_body_html",
    "claude_body_pieces",
    "decision_reason",
    "decision_words",
    "format_cost",
    "format_duration",
    "format_seconds",
    "permission_card_html",
    "record_prompt",
    "record_turns",
    "render_answer_html",
    "render_claude_html",
    "render_error_html",
    "render_footer_html",
    "render_limit_html",
    "render_retries_html",
    "render_thinking_html",
    "render_tool_cards_html",
    "render_turns_html",
    "retry_text",
    "status_name",
    "tool_body_html",
    "tool_input_summary",
    "tool_plan",
    "tools_cut_words",
    "turns_gap_words",
]

# Limits: how much untrusted text one render may carry to the browser.
MAX_THINKING_CHARS = 50_000
MAX_TOOL_RESULT_CHARS = 5_000
MAX_TOOL_INPUT_CHARS = 120
MAX_RECORD_TOOL_CARDS = 200
"""How many tool calls a bounded record shows as cards: the first half and the last half, in
reading order (a user reads the start and the end); one line counts the ones between."""
MAX_RECORD_THOUGHTS = 200
"""How many places of thinking a bounded record shows (its thinking, its note): the first half and
the last half, in reading order; one line counts the ones between (past the thinking budget each
place still took a note: 20,000 places made an HTML record of 3.1 MB)."""
MAX_RECORD_TEXTS = 200
"""How many of Claude's texts a bounded record shows: the first half and the last half, in reading
order; one line counts the ones between (each took its wrapper, past what the answer's character
budget bounds: 20,000 sentences, a call after each, made an HTML record of 985 KB)."""
MAX_LIVE_PIECES = 200
"""How many pieces of each turn the live widget shows (texts, places of thinking, tool calls, each
call one): the first half and the last half, one line counting the ones between (it showed every
card, rendered again at each frame: 20,000 calls made a value of 11 MB and frames of 2.4 s)."""
MAX_RECORD_PROMPT_CHARS = 4000
"""How much of each prompt a bounded record and the live widget show (a pasted document made a
record as big as itself, at every turn that carried one): its start, then one line counting the
rest and saying where it is whole."""
MAX_RECORD_TURNS = 200
"""How many turns of a conversation a bounded record shows: the first half and the last half; one
line counts the ones between (each turn took its prompt and frame: 5,000 turns made 1.5 MB)."""
# A table wider or bigger than this is shown as text (a code block of its lines): markdown-it
# makes three tokens and an inline parse per cell, about 12 µs a cell, and the widget renders
# the whole answer again on every frame while it streams. A 5000-column table of 50 rows took
# 3.4 s a frame; as text it takes milliseconds.
MAX_TABLE_COLUMNS = 100
MAX_TABLE_CELLS = 10_000

_SAFE_SCHEMES = ("http:", "https:", "mailto:")
_ALLOWED_TAGS = {
    "a", "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6",
    "strong", "em", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {"a": {"href", "title", "target"}, "ol": {"start"}}
_LINK_REL = "noopener noreferrer nofollow"

_STATUS_NAMES = {
    400: "bad request",
    401: "unauthorized",
    402: "payment required",
    403: "forbidden",
    404: "not found",
    408: "request timeout",
    413: "request too large",
    429: "rate limited",
    500: "server error",
    502: "bad gateway",
    503: "unavailable",
    504: "gateway timeout",
    529: "overloaded",
}
_CATEGORY_NAMES = {
    "rate_limit": "rate limited",
    "overloaded": "overloaded",
    "overloaded_error": "overloaded",
    "server_error": "server error",
    "api_error": "server error",
    "authentication_failed": "unauthorized",
    "authentication_error": "unauthorized",
    "billing_error": "billing error",
    "invalid_request": "invalid request",
}
# Inline styles are ours, never the model's: they keep the fragments readable
# without a stylesheet.
_MUTED = "opacity:0.75;font-size:smaller"
# An error's red on its own pale background, as stderr has it: the red alone read at 2.6:1 on
# a dark theme's near-black.
_ERROR = "color:#b00020;background:#fff0f0"
_CARD = "border:1px solid #8884;border-radius:4px;padding:2px 6px;margin:2px 0"
_PRE = f"white-space:pre-wrap;margin:0;max-height:20em;overflow:auto;{MONOSPACE}"


# Answer


class _SafeMarkdown(MarkdownIt):
    """CommonMark without raw HTML or images, whose links must be http(s)/mailto."""

    def validateLink(self, url: str) -> bool:  # markdown-it's name
        """Accept only absolute http, https and mailto URLs."""
        return url.strip().lower().startswith(_SAFE_SCHEMES)


@functools.cache
def _markdown() -> MarkdownIt:
    # breaks: a single newline in a model's answer is a line break (poems, addresses, short
    # lines), as chat front ends show it, not a space.
    md = _SafeMarkdown("commonmark", {"html": False, "breaks": True})
    md.enable(["table", "strikethrough"], ignoreInvalid=True)
    md.block.ruler.before("table", "big_table", _big_table, {"alt": ["paragraph", "reference"]})
    # Remote images would be fetched by the browser as soon as they render.
    md.disable("image")
    md.add_render_rule("link_open", _render_link_open)
    return md


def _big_table(state: StateBlock, start: int, end: int, silent: bool) -> bool:
    """A GFM table over :data:`MAX_TABLE_COLUMNS` columns or :data:`MAX_TABLE_CELLS` cells (its
    header's counted), as a code block of its lines; any other is left to markdown-it's table
    rule that follows."""
    if not _gfm_table(state, start, end, True):
        return False
    delimiter = _line_text(state, start + 1)
    columns = sum(1 for cell in delimiter.split("|") if cell.strip())
    last = _table_end(state, start, end)
    if columns <= MAX_TABLE_COLUMNS and columns * (last - start - 1) <= MAX_TABLE_CELLS:
        return False
    if not silent:
        token = state.push("code_block", "code", 0)
        token.content = state.getLines(start, last, state.blkIndent, True)
        token.map = [start, last]
        state.line = last
    return True


def _table_end(state: StateBlock, start: int, end: int) -> int:
    """The line after a table's last row, found as markdown-it's table rule finds it (a blank
    line, a line indented less, or the start of another block ends it), without its cells."""
    terminators = state.md.block.ruler.getRules("blockquote")
    line = start + 2
    while line < end and state.sCount[line] >= state.blkIndent:
        if any(rule(state, line, end, True) for rule in terminators):
            break
        if not _line_text(state, line).strip() or state.is_code_block(line):
            break
        line += 1
    return line


def _render_link_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    # Links open in a new tab so a click never navigates away from the notebook.
    tokens[idx].attrSet("target", "_blank")
    tokens[idx].attrSet("rel", _LINK_REL)
    return str(self.renderToken(tokens, idx, options, env))


def _sanitize(html: str) -> str:
    """Clean HTML against the allow-list; unchanged when nh3 is not installed."""
    if _nh3 is None:
        return html
    return str(
        _nh3.clean(
            html,
            tags=_ALLOWED_TAGS,
            clean_content_tags={"script", "style"},
            attributes=_ALLOWED_ATTRIBUTES,
            url_schemes={"http", "https", "mailto"},
            link_rel=_LINK_REL,
            strip_comments=True,
        )
    )


def render_answer_html(markdown_text: str) -> str:
    """Render untrusted Markdown to safe HTML (no raw HTML, images or unsafe links, and no
    terminal escapes or controls: a tool's coloured output quoted in an answer)."""
    if not markdown_text.strip():
        return ""
    return f'<div class="cc-answer">{_sanitize(_markdown().render(printable(_line_feeds(markdown_text))))}</div>'


class TextMemo:
    """What each text a record shows rendered to, kept from one build of a run's record to the next.

    A conversation's record is built again at each turn's end, and its Markdown was parsed again
    for every text it shows (8,200 texts at 200 turns of 40 calls: most of a 1 to 2.4 s build on
    the kernel's loop thread). ``render`` is a pure function of the text (as
    :func:`render_answer_html` is), so a text seen before renders to what was kept for it, and a
    text that changed (an earlier turn's, late) is a new key, rendered afresh. What a build did not
    use is let go at :meth:`settle`, so the memo holds no more than one record's texts.
    """

    def __init__(self, render: Callable[[str], str]) -> None:
        self._render = render
        self._kept: dict[str, str] = {}
        self._used: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        """``render(text)``, rendered only when no build since the last :meth:`settle` but one used it."""
        # Read with get(): the record may be built on two threads at once (a cell's display and
        # a turn's end), and settle() swaps the dicts; a miss only renders again.
        rendered = self._used.get(text)
        if rendered is None:
            rendered = self._kept.get(text)
            rendered = self._render(text) if rendered is None else rendered
            self._used[text] = rendered
        return rendered

    def settle(self) -> None:
        """End a build: keep what it used, let go of the rest."""
        self._kept, self._used = self._used, {}


class RenderMemo:
    """What the builds of one run's record rendered and read, kept from one build to the next: the
    HTML of each of Claude's texts (:attr:`answers`) and the parts of each turn view
    (:meth:`parts`: a record's kept views, :class:`~cc_executor_nb.claude.streamjson.TurnViews`,
    are the same objects from build to build, and reading a turn's parts sorted every text and call
    of it: half of a build at 200 turns). A view is immutable and its calls are the parser's own
    objects (updated in place), so its parts are what a fresh read gives.
    """

    def __init__(self) -> None:
        self.answers = TextMemo(render_answer_html)
        self._kept: dict[int, tuple[TurnView, dict[tuple[str, bool], list[TurnPart]]]] = {}
        self._used: dict[int, tuple[TurnView, dict[tuple[str, bool], list[TurnPart]]]] = {}

    def parts(self, turn: TurnView, result_text: str = "", *, said: bool = True) -> list[TurnPart]:
        """``turn.parts(result_text, said=said)``, read once for each view (a new list each time)."""
        entry = self._used.get(id(turn))
        if entry is None or entry[0] is not turn:
            kept = self._kept.get(id(turn))
            entry = kept if kept is not None and kept[0] is turn else (turn, {})
            self._used[id(turn)] = entry  # holds the view: its id names no other meanwhile
        parts = entry[1].get((result_text, said))
        if parts is None:
            parts = entry[1][(result_text, said)] = turn.parts(result_text, said=said)
        return list(parts)

    def settle(self) -> None:
        """End a build: keep what it used, let go of the rest."""
        self.answers.settle()
        self._kept, self._used = self._used, {}


def _line_feeds(text: str) -> str:
    """CommonMark's line endings as line feeds: a lone carriage return ends a line there,
    and :func:`printable` would drop it, joining the lines."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


# Thinking


def render_thinking_html(run: ClaudeRun, budget: ThinkingBudget | None = None) -> str:
    """The run's thinking as one collapsed ``<details>`` block; ``""`` if there is none. ``budget``:
    a bounded record's (None: the last :data:`MAX_THINKING_CHARS`, as the live widget shows). (The
    widget and the records show each turn's thinking where it came among its text and tool cards.)"""
    live = run.phase == "thinking"
    if not run.thinking:
        return _thinking_estimate_html(run.thinking_tokens or 0) if live else ""
    ((kept, left_out),) = (budget or ThinkingBudget(MAX_THINKING_CHARS)).spend_turn([run.thinking])
    return _thought_html(kept, left_out, live=live, bounded=budget is not None)


def _thinking_cut(characters: str) -> str:
    """What a bounded record says of the thinking it leaves out (``characters``: how many, in words)."""
    return f"{characters} not shown: run.thinking has all of it"


def _thought_html(kept: str, left_out: int, *, live: bool, bounded: bool) -> str:
    """One place's thinking folded: ``kept``, what is shown of its end, after a note of the
    ``left_out`` characters before it (the turn's budget went to its later thinking); a note alone
    when nothing is kept. ``live``: the turn thinks there now. ``bounded``: a record's, whose notes
    say where all of it is."""
    where = ": run.thinking has all of it" if bounded else ""
    if not kept:
        return (f'<div class="cc-thinking" style="{_MUTED}">'
                + (f"Still thinking: {left_out:,} characters so far" if live else f"Thinking: {left_out:,} characters")
                + f" not shown{where}</div>")
    shown = f"… {left_out:,} earlier characters not shown{where} …\n{kept}" if left_out else kept
    return (
        f'<details class="cc-thinking"><summary style="{_MUTED}">{"Thinking…" if live else "Thinking"}</summary>'
        f'<div style="{_PRE};{_MUTED}">{escape(printable(shown))}</div>'
        "</details>"
    )


def _thoughts_gap_html(plan: ThoughtPlan) -> str:
    """The line of the places of thinking a bounded record leaves out."""
    return (f'<div class="cc-thinking-gap" style="{_MUTED}"><em>… {escape(plan.gap_words())}: '
            "<code>run.thinking</code> has all of it …</em></div>")


def _thinking_estimate_html(estimate: int) -> str:
    """The turn thinks now, its text not shown (yet): the CLI's count of its tokens so far."""
    return f'<div class="cc-thinking" style="{_MUTED}">Thinking… (~{estimate:,} tokens)</div>' if estimate else ""


def _head(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… {len(text) - limit:,} more characters not shown …"


# Tools


def render_tool_cards_html(
    run: ClaudeRun, decisions: Mapping[str, PermissionRequest] | None = None
) -> str:
    """One compact card per tool call: status, name, short input, folded result.

    ``decisions`` (permission requests by ``tool_use_id``) add who allowed or denied it.
    """
    return _tool_cards(run.tool_calls, decisions or {})


def _tool_cards(
    tools: list[ToolCall] | tuple[ToolCall, ...], decisions: Mapping[str, PermissionRequest],
    plan: ToolPlan | None = None,
) -> str:
    """The cards of the calls made at one place; ``plan``: a bounded record's, which shows some
    of them without their bodies and leaves some out, one line standing for those."""
    cards = "".join(_planned_card(tool, decisions.get(tool.id), plan) for tool in tools)
    return f'<div class="cc-tools">{cards}</div>' if cards else ""


def _planned_card(tool: ToolCall, decision: PermissionRequest | None, plan: ToolPlan | None) -> str:
    state = plan.state(tool) if plan is not None else "whole"
    if state == "hidden":
        return ""
    if state == "gap" and plan is not None:
        words = escape(printable(plan.gap_words()))
        return (f'<div class="cc-tools-gap" style="{_MUTED}"><em>… {words}: '
                "<code>run.tool_calls</code> has all of them …</em></div>")
    return _tool_card(tool, decision, bare=state == "bare")


def tool_body_html(tool: ToolCall) -> str:
    """A card's body (its change and its result, each folded): what a record's tool budget counts."""
    return _tool_change_html(tool) + _tool_result(tool)


def tool_plan(
    tools: Sequence[ToolCall], body_chars: int | None, cards: int | None, thoughts: Sequence[Thought] = (),
    places: int | None = None, *, texts: Sequence[tuple[TextKey, str]] = (), pieces: int | None = None,
) -> ToolPlan:
    """The :class:`~cc_executor_nb.claude.streamjson.ToolPlan` of a bounded record whose calls in
    reading order are ``tools``: ``body_chars`` characters of bodies in all (None: every one's),
    ``cards`` cards at most (None: all). Bodies count as the HTML writes them, the largest form;
    every form reads this plan, so all leave out the same calls and bodies. ``thoughts``: its places
    of thinking in reading order, ``places`` of which it shows at most (None: all), the first half
    and the last half; ``texts`` (:func:`~cc_executor_nb.claude.streamjson.text_places`) its texts,
    ``pieces`` of which it shows at most, in the same way."""
    shown = len(tools) if cards is None else cards
    budget = ToolBudget(body_chars) if body_chars is not None else None
    kept = len(thoughts) if places is None else places
    thinking = ThoughtPlan(thoughts, first=(kept + 1) // 2, last=kept // 2)
    said = len(texts) if pieces is None else pieces
    plan = TextPlan(texts, first=(said + 1) // 2, last=said // 2)
    return ToolPlan(tools, budget, tool_body_html, first=(shown + 1) // 2, last=shown // 2, thoughts=thinking,
                    texts=plan)


def _tool_card(tool: ToolCall, decision: PermissionRequest | None = None, *, bare: bool = False) -> str:
    """``bare``: a bounded record leaves the card's body out; it says its outcome alone."""
    state, icon = _tool_state(tool)
    head = (
        f'<span class="cc-tool-status">{icon}</span> '
        f'<strong class="cc-tool-name">{escape(printable(tool.name or "tool"))}</strong> '
        f'<code class="cc-tool-input">{escape(tool_input_summary(tool.input))}</code>'
        f"{_decision_html(decision)}"
    )
    body = _tool_outcome_html(tool) if bare else tool_body_html(tool)
    return f'<div class="cc-tool cc-tool-{state}" style="{_CARD}">{head}{body}</div>'


MAX_CHANGE_LINES = 60
"""Lines of an edit's change shown under its tool call (the approval card shows 200)."""
_CHANGE_TOOLS = frozenset({"Edit", "MultiEdit", "Write", "NotebookEdit"})


def tool_change(tool: ToolCall) -> tuple[list[Line], int, str] | None:
    """The change an editing tool call makes, for the record: its first diff lines, how
    many more are not shown, and ``+N −M`` (lines added and removed); None for other tools."""
    if tool.name not in _CHANGE_TOOLS or not isinstance(tool.input, dict):
        return None
    lines = [line for line in input_lines(tool.name, tool.input) if line.kind != "path"]
    if not lines:
        return None
    counts = f"+{sum(line.kind == 'add' for line in lines)} −{sum(line.kind == 'remove' for line in lines)}"
    return lines[:MAX_CHANGE_LINES], max(0, len(lines) - MAX_CHANGE_LINES), counts


def _tool_outcome_html(tool: ToolCall) -> str:
    """What a card whose body a bounded record leaves out says in its place: the summaries that
    fold its change and its result (``change · +3 −1 · result · 2 lines``), unfolding nothing."""
    change = tool_change(tool)
    words = [f"change · {change[2]}"] if change is not None else []
    words += [_result_words(tool)] if tool.result is not None else []
    return f' <span class="cc-tool-outcome" style="{_MUTED}">{escape(" · ".join(words))}</span>' if words else ""


def tools_cut_words(left_out: int, what: str = "results and changes") -> str:
    """What a bounded record says of the tool cards' bodies it leaves out (``run.tool_calls`` has
    them all: each form says so in its own markup)."""
    return f"the {what} of {left_out:,} tool call{_plural(left_out)} not shown"


def _tools_cut_html(plan: ToolPlan | None) -> str:
    """The note after a bounded record's turns; ``""`` when it left no body out."""
    if plan is None or not plan.bodies_left_out:
        return ""
    words = escape(tools_cut_words(plan.bodies_left_out))
    where = "<code>run.tool_calls</code> has all of them"
    return f'<div class="cc-tools-cut" style="{_MUTED}"><em>… {words}: {where}</em></div>'


def _tool_change_html(tool: ToolCall) -> str:
    change = tool_change(tool)
    if change is None:
        return ""
    lines, more, counts = change
    shown = "".join(_card_line(line) for line in lines)
    if more:
        shown += _card_line(Line("note", f"… {more:,} more lines not shown"))
    return (
        f'<details class="cc-tool-change"><summary style="{_MUTED}">change · {escape(counts)}</summary>'
        f'<pre style="{_PRE};{_CHANGE_COLOURS}">{shown}</pre></details>'
    )


# The diff's own text and background, as the approval card has: its line colours are chosen
# for a light background (the hunk line's blue on a dark theme's near-black read at 2:1).
_CHANGE_COLOURS = "background:#fff;color:#1f2328"


_DECIDED_BY = {
    "widget": "by you",
    "stdin": "by you",
    "code": "from code",
    "policy": "by the policy",
    "auto": "automatically",
    "cli": "by Claude",
    "elsewhere": "elsewhere",
}


def decision_words(status: str, decided_by: str | None, always: bool = False) -> str:
    """How a question was decided, in the same words in every view: ``always allowed by you``,
    ``denied by the policy``, ``allowed from code``, ``cancelled by Claude``."""
    who = _DECIDED_BY.get(decided_by or "", f"by {decided_by}" if decided_by else "")
    verb = "always allowed" if status == "allowed" and always else status
    return " ".join(part for part in (verb, who) if part)


# Our deny messages (what the model is told) as a view shows them after decision_words(),
# which already say who denied: "denied automatically: nobody could answer…", "denied by the policy".
_SHOWN_REASONS = {
    NOBODY_MESSAGE: NOBODY_MESSAGE.removeprefix("Denied automatically: "),
    END_OF_INPUT_MESSAGE: "end of input (Ctrl-D)",
    INTERRUPT_DENY_MESSAGE: "interrupted (Ctrl-C)",
    POLICY_DENY_MESSAGE: "",
    DEFAULT_DENY_MESSAGE: "",
}


def decision_reason(message: str) -> str:
    """A deny's message as shown after :func:`decision_words`: without what those words
    already say when it is one of ours (``""`` for the policy's and the stand-in one)."""
    return _SHOWN_REASONS.get(message, message)


# A decision's words carry their own pale background and no opacity: a colour that reads on
# white cannot read on a dark theme's near-black, and the muted green at opacity 0.75 read at
# 3.0:1 on white, the red at 1.9:1 on JupyterLab's dark theme.
_DECISION_COLOURS = {
    "allowed": "color:#146c43;background:#e8f5ee",
    "denied": _ERROR,
    "cancelled": "color:#57606a;background:#f6f8fa",
}
_DECISION = "font-size:smaller;padding:0 3px;border-radius:3px"


def _decision_html(request: PermissionRequest | None) -> str:
    """``allowed by you`` / ``denied by you: reason`` after a tool's input."""
    if request is None or request.pending:
        return ""
    text = decision_words(request.status, request.decided_by, request.always)
    reason = decision_reason(request.message) if request.status == "denied" else ""
    if reason:
        text += f": {one_line(printable(reason), MAX_TOOL_INPUT_CHARS)}"
    colours = _DECISION_COLOURS.get(request.status, _DECISION_COLOURS["cancelled"])
    return (
        f' <span class="cc-decision cc-decision-{escape(request.status)}" style="{colours};{_DECISION}">'
        f"{escape(text)}</span>"
    )


# Status glyphs that ordinary fonts have (DejaVu, Liberation): an emoji such as ⏳ or ⏹ drew
# an empty box in a browser without an emoji font (a headless Debian).
WAITING_ICON = "○"
INTERRUPTED_ICON = "■"


def _tool_state(tool: ToolCall) -> tuple[str, str]:
    if tool.status == "pending":
        return "running", WAITING_ICON
    return ("error", "✗") if tool.is_error else ("ok", "✓")


def _tool_result(tool: ToolCall) -> str:
    if tool.result is None:
        return ""
    return (
        f'<details><summary style="{_MUTED}">{_result_words(tool)}</summary>'
        f'<pre style="{_PRE}">{ansi_html(overwrite_lines(_head(tool.result, MAX_TOOL_RESULT_CHARS)))}</pre></details>'
    )


def _result_words(tool: ToolCall) -> str:
    """``result · 3 lines``, ``error · 1 line``, ``result · no output``."""
    lines = tool.output_lines
    size = f"{lines} line{_plural(lines)}" if lines else "no output"
    return f"{'error' if tool.is_error else 'result'} · {size}"


_SUMMARY_KEYS = (
    "command", "file_path", "notebook_path", "path", "pattern",
    "url", "query", "description", "prompt",
)  # fmt: skip


def tool_input_summary(tool_input: dict[str, Any] | str, limit: int = MAX_TOOL_INPUT_CHARS) -> str:
    """A one-line preview of a tool's input, at most ``limit`` characters, :func:`printable`.

    The most telling field (command, file path, pattern, URL, ...) is shown
    alone when present, otherwise the compact JSON of the whole input.
    """
    text = tool_input if isinstance(tool_input, str) else _pick_input(tool_input)
    return one_line(printable(text), limit)


def _pick_input(tool_input: dict[str, Any]) -> str:
    for key in _SUMMARY_KEYS:
        value = tool_input.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return json.dumps(tool_input, ensure_ascii=False, separators=(",", ":"), default=str)


# Retries and errors


def status_name(status: int | None, category: str = "") -> str:
    """A short name for an HTTP status or the CLI's error category."""
    if status in _STATUS_NAMES:
        return _STATUS_NAMES[status]
    if category in _CATEGORY_NAMES:
        return _CATEGORY_NAMES[category]
    if status is not None and 500 <= status < 600:
        return "server error"
    return "request error" if status is not None and 400 <= status < 500 else "error"


def retry_text(retry: ApiRetry, turns: int = 1) -> str:
    """One line such as ``API overloaded (529), retry 3 of 10 in 4 s``; in a conversation of
    ``turns`` turns, the turn it came in follows (``... in 4 s (follow-up 2)``): a record lists
    a conversation's retries after its turns."""
    text = f"API {status_name(retry.error_status, retry.message)}"
    if retry.error_status is not None:
        text += f" ({retry.error_status})"
    if retry.attempt is not None:
        text += f", retry {retry.attempt}"
        if retry.max_retries is not None:
            text += f" of {retry.max_retries}"
    if retry.delay_seconds is not None:
        text += f" in {format_seconds(retry.delay_seconds)}"
    if turns > 1:
        text += " (the first prompt)" if retry.turn == 0 else f" (follow-up {retry.turn})"
    return text


def render_retries_html(run: ClaudeRun) -> str:
    """The latest API retry while the run is live; once it is done, every retry in a
    collapsed list (as the Markdown and text records keep them); ``""`` without any."""
    if not run.retries:
        return ""
    if run.phase != "done":
        return (
            f'<div class="cc-retry" style="color:#a66a00">⟳ {escape(printable(retry_text(run.retries[-1])))}</div>'
        )
    count = len(run.retries)
    turns = len(run.turns)
    items = "".join(f"<li>{escape(printable(retry_text(retry, turns)))}</li>" for retry in run.retries)
    return (
        f'<details class="cc-retries"><summary style="opacity:0.75;font-size:smaller">'
        f'{count} API retr{"ies" if count > 1 else "y"}</summary><ul style="margin:0">{items}</ul></details>'
    )


def render_limit_html(run: ClaudeRun, now: float, *, ended: bool = False) -> str:
    """The usage or rate limit holding the run, with a countdown to its reset; ``""`` without one.

    ``now`` is epoch seconds. While an auto-resumed run waits, the line says when it resumes.
    """
    limit, until = run.usage_limit, run.waiting_until
    if until is not None and not ended:
        left = max(0, round(until - now))
        what = describe_limit(limit, now) if limit is not None else "waiting for a limit to reset"
        text = f"{what} · resuming the session in {format_seconds(left)}"
    elif limit is not None:
        text = describe_limit(limit, now)
        if ended and run.session_id:
            text += f" · resume with --resume {run.session_id}"
    else:
        return ""
    return f'<div class="cc-limit" style="color:#a66a00">{WAITING_ICON} {escape(printable(text))}</div>'


def render_error_html(run: ClaudeRun) -> str:
    """A failed run's error in plain words with its status; ``""`` if it did not fail."""
    if not run.is_error:
        return ""
    status = run.api_error_status
    if status is not None:
        title = f"API {status_name(status)} ({status})"
    else:
        title = f"Claude run failed ({run.subtype or 'error'})"
    return (
        f'<div class="cc-error" style="{_ERROR}"><strong>{escape(printable(title))}</strong>'
        f'<div style="white-space:pre-wrap">{escape(printable(run.error_message))}</div></div>'
    )


# Footer


def format_cost(cost_usd: float) -> str:
    """Dollars with four decimals: ``$0.0123``."""
    return f"${cost_usd:.4f}"


def format_seconds(seconds: float) -> str:
    """A short delay: ``4 s``, ``1.5 s``, ``12 s``, ``2 min 5 s``."""
    if seconds >= 60:
        return format_duration(seconds * 1000)
    if seconds >= 10:
        return f"{round(seconds)} s"
    return f"{seconds:.1f}".removesuffix(".0") + " s"


def format_duration(ms: float) -> str:
    """A run's duration: ``850 ms``, ``12.3 s``, ``2 min 05 s``, ``1 h 02 min``; ``< 1 ms``
    for what rounds to none (it read ``0 ms``, as if nothing ran)."""
    if ms > 0 and round(ms) == 0:
        return "< 1 ms"
    if round(ms) < 1000:  # 999.6 ms is "1.0 s", not "1000 ms"
        return f"{round(ms)} ms"
    if round(ms / 100) < 600:  # 59.96 s is "1 min 00 s", not "60.0 s"
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def render_footer_html(run: ClaudeRun, process_ended: bool = False) -> str:
    """Cost, tokens, turns, duration, model and session id in one muted line.

    ``process_ended``: the process is gone, so a run without a result is no longer
    "running…" but "no result", as the text and Markdown footers say (the note about the
    missing result says what happened).
    """
    facts = summary(run)
    status = facts["status"]
    if status == "error" and run.turns and run.turns[-1].interrupted:
        status = "interrupted"  # as the badge, the text footer and the Markdown say (not "failed")
    items = ["no result" if process_ended and status == "running" else _status_label(status)]
    if facts["cost_usd"] is not None:
        items.append(format_cost(facts["cost_usd"]))
    latest = _token_items(facts)
    if facts["duration_ms"] is not None:
        latest.append(format_duration(facts["duration_ms"]))
    if len(run.turns) > 1:
        # A conversation: the cost is the session's so far, the tokens and time the last turn's.
        items.append(f"{len(run.turns)} conversation turns")
        if latest:
            items.append("last turn " + ", ".join(latest))
    else:
        items.extend(_token_items(facts))
        # After an interrupt (and so a cancel) the CLI's count is no count of what happened:
        # a turn stopped in its first answer reads "2 agent turns".
        if facts["turns"] is not None and status != "interrupted":
            items.append(f"{facts['turns']} agent turn{_plural(facts['turns'])}")  # the CLI's num_turns
        if facts["duration_ms"] is not None and status == "interrupted":
            items[0] = f"interrupted after {format_duration(facts['duration_ms'])}"  # as footer_items says
        elif facts["duration_ms"] is not None:
            items.append(format_duration(facts["duration_ms"]))
    if facts["model"]:
        items.append(facts["model"])
    if facts["session_id"]:
        items.append(f"session {facts['session_id']}")
    text = " · ".join(escape(printable(item)) for item in items if item)
    reason = run.cost_estimate_reason if facts["cost_usd"] is not None else None
    # Off Anthropic's own API (a gateway, a proxy, the demo) or on a subscription, the CLI's
    # cost is what the tokens would cost at list prices, not the bill.
    note = f' title="{escape(printable(f"the cost is an estimate ({reason})"), quote=True)}"' if reason else ""
    return f'<div class="cc-footer" style="{_MUTED}"{note}>{text}</div>'


def _status_label(status: str) -> str:
    return {"running": "running…", "error": "failed", "interrupted": "interrupted"}.get(status, "")


def _token_items(facts: dict[str, Any]) -> list[str]:
    items = []
    # An interrupted turn's result says 0 in / 0 out: noise beside its cost, so left out.
    if facts["input_tokens"] or facts["output_tokens"]:
        items.append(
            f"{facts['input_tokens'] or 0:,} in / {facts['output_tokens'] or 0:,} out tokens"
        )
    if facts["cache_read_tokens"] or facts["cache_creation_tokens"]:
        read, written = facts["cache_read_tokens"] or 0, facts["cache_creation_tokens"] or 0
        items.append(f"cache {read:,} read / {written:,} written")
    return items


def _plural(count: int) -> str:
    return "" if count == 1 else "s"


# Everything


def render_claude_html(
    run: ClaudeRun,
    process_ended: bool = False,
    decisions: Mapping[str, PermissionRequest] | None = None,
    *,
    turns: TurnCache | None = None,
) -> str:
    """The whole run: thinking, tool cards, answer or error, retry line, footer.

    A conversation of several turns shows each turn (see :func:`render_turns_html`; ``turns``
    keeps each turn's HTML between calls).
    """
    return _run_pieces(run, process_ended, decisions, turns).html


def record_turns(
    views: Sequence[TurnView], limit: int | None
) -> tuple[list[TurnView], list[TurnView], list[TurnView]]:
    """A bounded record's turns: the first half of ``limit`` and the last half, and those between,
    which it leaves out (None: all shown)."""
    if limit is None or len(views) <= limit:
        return list(views), [], []
    first, last = (limit + 1) // 2, limit // 2
    return list(views[:first]), list(views[first : len(views) - last]), list(views[len(views) - last :])


def turns_gap_words(left_out: Sequence[TurnView]) -> str:
    """The line of the turns a record leaves out: ``4,800 turns not shown (follow-ups 100 to 4,899,
    with 9,600 tool calls): run.text and run.tool_calls have what they said and did``."""
    calls = sum(len(turn.tools) for turn in left_out)
    with_calls = f", with {calls:,} tool call{_plural(calls)}" if calls else ""
    span = f"follow-ups {left_out[0].index:,} to {left_out[-1].index:,}"
    return (f"{len(left_out):,} turn{_plural(len(left_out))} not shown ({span}{with_calls}): "
            "run.text and run.tool_calls have what they said and did")


def _turns_gap_html(left_out: Sequence[TurnView]) -> str:
    return f'<div class="cc-turns-gap" style="{_MUTED}"><em>… {escape(turns_gap_words(left_out))} …</em></div>'


def _run_pieces(
    run: ClaudeRun,
    process_ended: bool,
    decisions: Mapping[str, PermissionRequest] | None,
    turns: TurnCache | None,
    *,
    budget: AnswerBudget | None = None,
    thinking: ThinkingBudget | None = None,
    tool_chars: int | None = None,
    tool_cards: int | None = None,
    plan: ToolPlan | None = None,
    max_turns: int | None = None,
    memo: RenderMemo | None = None,
    views: Sequence[TurnView] | None = None,
) -> BodyPieces:
    """:func:`render_claude_html` cut before the turns and before the last one; ``budget``,
    ``thinking``, ``tool_chars``, ``tool_cards`` and ``max_turns``: a bounded record's (its turns are
    built afresh)."""
    end = render_retries_html(run) + render_footer_html(run, process_ended) + "</div>"
    bounded = budget is not None or thinking is not None or tool_chars is not None or tool_cards is not None
    bounded = bounded or max_turns is not None
    if len(run.turns) > 1 and turns is not None and not bounded and plan is None:
        # The live widget: the turns before the last are kept while they stand (not read again).
        finished, last = turns.conversation(run, decisions if decisions is not None else _NO_DECISIONS)
        return BodyPieces(_RUN_OPEN + _TURNS_OPEN, finished, last + "</div>" + end)
    views = list(views) if views is not None else run.turn_views()
    before, left_out, after = record_turns(views, max_turns if len(run.turns) > 1 else None)
    tools = plan
    if tools is None and (tool_chars is not None or tool_cards is not None):
        tools = tool_plan([tool for view in before + after for tool in view.tools], tool_chars, tool_cards)
    if len(run.turns) > 1:
        build = turns.html if turns is not None else _turn_html
        if bounded or tools is not None:  # a bounded record
            build = functools.partial(_turn_html, budget=budget, thinking=thinking, tools=tools, memo=memo)
        built = [build(turn, decisions or {}) for turn in before] + ([_turns_gap_html(left_out)] if left_out else [])
        built += [build(turn, decisions or {}) for turn in after]
        head = _RUN_OPEN + _TURNS_OPEN  # each turn shows its own thinking
        return BodyPieces(head, tuple(built[:-1]), built[-1] + "</div>" + _tools_cut_html(tools) + end)
    (view,) = views
    shown = decisions or {}
    window = MAX_LIVE_PIECES if turns is not None and not bounded and tools is None else None  # the widget's
    order = functools.partial(_in_order, budget=budget, tools=tools, thinking=thinking, window=window, memo=memo)
    parts: list[str] = []
    if run.is_error and run.turns and run.turns[-1].interrupted:
        parts += [order(view, shown), _INTERRUPTED]
    elif run.is_error:
        parts += [order(view, shown, said=bool(_text_besides_error(run))), render_error_html(run)]
    else:
        parts.append(order(view, shown, run.answer))
    return BodyPieces("", (), _RUN_OPEN + "".join(parts) + _tools_cut_html(tools) + end)


def _in_order(turn: TurnView, decisions: Mapping[str, PermissionRequest], result_text: str = "", *,
              said: bool = True, budget: AnswerBudget | None = None, tools: ToolPlan | None = None,
              thinking: ThinkingBudget | None = None, window: int | None = None,
              memo: RenderMemo | None = None) -> str:
    """A turn's thinking, text and tool cards in the order they came (:meth:`TurnView.parts`: a
    text before a call above its card, thinking between two calls between their cards), then
    ``result_text`` unless the text ends with it. ``said``: False leaves the text out (it only
    repeats the error shown below it). ``budget``: a bounded record's, which cuts the text where
    it runs out, with a note; ``tools``: its cards' bodies'; ``thinking``: its thinking's (None:
    the last :data:`MAX_THINKING_CHARS` of the turn's, as the live widget shows). While the turn
    thinks, its last thinking says so, or the CLI's estimate stands at its end. ``window``: the live
    widget's, which shows that many pieces of the turn at most (:func:`live_window`). ``memo``:
    a record's, which reads the parts and renders each text once (:class:`RenderMemo`)."""
    read = memo.parts(turn, result_text, said=said) if memo is not None else turn.parts(result_text, said=said)
    parts = tools.texts.select(turn.index, read) if tools is not None else read
    plan = tools.thoughts if tools is not None else ThoughtPlan()
    pieces = live_window(read, window) if window is not None else budget.spend(parts) if budget else parts
    shown = [part for part in pieces if not isinstance(part, Thought) or plan.state(part) != "hidden"]
    thoughts = [part.text for part in shown if isinstance(part, Thought) and plan.state(part) == "shown"]
    live = turn.thinking_estimate is not None and _ends_thinking(shown)
    cuts = (thinking or ThinkingBudget(MAX_THINKING_CHARS)).spend_turn(thoughts)
    folded = iter([
        _thought_html(kept, left_out, live=live and index == len(cuts) - 1, bounded=thinking is not None)
        for index, (kept, left_out) in enumerate(cuts)
    ])
    html = "".join(
        (_thoughts_gap_html(plan) if plan.state(part) == "gap" else next(folded)) if isinstance(part, Thought)
        else _part_html(part, decisions, tools, memo.answers if memo is not None else render_answer_html)
        for part in shown
    )
    thinks_unseen = turn.thinking_estimate is not None and not live
    return html + (_thinking_estimate_html(turn.thinking_estimate or 0) if thinks_unseen else "")


def _ends_thinking(parts: Sequence[TurnPart | Cut | LiveGap | TextGap]) -> bool:
    """Whether the last of ``parts`` that shows anything is thinking."""
    shown = [part for part in parts if not (isinstance(part, str) and not part.strip())]
    return bool(shown) and isinstance(shown[-1], Thought)


def _part_html(
    part: str | tuple[ToolCall, ...] | Cut | LiveGap | TextGap, decisions: Mapping[str, PermissionRequest],
    tools: ToolPlan | None = None, answers: Callable[[str], str] = render_answer_html,
) -> str:
    if isinstance(part, str):
        return answers(part)
    if isinstance(part, TextGap):
        return (f'<div class="cc-texts-gap" style="{_MUTED}"><em>… {escape(printable(part.words))}: '
                "<code>run.text</code> has all of them …</em></div>")
    if isinstance(part, LiveGap):
        words = escape(printable(part.words()))
        return (f'<div class="cc-live-gap" style="{_MUTED}"><em>… {words}: <code>run.text</code>, '
                "<code>run.thinking</code> and <code>run.tool_calls</code> have all of it …</em></div>")
    if isinstance(part, Cut):
        return (f'<div class="cc-cut" style="{_MUTED}"><em>… {part.chars:,} more characters of the answer: '
                "<code>run.transcript()</code> has all of it</em></div>")
    return _tool_cards(part, decisions, tools)


# JupyterLab's content type, which the record has from the page: in the live widget the
# ipywidgets HTML box's (13 px on 28 px lines) made the text jump as the record replaced it.
_BODY_OPEN = (
    '<div class="ccx-claude tex2jax_ignore mathjax_ignore" style="font-size:var(--jp-content-font-size1,14px);'
    'line-height:var(--jp-content-line-height,1.6)">'
)
_RUN_OPEN = '<div class="cc-run">'
_TURNS_OPEN = '<div class="cc-turns">'
TURN_CONTEXT = (_BODY_OPEN + _RUN_OPEN + _TURNS_OPEN, "</div>" * 3)
"""The elements a conversation's turn sits in, opened and closed: what makes a piece of the
live widget that holds turns well-formed HTML in the same places as the whole."""


@dataclasses.dataclass(frozen=True)
class BodyPieces:
    """The body's HTML (:func:`claude_body_html`) cut where the live widget cuts it.

    ``head + "".join(turns) + tail`` is the whole. In a conversation of several turns, ``head``
    is everything before the first turn (it ends inside :data:`TURN_CONTEXT`), ``turns`` each
    turn but the last and ``tail`` the last turn and what follows it (it starts inside
    :data:`TURN_CONTEXT`). A run of one prompt is one ``tail``.
    """

    head: str
    turns: tuple[str, ...]
    tail: str

    @property
    def html(self) -> str:
        """The whole HTML."""
        return self.head + "".join(self.turns) + self.tail

    @property
    def context(self) -> tuple[str, str]:
        """What opens and closes around a piece of turns: :data:`TURN_CONTEXT`, or nothing for
        a run of one prompt (its ``tail`` is whole)."""
        return TURN_CONTEXT if self.head else ("", "")


_NO_DECISIONS: Mapping[str, PermissionRequest] = MappingProxyType({})
_INTERRUPTED = f'<div class="cc-interrupted" style="{_MUTED}">{INTERRUPTED_ICON} Interrupted</div>'
_PROMPT_STYLE = (
    "border-left:3px solid #0d6efd;padding:2px 8px;margin:8px 0 4px;white-space:pre-wrap;"
    "background:#0d6efd0d"
)


def render_turns_html(
    run: ClaudeRun, decisions: Mapping[str, PermissionRequest] | None = None, *, turns: TurnCache | None = None
) -> str:
    """Each turn of a conversation: the prompt (after the first), its tools, its answer.

    With ``turns``, a turn whose content did not change since the last call is not built
    again (the same HTML: see :class:`TurnCache`).
    """
    build = turns.html if turns is not None else _turn_html
    parts = [build(turn, decisions or {}) for turn in run.turn_views()]
    return _TURNS_OPEN + "".join(parts) + "</div>"


class TurnCache:
    """The HTML of each turn of one conversation, kept between renders of its live widget.

    The widget renders the whole conversation again at each frame, while only the running
    turn changes: a finished turn's Markdown was parsed again each time (11.8 ms a render at
    100 turns). A turn is built again only when something it shows differs from when it was
    built: its prompt, text, tool calls (input, result, status), result, interrupt or the
    decisions on its tool calls (a question still pending at the turn's end is cancelled
    later). The HTML is the same as a fresh :func:`_turn_html`'s, which is a pure function
    of those.
    """

    def __init__(self) -> None:
        self._kept: dict[int, tuple[tuple[Any, ...], str]] = {}
        self._before_last: tuple[tuple[int, int], Mapping[str, PermissionRequest], tuple[str, ...]] | None = None

    def conversation(
        self, run: ClaudeRun, decisions: Mapping[str, PermissionRequest]
    ) -> tuple[tuple[str, ...], str]:
        """The HTML of each turn but the last, and of the last.

        While the turns before the last stand (their number and :attr:`ClaudeRun.past_version`, which
        counts the changes to them) and ``decisions`` is the same mapping (the widget hands the same
        one until the conversation's questions change), those turns' HTML is the one kept, and only
        the last turn is read and built: a render at turn 2,000 costs what one at turn 2 does (it
        read and compared every turn: 4.5 ms at 500 turns, 23 ms at 2,000).
        """
        count = max(1, len(run.turns))
        kept = self._before_last
        if kept is not None and kept[0] == (count, run.past_version) and kept[1] is decisions:
            (last,) = run.turn_views(count - 1)
            if kept[0] == (count, run.past_version):  # reading may settle an earlier turn's streamed input
                return kept[2], self.html(last, decisions)
        built = [self.html(turn, decisions) for turn in run.turn_views()]
        self._before_last = ((count, run.past_version), decisions, tuple(built[:-1]))  # stamped after the read
        return self._before_last[2], built[-1]

    def html(self, turn: TurnView, decisions: Mapping[str, PermissionRequest]) -> str:
        """The turn's HTML: the one kept for it when its content is unchanged, else built now."""
        key = _turn_key(turn, decisions)
        kept = self._kept.get(turn.index)
        if kept is not None and kept[0] == key:
            return kept[1]
        html = _turn_html(turn, decisions, window=MAX_LIVE_PIECES)
        self._kept[turn.index] = (key, html)
        return html


def _turn_key(turn: TurnView, decisions: Mapping[str, PermissionRequest]) -> tuple[Any, ...]:
    """Every field of the turn and of its tool calls, and their decisions, as values compared
    later: a call's fields are taken now, since the parser updates a call in place (its result,
    its status)."""
    fields = tuple(value for name, value in vars(turn).items() if name != "tools")
    tools = tuple(tuple(vars(tool).values()) for tool in turn.tools)
    return fields, tools, tuple(decisions.get(tool.id) for tool in turn.tools)


def record_prompt(prompt: str, bounded: bool) -> str:
    """``prompt`` as a record shows it: whole, or in a bounded record (the display's) and the live
    widget its first :data:`MAX_RECORD_PROMPT_CHARS` characters and a line counting the rest, which
    says where it is whole."""
    left_out = len(prompt) - MAX_RECORD_PROMPT_CHARS
    if not bounded or left_out <= 0:
        return prompt
    return (f"{prompt[:MAX_RECORD_PROMPT_CHARS]}\n… {left_out:,} more characters of this prompt not shown: "
            "run.transcript() has it whole")


def _turn_html(
    turn: TurnView, decisions: Mapping[str, PermissionRequest], budget: AnswerBudget | None = None,
    thinking: ThinkingBudget | None = None, tools: ToolPlan | None = None, *, window: int | None = None,
    memo: RenderMemo | None = None,
) -> str:
    """One turn; ``budget`` (a bounded record's) bounds its prompt too (:func:`record_prompt`);
    ``window``: the live widget's (:func:`_in_order`), which bounds the prompt the same way (a
    pasted document went whole into the widget's value, and the saved notebook, at each frame)."""
    prompt = ""
    if turn.index > 0:
        shown = record_prompt(turn.prompt, budget is not None or window is not None)
        prompt = f'<div class="cc-prompt" style="{_PROMPT_STYLE}">{escape(printable(shown))}</div>'
    body = [prompt]
    order = functools.partial(_in_order, budget=budget, tools=tools, thinking=thinking, window=window, memo=memo)
    if turn.interrupted and turn.result is not None:
        body += [order(turn, decisions), _INTERRUPTED]
    elif turn.is_error and turn.result is not None:
        message = _error_of_turn(turn)
        body += [order(turn, decisions, said=turn.text.strip() != message.strip()),
                 f'<div class="cc-error" style="{_ERROR}">{escape(printable(message))}</div>']
    else:
        body.append(order(turn, decisions, turn.answer))
    return f'<div class="cc-turn cc-turn-{turn.index}">{"".join(body)}</div>'


def _error_of_turn(turn: TurnView) -> str:
    return turn.error_message or "The turn failed."


def _text_besides_error(run: ClaudeRun) -> str:
    """The run's text unless it only repeats the error shown below it."""
    text = run.text.strip()
    raw = run.result.get("result") if run.result is not None else None
    return "" if text in (run.error_message.strip(), str(raw).strip()) else run.text


# The conversation as a widget body


class RunStatus(Protocol):
    """What the body needs of the process's state (the kernel's ``RunState`` fits).

    Read-only, so a state whose ``status`` is a narrower type (a Literal) fits too.
    """

    @property
    def status(self) -> str:
        """The process's status (``running``, ``completed``, ...)."""
        ...

    @property
    def exit_code(self) -> int | None:
        """The exit code once the process ended, else None."""
        ...


def claude_body_html(
    run: ClaudeRun,
    *,
    status: str = "running",
    exit_code: int | None = None,
    stderr: str = "",
    decisions: Mapping[str, PermissionRequest] | None = None,
    now: float | None = None,
    turns: TurnCache | None = None,
    answer_chars: int | None = None,
    thinking_chars: int | None = None,
    tool_chars: int | None = None,
    tool_cards: int | None = None,
    plan: ToolPlan | None = None,
    max_turns: int | None = None,
    memo: RenderMemo | None = None,
    views: Sequence[TurnView] | None = None,
) -> str:
    """The conversation as sanitized HTML, with a note when the run ended without a result.

    ``status`` and ``exit_code`` are the process's (see ``RunState``); ``stderr`` is
    shown, escaped, only in that note. ``decisions``: permission requests by tool_use_id.
    ``now`` (epoch seconds, default the clock's) counts down to a usage limit's reset.
    ``turns``: a conversation's turns kept from an earlier call (the live widget's).
    ``answer_chars``: show that many characters of Claude's text at most (a record's bound; None:
    all), read in order: the text is cut where they run out, with a note of how much is left out.
    ``thinking_chars``: show that many characters of thinking at most, in all (a record's bound; None:
    the last :data:`MAX_THINKING_CHARS` of each turn's, as the live widget shows), spent in the same
    order (:class:`~cc_executor_nb.claude.streamjson.ThinkingBudget`), with a note where it is cut.
    ``tool_chars``: show that many characters of the tool cards' bodies (results, changes) at most, in
    all (a record's bound; None: each card's, as the live widget shows), spent in the same order
    (:class:`~cc_executor_nb.claude.streamjson.ToolBudget`); each later card keeps its tool, input and
    outcome, and a note after the turns counts the bodies left out.
    ``tool_cards``: show that many tool calls at most (a record's bound; None: all), the first half
    and the last half in reading order; one line where the first left out stood counts the ones
    between by tool and outcome. Both bounds make a :func:`tool_plan`, which the Markdown and text
    records read too: every form leaves out the same calls and bodies. ``plan``: one made already
    (a record's, which its Markdown and text read), in place of those two. ``max_turns``: show that
    many turns of a conversation at most (a record's bound; None: all), the first half and the last
    half; one line between counts the ones left out. ``memo``: what a record's earlier builds
    read and rendered (:class:`RenderMemo`; the same HTML). ``views``: the
    run's :meth:`~ClaudeRun.turn_views` as the caller read them (a record's, which its Markdown and
    text read too), in place of reading them again.
    """
    return claude_body_pieces(
        run, status=status, exit_code=exit_code, stderr=stderr, decisions=decisions, now=now, turns=turns,
        answer_chars=answer_chars, thinking_chars=thinking_chars, tool_chars=tool_chars, tool_cards=tool_cards,
        plan=plan, max_turns=max_turns, memo=memo, views=views,
    ).html


def claude_body_pieces(
    run: ClaudeRun,
    *,
    status: str = "running",
    exit_code: int | None = None,
    stderr: str = "",
    decisions: Mapping[str, PermissionRequest] | None = None,
    now: float | None = None,
    turns: TurnCache | None = None,
    answer_chars: int | None = None,
    thinking_chars: int | None = None,
    tool_chars: int | None = None,
    tool_cards: int | None = None,
    plan: ToolPlan | None = None,
    max_turns: int | None = None,
    memo: RenderMemo | None = None,
    views: Sequence[TurnView] | None = None,
) -> BodyPieces:
    """:func:`claude_body_html` (the same arguments) as :class:`BodyPieces`: the live widget
    sends a conversation's finished turns once and then only the turn that changes."""
    ended = status in FINAL_STATUSES
    limit = render_limit_html(run, time.time() if now is None else now, ended=ended)
    budget = AnswerBudget(answer_chars) if answer_chars is not None else None
    thinking = ThinkingBudget(thinking_chars) if thinking_chars is not None else None
    body = _run_pieces(run, ended, decisions, turns, budget=budget, thinking=thinking, tool_chars=tool_chars,
                       tool_cards=tool_cards, plan=plan, max_turns=max_turns, memo=memo,
                       views=views)
    end = limit
    if ended and run.result is None:
        end += _no_result_html(run, status, exit_code, stderr)
    # MathJax would typeset "$" pairs in model text; these classes make it skip the body.
    head = _BODY_OPEN + _waiting_html(run, status) + body.head
    if not body.head:
        return BodyPieces("", (), head + body.tail + end + "</div>")
    return BodyPieces(head, body.turns, body.tail + end + "</div>")


_ENDINGS = {"timeout": "timed out", "cancelled": "was cancelled", "error": "failed"}
_NOTE_CHARS = 4000
_MUTED = "opacity:0.75;font-size:smaller"


def _waiting_html(run: ClaudeRun, status: str) -> str:
    if run.phase != "starting" or run.text or status in FINAL_STATUSES:
        return ""
    return f'<div class="cc-waiting" style="{_MUTED}">Waiting for Claude…</div>'


def _no_result_html(run: ClaudeRun, status: str, exit_code: int | None, stderr: str) -> str:
    title = f"No result from Claude: the run {_ENDINGS.get(status, status)}"
    if exit_code is not None:
        words = exit_words(exit_code, status)
        title += f" with {words}" if words.startswith("exit code") else f", {words}"
    detail = "\n".join([*run.raw_lines, stderr.strip()]).strip()[-_NOTE_CHARS:]
    body = (
        f'<pre style="white-space:pre-wrap;margin:0;{MONOSPACE}">{escape(printable(detail))}</pre>' if detail else ""
    )
    return (
        f'<div class="cc-no-result" style="{_ERROR}"><strong>{escape(title)}</strong>'
        f"{body}</div>"
    )


# The approval card


_LINE_STYLES = {
    "command": "font-family:monospace;font-weight:600",
    "path": "font-family:monospace",
    "add": "background:#e6ffec;color:#116329",
    "remove": "background:#ffebe9;color:#82071e",
    "hunk": "color:#0550ae;opacity:0.8",
    "context": "",
    "text": "",
    "note": _MUTED,
}
_CARD_BOX = (
    "border:2px solid #fd7e14;border-radius:6px;padding:6px 10px;margin:6px 0;"
    "background:#fff8f0;color:#1f2328"  # its own text colour: a dark theme's white is unreadable on it
)


def permission_card_html(request: PermissionRequest, waiting: int = 0, *, on_stdin: bool = False) -> str:
    """The question: which tool, why, and its input made readable (command, diff, path).

    Everything from the CLI is escaped, its control characters shown as ``\\xNN`` and its
    bidi controls as ``⟨U+202E⟩``. ``waiting``: how many more questions follow;
    ``on_stdin``: the question is also asked in the busy cell's input box.
    """
    readable = readable_input(request.tool, request.input)
    lines = "".join(_card_line(line) for line in readable.lines)
    if readable.cut:
        lines += _card_line(Line("note", f"… {readable.cut} more lines not shown"))
    about = f'<div style="{_MUTED}">{_visible(request.description)}</div>' if request.description else ""
    blocked = (
        f'<div style="{_MUTED}">path: <code>{_visible(request.blocked_path)}</code></div>'
        if request.blocked_path else ""
    )
    more = f'<div style="{_MUTED}">{waiting} more question{_plural(waiting)} waiting</div>' if waiting else ""
    busy = (
        '<div class="cc-approval-stdin" style="color:#a66a00">The kernel is busy: answer in the input box '
        "below this run (a click here waits until the cell ends).</div>"
        if on_stdin else ""
    )
    return (
        f'<div class="cc-approval" style="{_CARD_BOX}">'
        f'<div class="cc-approval-title"><strong>Claude wants to use {_visible(request.tool)}</strong></div>'
        f'{about}<pre class="cc-approval-input" style="{_PRE};max-height:24em;font-size:smaller">{lines}</pre>'
        f"{blocked}{more}{busy}</div>"
    )


def _visible(text: str) -> str:
    """CLI text escaped for the card, its controls as ``\\xNN`` and bidi controls as ``⟨U+202E⟩``."""
    return escape(visible_controls(text))


def _card_line(line: Line) -> str:
    style = _LINE_STYLES.get(line.kind, "")
    text = f"$ {line.text}" if line.kind == "command" else line.text
    return f'<div class="cc-line cc-line-{line.kind}" style="{style}">{escape(text) or "&nbsp;"}</div>'


def _follow_up_note(view: ConversationView, alive: bool) -> str:
    notices = "".join(
        f'<div class="cc-notice" style="color:#a66a00">{escape(printable(text))}</div>' for text in view.notices
    )
    if view.mode == "one-shot" or (not alive and view.mode != "starting"):
        return notices
    if view.mode == "ending":
        hint = "Ending: the process exits once the current turn is over."
    elif view.turn_running:
        queued = f" ({view.queued} follow-up{_plural(view.queued)} waiting)" if view.queued else ""
        hint = f"Claude is working{queued}. A follow-up sent now runs after this turn."
    else:
        idle = (
            f" It ends by itself after {format_seconds(view.idle_timeout)} without one."
            if view.idle_timeout else ""
        )
        hint = f"The process stays alive for a follow-up (here or with run.send()); End closes it.{idle}"
    return notices + f'<div class="cc-follow-up-note" style="{_MUTED}">{escape(hint)}</div>'


class Controls(Protocol):
    """What the body's buttons call (the kernel's ``Run`` fits)."""

    def decide(
        self, request_id: str | None, allow: bool, *, always: bool = ..., message: str = ..., via: str = ...,
        strict: bool = ...,
    ) -> object:
        """Answer a permission question."""
        ...

    def send(self, prompt: str) -> object:
        """A follow-up turn."""
        ...

    def interrupt(self) -> object:
        """Stop the current turn."""
        ...

    def end(self) -> object:
        """Close the conversation."""
        ...


class ConversationSource(Protocol):
    """Where the body reads the conversation (the kernel's ``Conversation`` fits)."""

    def view(self) -> ConversationView:
        """The conversation now."""
        ...


#: How tall the live widget's conversation grows before it scrolls.
LIVE_ANSWER_HEIGHT = "40em"
#: How many finished turns of a conversation one HTML widget of the live view holds.
TURNS_PER_PIECE = 10
MAX_LIVE_TURN_PIECES = 20
"""How many widgets of finished turns (:data:`TURNS_PER_PIECE` each) the live widget keeps: the
first half and the last half, one line between counting the turns left out (every turn stayed in
the page: its DOM and the notebook's widget state grew with the conversation)."""
_LIVE_PIECE = "ccx-live-piece"


class ClaudeBody:
    """A :class:`~cc_executor_nb.kernel.views.Body`: the conversation as widgets.

    The rendered conversation is a column of ``HTML`` widgets in a box that scrolls: what
    comes before the turns, the finished turns :data:`TURNS_PER_PIECE` to a widget, and the
    last turn with what follows it (:class:`BodyPieces`, each piece wrapped in
    :data:`TURN_CONTEXT`); a run of one prompt is all in the last. A group's piece hides, in
    the live piece, the turns it holds: a turn joins its group before the live piece lets it go. A render sends only the
    pieces that changed: while a turn streams, that turn and the footer, not the finished
    turns again (the whole conversation went at every frame: 102.7 K characters at 100 turns
    in a soak, up to several frames a second). With a conversation (host mode) come an
    approval card (shown while a question waits) and a follow-up row; their buttons call
    :meth:`bind`'s controls. :meth:`render` re-renders only when the interpreter's version,
    the conversation's or the process's status changed; the presenter already limits how
    often it is called.
    """

    def __init__(
        self,
        interpreter: ClaudeInterpreter,
        conversation: ConversationSource | None = None,
        *,
        show_answer: bool = True,
    ) -> None:
        import ipywidgets  # only the renderer imports widgets, and only when one is made

        self.interpreter = interpreter
        self.conversation = conversation
        self.show_answer = show_answer
        self.render_count = 0
        self.sent_chars = 0
        """Characters of conversation HTML the last :meth:`render` sent (0: it sent none)."""
        self.controls: Controls | None = None
        self._key: tuple[Any, ...] | None = None
        self._turns = TurnCache()
        # The decisions by tool call, made again only when the conversation's view changes: the same
        # mapping lets the turn cache keep the finished turns without comparing them.
        self._decided: tuple[int | None, dict[str, PermissionRequest]] = (None, {})
        self._shown_request: str | None = None
        # The pieces share one layout and one style (a comm each, not one per piece) and have
        # no margin: they read as the one HTML they join into. Each is made with its first
        # value, which goes in its comm's opening message.
        self._ipywidgets = ipywidgets
        # The class that scopes the styles this conversation's pieces carry (see _hiding).
        self._scope = f"ccx-body-{uuid.uuid4().hex}"
        first = self._pieces("starting", None) if show_answer else BodyPieces("", (), "")
        opening, closing = self._context = first.context
        self._head = ipywidgets.HTML(value=first.head + closing, layout=ipywidgets.Layout(margin="0"))
        self._live = self._piece(opening + first.tail)
        self._live.add_class(_LIVE_PIECE)
        self._blocks: dict[int, Any] = {}  # by group: the first groups and the last (MAX_LIVE_TURN_PIECES)
        self._shown: dict[int, tuple[str, ...]] = {}
        self._gap: Any | None = None  # the line of the groups left out, once there are some
        self._gap_at = 0  # the first group left out
        # The column does not shrink in the scrolling box: it would scroll itself, from the top.
        self._column = ipywidgets.VBox(
            [self._head, self._live], layout=ipywidgets.Layout(flex="0 0 auto", overflow="visible")
        )
        self._show(first)
        # A long answer scrolls inside the live widget (a 1,500-word answer made a cell
        # 2,898 px tall). The box around the HTML scrolls, not a box in the HTML, so a
        # re-render keeps the place a person scrolled to. As a reversed flex column its
        # scroll is anchored at the bottom: like a terminal it follows the newest text and
        # ends on the footer unless the person scrolled up (it kept the top in view, so a
        # finished run showed "completed" over old text). The record and exports, which are
        # HTML of their own, keep the whole answer.
        layout = ipywidgets.Layout(
            max_height=LIVE_ANSWER_HEIGHT, overflow="auto", flex_flow="column-reverse",
            margin="var(--jp-widgets-margin)",  # the single HTML widget's margin, which a box has not
        )
        self._widget = _scroll_box_class()([self._column], layout=layout)
        self._widget.body = weakref.ref(self)
        self._widget.add_class("ccx-claude-body")
        self._widget.add_class(self._scope)
        self._parts: list[Any] = []
        self._box = self._widget
        if conversation is not None:
            self._build_conversation(ipywidgets)

    def _build_conversation(self, ipywidgets: Any) -> None:
        hidden = {"display": "none"}

        def button(description: str, icon: str, style: str = "") -> Any:
            layout = ipywidgets.Layout(width="auto", flex="0 0 auto")  # never cut to "All…"
            return ipywidgets.Button(description=description, icon=icon, button_style=style, layout=layout)

        def stretchy(width: str, least: str, **extra: str) -> Any:
            return ipywidgets.Layout(flex=f"1 1 {least}", min_width=least, max_width=width, **extra)

        # Rows wrap in a narrow output area: every control stays whole and on screen.
        wrapping = {"flex_flow": "row wrap", "align_items": "center"}
        self.card = ipywidgets.HTML(value="")
        self.allow_button = button("Allow", "check", "success")
        self.always_button = button("Always allow", "check-double")
        self.deny_button = button("Deny", "times", "danger")
        self.reason = ipywidgets.Text(placeholder="reason for Claude (optional)", layout=stretchy("24em", "10em"))
        answers = ipywidgets.HBox([self.allow_button, self.always_button, self.deny_button, self.reason],
                                  layout=ipywidgets.Layout(**wrapping))
        self.card_box = ipywidgets.VBox([self.card, answers], layout=ipywidgets.Layout(**hidden))
        self.card_box.add_class("ccx-approval")
        self.follow_up = ipywidgets.Textarea(
            placeholder="Follow up… (sent to the same Claude session)",
            layout=stretchy("32em", "12em", height="3.2em"),
        )
        self.send_button = button("Send", "paper-plane", "primary")
        self.interrupt_button = button("Interrupt", "hand-paper")
        self.end_button = button("End", "stop-circle")
        self.note = ipywidgets.HTML(value="")
        row = ipywidgets.HBox([self.follow_up, self.send_button, self.interrupt_button, self.end_button],
                              layout=ipywidgets.Layout(**wrapping))
        self.follow_up_box = ipywidgets.VBox([row, self.note], layout=ipywidgets.Layout(**hidden))
        self.follow_up_box.add_class("ccx-follow-up")
        self.allow_button.on_click(lambda _b: self._answer(True))
        self.always_button.on_click(lambda _b: self._answer(True, always=True))
        self.deny_button.on_click(lambda _b: self._answer(False))
        self.send_button.on_click(lambda _b: self._send())
        self.interrupt_button.on_click(lambda _b: self._call(lambda c: c.interrupt()))
        self.end_button.on_click(lambda _b: self._call(lambda c: c.end()))
        self._parts = [
            self.card, self.allow_button, self.always_button, self.deny_button, self.reason,
            self.card_box.layout, self.follow_up, self.send_button, self.interrupt_button, self.end_button,
            self.note, self.follow_up_box.layout,
        ]
        self._box = ipywidgets.VBox([self._widget, self.card_box, self.follow_up_box])
        self._box.add_class("ccx-claude")

    def bind(self, controls: Controls) -> None:
        """What the buttons call (the run)."""
        self.controls = controls

    @property
    def widget(self) -> Any:
        """The widget to place in the run's view (the conversation's HTML, or a box with
        it, the approval card and the follow-up row)."""
        return self._box

    @property
    def html(self) -> Any:
        """The box the rendered conversation scrolls in (its pieces' ``HTML`` widgets)."""
        return self._widget

    @property
    def value(self) -> str:
        """The conversation's HTML as the widgets hold it, joined: :func:`claude_body_html`'s, but for
        the turns a long conversation's widget leaves out (:data:`MAX_LIVE_TURN_PIECES`)."""
        opening, closing = self._context
        values = {
            index: block.value.removeprefix(opening).removesuffix(closing).removesuffix(
                self._hiding(index, self._shown[index]))
            for index, block in self._blocks.items()
        }
        if self._gap is not None:
            values[self._gap_at] = str(self._gap.value).removeprefix(opening).removesuffix(closing)
        blocks = "".join(value for _index, value in sorted(values.items()))
        return str(self._head.value).removesuffix(closing) + blocks + str(self._live.value).removeprefix(opening)

    # Rendering (the presenter's rate)

    def render(self, state: RunStatus, now: float) -> None:
        """Bring the widgets up to date with the interpreter, the conversation and ``state``."""
        view = self.conversation.view() if self.conversation is not None else None
        alive = bool(getattr(state, "alive", False))
        # A limit's countdown changes every second; nothing else does without new output. (Read from
        # the run: a snapshot copies every tool call, at each frame.)
        with self.interpreter.locked() as run:
            limited = run.usage_limit is not None or run.waiting_until is not None
        tick = int(time.time()) if limited else None
        key = (self.interpreter.version, state.status, state.exit_code, view.version if view else None, alive, tick)
        self.sent_chars = 0
        if key == self._key:
            return
        self._key = key
        decisions = self._decisions(view)
        if self.show_answer:
            self.sent_chars = self._show(self._pieces(state.status, state.exit_code, decisions))
        if view is not None:
            self._render_conversation(view, alive)
        self.render_count += 1

    def _decisions(self, view: ConversationView | None) -> dict[str, PermissionRequest]:
        """:func:`_decisions` of ``view``: the mapping made for its version, or a new one."""
        version = view.version if view is not None else None
        if version is None or self._decided[0] != version:
            self._decided = (version, _decisions(view))
        return self._decided[1]

    def _render_conversation(self, view: ConversationView, alive: bool) -> None:
        from contextlib import ExitStack

        with ExitStack() as stack:
            for part in self._parts:
                stack.enter_context(part.hold_sync())
            self._render_card(view)
            self._render_follow_up(view, alive)

    def _render_card(self, view: ConversationView) -> None:
        pending = view.pending
        first = pending[0] if pending else None
        _set(self.card_box.layout, "display", None if first else "none")
        if first is None:
            self._shown_request = None
            return
        if first.id != self._shown_request:
            self._shown_request = first.id
            _set(self.reason, "value", "")
        on_stdin = first.id in view.asked_on_stdin
        _set(self.card, "value", permission_card_html(first, len(pending) - 1, on_stdin=on_stdin))

    def _render_follow_up(self, view: ConversationView, alive: bool) -> None:
        open_ = view.accepts_input and (alive or view.mode == "starting")
        _set(self.follow_up_box.layout, "display", None if open_ or view.notices else "none")
        for widget in (self.follow_up, self.send_button, self.end_button):
            _set(widget, "disabled", not open_)
        _set(self.interrupt_button, "disabled", not (open_ and view.turn_running and view.mode == "live"))
        _set(self.note, "value", _follow_up_note(view, alive))

    def _pieces(
        self, status: str, exit_code: int | None, decisions: Mapping[str, PermissionRequest] | None = None
    ) -> BodyPieces:
        stderr = self.interpreter.stderr()
        with self.interpreter.locked() as run:
            return claude_body_pieces(
                run, status=status, exit_code=exit_code, stderr=stderr, decisions=decisions, turns=self._turns
            )

    def _piece(self, value: str) -> Any:
        return self._ipywidgets.HTML(value=value, layout=self._head.layout, style=self._head.style)

    def _show(self, pieces: BodyPieces) -> int:
        """Put ``pieces`` in the widgets, setting only the values that changed; the characters sent."""
        opening, closing = self._context = pieces.context
        sent = _put(self._head, pieces.head + closing)
        sent += self._show_turns(pieces.turns, opening, closing)
        _set(self._column, "children", (self._head, *self._pieces_in_order(), self._live))
        return sent + _put(self._live, opening + pieces.tail)

    def _show_turns(self, turns: tuple[str, ...], opening: str, closing: str) -> int:
        """The finished turns, :data:`TURNS_PER_PIECE` to a widget; the characters sent.

        A group is joined and compared only when one of its turns' HTML is another string (the
        turn cache hands back the same one while a turn is unchanged).
        """
        count = -(-len(turns) // TURNS_PER_PIECE)
        half = MAX_LIVE_TURN_PIECES // 2
        left_out = range(half, count - half) if count > MAX_LIVE_TURN_PIECES else range(0)
        for index in [index for index in self._blocks if index >= count or index in left_out]:
            self._blocks.pop(index).close()  # (turns are never taken away: a group left out goes)
            del self._shown[index]
        sent = 0
        for index in (index for index in range(count) if index not in left_out):
            group = turns[index * TURNS_PER_PIECE : (index + 1) * TURNS_PER_PIECE]
            if index not in self._blocks:
                value = opening + "".join(group) + self._hiding(index, group) + closing
                self._blocks[index] = self._piece(value)  # its value goes in its comm's opening
                self._shown[index] = group
                sent += len(value)
            elif group != self._shown[index]:
                self._shown[index] = group
                sent += _put(self._blocks[index], opening + "".join(group) + self._hiding(index, group) + closing)
        return sent + self._show_gap(left_out, opening, closing)

    def _show_gap(self, left_out: range, opening: str, closing: str) -> int:
        """The line of the groups of turns left out, where they stood; the characters sent."""
        if not left_out:
            if self._gap is not None:  # (turns are never taken away: this keeps the widgets true if they were)
                self._gap.close()
                self._gap = None
            return 0
        first, last = left_out.start * TURNS_PER_PIECE, left_out.stop * TURNS_PER_PIECE - 1
        words = (f"{last - first + 1:,} turns not shown (follow-ups {first:,} to {last:,}): run.text and "
                 "run.tool_calls have what they said and did; run.transcript() shows them")
        value = f'{opening}<div class="cc-turns-gap" style="{_MUTED}"><em>… {escape(words)} …</em></div>{closing}'
        self._gap_at = left_out.start
        if self._gap is None:
            self._gap = self._piece(value)
            return len(value)
        return _put(self._gap, value)

    def _pieces_in_order(self) -> list[Any]:
        """The widgets of the finished turns' groups, and the line of those left out, in order."""
        pieces = sorted(self._blocks.items())
        if self._gap is not None:
            pieces.insert(sum(1 for index, _block in pieces if index < self._gap_at), (self._gap_at, self._gap))
        return [piece for _index, piece in pieces]

    def _hiding(self, index: int, group: tuple[str, ...]) -> str:
        """A style, sent with the group's turns, that hides this conversation's live piece's copy of them.

        A turn moves from the live piece into its group when the next one starts: two widgets, two
        messages, which the browser may draw between (the turn showed twice for a frame at about
        half the turns' starts of a 25-turn conversation).
        """
        first = index * TURNS_PER_PIECE
        turns = ",".join(f".{self._scope} .{_LIVE_PIECE} .cc-turn-{n}" for n in range(first, first + len(group)))
        return f"<style>{turns}{{display:none}}</style>"

    # Buttons (the kernel's main thread)

    def _answer(self, allow: bool, *, always: bool = False) -> None:
        request_id = self._shown_request
        if request_id is None:
            return
        message = "" if allow else str(self.reason.value)
        self._call(lambda c: c.decide(request_id, allow, always=always, message=message, via="widget"))

    def _send(self) -> None:
        typed = str(self.follow_up.value)
        text = typed.strip()
        if text and self._call(lambda c: c.send(text)) and self.follow_up.value == typed:
            # Emptied once the run took it (sent or queued), so a second click cannot send it
            # again; a box already holding something else keeps it.
            self.follow_up.value = ""

    def _call(self, action: Any) -> bool:
        """Call ``action`` with the controls; False when there are none or it refused."""
        controls = self.controls
        if controls is None:
            return False
        try:
            action(controls)
        except (RuntimeError, ValueError) as exc:
            # A click that came too late (the conversation ended, the question was
            # withdrawn) says why instead of raising in the front end's comm handler.
            self._notify(str(exc))
            return False
        return True

    def _notify(self, message: str) -> None:
        note = getattr(self, "note", None)
        if note is not None:
            note.value = f'<div class="cc-notice" style="{_ERROR}">{escape(printable(message))}</div>'


def _decisions(view: ConversationView | None) -> dict[str, PermissionRequest]:
    if view is None:
        return {}
    return {r.tool_use_id: r for r in view.requests if r.tool_use_id}


@functools.cache
def _scroll_box_class() -> type[Any]:
    """The ``Box`` a conversation scrolls in, with the read-only ``value`` of the one ``HTML``
    widget it replaced: notebooks read ``run.view.body.html.value`` for the HTML shown."""
    import ipywidgets

    class ScrollBox(ipywidgets.Box):  # type: ignore[misc]
        body: weakref.ref[ClaudeBody] | None = None

        @property
        def value(self) -> str:
            """The conversation's HTML, joined (:attr:`ClaudeBody.value`)."""
            body = self.body() if self.body is not None else None
            return body.value if body is not None else ""

    return ScrollBox


def _put(widget: Any, value: str) -> int:
    """Set an HTML widget's value; the characters that sends (0 when it was the same)."""
    if widget.value == value:
        return 0
    widget.value = value
    return len(value)


def _set(widget: Any, name: str, value: object) -> None:
    """Set a trait only when it differs (no comm message for a no-op)."""
    if getattr(widget, name) != value:
        setattr(widget, name, value)
