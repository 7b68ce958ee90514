"""Tests for the pure stream-json parser: line splitting, events, errors, fuzzing, recordings."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc_executor_nb.claude import streamjson
from cc_executor_nb.claude.control import ControlAnswer, PermissionAsked, RequestWithdrawn
from cc_executor_nb.claude.streamjson import (
    AnswerBudget,
    ApiRetry,
    ClaudeRun,
    Cut,
    LineSplitter,
    Thought,
    ToolCall,
    TurnEnded,
    summary,
)
from cc_executor_nb.targets import Progress

RECORDINGS = Path(__file__).parent / "data" / "streamjson"


def line(**event: Any) -> str:
    """One stream-json line."""
    return json.dumps(event)


def stream(inner: dict[str, Any], parent: str | None = None) -> str:
    """A stream_event line wrapping one raw API event."""
    return line(
        type="stream_event", event=inner, session_id="s1", parent_tool_use_id=parent, uuid="u"
    )


def start(message_id: str) -> str:
    """message_start for a message id."""
    return stream(
        {
            "type": "message_start",
            "message": {"id": message_id, "model": "claude-test", "content": []},
        }
    )


def block_start(index: int, block: dict[str, Any]) -> str:
    """content_block_start at an index."""
    return stream({"type": "content_block_start", "index": index, "content_block": block})


def delta(index: int, kind: str, **fields: Any) -> str:
    """content_block_delta of a given delta type."""
    return stream(
        {"type": "content_block_delta", "index": index, "delta": {"type": kind, **fields}}
    )


def stop(index: int) -> str:
    """content_block_stop at an index."""
    return stream({"type": "content_block_stop", "index": index})


def assistant(message_id: str, *content: dict[str, Any], parent: str | None = None) -> str:
    """An assistant message with content blocks."""
    message = {
        "id": message_id,
        "model": "claude-test",
        "role": "assistant",
        "content": list(content),
    }
    return line(type="assistant", message=message, parent_tool_use_id=parent, session_id="s1")


def text(value: str) -> dict[str, Any]:
    """A text content block."""
    return {"type": "text", "text": value}


def init() -> str:
    """A system/init line."""
    return line(
        type="system",
        subtype="init",
        session_id="s1",
        model="claude-test",
        tools=["Bash", "Read"],
        cwd="/w",
    )


def result(**fields: Any) -> str:
    """A result line with success defaults."""
    event = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "",
        "session_id": "s1",
    }
    return line(**{**event, **fields})


def run_of(*lines: str) -> ClaudeRun:
    """A run fed the given lines."""
    run = ClaudeRun()
    for each in lines:
        run.feed_line(each)
    return run


def streamed_text(message_id: str, *pieces: str) -> list[str]:
    """The stream events of a message with one text block made of pieces."""
    deltas = [delta(0, "text_delta", text=piece) for piece in pieces]
    return [start(message_id), block_start(0, text("")), *deltas]


# LineSplitter


def test_splitter_returns_complete_lines_and_keeps_partial() -> None:
    """Complete lines come out; the unfinished tail waits for its newline."""
    splitter = LineSplitter()
    assert splitter.feed("a\nb\nc") == ["a", "b"]
    assert splitter.feed("d\n") == ["cd"]


def test_splitter_chunk_without_newline_returns_nothing() -> None:
    """A chunk with no newline only grows the pending line."""
    splitter = LineSplitter()
    assert (splitter.feed("abc"), splitter.pending) == ([], 3)


def test_splitter_flush_returns_rest_once() -> None:
    """flush returns the unfinished line, then nothing."""
    splitter = LineSplitter()
    splitter.feed("x\nrest")
    assert (splitter.flush(), splitter.flush(), splitter.pending) == ("rest", "", 0)


def test_splitter_strips_carriage_returns() -> None:
    """CRLF line endings yield lines without the CR."""
    assert LineSplitter().feed("a\r\nb\r\n") == ["a", "b"]


def test_splitter_joins_megabyte_line_from_pieces() -> None:
    """A 5 MB line fed in 64 KiB pieces comes out whole and only once."""
    big = "x" * (5 * 1024 * 1024)
    splitter = LineSplitter()
    pieces = [big[i : i + 65536] for i in range(0, len(big), 65536)]
    out = [found for piece in pieces for found in splitter.feed(piece)] + splitter.feed("\n")
    assert out == [big]


# init, text, thinking


def test_init_sets_session_model_tools_cwd() -> None:
    """system/init fills session_id, model, tools and cwd."""
    run = run_of(init())
    assert (run.session_id, run.model, run.tools, run.cwd) == (
        "s1",
        "claude-test",
        ["Bash", "Read"],
        "/w",
    )


def test_text_deltas_accumulate_live() -> None:
    """Text deltas of the current message build the text while it streams."""
    run = run_of(*streamed_text("m1", "Hel", "lo ", "world"))
    assert (run.text, run.phase) == ("Hello world", "writing")


def test_assistant_message_replaces_deltas() -> None:
    """The assistant message's text is authoritative over the deltas."""
    run = run_of(*streamed_text("m1", "Helo wrld"), stop(0), assistant("m1", text("Hello world")))
    assert run.text == "Hello world"


def test_midway_failed_stream_is_replaced_by_final_message() -> None:
    """Partial deltas of a failed stream vanish when the non-streamed retry arrives."""
    run = run_of(*streamed_text("m1", "The ans"), assistant("m2", text("The answer is 42.")))
    assert run.text == "The answer is 42."


def test_restreamed_message_drops_unconfirmed_partial() -> None:
    """A new message_start forgets an earlier message that was never confirmed."""
    run = run_of(*streamed_text("m1", "The ans"), *streamed_text("m2", "The answer"))
    assert run.text == "The answer"


def test_confirmed_message_survives_next_message_start() -> None:
    """A message confirmed by an assistant event stays when the next one starts."""
    run = run_of(
        *streamed_text("m1", "One."), assistant("m1", text("One.")), *streamed_text("m2", "Two")
    )
    assert run.text == "One.\n\nTwo"


def test_split_assistant_events_confirm_blocks_in_order() -> None:
    """One assistant event per block confirms each block at its position."""
    run = run_of(
        start("m1"),
        block_start(0, {"type": "thinking", "thinking": ""}),
        delta(0, "thinking_delta", thinking="let me see"),
        stop(0),
        assistant("m1", {"type": "thinking", "thinking": "let me see"}),
        block_start(1, text("")),
        delta(1, "text_delta", text="Answ"),
    )
    assert (run.thinking, run.text) == ("let me see", "Answ")


