"""The extension in real ipykernel kernels, driven over ZMQ like a front end would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from .kernel_utils import (
    LOOP_THREAD,
    VIEW_IDS,
    KernelHarness,
    ccexec,
    comm_updates,
    fake_command,
    py,
)
from .util import eventually, scaled

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(60)]

SLEEP_30 = py("import time; time.sleep(30)")
LOOP_THREADS = f"sum(t.name == {LOOP_THREAD!r} for t in __import__('threading').enumerate())"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelHarness]:
    """One kernel with the extension loaded, shared by the independent tests of this module."""
    harness = KernelHarness.start(tmp_path_factory.mktemp("kernel"))
    harness.ok("%load_ext cc_executor_nb")
    yield harness
    harness.shutdown()


@pytest.fixture
def fresh_kernel(tmp_path: Path) -> Iterator[KernelHarness]:
    """A kernel of its own, for tests that unload, reload or shut down."""
    harness = KernelHarness.start(tmp_path)
    harness.ok("%load_ext cc_executor_nb")
    yield harness
    harness.shutdown()


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_gone(pid: int) -> None:
    """Fail unless ``pid`` ends within ``scaled(15)`` s."""
    eventually(lambda: gone(pid), timeout=15, interval=0.05, what=f"process {pid} to end")


def shows_status(status: str) -> object:
    """A predicate: a widget update carrying the given status badge."""
    return lambda r: r.type == "comm_msg" and f"ccx-status-{status}" in json.dumps(r.content)


def test_wait_runs_to_completion_and_the_run_reads_back(kernel: KernelHarness) -> None:
    """%ccexec -c "echo hi" --wait returns a completed Run with exit code 0 and stdout 'hi\\n'."""
    execution = kernel.ok(ccexec("echo hi", "--wait", "-o", "hi"))
    assert kernel.value("(hi.status, hi.exit_code, hi.stdout)") == ("completed", 0, "hi\n")
    displays = [r for r in execution.own if r.type in ("display_data", "execute_result")]
    assert len(displays) == 1 and "application/vnd.jupyter.widget-view+json" in displays[0].content["data"]


def test_magic_returns_at_once_and_the_kernel_stays_free(kernel: KernelHarness, tmp_path: Path) -> None:
    """Without --wait the magic returns well under a second and other cells run while the process does."""
    # The process runs until the test creates the gate file (it slept 3 s), so it is still
    # running when the test looks, however slowly its start came.
    gate = tmp_path / "gate"
    child = py(f"import os, time; any(os.path.exists({str(gate)!r}) or time.sleep(0.01) for _ in range(6000))")
    execution = kernel.ok(ccexec(child, "-o", "bg"))
    print(f"\nnon-blocking %ccexec returned in {execution.kernel_seconds * 1000:.0f} ms")
    assert execution.kernel_seconds < scaled(0.5)  # the kernel's own stamps, without the test's reading lag
    other = kernel.ok("print(6 * 7)")
    assert other.stream() == "42\n" and other.kernel_seconds < scaled(0.5)
    # It was read at once: under load the run was still "starting" (the magic returns before the spawn).
    kernel.wait_until("bg.status == 'running'", timeout=20)
    gate.touch()
    kernel.wait_until("bg.done", timeout=20)
    assert kernel.value("(bg.status, bg.exit_code)") == ("completed", 0)


def test_widget_updates_flow_while_idle_and_while_another_cell_sleeps(kernel: KernelHarness) -> None:
    """The run's widgets keep sending comm updates while the kernel is idle and during a time.sleep(3) cell."""
    kernel.ok(ccexec(fake_command("ticker", "120", "0.05"), "-o", "tick"))
    ids = set(kernel.value(VIEW_IDS.format("tick")))
    idle = comm_updates(kernel.drain(1.0), ids)
    busy = comm_updates(kernel.ok("import time; time.sleep(3)").during, ids)
    spread = busy[-1].at - busy[0].at if busy else 0.0
    print(f"\nwidget updates: {len(idle)} in 1 s idle, {len(busy)} during a 3 s sleep cell "
          f"(spread over {spread:.1f} s)")
    assert len(idle) >= 3 and len(busy) >= 10 and spread >= 2.0
    kernel.ok("tick.cancel()")


