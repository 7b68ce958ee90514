"""Child supervision in one place: spawn, signal the group, escalate, reap.

Every child starts with exec (never a shell), stdin from /dev/null (or a pipe we
hold), in a new session (so its own process group, whose id we record at spawn),
with stdout and stderr made for it before the spawn (capture files or pipes, see
:mod:`~cc_executor_nb.server.capture`), so the stream reader owns them from the
first byte. Signals go to the group with ``killpg``; ``ProcessLookupError`` means
"already gone". We never signal our own group.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import psutil

from ..errors import CommandNotAllowed, LimitReached, SpawnFailed
from .capture import ChildOutput
from .watchdog import SERVER_MARKER_ENV, kill_marked

__all__ = [
    "DEFAULT_KEEP_ENV",
    "DEFAULT_SECRET_ENV",
    "GUARDED_ENV",
    "RUN_MARKER_ENV",
    "UNBUFFERED_NAMES",
    "ManagedProcess",
    "ProcessManager",
    "child_environment",
    "group_members",
    "is_secret",
    "kill_escapees",
    "process_stopped",
    "signal_group",
    "unbuffered_argv",
]

logger = logging.getLogger("cc_executor_nb.server.supervisor")

UNBUFFERED_NAMES = frozenset({"claude", "python", "python3", "node", "npm", "npx"})
DEFAULT_SECRET_ENV = (
    # The notebook's and the server's own credentials: never the job's business.
    "CC_EXECUTOR_TOKEN",
    "JUPYTER_TOKEN",
    "JUPYTER_PASSWORD",
    "JPY_API_TOKEN",
    "JUPYTERHUB_*",
    # Credentials by their usual names.
    "*_TOKEN",
    "*_SECRET",
    "*_SECRET_KEY",
    "*_PASSWORD",
    "*_PASSWD",
    "*_API_KEY",
    "*_ACCESS_KEY",
    "*_PRIVATE_KEY",
)
"""Names (``fnmatch`` patterns) of the server's variables that never reach a child."""
DEFAULT_KEEP_ENV = (
    # What the claude CLI itself needs: the Anthropic API, Bedrock (AWS), Vertex (Google).
    "ANTHROPIC_*",
    "CLAUDE_*",
    "AWS_*",
    "GOOGLE_*",
    "CLOUD_ML_*",
)
"""Patterns kept even when a secret pattern matches them."""
GUARDED_ENV = (
    "PATH", "LD_*", "DYLD_*", "NODE_OPTIONS", "NODE_PATH", "PYTHONPATH", "PYTHONHOME",
    "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PERL5OPT", "PERL5LIB", "PERLLIB", "RUBYOPT",
    "RUBYLIB", "BASH_ENV", "ENV", "BASH_FUNC_*", "SHELLOPTS", "BASHOPTS", "PS4", "GCONV_PATH",
    "LOCPATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "GIT_SSH", "GIT_SSH_COMMAND",
    "GIT_EXEC_PATH", "GIT_ASKPASS", "SSH_ASKPASS", "GIT_CONFIG_*", "GIT_EDITOR", "GIT_PAGER",
    "EDITOR", "VISUAL", "PAGER", "LESSOPEN", "LESSCLOSE", "BROWSER", "GIT_PROXY_COMMAND",
    "GIT_EXTERNAL_DIFF", "GIT_SEQUENCE_EDITOR", "GIT_TEMPLATE_DIR", "PYTHONWARNINGS",
    "PYTHONBREAKPOINT", "PYTHONUSERBASE", "HOME", "XDG_CONFIG_HOME", "ZDOTDIR", "NPM_CONFIG_*", "npm_config_*",
    # A repository of the client's choosing brings its own config (core.fsmonitor, hooks:
    # commands git runs, for the git status an allowed claude runs too); ext:: URLs are commands.
    "GIT_DIR", "GIT_COMMON_DIR", "GIT_WORK_TREE", "GIT_CONFIG", "GIT_ALLOW_PROTOCOL",
    # `git help` runs man, which starts MANPAGER (and MANOPT's -P pager) as a command.
    "MANPAGER", "MANOPT",
)
"""Variables a request's ``env`` may not set while an allow-list is set: each one can
make an allowed program load or start other code."""
# npm (and pnpm, through it) reads every variable named /^npm_config_/i as its own
# setting, whatever the case of its letters: Npm_Config_Script_Shell sets script-shell.
_GUARDED_ANY_CASE = ("NPM_CONFIG_*",)
# Every child carries this variable so that processes which leave the group (setsid)
# can still be recognised as ours.
RUN_MARKER_ENV = "CC_EXECUTOR_RUN_ID"
_POLL = 0.05


