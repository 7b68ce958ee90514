"""Tests for cc_executor_nb.demo: the mock Messages API, alone and with the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cc_executor_nb.demo import DemoBackend, DemoSettings, demo_environment, find_claude
from cc_executor_nb.demo.arithmetic import ExpressionError, evaluate
from cc_executor_nb.demo.limits import LimitWindows
from cc_executor_nb.demo.record import claude_argv, normalize, run_claude
from cc_executor_nb.demo.scenarios import plan_reply
from cc_executor_nb.demo.texts import AFTER_TOOL_THINKING, TOOL_THINKING, huge_text

from .util import eventually, scaled

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_CLAUDE = REPO_ROOT / "node_modules" / ".bin" / "claude"
RECORDINGS_DIR = REPO_ROOT / "tests" / "data" / "streamjson"

Event = tuple[str, dict[str, Any]]


# Helpers


@pytest.fixture
def backend() -> Iterator[DemoBackend]:
    settings = DemoSettings(think_seconds=0.5, words_per_second=100_000)
    with DemoBackend(settings=settings) as running:
        yield running


def request_body(prompt: str, *, stream: bool, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-demo",
        "max_tokens": 4096,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def post(url: str, body: dict[str, Any] | bytes, path: str = "/v1/messages") -> tuple[int, bytes]:
    """POST and return (status, body), for error statuses too."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=scaled(30)) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def parse_sse(raw: bytes) -> list[Event]:
    events: list[Event] = []
    for frame in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def stream(url: str, prompt: str, **extra: Any) -> list[Event]:
    status, raw = post(url, request_body(prompt, stream=True, **extra))
    assert status == 200, raw
    return parse_sse(raw)


def text_deltas(events: list[Event]) -> list[str]:
    return [
        data["delta"]["text"]
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "text_delta"
    ]


def message(url: str, prompt: str, **extra: Any) -> dict[str, Any]:
    status, raw = post(url, request_body(prompt, stream=False, **extra))
    assert status == 200, raw
    return json.loads(raw)


def reply_text(url: str, prompt: str) -> str:
    blocks = message(url, prompt)["content"]
    return "".join(block["text"] for block in blocks if block["type"] == "text")


# Scenario rules, without sockets


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("2+2", 4), ("(2+3)*4 - 7/7", 19), ("-3 * -3", 9), ("10/4", 2.5)],
)
def test_arithmetic_evaluates_exactly(expression: str, expected: float) -> None:
    """The safe parser honours precedence, parentheses, unary minus and division."""
    assert evaluate(expression) == expected


@pytest.mark.parametrize("expression", ["1/0", "2+", "__import__('os')", "9" * 40])
def test_arithmetic_rejects_bad_input(expression: str) -> None:
    """Malformed, hostile or oversized expressions raise instead of running."""
    with pytest.raises(ExpressionError):
        evaluate(expression)


@pytest.mark.parametrize(
    ("prompt", "scenario"),
    [
        ("Say hello", "default"),
        ("echo: error 529", "echo"),
        ("What is 2+2?", "arithmetic"),
        ("Release 2024-01-05 notes", "default"),
        ("Write 3 HAIKUS", "haiku"),
        ("Think for 6 seconds", "think"),
        ("write a 5000 word story", "story"),
        ("huge reply of 2000000 bytes", "huge"),
        ("a big reply please", "huge"),
        ("Overloaded", "error"),
        ("markdown xss", "markdown_xss"),
        ("use a tool", "tool"),
    ],
)
def test_scenario_is_chosen_from_keywords(prompt: str, scenario: str) -> None:
    """Case-insensitive keywords in the prompt pick the documented scenario."""
    request = request_body(prompt, stream=True)
    assert plan_reply(request, DemoSettings()).scenario == scenario


@pytest.mark.parametrize(("prompt", "scenario"), [
    ("write a " + "9" * 5000 + " word story", "story"),
    ("huge reply of " + "9" * 5000 + " bytes", "huge"),
    (f"write {'9' * 5000} haikus", "haiku"),
])
def test_a_count_of_thousands_of_digits_is_bounded_not_raised(prompt: str, scenario: str) -> None:
    """A 5000-digit count is the scenario's limit (int() refused it: the backend's handler raised)."""
    assert plan_reply(request_body(prompt, stream=True), DemoSettings()).scenario == scenario


