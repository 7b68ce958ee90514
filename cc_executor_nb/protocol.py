"""The pure JSON-RPC 2.0 core of the wire protocol (see ``shared/PROTOCOL.md``).

Text in, messages out; messages in, text out. No asyncio, no websockets, no I/O:
everything here is tested with strings alone. The server and client adapters only
move text between a socket and these functions.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

try:  # orjson serializes several times faster; the standard library is the fallback.
    import orjson

    _ORJSON = True
except ImportError:  # pragma: no cover - orjson is a dependency
    _ORJSON = False

from . import shellwords
from .errors import (
    InvalidParams,
    InvalidRequest,
    ParseError,
    ProtocolError,
    error_class_for,
)
from .targets import Target, target_from_wire

__all__ = [
    "BINARY_OUTPUT",
    "CANCELLED_BY_CLIENT",
    "CAPTURE_MODES",
    "CONTROL_TYPES",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_INACTIVITY_THRESHOLD",
    "DEFAULT_KILL_GRACE",
    "FROM_ARGUMENTS",
    "MAX_BATCH",
    "MAX_DEPTH",
    "MAX_EXECUTE_INPUT_BYTES",
    "MAX_HEARTBEAT_INTERVAL",
    "MAX_INPUT_BYTES",
    "MAX_INT_DIGITS",
    "MAX_KILL_GRACE",
    "MAX_TIMEOUT",
    "MIN_INTERVAL",
    "PROTOCOL_VERSION",
    "SERVER_PYTHON_MODULES",
    "STDIN_MODES",
    "ControlParams",
    "ErrorResponse",
    "ExecuteParams",
    "Incoming",
    "InputParams",
    "JobAttachParams",
    "JobRequest",
    "Notification",
    "Request",
    "Response",
    "ResumeParams",
    "SummarySpec",
    "check_utf8",
    "command_line",
    "dumps",
    "dumps_bytes",
    "error_response",
    "is_output_frame",
    "loads",
    "notification",
    "one_line",
    "output_frame",
    "output_frame_as_text",
    "parse_incoming",
    "parse_output_frame",
    "parse_server_message",
    "remote_error",
    "request",
    "response",
    "validate_ack",
    "validate_control",
    "validate_execute",
    "validate_input",
    "validate_input_close",
    "validate_job_attach",
    "validate_job_request",
    "validate_jobs_list",
    "validate_resume",
    "wants_job",
]

PROTOCOL_VERSION = "1"

# Defaults of the contract, in seconds (every duration accepts fractions).
DEFAULT_HEARTBEAT_INTERVAL = 20.0
DEFAULT_INACTIVITY_THRESHOLD = 30.0
DEFAULT_KILL_GRACE = 5.0
CANCELLED_BY_CLIENT = "cancelled by the client"
"""``process.completed``'s ``error`` for a run its client cancelled (``control`` CANCEL)."""
MIN_INTERVAL = 0.1
"""The shortest heartbeat interval or inactivity threshold a server accepts."""
# Limits on what we agree to parse: anything deeper or longer is a parse error, so a
# hostile frame cannot exhaust the stack or burn CPU on a million-digit integer.
MAX_DEPTH = 64
MAX_INT_DIGITS = 40
# Upper bounds of execute's durations: past them a value is a mistake (or a probe: 1e308
# overflows the event loop's timers), refused with -32602 rather than taken.
MAX_TIMEOUT = 30 * 86400.0
MAX_HEARTBEAT_INTERVAL = 3600.0
MAX_KILL_GRACE = 3600.0
MAX_BATCH = 100
"""The most requests one batch may hold: a longer one is a single -32600 (a 1 MiB frame of
340,000 empty objects made a 34 MB reply and held the loop for seconds)."""
CONTROL_TYPES = ("PAUSE", "RESUME", "CANCEL")
STDIN_MODES = ("null", "pipe")
CAPTURE_MODES = ("file", "pipe")
"""How a child's stdout and stderr are captured: regular files the server follows (no
byte can be dropped by a writer that exits early) or pipes."""
MAX_INPUT_BYTES = 256 << 10
"""The largest ``input`` a server accepts in one request (UTF-8 bytes). Well under the
default 1 MiB frame limit even when every character needs a JSON escape; the client
splits longer text, or text a server's smaller frame limit (``max_message_size`` of
``connected``) cannot hold, into several requests."""
MAX_EXECUTE_INPUT_BYTES = 8 << 20
"""The largest ``input`` of ``execute`` (UTF-8 bytes): what a run may have queued for its
stdin. The server's frame limit (``--max-message-size``, 1 MiB by default) bounds it first."""

