"""Usage and rate limits, pure: the CLI's words and events, the parser's limit state, the demo's windows."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc_executor_nb.claude.limits import (
    UsageLimit,
    cost_estimate_reason,
    describe_limit,
    limit_from_event,
    limit_from_result,
    limit_from_retry,
    reset_from_text,
)
from cc_executor_nb.claude.options import ClaudeOptions, claude_option_args
from cc_executor_nb.claude.streamjson import ClaudeRun
from cc_executor_nb.demo.limits import LimitWindows, follow_on, limit_scenario

UTC = dt.UTC


def at(text: str) -> float:
    """Epoch seconds of an ISO time in UTC."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def line(**event: Any) -> str:
    return json.dumps(event) + "\n"


# The CLI's words


@pytest.mark.parametrize(("text", "now", "expected"), [
    ("You've hit your 5-hour limit · resets 12:47am (UTC)", "2026-12-04T00:46:10", "2026-12-04T00:48:00"),
    ("You've hit your 5-hour limit · resets 1am (UTC)", "2026-12-04T00:59:30", "2026-12-04T01:01:00"),
    ("resets 3pm (UTC)", "2026-12-04T16:00:00", "2026-12-05T15:01:00"),
    ("resets 15:30 (UTC)", "2026-12-04T15:29:00", "2026-12-04T15:31:00"),
    ("You've hit your weekly limit · resets Dec 6, 9:20am (UTC)", "2026-12-04T10:00:00", "2026-12-06T09:21:00"),
    ("resets Jan 2, 9am (UTC)", "2026-12-30T10:00:00", "2027-01-02T09:01:00"),
    ("limit · resets in 2h 5m", "2026-12-04T10:00:00", "2026-12-04T12:05:00"),
])
def test_reset_time_is_read_from_the_clis_words(text: str, now: str, expected: str) -> None:
    """Times of day, dates and "in 2h 5m" give the end of the named minute, the next one to come."""
    assert reset_from_text(text, at(now)) == at(expected)


def test_a_reset_that_just_passed_is_today_not_tomorrow() -> None:
    """A time a minute ago (the CLI printed it before the reset) is not pushed a day ahead."""
    assert reset_from_text("resets 12:47am (UTC)", at("2026-12-04T00:48:30")) == at("2026-12-04T00:48:00")


def test_a_named_zone_is_honoured() -> None:
    """"(Europe/Berlin)" reads the time in Berlin (UTC+1 in December)."""
    found = reset_from_text("resets Dec 6, 9:20am (Europe/Berlin)", at("2026-12-04T10:00:00"))
    assert found == at("2026-12-06T08:21:00")


@pytest.mark.parametrize("text", ["API Error: Request rejected (429) · Rate limited", "resets 5", "resets 13pm",
                                  "resets Foo 3, 9am"])
def test_words_without_a_reset_time_give_none(text: str) -> None:
    """No reset time, or a malformed one, is None (never a guess)."""
    assert reset_from_text(text, at("2026-12-04T10:00:00")) is None


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_reset_reading_never_raises(text: str) -> None:
    """Any text at all gives a time or None."""
    result = reset_from_text("resets " + text, 1.8e9)
    assert result is None or isinstance(result, float)


# Limits from events and results


def test_a_rejected_rate_limit_event_is_a_limit_with_its_reset() -> None:
    """status rejected with resetsAt and rateLimitType makes a named limit; allowed makes none."""
    limit = limit_from_event({"status": "rejected", "resetsAt": 1796345235, "rateLimitType": "five_hour"})
    assert limit == UsageLimit("five_hour", 1796345235.0, "rate_limit_event")
    assert limit.title == "5-hour usage limit"
    assert limit_from_event({"status": "allowed", "isUsingOverage": False}) is None
    assert limit_from_event("rejected") is None


def test_milliseconds_in_resets_at_are_read_as_seconds() -> None:
    """A sender giving milliseconds is not mistaken for a reset in the year 58000."""
    assert limit_from_event({"status": "rejected", "resetsAt": 1796345235000}).resets_at == 1796345235.0  # type: ignore[union-attr]


def test_an_api_retry_429_is_a_rate_limit_until_the_retry() -> None:
    """error_status 429 with a delay gives a rate limit ending when the retry goes out; 529 gives none."""
    assert limit_from_retry(429, 2.5, 100.0) == UsageLimit("rate_limit", 102.5, "api_retry")
    assert limit_from_retry(429, 2.5, None) == UsageLimit("rate_limit", None, "api_retry")
    assert limit_from_retry(529, 2.5, 100.0) is None