def test_thinking_deltas_accumulate() -> None:
    """Thinking deltas build the thinking text and set the thinking phase."""
    run = run_of(
        start("m1"),
        block_start(0, {"type": "thinking", "thinking": ""}),
        delta(0, "thinking_delta", thinking="Hmm, "),
        delta(0, "thinking_delta", thinking="two plus two."),
    )
    assert (run.thinking, run.phase, run.text) == ("Hmm, two plus two.", "thinking", "")


def test_empty_confirmed_thinking_keeps_streamed_thinking() -> None:
    """A thinking block confirmed with empty text keeps what was streamed."""
    run = run_of(
        start("m1"),
        block_start(0, {"type": "thinking", "thinking": ""}),
        delta(0, "thinking_delta", thinking="secret sauce"),
        assistant("m1", {"type": "thinking", "thinking": "", "signature": "sig"}),
    )
    assert run.thinking == "secret sauce"


def test_signature_delta_changes_nothing_visible() -> None:
    """A signature delta adds no text or thinking."""
    run = run_of(
        start("m1"),
        block_start(0, {"type": "thinking", "thinking": "a"}),
        delta(0, "signature_delta", signature="zz"),
    )
    assert (run.thinking, run.text) == ("a", "")


def test_multi_turn_texts_join_with_blank_lines() -> None:
    """Texts of several assistant messages are joined by a blank line."""
    run = run_of(assistant("m1", text("Let me check.")), assistant("m2", text("It is 4.")))
    assert run.text == "Let me check.\n\nIt is 4."


def test_answer_is_result_text_when_present() -> None:
    """answer is the result's text, not the whole transcript."""
    run = run_of(
        assistant("m1", text("Let me check.")),
        assistant("m2", text("It is 4.")),
        result(result="It is 4."),
    )
    assert (run.answer, run.text) == ("It is 4.", "Let me check.\n\nIt is 4.")


def test_answer_falls_back_to_text_before_result() -> None:
    """Before the result, answer is the live text."""
    assert run_of(*streamed_text("m1", "So far")).answer == "So far"


def test_subagent_text_is_not_part_of_answer() -> None:
    """Assistant text and deltas with a parent_tool_use_id stay out of text."""
    run = run_of(
        assistant("m9", text("sub says"), parent="toolu_1"),
        stream({"type": "message_start", "message": {"id": "m8"}}, parent="toolu_1"),
        assistant("m1", text("main says")),
    )
    assert run.text == "main says"


def test_string_content_counts_as_text() -> None:
    """An assistant message whose content is a bare string is text."""
    run = run_of(line(type="assistant", message={"id": "m1", "content": "plain"}))
    assert run.text == "plain"


# result


def test_success_result_fills_totals() -> None:
    """A success result sets cost, usage, turns, durations and the done phase."""
    usage = {
        "input_tokens": 12,
        "output_tokens": 34,
        "cache_read_input_tokens": 5000,
        "cache_creation_input_tokens": 70,
    }
    run = run_of(
        init(),
        result(
            result="4",
            total_cost_usd=0.0123,
            usage=usage,
            num_turns=2,
            duration_ms=4567,
            duration_api_ms=4000,
        ),
    )
    facts = (
        run.is_error,
        run.cost_usd,
        run.usage,
        run.num_turns,
        run.duration_ms,
        run.duration_api_ms,
        run.phase,
    )
    assert facts == (False, 0.0123, usage, 2, 4567, 4000, "done")


def test_api_error_result_is_error_despite_success_subtype() -> None:
    """subtype success with is_error true and api_error_status 529 is a failed run."""
    message = (
        'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    )
    run = run_of(result(is_error=True, result=message, api_error_status=529))
    assert (run.is_error, run.api_error_status, run.subtype) == (True, 529, "success")


def test_api_error_answer_is_plain_message() -> None:
    """The answer of an API error carries the error message without the JSON blob."""
    message = (
        'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    )
    run = run_of(result(is_error=True, result=message, api_error_status=529))
    assert run.answer == "API Error: 529 Overloaded"


def test_api_error_status_read_from_text_when_missing() -> None:
    """Without api_error_status the status is taken from 'API Error: NNN' text."""
    run = run_of(result(is_error=True, result="API Error: 429 rate limited"))
    assert run.api_error_status == 429


def test_error_subtype_without_result_uses_errors_list() -> None:
    """error_during_execution shows its errors list as the answer."""
    run = run_of(
        line(
            type="result", subtype="error_during_execution", is_error=True, errors=["boom", "bang"]
        )
    )
    assert (run.is_error, run.answer) == (True, "boom\nbang")


def test_max_turns_error_is_explained() -> None:
    """error_max_turns without text says the turn limit was reached."""
    run = run_of(line(type="result", subtype="error_max_turns", is_error=False, num_turns=3))
    assert (run.is_error, run.answer) == (
        True,
        "Stopped after reaching the maximum number of turns (3).",
    )


def test_synthetic_model_name_is_ignored() -> None:
    """An API-error message's '<synthetic>' model does not become the run's model."""
    run = run_of(
        line(type="assistant", message={"id": "m1", "model": "<synthetic>", "content": [text("x")]})
    )
    assert run.model is None


def test_model_taken_from_model_usage_if_unknown() -> None:
    """Without init, the model comes from the result's modelUsage."""
    run = run_of(result(modelUsage={"claude-haiku": {"inputTokens": 1}}))
    assert run.model == "claude-haiku"


def test_summary_reports_footer_facts() -> None:
    """summary gathers status, cost, tokens, turns, duration, model and session."""
    usage = {
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_read_input_tokens": 3,
        "cache_creation_input_tokens": 4,
    }
    run = run_of(
        init(), result(result="ok", total_cost_usd=0.5, usage=usage, num_turns=1, duration_ms=10)
    )
    facts = summary(run)
    expected = {
        "status": "success",
        "cost_usd": 0.5,
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_read_tokens": 3,
        "cache_creation_tokens": 4,
        "turns": 1,
        "duration_ms": 10,
        "model": "claude-test",
        "session_id": "s1",
    }
    assert {key: facts[key] for key in expected} == expected


def test_summary_status_running_then_error() -> None:
    """summary's status is running before the result and error after a failed one."""
    run = run_of(init())
    before = summary(run)["status"]
    run.feed_line(result(is_error=True, result="API Error: 500 x"))
    assert (before, summary(run)["status"]) == ("running", "error")


# api_retry


def test_api_retry_fields_are_parsed() -> None:
    """system/api_retry becomes an ApiRetry with the delay in seconds."""
    event = {
        "type": "system",
        "subtype": "api_retry",
        "attempt": 3,
        "max_retries": 10,
        "retry_delay_ms": 4000,
        "error_status": 529,
        "error": "overloaded",
    }
    run = run_of(line(**event))
    assert run.retries == [
        ApiRetry(
            attempt=3, max_retries=10, delay_seconds=4.0, error_status=529, message="overloaded"
        )
    ]


def test_api_retry_accepts_other_spellings() -> None:
    """Alternative field names and an error object are understood."""
    event = {
        "type": "system",
        "subtype": "api_retry",
        "retryAttempt": 2,
        "maxRetries": 5,
        "delay": 1.5,
        "status": 429,
        "error": {"message": "Slow down"},
    }
    run = run_of(line(**event))
    assert run.retries == [
        ApiRetry(attempt=2, max_retries=5, delay_seconds=1.5, error_status=429, message="Slow down")
    ]


def test_api_retry_tolerates_missing_fields() -> None:
    """A bare api_retry yields an ApiRetry of Nones."""
    run = run_of(line(type="system", subtype="api_retry", error_status=None))
    assert run.retries == [ApiRetry(None, None, None, None, "")]


# Tools


def tool_stream(tool_id: str = "toolu_1") -> list[str]:
    """A message streaming a Bash tool_use whose input arrives in pieces."""
    return [
        start("m1"),
        block_start(0, {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {}}),
        delta(0, "input_json_delta", partial_json='{"comm'),
        delta(0, "input_json_delta", partial_json='and": "ls -la"}'),
    ]


def test_tool_input_is_partial_json_while_streaming() -> None:
    """While streaming, a tool call's input is the partial JSON text."""
    run = run_of(*tool_stream())
    tool = run.tool_calls[0]
    assert (tool.id, tool.name, tool.input, tool.status, run.phase) == (
        "toolu_1",
        "Bash",
        '{"command": "ls -la"}',
        "pending",
        "tool",
    )


def test_tool_input_parsed_at_block_stop() -> None:
    """content_block_stop turns the streamed input into an object."""
    run = run_of(*tool_stream(), stop(0))
    assert run.tool_calls[0].input == {"command": "ls -la"}


def test_tool_result_completes_call() -> None:
    """A user tool_result sets the result text and marks the call done."""
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
    tool_result = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": "a\nb",
        "is_error": False,
    }
    run = run_of(
        *tool_stream(),
        stop(0),
        assistant("m1", tool_use),
        line(type="user", message={"role": "user", "content": [tool_result]}),
    )
    tool = run.tool_calls[0]
    assert (len(run.tool_calls), tool.input, tool.result, tool.is_error, tool.status) == (
        1,
        {"command": "ls"},
        "a\nb",
        False,
        "done",
    )


def test_tool_result_blocks_and_error_flag() -> None:
    """A list-of-blocks tool_result is joined and is_error is kept."""
    content = [
        {"type": "text", "text": "first"},
        {"type": "text", "text": "second"},
        {"type": "image"},
    ]
    tool_result = {
        "type": "tool_result",
        "tool_use_id": "toolu_9",
        "content": content,
        "is_error": True,
    }
    run = run_of(line(type="user", message={"content": [tool_result]}))
    tool = run.tool_calls[0]
    assert (tool.result, tool.is_error, tool.status) == ("first\nsecond\n[image]", True, "done")


def test_unconfirmed_streamed_tool_is_dropped_with_its_message() -> None:
    """A tool call from a failed stream disappears when another message arrives."""
    tool_use = {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"file_path": "/x"}}
    run = run_of(*tool_stream("toolu_1"), assistant("m2", tool_use))
    assert [(t.id, t.input) for t in run.tool_calls] == [("toolu_2", {"file_path": "/x"})]


