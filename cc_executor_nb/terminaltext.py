"""Child output as a terminal would show it, for the widget and the record.

Tools draw progress bars with carriage returns (tqdm, pip, curl) and colour their output
with ANSI escapes when forced to (``--color=always``, ``FORCE_COLOR``). Shown raw in
HTML, a progress bar became one line per update (the HTML parser turns ``\\r`` into a
line break) and colours became ``[31m`` litter. Here:

- :func:`overwrite_lines`: after a carriage return, what follows overwrites the line
  from its start, character by character, as on a terminal (``\\r\\n`` is a newline);
- :func:`strip_escapes`: every escape sequence removed (CSI, OSC, the two-byte ones);
- :func:`printable`: untrusted text made safe to show anywhere (a terminal, a page, a
  record that ``cat`` or ``nbconvert --stdout`` prints): escapes and the other control
  characters removed, bidi controls and hidden characters made visible (:func:`reveal`);
- :func:`ansi_html`: escaped HTML in which SGR colours and weights become ``<span
  style>`` from a fixed palette (the style never holds text from the output), every other
  escape removed, and the text between them :func:`printable`;
- :class:`ColourFilter`: a stream's text, piece by piece, with its SGR colours kept and
  every other escape sequence and control character removed, for output a notebook saves
  (a stream output that JupyterLab renders: it understands colours, carriage returns and
  backspaces, and nothing else).

``run.stdout`` keeps the bytes as they came; only what is shown changes. Pure functions.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "CONTROL",
    "MAX_COLUMN",
    "MONOSPACE",
    "ColourFilter",
    "ansi_html",
    "keep_colours",
    "overwrite_lines",
    "printable",
    "reveal",
    "reveal_bidi",
    "strip_escapes",
    "terminal_text",
]

# CSI (ESC [ parameters intermediates final), the strings (OSC ESC ], DCS ESC P, SOS ESC X,
# PM ESC ^, APC ESC _: up to BEL or ST, or cut off at the end), and the other two-byte
# escapes (ESC and one byte from 0 to _, like ESC 7, or a charset pick); a sequence cut
# off at the end of the text is removed too.
# Each kind as (its start, its end): the end is optional where a cut-off sequence counts.
_KINDS = ((r"\[[0-?]*[ -/]*", "[@-~]"), (r"[\]PX^_][^\x07\x1b]*", r"(?:\x07|\x1b\\)"), ("[()]", "[0-9A-Za-z]"),
          ("", r"(?![\]PX^_])[0-?@-Z\\-_]"))
_ESCAPE = re.compile(r"\x1b(?:" + "|".join(f"{start}{end}?" for start, end in _KINDS) + ")")
_WHOLE_ESCAPE = re.compile(r"\x1b(?:" + "|".join(start + end for start, end in _KINDS) + ")")
"""An escape sequence that is complete (not cut off by the end of a piece)."""
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 controls but tab and newline, DEL, and the C1 controls (U+009B is a CSI, U+009D an OSC)."""
# Embeddings, overrides and isolates reorder the text that follows them on screen, so a
# command shown for approval could read otherwise than it runs ("Trojan Source"). The
# marks (LRM, RLM, ALM) only steer neutral characters, and right-to-left letters need no
# control at all: both stay.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
# Characters that take no room and do nothing a reader needs: the zero-width space, the word
# joiner and the invisible operators, the BOM (U+FEFF, also inside text), and the tag
# characters. In untrusted text they hide what is read: a command copied from a record runs
# otherwise than it reads ("rm\u200b" is not "rm"), and tag characters carry a whole ASCII
# text no reader sees but a model reading the record does. ZWJ and ZWNJ stay (emoji
# sequences, Arabic and Indic scripts need them), and so do the tags of a flag emoji
# (U+1F3F4, tags, U+E007F: the flags of England, Scotland, Wales).
_HIDDEN = "\u200b\u2060-\u2064\ufeff\U000e0000-\U000e007f"
_FLAG = "\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f"
_REVEALED = re.compile(f"({_FLAG})|[\u202a-\u202e\u2066-\u2069{_HIDDEN}]")
"""A character :func:`reveal` shows as a marker, or (group 1) a flag emoji it keeps."""
_UNSAFE = re.compile(CONTROL.pattern[:-1] + _BIDI.pattern[1:-1] + _HIDDEN + "]")
"""Any character :func:`printable` changes (ESC is a C0 control)."""
_SGR = re.compile(r"\x1b\[([0-9;:]*)m")
_ESCAPE_OR_CONTROL = re.compile(_ESCAPE.pattern + r"|[\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f]|"
                                + _REVEALED.pattern)
