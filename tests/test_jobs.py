"""Durable jobs in the server: owned by the server, kept on disk, followed by many connections."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import stat
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect

from cc_executor_nb import errors, methods
from cc_executor_nb.client import Client, connect
from cc_executor_nb.events import Event
from cc_executor_nb.kernel.runstate import RunState
from cc_executor_nb.protocol import SummarySpec
from cc_executor_nb.server import files
from cc_executor_nb.server import jobs as jobs_module
from cc_executor_nb.server.handler import EnhancedWebSocketHandler
from cc_executor_nb.server.joblog import JobLog, SummaryScanner
from cc_executor_nb.server.jobs import LOST_ERROR, JobRecord, JobsDirBusy, JobStore

from .conftest import TOKEN, collect, completed, fake, group_alive, make_handler, output_of, reply
from .proxy import FaultyProxy
from .util import eventually_async, gone, scaled

pytestmark = pytest.mark.timeout(60)

RESULT = {"match": {"type": "result"}, "fields": ["total_cost_usd", "session_id", "is_error"]}


@pytest.fixture
async def jobs_server(tmp_path: Path):
    """A handler keeping durable jobs in a private directory."""
    handler = make_handler(jobs_dir=str(tmp_path / "jobs"), kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    yield handler
    await handler.close()


async def started_job(server: EnhancedWebSocketHandler, argv: list[str], **job: object) -> tuple[Client, str]:
    """A client that started a durable job, and the job's id."""
    client = await connect(server.url, TOKEN)
    result = await client.execute(argv=argv, durable=True, **job)  # type: ignore[arg-type]
    return client, result["job_id"]


async def follow(server: EnhancedWebSocketHandler, job_id: str, last_seq: int = 0) -> list[Event]:
    """Attach a new connection to the job and collect its notifications to the end."""
    async with await connect(server.url, TOKEN) as client:
        await client.attach(job_id, last_seq)
        return await collect(client)


async def test_a_lone_surrogate_in_meta_is_refused_not_stored(jobs_server) -> None:
    """``meta`` with a lone surrogate is -32602 naming ``meta`` (it was kept and echoed in
    jobs.list as a ``\\ud800`` escape, which a strict parser refuses); no job starts."""
    async with ws_connect(jobs_server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, proxy=None) as ws:
        await ws.recv()  # connected
        params = '{"argv":["true"],"durable":true,"meta":{"note":"a\\udc80b"}}'
        answer = await reply(ws, '{"jsonrpc":"2.0","id":1,"method":"execute","params":' + params + "}")
        assert answer["error"] == {"code": -32602, "message": "meta must be valid Unicode (no lone surrogate)",
                                   "data": {"field": "meta"}}
        listing = await reply(ws, '{"jsonrpc":"2.0","id":2,"method":"jobs.list"}')
        assert listing["result"]["jobs"] == []


def seq_of(events: list[Event]) -> list[int]:
    return [e.seq for e in events if e.seq is not None]


async def test_a_job_outlives_the_clean_close_of_its_connection_and_replays_exactly(jobs_server, tmp_path) -> None:
    """Closing the starting connection cleanly leaves the job running; a new one gets every byte (sha256)."""
    sha = tmp_path / "sha"
    client, job_id = await started_job(jobs_server, fake("flood", str(2 << 20), str(sha), str(4 << 20)))
    await client.close()
    events = await follow(jobs_server, job_id)
    assert hashlib.sha256(output_of(events).encode()).hexdigest() == sha.read_text()
    assert completed(events).params["status"] == "completed"
    assert seq_of(events) == list(range(1, len(seq_of(events)) + 1))


async def test_a_job_outlives_an_abrupt_drop_of_its_connection(jobs_server) -> None:
    """A connection cut without a close frame does not end the job (no detach TTL is involved)."""
    client, job_id = await started_job(jobs_server, fake("ticker", "6", "0.1"))
    client._ws.transport.abort()
    events = await follow(jobs_server, job_id)
    assert output_of(events) == "".join(f"tick {i}\n" for i in range(6))
    assert completed(events).params["exit_code"] == 0
    await client.close()


async def test_two_connections_following_one_job_get_the_same_notifications(jobs_server) -> None:
    """Two attached connections receive identical notifications, seq for seq."""
    client, job_id = await started_job(jobs_server, fake("ticker", "10", "0.05"))
    first, second = await asyncio.gather(follow(jobs_server, job_id), follow(jobs_server, job_id))
    numbered = [[(e.method, dict(e.params)) for e in events if e.seq is not None] for events in (first, second)]
    assert numbered[0] == numbered[1]
    # The whole job, start to end (two ticks may share one output notification on a busy machine).
    assert [numbered[0][0][0], numbered[0][-1][0]] == ["process.started", "process.completed"]
    assert output_of(first) == "".join(f"tick {i}\n" for i in range(10))
    await client.close()


async def test_attach_after_last_seq_sends_only_the_rest(jobs_server) -> None:
    """jobs.attach with last_seq N replays seq N+1 onwards, nothing earlier."""
    client, job_id = await started_job(jobs_server, fake("ticker", "5", "0.01"))
    whole = await collect(client)
    rest = await follow(jobs_server, job_id, last_seq=3)
    assert seq_of(rest) == seq_of(whole)[3:]
    assert [dict(e.params) for e in rest if e.seq] == [dict(e.params) for e in whole if e.seq and e.seq > 3]
    await client.close()


async def test_an_attached_connection_controls_the_job(jobs_server) -> None:
    """Pause, status, resume, input and cancel from a connection that attached act on the job."""
    client, job_id = await started_job(jobs_server, ["cat"], stdin="pipe")
    await client.close()
    async with await connect(jobs_server.url, TOKEN) as other:
        await other.attach(job_id)
        assert (await other.pause())["status"] == "paused"
        status = await other.status()
        assert status["state"] == "paused" and status["job_id"] == job_id and status["session_id"] == other.session_id
        await other.resume()
        await other.input("hello\n")
        await eventually_async(lambda: any(e.get("data") == "hello\n" for e in _outputs(jobs_server, job_id)))
        assert (await other.cancel())["status"] == "cancelled"
        events = await collect(other)
    assert completed(events).params["status"] == "cancelled"
    assert [e.method for e in events if e.method in (methods.PROCESS_PAUSED, methods.PROCESS_RESUMED)] == [
        methods.PROCESS_PAUSED, methods.PROCESS_RESUMED,
    ]


ECHO_STDIN = [sys.executable, "-c", "import sys\nfor line in sys.stdin: print('got', line.strip(), flush=True)\n"
              "print('eof', flush=True)"]


