"""Batches in process: the queue, concurrency, results, budgets, cancel all, usage-limit holds, views, the magic."""

from __future__ import annotations

import asyncio
import html
import re
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import cc_executor_nb
from cc_executor_nb.demo.texts import THINK_ANSWER
from cc_executor_nb.kernel.batch import Batch, fill
from cc_executor_nb.kernel.batchview import Row, Summary, batch_html, eta, row_text, summary_text
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.loop import stop_shared_loop
from cc_executor_nb.kernel.runstate import format_took

from .conftest import group_alive
from .kernel_utils import py
from .test_handle import sigint_raises  # noqa: F401 - a fixture, requested by name
from .test_terminaltext import FORBIDDEN
from .test_widgets import (
    DummyComm,
    _contrast_with_white,
    comms,  # noqa: F401 - a fixture, requested by name
    sent,
)
from .util import eventually, interrupt_main_once_in, scaled

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def settings() -> Iterator[CCExec]:
    """Text-mode settings without run history; the shared loop (and its runs) stop afterwards."""
    yield CCExec(history_path="none", output_mode="text", kill_grace=1.0)
    stop_shared_loop()


class AliveSampler:
    """Counts, every 10 ms, the batch's runs whose process is alive; keeps the maximum."""

    def __init__(self, batch: Batch) -> None:
        self.batch, self.most, self.samples = batch, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            alive = sum(1 for run in self.batch.runs if run.state.pid is not None and _alive(run.state.pid))
            self.most, self.samples = max(self.most, alive), self.samples + 1
            self._stop.wait(0.01)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.most


def _family(pid: int) -> set[int]:
    """A process and all its descendants (empty when it is gone)."""
    try:
        process = psutil.Process(pid)
        return {pid} | {child.pid for child in process.children(recursive=True)}
    except psutil.Error:
        return set()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# Pure pieces


def test_fill_replaces_item_and_index_and_quotes_commands() -> None:
    """{item} and {index} are filled in; other braces stay; in a command the item stays one argument."""
    assert fill('Summarise {item} as {"json": true} (#{index})', "a.txt", 3) == 'Summarise a.txt as {"json": true} (#3)'
    assert fill("wc -l {item}", "my file.txt", 0, command=True) == "wc -l 'my file.txt'"


def test_fill_splits_a_command_template_before_filling_its_words() -> None:
    """A command's words come from the template: the item goes in raw, or quoted in a shell's -c script."""
    def words(template: str, item: str) -> list[str]:
        return shlex.split(fill(template, item, 7, command=True))

    assert words("cp {item} --file={item} \"--name={item}\" #{index}", "my file.txt") == [
        "cp", "my file.txt", "--file=my file.txt", "--name=my file.txt", "#7"]
    assert words("bash -c 'wc -c {item}'", "my file.txt") == ["bash", "-c", "wc -c 'my file.txt'"]
    assert words("/bin/sh -o errexit -ec 'echo {item}' x {item}", "d;e") == [
        "/bin/sh", "-o", "errexit", "-ec", "echo 'd;e'", "x", "d;e"]  # only the script is quoted
    assert words("bash script.sh -c {item}", "d;e") == ["bash", "script.sh", "-c", "d;e"]  # -c of the script
    assert words("python -c 'print(\"{item}\")'", "a'b") == ["python", "-c", 'print("a\'b")']  # not a shell
    assert words("echo {item}", "") == ["echo", ""]


def test_fill_says_a_command_template_that_cannot_be_split() -> None:
    """An unclosed quote in a command template is a ValueError naming the template."""
    with pytest.raises(ValueError, match="cannot be split"):
        fill("echo 'oops {item}", "x", 0, command=True)


def test_command_items_stay_one_argument_in_a_shell_script(settings: CCExec, tmp_path: Path) -> None:
    """Real shells: 'my file.txt' in bash -c '...' is one file, and 'd;e' in sh -c '...' is text, not a command."""
    (tmp_path / "my file.txt").write_text("hello")
    batch = cc_executor_nb.map("bash -c 'wc -c {item}'", ["my file.txt"], command=True, cwd=str(tmp_path),
                               display=False, settings=settings, wait=True)
    assert (batch.runs[0].exit_code, batch.results()) == (0, ["5 my file.txt\n"])
    batch = cc_executor_nb.map("sh -c 'echo {item}'", ["d;e", "$HOME `id` *"], command=True,
                               display=False, settings=settings, wait=True)
    assert [run.exit_code for run in batch.runs] == [0, 0]
    assert batch.results() == ["d;e\n", "$HOME `id` *\n"]
    batch = cc_executor_nb.map("""sh -c 'printf "%s|" "$1" "$0"' {item} {item}""", ["d;e"], command=True,
                               display=False, settings=settings, wait=True)
    assert batch.results() == ["d;e|d;e|"]  # the arguments after the script are plain words


def test_command_items_fill_plain_words_raw(settings: CCExec) -> None:
    """Outside a shell script the item is exactly the word (or its part): no quotes reach the program."""
    template = py("import sys; print(sys.argv[1:])") + " {item} --file={item} \"--name={item}\""
    batch = cc_executor_nb.map(template, ["my file.txt"], command=True, display=False, settings=settings, wait=True)
    assert batch.results() == [repr(["my file.txt", "--file=my file.txt", "--name=my file.txt"]) + "\n"]


def test_fill_inserts_an_item_that_holds_a_placeholder_as_it_is() -> None:
    """An item with ``{index}`` or ``{item}`` in its text is not filled again (one pass)."""
    assert fill("echo {item} #{index}", "use {index} here", 4) == "echo use {index} here #4"
    assert fill("{index}: {item}", "x{item}y", 0) == "0: x{item}y"


def test_rows_and_bar_are_escaped() -> None:
    """Labels, last lines and worker names from children are escaped in the table."""
    rows = [Row(0, "<img src=x onerror=alert(1)>", "completed", 1.5, 0.01, "<script>x</script>", "tcp://<w>")]
    summary = Summary(1, 1, 0, 0, 0, 0, 0.01, "custom endpoint", None, "done")
    page = batch_html(summary, rows)
    assert "<img" not in page and "<script" not in page and "&lt;script&gt;" in page and "&lt;w&gt;" in page
    assert "≈ $0.0100 (estimate: custom endpoint)" in page


def test_summary_and_row_text() -> None:
    """The text forms carry the counts, cost, queue state and each row's status, time, cost, label and last line."""
    summary = Summary(20, 12, 4, 4, 1, 0, 0.1234, None, 12.0, "held", "a usage limit resets in 3 s", 1.0, completed=11)
    assert summary_text(summary) == (
        "[batch] 12/20 · 12 done (11 completed, 1 failed) · 4 running · 4 queued · $0.1234 of $1.0000 budget"
        " · ETA 12 s · held: a usage limit resets in 3 s"
    )
    assert row_text(Row(3, "claude: write\na haiku", "completed", 1.2, 0.0081, "the end")) == (
        "#3 completed · 1.2 s · $0.0081 · claude: write a haiku → the end"
    )


def test_the_done_count_says_how_the_runs_ended() -> None:
    """"5 done" counted failed and skipped runs as if done meant completed: the count now
    names each end, in the bar and the text alike."""
    summary = Summary(6, 5, 1, 0, 1, 1, None, None, None, "running", completed=3)
    assert summary_text(summary) == "[batch] 5/6 · 5 done (3 completed, 1 failed, 1 skipped) · 1 running · 0 queued"
    assert "<span>5 done (3 completed, 1 failed, 1 skipped) · 1 running · 0 queued</span>" in batch_html(summary, [])
    assert summary_text(Summary(2, 0, 2, 0, 0, 0, None, None, None)).startswith("[batch] 0/2 · 0 done · 2 running")


