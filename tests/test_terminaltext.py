"""Child output shown as a terminal would (terminaltext.py): progress bars drawn
with carriage returns, ANSI colours, other escapes; then through a real run's record."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cc_executor_nb
from cc_executor_nb.terminaltext import (
    MAX_COLUMN,
    ColourFilter,
    ansi_html,
    keep_colours,
    overwrite_lines,
    printable,
    strip_escapes,
    terminal_text,
)

pytestmark = pytest.mark.timeout(60)

RED, RESET = "\x1b[31m", "\x1b[0m"
# What a terminal would obey: OSC 52 (clipboard), OSC 0 (title), CSI (clear), C1 CSI/OSC/ST, NUL.
HOSTILE = "\x1b]52;c;UFdOR\x07\x1b]0;PWNED\x07\x1b[2J\x9b2J\x9d0;T\x9c\x00"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# Controls a page or a record may never carry raw: C0 but tab and newline, DEL, C1, bidi controls.
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_OUR_SPAN = re.compile(r'<span style="[a-z:;#(),.0-9-]*">|</span>')


def test_a_progress_bar_redrawn_with_carriage_returns_shows_its_last_state() -> None:
    assert overwrite_lines("epoch 1\n 10%\r 50%\r100%\ndone\n") == "epoch 1\n100%\ndone\n"


def test_a_shorter_redraw_overwrites_only_its_own_columns() -> None:
    assert overwrite_lines("abcdef\rXY") == "XYcdef"


def test_crlf_is_a_newline_not_an_overwrite() -> None:
    assert overwrite_lines("one\r\ntwo\r\n") == "one\ntwo\n"


def test_escapes_take_no_column_when_a_coloured_bar_is_redrawn() -> None:
    drawn = overwrite_lines(f"{RED} 10%{RESET}\r{RED} 20%{RESET}")
    assert drawn == f"{RED} 20%{RESET}"


@pytest.mark.parametrize(("written", "shown"), [
    ("Downloading 100%\r\x1b[2KDone\n", "Done\n"),  # erase the line, then write (it read "Doneloading 100%")
    ("long line here\r\x1b[Kshort", "short"),  # erase to the end
    ("long line here\r\x1b[0Kshort", "short"),
    ("abcdef\x1b[4G\x1b[1KX", "   Xef"),  # erase from the start to the cursor, then write
    ("abc\bX", "abX"),  # backspace
    ("abcdef\x1b[3Dxy", "abcxyf"),  # cursor back
    ("ab\x1b[2Cc", "ab  c"),  # cursor forward
    ("abcdef\x1b[2GX", "aXcdef"),  # to a column
])
def test_erases_backspaces_and_moves_in_a_line_draw_as_a_terminal_leaves_them(written: str, shown: str) -> None:
    assert overwrite_lines(written) == shown


@pytest.mark.parametrize("move", ["\x1b[100000000G", "\x1b[100000000C", "\x1b[" + "9" * 5000 + "G"])
def test_a_move_far_past_the_end_of_a_line_stops_at_a_terminals_width(move: str) -> None:
    """A child's cursor move to column 10**8 (or a 5000-digit one) stops at MAX_COLUMN: no huge line, no error."""
    drawn = overwrite_lines(f"a{move}b")
    assert drawn.startswith("a") and drawn.endswith("b") and len(drawn) <= MAX_COLUMN + 1


def test_a_move_within_a_line_longer_than_a_terminals_width_still_lands() -> None:
    """The cap is past the text: a move to a column of a long line reaches it."""
    line = "x" * (MAX_COLUMN + 50)
    assert overwrite_lines(f"{line}\x1b[{MAX_COLUMN + 10}GY") == line[: MAX_COLUMN + 9] + "Y" + line[MAX_COLUMN + 10 :]


