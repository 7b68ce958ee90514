"""A claude CLI too old for an option it was given, told from its refusal.

The CLI reads its command line before anything else: one that does not know an option
prints ``error: unknown option '--include-partial-messages'`` on stderr (the first option
it does not know), no stream-json, and exits 1. Left as it is, the run read "exited with
code 1". :func:`too_old_for` turns that refusal, for an option cc_executor_nb put on the
command line, into what it means and what to do. An option the user added (``--claude-arg``)
keeps the CLI's own words: a typo is no version problem.

Seen: 1.0.108 and older lack ``--include-partial-messages`` (every run passes it; 1.0.109
is the first to know it), 0.2.x also ``--input-format`` (host mode), 1.0.x
``--max-budget-usd``; 1.0.109, 1.0.128 and 2.0.77 run everything else.
"""

from __future__ import annotations

import re

from .control import HOST_ARGS
from .options import STREAM_ARGS

__all__ = ["OPTION_FLAGS", "too_old_for"]

OPTION_FLAGS = (
    "--model", "--resume", "--continue", "--allowed-tools", "--permission-mode", "--max-turns",
    "--append-system-prompt", "--max-budget-usd",
)  # fmt: skip
"""The flags a run's options (``model=``, ``--max-budget-usd``...) may add to the command line."""

UPDATE = "update it: `npm install -g @anthropic-ai/claude-code` (or `npm ci` in the cc_executor_nb project)"
"""What to do about a CLI too old for cc_executor_nb."""

_UNKNOWN_OPTION = re.compile(r"^error: unknown option '(--[A-Za-z0-9-]+)(?:=[^']*)?'", re.MULTILINE)
_EVERY_RUN = frozenset(arg for arg in STREAM_ARGS if arg.startswith("--")) | {"--input-format"}
"""Options a CLI without which cc_executor_nb cannot run Claude at all: those of every run, and
``--input-format``, which only CLIs that also lack ``--include-partial-messages`` refuse (0.2.x),
so the one-shot mode is no way out for them."""
_HOST_ONLY = frozenset(arg for arg in HOST_ARGS if arg.startswith("--")) - set(STREAM_ARGS) - _EVERY_RUN


def too_old_for(stderr: str) -> str | None:
    """Why the CLI refused its command line, in words that say what to do; None when its
    ``stderr`` holds no refusal of an option cc_executor_nb passes."""
    match = _UNKNOWN_OPTION.search(stderr)
    option = match.group(1) if match else None
    if option in _EVERY_RUN:
        return (f"this claude CLI is too old for cc_executor_nb: it does not know {option}, which every "
                f"Claude run passes (1.0.109 and later know it); {UPDATE}")
    if option in _HOST_ONLY:
        return (f"this claude CLI is too old for host mode: it does not know {option}; {UPDATE}, or run "
                "it one-shot with --no-interactive (interactive=False, CCExec.interactive = False)")
    if option in OPTION_FLAGS:
        return f"this claude CLI is too old for {option}: it does not know the option; {UPDATE}, or run without it"
    return None