"""Any escape sequence, a control character but tab, newline, carriage return and backspace,
a bidi control or a hidden character (or a flag emoji, kept)."""
_ESCAPE_OR_CHAR = re.compile(_ESCAPE.pattern + r"|.", re.DOTALL)

_PALETTE = (
    "#3e424d", "#e75c58", "#00a250", "#b8860b", "#208ffb", "#d160c4", "#60c6c8", "#c5c1b4",
    "#282c36", "#b22b31", "#007427", "#b27d12", "#0065ca", "#a03196", "#258f8f", "#a1a6b2",
)
"""Standard then bright colours 0-15 (the notebook's own ANSI palette, readable on white)."""


def terminal_text(text: str) -> str:
    """``text`` as plain text a terminal would leave: lines overwritten, escapes removed."""
    return strip_escapes(overwrite_lines(text))


def strip_escapes(text: str) -> str:
    """``text`` without escape sequences."""
    return _ESCAPE.sub("", text) if "\x1b" in text else text


def printable(text: str) -> str:
    """Untrusted ``text`` safe to show: escape sequences and control characters removed
    (tabs and newlines stay, ``\\r\\n`` becomes ``\\n``), bidi controls and hidden
    characters made visible (:func:`reveal`).

    ``"a\\x1b]0;title\\x07b\\x9b2J"`` is ``"ab2J"``; ``"x\\u202ey"`` is ``"x⟨U+202E⟩y"``;
    ``"r\\u200bm"`` is ``"r⟨U+200B⟩m"``.
    """
    if _UNSAFE.search(text) is None:  # the usual case: one scan instead of three passes
        return text
    return reveal(CONTROL.sub("", strip_escapes(text)))


def reveal_bidi(text: str) -> str:
    """Each bidi embedding, override or isolate control shown as ``⟨U+202E⟩`` instead of acting."""
    return _BIDI.sub(_marker, text)


def reveal(text: str) -> str:
    """:func:`reveal_bidi`, and each hidden character (zero-width space, word joiner, invisible
    operator, BOM, tag character outside a flag emoji) shown as ``⟨U+200B⟩``; ZWJ and ZWNJ stay."""
    return _REVEALED.sub(_revealed, text)


def _revealed(match: re.Match[str]) -> str:
    return match.group(1) or _marker(match)


def _marker(match: re.Match[str]) -> str:
    return "".join(f"⟨U+{ord(char):04X}⟩" for char in match.group())


_REDRAW = re.compile(r"[\r\b]|\x1b\[\d*[KDCG]")
"""What moves the cursor back or erases within a line: carriage return, backspace, erase in
line (EL), cursor back/forward (CUB, CUF) and to a column (CHA)."""
_MOVE = re.compile(r"\x1b\[(\d*)([KDCG])")
MAX_COLUMN = 1000
"""The farthest a cursor move goes past the end of a line's text: a terminal stops at its
right margin, and so does a move here (``ESC [ 100000000 G`` from a child would otherwise
pad the line with a hundred million spaces)."""
_MAX_PARAMETER = 999_999
"""A CSI parameter's largest value read: longer numbers mean as much, and ``int()`` refuses
one of more than 4300 digits."""


def _parameter(digits: str) -> int:
    """A CSI parameter's value, at most ``_MAX_PARAMETER`` (0 when empty)."""
    significant = digits.lstrip("0")
    return _MAX_PARAMETER if len(significant) > 6 else int(significant or 0)


