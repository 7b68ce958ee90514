"""User configuration of the notebook extension: the ``CCExec`` traitlets Configurable.

Set values in a running kernel with ``%config``::

    %config CCExec.heartbeat_interval = 5
    %config CCExec.claude_args = ["--max-turns", "3"]

or for every session in ``ipython_config.py``::

    c.CCExec.default_server = "ws://gpu-box:8003/ws"
    c.CCExec.token_env = "GPU_BOX_TOKEN"

The extension creates one ``CCExec`` parented to the IPython shell, so both ways
apply. The Python API (``cc_executor_nb.run``) reads the same object and lets
explicit keyword arguments override it. Durations are seconds and accept fractions.
"""

from __future__ import annotations

import logging
import math
import re
from collections import abc
from typing import Any

from traitlets import Bool, Callable, Enum, Float, Int, List, TraitError, Unicode, Union, validate
from traitlets.config import Configurable

from ..client import check_server_url
from ..protocol import CAPTURE_MODES, MAX_HEARTBEAT_INTERVAL, MAX_KILL_GRACE, MAX_TIMEOUT, MIN_INTERVAL
from ..server.config import MIN_DISK_LIMIT, check_spool_dir
from ..server.supervisor import DEFAULT_KEEP_ENV, DEFAULT_SECRET_ENV

__all__ = ["OUTPUT_MODES", "CCExec", "checked_settings"]

logger = logging.getLogger("cc_executor_nb.kernel.config")

#: How runs are shown: "auto" picks widgets inside a Jupyter kernel, text elsewhere.
OUTPUT_MODES = ("auto", "widget", "text")