def unbuffered_argv(argv: list[str], stdbuf: str | None) -> list[str]:
    """Prefix ``stdbuf -o0 -e0`` for programs known to buffer when piped."""
    if stdbuf and os.path.basename(argv[0]) in UNBUFFERED_NAMES:
        return [stdbuf, "-o0", "-e0", *argv]
    return list(argv)


def child_environment(
    base: Mapping[str, str],
    overrides: Mapping[str, str] | None,
    secret_names: Iterable[str],
    secret_values: Iterable[str] = (),
    keep_names: Iterable[str] = DEFAULT_KEEP_ENV,
) -> dict[str, str]:
    """The child's environment: ours minus secrets, unbuffered, then the overrides.

    A variable of ours is dropped when its name matches a pattern of ``secret_names``
    and none of ``keep_names``; any variable (the request's too) is dropped when its
    value equals one of ``secret_values`` (the server token). The request's own
    variables are otherwise kept: the client asked for them.
    """
    secret, keep = tuple(secret_names), tuple(keep_names)
    values = {value for value in secret_values if value}
    env = {k: v for k, v in base.items() if not is_secret(k, secret, keep)}
    env.update(PYTHONUNBUFFERED="1", NODE_NO_READLINE="1")
    env.update(overrides or {})
    return {k: v for k, v in env.items() if v not in values}


def is_secret(name: str, secret: Iterable[str] = DEFAULT_SECRET_ENV, keep: Iterable[str] = DEFAULT_KEEP_ENV) -> bool:
    """Whether a variable named ``name`` must stay out of a child's environment."""
    return _matches(name, tuple(secret)) and not _matches(name, tuple(keep))


def _is_guarded(name: str) -> bool:
    """Whether a request's ``env`` may not set ``name`` while an allow-list is set."""
    return _matches(name, GUARDED_ENV) or _matches(name.upper(), _GUARDED_ANY_CASE)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _resolve(argv0: str, env: Mapping[str, str], cwd: str | None) -> str:
    """Find the executable as exec would, so a missing program is a clean -32004.

    A name with a ``/`` is relative to ``cwd`` (the child's directory), never to the
    server's own: the path returned is the one the child runs.
    """
    if "/" in argv0:
        path = os.path.abspath(os.path.join(cwd or os.getcwd(), argv0))
        if not os.path.exists(path):
            raise _spawn_error(errno.ENOENT, argv0)
        if os.path.isdir(path):
            raise _spawn_error(errno.EACCES, argv0, "it is a directory")
        if not os.access(path, os.X_OK):
            raise _spawn_error(errno.EACCES, argv0)
        return path
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if found is None:
        raise _spawn_error(errno.ENOENT, argv0)
    return found


def _program_fault(path: str, code: int) -> str | None:
    """Where an exec of the file at ``path`` failed when the file itself is there: the
    interpreter its ``#!`` line names (missing or not executable), or the ``#!`` line it
    lacks. None when its first bytes say nothing (a binary, an unreadable file)."""
    try:
        with open(path, "rb") as file:
            head = file.read(256)  # what the kernel reads of a #! line
    except OSError:
        return None
    if code == errno.ENOEXEC and not head.startswith(b"#!"):
        return f"it has no #! line (run it as `sh {path}`)"
    words = head[2:].split(b"\n", 1)[0].split() if head.startswith(b"#!") else []
    if words and code in (errno.ENOENT, errno.EACCES):
        return f"its interpreter {os.fsdecode(words[0])!r}"
    return None


_MAX_ARG_STRLEN = 131072
"""Linux's limit on one argument or environment string, its final NUL included."""


def _too_long(argv: list[str], env: Mapping[str, str]) -> str:
    """What made an exec fail with E2BIG: the first string over the limit, else the total."""
    strings = [(f"argument {index}", arg) for index, arg in enumerate(argv)]
    strings += [(f"environment variable {name}", f"{name}={value}") for name, value in env.items()]
    for what, text in strings:
        size = len(os.fsencode(text))
        if size >= _MAX_ARG_STRLEN:
            return f"its {what} ({size} bytes; at most {_MAX_ARG_STRLEN - 1} each)"
    total = sum(len(os.fsencode(text)) + 1 for _, text in strings)
    return f"its arguments and environment ({total} bytes together)"


