"""The pure protocol core, tested with strings alone."""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc_executor_nb import errors, protocol

DOCUMENTED = {-32700, -32600, -32601, -32602, -32603, -32000, -32001, -32002, -32003, -32004, -32005, -32006}


def only_error(text: str) -> protocol.ErrorResponse:
    items = protocol.parse_incoming(text).items
    assert len(items) == 1 and isinstance(items[0], protocol.ErrorResponse)
    return items[0]


@pytest.mark.parametrize(
    "text",
    ["{", "not json", "", "[1,", '{"a":1}}', "\ud800"],
)
def test_invalid_json_is_parse_error_with_null_id(text: str) -> None:
    """Text that is not JSON gives -32700 with id null."""
    error = only_error(text)
    assert error.error["code"] == -32700 and error.id is None


def test_deep_nesting_is_parse_error() -> None:
    """Nesting deeper than the limit is -32700, even far beyond the recursion limit."""
    assert only_error("[" * 100_000 + "]" * 100_000).error["code"] == -32700
    assert only_error("[" * 65 + "]" * 65).error["code"] == -32700


def test_nesting_at_the_limit_is_accepted() -> None:
    """Params nested up to the limit still parse."""
    params = "[" * 62 + "]" * 62
    text = '{"jsonrpc":"2.0","method":"m","id":1,"params":' + params + "}"
    assert isinstance(protocol.parse_incoming(text).items[0], protocol.Request)


@pytest.mark.parametrize("number", ["1" * 41, "-" + "9" * 50, "1e400", "-1e999"])
def test_huge_numbers_are_parse_errors(number: str) -> None:
    """Integers beyond 40 digits and floats that overflow are -32700."""
    assert only_error('{"jsonrpc":"2.0","method":"m","id":' + number + "}").error["code"] == -32700


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_parse_errors(constant: str) -> None:
    """JSON has no NaN or Infinity: -32700."""
    assert only_error('{"jsonrpc":"2.0","method":"m","id":' + constant + "}").error["code"] == -32700


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"jsonrpc":"1.0","method":"m","id":1}', "jsonrpc"),
        ('{"method":"m","id":1}', "jsonrpc"),
        ('{"jsonrpc":"2.0","method":5,"id":1}', "method"),
        ('{"jsonrpc":"2.0","id":1}', "method"),
        ('{"jsonrpc":"2.0","method":"m","params":"x","id":1}', "params"),
        ('{"jsonrpc":"2.0","method":"m","params":3,"id":1}', "params"),
        ('{"jsonrpc":"2.0","method":"m","id":true}', "id"),
        ('{"jsonrpc":"2.0","method":"m","id":{"a":1}}', "id"),
        ('{"jsonrpc":"2.0","method":"m","id":[1]}', "id"),
        ("42", "object"),
        ('"text"', "object"),
        ("null", "object"),
    ],
)
def test_invalid_request_objects(text: str, reason: str) -> None:
    """JSON that is not a request object gives -32600 naming the problem."""
    error = only_error(text)
    assert error.error["code"] == -32600
    assert reason in error.error["message"]


def test_invalid_request_echoes_a_readable_id() -> None:
    """When the id itself is valid, the -32600 error carries it."""
    assert only_error('{"jsonrpc":"1.0","method":"m","id":7}').id == 7


def test_bad_id_type_answers_with_null_id() -> None:
    """A boolean id cannot be echoed: the error's id is null."""
    assert only_error('{"jsonrpc":"2.0","method":"m","id":false}').id is None


def test_empty_batch_is_invalid_request() -> None:
    """``[]`` is -32600, answered as a single error (not an array)."""
    incoming = protocol.parse_incoming("[]")
    assert not incoming.batch and incoming.items[0].error["code"] == -32600  # type: ignore[union-attr]


