"""Every row of the contract's error table, over a real connection."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from cc_executor_nb import errors, protocol
from cc_executor_nb.client import connect
from cc_executor_nb.server.handler import _Link
from cc_executor_nb.server.session import Session
from cc_executor_nb.server.supervisor import ProcessManager

from .conftest import TOKEN, collect, completed, fake, make_handler, output_of, reply
from .util import eventually_async, scaled

AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOCUMENTED = {-32700, -32600, -32601, -32602, -32603, -32000, -32001, -32002, -32003, -32004, -32005, -32006, -32007}


async def test_parse_error_has_null_id(raw) -> None:
    """-32700: not JSON, answered with id null; the connection stays open."""
    message = await reply(raw, "{not json")
    assert message["id"] is None and message["error"]["code"] == -32700
    again = await reply(raw, '{"jsonrpc":"2.0","id":2,"method":"status"}')
    assert again["id"] == 2 and again["result"]["state"] == "idle"


@pytest.mark.parametrize("text", [
    '{"jsonrpc":"2.0","id":1,"method":"status","x":' + "[" * 80 + "]" * 80 + "}",
    '{"jsonrpc":"2.0","id":1e999,"method":"status"}',
])
async def test_parse_error_for_deep_nesting_and_huge_numbers(raw, text) -> None:
    """-32700 also covers nesting too deep and numbers too large."""
    message = await reply(raw, text)
    assert message["error"]["code"] == -32700 and message["id"] is None


@pytest.mark.parametrize(
    "text",
    ['{"jsonrpc":"1.0","id":1,"method":"status"}', '{"jsonrpc":"2.0","id":1,"method":7}',
     '{"jsonrpc":"2.0","id":1,"method":"status","params":"x"}', '{"jsonrpc":"2.0","id":true,"method":"status"}', "[]"],
)
async def test_invalid_request(raw, text) -> None:
    """-32600: JSON that is not a valid request, including the empty batch."""
    message = await reply(raw, text)
    assert message["error"]["code"] == -32600


async def test_binary_frame_is_invalid_request(raw) -> None:
    """A binary frame gets -32600 (the contract is JSON text frames)."""
    message = await reply(raw, b'{"jsonrpc":"2.0","id":1,"method":"status"}')
    assert message["error"]["code"] == -32600 and message["id"] is None


async def test_unknown_method_echoes_id(raw) -> None:
    """-32601 carries the request's id."""
    message = await reply(raw, '{"jsonrpc":"2.0","id":"abc","method":"nope"}')
    assert message == {"jsonrpc": "2.0", "id": "abc", "error": {"code": -32601, "message": "Method not found: nope"}}


async def test_bad_params_name_the_field(client) -> None:
    """-32602 with data.field, for a missing command and a bad control type."""
    with pytest.raises(errors.InvalidParams) as info:
        await client.call("execute", {"cwd": "/"})
    assert info.value.data == {"field": "command"}
    with pytest.raises(errors.InvalidParams) as info:
        await client.call("execute", {"argv": ["echo", "a\x00"]})
    assert info.value.data == {"field": "argv"}
    with pytest.raises(errors.InvalidParams) as info:
        await client.call("execute", {"argv": ["echo"], "timeout": -1})
    assert info.value.data == {"field": "timeout"}
    await client.execute(argv=["sleep", "5"])
    with pytest.raises(errors.InvalidParams) as info:
        await client.control("STOP")
    assert info.value.data == {"field": "type"}
    await client.cancel()
    await collect(client)


