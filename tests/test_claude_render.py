"""Tests for the HTML rendering of a Claude run: sanitizing, Markdown, retries, tools, footer."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc_executor_nb.claude import render as claude_render
from cc_executor_nb.claude.permissions import PermissionRequest
from cc_executor_nb.claude.render import (
    claude_body_html,
    format_cost,
    format_duration,
    format_seconds,
    render_answer_html,
    render_claude_html,
    render_error_html,
    render_footer_html,
    render_retries_html,
    render_thinking_html,
    render_tool_cards_html,
    retry_text,
    status_name,
    tool_input_summary,
)
from cc_executor_nb.claude.streamjson import ApiRetry, ClaudeRun
from cc_executor_nb.terminaltext import printable

from .test_terminaltext import FORBIDDEN

XSS = "<img src=x onerror=alert(1)>\n\n<script>alert(2)</script>\n\n[x](javascript:alert(3))"
SAFE_SCHEMES = ("http:", "https:", "mailto:")
DANGEROUS_TAGS = {"script", "style", "iframe", "img", "object", "embed", "svg", "math", "form"}


class TagCollector(HTMLParser):
    """Collects every start tag with its attributes, as a browser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Record one start tag."""
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """The start tags of an HTML fragment."""
    collector = TagCollector()
    collector.feed(html)
    collector.close()
    return collector.tags


def assert_inert(html: str) -> None:
    """No dangerous tag, no event-handler attribute, no href outside http/https/mailto."""
    for tag, attrs in tags_of(html):
        assert tag not in DANGEROUS_TAGS, tag
        assert not [name for name in attrs if name.startswith("on")], attrs
        href = (attrs.get("href") or "https:").strip().lower()
        assert href.startswith(SAFE_SCHEMES), href


@pytest.fixture(params=["nh3", "markdown-it only"])
def sanitizer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with nh3 cleaning, and again as if nh3 were not installed."""
    if request.param == "nh3" and claude_render._nh3 is None:
        pytest.skip("nh3 is not installed")
    if request.param != "nh3":
        monkeypatch.setattr(claude_render, "_nh3", None)
    yield request.param


def line(**event: Any) -> str:
    """One stream-json line."""
    return json.dumps(event)


def run_of(*lines: str) -> ClaudeRun:
    """A run fed the given lines."""
    run = ClaudeRun()
    for each in lines:
        run.feed_line(each)
    return run


def answered(text: str) -> ClaudeRun:
    """A finished run whose answer is ``text``."""
    return run_of(
        line(type="assistant", message={"id": "m1", "content": [{"type": "text", "text": text}]}),
        line(type="result", subtype="success", is_error=False, result=text),
    )


# Sanitizing


def test_xss_answer_has_no_script_tag(sanitizer: str) -> None:
    """A <script> in the answer never becomes a script element."""
    assert "<script" not in render_answer_html(XSS).lower()


def test_xss_answer_has_no_onerror_attribute(sanitizer: str) -> None:
    """An <img onerror> in the answer is text, not an element with a handler."""
    html = render_answer_html(XSS)
    assert "<img" not in html and all("onerror" not in attrs for _, attrs in tags_of(html))


def test_xss_answer_has_no_javascript_href(sanitizer: str) -> None:
    """A javascript: link in the answer never becomes an href."""
    html = render_answer_html(XSS)
    assert 'href="javascript:' not in html.lower() and not [t for t in tags_of(html) if t[0] == "a"]


@pytest.mark.parametrize(
    "markdown",
    [
        "[x](JaVaScRiPt:alert(1))",
        "<javascript:alert(1)>",
        "[x](java&#115;cript:alert(1))",
        "[x][r]\n\n[r]: javascript:alert(1)",
        "[x](data:text/html,<script>alert(1)</script>)",
        "[x](vbscript:msgbox(1))",
        '<a href="javascript:alert(1)">x</a>',
        "<iframe src=https://evil></iframe>",
        "<style>body{display:none}</style>",
        "<svg onload=alert(1)>",
    ],
)
def test_other_attacks_are_inert(sanitizer: str, markdown: str) -> None:
    """Obfuscated schemes, reference links, raw tags and autolinks all render inert."""
    assert_inert(render_answer_html(markdown))