def test_prompt_skips_system_reminders() -> None:
    """Only the user's own text decides: CLI reminder blocks are ignored."""
    content = [
        {"type": "text", "text": "<system-reminder>\nhuge story, error 529\n</system-reminder>"},
        {"type": "text", "text": "echo: XYZ"},
    ]
    request = {"messages": [{"role": "user", "content": content}], "tools": [{"name": "Bash"}]}
    reply = plan_reply(request, DemoSettings())
    assert (reply.scenario, reply.text) == ("echo", "XYZ")


def test_tool_result_is_found_behind_system_turns() -> None:
    """A system turn the CLI appends after a tool result does not restart the tool."""
    result = {"type": "tool_result", "tool_use_id": "toolu_demo_0001", "content": "hi"}
    messages = [
        {"role": "user", "content": "use a tool"},
        {"role": "user", "content": [result]},
        {"role": "system", "content": [{"type": "text", "text": "Environment"}]},
    ]
    reply = plan_reply({"messages": messages, "tools": [{"name": "Bash"}]}, DemoSettings())
    assert (reply.tool_call, reply.text) == (None, "The command printed: hi")


def test_think_then_use_a_tool_thinks_before_the_call_and_again_before_the_answer() -> None:
    """"think, then use a tool": a thinking block before the Bash call, another before the answer
    (thinking between tool calls); "use a tool" alone does not think."""
    first = plan_reply({"messages": [{"role": "user", "content": "think, then use a tool"}]}, DemoSettings())
    result = {"type": "tool_result", "tool_use_id": "toolu_demo_0001", "content": "hi"}
    messages = [{"role": "user", "content": "think, then use a tool"}, {"role": "user", "content": [result]}]
    after = plan_reply({"messages": messages}, DemoSettings())
    plain = plan_reply({"messages": [{"role": "user", "content": "use a tool"}]}, DemoSettings())
    assert (first.thinking, first.tool_call is not None) == (TOOL_THINKING, True)
    assert (after.thinking, after.text) == (AFTER_TOOL_THINKING, "The command printed: hi")
    assert plain.thinking is None


# Scenarios that need approval (host mode)


