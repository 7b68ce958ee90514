"""Durable jobs: runs the server owns, kept on disk, followed by any number of connections.

``execute`` with ``durable: true`` starts a *job* instead of a session's run. A job
belongs to the server, not to a connection: it goes on when every connection closes,
cleanly or not. Every seq'd notification of its run is appended to the job's log
(:class:`~cc_executor_nb.server.joblog.JobLog`, line N is seq N). A connection
*attaches* to a job (``jobs.attach``, or by starting it) and is then sent the log from
the start (or after ``last_seq``) and everything after it live, at its own pace: each
attached connection has a follower task that reads the log back, so the job never
waits for a slow reader and two readers never wait for each other. A connection
attached to a job controls it: ``control``, ``status``, ``input`` and ``input.close``
act on the job. What the job's stdin is sent is logged too (``process.input``), so a
connection that attaches later knows what was written, whoever wrote it (``execute``'s
``input`` too, which the server writes and closes at the start). A job run with
``stdin_idle_timeout`` closes its stdin once it had no input for that long while no
connection followed it, so a process that waits for input nobody will send ends; one
run with ``stdin_close_on_summary`` closes it right after the first stdout line its
``summary`` matches (a batch's Claude job after its first result). In a job run with
``summary_ends_turn`` an ``input`` with ``turn`` (a conversation's user message) is held while
a turn is under way, whoever sent it, and written after the line that ends that turn, so
follow-ups from several connections each get a turn of their own, in the order received.

The jobs directory (0700, files 0600) is owned by one server at a time (``.lock``,
held with ``flock`` while the server lives, released by the kernel however the server
dies)::

    .lock      ID.json  (the job's record)      ID.log  (its notifications)

Finished jobs are kept ``retention`` seconds (a timer deletes them as they expire, and each
job's end and ``jobs.list`` check), and only while all logs together fit in
``storage_limit`` bytes: the oldest finished jobs are deleted first; a running job and
a job someone follows are never deleted. A job still marked running when a server opens
the directory was left by a server that died (its watchdog killed the processes): it
becomes ``lost`` and its log ends with a ``process.error``. A job whose log cannot be
written (a full disk) is stopped: its output could no longer be kept; it ends ``failed``
after a ``process.error`` that names the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed

from .. import methods, protocol
from ..errors import AlreadyRunning, InvalidParams, LimitReached, MethodNotFound, NoProcessRunning, UnknownJob
from ..protocol import ExecuteParams, JobRequest, command_line
from .execution import Execution, Notify
from .joblog import JobLog, SummaryScanner
from .session import Session
from .stdin import ChildInput

HELD_TURN_RETRY = 0.05
"""Seconds between two tries to write a held turn the process's full input queue refused."""

__all__ = [
    "ACTIVE_STATUSES",
    "JOB_METHODS",
    "TOMBSTONES",
    "Job",
    "JobDesk",
    "JobRecord",
    "JobStore",
    "JobsDirBusy",
    "RunOwner",
    "Tombstone",
    "Window",
    "new_job_id",
    "removed_message",
]

logger = logging.getLogger("cc_executor_nb.server.jobs")

JOB_METHODS = (methods.JOBS_LIST, methods.JOBS_ATTACH)
ACTIVE_STATUSES = frozenset({"running", "paused"})
LOST_ERROR = "the job server stopped while this job ran (its processes were killed)"
#: The refusal of a durable job, or of jobs.*, by a server that keeps none.
NO_JOBS = "this server keeps no durable jobs (start it with --jobs, or --jobs-dir DIR)"
_READ_BUDGET = 1 << 20
#: How many removed job ids a server remembers (in memory: a new server knows none).
TOMBSTONES = 1000
PRUNE_RECHECK = 86400.0
"""The longest the retention timer sleeps (a day): it wakes when the next finished job expires, or then."""
_RECORD_FORMAT = 1


class JobsDirBusy(OSError):
    """Another live server owns the jobs directory."""


class RunOwner(Protocol):
    """What the handler's timers and control methods need: a session, or a job."""

    @property
    def id(self) -> str:
        """The session's or the job's id."""
        ...

    @property
    def execution(self) -> Execution | None:
        """The current (or last) run."""
        ...

    @property
    def running(self) -> bool:
        """True while the run's process lives."""
        ...

    @property
    def inactivity_threshold(self) -> float:
        """Seconds of silence before ``process.status``."""
        ...

    @property
    def last_seq(self) -> int:
        """The seq of the last notification."""
        ...

    async def notify(self, method: str, params: dict[str, Any]) -> int:
        """Send (and keep) a seq'd notification."""
        ...


