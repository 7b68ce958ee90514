"""Choose the demo reply for a Messages API request: pure, no I/O.

`plan_reply` reads the request body (a decoded JSON dict) and returns a
`Reply`: what to say, how to pace it, or which API error to return. The
scenario is chosen from the text of the last user message; the keywords are
listed in the docstring of :mod:`cc_executor_nb.demo`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from . import texts
from .arithmetic import ExpressionError, evaluate, find_expression, format_number
from .limits import LIMIT_ANSWER, follow_on, limit_scenario

__all__ = [
    "AUXILIARY_TEXT",
    "ApiError",
    "DemoSettings",
    "Reply",
    "ToolCall",
    "conversation_name",
    "is_auxiliary",
    "plan_reply",
    "prompt_text",
]

AUXILIARY_TEXT = "Demo"

# Status code -> (error type, message), as the real API spells them.
_API_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Permission denied"),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Rate limited"),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}

# Markers of the CLI's main agent loop in a system prompt. Side requests
# (titles, summaries, classifiers) carry a different system prompt and no tools.
_MAIN_AGENT_MARKERS = ("You are Claude Code", "Claude Agent SDK", "You are a Claude agent")

# Limits keep a prompt from asking the server for absurd amounts of work.
_MAX_HAIKUS = 100
_MAX_STORY_WORDS = 1_000_000
_MAX_HUGE_BYTES = 100_000_000
_MAX_THINK_SECONDS = 3600.0

_ECHO = re.compile(r"^\s*echo:\s?(.*)$", re.IGNORECASE | re.DOTALL)
_ERROR = re.compile(r"\berror\s+(\d{3})\b")
_HAIKU = re.compile(r"\bhaikus?\b")
_HAIKU_COUNT = re.compile(r"(\d+)\s+haikus?\b")
_THINK = re.compile(r"\bthink(?:ing)?\b")
_THINK_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(?:s|secs?|seconds?)\b")
_STORY = re.compile(r"\bstory\b")
_STORY_WORDS = re.compile(r"(\d+)[\s-]*words?\b(?!\s+per\b)")
_WORDS_PER_SECOND = re.compile(r"(\d+(?:\.\d+)?)\s*words?\s+(?:per|a|/)\s*s(?:ec(?:ond)?)?\b")
_HUGE = re.compile(r"\bhuge\b|\bbig reply\b")
_HUGE_BYTES = re.compile(r"(\d+)\s*bytes?\b")
_TOOL = re.compile(r"\btool\b")
# Scenarios that need the user's approval (host mode); the prefix picks them.
_BASH = re.compile(r"^\s*bash(?P<twice>\s+twice)?:\s*(?P<command>\S.*?)\s*$", re.IGNORECASE | re.DOTALL)
_WRITE = re.compile(r"^\s*write:\s*(?P<path>[^:\n]+?)\s*(?::\s*(?P<content>.*?)\s*)?$", re.IGNORECASE | re.DOTALL)
_EDIT = re.compile(
    r"^\s*edit:\s*(?P<path>[^:\n]+?)\s*:\s*(?P<old>.+?)\s*=>\s*(?P<new>.*?)\s*$", re.IGNORECASE | re.DOTALL
)
# What the CLI puts before a follow-up written after an interrupt.
_INTERRUPT_MARKERS = ("[Request interrupted by user]", "[Request interrupted by user for tool use]")
WRITE_CONTENT = "Hello from the cc_executor_nb demo.\n"
_ARITHMETIC_CUE = re.compile(r"\bwhat(?:\s+is|'s)\b|\bcalculate\b|\bcompute\b|\bhow much is\b")


@dataclass(frozen=True)
class DemoSettings:
    """Defaults for scenario parameters that a prompt does not state."""

    words_per_second: float = 2000.0
    think_seconds: float = 5.0
    story_words: int = 500
    huge_bytes: int = 2_000_000
    # Words per text delta in the story scenario.
    story_chunk_words: int = 8


@dataclass(frozen=True)
class ApiError:
    """An HTTP error the server returns instead of a message."""

    status: int
    type: str
    message: str

    def body(self) -> dict[str, Any]:
        """Return the Anthropic error JSON for this error."""
        return {"type": "error", "error": {"type": self.type, "message": self.message}}


@dataclass(frozen=True)
class ToolCall:
    """A ``tool_use`` block the assistant emits."""

    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """What the server answers to one request.

    ``text_chunks`` become one ``text_delta`` each, the k-th sent at
    ``chunk_times[k]`` seconds after the first byte (``None`` means all at
    once). ``delay`` is the silence before any byte of the response.
    """

    text_chunks: tuple[str, ...] = ()
    chunk_times: tuple[float, ...] | None = None
    thinking: str | None = None
    tool_call: ToolCall | None = None
    delay: float = 0.0
    error: ApiError | None = None
    scenario: str = "default"
    prompt: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The whole reply text."""
        return "".join(self.text_chunks)

    @property
    def stop_reason(self) -> str:
        """``tool_use`` when the reply calls a tool, else ``end_turn``."""
        return "tool_use" if self.tool_call else "end_turn"


