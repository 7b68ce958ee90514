"""Tests for RunView (through a dummy comm, no browser), Coalescer and TextView."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import comm
import ipywidgets as widgets
import pytest

from cc_executor_nb.kernel.coalescer import Coalescer
from cc_executor_nb.kernel.html import STATUS_COLORS, output_html
from cc_executor_nb.kernel.runstate import RunState
from cc_executor_nb.kernel.textview import TextView
from cc_executor_nb.kernel.views import RunView

from .util import eventually, scaled

# A dummy comm, after ipywidgets' own widgets/tests/utils.py: widgets open one at
# construction and send every state update through it, so its messages are the
# traffic a browser would receive.


class DummyComm:
    """A comm that records what a widget sends instead of talking to a kernel."""

    kernel = "Truthy"

    def __init__(self, **kwargs: Any) -> None:
        self.comm_id = uuid.uuid4().hex
        self.messages: list[Any] = []

    def open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, callback: Any) -> None:
        pass

    def send(self, data: Any = None, buffers: Any = None, **kwargs: Any) -> None:
        self.messages.append(data)

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> list[DummyComm]:
    """Route every new widget's comm to a recording DummyComm; return them all."""
    created: list[DummyComm] = []

    def create_comm(**kwargs: Any) -> DummyComm:
        created.append(DummyComm(**kwargs))
        return created[-1]

    monkeypatch.setattr(comm, "create_comm", create_comm)
    monkeypatch.setattr(comm, "get_comm_manager", dict)
    return created


def sent(comms: list[DummyComm]) -> int:
    """How many messages all widgets have sent so far."""
    return sum(len(c.messages) for c in comms)


@pytest.fixture
def make_view(comms: list[DummyComm]) -> Iterator[Callable[..., RunView]]:
    """Build RunViews on the dummy comm and close them afterwards."""
    views: list[RunView] = []

    def make(**kwargs: Any) -> RunView:
        kwargs.setdefault("on_pause", lambda: None)
        kwargs.setdefault("on_resume", lambda: None)
        kwargs.setdefault("on_cancel", lambda: None)
        views.append(RunView("demo run", **kwargs))
        return views[-1]

    yield make
    for view in views:
        view.close()


def running(now: float = 0.0, interval: float = 2.0) -> RunState:
    """A connected state whose process started at ``now``."""
    state = RunState()
    state.apply(
        "connected",
        {"session_id": "s", "heartbeat_interval": interval, "inactivity_threshold": 5},
        now,
    )
    state.apply(
        "process.started",
        {"pid": 9, "pgid": 9, "argv": ["claude", "-p", "x"], "seq": 1},
        now,
    )
    return state


def emit(state: RunState, method: str, now: float, **params: Any) -> None:
    """Apply a run notification with the next seq."""
    state.apply(method, {**params, "seq": state.last_seq + 1}, now)


def in_status(status: str) -> RunState:
    """A running state driven into ``status`` by the notifications that cause it."""
    state = running()
    if status == "thinking":
        emit(state, "process.status", 1.0, status="running", inactive_seconds=30)
    elif status == "paused":
        emit(state, "process.paused", 1.0, status="paused")
    elif status == "reconnecting":
        state.mark_reconnecting()
    elif status == "error":
        emit(state, "process.error", 1.0, error="boom")
    elif status != "running":
        emit(
            state,
            "process.completed",
            1.0,
            status=status,
            exit_code=0 if status == "completed" else 1,
            duration_seconds=1.2,
        )
    return state


# RunView: comm traffic


def test_render_without_change_sends_nothing(
    make_view: Callable[..., RunView], comms: list[DummyComm]
) -> None:
    """Rendering an unchanged state a second time sends no comm message."""
    view, state = make_view(), running()
    emit(state, "process.output", 0.5, type="stdout", data="hello\n")
    view.render(state, 0.5)
    before = sent(comms)
    view.render(state, 0.5)
    view.render(state, 0.7)  # Same whole seconds everywhere: still nothing to send.
    assert sent(comms) == before


@pytest.mark.parametrize("status", ["starting", "running", "paused", "completed"])
def test_a_view_built_from_a_state_sends_no_update_for_its_first_render(
    comms: list[DummyComm], status: str
) -> None:
    """Built from the state, every widget opens with the first render's values: no burst after the opens."""
    state = RunState() if status == "starting" else in_status(status)
    if status != "starting":
        emit(state, "process.output", 1.0, type="stdout", data="hello\n")
    callbacks = {"on_pause": lambda: None, "on_resume": lambda: None, "on_cancel": lambda: None}
    view = RunView("demo run", state=state, now=2.0, **callbacks)
    view.render(state, 2.0)
    assert sent(comms) == 0
    view.close()


def test_new_output_sends_one_message_from_output_widget(
    make_view: Callable[..., RunView], comms: list[DummyComm]
) -> None:
    """Appending output sends exactly one message, on the output widget's comm."""
    view, state = make_view(), running()
    emit(state, "process.output", 0.2, type="stdout", data="one\n")
    view.render(state, 0.2)
    before = sent(comms)
    emit(state, "process.output", 0.3, type="stdout", data="two\n")
    view.render(state, 0.3)
    assert sent(comms) - before == 1
    assert view.output.comm.messages[-1]["state"].keys() == {"value"}


def test_render_batches_changes_per_widget(
    make_view: Callable[..., RunView], comms: list[DummyComm]
) -> None:
    """A render that changes two traits of one widget sends one message for it (hold_sync)."""
    view, state = make_view(), running()
    view.render(state, 0.0)
    before = len(view.header.comm.messages)
    emit(state, "process.paused", 1.0, status="paused")
    view.render(state, 1.0)
    assert len(view.header.comm.messages) - before == 1
    assert view.header.comm.messages[-1]["state"].keys() == {"value", "_dom_classes"}


def test_a_render_costs_at_most_two_messages_besides_buttons(
    make_view: Callable[..., RunView], comms: list[DummyComm]
) -> None:
    """Status, heartbeat, timers, progress and resources all travel in the one header message."""
    view, state = make_view(), running()
    emit(state, "process.output", 0.0, type="stdout", data="first\n")  # output area shown
    view.render(state, 0.0)
    buttons = [b.comm for b in view.buttons.values()]
    before = sent(comms) - sum(len(c.messages) for c in buttons)
    state.apply("heartbeat", {"status": "alive", "interval": 2.0}, 4.0)
    emit(state, "process.output", 4.0, type="stdout", data="x\n")
    emit(state, "process.metrics", 4.0, progress={"fraction": 0.5, "eta_seconds": 4, "basis": "history"},
         resources={"cpu_percent": 50.0, "rss_bytes": 10, "num_processes": 1})
    view.render(state, 9.0)
    assert sent(comms) - sum(len(c.messages) for c in buttons) - before == 2