class Window(Protocol):
    """One connection as the jobs see it (the handler's link)."""

    ws: Any
    session: Session
    job: Job | None


Launch = Callable[[ExecuteParams, Notify, dict[str, Any]], Awaitable[Execution]]
Deferred = list[Callable[[], Awaitable[None]]]
"""Actions run once the reply to the current request went out."""
Timer = Coroutine[Any, Any, None]
Timers = Callable[[RunOwner], list[Timer]]


@dataclass
class JobRecord:
    """What ``ID.json`` holds, and ``jobs.list`` shows (with a few live figures)."""

    job_id: str
    label: str
    argv: list[str]
    cwd: str | None
    started_at: float
    """Wall-clock time (seconds since the epoch)."""
    heartbeat_interval: float
    inactivity_threshold: float
    meta: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    """running, paused, completed, failed, cancelled, timeout or lost."""
    exit_code: int | None = None
    error: str | None = None
    ended_at: float | None = None
    duration_seconds: float | None = None
    pid: int | None = None
    pgid: int | None = None
    summary: dict[str, Any] | None = None
    format: int = _RECORD_FORMAT

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        """A record from its file's contents (KeyError/TypeError when malformed)."""
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        record = cls(**known)
        if not isinstance(record.job_id, str) or not isinstance(record.argv, list):
            raise TypeError("not a job record")
        return record


@dataclass(frozen=True)
class Tombstone:
    """A job the store deleted: enough to say why an id is no longer there."""

    job_id: str
    ended_at: float
    """When the job ended (seconds since the epoch)."""
    removed_at: float
    reason: str
    """"retention" or "storage limit"."""


#: The setting behind each reason for removing a job, in messages.
_REMOVAL_SETTINGS = {"retention": "CCExec.job_retention", "storage limit": "CCExec.job_storage_limit"}


def removed_message(job_id: str, ended_at: float, reason: str, now: float) -> str:
    """``job 'ID' was removed by retention (finished 3 h 05 min ago; CCExec.job_retention)``."""
    setting = _REMOVAL_SETTINGS.get(reason, "CCExec.job_retention")
    return f"job {job_id!r} was removed by {reason} (finished {_age(now - ended_at)} ago; {setting})"