@pytest.mark.parametrize("timeout", [0, 0.0, -0.0])
async def test_a_timeout_of_zero_is_refused_not_an_instant_end(raw, timeout) -> None:
    """``timeout: 0`` is -32602 saying to omit it for no limit (it ended the run at once,
    while the magic's ``--timeout 0`` means no limit); nothing starts."""
    request = {"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"argv": ["true"], "timeout": timeout}}
    message = await reply(raw, json.dumps(request))
    assert message["error"] == {
        "code": -32602,
        "message": "timeout must be a positive number of seconds; omit it for no limit",
        "data": {"field": "timeout"},
    }
    status = await reply(raw, '{"jsonrpc":"2.0","id":2,"method":"status"}')
    assert status["result"]["state"] == "idle"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("timeout", 1e308, "timeout must be at most 2592000 s (30 days)"),
    ("timeout", 30 * 86400 + 1, "timeout must be at most 2592000 s (30 days)"),
    ("heartbeat_interval", 1e308, "heartbeat_interval must be at most 3600 s (1 hour)"),
    ("heartbeat_interval", 3600.5, "heartbeat_interval must be at most 3600 s (1 hour)"),
    ("kill_grace", 1e308, "kill_grace must be at most 3600 s (1 hour)"),
    ("kill_grace", 10**30, "kill_grace must be at most 3600 s (1 hour)"),
    ("inactivity_threshold", 1e308, "inactivity_threshold must be at most 2592000 s (30 days)"),
])
async def test_durations_past_their_bound_are_refused_naming_it(raw, name, value, message) -> None:
    """``timeout`` (30 days), ``heartbeat_interval`` and ``kill_grace`` (1 hour) past their
    bound are -32602 naming the param and the bound (up to 1e308 was taken); nothing starts."""
    request = {"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"argv": ["true"], name: value}}
    answer = await reply(raw, json.dumps(request))
    assert answer["error"] == {"code": -32602, "message": message, "data": {"field": name}}
    status = await reply(raw, '{"jsonrpc":"2.0","id":2,"method":"status"}')
    assert status["result"]["state"] == "idle"


async def test_internal_fault_is_generic(server, client, monkeypatch, caplog) -> None:
    """-32603 hides the details from the client and logs them on the server."""

    async def broken(*args, **kwargs):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(server.processes, "spawn", broken)
    with pytest.raises(errors.InternalError) as info:
        await client.execute(argv=["echo"])
    assert "secret detail" not in info.value.message
    assert "secret detail" in caplog.text
    assert (await client.status())["state"] == "idle"


@pytest.mark.parametrize("stdin", ["null", "pipe"])
async def test_a_run_that_fails_after_its_spawn_leaves_no_child_behind(server, client, monkeypatch, stdin) -> None:
    """A fault after the spawn (here, the progress estimator) is -32603 and kills the child's
    group at once: it ran on unsupervised, with nothing to stop it, until the server stopped."""
    import psutil

    from cc_executor_nb.server import handler as handler_module

    def broken(*args, **kwargs):
        raise RuntimeError("estimator fault")

    monkeypatch.setattr(handler_module, "ProgressEstimator", broken)
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    with pytest.raises(errors.InternalError):
        await client.execute(argv=["sleep", "30"], stdin=stdin)

    def sleepers() -> list[int]:
        found = []
        for child in psutil.Process().children(recursive=True):
            try:
                if child.pid not in before and "sleep" in " ".join(child.cmdline()) and child.status() != "zombie":
                    found.append(child.pid)
            except psutil.Error:
                continue
        return found

    await eventually_async(lambda: not sleepers(), timeout=scaled(5))
    assert not server.processes.running
    monkeypatch.undo()
    done = await client.execute(argv=fake("echo", "after"))  # the server goes on
    assert done["status"] == "started"


async def test_a_run_whose_input_pipe_fails_to_open_closes_it_once(server, client, monkeypatch) -> None:
    """A failed start closes the child's input pipe once: _open_input closes it when it
    fails, and a second close (the clean-up's) could close a descriptor opened meanwhile
    under the same number (another run's pipe or file)."""
    from cc_executor_nb.server import handler as handler_module

    class BrokenInput(handler_module.ChildInput):
        async def open(self, fd: int) -> None:
            raise OSError("no pipe today")

    closes: list[int] = []

    class RecordingOs:
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        def close(self, fd: int) -> None:
            closes.append(fd)
            os.close(fd)

    spawned: list[int | None] = []
    spawn = server.processes.spawn

    async def recording_spawn(*args: Any, **kwargs: Any) -> Any:
        process = await spawn(*args, **kwargs)
        spawned.append(process.stdin_fd)
        return process

    monkeypatch.setattr(handler_module, "ChildInput", BrokenInput)
    monkeypatch.setattr(handler_module, "os", RecordingOs())
    monkeypatch.setattr(server.processes, "spawn", recording_spawn)
    with pytest.raises(errors.InternalError):
        await client.execute(argv=["sleep", "30"], stdin="pipe")
    [fd] = spawned
    assert fd is not None and closes.count(fd) == 1


async def test_a_failed_start_releases_its_output_even_when_the_kill_fails(server, client, monkeypatch) -> None:
    """The clean-up of a failed start releases the output files when killing the child raised
    (it stopped at the first failing step: the capture files stayed open)."""
    from cc_executor_nb.server import handler as handler_module
    from cc_executor_nb.server.supervisor import ManagedProcess

    def broken(*args, **kwargs):
        raise RuntimeError("estimator fault")

    closed: list[bool] = []
    spawn = server.processes.spawn

    async def recording_spawn(*args: Any, **kwargs: Any) -> Any:
        process = await spawn(*args, **kwargs)
        output_close = process.output.close

        def close() -> None:
            closed.append(True)
            output_close()

        process.output.close = close
        return process

    async def failing_terminate(self, grace: float, *, escapees: bool = True) -> str:
        os.killpg(self.pgid, 9)  # the child goes; the step itself fails
        raise RuntimeError("psutil fault")

    monkeypatch.setattr(handler_module, "ProgressEstimator", broken)
    monkeypatch.setattr(server.processes, "spawn", recording_spawn)
    monkeypatch.setattr(ManagedProcess, "terminate", failing_terminate)
    with pytest.raises(errors.InternalError):
        await client.execute(argv=["sleep", "30"])
    assert closed  # the capture files were released (RunOutput.close or the child's output's)


async def test_session_limit() -> None:
    """-32000 when the session limit is reached; the first session is unaffected."""
    handler = make_handler(max_sessions=1)
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as first:
            async with ws_connect(handler.url, additional_headers=AUTH, proxy=None) as ws:
                message = json.loads(await ws.recv())
                assert message["error"]["code"] == -32000 and message["id"] is None
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd.code == 1013
            assert (await first.status())["state"] == "idle"
    finally:
        await handler.close()


async def test_a_client_refused_for_the_session_limit_says_so() -> None:
    """connect() to a server at its session limit raises LimitReached with the server's
    words (it read "received 1013 (try again later) ...; then sent 1013 ...")."""
    handler = make_handler(max_sessions=1)
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN):
            with pytest.raises(errors.LimitReached, match=r"^session limit reached \(1\)$"):
                await connect(handler.url, TOKEN)
    finally:
        await handler.close()


