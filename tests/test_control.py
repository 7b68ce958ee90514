"""The claude control protocol and the readable form of its questions, with strings alone."""

from __future__ import annotations

import json

import pytest

from cc_executor_nb.claude import control
from cc_executor_nb.claude.control import (
    ControlAnswer,
    PermissionAsked,
    RequestWithdrawn,
    UnsupportedRequest,
    parse_control,
)
from cc_executor_nb.claude.permissions import (
    Answer,
    PermissionRequest,
    parse_answer,
    question_text,
    readable_input,
)
from cc_executor_nb.claude.render import permission_card_html

pytestmark = pytest.mark.timeout(10)

# As the pinned CLI (2.1.332) writes them (tests/../research transcripts).
BASH_QUESTION = {
    "type": "control_request",
    "request_id": "ed2e4aa1",
    "request": {
        "subtype": "can_use_tool",
        "tool_name": "Bash",
        "display_name": "Bash",
        "input": {"command": "touch /tmp/x/made-by-bash", "description": "research command"},
        "description": "research command",
        "permission_suggestions": [
            {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "touch /tmp/x/made-by-bash"}],
             "behavior": "allow", "destination": "localSettings"},
            {"type": "addDirectories", "directories": ["/tmp/x"], "destination": "session"},
            {"type": "setMode", "mode": "acceptEdits", "destination": "session"},
        ],
        "blocked_path": "/tmp/x/made-by-bash",
        "tool_use_id": "toolu_r0_bash",
    },
}
EDIT_SUGGESTIONS = [{"type": "setMode", "mode": "acceptEdits", "destination": "session"}]


def written(message: dict[str, object]) -> dict[str, object]:
    """What the CLI reads back from one line we write."""
    text = control.line(message)
    assert text.endswith("\n") and text.count("\n") == 1
    decoded = json.loads(text)
    assert isinstance(decoded, dict)
    return decoded


# Writing


def test_every_line_is_one_ascii_json_object() -> None:
    """Newlines, quotes, emoji and a lone surrogate in a prompt stay inside one ASCII JSON line."""
    prompt = 'two\nlines "quoted" \U0001F600 \ud800 \u2028 end'
    text = control.line(control.user_message(prompt))
    assert text.isascii() and text.count("\n") == 1
    assert json.loads(text)["message"]["content"] == prompt


def test_user_message_has_the_role_the_cli_requires() -> None:
    """A user turn carries role "user" (the CLI exits without it) and no session of ours."""
    message = written(control.user_message("hi"))
    assert message == {
        "type": "user",
        "message": {"role": "user", "content": "hi"},
        "parent_tool_use_id": None,
        "session_id": "",
    }


def test_initialize_and_interrupt_are_control_requests() -> None:
    """initialize and interrupt are control_request lines with our request ids."""
    assert written(control.initialize("i-1")) == {
        "type": "control_request", "request_id": "i-1", "request": {"subtype": "initialize", "hooks": None},
    }
    assert written(control.interrupt("x-2"))["request"] == {"subtype": "interrupt"}


def test_allow_always_echoes_the_input() -> None:
    """An allow carries updatedInput (older CLIs reject one without it), and no rules by default."""
    answer = written(control.allow("r1", {"command": "ls"}))
    assert answer["response"] == {
        "subtype": "success", "request_id": "r1", "response": {"behavior": "allow", "updatedInput": {"command": "ls"}},
    }


def test_deny_always_carries_a_message() -> None:
    """A deny without a reason still sends a message (the CLI rejects one without)."""
    assert written(control.deny("r1", "not now"))["response"]["response"] == {"behavior": "deny", "message": "not now"}
    blank = written(control.deny("r1", "   "))["response"]["response"]
    assert blank == {"behavior": "deny", "message": control.DEFAULT_DENY_MESSAGE}


def test_failure_is_an_error_response() -> None:
    """An unsupported request is answered with subtype error, so the CLI does not wait."""
    expected = {"subtype": "error", "request_id": "u1", "error": "nope"}
    assert written(control.failure("u1", "nope"))["response"] == expected


def test_always_rules_prefer_the_exact_command_and_stay_in_the_session() -> None:
    """Bash "always": the CLI's exact-command rule, its localSettings destination rewritten to session."""
    asked = parse_control(BASH_QUESTION)
    assert isinstance(asked, PermissionAsked)
    rules = control.session_permissions(asked.tool, asked.input, asked.suggestions)
    assert rules == [{
        "type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "touch /tmp/x/made-by-bash"}],
        "behavior": "allow", "destination": "session",
    }]