def conversation_so_far(prompt: str, *results: tuple[str, bool]) -> dict[str, Any]:
    """A request body: the prompt, then one tool_use and its result per entry."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    for n, (content, is_error) in enumerate(results, 1):
        tool_id = f"toolu_demo_{n:04d}"
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": f"Step {n}."}, {"type": "tool_use", "id": tool_id, "name": "T", "input": {}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tool_id, "content": content, "is_error": is_error}]})
    return {"messages": messages, "tools": [{"name": "Bash"}]}


def test_bash_scenario_runs_the_command_then_reports_its_output() -> None:
    """bash: CMD asks for one Bash call, then quotes its output."""
    first = plan_reply(conversation_so_far("bash: echo hi > a.txt"), DemoSettings())
    assert first.tool_call is not None and (first.scenario, first.tool_call.name) == ("bash", "Bash")
    assert first.tool_call.input["command"] == "echo hi > a.txt"
    done = plan_reply(conversation_so_far("bash: echo hi > a.txt", ("hi", False)), DemoSettings())
    assert (done.tool_call, done.text) == (None, "I ran `echo hi > a.txt`. Output: hi")


def test_a_refused_call_is_quoted_back() -> None:
    """A denied call's result (the user's reason) is what the reply repeats."""
    done = plan_reply(conversation_so_far("bash: touch x", ("Not today", True)), DemoSettings())
    assert done.text == "The command was not run: Not today"


def test_a_command_that_ran_and_failed_is_not_called_refused() -> None:
    """The CLI's result of a failing command (``Exit code 128`` and its output) reads as a run
    that failed (it read "The command was not run")."""
    result = ("Exit code 128\nfatal: not a git repository", True)
    done = plan_reply(conversation_so_far("bash: git status", result), DemoSettings())
    assert done.text == "I ran `git status`. It failed with exit code 128. Output: fatal: not a git repository"


def test_bash_twice_asks_the_same_call_again_with_a_new_id() -> None:
    """bash twice: the second call repeats the command with an id new to the conversation."""
    second = plan_reply(conversation_so_far("bash twice: touch x", ("ok", False)), DemoSettings())
    assert second.tool_call is not None and second.tool_call.input["command"] == "touch x"
    assert second.tool_call.id == "toolu_demo_0002"
    done = plan_reply(conversation_so_far("bash twice: touch x", ("ok", False), ("ok", False)), DemoSettings())
    assert done.text.count("I ran `touch x`") == 2


def test_edit_reads_then_edits_and_write_writes() -> None:
    """edit: PATH: OLD => NEW is a Read then an Edit; write: PATH[: TEXT] is one Write."""
    read = plan_reply(conversation_so_far("edit: a.txt: hello => bye"), DemoSettings())
    edit = plan_reply(conversation_so_far("edit: a.txt: hello => bye", ("1\thello", False)), DemoSettings())
    assert read.tool_call is not None and read.tool_call.name == "Read"
    assert edit.tool_call is not None and edit.tool_call.input == {
        "file_path": "a.txt", "old_string": "hello", "new_string": "bye"}
    write = plan_reply(conversation_so_far("write: b.txt: some words"), DemoSettings())
    assert write.tool_call is not None and write.tool_call.input == {"file_path": "b.txt", "content": "some words\n"}
    done = plan_reply(conversation_so_far("write: b.txt", ("File created", False)), DemoSettings())
    assert done.text == "I wrote b.txt: File created"


def test_a_follow_up_after_an_interrupt_is_read_without_the_marker() -> None:
    """The CLI puts "[Request interrupted by user]" before a follow-up: the scenario still matches."""
    content = [{"type": "text", "text": "[Request interrupted by user]\nwhat is 6*7"}]
    request = {"messages": [{"role": "user", "content": content}], "tools": [{"name": "Bash"}]}
    assert plan_reply(request, DemoSettings()).text == "42"
    merged = [  # as CLI 2.0 sends it
        {"type": "text", "text": "write a 5000 word story"},
        {"type": "text", "text": "[Request interrupted by user]"},
        {"type": "text", "text": "what is 6*7"},
    ]
    request = {"messages": [{"role": "user", "content": merged}], "tools": [{"name": "Bash"}]}
    assert plan_reply(request, DemoSettings()).text == "42"


def after_an_interrupted_question(follow_up: str) -> dict[str, Any]:
    """A request body as the CLI sends it for a follow-up after an interrupt while a Bash call
    waited for approval: the rejected call's result, the marker and the follow-up in one message."""
    rejected = (
        "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a "
        "file edit, the new_string was NOT written to the file). STOP what you are doing and wait for the "
        "user to tell you how to proceed."
    )
    call = {"type": "tool_use", "id": "toolu_demo_0001", "name": "Bash", "input": {"command": "touch intq.txt"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "bash: touch intq.txt"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Step 1 of 1."}, call]},
        {"role": "user", "content": [
            {"type": "tool_result", "content": rejected, "is_error": True, "tool_use_id": "toolu_demo_0001"},
            {"type": "text", "text": "[Request interrupted by user for tool use]\n"},
            {"type": "text", "text": follow_up, "cache_control": {"type": "ephemeral"}},
        ]},
    ]
    return {"messages": messages, "tools": [{"name": "Bash"}]}


def test_a_follow_up_after_an_interrupted_question_is_answered() -> None:
    """After an interrupt during a question, the follow-up's words decide the reply, not the
    rejected call's result (the reply was "The command printed: The user doesn't want…")."""
    reply = plan_reply(after_an_interrupted_question("echo: after"), DemoSettings())
    assert (reply.scenario, reply.text) == ("echo", "after")


def test_a_bash_follow_up_after_an_interrupted_question_asks_for_its_call() -> None:
    """A `bash:` follow-up after an interrupted question asks for its own call (the rejected one
    counted as its step, so it concluded at once)."""
    reply = plan_reply(after_an_interrupted_question("bash: touch other.txt"), DemoSettings())
    assert reply.tool_call is not None and reply.tool_call.input["command"] == "touch other.txt"


def test_side_requests_get_a_quick_fixed_answer() -> None:
    """Quota probes and tool-less side prompts never trigger a scenario."""
    quota = request_body("write a 5000 word story", stream=False, max_tokens=1)
    title = request_body("think for 60 seconds", stream=False, system="Generate a title")
    for request in (quota, title):
        reply = plan_reply(request, DemoSettings())
        assert (reply.scenario, reply.delay, reply.text) == ("auxiliary", 0.0, "Demo")


def test_prompt_parameters_override_defaults() -> None:
    """Numbers in the prompt set the haiku count, think time, story size and pace."""

    def plan(prompt: str) -> Any:
        return plan_reply(request_body(prompt, stream=True), DemoSettings())

    assert plan("write 4 haikus").text.count("Haiku ") == 4
    assert plan("think for 6 seconds").delay == 6.0
    story = plan("a 50 word story at 500 words per second")
    assert story.extra == {"words": 50, "words_per_second": 500.0}


# The mock over HTTP


def test_streaming_events_follow_the_api_order(backend: DemoBackend) -> None:
    """A streamed reply has the real API's event sequence and matching types."""
    events = stream(backend.url, "Say hello")
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] > 0


