"""The claude CLI's control protocol in host mode, as pure functions: lines in, values out.

Started as ``claude --input-format stream-json --output-format stream-json --verbose
--include-partial-messages --permission-prompt-tool stdio`` (:data:`HOST_ARGS`), the CLI
reads one JSON object per line on stdin and writes its events, and its questions, on
stdout. This module builds every line we write and reads every control line it writes::

    write(initialize("init-1"))                  # optional; its answer proves host mode
    write(user_message("Fix the failing test"))  # a turn; the CLI answers with a result
    # the CLI asks: {"type": "control_request", "request": {"subtype": "can_use_tool", ...}}
    asked = parse_control(event)                  # -> PermissionAsked
    write(allow(asked.request_id, asked.input))   # or deny(...), with a message
    write(interrupt("int-1"))                     # ends the turn with a result; the process lives
    parse_sent(json.loads(line))                  # what a line written to stdin (by anyone) says

Rules measured with the CLI (2.0.0 to 2.1.332): an allow always carries ``updatedInput``
(older CLIs reject one without it) and a deny always carries a ``message``; "always
allow" sends the CLI's own suggestions back with their destination forced to
``"session"`` (the CLI would otherwise write the user's settings files); a stdin line
that is not JSON kills the CLI, so :func:`line` is the only way text is made.
No I/O here: tested with strings alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_DENY_MESSAGE",
    "END_OF_INPUT_MESSAGE",
    "HOST_ARGS",
    "INTERRUPT_DENY_MESSAGE",
    "NOBODY_MESSAGE",
    "POLICY_DENY_MESSAGE",
    "UNREACHABLE_MESSAGE",
    "AnswerSent",
    "ControlAnswer",
    "ControlMessage",
    "InitializeSent",
    "InterruptSent",
    "PermissionAsked",
    "RequestWithdrawn",
    "SentMessage",
    "TurnSent",
    "UnsupportedRequest",
    "allow",
    "deny",
    "failure",
    "initialize",
    "interrupt",
    "line",
    "parse_control",
    "parse_sent",
    "session_permissions",
    "user_message",
]

HOST_ARGS = (
    "--input-format", "stream-json",
    "--output-format", "stream-json",
    "--verbose",
    "--include-partial-messages",
    "--permission-prompt-tool", "stdio",
)  # fmt: skip
"""What puts the CLI in host mode, right after the executable. ``--permission-prompt-tool
stdio`` (hidden from ``--help``) is what sends the questions to us; ``--permission-prompts``
is never passed: CLIs before 2.1.2xx reject it. No ``-p``, as the Agent SDKs start it:
``--input-format stream-json`` with a stdin that is no terminal is what makes it
non-interactive (the pinned CLI and 2.1.197 alike), and ``-p`` made it start later (the
first text about 4.7 ms later, paired over 10 rounds, from a plain pipe reader)."""

DEFAULT_DENY_MESSAGE = "The user denied this tool call."
"""What the model is told when a deny comes without a reason (the CLI requires one)."""
NOBODY_MESSAGE = (
    "Denied automatically: nobody could answer this question (no terminal, and no input box: "
    "a busy kernel whose client allows no input, as nbconvert and papermill, or a script run "
    "without a terminal). Set a policy "
    "(--approve all|none, on_permission=..., CCExec.permission_policy) for unattended runs."
)
"""What the model is told when nobody could answer a question, so it was denied."""
END_OF_INPUT_MESSAGE = "The user denied this tool call: they ended the input (Ctrl-D) instead of answering."
"""What the model is told when the person asked on the terminal pressed Ctrl-D (end of input)."""
INTERRUPT_DENY_MESSAGE = "The user denied this tool call: they pressed Ctrl-C instead of answering."
"""What the model is told when the person asked at terminal IPython's prompt (a run nobody holds,
so nothing else could answer it later) pressed Ctrl-C."""
POLICY_DENY_MESSAGE = "Denied by the notebook's permission policy."
"""What the model is told when the run's permission policy denies a question."""
UNREACHABLE_MESSAGE = (
    "Denied automatically: nobody can answer this question any more (no widget shows the run "
    "and its handle was dropped). Keep the run (r = cc_executor_nb.run(...)), show it, or set a "
    "policy (--approve all|none, on_permission=..., CCExec.permission_policy) for unattended runs."
)
"""What the model is told when nobody can reach the run to answer it (see ``Conversation.nobody_left``)."""