def test_images_are_not_rendered(sanitizer: str) -> None:
    """Markdown images do not become <img> elements (nothing is fetched)."""
    assert "<img" not in render_answer_html("![pixel](https://example.com/p.png)")


def test_relative_links_are_not_rendered(sanitizer: str) -> None:
    """A relative link stays text: only http, https and mailto become links."""
    assert "<a " not in render_answer_html("[up](../secret) [frag](#x)")


def test_https_link_opens_in_new_tab(sanitizer: str) -> None:
    """An https link keeps its href and opens in a new tab with noopener."""
    (attrs,) = [
        a for tag, a in tags_of(render_answer_html("[docs](https://example.com/a)")) if tag == "a"
    ]
    assert (attrs["href"], attrs["target"], "noopener" in (attrs["rel"] or "")) == (
        "https://example.com/a",
        "_blank",
        True,
    )


def test_mailto_link_is_kept(sanitizer: str) -> None:
    """A mailto link is rendered as a link."""
    assert 'href="mailto:a@example.com"' in render_answer_html("[mail](mailto:a@example.com)")


# fmt: off
MARKUP = [
    *"<>\"'=/:;&#()[]!*`~|-\n ajvs", "javascript:", "JaVa\tScript:", "http:", "data:", "](",
    "[x]", "<script>", "<img src=x onerror=alert(1)>", "<a href=", "&#58;", "&#x6A;", "```",
    "\n\n", "<", "%3C", "\\", "mailto:",
]
# fmt: on


def render_without_nh3(markdown: str) -> str:
    """Render as if nh3 were not installed (a fixture cannot wrap hypothesis examples)."""
    saved = claude_render._nh3
    claude_render._nh3 = None
    try:
        return render_answer_html(markdown)
    finally:
        claude_render._nh3 = saved


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(MARKUP), max_size=40).map("".join))
def test_any_markdown_renders_inert(markdown: str) -> None:
    """Any mix of markup fragments renders inert, with and without nh3."""
    assert_inert(render_answer_html(markdown))
    assert_inert(render_without_nh3(markdown))


def hostile_lines(text: str, name: str, tool_text: str, *, is_error: bool = True) -> list[str]:
    """The stream-json of a run whose every untrusted field holds the given text: thinking,
    answer, tool name, input and result, model, session id, a retry, the result."""
    tool = {"type": "tool_use", "id": "t1", "name": name, "input": {"command": tool_text}}
    content = [{"type": "thinking", "thinking": text}, {"type": "text", "text": text}, tool]
    tool_result = {"type": "tool_result", "tool_use_id": "t1", "content": tool_text}
    return [
        line(type="system", subtype="init", session_id=name, model=name),
        line(type="assistant", message={"id": "m1", "content": content}),
        line(type="user", message={"content": [tool_result]}),
        line(type="system", subtype="api_retry", attempt=1, error=text),
        line(type="result", subtype="success", is_error=is_error, result=text),
    ]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.text(max_size=40), st.text(max_size=80))
def test_untrusted_run_text_is_inert(text: str, name: str, tool_text: str) -> None:
    """Model text, tool names, inputs and results render inert everywhere in the run."""
    assert_inert(render_claude_html(run_of(*hostile_lines(text, name, tool_text))))


# Terminal and bidi controls: a page or record that ``cat`` or ``nbconvert --stdout``
# prints must not drive the terminal (OSC 52 writes the clipboard, OSC 0 the title).

HOSTILE = "<script>x</script>\x1b]52;c;UFdOR\x07\x1b]0;PWNED-TITLE\x07\x1b[2J\x9b2J\x9d0;T\x9c\x00\u202e"
SHOWN = "&lt;script&gt;x&lt;/script&gt;2J0;T⟨U+202E⟩"
"""HOSTILE as the HTML shows it: escaped, escapes and controls gone, the override visible."""
_CONTROLLED = st.text(
    st.one_of(st.sampled_from("\x1b][0;\x07\x9b\x9d\x9c\x00\r\u202e\u2068"), st.characters()), max_size=60
)


