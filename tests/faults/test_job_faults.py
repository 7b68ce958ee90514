"""Fault matrix rows for durable jobs: readers that stall or vanish, servers that die."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect

from cc_executor_nb.client import connect
from cc_executor_nb.events import Output
from cc_executor_nb.server.runtime import RUNTIME_FILE_NAME, read_runtime_file, stop_job_server

from ..conftest import TOKEN, collect, completed, fake, group_alive, make_handler
from ..servers import SERVER
from ..util import eventually, eventually_async, scaled

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


async def test_a_stalled_follower_holds_up_neither_the_job_nor_another_follower(tmp_path, record) -> None:
    """One attached connection never reads during 32 MB: the job ends on time and the other follower is exact."""
    handler = make_handler(jobs_dir=str(tmp_path / "jobs"), kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    try:
        starter = await connect(handler.url, TOKEN)
        job_id = (await starter.execute(argv=fake("flood", str(32 << 20), str(tmp_path / "sha"), str(16 << 20)),
                                        durable=True))["job_id"]
        await starter.close()
        stalled = await ws_connect(handler.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, proxy=None,
                                   max_size=None)
        try:
            await stalled.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "jobs.attach",
                                           "params": {"job_id": job_id}}))
            digest = hashlib.sha256()
            async with await connect(handler.url, TOKEN, max_events=16) as reader:
                reader.add_listener(lambda e: digest.update(e.data.encode()) if isinstance(e, Output) else None)
                await reader.attach(job_id)
                started = time.monotonic()
                events = await collect(reader, timeout=120)
                took = time.monotonic() - started
            job = handler.jobs.store.get(job_id)
            assert digest.hexdigest() == (tmp_path / "sha").read_text() and completed(events).params["exit_code"] == 0
            assert job.record.status == "completed"
            # The stalled connection is still attached, with most of the log unsent.
            await eventually_async(lambda: job.followers == 1, what="the reader's connection leaving")
        finally:
            stalled.transport.abort()
        record("job follower never reads (32 MB)", "job and other follower unaffected",
               f"other follower sha256 equal in {took:.1f} s; job completed")
    finally:
        await handler.close()


def test_job_server_sigkill_kills_the_jobs_and_the_next_marks_them_lost(tmp_path: Path, record) -> None:
    """SIGKILL of a job server with a job (and grandchildren): all gone; the next server lists the job as lost."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    start = [*SERVER, "--jobs", "--detach", "--no-history"]
    assert subprocess.run(start, env=env, capture_output=True, timeout=scaled(60), check=False).returncode == 0
    info = read_runtime_file(tmp_path / RUNTIME_FILE_NAME)
    assert info is not None

    async def start_job() -> tuple[str, int]:
        async with await connect(info.url, info.token) as client:
            started = await client.execute(argv=fake("stubborn", "2"), durable=True)
            return started["job_id"], started["pgid"]

    job_id, pgid = asyncio.run(start_job())
    try:
        eventually(lambda: len(group_alive(pgid)) == 3, what="the job and its grandchildren")
        os.kill(info.pid, signal.SIGKILL)
        killed = time.monotonic()
        eventually(lambda: not group_alive(pgid), timeout=5, what="the job's group dying with its server")
        gone = time.monotonic() - killed
        assert subprocess.run(start, env=env, capture_output=True, timeout=scaled(60), check=False).returncode == 0
        record_path = tmp_path / "cc_executor_nb-jobs" / f"{job_id}.json"
        assert json.loads(record_path.read_text())["status"] == "lost"
        record("job server SIGKILL, 1 job + 2 grandchildren", "all gone; next server: lost",
               f"gone after {gone:.2f} s; job lost")
    finally:
        stop_job_server(tmp_path / RUNTIME_FILE_NAME, timeout=scaled(60))
