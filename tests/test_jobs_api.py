"""Durable jobs from the notebook side, in-process: the magic, the API, the table, the demo runner."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import cc_executor_nb
from cc_executor_nb.errors import CCExecError
from cc_executor_nb.kernel import api, jobserver
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.html import header_html
from cc_executor_nb.kernel.jobs import MIN_PREFIX, JobInfo, JobsTable, pick_job
from cc_executor_nb.kernel.jobsview import JobRow, jobs_html, jobs_text, rows_of
from cc_executor_nb.kernel.loop import stop_shared_loop
from cc_executor_nb.kernel.run import Run
from cc_executor_nb.kernel.runstate import inactive_for
from cc_executor_nb.kernel.transcript import markdown_escape
from cc_executor_nb.server.jobs import LOST_ERROR
from cc_executor_nb.server.runtime import RUNTIME_FILE_NAME, is_job_server, read_runtime_file

from .kernel_utils import fake_command
from .servers import ServerProcess, start_server
from .test_terminaltext import FORBIDDEN
from .util import eventually, scaled

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def shell(runtime_dir: Path) -> Iterator[InteractiveShell]:
    """The in-process shell with the extension loaded (text output: no kernel here)."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ipython = InteractiveShell.instance(config=config)
    ipython.run_line_magic("load_ext", "cc_executor_nb")
    ipython.run_line_magic("config", "CCExec.history_path = 'none'")
    yield ipython
    ipython.run_line_magic("unload_ext", "cc_executor_nb")
    ipython.config.pop("CCExec", None)


def line(shell: InteractiveShell, text: str) -> object:
    return shell.run_line_magic("ccexec", text)


def test_magic_starts_lists_and_attaches_a_durable_job(shell, capsys) -> None:
    """%ccexec --durable, then --jobs (a text table) and --attach by id prefix: the same output and end."""
    run = line(shell, "--durable -c 'echo durable hello' --wait -o first")
    assert isinstance(run, Run) and run.durable and not run.attached and run.status == "completed"
    table = line(shell, "--jobs --quiet")
    assert isinstance(table, JobsTable) and run.job_id in repr(table) and "completed" in repr(table)
    again = line(shell, f"--attach {run.job_id[:6]} --wait --quiet")
    assert isinstance(again, Run) and again.attached and again.job_id == run.job_id
    assert (again.status, again.exit_code, again.stdout) == ("completed", 0, "durable hello\n")
    last = cc_executor_nb.attach("last", display=False, wait=True)
    assert last.job_id == run.job_id


def test_a_durable_runs_text_and_record_name_its_job(shell, capsys) -> None:
    """The id to attach with is in the [started] line, the widget's header and the record."""
    run = line(shell, "--durable -c 'echo durable hello' --wait")
    assert isinstance(run, Run) and run.job_id
    assert f"[started] pid {run.state.pid} · job {run.job_id} · echo durable hello\n" in capsys.readouterr().out
    assert markdown_escape(f"job {run.job_id}") in run.transcript()
    assert f'<span class="ccx-job">job {run.job_id}</span>' in header_html(run.state, time.monotonic())


def test_attaching_to_a_job_removed_by_retention_says_so(shell) -> None:
    """--attach of a job the job server removed by retention names that, by id or prefix (it said
    "no job 'ID' on the job server", as for a typo)."""
    shell.run_line_magic("config", "CCExec.job_retention = 0")
    run = line(shell, "--durable -c 'echo short-lived' --wait --quiet")
    assert isinstance(run, Run) and run.status == "completed"
    # Pruned once no connection follows it (listing prunes): the run's own goes when it ends.
    eventually(lambda: all(job.job_id != run.job_id for job in cc_executor_nb.jobs.list()), what="the pruning")
    said = rf"^job '{run.job_id}' was removed by retention \(finished \d+ s ago; CCExec.job_retention\)$"
    for wanted in (run.job_id, run.job_id[:6]):
        with pytest.raises(UsageError, match=said):
            line(shell, f"--attach {wanted} --quiet")
    with pytest.raises(UsageError, match="no job 'nosuchjob1'"):
        line(shell, "--attach nosuchjob1 --quiet")


@pytest.mark.parametrize(("text", "message"), [
    ("--jobs echo hi", "--jobs takes no prompt"),
    ("--attach last --durable", "--durable starts one"),
    ("--attach no-such-job", "no job 'no-such-job'"),
    ("--attach last --model opus", "--attach takes no --model"),
    ("--attach last --continue", "--attach takes no --continue"),
    ("--jobs --timeout 5", "--jobs takes no --timeout"),
    ('--attach ""', 'attach takes "last", a job id or a prefix of one'),  # (it said "needs a prompt")
    ("--jobs --attach last", "give either --jobs"),  # (--attach was dropped: the table came back)
    ("--attach last --jobs", "give either --jobs"),
    ("--jobs --wait", r"--jobs takes no --wait \(the table does not end"),  # (it returned the table at once)
    ("--jobs -w -o table", r"--jobs takes no --wait"),
])
def test_magic_job_actions_refuse_what_makes_no_sense(shell, text, message) -> None:
    """--jobs with a prompt, --attach with --durable or a run's flag, an unknown job: one-line usage errors."""
    with pytest.raises(UsageError, match=message):
        line(shell, text)