def test_batch_keeps_order_and_mixes_requests_and_errors() -> None:
    """A batch parses item by item in order; bad items become errors in place."""
    text = '[{"jsonrpc":"2.0","method":"a","id":1}, 5, {"jsonrpc":"2.0","method":"b"}]'
    incoming = protocol.parse_incoming(text)
    assert incoming.batch
    first, second, third = incoming.items
    assert isinstance(first, protocol.Request) and first.id == 1
    assert isinstance(second, protocol.ErrorResponse) and second.error["code"] == -32600
    assert isinstance(third, protocol.Request) and third.is_notification


def test_notification_is_a_request_without_id() -> None:
    """A request without ``id`` is a notification; ``"id": null`` is not."""
    note = protocol.parse_incoming('{"jsonrpc":"2.0","method":"pong"}').items[0]
    call = protocol.parse_incoming('{"jsonrpc":"2.0","method":"pong","id":null}').items[0]
    assert isinstance(note, protocol.Request) and note.is_notification
    assert isinstance(call, protocol.Request) and not call.is_notification


def test_bytes_input_must_be_utf8() -> None:
    """Bytes that are not UTF-8 are a parse error."""
    assert only_error(b"\xff\xfe").error["code"] == -32700  # type: ignore[arg-type]


def test_execute_command_is_split_with_shlex() -> None:
    """``command`` is split with POSIX shell rules, never run by a shell."""
    spec = protocol.validate_execute({"command": "echo 'a b' \"$(x)\" ;ls"})
    assert spec.argv == ["echo", "a b", "$(x)", ";ls"]


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("echo 'open", "No closing quotation"),
        ('echo "open\\', "No escaped character"),
        ("echo end\\", "No escaped character"),
    ],
)
def test_a_command_that_cannot_be_split_says_why_as_shlex_does(command: str, why: str) -> None:
    """An unclosed quote or a final backslash is -32602 naming ``command`` with shlex's reason."""
    with pytest.raises(errors.InvalidParams) as info:
        protocol.validate_execute({"command": command})
    assert str(info.value) == f"command cannot be split: {why}"
    assert info.value.data == {"field": "command"}


@pytest.mark.parametrize(
    "params, field",
    [
        ({}, "command"),
        ({"command": "ls", "argv": ["ls"]}, "command"),
        ({"argv": []}, "argv"),
        ({"argv": [""]}, "argv"),
        ({"argv": ["ls", 3]}, "argv"),
        ({"argv": "ls"}, "argv"),
        ({"command": ""}, "command"),
        ({"command": "   "}, "command"),
        ({"command": "echo 'unterminated"}, "command"),
        ({"command": 5}, "command"),
        ({"argv": ["ls", "a\x00b"]}, "argv"),
        ({"command": "ls\x00"}, "command"),
        ({"argv": ["ls"], "timeout": -1}, "timeout"),
        ({"argv": ["ls"], "timeout": "10"}, "timeout"),
        ({"argv": ["ls"], "timeout": True}, "timeout"),
        ({"argv": ["ls"], "timeout": 0}, "timeout"),
        ({"argv": ["ls"], "cwd": 3}, "cwd"),
        ({"argv": ["ls"], "env": {"A": 1}}, "env"),
        ({"argv": ["ls"], "env": ["A"]}, "env"),
        ({"argv": ["ls"], "env": {"A=B": "c"}}, "env"),
        ({"argv": ["ls"], "env": {"A": "b\x00"}}, "env"),
        ({"argv": ["ls"], "heartbeat_interval": 0.01}, "heartbeat_interval"),
        ({"argv": ["ls"], "inactivity_threshold": -2}, "inactivity_threshold"),
        ({"argv": ["ls"], "input": "x"}, "input"),
        ({"argv": ["ls"], "stdin": "pipe", "input": 3}, "input"),
        ({"argv": ["ls"], "stdin": "pipe", "input": "\ud800"}, "input"),
        ({"argv": ["ls"], "stdin": "pipe", "input": "x" * (protocol.MAX_EXECUTE_INPUT_BYTES + 1)}, "input"),
        ({"argv": ["python3", "-m", "cc_executor_nb.demo.runner"], "server_python": "yes"}, "server_python"),
        ({"argv": ["python3", "-c", "print(1)"], "server_python": True}, "server_python"),
        ({"argv": ["python3", "-m", "http.server"], "server_python": True}, "server_python"),
        ({"command": "python3 -m", "server_python": True}, "server_python"),
    ],
)
def test_bad_execute_params_name_the_field(params: dict, field: str) -> None:
    """Every bad execute param is -32602 with ``data.field`` naming it."""
    with pytest.raises(errors.InvalidParams) as info:
        protocol.validate_execute(params)
    assert info.value.code == -32602 and info.value.data == {"field": field}


