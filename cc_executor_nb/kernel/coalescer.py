"""The one rate-limited update path: any number of pokes, at most ``max_rate`` renders a second.

Typical wiring on the kernel's background loop::

    coalescer = Coalescer(lambda: view.render(state, time.monotonic()))
    coalescer.attach(loop)
    # for each notification (on the loop thread):
    state.apply(method, params, time.monotonic()); coalescer.poke()
    # when the run ends:
    coalescer.flush(); coalescer.detach()
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["Coalescer", "Scheduler"]

Scheduler = Callable[[float, Callable[[], None]], object]


class Coalescer:
    """Turn any number of "something changed" pokes into at most ``max_rate`` renders a second.

    The core is clock-driven and loop-agnostic: :meth:`poke` renders at once when
    the last render is at least ``1 / max_rate`` old, and otherwise arranges one
    later render through the scheduler (``schedule(delay, callback)``, or the
    loop given to :meth:`attach`). Without either, the owner drives deferred
    renders with :meth:`run_due` or :meth:`tick`. All methods may be called from
    any thread; renders never overlap.

    ``pace`` (optional) says how long, in seconds, the last render's work should be
    spread over: the next render waits that long when it is more than ``1 / max_rate``
    (a render that sends much waits longer before the next).
    """

    def __init__(
        self,
        render: Callable[[], None],
        max_rate: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        tick_interval: float = 1.0,
        schedule: Scheduler | None = None,
        pace: Callable[[], float] | None = None,
    ) -> None:
        if max_rate <= 0:
            raise ValueError("max_rate must be positive")
        self._render = render
        self.min_interval = 1.0 / max_rate
        self.tick_interval = tick_interval
        self._clock = clock
        self._schedule = schedule
        self._pace = pace
        self._lock = threading.RLock()
        self._render_lock = threading.RLock()
        self._dirty = False
        self._last_render: float | None = None
        self._timer_pending = False
        self.render_count = 0
        # Loop driving (attach/detach)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: object | None = None
        self._handles: dict[str, asyncio.TimerHandle] = {}

    @property
    def dirty(self) -> bool:
        """Whether a change is waiting to be rendered."""
        return self._dirty

    def due(self, now: float | None = None) -> float | None:
        """Seconds until the waiting render may run (0.0: now), or None when nothing waits."""
        with self._lock:
            if not self._dirty:
                return None
            if self._last_render is None:
                return 0.0
            now = self._clock() if now is None else now
            return max(0.0, self._last_render + self.interval - now)

    @property
    def interval(self) -> float:
        """Seconds from one render to the next: ``1 / max_rate``, or what ``pace`` asks if longer."""
        return max(self.min_interval, self._pace()) if self._pace is not None else self.min_interval

    def poke(self) -> None:
        """Note a change: render now if the rate allows, else make sure one render follows."""
        with self._lock:
            self._dirty = True
            go = self._claim()
        if go:
            self._call_render()

    def tick(self) -> None:
        """Re-render for the passage of time (timers, heartbeat age), within the rate limit."""
        self.poke()

    def run_due(self) -> bool:
        """Render if a waiting render is due; return whether it rendered."""
        with self._lock:
            go = self._claim()
        if go:
            self._call_render()
        return go

    def flush(self) -> None:
        """Render now, whatever the rate (for the end of a run)."""
        with self._lock:
            self._mark_rendered(self._clock())
        self._call_render()

    def _claim(self) -> bool:
        """With the lock held: take the render slot if due, else schedule; True means render."""
        now = self._clock()
        wait = self.due(now)
        if wait is None:
            return False
        if wait > 0:
            self._defer(wait)
            return False
        self._mark_rendered(now)
        return True

    def _mark_rendered(self, now: float) -> None:
        self._dirty = False
        self._last_render = now
        self.render_count += 1

    def _call_render(self) -> None:
        with self._render_lock:
            self._render()

    def _defer(self, wait: float) -> None:
        if self._timer_pending:
            return
        if self._loop is not None:
            self._timer_pending = self._arm_on_loop(self._loop, self._token, wait)
        elif self._schedule is not None:
            self._timer_pending = True
            self._schedule(wait, self._on_timer)

    def _on_timer(self) -> None:
        with self._lock:
            self._timer_pending = False
        self.run_due()

    # Driving from an asyncio loop

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run deferred renders and a ``tick_interval`` ticker on ``loop`` (from any thread)."""
        with self._lock:
            if self._loop is not None:
                raise RuntimeError("Coalescer is already attached to a loop")
            self._loop, self._token = loop, object()
            self._timer_pending = False
            token = self._token
        loop.call_soon_threadsafe(self._next_tick, loop, token)
        if self.dirty:
            self.poke()

    def detach(self) -> None:
        """Stop the ticker and any deferred render; callbacks already queued become no-ops."""
        with self._lock:
            loop, handles = self._loop, self._handles
            self._loop, self._token, self._handles = None, None, {}
            self._timer_pending = False
        if loop is None:
            return
        _call_in_loop(loop, lambda: _cancel_all(handles.values()))

    @property
    def attached(self) -> bool:
        """Whether a loop drives this coalescer."""
        return self._loop is not None

    def _arm_on_loop(self, loop: asyncio.AbstractEventLoop, token: object, wait: float) -> bool:
        return _call_in_loop(
            loop,
            lambda: self._keep(token, "render", loop.call_later(wait, self._on_loop_timer, token)),
        )

    def _on_loop_timer(self, token: object) -> None:
        if token is self._token:
            self._on_timer()

    def _next_tick(self, loop: asyncio.AbstractEventLoop, token: object) -> None:
        self._keep(
            token,
            "tick",
            loop.call_later(self.tick_interval, self._on_tick, loop, token),
        )

    def _on_tick(self, loop: asyncio.AbstractEventLoop, token: object) -> None:
        if token is not self._token:
            return
        self.tick()
        self._next_tick(loop, token)

    def _keep(self, token: object, kind: str, handle: asyncio.TimerHandle) -> None:
        """Keep the latest handle of a kind for detach(), or cancel it if detach() already ran."""
        with self._lock:
            if token is self._token:
                self._handles[kind] = handle
                return
        handle.cancel()


def _cancel_all(handles: Iterable[asyncio.TimerHandle]) -> None:
    for handle in handles:
        handle.cancel()


def _call_in_loop(loop: asyncio.AbstractEventLoop, func: Callable[[], object]) -> bool:
    """Run ``func`` on ``loop``: directly when on it, else thread-safely; False if closed."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        func()
        return True
    try:
        loop.call_soon_threadsafe(func)
    except RuntimeError:  # The loop is closed; nothing will run on it any more.
        return False
    return True