def test_an_unreachable_job_server_is_named_without_its_secrets(runtime_dir) -> None:  # it stops the loop
    """jobs.list(server=...) that cannot connect names the URL without user info or query, and the reason in
    run()'s words (it said "[Errno 111] Connect call failed ('127.0.0.1', PORT)")."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(CCExecError) as info:
        cc_executor_nb.jobs.list(server=f"ws://u:SECRETPW@127.0.0.1:{port}/ws?token=SECRETQ")
    assert str(info.value) == f"cannot reach the job server at ws://127.0.0.1:{port}/ws: Connection refused"


@pytest.mark.parametrize(("call", "message"), [
    (lambda: cc_executor_nb.attach(123), 'attach takes "last", a job id or a prefix of one, not 123'),
    (lambda: cc_executor_nb.attach("  "), 'attach takes "last", a job id or a prefix of one'),
    (lambda: cc_executor_nb.jobs.list(server="localhost:8000"),
     "server must be a ws:// or wss:// URL, not 'localhost:8000'"),
])
def test_job_calls_refuse_an_id_or_server_they_cannot_use(call, message) -> None:
    """A job id that is no text, or a server that is no ws:// URL: a ValueError naming it, before any connection
    (they were "object of type 'int' has no len()" and "'int' object has no attribute 'decode'")."""
    with pytest.raises(ValueError, match=message):
        call()


def test_a_stopped_loop_leaves_a_durable_run_detached_and_its_job_running(runtime_dir) -> None:
    """Stopping the kernel's loop (unload, shutdown) detaches a durable run; the job goes on and completes."""
    run = cc_executor_nb.run(fake_command("ticker", "15", "0.1"), command=True, durable=True, display=False)
    eventually(lambda: run.job_id is not None and "tick 1" in run.stdout, what="the durable run streaming")
    stop_shared_loop()
    assert run.status == "detached" and run.done and "job goes on" in (run.error or "")
    # The record names the job to attach to, and does not say the job "took" the time followed.
    assert markdown_escape(f"job {run.job_id}") in run.transcript() and "followed for" in run.transcript()
    jobs = {job.job_id: job for job in cc_executor_nb.jobs.list()}
    assert jobs[run.job_id].status == "running"
    again = cc_executor_nb.attach(run.job_id, display=False, wait=True)
    assert again.stdout == "".join(f"tick {i}\n" for i in range(15))


def test_a_durable_run_gets_this_kernels_cwd_and_environment_but_no_secrets(runtime_dir, tmp_path, monkeypatch) -> None:
    """The job server was started earlier elsewhere; the run still sees this process's cwd and variables."""
    cc_executor_nb.jobs.server()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CCX_PROBE", "set after the server started")
    monkeypatch.setenv("JUPYTER_TOKEN", "a-secret")
    command = fake_command("env", "CCX_PROBE", "JUPYTER_TOKEN")
    env = cc_executor_nb.run(command, command=True, durable=True, display=False, wait=True)
    assert env.stdout == "CCX_PROBE=set after the server started\nJUPYTER_TOKEN unset\n"
    cwd = cc_executor_nb.run(fake_command("cwd"), command=True, durable=True, display=False, wait=True)
    assert cwd.stdout == f"{tmp_path}\n"


def test_a_durable_runs_relative_cwd_is_this_kernels(runtime_dir, tmp_path, monkeypatch) -> None:
    """cwd="sub" is a directory under this process's cwd, as for a run of the in-kernel server;
    the job server, started elsewhere, failed it: "its working directory 'sub': No such file or
    directory". A cwd of ~ stays the server's to expand."""
    cc_executor_nb.jobs.server()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    sub = cc_executor_nb.run(fake_command("cwd"), command=True, durable=True, cwd="sub", display=False, wait=True)
    assert (sub.status, sub.stdout) == ("completed", f"{tmp_path / 'sub'}\n")
    home = cc_executor_nb.run(fake_command("cwd"), command=True, durable=True, cwd="~", display=False, wait=True)
    assert home.stdout == f"{Path.home()}\n"


def test_a_durable_runs_long_label_is_cut_to_a_jobs(runtime_dir) -> None:
    """label= longer than a job's 1000 characters is cut (the run failed: "label is longer than
    1000 characters"), on one line as the job table shows it."""
    run = cc_executor_nb.run(fake_command("cwd"), command=True, durable=True, label="L" * 2000 + "\nmore",
                             display=False, wait=True)
    assert (run.status, run.error) == ("completed", None)
    (job,) = [job for job in cc_executor_nb.jobs.list() if job.job_id == run.job_id]
    assert job.label == "L" * 999 + "…"


def test_the_job_table_widget_follows_a_running_job_to_its_end(shell, tmp_path: Path) -> None:
    """In widget mode the table updates itself while a job runs, then stops asking."""
    shell.run_line_magic("config", "CCExec.output_mode = 'widget'")
    # The job ends once the gate file exists, so it still runs when the table is made (it
    # ran for 1 s: a test stalled that long under load read a table of an ended job).
    gate = tmp_path / "gate"
    job = fake_command("flood", "100", str(tmp_path / "hash"), "0", str(gate))
    run = line(shell, f"--durable -c {job!r} -o job")
    eventually(lambda: run.job_id is not None, what="the job's id")
    table = line(shell, "--jobs")
    assert isinstance(table, JobsTable) and table.live
    # While it follows, it carries the note a page shows once the updates stop coming (a crashed kernel).
    eventually(lambda: 'class="ccx-stale"' in table._widget.value, timeout=10, what="the live table's stale note")
    gate.touch()
    eventually(lambda: not table.live, timeout=20, what="the table's updates ending")
    assert table.jobs[0].status == "completed" and "completed" in table._widget.value
    assert "ccx-stale" not in table._widget.value  # its last update: nothing more is due
    assert "application/vnd.jupyter.widget-view+json" in table._repr_mimebundle_()