# The kinds of "don't ask again" a suggestion may carry, and the only destination we send:
# "session" rules live in the process; the others are the user's settings files.
_RULE_TYPES = frozenset({"addRules", "setMode", "addDirectories"})
_SESSION = "session"


# Writing


def line(message: Mapping[str, Any]) -> str:
    """One stdin line: compact JSON, ASCII only (no raw newline or lone surrogate can slip in)."""
    return json.dumps(message, ensure_ascii=True, separators=(",", ":")) + "\n"


def initialize(request_id: str) -> dict[str, Any]:
    """The ``initialize`` control request (its success answer proves host mode)."""
    return _request(request_id, {"subtype": "initialize", "hooks": None})


def interrupt(request_id: str) -> dict[str, Any]:
    """Stop the current turn: the CLI ends it with a result and keeps the process."""
    return _request(request_id, {"subtype": "interrupt"})


def user_message(text: str) -> dict[str, Any]:
    """A user turn (the first one is the prompt)."""
    return {
        "type": "user",
        "message": {"role": "user", "content": text},
        "parent_tool_use_id": None,
        "session_id": "",
    }


def allow(
    request_id: str, tool_input: Mapping[str, Any], permissions: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """Let a tool call run with ``tool_input`` (the request's, echoed back).

    ``permissions`` (see :func:`session_permissions`) make the CLI stop asking for
    calls like this one for the rest of the process.
    """
    answer: dict[str, Any] = {"behavior": "allow", "updatedInput": dict(tool_input)}
    if permissions:
        answer["updatedPermissions"] = [dict(p) for p in permissions]
    return _response(request_id, answer)


def deny(request_id: str, message: str = "") -> dict[str, Any]:
    """Refuse a tool call; ``message`` reaches the model as the tool's result."""
    text = message.strip() or DEFAULT_DENY_MESSAGE
    return _response(request_id, {"behavior": "deny", "message": text})


def failure(request_id: str, error: str) -> dict[str, Any]:
    """An error answer: the CLI fails that request instead of waiting for us."""
    return {
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": error},
    }


def session_permissions(
    tool: str, tool_input: Mapping[str, Any], suggestions: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The "always allow" rules for a request, kept in the process only.

    The CLI's own "don't ask again" suggestions are used, preferring its rules (for
    Bash: this exact command) over broader ones (a permission mode, a directory), and
    every destination becomes ``"session"``. Without a usable suggestion the rule is
    the tool itself (for Bash: the exact command).
    """
    usable = [dict(s) for s in suggestions if isinstance(s, Mapping) and s.get("type") in _RULE_TYPES]
    rules = [s for s in usable if s["type"] == "addRules"] or usable
    if not rules:
        rules = [{"type": "addRules", "rules": [_tool_rule(tool, tool_input)], "behavior": "allow"}]
    return [{**rule, "destination": _SESSION} for rule in rules]


def _tool_rule(tool: str, tool_input: Mapping[str, Any]) -> dict[str, Any]:
    command = tool_input.get("command")
    if tool == "Bash" and isinstance(command, str) and command:
        return {"toolName": tool, "ruleContent": command}
    return {"toolName": tool}


def _request(request_id: str, request: dict[str, Any]) -> dict[str, Any]:
    return {"type": "control_request", "request_id": request_id, "request": request}


def _response(request_id: str, answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": answer},
    }


# Reading


@dataclass(frozen=True)
class PermissionAsked:
    """The CLI asks whether a tool call may run (``can_use_tool``)."""

    request_id: str
    tool: str
    input: dict[str, Any]
    """The input to echo back on allow (already normalised by the CLI)."""
    description: str = ""
    display_name: str = ""
    blocked_path: str | None = None
    tool_use_id: str | None = None
    """The ``tool_use`` block this question is about (absent before 2.1)."""
    suggestions: tuple[dict[str, Any], ...] = ()
    """The CLI's "don't ask again" options (``permission_suggestions``)."""
    reason: str = ""
    """Why the CLI asks, when it says (``decision_reason``)."""


@dataclass(frozen=True)
class RequestWithdrawn:
    """The CLI no longer waits for an answer (``control_cancel_request``, e.g. on interrupt)."""

    request_id: str


@dataclass(frozen=True)
class ControlAnswer:
    """The CLI's answer to one of our requests (``initialize``, ``interrupt``)."""

    request_id: str
    ok: bool
    response: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class UnsupportedRequest:
    """A control request we do not serve (hooks, SDK MCP servers): answer with :func:`failure`."""

    request_id: str
    subtype: str


ControlMessage = PermissionAsked | RequestWithdrawn | ControlAnswer | UnsupportedRequest


def parse_control(event: Mapping[str, Any]) -> ControlMessage | None:
    """The control message in a decoded stdout event; None for any other event.

    Never raises: fields of the wrong type read as absent, and a control line without
    a request id is not one we could answer (None).
    """
    kind = event.get("type")
    if kind == "control_request":
        return _parse_request(event)
    if kind == "control_cancel_request":
        request_id = _str(event.get("request_id"))
        return RequestWithdrawn(request_id) if request_id else None
    if kind == "control_response":
        return _parse_answer(_dict(event.get("response")))
    return None


def _parse_request(event: Mapping[str, Any]) -> ControlMessage | None:
    request_id = _str(event.get("request_id"))
    request = _dict(event.get("request"))
    if not request_id:
        return None
    subtype = _str(request.get("subtype"))
    if subtype != "can_use_tool":
        return UnsupportedRequest(request_id, subtype or "")
    suggestions = request.get("permission_suggestions")
    return PermissionAsked(
        request_id=request_id,
        tool=_str(request.get("tool_name")) or _str(request.get("display_name")) or "tool",
        input=_dict(request.get("input")),
        description=_str(request.get("description")) or _str(request.get("title")) or "",
        display_name=_str(request.get("display_name")) or "",
        blocked_path=_str(request.get("blocked_path")),
        tool_use_id=_str(request.get("tool_use_id")),
        suggestions=tuple(s for s in suggestions if isinstance(s, dict)) if isinstance(suggestions, list) else (),
        reason=_reason(request.get("decision_reason")),
    )


def _parse_answer(response: Mapping[str, Any]) -> ControlAnswer | None:
    request_id = _str(response.get("request_id"))
    if not request_id:
        return None
    ok = response.get("subtype") == "success"
    return ControlAnswer(
        request_id, ok, _dict(response.get("response")), "" if ok else _str(response.get("error")) or "error"
    )


def _reason(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _str(value.get("reason")) or _str(value.get("type")) or ""
    return ""


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


# Reading what was written to the CLI's stdin (a durable job keeps it: see process.input)


@dataclass(frozen=True)
class TurnSent:
    """A user message: a turn (the first one is the prompt)."""

    prompt: str


@dataclass(frozen=True)
class AnswerSent:
    """An answer to a permission question."""

    request_id: str
    allow: bool
    message: str = ""
    always: bool = False
    """The answer carried "don't ask again" rules."""


@dataclass(frozen=True)
class InterruptSent:
    """An ``interrupt`` request."""

    request_id: str


@dataclass(frozen=True)
class InitializeSent:
    """The ``initialize`` request."""

    request_id: str


SentMessage = TurnSent | AnswerSent | InterruptSent | InitializeSent


def parse_sent(message: Mapping[str, Any]) -> SentMessage | None:
    """What a decoded stdin line says, for the kinds this module writes; None otherwise.

    Never raises: fields of the wrong type read as absent.
    """
    kind = message.get("type")
    if kind == "user":
        return TurnSent(_prompt_of(_dict(message.get("message")).get("content")))
    if kind == "control_request":
        request_id = _str(message.get("request_id"))
        subtype = _dict(message.get("request")).get("subtype")
        if request_id and subtype == "interrupt":
            return InterruptSent(request_id)
        if request_id and subtype == "initialize":
            return InitializeSent(request_id)
        return None
    if kind == "control_response":
        response = _dict(message.get("response"))
        request_id = _str(response.get("request_id"))
        answer = _dict(response.get("response"))
        if not request_id or response.get("subtype") != "success" or "behavior" not in answer:
            return None
        allow = answer.get("behavior") == "allow"
        return AnswerSent(request_id, allow, _str(answer.get("message")) or "", bool(answer.get("updatedPermissions")))
    return None


def _prompt_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_str(_dict(block).get("text")) or "" for block in content)
    return ""