def _age(seconds: float) -> str:
    """A whole age for people: "45 s", "12 min", "3 h 05 min", "2 d 04 h"."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min"
    if total < 86400:
        return f"{total // 3600} h {total % 3600 // 60:02d} min"
    return f"{total // 86400} d {total % 86400 // 3600:02d} h"


class Job:
    """One durable run: its record, its log, the live execution and who follows it."""

    def __init__(self, record: JobRecord, log: JobLog, directory: Path) -> None:
        self.record = record
        self.log = log
        self.directory = directory
        self.execution: Execution | None = None
        self.followers = 0
        """How many connections follow the job now (they started or attached it and are still open)."""
        self.scanner: SummaryScanner | None = None
        self.input_at = time.monotonic()
        """When the job's stdin was last written to (or the job started, or was last followed)."""
        self.ok_exit_codes: frozenset[int] = frozenset()
        """Exit codes that end the job ``completed`` once its input was closed (``input``'s
        ``ok_exit_codes``: claude exits 1 after an interrupted last turn, an end as asked)."""
        self.input_closed = False
        self.close_on_summary = False
        """Close the stdin once a stdout line matched the summary (``stdin_close_on_summary``)."""
        self.summary_ends_turn = False
        """A line matching the summary ends a turn, an input begins one (``summary_ends_turn``)."""
        self._matches_at_input = 0
        self._turn_open = False
        """A turn began with an ``input`` that carried ``turn`` and no line matched the summary since."""
        self._held_turns: deque[tuple[bytes, frozenset[int] | None]] = deque()
        """Inputs with ``turn`` that wait for the turn under way to end, in the order received."""
        self._close_held = False
        """An ``input.close`` came while turns were held: the input is closed after the last one."""
        self._retry: asyncio.TimerHandle | None = None
        """The next try to write the first held turn, which the process's full input queue refused."""
        self._on_room: dict[object, Callable[[], None]] = {}
        """Whom to tell that the held turns shrank (their ``input`` was refused: too much held)."""
        self._grew: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- RunOwner ----------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The job id (unguessable: 128 random bits)."""
        return self.record.job_id

    @property
    def running(self) -> bool:
        """True while the job's process lives."""
        return self.execution is not None and not self.execution.finished.is_set()

    @property
    def inactivity_threshold(self) -> float:
        """The run's inactivity threshold."""
        return self.record.inactivity_threshold

    @property
    def last_seq(self) -> int:
        """The seq of the job's last notification."""
        return self.log.last_seq

    @property
    def finished(self) -> bool:
        """Whether the job reached a final status."""
        return self.record.status not in ACTIVE_STATUSES

    async def notify(self, method: str, params: dict[str, Any]) -> int:
        """Number, log and announce one notification of the job's run."""
        return self.append(method, params)

    def append(self, method: str, params: dict[str, Any]) -> int:
        """Log one notification with the next seq and wake the followers.

        Once the log cannot be written, output is dropped (it could not be kept, and the
        job is being stopped); the other notifications are kept in memory to the end.
        """
        failed = self.log.error is not None
        if failed and method == methods.PROCESS_OUTPUT:
            return self.log.last_seq
        seq = self.log.last_seq + 1
        line = protocol.dumps_bytes(protocol.notification(method, {**params, "seq": seq})) + b"\n"
        self.log.append(line)
        matches = self.scanner.matches if self.scanner is not None else 0
        self._observe(method, params)
        grew, self._grew = self._grew, None
        if grew is not None and not grew.done():
            grew.set_result(None)
        if not failed and self.log.error is not None:
            self._log_failed(self.log.error)
        if method == methods.PROCESS_OUTPUT and self.close_on_summary and self._summary_matched():
            self._close_input_on_summary()  # after the line that matched is logged and its followers woken
        if self.scanner is not None and self.scanner.matches > matches:
            self._turn_ended()  # after the line that ended the turn is logged: the next turn's input comes after it
        return seq

    def grew(self) -> asyncio.Future[None]:
        """A future resolved when the next notification is logged."""
        if self._grew is None or self._grew.done():
            self._grew = asyncio.get_running_loop().create_future()
        return self._grew

    def record_input(self, text: str) -> None:
        """Log what an ``input`` request queued for the job's stdin (``process.input``)."""
        self.input_at = time.monotonic()
        if text and self.scanner is not None:
            self._matches_at_input = self.scanner.matches
        self.append(methods.PROCESS_INPUT, {"data": text})

    def record_input_closed(self, reason: str) -> None:
        """Log that the job's stdin is being closed (``input.close``, or the idle timeout)."""
        self.input_at = time.monotonic()
        self.input_closed = True
        self.append(methods.PROCESS_INPUT, {"data": "", "closed": True, "reason": reason})

    # -- Turns (summary_ends_turn) ---------------------------------------------------------

    def takes_turns(self, stdin: ChildInput) -> bool:
        """Whether an ``input`` with ``turn`` is held while a turn is under way (else written at once)."""
        return self.summary_ends_turn and self.execution is not None and self.execution.stdin is stdin

    def begin_turn(self, stdin: ChildInput, data: bytes, ok_exit_codes: frozenset[int] | None) -> int:
        """An input that begins a turn: written now when no turn is under way and none waits,
        else held until the turns before it ended. Returns how many inputs are held now."""
        if self._turn_open or self._held_turns:
            self._hold_turn(stdin, data, ok_exit_codes)
        else:
            self._write_turn(stdin, data, ok_exit_codes)
        return len(self._held_turns)

    def close_after_turns(self, stdin: ChildInput, *, after_turn: bool = False) -> bool:
        """``input.close``: True when turns are held, or with ``after_turn`` one is under way (the
        input is closed after the last one ends)."""
        waits = self._held_turns or (after_turn and self._turn_open and self.takes_turns(stdin))
        if waits and not stdin.closing:
            self._close_held = True
            return True
        return False

    def _hold_turn(self, stdin: ChildInput, data: bytes, ok_exit_codes: frozenset[int] | None) -> None:
        if stdin.closed or self._close_held:
            raise NoProcessRunning("the process's input is closed")
        held = sum(len(text) for text, _ in self._held_turns)
        if held + len(data) > stdin.limit:
            raise LimitReached(f"input queue full: {held} bytes wait for the turn under way to end "
                               f"(limit {stdin.limit})", {"queued_bytes": held, "limit": stdin.limit})
        self._held_turns.append((data, ok_exit_codes))
        self.input_at = time.monotonic()

    def when_room(self, key: object, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when the held turns shrink (one is written, or they are
        dropped): an ``input`` with ``turn`` refused for too much held may go again. One per
        ``key`` (a connection); now, if none is held."""
        self._on_room[key] = callback
        if not self._held_turns:
            self._tell_room()

    def _tell_room(self) -> None:
        callbacks = list(self._on_room.values())
        self._on_room.clear()
        for callback in callbacks:
            callback()

    def _write_turn(self, stdin: ChildInput, data: bytes, ok_exit_codes: frozenset[int] | None) -> None:
        stdin.write(data)
        if ok_exit_codes is not None:
            self.ok_exit_codes = ok_exit_codes
        self._turn_open = True
        self.record_input(data.decode("utf-8"))  # logged before the child can read it, as any input

    def _turn_ended(self) -> None:
        """A line matched the summary: the turn under way ended; the next held input begins the next."""
        self._turn_open = False
        execution = self.execution
        stdin = execution.stdin if execution is not None else None
        if stdin is None or stdin.closed:
            self._held_turns.clear()
            self._tell_room()
            return
        if self._retry is not None:
            return  # the first held turn waits for room: it is written then, and no other before it
        if self._held_turns:
            self._write_held(stdin)
        elif self._close_held:
            self._close_held = False
            self.record_input_closed("input.close")
            stdin.close()

    def _write_held(self, stdin: ChildInput) -> None:
        """Write the first held turn; while the process's input queue has no room for it (input it
        has not read yet), try again every :data:`HELD_TURN_RETRY` seconds. Never raises: this
        runs inside the log's append."""
        data, ok_exit_codes = self._held_turns[0]
        try:
            self._write_turn(stdin, data, ok_exit_codes)
        except LimitReached:
            self._turn_open = True  # a later turn input waits behind this one
            self._retry = asyncio.get_running_loop().call_later(HELD_TURN_RETRY, self._retry_held, stdin)
            return
        except NoProcessRunning:
            self._held_turns.clear()  # its input closed meanwhile: nothing will read them
            self._tell_room()
            return
        self._held_turns.popleft()
        self._tell_room()

    def _retry_held(self, stdin: ChildInput) -> None:
        self._retry = None
        execution = self.execution
        if not self._held_turns or execution is None or execution.stdin is not stdin:
            return
        if stdin.closed:
            self._held_turns.clear()
            self._tell_room()
            return
        self._write_held(stdin)

    def _summary_matched(self) -> bool:
        return self.scanner is not None and self.scanner.summary is not None

    def _close_input_on_summary(self) -> None:
        """The summary matched (a Claude job's first result): close the stdin, once."""
        self.close_on_summary = False
        execution = self.execution
        stdin = execution.stdin if execution is not None else None
        if stdin is None or stdin.closing:
            return
        logger.info("x [JOBS] job %s: its output matched its summary: closing its stdin", self.id)
        self.record_input_closed("stdin_close_on_summary")
        stdin.close()

    async def close_input_when_unattended(self, timeout: float) -> None:
        """Close the run's stdin once it had no input for ``timeout`` s while no connection
        followed the job (a timer of the job's run)."""
        execution = self.execution
        stdin = execution.stdin if execution is not None else None
        if stdin is None:
            return
        poll = max(0.05, min(1.0, timeout / 4))
        while not stdin.closed:
            now = time.monotonic()
            if self.followers:
                self.input_at = max(self.input_at, now)
            elif now - self.input_at >= timeout:
                logger.info("x [JOBS] job %s: no input for %g s, nobody attached: closing its stdin", self.id, timeout)
                self.record_input_closed("stdin_idle_timeout")
                stdin.close()
                return
            await asyncio.sleep(poll)

    def _log_failed(self, error: OSError) -> None:
        """The log cannot be written: what the job does from now on could not be kept, so it ends."""
        reason = f"the job's log could not be written: {error.strerror or error}"
        logger.warning("! [JOBS] job %s: %s; stopping it", self.id, reason)
        self.append(methods.PROCESS_ERROR, {"error": reason})
        if self.execution is not None and self.running:
            self.execution.fail(reason)

    # -- State ---------------------------------------------------------------------------

    def _observe(self, method: str, params: dict[str, Any]) -> None:
        record = self.record
        if method == methods.PROCESS_OUTPUT and self.scanner is not None and params.get("type") == "stdout":
            self.scanner.feed(str(params.get("data", "")))
        elif method == methods.PROCESS_STARTED:
            record.pid, record.pgid = params.get("pid"), params.get("pgid")
        elif method in (methods.PROCESS_PAUSED, methods.PROCESS_RESUMED) and not self.finished:
            record.status = "paused" if method == methods.PROCESS_PAUSED else "running"
        elif method == methods.PROCESS_COMPLETED:
            self._complete(params)

    def _complete(self, params: dict[str, Any]) -> None:
        record = self.record
        if self.scanner is not None:
            self.scanner.finish()
            record.summary = self.scanner.summary
        record.status = str(params.get("status", "failed"))
        record.exit_code = params.get("exit_code")
        record.error = params.get("error")
        if self._ended_as_asked(record) or self._timed_out_between_turns(record):
            record.status, record.error = "completed", None
        record.duration_seconds = params.get("duration_seconds")
        record.ended_at = time.time()

    def _ended_as_asked(self, record: JobRecord) -> bool:
        """The process exited with a code its client called normal after its input was closed
        (the log keeps the process's own ``failed``; the record says how the job ended)."""
        return (record.status == "failed" and self.input_closed
                and record.exit_code in self.ok_exit_codes)

    def _timed_out_between_turns(self, record: JobRecord) -> bool:
        """(``summary_ends_turn``) The timeout passed after a line matching the summary ended a
        turn and before an input began the next: nothing was cut (the log keeps ``timeout``)."""
        return (record.status == "timeout" and self.summary_ends_turn and self.scanner is not None
                and self.scanner.matches > self._matches_at_input)

    def info(self) -> dict[str, Any]:
        """The job as ``jobs.list`` shows it."""
        record = asdict(self.record)
        record.pop("format", None)
        if self.scanner is not None and not self.finished:
            record["summary"] = self.scanner.summary
        silent = round(self.execution.inactive_seconds(), 3) if self.running and self.execution else None
        return {**record, "last_seq": self.last_seq, "log_bytes": self.log.size, "attached": self.followers,
                "inactive_seconds": silent}

    def save(self) -> None:
        """Write the record (atomically: a reader never sees half of it)."""
        path = self.directory / f"{self.id}.json"
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(self.record), handle)
        os.replace(temporary, path)

    def delete(self) -> None:
        """Remove the job's files."""
        self.log.delete()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / f"{self.id}.json")

    # -- Running ---------------------------------------------------------------------

    def start(self, execution: Execution, timers: list[Timer], on_end: Callable[[Job], None]) -> None:
        """Own ``execution``: run the timers while it lives, then record the end."""
        self.execution = execution
        self._task = asyncio.ensure_future(self._supervise(execution, timers, on_end))

    async def _supervise(
        self, execution: Execution, timers: list[Timer], on_end: Callable[[Job], None]
    ) -> None:
        tasks = [asyncio.ensure_future(timer) for timer in timers]
        try:
            await execution.finished.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            on_end(self)

    async def wait_finished(self, timeout: float | None) -> bool:
        """Wait for the run's end; False if it did not come within ``timeout`` (None: no limit)."""
        if self._task is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            return False
        return True

    def mark_lost(self, now: float) -> None:
        """The server that ran this job died with it: say so in the log and the record.

        It ended when its log last changed (a job logs its silence too, every inactivity
        threshold), read before our own line changes it, not when this server started.
        """
        died = _lost_at(self.record.started_at, self.log.modified_at, now)
        self.append(methods.PROCESS_ERROR, {"error": LOST_ERROR})
        record = self.record
        record.status, record.error = "lost", LOST_ERROR
        record.ended_at = record.ended_at or died


