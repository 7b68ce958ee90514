"""The notebook side of Dask placement: a batch's runs as tasks on a ``dask.distributed`` cluster.

:class:`DaskPlacement` is a batch :class:`~cc_executor_nb.kernel.batch.Placement`. For
each run the batch starts it submits one task (:func:`~.worker.run_on_worker`) with the
run's *recipe* (its prompt and options, or its command line; the worker builds the
command itself) and the batch's ``resources`` (e.g. ``{"claude": 1}``: the task holds
them on its worker while the run lives, so ``dask-worker --resources claude=2`` bounds
the runs per worker). Dask decides where. When the worker has started the run (a
durable job on its handler) it logs an event on the batch's topic; the placement then
points the batch's :class:`~cc_executor_nb.kernel.run.Run` at that job and starts it:
the run attaches, replays from the job's first notification and follows it live,
straight from the worker, with heartbeats, cancel and reconnects as for any run.

:func:`ensure_plugin` registers the worker plugin once per ``Client`` (with a fresh
token); the handlers come up on every current and future worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..claude.summary import RESULT_SUMMARY
from ..client import connect
from ..errors import CCExecError
from ..kernel.api import Prepared, resume_settings
from ..kernel.config import CCExec
from ..kernel.loop import KernelLoop, LoopStopped
from ..kernel.run import Target
from .worker import HandlerPlugin, Recipe, run_on_worker

if TYPE_CHECKING:
    from ..kernel.batch import Batch, BatchItem

__all__ = ["DaskPlacement", "ensure_plugin", "recipe_of"]

logger = logging.getLogger("cc_executor_nb.cluster")

_PLUGINS: dict[str, tuple[str, str]] = {}
_PLUGINS_LOCK = threading.Lock()
META_PROMPT_CHARS = 4000
CLIENT_CLOSED = "the Dask client was closed before it started"
WORKER_CHECK_INTERVAL = 1.0
"""Seconds between looks at the cluster's workers while a run reconnects to one."""
WORKER_CHECK_TIMEOUT = 10.0
"""Seconds a look at the cluster's workers may take: a scheduler that has not answered by then
is taken as unread (looked at again once that look is over)."""


def ensure_plugin(client: Any, settings: CCExec, *, allow_plaintext: bool = False) -> tuple[str, str]:
    """The plugin name and token of ``client``'s cluster handlers, registering the plugin once."""
    with _PLUGINS_LOCK:
        known = _PLUGINS.get(client.id)
        if known is not None:
            return known
        name, token = f"cc_executor_nb-{secrets.token_hex(4)}", secrets.token_urlsafe(32)
        client.register_plugin(HandlerPlugin(token, allow_plaintext=allow_plaintext, kill_grace=settings.kill_grace),
                               name=name)
        _PLUGINS[client.id] = (name, token)
        return name, token


def client_ssl(client: Any) -> Any:
    """The client TLS context for the workers' handlers, when the cluster's comms use TLS."""
    address = str(getattr(client.scheduler, "address", "") or "")
    if not address.startswith("tls://"):
        return None
    return client.security.get_connection_args("client")["ssl_context"]


def recipe_of(prepared: Prepared, text: Any, settings: CCExec, *, batch: str) -> Recipe:
    """What a worker needs to build and start ``prepared``'s run (never this kernel's environment)."""
    run, spec = prepared.run, prepared.run.spec
    execute = {
        "cwd": spec.cwd, "env": dict(prepared.options.env) if prepared.options.env else None,
        "timeout": spec.timeout, "heartbeat_interval": spec.heartbeat_interval,
        "inactivity_threshold": spec.inactivity_threshold, "kill_grace": spec.kill_grace, "capture": spec.capture,
    }
    meta: dict[str, Any] = {"kind": "command", "batch": batch}
    if prepared.options.command:
        return Recipe("command", command=spec.command, argv=spec.argv, execute=execute, label=run.label, meta=meta)
    options = {f.name: getattr(prepared.claude, f.name) for f in dataclasses.fields(prepared.claude)}
    prompt = str(text)
    meta |= {"kind": "claude", "prompt": prompt[:META_PROMPT_CHARS], "raw": bool(prepared.claude.raw)}
    conversation = run.conversation
    if conversation is not None:
        # Host mode on the worker; this notebook writes the prompt and answers the questions
        # once it attached (nobody attached for the idle timeout: the job's input closes).
        meta["interactive"] = True
        if conversation.idle_timeout:
            execute["stdin_idle_timeout"] = conversation.idle_timeout
        # Its timeout passing between turns cut nothing: the job is listed (and the task's outcome
        # reads) completed, as the run reads it (a result line ends a turn, an input begins one).
        execute |= {"summary": RESULT_SUMMARY, "summary_ends_turn": True}
        # The batch ends the run after its first turn (nobody can send a follow-up): the job closes
        # its own input at its first result, so it ends and frees its slot even when the notebook
        # died (it waited out the idle timeout on the worker), as a local batch's job does.
        execute["stdin_close_on_summary"] = True
    return Recipe("claude", prompt=prompt, options=options, resume=dataclasses.asdict(resume_settings(settings)),
                  execute=execute, label=run.label, meta=meta, interactive=conversation is not None)


