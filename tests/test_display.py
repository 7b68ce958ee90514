"""RunDisplay outside a kernel (a plain script here): what a turn's end and the run's end print."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cc_executor_nb.kernel.display import RunDisplay

pytestmark = pytest.mark.timeout(30)

STARTING = "label\nstarting\n\n[result] no result yet\n"
HINT = "[turn ended] run.send('...') follows up; run.end() ends the conversation\n"


def shown(records: list[str]) -> RunDisplay:
    """A display shown without a kernel whose record is the last of ``records``."""
    display = RunDisplay(lambda: {"text/plain": records[-1]})
    display.show()
    return display


def printed_after_a_turn(
    first: str, then: str, end: Callable[[RunDisplay], None], capsys: pytest.CaptureFixture[str]
) -> str:
    """What ``end`` (a next turn's end, or the run's) prints once a turn's end printed ``first``
    and the record became ``then``."""
    records = [STARTING, first]
    display = shown(records)
    display.turn_ended(None)
    records.append(then)
    capsys.readouterr()
    end(display)
    return capsys.readouterr().out


def next_turn(display: RunDisplay) -> None:
    display.turn_ended(None)


def the_end(display: RunDisplay) -> None:
    display.finish()


def test_the_end_after_a_printed_turn_prints_only_the_records_head(capsys: pytest.CaptureFixture[str]) -> None:
    """Ended between turns, the turns printed at the turn's end are not printed again: the head alone."""
    out = printed_after_a_turn("label\ncompleted\n\nthe answer\n", "label\ncompleted · exit code 0\n\nthe answer\n",
                               the_end, capsys)
    assert out == "label\ncompleted · exit code 0\n\n"


def test_the_end_after_a_turn_not_printed_prints_the_whole_record(capsys: pytest.CaptureFixture[str]) -> None:
    """A final record that does not go on from the printed one (here no footer to set aside): the whole
    final record is printed, a last turn (ended with the process) with it."""
    final = "label\ncompleted · exit code 0\n\nthe answer\n\n[follow-up 1]\n> more\n\nmore\n"
    assert printed_after_a_turn("label\ncompleted\n\nthe answer\n", final, the_end, capsys) == final + "\n"


def test_each_turns_end_prints_only_what_the_record_gained(capsys: pytest.CaptureFixture[str]) -> None:
    """A second turn's end printed the whole record so far, the first turn's answer again (a
    conversation of n turns printed its first answer n times); it prints the record's head and
    the turns since, as text mode prints each turn once."""
    first = "label\ncompleted · took 1 s\n\nfirst answer\n\n[result] done · $0.01\n"
    second = ("label\ncompleted · turn 2 took 1 s\n\nfirst answer\n\n"
              "[follow-up 1]\n> more\n\nsecond answer\n\n[result] done · $0.02\n")
    assert printed_after_a_turn(first, second, next_turn, capsys) == (
        "label\ncompleted · turn 2 took 1 s\n\n[follow-up 1]\n> more\n\nsecond answer\n\n[result] done · $0.02\n\n"
        f"{HINT}\n"
    )


def test_a_turns_end_after_a_record_that_does_not_go_on_prints_it_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """Where the record so far does not go on from what the last turn's end printed (its body
    changed), the whole record is printed: nothing is left out."""
    redrawn = "label\ncompleted\n\nthe first answer, redrawn\n\n[result] done\n"
    out = printed_after_a_turn("label\ncompleted\n\nfirst answer\n\n[result] done\n", redrawn, next_turn, capsys)
    assert out == f"{redrawn}\n{HINT}\n"


def test_the_end_after_a_printed_turn_and_a_last_one_prints_only_the_last(capsys: pytest.CaptureFixture[str]) -> None:
    """A last turn ended with the process (run.send() then run.end()) after a printed turn: the final
    record printed the first turn's answer again; it prints its head and the last turn."""
    final = ("label\ncompleted · exit code 0\n\nfirst answer\n\n"
             "[follow-up 1]\n> more\n\nmore\n\n[result] done · $0.02\n")
    out = printed_after_a_turn("label\ncompleted\n\nfirst answer\n\n[result] done · $0.01\n", final, the_end, capsys)
    assert out == "label\ncompleted · exit code 0\n\n[follow-up 1]\n> more\n\nmore\n\n[result] done · $0.02\n\n"


def test_a_turns_end_printed_without_a_kernel_says_how_to_go_on(capsys: pytest.CaptureFixture[str]) -> None:
    """Printed, a turn's record has no follow-up box: it ends with what text mode's turn line
    says, run.send() follows up and run.end() ends the conversation."""
    display = shown([STARTING, "label\ncompleted\n\nthe answer\n\n[result] done\n"])
    capsys.readouterr()
    display.turn_ended(None)
    assert capsys.readouterr().out == f"label\ncompleted\n\nthe answer\n\n[result] done\n\n{HINT}\n"


def test_the_runs_end_printed_without_a_kernel_has_no_follow_up_hint(capsys: pytest.CaptureFixture[str]) -> None:
    """The conversation is over at the run's end: no line says to follow up."""
    display = shown([STARTING, "label\ncompleted · exit code 0\n\nthe answer\n"])
    capsys.readouterr()
    display.finish()
    assert "follows up" not in capsys.readouterr().out