def test_render_from_another_thread(
    make_view: Callable[..., RunView], comms: list[DummyComm]
) -> None:
    """render() works from a non-main thread and its messages go out from there."""
    view, state = make_view(), running()
    emit(state, "process.output", 0.1, type="stdout", data="from a thread\n")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            view.render(state, 0.1)
        except BaseException as exc:  # Re-raised below, in the test's thread.
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(scaled(10))
    assert not thread.is_alive() and not errors
    assert "from a thread" in view.output.value


# RunView: content


def test_output_html_escapes_script_and_img() -> None:
    """Markup in child output reaches the HTML value escaped, never as live tags."""
    state = running()
    emit(state, "process.output", 0.1, type="stdout", data="<script>alert(1)</script>\n")
    emit(
        state,
        "process.output",
        0.2,
        type="stderr",
        data='<img src=x onerror="alert(2)">\n',
    )
    value = output_html(state)
    assert "<script>" not in value and "<img" not in value
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in value
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in value


def test_view_output_is_escaped(make_view: Callable[..., RunView]) -> None:
    """The output widget's value holds escaped child text, in a <pre>."""
    view, state = make_view(), running()
    emit(state, "process.output", 0.1, type="stdout", data="<b>bold?</b> & more")
    view.render(state, 0.1)
    assert (
        "<pre" in view.output.value and "&lt;b&gt;bold?&lt;/b&gt; &amp; more" in view.output.value
    )


def test_stderr_is_told_apart(make_view: Callable[..., RunView]) -> None:
    """stderr text sits in a ccx-stderr span; stdout text does not."""
    view, state = make_view(), running()
    emit(state, "process.output", 0.1, type="stdout", data="plain\n")
    emit(state, "process.output", 0.2, type="stderr", data="oops\n")
    view.render(state, 0.2)
    assert 'class="ccx-stderr"' in view.output.value
    assert view.output.value.count("ccx-stderr") == 1
    assert "plain\n<span" in view.output.value


def test_long_output_shows_tail_and_cut_line(make_view: Callable[..., RunView]) -> None:
    """Output over max_chars shows only the tail and says how many characters were left out.

    The count has thousands separators, as Claude's cut note has ("… 268,894 earlier
    characters", where a 50,000-line command read "… 268894")."""
    view, state = make_view(max_chars=100), running()
    emit(state, "process.output", 0.1, type="stdout", data="A" * 1000 + "Z" * 100)
    view.render(state, 0.1)
    cut = "… 1,000 earlier characters not shown (the whole output is in run.stdout while this kernel runs)"
    assert cut in view.output.value  # a saved notebook has no run.stdout: it said "full output in run.stdout"
    assert "Z" * 100 in view.output.value and "A" not in view.output.value.split("<pre")[1]


def test_output_area_hidden_until_output(make_view: Callable[..., RunView]) -> None:
    """The output area stays hidden while there is no output."""
    view, state = make_view(), running()
    view.render(state, 0.1)
    assert view.output.layout.display == "none"
    emit(state, "process.output", 0.2, type="stdout", data="x")
    view.render(state, 0.2)
    assert view.output.layout.display is None


def test_title_and_badge_escape_text(comms: list[DummyComm]) -> None:
    """A label with markup and the status badge are escaped, the badge classed per status."""
    view = RunView("<i>x</i>")
    try:
        view.render(in_status("thinking"), 1.0)
        assert "&lt;i&gt;x&lt;/i&gt;" in view.header.value
        assert "ccx-status-thinking" in view.header.value and ">thinking<" in view.header.value
        assert view.header._dom_classes == ("ccx-header", "ccx-status-thinking")
    finally:
        view.close()


def test_a_view_counts_as_displayed_only_when_ipython_displays_it(comms: list[DummyComm]) -> None:
    """The run's own display takes ``bundle()`` (not counted); ``display(view)`` asks ``_repr_mimebundle_``."""
    view = RunView("shown")
    try:
        model = view.bundle()["application/vnd.jupyter.widget-view+json"]["model_id"]
        assert not view.displayed and model == view.widget.model_id
        assert view._repr_mimebundle_() == view.bundle() and view.displayed
    finally:
        view.close()


def test_title_falls_back_to_argv(comms: list[DummyComm]) -> None:
    """Without a label the title is the shell-quoted argv."""
    view = RunView()
    try:
        view.render(running(), 0.0)
        assert "claude -p x" in view.header.value
    finally:
        view.close()


BUTTON_STATES = {
    "running": (True, False, True),
    "thinking": (True, False, True),
    "paused": (False, True, True),
    "reconnecting": (False, False, False),
    "completed": (False, False, False),
    "failed": (False, False, False),
    "cancelled": (False, False, False),
    "timeout": (False, False, False),
    "error": (False, False, False),
}


@pytest.mark.parametrize("status", BUTTON_STATES)
def test_buttons_enabled_per_status(make_view: Callable[..., RunView], status: str) -> None:
    """Pause only when running, Resume only when paused, Cancel while alive, none when finished."""
    view, state = make_view(), in_status(status)
    view.render(state, 2.0)
    enabled = tuple(not view.buttons[name].disabled for name in ("pause", "resume", "cancel"))
    assert (state.status, enabled) == (status, BUTTON_STATES[status])


def test_button_without_callback_is_hidden_and_disabled(
    make_view: Callable[..., RunView],
) -> None:
    """A button whose callback is None is hidden and never enabled."""
    view = make_view(on_pause=None)
    view.render(running(), 0.0)
    assert (view.pause_button.layout.display, view.pause_button.disabled) == (
        "none",
        True,
    )


def test_button_click_calls_callback(make_view: Callable[..., RunView]) -> None:
    """Clicking Cancel calls on_cancel with no arguments."""
    calls: list[str] = []
    view = make_view(on_cancel=lambda: calls.append("cancel"))
    view.render(running(), 0.0)
    view.cancel_button.click()
    assert calls == ["cancel"]


