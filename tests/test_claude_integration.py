"""Tests for the Claude seam: argv, environment and shared demo, interpreter, widget body."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import comm
import ipywidgets
import pytest

from cc_executor_nb.claude.interpreter import ClaudeInterpreter
from cc_executor_nb.claude.options import (
    DEMO_MAX_RETRIES,
    ClaudeOptions,
    claude_argv,
    claude_environment,
    claude_stdin_argv,
)
from cc_executor_nb.claude.render import ClaudeBody, claude_body_html
from cc_executor_nb.claude.streamjson import ClaudeRun
from cc_executor_nb.demo.selftest import (
    CASES,
    Case,
    Observation,
    TimedEvent,
    count_haikus,
    evaluate,
    format_case,
    format_summary,
    has_credentials,
    select_cases,
)
from cc_executor_nb.demo.shared import demo_backend, stop_demo
from cc_executor_nb.events import make_event
from cc_executor_nb.kernel.run import Interpreter, Run, RunSpec, Target
from cc_executor_nb.kernel.runstate import RunState
from cc_executor_nb.kernel.views import RunView

from .util import scaled

pytestmark = pytest.mark.timeout(30)

RECORDINGS = Path(__file__).parent / "data" / "streamjson"
HEAD = ["-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages"]


# Helpers


@pytest.fixture
def exe(tmp_path: Path) -> str:
    """A stand-in claude executable (argv building only looks it up)."""
    path = tmp_path / "claude"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def no_demo() -> Iterator[None]:
    """No shared demo backend before or after the test."""
    stop_demo()
    yield
    stop_demo()


class DummyComm:
    """A comm that swallows what a widget sends (no kernel needed)."""

    kernel = "Truthy"

    def __init__(self, **kwargs: Any) -> None:
        self.comm_id = uuid.uuid4().hex

    def open(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to open."""

    def on_msg(self, callback: Any) -> None:
        """No messages come back."""

    def send(self, data: Any = None, buffers: Any = None, **kwargs: Any) -> None:
        """Drop the message."""

    def close(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to close."""


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every new widget a DummyComm."""
    monkeypatch.setattr(comm, "create_comm", DummyComm)
    monkeypatch.setattr(comm, "get_comm_manager", dict)


def recording(name: str) -> str:
    """The text of a recorded stream-json file."""
    return (RECORDINGS / f"{name}.jsonl").read_text(encoding="utf-8")


def fed(name: str, chunk: int = 97) -> ClaudeInterpreter:
    """An interpreter fed a recording in small chunks, then finished."""
    interpreter = ClaudeInterpreter()
    text = recording(name)
    for start in range(0, len(text), chunk):
        interpreter.feed("stdout", text[start : start + chunk])
    interpreter.finish()
    return interpreter


def parsed(name: str) -> ClaudeRun:
    """A ClaudeRun fed a recording at once."""
    run = ClaudeRun()
    run.feed(recording(name))
    run.feed_eof()
    return run


def state_of(status: str, exit_code: int | None = 0) -> RunState:
    """A RunState that has ended with ``status``."""
    state = RunState()
    state.apply("process.started", {"pid": 1, "pgid": 1, "seq": 1}, 0.0)
    state.apply("process.completed", {"status": status, "exit_code": exit_code, "seq": 2}, 1.0)
    return state


@pytest.fixture(autouse=True)
def close_widgets() -> Iterator[None]:
    """Close the widgets each test made (else they are torn down at interpreter exit)."""
    yield
    ipywidgets.Widget.close_all()


def body_for(interpreter: ClaudeInterpreter) -> ClaudeBody:
    """The body a rendered (not raw) run shows."""
    return ClaudeBody(interpreter)


# Command line


def test_argv_shape(exe: str) -> None:
    """The fixed streaming flags come first and the prompt last, after `--`."""
    assert claude_argv("hi", ClaudeOptions(executable=exe)) == [exe, *HEAD, "--", "hi"]


@pytest.mark.parametrize("prompt", ["--foo", "-p", "--", "--help is not an option"])
def test_leading_dash_prompt_follows_the_separator(exe: str, prompt: str) -> None:
    """A prompt that looks like an option is the element right after the one `--`."""
    argv = claude_argv(prompt, ClaudeOptions(executable=exe))
    assert argv[-2:] == ["--", prompt]
    assert argv.index("--") == len(argv) - 2


def test_a_prompt_on_stdin_leaves_the_argv_without_one(exe: str) -> None:
    """claude_stdin_argv: the one-shot argv with no `--` and no prompt (claude -p reads it from stdin)."""
    assert claude_stdin_argv(ClaudeOptions(executable=exe, model="sonnet")) == [exe, *HEAD, "--model", "sonnet"]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"model": 5}, "model must be a string, not 5"),
     ({"resume": 123}, "resume must be a string, not 123"),
     ({"append_system_prompt": 7}, "append_system_prompt must be a string, not 7"),
     ({"allowed_tools": ("Bash", 3)}, "allowed_tools must hold strings, not 3"),
     ({"claude_args": "--verbose"}, "claude_args must be a list of strings, one per argument"),
     ({"executable": 42}, "executable must be a path or a command name, not 42")],
)
def test_options_that_become_words_must_be_text(options: dict[str, Any], message: str) -> None:
    """A number where the command line needs text is a ValueError naming the option (it was the server's
    "argv must be an array of strings")."""
    with pytest.raises(ValueError, match=message):
        claude_argv("hi", ClaudeOptions(**options))