Id = str | int | float | None

FROM_ARGUMENTS: Any = object()
"""``progress_target`` when ``execute`` gave none: the server looks in the arguments."""


@dataclass(frozen=True)
class Request:
    """A call from the peer. ``is_notification`` when it carried no ``id``."""

    method: str
    params: dict[str, Any] | list[Any] | None = None
    id: Id = None
    is_notification: bool = False


@dataclass(frozen=True)
class Notification:
    """A server-to-client notification (no ``id``)."""

    method: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Response:
    """A successful reply to a request."""

    id: Id
    result: Any


@dataclass(frozen=True)
class ErrorResponse:
    """An error reply; ``id`` is None when the request's id could not be read."""

    id: Id
    error: dict[str, Any]


@dataclass
class Incoming:
    """One parsed frame: the calls to run and the errors to answer right away.

    ``items`` keeps the frame's order; each item is a Request or an ErrorResponse.
    """

    items: list[Request | ErrorResponse] = field(default_factory=list)
    batch: bool = False


# -- JSON text -------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ParseError(f"Parse error: {name} is not valid JSON")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ParseError("Parse error: number too large")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ParseError("Parse error: number too large")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, computed without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def loads(text: str | bytes) -> Any:
    """Parse JSON strictly: no NaN/Infinity, bounded numbers and depth.

    Raises ParseError for anything else.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("Parse error: not UTF-8") from None
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except ParseError:
        raise
    except (ValueError, RecursionError):
        raise ParseError("Parse error: invalid JSON") from None
    if _depth(value) > MAX_DEPTH:
        raise ParseError("Parse error: nesting too deep")
    return value


def dumps(value: Any) -> str:
    """Serialize compactly; non-ASCII stays as is (valid in a UTF-8 text frame)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps_bytes(value: Any) -> bytes:
    """Serialize to UTF-8 bytes for a text frame, fast (the server's hot path).

    Values orjson refuses (integers beyond 64 bits, lone surrogates from a client's
    ``\\ud800`` escapes) fall back to the standard library, with each lone surrogate
    replaced by U+FFFD: echoed text (an unknown method's name) stays valid UTF-8 JSON that
    a strict parser (orjson, our own client's) reads.
    """
    if _ORJSON:
        try:
            return orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):
            pass
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")


# Python strings hold a valid pair as one character: any surrogate left is a lone one.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_unicode(text: str) -> bool:
    """Whether ``text`` holds no lone surrogate (it encodes as UTF-8)."""
    return _LONE_SURROGATE.search(text) is None


def check_utf8(name: str, text: str) -> None:
    """ValueError naming ``name`` and where its bad character is when ``text`` is not valid
    UTF-8: it holds a lone surrogate (``"\\ud800"``, or a byte that was not UTF-8, which
    Python reads as U+DC80..U+DCFF), which no text frame can carry."""
    found = _LONE_SURROGATE.search(text)
    if found is None:
        return
    char = ord(found.group())
    what = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"U+{char:04X}, a lone surrogate"
    raise ValueError(f"{name} is not valid UTF-8 ({what} at index {found.start()}); the protocol carries UTF-8 text")


def _loads_trusted(text: str | bytes) -> Any:
    """Parse a frame from our own server: orjson when present (depth and size bounded)."""
    if not _ORJSON:
        return loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ParseError("Parse error: invalid JSON") from None


# -- Parsing requests (server side) ---------------------------------------------------


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int))


def _invalid(reason: str, id_: Id = None) -> ErrorResponse:
    return ErrorResponse(id_, InvalidRequest(f"Invalid Request: {reason}").to_error_object())


def _parse_request(obj: Any) -> Request | ErrorResponse:
    if not isinstance(obj, dict):
        return _invalid("a request must be an object")
    has_id = "id" in obj
    id_ = obj.get("id")
    if has_id and not _valid_id(id_):
        return _invalid("id must be a string, a number or null")
    if isinstance(id_, str) and not _valid_unicode(id_):
        return _invalid("id must be valid Unicode (no lone surrogate)")
    if obj.get("jsonrpc") != "2.0":
        return _invalid('jsonrpc must be "2.0"', id_)
    method = obj.get("method")
    if not isinstance(method, str):
        return _invalid("method must be a string", id_)
    params = obj.get("params")
    if "params" in obj and not isinstance(params, (dict, list)):
        return _invalid("params must be an object or an array", id_)
    return Request(method=method, params=params, id=id_, is_notification=not has_id)