@pytest.mark.parametrize(
    ("age", "health", "text"),
    [
        (2.8, "ok", "last beat 2 s ago"),
        (3.2, "overdue", "last beat 3 s ago (overdue)"),
        (6.2, "lost", "connection lost (last beat 6 s ago)"),
    ],
)
def test_heartbeat_indicator_per_health(
    make_view: Callable[..., RunView], age: float, health: str, text: str
) -> None:
    """The heartbeat shows its age, with a class for ok, overdue and lost (interval 2 s)."""
    view, state = make_view(), running(interval=2.0)
    state.apply("heartbeat", {"status": "alive"}, 10.0)
    view.render(state, 10.0 + age)
    assert f'class="ccx-heartbeat ccx-hb-{health}"' in view.header.value
    assert text in view.header.value


def test_heartbeat_beats_on_each_heartbeat(make_view: Callable[..., RunView]) -> None:
    """Each new heartbeat toggles the heart, so the indicator visibly beats."""
    view, state = make_view(), running()
    values = []
    for n in range(3):
        state.apply("heartbeat", {"status": "alive"}, float(n))
        view.render(state, float(n))
        values.append(re.search(r'<span class="ccx-heart[^>]*>[^<]*</span>', view.header.value).group())
    assert values[0] != values[1] and values[0] == values[2]
    assert ("ccx-beat-1" in values[0], "ccx-beat-0" in values[1]) == (True, True)


def test_inactivity_timer_shown_while_silent(make_view: Callable[..., RunView]) -> None:
    """'no output for N s' appears after a second of silence while running, and goes on output."""
    view, state = make_view(), running(now=0.0)
    view.render(state, 0.5)
    assert "ccx-inactivity" not in view.header.value
    view.render(state, 45.3)
    assert '<span class="ccx-inactivity">no output for 45 s</span>' in view.header.value
    emit(state, "process.output", 45.5, type="stdout", data="x")
    view.render(state, 45.6)
    assert "ccx-inactivity" not in view.header.value


def test_a_run_stopped_by_a_signal_says_stopped_not_just_silent(make_view: Callable[..., RunView]) -> None:
    """A process stopped by someone's SIGSTOP read 'no output for 1 min 00 s' as if thinking; the
    header and the text now say it is stopped, until it writes again."""
    view, state = make_view(), running(now=0.0)
    emit(state, "process.status", 60.0, status="running", inactive_seconds=60.0, stopped=True)
    view.render(state, 60.0)
    assert ('<span class="ccx-inactivity">stopped (SIGSTOP/SIGTSTP), no output for 1 min 00 s</span>'
            in view.header.value)
    line = TextView().render_event("process.status", {"status": "running", "inactive_seconds": 60.0, "stopped": True})
    assert line == "[status] stopped (SIGSTOP/SIGTSTP), no output for 1 min 00 s"
    emit(state, "process.output", 61.0, type="stdout", data="x")
    view.render(state, 63.0)
    assert '<span class="ccx-inactivity">no output for 2 s</span>' in view.header.value


def test_a_stopped_run_that_continues_silently_is_no_longer_stopped_at_the_next_metrics(
    make_view: Callable[..., RunView],
) -> None:
    """``process.metrics`` carries ``stopped`` too: a SIGCONT without output shows within a metrics interval."""
    view, state = make_view(), running(now=0.0)
    emit(state, "process.status", 5.0, status="running", inactive_seconds=5.0, stopped=True)
    emit(state, "process.metrics", 7.0, status="running", inactive_seconds=7.0, stopped=False)
    view.render(state, 7.0)
    assert '<span class="ccx-inactivity">no output for 7 s</span>' in view.header.value


def test_a_stopped_run_is_not_called_thinking() -> None:
    """A silence report of a process stopped by a signal turned the run's status (and badge)
    "thinking"; a stopped process thinks nothing: the run stays "running" while the footer says
    it is stopped, and a silence after the SIGCONT is thinking again."""
    state = running(now=0.0)
    emit(state, "process.status", 30.0, status="running", inactive_seconds=30.0, stopped=True)
    assert state.status == "running"
    emit(state, "process.status", 60.0, status="running", inactive_seconds=60.0, stopped=False)
    assert state.status == "thinking"
    emit(state, "process.status", 90.0, status="running", inactive_seconds=90.0, stopped=True)
    assert state.status == "running"


def test_a_thinking_run_found_stopped_by_metrics_is_running_again() -> None:
    """A run gone "thinking" and then stopped by someone's SIGSTOP: the next ``process.metrics``
    (every few seconds) said stopped, and the footer with it, while the badge read "thinking"
    until the next silence report, up to a threshold (30 s) later. A stopped process thinks
    nothing, whichever report says so."""
    state = running(now=0.0)
    emit(state, "process.status", 30.0, status="running", inactive_seconds=30.0, stopped=False)
    assert state.status == "thinking"
    emit(state, "process.metrics", 32.0, status="running", inactive_seconds=32.0, stopped=True)
    assert (state.stopped, state.status) == (True, "running")


def test_a_reconnecting_run_says_why_the_server_is_unreachable_and_when_it_gives_up(
    make_view: Callable[..., RunView],
) -> None:
    """While reconnecting to a server a dial could not reach, the header says why and how long
    the client goes on (it showed only the badge, for up to five minutes); back, it goes."""
    view, state = make_view(), running(now=0.0)
    state.mark_reconnecting({"attempt": 1, "reason": "no close frame received or sent"}, 1.0)
    view.render(state, 1.5)
    assert "cannot reach" not in view.header.value  # no dial has failed yet
    state.mark_reconnecting({"attempt": 9, "unreachable": "Connection refused", "gives_up_in": 280.0}, 20.0)
    view.render(state, 32.4)
    assert ('<span class="ccx-inactivity">cannot reach the server: Connection refused; gives up in 4 min 27 s</span>'
            in view.header.value)
    state.apply("connected", {"session_id": "s1"}, 33.0)
    view.render(state, 33.5)
    assert "cannot reach" not in view.header.value


def test_inactivity_timer_hidden_while_paused(
    make_view: Callable[..., RunView],
) -> None:
    """A paused run shows no inactivity timer."""
    view = make_view()
    view.render(in_status("paused"), 60.0)
    assert "ccx-inactivity" not in view.header.value