def test_the_executable_may_be_a_path(exe: str) -> None:
    """executable=Path(...) becomes a string in the argv (a Path could not be sent)."""
    assert claude_argv("hi", ClaudeOptions(executable=Path(exe)))[0] == exe  # type: ignore[arg-type]


def test_prompt_is_one_literal_element(exe: str) -> None:
    """Shell syntax, quotes and newlines stay inside one argv element, untouched."""
    prompt = "$(touch x) `id` 'a' \"b\" ; rm -rf / \n second line"
    assert claude_argv(prompt, ClaudeOptions(executable=exe))[-1] == prompt


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"model": "sonnet"}, ["--model", "sonnet"]),
        ({"resume": "abc-123"}, ["--resume", "abc-123"]),
        ({"continue_session": True}, ["--continue"]),
        (
            {"allowed_tools": ("Bash(git log *)", "Edit")},
            ["--allowed-tools", "Bash(git log *)", "Edit"],
        ),
        ({"allowed_tools": "Bash(git *),Edit"}, ["--allowed-tools", "Bash(git *),Edit"]),
        ({"permission_mode": "plan"}, ["--permission-mode", "plan"]),
        ({"max_turns": 3}, ["--max-turns", "3"]),
        ({"append_system_prompt": "-be brief"}, ["--append-system-prompt", "-be brief"]),
        ({"claude_args": ("--effort", "high")}, ["--effort", "high"]),
        ({"allowed_tools": ""}, []),
        ({"append_system_prompt": ""}, []),
    ],
)
def test_each_option_goes_before_the_separator(
    exe: str, options: dict[str, Any], expected: list[str]
) -> None:
    """Every option becomes its CLI flag between the fixed flags and `--`."""
    argv = claude_argv("p", ClaudeOptions(executable=exe, **options))
    assert argv == [exe, *HEAD, *expected, "--", "p"]


@pytest.mark.parametrize("name", ["model", "resume", "permission_mode"])
def test_an_empty_option_that_would_run_the_default_is_refused(exe: str, name: str) -> None:
    """An empty model, resume or permission mode is refused (it was left out: the default ran
    unnoticed); the case above held them with the empty allowed_tools until c7eab53."""
    with pytest.raises(ValueError, match=f"{name} is empty"):
        claude_argv("p", ClaudeOptions(executable=exe, **{name: ""}))