def test_the_job_table_counts_the_runs_that_follow_a_job(shell) -> None:
    """A job started by a durable run and attached by another run of this process is followed
    by 2 connections: jobs.list() reads 2 and the table's "attached" column says 2, in its
    widget and its text; once both runs ended, it reads 0 and the column "-"."""
    shell.run_line_magic("config", "CCExec.output_mode = 'widget'")
    run = ticking_job()
    again = cc_executor_nb.attach(run.job_id, display=False)
    eventually(lambda: "tick 20" in again.stdout, what="the attached run's replay")
    assert {job.job_id: job.attached for job in cc_executor_nb.jobs.list()} == {run.job_id: 2}
    table = cc_executor_nb.jobs(live=False)
    text = repr(table).splitlines()
    column = text[0].index("attached")
    assert text[0].split()[-2:] == ["attached", "label"] and text[1][column:].split()[0] == "2"
    assert re.search(r"<th [^>]*>attached</th><th [^>]*>label</th>", html_of(table))
    assert re.search(r"<td [^>]*>2</td><td [^>]*><span title=", html_of(table))
    run.cancel()
    run.wait(scaled(20))
    again.wait(scaled(20))
    eventually(lambda: [job.attached for job in cc_executor_nb.jobs.list()] == [0], what="no follower left")
    ended = cc_executor_nb.jobs(live=False)
    assert re.search(r"<td [^>]*>-</td><td [^>]*><span title=", html_of(ended))


def html_of(table: JobsTable) -> str:
    """The HTML a Jupyter front end shows of a table that does not follow (no widget)."""
    return str(table._repr_mimebundle_()["text/html"])


def ticking_job(settings: CCExec | None = None) -> Run:
    """A durable command run that prints a line every 10 ms for 30 s, once it has printed."""
    run = cc_executor_nb.run(
        fake_command("ticker", "3000", "0.01"), command=True, durable=True, display=False, settings=settings,
    )
    eventually(lambda: run.job_id is not None and "tick 20" in run.stdout, what="the durable run streaming")
    return run


def kill_job_server(runtime_dir: Path) -> None:
    """SIGKILL the job server the runtime file names (its watchdog kills its jobs; the file stays)."""
    server = read_runtime_file(runtime_dir / RUNTIME_FILE_NAME)
    assert server is not None
    os.kill(server.pid, signal.SIGKILL)
    eventually(lambda: not is_job_server(server.pid), what="the job server's death")


def job_duration(job: JobInfo) -> float:
    assert job.ended_at is not None
    return job.ended_at - job.started_at


def test_a_follower_finds_the_restarted_job_server_and_ends_as_its_job_did(runtime_dir) -> None:
    """The job server SIGKILLed under a followed job, a new one started (which marks it lost): the run
    re-reads the runtime file, re-attaches there and ends error with the job's own end and duration
    (it dialled the dead port for five minutes, then ended "reconnect failed" with those minutes as
    its duration)."""
    run = ticking_job()
    kill_job_server(runtime_dir)
    eventually(lambda: run.status == "reconnecting", what="the run reconnecting")
    job = {job.job_id: job for job in cc_executor_nb.jobs.list()}[run.job_id]  # starts the next server
    assert job.status == "lost"
    run.wait(scaled(20))
    assert (run.status, run.error) == ("error", LOST_ERROR)
    assert any(e.method == "client.reconnected" for e in run.events)
    assert run.duration == pytest.approx(job_duration(job), abs=scaled(0.5))


def test_a_follower_starts_the_next_job_server_itself_and_ends_as_its_job_did(runtime_dir) -> None:
    """The job server SIGKILLed under a followed job and nobody starts another: the run starts the
    next one itself, which marks the job lost, and ends saying so within seconds (it reconnected
    until its limit, 5 minutes, then ended "reconnect failed")."""
    run = ticking_job()
    kill_job_server(runtime_dir)
    run.wait(scaled(30))
    assert (run.status, run.error) == ("error", LOST_ERROR)
    server = read_runtime_file(runtime_dir / RUNTIME_FILE_NAME)
    assert server is not None and is_job_server(server.pid)