def test_thinking_tools_footer_and_answer_carry_no_terminal_or_bidi_controls() -> None:
    """A run whose thinking, tool name, input and result, model and session id hold OSC 52,
    OSC 0, CSI, C1, NUL and U+202E renders none of them raw; text, tabs and newlines stay."""
    run = run_of(*hostile_lines(f"THINK\tcol\nline{HOSTILE}", f"Evil{HOSTILE}", f"ls{HOSTILE}", is_error=False))
    html = render_claude_html(run)
    assert not FORBIDDEN.search(html), FORBIDDEN.findall(html)
    assert f">THINK\tcol\nline{SHOWN}</div></details>" in html  # the thinking
    assert f'<strong class="cc-tool-name">Evil{SHOWN}</strong>' in html
    assert f'<code class="cc-tool-input">ls{SHOWN}</code>' in html
    assert f"Evil{SHOWN} · session Evil{SHOWN}</div>" in html  # the footer's model and session id


def test_errors_and_the_clis_stderr_carry_no_terminal_or_bidi_controls() -> None:
    """A failed run's error message and the note of a run without a result (its raw lines and
    stderr) render no control raw."""
    failed = render_claude_html(run_of(*hostile_lines(f"boom{HOSTILE}", "Bash", "ls")))
    assert not FORBIDDEN.search(failed) and f"boom{SHOWN}</div></div>" in failed
    cut_off = run_of(line(type="system", subtype="init", session_id="s", model="m"), f"not json{HOSTILE}")
    note = claude_body_html(cut_off, status="failed", exit_code=1, stderr=f"error{HOSTILE}")
    assert not FORBIDDEN.search(note) and f"error{SHOWN}</pre>" in note


def test_the_answer_shows_bidi_controls_and_keeps_right_to_left_text() -> None:
    """In the answer an override is shown, not obeyed; Hebrew, Arabic and the RLM mark stay as written."""
    html = render_answer_html("שלום \u200fمرحبا\n\n`rm -rf ~ \u202e#` \u2066x\u2069")
    assert not FORBIDDEN.search(html)
    assert "שלום \u200fمرحبا" in html and "<code>rm -rf ~ ⟨U+202E⟩#</code> ⟨U+2066⟩x⟨U+2069⟩" in html


@settings(max_examples=200, deadline=None)
@given(_CONTROLLED, _CONTROLLED, _CONTROLLED)
def test_no_control_reaches_the_html_of_any_run(text: str, name: str, tool_text: str) -> None:
    """Whatever the model, the tools and the CLI send, the run's HTML (the widget's and the
    record's) holds no control but tab and newline, and no bidi control."""
    run = run_of(*hostile_lines(text, name, tool_text))
    html = claude_body_html(run, status="failed", exit_code=1, stderr=text)
    assert not FORBIDDEN.search(html), FORBIDDEN.findall(html)


# Markdown


def test_bold_renders_strong(sanitizer: str) -> None:
    """**bold** becomes <strong>."""
    assert "<strong>bold</strong>" in render_answer_html("**bold**")


def test_code_fence_renders_pre_code(sanitizer: str) -> None:
    """A fenced code block becomes <pre><code> with its content escaped."""
    html = render_answer_html("```python\nif a < b:\n    pass\n```")
    assert "<pre><code" in html and "if a &lt; b:" in html


def test_table_and_strikethrough_render(sanitizer: str) -> None:
    """GFM tables and ~~strikethrough~~ are enabled."""
    html = render_answer_html("| a | b |\n|---|---|\n| 1 | 2 |\n\n~~gone~~")
    assert "<table>" in html and "<s>gone</s>" in html


def markdown_table(columns: int, rows: int, cell: str = "x") -> str:
    """A GFM table of ``columns`` columns and ``rows`` body rows."""
    def row(text: str) -> str:
        return "|" + "|".join(text for _ in range(columns)) + "|\n"

    return row("h") + row("-") + row(cell) * rows


def test_a_table_wider_than_the_bound_is_text_made_of_a_handful_of_tokens(sanitizer: str) -> None:
    """A 5000-column table became three tokens and an inline parse per cell (250,000 cells for
    50 rows: 3.4 s a render, again on every frame while it streamed); wider than
    MAX_TABLE_COLUMNS it is one code block of its lines, escaped, every character kept."""
    text = "Here:\n\n" + markdown_table(5000, 50, "<b>x</b>") + "\nafter"
    assert len(claude_render._markdown().parse(printable(text))) <= 10
    html = render_answer_html(text)
    assert "<td" not in html and "<th" not in html and "<b>" not in html
    assert html.count("&lt;b&gt;x&lt;/b&gt;") == 5000 * 50 and "<p>after</p>" in html


