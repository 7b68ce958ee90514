"""RunDisplay outside a kernel (a plain script here): what a turn's end and the run's end print."""

from __future__ import annotations

import pytest

from cc_executor_nb.kernel.display import RunDisplay

pytestmark = pytest.mark.timeout(30)


def shown(records: list[str]) -> RunDisplay:
    """A display shown without a kernel whose record is the last of ``records``."""
    display = RunDisplay(lambda: {"text/plain": records[-1]})
    display.show()
    return display


def test_the_end_after_a_printed_turn_prints_only_the_records_head(capsys: pytest.CaptureFixture[str]) -> None:
    """Ended between turns, the turns printed at the turn's end are not printed again: the head alone."""
    records = ["label\nstarting\n\n[result] no result yet\n", "label\ncompleted\n\nthe answer\n"]
    display = shown(records)
    display.turn_ended(None)
    records.append("label\ncompleted · exit code 0\n\nthe answer\n")
    capsys.readouterr()
    display.finish()
    assert capsys.readouterr().out == "label\ncompleted · exit code 0\n\n"


def test_the_end_after_a_turn_not_printed_prints_the_whole_record(capsys: pytest.CaptureFixture[str]) -> None:
    """A final record that does not go on from the printed one (here no footer to set aside): the whole
    final record is printed, a last turn (ended with the process) with it."""
    records = ["label\nstarting\n\n[result] no result yet\n", "label\ncompleted\n\nthe answer\n"]
    display = shown(records)
    display.turn_ended(None)
    records.append("label\ncompleted · exit code 0\n\nthe answer\n\n[follow-up 1]\n> more\n\nmore\n")
    capsys.readouterr()
    display.finish()
    assert capsys.readouterr().out == records[-1] + "\n"


def test_each_turns_end_prints_only_what_the_record_gained(capsys: pytest.CaptureFixture[str]) -> None:
    """A second turn's end printed the whole record so far, the first turn's answer again (a
    conversation of n turns printed its first answer n times); it prints the record's head and
    the turns since, as text mode prints each turn once."""
    first = "label\ncompleted · took 1 s\n\nfirst answer\n\n[result] done · $0.01\n"
    second = ("label\ncompleted · turn 2 took 1 s\n\nfirst answer\n\n"
              "[follow-up 1]\n> more\n\nsecond answer\n\n[result] done · $0.02\n")
    records = ["label\nstarting\n\n[result] no result yet\n", first]
    display = shown(records)
    display.turn_ended(None)
    records.append(second)
    capsys.readouterr()
    display.turn_ended(None)
    assert capsys.readouterr().out == (
        "label\ncompleted · turn 2 took 1 s\n\n[follow-up 1]\n> more\n\nsecond answer\n\n[result] done · $0.02\n\n"
    )


def test_a_turns_end_after_a_record_that_does_not_go_on_prints_it_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """Where the record so far does not go on from what the last turn's end printed (its body
    changed), the whole record is printed: nothing is left out."""
    records = ["label\nstarting\n\n[result] no result yet\n", "label\ncompleted\n\nfirst answer\n\n[result] done\n"]
    display = shown(records)
    display.turn_ended(None)
    records.append("label\ncompleted\n\nthe first answer, redrawn\n\n[result] done\n")
    capsys.readouterr()
    display.turn_ended(None)
    assert capsys.readouterr().out == records[-1] + "\n"


def test_the_end_after_a_printed_turn_and_a_last_one_prints_only_the_last(capsys: pytest.CaptureFixture[str]) -> None:
    """A last turn ended with the process (run.send() then run.end()) after a printed turn: the final
    record printed the first turn's answer again; it prints its head and the last turn."""
    records = ["label\nstarting\n\n[result] no result yet\n",
               "label\ncompleted\n\nfirst answer\n\n[result] done · $0.01\n"]
    display = shown(records)
    display.turn_ended(None)
    records.append("label\ncompleted · exit code 0\n\nfirst answer\n\n"
                   "[follow-up 1]\n> more\n\nmore\n\n[result] done · $0.02\n")
    capsys.readouterr()
    display.finish()
    assert capsys.readouterr().out == (
        "label\ncompleted · exit code 0\n\n[follow-up 1]\n> more\n\nmore\n\n[result] done · $0.02\n\n"
    )