def test_subagent_tool_call_records_parent() -> None:
    """A subagent's tool_use is listed with its parent_tool_use_id."""
    tool_use = {"type": "tool_use", "id": "toolu_5", "name": "Grep", "input": {"pattern": "x"}}
    run = run_of(assistant("m7", tool_use, parent="toolu_task"))
    assert run.tool_calls[0].parent_tool_use_id == "toolu_task"


# Robustness


def test_unknown_event_type_is_counted() -> None:
    """An unknown event type is counted, not raised."""
    run = run_of(line(type="mystery", x=1), stream({"type": "brand_new"}))
    assert run.unknown_events == 2


def test_non_json_line_is_kept_raw() -> None:
    """A line that is not JSON is kept in raw_lines."""
    run = run_of("Error: something went wrong", "[1, 2]")
    assert list(run.raw_lines) == ["Error: something went wrong", "[1, 2]"]


def test_raw_lines_are_bounded() -> None:
    """Only the last MAX_RAW_LINES raw lines are kept, each truncated."""
    run = run_of(*(f"junk {i}" for i in range(ClaudeRun.MAX_RAW_LINES + 5)), "y" * 5000)
    assert (len(run.raw_lines), run.raw_lines[0], len(run.raw_lines[-1])) == (
        ClaudeRun.MAX_RAW_LINES,
        "junk 6",
        ClaudeRun.MAX_RAW_LINE_CHARS + 1,
    )


def test_wrong_typed_fields_do_not_raise() -> None:
    """Fields of the wrong type are ignored without error."""
    run = run_of(
        line(type="system", subtype="init", session_id=5, model=["x"], tools="Bash", cwd=None),
        line(type="assistant", message="nope"),
        line(
            type="user",
            message={"content": [{"type": "tool_result", "tool_use_id": 3, "content": {"a": 1}}]},
        ),
        stream(
            {
                "type": "content_block_delta",
                "index": "0",
                "delta": {"type": "text_delta", "text": 7},
            }
        ),
        line(type="result", usage=[1], total_cost_usd="cheap", num_turns="2"),
    )
    assert (run.malformed_events, run.num_turns, run.cost_usd, run.usage) == (0, 2, None, {})


def test_version_bumps_per_line_but_not_for_blank() -> None:
    """Every applied line bumps version; blank lines do not."""
    run = run_of(init(), "", "   ", "junk")
    assert run.version == 2


def test_feed_splits_chunks_and_eof_applies_last_line() -> None:
    """feed handles arbitrary chunking; feed_eof applies an unterminated last line."""
    text_ = "\n".join([init(), *streamed_text("m1", "ab", "cd"), result(result="abcd")])
    run = ClaudeRun()
    for i in range(0, len(text_), 7):
        run.feed(text_[i : i + 7])
    before = run.result
    run.feed_eof()
    assert (before, run.answer, run.text) == (None, "abcd", "abcd")


def test_five_megabyte_line_in_64k_pieces(record_property: Any) -> None:
    """A 5 MB assistant line fed in 64 KiB pieces parses to the full text."""
    big = "word " * (1024 * 1024)
    data = assistant("m1", text(big)) + "\n"
    run = ClaudeRun()
    began = time.perf_counter()
    for i in range(0, len(data), 65536):
        run.feed(data[i : i + 65536])
    record_property("seconds", time.perf_counter() - began)
    assert run.text == big


