"""Batches on Dask: LocalCluster(n_workers=2, processes=True), the worker handlers, streaming, cancel, TLS, teardown."""

from __future__ import annotations

import multiprocessing.resource_tracker
import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from distributed import Client, LocalCluster
from distributed.security import Security

import cc_executor_nb
from cc_executor_nb.client import Client as RunClient
from cc_executor_nb.client import _input_pieces
from cc_executor_nb.cluster import placement, worker
from cc_executor_nb.cluster.worker import HandlerPlugin
from cc_executor_nb.errors import LimitReached
from cc_executor_nb.kernel.batch import Batch
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.loop import KernelLoop, stop_shared_loop

from .conftest import TOKEN, group_alive, make_handler
from .kernel_utils import py
from .util import cmdlines_with_a_cli, eventually, scaled

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TICKER = py("import sys, time\nfor i in range(int(sys.argv[2])):\n print(sys.argv[1], i, flush=True); time.sleep(0.25)")


@pytest.fixture(scope="module", autouse=True)
def no_resource_tracker_left() -> Iterator[None]:
    """Workers started with multiprocessing's spawn leave its resource tracker as a child of this
    process for its whole life; it is stopped after the module (other tests check this process
    has no children left). Its ``_stop`` is private: without it the tracker stays, harmlessly."""
    yield
    stop = getattr(multiprocessing.resource_tracker._resource_tracker, "_stop", None)
    if stop is not None:
        stop()


@pytest.fixture(scope="module")
def settings() -> Iterator[CCExec]:
    """Text-mode settings without run history; the shared loop stops after the module."""
    yield CCExec(history_path="none", output_mode="text", kill_grace=1.0)
    stop_shared_loop()


def cluster_pids(cluster: LocalCluster) -> set[int]:
    """The worker processes of a LocalCluster (nannies and their workers)."""
    pids: set[int] = set()
    for nanny in cluster.workers.values():
        process = getattr(nanny, "process", None)
        pid = getattr(getattr(process, "process", None), "pid", None)
        if pid is not None:
            pids.add(int(pid))
    return pids