def overwrite_lines(text: str) -> str:
    """Each line as a terminal leaves it after its carriage returns, backspaces, erases and
    moves within the line.

    ``"50%\\r100%"`` is ``"100%"``; ``"abcdef\\rXY"`` is ``"XYcdef"``; ``"100%\\r\\x1b[2KDone"``
    is ``"Done"``; ``"abc\\bX"`` is ``"abX"``; escapes take no column, so a coloured bar
    redrawn overwrites its visible characters only. Moves to other lines (cursor up) are
    not followed: each line is drawn on its own.
    """
    if _REDRAW.search(text) is None:
        return text
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(_overwritten(line) if _REDRAW.search(line) else line for line in lines)


def _overwritten(line: str) -> str:
    """One line drawn by a cursor: one entry per column, each with the escapes before it."""
    shown: list[str] = []
    col, pending = 0, ""
    for match in _ESCAPE_OR_CHAR.finditer(line):
        token = match.group()
        move = _MOVE.fullmatch(token)
        if pending and 0 < col <= len(shown) and (token in "\r\b" or move is not None):
            shown[col - 1] += pending  # escapes after a character belong to it (a colour reset)
            pending = ""
        if token == "\r":
            col = 0
        elif token == "\b":
            col = max(0, col - 1)
        elif move is not None:
            shown, col = _moved(shown, col, move.group(2), _parameter(move.group(1)))
        elif token.startswith("\x1b"):
            pending += token  # a colour: it goes with the next character
        else:
            shown += [" "] * (col - len(shown))
            shown[col : col + 1] = [pending + token]
            col, pending = col + 1, ""
    if pending:  # escapes after the last character: they belong to it (a colour reset)
        if shown:
            shown[-1] += pending
        else:
            shown.append(pending)
    return "".join(shown)


def _moved(shown: list[str], col: int, kind: str, count: int) -> tuple[list[str], int]:
    """The line and column after an erase (K: 0 to the end, 1 from the start, 2 all) or a
    move (D back, C forward, G to column ``count``)."""
    if kind == "K":
        if count == 0:
            return shown[:col], col
        if count == 1:
            return [" "] * min(col + 1, len(shown)) + shown[col + 1 :], col
        return [], col
    if kind == "D":
        return shown, max(0, col - max(count, 1))
    # Forward and to a column stop at the margin: the end of the text or MAX_COLUMN, the farther.
    margin = max(len(shown), MAX_COLUMN)
    if kind == "C":
        return shown, min(col + max(count, 1), margin)
    return shown, min(max(count, 1) - 1, margin)


@dataclass(frozen=True)
class _Style:
    fg: str = ""
    bg: str = ""
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False

    def css(self) -> str:
        parts = [f"color:{self.fg}"] if self.fg else []
        parts += [f"background-color:{self.bg}"] if self.bg else []
        parts += ["font-weight:bold"] if self.bold else []
        parts += ["opacity:.7"] if self.dim else []
        parts += ["font-style:italic"] if self.italic else []
        parts += ["text-decoration:underline"] if self.underline else []
        return ";".join(parts)


_PLAIN = _Style()
_FLAGS: dict[int, dict[str, Any]] = {
    1: {"bold": True}, 2: {"dim": True}, 3: {"italic": True}, 4: {"underline": True},
    22: {"bold": False, "dim": False}, 23: {"italic": False}, 24: {"underline": False},
}


MONOSPACE = "font-family:var(--jp-code-font-family,monospace)"
"""The inline style of a block of terminal text: JupyterLab's code font, else the browser's
monospace (JupyterLab's and nbconvert's output CSS make a ``<pre>`` inherit the page's
proportional font, which breaks columns, tables and progress bars)."""


def ansi_html(text: str) -> str:
    """``text`` escaped for HTML, its SGR colours and weights as styled spans (the text
    :func:`printable`: no other escape or control character, bidi controls visible)."""
    if "\x1b" not in text:
        return html.escape(printable(text))
    out: list[str] = []
    style = _PLAIN
    position = 0
    for match in _ESCAPE.finditer(text):
        out.append(_span(style, text[position : match.start()]))
        sgr = _SGR.fullmatch(match.group())
        if sgr is not None:
            style = _apply(style, sgr.group(1))
        position = match.end()
    out.append(_span(style, text[position:]))
    return "".join(out)


