"""Runs printing as plain text at the same time: each line says its run, and no line is cut.

Real runs in a plain script, in terminal IPython on a pty and in a kernel executed by
nbconvert; the line-sharing rules themselves with strings alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pexpect
import psutil
import pytest

from cc_executor_nb.kernel.presenter import _AbovePrompt
from cc_executor_nb.kernel.textview import HELD_CHARS, SharedLines

from .util import eventually, scaled

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
LABELLED = re.compile(r"^(?:In \[\d+\]:)?(\d+)│ (.*)$")  # on a pty, after the prompt drawn then erased

# Two runs whose output the files ``go1``, ``go-fast`` and ``go2`` pace: both print once both
# are shown; the first leaves a line unfinished until the second has ended.
TWO_RUNS = textwrap.dedent('''
    import pathlib, sys, time
    import cc_executor_nb as ccx
    import cc_executor_nb.kernel.presenter

    # "slow half" waits for its end while the other run prints, however slow the machine: not
    # shown early because its run went quiet (that is test_a_prompt_shows_...'s part) or was
    # held long (test_a_progress_bar_redrawn_...'s part).
    cc_executor_nb.kernel.presenter.HELD_QUIET = 3600.0
    cc_executor_nb.kernel.presenter.HELD_LONGEST = 3600.0

    def waiting_for(name):
        return f"while not pathlib.Path({name!r}).exists(): time.sleep(0.02)\\n"

    slow = ("import pathlib, time\\n" + waiting_for("go1") + "print('slow 0')\\n"
            "print('slow half', end='', flush=True)\\n" + waiting_for("go2")
            + "print(' and its end')\\nprint('slow alone')\\nprint('slow tail', end='')\\n")
    fast = ("import pathlib, time\\n" + waiting_for("go1") + "print('fast 0')\\n" + waiting_for("go-fast")
            + "print('fast 1')\\n")
    a = ccx.run([sys.executable, "-u", "-c", slow], command=True{options})
    b = ccx.run([sys.executable, "-u", "-c", fast], command=True{options})
    pathlib.Path("go1").touch()
    while "slow half" not in a.stdout:
        time.sleep(0.02)
    pathlib.Path("go-fast").touch()
    b.wait()
    pathlib.Path("go2").touch()
    a.wait()
    ccx.run(["echo", "alone"], command=True{options}).wait()
''')


def environment(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "IPYTHONDIR": str(tmp / "ipython"),
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter"),
        "PYTHONWARNINGS": "ignore",
        "TERM": "xterm",
    }


class Screen:
    """What a terminal IPython session showed, roughly: escape sequences removed, lines ended with \\n."""

    def __init__(self) -> None:
        self.log = io.StringIO()

    def text(self) -> str:
        return ANSI.sub("", self.log.getvalue()).replace("\r\n", "\n").replace("\r", "")


@contextlib.contextmanager
def terminal_ipython(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[tuple[pexpect.spawn, Screen]]:
    """Terminal IPython on a pty in ``tmp_path`` with the extension loaded, at its second prompt; it
    exits at the end of the block (killed if the block failed)."""
    child = pexpect.spawn(
        sys.executable, ["-m", "IPython", "--no-banner", "--colors=NoColor", "--no-confirm-exit"],
        env=env or environment(tmp_path), cwd=str(tmp_path), encoding="utf-8", timeout=scaled(60),
        dimensions=(50, 200),
    )
    screen = Screen()
    child.logfile_read = screen.log
    try:
        child.expect(r"In \[1\]")
        child.sendline("%load_ext cc_executor_nb")
        child.expect(r"In \[2\]")
        yield child, screen
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def by_label(lines: list[str]) -> dict[str, list[str]]:
    """The labelled lines, per label, without it."""
    runs: dict[str, list[str]] = {}
    for line in lines:
        match = LABELLED.match(line)
        if match:
            runs.setdefault(match[1], []).append(match[2])
    return runs


def assert_two_runs_shown(text: str) -> None:
    """What TWO_RUNS printed: labelled whole lines while both ran, the rest as it was."""
    lines = text.splitlines()
    runs = by_label(lines)
    assert sorted(runs) == ["1", "2"], text
    slow, fast = runs["1"], runs["2"]
    assert slow[0].startswith("[started] pid ") and "slow 0" in slow[0] and slow[1:] == ["slow 0"], text
    assert fast[0].startswith("[started] pid ") and fast[1:3] == ["fast 0", "fast 1"], text
    assert fast[3].startswith("[completed] exit 0") and len(fast) == 4, text
    alone = lines[max(i for i, line in enumerate(lines) if LABELLED.match(line)) + 1:]
    assert alone[:3] == ["slow half and its end", "slow alone", "slow tail"], text
    assert alone[3].startswith("[completed] exit 0"), text
    assert alone[4].startswith("[started] pid ") and alone[5] == "alone", text
    assert alone[6].startswith("[completed] exit 0") and len(alone) == 7, text


@pytest.mark.parametrize("options", ["", ", quiet=True"])
def test_a_scripts_two_runs_label_their_lines_while_both_print(tmp_path: Path, options: str) -> None:
    """A plain script with two runs going at once: each line of either names its run (``1│``),
    a line one of them left unfinished is written whole once it ends, and a run printing
    alone is not labelled (before the fix the lines were mixed, unlabelled)."""
    (tmp_path / "two.py").write_text(TWO_RUNS.replace("{options}", options), encoding="utf-8")
    done = subprocess.run([sys.executable, "two.py"], check=False, cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=scaled(90))
    assert done.returncode == 0, done.stderr
    assert_two_runs_shown(done.stdout)


@pytest.mark.kernel
@pytest.mark.timeout(180)
def test_two_text_runs_in_one_cell_of_an_executed_notebook_label_their_lines(tmp_path: Path) -> None:
    """``jupyter nbconvert --execute``: two text-mode runs of one cell print into that cell,
    each line labelled while both print (before the fix they were mixed, unlabelled)."""
    notebook = nbformat.v4.new_notebook()
    cells = ["%load_ext cc_executor_nb", TWO_RUNS.replace("{options}", ", quiet=True")]
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "two.ipynb")
    argv = [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute", "two.ipynb", "--output", "out.ipynb"]
    done = subprocess.run(argv, check=False, cwd=tmp_path, env=environment(tmp_path), capture_output=True,
                          text=True, timeout=scaled(150))
    assert done.returncode == 0, done.stderr[-3000:]
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    outputs = executed.cells[1].outputs
    assert {output.get("name") for output in outputs} == {"stdout"}, outputs
    assert_two_runs_shown("".join(output["text"] for output in outputs))


def test_two_runs_started_in_terminal_ipython_label_their_lines(tmp_path: Path) -> None:
    """Terminal IPython: a run started in one cell and another in the next, both printing
    above the prompt, each line labelled while both print; the first names itself once
    labelling starts (``1│ [run] ...``), having printed unlabelled alone before."""
    for name in ("slow.py", "fast.py"):
        (tmp_path / name).write_text(textwrap.dedent(f"""
            import pathlib, time
            print("{name[:4]} before")
            while not pathlib.Path("go-{name}").exists():
                time.sleep(0.02)
            print("{name[:4]} after")
        """), encoding="utf-8")
    with terminal_ipython(tmp_path) as (child, screen):
        child.sendline(f"a = %ccexec -c '{sys.executable} -u slow.py'")
        child.expect("slow before")
        child.sendline(f"b = %ccexec -c '{sys.executable} -u fast.py'")
        child.expect("fast before")
        child.sendline("import pathlib; pathlib.Path('go-fast.py').touch(); b.wait(); "
                       "pathlib.Path('go-slow.py').touch(); a.wait()")
        child.expect(r"In \[5\]")
    shown = screen.text()
    lines = [line for line in shown.splitlines() if line.strip()]
    runs = by_label(lines)
    assert re.match(r"\[run\] pid \d+ · ", runs["1"][0]) and runs["1"][0].endswith(" -u slow.py"), shown
    assert runs["2"][0].startswith("[started] pid ") and runs["2"][1:3] == ["fast before", "fast after"], shown
    assert runs["2"][3].startswith("[completed] exit 0") and len(runs["2"]) == 4, shown
    assert len(runs["1"]) == 1, shown  # its further lines come once it prints alone
    after = lines[max(i for i, line in enumerate(lines) if LABELLED.match(line)) + 1:]
    assert "slow after" in after and "[started]" not in shown.split("slow after")[1], shown


TICKER = textwrap.dedent("""
    import pathlib, time
    n = 0
    while not pathlib.Path("stop").exists():
        print(f"tick {n}")
        n += 1
        time.sleep(0.1)
