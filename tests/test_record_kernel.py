"""The record a run leaves in its cells, and text mode for Claude, in real ipykernel kernels.

Claude runs use the real CLI against the demo backend.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cc_executor_nb.demo.texts import haikus
from cc_executor_nb.kernel.transcript import IN_PROGRESS_NOTE

from .kernel_utils import Execution, KernelHarness, Received, ccexec, fake_command, py

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

WIDGET = "application/vnd.jupyter.widget-view+json"
RECORD = {"text/plain", "text/markdown", "text/html"}
HAIKUS = '%ccexec --demo --wait "write 3 haikus about the sea"'


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelHarness]:
    """One kernel with the extension loaded, shared by the independent tests of this module."""
    harness = KernelHarness.start(tmp_path_factory.mktemp("record"))
    harness.ok("%load_ext cc_executor_nb")
    yield harness
    harness.shutdown()


def displays(execution: Execution) -> list[Received]:
    return [r for r in execution.own if r.type == "display_data"]


def updates(received: list[Received], display_id: str) -> list[Received]:
    return [
        r for r in received
        if r.type == "update_display_data" and r.content.get("transient", {}).get("display_id") == display_id
    ]


def display_id(message: Received) -> str:
    return str(message.content["transient"]["display_id"])


def test_a_run_shows_its_widget_with_its_record_then_the_final_record_alone(kernel: KernelHarness) -> None:
    """--wait haikus: one display with widget and record; at the end one update with the final record, no widget."""
    execution = kernel.ok(HAIKUS)
    [shown] = displays(execution)
    assert WIDGET in shown.content["data"] and set(shown.content["data"]) >= RECORD
    [final] = updates(execution.own, display_id(shown))
    data = final.content["data"]
    assert set(data) == RECORD
    for mime in ("text/plain", "text/markdown"):
        assert haikus(3) in data[mime]
    assert "Morning kernel wakes<br>\nstreams of tokens softly flow" in data["text/html"]
    assert re.search(r"\[result\] done · \$0\.\d{4} · [\d,]+ in / 61 out tokens", data["text/plain"])
    assert re.search(r'class="cc-footer"[^>]*>\$0\.\d{4} · ', data["text/html"])
    assert all('{"type":' not in json.dumps(r.content) for r in (shown, final))


def test_the_record_saved_while_a_run_is_live_says_it_is_not_the_final_one(kernel: KernelHarness) -> None:
    """What a notebook saved mid-run keeps (the first display's record) read "starting" or
    "running · no result yet" in an export, as if that were how the run went: it now says the
    run was still running and this is not its final record; the final record does not."""
    execution = kernel.ok(HAIKUS)
    [shown] = displays(execution)
    [final] = updates(execution.own, display_id(shown))
    for mime in sorted(RECORD):
        assert IN_PROGRESS_NOTE in html.unescape(shown.content["data"][mime]), mime
        assert IN_PROGRESS_NOTE not in html.unescape(final.content["data"][mime]), mime


def test_the_record_reaches_a_cell_that_already_finished(kernel: KernelHarness) -> None:
    """Without --wait the final record arrives after the cell ended, under that cell's parent header."""
    execution = kernel.ok(ccexec(fake_command("silence", "1"), "-o", "late"))
    [shown] = displays(execution)
    kernel.wait_until("late.done")
    kernel.drain(0.5)
    [final] = [r for r in updates(kernel.log, display_id(shown)) if r.parent_id == execution.msg_id]
    assert final.at > execution.ended
    assert "after" in final.content["data"]["text/plain"] and WIDGET not in final.content["data"]


def test_a_run_shown_in_two_cells_is_replaced_in_both(kernel: KernelHarness) -> None:
    """Displayed again from a second cell, the run's record is sent under both cells' headers."""
    first = kernel.ok(ccexec(fake_command("silence", "2"), "-o", "twice"))
    second = kernel.ok("display(twice)")
    ids = {display_id(r) for r in displays(first) + displays(second)}
    assert len(ids) == 1 and WIDGET in displays(second)[0].content["data"]
    kernel.wait_until("twice.done")
    kernel.drain(0.5)
    parents = {r.parent_id for r in updates(kernel.log, ids.pop())}
    assert {first.msg_id, second.msg_id} <= parents


def test_the_record_also_goes_to_the_cell_running_when_the_run_ends(kernel: KernelHarness) -> None:
    """A headless runner listens to the running cell only: the update is sent under its header too."""
    started = kernel.ok(ccexec(fake_command("silence", "1"), "-o", "waited"))
    [shown] = displays(started)
    waiting = kernel.ok("waited.wait()")
    parents = [r.parent_id for r in updates(kernel.log, display_id(shown))]
    assert sorted(parents) == sorted([started.msg_id, waiting.msg_id])


def test_a_run_shown_after_it_ended_shows_only_its_record(kernel: KernelHarness) -> None:
    """display(run) of a finished run is the record alone: nothing that needs widget state."""
    kernel.ok(ccexec(fake_command("echo", "done", "already"), "--wait", "-o", "old"))
    [shown] = displays(kernel.ok("display(old)"))
    assert set(shown.content["data"]) == RECORD and "done already" in shown.content["data"]["text/plain"]


@pytest.mark.parametrize("line", [ccexec(fake_command("echo", "done", "quickly"), "--wait", "-o", "quick"),
                                  '%ccexec --demo --no-interactive --wait -o quick "write 3 haikus about the sea"'])
def test_a_finished_runs_widgets_are_closed(kernel: KernelHarness, line: str) -> None:
    """Once the record took its place, the run's widget models (a Claude run's body too) are closed: none is
    left in the kernel (nor in a saved notebook's widget state: a dozen short runs saved 620 models)."""
    kernel.ok("import ipywidgets.widgets.widget as _w; _before = set(_w._instances)")
    kernel.ok(line)
    kernel.wait_until("quick.done")
    kernel.drain(0.5)
    assert kernel.value("len(set(_w._instances) - _before)") == 0
    [shown] = displays(kernel.ok("quick"))  # shown again: the record alone, no error from a closed widget
    assert set(shown.content["data"]) == RECORD


@pytest.mark.parametrize("line", [ccexec(fake_command("echo", "done", "kept"), "--wait", "-o", "kept"),
                                  '%ccexec --demo --no-interactive --wait -o kept "write 3 haikus about the sea"'])
def test_a_finished_run_kept_in_a_variable_keeps_no_widget_alive(kernel: KernelHarness, line: str) -> None:
    """A finished run held by a variable (or Out) kept its closed widget tree, about 40 KB a run,
    for good: once the record took its place no widget object stays reachable, and what users
    read (text, result, save()) still works."""
    kernel.ok("import gc, ipywidgets")
    kernel.ok("_widgets = lambda: sum(isinstance(o, ipywidgets.Widget) for o in gc.get_objects())")
    kernel.ok("gc.collect(); _count = _widgets()")
    kernel.ok(line)
    kernel.wait_until("kept.done")
    kernel.drain(0.5)
    assert kernel.value("gc.collect() >= 0 and _widgets() - _count") == 0
    assert kernel.value("kept.view") is None
    assert kernel.value("kept.status") == "completed"
    expected = haikus(3) if "--demo" in line else "done kept\n"
    assert expected in kernel.value("kept.text if kept.result is not None else kept.stdout")
    kernel.ok("import tempfile, os; _saved = kept.save(os.path.join(tempfile.mkdtemp(), 'kept.md'))")
    assert kernel.value("os.path.getsize(_saved) > 0") is True


def test_raw_runs_record_their_json_lines(kernel: KernelHarness) -> None:
    """With --raw the record is the stream-json output itself."""
    execution = kernel.ok('%ccexec --demo --wait --raw "echo: raw please"')
    [shown] = displays(execution)
    [final] = updates(execution.own, display_id(shown))
    assert '"type":"result"' in final.content["data"]["text/plain"]
    assert '{"type":"system","subtype":"init"' in final.content["data"]["text/markdown"]


def test_quiet_claude_run_prints_the_answer_and_footer_not_json(kernel: KernelHarness) -> None:
    """--quiet: the haikus, the footer and the turn's end line as text in the cell; no stream-json line."""
    execution = kernel.ok(HAIKUS.replace("--wait", "--wait --quiet"))
    out = execution.stream()
    assert haikus(3) in out and '{"type":' not in out
    lines = out.splitlines()
    assert lines[0].startswith("[started] pid ") and lines[0].endswith(" · claude: write 3 haikus about the sea")
    # The process stays for a follow-up, so the turn's end closes the text (no exit code yet).
    assert lines[-2].startswith("[result] done · $0.0") and lines[-1].startswith("[turn 1 completed] run.send(")
    assert not displays(execution)


def test_a_quiet_run_shown_again_shows_its_summary(kernel: KernelHarness) -> None:
    """A -q run named again in a later cell (or display()ed) shows its one-line summary there:
    it showed nothing at all, while a run with a widget shows its record again."""
    kernel.ok(ccexec(fake_command("echo", "quietly", "done"), "--wait", "-q", "-o", "hushed"))
    for cell in ("hushed", "display(hushed)"):
        [shown] = displays(kernel.ok(cell))
        text = shown.content["data"]["text/plain"]
        assert text.startswith("<Run ") and "completed" in text, text


def test_quiet_output_in_a_kernel_keeps_colours_and_no_other_escape(kernel: KernelHarness) -> None:
    """-q in a kernel: the stream output the notebook saves keeps the child's colours but not
    its title, clipboard write or hyperlink (they were saved raw)."""
    code = (r"import sys; w = sys.stdout.write; w('\x1b]0;title\x07\x1b[31mred\x1b[0m '); sys.stdout.flush(); "
            r"w('\x1b]52;c;UFdORUQ=\x07\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\n')")
    lines = kernel.ok(ccexec(py(code), "-w", "-q")).stream().splitlines(keepends=True)
    assert lines[0].startswith("[started]") and lines[2].startswith("[completed] exit 0")
    assert lines[1] == "\x1b[31mred\x1b[0m link\n"  # the [started] line quotes the code: not asserted on


def test_text_mode_setting_reads_claude_runs_too(kernel: KernelHarness) -> None:
    """CCExec.output_mode = 'text' renders a Claude run as text, tool line included."""
    kernel.ok("%config CCExec.output_mode = 'text'")
    try:
        out = kernel.ok('%ccexec --demo --wait "tool"').stream()
    finally:
        kernel.ok("%config CCExec.output_mode = 'auto'")
    assert "I will run a command.\n[tool] Bash · echo hi → ok, 1 line\nThe command printed: hi\n" in out
    assert '{"type":' not in out


def test_quiet_raw_prints_the_json_lines(kernel: KernelHarness) -> None:
    """--quiet --raw is the one text mode that shows the stream-json lines."""
    out = kernel.ok('%ccexec --demo --wait --quiet --raw "echo: raw"').stream()
    assert '{"type":"system","subtype":"init"' in out


def test_transcript_and_save_from_the_kernel(kernel: KernelHarness, tmp_path: Path) -> None:
    """run.transcript() is the display's Markdown; run.save() writes it, or an HTML page."""
    execution = kernel.ok(HAIKUS + " -o sea")
    [final] = updates(execution.own, display_id(displays(execution)[0]))
    assert kernel.value("sea.transcript()") == final.content["data"]["text/markdown"]
    md, page = tmp_path / "sea.md", tmp_path / "sea.html"
    kernel.ok(f"sea.save({str(md)!r}); sea.save({str(page)!r})")
    assert haikus(3) in md.read_text(encoding="utf-8")
    assert "<!DOCTYPE html>" in page.read_text(encoding="utf-8")
