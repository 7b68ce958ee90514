"""Durable jobs from the notebook: the job table, attaching, stopping the job server.

::

    %ccexec --durable -c "python train.py"       # a job that outlives this kernel
    cc_executor_nb.jobs()                         # a table of the jobs, live in a widget
    run = cc_executor_nb.attach("last")           # follow this notebook's newest job
    cc_executor_nb.jobs.list()                    # JobInfo values
    cc_executor_nb.jobs.stop_server()             # cancel every job, stop the job server

``jobs`` is a callable namespace: calling it shows the table, its attributes are the
other operations. Jobs live in the user's job server (:mod:`.jobserver`), or with
``server=URL`` (or ``CCExec.default_server``) in a server started with ``--jobs``.

"This notebook" (for ``attach("last")``) is what :func:`.jobserver.notebook_key` names:
the notebook's path from Jupyter Server (``JPY_SESSION_NAME``), else the kernel's
connection file; both survive a kernel restart. Every durable run records it in its
job's ``meta``, so nothing else is kept on this side.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..claude.summary import cost_of, session_of
from ..client import Client, connect, shown_url
from ..errors import CCExecError, ConnectionLost, HandshakeRefused
from ..server.jobs import removed_message
from . import api
from .config import CCExec
from .html import stale_html
from .jobserver import job_server, notebook_key, stop_server
from .jobsview import jobs_html, jobs_text, rows_of
from .loop import shared_loop
from .run import Run, Target, os_reason, token_from_env, unreachable

__all__ = ["MIN_PREFIX", "JobInfo", "JobsAPI", "JobsTable", "attach", "jobs", "list_jobs", "pick_job"]

REFRESH_SECONDS = 1.0
"""How often a live table asks the job server for news."""
MIN_PREFIX = 4
"""The shortest job id prefix ``attach`` takes: a shorter one would too easily name another job."""
_CALL_TIMEOUT = 30.0
_ACTIVE = frozenset({"running", "paused"})


@dataclass(frozen=True)
class JobInfo:
    """One durable job, as ``jobs.list`` described it."""

    job_id: str
    label: str
    status: str
    """running, paused, completed, failed, cancelled, timeout or lost."""
    exit_code: int | None
    error: str | None
    started_at: float
    """Seconds since the epoch."""
    ended_at: float | None
    kind: str
    """"claude" or "command" (as the starting kernel recorded it)."""
    notebook: str | None
    cost_usd: float | None
    """For Claude jobs, from the result line (None until it came)."""
    session_id: str | None
    """Claude's session id, for Claude jobs that finished."""
    attached: int
    """Connections (kernels, clients) following the job now: 0 when nobody does, so nobody
    will answer its questions (also when the listing did not say)."""
    wire: Mapping[str, Any] = field(repr=False, compare=False)
    """Everything the server said."""
    duration_seconds: float | None = None
    """The process's own duration once it ended (None while it runs, and for a lost job)."""

    @classmethod
    def from_wire(cls, job: Mapping[str, Any]) -> JobInfo:
        """A JobInfo from one ``jobs.list`` entry."""
        meta, summary = _mapping(job.get("meta")), _mapping(job.get("summary"))
        return cls(
            job_id=str(job["job_id"]),
            label=str(job.get("label") or ""),
            status=str(job.get("status") or "?"),
            exit_code=job.get("exit_code") if isinstance(job.get("exit_code"), int) else None,
            error=job.get("error") if isinstance(job.get("error"), str) else None,
            started_at=float(job.get("started_at") or 0.0),
            ended_at=float(job["ended_at"]) if isinstance(job.get("ended_at"), (int, float)) else None,
            kind=str(meta.get("kind") or "command"),
            notebook=meta.get("notebook") if isinstance(meta.get("notebook"), str) else None,
            cost_usd=cost_of(summary),
            session_id=session_of(summary),
            attached=_count(job.get("attached")),
            wire=job,
            duration_seconds=_seconds_or_none(job.get("duration_seconds")),
        )

    @property
    def active(self) -> bool:
        """Whether the job's process still runs (or is paused)."""
        return self.status in _ACTIVE


#: What a live table whose server went away says of the rows it still shows.
_STALE_STATUSES = "the statuses above may be out of date: list the jobs again (%ccexec --jobs)"

#: The user's own job server, in messages.
_LOCAL = "the job server (see %ccexec --jobs)"


def list_jobs(
    *,
    server: str | None = None,
    token: str | None = None,
    token_env: str | None = None,
    settings: CCExec | None = None,
) -> list[JobInfo]:
    """The jobs of the user's job server (or of ``server``), newest first.

    ``token`` and ``token_env`` are :func:`~cc_executor_nb.kernel.api.run`'s: a remote
    server's token, or the variable it is read from (default ``CCExec.token_env``).
    """
    target = _target(settings or api.current_settings(), server, token, token_env)
    return shared_loop().call(_fetch(target), _CALL_TIMEOUT)