""")
"""A child printing ``tick N`` every 0.1 s until a file ``stop`` exists in its directory."""


def test_a_prompt_shows_in_terminal_ipython_while_another_run_prints(tmp_path: Path) -> None:
    """Terminal IPython, a run ticking lines and another asking ``Password: `` (no newline, then
    waiting): the prompt was held until its run ended, so nobody knew it waited. Once its run
    went quiet it shows, labelled, while the other still ticks; the answer's line follows under
    the same label."""
    (tmp_path / "ticker.py").write_text(TICKER, encoding="utf-8")
    (tmp_path / "asks.py").write_text(textwrap.dedent("""
        import pathlib, sys, time
        sys.stdout.write("Password: ")
        sys.stdout.flush()
        while not pathlib.Path("answer").exists():
            time.sleep(0.02)
        print("ok")
    """), encoding="utf-8")
    with terminal_ipython(tmp_path) as (child, screen):
        child.sendline(f"a = %ccexec -c '{sys.executable} -u ticker.py'")
        child.expect("tick 1")
        child.sendline(f"b = %ccexec -c '{sys.executable} -u asks.py'")
        child.expect("2│ Password: \r\n", timeout=scaled(20))
        child.expect("1│ tick")  # the other run still prints
        (tmp_path / "answer").touch()
        child.expect("2│ ok")
        (tmp_path / "stop").touch()
        child.sendline("a.wait(); b.wait()")
        child.expect(r"In \[5\]")
    shown = screen.text()
    labelled = [match.groups() for line in shown.splitlines() if (match := LABELLED.match(line))]
    asked = labelled.index(("2", "Password: "))
    assert any(label == "1" and text.startswith("tick") for label, text in labelled[asked + 1:]), shown
    runs = by_label(shown.splitlines())
    assert runs["2"][0].startswith("[started] pid ") and runs["2"][1:3] == ["Password: ", "ok"], shown


def test_a_progress_bar_redrawn_often_shows_in_terminal_ipython_while_another_run_prints(tmp_path: Path) -> None:
    """Terminal IPython, a run ticking lines and another redrawing a progress bar every 0.2 s: the
    bar never went quiet, so it was held until 8,192 characters of it or its run's end. Now its
    latest redraw shows, labelled, while the other still ticks, and again later."""
    (tmp_path / "ticker.py").write_text(TICKER, encoding="utf-8")
    (tmp_path / "bar.py").write_text(textwrap.dedent("""
        import pathlib, sys, time
        n = 0
        while not pathlib.Path("stop").exists():
            sys.stdout.write(f"\\r{n:3d}%")
            sys.stdout.flush()
            n += 1
            time.sleep(0.2)
        print()
    """), encoding="utf-8")
    with terminal_ipython(tmp_path) as (child, screen):
        child.sendline(f"a = %ccexec -c '{sys.executable} -u ticker.py'")
        child.expect("tick 1")
        child.sendline(f"b = %ccexec -c '{sys.executable} -u bar.py'")
        child.expect(r"2│ +\d+%\r\n", timeout=scaled(20))
        child.expect("1│ tick")  # the other run still prints
        child.expect(r"2│ +\d+%\r\n", timeout=scaled(20))  # and the bar shows again
        (tmp_path / "stop").touch()
        child.sendline("a.wait(); b.wait()")
        child.expect(r"In \[5\]")
    shown = screen.text()
    bars = [int(line.strip(" %")) for line in by_label(shown.splitlines())["2"] if re.fullmatch(r" *\d+%", line)]
    assert len(bars) >= 2 and bars == sorted(bars), shown  # a latest redraw alone on each line, in order


ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")


def written(pieces: list[tuple[object, str]]) -> str:
    return "".join(text for _stream, text in pieces)


def test_a_run_printing_alone_writes_as_it_comes() -> None:
    """One writer: its text unchanged, partial lines at once, no label."""
    place = SharedLines()
    one = place.join("echo hi")
    place.printing(one, True)
    assert written(place.write(one, "out", "tty", "work") + place.write(one, "out", "tty", "ing\n")) == "working\n"


def test_a_partial_line_waits_for_its_end_while_another_run_prints() -> None:
    """Two writers: a partial line is held, then written whole with its label."""
    place = SharedLines()
    one, two = place.join("one"), place.join("two")
    place.printing(one, True)
    place.printing(two, True)
    assert written(place.write(one, "out", "tty", "half")) == ""
    assert written(place.write(two, "out", "tty", "[started] two\nline\n")) == "2│ [started] two\n2│ line\n"
    assert written(place.write(one, "out", "tty", " done\n")) == "1│ [run] one\n1│ half done\n"


def test_a_held_line_is_written_once_its_writer_prints_alone() -> None:
    """When the other run ends, the held partial line is written unlabelled (a prompt such as
    ``Password: `` is seen), and the run goes on unlabelled."""
    place = SharedLines()
    one, two = place.join("one"), place.join("two")
    place.printing(one, True)
    place.printing(two, True)
    place.write(one, "out", "tty", "[started] one\nPassword: ")
    assert written(place.leave(two)) == "Password: "
    assert written(place.write(one, "out", "tty", "ok\n")) == "ok\n"


def test_a_held_line_is_written_labelled_once_its_writer_went_quiet() -> None:
    """A prompt (``Password: ``) held while another run prints is written, labelled and ended, when
    its run went quiet (it was hidden until that run ended); its rest comes on a line of its own."""
    place = SharedLines()
    one, two = place.join("one"), place.join("two")
    place.printing(one, True)
    place.printing(two, True)
    place.write(one, "out", "tty", "[started] one\n")
    assert written(place.write(one, "out", "tty", "Password: ")) == ""
    assert place.holds(one)
    assert written(place.quiet(one)) == "1│ Password: \n"
    assert not place.holds(one)
    assert written(place.write(one, "out", "tty", "ok\n")) == "1│ ok\n"


def test_a_held_progress_bar_shows_its_latest_redraw_when_held_long() -> None:
    """A progress bar redrawn too often to go quiet, held while another run prints: ``held_long``
    writes its latest redraw alone, labelled and ended; its next redraws wait again, and its
    line's end comes on a line of its own."""
    place = SharedLines()
    one, two = place.join("one"), place.join("bar")
    place.printing(one, True)
    place.printing(two, True)
    place.write(two, "err", "tty", "[started] bar\n")
    assert written(place.write(two, "err", "tty", "\r 10%") + place.write(two, "err", "tty", "\r 20%\r")) == ""
    assert written(place.held_long(two)) == "2│  20%\n"
    assert not place.holds(two)
    assert written(place.write(two, "err", "tty", "\r 30%")) == ""
    assert written(place.write(two, "err", "tty", "\r100%\n")) == "2│ \r2│  30%\r2│ 100%\n"