async def test_process_limit() -> None:
    """-32000 when the running-process limit is reached."""
    handler = make_handler(max_processes=1)
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as one, await connect(handler.url, TOKEN) as two:
            await one.execute(argv=["sleep", "5"])
            with pytest.raises(errors.LimitReached):
                await two.execute(argv=["sleep", "5"])
            await one.cancel()
            await collect(one)
    finally:
        await handler.close()


async def test_command_not_allowed() -> None:
    """-32001 when argv[0]'s name is not on the allow-list (compared by name)."""
    handler = make_handler(allowed_commands=["echo"])
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as client:
            with pytest.raises(errors.CommandNotAllowed):
                await client.execute(argv=["ls"])
            await client.execute(argv=["/bin/echo", "ok"])
            assert (await collect(client))[-1].params["status"] == "completed"
    finally:
        await handler.close()


async def test_server_python_does_not_pass_an_allow_list() -> None:
    """``server_python`` runs the server's own interpreter, which an allow-list without it refuses
    (the wrapper would run any command it is given): -32001, as for ``python3`` itself."""
    handler = make_handler(allowed_commands=["echo"])
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as client:
            with pytest.raises(errors.CommandNotAllowed, match="is not allowed"):
                await client.execute(argv=["echo", "-m", "cc_executor_nb.demo.runner", "--", "echo", "x"],
                                     server_python=True)
    finally:
        await handler.close()


def _script(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {text}\n")
    path.chmod(0o755)


async def test_an_allowed_relative_program_is_the_one_in_cwd(tmp_path, monkeypatch) -> None:
    """With an allow-list, ``./tool`` is the tool in the request's ``cwd``: it was resolved
    against the server's own directory, so the allowed tool was refused and a tool of the
    same name in the server's directory, if allowed, ran instead."""
    _script(tmp_path / "work" / "tool", "from-cwd")
    _script(tmp_path / "server" / "tool", "from-server-directory")
    monkeypatch.chdir(tmp_path / "server")
    for allowed, expected in [(tmp_path / "work" / "tool", "from-cwd\n"), (tmp_path / "server" / "tool", None)]:
        handler = make_handler(allowed_commands=[str(allowed)])
        await handler.start("127.0.0.1", 0)
        try:
            async with await connect(handler.url, TOKEN) as client:
                if expected is None:
                    with pytest.raises(errors.CommandNotAllowed, match=str(tmp_path / "work" / "tool")):
                        await client.execute(argv=["./tool"], cwd=str(tmp_path / "work"))
                    continue
                await client.execute(argv=["./tool"], cwd=str(tmp_path / "work"))
                assert output_of(await collect(client)) == expected
        finally:
            await handler.close()


async def test_control_on_idle_session(client) -> None:
    """-32002 for control with no process running."""
    with pytest.raises(errors.NoProcessRunning):
        await client.pause()


async def _answer_and_notices(ws, request: dict) -> tuple[dict, list[str]]:
    """Send ``request``; return its answer and the methods of the notifications before it."""
    await ws.send(json.dumps(request))
    seen: list[str] = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), scaled(10)))
        if "method" not in message:
            return message, seen
        seen.append(message["method"])


async def test_pause_and_resume_in_the_wrong_state_are_refused_and_do_nothing(raw) -> None:
    """RESUME of a running process and PAUSE of a paused one are -32602 (field ``type``) and
    send no ``process.resumed`` / ``process.paused`` (RESUME said ``resumed`` and notified)."""
    def control(id_: int, kind: str) -> dict:
        return {"jsonrpc": "2.0", "id": id_, "method": "control", "params": {"type": kind}}

    await reply(raw, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"argv": ["sleep", "30"]}}))
    answer, _ = await _answer_and_notices(raw, control(2, "resume"))
    assert answer["error"] == {"code": -32602, "message": "the process is not paused", "data": {"field": "type"}}
    assert (await reply(raw, json.dumps(control(3, "PAUSE"))))["result"] == {"status": "paused"}
    answer, _ = await _answer_and_notices(raw, control(4, "PAUSE"))
    assert answer["error"] == {"code": -32602, "message": "the process is already paused", "data": {"field": "type"}}
    assert (await reply(raw, json.dumps(control(5, "RESUME"))))["result"] == {"status": "resumed"}
    await reply(raw, json.dumps(control(6, "CANCEL")))
    seen: list[str] = []
    while "process.completed" not in seen:
        seen.append(json.loads(await asyncio.wait_for(raw.recv(), scaled(10))).get("method"))
    assert (await _answer_and_notices(raw, control(7, "RESUME")))[0]["error"]["code"] == -32002


async def test_a_refused_resume_sends_no_notification(raw) -> None:
    """The refused RESUME is silent: the only ``process.*`` notification before the next
    answer is the run's own start, never ``process.resumed``."""
    await reply(raw, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"argv": ["sleep", "30"]}}))
    await raw.send('{"jsonrpc":"2.0","method":"control","params":{"type":"RESUME"}}')
    _, seen = await _answer_and_notices(raw, {"jsonrpc": "2.0", "id": 2, "method": "status"})
    assert "process.resumed" not in seen and "process.started" in seen
    await reply(raw, '{"jsonrpc":"2.0","id":3,"method":"control","params":{"type":"CANCEL"}}')


