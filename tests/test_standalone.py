"""The standalone server and the terminal client, as separate processes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cc_executor_nb.client import connect
from cc_executor_nb.events import Completed, Output
from cc_executor_nb.server.main import _resolve_token, parse_args

from .conftest import collect, fake, group_alive, output_of
from .servers import SERVER, PeakRss, ServerProcess, start_server
from .util import CTRL_C_AS_THE_PROTOCOL_LOADS, eventually_async, scaled


@pytest.fixture
def token_server() -> Iterator[ServerProcess]:
    """A standalone server with a known token."""
    server = start_server("--token", "standalone-token", "--kill-grace", "1")
    yield server
    server.finish()


def test_generated_token_goes_to_a_private_file_never_the_log() -> None:
    """Without --token, a random token goes to a 0600 file whose path is printed, removed at shutdown."""
    server = start_server("--log-level", "DEBUG", env={"CC_EXECUTOR_TOKEN": ""})
    path = re.search(r"token written to (\S+)", server.output()).group(1)
    token = Path(path).read_text().strip()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(token) >= 32

    async def use() -> None:
        async with await connect(server.url, token) as client:
            await client.execute(argv=["echo", "hi"])
            async for event in client.events():
                if isinstance(event, Completed):
                    break

    asyncio.run(use())
    assert server.finish(signal.SIGTERM) == 0
    assert "[PROCESS COMPLETED]" in server.output()
    assert token not in server.output()
    assert not Path(path).exists(), "a generated token file is removed at shutdown"


def test_a_token_generated_into_the_users_token_file_is_kept_for_the_next_start(tmp_path: Path) -> None:
    """--token-file naming a missing file: the generated token goes there (0600) and stays
    after shutdown, so the next start reads the same token (a temp token file is removed)."""
    path = tmp_path / "token"
    first = start_server("--token-file", str(path), env={"CC_EXECUTOR_TOKEN": ""})
    token = path.read_text().strip()
    assert f"token written to {path}" in first.output() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.finish(signal.SIGTERM) == 0 and path.read_text().strip() == token
    second = start_server("--token-file", str(path), env={"CC_EXECUTOR_TOKEN": ""})
    try:
        assert "token written to" not in second.output() and path.read_text().strip() == token

        async def connected() -> str | None:
            async with await connect(second.url, token, auto_reconnect=False) as client:
                return client.session_id

        assert asyncio.run(connected())
    finally:
        second.finish()


@pytest.mark.parametrize("kind", ["a directory", "a missing folder", "not text"])
def test_a_token_file_that_cannot_be_used_is_a_usage_error(tmp_path: Path, kind: str) -> None:
    """A --token-file that is a directory, in a missing folder or not UTF-8: one line, exit 2 (were tracebacks)."""
    path = {"a directory": tmp_path, "a missing folder": tmp_path / "no" / "token", "not text": tmp_path / "bin"}[kind]
    if kind == "not text":
        path.write_bytes(b"\xff\xfe")
    done = subprocess.run([sys.executable, "-m", "cc_executor_nb.server", "--port", "0", "--token-file", str(path)],
                          check=False, capture_output=True, text=True, timeout=scaled(30),
                          env={**os.environ, "CC_EXECUTOR_TOKEN": ""})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.fullmatch(rf"error: cannot (read|write) the token file {re.escape(str(path))}: [^\n]+\n", done.stderr)


def test_a_token_file_that_is_a_symbolic_link_is_never_written_through(tmp_path: Path) -> None:
    """--token-file naming a symbolic link (one planted in a shared folder): refused in one
    line, exit 2; the file it points at is untouched (the token was written into it)."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("")
    link = tmp_path / "token.txt"
    link.symlink_to(target)
    argv = [sys.executable, "-m", "cc_executor_nb.server", "--port", "0", "--token-file", str(link)]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=scaled(30),
                          env={**os.environ, "CC_EXECUTOR_TOKEN": ""})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: cannot write the token file {link}: "), done.stderr
    assert target.read_text() == ""