def unoffered(client: Any, resources: Mapping[str, float] | None) -> str | None:
    """A warning when no current worker of ``client`` offers ``resources`` (a task asking for them
    waits until one that does joins), else None. None too when the workers cannot be read."""
    if not resources:
        return None
    workers = _worker_resources(client)
    if workers is None or any(all(offer.get(name, 0) >= amount for name, amount in resources.items())
                              for offer in workers):
        return None
    offers = "; ".join(sorted({_resources_text(offer) for offer in workers}))
    found = ("no worker yet" if not workers else f"the worker offers {offers}" if len(workers) == 1
             else f"the {len(workers)} workers offer {offers}")
    return (f"no Dask worker offers {_resources_text(resources)} ({found}): "
            "the items stay placing until a worker with them joins")


def _worker_resources(client: Any) -> list[Mapping[str, float]] | None:
    """Each current worker's resources, or None when they cannot be read."""
    workers = _scheduler_workers(client)
    if workers is None:
        return None
    return [dict(worker.get("resources") or {}) for worker in workers.values() if isinstance(worker, Mapping)]


def _scheduler_workers(client: Any) -> Mapping[str, Any] | None:
    """The scheduler's current workers by address, or None when they cannot be read (the client
    closed, the scheduler out of reach; an asynchronous client has no per-worker information)."""
    if getattr(client, "asynchronous", False) or str(getattr(client, "status", "")) in ("closing", "closed"):
        return None
    try:
        try:
            info = client.scheduler_info(n_workers=-1)
        except TypeError:  # an older distributed: every worker, and no n_workers
            info = client.scheduler_info()
    except Exception:  # the batch says so itself when it matters
        logger.debug("reading the cluster's workers", exc_info=True)
        return None
    workers = info.get("workers") if isinstance(info, Mapping) else None
    return workers if isinstance(workers, Mapping) else None