async def test_a_jobs_input_is_logged_for_whoever_attaches_later(jobs_server) -> None:
    """Every input and the input's close are in the job's log (process.input), before what the child answered."""
    client, job_id = await started_job(jobs_server, ECHO_STDIN, stdin="pipe")
    await client.input("first\n")
    await eventually_async(lambda: any(e.get("data") == "got first\n" for e in _outputs(jobs_server, job_id)))
    await client.input("second\n")
    await eventually_async(lambda: any(e.get("data") == "got second\n" for e in _outputs(jobs_server, job_id)))
    await client.close_input()
    live = await collect(client)
    await client.close()
    replayed = await follow(jobs_server, job_id)
    for events in (live, replayed):
        story = [(e.method, e.params.get("data"), e.params.get("closed")) for e in events
                 if e.method in (methods.PROCESS_INPUT, methods.PROCESS_OUTPUT)]
        assert story == [
            (methods.PROCESS_INPUT, "first\n", None), (methods.PROCESS_OUTPUT, "got first\n", None),
            (methods.PROCESS_INPUT, "second\n", None), (methods.PROCESS_OUTPUT, "got second\n", None),
            (methods.PROCESS_INPUT, "", True), (methods.PROCESS_OUTPUT, "eof\n", None),
        ], story
        assert [e.params.get("reason") for e in events if e.params.get("closed")] == ["input.close"]


async def test_a_jobs_execute_input_is_written_by_the_server_whoever_stays(jobs_server) -> None:
    """execute's ``input``: the server writes it and closes the job's stdin, though the starting
    connection was cut at once; the log has it as process.input and its close, after process.started."""
    client, job_id = await started_job(jobs_server, ECHO_STDIN, stdin="pipe", input="first\nsecond\n")
    client._ws.transport.abort()
    events = await follow(jobs_server, job_id)
    assert output_of(events) == "got first\ngot second\neof\n" and completed(events).params["exit_code"] == 0
    inputs = [(e.params.get("data"), e.params.get("reason")) for e in events if e.method == methods.PROCESS_INPUT]
    assert inputs == [("first\nsecond\n", None), ("", "input.close")]
    logged = [e.method for e in events if e.seq is not None]
    assert logged[:3] == [methods.PROCESS_STARTED, methods.PROCESS_INPUT, methods.PROCESS_INPUT], logged
    await client.close()


async def test_stdin_idle_timeout_closes_the_input_only_while_nobody_follows(jobs_server) -> None:
    """stdin_idle_timeout: kept open while a connection follows the job; closed once nobody did for that long."""
    client, job_id = await started_job(jobs_server, ECHO_STDIN, stdin="pipe", stdin_idle_timeout=0.3)
    await asyncio.sleep(1.5)  # five timeouts long, attached: the input must stay open
    job = jobs_server.jobs.store.get(job_id)
    assert job.running and not job.execution.stdin.closed
    await client.input("still here\n")
    await client.close()
    await eventually_async(lambda: job.finished, timeout=10)  # nobody follows: closed, so the child ends
    events = await follow(jobs_server, job_id)
    assert output_of(events) == "got still here\neof\n"
    [closed] = [e for e in events if e.method == methods.PROCESS_INPUT and e.params.get("closed")]
    assert closed.params["reason"] == "stdin_idle_timeout"
    assert completed(events).params["status"] == "completed"


async def test_stdin_idle_timeout_needs_a_durable_job_with_a_piped_stdin(jobs_server) -> None:
    """stdin_idle_timeout without stdin "pipe", on an ordinary run, or under 0.1 s is -32602 naming it."""
    bad = [
        {"argv": ["true"], "durable": True, "stdin_idle_timeout": 5},
        {"argv": ["true"], "stdin": "pipe", "stdin_idle_timeout": 5},
        {"argv": ["true"], "durable": True, "stdin": "pipe", "stdin_idle_timeout": 0.01},
        {"argv": ["true"], "durable": True, "stdin": "pipe", "stdin_idle_timeout": "5"},
    ]
    async with await connect(jobs_server.url, TOKEN) as client:
        for params in bad:
            with pytest.raises(errors.InvalidParams) as info:
                await client.call("execute", params)
            assert (info.value.data or {}).get("field") == "stdin_idle_timeout", params
    assert not jobs_server.jobs.store.jobs


async def test_stdin_close_on_summary_on_an_ordinary_run_is_refused_and_nothing_runs(jobs_server) -> None:
    """An ordinary execute asking for stdin_close_on_summary is -32602 naming it, before a process starts."""
    params = {"argv": ["cat"], "stdin": "pipe", "summary": {"match": {"type": "result"}, "fields": ["cost"]},
              "stdin_close_on_summary": True}
    async with await connect(jobs_server.url, TOKEN) as client:
        with pytest.raises(errors.InvalidParams) as info:
            await client.call("execute", params)
        assert (info.value.data or {}).get("field") == "stdin_close_on_summary"
        assert not jobs_server.processes.running


@pytest.mark.parametrize("asked", [{"stdin_idle_timeout": 5}, {"stdin_close_on_summary": True}])
async def test_the_client_passes_a_durable_only_action_of_an_ordinary_run_for_the_server_to_refuse(
        jobs_server, asked: dict) -> None:
    """Client.execute without durable=True sends stdin_idle_timeout and stdin_close_on_summary
    anyway, so the server's -32602 names them (they were dropped, and the run went on without)."""
    summary = {"match": {"type": "result"}, "fields": ["cost"]}
    async with await connect(jobs_server.url, TOKEN) as client:
        with pytest.raises(errors.InvalidParams) as info:
            await client.execute(argv=["cat"], stdin="pipe", summary=summary, **asked)
        assert (info.value.data or {}).get("field") == next(iter(asked))
        assert not jobs_server.processes.running


def _outputs(server: EnhancedWebSocketHandler, job_id: str) -> list[dict[str, object]]:
    job = server.jobs.store.get(job_id)
    lines = [json.loads(line) for line in job.log.read(0, 1 << 20)]
    return [line["params"] for line in lines if line["method"] == methods.PROCESS_OUTPUT]


EXIT_1_AT_EOF = [sys.executable, "-c", "import sys\nsys.stdin.read()\nsys.exit(1)"]
EXIT_1_AFTER_A_LINE = [sys.executable, "-c", "import sys\nsys.stdin.readline()\nsys.exit(1)"]


async def _ended_listed(client: Client, job_id: str) -> tuple[str, int | None, str | None, str]:
    """The job's listed status, exit code and error, and its logged process.completed status, at its end."""
    logged = completed(await collect(client)).params["status"]
    job = {job["job_id"]: job for job in await client.jobs()}[job_id]
    return job["status"], job["exit_code"], job["error"], logged


async def test_an_exit_the_client_called_ok_after_the_input_closed_is_listed_completed(jobs_server) -> None:
    """input's ok_exit_codes [1], then input.close: the child's exit 1 is listed completed with no error
    (as a claude conversation ended after an interrupted turn; it was listed failed); the log keeps the
    process's own failed."""
    client, job_id = await started_job(jobs_server, EXIT_1_AT_EOF, stdin="pipe")
    await client.input("stop\n", ok_exit_codes=[1])
    await client.close_input()
    assert await _ended_listed(client, job_id) == ("completed", 1, None, "failed")
    await client.close()