def test_a_colour_parameter_thousands_of_digits_long_is_ignored_not_raised() -> None:
    """int() refuses more than 4300 digits: a child's SGR with 5000 of them still renders its text."""
    drawn = ansi_html("\x1b[38;2;" + "9" * 5000 + ";1;1mhi\x1b[" + "3" * 5000 + "mthere")
    assert re.sub("<[^>]*>", "", drawn) == "hithere"


def test_moves_to_other_lines_leave_each_line_as_drawn() -> None:
    """Cursor up is not followed (each line on its own); its escape is left for the escape filter."""
    assert strip_escapes(overwrite_lines("bar 10%\n\x1b[1A\rbar 99%\n")) == "bar 10%\nbar 99%\n"


def test_strip_escapes_removes_csi_osc_two_byte_and_cut_off_sequences() -> None:
    text = "\x1b]0;title\x07a\x1b[1;31mb\x1b[0m\x1b[2Kc\x1b7d\x1b8\x1b(Be\x1b]8;;http://x\x1b\\f\x1b[3"
    assert strip_escapes(text) == "abcdef"


def test_dcs_apc_pm_and_sos_strings_are_removed_whole() -> None:
    """A DCS, APC, PM or SOS string goes with its body (only its introducer went: the body,
    a sixel image or a terminal query, was left as text)."""
    assert strip_escapes("a\x1bPq#0;2;0\x1b\\b\x1b_apc\x1b\\c\x1b^pm\x07d\x1bXsos\x1b\\e\x1bPcut") == "abcde"


def test_keep_colours_shows_bidi_controls_as_the_widget_does() -> None:
    """A right-to-left override in a kernel's text-mode output is shown as a marker, as the
    widget and the records show it (it reordered the saved line: "Trojan source")."""
    assert keep_colours(f"{RED}a\u202eb\u2066c{RESET}") == f"{RED}a⟨U+202E⟩b⟨U+2066⟩c{RESET}"


def test_keep_colours_keeps_sgr_and_drops_every_other_escape_and_control() -> None:
    """What a notebook's stream output may keep: colours, tabs, newlines, carriage returns and
    backspaces (JupyterLab draws those); titles, clipboard writes, hyperlinks, cursor moves,
    BEL, NUL and C1 controls go."""
    text = f"{HOSTILE}a{RED}red{RESET}\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \x1bPq\x1b\\\x1b[Hb\t10%\r\b\x07\n"
    # (A C1 CSI or OSC goes, its parameters stay as inert text, as printable() leaves them.)
    assert keep_colours(text) == f"2J0;Ta{RED}red{RESET}link b\t10%\r\b\n"


def test_a_colour_filter_holds_a_sequence_cut_between_pieces() -> None:
    """A clipboard write or a colour split across two pieces is removed or kept whole: its
    second half never shows as text."""
    pieces = ["ok \x1b]52;c;UFdO", "Rk\x07done ", "\x1b", "[31mred\x1b[", "0m \x1b]", "0;t\x07 \x1bP", "q\x1b\\.\n"]
    colour = ColourFilter()
    assert [colour.feed(piece) for piece in pieces] == ["ok ", "done ", "", f"{RED}red", f"{RESET} ", " ", ".\n"]


def test_a_colour_filter_drops_the_body_of_a_huge_unfinished_string() -> None:
    """An endless OSC is not held without bound: its body goes as it comes, and its end ends it."""
    colour = ColourFilter()
    assert colour.feed("a\x1b]52;c;" + "Q" * (ColourFilter.HOLD_CHARS + 10)) == "a"
    assert colour.feed("Q" * 100 + "\x07b") == "b"


def test_terminal_text_is_what_a_terminal_leaves_as_plain_text() -> None:
    assert terminal_text(f"{RED}50%{RESET}\r{RED}100%{RESET}\n") == "100%\n"


def test_sgr_colours_become_spans_from_the_palette() -> None:
    assert ansi_html(f"a{RED}red{RESET}b") == 'a<span style="color:#e75c58">red</span>b'