def pick_job(jobs: Sequence[JobInfo], wanted: str, notebook: str, where: str = _LOCAL) -> JobInfo:
    """The job ``wanted`` names: "last" (this notebook's newest), an id, or a unique id prefix.

    Raises ValueError saying what matched instead, and ``where`` the jobs were listed.
    """
    if wanted == "last":
        mine = [job for job in jobs if job.notebook == notebook]
        if not mine:
            raise ValueError(f"no job of this notebook ({notebook}) on {where}")
        return max(mine, key=lambda job: job.started_at)
    exact = [job for job in jobs if job.job_id == wanted]
    if not exact and len(wanted) < MIN_PREFIX:
        raise ValueError(f"a job id prefix needs at least {MIN_PREFIX} characters, not {wanted!r} (see %ccexec --jobs)")
    found = exact or [job for job in jobs if job.job_id.startswith(wanted)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"no job {wanted!r} on {where}")
    raise ValueError(f"{wanted!r} matches {len(found)} jobs: give more of the id")


def attach(
    job_id: str = "last",
    *,
    server: str | None = None,
    token: str | None = None,
    token_env: str | None = None,
    wait: bool = False,
    quiet: bool = False,
    display: bool = True,
    settings: CCExec | None = None,
) -> Run:
    """A :class:`Run` that replays the job ``job_id`` ("last", an id or a unique prefix), then follows it.

    Pause, Resume and Cancel act on the job; for a Claude job the Run reads the answer,
    cost and session id as for a fresh run. ``wait`` blocks until the job ends (a
    KeyboardInterrupt cancels it, as for any run). ``server``, ``token`` and ``token_env``
    are :func:`~cc_executor_nb.kernel.api.run`'s. Raises ValueError when no job matches.
    """
    if not isinstance(job_id, str) or not job_id.strip():
        raise ValueError(f'attach takes "last", a job id or a prefix of one, not {job_id!r}')
    settings = settings or api.current_settings()
    target = _target(settings, server, token, token_env)
    listing = shared_loop().call(_fetch(target), _CALL_TIMEOUT)
    try:
        job = pick_job(listing, job_id, notebook_key(), _where(server or settings.default_server))
    except ValueError as exc:
        raise _removed_error(target, listing, job_id) or exc from None
    run = api.follow_job(job.wire, target, settings=settings, quiet=quiet, display=display)
    return run.wait() if wait else run


class JobsTable:
    """The jobs as a table: in a Jupyter front end a widget while a job runs (plain HTML when
    none does, or with ``live=False``), plain text elsewhere.

    ``jobs`` holds the latest :class:`JobInfo` list. A live table asks the server again
    every second while a job runs, then stops; :meth:`refresh` asks once more and
    :meth:`stop` ends the updates. An error that stops them (a refused token, a lost
    server) is kept in ``error`` and shown under the table.
    """

    def __init__(self, target: Target, jobs: list[JobInfo], *, widget: bool, live: bool) -> None:
        self.target = target
        self.jobs = jobs
        self.error: str | None = None
        """Why the live updates stopped, if an error stopped them (a refused token, a lost server)."""
        self._html = widget
        """Whether it shows as HTML (a Jupyter front end): a widget while it follows, else plain HTML."""
        self._widget: Any = None
        self._task: Any = None
        if widget and live and any(job.active for job in jobs):
            # Only a table that updates itself needs a widget: one for every listing of
            # ended jobs kept its comms and HTML in the kernel until the kernel ended.
            import ipywidgets

            self._widget = ipywidgets.HTML(value=self._html_at(time.time()))
            self._task = shared_loop().submit(self._follow())

    @property
    def live(self) -> bool:
        """Whether the table still updates itself."""
        return self._task is not None and not self._task.done()

    def refresh(self) -> JobsTable:
        """Ask the server once more: a live table's widget shows the answer. Returns self
        (the last expression of a cell: shown anew)."""
        self._show(shared_loop().call(_fetch(self.target), _CALL_TIMEOUT))
        return self

    def stop(self) -> None:
        """Stop the live updates."""
        if self._task is not None:
            self._task.cancel()

    def _show(self, jobs: list[JobInfo]) -> None:
        self.jobs = jobs
        self._render(time.time())

    def _render(self, now: float) -> None:
        """Set the widget's value (the state a notebook saves) to the rows at ``now``."""
        if self._widget is not None:
            self._widget.value = self._html_at(now)

    def _html_at(self, now: float) -> str:
        note = "" if self.error is None else f"<div><em>updates stopped: {html.escape(self.error)}</em></div>"
        if self._following():
            note = stale_html(now)  # a table that updates every second says when it no longer does
        return jobs_html(rows_of(self.jobs), now) + note

    def _following(self) -> bool:
        """Whether more updates are due: the live task runs and a job is still active."""
        return self.error is None and self.live and any(job.active for job in self.jobs)

    async def _follow(self) -> None:
        try:
            async with await _connect(self.target) as client:
                while True:
                    await asyncio.sleep(REFRESH_SECONDS)
                    jobs = [JobInfo.from_wire(job) for job in await client.jobs()]
                    self._show(jobs)
                    if not any(job.active for job in jobs):
                        return
        except ConnectionLost as exc:  # the server stopped or died: its jobs may have ended with it
            self._stopped(f"the job server closed the connection ({exc}); {_STALE_STATUSES}")
        except CCExecError as exc:
            self._stopped(str(exc))

    def _stopped(self, reason: str) -> None:
        """The updates stopped on an error: the table says why under the last listing."""
        self.error = reason
        self._show(self.jobs)

    def __repr__(self) -> str:
        return self._text(time.time())

    def _text(self, now: float) -> str:
        text = jobs_text(rows_of(self.jobs), now)
        return text if self.error is None else f"{text}\nupdates stopped: {self.error}"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        now = time.time()
        text = self._text(now)
        if self._widget is None:
            return {"text/html": self._html_at(now), "text/plain": text} if self._html else {"text/plain": text}
        # The widget shows what the text does: a table that no longer follows (its jobs
        # ended, or live=False) kept its last render, e.g. "running 0.0 s", under a current text.
        self._render(now)
        return {**self._widget._repr_mimebundle_(**kwargs), "text/plain": text}


