"""A command line split into words as ``shlex.split`` splits it, in linear time.

The server splits an ``execute`` request's ``command`` on its event loop, the kernel
splits the same command to check it against ``allowed_commands`` and to fill a batch
template, and the magic unquotes each word of its line. ``shlex`` grows a word one
character at a time, which is quadratic: a 600 KB argument took it 4.9 s, a 2 MB prompt
minutes, and on the server every session's output and heartbeats stopped meanwhile.

:func:`split` gives exactly what ``shlex.split(line)`` gives (POSIX rules, no comments):
blanks are space, tab, CR and LF; outside quotes a backslash takes the next character as
it is; ``'...'`` is taken as written; in ``"..."`` a backslash escapes only ``"`` and
``\\``; ``''`` is an empty word. It raises ``ValueError`` with shlex's messages: "No
closing quotation" for an unclosed quote, "No escaped character" for a backslash that
ends the line (also inside ``"...``). Pure: no I/O.
"""

from __future__ import annotations

import re

__all__ = ["split"]

# A whole word after its blanks: bare text, escaped characters, single- and double-quoted
# stretches. A piece that does not end (an unclosed quote, a final backslash) stops it.
_WORD = re.compile(r'''[ \t\r\n]*+((?:[^ \t\r\n\\'"]++|\\.|'[^']*+'|"(?:[^"\\]++|\\.)*+")++)''', re.DOTALL)
_TRAILING_BLANKS = re.compile(r"[ \t\r\n]*+\Z")
# The same pieces one at a time, to unquote a word that holds quotes or backslashes.
_PIECE = re.compile(r'''[^\\'"]++|\\(.)|'([^']*+)'|"((?:[^"\\]++|\\.)*+)"''', re.DOTALL)
_QUOTED_ESCAPE = re.compile(r'\\(["\\])')
# A double-quoted stretch up to where it stops: the end of the line, or a lone backslash there.
_OPEN_DOUBLE = re.compile(r'"(?:[^"\\]++|\\.)*+', re.DOTALL)


def split(line: str) -> list[str]:
    """The words ``shlex.split(line)`` makes, in time linear in the line's length.

    Raises ValueError("No closing quotation") or ValueError("No escaped character") where
    shlex does.
    """
    words: list[str] = []
    at = 0
    # Matched at each place in turn, never searched for: a search would try every place
    # after a quote that does not close, and scan to the end from each.
    while word := _WORD.match(line, at):
        words.append(_unquoted(word.group(1)))
        at = word.end()
    if not _TRAILING_BLANKS.match(line, at):
        raise ValueError(_why_not_split(line, at))
    return words


def _unquoted(raw: str) -> str:
    if "\\" not in raw and "'" not in raw and '"' not in raw:
        return raw
    return "".join(_piece_text(piece) for piece in _PIECE.finditer(raw))


def _piece_text(piece: re.Match[str]) -> str:
    escaped, single, double = piece.groups()
    if escaped is not None:
        return escaped
    if single is not None:
        return single
    if double is not None:
        return _QUOTED_ESCAPE.sub(r"\1", double)
    return piece.group()


def _why_not_split(line: str, at: int) -> str:
    """shlex's message for the piece after ``at`` that does not end: a quote or a final backslash."""
    at = len(line) - len(line[at:].lstrip(" \t\r\n"))
    stretch = _OPEN_DOUBLE.match(line, at)
    if stretch is not None:
        at = stretch.end()
    return "No escaped character" if at < len(line) and line[at] == "\\" else "No closing quotation"
