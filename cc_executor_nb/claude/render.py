"""Render a :class:`~cc_executor_nb.claude.streamjson.ClaudeRun` as HTML for the widget.

Pure functions from a run to HTML strings; the widget only puts them on the
page. Every piece of text that comes from the model or a tool is untrusted and
is escaped with :func:`html.escape`. The answer is Markdown: it is rendered by
markdown-it-py with raw HTML disabled and links restricted to http, https and
mailto, and then, when ``nh3`` is installed, cleaned again against a short
allow-list (no images, scripts, styles, frames or event handlers) as defence
in depth.
"""

from __future__ import annotations

import functools
import json
from html import escape
from types import ModuleType
from typing import Any, Protocol

from markdown_it import MarkdownIt

from ..events import FINAL_STATUSES
from .interpreter import ClaudeInterpreter
from .streamjson import ApiRetry, ClaudeRun, ToolCall, summary

_nh3: ModuleType | None
try:
    import nh3 as _nh3
except ImportError:  # pragma: no cover - nh3 is optional at runtime.
    _nh3 = None

__all__ = [
    "ClaudeBody",
    "RunStatus",
    "claude_body_html",
    "format_cost",
    "format_duration",
    "format_seconds",
    "render_answer_html",
    "render_claude_html",
    "render_error_html",
    "render_footer_html",
    "render_retries_html",
    "render_thinking_html",
    "render_tool_cards_html",
    "retry_text",
    "status_name",
    "tool_input_summary",
]

# Limits: how much untrusted text one render may carry to the browser.
MAX_THINKING_CHARS = 50_000
MAX_TOOL_RESULT_CHARS = 5_000
MAX_TOOL_INPUT_CHARS = 120

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
_CARD = "border:1px solid #8884;border-radius:4px;padding:2px 6px;margin:2px 0"
_PRE = "white-space:pre-wrap;margin:0;max-height:20em;overflow:auto"


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
    # Remote images would be fetched by the browser as soon as they render.
    md.disable("image")
    md.add_render_rule("link_open", _render_link_open)
    return md


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
    """Render untrusted Markdown to safe HTML (no raw HTML, images or unsafe links)."""
    if not markdown_text.strip():
        return ""
    return f'<div class="cc-answer">{_sanitize(_markdown().render(markdown_text))}</div>'


# Thinking


def render_thinking_html(run: ClaudeRun) -> str:
    """The thinking as a collapsed ``<details>`` block; ``""`` if there is none."""
    thinking = run.thinking
    live = run.phase == "thinking"
    if not thinking:
        if live and run.thinking_tokens:
            estimate = f"Thinking… (~{run.thinking_tokens:,} tokens)"
            return f'<div class="cc-thinking" style="{_MUTED}">{estimate}</div>'
        return ""
    label = "Thinking…" if live else "Thinking"
    return (
        f'<details class="cc-thinking"><summary style="{_MUTED}">{label}</summary>'
        f'<div style="{_PRE};{_MUTED}">{escape(_tail(thinking, MAX_THINKING_CHARS))}</div>'
        "</details>"
    )


def _tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"… {len(text) - limit:,} earlier characters not shown …\n{text[-limit:]}"


