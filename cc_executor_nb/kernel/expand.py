"""``$name`` and ``{expression}`` in a ``%ccexec`` line, as IPython expands them, in linear time.

IPython expands a line magic's arguments with its ``DollarFormatter``, whose regular
expression tries every position of the text and scans to the end from each: a 40,000
character line took 8 s and a 200 KiB one minutes, with the kernel stuck before
``%ccexec`` was even called. The magic opts out of IPython's expansion
(``@no_var_expand``) and calls :func:`expand` instead: the same result for every line
(a property test compares the two), with one pass over the text.
"""

from __future__ import annotations

import bisect
import re
import string
from collections.abc import Iterator, Mapping
from typing import Any

from IPython.utils.text import DollarFormatter

__all__ = ["LinearDollarFormatter", "expand"]

_FIELD = re.compile(r"\$(\$?[\w\.]+)")
"""``$name`` or ``$$name`` at a dollar sign (IPython's pattern, without its prefix and lookahead)."""

Part = tuple[str, Any, Any, Any]


class LinearDollarFormatter(DollarFormatter):
    """IPython's ``DollarFormatter`` with a parse that reads the text once.

    IPython's pattern, ``(.*?)\\$(\\$?[\\w\\.]+)(?=([^']*'[^']*')*[^']*$)``, finds the
    next dollar sign followed by a name, such that an even number of single quotes
    follows the name; its lazy prefix cannot cross a newline, so the text before the
    last newline ahead of a match is left out (kept here, as IPython does it).
    """

    def parse(self, fmt_string: str) -> Iterator[Part]:
        for literal, field_name, format_spec, conversion in string.Formatter.parse(self, fmt_string):
            text = ""
            rest = 0
            for start, dollar, end, name in _dollar_fields(literal):
                if name.startswith("$"):  # $$foo stands for $foo
                    text += literal[start:dollar] + name
                else:
                    yield (text + literal[start:dollar], name, "", None)
                    text = ""
                rest = end
            yield (text + literal[rest:], field_name, format_spec, conversion)


def _dollar_fields(literal: str) -> Iterator[tuple[int, int, int, str]]:
    """(prefix start, dollar, end, name) of each ``$name`` IPython's pattern matches."""
    quotes = [i for i, char in enumerate(literal) if char == "'"] if "'" in literal else []
    position = 0
    dollar = literal.find("$")
    while dollar >= 0:
        found = _FIELD.match(literal, dollar)
        if found and (len(quotes) - bisect.bisect_left(quotes, found.end())) % 2 == 0:
            start = max(position, literal.rfind("\n", position, dollar) + 1)
            yield start, dollar, found.end(), found.group(1)
            position = found.end()
            dollar = literal.find("$", position)
        else:
            dollar = literal.find("$", dollar + 1)


_FORMATTER = LinearDollarFormatter()


def expand(line: str, namespace: Mapping[str, Any]) -> str:
    """``line`` with ``$name`` and ``{expression}`` filled in from ``namespace``, as IPython's
    ``var_expand`` does (unchanged when anything fails to evaluate)."""
    if "$" not in line and "{" not in line and "}" not in line:
        return line
    try:
        return _FORMATTER.vformat(line, args=[], kwargs=namespace)
    except Exception:  # IPython's rule: a line that cannot be expanded is sent as written
        return line