def test_finished_run_shows_outcome(make_view: Callable[..., RunView]) -> None:
    """After the run: final status, exit code and duration; no heartbeat or timer."""
    view, state = make_view(), running()
    emit(
        state,
        "process.completed",
        1.3,
        status="failed",
        exit_code=2,
        duration_seconds=1.2,
        error=None,
    )
    view.render(state, 1.3)
    assert ">failed<" in view.header.value
    assert '<span class="ccx-exit">exit code 2</span><span class="ccx-clock">took 1.2 s</span>' in view.header.value
    assert "ccx-heartbeat" not in view.header.value


def test_a_finished_runs_exit_code_is_on_its_status_line(make_view: Callable[..., RunView]) -> None:
    """The widget's header says "completed · exit code 0 · took 1.2 s" on one line, as the text and
    Markdown records do: the exit code sat on a line of its own under the status and the time."""
    view, state = make_view(), running()
    emit(state, "process.completed", 1.3, status="completed", exit_code=0, duration_seconds=1.2, error=None)
    view.render(state, 1.3)
    status_line = view.header.value.split("<div class='ccx-status-line'", 1)[1].split("</div>", 1)[0]
    assert '<span class="ccx-exit">exit code 0</span><span class="ccx-clock">took 1.2 s</span>' in status_line
    assert "ccx-summary" not in view.header.value


def test_a_short_run_says_it_took_milliseconds(make_view: Callable[..., RunView]) -> None:
    """A run of 78 ms reads "took 78 ms" in the header, as Claude's footer counts (it read "took 0.0 s")."""
    view, state = make_view(), running()
    emit(state, "process.completed", 1.1, status="completed", exit_code=0, duration_seconds=0.078, error=None)
    view.render(state, 1.1)
    assert '<span class="ccx-clock">took 78 ms</span>' in view.header.value


def _contrast_with_white(color: str) -> float:
    """WCAG 2 contrast ratio of white text on ``color`` (#rrggbb)."""
    channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


def test_every_status_badge_is_readable() -> None:
    """A badge's white text has at least WCAG AA contrast (4.5:1) on its colour.

    "paused" (#fd7e14) read at 2.6:1, "reconnecting" at 3.2:1 and "needs you" at 3.6:1."""
    low = {status: round(_contrast_with_white(color), 2) for status, color in STATUS_COLORS.items()
           if _contrast_with_white(color) < 4.5}
    assert low == {}


def test_an_exit_code_is_said_once(make_view: Callable[..., RunView]) -> None:
    """A run whose only error is its exit code reads "exit code 3", not "exit code 3 · exited with code 3"."""
    view, state = make_view(), running()
    emit(state, "process.completed", 1.3, status="failed", exit_code=3, duration_seconds=1.2,
         error="exited with code 3")
    view.render(state, 1.3)
    assert '<span class="ccx-exit">exit code 3</span>' in view.header.value and "ccx-summary" not in view.header.value
    timed_out = running()
    emit(timed_out, "process.completed", 1.3, status="timeout", exit_code=-15, duration_seconds=2.0,
         error="timed out after 2 s")
    view.render(timed_out, 1.3)
    assert '<span class="ccx-exit">killed by SIGTERM</span>' in view.header.value
    assert '<div class="ccx-summary"><span' in view.header.value and "timed out after 2 s</span>" in view.header.value


def test_a_signal_is_named_once_whichever_way_the_exit_code_says_it(make_view: Callable[..., RunView]) -> None:
    """A cancelled command (-15) and a cancelled Claude run (143: the CLI exits 128 + 15) both
    read "killed by SIGTERM" (they read "exit code -15" and "exit code 143"); a process a signal
    killed unasked reads "killed by SIGKILL" once (not beside "killed by signal 9"); a command
    that exits 143 by itself keeps its code."""
    cases = [("cancelled", -15, "cancelled by the client", "killed by SIGTERM", True),
             ("cancelled", 143, "cancelled by the client", "killed by SIGTERM", True),
             ("failed", -9, "killed by signal 9", "killed by SIGKILL", False),
             ("failed", 143, "exited with code 143", "exit code 143", False)]
    for status, code, error, shown, error_shown in cases:
        view, state = make_view(), running()
        emit(state, "process.completed", 1.3, status=status, exit_code=code, duration_seconds=1.2, error=error)
        view.render(state, 1.3)
        assert view.header.value.count(shown) == 1, (code, view.header.value)
        assert f'<span class="ccx-exit">{shown}</span>' in view.header.value, (code, view.header.value)
        assert (error in view.header.value) == error_shown, (code, view.header.value)


def test_error_message_is_escaped(make_view: Callable[..., RunView]) -> None:
    """A server error shown in the summary is escaped."""
    view, state = make_view(), running()
    emit(state, "process.error", 1.0, error="<b>bad</b>")
    view.render(state, 1.0)
    assert "&lt;b&gt;bad&lt;/b&gt;" in view.header.value and "<b>bad" not in view.header.value


def test_close_leaves_no_widget_behind(comms: list[DummyComm]) -> None:
    """close() closes every widget the view made, layouts and styles included."""
    from ipywidgets.widgets.widget import _instances

    before = set(_instances)
    view = RunView("x", on_cancel=lambda: None)
    view.render(running(), 0.0)
    view.close()
    assert set(_instances) == before


class RecordingBody:
    """A Body hook that records its renders."""

    def __init__(self) -> None:
        self.widget = widgets.HTML("claude view")
        self.renders: list[float] = []

    def render(self, state: RunState, now: float) -> None:
        self.renders.append(now)


def test_body_hook_is_shown_and_rendered(make_view: Callable[..., RunView]) -> None:
    """A body widget joins the box and renders with the view; show_output=False hides raw output."""
    body = RecordingBody()
    view, state = make_view(body=body, show_output=False), running()
    emit(state, "process.output", 0.1, type="stdout", data="raw")
    view.render(state, 0.1)
    assert body.widget in view.widget.children and body.renders == [0.1]
    assert view.output.layout.display == "none"
    for part in (body.widget.layout, body.widget.style, body.widget):
        part.close()