class WorkersReader:
    """Reads the scheduler's workers (:func:`_scheduler_workers`, which blocks) on a daemon
    thread of its own, one look at a time, waited for at most :data:`WORKER_CHECK_TIMEOUT`.

    Not on the loop's default thread pool: closing the loop waits for that pool's threads,
    so a scheduler that never answers would hold up the loop's stop.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._thread: threading.Thread | None = None

    async def read(self) -> Mapping[str, Any] | None:
        """The workers by address; None when they cannot be read, or not in time, or the
        last look still waits for the scheduler."""
        if self._thread is not None and self._thread.is_alive():
            return None
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Mapping[str, Any] | None] = loop.create_future()
        self._thread = threading.Thread(target=self._look, args=(loop, answer), name="ccx-dask-workers",
                                        daemon=True)
        self._thread.start()
        try:
            return await asyncio.wait_for(answer, WORKER_CHECK_TIMEOUT)
        except TimeoutError:
            logger.debug("the Dask scheduler did not say its workers within %s s", WORKER_CHECK_TIMEOUT)
            return None

    def _look(self, loop: asyncio.AbstractEventLoop, answer: asyncio.Future[Mapping[str, Any] | None]) -> None:
        workers = _scheduler_workers(self.client)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_settle, answer, workers)


def _settle(answer: asyncio.Future[Mapping[str, Any] | None], workers: Mapping[str, Any] | None) -> None:
    if not answer.done():
        answer.set_result(workers)


def _resources_text(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={amount:g}" for name, amount in sorted(resources.items())) or "no resources"


class DaskPlacement:
    """Places a batch's runs on a Dask cluster (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        loop: KernelLoop,
        prepared: Sequence[Prepared],
        texts: Sequence[Any],
        *,
        settings: CCExec,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        self.client = client
        self.loop = loop
        self.topic = f"cc_executor_nb-batch-{uuid.uuid4().hex}"
        self.recipes = [recipe_of(p, text, settings, batch=self.topic) for p, text in zip(prepared, texts, strict=True)]
        self.plugin_name, self.token = ensure_plugin(client, settings)
        self.ssl = client_ssl(client)
        self.reconnect_timeout = settings.reconnect_timeout
        self.resources = dict(resources) if resources else None
        self.warning = unoffered(client, self.resources)
        """Why the runs may wait (no current worker offers their resources), else None."""
        self.futures: dict[int, Any] = {}
        """Each item's current task (a withdrawn one is forgotten)."""
        self._attempts: dict[int, int] = {}
        self.batch: Batch | None = None
        self._followed: list[BatchItem] = []
        """The items whose runs follow a job on a worker (checked for their worker's loss)."""
        self._watcher: asyncio.Future[None] | None = None
        self._workers = WorkersReader(client)
        client.subscribe_topic(self.topic, self._on_event)

    def start(self, entry: BatchItem, batch: Batch) -> None:
        """Submit the run's task; the run starts when its worker says where the job is."""
        self.batch = batch
        if self._client_closed():
            _skip(entry, CLIENT_CLOSED)
            return
        attempt = self._attempts[entry.index] = self._attempts.get(entry.index, 0) + 1
        # A withdrawn task (a paused batch's) is submitted again under a key of its own: Dask may
        # still be releasing the old one, and its job, if it started, is told apart as a stray.
        suffix = "" if attempt == 1 else f"-{attempt}"
        future = self.client.submit(
            run_on_worker, self.recipes[entry.index], self.plugin_name, self.topic, entry.index,
            key=f"{self.topic}-{entry.index}{suffix}", pure=False, resources=self.resources,
            priority=-entry.index,  # Dask runs the tasks waiting for a slot in input order (else the last first)
        )
        self.futures[entry.index] = future
        future.add_done_callback(lambda done: self._task_done(entry, done))

    def cancel(self, entry: BatchItem) -> None:
        """Withdraw a task that has not started its run (Dask never runs it, or its job is stopped:
        the task stops a job nobody followed, and one that reports later is a stray). It is
        forgotten: what it reports from now on is not the item's."""
        future = self.futures.pop(entry.index, None)
        if future is None or self._client_closed():
            return  # a closed client's tasks are gone with it
        try:
            future.cancel()
        except Exception:  # the client closed meanwhile, or lost its scheduler
            logger.debug("cancelling the task of item %d", entry.index, exc_info=True)

    def close(self) -> None:
        """The batch is over: stop listening and watching, and let Dask forget the tasks."""
        if self._watcher is not None:
            self._watcher.cancel()
        try:
            self.client.unsubscribe_topic(self.topic)
        except Exception:  # the client may be closed already
            logger.debug("unsubscribing %s", self.topic, exc_info=True)
        self.futures.clear()

    # Events from the workers (on the Dask client's thread)

    def _on_event(self, event: Any) -> None:
        _timestamp, message = event
        batch = self.batch
        if batch is None or not isinstance(message, dict):
            return
        index = int(message["index"])
        entry = batch.items[index]
        target = Target(str(message["url"]), self.token, ssl=self.ssl, reconnect_timeout=self.reconnect_timeout)
        job_id = str(message["job_id"])
        if not self._current(index, message.get("key")):
            self._stop_stray(target, job_id)  # the job of a task withdrawn meanwhile
            return
        batch.placed(
            entry,
            start=lambda: self._attach(entry, target, job_id),
            worker=str(message.get("worker") or ""),
            stray=lambda: self._stop_stray(target, job_id),
        )

    def _attach(self, entry: BatchItem, target: Target, job_id: str) -> None:
        # With a job id the run attaches to the job. It is not marked ``attached`` (following
        # someone else's job): the batch started it, so a kernel shutdown cancels it like a
        # local run, rather than leaving a job nobody holds the token of.
        run = entry.driven
        run.target, run.job_id = target, job_id
        conversation = run.conversation
        if conversation is not None:
            # The conversation starts on the attached connection (initialize and the prompt
            # go to the job's stdin); a job cannot be run again one-shot on it.
            conversation.fallback = None
        run.start(self.loop)
        if conversation is not None:
            run.end()  # as for a local batch run: the process exits once the first turn has its result
        self._followed.append(entry)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.ensure_future(self._watch_workers())

    async def _watch_workers(self) -> None:
        """End a run whose worker left the cluster: its handler and job went with the worker, so
        its reconnects could only give up, after minutes, with a socket error. Looked at only
        while a run reconnects (its connection dropped), every :data:`WORKER_CHECK_INTERVAL`."""
        while True:
            await asyncio.sleep(WORKER_CHECK_INTERVAL)
            self._followed = [entry for entry in self._followed if not entry.driven.done]
            if not self._followed:
                return
            cut = [entry for entry in self._followed if entry.driven.status == "reconnecting" and entry.worker]
            if not cut:
                continue
            workers = await self._workers.read()
            if workers is None:
                continue
            for entry in cut:
                if entry.worker not in workers:
                    self.cancel(entry)  # Dask would run the task again elsewhere: a second job for an ended item
                    entry.driven.lose(f"its Dask worker {entry.worker} left the cluster (it died or was stopped), "
                                   "and the run with it")

    def _current(self, index: int, key: object) -> bool:
        """Whether the task ``key`` (a worker's event, or a finished future) is item ``index``'s current one."""
        future = self.futures.get(index)
        return future is not None and str(future.key) == str(key)

    def _stop_stray(self, target: Target, job_id: str) -> None:
        """A job nobody waits for any more (its item was cancelled, or Dask ran the task again): cancel it."""
        try:
            self.loop.submit(_cancel_job(target, job_id))
        except LoopStopped:
            logger.warning("! could not cancel the stray job %s at %s", job_id, target.url)

    def _client_closed(self) -> bool:
        return str(getattr(self.client, "status", "")) in ("closing", "closed")

    def _task_done(self, entry: BatchItem, future: Any) -> None:
        """A task that ended before its run started ends the run: ``error`` with why it could not
        start (the worker's one line) or with the task's error, or ``cancelled`` with its item
        ``skipped`` (its client closed, or someone cancelled it). A task whose run started
        leaves it to its job."""
        batch = self.batch
        status = str(future.status)
        if batch is None or not self._current(entry.index, future.key):
            return  # withdrawn: the item no longer waits for it (its batch paused, cancelled, or its worker lost)
        ended = "error"
        if status == "finished":
            if entry.stage != "placing":
                return  # its run started (and follows the job)
            outcome = _outcome(future)
            if outcome.get("job_id") is not None or not outcome.get("error"):
                return  # its run started (and follows the job)
            reason = str(outcome["error"])  # it could not start: the worker said why, as a local run would
        elif status == "error":
            try:
                error = future.exception()
            except Exception as exc:  # the client is gone
                error = exc
            reason = f"the Dask task failed: {type(error).__name__}: {error}"
        elif self._client_closed():
            reason, ended = CLIENT_CLOSED, "cancelled"
        elif status == "cancelled":
            reason, ended = "the Dask task was cancelled before it started", "cancelled"
        else:
            reason = f"the Dask task was {status} before it started"
        def settle() -> None:
            if self._current(entry.index, future.key):  # (not withdrawn meanwhile)
                _never_started(entry, reason, ended)

        batch._on_loop(settle)


