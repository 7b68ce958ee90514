"""``shellwords.split``: ``shlex.split``'s words and errors, in linear time."""

from __future__ import annotations

import shlex
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc_executor_nb import protocol, shellwords
from cc_executor_nb.kernel import api, batch, magic

# A test here that ran shlex's quadratic split would take minutes: the timeout is the bound.
pytestmark = pytest.mark.timeout(60)


def _outcome(split: Callable[[str], list[str]], line: str) -> list[str] | str:
    """The words, or the ValueError's message."""
    try:
        return split(line)
    except ValueError as exc:
        return f"ValueError: {exc}"


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="ab \t\r\n\\'\"#\x0b\u00a0", max_size=20))
def test_split_gives_shlex_words_and_errors(line: str) -> None:
    """On quotes, backslashes, blanks, a comment sign and letters: shlex.split's words, or its error."""
    assert _outcome(shellwords.split, line) == _outcome(shlex.split, line)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("echo 'open", "No closing quotation"),
        ('echo "open', "No closing quotation"),
        ('echo "open\\\\', "No closing quotation"),
        ("echo 'open\\", "No closing quotation"),
        ("echo end\\", "No escaped character"),
        ('echo "end\\', "No escaped character"),
        ("a'b'c\"d", "No closing quotation"),
    ],
)
def test_split_raises_shlex_messages(line: str, message: str) -> None:
    """An unclosed quote and a final backslash raise ValueError with shlex's own message."""
    with pytest.raises(ValueError) as caught:
        shlex.split(line)
    assert str(caught.value) == message
    with pytest.raises(ValueError) as caught:
        shellwords.split(line)
    assert str(caught.value) == message


def test_a_word_of_eight_megabytes_is_split_at_once() -> None:
    """A quoted 8 MB word splits within the test's timeout: shlex grows a word a character at
    a time and took 4.9 s for 600 KB (minutes for this)."""
    word = "x" * 8_000_000
    assert shellwords.split(f'echo "{word}" \'{word}\' {word}') == ["echo", word, word, word]


def test_an_unclosed_quote_before_megabytes_of_blanks_is_found_at_once() -> None:
    """The error is found in one pass: a search for the next word from every place after the
    quote would scan the megabytes of blanks once per place."""
    with pytest.raises(ValueError, match="No closing quotation"):
        shellwords.split('echo "' + " " * 4_000_000)


_WORD = "x" * 8_000_000
_SPLITS: dict[str, Callable[[str], object]] = {
    "server": lambda line: protocol.validate_execute({"command": line}).argv,
    "kernel": api._split,
    "batch": lambda line: shellwords.split(batch.fill(line, "i", 0, command=True)),
    "magic": lambda line: [magic._unquote(line)],
}


@pytest.mark.parametrize("where", _SPLITS)
def test_every_split_of_a_command_takes_megabytes_at_once(where: str) -> None:
    """The server's split of ``command``, the kernel's (a durable run's allow-list check), a
    batch template's and a magic word's: each takes an 8 MB quoted word within the test's
    timeout (the first three ran shlex.split, minutes for this)."""
    assert _SPLITS[where](f'"{_WORD}"') == [_WORD]