async def test_a_later_input_replaces_the_ok_exit_codes(jobs_server) -> None:
    """ok_exit_codes [1] then [] (the next turn): exit 1 after the close is listed failed again."""
    client, job_id = await started_job(jobs_server, EXIT_1_AT_EOF, stdin="pipe")
    await client.input("stop\n", ok_exit_codes=[1])
    await client.input("next turn\n", ok_exit_codes=[])
    await client.input("an answer\n")  # without the field: the last word stands
    await client.close_input()
    status, code, error, _ = await _ended_listed(client, job_id)
    assert (status, code) == ("failed", 1) and error
    await client.close()


async def test_an_ok_exit_code_before_the_input_closed_is_still_a_failure(jobs_server) -> None:
    """ok_exit_codes speak of an end after the input's close: a child that exits 1 on its own is failed."""
    client, job_id = await started_job(jobs_server, EXIT_1_AFTER_A_LINE, stdin="pipe")
    await client.input("stop\n", ok_exit_codes=[1])
    status, code, error, _ = await _ended_listed(client, job_id)
    assert (status, code) == ("failed", 1) and error
    await client.close()


@pytest.mark.parametrize("codes", ["1", [True], [256], [-1], list(range(9)), [1.0]])
async def test_malformed_ok_exit_codes_are_invalid(jobs_server, codes) -> None:
    """ok_exit_codes must be a list of at most 8 exit codes (0-255): else -32602 naming it, nothing written."""
    client, _ = await started_job(jobs_server, ECHO_STDIN, stdin="pipe")
    with pytest.raises(errors.ProtocolError) as info:
        await client.call(methods.INPUT, {"data": "x\n", "ok_exit_codes": codes})
    assert (info.value.code, (info.value.data or {}).get("field")) == (-32602, "ok_exit_codes")
    await client.close_input()
    assert output_of(await collect(client)) == "eof\n"
    await client.close()


async def test_jobs_list_shows_each_job_with_its_summary(jobs_server) -> None:
    """jobs.list gives id, label, status, exit code, times, meta and the summary kept from a JSON line."""
    code = (
        "import json\n"
        "print(json.dumps({'type': 'system', 'total_cost_usd': 9}))\n"
        "print(json.dumps({'total_cost_usd': 0.25, 'type': 'result', 'session_id': 's-1', 'result': 'x' * 9999}))\n"
    )
    client, job_id = await started_job(
        jobs_server, [sys.executable, "-c", code], label="my job", meta={"kind": "test"}, summary=RESULT
    )
    await collect(client)
    listed = {job["job_id"]: job for job in await client.jobs()}
    job = listed[job_id]
    assert (job["label"], job["status"], job["exit_code"], job["meta"]) == ("my job", "completed", 0, {"kind": "test"})
    assert job["summary"] == {"total_cost_usd": 0.25, "session_id": "s-1"}
    assert job["started_at"] <= job["ended_at"] <= time.time() and job["last_seq"] > 0 and job["log_bytes"] > 0
    await client.close()


async def test_jobs_list_counts_the_connections_that_follow_each_job(jobs_server) -> None:
    """``attached`` is how many connections follow the job now: its starter and an attached
    one read 2, then 1 once the attached one closed, then 0 once the starter closed too (a
    connection that only lists jobs follows none)."""
    starter, job_id = await started_job(jobs_server, ["cat"], stdin="pipe")
    attached = await connect(jobs_server.url, TOKEN)
    await attached.attach(job_id)
    async with await connect(jobs_server.url, TOKEN) as observer:
        assert await listed_followers(observer, job_id) == [2]
        await attached.close()
        assert await listed_followers(observer, job_id, until=1) in ([1], [2, 1])
        await starter.close()
        assert await listed_followers(observer, job_id, until=0) in ([0], [1, 0])


async def listed_followers(client: Client, job_id: str, until: int | None = None) -> list[int]:
    """The job's ``attached`` as jobs.list gives it, asked until it reads ``until`` (changes
    only: a close reaches the server a moment after the client returns)."""
    deadline = time.monotonic() + scaled(10)
    seen: list[int] = []
    while True:
        count = {job["job_id"]: job for job in await client.jobs()}[job_id]["attached"]
        if not seen or seen[-1] != count:
            seen.append(count)
        if until is None or count == until or time.monotonic() >= deadline:
            return seen
        await asyncio.sleep(0.02)