def test_bold_underline_and_background_combine_until_reset() -> None:
    shown = ansi_html("\x1b[1;4;42mx\x1b[22my\x1b[0mz")
    assert shown == (
        '<span style="background-color:#00a250;font-weight:bold;text-decoration:underline">x</span>'
        '<span style="background-color:#00a250;text-decoration:underline">y</span>z'
    )


def test_256_and_true_colours() -> None:
    assert ansi_html("\x1b[38;5;196mr\x1b[48;2;1;2;3mb") == (
        '<span style="color:rgb(255,0,0)">r</span><span style="color:rgb(255,0,0);background-color:rgb(1,2,3)">b</span>'
    )


def test_text_inside_a_colour_is_escaped() -> None:
    assert ansi_html(f'{RED}<img src=x onerror="alert(1)">') == (
        '<span style="color:#e75c58">&lt;img src=x onerror=&quot;alert(1)&quot;&gt;</span>'
    )


def test_a_sequence_that_is_no_sgr_cannot_reach_the_style() -> None:
    text = '\x1b[38;2;1;2;3";onmouseover="alert(1)mX'
    shown = ansi_html(text)
    assert "<" not in shown and shown == html.escape(strip_escapes(text))


_PIECES = [
    "\x1b", "[", "]", "3", "8", ";", "m", "5", "2", "\r", "\n", "<", '"', "&", "a", "\x07",
    "\t", "\x00", "\x9b", "\x9d", "\x9c", "\u202e", "\u2066",
]  # fmt: skip


@given(st.text(alphabet=st.sampled_from(_PIECES)))
def test_html_for_any_mix_is_our_spans_around_the_escaped_plain_text(text: str) -> None:
    """Whatever the output holds, its HTML is our spans around its printable text: no
    escape, no other control (C1 and NUL included), bidi controls shown, nothing but spans."""
    shown = ansi_html(text)
    assert not FORBIDDEN.search(shown) and "\x1b" not in shown
    assert html.unescape(_OUR_SPAN.sub("", shown)) == printable(text)
    assert "<" not in _OUR_SPAN.sub("", shown)


def test_printable_drops_escapes_and_controls_and_shows_bidi_controls() -> None:
    """printable: OSC 52/0, CSI, C1 and NUL gone, tab and newline kept, ``\\u202e`` shown as ⟨U+202E⟩."""
    assert printable(f"a{HOSTILE}b\tc\r\nd\u202ee") == "a2J0;Tb\tc\nd⟨U+202E⟩e"
    assert printable(BIDI) == "".join(f"⟨U+{ord(char):04X}⟩" for char in BIDI)


FLAG = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"  # England's flag
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl


def test_printable_shows_zero_width_and_tag_characters_as_markers() -> None:
    """A zero-width space, a word joiner, a BOM inside text and tag characters (hidden ASCII)
    are shown as markers, as bidi controls are (they passed unmarked: "r\u200bm" read as "rm")."""
    assert printable("r\u200bm -rf") == "r⟨U+200B⟩m -rf"
    assert printable("a\u2060b\ufeffc\u2062d") == "a⟨U+2060⟩b⟨U+FEFF⟩c⟨U+2062⟩d"
    assert printable("see\U000e0041\U000e0042") == "see⟨U+E0041⟩⟨U+E0042⟩"
    assert keep_colours(f"{RED}r\u200bm{RESET}") == f"{RED}r⟨U+200B⟩m{RESET}"


def test_printable_keeps_emoji_sequences_and_the_joiners_scripts_need() -> None:
    """ZWJ (emoji sequences), ZWNJ (Persian, Indic scripts) and a flag emoji's tags stay as they are."""
    for text in (FAMILY, "می\u200cخواهم", f"go {FLAG}!", "\u0915\u094d\u200d\u0937"):
        assert printable(text) == text and keep_colours(text) == text
    assert printable(f"{FLAG}\U000e0041") == f"{FLAG}⟨U+E0041⟩"  # a tag outside the flag is shown