async def test_resume_of_unknown_session_or_bad_token(client, server) -> None:
    """-32006 for an unknown session id and for a wrong resume token."""
    connected = await client.wait_connected()
    with pytest.raises(errors.UnknownSession):
        await client.call("resume", {"session_id": "nope", "resume_token": "x", "last_seq": 0})
    async with await connect(server.url, TOKEN) as other:
        with pytest.raises(errors.UnknownSession):
            await other.call("resume", {"session_id": connected.session_id, "resume_token": "wrong", "last_seq": 0})
    assert "resume" in connected.capabilities


async def test_resume_beyond_the_replay_buffer_is_a_gap(tmp_path) -> None:
    """-32003 with data.first_available_seq when the notifications are no longer kept."""
    handler = make_handler(replay_limit=64 * 1024, chunk_limit=4096)
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as first:
            connected = await first.wait_connected()
            await first.execute(argv=fake("flood", str(1 << 20), str(tmp_path / "sha")))
            await collect(first)
            async with await connect(handler.url, TOKEN) as second:
                with pytest.raises(errors.OutputGap) as info:
                    await second.call("resume", {"session_id": connected.session_id,
                                                 "resume_token": connected.params["resume_token"], "last_seq": 0})
                first_available = info.value.data["first_available_seq"]
                assert 1 < first_available <= handler.sessions.get(connected.session_id).last_seq
    finally:
        await handler.close()


async def test_spawn_failure_carries_errno(client, tmp_path) -> None:
    """-32004 with errno and strerror for a missing program and a missing cwd."""
    with pytest.raises(errors.SpawnFailed) as info:
        await client.execute(argv=["definitely-not-a-program-xyz"])
    assert info.value.data["errno"] == 2 and info.value.data["strerror"]
    with pytest.raises(errors.SpawnFailed) as info:
        await client.execute(argv=["python3", "-c", "print(1)"], cwd=str(tmp_path / "missing"))
    assert info.value.data["errno"] == 2
    missing = str(tmp_path / "missing")
    assert info.value.message == f"could not start 'python3': its working directory {missing!r}: " + os.strerror(2)
    with pytest.raises(errors.SpawnFailed) as info:
        await client.execute(argv=[str(tmp_path)])
    assert info.value.data["errno"] == 13


def executable(path, text: str):
    """``path`` written with ``text`` and made executable."""
    path.write_text(text)
    path.chmod(0o755)
    return path


async def refused_start(client, program) -> tuple[int, str]:
    """The errno and message of the -32004 that starting ``program`` gets."""
    with pytest.raises(errors.SpawnFailed) as info:
        await client.execute(argv=[str(program)])
    return info.value.data["errno"], info.value.message


async def test_a_script_whose_interpreter_is_missing_names_the_interpreter(client, tmp_path) -> None:
    """A script whose #! names a missing program: -32004 names that interpreter, not the
    script (it read "could not start './x.sh': No such file or directory" for a file that is there)."""
    script = executable(tmp_path / "x.sh", "#!/no/such/interpreter -e\necho hi\n")
    assert await refused_start(client, script) == (
        2, f"could not start {str(script)!r}: its interpreter '/no/such/interpreter': " + os.strerror(2)
    )


async def test_a_program_that_is_a_directory_or_has_no_format_says_so(client, tmp_path) -> None:
    """A directory reads "is a directory", an executable text file without #! says it has none
    (they read only "Permission denied" and "Exec format error")."""
    assert await refused_start(client, tmp_path) == (
        13, f"could not start {str(tmp_path)!r}: it is a directory: " + os.strerror(13)
    )
    script = executable(tmp_path / "y.sh", "echo hi\n")
    assert await refused_start(client, script) == (
        8, f"could not start {str(script)!r}: it has no #! line (run it as `sh {script}`): " + os.strerror(8)
    )



async def test_a_watchdog_that_cannot_start_is_a_spawn_failure(client, monkeypatch) -> None:
    """The first run at the descriptor limit, where the watchdog cannot start: -32004 naming
    argv[0] and EMFILE (it was -32603 "Internal error" and a traceback in the server's log)."""

    def no_descriptors(self: ProcessManager) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), "/dev/null")

    monkeypatch.setattr(ProcessManager, "_ensure_watchdog", no_descriptors)
    with pytest.raises(errors.SpawnFailed) as info:
        await client.execute(argv=["echo", "hi"])
    assert info.value.data["errno"] == errno.EMFILE
    assert info.value.message == "could not start 'echo': " + os.strerror(errno.EMFILE)


async def test_a_run_asked_of_a_server_shutting_down_says_so_in_words() -> None:
    """A run asked for on a connection the server closed as it shut down (a batch's next run
    as the server got SIGTERM) fails saying the server is shutting down (it read
    "received 1001 (going away); then sent 1001 (going away)")."""
    handler = make_handler()
    await handler.start("127.0.0.1", 0)
    async with await connect(handler.url, TOKEN, auto_reconnect=False) as client:
        await handler.close()
        await eventually_async(lambda: client.closed, what="the client to see the close")
        with pytest.raises(errors.ConnectionLost) as info:
            await client.execute(argv=["echo", "hi"])
    assert str(info.value) == "the server is shutting down (close code 1001, going away)"


async def test_a_request_over_the_message_limit_says_so_in_words() -> None:
    """An execute bigger than the server's message limit (a 1.2 MB argument) fails saying what
    to do (it read "received 1009 (message too big) frame with 1200090 bytes exceeds limit
    of 1048576 bytes; then sent 1009 ...")."""
    handler = make_handler(max_message_size=64 << 10)
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN, auto_reconnect=False) as client:
            with pytest.raises(errors.ConnectionLost) as info:
                await client.execute(argv=["echo", "x" * (100 << 10)])
        assert str(info.value).startswith("the server refused a message too big for it (")
        assert str(info.value).endswith(
            "): pass large data in a file or on stdin, not in the arguments or the environment"
        )
    finally:
        await handler.close()