def test_an_empty_cwd_is_refused_naming_it() -> None:
    """cwd "" was taken, and the spawn failed: "its working directory '': No such file or
    directory". It is -32602 for the field cwd, saying what to do."""
    with pytest.raises(errors.InvalidParams, match=r"^cwd is empty: give a directory or leave it out$") as info:
        protocol.validate_execute({"argv": ["ls"], "cwd": ""})
    assert info.value.code == -32602 and info.value.data == {"field": "cwd"}


@pytest.mark.parametrize("module", protocol.SERVER_PYTHON_MODULES)
def test_server_python_puts_the_servers_interpreter_in_argv_0(module: str) -> None:
    """``server_python``: the package's wrapper runs with the server's own interpreter, whatever
    ``argv[0]`` the client guessed; the rest of argv is untouched."""
    spec = protocol.validate_execute({"argv": ["python3", "-m", module, "--", "claude"], "server_python": True},
                                     python="/srv/venv/bin/python")
    assert spec.argv == ["/srv/venv/bin/python", "-m", module, "--", "claude"] and spec.server_python


@pytest.mark.parametrize("value", [False, None])
def test_without_server_python_argv_is_run_as_given(value: bool | None) -> None:
    spec = protocol.validate_execute({"argv": ["python3", "-m", "cc_executor_nb.demo.runner"], "server_python": value},
                                     python="/srv/venv/bin/python")
    assert spec.argv[0] == "python3" and not spec.server_python


def test_execute_params_as_array_are_invalid() -> None:
    """Positional params are not accepted for execute."""
    with pytest.raises(errors.InvalidParams):
        protocol.validate_execute(["ls"])


def test_durations_at_their_bound_are_accepted() -> None:
    """The bounds are inclusive: 30 days of timeout, an hour of heartbeat or kill grace."""
    spec = protocol.validate_execute({"argv": ["ls"], "timeout": protocol.MAX_TIMEOUT,
                                      "heartbeat_interval": 3600, "kill_grace": 3600})
    assert (spec.timeout, spec.heartbeat_interval, spec.kill_grace) == (30 * 86400.0, 3600.0, 3600.0)


@pytest.mark.parametrize("raw", ["-0.0", "-1e-400", "1e-400", "0"])
def test_a_zero_kill_grace_reads_as_plain_zero(raw: str) -> None:
    """kill_grace -0.0 (and -1e-400, which JSON parses to -0.0) is 0, not a negative zero
    carried on (it was kept as -0.0 and printed "outlived -0.0 s grace")."""
    spec = protocol.validate_execute(protocol.loads('{"argv":["ls"],"kill_grace":' + raw + "}"))
    assert spec.kill_grace == 0.0 and math.copysign(1.0, spec.kill_grace) == 1.0


@pytest.mark.parametrize(("params", "removed"), [(None, False), ({}, False), ({"removed": None}, False),
                                                 ({"removed": False}, False), ({"removed": True}, True)])
def test_jobs_list_removed_null_means_the_default(params: dict | None, removed: bool) -> None:
    """jobs.list's removed: null is the default (false), as null is for every optional member
    (it was -32602 "removed must be a boolean")."""
    assert protocol.validate_jobs_list(params) is removed