def plan_reply(request: dict[str, Any], settings: DemoSettings) -> Reply:
    """Return the reply for a decoded ``POST /v1/messages`` body."""
    if is_auxiliary(request):
        return Reply(text_chunks=(AUXILIARY_TEXT,), scenario="auxiliary")
    messages = request.get("messages") or []
    prompt = prompt_text(messages)
    stepped = _plan_approval_scenario(prompt, messages)
    if stepped is not None:
        return stepped
    tool_result = _last_tool_result(messages)
    if tool_result is not None:
        return _after_tool(prompt, tool_result)
    reply = _plan_for_prompt(prompt, settings)
    if reply.tool_call is not None:
        call = ToolCall(_next_tool_id(messages), reply.tool_call.name, reply.tool_call.input)
        reply = replace(reply, tool_call=call)
    return reply


def is_auxiliary(request: dict[str, Any]) -> bool:
    """True for the CLI's side requests (quota check, titles, summaries).

    The main agent loop always sends tools or its own system prompt; a
    request with a system prompt but neither is a side task, and so is any
    request for exactly one output token (the quota probe).
    """
    if request.get("max_tokens") == 1:
        return True
    if request.get("tools"):
        return False
    system = _system_text(request.get("system"))
    if not system:
        return False
    return not any(marker in system for marker in _MAIN_AGENT_MARKERS)


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """Text of the last user message that a person wrote.

    The CLI prepends ``<system-reminder>`` blocks to the user's turn and
    sends tool results as user messages; both are skipped.
    """
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        text = _human_text(message.get("content"))
        if text:
            return text
    return ""


def conversation_name(messages: list[dict[str, Any]]) -> str:
    """What names a conversation when the CLI sends no session id (2.0.77, 1.0.128): the first
    text a person wrote in it. It stays when a CLI merges a later prompt into that message (2.0.77
    does after a turn with no answer, such as one a limit refused: a follow-up, a resume's prompt),
    where the last prompt, the text of the whole message, changed with each."""
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        texts = [content] if isinstance(content, str) else [
            block.get("text") for block in content or [] if isinstance(block, dict) and block.get("type") == "text"
        ]
        written = next((text for text in texts if isinstance(text, str) and text and not _is_reminder(text)), None)
        if written is not None:
            return written
    return ""


def _human_text(content: Any) -> str:
    if isinstance(content, str):
        return "" if _is_reminder(content) else _without_markers(content)
    parts = [
        block.get("text", "")
        for block in content or []
        if isinstance(block, dict) and block.get("type") == "text"
    ]
    return _without_markers("\n".join(part for part in parts if part and not _is_reminder(part)))


def _is_reminder(text: str) -> bool:
    return text.lstrip().startswith("<system-reminder>")


def _without_markers(text: str) -> str:
    """What follows the CLI's last interrupt marker: a follow-up written after an interrupt
    comes with the marker, and some CLIs (2.0) repeat the interrupted prompt before it."""
    lines = text.splitlines()
    marks = [i for i, line in enumerate(lines) if line.strip() in _INTERRUPT_MARKERS]
    if not marks:
        return text
    return "\n".join(lines[marks[-1] + 1 :]).strip()


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n".join(block.get("text", "") for block in system or [] if isinstance(block, dict))


def _last_tool_result(messages: list[dict[str, Any]]) -> str | None:
    """The text of a ``tool_result`` in the latest turn, if it holds one and no words of the user.

    Words after the results are a new prompt: a follow-up after an interrupt comes in the
    message that carries the rejected call's result (results always come first).
    """
    # The CLI may append "system" turns after the user's; they do not count.
    turns = [message for message in messages if message.get("role") != "system"]
    if not turns or turns[-1].get("role") != "user":
        return None
    content = turns[-1].get("content")
    if not isinstance(content, list) or _human_text(content):
        return None
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            return _tool_result_text(block.get("content"))
    return None


def _turn_tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """``(text, is_error)`` of every tool result since the user's last own words.

    Results in the message holding those words came before them (an earlier, interrupted
    turn's), so they do not count.
    """
    found: list[tuple[str, bool]] = []
    for message in reversed(messages):
        if message.get("role") == "assistant" or message.get("role") == "system":
            continue
        content = message.get("content")
        if _human_text(content):
            break
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        results = [b for b in blocks if b.get("type") == "tool_result"]
        found[:0] = [(_tool_result_text(b.get("content")), b.get("is_error") is True) for b in results]
    return found