def test_always_rules_without_a_rule_suggestion_use_the_mode() -> None:
    """Edit's only suggestion (acceptEdits) is sent back, as a session rule."""
    assert control.session_permissions("Edit", {"file_path": "a"}, EDIT_SUGGESTIONS) == EDIT_SUGGESTIONS


def test_always_rules_without_suggestions_name_the_tool() -> None:
    """No suggestion at all: a session rule for the tool (for Bash, the exact command)."""
    assert control.session_permissions("Bash", {"command": "make"}, []) == [{
        "type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "make"}],
        "behavior": "allow", "destination": "session",
    }]
    only = control.session_permissions("WebFetch", {"url": "u"}, [{"type": "mystery", "destination": "userSettings"}])
    assert only[0]["rules"] == [{"toolName": "WebFetch"}] and only[0]["destination"] == "session"


def test_no_always_rule_ever_targets_a_settings_file() -> None:
    """Whatever the CLI suggests, every rule we send back has the session destination."""
    suggestions = [
        {"type": "addRules", "rules": [{"toolName": "Bash"}], "behavior": "allow", "destination": "userSettings"},
        {"type": "addRules", "rules": [{"toolName": "Read"}], "behavior": "allow", "destination": "projectSettings"},
    ]
    rules = control.session_permissions("Bash", {}, suggestions)
    assert [r["destination"] for r in rules] == ["session", "session"]


# Reading


def test_a_permission_question_is_parsed() -> None:
    """can_use_tool gives the request id, tool, input, description, path and suggestions."""
    asked = parse_control(BASH_QUESTION)
    assert asked == PermissionAsked(
        request_id="ed2e4aa1",
        tool="Bash",
        input={"command": "touch /tmp/x/made-by-bash", "description": "research command"},
        description="research command",
        display_name="Bash",
        blocked_path="/tmp/x/made-by-bash",
        tool_use_id="toolu_r0_bash",
        suggestions=tuple(BASH_QUESTION["request"]["permission_suggestions"]),  # type: ignore[index]
    )


def test_an_old_cli_question_without_optional_fields_is_parsed() -> None:
    """2.0.0 sends only tool_name, input and suggestions: the rest reads as absent."""
    old = {"type": "control_request", "request_id": "r", "request": {
        "subtype": "can_use_tool", "tool_name": "Write", "input": {"file_path": "/a"}, "permission_suggestions": []}}
    asked = parse_control(old)
    assert isinstance(asked, PermissionAsked)
    assert (asked.tool, asked.tool_use_id, asked.description, asked.suggestions) == ("Write", None, "", ())


def test_withdrawals_answers_and_unknown_requests_are_parsed() -> None:
    """control_cancel_request, control_response (success and error) and other subtypes."""
    assert parse_control({"type": "control_cancel_request", "request_id": "q"}) == RequestWithdrawn("q")
    ok = {"type": "control_response", "response": {"subtype": "success", "request_id": "i", "response": {"pid": 7}}}
    assert parse_control(ok) == ControlAnswer("i", True, {"pid": 7})
    bad = {"type": "control_response", "response": {"subtype": "error", "request_id": "u", "error": "nope"}}
    assert parse_control(bad) == ControlAnswer("u", False, {}, "nope")
    hook = {"type": "control_request", "request_id": "h", "request": {"subtype": "hook_callback"}}
    assert parse_control(hook) == UnsupportedRequest("h", "hook_callback")


@pytest.mark.parametrize(
    "event",
    [
        {"type": "assistant"},
        {"type": "control_request"},
        {"type": "control_request", "request_id": 5, "request": {"subtype": "can_use_tool"}},
        {"type": "control_cancel_request"},
        {"type": "control_response", "response": "nonsense"},
        {"type": "control_request", "request_id": "r", "request": {"subtype": "can_use_tool", "input": [1]}},
    ],
)
def test_malformed_control_lines_never_raise(event: dict[str, object]) -> None:
    """Wrong types read as absent: no exception, and nothing to answer without a request id."""
    parsed = parse_control(event)
    if parsed is not None:
        assert isinstance(parsed, PermissionAsked) and parsed.input == {}


# Readable input


def test_bash_shows_the_command() -> None:
    """Bash: the command, each line of it, as the summary and the detail."""
    readable = readable_input("Bash", {"command": "make\nmake test", "description": "build"})
    assert readable.summary == "make"
    assert [(line.kind, line.text) for line in readable.lines] == [("command", "make"), ("command", "make test")]