@pytest.mark.parametrize(("seconds", "took"), [(0.015, "15 ms"), (0.0004, "< 1 ms"), (0.9996, "1.0 s"),
                                             (1.25, "1.2 s"), (125.0, "2 min 05 s")])
def test_a_finished_rows_time_reads_as_the_runs_records_do(seconds: float, took: str) -> None:
    """A finished run's time in the batch table and its text row is written as its records write
    it (format_took): a 15 ms run read "0.0 s" in the table, "15 ms" in its records."""
    row = Row(0, "echo hi", "completed", seconds, None, "hi")
    assert format_took(seconds) == took
    page = batch_html(Summary(1, 1, 0, 0, 0, 0, None, None, None, "done"), [row])
    assert f"<td style='text-align:left;padding:1px 6px'>{html.escape(took)}</td>" in page
    assert row_text(row) == f"#0 completed · {took} · echo hi → hi"


def test_a_running_rows_time_stays_a_timer() -> None:
    """A running row's time still counts like a timer: whole seconds in the table, tenths in text."""
    row = Row(0, "sleep 9", "running", 2.46, None, "")
    page = batch_html(Summary(1, 0, 1, 0, 0, 0, None, None, None), [row])
    assert "<td style='text-align:left;padding:1px 6px'>2 s</td>" in page
    assert row_text(row) == "#0 running · 2.5 s · sleep 9"


def test_row_text_carries_no_control_characters() -> None:
    """A batch item's escape sequences and a child's carriage return never reach the terminal through a row."""
    row = Row(1, "echo 'b\x1b[31mred'", "completed", 0.1, None, "\x1b[2Jwiped\rover\x07")
    assert row_text(row) == "#1 completed · 100 ms · echo 'b[31mred' → [2Jwiped over"  # inert without its ESC


def test_the_batch_table_carries_no_terminal_or_bidi_control() -> None:
    """A batch item's label (the cell and its title) and a child's last line hold no control
    or bidi control raw: the title once carried the label's escape sequences whole."""
    row = Row(1, "claude: a\x1b]0;T\x07\x9b\x00\u202eb", "completed", 0.1, None, "\x1b]52;c;QQ\x07x\u2066y")
    page = batch_html(Summary(1, 1, 0, 0, 0, 0, 0.0, None, None, "done"), [row])
    assert not FORBIDDEN.search(page), FORBIDDEN.findall(page)
    assert "title='claude: a⟨U+202E⟩b'" in page and "x⟨U+2066⟩y" in page


def test_the_batch_tables_cells_are_left_aligned_under_their_headings() -> None:
    """Jupyter's stylesheet right-aligns table cells in an output (and so in an nbconvert
    HTML export): the headings were left-aligned, the labels and last lines under them
    right-aligned. Every cell now says text-align:left, as its heading does."""
    row = Row(0, "claude: what is 2+2", "completed", 0.5, 0.008, "4")
    page = batch_html(Summary(1, 1, 0, 0, 0, 0, 0.0, None, None, "done"), [row])
    cells = re.findall(r"<t([dh]) style='([^']*)'", page)
    assert len(cells) == 12 and all("text-align:left" in style for _, style in cells), cells


def test_eta_from_the_mean_of_finished_runs() -> None:
    """Queued work plus what running runs have left, spread over the slots; None before any finished."""
    assert eta(10.0, queued=4, running_elapsed=[2.0, 9.0], slots=2) == 25
    assert eta(None, queued=4, running_elapsed=[], slots=2) is None


# Commands


def test_commands_run_at_most_concurrency_at_once_and_results_keep_input_order(settings: CCExec) -> None:
    """8 commands, concurrency 3: never more than 3 processes alive, all complete, stdout in input order."""
    code = "import random, sys, time; time.sleep(random.uniform(0.2, 0.6)); print(sys.argv[1])"
    batch = cc_executor_nb.map(py(code) + " {item}", [f"n{i}" for i in range(8)], command=True, concurrency=3,
                               display=False, settings=settings)
    sampler = AliveSampler(batch)
    batch.wait(scaled(60))
    most = sampler.stop()
    print(f"\nat most {most} of 8 alive at once (concurrency 3), {sampler.samples} samples")
    assert [run.status for run in batch.runs] == ["completed"] * 8
    assert batch.results() == [f"n{i}\n" for i in range(8)]
    assert 2 <= most <= 3 and batch.status == "done"


def test_cancel_all_kills_running_runs_and_skips_the_queue(settings: CCExec) -> None:
    """Cancel all: the 2 running processes (and their groups) are gone, the 4 queued never start."""
    batch = cc_executor_nb.map([py("import time; time.sleep(60)")] * 6, command=True, concurrency=2,
                               display=False, settings=settings)
    eventually(lambda: sum(run.status == "running" for run in batch.runs) == 2, timeout=20, what="2 running")
    groups = [run.state.pgid for run in batch.runs if run.state.pgid is not None]
    batch.cancel().wait(scaled(30))
    statuses = [item.status for item in batch.items]
    assert [run.status for run in batch.runs] == ["cancelled"] * 6 and statuses.count("skipped") == 4
    assert statuses.count("cancelled") == 2  # the two that ran say how they ended, not "started"
    assert len(groups) == 2 and all(group_alive(pgid) == [] for pgid in groups)
    assert batch.status == "cancelled" and batch.done and batch.results()[2:] == [None] * 4  # it says how it ended


def test_a_queued_runs_record_says_it_has_not_started(settings: CCExec) -> None:
    """A run waiting in the queue read "starting" and "Still running when this record was
    made": every form of its record now says it is queued and has not started."""
    from cc_executor_nb.kernel.transcript import QUEUED_NOTE, Transcript

    batch = cc_executor_nb.map([py("import time; time.sleep(60)")] * 2, command=True, concurrency=1,
                               display=False, settings=settings)
    eventually(lambda: batch.runs[0].status == "running", timeout=20, what="the first run")
    record = Transcript(batch.runs[1])
    text, markdown, page = record.text(), record.markdown(), record.html()
    assert text.splitlines()[1] == "queued" and f"[queued] {QUEUED_NOTE}" in text
    assert markdown.splitlines()[2] == "**queued**" and QUEUED_NOTE in markdown
    assert ">queued</span>" in page and QUEUED_NOTE in page.replace("&#x27;", "'")
    assert not any("Still running" in form or "starting" in form for form in (text, markdown, page))
    assert "Still running" in Transcript(batch.runs[0]).text()
    batch.cancel().wait(scaled(30))


def test_a_batch_whose_loop_stops_ends_its_queued_runs(settings: CCExec) -> None:
    """The background loop stopped under a batch: its queued items end cancelled, "skipped" with a
    reason, and wait() returns (they stayed "starting" for good, batch.done False, while the
    items and summary() said skipped)."""
    batch = cc_executor_nb.map([py("import time; time.sleep(60)")] * 3, command=True, concurrency=1,
                               display=False, settings=settings)
    eventually(lambda: batch.runs[0].status == "running", timeout=20, what="the first run")
    stop_shared_loop()
    assert batch.wait(scaled(30)) is batch and batch.done
    assert [run.status for run in batch.runs] == ["cancelled"] * 3
    assert [item.status for item in batch.items] == ["cancelled", "skipped", "skipped"]
    assert [run.error for run in batch.runs[1:]] == ["skipped: the background loop was stopped"] * 2


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_batch_whose_loop_stops_ends_cancelled_not_done(settings: CCExec, concurrency: int) -> None:
    """The background loop stopped under a batch (one item running and one queued, or both running):
    the batch reads cancelled, in status and summary() (it read "done", as if every item had run to
    its end)."""
    batch = cc_executor_nb.map([py("import time; time.sleep(60)")] * 2, command=True, concurrency=concurrency,
                               display=False, settings=settings)
    eventually(lambda: sum(run.status == "running" for run in batch.runs) == concurrency, timeout=20,
               what="the runs running")
    stop_shared_loop()
    assert batch.wait(scaled(30)) is batch
    assert (batch.status, batch.summary().state) == ("cancelled", "cancelled")