def test_a_run_printing_alone_holds_nothing_for_quiet_to_write() -> None:
    """A lone run's partial line is written at once: nothing is held, and quiet writes nothing."""
    place = SharedLines()
    one = place.join("one")
    place.printing(one, True)
    assert written(place.write(one, "out", "tty", "Password: ")) == "Password: "
    assert not place.holds(one)
    assert place.quiet(one) == []


def test_a_writers_label_is_told_only_while_its_lines_carry_it() -> None:
    """``label`` (what a question asked for the run starts its lines with) is ``''`` while the run
    prints alone, and its lines' label once another prints too."""
    place = SharedLines()
    one, two = place.join("one"), place.join("two")
    place.printing(one, True)
    assert place.label(one) == ""
    place.printing(two, True)
    assert (place.label(one), place.label(two)) == ("1│ ", "2│ ")


def test_text_never_glues_onto_another_writers_unfinished_line() -> None:
    """A run that wrote ``50%`` alone and then has company: the other's text starts a new line."""
    place = SharedLines()
    one, two = place.join("one"), place.join("two")
    place.printing(one, True)
    place.write(one, "out", "tty", "50%")
    assert written(place.printing(two, True)) == "\n1│ [run] one\n"
    assert written(place.write(two, "out", "tty", "[started] two\n")) == "2│ [started] two\n"