def test_a_token_given_is_used_and_never_written_to_a_missing_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--token-file PATH`` (missing) and ``CC_EXECUTOR_TOKEN`` or ``--token``: that token, nothing written."""
    path = tmp_path / "token"
    monkeypatch.setenv("CC_EXECUTOR_TOKEN", " env-token ")
    assert _resolve_token(parse_args(["--token-file", str(path)])) == ("env-token", None)
    assert _resolve_token(parse_args(["--token-file", str(path), "--token", "flag-token"])) == ("flag-token", None)
    assert not path.exists()
    monkeypatch.delenv("CC_EXECUTOR_TOKEN")
    token, written = _resolve_token(parse_args(["--token-file", str(path)]))
    assert written == str(path) and path.read_text() == token + "\n"


def test_a_token_file_others_can_read_is_used_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --token-file of mode 0644 (or not ours) was used silently: anyone on the machine could
    read the token, or plant a file in a shared folder to choose it. It is still used (no
    setup breaks), with a warning naming the file and its mode; a 0600 file gets none."""
    monkeypatch.delenv("CC_EXECUTOR_TOKEN", raising=False)
    path = tmp_path / "token"
    path.write_text("shared-token\n")
    path.chmod(0o644)
    assert _resolve_token(parse_args(["--token-file", str(path)])) == ("shared-token", None)
    assert capsys.readouterr().err == (
        f"warning: the token file {path} is not private (mode 0644, owner uid {os.getuid()}): "
        "others may read or set the token; chmod 600 it\n"
    )
    path.chmod(0o600)
    assert _resolve_token(parse_args(["--token-file", str(path)])) == ("shared-token", None)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("argv", "message"), [
    (["--port", "70000"], "argument --port: port must be 0..65535, not 70000"),
    (["--detach"], "--detach needs --jobs or --runtime-file (readiness is read from the runtime file)"),
    (["stop", "--timeout", "soon"], "argument --timeout: not a number of seconds: 'soon'"),
    (["--allowed-origins", "notaurl"], "argument --allowed-origins: 'notaurl' is not an origin (scheme://host[:port], "
                                       "as a browser sends it: e.g. http://localhost:8888)"),
    (["--allowed-origins", "http://localhost:8888,http://localhost:8888/lab"],
     "argument --allowed-origins: 'http://localhost:8888/lab' is not an origin: it has a path "
     "(scheme://host[:port], as a browser sends it: e.g. http://localhost:8888)"),
    (["--allowed-origins", "*"], "argument --allowed-origins: '*' is not an origin: every origin is refused unless "
                                 "listed, there is no wildcard (scheme://host[:port], as a browser sends it: "
                                 "e.g. http://localhost:8888)"),
])
def test_a_bad_flag_is_one_line(argv: list[str], message: str) -> None:
    """A bad flag prints one line, exit 2 (argparse printed its 36-line usage block before it)."""
    done = subprocess.run([sys.executable, "-m", "cc_executor_nb.server", *argv],
                          check=False, capture_output=True, text=True, timeout=scaled(30))
    assert (done.returncode, done.stderr) == (2, f"error: {message} (see --help)\n")