# Coalescer


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTimers:
    """A scheduler that queues callbacks until the test fires the due ones."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> None:
        self.pending.append((self.clock.now + delay, callback))

    def fire_due(self) -> None:
        due = [cb for when, cb in self.pending if when <= self.clock.now]
        self.pending = [(when, cb) for when, cb in self.pending if when > self.clock.now]
        for callback in due:
            callback()


class Counter:
    """A render function that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def fake_coalescer(**kwargs: Any) -> tuple[Coalescer, Counter, FakeClock, FakeTimers]:
    """A Coalescer on a fake clock and fake timers, with a counting render."""
    clock, render = FakeClock(), Counter()
    timers = FakeTimers(clock)
    return (
        Coalescer(render, clock=clock, schedule=timers, **kwargs),
        render,
        clock,
        timers,
    )


def test_first_poke_renders_at_once() -> None:
    """A poke after a quiet period renders immediately."""
    coalescer, render, _, timers = fake_coalescer()
    coalescer.poke()
    assert (render.calls, coalescer.dirty, timers.pending) == (1, False, [])


def test_pokes_within_interval_arrange_exactly_one_render() -> None:
    """Pokes inside 1/max_rate of a render schedule a single later render, which then runs."""
    coalescer, render, clock, timers = fake_coalescer(max_rate=10.0)
    coalescer.poke()
    for _ in range(100):
        clock.now += 0.0005
        coalescer.poke()
    assert (render.calls, len(timers.pending), coalescer.due()) == (
        1,
        1,
        pytest.approx(0.05),
    )
    clock.now = 0.1
    timers.fire_due()
    assert (render.calls, coalescer.dirty) == (2, False)


def test_flood_renders_near_the_cap() -> None:
    """50,000 pokes within 2 s at max_rate 10 give about 20 renders and at most one timer."""
    coalescer, render, clock, timers = fake_coalescer(max_rate=10.0)
    most_pending = 0
    for _ in range(50_000):
        clock.now += 2.0 / 50_000
        coalescer.poke()
        timers.fire_due()
        most_pending = max(most_pending, len(timers.pending))
    assert 19 <= render.calls <= 21
    assert most_pending == 1


def test_tick_renders_without_events_but_within_rate() -> None:
    """tick() re-renders for the passage of time, but not sooner than the rate allows."""
    coalescer, render, clock, _ = fake_coalescer(max_rate=10.0)
    coalescer.tick()
    coalescer.tick()
    assert render.calls == 1
    clock.now = 1.0
    coalescer.tick()
    assert render.calls == 2


def test_flush_renders_regardless_of_rate() -> None:
    """flush() renders at once even right after another render."""
    coalescer, render, _, _ = fake_coalescer()
    coalescer.poke()
    coalescer.flush()
    assert (render.calls, coalescer.dirty) == (2, False)


def test_a_render_that_sent_much_makes_the_next_wait_longer() -> None:
    """With ``pace`` asking 0.5 s, a poke 0.2 s after a render waits until 0.5 s, not the 0.1 s
    of max_rate 10."""
    coalescer, render, clock, timers = fake_coalescer(max_rate=10.0, pace=lambda: 0.5)
    coalescer.poke()
    clock.now = 0.2
    coalescer.poke()
    assert (render.calls, coalescer.due()) == (1, pytest.approx(0.3))
    clock.now = 0.49
    timers.fire_due()
    assert render.calls == 1
    clock.now = 0.5
    timers.fire_due()
    assert (render.calls, coalescer.dirty) == (2, False)


def test_the_live_widget_paces_its_renders_by_the_html_they_send(comms: list[DummyComm]) -> None:
    """A live view that re-sends 300,000 characters of output waits 0.6 s before its next
    render (500,000 characters a second), where the rate alone allowed one after 0.1 s; a
    render that sent nothing lets the next come at the rate."""
    from cc_executor_nb.kernel.presenter import LIVE_CHARS_PER_SECOND, WidgetPresenter

    state = running()
    view = RunView("big", state=state, now=0.0, max_chars=400_000)
    presenter = WidgetPresenter(state, view, max_rate=10.0)
    emit(state, "process.output", 0.5, type="stdout", data="x" * 300_000)
    view.render(state, 0.5)
    assert view.sent_chars >= 300_000
    assert presenter.coalescer.interval == pytest.approx(view.sent_chars / LIVE_CHARS_PER_SECOND)
    assert presenter.coalescer.interval >= 0.6
    view.render(state, 0.5)
    assert (view.sent_chars, presenter.coalescer.interval) == (0, pytest.approx(0.1))
    view.close()


def test_a_huge_render_makes_the_next_wait_two_seconds_at_most(comms: list[DummyComm]) -> None:
    """5,000,000 characters would ask 10 s: the live widget's next render (a question's card, the
    timers) waits ``MAX_PACE``, 2 s."""
    from cc_executor_nb.kernel.presenter import MAX_PACE, WidgetPresenter

    state = running()
    view = RunView("huge", state=state, now=0.0, max_chars=6_000_000)
    presenter = WidgetPresenter(state, view, max_rate=10.0)
    emit(state, "process.output", 0.5, type="stdout", data="x" * 5_000_000)
    view.render(state, 0.5)
    assert (MAX_PACE, presenter.coalescer.interval) == (2.0, 2.0)
    view.close()


def test_run_due_drives_deferred_render_without_scheduler() -> None:
    """Without a scheduler or loop, the owner's run_due() performs the deferred render."""
    clock, render = FakeClock(), Counter()
    coalescer = Coalescer(render, clock=clock)
    coalescer.poke()
    coalescer.poke()
    assert (coalescer.run_due(), render.calls) == (False, 1)
    clock.now = 0.2
    assert (coalescer.run_due(), render.calls) == (True, 2)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An asyncio loop running in its own thread, like the kernel extension's."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(scaled(10))
    loop.close()


def test_flood_on_loop_thread_stays_near_cap(loop: asyncio.AbstractEventLoop) -> None:
    """A 1 s poke flood on the loop thread renders about max_rate times, the last poke included."""
    render = Counter()
    coalescer = Coalescer(render, max_rate=10.0)
    coalescer.attach(loop)

    async def flood() -> tuple[int, float]:
        start, pokes = time.monotonic(), 0
        while time.monotonic() - start < 1.0:
            coalescer.poke()
            pokes += 1
            if pokes % 200 == 0:
                await asyncio.sleep(0)  # Let the loop's timers run, as a real client would.
        return pokes, time.monotonic() - start

    pokes, took = asyncio.run_coroutine_threadsafe(flood(), loop).result(scaled(30))
    eventually(lambda: not coalescer.dirty, interval=0.005, what="the last render")
    coalescer.detach()
    assert pokes > 1000
    assert 5 <= render.calls <= took * 10 + 3