async def test_stopping_the_server_cancels_its_jobs_and_the_next_server_replays_them(tmp_path) -> None:
    """close() cancels running jobs (their groups die, their end says the server stopped); a new server replays them."""
    directory = str(tmp_path / "jobs")
    handler = make_handler(jobs_dir=directory, kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    client, job_id = await started_job(handler, fake("ticker", "100", "0.05"))
    pgid = handler.jobs.store.get(job_id).record.pgid
    await eventually_async(lambda: handler.jobs.store.get(job_id).last_seq > 3)
    await handler.close()
    await client.close()
    assert not group_alive(pgid)
    again = make_handler(jobs_dir=directory)
    await again.start("127.0.0.1", 0)
    try:
        events = await follow(again, job_id)
        assert completed(events).params["status"] == "cancelled"
        assert completed(events).params["error"] == "cancelled: the server stopped"
        assert output_of(events).startswith("tick 0\ntick 1\n")
    finally:
        await again.close()


def left_running(directory: Path, started_at: float) -> Path:
    """The files of job deadbeef0000 as a server that died while it ran leaves them; returns the log's path."""
    directory.mkdir()
    record = JobRecord("deadbeef0000", "old", ["sleep", "9"], None, started_at, 20.0, 30.0, pid=1, pgid=1)
    (directory / "deadbeef0000.json").write_text(json.dumps(record.__dict__))
    line = {"jsonrpc": "2.0", "method": "process.started", "params": {"pid": 1, "pgid": 1, "seq": 1}}
    log = directory / "deadbeef0000.log"
    log.write_text(json.dumps(line) + "\n" + '{"jsonrpc": "2.0", "meth')
    return log


async def test_a_job_left_running_by_a_dead_server_becomes_lost(tmp_path) -> None:
    """A record still "running" when a server opens the directory is marked lost; its log ends with process.error."""
    directory = tmp_path / "jobs"
    left_running(directory, time.time() - 5)
    store = JobStore(directory, retention=3600, storage_limit=1 << 30)
    store.open()
    try:
        job = store.get("deadbeef0000")
        assert job.record.status == "lost" and job.record.error == LOST_ERROR
        last = json.loads(job.log.read(1, 1 << 20)[0])
        assert last["method"] == methods.PROCESS_ERROR and last["params"] == {"error": LOST_ERROR, "seq": 2}
    finally:
        store.close()


async def test_a_lost_job_ended_when_its_log_was_last_written(tmp_path) -> None:
    """A lost job's ended_at is its log's last change (its last sign of life), not when the next server started."""
    directory = tmp_path / "jobs"
    died = time.time() - 40
    log = left_running(directory, died - 3)
    os.utime(log, (died, died))
    store = JobStore(directory, retention=3600, storage_limit=1 << 30)
    store.open()
    try:
        assert store.get("deadbeef0000").record.ended_at == pytest.approx(died, abs=0.01)
    finally:
        store.close()


async def test_a_finished_job_whose_log_lost_its_end_gets_one_on_the_next_start(tmp_path) -> None:
    """A job ended failed, but its log's last lines could not be written (a full disk): the next
    server appends process.error with the record's error, so a follower ends (it waited for ever)."""
    directory = tmp_path / "jobs"
    left_running(directory, time.time() - 5)
    record = json.loads((directory / "deadbeef0000.json").read_text())
    record.update(status="failed", error=LOG_FULL, ended_at=time.time() - 1)
    (directory / "deadbeef0000.json").write_text(json.dumps(record))
    log = directory / "deadbeef0000.log"
    log.write_text(log.read_text().split("\n")[0] + "\n")  # cut at its last whole line
    store = JobStore(directory, retention=3600, storage_limit=1 << 30)
    store.open()
    try:
        job = store.get("deadbeef0000")
        assert job.record.status == "failed"
        last = json.loads(job.log.read(1, 1 << 20)[0])
        assert last["method"] == methods.PROCESS_ERROR and last["params"] == {"error": LOG_FULL, "seq": 2}
    finally:
        store.close()
    store = JobStore(directory, retention=3600, storage_limit=1 << 30)  # and only once
    store.open()
    try:
        assert store.get("deadbeef0000").log.last_seq == 2
    finally:
        store.close()


async def test_finished_jobs_go_after_the_retention_and_oldest_first_past_the_size_limit(tmp_path) -> None:
    """prune() deletes expired jobs, then the oldest finished while over the limit; files and all."""
    directory = tmp_path / "jobs"
    store = JobStore(directory, retention=100, storage_limit=250)
    store.open()
    now = time.time()
    for name, ended in (("expired0", now - 500), ("older000", now - 50), ("newer000", now - 10)):
        record = JobRecord(name, name, ["true"], None, ended - 1, 20.0, 30.0, status="completed", ended_at=ended)
        (directory / f"{name}.json").write_text(json.dumps(record.__dict__))
        (directory / f"{name}.log").write_text("x" * 99 + "\n")
    store.close()
    store = JobStore(directory, retention=100, storage_limit=250)
    store.open()  # loading prunes
    try:
        assert set(store.jobs) == {"older000", "newer000"}
        store.storage_limit = 150
        assert store.prune(now) == ["older000"]
        assert sorted(p.name for p in directory.iterdir() if p.name != ".lock") == ["newer000.json", "newer000.log"]
    finally:
        store.close()


async def test_attaching_to_a_job_removed_by_retention_says_so(jobs_server) -> None:
    """A job pruned by retention is -32007 "removed by retention (finished N ago ...)", not "no job";
    jobs.list with removed: true lists it (it said "no job 'ID' on this server" like a typo)."""
    client, job_id = await started_job(jobs_server, fake("echo", "bye"))
    await collect(client)
    await client.close()
    store = jobs_server.jobs.store
    await eventually_async(lambda: store.get(job_id) is not None and not store.get(job_id).followers)
    store.retention = 0
    assert store.prune(time.time() + 1) == [job_id]
    async with await connect(jobs_server.url, TOKEN) as other:
        with pytest.raises(errors.UnknownJob, match=rf"job '{job_id}' was removed by retention "
                           r"\(finished \d+ s ago; CCExec.job_retention\)"):
            await other.attach(job_id)
    async with await connect(jobs_server.url, TOKEN) as other:
        removed = await other.removed_jobs()
        assert [(gone["job_id"], gone["reason"]) for gone in removed] == [(job_id, "retention")]
        with pytest.raises(errors.UnknownJob, match="no job 'neverthere' on this server"):
            await other.attach("neverthere")


async def test_expired_jobs_go_without_any_request(tmp_path) -> None:
    """A job that ends with nobody following it is deleted once its retention passes, by the server's
    own timer: no job ends and no jobs.list comes (an idle server kept expired jobs until one did)."""
    handler = make_handler(jobs_dir=str(tmp_path / "jobs"), kill_grace=1.0, job_retention=1.0)
    await handler.start("127.0.0.1", 0)
    try:
        client, job_id = await started_job(handler, fake("ticker", "2", "0.2"))
        await client.close()  # nobody follows it when it ends, nor after
        store = handler.jobs.store
        assert store is not None
        await eventually_async(lambda: store.get(job_id) is not None and store.get(job_id).finished,
                               what="the job's end")
        await eventually_async(lambda: store.get(job_id) is None, what="the expired job deleted")
        assert sorted(p.name for p in store.directory.iterdir() if p.name != ".lock") == []
        assert [gone.reason for gone in store.removed.values()] == ["retention"]
    finally:
        await handler.close()


async def test_a_job_whose_files_cannot_be_deleted_stops_no_expiry(tmp_path, monkeypatch) -> None:
    """Pruning meets an expired job whose log cannot be removed: the server says so and goes on, so
    jobs.list is answered and the next expired job still goes, by the timer (the error failed the
    request, and left the other job until the next one)."""
    directory = tmp_path / "jobs"
    directory.mkdir()
    now = time.time()
    for name, ended in (("stuck000", now - 20), ("other000", now - 10)):
        record = JobRecord(name, name, ["true"], None, ended - 1, 20.0, 30.0, status="completed", ended_at=ended)
        (directory / f"{name}.json").write_text(json.dumps(record.__dict__))
        (directory / f"{name}.log").write_text("x\n")
    handler = make_handler(jobs_dir=str(directory), kill_grace=1.0, job_retention=3600.0)
    await handler.start("127.0.0.1", 0)
    try:
        store = handler.jobs.store
        assert store is not None and set(store.jobs) == {"stuck000", "other000"}
        delete = JobLog.delete

        def refuse(log: JobLog) -> None:
            if log.path.name == "stuck000.log":
                raise PermissionError(errno.EACCES, "Permission denied", str(log.path))
            delete(log)

        monkeypatch.setattr(JobLog, "delete", refuse)
        store.retention = 1.0  # both expired now
        async with await connect(handler.url, TOKEN) as client:
            assert isinstance(await client.jobs(), list)
        await eventually_async(lambda: not store.jobs, what="both expired jobs gone from the store")
        assert not (directory / "other000.log").exists()
    finally:
        await handler.close()


async def test_the_removed_job_ids_kept_are_bounded(tmp_path) -> None:
    """The store remembers the last TOMBSTONES removed ids only, and says "storage limit" when that removed one."""
    store = JobStore(tmp_path / "jobs", retention=3600, storage_limit=0)
    for number in range(jobs_module.TOMBSTONES + 5):
        store._bury(jobs_module.Tombstone(f"job{number:05d}", 1.0, 2.0, "storage limit"))
    assert len(store.removed) == jobs_module.TOMBSTONES
    assert "job00004" not in store.removed and "job00005" in store.removed
    assert "(finished 2 h 00 min ago; CCExec.job_storage_limit)" in str(store.unknown("job00005", 7201.0))


async def test_a_running_job_is_never_pruned(jobs_server) -> None:
    """Even at a zero storage limit a running job and its log stay."""
    client, job_id = await started_job(jobs_server, fake("ticker", "3", "0.2"))
    store = jobs_server.jobs.store
    store.storage_limit, store.retention = 0, 0
    assert store.prune(time.time()) == []
    assert store.get(job_id).log.path.exists()
    await collect(client)
    await client.close()


async def test_a_second_server_on_the_same_jobs_directory_is_refused(jobs_server) -> None:
    """The directory lock makes a second owner fail with JobsDirBusy; the first goes on."""
    other = make_handler(jobs_dir=str(jobs_server.jobs.store.directory))
    with pytest.raises(JobsDirBusy):
        await other.start("127.0.0.1", 0)
    assert other.server is None


async def test_job_files_are_private(jobs_server) -> None:
    """The jobs directory is 0700 and every file in it 0600 (outputs may hold secrets)."""
    client, _job_id = await started_job(jobs_server, ["echo", "secret"])
    await collect(client)
    directory = jobs_server.jobs.store.directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {0o600}
    await client.close()


async def test_the_client_reattaches_after_a_dropped_connection(tmp_path) -> None:
    """A client following a job reconnects by attaching after its last seq: no gap, no duplicate."""
    handler = make_handler(jobs_dir=str(tmp_path / "jobs"), kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    proxy = await FaultyProxy(handler.port).start()
    try:
        client = await connect(proxy.url(), TOKEN)
        seqs: list[int] = []
        client.add_listener(lambda e: seqs.append(e.seq) if e.seq is not None else None)
        await client.execute(argv=fake("ticker", "20", "0.03"), durable=True)
        await eventually_async(lambda: len(seqs) > 3)
        proxy.drop()
        events = await collect(client)
        assert client.reconnects == 1 and seqs == list(range(1, len(seqs) + 1))
        assert output_of(events) == "".join(f"tick {i}\n" for i in range(20))
        await client.close()
    finally:
        await proxy.close()
        await handler.close()


# -- Malformed requests -----------------------------------------------------------------

MALFORMED = [
    ("jobs.list", [1], -32602, "params"),
    ("jobs.list", {"removed": "yes"}, -32602, "removed"),
    ("jobs.attach", None, -32602, "job_id"),
    ("jobs.attach", {"job_id": 7}, -32602, "job_id"),
    ("jobs.attach", {"job_id": "../../etc/passwd"}, -32602, "job_id"),
    ("jobs.attach", {"job_id": "short"}, -32602, "job_id"),
    ("jobs.attach", {"job_id": "A" * 22, "last_seq": -1}, -32602, "last_seq"),
    ("jobs.attach", {"job_id": "A" * 22, "last_seq": True}, -32602, "last_seq"),
    ("jobs.attach", {"job_id": "A" * 22}, -32007, None),
    ("execute", {"argv": ["true"], "durable": "yes"}, -32602, "durable"),
    ("execute", {"argv": ["true"], "durable": True, "label": 5}, -32602, "label"),
    ("execute", {"argv": ["true"], "durable": True, "label": "x" * 1001}, -32602, "label"),
    ("execute", {"argv": ["true"], "durable": True, "meta": [1]}, -32602, "meta"),
    ("execute", {"argv": ["true"], "durable": True, "meta": {"x": "y" * 20000}}, -32602, "meta"),
    ("execute", {"argv": ["true"], "durable": True, "summary": "cost"}, -32602, "summary"),
    ("execute", {"argv": ["true"], "durable": True, "summary": {"match": {}, "fields": ["a"]}}, -32602, "summary"),
    ("execute", {"argv": ["true"], "durable": True, "summary": {"match": {"a": [1]}, "fields": ["a"]}}, -32602,
     "summary"),
    ("execute", {"argv": ["true"], "durable": True, "summary": {"match": {"a": 1}, "fields": []}}, -32602, "summary"),
    ("execute", {"argv": ["true"], "durable": True, "summary": {"match": {"a": 1}, "fields": [""]}}, -32602,
     "summary"),
    ("execute", {"durable": True}, -32602, "command"),
]


@pytest.mark.parametrize(("method", "params", "code", "field"), MALFORMED, ids=[f"{m}-{f}-{i}" for i, (m, _, _, f)
                                                                               in enumerate(MALFORMED)])
async def test_malformed_job_requests_get_their_error(jobs_server, method, params, code, field) -> None:
    """Each malformed jobs.* or durable execute request gets its JSON-RPC error naming the field."""
    async with await connect(jobs_server.url, TOKEN) as client:
        with pytest.raises(errors.ProtocolError) as info:
            await client.call(method, params)
        assert info.value.code == code
        assert (info.value.data or {}).get("field") == field
        assert (await client.call("pong"))["status"] == "ok"  # the connection stays usable
    assert not jobs_server.jobs.store.jobs  # nothing was started or kept


async def test_attach_with_last_seq_ahead_of_the_job_is_invalid(jobs_server) -> None:
    """last_seq beyond the job's last notification is -32602 (last_seq)."""
    client, job_id = await started_job(jobs_server, ["true"])
    await collect(client)
    async with await connect(jobs_server.url, TOKEN) as other:
        with pytest.raises(errors.InvalidParams) as info:
            await other.attach(job_id, 10_000)
        assert info.value.data == {"field": "last_seq"}
    await client.close()


async def test_a_connection_follows_one_job_and_runs_nothing_else(jobs_server) -> None:
    """-32005: a second attach, an execute on an attached connection, a job on one that ran a process."""
    client, job_id = await started_job(jobs_server, fake("ticker", "3", "0.1"))
    with pytest.raises(errors.AlreadyRunning):
        await client.attach(job_id)
    with pytest.raises(errors.AlreadyRunning):
        await client.execute(argv=["true"])
    async with await connect(jobs_server.url, TOKEN) as plain:
        await plain.execute(argv=["true"])
        await collect(plain)
        with pytest.raises(errors.AlreadyRunning):
            await plain.attach(job_id)
    await collect(client)
    await client.close()


async def test_attach_on_a_connection_that_cannot_attach_is_32005_before_the_jobs_existence(jobs_server) -> None:
    """jobs.attach to an unknown id on a connection that ran a process, or follows a job, is -32005 (the
    connection), not -32007 (no such job): the connection is checked first, as the README orders them."""
    client, _ = await started_job(jobs_server, fake("ticker", "3", "0.1"))
    async with await connect(jobs_server.url, TOKEN) as plain:
        await plain.execute(argv=["true"])
        await collect(plain)
        for connection in (plain, client):
            with pytest.raises(errors.ProtocolError) as info:
                await connection.attach("neverthere")
            assert info.value.code == -32005, info.value
    await collect(client)
    await client.close()


async def test_a_server_without_jobs_refuses_them(raw) -> None:
    """Without a jobs directory, durable execute is -32602 (durable) and jobs.* are -32601."""
    message = await reply(raw, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute",
                                           "params": {"argv": ["true"], "durable": True}}))
    assert message["error"]["code"] == -32602 and message["error"]["data"] == {"field": "durable"}
    for method in ("jobs.list", "jobs.attach"):
        message = await reply(raw, json.dumps({"jsonrpc": "2.0", "id": 2, "method": method}))
        assert message["error"]["code"] == -32601


