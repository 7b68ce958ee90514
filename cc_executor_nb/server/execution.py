"""One run on the server: a supervised child, its output pump and its completion.

An ``Execution`` sends ``process.started``, then every piece of output in order as
``process.output``, and ``process.completed`` exactly once, after the child exited
and all its output was sent. It never times a stream out: only an explicit total
``timeout`` ends a run early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .. import methods
from ..targets import Progress
from .progress import ProgressEstimator
from .stdin import ChildInput
from .streams import RunOutput, coalesce
from .supervisor import RUN_MARKER_ENV, ManagedProcess
from .watchdog import marked_processes

__all__ = ["Execution", "Notify", "completion_status"]

logger = logging.getLogger("cc_executor_nb.server.execution")

Notify = Callable[[str, dict[str, Any]], Awaitable[int]]

# After the leader exits, stragglers of its group that still hold the pipes get this
# long to finish writing before the group is terminated.
EOF_GRACE = 1.0


def completion_status(exit_code: int, stopped_by: str | None) -> str:
    """The ``process.completed`` status for an exit code and how we stopped it."""
    if stopped_by in ("cancelled", "timeout"):
        return stopped_by
    return "completed" if exit_code == 0 else "failed"


def _exit_error(exit_code: int, stopped_by: str | None, timeout: float | None) -> str | None:
    if stopped_by == "timeout":
        return f"timed out after {timeout:g} s"
    if stopped_by == "cancelled":
        return "cancelled by the client"
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
        self.started_at = time.monotonic()
        self.stopped_by: str | None = None
        self.finished = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._terminating: asyncio.Task[str] | None = None

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

    def begin(self) -> None:
        """Announce the run and start pumping output (after the execute response)."""
        self._spawn(self._run())
        if self.timeout is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.timeout, self._expire)

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

    def terminate(self) -> asyncio.Task[str]:
        """Escalate SIGTERM then SIGKILL on the group, once; returns the task."""
        if self._terminating is None:
            self._terminating = self._spawn(self.process.terminate(self.kill_grace))
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
        self.output.close()

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
        started = {"status": "started", **self.pid_fields, "argv": self.process.argv}
        await self._notify(
            methods.PROCESS_STARTED, {**started, "exec_argv": self.process.exec_argv, **self.settings}
        )
        pump = self._spawn(self._pump())
        exit_code = await self.process.wait()
        await self._close_input()
        await self._await_eof()
        await pump
        if self._timer is not None:
            self._timer.cancel()
        await self._complete(exit_code)

    async def _await_eof(self) -> None:
        """Wait for the pipes to close; stragglers of the group are then terminated.

        A run owns its process group: once the leader has exited and the pipes are
        closed (or held past EOF_GRACE), whatever is left in the group is stopped, so
        no process of a finished run lingers unseen.
        """
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.output.eof.wait(), EOF_GRACE)
        if self._terminating is None and await asyncio.to_thread(self.process.group_alive):
            logger.info("[ENHANCED] group %d outlived its leader: terminating", self.process.pgid)
            await self.terminate()
        await self.output.eof.wait()

    async def _pump(self) -> None:
        while (records := await self.output.next_batch(self.chunk_limit * 4)) is not None:
            now = time.monotonic()
            for stream, text in coalesce(records, self.chunk_limit):
                await self._notify(
                    methods.PROCESS_OUTPUT, {"type": stream, "data": text, "truncated": False}
                )
                # After the send: for Claude the estimator parses stream-json, which must
                # not stand between the CLI's output and the client.
                self.estimator.feed(stream, text, now)

    async def _complete(self, exit_code: int) -> None:
        status = completion_status(exit_code, self.stopped_by)
        duration = self.elapsed_seconds()
        escaped = await asyncio.to_thread(marked_processes, RUN_MARKER_ENV, self.process.run_id)
        if status == "completed" and self._on_success is not None:
            # Recorded before the client hears of the end, so its next run can use it.
            await self._on_success(duration, sum(self.output.bytes_read.values()))
        if escaped:
            logger.warning(
                "! [ENHANCED] pid %d left processes outside its group (setsid): %s",
                self.process.pid, [proc.pid for proc in escaped],
            )
        logger.info(
            "[PROCESS COMPLETED] pid %d status %s exit %d in %.2f s",
            self.process.pid, status, exit_code, duration,
        )
        await self._notify(
            methods.PROCESS_COMPLETED,
            {
                "status": status,
                **self.pid_fields,
                "exit_code": exit_code,
                "duration_seconds": round(duration, 6),
                "error": _exit_error(exit_code, self.stopped_by, self.timeout),
                "escaped_pids": [proc.pid for proc in escaped],
            },
        )
        self.output.close()
        self.finished.set()