async def test_an_argument_or_variable_over_the_kernels_limit_is_named(client) -> None:
    """E2BIG names the string over Linux's limit of 128 KiB a string (it read "Argument list too long"
    for an environment variable, leaving the user to search the arguments)."""
    with pytest.raises(errors.SpawnFailed) as info:
        await client.execute(argv=["echo", "hi"], env={"BIG": "x" * (200 << 10)})
    assert info.value.data["errno"] == errno.E2BIG
    assert info.value.message == (
        "could not start 'echo': its environment variable BIG (204804 bytes; at most 131071 each): "
        + os.strerror(errno.E2BIG)
    )
    with pytest.raises(errors.SpawnFailed) as info:
        await client.execute(argv=["echo", "hi", "y" * (130 << 10)])
    assert info.value.message == (
        "could not start 'echo': its argument 2 (133120 bytes; at most 131071 each): " + os.strerror(errno.E2BIG)
    )

async def test_a_claude_missing_on_the_servers_path_says_how_to_install_it(client, tmp_path) -> None:
    """A remote server without claude: -32004 says where it is missing and how to install it
    (the notebook could only say "No such file or directory")."""
    with pytest.raises(errors.SpawnFailed) as info:
        await client.execute(argv=["claude", "-p", "hi"], env={"PATH": str(tmp_path)})
    assert info.value.message.startswith("could not start 'claude': No such file or directory (not on this server's")
    assert "npm install -g @anthropic-ai/claude-code" in info.value.message


async def test_a_cwd_under_tilde_is_in_the_servers_home(client) -> None:
    """cwd "~" (a magic's --cwd ~, no shell to expand it) runs in the server user's home."""
    await client.execute(argv=["python3", "-c", "import os; print(os.getcwd())"], cwd="~")
    events = await collect(client)
    assert completed(events).exit_code == 0
    assert output_of(events).strip() == os.path.realpath(os.path.expanduser("~"))


async def test_already_running(client) -> None:
    """-32005 for a second execute while a process runs."""
    await client.execute(argv=["sleep", "5"])
    with pytest.raises(errors.AlreadyRunning):
        await client.execute(argv=["echo"])
    await client.cancel()
    await collect(client)


def strict_json(frame: bytes) -> object:
    """A frame as a strict peer reads it: UTF-8, JSON, no lone surrogate (orjson refuses one)."""
    value = json.loads(frame.decode("utf-8"))
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate raises here
    return value


async def strict_reply(ws, text: str) -> Any:
    """Send a frame; the next answer (notifications skipped), read strictly."""
    await ws.send(text)
    while True:
        message = strict_json(await asyncio.wait_for(ws.recv(decode=False), scaled(10)))
        if isinstance(message, list) or "method" not in message:
            return message


async def test_lone_surrogates_are_never_echoed(raw) -> None:
    """A lone surrogate (a ``\\ud800`` escape) in a method name comes back as U+FFFD, and one
    in an ``id`` is -32600 with id null: every answer is valid UTF-8 JSON a strict parser
    reads (they were echoed as ``\\ud800`` escapes, which orjson, our own client, refuses)."""
    message = await strict_reply(raw, '{"jsonrpc":"2.0","id":1,"method":"x\\ud800y"}')
    assert message["error"] == {"code": -32601, "message": "Method not found: x\ufffdy"}
    message = await strict_reply(raw, '{"jsonrpc":"2.0","id":"a\\udc00","method":"status"}')
    assert message["id"] is None and message["error"]["code"] == -32600
    assert message["error"]["message"] == "Invalid Request: id must be valid Unicode (no lone surrogate)"
    batch = '[{"jsonrpc":"2.0","id":2,"method":"\\udfff"},{"jsonrpc":"2.0","id":"\\ud800","method":"status"}]'
    answers = await strict_reply(raw, batch)
    assert [a["error"]["code"] for a in answers] == [-32601, -32600]


async def test_notifications_never_get_a_response(raw) -> None:
    """A request without id gets no response, not even an error."""
    await raw.send('{"jsonrpc":"2.0","method":"nope"}')
    await raw.send('{"jsonrpc":"2.0","method":"pong"}')
    await raw.send('{"jsonrpc":"2.0","method":"control","params":{"type":"PAUSE"}}')
    message = await reply(raw, '{"jsonrpc":"2.0","id":9,"method":"status"}')
    assert message["id"] == 9


async def test_pong_request_is_accepted(raw) -> None:
    """``pong`` with an id is answered and otherwise ignored."""
    message = await reply(raw, '{"jsonrpc":"2.0","id":3,"method":"pong"}')
    assert message["id"] == 3 and "result" in message


async def test_batch_gets_one_response_per_request_with_id(raw) -> None:
    """A batch is answered with an array: one entry per request that had an id."""
    batch = json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "status"},
        {"jsonrpc": "2.0", "method": "status"},
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        5,
    ])
    message = await reply(raw, batch)
    assert isinstance(message, list) and len(message) == 3
    assert message[0]["id"] == 1 and message[1]["error"]["code"] == -32601
    assert message[2]["error"]["code"] == -32600 and message[2]["id"] is None