def test_all_options_in_order(exe: str) -> None:
    """With everything set, options keep a fixed order and raw args come last."""
    options = ClaudeOptions(
        executable=exe,
        model="m",
        resume="s1",
        allowed_tools=("Read",),
        permission_mode="acceptEdits",
        max_turns=2,
        append_system_prompt="x",
        claude_args=("--raw",),
    )
    assert claude_argv("p", options)[len(HEAD) + 1 :] == [
        "--model", "m", "--resume", "s1", "--allowed-tools", "Read",
        "--permission-mode", "acceptEdits", "--max-turns", "2",
        "--append-system-prompt", "x", "--raw", "--", "p",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [
        {"resume": "s1", "continue_session": True},
        {"max_turns": 0},
        {"max_turns": True},
        {"max_retries": -1},
        {"allowed_tools": ("--dangerously-skip-permissions",)},
    ],
)
def test_bad_options_raise_value_error(exe: str, options: dict[str, Any]) -> None:
    """Contradictory or malformed options are refused before anything runs."""
    with pytest.raises(ValueError):
        claude_argv("p", ClaudeOptions(executable=exe, **options))


def test_missing_cli_gives_install_advice(tmp_path: Path) -> None:
    """A missing executable raises FileNotFoundError saying how to install the CLI."""
    with pytest.raises(FileNotFoundError, match="npm"):
        claude_argv("p", ClaudeOptions(executable=str(tmp_path / "missing")))


# Environment and the shared demo backend


def test_real_api_needs_no_environment(no_demo: None) -> None:
    """Without demo only max_retries, when given, reaches the child's environment."""
    assert claude_environment(ClaudeOptions()) is None
    assert claude_environment(ClaudeOptions(max_retries=0)) == {"CLAUDE_CODE_MAX_RETRIES": "0"}


def test_demo_environment_points_at_the_shared_backend(no_demo: None) -> None:
    """Demo runs get the backend's URL, a seeded private config and bounded retries."""
    env = claude_environment(ClaudeOptions(demo=True))
    assert env is not None
    assert env["ANTHROPIC_BASE_URL"] == demo_backend().url
    assert env["CLAUDE_CODE_MAX_RETRIES"] == str(DEMO_MAX_RETRIES)
    assert (Path(env["CLAUDE_CONFIG_DIR"]) / ".claude.json").is_file()
    custom = claude_environment(ClaudeOptions(demo=True, max_retries=0))
    assert custom is not None and custom["CLAUDE_CODE_MAX_RETRIES"] == "0"


def test_demo_backend_starts_once_across_threads(no_demo: None) -> None:
    """Concurrent first demo runs share one backend and one config directory."""
    results: list[dict[str, str] | None] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(claude_environment(ClaudeOptions(demo=True)))
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert len({(env or {}).get("ANTHROPIC_BASE_URL") for env in results}) == 1
    assert len({(env or {}).get("CLAUDE_CONFIG_DIR") for env in results}) == 1


def test_stop_demo_stops_the_backend_and_removes_its_files(no_demo: None) -> None:
    """stop_demo closes the port and deletes the config; the next demo run starts afresh."""
    env = claude_environment(ClaudeOptions(demo=True))
    assert env is not None
    url, config = env["ANTHROPIC_BASE_URL"], Path(env["CLAUDE_CONFIG_DIR"])
    with urllib.request.urlopen(url + "/health", timeout=scaled(5)) as response:
        assert response.status == 200
    stop_demo()
    stop_demo()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/health", timeout=scaled(5))
    assert not config.exists()
    again = claude_environment(ClaudeOptions(demo=True))
    assert again is not None and again["CLAUDE_CONFIG_DIR"] != str(config)


# Interpreter


def test_interpreter_implements_the_protocol() -> None:
    """The Claude interpreter is a Run Interpreter (feed, finish, snapshot, progress)."""
    assert isinstance(ClaudeInterpreter(), Interpreter)


