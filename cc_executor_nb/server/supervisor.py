"""Child supervision in one place: spawn, signal the group, escalate, reap.

Every child starts with exec (never a shell), stdin from /dev/null (or a pipe we hold), in a new session
(so its own process group, whose id we record at spawn), with pipes we create for
stdout and stderr so the stream reader owns them from the first byte. Signals go to
the group with ``killpg``; ``ProcessLookupError`` means "already gone". We never
signal our own group.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import psutil

from ..errors import CommandNotAllowed, LimitReached, SpawnFailed
from .watchdog import SERVER_MARKER_ENV, kill_marked

__all__ = [
    "DEFAULT_SECRET_ENV",
    "RUN_MARKER_ENV",
    "UNBUFFERED_NAMES",
    "ManagedProcess",
    "ProcessManager",
    "child_environment",
    "group_members",
    "kill_escapees",
    "signal_group",
    "unbuffered_argv",
]

logger = logging.getLogger("cc_executor_nb.server.supervisor")

UNBUFFERED_NAMES = frozenset({"claude", "python", "python3", "node", "npm", "npx"})
DEFAULT_SECRET_ENV = (
    "CC_EXECUTOR_TOKEN",
    "JUPYTER_TOKEN",
    "JPY_API_TOKEN",
    "JUPYTERHUB_API_TOKEN",
    "JUPYTER_PASSWORD",
)
# Every child carries this variable so that processes which leave the group (setsid)
# can still be recognised as ours.
RUN_MARKER_ENV = "CC_EXECUTOR_RUN_ID"
PIPE_SIZE = 1 << 20
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
) -> dict[str, str]:
    """The child's environment: ours minus secrets, unbuffered, then the overrides.

    A variable is dropped when its name is a known secret or its value equals one of
    ``secret_values`` (the server token), wherever it came from.
    """
    names = set(secret_names)
    values = {value for value in secret_values if value}
    env = {k: v for k, v in base.items() if k not in names}
    env.update(PYTHONUNBUFFERED="1", NODE_NO_READLINE="1")
    env.update(overrides or {})
    return {k: v for k, v in env.items() if v not in values}


def _resolve(argv0: str, env: Mapping[str, str], cwd: str | None) -> str:
    """Find the executable as exec would, so a missing program is a clean -32004."""
    if "/" in argv0:
        path = os.path.join(cwd or os.getcwd(), argv0)
        if not os.path.exists(path):
            raise _spawn_error(errno.ENOENT, argv0)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise _spawn_error(errno.EACCES, argv0)
        return argv0
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if found is None:
        raise _spawn_error(errno.ENOENT, argv0)
    return found


def _spawn_error(code: int, what: str) -> SpawnFailed:
    strerror = os.strerror(code)
    return SpawnFailed(
        f"could not start {what!r}: {strerror}", {"errno": code, "strerror": strerror}
    )


def _enlarge_pipe(fd: int) -> None:
    """Grow a pipe so a bursty child never finds it full (Linux only; best effort)."""
    setter = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setter is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setter, PIPE_SIZE)


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group. Return False when the group is gone."""
    if pgid <= 1 or pgid == os.getpgrp():
        raise ValueError(f"refusing to signal process group {pgid}")
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


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
    """One spawned child: its pid, its group and the read ends of its pipes."""

    argv: list[str]
    exec_argv: list[str]
    process: asyncio.subprocess.Process
    stdout_fd: int
    stderr_fd: int
    run_id: str
    stdin_fd: int | None = None
    """The write end of the child's stdin pipe (None: its stdin is /dev/null)."""
    started_at: float = field(default_factory=time.monotonic)
    paused: bool = False
    stop_step: str | None = None

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

    def pause(self) -> None:
        """SIGSTOP the whole group."""
        signal_group(self.pgid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT the whole group."""
        signal_group(self.pgid, signal.SIGCONT)
        self.paused = False

    async def terminate(self, grace: float) -> str:
        """SIGCONT+SIGTERM the group, SIGKILL what is left after ``grace`` seconds.

        Returns the step reached: "gone" (nothing to signal), "SIGTERM" or "SIGKILL".
        """
        step = await self._stop_group(grace)
        await asyncio.to_thread(kill_escapees, self.run_id)
        return step

    async def _stop_group(self, grace: float) -> str:
        if not self._group_alive():
            self.stop_step = self.stop_step or "gone"
            return self.stop_step
        signal_group(self.pgid, signal.SIGCONT)
        signal_group(self.pgid, signal.SIGTERM)
        self.paused = False
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
    ) -> None:
        self.kill_grace = kill_grace
        self.allowed_commands = frozenset(allowed_commands) if allowed_commands else None
        self.max_processes = max_processes
        self.secret_env_names = tuple(secret_env_names)
        self.secret_values: set[str] = set()
        self.running: set[ManagedProcess] = set()
        self.server_id = secrets.token_hex(8)
        self._stdbuf = shutil.which("stdbuf")
        self._watchdog: subprocess.Popen[bytes] | None = None

    def add_secret(self, value: str | None) -> None:
        """Never let ``value`` (e.g. the server token) reach a child's environment."""
        if value:
            self.secret_values.add(value)

    def check_allowed(self, argv: list[str]) -> None:
        """Raise CommandNotAllowed unless argv[0]'s name is on the allow-list."""
        name = os.path.basename(argv[0])
        if self.allowed_commands is not None and name not in self.allowed_commands:
            raise CommandNotAllowed(f"command {name!r} is not allowed on this server")

    async def spawn(
        self,
        argv: list[str],
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        *,
        stdin_pipe: bool = False,
    ) -> ManagedProcess:
        """Start ``argv`` in its own process group with piped stdout and stderr.

        With ``stdin_pipe`` the child reads a pipe whose write end the returned process
        holds (``stdin_fd``); otherwise its stdin is /dev/null.
        """
        self.check_allowed(argv)
        if self.max_processes is not None and len(self.running) >= self.max_processes:
            raise LimitReached(f"at most {self.max_processes} processes may run at once")
        run_id = secrets.token_hex(8)
        child_env = child_environment(
            os.environ, env, self.secret_env_names, self.secret_values
        )
        child_env[RUN_MARKER_ENV] = run_id
        child_env[SERVER_MARKER_ENV] = self.server_id
        _resolve(argv[0], child_env, cwd)
        exec_argv = unbuffered_argv(argv, self._stdbuf)
        self._ensure_watchdog()
        process, out_fd, err_fd, in_fd = await _start(exec_argv, cwd, child_env, stdin_pipe)
        managed = ManagedProcess(argv, exec_argv, process, out_fd, err_fd, run_id, stdin_fd=in_fd)
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
    argv: list[str], cwd: str | None, env: dict[str, str], stdin_pipe: bool
) -> tuple[asyncio.subprocess.Process, int, int, int | None]:
    """Spawn with our own pipes; on any failure every descriptor we made is closed.

    Returns the process and the read ends of stdout and stderr, and the write end of
    stdin when ``stdin_pipe`` (else the child's stdin is /dev/null).
    """
    ours: list[int] = []  # our ends: kept on success
    theirs: list[int] = []  # the child's ends: always closed here once it has them
    try:
        out_r, out_w = _pipe(ours, theirs)
        err_r, err_w = _pipe(ours, theirs)
        in_w: int | None = None
        stdin: int = asyncio.subprocess.DEVNULL
        if stdin_pipe:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            theirs.append(in_r)
            ours.append(in_w)
            stdin = in_r
        for fd in (out_w, err_w):
            _enlarge_pipe(fd)
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=stdin, stdout=out_w, stderr=err_w, cwd=cwd, env=env, start_new_session=True
        )
    except OSError as exc:
        _close_all(ours)
        code = exc.errno or errno.EIO
        what = exc.filename if cwd is not None and exc.filename == cwd else argv[0]
        raise _spawn_error(code, str(what)) from None
    except BaseException:
        _close_all(ours)
        raise
    finally:
        _close_all(theirs)
    return process, out_r, err_r, in_w


def _pipe(ours: list[int], theirs: list[int]) -> tuple[int, int]:
    """A new pipe whose read end is ours and write end the child's (both recorded)."""
    read, write = os.pipe2(os.O_CLOEXEC)
    ours.append(read)
    theirs.append(write)
    return read, write


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()