def test_a_half_line_written_alone_is_written_whole_under_its_label_once_another_run_joins() -> None:
    """A run that wrote ``Downloading... `` alone, then another joins: the half-line is ended there,
    and its end came later as ``1│ done``, a fragment nobody could place. Its line is now written
    whole under its label once it ends (its start again, the rest after it)."""
    place = SharedLines()
    one, two = place.join("one"), place.join("two")
    place.printing(one, True)
    assert written(place.write(one, "out", "tty", "Down") + place.write(one, "out", "tty", "loading... ")) == (
        "Downloading... ")
    assert written(place.printing(two, True)) == "\n1│ [run] one\n"
    assert written(place.write(two, "out", "tty", "[started] two\n")) == "2│ [started] two\n"
    assert written(place.write(one, "out", "tty", "done\n")) == "1│ Downloading... done\n"


def test_a_progress_bar_drawn_alone_goes_on_from_its_latest_redraw_once_labelled() -> None:
    """A bar redrawn alone (``\\r 10%\\r 20%``), then another run joins: its line, once it ends, is
    written labelled from its latest redraw on, not from the redraws a terminal drew over."""
    place = SharedLines()
    one, two = place.join("bar"), place.join("two")
    place.printing(one, True)
    place.write(one, "err", "tty", "done 1\n\r 10%")
    place.write(one, "err", "tty", "\r 20%\r")
    place.printing(two, True)
    assert written(place.write(one, "err", "tty", " 30%\n")) == "1│  20%\r1│  30%\n"