def _spawn_error(code: int, what: str, where: str | None = None) -> SpawnFailed:
    """-32004 naming the program, and ``where`` the failure lies when it is not the program."""
    strerror = os.strerror(code)
    reason = f"{where}: {strerror}" if where else strerror
    hint = _CLAUDE_HINT if code == errno.ENOENT and where is None and os.path.basename(what) == "claude" else ""
    return SpawnFailed(f"could not start {what!r}: {reason}{hint}", {"errno": code, "strerror": strerror})


_CLAUDE_HINT = (
    " (not on this server's PATH: install it on the server's machine with"
    " `npm install -g @anthropic-ai/claude-code`, or start the server with claude on its PATH)"
)


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group. Return False when the group is gone."""
    if pgid <= 1 or pgid == os.getpgrp():
        raise ValueError(f"refusing to signal process group {pgid}")
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def process_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped by a signal (state T in ``/proc/PID/stat``); False once gone."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_STOPPED)
    except psutil.Error:
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of a group.

    Zombies are skipped: in a container whose init does not reap, orphans linger as
    zombies and must not count as running.
    """
    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc)
    return members


def kill_escapees(run_id: str) -> list[int]:
    """SIGKILL processes of a run that left its group (found by the run marker)."""
    pids = kill_marked(RUN_MARKER_ENV, run_id)
    if pids:
        logger.warning("! [ENHANCED] killed processes that escaped their group: %s", pids)
    return pids