def descendants(pids: set[int]) -> set[int]:
    found: set[int] = set()
    for pid in pids:
        try:
            found |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[LocalCluster, Client]]:
    """Two worker processes, each holding 2 of the resource "claude"."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=2, resources={"claude": 2},
                      dashboard_address=":0") as local, Client(local) as client:
        yield local, client


def test_a_worker_gets_the_env_as_strings(settings: CCExec, tmp_path: Any) -> None:
    """A run's env with a path value reaches the worker's recipe as text (a Path could not be sent)."""
    from cc_executor_nb.cluster.placement import recipe_of
    from cc_executor_nb.kernel.api import prepare

    prepared = prepare(["true"], command=True, env={"DATA": tmp_path / "data"}, cwd=tmp_path, settings=settings,
                       view=False)
    recipe = recipe_of(prepared, "true", settings, batch="b")
    assert (recipe.execute["env"], recipe.execute["cwd"]) == ({"DATA": str(tmp_path / "data")}, str(tmp_path))


def test_a_workers_recipe_keeps_the_runs_capture(settings: CCExec) -> None:
    """capture="pipe" reaches the job the worker starts (the recipe dropped it: the worker's default was used)."""
    from cc_executor_nb.cluster.placement import recipe_of
    from cc_executor_nb.kernel.api import prepare

    prepared = prepare(["true"], command=True, capture="pipe", settings=settings, view=False)
    assert recipe_of(prepared, "true", settings, batch="b").execute_params()["capture"] == "pipe"


def test_a_cluster_that_is_no_client_is_refused() -> None:
    """An address or a cluster object is a TypeError saying what to pass (not "'str' has no attribute 'id'")."""
    with pytest.raises(TypeError, match=r"cluster must be a dask.distributed Client, e\.g\. .* not str"):
        cc_executor_nb.map(["echo a"], command=True, cluster="tcp://127.0.0.1:8786", display=False)


@pytest.mark.parametrize(("given", "named"), [
    ({"durable": True}, "durable=True"),
    ({"server": "ws://127.0.0.1:18003/ws"}, "server"),
    ({"token_env": "CCX_TOKEN"}, "token_env"),
])
def test_a_cluster_batch_refuses_where_options_its_runs_would_not_use(
    cluster: tuple[LocalCluster, Client], settings: CCExec, given: dict[str, Any], named: str
) -> None:
    """durable, server and token_env choose where a run goes; a cluster's runs go to its workers' handlers,
    so map(cluster=...) refuses them (a ValueError naming them) rather than ignoring them."""
    _local, client = cluster
    with pytest.raises(ValueError, match=rf"a batch on a cluster \(cluster=\.\.\.\) takes no {named}:"):
        cc_executor_nb.map("echo {item}", ["a"], command=True, cluster=client, display=False, settings=settings,
                           **given)


def test_a_batch_of_8_spreads_over_both_workers_and_streams_live(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """8 runs with claude=1 each: both workers used, output seen while runs live, every result in order."""
    _local, client = cluster
    batch = cc_executor_nb.map(TICKER + " {item} 8", [f"r{i}" for i in range(8)], command=True, cluster=client,
                               resources={"claude": 1}, concurrency=8, display=False, settings=settings)
    live = eventually(lambda: [run for run in batch.runs if run.stdout and not run.done], timeout=60,
                      what="output from a run that is still running")
    batch.wait(scaled(120))
    workers = {item.worker for item in batch.items}
    print(f"\n8 runs on {len(workers)} workers: {sorted(w or '' for w in workers)}; "
          f"{len(live)} runs had output while live")
    assert [run.status for run in batch.runs] == ["completed"] * 8
    assert batch.results() == ["".join(f"r{i} {n}\n" for n in range(8)) for i in range(8)]
    assert len(workers) == 2
    assert all(run.job_id and run.target.url.startswith("ws://127.0.0.1:") for run in batch.runs)


def test_the_items_waiting_for_a_workers_slot_start_in_input_order(settings: CCExec, tmp_path: Any) -> None:
    """Five items handed to a cluster with one slot (concurrency 5: four wait, placing) start in input order, as
    the queue starts them: Dask ran the tasks waiting for the slot last submitted first (0, 4, 3, 2, 1)."""
    started = tmp_path / "started"
    note = py(f"import sys, time; open({str(started)!r}, 'a').write(sys.argv[1] + ' '); time.sleep(0.1)")
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=5, resources={"claude": 1},
                      dashboard_address=":0") as local, Client(local) as client:
        batch = cc_executor_nb.map(note + " {item}", list(range(5)), command=True, cluster=client,
                                   resources={"claude": 1}, concurrency=5, display=False, settings=settings)
        batch.wait(scaled(60))
    assert [run.status for run in batch.runs] == ["completed"] * 5
    assert started.read_text().split() == ["0", "1", "2", "3", "4"]


def test_cancel_of_one_run_kills_its_process_on_its_worker(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """Cancelling one placed run kills its process group on the worker; the other run completes."""
    _local, client = cluster
    batch = cc_executor_nb.map([py("import time; time.sleep(60)"), TICKER + " other 4"], command=True,
                               cluster=client, resources={"claude": 1}, display=False, settings=settings)
    sleeper = batch.runs[0]
    eventually(lambda: sleeper.state.pid is not None and sleeper.status == "running", timeout=60, what="the sleeper")
    pid, pgid = sleeper.state.pid, sleeper.state.pgid
    assert pid is not None and pgid is not None and alive(pid)
    sleeper.cancel()
    batch.wait(scaled(60))
    assert sleeper.status == "cancelled" and batch.runs[1].status == "completed"
    eventually(lambda: not alive(pid) and group_alive(pgid) == [], timeout=15, what="the sleeper's group gone")


def test_a_claude_demo_batch_runs_on_the_workers(cluster: tuple[LocalCluster, Client], settings: CCExec) -> None:
    """Claude demo prompts run on the workers (each job carries its own demo API): answers and costs come back."""
    _local, client = cluster
    batch = cc_executor_nb.map(["what is 2+2", "what is 3+3"], demo=True, cluster=client, display=False,
                               settings=settings, wait=True)
    assert batch.results() == ["4", "6"] and batch.cost_usd > 0 and all(item.worker for item in batch.items)


def test_a_one_shot_prompt_too_long_for_a_command_line_runs_on_a_worker(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """A one-shot prompt over one argument's limit goes to the worker's CLI on stdin (the worker's handler
    writes it) and is answered (map() refused it: "... a one-shot run on a Dask worker cannot send it on stdin")."""
    _local, client = cluster
    big = "x" * (200 * 1024) + " what is 2+2"
    batch = cc_executor_nb.map([big], demo=True, interactive=False, cluster=client, display=False, settings=settings,
                               wait=True)
    assert batch.results() == ["4"], batch.runs[0].error


def test_a_one_shot_prompt_too_big_for_the_workers_start_request_runs_on_a_worker(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """A one-shot prompt over what the worker's handler takes in one message (1 MiB) goes to the job's
    stdin in pieces after the start, as a kernel's does (map() refused it: "the prompt is 1,228,814 bytes
    JSON-escaped, more than a one-shot run on a Dask worker can send in its start request ...")."""
    _local, client = cluster
    big = "x" * (1200 * 1024) + " what is 2+2"
    batch = cc_executor_nb.map([big], demo=True, interactive=False, cluster=client, display=False, settings=settings,
                               wait=True)
    assert batch.results() == ["4"], batch.runs[0].error


async def test_a_workers_one_shot_prompt_refused_midway_cancels_its_job(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A piece of a worker's big one-shot prompt refused for good (an error past ``Client.input``,
    which waits out a full queue itself) would leave the job waiting for the rest for ever (a
    one-shot job has no idle timeout): the job is cancelled and the task's outcome says why."""
    send = RunClient.input

    async def refused(self: RunClient, data: str, **more: Any) -> dict[str, Any]:
        await send(self, _input_pieces(data)[0])
        raise LimitReached("refused for the test")

    monkeypatch.setattr(RunClient, "input", refused)
    handler = make_handler(jobs_dir=str(tmp_path / "jobs"), kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    try:
        reader = "import sys; print(len(sys.stdin.read()))"
        params = {"argv": [sys.executable, "-c", reader], "stdin": "pipe", "input": "x" * (1200 * 1024),
                  "durable": True, "label": "", "meta": {}}
        outcome = await worker._start_and_follow(handler, TOKEN, params, lambda job_id, pid: None, None)
    finally:
        await handler.close()
    assert (outcome["status"], outcome["error"]) == (
        "cancelled", "refused for the test; its input was cut off, so its job was cancelled")


def test_a_one_shot_prompt_is_in_no_command_line_on_the_worker(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """A one-shot run on a worker: while it runs, no process of its job (demo runner, CLI) shows the
    prompt to ``ps`` on the worker's machine (it was the CLI's last argument)."""
    _local, client = cluster
    private = "private-7f3a9c"
    batch = cc_executor_nb.map([f"story 40 words at 8 words per second, {private}"], demo=True, interactive=False,
                               cluster=client, display=False, settings=settings)
    run = batch.runs[0]
    lines = eventually(lambda: cmdlines_with_a_cli(run.state.pid), timeout=60, what="the worker's live CLI")
    assert not [line for line in lines if any(private in arg for arg in line)], lines
    batch.wait(scaled(90))
    assert run.status == "completed" and len(run.answer.split()) == 40, run.error


def test_closing_the_cluster_leaves_no_orphans(settings: CCExec) -> None:
    """A run still going when the cluster closes is cancelled with its group; no process of the cluster remains."""
    local = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0")
    client = Client(local)
    try:
        batch = cc_executor_nb.map([py("import time; time.sleep(120)")] * 2, command=True, cluster=client,
                                   display=False, settings=settings)
        eventually(lambda: all(run.state.pgid is not None for run in batch.runs), timeout=60, what="both started")
        groups = [run.state.pgid for run in batch.runs]
        workers = cluster_pids(local)
        spawned = descendants(workers)
        assert spawned, "the workers have children (the runs, the watchdogs)"
    finally:
        client.close()
        local.close()
    batch.wait(scaled(60))
    print(f"\nafter close: run statuses {[run.status for run in batch.runs]}, "
          f"{len(spawned)} processes the workers had spawned")
    assert all(run.status in ("cancelled", "failed", "error") for run in batch.runs)
    eventually(lambda: not any(alive(pid) for pid in workers | spawned), timeout=30, what="every process gone")
    assert all(group_alive(pgid) == [] for pgid in groups if pgid is not None)


def test_tls_cluster_handlers_speak_wss_with_the_clusters_certificates(settings: CCExec) -> None:
    """With Dask TLS (Security.temporary()), the handlers listen with TLS and the runs connect over wss://."""
    security = Security.temporary()
    with LocalCluster(n_workers=1, processes=True, threads_per_worker=1, security=security, dashboard_address=":0",
                      host="127.0.0.1") as local, Client(local, security=security) as client:
        assert client.scheduler.address.startswith("tls://")
        batch = cc_executor_nb.map(["echo over tls"], command=True, cluster=client, display=False,
                                   settings=settings, wait=True)
    run = batch.runs[0]
    assert run.status == "completed" and run.stdout == "over tls\n" and run.target.url.startswith("wss://")


def test_a_plaintext_remote_worker_is_refused_unless_allowed() -> None:
    """A worker on a non-loopback address without TLS: the handler refuses, or binds there when allowed."""
    plugin = HandlerPlugin("t0ken")
    with pytest.raises(RuntimeError, match="without TLS"):
        plugin._binding("tcp://10.1.2.3:4567", None)
    assert HandlerPlugin("t0ken", allow_plaintext=True)._binding("tcp://10.1.2.3:4567", None) == ("10.1.2.3", None)
    assert plugin._binding("tcp://127.0.0.1:4567", None) == ("127.0.0.1", None)
    assert plugin._binding("inproc://10.1.2.3/1/2", None) == ("127.0.0.1", None)


def test_the_plugin_travels_without_its_handler() -> None:
    """What is pickled to the workers is the token and settings, never a running handler."""
    plugin = HandlerPlugin("t0ken", kill_grace=2.0)
    plugin.state = object()  # type: ignore[assignment]
    copy: Any = type(plugin).__new__(type(plugin))
    copy.__dict__.update(plugin.__getstate__())
    assert (copy.token, copy.kill_grace, copy.state) == ("t0ken", 2.0, None)
    assert sys.modules.get("cc_executor_nb.cluster") is not None


def test_stopping_the_kernels_loop_cancels_the_runs_on_the_workers(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """A kernel shutdown (the loop stopped) cancels a placed run: its process on the worker is killed."""
    _local, client = cluster
    batch = cc_executor_nb.map([py("import time; time.sleep(120)")], command=True, cluster=client,
                               display=False, settings=settings)
    run = batch.runs[0]
    eventually(lambda: run.state.pid is not None and run.status == "running", timeout=60, what="the run")
    pid = run.state.pid
    assert pid is not None
    stop_shared_loop()
    assert run.status == "cancelled" and run.done
    eventually(lambda: not alive(pid), timeout=15, what="the run's process gone")


def test_a_claude_run_on_a_worker_asks_this_notebook(
    cluster: tuple[LocalCluster, Client], settings: CCExec, tmp_path: Any
) -> None:
    """A demo Bash call on a worker: the question comes to the notebook's run, approve() there runs the
    command on the worker, and the run ends after its first turn (the process exits 0, the slot is free)."""
    _local, client = cluster
    target = tmp_path / "from-the-worker.txt"
    batch = cc_executor_nb.map([f"bash: touch {target}"], demo=True, cluster=client, display=False, settings=settings)
    run = batch.runs[0]
    asked = eventually(lambda: run.pending, timeout=90, what="the question from the worker")
    assert asked.tool == "Bash" and run.interactive and run.job_id
    run.approve()
    batch.wait(scaled(90))
    assert target.exists()
    assert (run.status, run.exit_code, run.alive) == ("completed", 0, False)
    assert [(q.status, q.decided_by) for q in run.permission_requests] == [("allowed", "code")]
    assert batch.items[0].worker


def test_a_workers_task_does_not_hold_a_conversations_input_open(tmp_path: Any) -> None:
    """The task of a conversation's job (stdin "pipe") watches the job list instead of following the job: with
    nobody attached its stdin_idle_timeout closes the input, the process ends, the task returns its outcome."""
    import asyncio

    from cc_executor_nb.cluster.worker import _start_and_follow

    from .conftest import TOKEN, make_handler

    echo = [sys.executable, "-c", "import sys\nfor line in sys.stdin: pass\nprint('eof', flush=True)"]
    params = {"argv": echo, "durable": True, "stdin": "pipe", "stdin_idle_timeout": 0.5}
    published: list[str] = []

    async def scenario() -> dict[str, Any]:
        handler = make_handler(jobs_dir=str(tmp_path / "jobs"), kill_grace=1.0)
        await handler.start("127.0.0.1", 0)
        try:
            start = _start_and_follow(handler, TOKEN, params, lambda job_id, pid: published.append(job_id), None)
            return await asyncio.wait_for(start, scaled(30))
        finally:
            await handler.close()

    outcome = asyncio.run(scenario())
    assert outcome == {"job_id": published[0], "status": "completed", "exit_code": 0}


def test_a_workers_conversation_task_returns_at_its_jobs_end_not_at_its_next_look(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task of a conversation's job returns when the job ends, not at its next look at the job list: it
    held its worker's slot (and the batch's next run) up to a look interval longer (0.5 s, here an hour)."""
    monkeypatch.setattr(worker, "_WATCH_INTERVAL", 3600.0)
    reader = [sys.executable, "-c", "import sys\nfor line in sys.stdin: pass"]
    params = {"argv": reader, "durable": True, "stdin": "pipe", "stdin_idle_timeout": 0.5}
    state = HandlerPlugin(TOKEN, kill_grace=1.0)._start("tcp://127.0.0.1:1", None)
    published: list[str] = []
    try:
        outcome = state.loop.submit(worker._start_and_follow(
            state.server, TOKEN, params, lambda job_id, pid: published.append(job_id), None))
        assert outcome.result(scaled(30)) == {"job_id": published[0], "status": "completed", "exit_code": 0}
    finally:
        worker._stop(state)


def _batch_whose_client_closed_while_placing(cluster: tuple[LocalCluster, Client], settings: CCExec) -> Batch:
    """Three items on a Dask client of their own, two placing (claude=3 each, workers hold 2) and
    one queued, when that client closes; the batch once it ended."""
    local, _client = cluster
    client = Client(local)
    try:
        batch = cc_executor_nb.map(["true"] * 3, command=True, cluster=client, resources={"claude": 3},
                                   concurrency=2, display=False, settings=settings)
        eventually(lambda: [item.status for item in batch.items] == ["placing", "placing", "queued"], timeout=30,
                   what="two items placing")
    finally:
        client.close()
    batch.wait(scaled(30))
    return batch


def test_closing_the_client_ends_the_items_still_placing(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """Items whose tasks no worker can take (claude=3 each, workers hold 2), and one still queued, end
    cancelled, saying why, when their Dask client closes: the batch ends instead of waiting forever."""
    batch = _batch_whose_client_closed_while_placing(cluster, settings)
    assert [(run.status, run.error) for run in batch.runs] == [
        ("cancelled", "the Dask client was closed before it started")] * 3


def test_items_the_closing_client_kept_from_starting_read_skipped(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """Items that never started because their Dask client closed read ``skipped``, as one cancelled while
    placing does (they read ``cancelled``), and count as skipped; their runs say why."""
    batch = _batch_whose_client_closed_while_placing(cluster, settings)
    assert [item.status for item in batch.items] == ["skipped"] * 3
    assert batch.summary().skipped == 3 and batch.summary().cancelled == 0 and batch.results() == [None] * 3
    assert [run.error for run in batch.runs] == ["the Dask client was closed before it started"] * 3


def test_withdrawing_a_task_whose_client_closed_does_not_raise() -> None:
    """DaskPlacement.cancel of a task whose client closed meanwhile returns (it raised ClosedClientError
    in the batch's cancel, on the loop)."""
    from types import SimpleNamespace

    from distributed.client import ClosedClientError

    from cc_executor_nb.cluster.placement import DaskPlacement

    class Withdrawn:
        def cancel(self) -> None:
            raise ClosedClientError("the client closed")

    placement = DaskPlacement.__new__(DaskPlacement)
    placement.client, placement.futures = SimpleNamespace(status="running"), {0: Withdrawn()}
    placement.cancel(SimpleNamespace(index=0))  # type: ignore[arg-type]


def test_a_command_that_cannot_start_on_a_worker_ends_as_it_does_locally(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """A missing program: the run ends error with the local batch's one-line reason (the worker's task
    returned it rather than raising it, so Dask logged no traceback), not "the Dask task failed: ..."."""
    _local, client = cluster
    local = cc_executor_nb.map(["/no/such/cmd"], command=True, display=False, settings=settings, wait=True)
    placed = cc_executor_nb.map(["/no/such/cmd"], command=True, cluster=client, display=False, settings=settings)
    placed.wait(scaled(60))
    assert (placed.runs[0].status, placed.runs[0].error) == (local.runs[0].status, local.runs[0].error) == (
        "error", "could not start '/no/such/cmd': No such file or directory")


def test_a_cluster_runs_reconnect_limit_is_the_setting(cluster: tuple[LocalCluster, Client]) -> None:
    """CCExec.reconnect_timeout reaches the runs a cluster batch follows on its workers (they kept
    the client's 5 minutes)."""
    _local, client = cluster
    config = CCExec(history_path="none", reconnect_timeout=7.0)
    placed = cc_executor_nb.map(["true"], command=True, cluster=client, display=False, settings=config)
    placed.wait(scaled(60))
    assert placed.runs[0].status == "completed"
    assert placed.runs[0].target.reconnect_timeout == 7.0


@pytest.mark.parametrize("configured", [{"durable": True}, {"default_server": "ws://127.0.0.1:9/ws"}])
def test_a_cluster_batch_leaves_the_configured_server_and_durability_aside(
    cluster: tuple[LocalCluster, Client], tmp_path: Any, monkeypatch: pytest.MonkeyPatch, configured: dict[str, Any]
) -> None:
    """CCExec.durable and CCExec.default_server choose where a run goes when map() is not told; a cluster
    batch's runs go to the workers, so neither applies: no local job server is started (one was, for
    nothing) and the runs are neither durable here nor remote (they were marked so)."""
    from cc_executor_nb.server.runtime import RUNTIME_FILE_NAME, stop_job_server

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    _local, client = cluster
    configured_settings = CCExec(history_path="none", output_mode="text", kill_grace=1.0, **configured)
    try:
        batch = cc_executor_nb.map(["true"], command=True, cluster=client, display=False,
                                   settings=configured_settings)
        batch.wait(scaled(60))
        assert [run.status for run in batch.runs] == ["completed"]
        assert not (tmp_path / RUNTIME_FILE_NAME).exists()
        assert [(run.options["server"], run.options["durable"]) for run in batch.runs] == [(None, False)]
    finally:
        stop_job_server(tmp_path / RUNTIME_FILE_NAME, timeout=scaled(60))


def test_resources_no_worker_offers_are_named_while_the_items_wait(
    cluster: tuple[LocalCluster, Client], settings: CCExec, capsys: pytest.CaptureFixture[str]
) -> None:
    """resources={"claude": 3} where each worker holds 2: the batch says at once that no worker offers them
    and what the workers offer, in its output and on each placing row (it showed "placing" forever, no hint);
    the items still wait, as a worker with them may join."""
    _local, client = cluster
    batch = cc_executor_nb.map(["true"] * 2, command=True, cluster=client, resources={"claude": 3},
                               settings=settings)
    try:
        eventually(lambda: [item.status for item in batch.items] == ["placing", "placing"], timeout=30,
                   what="both items placing")
        warning = ("no Dask worker offers claude=3 (the 2 workers offer claude=2): the items stay placing "
                   "until a worker with them joins")
        assert f"[batch] {warning}\n" in capsys.readouterr().out
        assert [row.last_line for row in batch.rows()] == [warning] * 2
    finally:
        batch.cancel().wait(scaled(30))
    assert [run.status for run in batch.runs] == ["cancelled"] * 2
    assert [item.status for item in batch.items] == ["skipped"] * 2  # they never started


def test_the_magics_resources_reach_the_dask_tasks(
    cluster: tuple[LocalCluster, Client], capsys: pytest.CaptureFixture[str]
) -> None:
    """``%%ccexec --each NAME --cluster CLIENT --resources claude=3`` asks each task for claude=3, as
    map(resources=...) does (the magic had no --resources: a magic batch could not hold a worker resource)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    _local, client = cluster
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "cc_executor_nb")
    try:
        shell.run_line_magic("config", "CCExec.history_path = 'none'")
        shell.user_ns.update(items=["a", "b"], dask_client=client)
        batch = shell.run_cell_magic("ccexec", "-c --each items --cluster dask_client --resources claude=3",
                                     "echo {item}")
        try:
            eventually(lambda: [item.status for item in batch.items] == ["placing", "placing"], timeout=30,
                       what="both items placing")
            assert "[batch] no Dask worker offers claude=3 (the 2 workers offer claude=2)" in capsys.readouterr().out
        finally:
            batch.cancel().wait(scaled(30))
    finally:
        shell.run_line_magic("unload_ext", "cc_executor_nb")
        shell.config.pop("CCExec", None)


class HungScheduler:
    """A Dask client whose scheduler never answers ``scheduler_info`` (until released)."""

    status = "running"

    def __init__(self) -> None:
        self.asked, self.release = threading.Event(), threading.Event()

    def scheduler_info(self, **kwargs: Any) -> dict[str, Any]:
        self.asked.set()
        self.release.wait(120)
        return {"workers": {}}


def test_a_hung_scheduler_holds_up_neither_the_worker_check_nor_the_loops_stop(monkeypatch) -> None:
    """A look at the workers whose scheduler never answers gives up after WORKER_CHECK_TIMEOUT (a second look
    is not started meanwhile), and the loop stops at once (it ran on the loop's default thread pool, whose
    shutdown waited for it: stop() gave up after its timeout, the loop thread left hanging)."""
    monkeypatch.setattr(placement, "WORKER_CHECK_INTERVAL", 0.01)
    monkeypatch.setattr(placement, "WORKER_CHECK_TIMEOUT", 0.2)
    client = HungScheduler()
    entry = SimpleNamespace(driven=SimpleNamespace(done=False, status="reconnecting"), worker="tcp://w:1")
    owner = SimpleNamespace(client=client, _followed=[entry], _workers=placement.WorkersReader(client))
    loop = KernelLoop(None, thread_name="ccx-hung-scheduler", stop_timeout=scaled(10))
    loop.start()
    try:
        watcher = loop.submit(placement.DaskPlacement._watch_workers(owner))  # type: ignore[arg-type]
        assert client.asked.wait(scaled(10))
        time.sleep(0.5)  # a few checks' worth: each finds the first look still waiting
        assert [t.name for t in threading.enumerate()].count("ccx-dask-workers") <= 1
        thread, started = loop._thread, time.monotonic()
        assert thread is not None
        loop.stop()
        assert not thread.is_alive() and time.monotonic() - started < scaled(5)
        assert watcher.cancelled()
    finally:
        client.release.set()
        loop.stop()


def test_a_run_whose_worker_dies_ends_at_once_saying_so(settings: CCExec) -> None:
    """The worker process running an item is killed: the item ends error within seconds, its one-line reason
    naming the worker that left (it reconnected for 5 minutes, then ended with a raw socket error)."""
    import os
    import signal

    local = LocalCluster(n_workers=1, processes=True, threads_per_worker=1, dashboard_address=":0")
    client = Client(local)
    try:
        batch = cc_executor_nb.map([py("import time; time.sleep(120)")], command=True, cluster=client,
                                   display=False, settings=settings)
        run = batch.runs[0]
        eventually(lambda: run.status == "running", timeout=60, what="the run")
        worker = batch.items[0].worker
        (pid,) = cluster_pids(local)
        os.kill(pid, signal.SIGKILL)
        batch.wait(scaled(30))
        assert (run.status, run.error) == (
            "error", f"its Dask worker {worker} left the cluster (it died or was stopped), and the run with it")
    finally:
        client.close()
        local.close()


def test_a_workers_conversation_whose_timeout_passed_between_turns_ends_completed(
    settings: CCExec, tmp_path: Any
) -> None:
    """A Claude conversation on a worker's handler (the job a batch's task starts, from the notebook's recipe)
    whose --timeout passed while it waited for a follow-up, its answer whole: the task's outcome, the job as
    the worker's handler lists it, reads completed with no error, as the notebook's run does (it read timeout,
    while the run said completed: the recipe sent no summary, so no summary_ends_turn)."""
    from cc_executor_nb.kernel import api
    from cc_executor_nb.kernel.run import Target

    prompt = "echo: still here"
    prepared = api.prepare(prompt, settings=settings, view=False, demo=True, timeout=scaled(8),
                           unconfigured=("durable", "default_server", "token_env"))
    run = prepared.run
    assert run.conversation is not None
    recipe = placement.recipe_of(prepared, prompt, settings, batch="t")
    params = recipe.execute_params()
    # Its input left open after the first result (the job then waits for a follow-up until the timeout), as
    # the recipe made it before it closed it there: the timeout passes between turns.
    assert params.pop("stdin_close_on_summary") is True
    state = HandlerPlugin(TOKEN, kill_grace=1.0)._start("tcp://127.0.0.1:1", None)
    published: list[str] = []
    try:
        outcome = state.loop.submit(worker._start_and_follow(
            state.server, TOKEN, params, lambda job_id, pid: published.append(job_id), None))
        eventually(lambda: published, timeout=scaled(30), what="the job")
        # As the placement attaches a batch's run, without its end(): the conversation waits for a follow-up.
        run.target, run.job_id = Target(state.url, TOKEN), published[0]
        run.conversation.fallback = None
        run.start(prepared.loop)
        eventually(lambda: run.done, timeout=scaled(60), what="the timeout to end the process")
        assert (run.status, run.error, run.answer) == ("completed", None, "still here")
        assert outcome.result(scaled(30)) == {"job_id": published[0], "status": "completed", "exit_code": run.exit_code}
    finally:
        worker._stop(state)


NOTEBOOK_THAT_DIES = """
import os, sys, time
from cc_executor_nb.kernel import api
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.run import Target
url, token, job_id, prompt = sys.argv[1:5]
prepared = api.prepare(prompt, settings=CCExec(history_path="none", output_mode="text"), view=False, demo=True,
                       unconfigured=("durable", "default_server", "token_env"))
run = prepared.run
run.target, run.job_id = Target(url, token), job_id
run.conversation.fallback = None
run.start(prepared.loop)
deadline = time.monotonic() + 60
while not run.answer and time.monotonic() < deadline:
    time.sleep(0.02)
print("answer:", run.answer, flush=True)
os._exit(0)  # the notebook dies: no end(), no cancel, its connection drops
"""


def test_a_workers_conversation_ends_at_its_first_result_when_its_notebook_died(
    settings: CCExec, tmp_path: Any
) -> None:
    """A batch's conversation on a worker whose notebook died right after the first result ends then (nobody can
    send it a follow-up: the batch ends each run after its first turn), and frees its slot: it waited out its
    idle timeout (here 600 s) on the worker, holding the slot, as a local batch's job does not."""
    import subprocess

    from cc_executor_nb.kernel import api

    prompt = "what is 2+2"
    prepared = api.prepare(prompt, settings=settings, view=False, demo=True, idle_timeout=600,
                           unconfigured=("durable", "default_server", "token_env"))
    recipe = placement.recipe_of(prepared, prompt, settings, batch="t")
    state = HandlerPlugin(TOKEN, kill_grace=1.0)._start("tcp://127.0.0.1:1", None)
    published: list[str] = []
    try:
        outcome = state.loop.submit(worker._start_and_follow(
            state.server, TOKEN, recipe.execute_params(), lambda job_id, pid: published.append(job_id), None))
        eventually(lambda: published, timeout=scaled(30), what="the job")
        notebook = subprocess.run([sys.executable, "-c", NOTEBOOK_THAT_DIES, state.url, TOKEN, published[0], prompt],
                                  capture_output=True, text=True, timeout=scaled(90), check=False)
        assert notebook.stdout == "answer: 4\n", notebook.stderr[-2000:]
        assert outcome.result(scaled(30)) == {"job_id": published[0], "status": "completed", "exit_code": 0}
    finally:
        worker._stop(state)


def test_a_task_withdrawn_after_its_job_started_cancels_the_job_nobody_followed(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """A task Dask withdraws (its future cancelled) after it started its job, before any notebook followed
    it, cancels that job: the re-run of a dead worker's task that began before the batch withdrew it (whose
    event came after the batch was over: nobody stopped it) ran its job to its end, unseen."""
    _local, client = cluster
    name, _token = placement.ensure_plugin(client, settings)
    topic = f"cc_executor_nb-test-{time.monotonic_ns()}"
    events: list[dict[str, Any]] = []
    client.subscribe_topic(topic, lambda event: events.append(event[1]))
    try:
        recipe = worker.Recipe("command", argv=[sys.executable, "-c", "import time; time.sleep(120)"], label="t")
        future = client.submit(worker.run_on_worker, recipe, name, topic, 0, pure=False)
        eventually(lambda: events, timeout=scaled(60), what="the job")
        pid = int(events[0]["pid"])
        assert alive(pid)
        future.cancel()
        eventually(lambda: not alive(pid), timeout=scaled(15), what="the withdrawn task's job gone")
    finally:
        client.unsubscribe_topic(topic)


def test_closing_the_client_leaves_the_started_runs_going(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """A run the notebook follows goes on to its end when the Dask client that placed it closes (its task,
    withdrawn then, leaves a job someone follows alone)."""
    local, _client = cluster
    client = Client(local)
    try:
        batch = cc_executor_nb.map([f"{TICKER} t 16"], command=True, cluster=client, display=False,
                                   settings=settings)
        run = batch.runs[0]
        eventually(lambda: "t 2" in (run.stdout or ""), timeout=scaled(60), what="the run's output")
    finally:
        client.close()
    batch.wait(scaled(60))
    assert (run.status, run.exit_code) == ("completed", 0)
    assert (run.stdout or "").splitlines() == [f"t {i}" for i in range(16)]


def _slots_free(client: Client) -> None:
    """Wait until no task holds a worker's "claude" (an earlier test's tasks end a moment after their runs):
    the first two of three tasks asking for claude=2 then take both workers, the third waits (placing)."""
    eventually(lambda: set(client.run(lambda dask_worker: dask_worker.state.available_resources.get("claude"))
                           .values()) == {2}, timeout=scaled(30), what="both workers' slots free")


def test_pause_takes_back_the_items_waiting_for_a_workers_slot(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """pause() holds back an item placing on the cluster (its task waited for a slot: it started as soon as one
    freed, paused or not): it reads queued, a slot freed under the paused batch goes to another task, and the
    item starts once the batch is resumed."""
    _local, client = cluster
    _slots_free(client)
    sleep = py("import time; time.sleep(120)")
    batch = cc_executor_nb.map([sleep, sleep, f"{TICKER} late 2"], command=True, cluster=client,
                               resources={"claude": 2}, concurrency=3, display=False, settings=settings)
    try:
        eventually(lambda: [item.status for item in batch.items] == ["running", "running", "placing"], timeout=60,
                   what="two runs holding both workers' slots, one placing")
        batch.pause()
        assert batch.items[2].status == "queued"
        batch.runs[0].cancel()
        eventually(lambda: batch.runs[0].done, timeout=scaled(30), what="the first run's end")
        # The freed slot takes another task asking for it: the item withdrawn did not.
        assert client.submit(lambda: "ran", resources={"claude": 2}, pure=False).result(timeout=scaled(60)) == "ran"
        assert (batch.items[2].status, batch.runs[2].state.pid) == ("queued", None)
        batch.resume()
        eventually(lambda: batch.runs[2].done, timeout=scaled(60), what="the resumed item's end")
        assert (batch.runs[2].status, batch.runs[2].stdout) == ("completed", "late 0\nlate 1\n")
    finally:
        batch.cancel().wait(scaled(60))


def test_a_spent_budget_skips_the_items_waiting_for_a_workers_slot(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """The batch budget spent while an item's task waits for a worker's slot: the item is skipped, as a queued
    one is (it started in the slot the spending run freed, and was paid for)."""
    _local, client = cluster
    _slots_free(client)
    batch = cc_executor_nb.map(["what is 2+2", "think for 120 seconds", "what is 3+3"], demo=True, cluster=client,
                               resources={"claude": 2}, concurrency=3, max_budget_usd=0.000001, display=False,
                               settings=settings)
    try:
        eventually(lambda: batch.items[2].status == "placing", timeout=60, what="the third item placing")
        eventually(lambda: batch.runs[0].done, timeout=scaled(90), what="the first run's end")
        batch.runs[1].cancel()
        batch.wait(scaled(90))
        assert [item.status for item in batch.items] == ["completed", "cancelled", "skipped"]
        assert batch.results()[2] is None and batch.status == "budget"
    finally:
        batch.cancel().wait(scaled(60))


def test_a_usage_limit_takes_back_the_items_waiting_for_a_workers_slot(
    cluster: tuple[LocalCluster, Client], settings: CCExec
) -> None:
    """A usage limit holds the queue, and the item whose task waits for a worker's slot is taken back with it
    (it read placing, and started in the next slot to free, into the same limit of a shared account):
    queued until the reset, then it runs."""
    _local, client = cluster
    _slots_free(client)
    batch = cc_executor_nb.map(["usage limit reset in 20 s, then what is 1+1", "think for 120 seconds", "what is 3+3"],
                               demo=True, auto_resume=True, cluster=client, resources={"claude": 2}, concurrency=3,
                               display=False, settings=settings)
    try:
        held = eventually(lambda: batch.status == "held" and [item.status for item in batch.items], timeout=60,
                          what="the queue held by the usage limit")
        assert held == ["running", "running", "queued"]
        batch.runs[1].cancel()
        eventually(lambda: batch.runs[1].done, timeout=scaled(30), what="the second run's end")
        # The freed slot takes another task asking for it: the item taken back did not.
        assert client.submit(lambda: "ran", resources={"claude": 2}, pure=False).result(timeout=scaled(60)) == "ran"
        assert (batch.status, batch.items[2].status, batch.runs[2].state.pid) == ("held", "queued", None)
        batch.wait(scaled(90))
        assert (batch.runs[0].status, batch.results()[0]) == ("completed", "2")
        assert (batch.runs[2].status, batch.results()[2]) == ("completed", "6")
    finally:
        batch.cancel().wait(scaled(60))