class CCExec(Configurable):
    """Settings of the ``%ccexec`` magic and of ``cc_executor_nb.run``."""

    # Where runs go

    default_server = Unicode(
        "",
        help="WebSocket URL (ws://HOST:PORT/ws) of the server that runs jobs. "
        "Empty: a private server started inside this kernel on 127.0.0.1.",
    ).tag(config=True)
    token_env = Unicode(
        "CC_EXECUTOR_TOKEN",
        help="Name of the environment variable holding the token of a remote server "
        "(the token itself is never stored in the configuration nor echoed).",
    ).tag(config=True)

    durable = Bool(
        False,
        help="Send every run to the user's job server as a durable job: it outlives this "
        "kernel (restarts, crashes, culling) and can be attached from any notebook.",
    ).tag(config=True)
    job_server_idle_exit = Float(
        3600.0,
        help="Seconds the job server (started by a kernel) waits with no running job and no "
        "connection before it exits by itself; 0: it never does.",
    ).tag(config=True)
    job_retention = Float(
        7 * 24 * 3600.0,
        help="Seconds the job server keeps a finished job and its output (default a week).",
    ).tag(config=True)
    job_storage_limit = Int(
        1 << 30,
        help="Bytes the job server's logs of all jobs may take; past it the oldest finished "
        "jobs are deleted first (a running job never is).",
    ).tag(config=True)

    last_session_id = Unicode(
        "",
        help="Session id of the last Claude run in this kernel (what --continue resumes); "
        "kept by the extension, not a setting.",
    )

    # Timing

    # None leaves these to the server: a remote server's own defaults (its
    # WEBSOCKET_HEARTBEAT_INTERVAL, say) apply unless the user chose a value.
    heartbeat_interval = Float(
        None,
        allow_none=True,
        help="Seconds between the server's heartbeats for each run's session. None: the "
        "server's default (20 for the in-kernel server).",
    ).tag(config=True)
    inactivity_threshold = Float(
        None,
        allow_none=True,
        help="Seconds without output after which the server reports the process as "
        "'thinking' (and again every as many seconds while the silence lasts). None: the "
        "server's default (30 for the in-kernel server).",
    ).tag(config=True)
    timeout = Float(
        None,
        allow_none=True,
        help="Default total wall-clock limit of a run in seconds; None: no limit at all.",
    ).tag(config=True)
    heartbeat_mode = Enum(
        ("fixed", "adaptive"),
        default_value="fixed",
        help="In-kernel server: 'fixed' sends a heartbeat every interval; 'adaptive' skips "
        "beats while other messages flow and beats faster (down to min_heartbeat_interval) "
        "while the process is silent past the inactivity threshold.",
    ).tag(config=True)
    min_heartbeat_interval = Float(
        1.0,
        help="Shortest heartbeat interval of the adaptive mode, in seconds (in-kernel server).",
    ).tag(config=True)
    history_path = Unicode(
        "",
        help="SQLite file of earlier run durations used for progress estimates (in-kernel "
        "server). Empty: ~/.cache/cc_executor_nb/history.sqlite3; 'none' keeps no history.",
    ).tag(config=True)
    kill_grace = Float(
        5.0,
        help="Seconds between SIGTERM and SIGKILL when a run is cancelled "
        "(in-kernel server only).",
    ).tag(config=True)
    reconnect_timeout = Float(
        300.0,
        help="Seconds a run goes on reconnecting to a server it lost (a restarted job "
        "server, a remote server's outage) before it ends 'error'.",
    ).tag(config=True)

    # What may run

    claude_command = Unicode(
        "",
        help="Path or name of the claude executable. Empty: node_modules/.bin/claude of "
        "the project or the current directory, then claude on PATH.",
    ).tag(config=True)
    claude_args = List(
        Unicode(), help="Extra arguments appended to every claude command line."
    ).tag(config=True)
    model = Unicode(
        "", help="Default --model for claude runs. Empty: the CLI's own default."
    ).tag(config=True)
    allowed_commands = List(
        Unicode(),
        help="Programs the in-kernel server may start: names (looked up on PATH) or absolute "
        "paths, compared as resolved absolute paths; while set, a run's env may not set PATH, "
        "LD_* and the like. Not a sandbox. Empty: any program.",
    ).tag(config=True)
    secret_env = List(
        Unicode(),
        default_value=list(DEFAULT_SECRET_ENV),
        help="Patterns (fnmatch) of this kernel's environment variables that runs never get "
        "(in-kernel server): tokens, passwords, API keys by their usual names.",
    ).tag(config=True)
    keep_env = List(
        Unicode(),
        default_value=list(DEFAULT_KEEP_ENV),
        help="Patterns of variables runs get even when a secret_env pattern matches them "
        "(default: what claude needs: ANTHROPIC_*, CLAUDE_*, AWS_*, GOOGLE_*, CLOUD_ML_*).",
    ).tag(config=True)

    # Output and disk

    capture = Enum(
        ("", *CAPTURE_MODES),
        default_value="",
        help="How a run's stdout and stderr reach the server: 'file' (regular files the server "
        "follows: no output can be lost, whatever the reader's delays), 'pipe' (for programs "
        "that reopen /dev/stdout with truncation, e.g. 'echo x > /dev/stdout') or '' (the "
        "server's choice: 'file', or 'pipe' while its temporary directory has under 32 MiB free, "
        "where a child would get ENOSPC writing to a file).",
    ).tag(config=True)
    spool_dir = Unicode(
        "",
        help="Directory of the in-kernel server's temporary files (capture, spool, replay; all "
        "unlinked). Empty: the system's temporary directory.",
    ).tag(config=True)
    disk_limit = Int(
        4 << 30,
        help="Bytes of temporary files the in-kernel server may keep in all (0: no limit). "
        "When reached, old replay is dropped, then a run is held until its output is read.",
    ).tag(config=True)
    session_disk_limit = Int(
        1 << 30,
        help="Bytes of temporary files the in-kernel server may keep for one run's session (0: no "
        "limit). When reached, that run is held until its output is read.",
    ).tag(config=True)
    demo = Bool(
        False,
        help="Point claude runs at the built-in offline demo API instead of Anthropic's.",
    ).tag(config=True)
    max_budget_usd = Float(
        None,
        allow_none=True,
        help="Default --max-budget-usd of claude runs: the CLI stops a run once it has spent "
        "this many dollars. None: no limit.",
    ).tag(config=True)

    # Batches

    batch_concurrency = Int(
        4, help="How many runs of a batch (cc_executor_nb.map, %%ccexec --each) run at once by default."
    ).tag(config=True)

    # Usage limits

    auto_resume = Bool(
        False,
        help="When a usage or rate limit stops a claude run, wait for the reset and resume "
        "the same Claude session (--resume SESSION_ID with resume_prompt).",
    ).tag(config=True)
    resume_prompt = Unicode(
        "Continue where you left off.",
        help="The prompt that resumes a Claude session after a usage limit reset (auto_resume).",
    ).tag(config=True)
    auto_resume_max_wait = Float(
        6 * 3600.0,
        help="Longest wait, in seconds, for a reset before resuming (auto_resume); a limit "
        "that resets later ends the run as it is.",
    ).tag(config=True)
    max_resumes = Int(
        5,
        help="How many times one run may resume its session after a limit (auto_resume).",
    ).tag(config=True)

    # Claude conversations

    interactive = Bool(
        True,
        help="Run claude in host mode: its permission questions come to the notebook, "
        "follow-ups (run.send) go to the same process, interrupts keep the session. "
        "False: the one-shot mode (claude -p, the prompt on its stdin, no questions), also what "
        "a CLI without host mode falls back to.",
    ).tag(config=True)
    permission_policy = Union(
        [Enum(("ask", "all", "none")), Callable()],
        default_value="ask",
        help="How Claude's permission questions are answered: 'ask' a person (the widget, "
        "or the cell's input box while the kernel is busy), 'all' (allow every call), "
        "'none' (deny every call), or a callable(request) returning 'allow', 'always' "
        "(allow, and the same call from now on), 'deny' or None (ask).",
    ).tag(config=True)
    idle_timeout = Float(
        600.0,
        help="Seconds a live Claude conversation waits for a follow-up before it ends by "
        "itself (0: never). Nothing is lost: the run keeps everything it received.",
    ).tag(config=True)
    max_idle_conversations = Int(
        8,
        help="How many live Claude conversations may wait for a follow-up at once (0: no "
        "limit); one more ends the one that waited longest, as its idle timeout would. "
        "Each holds a CLI process (~190 MiB).",
    ).tag(config=True)

    # Display

    output_mode = Enum(
        OUTPUT_MODES,
        default_value="auto",
        help="How runs are shown: 'widget' (live ipywidgets view), 'text' (plain lines "
        "in the cell output) or 'auto' (widgets inside a Jupyter kernel, text elsewhere).",
    ).tag(config=True)
    max_output_chars = Int(
        20000,
        help="How many of the last output characters the live view shows "
        "(the Run object always keeps the full output).",
    ).tag(config=True)
    max_updates_per_second = Float(
        5.0,
        help="Upper bound on view renders per second for one run. A render sends one "
        "widget message per widget that changed: usually the output, the header about "
        "once a second, and five at the start of a run (buttons, output shown, status). "
        "5 keeps a flooding run at or under 10 widget messages in any second.",
    ).tag(config=True)

    @validate("heartbeat_interval", "inactivity_threshold", "min_heartbeat_interval")
    def _interval(self, proposal: Any) -> float | None:
        if proposal.value is None and proposal.trait.allow_none:
            return None
        value = _check(proposal, allow_zero=False)
        if value < MIN_INTERVAL:
            # Shorter beats would keep a core busy for nothing.
            raise TraitError(f"CCExec.{proposal.trait.name} must be at least {MIN_INTERVAL:g} s, not {value!r}")
        return value

    @validate("default_server")
    def _server(self, proposal: Any) -> str:
        return _checked(check_server_url, proposal, str(proposal.value) or None)

    @validate("spool_dir")
    def _spool(self, proposal: Any) -> str:
        return _checked(check_spool_dir, proposal, str(proposal.value) or None)

    @validate("max_updates_per_second")
    def _positive(self, proposal: Any) -> float:
        return _check(proposal, allow_zero=False)

    @validate("disk_limit", "session_disk_limit")
    def _disk(self, proposal: Any) -> int:
        value = int(proposal.value)
        if value != 0 and value < MIN_DISK_LIMIT:
            raise TraitError(f"CCExec.{proposal.trait.name} must be 0 (no limit) or at least {MIN_DISK_LIMIT} bytes")
        return value

    @validate("kill_grace", "job_server_idle_exit", "job_retention", "auto_resume_max_wait")
    def _not_negative(self, proposal: Any) -> float:
        return _check(proposal, allow_zero=True)

    @validate("idle_timeout")
    def _idle(self, proposal: Any) -> float:
        value = _check(proposal, allow_zero=True)
        if 0 < value < MIN_INTERVAL:
            # A durable job's stdin_idle_timeout is refused by the job server below that.
            raise TraitError(f"CCExec.idle_timeout must be 0 (never) or at least {MIN_INTERVAL:g} s, not {value!r}")
        return value

    @validate("timeout", "max_budget_usd", "reconnect_timeout")
    def _timeout(self, proposal: Any) -> float | None:
        return None if proposal.value is None else _check(proposal, allow_zero=False)

    @validate("resume_prompt")
    def _prompt(self, proposal: Any) -> str:
        if not str(proposal.value).strip():
            raise TraitError("CCExec.resume_prompt must not be empty")
        return str(proposal.value)

    @validate("batch_concurrency")
    def _at_least_one(self, proposal: Any) -> int:
        if int(proposal.value) < 1:
            raise TraitError("CCExec.batch_concurrency must be at least 1")
        return int(proposal.value)

    @validate("max_output_chars", "job_storage_limit", "max_resumes", "max_idle_conversations")
    def _chars(self, proposal: Any) -> int:
        if proposal.value < 0:
            raise TraitError(f"CCExec.{proposal.trait.name} must not be negative")
        return int(proposal.value)


