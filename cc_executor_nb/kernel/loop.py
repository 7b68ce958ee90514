"""The kernel's background asyncio loop, with the in-kernel server on it.

IPython kernels run their own event loop on the main thread; a cell that blocked it
(``asyncio.run``, ``nest_asyncio``) would freeze comms, widgets and interrupts. So
every asyncio thing this package does in a kernel runs on one daemon thread,
``cc_executor_nb-loop``, with its own loop:

- :meth:`KernelLoop.start` starts the thread, starts the server (bound to
  127.0.0.1 on a free port, with a fresh random token) and returns once the
  loop runs; a start-up error is re-raised in the caller and leaves no thread.
- :meth:`KernelLoop.submit` is the one way in from other threads: it schedules a
  coroutine on the loop and returns a :class:`concurrent.futures.Future`;
  :meth:`KernelLoop.call` waits for it. Submitted tasks are tracked.
- :meth:`KernelLoop.stop` is idempotent: it cancels the tracked tasks (runs
  cancel their process on the way out), closes the spare connection and the server,
  which kills every remaining process group, stops the loop and joins the thread.
- The loop keeps at most one spare connection to its server for the next run
  (:mod:`cc_executor_nb.kernel.spare`): closed when the server changes or the loop stops.

:func:`shared_loop` holds the process-wide instance that the magic and the API
use; :func:`stop_shared_loop` stops it (``%unload_ext``, ``%reload_ext`` and
interpreter exit, so no child outlives a kernel shutdown). While it runs, the
package's log lines (the in-kernel server's among them) go to the process's own
stderr rather than to whichever cell runs (:mod:`cc_executor_nb.kernel.serverlog`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from ..errors import CCExecError
from . import serverlog
from .spare import Spare

__all__ = [
    "LOOP_THREAD_NAME",
    "KernelLoop",
    "LoopStopped",
    "current_shared_loop",
    "shared_loop",
    "stop_shared_loop",
]

logger = logging.getLogger("cc_executor_nb.kernel.loop")

LOOP_THREAD_NAME = "cc_executor_nb-loop"
T = TypeVar("T")


class Server(Protocol):
    """What the loop needs from a server (the enhanced handler fits)."""

    @property
    def url(self) -> str:
        """The ``ws://`` address clients connect to."""
        ...

    @property
    def token(self) -> str | None:
        """The token clients must present (None: none needed)."""
        ...

    async def start(self, host: str, port: int) -> object:
        """Bind and serve."""
        ...

    async def close(self) -> None:
        """Kill every run and stop serving."""
        ...

    async def wait_idle(self) -> None:
        """Return once the server has no session (then it may be closed)."""
        ...


class LoopStopped(CCExecError, RuntimeError):
    """The background loop is not running (never started, or stopped)."""