@pytest.mark.parametrize("name", ["echo", "story", "tool", "think", "error_529"])
def test_interpreter_matches_the_parser_over_a_recording(name: str) -> None:
    """Fed in small chunks, the interpreter exposes what ClaudeRun parses at once."""
    interpreter, run = fed(name), parsed(name)
    fields = ("text", "answer", "result", "cost_usd", "usage", "session_id", "model",
              "is_error", "api_error_status", "thinking", "num_turns", "phase", "version")  # fmt: skip
    view = interpreter.snapshot()
    for field in fields:
        assert getattr(view, field) == getattr(run, field), field
    assert [t.id for t in view.tool_calls] == [t.id for t in run.tool_calls]
    assert list(view.retries) == run.retries


def test_interpreter_keeps_stderr_aside() -> None:
    """Stderr never reaches the stream-json parser; it is kept for the view."""
    interpreter = ClaudeInterpreter()
    interpreter.feed("stderr", '{"type":"result","result":"fake"}\n')
    view = interpreter.snapshot()
    assert view.result is None and view.text == ""
    assert view.stderr == '{"type":"result","result":"fake"}\n'


def test_finish_applies_an_unterminated_last_line() -> None:
    """finish() parses a final line that had no newline, once."""
    interpreter = ClaudeInterpreter()
    last = recording("echo").rstrip("\n")
    interpreter.feed("stdout", last)
    assert interpreter.snapshot().result is None
    interpreter.finish()
    interpreter.finish()
    view = interpreter.snapshot()
    assert view.result is not None and view.text == parsed("echo").text


def test_run_handle_forwards_the_claude_fields() -> None:
    """A Run reads text, cost, session and errors from the interpreter."""
    interpreter = fed("error_529")
    handle = Run(RunSpec(argv=["claude"]), Target("ws://127.0.0.1:1/ws"), interpreter=interpreter)
    assert handle.is_error is True
    assert handle.session_id == interpreter.snapshot().session_id and handle.session_id
    assert handle.claude is interpreter.snapshot(), "one cached snapshot until the next piece"
    assert handle.result is not None and handle.result["api_error_status"] == 529


def test_a_run_the_cli_refused_has_its_error_as_the_answer_and_no_text() -> None:
    """"Prompt is too long" (a synthetic assistant message, then an is_error result) is the run's
    error, not Claude's text: ``run.text`` (a batch record's result) read "Prompt is too long"."""
    handle = Run(RunSpec(argv=["claude"]), Target("ws://127.0.0.1:1/ws"), interpreter=fed("prompt_too_long"))
    assert (handle.is_error, handle.text, handle.answer) == (True, "", "Prompt is too long")


def test_reads_from_another_thread_see_whole_lines() -> None:
    """Reading while the loop thread feeds never sees a half-applied state."""
    text = recording("story")
    interpreter = ClaudeInterpreter()
    seen: list[int] = []

    def feed() -> None:
        for start in range(0, len(text), 13):
            interpreter.feed("stdout", text[start : start + 13])
        interpreter.finish()

    feeder = threading.Thread(target=feed)
    feeder.start()
    while feeder.is_alive():
        with interpreter.locked() as run:
            seen.append(len(run.text.split()))
    feeder.join()
    assert seen == sorted(seen)
    assert len(interpreter.snapshot().answer.split()) == 300


# Widget body




def test_body_renders_the_conversation(comms: None) -> None:
    """The body's widget shows the answer and the footer's facts."""
    interpreter = fed("haiku")
    body = body_for(interpreter)
    body.render(state_of("completed"), 1.0)
    assert isinstance(body.widget, ipywidgets.Box)
    value = body.value
    assert "Morning kernel wakes" in value and "cc-footer" in value
    assert f"session {interpreter.snapshot().session_id}" in value
    assert "mathjax_ignore" in value


def test_body_shows_the_text_claude_wrote_before_a_tool_call(comms: None) -> None:
    """The widget's answer is "I will run a command." (written before the tool call), then the final
    text once (it showed only the result's text, the last message)."""
    body = body_for(fed("tool"))
    body.render(state_of("completed"), 1.0)
    value = body.value
    assert value.index("I will run a command.") < value.index("The command printed: hi")
    assert value.count("The command printed: hi") == 1