def test_many_small_deltas_stay_linear() -> None:
    """Fifty thousand tiny deltas build the whole text (pieces, not repeated concatenation)."""
    run = run_of(*streamed_text("m1", *(["ab"] * 50_000)))
    assert run.text == "ab" * 50_000


# Fuzzing

# fmt: off
_KEYS = st.sampled_from([
    "type", "subtype", "event", "message", "content", "index", "delta", "text", "thinking",
    "partial_json", "id", "name", "input", "tool_use_id", "is_error", "result", "usage",
    "session_id", "model", "tools", "attempt", "max_retries", "retry_delay_ms", "error_status",
    "error", "parent_tool_use_id", "content_block", "api_error_status", "total_cost_usd",
    "num_turns", "duration_ms", "modelUsage", "errors", "request", "request_id", "response",
])
_NAMES = st.sampled_from([
    "system", "init", "api_retry", "stream_event", "assistant", "user", "result",
    "message_start", "content_block_start", "content_block_delta", "content_block_stop",
    "text_delta", "thinking_delta", "input_json_delta", "text", "thinking", "tool_use",
    "tool_result", "success", "m1", "toolu_1", "can_use_tool", "interrupt",
])
# fmt: on
_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | _NAMES
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=30,
)
_EVENTS = st.builds(
    lambda kind, rest: {**rest, "type": kind},
    st.sampled_from([
        "system", "stream_event", "assistant", "user", "result", "other",
        "control_request", "control_response", "control_cancel_request",
    ]),
    st.dictionaries(_KEYS, _VALUES, max_size=6),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def touch(run: ClaudeRun) -> None:
    """Read every derived view, which must not raise either."""
    _ = (
        run.text,
        run.thinking,
        run.tool_calls,
        run.answer,
        run.error_message,
        summary(run),
        repr(run),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), max_size=8))
def test_arbitrary_text_never_raises(chunks: list[str]) -> None:
    """Feeding arbitrary text in arbitrary chunks never raises."""
    run = ClaudeRun()
    for chunk in chunks:
        run.feed(chunk)
    run.feed_eof()
    touch(run)


@settings(max_examples=200, deadline=None)
@given(st.lists(_JSON, max_size=8))
def test_arbitrary_json_values_never_raise(values: list[Any]) -> None:
    """Arbitrary JSON values as lines never raise."""
    run = run_of(*(json.dumps(value) for value in values))
    touch(run)


@settings(max_examples=150, deadline=None)
@given(st.lists(_EVENTS, max_size=10))
def test_event_shaped_garbage_is_never_malformed(events: list[dict[str, Any]]) -> None:
    """Events of known types with fields of any shape apply without a single malformed event."""
    run = run_of(*(json.dumps(event) for event in events))
    touch(run)
    assert run.malformed_events == 0


# Recordings of the real CLI

_RECORDED = sorted(RECORDINGS.glob("*.jsonl")) if RECORDINGS.is_dir() else []


def recorded_run(path: Path) -> ClaudeRun:
    """A run fed a recording in 4 KiB chunks."""
    run = ClaudeRun()
    data = path.read_text(encoding="utf-8", errors="replace")
    for i in range(0, len(data), 4096):
        run.feed(data[i : i + 4096])
    run.feed_eof()
    return run


@pytest.mark.parametrize("path", _RECORDED, ids=lambda p: p.stem)
def test_recording_parses_to_result(path: Path) -> None:
    """A real recording parses without malformed events and reaches its result."""
    run = recorded_run(path)
    touch(run)
    assert (run.malformed_events, run.result is not None, run.phase) == (0, True, "done")


@pytest.mark.parametrize("path", _RECORDED, ids=lambda p: p.stem)
def test_recording_sets_session_and_model(path: Path) -> None:
    """A real recording yields the session id and the model."""
    run = recorded_run(path)
    assert run.session_id and run.model


@pytest.mark.parametrize("path", _RECORDED, ids=lambda p: p.stem)
def test_recording_answer_is_consistent(path: Path) -> None:
    """A successful recording's answer is in its text; a failed one has an error message."""
    run = recorded_run(path)
    if run.is_error:
        assert run.error_message
    else:
        assert run.answer and run.answer.strip() in run.text


def recording(name: str) -> ClaudeRun:
    """A named recording fed whole, skipping when it has not been recorded."""
    path = RECORDINGS / f"{name}.jsonl"
    if not path.is_file():
        pytest.skip(f"no recording {path.name}")
    return recorded_run(path)


def test_recorded_529_is_an_api_error_with_retry() -> None:
    """The recorded 529 run is an error with its status, retry and plain message."""
    run = recording("error_529")
    (retry,) = run.retries
    facts = (run.is_error, run.subtype, run.api_error_status, run.answer[:25])
    assert facts == (True, "success", 529, "API Error: 529 Overloaded")
    assert (retry.attempt, retry.error_status, retry.message) == (1, 529, "overloaded")
    assert retry.delay_seconds is not None and 0 < retry.delay_seconds < 60


def test_recorded_tool_run_has_call_and_both_turns() -> None:
    """The recorded tool run has one finished Bash call and both turns' text."""
    run = recording("tool")
    calls = [(t.name, t.input, t.result, t.status) for t in run.tool_calls]
    assert calls == [("Bash", {"command": "echo hi", "description": "Print hi"}, "hi", "done")]
    assert run.text == "I will run a command.\n\nThe command printed: hi"


def test_recorded_thinking_is_separate_from_answer() -> None:
    """The recorded thinking run keeps thinking out of the answer."""
    run = recording("think")
    assert (
        run.thinking.startswith("The user asked me")
        and run.answer == "Done thinking. The answer is 42."
    )


def test_recorded_tool_input_is_partial_mid_stream() -> None:
    """Replaying the tool recording, the call is pending right after its input delta."""
    path = RECORDINGS / "tool.jsonl"
    if not path.is_file():
        pytest.skip("no recording tool.jsonl")
    run = ClaudeRun()
    for each in path.read_text(encoding="utf-8").splitlines():
        run.feed_line(each)
        if '"input_json_delta"' in each:
            break
    tool = run.tool_calls[0]
    partial = '{"command":"echo hi","description":"Print hi"}'
    assert (tool.status, tool.input, run.phase) == ("pending", partial, "tool")


def test_thinking_tokens_estimate_is_kept() -> None:
    """system/thinking_tokens records the estimate and enters the thinking phase."""
    run = run_of(
        line(
            type="system", subtype="thinking_tokens", estimated_tokens=18, estimated_tokens_delta=18
        )
    )
    assert (run.thinking_tokens, run.phase) == (18, "thinking")