async def test_a_batch_past_the_cap_is_one_invalid_request(raw) -> None:
    """A batch of more than 100 requests is answered with one -32600 error and runs none of
    them (340,000 empty objects made a 34 MB reply and held the loop for seconds);
    100 requests are still answered one by one."""
    status = {"jsonrpc": "2.0", "id": 1, "method": "status"}
    message = await reply(raw, json.dumps([status] * 101))
    assert message == {"jsonrpc": "2.0", "id": None,
                       "error": {"code": -32600, "message": "Invalid Request: batch too long (at most 100 requests)"}}
    message = await reply(raw, "[" + ",".join(["{}"] * 340_000) + "]")
    assert message["error"]["code"] == -32600
    message = await reply(raw, json.dumps([status] * 100))
    assert isinstance(message, list) and len(message) == 100


async def test_batch_of_notifications_gets_nothing(raw) -> None:
    """A batch with only notifications gets no response at all."""
    await raw.send('[{"jsonrpc":"2.0","method":"pong"},{"jsonrpc":"2.0","method":"nope"}]')
    message = await reply(raw, '{"jsonrpc":"2.0","id":4,"method":"status"}')
    assert message["id"] == 4


async def test_oversized_frame_closes_with_1009(server) -> None:
    """A frame over the inbound limit is a frame-level fault: close code 1009."""
    async with ws_connect(server.url, additional_headers=AUTH, proxy=None, max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * (server.max_message_size + 1))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), scaled(10))
        assert closed.value.rcvd.code == 1009


