"""The options of a run that are not Claude's, declared once (magic flags, API keywords).

:class:`RunOptions` and :class:`~cc_executor_nb.claude.options.ClaudeOptions` together
are everything ``%ccexec`` and :func:`cc_executor_nb.run` accept: the magic's parser is
built from their declarations and the API's keywords are their field names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..declare import option

__all__ = ["BatchOptions", "RunOptions"]


@dataclass(frozen=True)
class RunOptions:
    """Where and how a run goes, and how it is shown."""

    # What the text is, and waiting for it
    command: bool = option(
        False, "-c", "--command", kind="switch",
        help="the text is a command line (split like a POSIX shell, run without a shell), "
        "not a Claude prompt; quote it when it has options of its own",
    )
    wait: bool = option(
        False, "-w", "--wait", kind="switch",
        help="block until the run ends; interrupting the kernel cancels the run",
    )
    # Where it runs
    durable: bool = option(
        False, "--durable", kind="switch", config="durable",
        help="a durable job in the user's job server: it outlives this kernel and can be "
        "attached from any notebook (%%ccexec --jobs, --attach ID)",
    )
    server: str | None = option(
        None, "-s", "--server", metavar="URL", config="default_server",
        help="ws://HOST:PORT/ws of a remote server (default: CCExec.default_server, else a "
        "private server in this kernel)",
    )
    token: str | None = field(default=None, repr=False)
    """The remote server's token (Python API only; the magic reads ``token_env``)."""
    token_env: str | None = option(
        None, "--token-env", metavar="NAME", config="token_env",
        help="environment variable holding the remote server's token (default: CCExec.token_env)",
    )
    cwd: str | None = option(None, "--cwd", metavar="DIR", help="working directory of the process")
    capture: str | None = option(
        None, "--capture", metavar="file|pipe", config="capture",
        help="how the server captures the output: file (default: nothing can be lost; pipe while "
        "the server's temporary directory has under 32 MiB free) or pipe (for scripts that "
        "reopen /dev/stdout with truncation)",
    )
    env: Mapping[str, str] | None = option(
        None, "-e", "--env", metavar="NAME=VALUE", kind="repeat",
        help="extra environment variable for the process (repeatable)",
    )
    # Timing (seconds)
    timeout: float | None = option(
        None, "--timeout", metavar="SECONDS", type=float, config="timeout",
        help="cancel the run after this many seconds (default: CCExec.timeout, else no limit; 0: no limit)",
    )
    heartbeat: float | None = option(
        None, "--heartbeat", metavar="SECONDS", type=float, config="heartbeat_interval",
        help="seconds between heartbeats (default: CCExec.heartbeat_interval, else the server's)",
    )
    inactivity: float | None = option(
        None, "--inactivity", metavar="SECONDS", type=float, config="inactivity_threshold",
        help="seconds of silence before the run shows as thinking (default: CCExec.inactivity_threshold, "
        "else the server's)",
    )
    # Display
    quiet: bool = option(False, "-q", "--quiet", kind="switch", help="no widget: print plain text into the cell")
    display: bool = True
    """Show the run in the current cell (Python API only; ``display(run)`` later)."""
    label: str | None = None
    """The title of the run's view (Python API only; default: the prompt or command)."""


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs (``%ccexec --each``; ``cc_executor_nb.map`` takes them as keywords)."""

    each: str | None = option(
        None, "--each", metavar="NAME",
        help="run once per item of the iterable NAME in the user namespace, {item} in the prompt (or "
        "command) filled in with it: returns a Batch (a command's words each take the item as it is, "
        "shell-quoted only in the script of sh/bash/dash/zsh/ksh -c)",
    )
    concurrency: int | None = option(
        None, "--concurrency", metavar="N", type=int, config="batch_concurrency",
        help="how many runs of the batch run at once (default: CCExec.batch_concurrency)",
    )
    batch_budget_usd: float | None = option(
        None, "--batch-budget-usd", metavar="USD", type=float,
        help="no new run of the batch starts once its runs have spent this many dollars "
        "(map(max_budget_usd=...))",
    )
    on_budget: str | None = option(
        None, "--on-budget", metavar="finish|cancel",
        help="when the batch budget (--batch-budget-usd, which it needs) is spent, let running runs "
        "finish (default) or cancel them",
    )
    cluster: str | None = option(
        None, "--cluster", metavar="NAME",
        help="a dask.distributed Client in the user namespace: the batch runs on its workers",
    )
    resources: str | None = option(
        None, "--resources", metavar="NAME=N[,NAME=N]",
        help="Dask worker resources each run of a --cluster batch holds while it runs, e.g. claude=1 "
        "(map(resources={'claude': 1}))",
    )