def test_non_streaming_returns_one_message(backend: DemoBackend) -> None:
    """stream: false returns a complete JSON message with usage."""
    body = message(backend.url, "echo: XYZ")
    assert body["type"] == "message"
    assert body["content"] == [{"type": "text", "text": "XYZ"}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0


def test_usage_is_deterministic(backend: DemoBackend) -> None:
    """The same request gives the same usage every time, so costs are stable."""
    first = message(backend.url, "write 2 haikus")["usage"]
    assert message(backend.url, "write 2 haikus")["usage"] == first


def test_a_limit_window_without_a_session_id_opens_once_for_a_prompt_merged_into_its_message(
    backend: DemoBackend
) -> None:
    """A CLI that sends no session id and merges the next prompt into the refused one's message
    (2.0.77: a follow-up, auto-resume's "Continue where you left off.") is answered once the reset
    passed: the merged text opened a new window each time (the resumes of `--demo --auto-resume
    "usage limit reset in 3 s, then what is 2+2"` were all refused, five, a minute apart)."""
    clock = [1000.0]
    backend.limits = LimitWindows(lambda: clock[0])
    limit = "usage limit reset in 3 s, then what is 2+2"
    first = {"role": "user", "content": [{"type": "text", "text": limit}]}
    merged = {"role": "user", "content": [*first["content"], {"type": "text", "text": "Continue where you left off."}]}
    assert post(backend.url, request_body("", stream=False, messages=[first]))[0] == 429
    clock[0] = 1004.0  # past the reset
    status, raw = post(backend.url, request_body("", stream=False, messages=[merged]))
    assert status == 200, raw


def test_count_tokens_matches_message_usage(backend: DemoBackend) -> None:
    """count_tokens reports the input tokens a message would be billed for."""
    body = request_body("what is 6*7", stream=False)
    status, raw = post(backend.url, body, "/v1/messages/count_tokens")
    assert status == 200
    billed = message(backend.url, "what is 6*7")["usage"]["input_tokens"]
    assert json.loads(raw)["input_tokens"] == billed


@pytest.mark.parametrize(
    ("prompt", "status", "error_type"),
    [
        ("error 529", 529, "overloaded_error"),
        ("the API is overloaded", 529, "overloaded_error"),
        ("error 500", 500, "api_error"),
        ("error 429", 429, "rate_limit_error"),
        ("error 401", 401, "authentication_error"),
    ],
)
def test_error_prompts_return_api_errors(
    backend: DemoBackend, prompt: str, status: int, error_type: str
) -> None:
    """Error prompts return the status code and the Anthropic error JSON."""
    got, raw = post(backend.url, request_body(prompt, stream=True))
    assert got == status
    assert json.loads(raw) == {
        "type": "error",
        "error": {"type": error_type, "message": json.loads(raw)["error"]["message"]},
    }
    if status == 529:
        assert json.loads(raw)["error"]["message"] == "Overloaded"


def test_story_has_exact_word_count_in_many_deltas(backend: DemoBackend) -> None:
    """A story arrives as many text deltas whose words add up exactly."""
    deltas = text_deltas(stream(backend.url, "write a 1234 word story"))
    assert len(deltas) > 100
    assert len("".join(deltas).split()) == 1234


def test_story_is_paced(backend: DemoBackend) -> None:
    """Words per second in the prompt sets a lower bound on the stream's length."""
    started = time.monotonic()
    deltas = text_deltas(stream(backend.url, "a 100 word story at 400 words per second"))
    assert time.monotonic() - started >= 0.2
    assert len("".join(deltas).split()) == 100


def test_huge_reply_is_one_delta_without_newlines(backend: DemoBackend) -> None:
    """The huge reply is a single text delta of exactly the asked size."""
    deltas = text_deltas(stream(backend.url, "huge reply of 300000 bytes"))
    assert deltas == [huge_text(300_000)]
    assert "\n" not in deltas[0] and len(deltas[0]) == 300_000


def test_think_sends_nothing_before_the_delay(backend: DemoBackend) -> None:
    """Not even the status line arrives before the think time has passed."""
    request = urllib.request.Request(
        backend.url + "/v1/messages",
        data=json.dumps(request_body("think for 0.6 seconds", stream=True)).encode(),
        method="POST",
    )
    started = time.monotonic()
    # urlopen returns as soon as the status line and headers are in.
    with urllib.request.urlopen(request, timeout=scaled(30)) as response:
        first_byte = time.monotonic() - started
        events = parse_sse(response.read())
    assert first_byte >= 0.55
    kinds = [data["delta"]["type"] for name, data in events if name == "content_block_delta"]
    assert kinds == ["thinking_delta", "signature_delta", "text_delta"]


def test_the_backend_keeps_only_its_newest_requests() -> None:
    """A long-lived backend (a kernel's, all day) keeps the newest ``keep_requests`` records, not all."""
    with DemoBackend(settings=DemoSettings(words_per_second=100_000), keep_requests=3) as small:
        for n in range(5):
            message(small.url, f"echo: {n}")
        assert [record.prompt for record in small.requests] == ["echo: 2", "echo: 3", "echo: 4"]
    assert DemoBackend().keep_requests == 256


def test_requests_are_served_concurrently(backend: DemoBackend) -> None:
    """A slow request does not hold up a quick one."""
    slow = threading.Thread(target=stream, args=(backend.url, f"think for {scaled(1.0):g} seconds"))
    slow.start()
    try:
        eventually(backend.requests_in_flight, what="the slow request in flight")
        assert reply_text(backend.url, "echo: quick") == "quick"
        assert slow.is_alive(), "the quick reply came only after the slow one"
    finally:
        slow.join()


def test_stop_cuts_a_silent_request_short() -> None:
    """stop() returns promptly even while a request is in its silent phase."""
    running = DemoBackend(settings=DemoSettings(think_seconds=30)).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            stream(running.url, "think hard")
        except Exception as error:  # the connection closing is the point
            errors.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    eventually(running.requests_in_flight, what="the request in flight")
    started = time.monotonic()
    running.stop()
    running.stop()
    caller.join(timeout=scaled(10))
    assert not caller.is_alive()
    assert time.monotonic() - started < scaled(5)
    assert errors


def test_tool_use_then_final_text(backend: DemoBackend) -> None:
    """The tool scenario calls Bash, then answers from the tool result."""
    first = message(backend.url, "use a tool")
    call = first["content"][-1]
    assert first["stop_reason"] == "tool_use"
    assert (call["type"], call["name"], call["input"]["command"]) == ("tool_use", "Bash", "echo hi")
    result = {"type": "tool_result", "tool_use_id": call["id"], "content": "hi"}
    messages = [
        {"role": "user", "content": "use a tool"},
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": [result]},
    ]
    status, raw = post(backend.url, {"model": "m", "max_tokens": 100, "messages": messages})
    assert status == 200
    assert json.loads(raw)["content"] == [{"type": "text", "text": "The command printed: hi"}]


def test_unknown_paths_and_bad_bodies_get_api_errors(backend: DemoBackend) -> None:
    """Unknown endpoints answer 404, malformed bodies 400, both as error JSON."""
    status, raw = post(backend.url, request_body("hi", stream=False), "/v1/complete")
    assert (status, json.loads(raw)["error"]["type"]) == (404, "not_found_error")
    for body in (b"not json", b'{"model": "m"}'):
        status, raw = post(backend.url, body)
        assert (status, json.loads(raw)["error"]["type"]) == (400, "invalid_request_error")


def test_module_runs_in_the_foreground() -> None:
    """`python -m cc_executor_nb.demo` prints its URL, serves, and exits on SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cc_executor_nb.demo", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        assert reply_text(url, "echo: up") == "up"
    finally:
        process.terminate()
        assert process.wait(timeout=scaled(10)) == 0
        if process.stdout is not None:
            process.stdout.close()


# Environment and executable lookup


def test_demo_environment_isolates_the_cli(tmp_path: Path) -> None:
    """The env points at the mock, uses a private config and blocks other traffic."""
    config = tmp_path / "config"
    env = demo_environment(
        "http://127.0.0.1:1", str(config), max_retries=0, trusted_dirs=[tmp_path]
    )
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1"
    assert env["CLAUDE_CONFIG_DIR"] == str(config)
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "0"
    saved = json.loads((config / ".claude.json").read_text())
    assert saved["hasCompletedOnboarding"] is True
    assert saved["projects"][str(tmp_path.resolve())]["hasTrustDialogAccepted"] is True


def test_demo_config_keeps_what_the_cli_wrote(tmp_path: Path) -> None:
    """Seeding the config again preserves state the CLI stored there."""
    (tmp_path / ".claude.json").write_text(json.dumps({"userID": "abc", "numStartups": 3}))
    demo_environment("http://127.0.0.1:1", str(tmp_path))
    saved = json.loads((tmp_path / ".claude.json").read_text())
    assert (saved["userID"], saved["numStartups"]) == ("abc", 3)
    assert saved["hasCompletedOnboarding"] is True


def test_find_claude_prefers_the_configured_path(tmp_path: Path) -> None:
    """A configured executable wins; a missing one raises with install advice."""
    fake = tmp_path / "claude"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_claude(str(fake)) == str(fake)
    with pytest.raises(FileNotFoundError, match="npm ci"):
        find_claude(str(tmp_path / "missing"))


def test_find_claude_explains_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With nothing installed the error names both npm install commands."""
    monkeypatch.setattr("cc_executor_nb.claude.executable._local_candidates", list)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="npm install -g @anthropic-ai/claude-code"):
        find_claude()