def no_restart_by_followers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Followers cannot start the next job server (as if it failed to start); jobs() still can."""
    def refuse(settings: object = None) -> None:
        raise jobserver.JobServerError("not started by followers in this test")

    monkeypatch.setattr(jobserver, "job_server", refuse)


def test_a_follower_never_gives_its_token_to_what_took_the_old_port(runtime_dir, monkeypatch) -> None:
    """Another server on the dead job server's port, while the runtime file still names the dead
    one: the follower dials nothing there (it sent the old token, and got 401: whatever takes the
    port would get the token), and attaches once the file names the next job server."""
    no_restart_by_followers(monkeypatch)  # the next server is started below
    run = ticking_job()
    old = read_runtime_file(runtime_dir / RUNTIME_FILE_NAME)
    assert old is not None
    kill_job_server(runtime_dir)
    eventually(lambda: run.status == "reconnecting", what="the run reconnecting")
    port = old.url.rsplit(":", 1)[1].split("/")[0]
    stand_in = start_server("--port", port, "--token", "not-the-old-token")
    try:
        attempts = len([e for e in run.events if e.method == "client.reconnecting"])
        eventually(lambda: len([e for e in run.events if e.method == "client.reconnecting"]) >= attempts + 2,
                   timeout=30, what="two more reconnect attempts")
    finally:
        stand_in.finish()
    assert "refused" not in stand_in.output() and "Authorization" not in stand_in.output()
    job = {job.job_id: job for job in cc_executor_nb.jobs.list()}[run.job_id]  # starts the next server
    assert job.status == "lost"
    run.wait(scaled(20))
    assert (run.status, run.error) == ("error", LOST_ERROR)


def test_a_follower_that_gives_up_ends_with_the_run_time_it_knew(runtime_dir, monkeypatch) -> None:
    """No job server comes back: the run ends error when its reconnects give up, and its duration is
    the run's up to the last message it had, not that plus the reconnect wait."""
    no_restart_by_followers(monkeypatch)
    # The client's reconnect limit (5 minutes by default) is CCExec.reconnect_timeout: 2 s here.
    settings = CCExec()
    settings.history_path = "none"
    settings.reconnect_timeout = 2.0
    run = ticking_job(settings)
    follower = cc_executor_nb.attach(run.job_id, display=False, settings=settings)  # the setting holds for attach too
    eventually(lambda: "tick 20" in follower.stdout, what="the attached run streaming")
    kill_job_server(runtime_dir)
    killed = run.duration
    assert killed is not None
    eventually(lambda: run.status == "reconnecting", what="the run reconnecting")
    run.wait(scaled(20))
    follower.wait(scaled(20))
    assert run.status == "error" and "reconnect failed" in (run.error or "")
    assert follower.status == "error" and "reconnect failed" in (follower.error or "")
    assert run.duration is not None and killed - scaled(0.5) <= run.duration <= killed + scaled(0.5)


def test_an_attached_lost_job_reads_error_with_the_jobs_own_duration(runtime_dir) -> None:
    """Attaching to a job its server died under: error, the server's reason, and the job's duration
    from its record (it was the attach's 0.03 s)."""
    run = ticking_job()
    eventually(lambda: (run.duration or 0) > 1.0, what="a second of the job")
    kill_job_server(runtime_dir)
    job = {job.job_id: job for job in cc_executor_nb.jobs.list()}[run.job_id]
    assert job.status == "lost" and job_duration(job) > 0.9  # (its end is the log's mtime: a coarse clock)
    again = cc_executor_nb.attach(run.job_id, display=False, wait=True)
    assert (again.status, again.error, again.attached) == ("error", LOST_ERROR, True)
    assert again.duration == pytest.approx(job_duration(job), abs=0.05)
    run.wait(scaled(20))  # the starter found the new server too
    assert (run.status, run.error) == ("error", LOST_ERROR)


def test_a_run_attached_to_a_running_job_counts_from_the_jobs_start(runtime_dir) -> None:
    """An attached run's duration is the job's so far, not the time since the attach."""
    run = ticking_job()
    eventually(lambda: (run.duration or 0) > 1.0, what="a second of the job")
    again = cc_executor_nb.attach(run.job_id, display=False)
    eventually(lambda: "tick 20" in again.stdout, what="the replay")
    assert again.duration is not None and again.duration > 1.0
    assert again.duration == pytest.approx(run.duration, abs=scaled(0.5))
    run.cancel()
    run.wait(scaled(20))
    again.wait(scaled(20))


def test_a_run_attached_to_a_silent_job_counts_its_silence_from_the_jobs_last_output(runtime_dir) -> None:
    """"No output for N s" of an attached run is the job's silence: its replayed output is as
    old as the job's last output (it counted from the attach)."""
    script = "import time; print('hello', flush=True); time.sleep(60)"
    run = cc_executor_nb.run(shlex.join([sys.executable, "-c", script]), command=True, durable=True, display=False)
    eventually(lambda: run.job_id is not None and "hello" in run.stdout, what="the job's one line")
    printed = time.monotonic()
    time.sleep(2.0)
    again = cc_executor_nb.attach(run.job_id, display=False)
    eventually(lambda: "hello" in again.stdout, what="the replay")
    silent = inactive_for(again.state, time.monotonic())
    assert silent is not None and silent >= 2.0
    assert silent == pytest.approx(time.monotonic() - printed, abs=scaled(0.5))
    run.cancel()
    run.wait(scaled(20))
    again.wait(scaled(20))


def info(job_id: str, notebook: str, started: float, **more: object) -> JobInfo:
    fields = {"label": "x", "status": "completed", "exit_code": 0, "error": None, "ended_at": None,
              "kind": "command", "cost_usd": None, "session_id": None, "attached": 0, "wire": {}}
    return JobInfo(job_id=job_id, notebook=notebook, started_at=started, **(fields | more))  # type: ignore[arg-type]