def _span(style: _Style, text: str) -> str:
    if not text:
        return ""
    escaped = html.escape(printable(text))
    css = style.css()
    return f'<span style="{css}">{escaped}</span>' if css else escaped


def _apply(style: _Style, parameters: str) -> _Style:
    codes = [_parameter(code) for code in re.split("[;:]", parameters)] if parameters else [0]
    index = 0
    while index < len(codes):
        code = codes[index]
        index += 1
        if code == 0:
            style = _PLAIN
        elif code in _FLAGS:
            style = replace(style, **_FLAGS[code])
        elif code in (38, 48):
            colour, index = _extended(codes, index)
            style = replace(style, fg=colour) if code == 38 else replace(style, bg=colour)
        elif code in (39, 49):
            style = replace(style, fg="") if code == 39 else replace(style, bg="")
        elif 30 <= code <= 37 or 90 <= code <= 97:
            style = replace(style, fg=_PALETTE[code - 30 if code < 90 else code - 82])
        elif 40 <= code <= 47 or 100 <= code <= 107:
            style = replace(style, bg=_PALETTE[code - 40 if code < 100 else code - 92])
    return style


def _extended(codes: list[int], index: int) -> tuple[str, int]:
    """A 256-colour (``5;n``) or true-colour (``2;r;g;b``) pick: its CSS and the next index."""
    kind = codes[index] if index < len(codes) else None
    if kind == 5 and index + 1 < len(codes):
        return _colour_256(codes[index + 1]), index + 2
    if kind == 2 and index + 3 < len(codes):
        red, green, blue = (min(value, 255) for value in codes[index + 1 : index + 4])
        return f"rgb({red},{green},{blue})", index + 4
    return "", len(codes)  # malformed: ignore the rest of the sequence


def _colour_256(number: int) -> str:
    if number < 16:
        return _PALETTE[number]
    if number < 232:
        number -= 16
        levels = (number // 36, number // 6 % 6, number % 6)
        red, green, blue = (0 if level == 0 else 55 + 40 * level for level in levels)
        return f"rgb({red},{green},{blue})"
    grey = 8 + 10 * (min(number, 255) - 232)
    return f"rgb({grey},{grey},{grey})"


class ColourFilter:
    """One stream's text, piece by piece, with SGR colours kept and every other escape
    sequence (cursor moves, window titles, clipboard writes, hyperlinks, DCS, APC and PM
    strings) and control character but tab, newline, carriage return and backspace removed.

    A sequence cut by the end of a piece is held until the next piece completes it (a
    clipboard write split in two must not leave its second half as text); what a stream
    ends on is only ever such an unfinished sequence, so nothing needs flushing.
    """

    HOLD_CHARS = 65536
    """The most of an unfinished sequence held: past it, only its introducer is kept."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        """The part of ``text`` (after what was held) that can be shown now, filtered."""
        text = self._held + text
        self._held = ""
        start = text.rfind("\x1b")
        if start >= 0:
            match = _ESCAPE.match(text, start)
            if match is not None and match.end() == len(text) and not _WHOLE_ESCAPE.fullmatch(match.group()):
                held = text[start:]
                # A huge unfinished string: its body is dropped as it comes, its end still ends it.
                self._held = held if len(held) <= self.HOLD_CHARS else held[:2]
                text = text[:start]
        return keep_colours(text)


def keep_colours(text: str) -> str:
    """``text`` with its SGR colours, every other escape sequence and control character but
    tab, newline, carriage return and backspace removed, and bidi controls and hidden
    characters shown as ``⟨U+202E⟩`` (:func:`reveal`), as the widget shows them."""
    if _ESCAPE_OR_CONTROL.search(text) is None:
        return text
    return _ESCAPE_OR_CONTROL.sub(_kept, text)


def _kept(match: re.Match[str]) -> str:
    found = match.group()
    if _SGR.fullmatch(found):
        return found
    return reveal(found) if _REVEALED.fullmatch(found) else ""