def test_late_input_delta_does_not_undo_confirmed_input() -> None:
    """An input delta after the assistant confirmed the call leaves the object input."""
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls -la"}}
    late = delta(0, "input_json_delta", partial_json="garbage")
    run = run_of(*tool_stream(), assistant("m1", tool_use), late)
    assert run.tool_calls[0].input == {"command": "ls -la"}


# Host mode: turns and control lines


def question(request_id: str = "q1", tool_use_id: str = "toolu_1") -> str:
    """A can_use_tool control request for a Bash call."""
    request = {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "touch x"},
               "tool_use_id": tool_use_id, "permission_suggestions": []}
    return line(type="control_request", request_id=request_id, request=request)


def conversation(*turns: tuple[str, list[str]]) -> ClaudeRun:
    """A run fed turn by turn: each prompt begins a turn, then its lines."""
    run = ClaudeRun()
    for prompt, lines in turns:
        run.begin_turn(prompt)
        for each in lines:
            run.feed_line(each)
    return run


def test_control_lines_become_signals_not_unknown_events() -> None:
    """Questions, withdrawals and answers are queued as signals, in order, and counted as known."""
    run = run_of(
        question("q1"),
        line(type="control_cancel_request", request_id="q1"),
        line(type="control_response", response={"subtype": "success", "request_id": "init-1", "response": {}}),
    )
    signals = run.take_signals()
    assert [type(s) for s in signals] == [PermissionAsked, RequestWithdrawn, ControlAnswer]
    assert run.unknown_events == 0 and run.take_signals() == []


def test_a_control_line_without_an_id_is_dropped() -> None:
    """A control request without an id cannot be answered: no signal, no error."""
    run = run_of(line(type="control_request", request={"subtype": "can_use_tool"}))
    assert run.take_signals() == [] and run.malformed_events == 0 and run.unknown_events == 0


def test_each_result_ends_its_turn_with_a_signal() -> None:
    """Every result (one per turn) is a TurnEnded signal and the turn's own result."""
    run = conversation(
        ("first", [init(), *streamed_text("m1", "one"), assistant("m1", text("one")), result(result="one")]),
        ("second", [init(), *streamed_text("m2", "two"), assistant("m2", text("two")), result(result="two")]),
    )
    ends = [s for s in run.take_signals() if isinstance(s, TurnEnded)]
    assert [e.result["result"] for e in ends] == ["one", "two"]
    assert [t.result["result"] for t in run.turns if t.result] == ["one", "two"]


def test_repeated_init_keeps_the_session() -> None:
    """system/init comes again at each turn: the session id stays, nothing is counted as bad."""
    run = conversation(("a", [init(), result(result="1")]), ("b", [init(), result(result="2")]))
    assert run.session_id == "s1" and run.unknown_events == 0 and run.malformed_events == 0


def test_turn_views_split_text_and_tools_by_turn() -> None:
    """Each turn has its own prompt, text, tool calls and result."""
    run = conversation(
        ("list files", [*tool_stream("toolu_a"), assistant("m0", {"type": "tool_use", "id": "toolu_a",
                                                                      "name": "Bash", "input": {}}),
                        *streamed_text("m1", "listed"), assistant("m1", text("listed")), result(result="listed")]),
        ("now count", [*streamed_text("m2", "three"), assistant("m2", text("three")), result(result="three")]),
    )
    first, second = run.turn_views()
    assert (first.prompt, first.text, [t.id for t in first.tools], first.answer) == (
        "list files", "listed", ["toolu_a"], "listed")
    assert (second.prompt, second.text, second.tools, second.answer) == ("now count", "three", (), "three")


def test_turn_views_split_thinking_by_turn_and_mark_the_live_one() -> None:
    """Each turn has its own thinking; the turn thinking now carries the CLI's estimate, the
    others None; ``run.thinking`` is still every turn's thinking joined."""
    thought = {"type": "thinking", "thinking": "first thought"}
    run = conversation(
        ("a", [assistant("t0", thought), assistant("m0", text("one")), result(result="one")]),
        ("b", [assistant("m1", text("two")), result(result="two")]),
        ("c", [line(type="system", subtype="thinking_tokens", estimated_tokens=42), start("t2"),
               block_start(0, {"type": "thinking", "thinking": ""}), delta(0, "thinking_delta", thinking="now")]),
    )
    views = run.turn_views()
    assert [(v.thinking, v.thinking_estimate) for v in views] == [("first thought", None), ("", None), ("now", 42)]
    assert run.thinking == "first thought\n\nnow"


def test_turn_views_place_each_tool_call_among_the_turns_text() -> None:
    """A call stands after the text blocks that came before it in the stream (its message's
    earlier blocks and earlier messages'), a subagent's call where the call before it stands."""
    call = {"type": "tool_use", "id": "toolu_a", "name": "Task", "input": {}}
    inner = {"type": "tool_use", "id": "toolu_sub", "name": "Bash", "input": {}}
    run = conversation(("go", [
        assistant("m0", text("first"), call), assistant("s0", inner, parent="toolu_a"),
        assistant("m1", text("second")), assistant("m2", text("third"),
                                                   {"type": "tool_use", "id": "toolu_b", "name": "Bash", "input": {}}),
        assistant("m3", text("last")), result(result="last"),
    ]))
    (view,) = run.turn_views()
    assert view.texts == ("first", "second", "third", "last")
    assert [(tool.id, place) for tool, place in zip(view.tools, view.tool_places, strict=True)] == [
        ("toolu_a", 1), ("toolu_sub", 1), ("toolu_b", 3)]


def test_an_answer_budget_cuts_the_text_in_reading_order_and_keeps_every_tool_call() -> None:
    """A budget of 7 over "first", a call, "second", a call, "last" then a turn "next": "first",
    the call, "se" and a cut of the 8 characters left of the turn ("cond" and "last"), the
    later call; the next turn is all cut."""
    one, two = ToolCall("a", "Bash", {}), ToolCall("b", "Bash", {})
    budget = AnswerBudget(7)
    assert budget.spend(["first", (one,), "second", (two,), "last"]) == ["first", (one,), "se", Cut(8), (two,)]
    assert budget.spend(["next"]) == ["", Cut(4)]
    assert AnswerBudget(None).spend(["first", (one,)]) == ["first", (one,)]


def test_answer_follows_the_open_turn() -> None:
    """While a later turn runs, the answer is that turn's text so far, not the last result."""
    run = conversation(("a", [*streamed_text("m1", "old"), assistant("m1", text("old")), result(result="old")]))
    run.begin_turn("b")
    assert run.turn_open and run.answer == "" and summary(run)["status"] == "running"
    for each in streamed_text("m2", "ne", "w"):
        run.feed_line(each)
    assert run.answer == "new"
    run.feed_line(result(result="new"))
    assert not run.turn_open and run.answer == "new" and summary(run)["status"] == "success"



