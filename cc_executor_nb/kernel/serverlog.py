"""Where the in-kernel server's log lines go: the kernel process's own stderr.

The server logs under the ``cc_executor_nb`` logger and configures no handler. With
no handler anywhere, :mod:`logging` writes a WARNING to ``sys.stderr``, which in a
kernel is ipykernel's stream to whichever cell runs at that moment: a server line
would appear in an unrelated cell and be saved in the notebook. The run's client
already hears what matters through ``process.notice``; the log line belongs where the
Jupyter server's own logs go, the terminal or log file of the kernel process.

:func:`attach` gives the ``cc_executor_nb`` logger a handler writing to that stderr,
unless the user configured logging themselves (a handler on the logger or its
ancestors, root included); configured later, the handler leaves each record to that
configuration; :func:`detach` removes it. The level is left alone:
WARNING and up by default, more with
``logging.getLogger("cc_executor_nb").setLevel(logging.INFO)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

__all__ = ["LOGGER_NAME", "ProcessStderrHandler", "attach", "detach", "process_stderr_fd"]

LOGGER_NAME = "cc_executor_nb"
FORMAT = "[%(levelname).1s %(asctime)s %(name)s] %(message)s"
DATE_FORMAT = "%H:%M:%S"


def process_stderr_fd() -> int | None:
    """The file descriptor of the process's own stderr, past ipykernel's capture.

    ipykernel (``capture_fd_output``) points fd 2 at a pipe whose text goes to the
    running cell; its ``sys.stderr.fileno()`` is then the copy it kept of the original
    fd 2. Where ``sys.stderr`` has no file descriptor (a kernel that does not capture
    fd 2), ``sys.__stderr__`` is the original. None: the process has no stderr.
    """
    for stream in (sys.stderr, sys.__stderr__):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            return int(stream.fileno())  # type: ignore[union-attr]
    return None


class ProcessStderrHandler(logging.Handler):
    """Writes each record as one line to its own duplicate of a file descriptor."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = os.dup(fd)  # ours: whoever owns ``fd`` may close it first
        self.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if _handled_elsewhere(record.name, self):
            return  # logging configured since the start (logging.basicConfig()): it is left to that
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        # A stderr nobody reads any more (the Jupyter server or terminal that started the
        # kernel went away) loses the line, as it loses any other: logging's report of the
        # failure would go to sys.stderr, in a kernel the running cell.
        with contextlib.suppress(OSError):
            os.write(self.fd, line.encode("utf-8", "backslashreplace"))

    def close(self) -> None:
        self.acquire()  # not while a record is being written
        try:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        finally:
            self.release()
        super().close()


def _handled_elsewhere(name: str, mine: logging.Handler) -> bool:
    """Whether a record of logger ``name`` reaches a handler other than ``mine``."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        if any(handler is not mine for handler in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False


def attach() -> ProcessStderrHandler | None:
    """Give the ``cc_executor_nb`` logger a handler to the process's stderr, unless
    logging is configured for it already or there is no stderr. Returns the handler."""
    logger = logging.getLogger(LOGGER_NAME)
    fd = process_stderr_fd()
    if logger.hasHandlers() or fd is None:
        return None
    try:
        handler = ProcessStderrHandler(fd)
    except OSError:  # a closed stderr: the logging default stays
        return None
    logger.addHandler(handler)
    return handler


def detach(handler: logging.Handler | None) -> None:
    """Remove and close a handler :func:`attach` returned (None: nothing to do)."""
    if handler is not None:
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
        handler.close()