def _next_tool_id(messages: list[dict[str, Any]]) -> str:
    """A tool_use id new to the conversation (the CLI drops a repeated one)."""
    used = sum(
        1
        for message in messages
        if message.get("role") == "assistant" and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_use"
    )
    return f"toolu_demo_{used + 1:04d}"


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content or [] if isinstance(block, dict))


def _plan_for_prompt(prompt: str, settings: DemoSettings) -> Reply:
    echo = _ECHO.match(prompt)
    if echo:
        return _text_reply("echo", prompt, echo.group(1).strip())
    lowered = prompt.lower()
    for planner in _PLANNERS:
        reply = planner(prompt, lowered, settings)
        if reply is not None:
            return reply
    return _text_reply("default", prompt, texts.GREETING)


def _text_reply(scenario: str, prompt: str, text: str) -> Reply:
    return Reply(text_chunks=(text,), scenario=scenario, prompt=prompt)


def _plan_limit(prompt: str, lowered: str, settings: DemoSettings) -> Reply | None:
    """After its window (see :mod:`.limits`), a limit prompt is answered: its task after "then"."""
    if limit_scenario(prompt) is None:
        return None
    rest = follow_on(prompt)
    if rest and limit_scenario(rest) is None:
        reply = _plan_for_prompt(rest, settings)
        return Reply(
            text_chunks=reply.text_chunks, chunk_times=reply.chunk_times, thinking=reply.thinking,
            tool_call=reply.tool_call, delay=reply.delay, error=reply.error, scenario="limit", prompt=prompt,
        )
    return _text_reply("limit", prompt, LIMIT_ANSWER)


def _plan_error(prompt: str, lowered: str, settings: DemoSettings) -> Reply | None:
    match = _ERROR.search(lowered)
    if match:
        status = int(match.group(1))
    elif "overloaded" in lowered:
        status = 529
    else:
        return None
    if not 400 <= status <= 599:
        return None
    kind, message = _API_ERRORS.get(status, ("api_error", f"Demo error {status}"))
    return Reply(error=ApiError(status, kind, message), scenario="error", prompt=prompt)


def _plan_xss(prompt: str, lowered: str, settings: DemoSettings) -> Reply | None:
    if "markdown xss" not in lowered:
        return None
    return _text_reply("markdown_xss", prompt, texts.MARKDOWN_XSS)


def _plan_tool(prompt: str, lowered: str, settings: DemoSettings) -> Reply | None:
    if not _TOOL.search(lowered):
        return None
    call = ToolCall(
        id="toolu_demo_0001",
        name="Bash",
        input={"command": "echo hi", "description": "Print hi"},
    )
    return Reply(
        text_chunks=("I will run a command.",),
        thinking=texts.TOOL_THINKING if _THINK.search(lowered) else None,
        tool_call=call,
        scenario="tool",
        prompt=prompt,
    )


# Scenarios that need approval: one tool call per step, then a reply that quotes the
# results (a denied call's result is the user's message, which the reply repeats).


def _plan_approval_scenario(prompt: str, messages: list[dict[str, Any]]) -> Reply | None:
    calls_and_scenario = _approval_calls(prompt)
    if calls_and_scenario is None:
        return None
    scenario, calls, conclude = calls_and_scenario
    results = _turn_tool_results(messages)
    step = len(results)
    if step < len(calls):
        name, tool_input = calls[step]
        call = ToolCall(_next_tool_id(messages), name, tool_input)
        text = f"Step {step + 1} of {len(calls)}."
        return Reply(text_chunks=(text,), tool_call=call, scenario=scenario, prompt=prompt)
    return _text_reply(scenario, prompt, conclude(results))


_Calls = tuple[str, list[tuple[str, dict[str, Any]]], Any]


def _approval_calls(prompt: str) -> _Calls | None:
    bash = _BASH.match(prompt)
    if bash:
        command = bash.group("command")
        call = ("Bash", {"command": command, "description": "Run a demo command"})
        calls = [call, call] if bash.group("twice") else [call]
        return "bash", calls, lambda results: _conclude_bash(command, results)
    edit = _EDIT.match(prompt)
    if edit:
        path, old, new = edit.group("path"), edit.group("old"), edit.group("new")
        change = {"file_path": path, "old_string": old, "new_string": new}
        calls = [("Read", {"file_path": path}), ("Edit", change)]
        return "edit", calls, lambda results: _conclude_file("edited", path, results[-1:])
    write = _WRITE.match(prompt)
    if write:
        path = write.group("path")
        content = f"{write.group('content')}\n" if write.group("content") else WRITE_CONTENT
        calls = [("Write", {"file_path": path, "content": content})]
        return "write", calls, lambda results: _conclude_file("wrote", path, results)
    return None


_EXIT = re.compile(r"Exit code (?P<code>-?\d+)\s*(?P<output>.*)", re.DOTALL)
"""How the CLI words the result of a command that ran and failed (a refusal has its reason)."""