def test_normalize_makes_recordings_stable() -> None:
    """Temp paths, project slugs, socket names and the port are replaced."""
    raw = "cwd /tmp/tmpab_1/work, -tmp-tmpab-1-work, /tmp/cc-socks/42.sock, 127.0.0.1:5555"
    expected = "cwd /tmp/demo/work, -tmp-demo-work, /tmp/demo/messaging.sock, 127.0.0.1:PORT"
    assert normalize(raw, ["/tmp/tmpab_1"], "http://127.0.0.1:5555") == expected


def test_recordings_are_complete_and_small() -> None:
    """Every recorded stream-json file parses and ends with a result event."""
    paths = sorted(RECORDINGS_DIR.glob("*.jsonl"))
    assert paths
    for path in paths:
        assert path.stat().st_size < 100_000, path
        events = [json.loads(line) for line in path.read_text().splitlines()]
        assert events[0]["subtype"] == "init" and events[-1]["type"] == "result", path


# The real CLI against the mock


@pytest.fixture
def claude() -> str:
    if not LOCAL_CLAUDE.exists():
        pytest.skip("node_modules/.bin/claude is absent: run `npm ci` in the project root")
    return str(LOCAL_CLAUDE)


def run_cli(
    claude: str, backend: DemoBackend, tmp_path: Path, prompt: str, max_retries: int | None = None
) -> tuple[list[dict[str, Any]], subprocess.CompletedProcess[bytes]]:
    """Run one prompt through the real CLI; return its events and the process."""
    env = demo_environment(backend.url, str(tmp_path / "config"), max_retries=max_retries)
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    completed = run_claude(claude_argv(claude, prompt), env, str(workdir), timeout=scaled(50))
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    assert events and events[-1]["type"] == "result", completed.stderr
    return events, completed