def _head(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… {len(text) - limit:,} more characters not shown …"


# Tools


def render_tool_cards_html(run: ClaudeRun) -> str:
    """One compact card per tool call: status, name, short input, folded result."""
    tools = run.tool_calls
    if not tools:
        return ""
    return '<div class="cc-tools">' + "".join(map(_tool_card, tools)) + "</div>"


def _tool_card(tool: ToolCall) -> str:
    state, icon = _tool_state(tool)
    head = (
        f'<span class="cc-tool-status">{icon}</span> '
        f'<strong class="cc-tool-name">{escape(tool.name or "tool")}</strong> '
        f'<code class="cc-tool-input">{escape(tool_input_summary(tool.input))}</code>'
    )
    return f'<div class="cc-tool cc-tool-{state}" style="{_CARD}">{head}{_tool_result(tool)}</div>'


def _tool_state(tool: ToolCall) -> tuple[str, str]:
    if tool.status == "pending":
        return "running", "⏳"
    return ("error", "✗") if tool.is_error else ("ok", "✓")


def _tool_result(tool: ToolCall) -> str:
    if tool.result is None:
        return ""
    lines = tool.result.count("\n") + 1 if tool.result else 0
    label = "error" if tool.is_error else "result"
    return (
        f'<details><summary style="{_MUTED}">{label} · {lines} line{_plural(lines)}</summary>'
        f'<pre style="{_PRE}">{escape(_head(tool.result, MAX_TOOL_RESULT_CHARS))}</pre></details>'
    )


_SUMMARY_KEYS = (
    "command", "file_path", "notebook_path", "path", "pattern",
    "url", "query", "description", "prompt",
)  # fmt: skip


def tool_input_summary(tool_input: dict[str, Any] | str, limit: int = MAX_TOOL_INPUT_CHARS) -> str:
    """A one-line preview of a tool's input, at most ``limit`` characters.

    The most telling field (command, file path, pattern, URL, ...) is shown
    alone when present, otherwise the compact JSON of the whole input.
    """
    text = tool_input if isinstance(tool_input, str) else _pick_input(tool_input)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def retry_text(retry: ApiRetry) -> str:
    """One line such as ``API overloaded (529), retry 3 of 10 in 4 s``."""
    text = f"API {status_name(retry.error_status, retry.message)}"
    if retry.error_status is not None:
        text += f" ({retry.error_status})"
    if retry.attempt is not None:
        text += f", retry {retry.attempt}"
        if retry.max_retries is not None:
            text += f" of {retry.max_retries}"
    if retry.delay_seconds is not None:
        text += f" in {format_seconds(retry.delay_seconds)}"
    return text


def render_retries_html(run: ClaudeRun) -> str:
    """The latest API retry while the run is live; ``""`` once it is done."""
    if not run.retries or run.phase == "done":
        return ""
    return (
        f'<div class="cc-retry" style="color:#a66a00">⟳ {escape(retry_text(run.retries[-1]))}</div>'
    )


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
        f'<div class="cc-error" style="color:#b00020"><strong>{escape(title)}</strong>'
        f'<div style="white-space:pre-wrap">{escape(run.error_message)}</div></div>'
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
    """A run's duration: ``850 ms``, ``12.3 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if ms < 1000:
        return f"{round(ms)} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def render_footer_html(run: ClaudeRun, process_ended: bool = False) -> str:
    """Cost, tokens, turns, duration, model and session id in one muted line.

    ``process_ended``: the process is gone, so a run without a result is no longer
    "running…" (the note about the missing result says what happened).
    """
    facts = summary(run)
    status = facts["status"]
    items = [_status_label("" if process_ended and status == "running" else status)]
    if facts["cost_usd"] is not None:
        items.append(format_cost(facts["cost_usd"]))
    items.extend(_token_items(facts))
    if facts["turns"] is not None:
        items.append(f"{facts['turns']} turn{_plural(facts['turns'])}")
    if facts["duration_ms"] is not None:
        items.append(format_duration(facts["duration_ms"]))
    if facts["model"]:
        items.append(facts["model"])
    if facts["session_id"]:
        items.append(f"session {facts['session_id']}")
    text = " · ".join(escape(item) for item in items if item)
    return f'<div class="cc-footer" style="{_MUTED}">{text}</div>'


def _status_label(status: str) -> str:
    return {"running": "running…", "error": "failed"}.get(status, "")


def _token_items(facts: dict[str, Any]) -> list[str]:
    items = []
    if facts["input_tokens"] is not None or facts["output_tokens"] is not None:
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


def render_claude_html(run: ClaudeRun, process_ended: bool = False) -> str:
    """The whole run: thinking, tool cards, answer or error, retry line, footer."""
    parts = [render_thinking_html(run), render_tool_cards_html(run)]
    if run.is_error:
        parts += [render_answer_html(_text_besides_error(run)), render_error_html(run)]
    else:
        parts.append(render_answer_html(run.answer))
    parts += [render_retries_html(run), render_footer_html(run, process_ended)]
    return '<div class="cc-run">' + "".join(parts) + "</div>"


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
    run: ClaudeRun, *, status: str = "running", exit_code: int | None = None, stderr: str = ""
) -> str:
    """The conversation as sanitized HTML, with a note when the run ended without a result.

    ``status`` and ``exit_code`` are the process's (see ``RunState``); ``stderr`` is
    shown, escaped, only in that note.
    """
    ended = status in FINAL_STATUSES
    parts = [_waiting_html(run, status), render_claude_html(run, process_ended=ended)]
    if status in FINAL_STATUSES and run.result is None:
        parts.append(_no_result_html(run, status, exit_code, stderr))
    # MathJax would typeset "$" pairs in model text; these classes make it skip the body.
    return f'<div class="ccx-claude tex2jax_ignore mathjax_ignore">{"".join(parts)}</div>'


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
        title += f" with exit code {exit_code}"
    detail = "\n".join([*run.raw_lines, stderr.strip()]).strip()[-_NOTE_CHARS:]
    body = (
        f'<pre style="white-space:pre-wrap;margin:0">{escape(detail)}</pre>' if detail else ""
    )
    return (
        f'<div class="cc-no-result" style="color:#b00020"><strong>{escape(title)}</strong>'
        f"{body}</div>"
    )


class ClaudeBody:
    """A :class:`~cc_executor_nb.kernel.views.Body`: the conversation in an ``HTML`` widget.

    :meth:`render` re-renders only when the interpreter's version or the process's
    status changed; the presenter already limits how often it is called.
    """

    def __init__(self, interpreter: ClaudeInterpreter) -> None:
        import ipywidgets  # only the renderer imports widgets, and only when one is made

        self.interpreter = interpreter
        self.render_count = 0
        self._key: tuple[int, str, int | None] | None = None
        self._widget = ipywidgets.HTML(value=self._html("starting", None))
        self._widget.add_class("ccx-claude-body")

    @property
    def widget(self) -> Any:
        """The HTML widget holding the rendered conversation."""
        return self._widget

    def render(self, state: RunStatus, now: float) -> None:
        """Bring the widget up to date with the interpreter and ``state``."""
        key = (self.interpreter.version, state.status, state.exit_code)
        if key == self._key:
            return
        self._key = key
        value = self._html(state.status, state.exit_code)
        if value != self._widget.value:
            self._widget.value = value
        self.render_count += 1

    def _html(self, status: str, exit_code: int | None) -> str:
        stderr = self.interpreter.snapshot().stderr
        with self.interpreter.locked() as run:
            return claude_body_html(run, status=status, exit_code=exit_code, stderr=stderr)