def test_printable_keeps_right_to_left_text_and_its_marks() -> None:
    """Ordinary RTL text (Hebrew, Arabic) and the LRM/RLM/ALM marks are no controls: they stay as they are."""
    text = "שלום עולם \u200f(1)\u200e مرحبا\u061c بالعالم"
    assert printable(text) == text


def test_command_output_html_drops_c1_and_nul_but_keeps_colours_redraws_tabs_and_newlines() -> None:
    """The output's HTML (widget, record): no C1 control or NUL, while SGR colours, a
    carriage-return redraw, tabs and newlines are drawn as before."""
    text = f"col1\tcol2\x00\n{RED} 10%{RESET}\r{RED} 99%{RESET}\x9b2J\x9d0;T\x9c\n"
    shown = ansi_html(overwrite_lines(text))
    assert not FORBIDDEN.search(shown)
    assert shown == 'col1\tcol2\n<span style="color:#e75c58"> 99%</span>2J0;T\n'


# A real run: what the record and the widget show


def test_a_real_runs_record_shows_the_bar_at_its_end_and_colours_without_litter(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "for pct in range(0, 101, 10):\n"
        "    sys.stderr.write(f'\\rtraining {pct:3d}%'); sys.stderr.flush()\n"
        "sys.stderr.write('\\n')\n"
        "print('\\x1b[' + '32mPASSED\\x1b[0m 3 tests')\n"  # split: the record also shows this source
    )
    run = cc_executor_nb.run([sys.executable, "-c", script], command=True, display=False, wait=True)
    assert run.status == "completed"
    assert "\r" in run.stderr and "\x1b[32m" in run.stdout  # the data itself is kept as it came
    markdown = run.save(tmp_path / "run.md").read_text(encoding="utf-8")
    page = run.save(tmp_path / "run.html").read_text(encoding="utf-8")
    assert "training 100%" in markdown and "training  90%" not in markdown
    assert "PASSED 3 tests" in markdown and "[32m" not in markdown
    assert '<span style="color:#00a250">PASSED</span> 3 tests' in page
    assert "\x1b" not in page and "[32m" not in page and "training  90%" not in page


def test_a_batch_rows_last_line_is_the_bars_latest_state_without_escapes() -> None:
    script = "import sys; sys.stdout.write('\\x1b[33m 40%\\x1b[0m\\r\\x1b[33m100%\\x1b[0m done\\n')"
    batch = cc_executor_nb.map([[sys.executable, "-c", script]], command=True, display=False, wait=True)
    (row,) = batch.rows()
    assert (row.status, row.last_line) == ("completed", "100% done")


@pytest.mark.claude
def test_claudes_tool_result_in_colour_is_drawn_not_littered(tmp_path: Path) -> None:
    """The claude CLI passes a Bash tool's escapes through in its result."""
    prompt = "bash: printf '\\033[31mred\\033[0m\\r\\033[32mgreen\\033[0m'"
    run = cc_executor_nb.run(prompt, demo=True, approve="all", display=False, wait=True)
    assert run.status == "completed"
    (tool,) = run.tool_calls
    assert tool.result == "\x1b[31mred\x1b[0m\r\x1b[32mgreen\x1b[0m"  # as the CLI reported it
    page = run.save(tmp_path / "run.html").read_text(encoding="utf-8")
    (shown,) = re.findall(r"<details>.*?</details>", page, re.DOTALL)  # the tool's result
    assert shown.endswith('><span style="color:#00a250">green</span></pre></details>')  # the redraw, coloured
    assert "red" not in shown and "[3" not in shown
    answer = page[page.index('class="cc-answer"') :]  # the demo quotes the output in its answer
    assert "Output: red<br>" in answer and "[3" not in answer.split("Output:")[1] and "\x1b" not in page
    markdown = run.transcript()
    assert "Output: red" in markdown and "[3" not in markdown.split("Output:")[1]