# What the protocol accepts in an ``execute`` (-32602 beyond): refused here, when set,
# rather than in every run.
_MAXIMA = {
    "timeout": MAX_TIMEOUT,
    "heartbeat_interval": MAX_HEARTBEAT_INTERVAL,
    "kill_grace": MAX_KILL_GRACE,
    "inactivity_threshold": MAX_TIMEOUT,
    "idle_timeout": MAX_TIMEOUT,
}


# The settings whose None is no limit (a run's 0 is, for the same option).
_NONE_IS_NO_LIMIT = frozenset({"timeout", "max_budget_usd"})


def _check(proposal: Any, *, allow_zero: bool) -> float:
    value = float(proposal.value)
    name = proposal.trait.name
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        # A run's --timeout 0 is no limit; the setting's no limit is None: say so.
        unset = " (None: no limit)" if name in _NONE_IS_NO_LIMIT else ""
        raise TraitError(f"CCExec.{name} must be {kind} finite number{unset}, not {value!r}")
    maximum = _MAXIMA.get(name)
    if maximum is not None and value > maximum:
        raise TraitError(f"CCExec.{name} must be at most {maximum:.0f} s (the protocol's bound), not {value!r}")
    return value


def _checked(check: abc.Callable[[Any, str], None], proposal: Any, value: object) -> str:
    """``proposal.value`` once ``check(value, name)`` accepts it; its ValueError as a TraitError naming the setting."""
    try:
        check(value, f"CCExec.{proposal.trait.name}")
    except ValueError as exc:
        raise TraitError(str(exc)) from None
    return str(proposal.value)