def parse_incoming(text: str | bytes) -> Incoming:
    """Parse one frame from a client into requests and immediate errors."""
    try:
        value = loads(text)
    except ParseError as exc:
        return Incoming([ErrorResponse(None, exc.to_error_object())])
    if not isinstance(value, list):
        return Incoming([_parse_request(value)])
    if not value:
        return Incoming([_invalid("empty batch")])
    if len(value) > MAX_BATCH:
        return Incoming([_invalid(f"batch too long (at most {MAX_BATCH} requests)")])
    return Incoming([_parse_request(item) for item in value], batch=True)


# -- Building messages --------------------------------------------------------------


def response(id_: Id, result: Any) -> dict[str, Any]:
    """A success response object."""
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def error_response(id_: Id, error: ProtocolError | dict[str, Any]) -> dict[str, Any]:
    """An error response object."""
    body = error.to_error_object() if isinstance(error, ProtocolError) else error
    return {"jsonrpc": "2.0", "id": id_, "error": body}


def notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A notification object."""
    return {"jsonrpc": "2.0", "method": method, "params": params}


def request(id_: Id, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request object (client side)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    return message


# -- Parsing server messages (client side) --------------------------------------------


def remote_error(error: Any) -> ProtocolError:
    """Rebuild the exception for a JSON-RPC error object received from a server."""
    if not isinstance(error, dict):
        return ProtocolError("Malformed error object")
    code = error.get("code")
    message = error.get("message")
    exc_class = error_class_for(code if isinstance(code, int) else -32603)
    exc = exc_class.__new__(exc_class)
    ProtocolError.__init__(exc, message if isinstance(message, str) else None, error.get("data"))
    if isinstance(code, int) and exc_class is ProtocolError:
        exc.code = code  # type: ignore[misc]
    return exc


def _parse_server_item(obj: Any) -> Response | ErrorResponse | Notification | None:
    if not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0":
        return None
    if isinstance(obj.get("method"), str):
        params = obj.get("params")
        return Notification(obj["method"], params if isinstance(params, dict) else {})
    if "result" in obj:
        return Response(obj.get("id"), obj["result"])
    if "error" in obj:
        return ErrorResponse(obj.get("id"), obj["error"])
    return None


# -- Binary output frames (the "ccx.binary-output" subprotocol) -----------------------

BINARY_OUTPUT = "ccx.binary-output"
"""The WebSocket subprotocol a client offers to receive ``process.output`` as binary frames."""
OUTPUT_HEADER_MAX = 4096
"""A binary output frame's header is shorter than this (its params are a few fields)."""


def output_frame(method: str, params: dict[str, Any]) -> bytes | None:
    """``params`` (with their ``data`` text) as one binary frame: the notification without
    ``data`` as compact JSON, a newline, then ``data`` as UTF-8. Compact JSON never holds a
    raw newline, so the first one ends the header. None when ``data`` is not valid Unicode
    (then the notification goes as JSON text, with its lone surrogates replaced)."""
    try:
        payload = params["data"].encode("utf-8")
    except UnicodeEncodeError:
        return None
    return b"".join((output_header(method, params), payload))


def output_header(method: str, params: dict[str, Any]) -> bytes:
    """The start of a binary output frame: the notification without ``data`` as compact
    JSON, and the newline that ends it (the frame's payload follows)."""
    return dumps_bytes(notification(method, {key: value for key, value in params.items() if key != "data"})) + b"\n"


def is_output_frame(frame: bytes) -> bool:
    """Whether ``frame`` (a serialized message) is a binary output frame, not JSON text."""
    return frame.find(b"\n", 0, OUTPUT_HEADER_MAX) != -1


def output_frame_as_text(frame: bytes) -> bytes:
    """A binary output frame as the JSON text frame it stands for (for a client without
    the subprotocol that resumes a session whose replay holds binary frames)."""
    header, _, payload = frame.partition(b"\n")
    message = _loads_trusted(header)
    message["params"]["data"] = payload.decode("utf-8", "replace")
    return dumps_bytes(message)


