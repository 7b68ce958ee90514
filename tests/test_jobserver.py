"""The job server as a detached process: started, found, idle, stopped, killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cc_executor_nb.client import connect
from cc_executor_nb.kernel import jobserver
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.jobserver import job_server, server_arguments, stop_server
from cc_executor_nb.server import runtime
from cc_executor_nb.server.config import ServerSettings
from cc_executor_nb.server.main import LOG_ROTATE_BYTES, parse_args, stop_main
from cc_executor_nb.server.runtime import (
    RUNTIME_FILE_NAME,
    RuntimeInfo,
    read_runtime_file,
    stop_job_server,
    write_runtime_file,
)

from .conftest import collect, fake, group_alive
from .servers import SERVER
from .util import eventually, gone, scaled

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private Jupyter runtime directory; any job server left in it is stopped afterwards."""
    directory = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(directory))
    yield directory
    stop_job_server(directory / RUNTIME_FILE_NAME, timeout=scaled(30))


def detach(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m cc_executor_nb.server --jobs --detach ARGS`` in the current environment."""
    return subprocess.run([*SERVER, "--jobs", "--detach", "--no-history", *args],
                          capture_output=True, text=True, timeout=scaled(60), check=False)


def info_of(runtime_dir: Path) -> RuntimeInfo:
    info = read_runtime_file(runtime_dir / RUNTIME_FILE_NAME)
    assert info is not None, "no runtime file"
    return info


async def start_job(info: RuntimeInfo, argv: list[str]) -> tuple[str, int]:
    """Start a durable job and leave at once; returns its id and process group."""
    async with await connect(info.url, info.token) as client:
        started = await client.execute(argv=argv, durable=True)
        return started["job_id"], started["pgid"]


def test_detach_starts_a_job_server_that_the_stop_command_stops(runtime_dir) -> None:
    """--detach returns once it listens, the runtime file is 0600 and names a server nobody here must reap."""
    proc = detach()
    assert proc.returncode == 0, proc.stderr
    info = info_of(runtime_dir)
    assert f"listening on {info.url}" in proc.stdout and info.url.startswith("ws://127.0.0.1:")
    assert stat.S_IMODE((runtime_dir / RUNTIME_FILE_NAME).stat().st_mode) == 0o600 and len(info.token) >= 32
    server = psutil.Process(info.pid)
    assert server.ppid() != os.getpid() and os.getsid(info.pid) == info.pid  # detached, own session
    stop = subprocess.run([*SERVER, "stop"], capture_output=True, text=True, timeout=scaled(60), check=False)
    assert stop.returncode == 0 and f"pid {info.pid}" in stop.stdout
    assert stop.stdout == f"stopped the job server at {info.url} (pid {info.pid}); no jobs were running\n"
    assert gone(info.pid) and not (runtime_dir / RUNTIME_FILE_NAME).exists()
    again = subprocess.run([*SERVER, "stop"], capture_output=True, text=True, timeout=scaled(60), check=False)
    assert again.returncode == 1 and "no job server runs" in again.stdout


def test_a_second_job_server_exits_3_naming_the_first(runtime_dir) -> None:
    """A second --jobs server finds the jobs directory taken: exit 3, the first one's pid in the message."""
    assert detach().returncode == 0
    first = info_of(runtime_dir)
    second = detach()
    assert second.returncode == 3 and f"pid {first.pid}" in second.stderr
    assert info_of(runtime_dir) == first and not gone(first.pid)


def test_a_second_job_server_leaves_the_first_ones_log_alone(runtime_dir) -> None:
    """The second --detach's refusal (exit 3) is on its own stderr only: it was appended to the
    running server's log too, which it also rotated away from it when that log was large."""
    assert detach().returncode == 0
    log = runtime_dir / "cc_executor_nb-jobserver.log"
    os.truncate(log, LOG_ROTATE_BYTES + 1)  # a log due for rotation at the next start
    before = log.stat()
    second = detach()
    assert second.returncode == 3 and second.stderr.startswith("error: another job server owns ")
    assert not log.with_name(log.name + ".1").exists()
    assert (log.stat().st_ino, log.stat().st_size) == (before.st_ino, before.st_size)


def test_a_detached_servers_log_opens_with_what_it_said_before_it_listened(runtime_dir) -> None:
    """What the server writes before it owns the jobs directory waits in a file of --detach's: once it
    listens, those lines (here the --token warning) open its log, as they did when it wrote there at once."""
    assert detach("--token", "detach-test-token-0123456789abcdef").returncode == 0
    text = (runtime_dir / "cc_executor_nb-jobserver.log").read_text()
    assert text.startswith("warning: --token shows the token") and text.rstrip().endswith("listening on "
                                                                                           + info_of(runtime_dir).url)


def test_stopping_the_job_server_cancels_its_jobs_and_leaves_no_process(runtime_dir) -> None:
    """stop: a job that ignores SIGTERM (with grandchildren) is killed after its grace; its record says cancelled."""
    assert detach("--kill-grace", "0.5").returncode == 0
    info = info_of(runtime_dir)
    job_id, pgid = asyncio.run(start_job(info, fake("stubborn", "2")))
    eventually(lambda: len(group_alive(pgid)) == 3, what="the job and its two grandchildren running")
    assert stop_job_server(runtime_dir / RUNTIME_FILE_NAME, timeout=scaled(30)) == info.pid
    assert not group_alive(pgid) and gone(info.pid)
    record = json.loads((runtime_dir / "cc_executor_nb-jobs" / f"{job_id}.json").read_text())
    assert record["status"] == "cancelled"


def test_the_stop_command_says_how_many_jobs_it_cancelled(runtime_dir) -> None:
    """stop names the server and the running jobs it cancelled (it said only "stopped the job server (pid N)")."""
    assert detach("--kill-grace", "0.5").returncode == 0
    info = info_of(runtime_dir)
    started = [asyncio.run(start_job(info, fake("ticker", "600", "0.1"))) for _ in range(2)]
    stop = subprocess.run([*SERVER, "stop"], capture_output=True, text=True, timeout=scaled(60), check=False)
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout == f"stopped the job server at {info.url} (pid {info.pid}); cancelled 2 running jobs\n"
    assert all(not group_alive(pgid) for _, pgid in started) and gone(info.pid)


async def start_paused_job(info: RuntimeInfo, argv: list[str]) -> int:
    """Start a durable job, pause it and leave; returns its process group."""
    async with await connect(info.url, info.token) as client:
        started = await client.execute(argv=argv, durable=True)
        await client.pause()
        return int(started["pgid"])


def test_the_stop_command_counts_paused_jobs_apart_from_running_ones(runtime_dir) -> None:
    """stop names paused jobs as paused (it said "cancelled 2 running jobs" for one running, one paused)."""
    assert detach("--kill-grace", "0.5").returncode == 0
    info = info_of(runtime_dir)
    _, running = asyncio.run(start_job(info, fake("ticker", "600", "0.1")))
    paused = asyncio.run(start_paused_job(info, fake("ticker", "600", "0.1")))
    stop = subprocess.run([*SERVER, "stop"], capture_output=True, text=True, timeout=scaled(60), check=False)
    assert stop.returncode == 0, stop.stderr
    expected = f"stopped the job server at {info.url} (pid {info.pid}); cancelled 2 jobs (1 running, 1 paused)\n"
    assert stop.stdout == expected
    assert not group_alive(running) and not group_alive(paused) and gone(info.pid)


def test_stop_with_a_stale_runtime_file_on_a_port_another_service_took(runtime_dir, capsys) -> None:
    """stop, when the file's server is gone and another (non-WebSocket) service holds its port,
    says no job server runs and removes the file (it died with websockets' InvalidMessage)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_garbage() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(4096)
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = runtime_dir / RUNTIME_FILE_NAME
    url = f"ws://127.0.0.1:{listener.getsockname()[1]}"
    write_runtime_file(path, RuntimeInfo(url=url, token="t" * 32, pid=dead.pid))
    try:
        assert stop_main(["--runtime-file", str(path)]) == 1
    finally:
        listener.close()
    assert capsys.readouterr().out == f"no job server runs ({path})\n"
    assert not path.exists()


def test_the_job_server_exits_when_idle_and_not_before(runtime_dir) -> None:
    """--idle-exit: a running job and an open connection keep it; once both are gone it exits and removes its file."""
    assert detach("--idle-exit", "0.5").returncode == 0
    info = info_of(runtime_dir)

    async def busy_then_idle() -> None:
        async with await connect(info.url, info.token) as client:
            await client.execute(argv=fake("ticker", "3", "0.5"), durable=True)
            await collect(client)  # 1.5 s of a running job
            await asyncio.sleep(1.0)  # then a connection with nothing running
            assert not gone(info.pid)

    asyncio.run(busy_then_idle())
    eventually(lambda: gone(info.pid), timeout=10, what="the idle job server exiting")
    assert not (runtime_dir / RUNTIME_FILE_NAME).exists()


def test_kernels_share_one_job_server_started_on_demand(runtime_dir) -> None:
    """job_server() from two threads at once starts one server; later calls find it; stop_server() ends it."""
    settings = CCExec(history_path="none", job_server_idle_exit=0)
    found: list[RuntimeInfo] = []
    threads = [threading.Thread(target=lambda: found.append(job_server(settings))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(scaled(60))
    assert len(found) == 2 and found[0].pid == found[1].pid
    assert job_server(settings).pid == found[0].pid
    servers = [p for p in psutil.process_iter(["cmdline"]) if str(runtime_dir) in " ".join(p.info["cmdline"] or ())]
    assert [p.pid for p in servers] == [found[0].pid]
    assert stop_server(timeout=scaled(30)) and gone(found[0].pid)
    assert not stop_server(timeout=scaled(30))


def test_a_stale_runtime_file_is_replaced(runtime_dir) -> None:
    """A runtime file left by a dead server (its pid gone) does not fool job_server(): a new one starts."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_runtime_file(runtime_dir / RUNTIME_FILE_NAME, RuntimeInfo("ws://127.0.0.1:9/ws", "x" * 32, dead.pid))
    info = job_server(CCExec(history_path="none"))
    assert info.pid != dead.pid and not gone(info.pid)
    assert info_of(runtime_dir) == info


def test_server_arguments_follow_the_settings() -> None:
    """The job server's flags come from CCExec: idle exit, retention, storage, grace, history, allow-list."""
    settings = CCExec(job_server_idle_exit=60, job_retention=120, job_storage_limit=5000, kill_grace=1.5,
                      history_path="none", allowed_commands=["python", "claude"])
    args = server_arguments(settings)
    value = lambda flag: args[args.index(flag) + 1]  # noqa: E731
    assert args[0] == "--jobs" and "--no-history" in args
    assert (value("--idle-exit"), value("--job-retention"), value("--job-storage-limit")) == ("60.0", "120.0", "5000")
    assert (value("--kill-grace"), value("--allowed-commands")) == ("1.5", "python,claude")


def test_server_arguments_carry_the_output_and_disk_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CCExec.capture, spool_dir, disk_limit and session_disk_limit never reached the job server
    (it ran with its defaults: a 4 GiB disk limit whatever the kernel said): its flags carry them,
    a relative spool_dir made absolute (the server starts in the home directory), 0 as no limit."""
    from cc_executor_nb.server.main import server_settings

    (tmp_path / "spool").mkdir()
    monkeypatch.chdir(tmp_path)
    settings = CCExec(capture="pipe", spool_dir="spool", disk_limit=100 << 20, session_disk_limit=0)
    server = server_settings(server_arguments(settings))
    assert server is not None
    assert (server.capture, server.spool_dir) == ("pipe", str(tmp_path / "spool"))
    assert (server.disk_limit, server.session_disk_limit) == (100 << 20, None)


def test_server_arguments_make_a_relative_history_path_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative CCExec.history_path reached the job server as written, and the job server
    (started in the home directory) used ~/hist.sqlite3 where the in-kernel server used the
    kernel directory's file: it is given absolute, as the kernel's working directory makes it."""
    from cc_executor_nb.server.main import server_settings

    monkeypatch.chdir(tmp_path)
    server = server_settings(server_arguments(CCExec(history_path="hist.sqlite3")))
    assert server is not None and server.history_path == str(tmp_path / "hist.sqlite3")


def test_a_kernels_output_and_disk_settings_the_job_server_has_otherwise_are_named() -> None:
    """The note on a job server started with other settings compared none of the output and
    disk settings: a kernel with another disk limit or capture heard nothing."""
    theirs = server_arguments(CCExec(history_path="none"))
    ours = CCExec(history_path="none", capture="pipe", disk_limit=128 << 20, session_disk_limit=0)
    assert jobserver.differing_settings(ours, theirs) == [
        "CCExec.capture (the job server's 'file', this kernel's 'pipe')",
        "CCExec.disk_limit (the job server's 4 GiB, this kernel's 128 MiB)",
        "CCExec.session_disk_limit (the job server's 1 GiB, this kernel's no limit)",
    ]
    assert jobserver.differing_settings(CCExec(history_path="none", capture="file"), theirs) == []  # '' is 'file'


def test_a_durable_run_of_a_job_server_a_kernel_started_captures_into_its_spool_dir(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """A job server started by a kernel with CCExec.spool_dir and disk_limit had neither (ps showed
    no --disk-limit; a durable run's capture files went to the system's temporary directory):
    its command line has them, and a durable run's stdout is a capture file in that directory."""
    from cc_executor_nb.server.main import server_settings

    spool = tmp_path / "spool"
    spool.mkdir()
    info = job_server(CCExec(history_path="none", spool_dir=str(spool), disk_limit=100 << 20, capture="file"))
    argv = psutil.Process(info.pid).cmdline()
    server = server_settings(argv[argv.index("cc_executor_nb.server") + 1:])
    assert server is not None and (server.spool_dir, server.disk_limit) == (str(spool), 100 << 20)
    script = "import sys, time; print('up', flush=True); time.sleep(60)"
    _, pgid = asyncio.run(start_job(info, [sys.executable, "-c", script]))
    try:
        assert os.readlink(f"/proc/{pgid}/fd/1").startswith(f"{spool}/")
    finally:
        os.killpg(pgid, signal.SIGKILL)


@pytest.mark.parametrize(("changes", "message"), [
    ({"job_retention": -1.0}, "job_retention"),
    ({"idle_exit": float("nan")}, "idle_exit"),
    ({"job_storage_limit": -5}, "job_storage_limit"),
    ({"job_storage_limit": 1.5}, "job_storage_limit"),
    ({"jobs_dir": " "}, "jobs_dir"),
])
def test_server_settings_refuse_bad_job_settings(changes, message) -> None:
    """ServerSettings validates the job settings like every other: one ValueError naming the field."""
    with pytest.raises(ValueError, match=message):
        ServerSettings(**changes)


@pytest.mark.parametrize(("argv", "message"), [
    (["--idle-exit", "-1"], "--idle-exit"),
    (["--job-storage-limit", "lots"], "--job-storage-limit"),
    (["--jobs", "--no-token"], "needs a token"),
    (["--detach"], "--detach needs --jobs"),
])
def test_bad_job_flags_are_usage_errors(argv, message, capsys) -> None:
    """Bad job flags end in a one-line usage error (exit 2), never a traceback."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_runtime_file_others_could_have_written_is_not_trusted(tmp_path: Path) -> None:
    """A runtime file writable by group or others, or a symbolic link, is not read (it was
    trusted: whoever wrote it chose the URL and token a kernel sends its runs to)."""
    path = tmp_path / RUNTIME_FILE_NAME
    write_runtime_file(path, RuntimeInfo(url="ws://127.0.0.1:1/ws", token="t" * 32, pid=1))
    assert read_runtime_file(path) is not None
    path.chmod(0o622)
    assert read_runtime_file(path) is None
    path.chmod(0o600)
    link = tmp_path / "link.json"
    link.symlink_to(path)
    assert read_runtime_file(link) is None


def test_a_runtime_file_others_could_write_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A kernel reads the runtime file every 50 ms while it waits for a job server: a
    group-writable one was warned about at each read (1180 identical lines in the 60 s
    wait); now once, until the file changes."""
    path = tmp_path / RUNTIME_FILE_NAME
    write_runtime_file(path, RuntimeInfo(url="ws://127.0.0.1:1/ws", token="t" * 32, pid=1))
    path.chmod(0o620)
    with caplog.at_level("WARNING", logger="cc_executor_nb.server"):
        assert [read_runtime_file(path) for _ in range(3)] == [None, None, None]
        path.chmod(0o602)
        assert read_runtime_file(path) is None
    warned = [record.getMessage() for record in caplog.records if "writable by others" in record.getMessage()]
    assert warned == [f"! {path} is writable by others: not trusted (chmod 600 it; "
                      "'python -m cc_executor_nb.server stop' removes it if no job server runs)"] * 2


def test_a_running_job_servers_untrusted_runtime_file_is_named_at_once(
    runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job server runs but its runtime file is group-writable: no other can start (the
    server owns the jobs directory), and job_server() waited its whole start timeout (60 s)
    to say "no job server answers"; it now says at once which file is not trusted and why."""
    first = job_server(CCExec(history_path="none"))
    path = runtime_dir / RUNTIME_FILE_NAME
    path.chmod(0o620)
    monkeypatch.setattr(jobserver, "START_TIMEOUT", scaled(10))  # what the test waits at most before the fix
    try:
        with pytest.raises(jobserver.JobServerError) as refused:
            job_server(CCExec(history_path="none"))
    finally:
        path.chmod(0o600)  # so that the fixture stops the server
    assert str(refused.value) == (
        f"the job server's runtime file {path} is not trusted (it is writable by group or others) and a job "
        "server owns its jobs directory, so no other can start: chmod 600 the file if it is yours, or end "
        "that server")
    assert not gone(first.pid)


def test_a_running_job_servers_runtime_file_made_a_link_is_not_told_to_be_chmodded(
    runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error for a runtime file that is a symbolic link said "chmod 600 the file", which
    changes the file it points to and leaves the link as untrusted as before; it says what
    makes it trusted: the file in the link's place."""
    first = job_server(CCExec(history_path="none"))
    path = runtime_dir / RUNTIME_FILE_NAME
    real = path.with_name("elsewhere.json")
    path.rename(real)
    path.symlink_to(real)
    monkeypatch.setattr(jobserver, "START_TIMEOUT", scaled(10))  # what the test waits at most otherwise
    try:
        with pytest.raises(jobserver.JobServerError) as refused:
            job_server(CCExec(history_path="none"))
    finally:
        real.replace(path)  # so that the fixture stops the server
    assert str(refused.value) == (
        f"the job server's runtime file {path} is not trusted (it is a symbolic link) and a job server owns its "
        "jobs directory, so no other can start: put the file it points to in its place if that is yours, or "
        "end that server")
    assert not gone(first.pid)


def test_a_runtime_file_of_another_user_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime file owned by another user is not read (as if we were another user here)."""
    path = tmp_path / RUNTIME_FILE_NAME
    write_runtime_file(path, RuntimeInfo(url="ws://127.0.0.1:1/ws", token="t" * 32, pid=1))
    monkeypatch.setattr(runtime, "_our_uid", lambda: os.getuid() + 1)
    assert read_runtime_file(path) is None


@pytest.fixture
def server_lookalike() -> Iterator[subprocess.Popen[bytes]]:
    """A process of ours whose command line names the server module (as a job server's does)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "cc_executor_nb.server"])
    yield proc
    proc.kill()
    proc.wait()


def test_another_users_process_is_no_job_server_of_ours(
    tmp_path: Path, server_lookalike: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale runtime file whose pid now belongs to another user's server process is not
    our job server: stop does not signal it (it sent SIGTERM: EPERM, or as root a kill)."""
    path = tmp_path / RUNTIME_FILE_NAME
    write_runtime_file(path, RuntimeInfo(url="ws://127.0.0.1:1/ws", token="t" * 32, pid=server_lookalike.pid))
    assert runtime.is_job_server(server_lookalike.pid)
    other = os.getuid() + 1  # the process is now another user's (the file stays ours: it is read)
    uids = type(psutil.Process().uids())
    monkeypatch.setattr(psutil.Process, "uids", lambda self: uids(other, other, other))
    assert not runtime.is_job_server(server_lookalike.pid)
    assert stop_job_server(path, timeout=scaled(10)) is None
    assert server_lookalike.poll() is None


def test_the_token_goes_only_to_the_port_the_named_server_listens_on(
    tmp_path: Path, server_lookalike: subprocess.Popen[bytes]
) -> None:
    """A runtime file whose pid is a server of ours that does not listen on the file's port
    (a stale file, the pid reused, the port another program's) is not probed: the token
    was sent to whatever listened there."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(scaled(5))
    received: list[bytes] = []

    def record() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                received.append(conn.recv(65536))

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    info = RuntimeInfo(url=f"ws://127.0.0.1:{listener.getsockname()[1]}/ws", token="s" * 32, pid=server_lookalike.pid)
    try:
        assert not jobserver._answers(info)
    finally:
        listener.close()
        thread.join(scaled(10))
    assert not any(b"s" * 32 in data for data in received)


def test_the_locator_names_no_server_for_a_file_whose_server_does_not_listen_there(
    runtime_dir: Path, server_lookalike: subprocess.Popen[bytes]
) -> None:
    """A followed job's locator reads the runtime file before each reconnect: a file whose pid
    does not listen on its port (the server died; the port may be anybody's) gives no address,
    so the follower dials nothing (it gave the file's URL and token)."""
    write_runtime_file(
        runtime_dir / RUNTIME_FILE_NAME,
        RuntimeInfo(url="ws://127.0.0.1:9/ws", token="t" * 32, pid=server_lookalike.pid),
    )
    assert jobserver.job_server_locator()() is None


# ``--jobs --detach`` given a Ctrl-C as it starts to wait for the server it spawned; prints that
# server's pid first.
CTRL_C_WHILE_DETACH_WAITS = """
import runpy, signal
from cc_executor_nb.server import main

wait = main._await_ready

def ctrl_c_then_wait(pid, *args):
    print(pid, flush=True)
    signal.raise_signal(signal.SIGINT)
    return wait(pid, *args)

main._await_ready = ctrl_c_then_wait
runpy.run_module("cc_executor_nb.server", run_name="__main__", alter_sys=True)
"""


def test_a_ctrl_c_while_detach_waits_stops_the_server_it_started(tmp_path: Path) -> None:
    """A Ctrl-C while ``--detach`` waits for its server: one line, exit 130, and that server is
    stopped (it was a traceback, and the server went on starting, unseen)."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_DETACH_WAITS, "--jobs", "--detach"], env=env,
                          capture_output=True, text=True, timeout=scaled(60), check=False)
    pid = int(done.stdout.split()[0])
    assert (done.returncode, done.stderr) == (
        130, f"[cancelled] by Ctrl-C: the job server being started (pid {pid}) was stopped\n")
    eventually(lambda: gone(pid), timeout=30, what="the started server to stop")


def _stop_command(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVER, "stop", "--runtime-file", str(path)], capture_output=True, text=True,
                          timeout=scaled(60), check=False)


def test_stop_removes_a_stale_runtime_file_of_ours_that_is_not_trusted(runtime_dir: Path) -> None:
    """A group-writable runtime file of ours whose server is gone was never removed: stop said
    "no job server runs" and left it for good (a stale file is removed only when trusted). It
    names no live job server whoever wrote it, so stop removes it and says so."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = runtime_dir / RUNTIME_FILE_NAME
    write_runtime_file(path, RuntimeInfo(url="ws://127.0.0.1:9/ws", token="t" * 32, pid=dead.pid))
    path.chmod(0o620)
    stop = _stop_command(path)
    assert (stop.returncode, stop.stdout) == (1, f"no job server runs ({path}); its stale runtime file, not trusted "
                                                 "(it is writable by group or others), was removed\n")
    assert not path.exists()


@pytest.mark.parametrize(("text", "why"), [("x\n", "it is not JSON"), ("\xff\n", "it is not JSON"),
                                         ('{"url": "ws://127.0.0.1:9/ws"}', "it holds no url, token and pid")])
def test_stop_removes_a_private_file_of_ours_that_is_no_runtime_file(runtime_dir: Path, text: str, why: str) -> None:
    """A 0600 runtime file of ours that no job server wrote as it is (not JSON, or not its
    fields) stayed for good: stop said "no job server runs" and left it. It removes it and
    says so."""
    runtime_dir.mkdir()
    path = runtime_dir / RUNTIME_FILE_NAME
    path.write_bytes(text.encode("latin-1"))
    path.chmod(0o600)
    stop = _stop_command(path)
    assert (stop.returncode, stop.stdout) == (
        1, f"no job server runs ({path}); the file was no job server's runtime file ({why}) and was removed\n")
    assert not path.exists()


def test_stop_never_removes_a_file_of_another_name_that_is_no_runtime_file(tmp_path: Path) -> None:
    """`stop --runtime-file notes.txt` (a mistyped path) named a private file of the user's that no
    job server wrote: stop removed it. Only a file with the runtime file's own name is taken for a
    broken runtime file; another is left, and stop says what it is not."""
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    path.chmod(0o600)
    stop = _stop_command(path)
    assert (stop.returncode, stop.stdout) == (
        1, f"no job server runs ({path}); the file is no job server's runtime file (it is not JSON): left as it is\n")
    assert path.read_text() == "my notes\n"


def test_stop_never_removes_a_link_to_a_file_of_ours_that_is_no_runtime_file(runtime_dir: Path, tmp_path: Path) -> None:
    """A runtime file that is a symbolic link to a private file of ours holding no JSON: neither
    removed nor the file it points to (stop says it is not trusted, as for any link)."""
    target = tmp_path / "notes.txt"
    target.write_text("x\n")
    target.chmod(0o600)
    runtime_dir.mkdir()
    path = runtime_dir / RUNTIME_FILE_NAME
    path.symlink_to(target)
    stop = _stop_command(path)
    assert stop.returncode == 2 and "is not trusted (it is a symbolic link)" in stop.stderr
    assert path.is_symlink() and target.read_text() == "x\n"
    path.unlink()  # for the fixture


def test_stop_names_an_untrusted_runtime_file_whose_server_runs(runtime_dir: Path) -> None:
    """stop, when the runtime file of a running job server is group-writable, said "no job server
    runs" (exit 1) and left the server and the file as they were: it now says which file is not
    trusted, why, that the server it names runs and was not stopped, and what to do (exit 2)."""
    assert detach().returncode == 0
    info = info_of(runtime_dir)
    path = runtime_dir / RUNTIME_FILE_NAME
    path.chmod(0o620)
    try:
        stop = _stop_command(path)
    finally:
        path.chmod(0o600)  # so that the fixture stops the server
    assert stop.returncode == 2 and stop.stderr.splitlines()[-1] == (
        f"error: the job server's runtime file {path} is not trusted (it is writable by group or others) and "
        f"names a job server that runs (pid {info.pid}), so nothing was stopped: chmod 600 the file if it is "
        "yours, then stop again")
    assert not gone(info.pid)


def test_stop_never_removes_a_runtime_file_that_is_a_symbolic_link(runtime_dir: Path, tmp_path: Path) -> None:
    """A runtime file that is a symbolic link (to a stale file) is neither read nor removed: stop
    says so and what to do (it said "no job server runs", exit 1)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "elsewhere.json"
    write_runtime_file(target, RuntimeInfo(url="ws://127.0.0.1:9/ws", token="t" * 32, pid=dead.pid))
    runtime_dir.mkdir()
    path = runtime_dir / RUNTIME_FILE_NAME
    path.symlink_to(target)
    stop = _stop_command(path)
    assert stop.returncode == 2 and stop.stderr == (
        f"error: the job server's runtime file {path} is not trusted (it is a symbolic link), so nothing was "
        "stopped: put the file it points to in its place if that is yours, then stop again\n")
    assert path.is_symlink() and target.exists()
    path.unlink()  # for the fixture


def test_a_job_server_removes_its_runtime_file_made_writable_by_others_when_it_exits(runtime_dir: Path) -> None:
    """A job server whose runtime file became group-writable left it behind at its exit (it
    removed only a file it trusted): the file is ours and names it, so it is removed."""
    assert detach().returncode == 0
    info = info_of(runtime_dir)
    path = runtime_dir / RUNTIME_FILE_NAME
    path.chmod(0o620)
    os.kill(info.pid, signal.SIGTERM)
    eventually(lambda: gone(info.pid), what="the job server's exit")
    eventually(lambda: not path.exists(), what="its runtime file removed")


def test_a_second_kernels_settings_that_the_job_server_has_otherwise_are_named_once(
    runtime_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job server started by one kernel keeps that kernel's settings: a durable run from a
    kernel configured otherwise went there without a word. The kernel now says, once, which
    of its settings the server has otherwise and how to apply them; a kernel with the same
    settings hears nothing."""
    from cc_executor_nb.kernel.api import job_server_target

    first = CCExec(history_path="none", job_retention=3600.0)
    second = CCExec(history_path="none", job_retention=7200.0, kill_grace=2.0, allowed_commands=["ls"])
    job_server_target(first)
    job_server_target(second)
    job_server_target(second)
    job_server_target(first)
    info = info_of(runtime_dir)
    assert capsys.readouterr().err == (
        f"note: the job server (pid {info.pid}) was started with other settings than this kernel's, and keeps its "
        "own until it stops: CCExec.job_retention (the job server's 3600, this kernel's 7200), CCExec.kill_grace "
        "(the job server's 5, this kernel's 2), CCExec.allowed_commands (the job server's (empty), this kernel's "
        "'ls'). To use this kernel's, stop it (cancelling its jobs: cc_executor_nb.jobs.stop_server()); the next "
        "durable run starts one with them\n"
    )


def test_a_job_server_the_user_started_with_its_defaults_is_not_noted_for_them(
    runtime_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job server started by hand without --idle-exit (its default: never) drew the note in
    every kernel, whose CCExec.job_server_idle_exit defaults to an hour: two defaults, nobody's
    choice. A kernel with CCExec's defaults meets it without a word."""
    from cc_executor_nb.kernel.api import job_server_target

    assert detach().returncode == 0  # python -m cc_executor_nb.server --jobs --detach --no-history
    job_server_target(CCExec(history_path="none"))
    assert capsys.readouterr().err == ""


def test_a_setting_that_is_not_in_effect_is_named_and_sizes_read_as_sizes() -> None:
    """Against a job server started by hand, a kernel's own setting that the server has
    otherwise is named even where the server keeps its default (the kernel's 600 s idle exit is
    not in effect), as is a flag the user gave; byte counts read as the README writes them
    (``4294967296`` before)."""
    theirs = ["--jobs", "--no-history", "--job-storage-limit", "512M", "--disk-limit", "1500M"]
    ours = CCExec(history_path="none", job_server_idle_exit=600.0, job_storage_limit=2 << 30)
    assert jobserver.differing_settings(ours, theirs) == [
        "CCExec.job_server_idle_exit (the job server's 0, this kernel's 600)",
        "CCExec.job_storage_limit (the job server's 512 MiB, this kernel's 2 GiB)",
        "CCExec.disk_limit (the job server's 1.465 GiB, this kernel's 4 GiB)",
    ]
    assert jobserver.readable_size(100) == "100 bytes" and jobserver.readable_size(3 << 40) == "3 TiB"


def test_a_job_server_of_another_version_whose_flags_do_not_parse_differs_in_nothing_known() -> None:
    """A job server's command line this kernel's server parser refuses (another version's flags):
    no setting is named as differing, and nothing is printed or exits."""
    assert jobserver.differing_settings(CCExec(), ["--jobs", "--flag-of-a-later-version", "1"]) == []