def cli_deltas(events: list[dict[str, Any]]) -> list[str]:
    return [
        event["event"]["delta"]["text"]
        for event in events
        if event["type"] == "stream_event"
        and event["event"]["type"] == "content_block_delta"
        and event["event"]["delta"]["type"] == "text_delta"
    ]


@pytest.mark.claude
def test_claude_echo(claude: str, backend: DemoBackend, tmp_path: Path) -> None:
    """The real CLI gets the echo reply and reports success with a cost."""
    events, completed = run_cli(claude, backend, tmp_path, "echo: XYZ")
    result = events[-1]
    assert completed.returncode == 0
    assert (result["subtype"], result["is_error"], result["result"]) == ("success", False, "XYZ")
    assert result["total_cost_usd"] > 0
    assert [record.scenario for record in backend.requests] == ["echo"]


@pytest.mark.claude
def test_claude_arithmetic(claude: str, backend: DemoBackend, tmp_path: Path) -> None:
    """The real CLI relays the computed answer."""
    events, _ = run_cli(claude, backend, tmp_path, "what is 2+2")
    assert events[-1]["result"] == "4"


@pytest.mark.claude
def test_claude_story_word_count(claude: str, backend: DemoBackend, tmp_path: Path) -> None:
    """A 5000-word story survives the CLI with exactly 5000 words."""
    events, _ = run_cli(claude, backend, tmp_path, "write a 5000 word story")
    assert len(events[-1]["result"].split()) == 5000
    assert len("".join(cli_deltas(events)).split()) == 5000