def test_a_shown_job_table_holds_the_rows_its_text_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shown again 5 s later, a table that does not follow (live=False) renders its HTML from
    the rows and the time its text/plain has: the widget state a notebook saves said
    "running 0.0 s" (its first render) under a current text."""
    from cc_executor_nb.kernel import jobs as jobs_module

    clock = [1000.0]
    monkeypatch.setattr(jobs_module, "time", type("Clock", (), {"time": staticmethod(lambda: clock[0])}))
    table = JobsTable(None, [info("abcd1111", "me", 1000.0, status="running")], widget=True, live=False)  # type: ignore[arg-type]
    assert "0.0 s" in html_of(table)
    clock[0] = 1005.0
    bundle = table._repr_mimebundle_()
    assert "running" in bundle["text/plain"] and "5.0 s" in bundle["text/plain"]
    assert "5.0 s" in bundle["text/html"] and "0.0 s" not in bundle["text/html"]


@pytest.mark.parametrize("status, live", [("completed", True), ("running", False)])
def test_a_job_table_that_does_not_follow_keeps_no_widget(status: str, live: bool) -> None:
    """A listing with no job running, or with live=False, is plain HTML: each such table kept
    a widget (3 comms and its HTML, 37 KB with 60 jobs) in the kernel until the kernel ended."""
    from ipywidgets.widgets.widget import _instances

    before = set(_instances)
    table = JobsTable(None, [info("abcd1111", "me", 1000.0, status=status)], widget=True, live=live)  # type: ignore[arg-type]
    bundle = table._repr_mimebundle_()
    assert set(_instances) == before
    assert "application/vnd.jupyter.widget-view+json" not in bundle
    assert "<code>abcd1111</code>" in bundle["text/html"] and "abcd1111" in bundle["text/plain"]


def test_pick_job_by_last_of_this_notebook_by_id_and_by_unique_prefix() -> None:
    """'last' is this notebook's newest; an id or a prefix of 4+ characters that names one job."""
    jobs = [info("abcd1111", "me", 3.0), info("abcd2222", "other", 9.0), info("zzzz0000", "me", 5.0)]
    assert pick_job(jobs, "last", "me").job_id == "zzzz0000"
    assert pick_job(jobs, "abcd2222", "me").job_id == "abcd2222"
    assert pick_job(jobs, "zzzz", "me").job_id == "zzzz0000"
    with pytest.raises(ValueError, match="matches 2 jobs"):
        pick_job(jobs, "abcd", "me")
    with pytest.raises(ValueError, match="no job of this notebook"):
        pick_job(jobs, "last", "nobody")
    with pytest.raises(ValueError, match="no job 'zzzz9'"):
        pick_job(jobs, "zzzz9", "me")


def test_a_prefix_shorter_than_the_minimum_is_named_as_such() -> None:
    """A prefix under MIN_PREFIX characters says so (it said "no job 'z'" though a job starts with z)."""
    jobs = [info("zzzz0000", "me", 5.0)]
    with pytest.raises(ValueError, match=r"^a job id prefix needs at least 4 characters, not 'z' "):
        pick_job(jobs, "z", "me")
    assert MIN_PREFIX == 4


def test_the_job_tables_cells_are_left_aligned_under_their_headings() -> None:
    """Jupyter's stylesheet right-aligns table cells in an output (and in an HTML export)
    under left-aligned headings; every cell now says text-align:left, as its heading does."""
    now = time.time()
    page = jobs_html([JobRow("id1", "running", "python train.py", now - 5, None, None, None, 1)], now)
    cells = re.findall(r"<t([dh]) style='([^']*)'", page)
    assert cells and {kind for kind, _ in cells} == {"d", "h"}
    assert all("text-align:left" in style for _, style in cells), cells


def test_the_job_table_escapes_what_it_shows() -> None:
    """Labels are prompts and command lines: the HTML table escapes them; the text table aligns columns."""
    now = time.time()
    rows = [JobRow("id1", "running", "<script>alert(1)</script>", now - 5, None, None, 0.01234, 1),
            JobRow("id2", "lost", "echo 'x'", now - 60, now - 30, -9, None, 0)]
    page = jobs_html(rows, now)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    text = jobs_text(rows, now).splitlines()
    assert text[0].split() == ["job", "status", "started", "duration", "exit", "cost", "attached", "label"]
    assert "$0.0123" in text[1] and "SIGKILL" in text[2] and text[1].index("running") == text[2].index("lost")


def test_the_job_table_says_a_jobs_end_as_its_record_does() -> None:
    """A finished job's duration reads as the record's (``78 ms``, it read ``0.0 s``) and a
    signal by name: -15 and a cancelled CLI's 143 read ``SIGTERM``; a plain 143 stays 143."""
    now = time.time()
    rows = [JobRow("id1", "completed", "echo", now - 0.078, now, 0, None, 0),
            JobRow("id2", "cancelled", "sleep 9", now - 2, now, -15, None, 0),
            JobRow("id3", "cancelled", "claude: hi", now - 2, now, 143, None, 0),
            JobRow("id4", "failed", "sh -c 'exit 143'", now - 2, now, 143, None, 0)]
    text = jobs_text(rows, now).splitlines()
    assert " 78 ms " in text[1] and "0.0 s" not in text[1]
    assert [line.split()[5] for line in text[2:]] == ["SIGTERM", "SIGTERM", "143"]  # duration: 2 words


def test_the_job_table_says_the_processs_own_duration_as_the_runs_end_line_does() -> None:
    """An ended job's duration is the process's own (``duration_seconds``, what "exit 4 in 2 ms"
    says), not the server's start-to-end span (it read ``57 ms``); a lost job, which has none,
    keeps the span."""
    now = time.time()
    ended = {"job_id": "id1", "status": "failed", "exit_code": 4, "started_at": now - 0.057, "ended_at": now,
             "duration_seconds": 0.002}
    lost = {"job_id": "id2", "status": "lost", "started_at": now - 0.057, "ended_at": now, "duration_seconds": None}
    text = jobs_text(rows_of([JobInfo.from_wire(ended), JobInfo.from_wire(lost)]), now).splitlines()
    assert " 2 ms " in text[1] and "57 ms" not in text[1]
    assert text[2].split()[3:5] == ["57", "ms"]