_REJECTED = re.compile(r"CCExec\.(\w+)|'(\w+)' trait of a CCExec")


def checked_settings(parent: Any) -> CCExec:
    """``CCExec(parent=parent)``, leaving out a configured value that CCExec rejects.

    IPython's ``%config`` keeps a value in the shell's config even when the setting refused
    it (the TraitError is shown and the setting keeps its old value). Read again, as by
    ``%reload_ext``, it would fail and leave the extension unloaded; so such a value is
    dropped from the config, with a warning, and the setting keeps its default.
    """
    while True:
        try:
            return CCExec(parent=parent)
        except TraitError as exc:
            found = _REJECTED.search(str(exc))
            name = (found.group(1) or found.group(2)) if found else None
            if name is None or not _drop_setting(parent, name):
                raise
            logger.warning("! ignored the configured CCExec.%s: %s", name, exc)


def _drop_setting(parent: Any, name: str) -> bool:
    """Remove ``CCExec.name`` from the config of ``parent`` and of its parents; whether any held it."""
    dropped, seen = False, set()
    while parent is not None and id(parent) not in seen:
        seen.add(id(parent))
        config = getattr(parent, "config", None)
        section = config.get("CCExec") if config is not None and "CCExec" in config else None
        if section is not None and name in section:
            del section[name]
            dropped = True
        parent = getattr(parent, "parent", None) or getattr(parent, "shell", None)
    return dropped