@dataclass(eq=False)
class ManagedProcess:
    """One spawned child: its pid, its group and what it writes its output to."""

    argv: list[str]
    exec_argv: list[str]
    process: asyncio.subprocess.Process
    output: ChildOutput
    """The capture files or pipes of its stdout and stderr (the reader takes them over)."""
    run_id: str
    stdin_fd: int | None = None
    """The write end of the child's stdin pipe (None: its stdin is /dev/null)."""
    started_at: float = field(default_factory=time.monotonic)
    paused: bool = False
    """Paused by the client (PAUSE)."""
    holds: set[str] = field(default_factory=set)
    """Why the server holds the group: "disk" (the disk budget is full), "backlog" (the
    child writes faster than its capture is read). Empty: not held."""
    stop_step: str | None = None
    escapees_killed: list[int] = field(default_factory=list)
    """Pids of the run's processes outside its group that a stop killed."""

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self.process.pid

    @property
    def pgid(self) -> int:
        """The process group, recorded at spawn (the child leads it)."""
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """Exit code, negative signal number when killed, None while running."""
        return self.process.returncode

    async def wait(self) -> int:
        """Wait for the child to exit and return its code (always reaped)."""
        return await self.process.wait()

    @property
    def stopped(self) -> bool:
        """Stopped by a SIGSTOP or SIGTSTP not of ours (someone's ``kill -STOP``): not
        paused by the client nor held by the server, yet in state T."""
        return not (self.paused or self.holds) and process_stopped(self.pid)

    def pause(self) -> None:
        """SIGSTOP the whole group."""
        signal_group(self.pgid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT the whole group (unless the server holds it)."""
        self.paused = False
        if not self.holds:
            signal_group(self.pgid, signal.SIGCONT)

    def hold(self, reason: str) -> None:
        """SIGSTOP the group until :meth:`release` of every reason (the server's own pause)."""
        if self.returncode is None and not self.holds:
            signal_group(self.pgid, signal.SIGSTOP)
        self.holds.add(reason)

    def release(self, reason: str) -> None:
        """Drop one reason to hold; SIGCONT once none is left (unless the client paused)."""
        if reason not in self.holds:
            return
        self.holds.discard(reason)
        if not self.holds and not self.paused:
            signal_group(self.pgid, signal.SIGCONT)

    async def terminate(self, grace: float, *, escapees: bool = True) -> str:
        """SIGCONT+SIGTERM the group, SIGKILL what is left after ``grace`` seconds; then,
        with ``escapees``, SIGKILL the run's processes that left the group (kept in
        ``escapees_killed``, so the run can still name them).

        Returns the step reached: "gone" (nothing to signal), "SIGTERM" or "SIGKILL".
        """
        step = await self._stop_group(grace)
        if escapees:
            self.escapees_killed += await asyncio.to_thread(kill_escapees, self.run_id)
        return step

    async def _stop_group(self, grace: float) -> str:
        if not self._group_alive():
            self.stop_step = self.stop_step or "gone"
            return self.stop_step
        signal_group(self.pgid, signal.SIGCONT)
        signal_group(self.pgid, signal.SIGTERM)
        self.paused = False
        self.holds.clear()
        self.stop_step = "SIGTERM"
        if await self._wait_group_gone(grace):
            return self.stop_step
        logger.info("[ENHANCED] group %d outlived %.1f s grace: SIGKILL", self.pgid, grace)
        signal_group(self.pgid, signal.SIGKILL)
        self.stop_step = "SIGKILL"
        await self._wait_group_gone(5.0)
        return self.stop_step

    def group_alive(self) -> bool:
        """True while any (non-zombie) process of the group lives (blocking)."""
        return self._group_alive()

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return self.returncode is None or bool(group_members(self.pgid))

    async def _wait_group_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.returncode is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.process.wait(), _POLL)
                continue
            if not await asyncio.to_thread(self._group_alive):
                return True
            await asyncio.sleep(_POLL)
        return not await asyncio.to_thread(self._group_alive)


class ProcessManager:
    """Spawns children and keeps every live one, so none can be forgotten."""

    def __init__(
        self,
        *,
        kill_grace: float = 5.0,
        allowed_commands: Iterable[str] | None = None,
        max_processes: int | None = None,
        secret_env_names: Iterable[str] = DEFAULT_SECRET_ENV,
        keep_env_names: Iterable[str] = DEFAULT_KEEP_ENV,
    ) -> None:
        self.kill_grace = kill_grace
        self.allowed_commands = frozenset(allowed_commands) if allowed_commands else None
        self.max_processes = max_processes
        self.secret_env_names = tuple(secret_env_names)
        self.keep_env_names = tuple(keep_env_names)
        self.secret_values: set[str] = set()
        self.running: set[ManagedProcess] = set()
        self.server_id = secrets.token_hex(8)
        self._stdbuf = shutil.which("stdbuf")
        self._watchdog: subprocess.Popen[bytes] | None = None

    def add_secret(self, value: str | None) -> None:
        """Never let ``value`` (e.g. the server token) reach a child's environment."""
        if value:
            self.secret_values.add(value)

    def check_allowed(self, argv: list[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
        """The program to exec for ``argv``: an absolute path while an allow-list is set.

        With an allow-list, argv[0] is looked up as exec would (on our ``PATH``, or
        relative to ``cwd``), resolved to a real absolute path and compared with the
        entries resolved the same way; ``env`` may not set any of :data:`GUARDED_ENV`.
        Raises CommandNotAllowed (or SpawnFailed for a program that does not exist).
        """
        if self.allowed_commands is None:
            return argv[0]
        guarded = sorted(name for name in env or {} if _is_guarded(name))
        if guarded:
            raise CommandNotAllowed(
                f"env may not set {guarded[0]} while the server has an allow-list", {"field": "env"}
            )
        path = os.environ.get("PATH", os.defpath)
        program = os.path.abspath(_resolve(argv[0], {"PATH": path}, cwd))
        if os.path.realpath(program) not in self._allowed_paths(path):
            raise CommandNotAllowed(f"command {argv[0]!r} ({program}) is not allowed on this server")
        return program

    def _allowed_paths(self, path: str) -> set[str]:
        allowed = set()
        for entry in self.allowed_commands or ():
            found = entry if os.path.isabs(entry) else shutil.which(entry, path=path)
            if found:
                allowed.add(os.path.realpath(found))
        return allowed

    async def spawn(
        self,
        argv: list[str],
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        *,
        output: Callable[[], ChildOutput],
        stdin_pipe: bool = False,
    ) -> ManagedProcess:
        """Start ``argv`` in its own process group, writing to ``output()``'s descriptors.

        ``output`` makes the child's stdout and stderr (capture files or pipes); it is
        called inside the spawn's clean-up, so nothing leaks when anything fails. With
        ``stdin_pipe`` the child reads a pipe whose write end the returned process holds
        (``stdin_fd``); otherwise its stdin is /dev/null. A ``cwd`` that starts with ``~``
        is in this server's user's home (``--cwd ~/project`` from a magic, where no shell
        expands it).
        """
        cwd = os.path.expanduser(cwd) if cwd is not None else None
        program = self.check_allowed(argv, env, cwd)
        if self.max_processes is not None and len(self.running) >= self.max_processes:
            raise LimitReached(f"at most {self.max_processes} processes may run at once")
        run_id = secrets.token_hex(8)
        child_env = child_environment(
            os.environ, env, self.secret_env_names, self.secret_values, self.keep_env_names
        )
        child_env[RUN_MARKER_ENV] = run_id
        child_env[SERVER_MARKER_ENV] = self.server_id
        _resolve(argv[0], child_env, cwd)
        exec_argv = unbuffered_argv([program, *argv[1:]], self._stdbuf)
        try:
            self._ensure_watchdog()
        except OSError as exc:  # no descriptor or process left for it: no run without it
            raise _spawn_error(exc.errno or errno.EIO, argv[0]) from None
        try:
            process, child_output, in_fd = await _start(
                exec_argv, cwd, env=child_env, make_output=output, stdin_pipe=stdin_pipe, name=argv[0]
            )
        except SpawnFailed as exc:
            if exc.data.get("errno") == errno.E2BIG:
                raise _spawn_error(errno.E2BIG, argv[0], _too_long(argv, child_env)) from None
            raise
        managed = ManagedProcess(argv, exec_argv, process, child_output, run_id, stdin_fd=in_fd)
        self.running.add(managed)
        self._tell_watchdog(f"+{managed.pgid}")
        process_done = asyncio.ensure_future(process.wait())
        process_done.add_done_callback(lambda _: self._forget(managed))
        logger.info("[ENHANCED] started pid %d: %s", managed.pid, argv[0])
        return managed

    async def shutdown(self) -> None:
        """Terminate every running group, then dismiss the watchdog."""
        await asyncio.gather(
            *(proc.terminate(self.kill_grace) for proc in list(self.running)),
            return_exceptions=True,
        )
        await asyncio.to_thread(kill_marked, SERVER_MARKER_ENV, self.server_id)
        self.stop_watchdog()

    def stop_watchdog(self) -> None:
        """Close the watchdog's stdin (it then finds nothing to kill) and reap it."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        with contextlib.suppress(OSError):
            watchdog.stdin.close()  # type: ignore[union-attr]
        try:
            watchdog.wait(5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.poll() is not None:
            # Own session: signals aimed at the kernel's or terminal's group miss it.
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "cc_executor_nb.server.watchdog", self.server_id],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _tell_watchdog(self, line: str) -> None:
        if self._watchdog is not None and self._watchdog.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self._watchdog.stdin.write(line.encode() + b"\n")
                self._watchdog.stdin.flush()

    def _forget(self, managed: ManagedProcess) -> None:
        self.running.discard(managed)
        self._tell_watchdog(f"-{managed.pgid}")



async def _start(
    argv: list[str],
    cwd: str | None,
    *,
    env: dict[str, str],
    make_output: Callable[[], ChildOutput],
    stdin_pipe: bool,
    name: str,
) -> tuple[asyncio.subprocess.Process, ChildOutput, int | None]:
    """Spawn writing to ``make_output()``; on any failure every descriptor made is closed.

    Returns the process, its output (whose child ends are closed here once the child
    has them) and the write end of its stdin when ``stdin_pipe`` (else /dev/null).
    A failure is SpawnFailed naming ``name`` (the requested argv[0]) or the ``cwd``.
    """
    output: ChildOutput | None = None
    ours: list[int] = []  # our end of stdin: kept on success
    theirs: list[int] = []  # the child's end of stdin: always closed here
    try:
        output = make_output()
        in_w: int | None = None
        stdin: int = asyncio.subprocess.DEVNULL
        if stdin_pipe:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            theirs.append(in_r)
            ours.append(in_w)
            stdin = in_r
        out_w, err_w = output.child_fds()
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=stdin, stdout=out_w, stderr=err_w, cwd=cwd, env=env, start_new_session=True
        )
    except OSError as exc:
        _abandon(output, ours)
        code = exc.errno or errno.EIO
        if cwd is not None and exc.filename == cwd:
            raise _spawn_error(code, name, f"its working directory {cwd!r}") from None
        raise _spawn_error(code, name, _program_fault(argv[0], code)) from None
    except BaseException:
        _abandon(output, ours)
        raise
    finally:
        _close_all(theirs)
        if output is not None:
            output.close_child_ends()
    return process, output, in_w


def _abandon(output: ChildOutput | None, fds: list[int]) -> None:
    if output is not None:
        output.close()
    _close_all(fds)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()
