"""The magic's own ``$name`` / ``{expression}`` expansion: IPython's results, in one pass."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.utils.text import DollarFormatter

from cc_executor_nb.kernel.expand import LinearDollarFormatter, expand

from .util import scaled

# The characters IPython's pattern reacts to, and some it does not.
_TEXT = st.text(alphabet="$'\n{}a_.x 1é", max_size=40)


def _parts(formatter: DollarFormatter, text: str) -> list[Any] | str:
    """The parse as a list, or the error it raises (unbalanced braces)."""
    try:
        return list(formatter.parse(text))
    except ValueError as exc:
        return f"ValueError: {exc}"


@settings(max_examples=3000, deadline=None)
@given(_TEXT)
def test_the_parse_is_ipythons(text: str) -> None:
    """For any text, the same literal pieces and fields as IPython's DollarFormatter."""
    assert _parts(LinearDollarFormatter(), text) == _parts(DollarFormatter(), text)


def _ipython_expand(line: str, namespace: dict[str, Any]) -> str:
    """What IPython's ``var_expand`` makes of ``line`` (the line as written when anything fails)."""
    try:
        return DollarFormatter().vformat(line, [], namespace)
    except Exception:
        return line


_NAMESPACE = {"x": 5, "y": 21, "a": "A", "_": "U"}


@settings(max_examples=2000, deadline=None)
@given(_TEXT)
def test_expand_is_ipythons_for_any_text(text: str) -> None:
    """For any text (names defined or not, braces balanced or not), IPython's expansion."""
    assert expand(text, _NAMESPACE) == _ipython_expand(text, _NAMESPACE)


@pytest.mark.parametrize(
    "line",
    [
        "cost $x", "cost $$x", "$x.real and {y * 2}", "it's $x", "'$x' $y", "don't '$x'",
        "{undefined} $x", "$ alone, $$ and a.b", "a\nb $x", "{x", "} $x", "plain words",
    ],
)
def test_expand_gives_what_ipython_gives(line: str) -> None:
    """Names and expressions filled in, failures left as written, as IPython's var_expand."""
    assert expand(line, _NAMESPACE) == _ipython_expand(line, _NAMESPACE)


def test_a_line_that_fails_to_expand_is_sent_as_written() -> None:
    """A name that is not defined leaves the whole line as written (IPython's rule)."""
    assert expand("$x and {missing + 1}", {"x": 1}) == "$x and {missing + 1}"


def test_a_dollar_with_an_odd_number_of_quotes_after_it_is_left_as_written() -> None:
    """As the README says: inside single quotes (an odd number of ' after it on the line)
    neither $name nor $$ is touched, so a bash -c script keeps its own $ and $$."""
    line = "bash -c 'for i in 1 2; do echo $i $$i; done' $$x $x"
    assert expand(line, {"x": 5, "i": 7}) == "bash -c 'for i in 1 2; do echo $i $$i; done' $x 5"
    assert expand("summarise $x, it's long", {"x": 5}) == "summarise $x, it's long"


def test_a_200_kib_line_is_expanded_in_one_pass() -> None:
    """A 200 KiB line with a name at each end: IPython's pattern took minutes; this takes one pass."""
    line = "$first " + "word " * 40_000 + "{last}"
    done: list[str] = []
    worker = threading.Thread(target=lambda: done.append(expand(line, {"first": "A", "last": "Z"})), daemon=True)
    worker.start()
    worker.join(scaled(20))
    assert done, "the expansion of a 200 KiB line did not end within 20 s"
    assert done[0] == "A " + "word " * 40_000 + "Z"
