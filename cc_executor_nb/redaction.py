"""Secrets out of the logs: a filter on every logger of ours and of websockets.

Both ends use it: the server for its token and what clients send, a client for the token
it sends (websockets logs every header and frame at DEBUG level).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Collection

__all__ = ["SecretRedactor", "hold_secret", "install_redactor", "keep_out_of_logs", "release_secret"]

_AUTH_HEADER = re.compile(
    r"(?im)^([<>] (?:(?:proxy-)?authorization|cookie|set-cookie|[\w-]*(?:token|secret|api-key)[\w-]*))(: ).*$"
)
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic|digest)(\s+)[^\s,;]+")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:access_token|token|auth|key|api_key|apikey|password)=)[^&\s#]*")
_REDACTED = "[redacted]"
_FORMATTER = logging.Formatter()
# websockets' DEBUG line for a data frame: "< TEXT '{...}' [172 bytes]". The payload is
# requests (an execute's env: API keys) and output (whatever a child printed).
_FRAME_PAYLOAD = re.compile(r"(?s)^([<>] (?:TEXT|BINARY|CONT)) .*( \[[^\]]*\])$")


class SecretRedactor(logging.Filter):
    """Blank out credentials in log records, whatever form a client sent them in.

    websockets logs every request line and header at DEBUG level: the value of any
    ``Authorization``, ``Cookie`` or token-like header is replaced, as are
    ``Bearer``/``Basic``/``Token`` credentials, ``token=``-style query parameters and
    every known secret (the server token) wherever it appears. Its lines for data frames
    keep their kind and size but not their payload (an ``execute``'s ``env`` carries API
    keys; output is whatever a child printed).
    """

    def __init__(self, secrets_: Collection[str] = ()) -> None:
        super().__init__()
        self.secrets = {value for value in secrets_ if value}

    def filter(self, record: logging.LogRecord) -> bool:
        _fold_refusal(record)
        message = record.getMessage()
        cleaned = self.redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        self._redact_traceback(record)
        return True

    def _redact_traceback(self, record: logging.LogRecord) -> None:
        """Redact the exception text a handler would print (websockets' "! no valid HTTP
        request" traceback quotes a malformed header line, credentials and all).

        Formatters use ``record.exc_text`` when it is set, so it is filled here, redacted.
        """
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)

    def redact(self, text: str) -> str:
        """``text`` with every credential replaced by ``[redacted]``.

        Any thread may log while a server starts or stops on another: ``secrets`` is replaced
        then, never changed in place, so a scan goes through the set it began with."""
        for value in self.secrets:
            text = text.replace(value, _REDACTED)
        text = _FRAME_PAYLOAD.sub(rf"\1 {_REDACTED}\2", text)
        text = _AUTH_HEADER.sub(rf"\1\2{_REDACTED}", text)
        text = _CREDENTIAL.sub(rf"\1\2{_REDACTED}", text)
        return _QUERY_SECRET.sub(rf"\1{_REDACTED}", text)


_REFUSALS = ("! invalid ", "! no valid HTTP request", "! request line too long", "! header fields too large")
"""How websockets' DEBUG lines for a request it refuses begin (each with a traceback)."""


def _fold_refusal(record: logging.LogRecord) -> None:
    """One line for a handshake websockets refuses: "! invalid protocol: InvalidMessage:
    unsupported HTTP version: HTTP/1.0" instead of the line and a traceback (a client's bad request, such
    as HTTP/1.0 or a plain GET, is no fault of the server's)."""
    if record.name != "websockets.server" or not record.exc_info or not isinstance(record.msg, str):
        return
    if not record.msg.startswith(_REFUSALS):
        return
    error = record.exc_info[1]
    record.msg, record.args = f"{record.getMessage()}: {type(error).__name__}: {error}", ()
    record.exc_info, record.exc_text = None, None


_LOGGER_PREFIXES = ("cc_executor_nb", "websockets")


def install_redactor(secret: str | None) -> None:
    """Put one redactor on every logger of ours and of websockets (filters do not inherit)."""
    names = {name for name in logging.Logger.manager.loggerDict if name.startswith(_LOGGER_PREFIXES)}
    names |= {"cc_executor_nb", "cc_executor_nb.server", "websockets.server", "websockets.client"}
    for name in names:
        target = logging.getLogger(name)
        redactor = next((f for f in target.filters if isinstance(f, SecretRedactor)), None)
        if redactor is None:
            redactor = SecretRedactor()
            target.addFilter(redactor)
        if secret:
            # A new set, never the one a scan on another thread may be going through (see redact).
            redactor.secrets = redactor.secrets | {secret}


_KEPT_OUT: set[str] = set()
"""The secrets :func:`keep_out_of_logs` has installed (a client dials often: the loggers
are walked once per secret, not per dial)."""


def keep_out_of_logs(secret: str | None) -> None:
    """:func:`install_redactor`, once per secret."""
    key = secret or ""
    if key not in _KEPT_OUT:
        install_redactor(secret)
        _KEPT_OUT.add(key)


_HELD: Counter[str] = Counter()
"""How many live servers of this process use each secret (:func:`hold_secret`)."""


def hold_secret(secret: str | None) -> None:
    """:func:`install_redactor` for a server's token, until :func:`release_secret`."""
    install_redactor(secret)
    if secret:
        _HELD[secret] += 1


def release_secret(secret: str | None) -> None:
    """A server stopped: its token is forgotten once no other server of this process uses
    it, so that a kernel's ``%reload_ext`` after ``%reload_ext`` does not leave every log
    record to scan for one more dead token. Credentials in headers stay redacted by their
    form, whatever the secret."""
    if not secret or not _HELD[secret]:
        return
    _HELD[secret] -= 1
    if not _HELD[secret]:
        del _HELD[secret]
        _forget(secret)


def _forget(secret: str) -> None:
    _KEPT_OUT.discard(secret)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            for found in logger.filters:
                if isinstance(found, SecretRedactor):
                    found.secrets = found.secrets - {secret}  # a new set, as install_redactor makes