def test_widget_update_rate_stays_near_the_cap_for_50000_lines(kernel: KernelHarness) -> None:
    """A run printing 50,000 lines over a few seconds renders its widget at most ~10 times a second."""
    code = "import time; [(print(i), i % 250 or time.sleep(0.01)) for i in range(50000)]"
    # The widget ids are read while the run lives: at its end the record takes the widget's
    # place and the widgets are closed.
    ids = VIEW_IDS.format("flood")
    execution = kernel.ok(f"{ccexec(py(code), '-o', 'flood')}\n_flood_ids = (flood.view.output.model_id, {ids})\n"
                          "flood.wait()")
    output_id, all_ids = kernel.value("_flood_ids")
    all_ids = set(all_ids)
    output_updates = comm_updates(execution.during, {output_id})
    every_update = comm_updates(execution.during, all_ids)
    duration, renders, pieces, lines = kernel.value(
        "(flood.duration, flood.presenter.coalescer.render_count,"
        " sum(e.method == 'process.output' for e in flood.events), flood.stdout.count(chr(10)))"
    )
    print(f"\n50,000 lines in {duration:.2f} s as {pieces} output events: {renders} renders, "
          f"{len(output_updates)} output-widget updates ({len(output_updates) / duration:.1f}/s), "
          f"{len(every_update)} comm updates over all widgets ({len(every_update) / duration:.1f}/s)")
    assert lines == 50000
    assert len(output_updates) <= 10 * duration + 3
    assert renders <= 10 * duration + 3 < pieces


def test_await_in_a_cell_returns_the_finished_run(kernel: KernelHarness) -> None:
    """A cell can await a run (IPython autoawait on the kernel's loop) and gets it back finished."""
    command = fake_command("ticker", "3", "0.1")
    kernel.ok(f"import cc_executor_nb\naw = await cc_executor_nb.arun({command!r}, command=True)")
    assert kernel.value("(aw.status, aw.stdout)") == ("completed", "tick 0\ntick 1\ntick 2\n")


def test_cancel_from_the_run(kernel: KernelHarness) -> None:
    """run.cancel() ends the run as cancelled and its process is gone."""
    kernel.ok(ccexec(SLEEP_30, "-o", "c1"))
    kernel.wait_until("c1.status == 'running'")
    pid = kernel.value("c1.state.pid")
    kernel.ok("c1.cancel()")
    kernel.wait_until("c1.done")
    assert kernel.value("c1.status") == "cancelled"
    assert_gone(pid)


def test_cancel_from_the_button(kernel: KernelHarness) -> None:
    """Clicking the widget's Cancel button cancels the run, and the button ends disabled (read on
    the button itself: once the record replaced the widget, the run lets its view go)."""
    kernel.ok(ccexec(SLEEP_30, "-o", "c2"))
    kernel.wait_until("c2.status == 'running' and not c2.view.cancel_button.disabled")
    kernel.ok("c2_button = c2.view.cancel_button; c2_button.click()")
    kernel.wait_until("c2.done")
    assert kernel.value("c2.status") == "cancelled"
    assert kernel.value("c2_button.disabled") is True


def test_interrupt_during_wait_cancels_the_run(kernel: KernelHarness) -> None:
    """A kernel interrupt during %ccexec --wait cancels the run, and the kernel stays usable."""
    msg_id, sent = kernel.submit(ccexec(SLEEP_30, "--wait", "-o", "slow"))
    kernel.watch(shows_status("running"), timeout=20)
    kernel.manager.interrupt_kernel()
    execution = kernel.finish(msg_id, sent, timeout=30)
    assert execution.error is not None and execution.error[0] == "KeyboardInterrupt"
    assert execution.seconds < scaled(15)
    assert kernel.value("(slow.status, slow.done)") == ("cancelled", True)
    assert_gone(kernel.value("slow.state.pid"))
    assert kernel.value("1 + 1") == 2