def test_an_error_result_with_limit_words_is_a_limit() -> None:
    """A 429 result naming a window and a reset is that window's limit, reset included."""
    result = {"type": "result", "subtype": "success", "is_error": True, "api_error_status": 429,
              "result": "You've hit your weekly limit · resets Dec 6, 9:20am (UTC)"}
    limit = limit_from_result(result, at("2026-12-04T10:00:00"))
    assert limit is not None and limit.kind == "seven_day" and limit.resets_at == at("2026-12-06T09:21:00")


def test_an_api_key_429_result_is_a_rate_limit_without_reset() -> None:
    """The API key's final 429 names no reset: a rate limit with an unknown reset."""
    result = {"is_error": True, "api_error_status": 429, "result": "API Error: Request rejected (429) · Rate limited"}
    assert limit_from_result(result, 1e9) == UsageLimit("rate_limit", None, "result", result["result"])


@pytest.mark.parametrize("result", [
    {"is_error": False, "result": "4"},
    {"is_error": True, "api_error_status": 529, "result": "API Error: 529 Overloaded"},
    "not a dict",
])
def test_other_results_are_no_limit(result: Any) -> None:
    """Success, other errors and junk are not limits."""
    assert limit_from_result(result, 1e9) is None


def test_describe_counts_down_to_the_reset() -> None:
    """The description names the limit, the reset's clock time and what is left of the wait."""
    limit = UsageLimit("five_hour", at("2026-12-04T00:47:15"), "rate_limit_event")
    assert describe_limit(limit, at("2026-12-04T00:47:12"), zone=UTC) == "5-hour usage limit · resets 00:47:15 (in 3 s)"
    assert describe_limit(limit, at("2026-12-04T00:50:00"), zone=UTC).endswith("(now)")
    assert describe_limit(UsageLimit("rate_limit", None, "result"), 0.0) == "API rate limit · reset time unknown"


@pytest.mark.parametrize(("init", "reason"), [
    ({"served_by_anthropic": False, "apiKeySource": "ANTHROPIC_API_KEY"}, "custom endpoint"),
    ({"served_by_anthropic": True, "apiKeySource": "none"}, "subscription"),
    ({"served_by_anthropic": True, "apiKeySource": "ANTHROPIC_API_KEY"}, None),
    ({}, None),
    (None, None),
])
def test_cost_is_an_estimate_off_anthropics_api_or_on_a_subscription(init: Any, reason: str | None) -> None:
    """A custom endpoint or a login without API key makes the CLI's cost an estimate."""
    assert cost_estimate_reason(init) == reason


# The parser's limit state


def rejected(resets: float) -> str:
    info = {"status": "rejected", "resetsAt": resets, "rateLimitType": "five_hour", "isUsingOverage": False}
    return line(type="rate_limit_event", rate_limit_info=info, session_id="s1", uuid="u")


def limit_result(text: str = "You've hit your 5-hour limit · resets 12:47am (UTC)") -> str:
    return line(type="result", subtype="success", is_error=True, api_error_status=429, result=text,
                total_cost_usd=0, session_id="s1")


def test_parser_keeps_the_events_reset_over_the_words() -> None:
    """rate_limit_event then the 429 result: the limit keeps the event's exact reset time."""
    run = ClaudeRun(clock=lambda: at("2026-12-04T00:46:10"))
    run.feed(rejected(at("2026-12-04T00:47:15")) + limit_result())
    assert run.usage_limit == UsageLimit("five_hour", at("2026-12-04T00:47:15"), "rate_limit_event")
    assert run.unknown_events == 0 and run.is_error


def test_parser_reads_the_reset_from_the_words_without_an_event() -> None:
    """Without a rate_limit_event the result's words give the reset (with a clock)."""
    run = ClaudeRun(clock=lambda: at("2026-12-04T00:46:10"))
    run.feed(limit_result())
    assert run.usage_limit is not None and run.usage_limit.resets_at == at("2026-12-04T00:48:00")


def test_an_allowed_event_and_a_success_end_the_limit() -> None:
    """A later allowed event clears a limit the event set; a later successful result clears any."""
    run = ClaudeRun()
    run.feed(rejected(2e9))
    assert run.usage_limit is not None
    run.feed(line(type="rate_limit_event", rate_limit_info={"status": "allowed"}))
    assert run.usage_limit is None and run.usage_limits[0].kind == "five_hour"
    run.feed(limit_result() + line(type="result", subtype="success", is_error=False, result="4"))
    assert run.usage_limit is None and len(run.usage_limits) == 2