def test_a_server_flag_cut_short_is_refused_naming_the_full_one(capsys: pytest.CaptureFixture[str]) -> None:
    """``--po 0`` bound port 0 as ``--port 0`` (argparse takes a prefix): refused, naming --port."""
    with pytest.raises(SystemExit) as info:
        parse_args(["--po", "0"])
    assert (info.value.code, capsys.readouterr().err) == (
        2, "error: --po is not an option; options are written in full: --port (see --help)\n")


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-sessions", "-1"], "--max-sessions must be an integer of at least 1, not -1"),
    (["--handshake-timeout", "0"], "--handshake-timeout must be at least 0.1 s, not 0.0"),
])
def test_a_value_the_settings_refuse_names_the_flag_as_typed(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--max-sessions -1`` said "max_sessions must be ...", the settings' field rather than the
    flag the user typed: the one line, exit 2, now starts with the flag."""
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"error: {message} (see --help)\n"


def test_a_replay_limit_of_0_is_refused_saying_why(capsys: pytest.CaptureFixture[str]) -> None:
    """``--replay-limit 0`` was accepted, and its log kept only the newest notification: a resume
    after a drop got client.output_gap for the rest of what was in flight. One line, exit 2."""
    with pytest.raises(SystemExit) as exited:
        parse_args(["--replay-limit", "0"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "error: --replay-limit must be more than 0: 0 keeps only the newest notification, so a resume loses "
        "the output in flight (--detach-ttl 0 turns resume off) (see --help)\n"
    )


def test_a_debug_log_shows_no_secret_a_request_carried() -> None:
    """At DEBUG, websockets logs every frame: an execute's env value (an API key) and the output are not in it."""
    server = start_server("--log-level", "DEBUG", "--token", "standalone-token")

    async def use() -> str:
        async with await connect(server.url, "standalone-token") as client:
            await client.execute(argv=["printenv", "API_KEY"], env={"API_KEY": "sk-ant-debug-secret"})
            return output_of(await collect(client))

    assert asyncio.run(use()) == "sk-ant-debug-secret\n"
    assert server.finish(signal.SIGTERM) == 0
    assert "< TEXT [redacted]" in server.output() and "sk-ant-debug-secret" not in server.output()


CLIENT_AT_DEBUG = """
import asyncio, logging, os, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from cc_executor_nb.client import connect

async def main():
    async with await connect(sys.argv[1], os.environ["CC_EXECUTOR_TOKEN"]) as client:
        await client.execute(argv=["echo", "hi"], env={"API_KEY": "sk-ant-client-secret"})
        async for event in client.events():
            if event.method == "process.completed":
                return

asyncio.run(main())
"""


def test_a_client_at_debug_logs_neither_its_token_nor_what_it_sends(token_server) -> None:
    """A notebook with DEBUG logging on: websockets' client lines carry no Bearer token and no env value."""
    done = subprocess.run([sys.executable, "-c", CLIENT_AT_DEBUG, token_server.url], capture_output=True, text=True,
                          timeout=scaled(60), check=False, env={**os.environ, "CC_EXECUTOR_TOKEN": "standalone-token"})
    assert done.returncode == 0, done.stderr
    assert "> Authorization: [redacted]" in done.stderr and "> TEXT [redacted]" in done.stderr
    assert "standalone-token" not in done.stderr and "sk-ant-client-secret" not in done.stderr


def test_token_from_environment(tmp_path) -> None:
    """CC_EXECUTOR_TOKEN is used when --token is absent."""
    server = start_server(env={"CC_EXECUTOR_TOKEN": "env-token"})
    try:
        async def use() -> str:
            async with await connect(server.url, "env-token") as client:
                return client.session_id

        assert asyncio.run(use())
    finally:
        server.finish()


def test_non_loopback_without_token_refuses_to_start() -> None:
    """--no-token on a non-loopback address exits with an error."""
    proc = subprocess.run([*SERVER, "--host", "0.0.0.0", "--port", "0", "--no-token"],
                          capture_output=True, text=True, timeout=scaled(30), check=False)
    assert proc.returncode == 2 and "without a token" in proc.stderr


def test_log_tags_and_sigterm_with_three_runs(token_server) -> None:
    """SIGTERM with three runs kills every group and exits 0; log lines carry the tags."""

    async def start_runs() -> list[int]:
        pgids = []
        for _ in range(3):
            client = await connect(token_server.url, "standalone-token")
            pgids.append((await client.execute(argv=fake("stubborn", "1")))["pgid"])
        await eventually_async(lambda: all(len(group_alive(p)) == 2 for p in pgids), what="3 runs, a grandchild each")
        return pgids

    async def main() -> list[int]:
        pgids = await start_runs()
        assert await asyncio.to_thread(token_server.finish, signal.SIGTERM) == 0
        return pgids

    pgids = asyncio.run(main())
    assert all(not group_alive(p) for p in pgids)
    log = token_server.output()
    assert "[ENHANCED]" in log and "standalone-token" not in log


def test_hundred_megabytes_with_a_slow_reader_arrive_exactly(token_server, tmp_path) -> None:
    """100 MB through server and client: sha256 equal, server memory bounded while the client stalls."""
    size = 100 * 1024 * 1024
    hash_file = tmp_path / "sha"
    async def consume() -> tuple[str, int, float]:
        digest, received, stalls = hashlib.sha256(), 0, 0
        started = time.monotonic()
        async with await connect(token_server.url, "standalone-token", max_events=64) as client:
            await client.execute(argv=fake("flood", str(size), str(hash_file)))
            async for event in client.events():
                if isinstance(event, Output):
                    assert event.stream == "stdout"
                    data = event.data.encode()
                    digest.update(data)
                    received += len(data)
                    if stalls < 2 and received > (stalls + 1) * 20 * 1024 * 1024:
                        stalls += 1
                        await asyncio.sleep(2.0)  # a reader that stops for seconds
                elif isinstance(event, Completed):
                    assert event.params["status"] == "completed"
                    break
        return digest.hexdigest(), received, time.monotonic() - started

    with PeakRss(token_server.proc.pid) as rss:
        sha, received, seconds = asyncio.run(consume())
    print(f"\n100 MB run: {received / 2**20:.1f} MiB in {seconds:.1f} s "
          f"({received / 2**20 / seconds:.1f} MiB/s incl. 4 s of stalls); server {rss.describe()}")
    assert received == size
    assert sha == hash_file.read_text()
    assert rss.growth_mib < 64


def test_terminal_client_streams_and_exits_with_the_child_code() -> None:
    """``python -m cc_executor_nb run -- CMD`` prints the output and exits with its code."""
    proc = subprocess.run(
        [sys.executable, "-m", "cc_executor_nb", "run", "--", *fake("exit", "7")],
        capture_output=True, text=True, timeout=scaled(60), check=False,
    )
    assert proc.returncode == 7 and proc.stdout == "bye\n"
    assert "[failed] exit 7" in proc.stderr  # the one text renderer (kernel.textview)


def test_terminal_client_starts_a_note_on_a_new_line_where_the_output_stopped_mid_line() -> None:
    """On one terminal (stdout and stderr the same place) the end line follows a newline; the output is exact."""
    argv = [sys.executable, "-m", "cc_executor_nb", "run", "--", *fake("halves", "no newline", "0", " at the end")]
    shared = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=scaled(60), check=False)
    assert "no newline at the end\n[completed] exit 0" in shared.stdout
    apart = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(60), check=False)
    assert apart.stdout == "no newline at the end"  # nothing added to the program's own output
    assert apart.stderr.startswith("[started]") and "\n\n" not in apart.stderr