def _never_started(entry: BatchItem, reason: str, ended: str) -> None:
    """End a run whose task ended before it started (loop thread): ``error``, or ``cancelled`` and
    the item ``skipped``, as the batch's own cancel leaves an item that never started."""
    if entry.stage != "placing":
        return  # the batch settled it meanwhile (or its run started)
    if ended == "cancelled":
        _skip(entry, reason)
    else:
        entry.driven.abandon(reason, status=ended)


def _skip(entry: BatchItem, reason: str) -> None:
    """The item never starts: it reads ``skipped``, its run ``cancelled`` with ``reason``."""
    entry.stage = "skipped"
    entry.driven.abandon(reason, status="cancelled")


def _outcome(future: Any) -> dict[str, Any]:
    """A finished task's outcome (see :func:`~.worker.run_on_worker`); empty if it cannot be read."""
    try:
        outcome = future.result(timeout=30)
    except Exception:  # the client closed meanwhile
        return {}
    return outcome if isinstance(outcome, dict) else {}


async def _cancel_job(target: Target, job_id: str) -> None:
    try:
        async with await connect(target.url, target.token, auto_reconnect=False, ssl=target.ssl) as client:
            await client.attach(job_id)
            await client.control("CANCEL")
    except (OSError, CCExecError) as exc:
        logger.warning("! cancelling the stray job %s: %s", job_id, exc)