def test_a_half_line_ended_by_other_text_is_not_written_again() -> None:
    """A half-line other text ended (the ``^C`` a terminal echoed) is not the start of the writer's
    next line: that line is its own."""
    place = SharedLines()
    one, two = place.join("one"), place.join("two")
    place.printing(one, True)
    place.write(one, "out", "tty", "half")
    place.mid_line("tty")
    assert written(place.write(one, "out", "tty", "next")) == "\nnext"
    place.printing(two, True)
    assert written(place.write(one, "out", "tty", " line\n")) == "1│ next line\n"


def test_a_conversation_between_turns_does_not_label_anothers_lines() -> None:
    """A writer that is not printing (a conversation waiting for a follow-up) leaves another's lines unlabelled."""
    place = SharedLines()
    talk, other = place.join("claude: hi"), place.join("ls")
    place.printing(talk, True)
    place.printing(talk, False)
    place.printing(other, True)
    assert written(place.write(other, "out", "tty", "a\n")) == "a\n"


def test_a_note_after_another_runs_unfinished_line_starts_one_line_below() -> None:
    """A note after another writer's partial line: one newline before it, not a blank line."""
    place = SharedLines()
    one, two = place.join("one"), place.join("two")
    place.write(one, "out", "tty", "Password: ")
    pieces = place.line_start(two, "out", "tty") + place.write(two, "out", "tty", "[completed] exit 0\n")
    assert written(pieces) == "\n[completed] exit 0\n"


def test_a_batchs_rows_are_never_labelled_and_label_no_other_run() -> None:
    """A writer without a name (a batch's rows, which name their item) writes unlabelled, on a line
    of its own (after the line another left unfinished), and a run printing beside it stays unlabelled."""
    place = SharedLines()
    run, batch = place.join("sleep 9"), place.join("")
    place.printing(run, True)
    place.write(run, "out", "tty", "tick")
    assert written(place.write(batch, "out", "tty", "#0 completed · echo a → a\n")) == ""
    assert written(place.write(run, "out", "tty", " 2\n")) == " 2\n#0 completed · echo a → a\n"
    assert written(place.write(run, "out", "tty", "tick 3\n")) == "tick 3\n"


def test_a_batchs_rows_wait_for_the_end_of_a_lone_runs_half_line() -> None:
    """A batch's rows written while a run printing alone had half a line out cut it (``tick half``,
    the rows, then `` and its end`` on a line of its own); they come after the line's end."""
    place = SharedLines()
    run, batch = place.join("ticker"), place.join("")
    place.printing(run, True)
    pieces = place.write(run, "out", "tty", "tick half")
    pieces += place.write(batch, "out", "tty", "#0 completed · echo a → a\n")
    pieces += place.write(batch, "out", "tty", "#1 completed · echo b → b\n")
    pieces += place.write(run, "out", "tty", " and its end\n")
    assert written(pieces) == "tick half and its end\n#0 completed · echo a → a\n#1 completed · echo b → b\n"