@pytest.mark.parametrize(("params", "last_seq"), [({"job_id": "abcdefgh"}, 0),
                                                  ({"job_id": "abcdefgh", "last_seq": None}, 0),
                                                  ({"job_id": "abcdefgh", "last_seq": 7}, 7)])
def test_jobs_attach_last_seq_null_means_the_default(params: dict, last_seq: int) -> None:
    """jobs.attach's last_seq: null is the default (0, the whole log), as null is for every
    optional member (it was -32602 "last_seq must be a non-negative integer")."""
    assert protocol.validate_job_attach(params).last_seq == last_seq


@pytest.mark.parametrize("summary", [
    {"match": {"type": "a\udc80"}, "fields": ["cost"]},
    {"match": {"ty\ud800pe": "result"}, "fields": ["cost"]},
    {"match": {"type": "result"}, "fields": ["co\udfffst"]},
])
def test_a_lone_surrogate_in_a_job_summary_is_refused(summary: dict) -> None:
    """summary.match and summary.fields with a lone surrogate are -32602 naming summary, as meta
    is (they were accepted, kept in the job's record and echoed as a \\ud800 escape)."""
    params = {"argv": ["ls"], "durable": True, "summary": summary}
    with pytest.raises(errors.InvalidParams, match="no lone surrogate") as caught:
        protocol.validate_job_request(params)
    assert caught.value.data == {"field": "summary"}


_SUMMARY = {"match": {"type": "result"}, "fields": ["cost"]}


@pytest.mark.parametrize(("extra", "why"), [
    ({"stdin": "pipe", "summary": _SUMMARY, "stdin_close_on_summary": 1}, "must be a boolean or null"),
    ({"summary": _SUMMARY, "stdin_close_on_summary": True}, 'needs stdin "pipe"'),
    ({"stdin": "pipe", "stdin_close_on_summary": True}, "needs a summary"),
])
def test_stdin_close_on_summary_is_refused_when_it_cannot_act(extra: dict, why: str) -> None:
    """stdin_close_on_summary is a boolean that needs a stdin to close and a summary to match: -32602 naming it."""
    with pytest.raises(errors.InvalidParams, match=re.escape(why)) as caught:
        protocol.validate_job_request({"argv": ["ls"], "durable": True, **extra})
    assert caught.value.data == {"field": "stdin_close_on_summary"}


def test_stdin_close_on_summary_on_an_ordinary_run_is_refused() -> None:
    """An ordinary run has no job to end after its summary: asking for it is -32602 naming the
    field, as stdin_idle_timeout is (it was ignored, so the stdin silently stayed open)."""
    params = {"argv": ["ls"], "stdin": "pipe", "summary": _SUMMARY, "stdin_close_on_summary": True}
    with pytest.raises(errors.InvalidParams, match=re.escape("applies to durable jobs")) as caught:
        protocol.validate_execute(params)
    assert caught.value.data == {"field": "stdin_close_on_summary"}
    assert protocol.validate_execute({**params, "stdin_close_on_summary": False}).argv == ["ls"]


def test_stdin_close_on_summary_null_or_absent_is_false() -> None:
    """Absent and null leave the stdin to its client; true with a pipe and a summary is kept."""
    job = {"argv": ["ls"], "durable": True, "stdin": "pipe", "summary": _SUMMARY}
    assert [protocol.validate_job_request({**job, "stdin_close_on_summary": value}).stdin_close_on_summary
            for value in (None, False, True)] == [False, False, True]
    assert protocol.validate_job_request(job).stdin_close_on_summary is False


def test_timeout_null_means_no_limit() -> None:
    """``timeout: null`` and an absent timeout both mean no limit."""
    assert protocol.validate_execute({"argv": ["ls"], "timeout": None}).timeout is None
    assert protocol.validate_execute({"argv": ["ls"]}).timeout is None
    assert protocol.validate_execute({"argv": ["ls"], "timeout": 0.5}).timeout == 0.5