def test_a_429_retry_is_a_limit_until_the_next_message_starts() -> None:
    """api_retry 429 (stamped by the clock) holds until the retried request streams."""
    run = ClaudeRun(clock=lambda: 100.0)
    run.feed(line(type="system", subtype="api_retry", attempt=1, max_retries=2, retry_delay_ms=2500,
                  error_status=429, error="rate_limit"))
    assert run.usage_limit == UsageLimit("rate_limit", 102.5, "api_retry", "rate_limit")
    assert run.retries[0].at == 100.0
    run.feed(line(type="stream_event", event={"type": "message_start", "message": {"id": "m1"}}))
    assert run.usage_limit is None


def test_auto_resume_lines_wait_then_resume_and_drop_the_error_text() -> None:
    """The wrapper's wait line sets waiting_until; its resume line counts, clears the limit and the CLI's error text."""
    run = ClaudeRun()
    synthetic = {"id": "e1", "model": "<synthetic>", "content": [{"type": "text", "text": "You've hit your limit"}]}
    run.feed(rejected(2e9) + line(type="assistant", message=synthetic, is_api_error_message=True) + limit_result())
    run.feed(line(type="cc_executor_nb", subtype="auto_resume_wait", resumes_at=2e9 + 1, message="waiting"))
    assert run.waiting_until == 2e9 + 1 and run.usage_limit is not None and run.resume_note == "waiting"
    run.feed(line(type="cc_executor_nb", subtype="auto_resume", session_id="s1", attempt=1, message="resuming"))
    assert (run.resumes, run.waiting_until, run.usage_limit) == (1, None, None)
    answer = {"id": "m2", "content": [{"type": "text", "text": "4"}]}
    run.feed(line(type="assistant", message=answer) + line(type="result", subtype="success", is_error=False,
                                                            result="4", session_id="s1"))
    assert run.text == "4" and not run.is_error and run.unknown_events == 0


@given(st.dictionaries(st.sampled_from(["status", "resetsAt", "rateLimitType", "isUsingOverage"]),
                       st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=10), st.booleans())))
@settings(max_examples=200, deadline=None)
def test_malformed_rate_limit_events_never_raise(info: dict[str, Any]) -> None:
    """Any shape of rate_limit_info is read or ignored, never an exception."""
    run = ClaudeRun(clock=lambda: 1e9)
    wait = line(type="cc_executor_nb", subtype="auto_resume_wait", resumes_at=info.get("resetsAt"))
    run.feed(line(type="rate_limit_event", rate_limit_info=info) + wait)
    assert run.version == 2


def test_the_budget_stop_is_said_plainly() -> None:
    """error_max_budget_usd reads as a budget stop with what was spent."""
    run = ClaudeRun()
    run.feed(line(type="result", subtype="error_max_budget_usd", is_error=True, total_cost_usd=0.008372))
    assert run.error_message == "Stopped: the run reached its budget (--max-budget-usd) ($0.0084 spent)."


def test_max_budget_goes_on_the_command_line() -> None:
    """max_budget_usd becomes --max-budget-usd; zero, negative or non-numbers are refused."""
    assert claude_option_args(ClaudeOptions(max_budget_usd=0.25)) == ["--max-budget-usd", "0.25"]
    for bad in (0, -1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="max_budget_usd"):
            claude_option_args(ClaudeOptions(max_budget_usd=bad))  # type: ignore[arg-type]


# The demo's windows


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_limit_prompt_opens_one_window_per_conversation() -> None:
    """The first request refuses until the reset; the same conversation is then answered, never refused again."""
    clock = Clock(1000.0)
    windows = LimitWindows(clock)
    refusal = windows.check("s1", "usage limit reset in 3 s, then what is 2+2")
    assert refusal is not None and refusal.kind == "usage" and refusal.resets_at == 1003.0
    assert refusal.retry_after == 3
    clock.now = 1002.0
    assert windows.check("s1", "usage limit reset in 3 s") is not None
    clock.now = 1003.5
    assert windows.check("s1", "usage limit reset in 3 s") is None


def test_an_open_window_refuses_every_conversation() -> None:
    """The limit is the account's: while open, other conversations are refused with the same reset."""
    clock = Clock(0.0)
    windows = LimitWindows(clock)
    windows.check("a", "usage limit reset in 5 s")
    other = windows.check("b", "what is 2+2")
    assert other is not None and other.resets_at == 5.0
    clock.now = 6.0
    assert windows.check("b", "what is 2+2") is None and windows.open_until is None


