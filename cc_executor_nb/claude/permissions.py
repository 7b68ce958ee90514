"""Claude's permission questions as people see them: the request, its readable input, answers.

A :class:`PermissionRequest` is one question of a run (``run.permission_requests``):
immutable, replaced by a new value when it is decided. :func:`readable_input` turns a
tool's input into what a person needs to decide: the command for Bash, a diff for Edit
and Write, the path for Read. :func:`question_text` and :func:`parse_answer` are the
terminal and stdin form of the same question. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..terminaltext import CONTROL, reveal_bidi
from .control import PermissionAsked

__all__ = [
    "ANSWER_HELP",
    "Answer",
    "ConversationMode",
    "ConversationView",
    "Line",
    "PermissionRequest",
    "Readable",
    "RequestStatus",
    "parse_answer",
    "printable",
    "question_text",
    "readable_input",
]

RequestStatus = Literal["pending", "allowed", "denied", "cancelled"]
ConversationMode = Literal["starting", "live", "ending", "over", "fallback", "one-shot"]
LineKind = Literal["command", "path", "add", "remove", "context", "hunk", "text", "note"]

# Limits: how much of a tool's input one card or prompt shows.
MAX_LINES = 200
MAX_LINE_CHARS = 400
TEXT_PROMPT_LINES = 24

ANSWER_HELP = "y = allow, a = always allow (this run), n = deny (n: why, tells Claude)"


@dataclass(frozen=True)
class PermissionRequest:
    """One permission question of a run and, once decided, its answer.

    ``status`` is pending, allowed, denied or cancelled (the CLI withdrew the question,
    e.g. after an interrupt, or the process ended first). ``decided_by`` says who
    answered: ``"widget"``, ``"stdin"`` (the cell's input box or the terminal),
    ``"code"`` (``run.approve()``/``run.deny()``), ``"policy"`` (``on_permission`` or
    ``--approve``), ``"auto"`` (nobody could answer, so it was denied), ``"cli"``
    (withdrawn), ``"elsewhere"`` (a durable job's question answered by another kernel
    attached to it, or before this one attached). ``message`` is the reason given to
    the model on a deny.
    """

    id: str
    tool: str
    input: dict[str, Any]
    status: RequestStatus = "pending"
    decided_by: str | None = None
    message: str = ""
    always: bool = False
    """Allowed for the rest of the run (the CLI does not ask again for such calls)."""
    description: str = ""
    blocked_path: str | None = None
    tool_use_id: str | None = None
    suggestions: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    @classmethod
    def from_asked(cls, asked: PermissionAsked) -> PermissionRequest:
        """A pending request for the CLI's question."""
        return cls(
            id=asked.request_id,
            tool=asked.tool,
            input=dict(asked.input),
            description=asked.description,
            blocked_path=asked.blocked_path,
            tool_use_id=asked.tool_use_id,
            suggestions=asked.suggestions,
        )

    @property
    def pending(self) -> bool:
        """Whether the CLI still waits for an answer."""
        return self.status == "pending"


@dataclass(frozen=True)
class ConversationView:
    """What a person sees of a live conversation at one moment (immutable).

    ``mode``: starting (the CLI has not answered yet), live, ending (its input is
    being closed), over (the process ended), fallback (the CLI has no host mode: the
    one-shot run is about to start), one-shot (no questions, no follow-ups).
    """

    mode: ConversationMode = "starting"
    requests: tuple[PermissionRequest, ...] = ()
    turn_running: bool = True
    queued: int = 0
    """Follow-ups waiting for the current turn to end."""
    sent: int = 0
    """Prompts sent to the CLI so far (the first one included)."""
    idle_since: float | None = None
    """When the process went idle (a ``time.monotonic()`` value), None while busy."""
    idle_timeout: float | None = None
    notices: tuple[str, ...] = ()
    asked_on_stdin: tuple[str, ...] = ()
    """Questions being asked in a busy cell's input box (or on the terminal) right now."""
    version: int = 0

    @property
    def pending(self) -> tuple[PermissionRequest, ...]:
        """The questions still waiting for an answer, oldest first."""
        return tuple(r for r in self.requests if r.pending)

    @property
    def accepts_input(self) -> bool:
        """Whether a follow-up can still be sent."""
        return self.mode in ("starting", "live")


@dataclass(frozen=True)
class Line:
    """One line of a readable input: its kind (for colour) and its text."""

    kind: LineKind
    text: str


@dataclass(frozen=True)
class Readable:
    """What a person reads to decide: a one-line summary and the detail lines."""

    summary: str
    lines: tuple[Line, ...]
    cut: int = 0
    """How many detail lines were left out."""


def readable_input(tool: str, tool_input: Mapping[str, Any]) -> Readable:
    """The command for Bash, a unified diff for Edit/MultiEdit/Write, the path for Read, else JSON.

    A command is shown whole, every line of it (what is cut could be what runs); other
    inputs keep the first ``MAX_LINES`` lines of ``MAX_LINE_CHARS`` characters each.
    """
    reader = _READERS.get(tool, _other)
    summary, lines = reader(tool_input)
    if tool == "Bash":
        return Readable(summary, tuple(lines))
    return Readable(_clip(summary), tuple(lines[:MAX_LINES]), max(0, len(lines) - MAX_LINES))


def input_lines(tool: str, tool_input: Mapping[str, Any]) -> list[Line]:
    """Every line of :func:`readable_input` (each still clipped), none left out."""
    return _READERS.get(tool, _other)(tool_input)[1]


def _bash(tool_input: Mapping[str, Any]) -> tuple[str, list[Line]]:
    parts = [command_text(part) for part in _lines(_text(tool_input, "command"))]
    return parts[0] if parts else "", [Line("command", part) for part in parts or [""]]


_PADDING = re.compile(r"(?<=\S)[ \t]{16,}")


def command_text(line: str) -> str:
    """One line of a command to approve, whole: controls shown as ``\\xNN`` and a long run of
    blanks inside it as ``⟨N blanks⟩`` (padding could push what runs out of sight)."""
    return _PADDING.sub(lambda match: f"⟨{len(match.group())} blanks⟩", printable(line))


def _path_only(tool_input: Mapping[str, Any]) -> tuple[str, list[Line]]:
    path = _text(tool_input, "file_path") or _text(tool_input, "notebook_path") or _text(tool_input, "path")
    extra = [Line("note", f"{key}: {tool_input[key]}") for key in ("offset", "limit") if key in tool_input]
    return path, [Line("path", path), *extra]


def _edit(tool_input: Mapping[str, Any]) -> tuple[str, list[Line]]:
    path = _text(tool_input, "file_path")
    lines = [Line("path", path), *_diff(_text(tool_input, "old_string"), _text(tool_input, "new_string"), "edit")]
    if tool_input.get("replace_all") is True:
        lines.append(Line("note", "every occurrence is replaced"))
    return path, lines


def _multi_edit(tool_input: Mapping[str, Any]) -> tuple[str, list[Line]]:
    path = _text(tool_input, "file_path")
    lines = [Line("path", path)]
    given = tool_input.get("edits")
    edits = [edit for edit in (given if isinstance(given, list) else []) if isinstance(edit, Mapping)]
    for number, edit in enumerate(edits, start=1):
        title = f"edit {number} of {len(edits)}" if len(edits) > 1 else "edit"
        lines += _diff(_text(edit, "old_string"), _text(edit, "new_string"), title)
    return path, lines


def _write(tool_input: Mapping[str, Any]) -> tuple[str, list[Line]]:
    path = _text(tool_input, "file_path")
    body = _lines(_text(tool_input, "content"))
    # The old content is not known here (the file may be on a remote machine): every
    # line is shown as written.
    hunk = Line("hunk", f"@@ write {len(body)} line{'' if len(body) == 1 else 's'} @@")
    return path, [Line("path", path), hunk, *(Line("add", "+" + _clip(text)) for text in body)]


def _notebook_edit(tool_input: Mapping[str, Any]) -> tuple[str, list[Line]]:
    path = _text(tool_input, "notebook_path")
    mode = _text(tool_input, "edit_mode") or "replace"
    cell = _text(tool_input, "cell_id")
    head = Line("hunk", f"@@ {mode} cell {cell} @@".replace("  ", " "))
    body = [Line("add", "+" + _clip(text)) for text in _lines(_text(tool_input, "new_source"))]
    return path, [Line("path", path), head, *body]


def _fetch(tool_input: Mapping[str, Any]) -> tuple[str, list[Line]]:
    url = _text(tool_input, "url") or _text(tool_input, "query")
    prompt = _text(tool_input, "prompt")
    return url, [Line("path", url), *([Line("note", _clip(prompt))] if prompt else [])]


def _other(tool_input: Mapping[str, Any]) -> tuple[str, list[Line]]:
    text = json.dumps(dict(tool_input), ensure_ascii=False, indent=2, default=str)
    first = json.dumps(dict(tool_input), ensure_ascii=False, separators=(",", ":"), default=str)
    return first, [Line("text", _clip(part)) for part in text.splitlines()]


_READERS = {
    "Bash": _bash,
    "Read": _path_only,
    "Glob": _path_only,
    "Grep": _path_only,
    "LS": _path_only,
    "Edit": _edit,
    "MultiEdit": _multi_edit,
    "Write": _write,
    "NotebookEdit": _notebook_edit,
    "WebFetch": _fetch,
    "WebSearch": _fetch,
}


def _diff(old: str, new: str, title: str) -> list[Line]:
    """A unified diff of two snippets, without file headers, its first hunk headed
    ``@@ title @@`` and each later one ``@@ … @@`` (unchanged lines left out).

    The tool input says what text is replaced, not where in the file: difflib's ``@@ -1,2
    +1,2 @@`` would count lines of the snippet and read as the file's line numbers.
    """
    lines: list[Line] = []
    diff = difflib.unified_diff(_lines(old), _lines(new), lineterm="", n=3)
    for text in diff:
        if text.startswith(("---", "+++")):
            continue
        if text.startswith("@@"):
            lines.append(Line("hunk", "@@ … @@" if lines else f"@@ {title} @@"))
            continue
        kind: LineKind = "add" if text.startswith("+") else "remove" if text.startswith("-") else "context"
        lines.append(Line(kind, _clip(text)))
    return lines


def _lines(text: str) -> list[str]:
    """Lines split at newlines only (a lone ``\\r`` stays, shown escaped), CRLF ends removed."""
    if not text:
        return []
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
    return [part.removesuffix("\r") for part in parts]


def _text(mapping: Mapping[str, Any], key: str) -> str:
    value = mapping.get(key)
    return value if isinstance(value, str) else "" if value is None else str(value)


def _clip(text: str) -> str:
    text = printable(text)
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 1] + "…"