def test_a_batchs_rows_wait_for_a_half_line_only_so_long() -> None:
    """A line that never ends (a progress bar redrawn with carriage returns, a prompt) holds the rows
    back for at most HELD_CHARS more characters of it, or until its run ends."""
    place = SharedLines()
    run, batch = place.join("progress"), place.join("")
    place.printing(run, True)
    place.write(run, "out", "tty", "\r 1%")
    assert written(place.write(batch, "out", "tty", "#0 completed\n")) == ""
    bar = "\r" + "#" * HELD_CHARS
    assert written(place.write(run, "out", "tty", bar)) == bar + "\n#0 completed\n"
    place.leave(run)
    prompt = place.join("asks")
    place.printing(prompt, True)
    place.write(prompt, "out", "tty", "Password: ")
    assert written(place.write(batch, "out", "tty", "#1 completed\n")) == ""
    assert written(place.leave(prompt)) == "\n#1 completed\n"


def test_a_runs_introduction_names_its_pid() -> None:
    """A run named once labelling starts (``1│ [run] ...``) says its pid, as its ``[started]`` line
    did: two runs of one command were told apart only by going back to those lines."""
    place = SharedLines()
    one, two = place.join("sleep 9"), place.join("sleep 9")
    place.started(one, 4242)
    place.printing(one, True)
    place.write(one, "out", "tty", "a\n")
    assert written(place.printing(two, True)) == "1│ [run] pid 4242 · sleep 9\n"


def test_a_label_is_given_again_once_its_run_ended() -> None:
    """Labels are the smallest numbers free: a run's number is its own while it lasts, then free."""
    place = SharedLines()
    talk, first = place.join("claude: hi"), place.join("sleep 1")
    place.printing(talk, True)
    place.printing(first, True)
    place.leave(first)
    later = place.join("ls")
    place.printing(later, True)
    assert written(place.write(later, "out", "tty", "[started] ls\n")) == "2│ [started] ls\n"


@pytest.mark.claude
def test_another_runs_lines_wait_while_a_question_is_asked_on_the_terminal(tmp_path: Path) -> None:
    """A run printing in the background while a conversation asks on the terminal: its lines
    landed on the question's line, where the answer is typed (``tells Claude) > 2│ tick``);
    they now wait for the answer and come after it."""
    (tmp_path / "paced.py").write_text(textwrap.dedent("""
        import pathlib, time
        print("tick before")
        while not pathlib.Path("go").exists():
            time.sleep(0.02)
        print("tick during")
    """), encoding="utf-8")
    with terminal_ipython(tmp_path) as (child, screen):
        child.sendline(f"a = %ccexec -c '{sys.executable} -u paced.py'")
        child.expect(r"\[started\] pid (\d+)")
        pid = int(child.match[1])
        child.expect("tick before")
        child.sendline('run = %ccexec --demo --wait "bash: echo hi > notes.txt"')
        child.expect(r"tells Claude\) > ")
        (tmp_path / "go").touch()
        eventually(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                   what="the background run's process to print and end")
        # Its line travels on to the terminal now: give it the time it took before the fix.
        child.expect([r"tick during", pexpect.TIMEOUT], timeout=scaled(2))
        child.sendline("y")
        child.expect(r"In \[4\]")
    shown = screen.text()
    asked = next(line for line in shown.splitlines() if "tells Claude) > " in line)
    assert asked.endswith("tells Claude) > y"), shown
    assert shown.index("tick during") > shown.index("tells Claude) > y"), shown


@pytest.mark.claude
def test_a_question_asked_on_the_terminal_carries_its_runs_label(tmp_path: Path) -> None:
    """A conversation asking on the terminal while another run prints: its answer's lines were
    labelled (``2│ ``) and its question's lines, written by the prompter, were not."""
    (tmp_path / "paced.py").write_text(textwrap.dedent("""
        import pathlib, time
        print("tick before")
        while not pathlib.Path("go").exists():
            time.sleep(0.02)
    """), encoding="utf-8")
    with terminal_ipython(tmp_path) as (child, screen):
        child.sendline(f"a = %ccexec -c '{sys.executable} -u paced.py'")
        child.expect("tick before")
        child.sendline('run = %ccexec --demo --wait "bash: echo hi > notes.txt"')
        child.expect(r"tells Claude\) > ")
        child.sendline("y")
        child.expect(r"In \[4\]")
        (tmp_path / "go").touch()
        child.sendline("a.wait()")
        child.expect(r"In \[5\]")
    lines = screen.text().splitlines()
    first = next(i for i, line in enumerate(lines) if "Claude asks to use" in line)
    asked = next(i for i, line in enumerate(lines) if "tells Claude) > " in line)
    assert all(line.startswith("2│ ") for line in lines[first:asked + 1]), "\n".join(lines)