def parse_output_frame(frame: bytes) -> Notification | None:
    """A binary frame from the server as its notification (None when unreadable)."""
    end = frame.find(b"\n", 0, OUTPUT_HEADER_MAX)
    if end == -1:
        return None
    try:
        header = _loads_trusted(frame[:end])
    except ParseError:
        return None
    item = _parse_server_item(header)
    if not isinstance(item, Notification):
        return None
    item.params["data"] = str(memoryview(frame)[end + 1 :], "utf-8", "replace")
    return item


def parse_server_message(
    text: str | bytes,
) -> list[Response | ErrorResponse | Notification]:
    """Parse one frame from the server; unreadable items are dropped."""
    value = _loads_trusted(text)
    items = value if isinstance(value, list) else [value]
    parsed = (_parse_server_item(item) for item in items)
    return [item for item in parsed if item is not None]


# -- Params of the methods ------------------------------------------------------------


@dataclass(frozen=True)
class ExecuteParams:
    """Validated params of ``execute``."""

    argv: list[str]
    cwd: str | None = None
    env: dict[str, str] | None = None
    timeout: float | None = None
    heartbeat_interval: float | None = None
    inactivity_threshold: float | None = None
    kill_grace: float | None = None
    progress_target: Target | Any | None = FROM_ARGUMENTS
    """What output counts toward: a Target, None (count nothing), or FROM_ARGUMENTS."""
    stdin: str = "null"
    """"null": the child reads /dev/null; "pipe": the client writes with ``input``."""
    capture: str | None = None
    """"file" or "pipe"; None: the server's default ("file")."""
    stdin_idle_timeout: float | None = None
    """A durable job's stdin closes after this many seconds without input while no
    connection follows the job (None: never)."""
    input: bytes | None = None
    """Written to the child's stdin (``stdin`` "pipe") by the server once it started, which
    then closes it: as an ``input`` and an ``input.close`` that cannot be lost with the client."""
    server_python: bool = False
    """``argv[0]`` was replaced by the server's own interpreter (``server_python``): argv is
    one of this package's wrappers (:data:`SERVER_PYTHON_MODULES`)."""


@dataclass(frozen=True)
class InputParams:
    """Validated params of ``input``: the text to write to the child's stdin."""

    data: bytes
    ok_exit_codes: frozenset[int] | None = None
    """Exit codes that end a durable job ``completed`` once its input was closed (None: as
    before); an ``input`` that carries them replaces what the last one set."""
    turn: bool = False
    """The text begins a turn (a user message): a job with ``summary_ends_turn`` holds it while
    a turn is under way and writes it when that turn ends."""


@dataclass(frozen=True)
class ResumeParams:
    """Validated params of ``resume``."""

    session_id: str
    resume_token: str
    last_seq: int


@dataclass(frozen=True)
class ControlParams:
    """Validated params of ``control``."""

    type: str