def test_edit_shows_a_unified_diff() -> None:
    """Edit: the path, then removed and added lines with a hunk header."""
    change = {"file_path": "/p/a.py", "old_string": "x = 1\ny = 2", "new_string": "x = 1\ny = 3"}
    readable = readable_input("Edit", change)
    kinds = [(line.kind, line.text) for line in readable.lines]
    assert readable.summary == "/p/a.py"
    assert kinds[0] == ("path", "/p/a.py")
    assert ("remove", "-y = 2") in kinds and ("add", "+y = 3") in kinds and ("context", " x = 1") in kinds
    assert any(kind == "hunk" for kind, _ in kinds)


def test_write_shows_every_line_added_and_read_the_path() -> None:
    """Write: the new content as added lines; Read: the path only."""
    write = readable_input("Write", {"file_path": "/p/new.txt", "content": "a\nb\n"})
    assert [line.text for line in write.lines if line.kind == "add"] == ["+a", "+b"]
    read = readable_input("Read", {"file_path": "/p/a.py"})
    assert (read.summary, [line.kind for line in read.lines]) == ("/p/a.py", ["path"])


def test_multiedit_and_unknown_tools() -> None:
    """MultiEdit diffs each edit; an unknown tool shows its input as JSON."""
    multi = readable_input("MultiEdit", {"file_path": "f", "edits": [
        {"old_string": "a", "new_string": "b"}, {"old_string": "c", "new_string": "d"}]})
    assert [line.text for line in multi.lines if line.kind == "add"] == ["+b", "+d"]
    other = readable_input("Frobnicate", {"level": 3})
    assert other.summary == '{"level":3}' and any('"level": 3' in line.text for line in other.lines)


def test_long_inputs_are_bounded() -> None:
    """A huge Write shows at most 200 lines and says how many were left out."""
    readable = readable_input("Write", {"file_path": "f", "content": "x\n" * 5000})
    assert len(readable.lines) == 200 and readable.cut == 5002 - 200


def test_every_line_of_a_command_is_in_the_question() -> None:
    """A multi-line command shows all its lines in the terminal form, not only the first."""
    text = question_text(PermissionRequest("r", "Bash", {"command": "ls\nrm -rf build"}))
    assert text.splitlines() == ["Claude asks to use Bash: ls", "  $ rm -rf build"]


PADDED = "du -sh ." + " " * 420 + "; echo HIDDEN > /tmp/x"


def test_a_long_command_is_asked_whole_with_its_padding_shown() -> None:
    """A command past the line limit is never cut: the part after 420 blanks is in the question
    (it showed 'du -sh .      …', and approving it ran the hidden part)."""
    text = question_text(PermissionRequest("r", "Bash", {"command": PADDED}))
    assert text == "Claude asks to use Bash: du -sh .⟨420 blanks⟩; echo HIDDEN > /tmp/x"


def test_invisible_characters_in_a_command_are_shown() -> None:
    """A zero-width space, a line separator and tag characters (text a program reads and a
    person cannot see) are named in the question, so what is approved reads as it runs."""
    tags = "".join(chr(0xE0000 + ord(c)) for c in "rm")
    text = question_text(PermissionRequest("r", "Bash", {"command": f"ls\u200b -la\u2028{tags}"}))
    assert text == "Claude asks to use Bash: ls⟨U+200B⟩ -la⟨U+2028⟩⟨U+E0072⟩⟨U+E006D⟩"


def test_the_card_names_invisible_characters_too() -> None:
    """The widget's card shows the same markers as the terminal question."""
    html = permission_card_html(PermissionRequest("r", "Bash", {"command": "echo\ufeffok\u2060"}))
    assert "$ echo⟨U+FEFF⟩ok⟨U+2060⟩" in html and "\ufeff" not in html


def test_every_line_of_a_long_command_is_in_the_question() -> None:
    """A command of more lines than a question shows is shown whole; other inputs stay bounded."""
    command = "\n".join(f"echo {i}" for i in range(300))
    readable = readable_input("Bash", {"command": command})
    assert len(readable.lines) == 300 and readable.cut == 0
    text = question_text(PermissionRequest("r", "Bash", {"command": command}))
    assert "$ echo 299" in text and "more line" not in text


def test_question_text_is_a_short_plain_prompt() -> None:
    """The terminal form: tool and summary, the description, the diff lines, bounded."""
    request = PermissionRequest("r", "Edit", {"file_path": "/a", "old_string": "old", "new_string": "new"},
                                description="a.txt")
    text = question_text(request)
    assert text.splitlines()[0] == "Claude asks to use Edit: /a"
    assert "-old" in text and "+new" in text and "(a.txt)" in text
    long = PermissionRequest("r", "Write", {"file_path": "/a", "content": "x\n" * 100})
    assert len(question_text(long).splitlines()) <= 27 and "more lines" in question_text(long)


