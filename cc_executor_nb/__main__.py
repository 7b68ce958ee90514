"""``python -m cc_executor_nb``: the terminal client, and the ``ccexec`` script's entry."""

from __future__ import annotations

import sys

from .interrupts import sigint_held

__all__ = ["entry"]


def entry(prog: str | None = None) -> int:
    """Run the terminal client (:func:`cc_executor_nb.cli.main`) with ``sys.argv``.

    The client's modules take a quarter of a second and more to load: a Ctrl-C then ends as
    one before the run started does (exit 130, one line), not with a traceback. The Ctrl-C
    is held until they are loaded: a ``KeyboardInterrupt`` raised inside an extension
    module's initialisation can crash the interpreter (orjson's did, with SIGSEGV)."""
    pending: list[int] = []
    try:
        with sigint_held(pending):
            from .cli import main
    except KeyboardInterrupt:  # held only in the main thread, with Python's own handler
        return _interrupted_while_loading()
    if pending:
        return _interrupted_while_loading()
    return main(prog=prog)


def _interrupted_while_loading() -> int:
    # The line cli._interrupted gives before the run started; cli itself is what was being
    # loaded, so it is spelled here (tests/test_terminal.py holds the two to the same text).
    start = "\n" if _is_terminal() else ""  # after the ^C a terminal echoes
    print(f"{start}[cancelled] by Ctrl-C before the run started", file=sys.stderr)
    return 130


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed, or no file at all
        return False


if __name__ == "__main__":
    sys.exit(entry(prog="python -m cc_executor_nb"))