def _log_cut_short(log: JobLog) -> bool:
    """Whether a finished job's log ends on a notification that is not its last word
    (``process.completed`` or ``process.error``): its end could not be written."""
    last = log.last_seq
    lines = log.read(last - 1, 1) if last else []
    try:
        message = json.loads(lines[0]) if lines else None
    except ValueError:
        return False  # not a log this server wrote: left as it is
    method = message.get("method") if isinstance(message, dict) else None
    return isinstance(method, str) and method not in (methods.PROCESS_COMPLETED, methods.PROCESS_ERROR)


class JobStore:
    """The jobs of one directory: created, loaded, listed, pruned."""

    def __init__(self, directory: str | os.PathLike[str], *, retention: float, storage_limit: int) -> None:
        self.directory = Path(directory)
        self.retention = retention
        self.storage_limit = storage_limit
        self.jobs: dict[str, Job] = {}
        self.removed: dict[str, Tombstone] = {}
        """The last TOMBSTONES jobs deleted by :meth:`prune`, oldest first (in memory only)."""
        self._lock_fd: int | None = None

    # -- Lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Take the directory (JobsDirBusy if another live server has it) and load its jobs."""
        if self._lock_fd is not None:
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.directory, 0o700)  # outputs may hold secrets: the owner's alone
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JobsDirBusy(f"another job server owns {self.directory}") from None
        self._lock_fd = fd
        for leftover in self.directory.glob("*.tmp"):  # a record half-saved by a server that died
            leftover.unlink(missing_ok=True)
        for path in sorted(self.directory.glob("*.json")):
            self._load(path)
        self.prune(time.time())

    def close(self) -> None:
        """Close every log and release the directory. Idempotent."""
        for job in self.jobs.values():
            job.log.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _load(self, path: Path) -> None:
        try:
            record = JobRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("! [JOBS] ignoring unreadable job record %s: %s", path.name, exc)
            return
        if path.stem != record.job_id:
            logger.warning("! [JOBS] ignoring %s: it names job %r", path.name, record.job_id)
            return
        job = Job(record, JobLog(path.with_suffix(".log")), self.directory)
        if record.status in ACTIVE_STATUSES:
            job.mark_lost(time.time())
            with contextlib.suppress(OSError):
                job.save()
            logger.warning("! [JOBS] job %s was left running by a server that died: lost", record.job_id)
        elif _log_cut_short(job.log):
            # Its end could not be written (a full disk): followers would wait for ever.
            job.append(methods.PROCESS_ERROR, {"error": record.error or "the job's log ends before its end"})
        job.log.close()
        self.jobs[record.job_id] = job

    # -- Jobs ------------------------------------------------------------------------

    def create(self, spec: ExecuteParams, request: JobRequest, timing: dict[str, float]) -> Job:
        """A new job record and an empty log (not yet running)."""
        job_id = new_job_id()
        record = JobRecord(
            job_id=job_id,
            label=request.label if request.label is not None else command_line(spec.argv),
            argv=list(spec.argv),
            cwd=spec.cwd,
            started_at=time.time(),
            heartbeat_interval=timing["heartbeat_interval"],
            inactivity_threshold=timing["inactivity_threshold"],
            meta=dict(request.meta),
        )
        job = Job(record, JobLog(self.directory / f"{job_id}.log", fresh=True), self.directory)
        if request.summary is not None:
            job.scanner = SummaryScanner(request.summary)
        job.close_on_summary = request.stdin_close_on_summary
        job.summary_ends_turn = request.summary_ends_turn
        self.jobs[job_id] = job
        return job

    def discard(self, job: Job) -> None:
        """Forget a job that never started (its process could not be spawned)."""
        self.jobs.pop(job.id, None)
        job.delete()

    def get(self, job_id: str) -> Job | None:
        """The job with this id, if kept."""
        return self.jobs.get(job_id)

    def listing(self) -> list[Job]:
        """Every kept job, newest first."""
        return sorted(self.jobs.values(), key=lambda job: job.record.started_at, reverse=True)

    @property
    def running_count(self) -> int:
        """How many jobs run now."""
        return sum(1 for job in self.jobs.values() if job.running)

    def prune(self, now: float) -> list[str]:
        """Delete finished jobs past the retention, then the oldest while over the size limit."""
        idle = [job for job in self.jobs.values() if job.finished and not job.running and not job.followers]
        idle.sort(key=lambda job: job.record.ended_at or job.record.started_at)
        total = sum(job.log.size for job in self.jobs.values())
        deleted = []
        for job in idle:
            ended = job.record.ended_at or job.record.started_at
            if ended < now - self.retention or total > self.storage_limit:
                reason = "retention" if ended < now - self.retention else "storage limit"
                total -= job.log.size
                self.jobs.pop(job.id, None)
                job.delete()
                self._bury(Tombstone(job.id, ended, now, reason))
                deleted.append(job.id)
        if deleted:
            logger.info("x [JOBS] deleted %d finished jobs (retention or storage limit)", len(deleted))
        return deleted

    def next_expiry(self) -> float | None:
        """When the first finished job nobody follows passes the retention (epoch seconds), if any."""
        ends = [job.record.ended_at or job.record.started_at for job in self.jobs.values()
                if job.finished and not job.running and not job.followers]
        return min(ends) + self.retention if ends else None

    def _bury(self, tombstone: Tombstone) -> None:
        """Remember a deleted job, forgetting the oldest beyond TOMBSTONES."""
        self.removed[tombstone.job_id] = tombstone
        while len(self.removed) > TOMBSTONES:
            del self.removed[next(iter(self.removed))]

    def unknown(self, job_id: str, now: float) -> UnknownJob:
        """The error for an id the store does not hold: removed (and why), or never known."""
        gone = self.removed.get(job_id)
        if gone is None:
            return UnknownJob(f"no job {job_id!r} on this server (finished jobs are kept a while only)")
        return UnknownJob(removed_message(job_id, gone.ended_at, gone.reason, now))