@pytest.mark.parametrize(
    ("typed", "answer"),
    [
        ("y", Answer(True)),
        (" Yes ", Answer(True)),
        ("a", Answer(True, always=True)),
        ("always", Answer(True, always=True)),
        ("n", Answer(False)),
        ("no", Answer(False)),
        ("n: use the staging dir", Answer(False, message="use the staging dir")),
        ("n not now: later", Answer(False, message="not now: later")),
        ("maybe", None),
        ("", None),
        ("nope", None),
    ],
)
def test_typed_answers(typed: str, answer: Answer | None) -> None:
    """y / a / n[: reason] are understood; anything else asks again (None)."""
    assert parse_answer(typed) == answer


def test_request_from_a_question_is_pending() -> None:
    """A new PermissionRequest is pending, undecided, with the CLI's fields."""
    asked = parse_control(BASH_QUESTION)
    assert isinstance(asked, PermissionAsked)
    request = PermissionRequest.from_asked(asked)
    assert (request.id, request.tool, request.status, request.decided_by, request.pending) == (
        "ed2e4aa1", "Bash", "pending", None, True)
    assert request.tool_use_id == "toolu_r0_bash" and request.blocked_path == "/tmp/x/made-by-bash"


def test_control_characters_never_reach_the_terminal() -> None:
    """An escape sequence in a command (or the tool name) is shown as \\x1b, not sent to the terminal."""
    request = PermissionRequest("r", "Bash", {"command": "rm -rf /tmp/x\x1b[2K\recho harmless"},
                                description="tidy\x07")
    text = question_text(request)
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "rm -rf /tmp/x\\x1b[2K\\x0decho harmless" in text and "(tidy\\x07)" in text
    assert readable_input("Bash", request.input).summary == "rm -rf /tmp/x\\x1b[2K\\x0decho harmless"
    odd = question_text(PermissionRequest("r", "Tool\x1b[8m", {}))
    assert "\x1b" not in odd and "Tool\\x1b[8m" in odd


def test_a_bidi_override_in_a_command_is_shown_not_obeyed() -> None:
    """A command to approve with U+202E (RLO) or isolates shows them as ⟨U+202E⟩: what a person
    reads is the order in which the shell runs it."""
    request = PermissionRequest("r", "Bash", {"command": "echo safe \u202e; rm -rf ~ #"}, description="x\u202d")
    text = question_text(request)
    assert "\u202e" not in text and "\u202d" not in text
    assert "Bash: echo safe ⟨U+202E⟩; rm -rf ~ #" in text and "(x⟨U+202D⟩)" in text
    assert "use Tool⟨U+2066⟩" in question_text(PermissionRequest("r", "Tool\u2066", {}))


# Reading what was written to stdin (a durable job's process.input)


def test_parse_sent_reads_back_every_line_this_module_writes() -> None:
    """A turn, an allow (always: with rules), a deny with its message, an interrupt and initialize read back."""
    rules = control.session_permissions("Bash", {"command": "touch x"}, ())
    written = [
        control.user_message("hello"),
        control.allow("q1", {"command": "touch x"}),
        control.allow("q2", {"command": "touch x"}, rules),
        control.deny("q3", "not here"),
        control.interrupt("int-1"),
        control.initialize("init-1"),
    ]
    assert [control.parse_sent(json.loads(control.line(m))) for m in written] == [
        control.TurnSent("hello"),
        control.AnswerSent("q1", True),
        control.AnswerSent("q2", True, always=True),
        control.AnswerSent("q3", False, "not here"),
        control.InterruptSent("int-1"),
        control.InitializeSent("init-1"),
    ]


@pytest.mark.parametrize("message", [
    {},
    {"type": "something_else"},
    {"type": "control_request", "request": {"subtype": "interrupt"}},
    {"type": "control_request", "request_id": "r", "request": {"subtype": "frobnicate"}},
    {"type": "control_response", "response": {"subtype": "error", "request_id": "r", "error": "x"}},
    {"type": "control_response",
     "response": {"subtype": "success", "request_id": 5, "response": {"behavior": "allow"}}},
    {"type": "control_response", "response": "not an object"},
])
def test_parse_sent_ignores_what_it_does_not_write(message: dict[str, object]) -> None:
    """Other or malformed lines read as None, never an exception."""
    assert control.parse_sent(message) is None


def test_parse_sent_reads_a_prompt_given_as_blocks() -> None:
    """A user message whose content is a list of text blocks reads as their text."""
    message = {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}}
    assert control.parse_sent(message) == control.TurnSent("ab")