def _params_object(params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidParams("params must be an object", "params")
    return params


_ANSI_C = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def command_line(argv: list[str]) -> str:
    """``argv`` as one line of shell words, for people to read (labels, ``[started]``).

    Words are quoted as ``shlex.join`` does, except a word with a control character:
    that one is written in bash's ANSI-C quoting (``$'%s\\n'``), so a label never
    breaks its line and never carries a terminal escape (argv may hold untrusted text,
    e.g. a batch item). Display only: ``shlex.split`` does not read ``$'...'`` back.
    """
    return " ".join(_ansi_c(word) if _CONTROL.search(word) else shlex.quote(word) for word in argv)


def one_line(text: str, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters, for people to read.

    Whitespace runs become one space, other control characters are dropped (untrusted
    text's escape sequences lose their ESC) and a cut ends in "…".
    """
    line = _CONTROL.sub("", " ".join(text.split()))
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _ansi_c(word: str) -> str:
    def escape(char: str) -> str:
        if char in _ANSI_C:
            return _ANSI_C[char]
        if not _CONTROL.match(char):
            return char
        return f"\\x{ord(char):02x}" if ord(char) < 0x80 else f"\\u{ord(char):04x}"

    return "$'" + "".join(escape(char) for char in word) + "'"


def _no_nul(value: str, field_name: str) -> str:
    """A string that can reach exec: no NUL, and valid Unicode (no lone surrogate)."""
    if "\x00" in value:
        raise InvalidParams(f"{field_name} contains a NUL character", field_name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParams(f"{field_name} contains a lone surrogate (not valid Unicode)", field_name) from None
    return value


def _argv_from(params: dict[str, Any]) -> list[str]:
    has_command, has_argv = "command" in params, "argv" in params
    if has_command == has_argv:
        raise InvalidParams("give exactly one of command or argv", "command")
    if has_command:
        command = params["command"]
        if not isinstance(command, str):
            raise InvalidParams("command must be a string", "command")
        try:
            argv = shellwords.split(_no_nul(command, "command"))
        except ValueError as exc:
            raise InvalidParams(f"command cannot be split: {exc}", "command") from None
        if not argv:
            raise InvalidParams("command is empty", "command")
        return argv
    argv = params["argv"]
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise InvalidParams("argv must be an array of strings", "argv")
    if not argv or not argv[0]:
        raise InvalidParams("argv must not be empty", "argv")
    return [_no_nul(arg, "argv") for arg in argv]


def _optional_seconds(
    params: dict[str, Any], name: str, minimum: float = 0.0, maximum: float | None = None
) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParams(f"{name} must be a number of seconds or null", name)
    if not math.isfinite(value) or value < 0:
        raise InvalidParams(f"{name} must not be negative", name)
    if value < minimum:
        raise InvalidParams(f"{name} must be at least {minimum} s", name)
    if maximum is not None and value > maximum:
        raise InvalidParams(f"{name} must be at most {maximum:.10g} s ({_readable(maximum)})", name)
    # -0.0 (also what -1e-400 parses to) is zero, not a negative: it is read as 0.0, so
    # nothing downstream carries or prints a "-0".
    return float(value) + 0.0


def _readable(seconds: float) -> str:
    """A bound in words: ``30 days``, ``1 hour``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


def _timeout(params: dict[str, Any]) -> float | None:
    """``timeout``: a positive number of seconds, or null/absent for no limit.

    0 is refused rather than read: on the wire it would end the run at once, while the
    magic's and the terminal client's ``--timeout 0`` means no limit (they omit it).
    """
    value = _optional_seconds(params, "timeout", maximum=MAX_TIMEOUT)
    if value is not None and value <= 0:
        raise InvalidParams("timeout must be a positive number of seconds; omit it for no limit", "timeout")
    return value


def _optional_str(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidParams(f"{name} must be a string", name)
    return None if value is None else _no_nul(value, name)


def _cwd(params: dict[str, Any]) -> str | None:
    """``cwd``: absent or null for the server's own; "" is no directory (the spawn failed on it)."""
    cwd = _optional_str(params, "cwd")
    if cwd == "":
        raise InvalidParams("cwd is empty: give a directory or leave it out", "cwd")
    return cwd


def _optional_env(params: dict[str, Any]) -> dict[str, str] | None:
    env = params.get("env")
    if env is None:
        return None
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise InvalidParams("env must be an object of string to string", "env")
    for key, value in env.items():
        if not key or "=" in key:
            raise InvalidParams(f"env name {key!r} is not valid", "env")
        _no_nul(key, "env")
        _no_nul(value, "env")
    return dict(env)


def validate_execute(params: Any, min_interval: float = MIN_INTERVAL, *, python: str | None = None) -> ExecuteParams:
    """Validate ``execute`` params; raise InvalidParams naming the field. ``python`` is the
    server's own interpreter (default: this one), which ``server_python`` puts in ``argv[0]``."""
    obj = _params_object(params)
    _job_only(obj, "stdin_close_on_summary")
    _job_only(obj, "summary_ends_turn")
    argv, own = _server_python(obj, _argv_from(obj), python or sys.executable)
    return ExecuteParams(
        argv=argv,
        cwd=_cwd(obj),
        env=_optional_env(obj),
        timeout=_timeout(obj),
        heartbeat_interval=_optional_seconds(obj, "heartbeat_interval", min_interval, MAX_HEARTBEAT_INTERVAL),
        inactivity_threshold=_optional_seconds(obj, "inactivity_threshold", min_interval, MAX_TIMEOUT),
        kill_grace=_optional_seconds(obj, "kill_grace", maximum=MAX_KILL_GRACE),
        progress_target=_progress_target(obj),
        stdin=_stdin_mode(obj),
        capture=_capture_mode(obj),
        stdin_idle_timeout=_stdin_idle_timeout(obj),
        input=_execute_input(obj),
        server_python=own,
    )


SERVER_PYTHON_MODULES = ("cc_executor_nb.claude.autoresume", "cc_executor_nb.demo.runner")
"""The package's wrappers a client may ask the server to run with its own interpreter."""


def _server_python(params: dict[str, Any], argv: list[str], python: str) -> tuple[list[str], bool]:
    """``argv`` with the server's interpreter in ``argv[0]`` when ``server_python`` asks for it:
    the client cannot know which ``python3`` of the server has this package (a server in a
    venv runs the venv's). Only for the package's wrappers, ``ANY -m MODULE ...``."""
    if not _flag(params, "server_python"):
        return argv, False
    if len(argv) < 3 or argv[1] != "-m" or argv[2] not in SERVER_PYTHON_MODULES:
        raise InvalidParams(
            f"server_python runs this package's wrappers only: argv must be PYTHON -m "
            f"{' | '.join(SERVER_PYTHON_MODULES)} ...", "server_python",
        )
    return [python, *argv[1:]], True


def _job_only(params: dict[str, Any], name: str) -> None:
    """Refuse a durable-only action asked of an ordinary run: ignored, it would silently not
    happen (a ``label`` or ``summary`` there only describes, so they are not checked)."""
    if params.get(name) not in (None, False) and not wants_job(params):
        raise InvalidParams(f"{name} applies to durable jobs (durable: true)", name)


def _execute_input(params: dict[str, Any]) -> bytes | None:
    """``input`` of ``execute``: absent, or text for a run with stdin "pipe"."""
    if params.get("input") is None:
        return None
    if params.get("stdin") != "pipe":
        raise InvalidParams('input needs stdin "pipe"', "input")
    return _utf8_text(params["input"], "input", MAX_EXECUTE_INPUT_BYTES, "at most {0} in execute")


def _stdin_idle_timeout(params: dict[str, Any]) -> float | None:
    value = _optional_seconds(params, "stdin_idle_timeout", MIN_INTERVAL, MAX_TIMEOUT)
    if value is None:
        return None
    if params.get("stdin") != "pipe":
        raise InvalidParams('stdin_idle_timeout needs stdin "pipe"', "stdin_idle_timeout")
    _job_only(params, "stdin_idle_timeout")
    return value


def _capture_mode(params: dict[str, Any]) -> str | None:
    value = params.get("capture")
    if value is not None and value not in CAPTURE_MODES:
        raise InvalidParams('capture must be "file", "pipe" or null', "capture")
    return None if value is None else str(value)


def _stdin_mode(params: dict[str, Any]) -> str:
    value = params.get("stdin", "null")
    if value not in STDIN_MODES:
        raise InvalidParams('stdin must be "null" or "pipe"', "stdin")
    return str(value)


def validate_input(params: Any, max_bytes: int = MAX_INPUT_BYTES) -> InputParams:
    """Validate ``input`` params; the text must be valid Unicode and at most ``max_bytes``."""
    obj = _params_object(params)
    encoded = _utf8_text(obj.get("data"), "data", max_bytes, "at most {0} per input")
    return InputParams(encoded, _ok_exit_codes(obj.get("ok_exit_codes")), _turn(obj, encoded))


def validate_input_close(params: Any) -> bool:
    """Validate ``input.close`` params (other members, and params that are no object, are ignored,
    as they always were): whether it closes after the turn under way (``after_turn``)."""
    return _flag(params, "after_turn") if isinstance(params, dict) else False


def _turn(params: dict[str, Any], data: bytes) -> bool:
    """``turn`` of ``input``: a boolean or null, true only for whole lines (the turn's message)."""
    if not _flag(params, "turn"):
        return False
    if not data.endswith(b"\n"):
        raise InvalidParams("turn needs data that ends with a newline (the whole message that begins the turn)",
                            "turn")
    return True


def _utf8_text(value: Any, name: str, max_bytes: int, bound: str) -> bytes:
    """``value`` as UTF-8: a string of valid Unicode of at most ``max_bytes``; InvalidParams naming ``name``."""
    if not isinstance(value, str):
        raise InvalidParams(f"{name} must be a string", name)
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParams(f"{name} contains a lone surrogate (not valid Unicode)", name) from None
    if len(encoded) > max_bytes:
        raise InvalidParams(f"{name} is {len(encoded)} bytes; {bound.format(max_bytes)}", name)
    return encoded


def _ok_exit_codes(value: Any) -> frozenset[int] | None:
    """``ok_exit_codes`` of ``input``: absent (None), or a list of at most 8 exit codes."""
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) > 8
            or not all(isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 255 for code in value)):
        raise InvalidParams("ok_exit_codes must be a list of at most 8 exit codes (0-255)", "ok_exit_codes")
    return frozenset(value)


def _progress_target(params: dict[str, Any]) -> Target | Any | None:
    if "progress_target" not in params:
        return FROM_ARGUMENTS
    value = params["progress_target"]
    if value is None:
        return None
    try:
        return target_from_wire(value)
    except ValueError as exc:
        raise InvalidParams(f"progress_target {exc}", "progress_target") from None


def validate_control(params: Any) -> ControlParams:
    """Validate ``control`` params; raise InvalidParams naming the field."""
    obj = _params_object(params)
    kind = obj.get("type")
    if not isinstance(kind, str) or kind.upper() not in CONTROL_TYPES:
        raise InvalidParams("type must be PAUSE, RESUME or CANCEL", "type")
    return ControlParams(kind.upper())


def validate_resume(params: Any) -> ResumeParams:
    """Validate ``resume`` params; raise InvalidParams naming the field."""
    obj = _params_object(params)
    for name in ("session_id", "resume_token"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise InvalidParams(f"{name} must be a non-empty string", name)
    last_seq = obj.get("last_seq")
    if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
        raise InvalidParams("last_seq must be a non-negative integer", "last_seq")
    session_id = _no_nul(obj["session_id"], "session_id")
    return ResumeParams(session_id, _no_nul(obj["resume_token"], "resume_token"), last_seq)


def validate_ack(params: Any) -> int:
    """Validate ``ack`` params; return the acknowledged seq (InvalidParams names the field)."""
    seq = _params_object(params).get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise InvalidParams("seq must be a non-negative integer", "seq")
    return seq


# -- Durable jobs (added) ---------------------------------------------------------------

MAX_LABEL_CHARS = 1000
MAX_META_BYTES = 16 << 10
MAX_SUMMARY_MATCH = 8
MAX_SUMMARY_FIELDS = 32
MAX_FIELD_NAME_CHARS = 64
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class SummarySpec:
    """What a job keeps from its output: fields of the last matching JSON line.

    A stdout line that is a JSON object whose members equal every entry of ``match``
    replaces the job's summary with its members named in ``fields`` (the server knows
    nothing of what they mean; Claude clients ask for the cost of a ``result`` line).
    """

    match: dict[str, Any]
    fields: tuple[str, ...]


@dataclass(frozen=True)
class JobRequest:
    """The durable part of ``execute`` (``durable: true``): what the job records."""

    label: str | None = None
    """Shown in ``jobs.list``; None: the command line."""
    meta: dict[str, Any] = field(default_factory=dict)
    """The client's own notes (an object of at most 16 KiB), returned as given."""
    summary: SummarySpec | None = None
    stdin_close_on_summary: bool = False
    """*(added)* Close the job's stdin once a stdout line matches ``summary`` (a Claude job's
    first result: a conversation that takes no follow-up ends without its client)."""
    summary_ends_turn: bool = False
    """*(added)* A stdout line matching ``summary`` ends a turn and an ``input`` begins the
    next: a ``timeout`` that passes between turns ends the job ``completed`` (nothing was cut)."""


@dataclass(frozen=True)
class JobAttachParams:
    """Validated params of ``jobs.attach``."""

    job_id: str
    last_seq: int = 0


def wants_job(params: Any) -> bool:
    """Whether ``execute`` params ask for a durable job (``durable`` present and not false)."""
    return isinstance(params, dict) and params.get("durable", False) not in (False, None)


def validate_job_request(params: Any) -> JobRequest:
    """Validate the durable fields of ``execute``: ``durable``, ``label``, ``meta``, ``summary``."""
    obj = _params_object(params)
    if obj.get("durable") is not True:
        raise InvalidParams("durable must be true or false", "durable")
    label = _optional_str(obj, "label")
    if label is not None and len(label) > MAX_LABEL_CHARS:
        raise InvalidParams(f"label is longer than {MAX_LABEL_CHARS} characters", "label")
    summary = _summary_spec(obj.get("summary"))
    return JobRequest(label, _job_meta(obj), summary, _stdin_close_on_summary(obj, summary),
                      _summary_ends_turn(obj, summary))


def _flag(params: dict[str, Any], name: str) -> bool:
    """An optional boolean member: true, or false when false, null or absent (InvalidParams names it
    when it is anything else)."""
    value = params.get(name)
    if value is None or value is False:
        return False
    if value is not True:
        raise InvalidParams(f"{name} must be a boolean or null", name)
    return True


def _summary_ends_turn(params: dict[str, Any], summary: SummarySpec | None) -> bool:
    if not _flag(params, "summary_ends_turn"):
        return False
    if summary is None:
        raise InvalidParams("summary_ends_turn needs a summary (its match ends a turn)", "summary_ends_turn")
    return True


def _stdin_close_on_summary(params: dict[str, Any], summary: SummarySpec | None) -> bool:
    if not _flag(params, "stdin_close_on_summary"):
        return False
    if params.get("stdin") != "pipe":
        raise InvalidParams('stdin_close_on_summary needs stdin "pipe"', "stdin_close_on_summary")
    if summary is None:
        raise InvalidParams("stdin_close_on_summary needs a summary (its match says when)", "stdin_close_on_summary")
    return True


def _job_meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("meta")
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InvalidParams("meta must be an object", "meta")
    try:
        size = len(dumps(meta).encode("utf-8"))
    except UnicodeEncodeError:
        # It would be returned as given (jobs.list, the job's record): refused, not mangled.
        raise InvalidParams("meta must be valid Unicode (no lone surrogate)", "meta") from None
    if size > MAX_META_BYTES:
        raise InvalidParams(f"meta is larger than {MAX_META_BYTES} bytes", "meta")
    return dict(meta)


def _summary_spec(value: Any) -> SummarySpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidParams("summary must be an object or null", "summary")
    match, fields = value.get("match"), value.get("fields")
    if not isinstance(match, dict) or not 0 < len(match) <= MAX_SUMMARY_MATCH:
        raise InvalidParams(f"summary.match must be an object of 1 to {MAX_SUMMARY_MATCH} members", "summary")
    if not all(isinstance(v, _SCALARS) for v in match.values()):
        raise InvalidParams("summary.match values must be strings, numbers, booleans or null", "summary")
    if not isinstance(fields, list) or not 0 < len(fields) <= MAX_SUMMARY_FIELDS:
        raise InvalidParams(f"summary.fields must be an array of 1 to {MAX_SUMMARY_FIELDS} names", "summary")
    if not all(isinstance(f, str) and 0 < len(f) <= MAX_FIELD_NAME_CHARS for f in fields):
        raise InvalidParams(f"summary.fields must be names of 1 to {MAX_FIELD_NAME_CHARS} characters", "summary")
    # They are kept in the job's record and echoed by jobs.list: refused, not mangled (as meta).
    texts = [*match, *(v for v in match.values() if isinstance(v, str)), *fields]
    if not all(_valid_unicode(text) for text in texts):
        raise InvalidParams("summary must be valid Unicode (no lone surrogate)", "summary")
    return SummarySpec(dict(match), tuple(fields))


def validate_jobs_list(params: Any) -> bool:
    """Validate ``jobs.list`` params; return whether the removed jobs are asked for too
    (``removed: true``; other members are ignored, an array is refused)."""
    removed = _params_object(params).get("removed")
    if removed is None:  # null means the default (false), as for every optional member
        return False
    if not isinstance(removed, bool):
        raise InvalidParams("removed must be a boolean or null", "removed")
    return removed


def validate_job_attach(params: Any) -> JobAttachParams:
    """Validate ``jobs.attach`` params; raise InvalidParams naming the field."""
    obj = _params_object(params)
    job_id = obj.get("job_id")
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise InvalidParams("job_id must be a job id (8 to 64 letters, digits, - or _)", "job_id")
    last_seq = obj.get("last_seq")
    if last_seq is None:  # null means the default (0: the whole log), as for every optional member
        last_seq = 0
    if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
        raise InvalidParams("last_seq must be a non-negative integer", "last_seq")
    return JobAttachParams(job_id, last_seq)