@pytest.mark.usefixtures("sigint_raises")
def test_an_interrupted_batch_wait_shows_in_one_line_in_ipython(settings: CCExec) -> None:
    """Ctrl-C in batch.wait() cancels the batch, and IPython shows the interrupt as one line saying
    so (its _render_traceback_ hook), not the frames of the wait."""
    batch = cc_executor_nb.map([py("import time; time.sleep(60)")], command=True, display=False, settings=settings)
    eventually(lambda: batch.runs[0].status == "running", timeout=20, what="the run running")
    interrupt_main_once_in("wait")
    with pytest.raises(KeyboardInterrupt) as interrupted:
        batch.wait()
    assert batch.status == "cancelled"
    assert interrupted.value._render_traceback_() == ["KeyboardInterrupt: the batch was cancelled"]


class _Unwithdrawable:
    """A placement that keeps its items placing and cannot withdraw them (its cluster's client closed)."""

    def start(self, entry: Any, batch: Batch) -> None:
        """Hand the item over; it never starts."""

    def cancel(self, entry: Any) -> None:
        raise RuntimeError("the client is closed")

    def close(self) -> None:
        """Nothing to release."""


def test_cancel_all_settles_every_item_when_its_placement_cannot_withdraw_one(settings: CCExec) -> None:
    """cancel() ends every placing item cancelled although withdrawing each one raises (it stopped at the
    first one, in a loop callback, and the batch never ended)."""
    from cc_executor_nb.kernel.api import prepare

    prepared = [prepare("echo hi", command=True, view=False, settings=settings) for _ in range(2)]
    batch = Batch([p.run for p in prepared], ["a", "b"], prepared[0].loop, placement=_Unwithdrawable(),
                  settings=settings, mode="text").start()
    eventually(lambda: [item.status for item in batch.items] == ["placing"] * 2, timeout=10, what="placing")
    batch.cancel().wait(scaled(10))
    assert [(run.status, run.error) for run in batch.runs] == [("cancelled", "cancelled before the run started")] * 2


class _Placed:
    """A placement that hands its items over (they stay placing) and withdraws them when asked."""

    def __init__(self) -> None:
        self.withdrawn: list[int] = []

    def start(self, entry: Any, batch: Batch) -> None:
        """Hand the item over; it never starts."""

    def cancel(self, entry: Any) -> None:
        self.withdrawn.append(entry.index)

    def close(self) -> None:
        """Nothing to release."""


def _two_placing(settings: CCExec) -> tuple[Batch, _Placed]:
    """A started batch of three commands, two of them placing (handed to ``_Placed``), one queued."""
    from cc_executor_nb.kernel.api import prepare

    prepared = [prepare("echo hi", command=True, view=False, settings=settings) for _ in range(3)]
    placement = _Placed()
    batch = Batch([p.run for p in prepared], ["a", "b", "c"], prepared[0].loop, concurrency=2, placement=placement,
                  settings=settings, mode="text").start()
    eventually(lambda: [item.status for item in batch.items] == ["placing", "placing", "queued"], timeout=10,
               what="two placing")
    return batch, placement


def test_an_item_cancelled_while_placing_reads_skipped(settings: CCExec) -> None:
    """cancel() while an item is placing (handed to its cluster, not started): the item reads skipped, as
    the README says of one that never started, and counts as skipped (it read "cancelled")."""
    batch, placement = _two_placing(settings)
    batch.cancel().wait(scaled(10))
    assert placement.withdrawn == [0, 1]
    assert [item.status for item in batch.items] == ["skipped"] * 3
    assert batch.summary().skipped == 3 and batch.results() == [None] * 3


def test_an_item_placed_after_its_batch_was_cancelled_is_stopped_as_a_stray_not_started(settings: CCExec) -> None:
    """A placement that reports an item placed once the batch was cancelled (a Dask worker started its
    job meanwhile) gets stray() called, to cancel that job; the run is not started (placed() no longer
    has a branch that started it and then cancelled only the run, leaving the worker's job)."""
    batch, _ = _two_placing(settings)
    batch.cancel().wait(scaled(10))
    calls: list[str] = []
    batch.placed(batch.items[0], start=lambda: calls.append("start"), worker="w1", stray=lambda: calls.append("stray"))
    eventually(lambda: calls == ["stray"], timeout=10, what="the stray stopped")
    assert batch.items[0].status == "skipped" and batch.items[0].worker is None


@pytest.mark.claude
def test_a_run_placed_after_its_batch_was_dropped_has_its_question_denied(settings: CCExec, tmp_path: Path) -> None:
    """A placement (Dask) starts an item's run only once its worker reports the job: a batch nobody held
    any more by then kept that run's question open for good (the run was judged when handed over, not
    started yet, so nothing was judged); now it is judged when it starts: denied 'auto', its CLI exits."""
    import gc

    from cc_executor_nb.kernel.api import prepare

    prepared = [prepare("bash: touch asked.txt", demo=True, cwd=str(tmp_path), view=False, settings=settings)]
    batch = Batch([p.run for p in prepared], ["a"], prepared[0].loop, placement=_Placed(), settings=settings,
                  mode="text")
    handle = batch.user_handle()
    batch.start()
    item, run = batch.items[0], batch.items[0].driven  # the loop's own objects: no user handle
    assert item.status == "placing"
    del handle
    gc.collect()
    batch.placed(item, start=lambda: (run.start(batch.loop), run.end()), worker="w1")  # as DaskPlacement._attach
    batch.wait(scaled(60))
    assert [(q.status, q.decided_by) for q in run.permission_requests] == [("denied", "auto")]
    assert item.status == "completed" and not (tmp_path / "asked.txt").exists()


def test_a_batch_shown_in_a_widget_lets_go_of_its_handle(settings: CCExec) -> None:
    """The widget's buttons were bound to the user's handle and the loop's batch keeps the widget: a
    dropped handle of a batch shown in a widget never went, so its runs waited whether or not a widget
    showed them (test_a_dropped_batch_shown_in_a_widget_still_waits passed with that check removed)."""
    import gc
    import weakref

    batch = cc_executor_nb.map(["sleep 30"], command=True, display=True,
                               settings=CCExec(history_path="none", output_mode="widget", kill_grace=1.0))
    run, handle = batch.items[0].driven, weakref.ref(batch)
    del batch
    gc.collect()
    try:
        assert handle() is None
    finally:
        run.cancel()


def test_a_batch_whose_loop_stops_while_its_items_are_placing_ends(settings: CCExec) -> None:
    """The background loop stopped while items were placing (handed to a cluster, not started): they are
    withdrawn and skipped, and the batch ends cancelled (wait() hung for good: nothing on the loop was
    left to settle them)."""
    batch, placement = _two_placing(settings)
    stop_shared_loop()
    assert batch.wait(scaled(10)) is batch and batch.status == "cancelled"
    assert [item.status for item in batch.items] == ["skipped"] * 3 and placement.withdrawn == [0, 1]


def test_an_items_status_follows_its_run_to_the_end(settings: CCExec, tmp_path: Path) -> None:
    """items[i].status is queued, then its run's status while it runs and at its end."""
    # Each run waits for the gate file, so the first is still running when the statuses are
    # read (it slept 1 s: a test stalled that long under load saw it completed).
    gate = tmp_path / "gate"
    template = py(
        "import os, sys, time; deadline = time.monotonic() + 60\n"
        f"while not os.path.exists({str(gate)!r}) and time.monotonic() < deadline: time.sleep(0.01)\n"
        "sys.exit(int(sys.argv[1]))"
    ) + " {item}"
    batch = cc_executor_nb.map(template, ["0", "3", "0"], command=True, concurrency=1, display=False, settings=settings)
    eventually(lambda: batch.runs[0].status == "running", timeout=20, what="the first run")
    assert [item.status for item in batch.items] == ["running", "queued", "queued"]
    assert [row.status for row in batch.rows()] == ["running", "queued", "queued"]  # the table's rows too
    gate.touch()
    batch.wait(scaled(30))
    assert [item.status for item in batch.items] == [run.status for run in batch.runs] == [
        "completed", "failed", "completed"]
    assert [item.stage for item in batch.items] == ["started"] * 3  # the queue's own record