def test_a_table_of_more_cells_than_the_bound_is_text(sanitizer: str) -> None:
    """Many rows count too: past MAX_TABLE_CELLS cells a narrow table is text as well."""
    columns = 10
    html = render_answer_html(markdown_table(columns, claude_render.MAX_TABLE_CELLS // columns))
    assert "<pre><code>|h|" in html and "<td" not in html


def test_a_table_at_the_bounds_is_still_a_table(sanitizer: str) -> None:
    """A table of MAX_TABLE_COLUMNS columns and MAX_TABLE_CELLS cells (its header's among them)
    renders as a table."""
    columns = claude_render.MAX_TABLE_COLUMNS
    html = render_answer_html(markdown_table(columns, claude_render.MAX_TABLE_CELLS // columns - 1))
    assert html.count("<th>") == columns and html.count("<td>") == claude_render.MAX_TABLE_CELLS - columns


def test_a_big_table_inside_a_list_or_a_quote_stays_there_as_text() -> None:
    """The code block replaces the table where it stands: in a list item, in a quote."""
    table = markdown_table(claude_render.MAX_TABLE_COLUMNS + 1, 2)
    quoted = render_answer_html("".join(f"> {line}\n" for line in table.splitlines()) + "\nafter")
    assert quoted.startswith('<div class="cc-answer"><blockquote>\n<pre><code>|h|') and "<p>after</p>" in quoted
    listed = render_answer_html("- item\n\n" + "".join(f"  {line}\n" for line in table.splitlines()) + "- next")
    assert "<li>\n<p>item</p>\n<pre><code>|h|" in listed and "<p>next</p>\n</li>" in listed


def test_blank_answer_renders_nothing() -> None:
    """Whitespace-only Markdown renders as an empty string."""
    assert render_answer_html("  \n") == ""


# Thinking and tools


def test_thinking_is_collapsed_and_escaped() -> None:
    """Thinking sits in a closed <details> with its text escaped."""
    run = run_of(
        line(
            type="assistant",
            message={"id": "m1", "content": [{"type": "thinking", "thinking": "<b>hm</b>"}]},
        )
    )
    html = render_thinking_html(run)
    assert html.startswith('<details class="cc-thinking">') and "&lt;b&gt;hm&lt;/b&gt;" in html


def test_a_result_not_in_the_text_is_said_once_after_the_last_tool_card() -> None:
    """Text, a tool call, then a result whose text the stream did not carry: the text above the
    card, the result's text below it, each once."""
    call = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
    run = run_of(
        line(type="assistant", message={"id": "m1", "content": [{"type": "text", "text": "Looking."}, call]}),
        line(type="result", subtype="success", is_error=False, result="Found two files."),
    )
    html = render_claude_html(run)
    assert html.index("Looking.") < html.index('class="cc-tool ') < html.index("Found two files.")
    assert html.count("Looking.") == html.count("Found two files.") == 1


def test_no_thinking_renders_nothing() -> None:
    """A run without thinking renders no thinking block."""
    assert render_thinking_html(ClaudeRun()) == ""


def tool_run(command: str, output: str | None, is_error: bool = False) -> ClaudeRun:
    """A run with one Bash call, finished when ``output`` is given."""
    tool = {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": command}}
    lines = [line(type="assistant", message={"id": "m1", "content": [tool]})]
    if output is not None:
        result = {
            "type": "tool_result",
            "tool_use_id": "t1",
            "content": output,
            "is_error": is_error,
        }
        lines.append(line(type="user", message={"content": [result]}))
    return run_of(*lines)


def test_tool_card_shows_name_input_and_folded_result() -> None:
    """A finished call shows its name, input and a collapsed, escaped result."""
    html = render_tool_cards_html(tool_run("ls -la", "a.txt\n<b>.txt"))
    expected = [
        '<strong class="cc-tool-name">Bash</strong>',
        "ls -la",
        "<details>",
        "&lt;b&gt;.txt",
    ]
    assert all(part in html for part in expected)


def test_tool_card_counts_the_lines_the_tool_printed() -> None:
    """The folded result says how many lines the tool printed, and "no output" for the CLI's
    stand-in for none (it said 1 line)."""
    assert "result · 2 lines</summary>" in render_tool_cards_html(tool_run("ls", "a.txt\nb.txt\n"))
    silent = tool_run("touch a", "(Bash completed with no output)")
    assert "result · no output</summary>" in render_tool_cards_html(silent)


def test_a_card_without_its_body_keeps_its_decision_and_outcome() -> None:
    """A bounded record with no tool budget left: a failed call denied by you keeps its name, input,
    decision and outcome ("✗ Bash rm -rf x denied by you error · 1 line") without its result, and a
    note counts it (the card showed its result, whatever the budget)."""
    denied = PermissionRequest("q1", "Bash", {"command": "rm -rf x"}, tool_use_id="t1", status="denied",
                               decided_by="widget")
    html = claude_body_html(tool_run("rm -rf x", "no such file", is_error=True), decisions={"t1": denied},
                            tool_chars=0)
    card = html[html.index('<div class="cc-tool cc-tool-error"') : html.index("cc-tools-cut")]
    for part in ("✗", ">Bash</strong>", ">rm -rf x</code>", "denied by you", "error · 1 line"):
        assert part in card
    assert "no such file" not in html and "<details" not in card
    assert "the results and changes of 1 tool call not shown: <code>run.tool_calls</code> has all of them" in html


def test_tool_card_marks_pending_and_error() -> None:
    """A pending call is marked running and a failed one error."""
    pending = render_tool_cards_html(tool_run("sleep 9", None))
    failed = render_tool_cards_html(tool_run("false", "exit 1", is_error=True))
    assert "cc-tool-running" in pending and "cc-tool-error" in failed


def test_tool_and_limit_icons_are_glyphs_of_ordinary_fonts() -> None:
    """A pending tool and a limit's countdown are marked "○", as ✓ and ✗ mark the others: the
    "⏳" they had is an emoji, an empty box in a browser without an emoji font. Where fontconfig
    is installed, each icon is in one of its fonts."""
    run = ClaudeRun()
    limit_info = {"status": "rejected", "resetsAt": 1010.0, "rateLimitType": "five_hour", "isUsingOverage": False}
    run.feed(line(type="rate_limit_event", rate_limit_info=limit_info, session_id="s1", uuid="u") + "\n")
    tools = {"pending": tool_run("sleep 9", None), "ok": tool_run("true", ""),
             "error": tool_run("false", "1", is_error=True)}
    cards = {name: render_tool_cards_html(tool) for name, tool in tools.items()}
    icons = {name: re.search(r'class="cc-tool-status">(.*?)</span>', html).group(1)  # type: ignore[union-attr]
             for name, html in cards.items()}
    limit = claude_render.render_limit_html(run, 1000.0)
    assert icons == {"pending": "○", "ok": "✓", "error": "✗"}
    assert re.search(r'class="cc-limit"[^>]*>○ 5-hour usage limit', limit), limit
    if shutil.which("fc-list"):
        for icon in icons.values():
            fonts = subprocess.run(["fc-list", f":charset={ord(icon):x}", "family"], capture_output=True, text=True,
                                   timeout=30, check=True).stdout
            assert fonts.strip(), f"no installed font has {icon!r}"


def _installed_font_has(glyph: str) -> bool:
    fonts = subprocess.run(["fc-list", f":charset={ord(glyph):x}", "family"], capture_output=True, text=True,
                           timeout=30, check=True).stdout
    return bool(fonts.strip())


def test_an_interrupted_turn_is_marked_with_a_glyph_of_ordinary_fonts() -> None:
    """An interrupted turn reads "■ Interrupted", in one turn and in a conversation: the "⏹" it
    had is an emoji, an empty box in a browser without an emoji font (a cancelled story's record
    in JupyterLab on a headless Debian). Where fontconfig is installed, a font has the mark."""
    from .test_streamjson import conversation, result, streamed_text

    interrupted = [*streamed_text("m2", "Once upon"), result(subtype="error_during_execution", is_error=True)]
    single = conversation(("story", []))
    several = conversation(("hi", [*streamed_text("m1", "hello"), result(result="hello")]), ("story", []))
    for run in (single, several):
        run.note_interrupt()
        for each in interrupted:
            run.feed_line(each)
        mark = re.search(r'class="cc-interrupted"[^>]*>(.) Interrupted<', render_claude_html(run, True))
        assert mark and mark.group(1) == "■", render_claude_html(run, True)
        if shutil.which("fc-list"):
            assert _installed_font_has(mark.group(1)), f"no installed font has {mark.group(1)!r}"


def test_tool_input_is_truncated() -> None:
    """A long input is cut to 120 characters ending with an ellipsis."""
    summary = tool_input_summary({"command": "x" * 500})
    assert (len(summary), summary[-1]) == (120, "…")


def test_tool_input_summary_prefers_telling_field() -> None:
    """The file path is shown alone; other inputs fall back to compact JSON."""
    shown = (tool_input_summary({"file_path": "/a/b.py", "limit": 3}), tool_input_summary({"n": 1}))
    assert shown == ("/a/b.py", '{"n":1}')


def test_no_tools_renders_nothing() -> None:
    """A run without tool calls renders no tool cards."""
    assert render_tool_cards_html(ClaudeRun()) == ""


# Retries and errors


def test_retry_text_exact() -> None:
    """A 529 retry reads exactly as specified."""
    assert (
        retry_text(ApiRetry(3, 10, 4.0, 529, "overloaded"))
        == "API overloaded (529), retry 3 of 10 in 4 s"
    )


def test_retry_text_rate_limit_with_fraction() -> None:
    """A 429 retry names the rate limit and keeps one decimal of the delay."""
    assert (
        retry_text(ApiRetry(1, 10, 1.5, 429, "rate_limit"))
        == "API rate limited (429), retry 1 of 10 in 1.5 s"
    )


def test_retry_text_without_status_uses_category() -> None:
    """Without a status the CLI's error category names the problem."""
    assert retry_text(ApiRetry(2, None, None, None, "rate_limit")) == "API rate limited, retry 2"


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (401, "unauthorized"),
        (429, "rate limited"),
        (500, "server error"),
        (529, "overloaded"),
        (418, "request error"),
        (599, "server error"),
        (None, "error"),
    ],
)
def test_status_names(status: int | None, name: str) -> None:
    """HTTP statuses map to short names, with 4xx/5xx fallbacks."""
    assert status_name(status) == name


def retry_line(attempt: int) -> str:
    """An api_retry line for a 529 with the given attempt."""
    return line(
        type="system",
        subtype="api_retry",
        attempt=attempt,
        max_retries=10,
        retry_delay_ms=4000,
        error_status=529,
    )


def test_retries_html_shows_latest_while_live() -> None:
    """While the run is live, only the latest retry is shown."""
    html = render_retries_html(run_of(retry_line(1), retry_line(3)))
    assert "retry 3 of 10 in 4 s" in html and "retry 1 of" not in html


def test_retries_html_are_a_collapsed_list_when_done() -> None:
    """A finished run shows no live retry line but every retry in a collapsed list, as the Markdown
    and text records keep them (the HTML record dropped them)."""
    run = run_of(retry_line(1), retry_line(3), line(type="result", subtype="success", is_error=False, result="ok"))
    html = render_retries_html(run)
    assert "⟳" not in html and "<details" in html and "2 API retries</summary>" in html
    assert html.index("retry 1 of 10 in 4 s") < html.index("retry 3 of 10 in 4 s")


def test_retries_html_is_empty_without_retries() -> None:
    """A run without retries has no retry part, live or done."""
    run = run_of(line(type="result", subtype="success", is_error=False, result="ok"))
    assert render_retries_html(run) == ""


def error_run() -> ClaudeRun:
    """A run that ended with an overloaded API error."""
    message = (
        'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    )
    return run_of(
        line(
            type="assistant",
            message={
                "id": "m1",
                "model": "<synthetic>",
                "content": [{"type": "text", "text": message}],
            },
        ),
        line(type="result", subtype="success", is_error=True, result=message, api_error_status=529),
    )


def test_error_html_names_status_and_message() -> None:
    """An API error shows its status name, code and plain message."""
    html = render_error_html(error_run())
    assert "API overloaded (529)" in html and "API Error: 529 Overloaded" in html


def test_error_html_empty_for_success() -> None:
    """A successful run renders no error block."""
    assert render_error_html(answered("fine")) == ""


def test_error_run_shows_error_not_raw_blob() -> None:
    """The whole render of an API error shows the plain error, not the JSON blob."""
    html = render_claude_html(error_run())
    assert "cc-error" in html and "overloaded_error" not in html and "cc-answer" not in html


# Footer


def test_footer_fields() -> None:
    """The footer shows cost, tokens, turns, duration, model and session id."""
    usage = {"input_tokens": 1200, "output_tokens": 34, "cache_read_input_tokens": 5000}
    run = run_of(
        line(type="system", subtype="init", session_id="abc-123", model="claude-sonnet-4-5"),
        line(type="result", subtype="success", is_error=False, result="ok", total_cost_usd=0.0123,
             usage=usage, num_turns=2, duration_ms=4567),
    )  # fmt: skip
    html = render_footer_html(run)
    parts = ["$0.0123", "1,200 in / 34 out tokens", "cache 5,000 read", "2 agent turns", "4.6 s",
             "claude-sonnet-4-5", "session abc-123"]  # fmt: skip
    assert [part for part in parts if part not in html] == []


def test_footer_while_running() -> None:
    """Before the result, the footer says the run is in progress."""
    html = render_footer_html(
        run_of(line(type="system", subtype="init", session_id="s", model="m"))
    )
    assert "running…" in html and "$" not in html


def test_footer_escapes_model_name() -> None:
    """A hostile model name is escaped in the footer."""
    html = render_footer_html(
        run_of(line(type="system", subtype="init", model="<script>x</script>"))
    )
    assert "<script" not in html


@pytest.mark.parametrize(
    ("value", "text"),
    [(850, "850 ms"), (12_345, "12.3 s"), (125_000, "2 min 05 s"), (3_725_000, "1 h 02 min"),
     (999.6, "1.0 s"), (59_960, "1 min 00 s"), (0.3, "< 1 ms"), (0.5, "< 1 ms"), (0.6, "1 ms"), (0, "0 ms")],
)
def test_format_duration(value: float, text: str) -> None:
    """Durations read naturally from milliseconds to hours."""
    assert format_duration(value) == text


def test_format_cost_and_seconds() -> None:
    """Cost has four decimals; whole-second delays have no decimal."""
    assert (format_cost(0.0123), format_seconds(4.0), format_seconds(12.4)) == (
        "$0.0123",
        "4 s",
        "12 s",
    )


# Everything


def test_claude_html_stitches_parts() -> None:
    """A finished run renders its answer and footer inside one container."""
    html = render_claude_html(answered("**done**"))
    assert (
        html.startswith('<div class="cc-run">')
        and "<strong>done</strong>" in html
        and "cc-footer" in html
    )


RECORDINGS = sorted((Path(__file__).parent / "data" / "streamjson").glob("*.jsonl"))


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_recordings_render_inert(path: Path) -> None:
    """Every real recording renders, and renders inert."""
    run = ClaudeRun()
    run.feed(path.read_text(encoding="utf-8"))
    run.feed_eof()
    assert_inert(render_claude_html(run))


def test_recorded_markdown_xss_renders_markdown_not_markup() -> None:
    """The recorded hostile answer keeps its Markdown and loses its markup."""
    path = Path(__file__).parent / "data" / "streamjson" / "markdown_xss.jsonl"
    if not path.is_file():
        pytest.skip("no recording markdown_xss.jsonl")
    run = ClaudeRun()
    run.feed(path.read_text(encoding="utf-8"))
    html = render_claude_html(run)
    assert "<strong>bold</strong>" in html and "<script" not in html and "<img" not in html


def test_hidden_thinking_shows_token_estimate() -> None:
    """While thinking text is not streamed, the token estimate is shown."""
    run = run_of(line(type="system", subtype="thinking_tokens", estimated_tokens=1234))
    assert "Thinking… (~1,234 tokens)" in render_thinking_html(run)