class JobDesk:
    """The protocol side of jobs: durable ``execute``, ``jobs.list``, ``jobs.attach``, followers.

    Without a store (no jobs directory) it refuses ``durable: true`` (-32602) and
    answers ``jobs.*`` with -32601.
    """

    def __init__(
        self,
        store: JobStore | None,
        *,
        launch: Launch,
        timers: Timers,
        heartbeat_interval: float,
        inactivity_threshold: float,
        min_interval: float,
        stop_grace: float,
    ) -> None:
        self.store = store
        self._launch = launch
        self._timers = timers
        self._heartbeat_interval = heartbeat_interval
        self._inactivity_threshold = inactivity_threshold
        self._min_interval = min_interval
        self._stop_grace = stop_grace
        self._followers: dict[Window, asyncio.Task[None]] = {}
        self._prune_timer: asyncio.TimerHandle | None = None
        self._shutting_down = False

    @property
    def methods(self) -> tuple[str, ...]:
        """The ``jobs.*`` methods this server offers (for ``capabilities``)."""
        return JOB_METHODS if self.store is not None else ()

    @property
    def running_count(self) -> int:
        """How many jobs run now."""
        return self.store.running_count if self.store is not None else 0

    def claims(self, method: str, params: Any) -> bool:
        """Whether this request is the desk's: ``jobs.*`` or a durable ``execute``."""
        return method in JOB_METHODS or (method == methods.EXECUTE and protocol.wants_job(params))

    async def answer(self, link: Window, method: str, params: Any, deferred: Deferred) -> Any:
        """Handle a claimed request (raises the protocol errors)."""
        if method == methods.EXECUTE:
            return await self._execute(link, params, deferred)
        store = self._store()
        if method == methods.JOBS_LIST:
            removed = protocol.validate_jobs_list(params)
            self._prune()
            listing: dict[str, Any] = {"jobs": [job.info() for job in store.listing()]}
            if removed:
                listing["removed"] = [asdict(gone) for gone in reversed(store.removed.values())]
            return listing
        return self._attach(link, store, params, deferred)

    def status_fields(self, link: Window) -> dict[str, Any]:
        """Extra ``status`` fields on a connection attached to a job."""
        if link.job is None:
            return {}
        return {"session_id": link.session.id, "job_id": link.job.id}

    def leave(self, link: Window) -> None:
        """The connection closed: stop following its job."""
        task = self._followers.pop(link, None)
        if task is not None:
            task.cancel()
        job, link.job = link.job, None
        if job is not None:
            job.followers -= 1
            if job.finished and not job.followers:
                job.log.close()
                self._schedule_prune()  # it may expire now that nobody follows it

    def open(self) -> None:
        """Take the jobs directory (raises JobsDirBusy); on a running loop, start the retention timer."""
        if self.store is not None:
            self.store.open()
            self._shutting_down = False
            self._schedule_prune()

    def _prune(self) -> None:
        """Apply the retention and the storage limit now; the timer then waits for the next expiry."""
        if self.store is None:
            return
        try:
            self.store.prune(time.time())
        except OSError as exc:  # a file that cannot be removed: the job is forgotten, the timer goes on
            logger.warning("! [JOBS] could not delete an expired job's files: %s", exc)
        self._schedule_prune()

    def _schedule_prune(self) -> None:
        """Wake when the next finished job expires (at most :data:`PRUNE_RECHECK` s on), so expired
        jobs go without any request: an idle server kept them until a job ended or ``jobs.list``."""
        self._cancel_prune()
        expiry = self.store.next_expiry() if self.store is not None else None
        if expiry is None or self._shutting_down:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a store opened outside a loop (tests): pruned on requests only
            return
        delay = min(max(expiry - time.time(), 0.0) + 0.01, PRUNE_RECHECK)  # prune() wants it strictly past
        self._prune_timer = loop.call_later(delay, self._prune)

    async def shutdown(self) -> None:
        """Cancel every running job, wait for their ends to be logged, release the directory."""
        store = self.store
        if store is None:
            return
        self._shutting_down = True  # the jobs' ends set no new timer: the directory is released
        self._cancel_prune()
        running = [job for job in store.jobs.values() if job.running]
        if running:
            logger.info("x [JOBS] stopping: cancelling %d running jobs", len(running))
        for job in running:
            assert job.execution is not None
            await job.execution.cancel("shutdown")
        await asyncio.gather(*(job.wait_finished(self._stop_grace) for job in running))
        for task in list(self._followers.values()):
            task.cancel()
        await asyncio.gather(*self._followers.values(), return_exceptions=True)
        store.close()

    def _cancel_prune(self) -> None:
        if self._prune_timer is not None:
            self._prune_timer.cancel()
            self._prune_timer = None

    # -- Methods -----------------------------------------------------------------------

    def _store(self) -> JobStore:
        if self.store is None:
            raise MethodNotFound(NO_JOBS)
        return self.store

    async def _execute(self, link: Window, params: Any, deferred: Deferred) -> dict[str, Any]:
        if self.store is None:
            raise InvalidParams(NO_JOBS, "durable")
        spec = protocol.validate_execute(params, self._min_interval)
        request = protocol.validate_job_request(params)
        _check_fresh(link)
        timing = {
            "heartbeat_interval": spec.heartbeat_interval or self._heartbeat_interval,
            "inactivity_threshold": spec.inactivity_threshold or self._inactivity_threshold,
        }
        job = self.store.create(spec, request, timing)
        try:
            job.save()
            execution = await self._launch(spec, job.notify, {**timing, "job_id": job.id})
        except BaseException:
            self.store.discard(job)
            raise
        timers = self._timers(job)
        if spec.stdin_idle_timeout is not None:
            timers.append(job.close_input_when_unattended(spec.stdin_idle_timeout))
        job.start(execution, timers, self._ended)
        logger.info("= [JOBS] job %s started: pid %d", job.id, execution.process.pid)
        self._follow(link, job, 0, deferred)
        deferred.append(execution.begin)
        if spec.input is not None:
            deferred.append(functools.partial(_record_execute_input, job, spec.input))
        return {"status": "started", **execution.pid_fields, "job_id": job.id}

    def _attach(
        self, link: Window, store: JobStore, params: Any, deferred: Deferred
    ) -> dict[str, Any]:
        spec = protocol.validate_job_attach(params)
        # The connection first, then the job, as a durable execute checks it before starting
        # one: -32007 says the job is gone, which a client must not read on a connection that
        # could attach to nothing at all (-32005: use another).
        _check_fresh(link)
        job = store.get(spec.job_id)
        if job is None:
            raise store.unknown(spec.job_id, time.time())
        if spec.last_seq > job.last_seq:
            raise InvalidParams("last_seq is ahead of the job", "last_seq")
        self._follow(link, job, spec.last_seq, deferred)
        logger.info("= [JOBS] session %s attached to job %s after seq %d", link.session.id, job.id, spec.last_seq)
        return {"status": "attached", "job_id": job.id, "last_seq": job.last_seq, "job": job.info()}

    def _follow(self, link: Window, job: Job, after: int, deferred: Deferred) -> None:
        link.job = job
        job.followers += 1
        link.session.update_settings(job.record.heartbeat_interval, job.inactivity_threshold)
        link.session.last_seq = after

        async def start() -> None:
            if link.job is job:  # the connection may have closed before the reply went out
                self._followers[link] = asyncio.ensure_future(_follow(link, job, after))

        deferred.append(start)

    def _ended(self, job: Job) -> None:
        try:
            job.save()
        except OSError as exc:  # a full disk, most likely: one line, no traceback
            logger.warning("! [JOBS] could not save job %s: %s", job.id, exc)
        if not job.followers:
            job.log.close()
        logger.info("[JOBS] job %s %s", job.id, job.record.status)
        self._prune()