# -- A log that cannot be written ---------------------------------------------------------

LOG_FULL = "the job's log could not be written: No space left on device"


def disk_with_room(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Job logs get ``room`` bytes in all, then act as on a full disk: a write is cut short, and fails (ENOSPC)."""
    real, left = files.append_all, [room]

    def append_all(fd: int, data: bytes) -> None:
        if len(data) > left[0]:
            os.write(fd, data[: left[0]])
            left[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        left[0] -= len(data)
        real(fd, data)

    monkeypatch.setattr(files, "append_all", append_all)


async def test_a_job_whose_log_cannot_be_written_ends_failed_naming_the_cause(jobs_server, monkeypatch) -> None:
    """Its group is stopped; the client gets process.error, then process.completed once, both with the cause."""
    disk_with_room(monkeypatch, 4096)
    client, job_id = await started_job(jobs_server, fake("ticker", "100000", "0.01"))
    events = await collect(client)
    assert [e.params["error"] for e in events if e.method == methods.PROCESS_ERROR] == [LOG_FULL]
    assert (completed(events).params["status"], completed(events).params["error"]) == ("failed", LOG_FULL)
    assert not group_alive(jobs_server.jobs.store.get(job_id).record.pgid)
    await client.close()


ESCAPING_TICKER = "setsid -f sleep 60 >/dev/null 2>&1; while :; do echo tick; sleep 0.01; done"


async def test_a_job_whose_log_failed_says_its_escaped_processes_were_killed(jobs_server, monkeypatch) -> None:
    """The server kills the processes that left the job's group when its log fails, and says so
    (escaped_killed): the run's note said they "may still be running (kill N)", as after a normal end."""
    disk_with_room(monkeypatch, 4096)
    client, _ = await started_job(jobs_server, ["bash", "-c", ESCAPING_TICKER])
    end = completed(await collect(client)).params
    (pid,) = end["escaped_pids"]
    assert (end["status"], end["error"], end["escaped_killed"]) == ("failed", LOG_FULL, True) and gone(pid)
    state = RunState()
    state.apply(methods.PROCESS_COMPLETED, end, now=1.0)
    assert state.notices == [f"pid {pid} left the run's process group (setsid) and was killed with the run."]
    await client.close()


async def test_a_job_whose_log_failed_is_listed_failed_with_the_cause(jobs_server, monkeypatch) -> None:
    """jobs.list shows the job failed, its error the log's failure (not running for ever)."""
    disk_with_room(monkeypatch, 4096)
    client, job_id = await started_job(jobs_server, fake("ticker", "100000", "0.01"))
    await collect(client)
    listed = {job["job_id"]: job for job in await client.jobs()}
    assert (listed[job_id]["status"], listed[job_id]["error"]) == ("failed", LOG_FULL)
    await client.close()


async def test_cancel_on_a_job_whose_log_failed_says_the_job_is_over(jobs_server, monkeypatch) -> None:
    """Once the failed job ended, cancel from a connection attached to it is -32002, not an internal error."""
    disk_with_room(monkeypatch, 4096)
    client, _job_id = await started_job(jobs_server, fake("ticker", "100000", "0.01"))
    await collect(client)
    with pytest.raises(errors.NoProcessRunning):
        await client.cancel()
    await client.close()


async def test_a_job_log_failure_is_one_warning_in_the_server_log(jobs_server, monkeypatch, caplog) -> None:
    """The server logs the failure once, with the job and the cause, however many writes it refused."""
    disk_with_room(monkeypatch, 4096)
    client, job_id = await started_job(jobs_server, fake("ticker", "100000", "0.01"))
    await collect(client)
    # Only this job's warnings: a late warning of an earlier test's background thread is not this failure.
    warnings = [message for r in caplog.records if r.levelno >= logging.WARNING
                and (job_id in (message := r.getMessage()) or "No space left" in message)]
    assert len(warnings) == 1 and job_id in warnings[0] and "No space left on device" in warnings[0]
    await client.close()


# -- The log and the summary, without a server --------------------------------------------


def test_job_log_reads_ranges_and_an_earlier_log_is_indexed_with_its_cut_tail_dropped(tmp_path) -> None:
    """Line N is seq N; a reopened log is indexed, and a half-written last line is cut off."""
    log = JobLog(tmp_path / "a.log", fresh=True)
    lines = [f'{{"n":{i}}}\n'.encode() for i in range(1, 101)]
    for line in lines:
        log.append(line)
    assert log.read(0, 1) == lines[:1] and log.read(40, 1 << 20) == lines[40:] and log.read(100, 10) == []
    log.close()
    with open(tmp_path / "a.log", "ab") as handle:
        handle.write(b'{"n":10')
    again = JobLog(tmp_path / "a.log")
    assert again.last_seq == 100 and again.read(98, 1 << 20) == lines[98:]
    assert os.path.getsize(tmp_path / "a.log") == sum(map(len, lines))
    again.close()


def test_a_job_log_that_cannot_be_written_keeps_its_lines_in_memory_and_its_file_whole(tmp_path, monkeypatch) -> None:
    """After a failed write the file ends on its last whole line; every line, written or not, reads back as its seq."""
    disk_with_room(monkeypatch, 15)
    log = JobLog(tmp_path / "a.log", fresh=True)
    lines = [b"one 12345\n", b"two 12345\n", b"three\n"]
    for line in lines:
        log.append(line)
    assert log.error is not None and log.error.errno == errno.ENOSPC
    assert log.last_seq == 3 and log.read(0, 1 << 20) + log.read(1, 1 << 20) == lines and log.read(3, 10) == []
    assert (tmp_path / "a.log").read_bytes() == lines[0]
    log.close()


def test_summary_keeps_the_named_fields_of_the_last_matching_line() -> None:
    """Lines split across pieces are joined; type-strict matching; big values and other lines are skipped."""
    scanner = SummaryScanner(SummarySpec({"type": "result", "ok": True}, ("cost", "big", "missing")))
    scanner.feed('{"type": "result", "ok": 1, "cost": 1}\nnot json {"type": "result"}\n{"type": "res')
    assert scanner.summary is None
    scanner.feed('ult", "ok": true, "cost": 2, "big": "' + "b" * 5000 + '"}\n')
    assert scanner.summary == {"cost": 2}
    scanner.feed('{"ok": true, "type": "result", "cost": 3}')
    assert scanner.summary == {"cost": 2}
    scanner.finish()
    assert scanner.summary == {"cost": 3}


def test_a_job_id_never_starts_with_a_dash(monkeypatch) -> None:
    """An id drawn with a leading ``-`` or ``_`` is drawn again (``--attach -AVf...`` read as an option)."""
    draws = iter(["-AVfjPK8hWj8LMEOl7SZxw", "_BVfjPK8hWj8LMEOl7SZxw", "CVfjPK8hWj8LMEOl7SZxw"])
    monkeypatch.setattr(jobs_module.secrets, "token_urlsafe", lambda size: next(draws))
    assert jobs_module.new_job_id() == "CVfjPK8hWj8LMEOl7SZxw"



async def test_a_server_without_jobs_names_both_ways_to_keep_them(raw) -> None:
    """The refusal names --jobs-dir DIR as well as --jobs (it said only "start it with --jobs", which makes
    the user's own job server on a random port: a server shared over the network keeps jobs with --jobs-dir)."""
    said = "this server keeps no durable jobs (start it with --jobs, or --jobs-dir DIR)"
    message = await reply(raw, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute",
                                           "params": {"argv": ["true"], "durable": True}}))
    assert message["error"]["message"] == said
    message = await reply(raw, json.dumps({"jsonrpc": "2.0", "id": 2, "method": "jobs.list"}))
    assert message["error"]["message"] == said