def show_jobs(
    *,
    server: str | None = None,
    token: str | None = None,
    token_env: str | None = None,
    live: bool = True,
    quiet: bool = False,
    settings: CCExec | None = None,
) -> JobsTable:
    """The job table (a widget in a Jupyter front end unless ``quiet``; text otherwise)."""
    settings = settings or api.current_settings()
    target = _target(settings, server, token, token_env)
    listing = shared_loop().call(_fetch(target), _CALL_TIMEOUT)
    return JobsTable(target, listing, widget=api.output_mode(settings, quiet) == "widget", live=live)


class JobsAPI:
    """``cc_executor_nb.jobs``: call it for the table; ``list``, ``attach``, ``stop_server``, ``server``."""

    def __call__(
        self,
        *,
        server: str | None = None,
        token: str | None = None,
        token_env: str | None = None,
        live: bool = True,
        quiet: bool = False,
        settings: CCExec | None = None,
    ) -> JobsTable:
        """The job table (see :func:`show_jobs`)."""
        return show_jobs(server=server, token=token, token_env=token_env, live=live, quiet=quiet, settings=settings)

    list = staticmethod(list_jobs)
    attach = staticmethod(attach)
    stop_server = staticmethod(stop_server)
    server = staticmethod(job_server)

    def __repr__(self) -> str:
        return "<cc_executor_nb.jobs: jobs() shows the table; jobs.list(), jobs.attach(ID), jobs.stop_server()>"


jobs = JobsAPI()
"""The callable namespace exported as ``cc_executor_nb.jobs``."""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _count(value: object) -> int:
    """A count of the listing: a non-negative integer, else 0 (``int("many")`` raised)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _seconds_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _where(remote: str | None) -> str:
    """Where the jobs were listed, and how to list them again, for a message."""
    return f"{shown_url(remote)} (see %ccexec --jobs -s {shown_url(remote)})" if remote else _LOCAL


def _target(settings: CCExec, server: str | None, token: str | None, token_env: str | None = None) -> Target:
    api.check_server_url(server or None)
    if token_env and not token:
        # As run(): an unset variable would connect without a token and read as a wrong one.
        token_from_env(token_env, f"token_env={token_env!r}")
    url = server or settings.default_server
    api.refuse_token_without_server(url, {"token": token, "token_env": token_env})
    if url:
        return api.remote_target(url, token, token_env, settings.token_env)
    return api.job_server_target(settings)


async def _fetch(target: Target) -> list[JobInfo]:
    async with await _connect(target) as client:
        return [JobInfo.from_wire(job) for job in await client.jobs()]


def _removed_error(target: Target, listing: Sequence[JobInfo], wanted: str) -> ValueError | None:
    """Why ``wanted`` (an id or a prefix) names no job when the server removed it lately: the
    job went by retention or the storage limit. None when it names a listed job, or no
    removed one either."""
    if wanted == "last" or len(wanted) < MIN_PREFIX or any(job.job_id.startswith(wanted) for job in listing):
        return None
    removed = shared_loop().call(_fetch_removed(target), _CALL_TIMEOUT)
    found = [gone for gone in removed if str(gone.get("job_id", "")).startswith(wanted)]
    if len(found) != 1:
        return None
    gone = found[0]
    return ValueError(removed_message(str(gone["job_id"]), float(gone["ended_at"]), str(gone["reason"]), time.time()))


async def _fetch_removed(target: Target) -> list[dict[str, Any]]:
    async with await _connect(target) as client:
        return await client.removed_jobs()


async def _connect(target: Target) -> Client:
    """A connection to the job server; a refusal or an unreachable server is a CCExecError in
    run()'s words (a refused token: where it came from)."""
    try:
        return await connect(target.url, target.token, ssl=target.ssl, auto_reconnect=False)
    except HandshakeRefused as exc:
        raise CCExecError(unreachable(target.url, exc, token_hint=target.token_hint)) from None
    except OSError as exc:
        reason = os_reason(target.url, exc)
        raise CCExecError(f"cannot reach the job server at {shown_url(target.url)}: {reason}") from None