def _check_fresh(link: Window) -> None:
    """Jobs are attached on a connection that runs nothing itself and follows no job."""
    if link.job is not None:
        raise AlreadyRunning(f"this connection already follows job {link.job.id}; use another connection")
    if link.session.execution is not None:
        raise AlreadyRunning("this connection has run a process itself; use another connection for jobs")


async def _follow(link: Window, job: Job, after: int) -> None:
    """Send the job's log after ``after``, then each new notification, at the connection's pace."""
    cursor = after
    try:
        while True:
            grew = job.grew()
            lines = job.log.read(cursor, _READ_BUDGET)
            if not lines:
                # Shielded: the future is shared, and cancelling one follower must not
                # cancel it for the others.
                await asyncio.shield(grew)
                continue
            # What a request on this connection made the job log is sent after its answer.
            await link.session.answered.wait()
            for line in lines:
                await link.ws.send(line[:-1], text=True)
            cursor += len(lines)
            link.session.last_seq = cursor  # heartbeats on this connection carry the job's seq
    except (ConnectionClosed, OSError) as exc:  # the connection closed, or the log is unreadable
        logger.debug("[JOBS] stopped following job %s: %r", job.id, exc)


def _lost_at(started_at: float, log_changed_at: float | None, now: float) -> float:
    """When a lost job ended: its log's last change, if that lies between its start and now."""
    if log_changed_at is None:
        return started_at
    return min(max(log_changed_at, started_at), now)


def new_job_id() -> str:
    """A random URL-safe job id that starts with a letter or digit: one that started with
    ``-`` (1 in 64) read as an option in ``%ccexec --attach ID``."""
    while True:
        job_id = secrets.token_urlsafe(16)
        if job_id[0].isalnum():
            return job_id


async def _record_execute_input(job: Job, data: bytes) -> None:
    """Log ``execute``'s ``input``, which the server wrote and closed at the start, as an
    ``input`` and an ``input.close`` are logged (after ``process.started``)."""
    if data:
        job.record_input(data.decode("utf-8"))
    job.record_input_closed("input.close")