def test_the_attached_column_says_the_count_or_a_dash_for_nobody() -> None:
    """The listing's ``attached`` is the column: the count, "-" for a job nobody follows (nobody
    answers its questions); a malformed count reads as nobody (``int("many")`` raised ValueError
    and the whole table failed)."""
    now = time.time()
    jobs = [JobInfo.from_wire({"job_id": f"id{n}", "status": "running", "started_at": now - 5, "attached": count})
            for n, count in enumerate([3, 0, "many"])]
    assert [job.attached for job in jobs] == [3, 0, 0]
    text = jobs_text(rows_of(jobs), now).splitlines()
    column = text[0].index("attached")
    assert [row[column] for row in text[1:]] == ["3", "-", "-"]
    page = jobs_html(rows_of(jobs), now)
    assert re.findall(r"<td [^>]*>([0-9-])</td><td [^>]*><span title=", page) == ["3", "-", "-"]


def test_the_job_table_keeps_each_job_on_one_inert_line() -> None:
    """A label with newlines (a multi-line prompt) and an escape sequence is one row without its ESC."""
    now = time.time()
    rows = [JobRow("id1", "completed", "claude: line one\nline two\x1b]0;pwned\x07", now - 5, now, 0, None, 0)]
    text = jobs_text(rows, now).splitlines()
    assert len(text) == 2 and text[1].endswith("claude: line one line two]0;pwned")


def test_the_job_table_carries_no_terminal_or_bidi_control() -> None:
    """A job's label in the HTML table (the cell and its title) holds no control or bidi control raw."""
    now = time.time()
    rows = [JobRow("id1", "completed", "claude: a\x1b]0;T\x07\x9b\x00\u202eb", now - 5, now, 0, None, 0)]
    page = jobs_html(rows, now)
    assert not FORBIDDEN.search(page), FORBIDDEN.findall(page)
    assert "title='claude: a⟨U+202E⟩b'" in page and "⟨U+202E⟩b</span>" in page