def test_pokes_from_other_thread_are_rendered_by_loop(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Pokes from a foreign thread inside the interval end in one render on the loop's timer."""
    rendered_on: list[str] = []
    clock = (
        FakeClock()
    )  # Frozen while poking, so however slow the machine all pokes share one interval.
    coalescer = Coalescer(
        lambda: rendered_on.append(threading.current_thread().name),
        max_rate=10.0,
        clock=clock,
    )
    coalescer.attach(loop)
    for _ in range(1000):
        coalescer.poke()
    clock.now = 1.0
    eventually(lambda: not coalescer.dirty, interval=0.005, what="the last render")
    coalescer.detach()
    assert len(rendered_on) == 2
    assert rendered_on[0] == threading.current_thread().name and rendered_on[1] != rendered_on[0]


def test_attached_ticker_renders_and_detach_stops_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """attach() ticks renders without pokes; after detach() no tick renders any more."""
    render = Counter()
    coalescer = Coalescer(render, max_rate=100.0, tick_interval=0.02)
    coalescer.attach(loop)
    eventually(lambda: render.calls >= 3, interval=0.005, what="three ticks")
    coalescer.detach()
    stopped_at = render.calls
    later = threading.Event()
    # Timers fire in time order, so any tick still armed would run before this one.
    loop.call_soon_threadsafe(loop.call_later, 0.2, later.set)
    assert later.wait(scaled(10))
    assert (render.calls, coalescer.attached) == (stopped_at, False)


def test_coalescer_drives_run_view_from_loop(
    make_view: Callable[..., RunView], loop: asyncio.AbstractEventLoop
) -> None:
    """Notifications applied on the loop thread reach the widgets through the coalescer."""
    view, state = make_view(), running(now=time.monotonic())
    coalescer = Coalescer(lambda: view.render(state, time.monotonic()))
    coalescer.attach(loop)

    def feed() -> None:
        for n in range(500):
            emit(
                state,
                "process.output",
                time.monotonic(),
                type="stdout",
                data=f"line {n}\n",
            )
            coalescer.poke()

    start = time.monotonic()
    loop.call_soon_threadsafe(feed)
    eventually(lambda: "line 499" in view.output.value, interval=0.005, what="the last line shown")
    took = time.monotonic() - start
    coalescer.detach()
    assert 1 <= coalescer.render_count <= took * 10 + 2 < 500


# TextView


@pytest.mark.parametrize(
    ("method", "params", "line"),
    [
        ("heartbeat", {"status": "alive", "last_seq": 3}, "[heartbeat] alive"),
        (
            "process.status",
            {"status": "running", "inactive_seconds": 12.4, "seq": 4},
            "[status] no output for 12 s",
        ),
        (
            "process.status",
            {"status": "running", "inactive_seconds": 0.5, "seq": 4},
            "[status] no output for 0.5 s",
        ),
        (
            "process.status",
            {"status": "running", "inactive_seconds": 1.04, "seq": 4},
            "[status] no output for 1.0 s",
        ),
        ("process.output", {"type": "stdout", "data": "hi\n", "seq": 5}, "hi\n"),
        (
            "process.completed",
            {"status": "completed", "exit_code": 0, "duration_seconds": 1.2, "seq": 6},
            "[completed] exit 0 in 1.2 s",
        ),
        (
            "process.completed",
            {"status": "completed", "exit_code": 0, "duration_seconds": 0.078, "seq": 6},
            "[completed] exit 0 in 78 ms",
        ),
        (
            "process.completed",
            {"status": "cancelled", "exit_code": 143, "duration_seconds": 2, "error": "cancelled by the client"},
            "[cancelled] killed by SIGTERM in 2.0 s: cancelled by the client",
        ),
        (
            "process.completed",
            {"status": "failed", "exit_code": 1, "duration_seconds": 75, "error": None},
            "[failed] exit 1 in 1 min 15 s",
        ),
        (
            "process.completed",
            {"status": "cancelled", "exit_code": None, "error": "cancelled: the background loop was stopped"},
            "[cancelled] the background loop was stopped",
        ),
        (
            "process.started",
            {"pid": 7, "argv": ["claude", "-p", "two words"]},
            "[started] pid 7 claude -p 'two words'",
        ),
        (
            "process.started",
            {"pid": 7, "argv": ["printf", "%s\n", "a\x1b[2Jb"]},
            "[started] pid 7 printf $'%s\\n' $'a\\x1b[2Jb'",
        ),
        ("process.paused", {"status": "paused"}, "[paused]"),
        ("process.cancelled", {"status": "cancelled", "pid": 7}, "[cancelling]"),
        ("process.error", {"error": "reader crashed"}, "[error] reader crashed"),
        (  # (it said "the run goes on there" also when the server had died, taking the run with it)
            "client.reconnecting",
            {"attempt": 1, "reason": "no close frame received or sent"},
            "[reconnecting] the connection to the server dropped (no close frame received or sent); "
            "the run goes on there unless the server itself went down",
        ),
        ("client.reconnecting", {"attempt": 2, "reason": "refused"}, None),
        ("client.reconnecting", {"attempt": 14, "unreachable": "Connection refused", "down_for": 30.4}, None),
        (  # (a server gone for good was followed for five minutes without a word)
            "client.reconnecting",
            {"attempt": 15, "unreachable": "Connection refused", "url": "ws://h:1/ws", "down_for": 31.2,
             "gives_up_in": 268.8, "still_unreached": True},
            "[reconnecting] ws://h:1/ws has not answered for 31 s (Connection refused): the server may be "
            "gone; still trying for 4 min 28 s more",
        ),
        ("process.unknown", {}, None),
    ],
)
def test_text_view_lines(method: str, params: dict[str, Any], line: str | None) -> None:
    """Each notification becomes its documented plain-text line (or nothing)."""
    assert TextView().render_event(method, params) == line


def test_text_view_end_line_does_not_restate_the_exit_code() -> None:
    """A run whose only error is its exit code or signal ends on "[failed] exit 3 in 500 ms", as the
    widget and the records read it; it read "[failed] exit 3 in 2 ms: exited with code 3" (and
    "killed by SIGTERM in 0 ms: killed by signal 15"), the same thing twice."""
    def ended(code: int, error: str) -> str | None:
        params = {"status": "failed", "exit_code": code, "duration_seconds": 0.5, "error": error}
        return TextView().render_event("process.completed", params)

    assert ended(3, "exited with code 3") == "[failed] exit 3 in 500 ms"
    assert ended(-15, "killed by signal 15") == "[failed] killed by SIGTERM in 500 ms"
    assert ended(1, "Prompt is too long") == "[failed] exit 1 in 500 ms: Prompt is too long"


@pytest.mark.parametrize(("kind", "message"), [
    ("capture_reopened", 'the process reopened its own stdout by path for writing (e.g. "echo x > /dev/stdout"): '
                         'with capture "file" that truncates it, and output not yet read is lost; run it with '
                         'capture "pipe"'),
    ("disk_limit", "the process continues"),
])
def test_text_view_says_a_process_notice(kind: str, message: str) -> None:
    """A ``process.notice`` (output lost to a reopened capture file, a run held by the disk limit)
    printed nothing in text mode or the terminal client, only the server's log line "the child
    reopened its stdout by path for writing", which says neither what was lost nor what to do."""
    params = {"kind": kind, "message": message, "pid": 7, "pgid": 7, "seq": 3}
    assert TextView().render_event("process.notice", params) == f"[note] {message}"
    assert TextView(notices=False).render_event("process.notice", params) is None


def test_the_widget_shows_a_process_notice_as_an_escaped_note_line(make_view) -> None:
    """A ``process.notice`` (output lost to `echo b > /dev/stdout` under file capture, a run held
    by the disk limit) left the widget as it was: its user was never told output was lost. The
    header now has a "note:" line per message, escaped, while the run goes on and after it."""
    view, state = make_view(), running()
    message = 'the process reopened its own stdout <b>by path</b> ("echo x > /dev/stdout")\u202e'
    emit(state, "process.notice", 1.0, kind="capture_reopened", message=message)
    view.render(state, 1.0)
    line = ('<div class="ccx-notice" style="color:#a66a00;line-height:var(--jp-content-line-height,1.6)">'
            "note: the process reopened its own stdout "
            "&lt;b&gt;by path&lt;/b&gt; (&quot;echo x &gt; /dev/stdout&quot;)⟨U+202E⟩</div>")
    assert view.header.value.count(line) == 1
    emit(state, "process.completed", 2.0, status="completed", exit_code=0, duration_seconds=2.0)
    view.render(state, 2.0)
    assert view.header.value.count(line) == 1


def test_text_view_can_mute_heartbeats() -> None:
    """heartbeats=False drops heartbeat lines."""
    assert TextView(heartbeats=False).render_event("heartbeat", {"status": "alive"}) is None


# Progress and resources


def test_progress_bar_shows_only_with_an_estimate(make_view) -> None:
    """No estimate, no bar; an estimate shows the bar, its percentage and the ETA."""
    view, state = make_view(), running()
    emit(state, "process.metrics", 1.0, progress={"fraction": None, "eta_seconds": None, "basis": "none"})
    view.render(state, 1.0)
    assert "ccx-progress" not in view.header.value
    emit(state, "process.metrics", 2.0, progress={"fraction": 0.42, "eta_seconds": 12, "basis": "prompt:words"})
    view.render(state, 2.0)
    assert "width:42.0%" in view.header.value
    assert "42% · about 12 s left · counted against the prompt&#x27;s words" in view.header.value


def test_resources_show_cpu_memory_and_a_sparkline(make_view) -> None:
    """CPU, memory and process count appear live, with a sparkline of recent CPU."""
    view, state = make_view(), running()
    for i, cpu in enumerate([10.0, 50.0, 100.0]):
        resources = {"cpu_percent": cpu, "rss_bytes": 212_400_000, "num_processes": 2}
        emit(state, "process.metrics", 1.0 + i, resources=resources)
    view.render(state, 4.0)
    assert '<span class="ccx-resources">CPU 100% ▂▅█ · memory 212.4 MB · 2 processes</span>' in view.header.value
    emit(state, "process.completed", 5.0, status="completed", exit_code=0)
    view.render(state, 5.0)
    assert "ccx-resources" not in view.header.value and "ccx-progress" not in view.header.value


def test_heartbeat_text_counts_down_to_the_next_beat_while_other_messages_flow(make_view) -> None:
    """The next beat is due an interval after the last beat (the server's fixed clock): the
    countdown goes down while metrics come every second, and the age is the beat's (it read
    "last beat 0 s ago · next in ~20 s" at every sample, counted from the last message)."""
    view, state = make_view(), running(interval=20.0)
    state.apply("heartbeat", {"last_seq": state.last_seq, "interval": 20.0}, 1.0)
    shown = []
    for second in (6.0, 11.0):
        emit(state, "process.metrics", second, resources={"cpu_percent": 1.0})
        view.render(state, second + 0.5)
        shown.append(view.header.value)
    assert "last beat 5 s ago · next in ~15 s" in shown[0] and "last beat 10 s ago · next in ~10 s" in shown[1]


def test_between_turns_the_clock_says_how_long_it_waits_for_a_follow_up(make_view) -> None:
    """A completed turn, the process alive: the clock reads "waiting for a follow-up for 40 s",
    not an elapsed time still counting next to "completed" (it looked like a stuck run)."""
    view, state = make_view(), running(interval=20.0)
    state.apply("conversation.turn", {"status": "running", "turn": 1}, 1.0)
    state.apply("conversation.turn", {"status": "completed", "turn": 1}, 10.0)
    view.render(state, 50.0)
    assert "waiting for a follow-up for 40 s" in view.header.value and "elapsed" not in view.header.value


def test_before_the_first_beat_the_indicator_says_alive_and_when_it_comes(make_view) -> None:
    """Messages but no beat yet: "alive · first beat in ~N s" (it said "waiting for heartbeat"
    for the first interval while metrics came every second)."""
    view, state = make_view(), running(interval=20.0)
    connected = state.connected_at
    assert connected is not None
    emit(state, "process.metrics", connected + 5.0, resources={"cpu_percent": 1.0})
    view.render(state, connected + 5.5)
    assert "alive · first beat in ~15 s" in view.header.value


def test_heartbeat_text_after_the_beat_is_due_counts_from_the_last_message(make_view) -> None:
    """An adaptive server skips beats while other messages flow: past the due beat, the
    countdown is from the last message."""
    view, state = make_view(), running(interval=20.0)
    state.apply("heartbeat", {"last_seq": state.last_seq, "interval": 20.0}, 1.0)
    emit(state, "process.output", 22.0, type="stdout", data="x\n")
    view.render(state, 23.0)
    assert "next in ~19 s" in view.header.value


# A live view that stops getting updates (the kernel restarted, the page lost its connection)


def _stale_note(value: str) -> str | None:
    match = re.search(r'<div class="ccx-stale" data-tick="(\d+)" style="([^"]*)">([^<]*)</div>', value)
    return None if match is None else f"{match.group(1)}|{match.group(2)}|{match.group(3)}"


def test_a_live_header_carries_a_hidden_note_that_shows_after_15_s_without_updates(make_view) -> None:
    """The note is hidden, and a CSS animation shows it 15 s after the HTML was last replaced."""
    view = make_view()
    view.render(running(), 3.0)
    note = _stale_note(view.header.value)
    assert note is not None, view.header.value
    _tick, style, text = note.split("|")
    assert "visibility:hidden" in style and "max-height:0" in style
    assert "animation:ccx-stale 0s linear 15s forwards" in style
    assert "@keyframes ccx-stale{to{max-height:6em;visibility:visible}}" in view.header.value
    assert text.startswith("&#9888; Not live: no update from the kernel for over 15 s.")


def test_a_live_header_changes_every_second_even_when_its_clock_reads_the_same(
    make_view, comms: list[DummyComm]
) -> None:
    """Past an hour the clock reads "1 h 02 min" for a minute; the stamp still changes each tick,
    so the note's animation restarts while the kernel is alive."""
    view, state = make_view(), running()
    view.render(state, 3725.2)
    first, before = view.header.value, sent(comms)
    view.render(state, 3726.2)
    assert "elapsed 1 h 02 min" in first and "elapsed 1 h 02 min" in view.header.value
    assert view.header.value != first and sent(comms) == before + 1


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_a_finished_header_has_no_stale_note(make_view, status: str) -> None:
    """The run is over: nothing more is expected, so the view never says it is not live."""
    view = make_view()
    view.render(in_status(status), 30.0)
    assert "ccx-stale" not in view.header.value


def test_the_record_of_a_live_run_has_no_stale_note() -> None:
    """A record (run.transcript(), run.save()) is a snapshot, not a live view."""
    from cc_executor_nb.kernel.html import header_html

    assert "ccx-stale" not in header_html(running(), 3.0, "demo", record=True)
    assert "ccx-stale" in header_html(running(), 3.0, "demo")


def test_command_output_is_in_the_code_font(make_view) -> None:
    """Terminal text keeps its columns: the output's <pre> names JupyterLab's code font, else
    monospace (JupyterLab's and nbconvert's CSS make a <pre> inherit the page's proportional font)."""
    view, state = make_view(), running()
    emit(state, "process.output", 1.0, type="stdout", data="col1  col2\n")
    view.render(state, 1.0)
    assert "font-family:var(--jp-code-font-family,monospace)" in view.output.value


def test_a_kernel_that_cannot_target_a_cell_gets_no_final_record_from_the_run_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ipykernel 6 (the test extra allows 6.25) has no ``set_thread_parent``, so its cells cannot be
    targeted; a run shown there was taken for one shown in terminal IPython, and its end called
    display() from the run's thread, which puts the final record in whatever cell runs then
    (or the last one run), and let the view go. In a kernel what was shown stays shown."""
    import IPython
    import IPython.display

    from cc_executor_nb.kernel.display import RunDisplay

    class Kernel6Shell:
        kernel = object()
        display_pub = object()  # ipykernel 6's ZMQDisplayPublisher: set_parent only

    shown: list[Any] = []
    monkeypatch.setattr(IPython, "get_ipython", Kernel6Shell)
    monkeypatch.setattr(IPython.display, "display", lambda bundle, **kwargs: shown.append(bundle))
    display = RunDisplay(lambda: {"text/plain": "[completed] exit 0"})
    display.show()
    display.finish()
    assert len(shown) == 1 and not display.record_stands


def front_end_value(widget: widgets.Widget) -> Any:
    """The ``value`` a front end holds after the widget's update messages (None: never sent one)."""
    value = None
    for message in widget.comm.messages:
        value = message.get("state", {}).get("value", value)
    return value


def answered_view(make_view: Callable[..., RunView]) -> RunView:
    """A view that rendered a run's output line, "secret answer"."""
    view, state = make_view(), running()
    emit(state, "process.output", 0.1, type="stdout", data="secret answer\n")
    view.render(state, 0.2)
    return view


def test_an_emptied_view_holds_no_output_in_the_front_end_but_keeps_it_here(make_view) -> None:
    """empty_in_front_ends() leaves the front ends (and so a saved widget state) no output; the view keeps it."""
    view = answered_view(make_view)
    view.empty_in_front_ends()
    assert front_end_value(view.output) == "" and "secret answer" in view.output.value
    assert view.widget.comm.messages[-1]["state"] == {"children": []}


def test_a_refilled_view_holds_its_output_in_the_front_end_again(make_view) -> None:
    """refill_front_ends() after empty_in_front_ends() gives the front ends every widget's state back."""
    view = answered_view(make_view)
    view.empty_in_front_ends()
    view.refill_front_ends()
    assert "secret answer" in front_end_value(view.output)
    children = [f"IPY_MODEL_{child.model_id}" for child in view.widget.children]
    assert view.widget.comm.messages[-1]["state"]["children"] == children


def test_a_view_shown_again_after_it_was_emptied_is_whole_in_the_front_end(make_view) -> None:
    """display(run.view) after the record took the widget's place (a --wait run's turn end emptied it
    in the front ends): the cell shows the whole view, not a blank one."""
    view = answered_view(make_view)
    view.empty_in_front_ends()
    view._repr_mimebundle_()
    assert "secret answer" in front_end_value(view.output)


def test_a_view_the_user_displayed_is_not_emptied(make_view) -> None:
    """A view IPython displayed in a cell of the user's stays whole in the front ends when the record
    takes the run's own widget's place: that cell still shows it."""
    view = answered_view(make_view)
    view._repr_mimebundle_()
    view.empty_in_front_ends()
    assert "secret answer" in front_end_value(view.output)