def test_terminal_client_shows_heartbeats_and_inactivity_on_stderr(token_server) -> None:
    """Against a server, heartbeats and inactivity appear on stderr, output on stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "cc_executor_nb", "run", "--server", token_server.url, "--heartbeat", "0.2",
         "--inactivity", "0.4", "--", *fake("silence", "1.5")],
        capture_output=True, text=True, timeout=scaled(60), check=False,
        env={**os.environ, "CC_EXECUTOR_TOKEN": "standalone-token"},
    )
    assert proc.returncode == 0 and proc.stdout == "before\nafter\n"
    assert "[heartbeat] alive" in proc.stderr and "[status] no output for" in proc.stderr


def test_terminal_client_without_heartbeat_or_inactivity_keeps_the_servers_defaults() -> None:
    """No ``--heartbeat``/``--inactivity``: the run beats at the server's WEBSOCKET_HEARTBEAT_INTERVAL and reports
    silence after its --inactivity-threshold (the client sent its own 20 s and 30 s)."""
    server = start_server("--token", "standalone-token", "--inactivity-threshold", "0.4",
                          env={"WEBSOCKET_HEARTBEAT_INTERVAL": "0.3"})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cc_executor_nb", "run", "--server", server.url, "--", *fake("silence", "1.5")],
            capture_output=True, text=True, timeout=scaled(60), check=False,
            env={**os.environ, "CC_EXECUTOR_TOKEN": "standalone-token"},
        )
    finally:
        server.finish()
    assert proc.returncode == 0 and proc.stdout == "before\nafter\n"
    assert proc.stderr.count("[heartbeat] alive") >= 2, proc.stderr
    assert "[status] no output for" in proc.stderr, proc.stderr


def test_terminal_client_reports_signal_deaths_as_128_plus_n() -> None:
    """A child killed by SIGKILL makes the terminal client exit 137."""
    proc = subprocess.run([sys.executable, "-m", "cc_executor_nb", "run", "--", *fake("signal", "9")],
                          capture_output=True, text=True, timeout=scaled(60), check=False)
    assert proc.returncode == 137


def test_allowed_origins_as_a_browser_sends_them_are_kept() -> None:
    """Origins in the form a browser's Origin header has (scheme://host[:port]) are accepted as given."""
    args = parse_args(["--allowed-origins", "http://localhost:8888, https://hub.example.org,http://[::1]:8888"])
    assert args.settings.allowed_origins == ("http://localhost:8888", "https://hub.example.org", "http://[::1]:8888")