def test_the_open_turns_answer_is_its_turn_views_text() -> None:
    """The answer of a running third turn (read without building the other turns) is its turn
    view's text: its messages around a tool call, none of the earlier turns'."""
    run = conversation(
        ("a", [*streamed_text("m1", "one"), assistant("m1", text("one")), result(result="one")]),
        ("b", [*streamed_text("m2", "two"), assistant("m2", text("two")), result(result="two")]),
        ("c", [*streamed_text("m3", "before"), assistant("m3", text("before")), *tool_stream("toolu_c"),
               *streamed_text("m4", "af", "ter")]),
    )
    assert run.answer == run.turn_views()[-1].text == "before\n\nafter"


def test_after_a_delta_only_the_message_that_grew_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversation's text and turns are read at each render of its widget: after one more
    delta, or the confirmation of the streaming message, only that message's blocks are read
    again (every message's were), and the text has the change."""
    run = conversation(*[
        (f"p{i}", [*streamed_text(f"m{i}", f"answer {i}"), assistant(f"m{i}", text(f"answer {i}")),
                   result(result=f"answer {i}")])
        for i in range(5)
    ])
    run.begin_turn("last")
    for each in streamed_text("live", "part"):
        run.feed_line(each)
    assert run.turn_views()[-1].text == "part" and run.text.endswith("answer 4\n\npart")
    read: list[str] = []
    blocks = streamjson._message_blocks
    monkeypatch.setattr(streamjson, "_message_blocks", lambda message: read.append(message.id) or blocks(message))
    run.feed_line(delta(0, "text_delta", text="ly"))
    assert run.text.endswith("\n\npartly") and run.turn_views()[-1].text == "partly"
    run.feed_line(assistant("live", text("partly done")))
    assert run.text.endswith("\n\npartly done") and run.answer == "partly done"
    assert read == ["live", "live"]


def test_an_interrupted_turns_words_stay_with_it_when_the_next_turn_streams() -> None:
    """The CLI never confirms a message it was interrupted in: its streamed words stay in their
    turn (they vanished from it, and from the page, once the next turn's first message began)."""
    run = conversation(("first", [*streamed_text("m1", "one"), assistant("m1", text("one")), result(result="one")]))
    run.begin_turn("second")
    for each in streamed_text("m2", "partial words"):
        run.feed_line(each)
    run.note_interrupt()
    run.feed_line(result(subtype="error_during_execution", is_error=True, result=None))
    run.begin_turn("third")
    for each in streamed_text("m3", "three"):
        run.feed_line(each)
    views = run.turn_views()
    assert [view.text for view in views] == ["one", "partial words", "three"]
    assert views[1].interrupted and "partial words" in run.text


def test_an_interrupted_turn_is_marked() -> None:
    """note_interrupt marks the open turn; its error result keeps the partial text."""
    run = conversation(("story", streamed_text("m1", "Once upon")))
    run.note_interrupt()
    run.feed_line(result(subtype="error_during_execution", is_error=True, result=None))
    (turn,) = run.turn_views()
    assert turn.interrupted and turn.is_error and turn.answer == "Once upon"


def test_an_interrupted_runs_answer_is_its_text_not_the_clis_diagnostic() -> None:
    """The CLI's result text for an interrupt is a diagnostic; the answer is what came before it."""
    run = conversation(("story", streamed_text("m1", "Once upon")))
    run.note_interrupt()
    run.feed_line(result(subtype="error_during_execution", is_error=True,
                         errors=["[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"]))
    assert run.interrupted and run.is_error
    assert (run.answer, run.error_message) == ("Once upon", "Interrupted.")


def test_an_interrupted_runs_html_footer_says_interrupted_not_failed() -> None:
    """The HTML footer reads "interrupted" as the badge and the text footer do (it read "failed")."""
    from cc_executor_nb.claude.render import render_footer_html

    run = conversation(("story", streamed_text("m1", "Once upon")))
    run.note_interrupt()
    run.feed_line(result(subtype="error_during_execution", is_error=True, result=None))
    footer = render_footer_html(run, process_ended=True)
    assert ">interrupted · " in footer and "failed" not in footer


def interrupted_story(words: int) -> Any:
    """An interpreter whose "write a WORDS word story" was interrupted after six words."""
    from cc_executor_nb.claude.interpreter import ClaudeInterpreter

    interpreter = ClaudeInterpreter(prompt=f"write a {words} word story")
    interpreter.begin_turn(f"write a {words} word story")
    for line in streamed_text("m1", "Once upon a time there was"):
        interpreter.feed("stdout", line + "\n")
    interpreter.note_interrupt()
    interpreter.feed("stdout", result(subtype="error_during_execution", is_error=True, result=None) + "\n")
    return interpreter


def test_an_interrupted_story_keeps_its_real_progress() -> None:
    """A 3000-word story interrupted after a few words: its progress stays a few words' worth
    at its end (it read 100 %: any end counted as all the prompt asked for)."""

    progress = interrupted_story(3000).progress(time.time(), True)
    assert progress is not None and progress.fraction is not None and progress.fraction < 0.01


def test_an_interrupted_story_has_no_time_left() -> None:
    """A story interrupted half way: its bar keeps its fraction but not its time left (the widget
    read "47% · about 13 s left" under "Interrupted" until the conversation ended)."""

    progress = interrupted_story(12).progress(time.monotonic() + 60, True)
    assert progress is not None and progress.fraction == 0.5 and progress.eta_seconds is None


def test_a_follow_up_without_a_target_has_no_progress_of_the_turn_before() -> None:
    """A follow-up that asks for no count ("what is 6*7") after a 1,500-word story: no estimate,
    so the widget's bar goes (it kept the story's "47% · about 13 s left" under the new answer)."""
    from cc_executor_nb.claude.interpreter import ClaudeInterpreter

    interpreter = ClaudeInterpreter(prompt="write a 1500 word story")
    interpreter.begin_turn("write a 1500 word story")
    for line in streamed_text("m1", "Once upon a time"):
        interpreter.feed("stdout", line + "\n")
    interpreter.feed("stdout", result(result="Once upon a time") + "\n")
    interpreter.begin_turn("what is 6*7")
    assert interpreter.progress(time.monotonic(), False) == Progress()


def test_interrupt_without_an_open_turn_changes_nothing() -> None:
    """No turn open: note_interrupt is a no-op."""
    run = conversation(("a", [result(result="done")]))
    version = run.version
    run.note_interrupt()
    assert run.version == version and not run.turns[-1].interrupted


def test_one_shot_run_has_one_implicit_turn() -> None:
    """Without begin_turn (one-shot mode) there is one turn holding everything."""
    run = run_of(*streamed_text("m1", "hi"), assistant("m1", text("hi")), result(result="hi"))
    (turn,) = run.turn_views()
    assert (turn.index, turn.prompt, turn.answer) == (0, "", "hi") and run.turns == []


def test_signals_are_bounded() -> None:
    """A run nobody drains keeps at most MAX_SIGNALS signals."""
    run = ClaudeRun()
    for i in range(ClaudeRun.MAX_SIGNALS + 5):
        run.feed_line(question(f"q{i}"))
    assert len(run.signals) == ClaudeRun.MAX_SIGNALS


def test_a_turns_parts_put_each_thinking_where_it_came() -> None:
    """Thinking, a tool call, thinking, text: the turn's parts in that order, each thinking a part of
    its own (the thinking was only the turn's whole, with no place among its parts)."""
    call = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "echo hi"}}
    output = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "hi"}
    run = ClaudeRun()
    for each in [assistant("m1", {"type": "thinking", "thinking": "first"}, call),
                 line(type="user", message={"role": "user", "content": [output]}),
                 assistant("m2", {"type": "thinking", "thinking": "second"}, {"type": "thinking", "thinking": "more"},
                           text("the answer")),
                 result(result="the answer")]:
        run.feed_line(each)
    (view,) = run.turn_views()
    parts = view.parts(view.answer)
    assert [type(part).__name__ for part in parts] == ["Thought", "tuple", "Thought", "str"]
    assert (parts[0], parts[2], parts[3]) == (Thought("first"), Thought("second\n\nmore"), "the answer")
    assert view.thinking == "first\n\nsecond\n\nmore"