async def test_client_fails_pending_requests_when_connection_drops() -> None:
    """A request still pending when the connection drops fails with ConnectionLost."""
    from websockets.asyncio.server import serve

    async def silent_peer(ws) -> None:
        await ws.send(protocol.dumps(protocol.notification("connected", {"session_id": "s"})))
        await ws.recv()  # the request: never answered; drop the connection instead
        await ws.close(1011, "gone")

    async with serve(silent_peer, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        client = await connect(f"ws://127.0.0.1:{port}/ws")
        with pytest.raises(errors.ConnectionLost):
            await asyncio.wait_for(client.call("status"), scaled(10))
        assert client.closed
        with pytest.raises(errors.ConnectionLost):
            await client.call("status")


@pytest.mark.parametrize("ends", ["timeout", "cancel"])
async def test_a_connect_that_never_gets_its_session_closes_its_connection(ends: str) -> None:
    """connect() that fails before ``connected`` (its timeout, or its caller cancelled) closes the
    WebSocket it opened: the peer sees it end (left open, its transport leaks when the loop closes)."""
    from websockets.asyncio.server import serve

    opened, gone = asyncio.Event(), asyncio.Event()

    async def mute_peer(ws) -> None:  # accepts the handshake, never says "connected"
        await (await ws.ping())  # answered: the client's connection is open, connect() waits for "connected"
        opened.set()
        await ws.wait_closed()
        gone.set()

    async with serve(mute_peer, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        timeout = scaled(0.5) if ends == "timeout" else scaled(30)
        attempt = asyncio.ensure_future(connect(f"ws://127.0.0.1:{port}/ws", open_timeout=timeout))
        if ends == "cancel":
            await asyncio.wait_for(opened.wait(), scaled(10))
            attempt.cancel()
        with pytest.raises((TimeoutError, asyncio.CancelledError)):
            await attempt
        await asyncio.wait_for(gone.wait(), scaled(10))


async def test_a_reconnect_that_does_not_resume_closes_the_connection_it_opened() -> None:
    """A dropped session's client dials again; a peer that never says hello on the new connection: the
    client gives that connection up (closes it) before the next attempt instead of leaving it open."""
    from websockets.asyncio.server import serve

    connections = 0
    gone = asyncio.Event()

    async def peer_that_forgets(ws) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:  # the session, then a drop without a close frame
            hello = {"session_id": "s", "resume_token": "r", "capabilities": ["resume"]}
            await ws.send(protocol.dumps(protocol.notification("connected", hello)))
            await ws.recv()  # the status request below: the client is in its session
            ws.transport.abort()
            return
        await ws.wait_closed()  # the reconnects: never a hello
        gone.set()

    async with serve(peer_that_forgets, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        client = await connect(f"ws://127.0.0.1:{port}/ws", open_timeout=scaled(0.5), reconnect_timeout=scaled(1))
        with pytest.raises(errors.ConnectionLost):
            await asyncio.wait_for(client.call("status"), scaled(10))
        await asyncio.wait_for(gone.wait(), scaled(10))
    await asyncio.wait_for(client.close(), scaled(30))


async def test_close_while_reconnecting_stops_the_reconnects() -> None:
    """close() during the reconnect attempts to a server that is gone ends them: the client is closed
    (it used to go on dialling until reconnect_timeout, holding a loop's shutdown that long)."""
    client, _ = await _client_of_a_server_gone(reconnect_timeout=300)
    await asyncio.wait_for(_reconnecting(client), scaled(10))
    closing = asyncio.ensure_future(client.close())
    await asyncio.wait([closing], timeout=scaled(10))  # no cancel on timeout: that would end the reconnects
    finished = closing.done()
    closing.cancel()
    assert finished and client.closed


async def _chatty_peer(ws) -> None:
    """A server that answers one call, then sends five outputs and waits for the close."""
    await ws.send(protocol.dumps(protocol.notification("connected", {"session_id": "s"})))
    request = json.loads(await ws.recv())  # the client listens now
    await ws.send(protocol.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {"status": "ok"}}))
    for seq in range(1, 6):
        await ws.send(protocol.dumps(protocol.notification("process.output", {"data": str(seq), "seq": seq})))
    await ws.wait_closed()


async def test_close_does_not_wait_for_a_consumer_that_stopped_reading() -> None:
    """close() with the event queue full and nobody reading returns (it waited for the reader
    for ever); events() then gives every event, in order, and ends."""
    from websockets.asyncio.server import serve

    seen: list[object] = []
    async with serve(_chatty_peer, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        client = await connect(f"ws://127.0.0.1:{port}/ws", max_events=2)
        client.add_listener(seen.append)  # each event, before the queue takes it
        await client.call("status")
        # `connected` and "1" fill the queue; the reader holds "2" and waits for room.
        await eventually_async(lambda: len(seen) >= 2, what="the reader holding a third event")
        closing = asyncio.ensure_future(client.close())
        await asyncio.wait([closing], timeout=scaled(10))
        finished = closing.done()
        closing.cancel()
        assert finished and client.closed
        got = [event.params.get("data") async for event in client.events()]
    assert got == [None, "1", "2", "3", "4", "5"]


async def test_close_leaves_no_task_behind_when_nobody_reads() -> None:
    """Closed with events the queue has no room for, and never read: no task of the client is
    left pending (the loop's close would destroy it, with a warning)."""
    from websockets.asyncio.server import serve

    seen: list[object] = []
    async with serve(_chatty_peer, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        client = await connect(f"ws://127.0.0.1:{port}/ws", max_events=2)
        client.add_listener(seen.append)
        await client.call("status")
        await eventually_async(lambda: len(seen) >= 2, what="the reader holding a third event")
        await asyncio.wait_for(client.close(), scaled(10))
        for _ in range(3):
            await asyncio.sleep(0)
        pending = [task for task in asyncio.all_tasks() if not task.done()
                   and getattr(task.get_coro(), "__qualname__", "").startswith("Client.")]
        assert pending == []
        got = [event.params.get("data") async for event in client.events()]
    assert got == [None, "1", "2", "3", "4", "5"]


async def test_a_caller_cancelled_while_close_waits_is_cancelled(server) -> None:
    """A task cancelled while close() waits for the reader ends cancelled (close() swallowed the
    cancellation and returned), and the reader is cancelled with it."""
    client = await connect(server.url, TOKEN)
    reader = client._reader
    stuck = asyncio.ensure_future(asyncio.Event().wait())  # a reader that does not end by itself
    client._reader = stuck
    closing = asyncio.ensure_future(client.close())
    await asyncio.wait_for(reader, scaled(10))  # the connection closed: close() now waits for `stuck`
    for _ in range(3):
        await asyncio.sleep(0)
    assert not closing.done()
    closing.cancel()
    await asyncio.wait([closing])
    assert closing.cancelled() and stuck.cancelled()


async def _client_of_a_server_gone(reconnect_timeout: float):
    """A client whose server said ``connected``, dropped it and stopped listening (it
    reconnects now), and the port that server had."""
    from websockets.asyncio.server import serve

    async def peer_that_drops(ws) -> None:
        hello = {"session_id": "s", "resume_token": "r", "capabilities": ["resume"]}
        await ws.send(protocol.dumps(protocol.notification("connected", hello)))
        await ws.recv()
        ws.transport.abort()

    async with serve(peer_that_drops, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        client = await connect(f"ws://127.0.0.1:{port}/ws", reconnect_timeout=reconnect_timeout)
        with pytest.raises(errors.ConnectionLost):
            await asyncio.wait_for(client.call("status"), scaled(10))
    return client, port


async def _reconnecting(client) -> None:
    """Return at the client's first ``client.reconnecting`` event."""
    async for event in client.events():
        if event.method == "client.reconnecting":
            return


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
requests = st.fixed_dictionaries(
    {
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
        "method": st.sampled_from(["execute", "control", "status", "pong", "resume", "x"]) | st.text(max_size=5),
    },
    optional={"id": st.integers() | st.text(max_size=5) | st.none() | st.booleans(), "params": json_values},
)
frames = (
    st.text(max_size=200)
    | requests.map(json.dumps)
    | st.lists(requests, max_size=4).map(json.dumps)
    | json_values.map(json.dumps)
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames)
def test_dispatcher_answers_any_frame_with_documented_errors_only(frame: str) -> None:
    """Arbitrary frames fed to the dispatcher give only documented errors, never a crash."""
    handler = make_handler(allowed_commands=["no-such-allowed-program"])
    sent: list[str | bytes] = []

    async def send(data: str | bytes, text: bool | None = None) -> None:
        sent.append(data)

    async def feed() -> None:
        session = Session(send, heartbeat_interval=20, inactivity_threshold=30)
        await handler._handle_frame(_Link(SimpleNamespace(send=send), session), frame)
        assert session.execution is None

    asyncio.run(feed())
    for text in sent:
        message = json.loads(text)
        for item in message if isinstance(message, list) else [message]:
            if "error" in item:
                assert item["error"]["code"] in DOCUMENTED - {-32603}
            else:
                assert "result" in item


@pytest.mark.parametrize("name", ["GIT_PROXY_COMMAND", "GIT_EXTERNAL_DIFF", "GIT_TEMPLATE_DIR",
                                  "PYTHONWARNINGS", "PYTHONBREAKPOINT", "HOME", "XDG_CONFIG_HOME",
                                  "npm_config_script_shell", "Npm_Config_Script_Shell",
                                  "NPM_config_script_shell", "npm_CONFIG_prefix",
                                  "GIT_DIR", "GIT_COMMON_DIR", "GIT_WORK_TREE", "GIT_CONFIG", "GIT_ALLOW_PROTOCOL",
                                  "MANPAGER", "MANOPT"])
async def test_an_allow_list_refuses_env_that_makes_git_python_npm_or_rc_files_run_code(name) -> None:
    """With an allow-list, these variables are refused in a request's env (-32001, field env):
    each can make an allowed git, python or npm start other code, or point a program at
    start-up files of the client's choosing. Before, all were passed to the child. npm reads
    /^npm_config_/i, so its settings are refused in any case (an allowed npm ran its scripts
    through a client's Npm_Config_Script_Shell). GIT_DIR and GIT_COMMON_DIR name a repository
    whose config git obeys (its core.fsmonitor ran on git status), GIT_ALLOW_PROTOCOL=ext lets
    an ext:: remote run its command; all five reached the child before."""
    handler = make_handler(allowed_commands=["echo"])
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as client:
            with pytest.raises(errors.CommandNotAllowed, match=f"env may not set {name} ") as caught:
                await client.execute(argv=["echo", "x"], env={name: "/tmp/elsewhere"})
            assert caught.value.data == {"field": "env"}
    finally:
        await handler.close()


async def test_an_allow_list_refuses_pythonuserbase() -> None:
    """With an allow-list, a request's PYTHONUSERBASE is refused (-32001, field env): Python
    runs the .pth files and usercustomize under it at start-up, as it would PYTHONPATH's
    sitecustomize; before, it reached the child."""
    handler = make_handler(allowed_commands=["echo"])
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as client:
            with pytest.raises(errors.CommandNotAllowed, match="env may not set PYTHONUSERBASE ") as caught:
                await client.execute(argv=["echo", "x"], env={"PYTHONUSERBASE": "/tmp/elsewhere"})
            assert caught.value.data == {"field": "env"}
    finally:
        await handler.close()


async def test_reconnects_say_once_that_a_server_unreachable_for_a_while_may_be_gone() -> None:
    """A client that cannot reach its server for ``unreached_note_after`` seconds says so once
    (``still_unreached``, with the reason, the URL and how long it goes on trying), and keeps
    trying; before, five minutes of dials said nothing more than the first drop."""
    client, port = await _client_of_a_server_gone(reconnect_timeout=60)
    client.unreached_note_after = 0.5
    seen: list[dict] = []

    async def watch() -> None:
        async for event in client.events():
            if event.method == "client.reconnecting":
                seen.append(dict(event.params))
                if sum(1 for params in seen if params.get("still_unreached")) and len(seen) >= 8:
                    return

    await asyncio.wait_for(watch(), scaled(30))
    noted = [params for params in seen if params.get("still_unreached")]
    assert len(noted) == 1, seen
    assert noted[0]["unreachable"] == "Connection refused"
    assert noted[0]["url"] == f"ws://127.0.0.1:{port}/ws"
    assert noted[0]["down_for"] >= 0.5 and 0 < noted[0]["gives_up_in"] < 60
    assert all("unreachable" not in params for params in seen[:1])  # the first dial had not failed yet
    assert client.close_reason is None or "reconnect failed" not in client.close_reason  # still trying
    await asyncio.wait_for(client.close(), scaled(10))


async def test_a_server_reached_again_is_no_longer_said_unreachable() -> None:
    """Once a dial reaches the server again (here one that closes at once, so the resume fails
    and the client dials on), the next notices carry no ``unreachable``: the widget said "cannot
    reach the server: Connection refused" of a server that answered."""
    from websockets.asyncio.server import serve

    client, port = await _client_of_a_server_gone(reconnect_timeout=60)
    seen: list[dict] = []

    async def watch_until(done) -> None:
        async for event in client.events():
            if event.method == "client.reconnecting":
                seen.append(dict(event.params))
                if done():
                    return

    await asyncio.wait_for(watch_until(lambda: any("unreachable" in params for params in seen)), scaled(20))

    async def closes_at_once(ws) -> None:
        await ws.close()

    async with serve(closes_at_once, "127.0.0.1", port):
        mark = len(seen)
        await asyncio.wait_for(watch_until(lambda: len(seen) >= mark + 2), scaled(20))
    assert "unreachable" not in seen[-1], seen[-3:]
    await asyncio.wait_for(client.close(), scaled(10))


async def test_reconnects_that_give_up_say_which_server_they_could_not_reach_and_for_how_long() -> None:
    """A server gone for good (killed, never back) ends the reconnects with the URL, the reason in
    words and the time tried (it was "reconnect failed: [Errno 111] Connect call failed
    ('127.0.0.1', PORT)", no URL, no wait, an errno for a reason)."""
    client, port = await _client_of_a_server_gone(reconnect_timeout=0.5)
    await eventually_async(lambda: "reconnect failed" in (client.close_reason or ""), timeout=20)
    assert client.close_reason == (
        f"reconnect failed: cannot reach ws://127.0.0.1:{port}/ws for 0.5 s: Connection refused"
    )
    await asyncio.wait_for(client.close(), scaled(10))