def test_ctrl_c_of_a_waiting_run_in_terminal_ipython_starts_its_lines_after_the_echoed_ctrl_c(
    tmp_path: Path,
) -> None:
    """Ctrl-C at ``%ccexec ... --wait`` in terminal IPython: the terminal echoes ``^C`` where the
    cursor stood; the run's notes followed it on that line (``^C[cancelling]``)."""
    with terminal_ipython(tmp_path) as (child, screen):
        child.sendline("w = %ccexec -c \"bash -c 'echo hi; sleep 30'\" --wait")
        child.expect("hi\r\n")
        child.sendintr()
        child.expect(r"In \[3\]")
    shown = screen.text()
    assert "\n[cancelling]\n[cancelled] killed by SIGTERM" in shown, shown


def test_a_line_printed_in_pieces_above_terminal_ipythons_prompt_is_drawn_whole(tmp_path: Path) -> None:
    """A run printing ``working`` and then dots while terminal IPython shows its prompt: each
    piece was drawn before the prompt, which then wrote over it (the screen kept only ``done``).
    An unfinished line now waits for its end above the prompt and is drawn whole."""
    (tmp_path / "dots.py").write_text(textwrap.dedent("""
        import pathlib, sys, time
        print("working", end="", flush=True)
        for dot in range(3):
            while not pathlib.Path(f"dot{dot}").exists():
                time.sleep(0.02)
            print(".", end="", flush=True)
            pathlib.Path(f"printed{dot}").touch()
        while not pathlib.Path("end").exists():
            time.sleep(0.02)
        print("done")
    """), encoding="utf-8")
    # No cursor position requests: prompt_toolkit waited for the answer, which pexpect never
    # sends, and drew every piece at once, after it gave up.
    env = {**environment(tmp_path), "PROMPT_TOOLKIT_NO_CPR": "1"}
    with terminal_ipython(tmp_path, env) as (child, screen):
        child.sendline(f"r = %ccexec -c '{sys.executable} -u dots.py'")
        child.expect(r"In \[3\]")
        for dot in range(3):
            (tmp_path / f"dot{dot}").touch()
            eventually(lambda dot=dot: (tmp_path / f"printed{dot}").exists(), what=f"dot {dot} printed")
        (tmp_path / "end").touch()
        child.expect(r"\[completed\] exit 0")
        child.expect(r"In \[3\]")
    shown = screen.text()
    assert "working...done\n" in shown, shown


