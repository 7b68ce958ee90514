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
    """A last turn (ended with the process) after a printed one: the whole final record is printed."""
    records = ["label\nstarting\n\n[result] no result yet\n", "label\ncompleted\n\nthe answer\n"]
    display = shown(records)
    display.turn_ended(None)
    records.append("label\ncompleted · exit code 0\n\nthe answer\n\n[follow-up 1]\n> more\n\nmore\n")
    capsys.readouterr()
    display.finish()
    assert capsys.readouterr().out == records[-1] + "\n"