# Characters that take no room or break the line where they should not: zero-width
# spaces and joiners, the word joiner and invisible operators, the soft hyphen, the BOM,
# the line and paragraph separators, and the tag characters (text a person cannot see
# but a program reads). In a question they could hide part of what Claude asks to run.
_INVISIBLE = re.compile("[\u00ad\u200b-\u200d\u2028\u2029\u2060-\u2064\ufeff\U000e0000-\U000e007f]")


def printable(text: str) -> str:
    """Control characters shown as ``\\xNN``, bidi controls and invisible characters as
    ``⟨U+202E⟩``: a model's command must not drive the terminal nor hide or reorder what a
    person reads (an escape sequence, an override or a zero-width character could hide what
    it asks to run)."""
    shown = reveal_bidi(CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text))
    return _INVISIBLE.sub(lambda match: f"⟨U+{ord(match.group()):04X}⟩", shown)


# The question as text (terminal, the cell's input box)


def question_text(request: PermissionRequest, *, max_lines: int = TEXT_PROMPT_LINES) -> str:
    """The question in plain lines: what Claude wants to do and the readable input."""
    readable = readable_input(request.tool, request.input)
    head = f"Claude asks to use {printable(request.tool)}"
    lines = [f"{head}: {readable.summary}" if readable.summary else head]
    if request.description and request.description != readable.summary:
        lines.append(f"  ({_clip(request.description)})")
    # The first command line is in the heading; every other one is shown (a second line
    # of a shell command is a command too), and never cut.
    commands = [Line("command", f"$ {ln.text}") for ln in readable.lines if ln.kind == "command"][1:]
    details = [ln for ln in readable.lines if ln.kind not in ("command", "path")]
    shown = commands + details[: max(0, max_lines - len(commands))]
    lines += [f"  {ln.text}" for ln in shown]
    hidden = len(commands) + len(details) - len(shown) + readable.cut
    if hidden > 0:
        lines.append(f"  … {hidden} more line{'' if hidden == 1 else 's'}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Answer:
    """A person's answer to a question: allow (maybe always) or deny with a message."""

    allow: bool
    always: bool = False
    message: str = ""


_YES = frozenset({"y", "yes", "allow", "ok"})
_ALWAYS = frozenset({"a", "always", "always allow"})
_NO = frozenset({"n", "no", "deny"})
_DENIAL = re.compile(r"(\w+)(?:\s*:\s*|\s+|$)(.*)", re.DOTALL)


def parse_answer(text: str) -> Answer | None:
    """Read a typed answer: ``y``, ``a`` (always), ``n`` or ``n: reason``; None if unclear.

    The reason may follow ``n`` after a colon or a space (``n not now``).
    """
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in _YES:
        return Answer(True)
    if lowered in _ALWAYS:
        return Answer(True, always=True)
    match = _DENIAL.match(stripped)
    if match and match.group(1).lower() in _NO:
        return Answer(False, message=match.group(2).strip())
    return None
