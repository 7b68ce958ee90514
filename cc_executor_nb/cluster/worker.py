"""The worker side of Dask placement: an enhanced handler per worker, and the task of one run.

:class:`HandlerPlugin` is a ``distributed`` worker plugin. On each worker it starts an
enhanced handler (:func:`~cc_executor_nb.server.config.build_server`, with a private jobs
directory) on a loop thread of its own (:class:`~cc_executor_nb.kernel.loop.KernelLoop`):

- a worker on a loopback address (a ``LocalCluster``) binds 127.0.0.1;
- a worker whose Dask comms use TLS (``tls://``: ``distributed.security.Security``)
  binds the worker's own address and speaks ``wss://`` with the worker's Dask TLS
  certificate, requiring a client certificate of the cluster's CA (as Dask does);
- any other worker (plain TCP on a non-loopback address) refuses, unless the plugin was
  made with ``allow_plaintext=True`` (the token then crosses the network in clear).

Every handler checks the same token, made by the notebook for the cluster. The plugin's
teardown (the worker closing, the plugin removed) stops the handler, which kills its
runs' process groups; a worker killed outright takes them with it through the
handler's watchdog.

:func:`run_on_worker` is the task of one run. It builds the run's command on the worker
(its own claude executable, its own Python), starts it as a durable job on the local
handler, logs a Dask event ``{"index", "job_id", "url", "worker", "pid", "key"}`` on the batch's topic
so the notebook attaches to the job, then follows the job to its end and returns its
outcome. A run that cannot start (the handler refuses it, a missing program for
instance) is an outcome too, with ``job_id`` None and the handler's one-line error: a
task's exception would print a ``distributed`` traceback in the notebook's output. The
task, and with it the worker resources it holds, lives as long as the run.
A Claude conversation (``Recipe.interactive``) runs the CLI in host mode with its stdin
piped: the notebook's run writes the prompt and the answers once attached, and the task
awaits the job's end on the handler instead of following it (a following connection would
keep the job's ``stdin_idle_timeout`` from closing an input nobody writes any more).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from distributed.diagnostics.plugin import WorkerPlugin

from ..claude.command import ResumeSettings, claude_command, claude_host_command
from ..claude.options import ClaudeOptions
from ..client import connect
from ..errors import CCExecError, ConnectionLost, NoProcessRunning, ProtocolError
from ..events import Completed, ProcessError
from ..kernel.loop import KernelLoop
from ..server.access import is_loopback
from ..server.config import ServerSettings, build_server

__all__ = ["HandlerPlugin", "HandlerState", "Recipe", "run_on_worker"]

logger = logging.getLogger("cc_executor_nb.cluster")

_WATCH_INTERVAL = 0.5
"""Seconds between two looks at a job whose task Dask may withdraw (:func:`_stop_if_unwanted`)."""


@dataclass(frozen=True)
class HandlerState:
    """A worker's running handler: where it listens, and its loop."""

    url: str
    loop: KernelLoop
    server: Any
    jobs_dir: str
    ssl: Any = None
    """The client TLS context the worker's own tasks connect with (its Dask worker certificate)."""


class HandlerPlugin(WorkerPlugin):
    """Starts an enhanced handler on each worker (see the module docstring)."""

    def __init__(self, token: str, *, allow_plaintext: bool = False, kill_grace: float = 5.0) -> None:
        self.token = token
        self.allow_plaintext = allow_plaintext
        self.kill_grace = kill_grace
        self.state: HandlerState | None = None
        self.error: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        # What travels to the workers: the settings, never a running handler.
        return {"token": self.token, "allow_plaintext": self.allow_plaintext, "kill_grace": self.kill_grace,
                "state": None, "error": None}

    async def setup(self, worker: Any) -> None:
        """Start the handler on its own thread (the worker's loop is not blocked)."""
        try:
            self.state = await asyncio.to_thread(self._start, worker.address, worker.security)
        except Exception as exc:  # the task reports it; the worker itself is fine
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("! could not start the cc_executor_nb handler on %s", worker.address)

    async def teardown(self, worker: Any) -> None:
        """Stop the handler: its runs' process groups are killed, its jobs directory removed."""
        state, self.state = self.state, None
        if state is not None:
            await asyncio.to_thread(_stop, state)

    def _start(self, address: str, security: Any) -> HandlerState:
        host, ssl = self._binding(address, security)
        client_ssl = security.get_connection_args("worker")["ssl_context"] if ssl is not None else None
        jobs_dir = tempfile.mkdtemp(prefix="cc-executor-worker-jobs-")
        settings = ServerSettings(token=self.token, jobs_dir=jobs_dir, history_path=None, kill_grace=self.kill_grace)
        loop = KernelLoop(thread_name="cc_executor_nb-worker").start()
        try:
            server = build_server(settings)
            loop.call(server.start(host, 0, ssl=ssl), timeout=60.0)
        except BaseException:
            loop.stop()
            shutil.rmtree(jobs_dir, ignore_errors=True)
            raise
        return HandlerState(server.url, loop, server, jobs_dir, client_ssl)

    def _binding(self, address: str, security: Any) -> tuple[str, Any]:
        """Where to listen and with which TLS context, from the worker's Dask address."""
        scheme = address.split("://", 1)[0] if "://" in address else "tcp"
        if scheme == "inproc":
            return "127.0.0.1", None
        host = urlsplit(address).hostname or "127.0.0.1"
        if scheme == "tls":
            return host, security.get_listen_args("worker")["ssl_context"]
        if is_loopback(host):
            return "127.0.0.1", None
        if self.allow_plaintext:
            return host, None
        raise RuntimeError(
            f"the worker listens on {address} without TLS: give the cluster Dask TLS security "
            "(distributed.security.Security), or allow plain connections with allow_plaintext=True"
        )