def test_an_unfinished_line_longer_than_the_limit_is_written_rather_than_held() -> None:
    """A partial line held while another run prints is written (ended by a newline) once it is
    longer than HELD_CHARS: a progress bar redrawn with ``\\r`` for hours, or a megabyte JSON
    line in pieces, grew without bound (and was copied whole at every piece)."""
    place = SharedLines()
    one, two = place.join("one"), place.join("two")
    place.printing(one, True)
    place.printing(two, True)
    place.write(one, "out", "tty", "[started] one\n")
    frames = "".join(f"\r{n:5d}%" for n in range(HELD_CHARS // 7 + 1))
    assert written(place.write(one, "out", "tty", frames)) == "1│ " + frames.replace("\r", "\r1│ ") + "\n"
    assert written(place.write(one, "out", "tty", "\rdone\n")) == "1│ \r1│ done\n"


def test_a_label_is_drawn_again_after_a_carriage_return_and_no_other_line_break() -> None:
    """Labelled lines are cut at newlines alone (a form feed or U+2028 in a line gave it a label
    in its middle); after a carriage return the label comes again, as the line is redrawn."""
    place = SharedLines()
    one, two = place.join("one"), place.join("two")
    place.printing(one, True)
    place.printing(two, True)
    place.write(one, "out", "tty", "[started] one\n")
    assert written(place.write(one, "out", "tty", "a\x0cb\u2028c\r 50%\n")) == "1│ a\x0cb\u2028c\r1│  50%\n"


def test_an_unfinished_line_above_terminal_ipythons_prompt_waits_only_up_to_the_limit() -> None:
    """Above the prompt an unfinished line waits for its end, but not past HELD_CHARS: a progress
    bar redrawn with carriage returns at the prompt for hours was kept, all of it, in memory."""
    terminal = io.StringIO()
    above = _AbovePrompt()
    frames = "".join(f"\r{n:5d}%" for n in range(HELD_CHARS // 7 + 1))
    above._pending = [(terminal, "[started] bar\n"), (terminal, frames[:70])]
    above._drain_lines()
    assert terminal.getvalue() == "[started] bar\n"
    above._pending.append((terminal, frames[70:]))
    above._drain_lines()
    assert terminal.getvalue() == "[started] bar\n" + frames + "\n"
    assert above._pending == []


@pytest.mark.claude
def test_a_conversation_shown_between_its_turns_does_not_label_the_next_runs_lines(tmp_path: Path) -> None:
    """A conversation run with ``display=False`` and shown once its turn ended waits for a
    follow-up: it does not print, so the run after it is not labelled (it was: ``2│ x``)."""
    (tmp_path / "late.py").write_text(textwrap.dedent("""
        import cc_executor_nb as ccx
        talk = ccx.run("what is 2+2", demo=True, display=False)
        talk.wait()
        talk.show()
        ccx.run(["echo", "x"], command=True).wait()
        talk.end()
    """), encoding="utf-8")
    done = subprocess.run([sys.executable, "late.py"], check=False, cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=scaled(90))
    assert done.returncode == 0, done.stderr
    assert "\nx\n" in done.stdout and "│" not in done.stdout, done.stdout


@pytest.mark.claude
def test_a_claude_run_shown_after_its_turn_prints_its_started_line_before_its_answer(tmp_path: Path) -> None:
    """A Claude run with ``display=False`` shown once its answer came: the answer so far was
    written before the ``[started]`` line (the whole answer, read at that line)."""
    (tmp_path / "late.py").write_text(textwrap.dedent("""
        import cc_executor_nb as ccx
        talk = ccx.run("what is 2+2", demo=True, display=False)
        talk.wait()
        talk.show()
        talk.end()
    """), encoding="utf-8")
    done = subprocess.run([sys.executable, "late.py"], check=False, cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=scaled(90))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("[started] pid ") and lines[1] == "4", done.stdout


def _drop_an_asking_conversation(child: pexpect.spawn) -> None:
    """In terminal IPython: start a demo conversation that asks to run Bash, drop its handle, and
    wait for its question at the prompt."""
    child.sendline('run = %ccexec --demo "bash: echo hi > notes.txt"')
    child.expect(r"\[needs you\] Claude asks to use")
    child.expect(r"In \[3\]")
    child.sendline("del run")
    child.expect(r"tells Claude\) > ", timeout=scaled(20))


@pytest.mark.claude
def test_a_dropped_conversations_question_is_asked_at_terminal_ipythons_prompt(tmp_path: Path) -> None:
    """Terminal IPython, a conversation asking with nobody waiting for it, then ``del run``: its
    question was denied as "nobody can answer", though the terminal could ask it. It is asked at
    the prompt now; the answer goes to Claude, and the conversation ends after that turn."""
    with terminal_ipython(tmp_path) as (child, screen):
        _drop_an_asking_conversation(child)
        child.sendline("y")
        eventually((tmp_path / "notes.txt").exists, what="the approved command's file")
        child.expect(r"\[completed\] exit 0", timeout=scaled(30))
        child.sendline("print('the prompt', 'is back')")  # the prompt takes input again
        child.expect("the prompt is back")
    shown = screen.text()
    assert "nobody can answer" not in shown, shown


@pytest.mark.claude
def test_a_ctrl_c_at_a_question_asked_at_terminal_ipythons_prompt_denies_it(tmp_path: Path) -> None:
    """A Ctrl-C at a dropped conversation's question asked at terminal IPython's prompt did not
    stop it: the question stayed until answered, then IPython printed ``KeyboardInterrupt
    escaped interact()``. It denies the question now (the run has no handle to answer it later),
    with a line saying so; no traceback, and the prompt is back."""
    with terminal_ipython(tmp_path) as (child, screen):
        _drop_an_asking_conversation(child)
        child.sendintr()
        child.expect(r"denied by you: interrupted \(Ctrl-C\)", timeout=scaled(20))
        child.expect(r"\[completed\] exit 0", timeout=scaled(30))
        child.sendline("print('the prompt', 'is back')")  # the prompt takes input again
        child.expect("the prompt is back")
    shown = screen.text()
    assert not (tmp_path / "notes.txt").exists()
    assert "escaped interact()" not in shown and "Traceback" not in shown and "KeyboardInterrupt" not in shown, shown