async def _frames_until(ws, method: str) -> list[dict]:
    """Every frame up to and including the first notification ``method``."""
    frames: list[dict] = []
    while not frames or frames[-1].get("method") != method:
        frames.append(json.loads(await asyncio.wait_for(ws.recv(), scaled(10))))
    return frames


@pytest.mark.parametrize("durable", [False, True])
async def test_a_control_request_is_answered_before_its_notification(jobs_server, durable: bool) -> None:
    """A single PAUSE, RESUME or CANCEL is answered first and notified after, as a batch's
    requests are, for a plain run as for a durable job (a plain run's process.paused came
    before the answer, a job's after it)."""
    async with ws_connect(jobs_server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, proxy=None) as ws:
        await ws.recv()  # connected
        params = {"argv": ["sleep", "30"], **({"durable": True} if durable else {})}
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute", "params": params}))
        await _frames_until(ws, "process.started")
        for number, (kind, caused) in enumerate(
            [("PAUSE", "process.paused"), ("RESUME", "process.resumed"), ("CANCEL", "process.cancelled")], 2
        ):
            request = {"jsonrpc": "2.0", "id": number, "method": "control", "params": {"type": kind}}
            await ws.send(json.dumps(request))
            frames = [frame for frame in await _frames_until(ws, caused) if frame.get("method") != "heartbeat"]
            assert [frame.get("id", frame.get("method")) for frame in frames] == [number, caused]


