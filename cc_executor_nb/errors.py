"""The exception tree of cc_executor_nb, mapped to JSON-RPC error codes in one table.

::

    CCExecError                      base of everything raised on purpose
    ├── ProtocolError                a JSON-RPC error with a code (server and client)
    │   ├── ParseError               -32700 not JSON, too deep, huge numbers
    │   ├── InvalidRequest           -32600 JSON but not a request object
    │   ├── MethodNotFound           -32601 unknown method
    │   ├── InvalidParams            -32602 bad params; ``data["field"]`` names the field
    │   ├── InternalError            -32603 unexpected server fault
    │   ├── LimitReached             -32000 sessions or running processes at their limit
    │   ├── CommandNotAllowed        -32001 argv[0] not on the allow-list
    │   ├── NoProcessRunning         -32002 control on an idle session
    │   ├── OutputGap                -32003 resume asked for output no longer buffered
    │   ├── SpawnFailed              -32004 the process could not be started
    │   ├── AlreadyRunning           -32005 a process already runs in this session
    │   ├── UnknownSession           -32006 unknown session or bad resume token
    │   └── UnknownJob               -32007 no durable job with this id (added)
    ├── ConnectionLost               the client's connection closed; pending calls fail
    ├── HandshakeRefused             the server answered the handshake with an HTTP error
    ├── ServerUnresponsive           a control the server did not answer in time (added; a TimeoutError)
    └── UntrustedRuntimeFile         the job server's runtime file is not trusted (added)

This module is pure: no asyncio, no websockets.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyRunning",
    "CCExecError",
    "CommandNotAllowed",
    "ConnectionLost",
    "HandshakeRefused",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "LimitReached",
    "MethodNotFound",
    "NoProcessRunning",
    "OutputGap",
    "ParseError",
    "ProtocolError",
    "ServerUnresponsive",
    "SpawnFailed",
    "UnknownJob",
    "UnknownSession",
    "UntrustedRuntimeFile",
    "error_class_for",
]


class CCExecError(Exception):
    """Base class of every error cc_executor_nb raises on purpose."""


class ProtocolError(CCExecError):
    """An error that travels as a JSON-RPC error object."""

    code: ClassVar[int] = -32603
    default_message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, data: Any = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.data = data

    def to_error_object(self) -> dict[str, Any]:
        """Return the JSON-RPC ``error`` member for this error."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(ProtocolError):
    """The text is not acceptable JSON."""

    code = -32700
    default_message = "Parse error"


class InvalidRequest(ProtocolError):
    """The JSON is not a valid JSON-RPC 2.0 request object."""

    code = -32600
    default_message = "Invalid Request"


class MethodNotFound(ProtocolError):
    """The method does not exist."""

    code = -32601
    default_message = "Method not found"


class InvalidParams(ProtocolError):
    """The params are wrong; ``data`` names the offending field."""

    code = -32602
    default_message = "Invalid params"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message, {"field": field})


class InternalError(ProtocolError):
    """An unexpected fault of the server; details stay in the server log."""

    code = -32603
    default_message = "Internal error"


class LimitReached(ProtocolError):
    """A configured limit (sessions, running processes) was reached."""

    code = -32000
    default_message = "Limit reached"


class CommandNotAllowed(ProtocolError):
    """argv[0] is not on the server's allow-list."""

    code = -32001
    default_message = "Command not allowed"


class NoProcessRunning(ProtocolError):
    """A control request arrived while the session runs nothing."""

    code = -32002
    default_message = "No process is running"


class OutputGap(ProtocolError):
    """Resume asked for notifications that are no longer buffered."""

    code = -32003
    default_message = "Output gap: requested notifications are no longer buffered"


class SpawnFailed(ProtocolError):
    """The process could not be started; ``data`` has errno and strerror."""

    code = -32004
    default_message = "The process could not be started"


class AlreadyRunning(ProtocolError):
    """The session already runs a process."""

    code = -32005
    default_message = "A process is already running in this session"


class UnknownSession(ProtocolError):
    """Resume named an unknown session or a wrong resume token."""

    code = -32006
    default_message = "Unknown session or bad resume token"


class UnknownJob(ProtocolError):
    """``jobs.attach`` named a job the server does not have (never, or no longer)."""

    code = -32007
    default_message = "Unknown job"


class ConnectionLost(CCExecError):
    """The connection to the server closed; pending requests fail with this."""


class HandshakeRefused(CCExecError):
    """The server answered the WebSocket handshake with an HTTP error (401: no or a wrong token).

    ``status`` is the HTTP status and ``reason`` the first line of the server's answer
    (control characters removed; the server never echoes a token).
    """

    def __init__(self, url: str, status: int, reason: str) -> None:
        self.url, self.status, self.reason = url, status, reason
        super().__init__(f"{url} {self.refusal}")

    @property
    def refusal(self) -> str:
        """The refusal without the URL (``refused the connection: HTTP 401 (...)``), for a
        message that names the URL already."""
        return f"refused the connection: HTTP {self.status}" + (f" ({self.reason})" if self.reason else "")


class ServerUnresponsive(CCExecError, TimeoutError):
    """A ``cancel()``, ``pause()`` or ``resume()`` the server did not answer within its timeout
    (a frozen or unreachable server): the request is not withdrawn. The message names the
    server and what follows. A TimeoutError too, as it was before it had a class of its own."""


class UntrustedRuntimeFile(CCExecError):
    """The job server's runtime file exists but is not trusted (a symbolic link, another
    user's, or writable by group or others) and is not a stale one of ours that could be
    removed: the message names the file, why, and what to do."""


_BY_CODE: dict[int, type[ProtocolError]] = {
    cls.code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InternalError,
        LimitReached,
        CommandNotAllowed,
        NoProcessRunning,
        OutputGap,
        SpawnFailed,
        AlreadyRunning,
        UnknownSession,
        UnknownJob,
    )
}


def error_class_for(code: int) -> type[ProtocolError]:
    """Return the exception class for a JSON-RPC error code (ProtocolError if unknown)."""
    if code == InvalidParams.code:
        return InvalidParams
    return _BY_CODE.get(code, ProtocolError)