def test_body_shows_each_turns_text_before_its_tool_call(comms: None) -> None:
    """A conversation's widget shows each turn's "Step 1 of 1." and then its answer once (it showed the
    answers alone)."""
    from .test_transcript import stepped_conversation_run

    body = body_for(stepped_conversation_run().interpreter)
    body.render(state_of("completed"), 1.0)
    value = body.value
    assert value.count("Step 1 of 1.") == 2 and value.count("answer 1") == 1 and value.count("answer 2") == 1
    first_step = value.index("Step 1 of 1.")
    assert first_step < value.index("answer 1") < value.index("Step 1 of 1.", first_step + 1) < value.index("answer 2")


def test_body_escapes_hostile_markdown(comms: None) -> None:
    """Script and image payloads in the answer never become tags."""
    body = body_for(fed("markdown_xss"))
    body.render(state_of("completed"), 1.0)
    value = body.value.lower()
    assert "<script" not in value and "<img" not in value
    assert "&lt;img src=x onerror=alert(1)&gt;" in value


def test_body_shows_an_api_error_plainly(comms: None) -> None:
    """An API 529 is shown as an error with its status, not as an answer."""
    body = body_for(fed("error_529"))
    body.render(state_of("failed", 1), 1.0)
    assert 'class="cc-error"' in body.value
    assert "529" in body.value and "overloaded" in body.value


def test_body_shows_thinking_collapsed(comms: None) -> None:
    """A thinking block is folded into a details element."""
    body = body_for(fed("think"))
    body.render(state_of("completed"), 1.0)
    assert '<details class="cc-thinking">' in body.value


def test_body_rerenders_only_on_change(comms: None) -> None:
    """Renders with no new line and the same status leave the widget alone."""
    interpreter = ClaudeInterpreter()
    body = body_for(interpreter)
    state = RunState()
    body.render(state, 0.0)
    body.render(state, 0.1)
    assert body.render_count == 1
    interpreter.feed("stdout", recording("echo"))
    body.render(state, 0.2)
    assert body.render_count == 2


def test_body_explains_a_run_without_result(comms: None) -> None:
    """A run that ended with no result shows its status and escaped stderr."""
    interpreter = ClaudeInterpreter()
    interpreter.feed("stderr", "<b>Error: boom</b>\n")
    body = body_for(interpreter)
    body.render(state_of("failed", 1), 1.0)
    value = body.value
    assert "No result from Claude: the run failed with exit code 1" in value
    assert "&lt;b&gt;Error: boom&lt;/b&gt;" in value and "<b>" not in value


def test_body_waits_before_the_first_line() -> None:
    """Before any output the body says it is waiting for Claude."""
    assert "Waiting for Claude" in claude_body_html(ClaudeRun(), status="running")
    assert "Waiting for Claude" not in claude_body_html(ClaudeRun(), status="completed")


def test_run_view_drives_the_body(comms: None) -> None:
    """RunView renders the body along with itself."""
    interpreter = fed("arithmetic")
    body = body_for(interpreter)
    view = RunView("claude", body=body)
    view.render(state_of("completed"), 1.0)
    assert body.render_count == 1 and body.widget in view.widget.children


def test_run_view_shows_the_end_in_the_body_before_the_badge(comms: None) -> None:
    """The badge says "completed" only once the body holds the answer it sums up: a page
    that reads the badge never finds a finished run without its answer."""
    interpreter = ClaudeInterpreter()
    view = RunView("claude", body=body_for(interpreter))
    started = RunState()
    started.apply("process.started", {"pid": 1, "pgid": 1, "seq": 1}, 0.0)
    view.render(started, 0.5)
    bodies_when_ended: list[str] = []

    def badge_changed(change: dict[str, Any]) -> None:
        if "completed" in change["new"]:
            bodies_when_ended.append(view.body.value)  # type: ignore[union-attr]

    view.header.observe(badge_changed, "value")
    for line in recording("arithmetic").splitlines(keepends=True):
        interpreter.feed("stdout", line)
    interpreter.finish()
    view.render(state_of("completed"), 1.0)
    assert bodies_when_ended and all('class="cc-answer"' in body for body in bodies_when_ended)