# A conversation in miniature: each line read is a turn, answered by a line matching RESULT,
# but "hang", a turn that never ends.
TURNS = [sys.executable, "-c", "import json, sys, time\nfor line in sys.stdin:\n"
         "    if line.strip() == 'hang': time.sleep(120)\n"
         "    print(json.dumps({'type': 'result', 'turn': line.strip()}), flush=True)\n"]


async def timed_out_turns(server: EnhancedWebSocketHandler, turns: list[str], **job: object) -> dict[str, object]:
    """The listed job of TURNS given ``turns``, once its timeout ended it, each turn but a hung one answered."""
    client, job_id = await started_job(server, TURNS, stdin="pipe", summary=RESULT, timeout=scaled(3), **job)
    for turn in turns:
        await client.input(f"{turn}\n")
        if turn != "hang":
            await eventually_async(lambda turn=turn: any(f'"turn": "{turn}"' in str(e.get("data"))
                                                         for e in _outputs(server, job_id)))
    assert completed(await collect(client)).params["status"] == "timeout"  # the log keeps the process's end
    listed = {job["job_id"]: job for job in await client.jobs()}
    await client.close()
    return listed[job_id]


async def test_a_job_whose_timeout_passed_between_turns_is_listed_completed(jobs_server) -> None:
    """summary_ends_turn: the timeout passed after a turn's result line, before an input began the
    next: nothing was cut, so the job is listed completed, no error, as its run reads it (it was
    listed timeout, "timed out after 3 s")."""
    job = await timed_out_turns(jobs_server, ["one", "two"], summary_ends_turn=True)
    assert (job["status"], job["error"]) == ("completed", None)


@pytest.mark.parametrize("turns, asked", [(["one", "hang"], True), (["one"], False)], ids=["cut", "not asked"])
async def test_a_job_whose_timeout_cut_a_turn_or_that_did_not_ask_is_listed_timeout(
        jobs_server, turns: list[str], asked: bool) -> None:
    """A timeout that passes during a turn (an input after the last result line) stays a timeout,
    and so does one between turns of a job that did not ask for summary_ends_turn."""
    job = await timed_out_turns(jobs_server, turns, summary_ends_turn=asked)
    assert (job["status"], job["error"]) == ("timeout", f"timed out after {scaled(3):g} s")


async def test_summary_ends_turn_without_a_summary_or_durable_is_refused(jobs_server) -> None:
    """summary_ends_turn needs a summary (its match ends a turn) and a durable job: -32602 naming it."""
    async with await connect(jobs_server.url, TOKEN) as client:
        for params in ({"argv": ["cat"], "durable": True, "summary_ends_turn": True},
                       {"argv": ["cat"], "summary": {"match": {"type": "result"}, "fields": ["x"]},
                        "summary_ends_turn": True}):
            with pytest.raises(errors.InvalidParams) as info:
                await client.call(methods.EXECUTE, params)
            assert (info.value.data or {}).get("field") == "summary_ends_turn"


# Each line read is a turn, answered by a line matching RESULT once the gate file (argv[1]) exists;
# "eof" is printed at the end of the input.
GATED_TURNS = [sys.executable, "-c", "import json, os, sys, time\nfor line in sys.stdin:\n"
               "    while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
               "    print(json.dumps({'type': 'result', 'turn': line.strip()}), flush=True)\nprint('eof')"]


def _log_entries(server: EnhancedWebSocketHandler, job_id: str) -> list[str]:
    """The job's log as ``input:TEXT``, ``result:TURN`` and ``closed``, in order."""
    job = server.jobs.store.get(job_id)
    entries = []
    for line in (json.loads(text) for text in job.log.read(0, 1 << 30)):
        params = line["params"]
        if line["method"] == methods.PROCESS_INPUT:
            entries.append("closed" if params.get("closed") else f"input:{params['data'].strip()}")
        elif line["method"] == methods.PROCESS_OUTPUT and '"result"' in params["data"]:
            entries += [f"result:{json.loads(text)['turn']}" for text in params["data"].splitlines()
                        if '"result"' in text]
    return entries


async def gated_turns_job(server: EnhancedWebSocketHandler, gate: Path) -> tuple[Client, Client, str]:
    """A GATED_TURNS job with summary_ends_turn, started by one client and attached by another."""
    starter, job_id = await started_job(server, [*GATED_TURNS, str(gate)], stdin="pipe", summary=RESULT,
                                        summary_ends_turn=True)
    other = await connect(server.url, TOKEN)
    await other.attach(job_id)
    return starter, other, job_id


async def test_inputs_that_begin_turns_are_written_one_turn_at_a_time(jobs_server, tmp_path: Path) -> None:
    """input with turn (summary_ends_turn): while a turn is under way, such inputs from any connection
    are held and written one after each line that ends a turn, in the order received (they reached
    the process at once, mid-turn, where claude takes them into the turn under way)."""
    gate = tmp_path / "gate"
    starter, other, job_id = await gated_turns_job(jobs_server, gate)
    assert starter.holds_turns and other.holds_turns
    replies = [await starter.input("one\n", turn=True), await other.input("two\n", turn=True),
               await starter.input("three\n", turn=True)]
    assert [r["held"] for r in replies] == [0, 1, 2]
    assert _log_entries(jobs_server, job_id) == ["input:one"]
    gate.touch()
    await eventually_async(lambda: len(_log_entries(jobs_server, job_id)) == 6, what="three turns")
    assert _log_entries(jobs_server, job_id) == [
        "input:one", "result:one", "input:two", "result:two", "input:three", "result:three"]
    await starter.close_input()
    assert output_of(await collect(other)).endswith("eof\n")
    await starter.close()
    await other.close()