def _sentence_and_call(index: int) -> list[str]:
    """An assistant message of a sentence and a tool call, then the call's result."""
    call = {"type": "tool_use", "id": f"toolu_{index}", "name": "Bash", "input": {"command": f"echo {index}"}}
    output = {"type": "tool_result", "tool_use_id": f"toolu_{index}", "content": "ok"}
    return [assistant(f"m{index}", text(f"Step {index} of the plan."), call),
            line(type="user", message={"role": "user", "content": [output]})]


def _streamed_call(message_id: str, tool_id: str, words: str) -> list[str]:
    """A message streamed as events: a text block, then a tool call's block."""
    call = {"type": "tool_use", "id": tool_id, "name": "Read", "input": {}}
    return [start(message_id), block_start(0, text("")), delta(0, "text_delta", text=words), stop(0),
            block_start(1, call), delta(1, "input_json_delta", partial_json='{"file_path": "a"}'), stop(1)]


def test_a_tool_calls_text_offset_is_the_answers_length_when_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call records how much of the answer came before it (text mode prints the answer up to
    there above the call): streamed and confirmed messages, a streamed one dropped unconfirmed, a
    subagent's call, a second turn."""
    run = ClaudeRun()
    given: list[tuple[str, int, int]] = []
    real = streamjson.ToolCall

    def recording(tool_id: str, *args: Any, **kwargs: Any) -> ToolCall:
        given.append((tool_id, kwargs["text_offset"], len(run.text)))
        return real(tool_id, *args, **kwargs)

    monkeypatch.setattr(streamjson, "ToolCall", recording)
    sub = {"type": "tool_use", "id": "toolu_sub", "name": "Grep", "input": {}}
    lines = [
        init(), *_sentence_and_call(1),
        *_streamed_call("m2", "toolu_2", "Reading it now."), assistant("m2", text("Reading it now.")),
        *_streamed_call("m3", "toolu_3", "A start never confirmed."),
        *_streamed_call("m4", "toolu_4", "Then, again."),
        assistant("m4", text("Then, again."), {"type": "tool_use", "id": "toolu_4", "name": "Read", "input": {}}),
        assistant("sub1", text("the subagent's words"), sub, parent="toolu_4"),
        *_sentence_and_call(5), result(result="done"),
    ]
    for each in lines:
        run.feed_line(each)
    run.begin_turn("and then?")
    for each in [*_sentence_and_call(6), result(result="more")]:
        run.feed_line(each)
    assert [tool_id for tool_id, _, _ in given] == [
        "toolu_1", "toolu_2", "toolu_3", "toolu_4", "toolu_sub", "toolu_5", "toolu_6"]
    assert [offset for _, offset, _ in given] == [length for _, _, length in given]
    assert given[-1][1] > given[1][1] > 0