def test_pause_queue_lets_running_runs_finish_and_starts_nothing(settings: CCExec) -> None:
    """Paused after the first start: the running one completes, the rest wait until resume()."""
    batch = cc_executor_nb.map([py("import time; time.sleep(0.5); print('x')")] * 3, command=True, concurrency=1,
                               display=False, settings=settings)
    batch.pause()
    eventually(lambda: batch.runs[0].done, timeout=20, what="the first run's end")
    batch.loop.call(asyncio.sleep(0))  # the loop has acted on that end (it would have started the next)
    assert [item.status for item in batch.items[1:]] == ["queued", "queued"] and batch.status == "paused"
    batch.resume().wait(scaled(30))
    assert [run.status for run in batch.runs] == ["completed"] * 3


def test_a_paused_batch_has_no_eta(settings: CCExec) -> None:
    """summary().eta_seconds is None while the queue is paused, a number again once resumed
    (it counted down as if the queued runs would start)."""
    batch = cc_executor_nb.map([py("print('x')"), py("import time; time.sleep(60)"), py("print('y')")],
                               command=True, concurrency=1, display=False, settings=settings)
    eventually(lambda: batch.runs[0].done and batch.summary().running == 1, timeout=20, what="the second run")
    assert isinstance(batch.summary().eta_seconds, int)
    assert batch.pause().summary().eta_seconds is None and batch.summary().state == "paused"
    assert isinstance(batch.resume().summary().eta_seconds, int)
    batch.cancel().wait(scaled(30))


def test_controls_have_acted_when_they_return(settings: CCExec) -> None:
    """pause(), resume() and cancel() return once the queue has acted: the status read just after says so
    (it read "running" after pause() and after cancel(), the call only queued for the loop)."""
    batch = cc_executor_nb.map([py("import time; time.sleep(60)")] * 3, command=True, concurrency=1,
                               display=False, settings=settings)
    assert batch.pause().status == "paused"
    assert batch.resume().status == "running"
    assert batch.cancel().status == "cancelled"
    assert [item.status for item in batch.items[1:]] == ["skipped", "skipped"]
    batch.wait(scaled(30))


def test_text_mode_prints_each_end_and_the_total(settings: CCExec, capsys: pytest.CaptureFixture[str]) -> None:
    """In text mode a line per finished run, then the summary line."""
    batch = cc_executor_nb.map(["echo one", "echo two"], command=True, settings=settings, wait=True)
    out = capsys.readouterr().out
    assert "#0 completed" in out and "echo one → one" in out and "#1 completed" in out
    assert out.rstrip().splitlines()[-1].startswith("[batch] 2/2 · 2 done (2 completed)")
    assert "2 done (2 completed)" in repr(batch)


def test_a_batchs_record_and_text_name_its_failed_runs(settings: CCExec, capsys: pytest.CaptureFixture[str]) -> None:
    """A batch with a failing run says "2 done (1 completed, 1 failed)" in its last line, its repr
    and its record (its "2 done" read as if both had succeeded)."""
    batch = cc_executor_nb.map(["true", "false"], command=True, settings=settings, wait=True)
    counts = "2 done (1 completed, 1 failed)"
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith(f"[batch] 2/2 · {counts} ·")
    record = batch._record()
    assert counts in repr(batch) and counts in record["text/plain"] and counts in record["text/html"]


def test_text_mode_prints_a_cancelled_batchs_totals_once(settings: CCExec, capsys: pytest.CaptureFixture[str]) -> None:
    """A batch that ends cancelled says its totals once (the final "cancelled" state came out a second time)."""
    batch = cc_executor_nb.map([py("import time; time.sleep(30)")] * 3, command=True, concurrency=1, settings=settings)
    eventually(lambda: batch.runs[0].status == "running", timeout=20, what="the first run")
    batch.cancel().wait(scaled(30))
    batch.loop.call(asyncio.sleep(0.3))  # any refresh still due has run
    totals = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[batch] 3/3")]
    assert len(totals) == 1 and totals[0].endswith("· cancelled"), totals


def test_a_cancelled_batchs_line_counts_no_item_still_queued(
    settings: CCExec, capsys: pytest.CaptureFixture[str]
) -> None:
    """The line a cancel prints says every queued item skipped (it read "1 done (1 skipped) · 1
    running · 1 queued · cancelled": rendered while the queue was half skipped)."""
    batch = cc_executor_nb.map([py("import time; time.sleep(30)")] * 3, command=True, concurrency=1, settings=settings)
    eventually(lambda: batch.runs[0].status == "running", timeout=20, what="the first run")
    time.sleep(0.5)  # the view is idle: the first change renders at once
    batch.cancel().wait(scaled(30))
    cancelled = [line for line in capsys.readouterr().out.splitlines()
                 if line.startswith("[batch]") and line.endswith("· cancelled")]
    assert cancelled and all("· 0 queued ·" in line for line in cancelled), cancelled


def test_an_empty_batch_is_done_when_map_returns(settings: CCExec) -> None:
    """No items: nothing to wait for, so map() returns the batch already done (not "running" for a moment)."""
    batch = cc_executor_nb.map([], command=True, settings=settings, display=False)
    assert (batch.status, batch.done, batch.results()) == ("done", True, [])


@pytest.mark.parametrize(("keywords", "message"), [
    ({"run_max_budget_usd": -1}, r"^run_max_budget_usd must be a positive number of dollars, not -1$"),
    ({"command": True, "model": "x"}, r"^a command \(command=True\) takes no Claude option: model$"),
    ({"no_such_option": 1}, "no_such_option"),
    ({"command": True, "timeout": -1}, "timeout"),
    ({"command": True, "heartbeat": 0}, "heartbeat"),
])
def test_an_empty_batch_checks_its_options_all_the_same(
    settings: CCExec, keywords: dict[str, Any], message: str
) -> None:
    """map() of no items refuses options every run would refuse (they were accepted: the check was
    each run's, and there was none), so a bad call fails before its items come."""
    with pytest.raises((TypeError, ValueError), match=message):
        cc_executor_nb.map("echo {item}", [], display=False, settings=settings, **keywords)


def test_to_dataframe_has_one_row_per_item(settings: CCExec) -> None:
    """The DataFrame has the items, statuses, exit codes and results in input order."""
    batch = cc_executor_nb.map("echo {item}", ["a", "b"], command=True, display=False, settings=settings, wait=True)
    frame = batch.to_dataframe()
    assert list(frame["item"]) == ["a", "b"] and list(frame["status"]) == ["completed"] * 2
    assert list(frame["result"]) == ["a\n", "b\n"] and list(frame["exit_code"]) == [0, 0]


def test_batch_wait_refuses_a_timeout_of_nan(settings: CCExec) -> None:
    """batch.wait(nan) waited for the whole batch, as wait(None) does: a ValueError now."""
    batch = cc_executor_nb.map("sleep {item}", ["2"], command=True, display=False, settings=settings)
    with pytest.raises(ValueError, match=r"^timeout must be a number of seconds or None, not nan$"):
        batch.wait(float("nan"))
    assert not batch.done
    batch.cancel().wait(scaled(20))