async def test_the_inputs_close_waits_for_the_turns_held_before_it(jobs_server, tmp_path: Path) -> None:
    """input.close while turns are held: the input is closed after the last of them ended, so none
    is lost (each gets its result), and a turn sent after the close is refused."""
    gate = tmp_path / "gate"
    starter, other, job_id = await gated_turns_job(jobs_server, gate)
    await starter.input("one\n", turn=True)
    await other.input("two\n", turn=True)
    assert (await starter.close_input())["status"] == "closing"
    with pytest.raises(errors.NoProcessRunning):
        await other.input("late\n", turn=True)
    gate.touch()
    assert output_of(await collect(other)) == (
        '{"type": "result", "turn": "one"}\n{"type": "result", "turn": "two"}\neof\n')
    assert _log_entries(jobs_server, job_id) == ["input:one", "result:one", "input:two", "result:two", "closed"]
    await starter.close()
    await other.close()


async def test_an_inputs_close_after_turn_waits_for_the_turn_under_way(jobs_server, tmp_path: Path) -> None:
    """input.close with after_turn during a turn (none held): the input is closed after that turn's end,
    not during it (a kernel that exits hands its end() so), and a turn sent after it is refused; a
    plain input.close closes at once, as before."""
    gate = tmp_path / "gate"
    starter, other, job_id = await gated_turns_job(jobs_server, gate)
    assert starter.closes_after_turn
    await starter.input("one\n", turn=True)
    assert await starter.close_input(after_turn=True) == {"status": "closing", "queued_bytes": 0, "held": True}
    assert _log_entries(jobs_server, job_id) == ["input:one"]
    with pytest.raises(errors.NoProcessRunning):
        await other.input("late\n", turn=True)
    gate.touch()
    assert output_of(await collect(other)) == '{"type": "result", "turn": "one"}\neof\n'
    assert _log_entries(jobs_server, job_id) == ["input:one", "result:one", "closed"]
    await starter.close()
    await other.close()


async def test_an_inputs_close_after_turn_between_turns_closes_at_once(jobs_server, tmp_path: Path) -> None:
    """input.close with after_turn and no turn under way closes the input at once."""
    gate = tmp_path / "gate"
    gate.touch()
    starter, other, job_id = await gated_turns_job(jobs_server, gate)
    await starter.input("one\n", turn=True)
    scanner = jobs_server.jobs.store.get(job_id).scanner  # its whole line read (the log may hold part of it first)
    await eventually_async(lambda: scanner is not None and scanner.matches == 1, what="the turn's end")
    assert "held" not in await starter.close_input(after_turn=True)
    assert output_of(await collect(other)).endswith("eof\n")
    assert _log_entries(jobs_server, job_id) == ["input:one", "result:one", "closed"]
    await starter.close()
    await other.close()


async def test_a_held_turn_meeting_a_full_input_queue_is_written_once_it_has_room(jobs_server, tmp_path: Path) -> None:
    """A held turn is written when the turn before it ends; if the process's input queue is full
    then (input it has not read yet), writing it raised the queue's refusal inside the job's log
    append, and the turn was lost. It waits for room and is written then, after what was queued."""
    gate = tmp_path / "gate"
    starter, other, job_id = await gated_turns_job(jobs_server, gate)
    await starter.input("one\n", turn=True)
    held = "two" + "x" * 200_000 + "\n"
    assert (await other.input(held, turn=True))["held"] == 1
    # 9 MiB on one line, not a turn: the process, waiting for the gate, reads none of it, so the
    # queue fills to its 8 MiB limit (the client sends the rest again as the process reads).
    filler = asyncio.ensure_future(starter.input("f" * (9 << 20)))
    job = jobs_server.jobs.store.get(job_id)
    stdin = job.execution.stdin
    await eventually_async(lambda: stdin.queued_bytes + len(held) > stdin.limit, what="a full input queue")
    gate.touch()
    await asyncio.wait_for(filler, scaled(30))
    await eventually_async(lambda: any(e.startswith("input:two") for e in _log_entries(jobs_server, job_id)),
                           timeout=30, what="the held turn written")
    entries = [entry[:10] for entry in _log_entries(jobs_server, job_id)]
    assert entries.index("result:one") < entries.index("input:twox")
    await starter.close_input()
    assert output_of(await collect(other)).endswith("eof\n")
    await starter.close()
    await other.close()


async def test_a_turn_refused_for_too_much_held_goes_on_when_a_held_turn_is_written(
    jobs_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input with turn refused because the job held 8 MiB of turns waited for the client's
    timer (up to 5 s): the server now says when the held turns shrink (input.drained), and
    with the client's timers made 10 minutes long the turn still goes in once the turns move."""
    from cc_executor_nb import client as client_module

    monkeypatch.setattr(client_module, "_INPUT_BACKOFF", (600.0,))
    monkeypatch.setattr(client_module, "INPUT_STALLED_WAIT", 600.0)
    gate = tmp_path / "gate"
    starter, other, job_id = await gated_turns_job(jobs_server, gate)
    await starter.input("one\n", turn=True)
    turn = "t" * 250_000 + "\n"
    with pytest.raises(errors.LimitReached, match="wait for the turn under way"):
        for _ in range(40):  # 8 MiB: about 33 of them
            await other.call(methods.INPUT, {"data": turn, "turn": True})
    last = "last" + turn
    sending = asyncio.ensure_future(other.input(last, turn=True))
    await asyncio.sleep(0.1)
    assert not sending.done()  # refused, it waits
    gate.touch()
    await asyncio.wait_for(sending, scaled(20))
    log = jobs_server.jobs.store.get(job_id).log
    await eventually_async(lambda: any(json.loads(line)["params"].get("data") == last for line in log.read(0, 1 << 30)),
                           timeout=30, what="the last turn written")
    await starter.close_input()
    assert output_of(await collect(other)).endswith("eof\n")
    await starter.close()
    await other.close()


async def test_an_input_without_turn_is_never_held(jobs_server, tmp_path: Path) -> None:
    """Only an input with turn waits for a turn's end: one without it (a permission answer, an
    interrupt) is written at once, even while turns are held."""
    gate = tmp_path / "gate"
    starter, other, job_id = await gated_turns_job(jobs_server, gate)
    await starter.input("one\n", turn=True)
    await other.input("two\n", turn=True)
    assert "held" not in await other.input("answer\n")
    assert _log_entries(jobs_server, job_id) == ["input:one", "input:answer"]
    gate.touch()
    await starter.close_input()
    await collect(other)
    entries = _log_entries(jobs_server, job_id)
    assert entries[:3] == ["input:one", "input:answer", "result:one"] and "input:two" in entries[3:]
    await starter.close()
    await other.close()