def _stop(state: HandlerState) -> None:
    try:
        state.loop.call(state.server.close(), timeout=120.0)
    finally:
        state.loop.stop()
        shutil.rmtree(state.jobs_dir, ignore_errors=True)


@dataclass(frozen=True)
class Recipe:
    """What one run is, in terms a worker can build its command from."""

    kind: str
    """``claude`` or ``command``."""
    prompt: str | None = None
    options: Mapping[str, Any] | None = None
    """The ClaudeOptions fields (``claude``)."""
    resume: Mapping[str, Any] | None = None
    """The ResumeSettings fields (``claude``)."""
    command: str | None = None
    argv: list[str] | None = None
    execute: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """cwd, env (the caller's own), timeout, heartbeat_interval, inactivity_threshold, kill_grace, capture;
    for a conversation also stdin_idle_timeout, summary, summary_ends_turn and stdin_close_on_summary."""
    label: str = ""
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    interactive: bool = False
    """A Claude conversation: the CLI in host mode, its stdin piped (the notebook writes it)."""

    def execute_params(self) -> dict[str, Any]:
        """The durable ``execute`` params, with the command built here, on the worker."""
        params: dict[str, Any] = {**self.execute, "durable": True, "label": self.label, "meta": dict(self.meta)}
        if self.kind == "claude":
            options = ClaudeOptions(**{**(self.options or {}), "remote": False})
            resume = ResumeSettings(**self.resume) if self.resume else None
            argv, env = claude_command(options, resume=resume, own_demo=True, python=sys.executable)
            params["stdin"] = "pipe"
            if self.interactive:
                argv = claude_host_command(options, own_demo=True, python=sys.executable)
            else:
                # One-shot: the handler writes the prompt to the CLI's stdin and closes it
                # (never on the command line, which every local user can read).
                params["input"] = self.prompt or ""
            params.update(argv=argv, env={**(env or {}), **(params.get("env") or {})} or None, progress_target=None)
        elif self.argv is not None:
            params["argv"] = list(self.argv)
        else:
            params["command"] = self.command
        return params


def run_on_worker(recipe: Recipe, plugin_name: str, topic: str, index: int) -> dict[str, Any]:
    """The task of one run (see the module docstring): its outcome, once the run is over."""
    from distributed import get_worker

    worker = get_worker()
    plugin = worker.plugins.get(plugin_name)
    state = plugin.state if isinstance(plugin, HandlerPlugin) else None
    if not isinstance(plugin, HandlerPlugin) or state is None:
        why = getattr(plugin, "error", None) or "the cc_executor_nb plugin is not set up on this worker"
        raise RuntimeError(f"no cc_executor_nb handler on {worker.address}: {why}")
    token = plugin.token

    key = worker.get_current_task()

    def publish(job_id: str, pid: int | None) -> None:
        worker.log_event(topic, {"index": index, "job_id": job_id, "url": state.url, "worker": worker.address,
                                 "pid": pid, "key": str(key)})

    try:
        params = recipe.execute_params()
    except (ValueError, FileNotFoundError) as exc:  # no claude executable here, a bad option
        return {**_not_started(str(exc)), "worker": worker.address, "index": index}
    outcome = state.loop.call(_start_and_follow(state.server, token, params, publish, state.ssl,
                                                wanted=_wanted(worker, key)))
    return {**outcome, "worker": worker.address, "index": index}


def _wanted(worker: Any, key: Any) -> Callable[[], bool]:
    """Whether Dask still wants the task ``key`` run on ``worker``: a running task whose future was
    cancelled (or whose client left) reads ``cancelled`` there, while its thread runs on."""

    def wanted() -> bool:
        tasks = getattr(getattr(worker, "state", None), "tasks", None)
        if not isinstance(tasks, Mapping):
            return True  # a distributed that does not say: as before, the notebook's stray check alone
        task = tasks.get(key)
        return task is not None and getattr(task, "state", None) != "cancelled"

    return wanted


def _not_started(error: str) -> dict[str, Any]:
    """The outcome of a run whose job never started: the notebook's run ends ``error`` with ``error``."""
    return {"job_id": None, "status": "error", "exit_code": None, "error": error}