class KernelLoop:
    """An asyncio loop on a daemon thread, optionally serving ``server_factory()`` on it."""

    def __init__(
        self,
        server_factory: Callable[[], Server] | None = None,
        *,
        thread_name: str = LOOP_THREAD_NAME,
        # Timeouts
        start_timeout: float = 30.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self._server_factory = server_factory
        self.thread_name = thread_name
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.server: Server | None = None
        self._server_key: object = None
        self._retired: set[asyncio.Task[None]] = set()
        self.spare = Spare()
        """A session dialled ahead to ``server`` for the next run (loop thread only)."""

    # -- State ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the loop thread is up and accepting work."""
        return self._loop is not None and self._loop.is_running()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (raises LoopStopped when there is none)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise LoopStopped("the cc_executor_nb background loop is not running")
        return loop

    @property
    def thread(self) -> threading.Thread | None:
        """The loop thread, while it exists."""
        return self._thread

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on the loop thread."""
        return threading.current_thread() is self._thread

    # -- Lifecycle --------------------------------------------------------------------

    def start(self) -> KernelLoop:
        """Start the thread, the loop and the server; no-op when running. Returns self."""
        with self._lock:
            if self._thread is not None:
                return self
            ready: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()
            thread = threading.Thread(target=self._main, args=(ready,), name=self.thread_name, daemon=True)
            thread.start()
            try:
                self._loop = ready.result(self.start_timeout)
            except BaseException:
                thread.join(self.stop_timeout)
                raise
            self._thread = thread
        logger.debug("= loop thread started")
        return self

    def stop(self) -> None:
        """Cancel tasks, close the server, stop the loop, join the thread. Idempotent."""
        with self._lock:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                return
            if threading.current_thread() is thread:
                raise RuntimeError("KernelLoop.stop() cannot be called from the loop thread")
            self._stopping = True
            try:
                self._shut_down(loop)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(self.stop_timeout)
            finally:
                self._thread = self._loop = None
                self.server = None
                self._stopping = False
        logger.debug("x loop thread stopped")

    def _shut_down(self, loop: asyncio.AbstractEventLoop) -> None:
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            future.result(self.stop_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            logger.warning("! the background loop's shutdown took over %g s: what is left is stopped with it",
                           self.stop_timeout)
        except Exception:
            logger.exception("! shutting the background loop down failed")

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        retired = list(self._retired)
        for task in retired:
            task.cancel()
        await asyncio.gather(*retired, return_exceptions=True)
        await self.spare.close()
        if self.server is not None:
            await self.server.close()

    # -- The server -------------------------------------------------------------------

    def use_server(self, key: object, factory: Callable[[], Server]) -> Server:
        """The loop's server for ``key`` (compared with ``==``), started if needed.

        A server is never changed once it runs: when ``key`` differs from the current
        server's, a new server starts for new runs and the old one is retired: it keeps
        serving its runs (and their reconnects) and closes once it has no session.
        """
        with self._lock:
            current = self.server
            if current is not None and self._server_key == key:
                return current
            server = self.call(self._start_server(factory))
            self.server, self._server_key = server, key
        if current is not None:
            self.submit(self._retire(current))
        return server

    def refill_spare(self) -> None:
        """Dial a spare connection to the current server in the background (loop thread);
        no-op without a server or while stopping."""
        server = self.server
        if server is not None and not self._stopping:
            self.spare.fill(server.url, server.token)

    async def _start_server(self, factory: Callable[[], Server]) -> Server:
        server = factory()
        await server.start("127.0.0.1", 0)
        return server

    async def _retire(self, server: Server) -> None:
        task = asyncio.current_task()
        assert task is not None
        # Retirement outlives the submitting call: keep it off the tracked tasks so that
        # stop() closes the server instead of abandoning it half-way.
        self._tasks.discard(task)
        self._retired.add(task)
        await self.spare.close(server.url, server.token)  # its session would hold the retired server open
        try:
            await server.wait_idle()
        finally:
            self._retired.discard(task)
            await server.close()
            logger.debug("x retired a server whose settings changed")

    # -- The thread -------------------------------------------------------------------

    def _main(self, ready: concurrent.futures.Future[asyncio.AbstractEventLoop]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            _close_loop(loop)
            ready.set_exception(exc)
            return
        ready.set_result(loop)
        try:
            while True:
                try:
                    loop.run_forever()
                except (SystemExit, KeyboardInterrupt) as exc:
                    # Raised by code run on this loop (a callback's sys.exit()): it would end
                    # the thread, and every run waited on would hang. Logged; the loop goes on.
                    logger.error("! %s raised on the background loop was ignored: the loop goes on",
                                 type(exc).__name__, exc_info=True)
                    continue
                return  # stop() stopped it
        finally:
            _close_loop(loop)

    async def _open(self) -> None:
        if self._server_factory is None:
            return
        server = self._server_factory()
        await server.start("127.0.0.1", 0)
        self.server = server

    # -- Crossing threads -------------------------------------------------------------

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the loop as a tracked task (from any thread); stop() cancels it."""
        wrapper = self._tracked(coro)
        try:
            if self._stopping:
                raise LoopStopped("the cc_executor_nb background loop is stopping")
            return asyncio.run_coroutine_threadsafe(wrapper, self.loop)
        except (LoopStopped, RuntimeError) as exc:
            wrapper.close()
            coro.close()
            raise LoopStopped("the cc_executor_nb background loop is not running") from exc

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (never from the loop thread)."""
        if self.on_loop_thread():
            coro.close()
            raise RuntimeError("KernelLoop.call() would deadlock on the loop thread; use submit()")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result from the background loop within {timeout} s") from None

    async def _tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            return await coro
        finally:
            self._tasks.discard(task)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left, finish async generators and the executor, close the loop."""
    try:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


# The process-wide loop


class _SharedLoop:
    """The one process-wide loop: started on first use, dropped by ``stop`` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.loop: KernelLoop | None = None
        self._atexit_registered = False
        self._log_handler: logging.Handler | None = None

    def get(self, server_factory: Callable[[], Server] | None) -> KernelLoop:
        with self._lock:
            if self.loop is None:
                candidate = KernelLoop(server_factory)
                handler = serverlog.attach()
                try:
                    candidate.start()
                except BaseException:
                    serverlog.detach(handler)
                    raise
                self.loop, self._log_handler = candidate, handler
                if not self._atexit_registered:
                    _register_exit_hook(stop_shared_loop)
                    self._atexit_registered = True
            return self.loop

    def stop(self) -> None:
        with self._lock:
            loop, self.loop = self.loop, None
            handler, self._log_handler = self._log_handler, None
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.stop()
        serverlog.detach(handler)  # after the stop, whose clean-up may still log


_SHARED = _SharedLoop()


def shared_loop(server_factory: Callable[[], Server] | None = None) -> KernelLoop:
    """The process-wide loop, started on first use with ``server_factory``'s server."""
    return _SHARED.get(server_factory)


def _register_exit_hook(hook: Callable[[], None]) -> None:
    """Run ``hook`` at interpreter exit while thread pools still accept work.

    The server's clean-up uses ``asyncio.to_thread``; ``concurrent.futures`` refuses
    new work once ``threading``'s exit hooks have run, and plain :mod:`atexit`
    handlers run after those. ``threading._register_atexit`` (what
    ``concurrent.futures`` itself uses) runs hooks in reverse order of registration,
    so ours, registered later, runs first. :mod:`atexit` is the fallback.
    """
    # concurrent.futures.thread registers its own hook when first imported, which
    # asyncio does lazily; import it now so that its hook comes before ours.
    import concurrent.futures.thread  # noqa: F401

    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(hook)
        return
    try:
        register(hook)
    except RuntimeError:  # the interpreter is already shutting down
        atexit.register(hook)


def current_shared_loop() -> KernelLoop | None:
    """The process-wide loop if it runs, else None (never starts one)."""
    return _SHARED.loop


def stop_shared_loop() -> None:
    """Stop the process-wide loop and everything on it; no-op when none runs."""
    _SHARED.stop()