def test_feeding_tool_calls_never_joins_the_runs_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call's start reads the answer's length without joining the run's text (a join of every
    message at each of thousands of calls made feeding quadratic: 20,000 calls in 124 s)."""
    joins = 0
    real = ClaudeRun._texts

    def counted(self: ClaudeRun) -> tuple[int, str, str]:
        nonlocal joins
        joins += 1
        return real(self)

    monkeypatch.setattr(ClaudeRun, "_texts", counted)
    run = ClaudeRun()
    for index in range(300):
        for each in _sentence_and_call(index):
            run.feed_line(each)
    assert joins == 0
    assert len(run.tool_calls) == 300
    assert run.tool_calls[-1].text_offset == len(run.text) - len("\n\nStep 299 of the plan.")


# Snapshots (the interpreter's copies of the run, one per line in text mode)


def _thought(message_id: str, words: str) -> list[str]:
    """A message that streams a thinking block (never confirmed: the next one drops it, or its turn settles it)."""
    return [start(message_id), block_start(0, {"type": "thinking", "thinking": ""}),
            delta(0, "thinking_delta", thinking=words), stop(0)]


def snapshot_steps() -> list[str | tuple[str, str]]:
    """Lines of a conversation of three turns, and ``("turn", prompt)`` / ``("interrupt", "")`` between
    them: thinking, messages streamed and confirmed, confirmed in pieces, dropped unconfirmed (their
    calls forgotten), a subagent's text and calls, an interrupted turn whose streamed words stay, and
    a message of an earlier turn confirmed late."""
    sub = {"type": "tool_use", "id": "toolu_sub", "name": "Grep", "input": {}}
    sub_done = {"type": "tool_result", "tool_use_id": "toolu_sub", "content": "found"}
    done4 = {"type": "tool_result", "tool_use_id": "toolu_4", "content": "read", "is_error": True}
    return [
        ("turn", "first"), init(), _retry_line(529), *_thought("m0", "Let me think first."), *_sentence_and_call(1),
        *_streamed_call("m2", "toolu_2", "Reading it now."), assistant("m2", text("Reading it now.")),
        *_streamed_call("m3", "toolu_3", "A start never confirmed."),
        *_streamed_call("m4", "toolu_4", "Then, again."),
        assistant("m4", text("Then, again."), {"type": "tool_use", "id": "toolu_4", "name": "Read", "input": {}}),
        assistant("sub1", text("the subagent's words"), sub, parent="toolu_4"),
        line(type="user", message={"role": "user", "content": [sub_done]}, parent_tool_use_id="toolu_4"),
        line(type="user", message={"role": "user", "content": [done4]}),
        *streamed_text("m5", "Growing", " a piece", " at a time."), assistant("m5", text("Growing a piece at a time.")),
        *_sentence_and_call(6), result(result="done"),
        ("turn", "and then?"), *_sentence_and_call(7), _retry_line(429), *_thought("m8", "Hmm."),
        *_streamed_call("m9", "toolu_9", "Cut short"), ("interrupt", ""),
        result(subtype="error_during_execution", is_error=True, result=None),
        ("turn", "go on"), *streamed_text("m10", "Going", " on."),
        assistant("m9", text("Cut short, confirmed late.")), assistant("m10", text("Going on.")),
        *_sentence_and_call(11), result(result="went on"),
    ]


def _retry_line(status: int) -> str:
    """An API retry (a 429 is a usage limit too)."""
    return line(type="system", subtype="api_retry", attempt=1, max_retries=10, retry_delay_ms=4000,
                error_status=status, error="rate_limit" if status == 429 else "overloaded")


def feed_step(interpreter: Any, step: str | tuple[str, str]) -> None:
    """Feed one of :func:`snapshot_steps` to an interpreter."""
    if isinstance(step, str):
        interpreter.feed("stdout", step + "\n")
    elif step[0] == "turn":
        interpreter.begin_turn(step[1])
    else:
        interpreter.note_interrupt()


def _joined_afresh(run: ClaudeRun) -> tuple[str, str]:
    """The run's text and thinking joined from every message, as the run did at each line before
    it kept them (the guard's reference)."""
    texts: list[str] = []
    thoughts: list[str] = []
    for message in run._messages.values():
        for kind, piece, _tool in streamjson._message_blocks(message):
            if piece.strip():
                (texts if kind == "text" else thoughts).append(piece)
    return "\n\n".join(texts), "\n\n".join(thoughts)


def _recorded_steps() -> list[list[str | tuple[str, str]]]:
    return [[each for each in path.read_text(encoding="utf-8").splitlines() if each.strip()] for path in _RECORDED]


@pytest.mark.parametrize("steps", [snapshot_steps(), *_recorded_steps()], ids=["made-up", *(p.stem for p in _RECORDED)])
def test_a_snapshot_at_every_line_is_what_a_full_copy_gives(steps: list[str | tuple[str, str]]) -> None:
    """At every line, a snapshot's calls are copies equal to the run's calls, its text and thinking
    those of every message joined afresh, a conversation's answer its last turn's text; and an
    earlier snapshot still holds what it held (the copies kept from one to the next never change)."""
    from dataclasses import replace

    from cc_executor_nb.claude.interpreter import ClaudeInterpreter

    interpreter = ClaudeInterpreter()
    taken = []
    for step in steps:
        feed_step(interpreter, step)
        view = interpreter.snapshot()
        with interpreter.locked() as run:
            calls = tuple(replace(call) for call in run.tool_calls)
            assert view.tool_calls == calls
            assert not {id(call) for call in view.tool_calls} & {id(call) for call in run.tool_calls}
            assert (view.text, view.thinking) == _joined_afresh(run)
            assert run._last_turn_text() == run.turn_views()[-1].text
            assert (view.retries, view.usage_limits) == (tuple(run.retries), tuple(run.usage_limits))
        taken.append((view, calls, view.text))
    assert all(view.tool_calls == calls and view.text == text for view, calls, text in taken)


def test_a_snapshot_copies_only_the_calls_changed_since_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot per line of 300 calls copies each call when it starts and when it ends, not every
    call at each line (quadratic: 4,000 calls took 55 s in text mode)."""
    from cc_executor_nb.claude import interpreter as module

    copies = 0
    real = module.FrozenToolCall.of

    def counted(_cls: type, call: ToolCall) -> Any:
        nonlocal copies
        copies += isinstance(call, ToolCall)
        return real(call)

    monkeypatch.setattr(module.FrozenToolCall, "of", classmethod(counted))
    interpreter = module.ClaudeInterpreter()
    for index in range(300):
        for each in _sentence_and_call(index):
            interpreter.feed("stdout", each + "\n")
            interpreter.snapshot()
    assert copies == 2 * 300
    assert [call.id for call in interpreter.snapshot().tool_calls] == [f"toolu_{index}" for index in range(300)]


class _CountedList(list[Any]):
    """A list that counts how many times it is read whole (a copy reads it so)."""

    reads = 0

    def __iter__(self) -> Any:
        self.reads += 1
        return super().__iter__()


def test_a_snapshot_copies_the_retries_and_usage_limits_only_when_they_grew() -> None:
    """A snapshot per line of 300 calls between a 529 retry and a 429 one (a usage limit too) copies
    the run's retries twice and its usage limits once, not at each line (both were copied at every
    line: 602 reads each)."""
    from cc_executor_nb.claude.interpreter import ClaudeInterpreter

    interpreter = ClaudeInterpreter()
    with interpreter.locked() as run:
        run.retries, run.usage_limits = _CountedList(), _CountedList()
        retries, limits = run.retries, run.usage_limits
    lines = [_retry_line(529), *(each for index in range(300) for each in _sentence_and_call(index)), _retry_line(429)]
    for each in lines:
        interpreter.feed("stdout", each + "\n")
        interpreter.snapshot()
    assert (retries.reads, limits.reads) == (2, 1)
    view = interpreter.snapshot()
    assert [retry.error_status for retry in view.retries] == [529, 429] and len(view.usage_limits) == 1


def test_a_snapshot_reads_again_only_the_message_that_grew(monkeypatch: pytest.MonkeyPatch) -> None:
    """After 300 messages, a snapshot per piece of a streamed message reads that message alone:
    the text of the ones before is kept, not joined again from every message at each line."""
    from cc_executor_nb.claude.interpreter import ClaudeInterpreter

    interpreter = ClaudeInterpreter()
    for index in range(300):
        for each in _sentence_and_call(index):
            interpreter.feed("stdout", each + "\n")
    interpreter.snapshot()
    read: list[str] = []
    real = streamjson._Message.blocks

    def counted(self: Any) -> Any:
        read.append(self.id)
        return real(self)

    monkeypatch.setattr(streamjson._Message, "blocks", counted)
    pieces = [f"word{index} " for index in range(100)]
    for each in streamed_text("last", *pieces):
        interpreter.feed("stdout", each + "\n")
        interpreter.snapshot()
    assert set(read) == {"last"}
    assert interpreter.snapshot().text.endswith("Step 299 of the plan.\n\n" + "".join(pieces))