# Runs ``python -m cc_executor_nb.server`` with the words after ``-c SCRIPT``; raises SIGINT
# as the server starts to load the modules of its protocol, then goes on with Python work in
# that import, and says at exit whether that work ended and the server's module loaded.
CTRL_C_WHILE_THE_SERVER_LOADS = CTRL_C_AS_THE_PROTOCOL_LOADS + """
atexit.register(lambda: print("loaded" if "cc_executor_nb.server.main" in sys.modules else "not loaded"))
runpy.run_module("cc_executor_nb.server", run_name="__main__", alter_sys=True)
"""

# The same with SIGINT raised once the modules are loaded, as the server starts to listen.
CTRL_C_WHILE_THE_SERVER_STARTS = """
import asyncio, runpy, signal
from cc_executor_nb.server.handler import EnhancedWebSocketHandler

start = EnhancedWebSocketHandler.start

async def start_after_a_ctrl_c(self, *args, **kwargs):
    signal.raise_signal(signal.SIGINT)
    await asyncio.sleep(0.2)
    print("starting went on", flush=True)
    return await start(self, *args, **kwargs)

EnhancedWebSocketHandler.start = start_after_a_ctrl_c
runpy.run_module("cc_executor_nb.server", run_name="__main__", alter_sys=True)
"""


def run_script(script: str, *words: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "CC_EXECUTOR_TOKEN": ""}
    return subprocess.run([sys.executable, "-c", script, *words], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=scaled(60), check=False)


@pytest.mark.parametrize("words", [["--port", "0"], ["--jobs"]], ids=["server", "jobs"])
def test_a_ctrl_c_while_the_server_loads_stops_it_once_started_as_any_ctrl_c(tmp_path: Path,
                                                                            words: list[str]) -> None:
    """A Ctrl-C while the server's modules load is held until they are loaded (raised inside
    orjson's initialisation it could crash it with SIGSEGV), then stops the server as soon as
    it listens, as a later Ctrl-C does: exit 0, its ``stopped`` line, no traceback."""
    done = run_script(CTRL_C_WHILE_THE_SERVER_LOADS, *words, tmp_path=tmp_path)
    assert (done.returncode, done.stdout.startswith("loading went on\n"), done.stdout.endswith("loaded\n")) == (
        0, True, True), done.stderr
    assert "listening on ws://" in done.stdout and "Traceback" not in done.stderr
    assert done.stderr.rstrip().endswith("x [ENHANCED] stopped")


def test_a_ctrl_c_while_the_server_starts_stops_it_once_started_as_any_ctrl_c(tmp_path: Path) -> None:
    """A Ctrl-C after the modules loaded but before the server's loop took SIGINT over (while
    it binds) is held too: the server starts, then stops as at a later Ctrl-C (exit 0)."""
    done = run_script(CTRL_C_WHILE_THE_SERVER_STARTS, "--port", "0", tmp_path=tmp_path)
    assert (done.returncode, done.stdout.startswith("starting went on\n"), "Traceback" in done.stderr) == (
        0, True, False), done.stderr
    assert "listening on ws://" in done.stdout and done.stderr.rstrip().endswith("x [ENHANCED] stopped")


def test_a_ctrl_c_while_stop_loads_ends_it_before_it_acts(tmp_path: Path) -> None:
    """``stop`` given a Ctrl-C while its modules load does nothing and says so in one line (130)."""
    done = run_script(CTRL_C_WHILE_THE_SERVER_LOADS, "stop", "--runtime-file", str(tmp_path / "none.json"),
                      tmp_path=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (
        130, "loading went on\nloaded\n", "[cancelled] by Ctrl-C before the command started\n")
