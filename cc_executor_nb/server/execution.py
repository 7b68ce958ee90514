"""One run on the server: a supervised child, its output pump and its completion.

An ``Execution`` sends ``process.started``, then every piece of output in order as
``process.output``, and ``process.completed`` exactly once, after the child exited
and all its output was sent. It never times a stream out: only an explicit total
``timeout`` ends a run early. Its end never hangs either: a process that left the
group and still holds the output is named (``escaped_pids``) and, on cancel, killed;
the run then ends without what it might still write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .. import methods
from ..protocol import CANCELLED_BY_CLIENT
from ..targets import Progress
from .capture import Span
from .disk import DiskUse, limit_reached
from .progress import ProgressEstimator
from .stdin import ChildInput
from .streams import RunOutput, coalesce
from .supervisor import RUN_MARKER_ENV, ManagedProcess
from .watchdog import marked_processes

__all__ = ["Execution", "Notify", "completion_status"]

logger = logging.getLogger("cc_executor_nb.server.execution")

Notify = Callable[[str, dict[str, Any]], Awaitable[int]]

# After the leader exits, stragglers of its group that still hold the output get this
# long to finish writing before the group is terminated; processes outside the group
# that hold it get as long again before the run ends without them.
EOF_GRACE = 1.0
_QUIET_POLL = 0.05


async def _within(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` is set within ``seconds``."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


def completion_status(exit_code: int, stopped_by: str | None) -> str:
    """The ``process.completed`` status for an exit code and how we stopped it."""
    if stopped_by in ("cancelled", "timeout", "failed"):
        return stopped_by
    if stopped_by == "shutdown":
        return "cancelled"
    return "completed" if exit_code == 0 else "failed"


def _exit_error(exit_code: int, stopped_by: str | None, timeout: float | None) -> str | None:
    if stopped_by == "timeout":
        return f"timed out after {timeout:g} s"
    if stopped_by == "cancelled":
        return CANCELLED_BY_CLIENT
    if stopped_by == "shutdown":
        return "cancelled: the server stopped"
    if exit_code < 0:
        return f"killed by signal {-exit_code}"
    return None if exit_code == 0 else f"exited with code {exit_code}"


class Execution:
    """A running child bound to a session's ``notify`` function."""

    def __init__(
        self,
        process: ManagedProcess,
        output: RunOutput,
        notify: Notify,
        *,
        kill_grace: float,
        chunk_limit: int,
        timeout: float | None = None,
        estimator: ProgressEstimator | None = None,
        on_success: Callable[[float, int], Awaitable[None]] | None = None,
        settings: Mapping[str, Any] | None = None,
        stdin: ChildInput | None = None,
        disk: DiskUse | None = None,
        started_at: float | None = None,
    ) -> None:
        self.process = process
        self.settings = dict(settings or {})
        """The run's effective timing, announced in ``process.started``."""
        self.stdin = stdin
        """The child's stdin when the run was executed with ``stdin: "pipe"``."""
        self.estimator = estimator or ProgressEstimator(process.argv)
        self._on_success = on_success
        self.output = output
        self._notify = notify
        self.kill_grace = kill_grace
        self.chunk_limit = chunk_limit
        self.timeout = timeout
        self.started_at = time.monotonic() if started_at is None else started_at
        """When the spawn began (monotonic): the run's duration counts from it."""
        self.stopped_by: str | None = None
        self.failure: str | None = None
        """Why the run's owner stopped it (see :meth:`fail`), the error it ends with."""
        self.finished = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._terminating: asyncio.Task[str] | None = None
        self.survivors: list[int] = []
        """Processes outside the group that held the output when the run ended."""
        self._begun = False
        self._early_notices: list[dict[str, Any]] = []
        self._notices: set[asyncio.Task[Any]] = set()
        self._ending = False
        """The run's last notices are sent and its end is on its way: no notice may follow it."""
        self._send_span: Callable[[str, Span], Awaitable[bool]] | None = None
        self._copy_out: Callable[[], None] | None = None
        output.tell_rewrites(self._rewritten)
        output.on_backlog = self._backlog
        self.disk = disk
        if disk is not None:
            disk.hold, disk.release = self.hold, self.release

    def send_spans(
        self,
        send: Callable[[str, Span], Awaitable[bool]],
        takes: Callable[[], bool],
        copy_out: Callable[[], None],
    ) -> None:
        """Let whole lines of the capture files go as spans, sent from the files, whenever
        ``takes()`` says the session can (``send`` may still refuse one: its text is sent
        instead). ``copy_out`` is called before the files close. Not when the server reads
        the output itself (a progress target counts it)."""
        if self.estimator.target is not None:
            return
        self._send_span, self._copy_out = send, copy_out
        self.output.spans = takes

    def _close_output(self) -> None:
        if self._copy_out is not None:
            self._copy_out()  # what still refers to the capture files is copied out first
        self.output.close()

    @property
    def state(self) -> str:
        """"paused" or "running" (an Execution is dropped once finished)."""
        return "paused" if self.process.paused else "running"

    @property
    def pid_fields(self) -> dict[str, int]:
        """The pid and pgid, as every notification carries them."""
        return {"pid": self.process.pid, "pgid": self.process.pgid}

    def inactive_seconds(self) -> float:
        """Seconds since the child last wrote anything."""
        return time.monotonic() - self.output.last_output_at

    def elapsed_seconds(self) -> float:
        """Seconds since the child started."""
        return time.monotonic() - self.started_at

    def progress(self) -> Progress:
        """How far along the run is (``basis`` "none" when nothing can tell)."""
        finished = self.process.returncode is not None and self.output.eof.is_set()
        return self.estimator.estimate(self.elapsed_seconds(), time.monotonic(), finished)

    async def begin(self) -> None:
        """Announce the run (``process.started``) and start pumping its output.

        Called after the ``execute`` response; the pump starts even if the
        announcement could not be sent (the connection's end then aborts the run).
        """
        try:
            started = {"status": "started", **self.pid_fields, "argv": self.process.argv}
            await self._notify(
                methods.PROCESS_STARTED, {**started, "exec_argv": self.process.exec_argv, **self.settings}
            )
        finally:
            self._begun = True
            for params in self._early_notices:
                self.post_notice(params)
            self._early_notices.clear()
            self._spawn(self._run())
            if self.timeout is not None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self.timeout, self._expire)

    def hold(self, scope: str) -> None:
        """The disk budget is full: stop the group until :meth:`release`, and say so."""
        self.process.hold("disk")
        logger.warning("! [ENHANCED] pid %d held: its output waits on disk (%s limit)", self.process.pid, scope)
        self.post_notice(
            {
                "kind": "disk_limit",
                "action": "held",
                "scope": scope,
                "message": f"{limit_reached(scope)}: the process is stopped "
                "until the client has read more of its output",
            }
        )

    def release(self) -> None:
        """The disk budget has room again: continue the group, and say so."""
        if self._ending or self.finished.is_set():
            return  # the process is gone: nothing to continue, and its end is said
        self.process.release("disk")
        logger.info("[ENHANCED] pid %d released: the disk budget has room again", self.process.pid)
        self.post_notice({"kind": "disk_limit", "action": "released", "message": "the process continues"})

    def post_notice(self, params: dict[str, Any]) -> None:
        """Send a ``process.notice`` soon (never from inside another send): after
        ``process.started`` (one seen before waits for it) and before ``process.completed``
        (which waits for it)."""
        if not self._begun:
            self._early_notices.append(params)
            return
        if self._ending:
            logger.debug("[ENHANCED] pid %d: notice after the end not sent: %s", self.process.pid, params)
            return
        task = self._spawn(self._notify(methods.PROCESS_NOTICE, {**params, **self.pid_fields}))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _notices_sent(self) -> None:
        """Wait until every notice posted so far was sent (or failed with the connection)."""
        while self._notices:
            await asyncio.gather(*self._notices, return_exceptions=True)

    async def pause(self) -> None:
        """SIGSTOP the group and tell the client."""
        self.process.pause()
        await self._notify(methods.PROCESS_PAUSED, {"status": "paused", **self.pid_fields})

    async def resume(self) -> None:
        """SIGCONT the group and tell the client."""
        self.process.resume()
        await self._notify(methods.PROCESS_RESUMED, {"status": "resumed", **self.pid_fields})

    async def cancel(self, reason: str = "cancelled") -> None:
        """Start the SIGTERM/SIGKILL escalation and tell the client."""
        self.stopped_by = self.stopped_by or reason
        self.terminate()
        await self._notify(methods.PROCESS_CANCELLED, {"status": "cancelled", **self.pid_fields})

    def stopped_by_shutdown(self) -> None:
        """The server stops and will terminate the group: the run ends ``cancelled``, saying
        so, not ``failed`` with the SIGTERM's exit code 143. A child that already exited
        (its output still being read) keeps its own end."""
        if self.process.returncode is None:
            self.stopped_by = self.stopped_by or "shutdown"

    def fail(self, error: str) -> None:
        """The run cannot go on (its job's log cannot be written): stop the group, escapees
        too, and end ``failed`` with ``error``. Its owner already told the client why."""
        self.failure = self.failure or error
        self.stopped_by = self.stopped_by or "failed"
        self.terminate()

    def terminate(self, *, escapees: bool = True) -> asyncio.Task[str]:
        """Escalate SIGTERM then SIGKILL on the group, once; returns the task. With
        ``escapees`` (cancel, timeout, shutdown), processes that left the group are killed too."""
        if self._terminating is None:
            self._terminating = self._spawn(self.process.terminate(self.kill_grace, escapees=escapees))
        return self._terminating

    async def abort(self) -> None:
        """The client is gone: kill the group and wait until it and our tasks end."""
        self.stopped_by = self.stopped_by or "cancelled"
        await self.terminate()
        await self.process.wait()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_input()
        self._release_disk()
        self._close_output()

    def _release_disk(self) -> None:
        if self.disk is not None:
            self.disk.run_ended()

    async def _close_input(self) -> None:
        if self.stdin is not None:
            await self.stdin.aclose()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A send failed because the client went away; the connection handler
            # aborts the run, so this is only worth a debug line.
            logger.debug("[ENHANCED] run task ended: %r", task.exception())

    def _expire(self) -> None:
        logger.info("[ENHANCED] pid %d reached its %g s timeout", self.process.pid, self.timeout)
        self._spawn(self.cancel("timeout"))

    async def _run(self) -> None:
        pump = self._spawn(self._pump())
        exit_code = await self.process.wait()
        await self._close_input()
        await self._await_eof()
        await pump
        if self._timer is not None:
            self._timer.cancel()
        await self._complete(exit_code)

    async def _await_eof(self) -> None:
        """Wait until nothing can write any more, then until everything was read.

        The first step never waits forever (see :meth:`_await_writers`); the second has
        no timeout: a capture file is read at the client's pace, however slow.
        """
        await self._await_writers()
        await self.output.eof.wait()

    async def _await_writers(self) -> None:
        """Wait until nothing can write to the output any more, never forever.

        A run owns its process group: once the leader has exited, stragglers of the
        group get EOF_GRACE to finish writing, then whatever is left of the group is
        stopped. Processes outside the group that still hold the output (a
        ``setsid`` with a cleared environment escapes the run marker) get EOF_GRACE
        more; then they are named, killed if the run was cancelled, and abandoned.
        Without inotify's count of writers, the end is: group gone, marked processes
        gone (or the grace over). How far the reader is plays no part.
        """
        output = self.output
        if output.counting:
            deadline = time.monotonic() + EOF_GRACE
            if await _within(output.writers_gone, EOF_GRACE):
                # Nobody writes any more; the rest of the group (a child that redirected its
                # output elsewhere) still gets what is left of the grace, then is stopped.
                await self._stop_group(deadline)
                return
        else:
            await self._until_quiet(EOF_GRACE)
        await self._stop_group()
        if output.counting and await _within(output.writers_gone, EOF_GRACE):
            return
        if output.counting:
            await self._name_survivors()
        output.finish_capture()

    async def _stop_group(self, deadline: float | None = None) -> None:
        """Stop what is left of the group once ``deadline`` passed (or await the stop under way)."""
        if self._terminating is not None:
            await self._terminating
            return
        alive = await asyncio.to_thread(self.process.group_alive)
        while alive and deadline is not None and time.monotonic() < deadline:
            await asyncio.sleep(_QUIET_POLL)
            alive = await asyncio.to_thread(self.process.group_alive)
        if alive:  # (a cancel that came meanwhile started the stop: terminate() awaits that one)
            logger.info("[ENHANCED] group %d outlived its leader: terminating", self.process.pgid)
            await self.terminate(escapees=False)  # a normal end names escapees, never kills them

    async def _until_quiet(self, grace: float) -> None:
        """Wait until the group and the run's marked processes are gone, at most ``grace``."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and await asyncio.to_thread(self._anyone_left):
            await asyncio.sleep(_QUIET_POLL)

    def _anyone_left(self) -> bool:
        return self.process.group_alive() or bool(marked_processes(RUN_MARKER_ENV, self.process.run_id))

    async def _name_survivors(self) -> None:
        """Processes outside the group hold the output: name them; kill them on cancel."""
        holders = await asyncio.to_thread(self.output.holders)
        if not holders:
            return
        self.survivors = holders
        kill = self.stopped_by is not None
        logger.warning(
            "! [ENHANCED] pid %d: processes outside its group still hold its output: %s (%s)",
            self.process.pid, holders, "killed" if kill else "left running; the run ends without them",
        )
        if kill:
            for pid in holders:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    async def _pump(self) -> None:
        while (records := await self.output.next_batch(self.chunk_limit * 4)) is not None:
            now = time.monotonic()
            for stream, piece in coalesce(records, self.chunk_limit):
                if isinstance(piece, Span):
                    if self._send_span is not None and await self._send_span(stream, piece):
                        self.output.check_capture()
                        continue
                    text = piece.take_text()  # the session cannot send it from the file now
                else:
                    text = piece
                await self._notify(
                    methods.PROCESS_OUTPUT, {"type": stream, "data": text, "truncated": False}
                )
                # After the send: for Claude the estimator parses stream-json, which must
                # not stand between the CLI's output and the client.
                self.estimator.feed(stream, text, now)
                self.output.check_capture()

    def _backlog(self, stream: str, behind: bool) -> None:
        """The child writes faster than its capture is read: hold it, as a full pipe would."""
        if behind:
            self.process.hold(f"backlog:{stream}")
        else:
            self.process.release(f"backlog:{stream}")

    def _rewritten(self, stream: str, truncated: bool) -> None:
        self.post_notice(
            {
                "kind": "capture_reopened",
                "stream": stream,
                "truncated": truncated,
                "message": f"the process reopened its own {stream} by path for writing "
                '(e.g. "echo x > /dev/stdout"): with capture "file" that truncates it, and output '
                'not yet read is lost; run it with capture "pipe"',
            }
        )

    async def _complete(self, exit_code: int) -> None:
        status = completion_status(exit_code, self.stopped_by)
        duration = self.elapsed_seconds()
        marked = await asyncio.to_thread(marked_processes, RUN_MARKER_ENV, self.process.run_id)
        escaped = sorted({proc.pid for proc in marked} | set(self.survivors) | set(self.process.escapees_killed))
        if status == "completed" and self._on_success is not None:
            # Recorded before the client hears of the end, so its next run can use it.
            await self._on_success(duration, sum(self.output.bytes_read.values()))
        if escaped:
            logger.warning(
                "! [ENHANCED] pid %d left processes outside its group (setsid): %s", self.process.pid, escaped
            )
        logger.info(
            "[PROCESS COMPLETED] pid %d status %s exit %d in %.2f s",
            self.process.pid, status, exit_code, duration,
        )
        # A notice about the output (posted from the reader, as late as its last read)
        # must not lose the race to the end it belongs to.
        await self._notices_sent()
        self._ending = True
        await self._notify(
            methods.PROCESS_COMPLETED,
            {
                "status": status,
                **self.pid_fields,
                "exit_code": exit_code,
                "duration_seconds": round(duration, 6),
                "error": self.failure or _exit_error(exit_code, self.stopped_by, self.timeout),
                "escaped_pids": escaped,
                # Stopped by us (cancel, timeout, shutdown, a job's unwritable log): they were killed.
                "escaped_killed": bool(escaped) and self.stopped_by is not None,
            },
        )
        self._release_disk()
        self._close_output()
        self.finished.set()