def _conclude_bash(command: str, results: list[tuple[str, bool]]) -> str:
    lines = []
    for text, is_error in results:
        failed = _EXIT.match(text.strip()) if is_error else None
        if failed:
            output = failed.group("output").strip() or "(none)"
            lines.append(f"I ran `{command}`. It failed with exit code {failed.group('code')}. Output: {output}")
        elif is_error:
            lines.append(f"The command was not run: {text.strip()}")
        else:
            lines.append(f"I ran `{command}`. Output: {text.strip() or '(none)'}")
    return "\n\n".join(lines)


def _conclude_file(done: str, path: str, results: list[tuple[str, bool]]) -> str:
    text, is_error = results[-1] if results else ("", True)
    if is_error:
        return f"I did not change {path}: {text.strip()}"
    return f"I {done} {path}: {text.strip()}"


def _after_tool(prompt: str, result: str) -> Reply:
    reply = _text_reply("tool", prompt, f"The command printed: {result.strip()}")
    # "think, then use a tool" thinks again once the result is back: thinking between two calls.
    return replace(reply, thinking=texts.AFTER_TOOL_THINKING) if _THINK.search(prompt.lower()) else reply


def _plan_haiku(prompt: str, lowered: str, settings: DemoSettings) -> Reply | None:
    if not _HAIKU.search(lowered):
        return None
    count = _bounded_int(_HAIKU_COUNT, lowered, 1, _MAX_HAIKUS)
    return _text_reply("haiku", prompt, texts.haikus(count))


def _plan_think(prompt: str, lowered: str, settings: DemoSettings) -> Reply | None:
    if not _THINK.search(lowered):
        return None
    seconds = _number(_THINK_SECONDS, lowered, settings.think_seconds)
    return Reply(
        text_chunks=(texts.THINK_ANSWER,),
        thinking=texts.THINKING_TEXT,
        delay=min(seconds, _MAX_THINK_SECONDS),
        scenario="think",
        prompt=prompt,
    )


def _plan_story(prompt: str, lowered: str, settings: DemoSettings) -> Reply | None:
    if not _STORY.search(lowered):
        return None
    words = _bounded_int(_STORY_WORDS, lowered, settings.story_words, _MAX_STORY_WORDS)
    rate = _number(_WORDS_PER_SECOND, lowered, settings.words_per_second)
    chunks = tuple(texts.story_chunks(words, settings.story_chunk_words))
    return Reply(
        text_chunks=chunks,
        chunk_times=_paced_times(chunks, rate),
        scenario="story",
        prompt=prompt,
        extra={"words": words, "words_per_second": rate},
    )


def _paced_times(chunks: tuple[str, ...], words_per_second: float) -> tuple[float, ...]:
    """Send time of each chunk: when the words before it have been 'spoken'."""
    times: list[float] = []
    spoken = 0
    for chunk in chunks:
        times.append(spoken / words_per_second if words_per_second > 0 else 0.0)
        spoken += len(chunk.split())
    return tuple(times)


def _plan_huge(prompt: str, lowered: str, settings: DemoSettings) -> Reply | None:
    if not _HUGE.search(lowered):
        return None
    size = _bounded_int(_HUGE_BYTES, lowered, settings.huge_bytes, _MAX_HUGE_BYTES)
    return _text_reply("huge", prompt, texts.huge_text(size))


def _plan_arithmetic(prompt: str, lowered: str, settings: DemoSettings) -> Reply | None:
    expression = find_expression(lowered)
    if expression is None:
        return None
    # A bare "2+2" is a question too; otherwise a cue such as "what is" must
    # be present so that dates or version numbers are not mistaken for sums.
    bare = lowered.strip(" ?=.\n") == expression
    if not bare and not _ARITHMETIC_CUE.search(lowered):
        return None
    try:
        answer = format_number(evaluate(expression))
    except ExpressionError as error:
        answer = f"I cannot compute that: {error}."
    return _text_reply("arithmetic", prompt, answer)


def _bounded_int(pattern: re.Pattern[str], text: str, default: int, limit: int) -> int:
    match = pattern.search(text)
    if match is None:
        return default
    digits = match.group(1).lstrip("0") or "0"
    # Longer than the limit is over it: int() of a prompt's 5000 digits would raise.
    value = limit if len(digits) > len(str(limit)) else int(digits)
    return max(1, min(value, limit))


def _number(pattern: re.Pattern[str], text: str, default: float) -> float:
    match = pattern.search(text)
    return float(match.group(1)) if match else default


# Checked in order; the first planner that recognises the prompt wins.
_PLANNERS = (
    _plan_limit,
    _plan_error,
    _plan_xss,
    _plan_tool,
    _plan_haiku,
    _plan_think,
    _plan_story,
    _plan_huge,
    _plan_arithmetic,
)