async def _start_and_follow(
    server: Any, token: str, params: dict[str, Any], publish: Any, ssl: Any, *,
    wanted: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Start the durable job, say where, follow it to the end (on the handler's loop).

    A conversation's job (stdin "pipe") is awaited on the handler (``server``, this worker's own)
    instead of followed: a following connection would keep its input open, while with nobody
    attached (the notebook gone) its ``stdin_idle_timeout`` must close it so the CLI ends by itself.

    Until someone else follows the job (the notebook's run attached), a task Dask no longer
    wants (``wanted()`` false: its future was cancelled, e.g. the re-run of a dead worker's
    task that began before the notebook withdrew it) cancels its job: nobody would.
    """
    url = server.url
    one_shot = "input" in params or params.get("stdin") != "pipe"  # its input is written and closed here
    async with await connect(url, token, ssl=ssl) as client:
        prompt = params.pop("input", None)
        if prompt is not None and await client.takes_input_in_execute(prompt, **params):
            params["input"], prompt = prompt, None  # the handler writes it at the start
        try:
            started = await client.execute(**params)
        except ProtocolError as exc:  # the handler refused it (a program that does not exist): an outcome,
            return _not_started(str(exc))  # said in one line as a local run says it, not a task's traceback
        job_id = str(started["job_id"])
        publish(job_id, started.get("pid"))
        if one_shot:
            with _stopping_unwanted(url, token, ssl, job_id, wanted, own=1):  # this connection follows it
                if prompt is not None:
                    cut_off = await _write_prompt(client, prompt)
                    if cut_off is not None:
                        return {**await _follow(client, job_id), "error": cut_off}
                return await _follow(client, job_id)
    with _stopping_unwanted(url, token, ssl, job_id, wanted, own=0):
        return await _job_end(server, job_id)


@contextlib.contextmanager
def _stopping_unwanted(
    url: str, token: str, ssl: Any, job_id: str, wanted: Callable[[], bool] | None, *, own: int,
) -> Iterator[None]:
    """While the block runs, :func:`_stop_if_unwanted` looks after the job (``own``: this task's
    connections that follow it)."""
    guard = asyncio.ensure_future(_stop_if_unwanted(url, token, ssl, job_id, wanted, own=own)) if wanted else None
    try:
        yield
    finally:
        if guard is not None:
            guard.cancel()


async def _stop_if_unwanted(url: str, token: str, ssl: Any, job_id: str, wanted: Callable[[], bool], *,
                            own: int) -> None:
    """Cancel the job once Dask no longer wants its task, unless someone besides this task (the
    notebook's run) followed it first: its run then decides (a closed Dask client leaves the runs it
    started going on). Looked at every :data:`_WATCH_INTERVAL`, on a connection that follows nothing."""
    try:
        async with await connect(url, token, ssl=ssl) as client:
            while True:
                await asyncio.sleep(_WATCH_INTERVAL)
                job = next((j for j in await client.jobs() if j.get("job_id") == job_id), None)
                if job is None or job.get("status") not in ("running", "paused") or int(job.get("attached") or 0) > own:
                    return
                if not wanted():
                    logger.info("= the task of job %s was withdrawn before anyone followed it: cancelling it", job_id)
                    await client.attach(job_id)
                    with contextlib.suppress(NoProcessRunning):  # it ended meanwhile (cancelled by the notebook)
                        await client.control("CANCEL")
                    return
    except CCExecError as exc:  # the handler is this worker's own; its end ends the job too
        logger.warning("! looking after job %s: %s", job_id, exc)


async def _write_prompt(client: Any, prompt: str) -> str | None:
    """Write a one-shot prompt too big for the start request to the job's stdin, in pieces, and
    close it; None once written (or the CLI ended first: its end says why), else why not, the
    job then cancelled (it would wait for the rest for ever: a one-shot job has no idle timeout).

    A lost connection raises: the handler is this worker's own, gone with its jobs.
    """
    try:
        with contextlib.suppress(NoProcessRunning):
            await client.input(prompt)
            await client.close_input()
    except ConnectionLost:
        raise
    except CCExecError as exc:
        with contextlib.suppress(CCExecError):
            await client.control("CANCEL")
        return f"{exc}; its input was cut off, so its job was cancelled"
    return None


async def _follow(client: Any, job_id: str) -> dict[str, Any]:
    async for event in client.events():
        if isinstance(event, Completed):
            return {"job_id": job_id, "status": event.params.get("status"), "exit_code": event.params.get("exit_code")}
        if isinstance(event, ProcessError):
            return {"job_id": job_id, "status": "error", "exit_code": None, "error": event.params.get("error")}
    return {"job_id": job_id, "status": "error", "exit_code": None, "error": "the connection to the handler closed"}


async def _job_end(server: Any, job_id: str) -> dict[str, Any]:
    """The job's outcome, returned as soon as its process is over: awaited on the handler itself
    (this task runs on the handler's loop), without following the job (which would keep its input
    open) nor looking at the job list now and then (a look every 0.5 s held the worker's slot, and
    the batch's next run, up to that long after the run's end)."""
    store = server.jobs.store
    job = store.get(job_id) if store is not None else None
    if job is None:
        return {"job_id": job_id, "status": "error", "exit_code": None, "error": "the job is gone"}
    await job.wait_finished(None)
    return {"job_id": job_id, "status": job.record.status, "exit_code": job.record.exit_code}