@pytest.mark.claude
def test_claude_huge_single_line(claude: str, backend: DemoBackend, tmp_path: Path) -> None:
    """A 2 MB reply arrives whole, as one delta on one stdout line."""
    events, _ = run_cli(claude, backend, tmp_path, "huge reply of 2000000 bytes")
    expected = huge_text(2_000_000)
    assert cli_deltas(events) == [expected]
    assert events[-1]["result"] == expected


@pytest.mark.claude
def test_claude_overloaded_error(claude: str, backend: DemoBackend, tmp_path: Path) -> None:
    """A 529 becomes an error result once retries are exhausted."""
    events, completed = run_cli(claude, backend, tmp_path, "error 529", max_retries=1)
    result = events[-1]
    assert completed.returncode == 1
    assert (result["subtype"], result["is_error"]) == ("success", True)
    assert (result["api_error_status"], result["api_error_type"]) == (529, "overloaded_error")
    retries = [event for event in events if event.get("subtype") == "api_retry"]
    assert [(event["attempt"], event["error_status"]) for event in retries] == [(1, 529)]
    assert len(backend.requests) == 2


@pytest.mark.claude
def test_claude_leading_dash_prompt(claude: str, backend: DemoBackend, tmp_path: Path) -> None:
    """After `--`, a prompt starting with dashes is sent literally, not parsed."""
    events, completed = run_cli(claude, backend, tmp_path, "--foo bar")
    assert completed.returncode == 0 and events[-1]["subtype"] == "success"
    assert [record.prompt for record in backend.requests] == ["--foo bar"]


@pytest.mark.claude
def test_claude_survives_a_silent_api(claude: str, backend: DemoBackend, tmp_path: Path) -> None:
    """Seconds without a single byte from the API do not make the CLI give up."""
    events, _ = run_cli(claude, backend, tmp_path, "think for 3 seconds")
    assert events[-1]["result"] == "Done thinking. The answer is 42."
    assert events[-1]["duration_api_ms"] >= 3000


@pytest.mark.parametrize("module", [
    "cc_executor_nb.demo", "cc_executor_nb.demo.selftest", "cc_executor_nb.demo.record", "cc_executor_nb.demo.runner",
])
def test_a_demo_tools_bad_flag_is_one_line(module: str) -> None:
    """A demo tool's bad flag prints one line, exit 2 (argparse printed its whole usage block before it)."""
    done = subprocess.run([sys.executable, "-m", module, "--bogus"],
                          check=False, capture_output=True, text=True, timeout=scaled(30))
    assert (done.returncode, done.stderr) == (2, "error: unrecognized arguments: --bogus (see --help)\n")