# Self-test core (no sockets)


def observation(stdout: str, status: str = "completed", exit_code: int = 0) -> Observation:
    """An observation of a run that printed ``stdout`` line by line, with two heartbeats."""
    events = [make_event("process.started", {"pid": 1, "pgid": 1, "seq": 1})]
    for line in stdout.splitlines(keepends=True):
        events.append(make_event("process.output", {"type": "stdout", "data": line}))
    events[2:2] = [make_event("heartbeat", {"status": "alive"})] * 2
    params = {"status": status, "exit_code": exit_code}
    events.append(make_event("process.completed", params))
    return Observation(tuple(TimedEvent(i * 0.1, e) for i, e in enumerate(events)), 1.0)


def test_selftest_cases_are_found_by_slug_or_name() -> None:
    """--test accepts a slug or a case name in any case and spacing; unknown names raise."""
    assert [c.slug for c in select_cases(["Simple Echo", "STORY", "haiku"], False)] == [
        "echo",
        "story",
        "haikus",
    ]
    assert select_cases([], True) == list(CASES)
    with pytest.raises(ValueError, match="unknown test"):
        select_cases(["nope"], False)


def test_count_haikus_skips_titles() -> None:
    """Numbered or titled stanzas of three lines count; other blocks do not."""
    text = "Haiku 1:\na\nb\nc\n\n**Two**\nd\ne\nf\n\nnot a haiku\n\n3.\ng\nh\ni"
    assert count_haikus(text) == 3


def test_selftest_judges_a_recorded_run() -> None:
    """A recorded success passes the common checks; heartbeats and words are counted."""
    case = Case("t", "Test", "p", lambda obs, demo: [])
    outcome = evaluate(case, observation(recording("arithmetic")), demo=True)
    assert outcome.passed, outcome.checks
    assert (outcome.observation.heartbeats, outcome.observation.words) == (2, 1)
    assert "| result          | PASS" in format_case(outcome)


def test_selftest_reports_an_api_error() -> None:
    """A failed process with an error result fails with the reason in plain words."""
    case = Case("t", "Test", "p", lambda obs, demo: [])
    outcome = evaluate(case, observation(recording("error_529"), "failed", 1), demo=True)
    failed = [check.label for check in outcome.checks if not check.ok]
    assert failed[0] == "process failed with exit code 1"
    assert "529" in failed[1]
    assert "| Test | FAIL   |" in format_summary([outcome], 1.0)


def test_selftest_needs_credentials_or_demo() -> None:
    """Only a set credential variable counts as real-API credentials."""
    assert not has_credentials({"ANTHROPIC_API_KEY": ""})
    assert has_credentials({"ANTHROPIC_API_KEY": "sk-x"})


def test_remote_runs_name_the_executable_instead_of_a_local_path() -> None:
    """For a remote server the argv starts with the configured name (or "claude"), unresolved."""
    assert claude_argv("hi", ClaudeOptions(remote=True))[0] == "claude"
    assert claude_argv("hi", ClaudeOptions(remote=True, executable="/opt/bin/claude"))[0] == "/opt/bin/claude"
    assert claude_argv("hi", ClaudeOptions(remote=True, executable="/nonexistent/claude"))[-2:] == ["--", "hi"]


def test_a_run_that_ended_without_result_is_not_shown_running() -> None:
    """After a timeout the footer drops "running…" and the note says the run timed out."""
    page = claude_body_html(ClaudeRun(), status="timeout", exit_code=-15)
    assert "running…" not in page and "the run timed out, killed by SIGTERM" in page
    assert "running…" in claude_body_html(ClaudeRun(), status="running")