def test_the_dataframe_of_an_empty_batch_has_the_columns(settings: CCExec) -> None:
    """map() of no items gives a DataFrame with no rows and the usual columns (it had none, so
    frame[frame.status == "failed"] raised AttributeError, and frame["status"] KeyError)."""
    batch = cc_executor_nb.map("echo {item}", [], command=True, display=False, settings=settings, wait=True)
    frame = batch.to_dataframe()
    assert len(frame) == 0 and list(frame.columns) == [
        "item", "label", "status", "exit_code", "duration", "cost_usd", "session_id", "result", "error", "worker"]
    assert frame[frame.status == "failed"].empty


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: cc_executor_nb.map("echo hi", command=True, settings=s), "list of prompts"),
    (lambda s: cc_executor_nb.map(["a"], ["b"], settings=s), "template string"),
    # (a template without a placeholder ran the same prompt once per item: a typo paid N times)
    (lambda s: cc_executor_nb.map("Summarise {file}", ["a", "b"], settings=s),
     r"^the template 'Summarise \{file\}' has no \{item\} or \{index\}: every run would be the same$"),
    # (a string of items ran once per character: 3 runs of echo a, b, c)
    (lambda s: cc_executor_nb.map("echo {item}", "abc", command=True, settings=s),
     r"^the items are one string \('abc'\): give a list of items \(\['abc'\] for one\)$"),
    (lambda s: cc_executor_nb.map(["a"], concurrency=0, settings=s), "^concurrency must be a positive integer"),
    (lambda s: cc_executor_nb.map(["a"], max_budget_usd=-1, settings=s), "max_budget_usd"),
    # (it said max_budget_usd, map()'s batch budget)
    (lambda s: cc_executor_nb.map(["a"], run_max_budget_usd=-1, settings=s),
     r"^run_max_budget_usd must be a positive number of dollars, not -1$"),
    (lambda s: cc_executor_nb.map(["true"], command=True, run_max_budget_usd=1, settings=s),
     r"^a command \(command=True\) takes no Claude option: run_max_budget_usd$"),
    (lambda s: cc_executor_nb.map(["a"], on_budget="stop", settings=s), "^on_budget must be 'finish' or 'cancel'"),
    (lambda s: cc_executor_nb.map(["a"], label="x", settings=s), "'label'"),
    # (accepted, and on_budget then did nothing)
    (lambda s: cc_executor_nb.map(["true"], command=True, on_budget="cancel", settings=s),
     r"^on_budget='cancel' needs max_budget_usd: without a batch budget it never acts$"),
    # (accepted, and the budget never acted: a command reports no cost)
    (lambda s: cc_executor_nb.map(["true"], command=True, max_budget_usd=1, settings=s),
     r"^max_budget_usd needs Claude runs: a command reports no cost, so the budget never acts$"),
    (lambda s: cc_executor_nb.map(["true"], command=True, resources={"claude": 1}, settings=s),
     r"resources applies only to a batch on a cluster \(cluster=\.\.\.\)"),
])
def test_bad_batch_arguments_are_refused(settings: CCExec, call: Any, message: str) -> None:
    """A string without items, items without a template, bad limits, per-run display keywords and resources
    without a cluster: clear errors."""
    with pytest.raises((TypeError, ValueError), match=message):
        call(settings)


# The widget


def test_the_widget_renders_one_html_message_per_render_and_expands_a_run_lazily(
    settings: CCExec, request: pytest.FixtureRequest
) -> None:
    """Showing a batch makes only the table, buttons and selector; a run's widget is made when expanded."""
    made_comms: list[DummyComm] = request.getfixturevalue("comms")
    settings.output_mode = "widget"
    batch = cc_executor_nb.map([py("print('hi')")] * 3, command=True, display=False, settings=settings)
    batch.show()
    made = len(made_comms)
    # Read while the batch lives: a finished batch lets its view go (and closing its widgets drops their comms).
    view = batch._view
    assert view is not None
    table_comm = view.table.comm
    other_comms = [w.comm for w in (view.cancel_button, view.pause_button, view.selector, view.expanded)]
    batch.wait(scaled(30))
    assert "3/3" in view.table.value
    assert len(made_comms) == made, "no run made a widget of its own"
    table_messages = len(table_comm.messages)
    other = sum(len(comm.messages) for comm in other_comms)
    print(f"\n{batch.coalescer.render_count} renders: {table_messages} table messages, {other} others")
    assert 1 <= table_messages <= batch.coalescer.render_count and other <= 2
    widget = batch.expand(1)
    assert len(made_comms) > made and widget is batch._expanded[1].view.widget
    assert "completed" in batch._expanded[1].view.header.value
    batch.collapse(1)
    assert batch._expanded == {} and sent(made_comms) > 0


def test_the_pause_button_says_resume_while_the_queue_is_paused(settings: CCExec) -> None:
    """Clicking Pause queue pauses the batch and relabels the button Resume queue; clicking it again resumes."""
    settings.output_mode = "widget"
    batch = cc_executor_nb.map([py("import time; time.sleep(0.5)")] * 3, command=True, concurrency=1, display=False,
                               settings=settings)
    batch.show()
    view = batch._view
    assert view is not None and view.pause_button.description == "Pause queue"
    view.pause_button.value = True  # what a click in the front end does
    eventually(lambda: batch.status == "paused" and view.pause_button.description == "Resume queue",
               timeout=10, what="the paused batch and its Resume label")
    assert view.pause_button.icon == "play"
    # A paused table still changes every second: its note that it is not live stays hidden while the kernel lives.
    stamp = re.search(r'class="ccx-stale" data-tick="(\d+)"', view.table.value)
    assert stamp is not None, view.table.value
    eventually(lambda: f'data-tick="{stamp.group(1)}"' not in view.table.value, timeout=5,
               what="the paused table's next tick")
    view.pause_button.value = False
    batch.wait(scaled(30))
    assert batch.status == "done" and view.pause_button.description == "Pause queue"
    assert "ccx-stale" not in view.table.value  # done: no more updates are due


@pytest.fixture
def kernelless_shell() -> Iterator[InteractiveShell]:
    """An IPython shell without a kernel, as terminal IPython is (cleared after, if this made it)."""
    made = not InteractiveShell.initialized()
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    yield InteractiveShell.instance(config=config)
    if made:
        InteractiveShell.clear_instance()