def test_help_shows_the_options(kernel: KernelHarness) -> None:
    """%ccexec? pages the docstring with every option."""
    payload = kernel.ok("%ccexec?").reply.get("payload", [])
    text = payload[0]["data"]["text/plain"] if payload else ""
    for option in ("--command", "--wait", "--out", "--server", "--model", "--cwd",
                   "--timeout", "--heartbeat", "--inactivity", "--quiet", "--raw", "--demo"):
        assert option in text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%ccexec --nope -c true", "unrecognized arguments: --nope"),
        ("%ccexec --timeout -2 -c true", "--timeout must be 0 (no limit) or a positive number"),
        ("%ccexec", "needs a prompt"),
    ],
)
def test_bad_options_give_one_line_usage_errors(kernel: KernelHarness, line: str, message: str) -> None:
    """Bad input shows 'UsageError: ...' on one line, without a traceback."""
    execution = kernel.run(line)
    err = execution.stream("stderr")
    assert not execution.ok and err.startswith("UsageError: ") and message in err
    assert err.strip().count("\n") == 0


def test_quiet_mode_prints_plain_text(kernel: KernelHarness) -> None:
    """--quiet streams the output as text into the cell instead of a widget."""
    execution = kernel.ok(ccexec(fake_command("echo", "plain", "text"), "--wait", "--quiet"))
    out = execution.stream()
    assert "plain text\n" in out and "[completed] exit 0" in out
    assert not [r for r in execution.own if r.type == "comm_open"]


def test_quiet_mode_without_wait_writes_to_its_own_cell(kernel: KernelHarness) -> None:
    """Text printed after a --quiet cell has finished still carries that cell's parent header."""
    execution = kernel.ok(ccexec(fake_command("silence", "0.5"), "--quiet", "-o", "q"))

    def late_text() -> str:
        return "".join(
            r.content["text"] for r in kernel.log
            if r.at > execution.ended and r.type == "stream" and r.parent_id == execution.msg_id
        )

    kernel.until(lambda: "after\n" in late_text(), what="'after' printed under the --quiet cell")
    kernel.wait_until("q.done")


def test_reload_ext_twice_leaves_one_loop_thread(fresh_kernel: KernelHarness) -> None:
    """%reload_ext twice between runs leaves exactly one loop thread."""
    fresh_kernel.ok(ccexec("true", "--wait"))
    fresh_kernel.ok("%reload_ext cc_executor_nb")
    fresh_kernel.ok("%reload_ext cc_executor_nb")
    fresh_kernel.ok(ccexec("true", "--wait", "-o", "again"))
    assert fresh_kernel.value("again.status") == "completed"
    assert fresh_kernel.value(LOOP_THREADS) == 1


def test_unload_ext_leaves_no_thread_and_no_child(fresh_kernel: KernelHarness) -> None:
    """%unload_ext mid-run kills the child and leaves no loop thread."""
    fresh_kernel.ok(ccexec(SLEEP_30, "-o", "u"))
    fresh_kernel.wait_until("u.status == 'running'")
    pid = fresh_kernel.value("u.state.pid")
    fresh_kernel.ok("%unload_ext cc_executor_nb")
    assert fresh_kernel.value(LOOP_THREADS) == 0
    assert fresh_kernel.value("u.status") == "cancelled"
    # Why, in its record: not the server's "cancelled by the client", which read as a person's cancel.
    assert fresh_kernel.value("u.error") == "cancelled: the background loop was stopped"
    assert_gone(pid)
    children = psutil.Process(fresh_kernel.pid).children(recursive=True)
    assert [c for c in children if c.status() != psutil.STATUS_ZOMBIE] == []


def test_kernel_shutdown_kills_running_children(fresh_kernel: KernelHarness) -> None:
    """Shutting the kernel down mid-run leaves no child process behind."""
    fresh_kernel.ok(ccexec(SLEEP_30, "-o", "s"))
    fresh_kernel.wait_until("s.status == 'running'")
    pid = fresh_kernel.value("s.state.pid")
    fresh_kernel.shutdown()
    assert_gone(pid)