def test_usage_refusals_carry_the_subscription_headers_and_rate_refusals_the_api_keys() -> None:
    """A usage refusal says unified-status rejected and its reset; a rate refusal says requests-remaining 0."""
    usage = dict(LimitWindows(Clock(100.0)).check("a", "usage limit reset in 3 s").headers())  # type: ignore[union-attr]
    assert usage["anthropic-ratelimit-unified-status"] == "rejected"
    assert usage["anthropic-ratelimit-unified-reset"] == "103" and usage["retry-after"] == "3"
    assert usage["x-should-retry"] == "false"
    rate = dict(LimitWindows(Clock(100.0)).check("a", "rate limit reset in 2 s").headers())  # type: ignore[union-attr]
    assert rate["anthropic-ratelimit-requests-remaining"] == "0" and rate["retry-after"] == "2"
    assert rate["anthropic-ratelimit-requests-reset"] == "1970-01-01T00:01:42Z"


def test_limit_prompts_and_their_follow_on_tasks() -> None:
    """The scenario is found anywhere in the prompt; the task after "then" stops at a blank line."""
    assert limit_scenario("Please hit a usage limit that resets in 3 seconds") == ("usage", 3.0)
    assert limit_scenario("what is 2+2") is None
    assert follow_on("usage limit reset in 3 s, then what is 2+2\n\nContinue where you left off.") == "what is 2+2"


# What people see


def test_the_widget_counts_down_to_the_reset_and_to_the_resume() -> None:
    """A refused run shows the limit and its countdown; a waiting one says when it resumes; escaped either way."""
    from cc_executor_nb.claude.render import render_limit_html

    run = ClaudeRun()
    run.feed(rejected(1010.0))
    shown = render_limit_html(run, 1000.0)
    assert "5-hour usage limit · resets" in shown and "(in 10 s)" in shown
    run.feed(line(type="result", subtype="success", is_error=True, api_error_status=429, session_id="s<1>",
                  result="You've hit your 5-hour limit"))
    assert "resume with --resume s&lt;1&gt;" in render_limit_html(run, 1000.0, ended=True)
    run.feed(line(type="cc_executor_nb", subtype="auto_resume_wait", resumes_at=1011.0))
    assert "resuming the session in 6 s" in render_limit_html(run, 1005.0)
    assert render_limit_html(ClaudeRun(), 1000.0) == ""


def test_text_mode_notes_the_limit_and_the_resume_once_each() -> None:
    """The text renderer writes one [limit] note per limit and one [resume] note per wrapper message."""
    from cc_executor_nb.claude.interpreter import ClaudeInterpreter
    from cc_executor_nb.claude.text import ClaudeTextRenderer

    interpreter = ClaudeInterpreter(ClaudeRun(clock=lambda: 1000.0))
    renderer = ClaudeTextRenderer(clock=lambda: 1000.0)
    notes: list[str] = []
    for piece in [rejected(1010.0), limit_result(),
                  line(type="cc_executor_nb", subtype="auto_resume_wait", resumes_at=1011.0, message="waiting"),
                  line(type="cc_executor_nb", subtype="auto_resume", message="resuming")]:
        interpreter.feed("stdout", piece)
        notes += [chunk.text for chunk in renderer.render(interpreter.snapshot()) if chunk.kind == "note"]
        notes += [chunk.text for chunk in renderer.render(interpreter.snapshot()) if chunk.kind == "note"]
    assert [note.split(" ")[0] for note in notes] == ["[limit]", "[resume]", "[resume]"]
    assert notes[0].endswith("(in 10 s)") and notes[1:] == ["[resume] waiting", "[resume] resuming"]


def test_the_footer_says_when_the_cost_is_an_estimate() -> None:
    """Off Anthropic's API the footer's tooltip says the cost is an estimate; on it, nothing is added."""
    from cc_executor_nb.claude.render import render_footer_html

    result = line(type="result", subtype="success", is_error=False, result="4", total_cost_usd=0.01)
    custom, billed = ClaudeRun(), ClaudeRun()
    key = "ANTHROPIC_API_KEY"
    custom.feed(line(type="system", subtype="init", served_by_anthropic=False, apiKeySource=key) + result)
    billed.feed(line(type="system", subtype="init", served_by_anthropic=True, apiKeySource=key) + result)
    assert 'title="the cost is an estimate (custom endpoint)">$0.0100' in render_footer_html(custom)
    assert "title=" not in render_footer_html(billed) and "$0.0100" in render_footer_html(billed)