def test_the_demo_runner_gives_its_command_a_backend_and_passes_on_its_end() -> None:
    """demo.runner: the command reaches a live demo API; its exit status and its death by signal come back."""
    runner = [sys.executable, "-m", "cc_executor_nb.demo.runner", "--"]
    probe = "import os, urllib.request; print(urllib.request.urlopen(os.environ['ANTHROPIC_BASE_URL']).status)"
    ok = subprocess.run([*runner, sys.executable, "-c", probe], capture_output=True, text=True, timeout=scaled(60),
                        check=False, env={"NO_PROXY": "127.0.0.1", "PATH": "/usr/bin:/bin"})
    assert (ok.returncode, ok.stdout) == (0, "200\n"), ok.stderr
    code = subprocess.run([*runner, sys.executable, "-c", "raise SystemExit(7)"], timeout=scaled(60), check=False)
    killed = subprocess.run([*runner, sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"], timeout=scaled(60),
                            check=False)
    assert (code.returncode, killed.returncode) == (7, -9)


JOBS_AT_DEBUG = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
import cc_executor_nb
cc_executor_nb.jobs.list()
"""


def test_the_job_server_probe_at_debug_logs_no_token(runtime_dir: Path) -> None:
    """Starting or finding the job server with DEBUG logging on: its token is not in the log
    (the first probe's Authorization header and 'connected' frame were logged in clear)."""
    done = subprocess.run([sys.executable, "-c", JOBS_AT_DEBUG], capture_output=True, text=True,
                          timeout=scaled(60), check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    token = json.loads((runtime_dir / RUNTIME_FILE_NAME).read_text())["token"]
    assert "> Authorization: [redacted]" in done.stderr and token not in done.stderr


FIRE_AND_FORGET = """
import sys
import cc_executor_nb
run = cc_executor_nb.run(sys.argv[1:], command=True, durable=True, display=False)
print(run.job_id)
"""


def test_a_script_that_exits_right_after_a_durable_run_leaves_its_job_running(runtime_dir: Path) -> None:
    """run(durable=True) returns once the job server has the job: the script may end at once
    (it returned before, and the job was lost with the script's daemon loop thread)."""
    done = subprocess.run([sys.executable, "-c", FIRE_AND_FORGET, *shlex.split(fake_command("ticker", "5", "0.1"))],
                          capture_output=True, text=True, timeout=scaled(60), check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert job_id != "None"
    again = cc_executor_nb.attach(job_id, display=False, wait=True)
    assert (again.status, again.stdout) == ("completed", "".join(f"tick {i}\n" for i in range(5)))


DURABLE_BATCH = """
import sys
import cc_executor_nb
batch = cc_executor_nb.map(sys.argv[1], ["a", "b", "c"], command=True, durable=True, concurrency=2, display=False)
print(" ".join(str(run.job_id) for run in batch))
"""


def test_a_script_that_exits_right_after_a_durable_batch_leaves_its_started_jobs_running(runtime_dir: Path) -> None:
    """map(durable=True) returns once the job server has the jobs of the runs it started, as
    run() does; the item still queued never starts, and the script's exit says so."""
    done = subprocess.run([sys.executable, "-c", DURABLE_BATCH, "sh -c 'sleep 0.5; echo {item}'"],
                          capture_output=True, text=True, timeout=scaled(60), check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    first, second, third = done.stdout.split()
    assert "None" not in (first, second) and third == "None", done.stdout
    assert "1 item of a durable batch never started" in done.stderr, done.stderr
    for job_id, item in ((first, "a"), (second, "b")):
        again = cc_executor_nb.attach(job_id, display=False, wait=True)
        assert (again.status, again.stdout) == ("completed", f"{item}\n")


def test_arun_of_a_durable_run_awaits_its_job(runtime_dir: Path) -> None:
    """await arun(..., durable=True) follows its job to the end (it skips run()'s blocking
    wait for the job server to take the job, which would hold the caller's loop)."""
    done = asyncio.run(cc_executor_nb.arun(fake_command("ticker", "3", "0.05"), command=True, durable=True,
                                           display=False))
    assert done.job_id and (done.status, done.stdout) == ("completed", "tick 0\ntick 1\ntick 2\n")


@pytest.fixture
def token_job_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A standalone server keeping durable jobs, with a token."""
    server = start_server("--token", "the-right-token", "--jobs-dir", str(tmp_path / "jobs"))
    yield server
    server.finish()


@pytest.mark.parametrize("call", [
    lambda url: cc_executor_nb.jobs.list(server=url, token="a-wrong-token"),
    lambda url: cc_executor_nb.jobs(server=url, token="a-wrong-token", quiet=True),
    lambda url: cc_executor_nb.attach("last", server=url, token="a-wrong-token"),
])
def test_job_calls_refused_for_their_token_say_what_to_give(runtime_dir, token_job_server, call) -> None:
    """jobs() and attach() with a wrong token give run()'s hint: where the token comes from (they gave the
    bare "refused the connection: HTTP 401"), never the token."""
    with pytest.raises(CCExecError) as info:
        call(token_job_server.url)
    text = str(info.value)
    assert text.startswith(f"{token_job_server.url} refused the connection: HTTP 401")
    assert text.endswith("the token was given as token=: give the server's token") and "a-wrong-token" not in text


def test_a_live_job_table_refused_for_its_token_says_what_to_give(runtime_dir, token_job_server) -> None:
    """A live table whose server refuses the token at its next update (e.g. restarted with a new one) stops
    and says why with run()'s hint, under the table and in ``error`` (its update failed unseen, bare)."""
    url = token_job_server.url
    running = JobInfo.from_wire({"job_id": "j1", "status": "running", "started_at": time.time()})
    table = JobsTable(api.remote_target(url, "a-wrong-token", None, None), [running], widget=True, live=True)
    eventually(lambda: not table.live, timeout=scaled(20), what="the table's updates ending")
    assert table.error is not None and table.error.startswith(f"{url} refused the connection: HTTP 401")
    assert table.error.endswith("the token was given as token=: give the server's token")
    assert "a-wrong-token" not in table.error and "updates stopped: " + html.escape(table.error) in table._widget.value
    assert repr(table).endswith(f"updates stopped: {table.error}") and table.jobs == [running]


def test_a_live_job_table_whose_server_stops_says_its_statuses_may_be_out_of_date(
    runtime_dir, token_job_server
) -> None:
    """A live table whose job server stops under it (stop_server(), a SIGKILL) stops updating and says so
    in words: it said only the socket's "received 1001 (going away); then sent 1001 (going away)" or "no
    close frame received or sent", under rows still reading "running"."""
    url = token_job_server.url
    job = cc_executor_nb.run(fake_command("ticker", "1000", "0.1"), command=True, durable=True, server=url,
                             token="the-right-token", display=False)
    running = JobInfo.from_wire({"job_id": job.job_id, "status": "running", "started_at": time.time()})
    table = JobsTable(api.remote_target(url, "the-right-token", None, None), [running], widget=True, live=True)
    eventually(lambda: table.jobs is not None and table.jobs[0].wire.get("label"), timeout=scaled(20),
               what="the table's first update")
    token_job_server.finish(signal.SIGTERM)
    eventually(lambda: not table.live, timeout=scaled(20), what="the table's updates ending")
    assert table.error is not None and table.error.startswith("the job server closed the connection (")
    assert table.error.endswith("the statuses above may be out of date: list the jobs again (%ccexec --jobs)")
    assert repr(table).endswith(f"updates stopped: {table.error}")


def test_job_calls_refused_for_their_token_name_its_variable(
    token_job_server, shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """%ccexec --jobs/--attach with --token-env, and jobs()/attach() reading CCExec.token_env, say which
    variable the refused token came from (they gave run()'s generic hint)."""
    url = token_job_server.url
    monkeypatch.setenv("CCX_BAD_TOKEN", "nope")
    monkeypatch.delenv("CC_EXECUTOR_TOKEN", raising=False)
    named = "the token was read from CCX_BAD_TOKEN (--token-env, token_env=): give the server's token there"
    for action in ("--jobs", "--attach abcd"):
        with pytest.raises(UsageError) as info:
            line(shell, f"{action} -q -s {url} --token-env CCX_BAD_TOKEN")
        assert str(info.value) == f"{url} refused the connection: HTTP 401 (Unauthorized: missing or wrong bearer " \
                                  f"token): {named}"
    for call in (lambda: cc_executor_nb.jobs.list(server=url), lambda: cc_executor_nb.attach("abcd", server=url)):
        with pytest.raises(CCExecError) as caught:
            call()
        assert str(caught.value).endswith("the token was read from CC_EXECUTOR_TOKEN (CCExec.token_env), which is "
                                          "not set: give the server's token there, or name another variable with "
                                          "--token-env (token_env=)")


@pytest.mark.parametrize("keyword", ["token", "token_env"])
def test_jobs_and_attach_refuse_a_token_without_a_remote_server(keyword, runtime_dir, monkeypatch) -> None:
    """jobs(), jobs.list() and attach() with a token and no server refuse it as run() does (they used the
    job server's own token and ignored it), and start no job server for it."""
    monkeypatch.setenv("CCX_SOME_TOKEN", "t")
    given = {keyword: "t" if keyword == "token" else "CCX_SOME_TOKEN"}
    for call in (lambda: cc_executor_nb.jobs.list(**given),
                 lambda: cc_executor_nb.jobs(quiet=True, **given),
                 lambda: cc_executor_nb.attach("last", **given)):
        with pytest.raises(ValueError, match=rf"^{keyword} applies to a remote server only: give server too "
                                             r"\(or set CCExec.default_server\)$"):
            call()
    assert not (runtime_dir / RUNTIME_FILE_NAME).exists()


@pytest.mark.parametrize("action", ["--jobs", "--attach last"])
def test_the_jobs_magics_refuse_a_token_env_without_a_server(action, shell, runtime_dir, monkeypatch) -> None:
    """%ccexec --jobs / --attach with --token-env and no server name both flags, as %ccexec does for a run."""
    monkeypatch.setenv("CCX_SOME_TOKEN", "t")
    with pytest.raises(UsageError, match=r"^--token-env applies to a remote server only: give -s/--server too"):
        line(shell, f"{action} --token-env CCX_SOME_TOKEN --quiet")
    assert not (runtime_dir / RUNTIME_FILE_NAME).exists()


def test_jobs_and_attach_read_the_token_from_token_env(token_job_server, runtime_dir, monkeypatch) -> None:
    """jobs(), jobs.list() and attach() take token_env= as run() does (they raised TypeError): the token is
    read from that variable; one that is not set is refused before connecting; token= wins over it."""
    url = token_job_server.url
    monkeypatch.setenv("CCX_JOBS_TOKEN", "the-right-token")
    monkeypatch.delenv("CCX_NO_SUCH_TOKEN", raising=False)
    done = cc_executor_nb.run("echo by token_env", command=True, server=url, token_env="CCX_JOBS_TOKEN",
                              durable=True, wait=True, display=False)
    assert done.status == "completed" and done.job_id
    assert done.job_id in [job.job_id for job in cc_executor_nb.jobs.list(server=url, token_env="CCX_JOBS_TOKEN")]
    assert done.job_id in repr(cc_executor_nb.jobs(server=url, token_env="CCX_JOBS_TOKEN", quiet=True, live=False))
    again = cc_executor_nb.attach(done.job_id, server=url, token_env="CCX_JOBS_TOKEN", wait=True, display=False)
    assert (again.status, again.stdout) == ("completed", "by token_env\n")
    for call in (lambda: cc_executor_nb.jobs.list(server=url, token_env="CCX_NO_SUCH_TOKEN"),
                 lambda: cc_executor_nb.jobs(server=url, token_env="CCX_NO_SUCH_TOKEN", quiet=True),
                 lambda: cc_executor_nb.attach("last", server=url, token_env="CCX_NO_SUCH_TOKEN")):
        with pytest.raises(ValueError, match=r"^token_env='CCX_NO_SUCH_TOKEN': the environment variable "
                                             r"CCX_NO_SUCH_TOKEN is not set$"):
            call()
    listed = cc_executor_nb.jobs.list(server=url, token="the-right-token", token_env="CCX_NO_SUCH_TOKEN")
    assert done.job_id in [job.job_id for job in listed]


def test_attach_to_an_unknown_job_on_a_remote_server_names_that_server(token_job_server, shell, runtime_dir,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """%ccexec --attach ID -s URL with no such job names URL and the listing to read there (it said "no job
    'zzzz' on the job server (see %ccexec --jobs)": that lists this user's local job server, starting one)."""
    url = token_job_server.url
    monkeypatch.setenv("CCX_JOBS_TOKEN", "the-right-token")
    for wanted, said in (("zzzz", "no job 'zzzz'"), ("last", "no job of this notebook")):
        with pytest.raises(UsageError) as info:
            line(shell, f"--attach {wanted} -q -s {url} --token-env CCX_JOBS_TOKEN")
        assert str(info.value).startswith(f"{said}") and f"on {url} (see %ccexec --jobs -s {url})" in str(info.value)
    assert not (runtime_dir / RUNTIME_FILE_NAME).exists()


def test_a_durable_run_with_an_allow_list_runs_an_allowed_command(runtime_dir) -> None:
    """With CCExec.allowed_commands, the job server this kernel starts has the list, and a durable
    run of a listed program completes: every one failed, 'env may not set PATH while the server has
    an allow-list' (the kernel's own PATH went with it)."""
    settings = CCExec()
    settings.allowed_commands = ["echo"]
    echoed = cc_executor_nb.run("echo allowed", command=True, durable=True, display=False, wait=True, settings=settings)
    assert (echoed.status, echoed.stdout, echoed.error) == ("completed", "allowed\n", None)
    with pytest.raises(ValueError, match=r"^command 'ls' \(.*\) is not allowed .*\(CCExec.allowed_commands\)$"):
        cc_executor_nb.run("ls /", command=True, durable=True, display=False, settings=settings)


def test_a_durable_run_keeps_this_kernels_allow_list_on_a_server_started_without_it(runtime_dir) -> None:
    """The job server keeps the settings of the kernel that started it: one started with no
    allow-list ran `ls` durable although this kernel's CCExec.allowed_commands was ['echo']."""
    cc_executor_nb.jobs.server()  # started without an allow-list
    settings = CCExec()
    settings.allowed_commands = ["echo"]
    with pytest.raises(ValueError, match=r"^command 'ls' \(.*\) is not allowed .*\(CCExec.allowed_commands\)$"):
        cc_executor_nb.run("ls /", command=True, durable=True, display=False, settings=settings)
    echoed = cc_executor_nb.run("echo allowed", command=True, durable=True, display=False, wait=True, settings=settings)
    assert echoed.stdout == "allowed\n"