@pytest.mark.parametrize("params", [{}, {"type": "STOP"}, {"type": 1}, None])
def test_bad_control_type(params: dict | None) -> None:
    """An unknown control type is -32602 naming ``type``."""
    with pytest.raises(errors.InvalidParams) as info:
        protocol.validate_control(params)
    assert info.value.data == {"field": "type"}


def test_remote_error_rebuilds_the_exception_class() -> None:
    """An error object from the server becomes the matching exception."""
    exc = protocol.remote_error({"code": -32005, "message": "busy"})
    assert isinstance(exc, errors.AlreadyRunning) and exc.message == "busy"
    params = protocol.remote_error({"code": -32602, "message": "bad", "data": {"field": "argv"}})
    assert isinstance(params, errors.InvalidParams) and params.data == {"field": "argv"}
    unknown = protocol.remote_error({"code": -1, "message": "odd"})
    assert type(unknown) is errors.ProtocolError and unknown.code == -1


def test_every_error_class_has_its_documented_code() -> None:
    """The exception tree covers each code of the contract's table exactly once."""
    codes = {errors.error_class_for(code).code for code in DOCUMENTED}
    assert codes == DOCUMENTED


def test_dumps_is_compact_and_keeps_unicode() -> None:
    """Serialization is compact and leaves non-ASCII text as is."""
    assert protocol.dumps(protocol.notification("x", {"data": "é"})) == (
        '{"jsonrpc":"2.0","method":"x","params":{"data":"é"}}'
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_never_crashes_the_parser(text: str) -> None:
    """Any text parses into requests or documented errors."""
    for item in protocol.parse_incoming(text).items:
        if isinstance(item, protocol.ErrorResponse):
            assert item.error["code"] in DOCUMENTED


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_shapes_never_crash_the_parser(value: object) -> None:
    """Any JSON value parses into requests or documented errors."""
    for item in protocol.parse_incoming(json.dumps(value)).items:
        if isinstance(item, protocol.ErrorResponse):
            assert item.error["code"] in DOCUMENTED


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_execute_params_raise_only_invalid_params(value: object) -> None:
    """Validation of any params value either succeeds or raises InvalidParams."""
    try:
        protocol.validate_execute(value)
    except errors.InvalidParams as exc:
        assert "field" in exc.data


# -- command_line: argv shown to people ----------------------------------------------------

SHOWN_WORDS = ["%s\n", "one", "it's", "a\x1b[2Jb", "tab\there", "back\\slash\n", "", "c1\x85x", "é\x7f", 'q"d', "cr\r"]


def test_command_line_reads_back_as_the_same_words_in_bash() -> None:
    """Every word, control characters included, is read back exactly by bash (ANSI-C quoting for those)."""
    line = protocol.command_line(["printf", *SHOWN_WORDS])
    script = "for w in " + line.removeprefix("printf ") + '; do printf "%s\\0" "$w"; done'
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    assert out.decode().split("\0")[:-1] == SHOWN_WORDS


def test_command_line_is_one_line_without_control_characters() -> None:
    """No newline, carriage return or escape reaches the label; plain words are quoted as shlex.join does."""
    line = protocol.command_line(["printf", *SHOWN_WORDS])
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", line), line
    plain = ["claude", "-p", "two words", "it's"]
    assert protocol.command_line(plain) == shlex.join(plain)


def test_one_line_is_one_inert_line_within_its_limit() -> None:
    """Whitespace runs become one space, other control characters go, a cut ends in an ellipsis."""
    assert protocol.one_line("claude: write\n\ta  haiku\x1b[2J\r", 80) == "claude: write a haiku[2J"
    assert protocol.one_line("abcdef", 4) == "abc…" and protocol.one_line("abcd", 4) == "abcd"