def test_a_forced_widget_batch_outside_a_kernel_lets_its_view_go_and_prints_its_final_record_once(
    settings: CCExec, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside a kernel (here an IPython shell without one) a forced widget batch kept batch._view (its
    closed widgets, a run expanded in it too) after its end, where a run lets its view go; now, as a run,
    it prints its final record once and lets the view go."""
    request.getfixturevalue("comms")
    request.getfixturevalue("kernelless_shell")
    settings.output_mode = "widget"
    batch = cc_executor_nb.map([py("import time; time.sleep(0.5); print('hi')")] * 2, command=True,
                               display=False, settings=settings)
    batch.show()
    batch.expand(1)
    assert batch._view is not None and "[batch] 0/2" in capsys.readouterr().out
    batch.wait(scaled(30))
    out = capsys.readouterr().out
    assert out.count("[batch] 2/2") == 1 and "#1 completed" in out
    assert batch._view is None and batch._expanded == {}
    assert batch.runs[1].view is None


# The real CLI against the demo backend


@pytest.mark.claude
def test_a_failed_claude_run_has_no_result(settings: CCExec) -> None:
    """results() and the frame's result are None for a run that failed (an API error); its error
    stays on the run (results() gave "API Error: 529 Overloaded ..." where an answer would be)."""
    batch = cc_executor_nb.map(["error 529", "what is 2+2"], demo=True, display=False, settings=settings)
    batch.wait(scaled(60))
    assert [run.status for run in batch.runs] == ["failed", "completed"]
    assert batch.results() == [None, "4"]
    assert (batch.runs[0].error or "").startswith("API Error: 529") and batch.summary().failed == 1
    pandas = pytest.importorskip("pandas")
    frame = batch.to_dataframe()
    assert frame["result"].isna().tolist() == [True, False] and frame["result"][1] == "4"
    assert frame["error"][0] == batch.runs[0].error
    assert isinstance(frame, pandas.DataFrame)


@pytest.mark.claude
def test_twenty_demo_prompts_with_concurrency_4(settings: CCExec) -> None:
    """20 demo prompts, concurrency 4: all complete, at most 4 alive at once, results in order, total = sum."""
    prompts = [f"what is {n}+{n}" for n in range(20)]
    started = time.monotonic()
    batch = cc_executor_nb.map(prompts, demo=True, concurrency=4, display=False, settings=settings)
    sampler = AliveSampler(batch)
    batch.wait(scaled(100))
    most = sampler.stop()
    costs = [run.cost_usd for run in batch.runs]
    print(f"\n20 demo runs in {time.monotonic() - started:.1f} s; at most {most} alive at once "
          f"({sampler.samples} samples); total ${batch.cost_usd:.4f} ({batch.cost_note})")
    assert [run.status for run in batch.runs] == ["completed"] * 20
    assert batch.results() == [str(2 * n) for n in range(20)]
    assert 2 <= most <= 4
    assert batch.cost_usd == sum(costs) and all(cost and cost > 0 for cost in costs)
    assert batch.cost_note == "custom endpoint"


@pytest.mark.claude
def test_a_batch_budget_stops_new_runs_once_reached(settings: CCExec) -> None:
    """A $0.02 budget, one at a time, ~$0.008 a run: three runs complete, the other three never start."""
    batch = cc_executor_nb.map([f"what is {n}*2" for n in range(6)], demo=True, concurrency=1, max_budget_usd=0.02,
                               display=False, settings=settings, wait=True)
    statuses = [item.status for item in batch.items]
    assert [run.status for run in batch.runs[:3]] == ["completed"] * 3
    assert statuses[3:] == ["skipped"] * 3 and [run.state.pid for run in batch.runs[3:]] == [None] * 3
    assert batch.cost_usd >= 0.02 and batch.status == batch.summary().state == "budget"  # the budget stopped it
    assert batch.results()[3:] == [None] * 3


@pytest.mark.claude
def test_on_budget_cancel_cancels_the_running_runs(settings: CCExec) -> None:
    """With on_budget="cancel", the budget spent by one run cancels the one still thinking."""
    batch = cc_executor_nb.map(["think for 30 seconds", "what is 1+1"], demo=True, concurrency=2,
                               max_budget_usd=0.001, on_budget="cancel", display=False, settings=settings)
    batch.wait(scaled(40))
    assert batch.runs[1].status == "completed" and batch.runs[0].status == "cancelled"
    assert batch.runs[0].duration is not None and batch.runs[0].duration < 25
    assert batch.status == "budget"
    # Why, in its record: the budget, not "cancelled by you" (nor the server's "by the client").
    assert batch.runs[0].error == "cancelled: the batch budget ($0.001) was spent"


def gated_claude(tmp_path: Path) -> Path:
    """A ``claude`` whose process lingers after the CLI exits, until the file ``gate`` is made next to
    it: a run that has its result (and so its cost) is not over yet."""
    from cc_executor_nb.claude.executable import find_claude

    gated = tmp_path / "claude"
    gate = shlex.quote(str(tmp_path / "gate"))
    gated.write_text(f'#!/bin/sh\n{shlex.quote(find_claude())} "$@"\ncode=$?\n'
                     f"while [ ! -e {gate} ]; do sleep 0.1; done\nexit $code\n")
    gated.chmod(0o755)
    return gated


@pytest.mark.claude
@pytest.mark.parametrize("interactive", [True, False], ids=["conversation", "one-shot"])
def test_on_budget_cancel_acts_at_the_result_that_spends_the_budget(
    settings: CCExec, tmp_path: Path, interactive: bool
) -> None:
    """The run that spends the budget has its result, and its process has not ended: the run still
    thinking is cancelled then (the budget was checked when a run ended, so it thought on while the
    spender's process lived: here until the gate opens). A conversation's turn end says so; a one-shot
    run (no turns) has only its result, whose cost the batch sees change."""
    batch = cc_executor_nb.map(["what is 1+1", "think for 30 seconds"], demo=True, interactive=interactive,
                               concurrency=2, max_budget_usd=0.001, on_budget="cancel",
                               executable=str(gated_claude(tmp_path)), display=False, settings=settings)
    try:
        eventually(lambda: batch.runs[1].done, timeout=20, what="the thinking run's end")
        assert not batch.runs[0].done and batch.runs[0].cost_usd is not None  # the gate is shut: it lives on
        assert batch.runs[1].status == "cancelled" and batch.status == "budget"
    finally:
        (tmp_path / "gate").touch()
    batch.wait(scaled(30))
    assert [run.status for run in batch.runs] == ["completed", "cancelled"] and batch.status == "budget"


@pytest.mark.claude
def test_a_spent_budget_skips_the_queue_at_the_result_that_spends_it(settings: CCExec, tmp_path: Path) -> None:
    """One at a time: the first run's result spends the budget while its process lives on, and the
    queued run is skipped then (it stayed queued, and the batch "running", until that process ended)."""
    batch = cc_executor_nb.map(["what is 1+1", "what is 2+2"], demo=True, concurrency=1, max_budget_usd=0.001,
                               executable=str(gated_claude(tmp_path)), display=False, settings=settings)
    try:
        eventually(lambda: batch.items[1].status == "skipped", timeout=20, what="the queued run skipped")
        assert not batch.runs[0].done and batch.status == "budget"
    finally:
        (tmp_path / "gate").touch()
    batch.wait(scaled(30))
    assert [item.status for item in batch.items] == ["completed", "skipped"] and batch.runs[1].state.pid is None


@pytest.mark.claude
def test_a_resumed_batch_starts_nothing_once_a_one_shot_result_spent_its_budget(
    settings: CCExec, tmp_path: Path
) -> None:
    """A one-shot run (no turns) has its result, which spends the budget, while its process lives on (here until the
    gate opens), and a slot freed while the batch was paused: resume() started the queued item (the queue read the
    budget only at a turn's end and at a run's end, not when it started one). It is skipped."""
    batch = cc_executor_nb.map(["think for 5 seconds", "think for 60 seconds", "what is 3+3"], demo=True,
                               interactive=False, concurrency=2, max_budget_usd=0.001,
                               executable=str(gated_claude(tmp_path)), display=False, settings=settings)
    try:
        batch.pause()
        batch.runs[1].cancel()  # a slot frees while the batch is paused, before any cost
        eventually(lambda: batch.runs[1].done, timeout=20, what="the cancelled run's end")
        assert batch.cost_usd == 0
        eventually(lambda: batch.runs[0].cost_usd is not None, timeout=30, what="the spender's result")
        assert not batch.runs[0].done  # the gate is shut: it lives on
        batch.resume()
        assert (batch.items[2].status, batch.status) == ("skipped", "budget")
    finally:
        (tmp_path / "gate").touch()
    batch.wait(scaled(30))
    assert [item.status for item in batch.items] == ["completed", "cancelled", "skipped"]
    assert batch.runs[2].state.pid is None


@pytest.mark.claude
def test_a_batch_cancel_leaves_a_one_shot_run_that_has_its_result_to_end_completed(
    settings: CCExec, tmp_path: Path
) -> None:
    """A one-shot run (interactive=False) whose successful result is in, its process still there (here until the
    gate opens), ends completed after cancel(), as a conversation's does: it was cancelled, its answer paid for."""
    batch = cc_executor_nb.map(["what is 2+2"], demo=True, interactive=False, executable=str(gated_claude(tmp_path)),
                               display=False, settings=settings)
    run = batch.runs[0]
    try:
        eventually(lambda: run.cost_usd is not None, timeout=30, what="the run's result")
        batch.cancel()
    finally:
        (tmp_path / "gate").touch()
    batch.wait(scaled(30))
    assert (run.status, run.text, run.exit_code) == ("completed", "4", 0)


@pytest.mark.claude
def test_a_batch_cancel_leaves_a_run_that_has_its_result_to_end_completed(settings: CCExec, tmp_path: Path) -> None:
    """A run whose turn has its result (its input already closed, the process about to exit: here its
    CLI's wrapper lingers 3 s) ends completed after cancel(): its paid-for answer is not reported cancelled."""
    from cc_executor_nb.claude.executable import find_claude

    lingering = tmp_path / "claude"
    lingering.write_text(f'#!/bin/sh\n{shlex.quote(find_claude())} "$@"\ncode=$?\nsleep 3\nexit $code\n')
    lingering.chmod(0o755)
    batch = cc_executor_nb.map(["what is 2+2"], demo=True, executable=str(lingering), display=False,
                               settings=settings)
    run = batch.runs[0]
    eventually(lambda: run.state.between_turns, timeout=30, what="the turn's result")
    batch.cancel().wait(scaled(30))
    assert (run.status, run.text, run.exit_code) == ("completed", "4", 0)


@pytest.mark.claude
def test_a_budget_crossed_by_the_last_run_stops_nothing_and_the_batch_ends_done(settings: CCExec) -> None:
    """The only run spends past the budget as it ends: nothing was kept from running, so ``done``."""
    batch = cc_executor_nb.map(["what is 1+1"], demo=True, max_budget_usd=0.001, display=False, settings=settings,
                               wait=True)
    assert batch.runs[0].status == "completed" and batch.cost_usd > 0.001
    assert batch.status == "done"


@pytest.mark.claude
def test_a_usage_limit_holds_the_queue_until_its_reset(settings: CCExec) -> None:
    """A run refused by a 3 s usage limit (auto_resume) holds the queue: the third item waits for the reset."""
    # The second item thinks for 5 s (when its request beats the limit window; else it is
    # refused too), so it cannot free its slot before the first one's refusal holds the queue.
    batch = cc_executor_nb.map(
        ["usage limit reset in 3 s, then what is 1+1", "think for 5 s", "what is 3+3"], demo=True, auto_resume=True,
        concurrency=2, display=False, settings=settings,
    )
    # Read in one poll: the hold lasts about 3 s, and a test stalled between separate reads
    # found it over (the third item started, hold_until cleared).
    held = eventually(lambda: batch.status == "held" and (batch.items[2].status, batch.hold_until),
                      timeout=30, what="the queue held by the usage limit")
    assert held[0] == "queued" and held[1] is not None
    reset = held[1]
    batch.wait(scaled(60))
    third_started = batch.runs[2].events[1]
    assert [run.status for run in batch.runs] == ["completed"] * 3
    assert batch.results() == ["2", THINK_ANSWER, "6"] and batch.runs[0].claude.resumes == 1
    # The third started after the reset (the check was the clock now, after the batch's end).
    started_at = batch.runs[2].state.started_at
    assert third_started.method == "process.started" and started_at is not None
    assert started_at >= reset - time.time() + time.monotonic()



@pytest.mark.claude
def test_a_refused_run_holds_the_queue_with_a_slot_free(settings: CCExec) -> None:
    """A run that ends refused by a 3 s usage limit (no auto_resume) frees its slot, yet the
    next item waits for the reset: the hold, not the concurrency, keeps it queued."""
    batch = cc_executor_nb.map(
        ["usage limit reset in 3 s, then what is 1+1", "what is 3+3"], demo=True, auto_resume=False,
        concurrency=1, display=False, settings=settings,
    )
    batch.wait(scaled(60))
    assert [run.status for run in batch.runs] == ["failed", "completed"]
    reset = batch.runs[0].claude.usage_limit.resets_at
    ended_at = batch.runs[0].state.ended_at
    started_at = batch.runs[1].state.started_at
    assert reset is not None and ended_at is not None and started_at is not None
    # The slot was free from the first run's end, seconds before the reset.
    assert ended_at < reset - time.time() + time.monotonic() - 1
    assert started_at >= reset - time.time() + time.monotonic()


# The magic


@pytest.fixture
def shell(settings: CCExec) -> Iterator[InteractiveShell]:
    """The in-process shell with the extension loaded (text output: no kernel here)."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ipython = InteractiveShell.instance(config=config)
    ipython.run_line_magic("load_ext", "cc_executor_nb")
    ipython.run_line_magic("config", "CCExec.history_path = 'none'")
    yield ipython
    ipython.run_line_magic("unload_ext", "cc_executor_nb")
    ipython.config.pop("CCExec", None)


def test_each_runs_the_cell_once_per_item(shell: InteractiveShell) -> None:
    """%%ccexec -c --each NAME fills {item} from the namespace, binds -o and waits with --wait."""
    shell.user_ns["names"] = ["ann", "bob"]
    body = f"{sys.executable} -c 'print(1)' {{item}}"
    batch = shell.run_cell_magic("ccexec", "-c --each names --concurrency 2 --wait -o b", body)
    assert isinstance(batch, Batch) and shell.user_ns["b"] is batch and batch.done
    assert [run.spec.command for run in batch.runs] == [f"{sys.executable} -c 'print(1)' ann",
                                                         f"{sys.executable} -c 'print(1)' bob"]


@pytest.mark.parametrize("each", ["--each names", "--each=names"])
def test_a_batch_line_keeps_its_placeholders_whatever_the_namespace_holds(shell: InteractiveShell, each: str) -> None:
    """{item} and {index} in a %ccexec --each line are the batch's, not the line's expansion: with
    item and index in the namespace (a for loop leaves them), the line read 'echo OOPS 99' and
    was refused ('has no {item} or {index}'), and with item alone every run was 'echo OOPS N'."""
    shell.user_ns.update(names=["a", "b"], item="OOPS", index=99, word="hi")
    batch = shell.run_line_magic("ccexec", f"{each} -c 'echo {{item}} {{index}} {{word}}' -q --wait")
    assert [run.stdout for run in batch.runs] == ["a 0 hi\n", "b 1 hi\n"]
    del shell.user_ns["index"]
    batch = shell.run_line_magic("ccexec", f"{each} -c 'echo {{item}} {{index}}' -q --wait")
    assert [run.stdout for run in batch.runs] == ["a 0\n", "b 1\n"]


def test_a_batch_line_with_each_cut_short_is_refused_naming_it(shell: InteractiveShell) -> None:
    """``--eac names`` ran as ``--each names`` (argparse takes a prefix); options are written in
    full now, so it is a usage error naming --each, and nothing runs."""
    shell.user_ns.update(names=["a", "b"])
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("ccexec", "--eac names -c 'echo {item}' -q --wait")
    assert str(info.value) == "--eac is not an option; options are written in full: --each"


@pytest.mark.parametrize(("line", "message"), [
    ("--each missing -c echo {item}", "no such name"),
    ("--each text -c echo {item}", "not an iterable"),
    ("--concurrency 2 -c echo hi", "--concurrency needs --each"),
    ("--each names --jobs", "--jobs takes no"),
    # (it named map()'s max_budget_usd, which reads as the per-run --max-budget-usd)
    ("--each names --batch-budget-usd -2 -c echo {item}",
     r"^--batch-budget-usd must be a positive number of dollars, not -2.0$"),
    ("--each names --cluster names --durable -c echo {item}",
     r"^a batch on a cluster \(--cluster\) takes no --durable:"),
    ("--each names --resources claude=1 -c echo {item}",
     r"^--resources applies only to a batch on a cluster \(--cluster\): without one, nothing holds them$"),
    ("--resources claude=1 -c echo hi", "--resources needs --each"),
    ("--each names --cluster names --resources claude -c echo {item}",
     r"^--resources needs NAME=N\[,NAME=N\] with N a positive number, not 'claude'$"),
    ("--each names --cluster names --resources claude=1,gpu=-2 -c echo {item}",
     r"^--resources needs NAME=N\[,NAME=N\] with N a positive number, not 'gpu=-2'$"),
    # (they named map()'s on_budget and concurrency)
    ("--each names --on-budget maybe --batch-budget-usd 1 --demo {item}",
     r"^--on-budget must be 'finish' or 'cancel', not 'maybe'$"),
    ("-c 'echo {item}' --concurrency 0 --each names", r"^--concurrency must be a positive integer, not 0$"),
    ("--each names --max-budget-usd -1 --demo {item}",
     r"^--max-budget-usd must be a positive number of dollars, not -1.0$"),
    # (accepted, and --on-budget then did nothing)
    ("--each names --on-budget cancel -c 'echo {item}' --wait",
     r"^--on-budget needs --batch-budget-usd: without a batch budget it never acts$"),
    # (accepted, and the budget never acted: '$0 of $5.0000 budget')
    ("--each names --batch-budget-usd 5 -c 'echo {item}' --wait",
     r"^--batch-budget-usd needs Claude runs: a command \(-c/--command\) reports no cost, so the budget never acts$"),
])
def test_each_usage_errors(shell: InteractiveShell, line: str, message: str) -> None:
    """A missing or non-iterable name, batch flags without --each, --each with --jobs: one-line usage errors."""
    shell.user_ns.update(names=["a"], text="abc")
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("ccexec", line)


def test_abandon_ends_a_never_started_run_without_a_process(settings: CCExec) -> None:
    """Run.abandon settles a run that never started (error or cancelled) and is a no-op once it did."""
    from cc_executor_nb.kernel.api import prepare

    failed = prepare("echo hi", command=True, view=False, settings=settings).run.abandon("the task failed")
    assert (failed.done, failed.status, failed.error, failed.state.pid) == (True, "error", "the task failed", None)
    skipped = prepare("echo hi", command=True, view=False, settings=settings).run.abandon("skipped", status="cancelled")
    assert (skipped.status, skipped.error) == ("cancelled", "skipped") and skipped.wait(1) is skipped
    prepared = prepare("echo hi", command=True, view=False, settings=settings)
    ran = prepared.run.start(prepared.loop).wait(scaled(20))
    assert ran.abandon("too late").status == "completed" and ran.error is None


def test_a_run_whose_view_fails_to_attach_can_still_be_abandoned(settings: CCExec) -> None:
    """A start that fails before the run is driven (its view's attach raised) leaves the run
    unstarted, so its owner can still end it (a batch's item stayed "starting" for good)."""
    from cc_executor_nb.kernel.api import prepare

    class BrokenPresenter:
        def attach(self, loop: object) -> None:
            raise RuntimeError("no view today")

        def update(self, event: object) -> None:
            pass

        def finish(self) -> None:
            pass

    prepared = prepare("echo hi", command=True, view=False, settings=settings)
    prepared.run.presenter = BrokenPresenter()  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="no view today"):
        prepared.run.start(prepared.loop)
    ended = prepared.run.abandon("the start failed")
    assert (ended.done, ended.status, ended.error) == (True, "error", "the start failed")


@pytest.mark.claude
def test_approvals_apply_to_batch_runs(settings: CCExec, tmp_path: Path) -> None:
    """Batch runs are conversations: a policy answers their questions, or code answers a pending one."""
    # touch, not echo: the CLI runs read-only commands such as echo without asking.
    by_policy = cc_executor_nb.map("bash: touch {item}.txt", ["one", "two"], demo=True, approve="all",
                                   cwd=str(tmp_path), display=False, settings=settings)
    asked = cc_executor_nb.map(["bash: touch three.txt"], demo=True, cwd=str(tmp_path), display=False,
                               settings=settings)
    run = asked.runs[0]
    eventually(lambda: run.pending is not None, timeout=30, what="the question of the unanswered run")
    assert asked.status == "running" and not run.done and not (tmp_path / "three.txt").exists()
    run.approve()
    by_policy.wait(scaled(60))
    asked.wait(scaled(60))
    assert [r.status for r in by_policy.runs + asked.runs] == ["completed"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.txt", "three.txt", "two.txt"]
    texts = by_policy.results() + asked.results()
    assert all(f"touch {word}.txt" in text for word, text in zip(["one", "two", "three"], texts, strict=True))
    assert [r.permission_requests[0].decided_by for r in by_policy.runs + asked.runs] == ["policy", "policy", "code"]


@pytest.mark.claude
def test_a_batch_run_waiting_for_a_person_says_so(
    settings: CCExec, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text mode prints the question with the run to answer it on, and its row reads "needs you"
    (the batch stalled with no sign of why: the row said "running")."""
    batch = cc_executor_nb.map(["bash: touch asked.txt"], demo=True, cwd=str(tmp_path), quiet=True,
                               settings=settings)
    run = batch.runs[0]
    eventually(lambda: run.pending is not None, timeout=30, what="the question")
    eventually(lambda: batch.rows()[0].status == "needs you", timeout=5, what="the row to say so")
    run.deny(message="not in a test")
    batch.wait(scaled(60))
    out = capsys.readouterr().out
    assert "#0 [needs you] Claude asks to use Bash: touch asked.txt" in out and "(this run is batch.runs[0])" in out
    assert batch.rows()[0].status == "completed" and not (tmp_path / "asked.txt").exists()


@pytest.mark.claude
def test_cancel_all_of_demo_prompts_leaves_no_process(settings: CCExec) -> None:
    """Cancel all during 8 thinking demo prompts (concurrency 4): every CLI, its group and its children are gone."""
    batch = cc_executor_nb.map(["think for 60 seconds"] * 8, demo=True, concurrency=4, display=False,
                               settings=settings)
    eventually(lambda: sum(run.state.pid is not None for run in batch.runs) == 4, timeout=30, what="4 runs started")
    groups = [run.state.pgid for run in batch.runs if run.state.pgid is not None]
    family = {pid for run in batch.runs if run.state.pid is not None for pid in _family(run.state.pid)}
    batch.cancel().wait(scaled(30))
    print(f"\ncancel all: {len(groups)} groups, {len(family)} processes before the cancel")
    assert [run.status for run in batch.runs] == ["cancelled"] * 8
    assert [item.status for item in batch.items].count("skipped") == 4 and len(groups) == 4
    eventually(lambda: all(group_alive(pgid) == [] for pgid in groups) and not any(_alive(pid) for pid in family),
               timeout=15, what="every process of the batch gone")


@pytest.mark.parametrize("status", ["queued", "placing", "skipped", "waiting", "running", "completed", "failed"])
def test_every_row_badge_is_readable(status: str) -> None:
    """A row's badge has white text at WCAG AA contrast (4.5:1) at least: "queued" and "skipped"
    (#adb5bd) read at 2.1:1."""
    row = Row(index=0, label="x", status=status, elapsed=None, cost_usd=None, last_line="")
    summary = Summary(total=1, done=0, running=0, queued=1, failed=0, skipped=0, cost_usd=None)
    color = re.search(r"ccx-badge[^>]*background:(#[0-9a-f]{6})", batch_html(summary, [row]))
    assert color is not None and _contrast_with_white(color.group(1)) >= 4.5, color


def test_a_dropped_command_batch_runs_all_its_items(settings: CCExec) -> None:
    """map() returns with its first `concurrency` runs started; a batch of commands dropped at once
    (a map(...) not kept) still runs every item: it asks nothing, so nothing needs a person."""
    import gc

    batch = cc_executor_nb.map(["echo one", "echo two"], command=True, concurrency=1, display=False,
                               settings=settings)
    items, over = batch.items, list[str]()
    batch.add_done_callback(lambda done: over.append(done.status))
    del batch
    gc.collect()
    eventually(lambda: over, timeout=30, what="the dropped batch to end")
    assert [(item.status, item.run.stdout) for item in items] == [("completed", "one\n"), ("completed", "two\n")]
