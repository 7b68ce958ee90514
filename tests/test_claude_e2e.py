"""The real claude CLI against the demo API, through the real server and client."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cc_executor_nb.claude.options import ClaudeOptions, claude_argv, claude_environment
from cc_executor_nb.demo.selftest import CASES, Observation, count_haikus, observe_run
from cc_executor_nb.demo.shared import demo_backend, stop_demo
from cc_executor_nb.demo.texts import huge_text
from cc_executor_nb.server.handler import EnhancedWebSocketHandler

from .conftest import TOKEN
from .servers import start_server
from .util import scaled

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_CLAUDE = REPO_ROOT / "node_modules" / ".bin" / "claude"

pytestmark = [
    pytest.mark.claude,
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        not LOCAL_CLAUDE.exists(),
        reason="node_modules/.bin/claude is absent: run `npm ci` in the project root",
    ),
]


@pytest.fixture(scope="module", autouse=True)
def shared_demo() -> Any:
    """The shared demo backend, stopped when the module is done."""
    yield
    stop_demo()


async def run_prompt(
    server: EnhancedWebSocketHandler,
    cwd: Path,
    prompt: str,
    *,
    heartbeat: float = 1.0,
    inactivity: float = 10.0,
    **options: Any,
) -> Observation:
    """Run one prompt through the server with the demo environment."""
    claude = ClaudeOptions(executable=str(LOCAL_CLAUDE), demo=True, **options)
    return await observe_run(
        server.url,
        TOKEN,
        claude_argv(prompt, claude),
        env=claude_environment(claude),
        cwd=str(cwd),
        heartbeat_interval=heartbeat,
        inactivity_threshold=inactivity,
        wait=scaled(45.0),
    )


def assert_success(obs: Observation) -> None:
    """Completed with exit 0, a result event, no error."""
    assert obs.failure is None, (obs.failure, obs.stderr[-2000:])
    assert obs.claude.result is not None
    assert obs.claude.is_error is False


@pytest.mark.parametrize(
    ("prompt", "answer"),
    [
        ("echo: E2E says hello", "E2E says hello"),
        ("What is (17*23)+4? Reply with only the number.", "395"),
    ],
)
async def test_short_answer_is_exact(
    server: EnhancedWebSocketHandler, tmp_path: Path, prompt: str, answer: str
) -> None:
    """Echo and arithmetic come back exactly, with a successful result."""
    obs = await run_prompt(server, tmp_path, prompt)
    assert_success(obs)
    assert obs.claude.answer == answer


async def test_haikus_are_counted(server: EnhancedWebSocketHandler, tmp_path: Path) -> None:
    """Three haikus arrive as three three-line stanzas."""
    obs = await run_prompt(server, tmp_path, "write 3 haikus")
    assert_success(obs)
    assert count_haikus(obs.claude.answer) == 3


async def test_story_streams_incrementally(
    server: EnhancedWebSocketHandler, tmp_path: Path
) -> None:
    """A 5000-word story keeps its exact length and arrives in many pieces over time."""
    obs = await run_prompt(server, tmp_path, "write a 5000 word story at 2000 words per second")
    assert_success(obs)
    assert len(obs.claude.answer.split()) == 5000
    assert len(obs.claude.text.split()) == 5000
    pieces = obs.text_outputs
    done = obs.completed
    assert done is not None
    finished_at = next(t.at for t in obs.events if t.event is done)
    assert len(pieces) >= 100
    assert pieces[-1].at - pieces[0].at >= 1.5
    # Half the text messages were in well before the end: not one burst at the close.
    assert pieces[len(pieces) // 2].at <= finished_at - 0.8


async def test_thinking_silence_reports_status_and_completes(
    server: EnhancedWebSocketHandler, tmp_path: Path
) -> None:
    """A 6 s silence past a 2 s threshold yields heartbeats and process.status, then success."""
    obs = await run_prompt(server, tmp_path, "think for 6 seconds", heartbeat=1.0, inactivity=2.0)
    assert_success(obs)
    assert obs.claude.answer == "Done thinking. The answer is 42."
    statuses = [t.event.params for t in obs.events if t.event.method == "process.status"]
    assert statuses and all(s["inactive_seconds"] >= 2.0 for s in statuses)
    assert obs.heartbeats >= 4


async def test_huge_single_line_arrives_whole(
    server: EnhancedWebSocketHandler, tmp_path: Path
) -> None:
    """A 2 MB reply on one stdout line arrives whole, followed by its result line."""
    obs = await run_prompt(server, tmp_path, "huge reply of 2000000 bytes")
    assert_success(obs)
    expected = huge_text(2_000_000)
    lines = obs.stdout.splitlines()
    assert any(expected in line for line in lines if len(line) > 2_000_000)
    assert json.loads(lines[-1])["type"] == "result"
    assert obs.claude.text == expected and obs.claude.answer == expected


async def test_overloaded_api_becomes_an_error_result(
    server: EnhancedWebSocketHandler, tmp_path: Path
) -> None:
    """A 529 after bounded retries is an error result with its status, not a hang."""
    obs = await run_prompt(server, tmp_path, "error 529", max_retries=1)
    done = obs.completed
    assert done is not None and (done.status, done.exit_code) == ("failed", 1)
    run = obs.claude
    assert run.result is not None
    assert (run.is_error, run.api_error_status) == (True, 529)
    assert [retry.error_status for retry in run.retries] == [529]


async def test_hostile_prompt_reaches_the_cli_literally(
    server: EnhancedWebSocketHandler, tmp_path: Path
) -> None:
    """Shell syntax, quotes and a leading `--` are sent as text and never executed."""
    prompt = "-- $(touch x) and `touch x` with 'single' and \"double\" quotes; touch x"
    obs = await run_prompt(server, tmp_path, prompt)
    assert_success(obs)
    started = next(t.event for t in obs.events if t.event.method == "process.started")
    assert started.params["argv"][-2:] == ["--", prompt]
    assert prompt in [record.prompt for record in demo_backend().requests]
    assert not (tmp_path / "x").exists() and not (REPO_ROOT / "x").exists()


def test_selftest_passes_offline() -> None:
    """`python -m cc_executor_nb.demo.selftest --all --demo` exits 0 with PASS for every case."""
    completed = subprocess.run(
        [sys.executable, "-m", "cc_executor_nb.demo.selftest", "--all", "--demo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(55),
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    for case in CASES:
        assert re.search(
            rf"^\| {re.escape(case.name)}\s+\| PASS ", completed.stdout, re.MULTILINE
        ), case.name
    assert "5 passed, 0 failed" in completed.stdout


def test_a_selftest_with_an_unset_token_variable_is_refused_up_front() -> None:
    """--token-env NAME with NAME unset exits 2 saying so, as the terminal client does (it connected
    without a token and failed each case with a refused token)."""
    env = {name: value for name, value in os.environ.items() if name != "CCX_UNSET_TOKEN"}
    completed = subprocess.run(
        [sys.executable, "-m", "cc_executor_nb.selftest", "--test", "Math Question", "--demo",
         "--server", "ws://127.0.0.1:9/ws", "--token-env", "CCX_UNSET_TOKEN"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=scaled(55), check=False,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert completed.stderr.strip() == (
        "selftest: --token-env CCX_UNSET_TOKEN: the environment variable CCX_UNSET_TOKEN is not set")


@pytest.mark.parametrize(("given", "hint"), [
    ([], "give the server's token in the environment variable CC_EXECUTOR_TOKEN, which is not set, "
         "or name another with --token-env"),
    # (the failure ended at "HTTP 401 (...)", where the rest says where the token came from)
    (["--token-env", "CCX_BAD_TOKEN"], "give the server's token in the environment variable CCX_BAD_TOKEN, "
                                       "or name another with --token-env"),
])
def test_a_selftest_case_that_cannot_connect_prints_no_ok_checks(given: list[str], hint: str) -> None:
    """Against a server that refuses the token, a case shows its one failure: it printed FAIL "cannot
    connect" and then "ok no error" for the same case, a check of output that never came. The failure
    says where the token came from, as the terminal client does."""
    server = start_server("--token", "the-right-token")
    env = {name: value for name, value in os.environ.items() if name != "CC_EXECUTOR_TOKEN"}
    env["CCX_BAD_TOKEN"] = "a-wrong-token"
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "cc_executor_nb.selftest", "--test", "Math Question", "--demo",
             "--server", server.url, *given],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=scaled(55), check=False,
        )
    finally:
        server.finish()
    assert completed.returncode == 1, completed.stdout + completed.stderr
    checks = [line for line in completed.stdout.splitlines() if line.startswith("  ")]
    assert len(checks) == 1 and checks[0].startswith(f"  FAIL  cannot connect to {server.url}: "), completed.stdout
    assert "HTTP 401" in checks[0] and "0 passed, 1 failed" in completed.stdout
    # The URL once (it read "cannot connect to URL: URL refused the connection: HTTP 401 ...").
    assert checks[0].count(server.url) == 1 and ": the server refused the connection: HTTP 401" in checks[0]
    assert checks[0].endswith(f": {hint}") and "a-wrong-token" not in completed.stdout, completed.stdout


def test_a_selftest_against_a_closed_port_says_connection_refused() -> None:
    """Nothing listens: the failure reads as the terminal client's (``Connection refused``); it
    read "[Errno 111] Connect call failed ('127.0.0.1', PORT)", the address a second time."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{probe.getsockname()[1]}/ws"  # bound, never listening: refused
        completed = subprocess.run(
            [sys.executable, "-m", "cc_executor_nb.selftest", "--test", "Math Question", "--demo", "--server", url],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=scaled(55), check=False,
        )
    checks = [line for line in completed.stdout.splitlines() if line.startswith("  ")]
    assert checks == [f"  FAIL  cannot connect to {url}: Connection refused"], completed.stdout + completed.stderr


def test_the_selftest_against_a_server_names_the_executable_for_that_servers_path(tmp_path, monkeypatch) -> None:
    """With --server the self-test sends "claude" (or --claude as given) for the server to find, as %ccexec -s
    and the terminal client do, and needs no claude here (it sent this machine's absolute path, e.g.
    /home/me/proj/node_modules/.bin/claude, which a server on another machine does not have)."""
    from cc_executor_nb.demo.selftest import _options, build_parser

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no claude on this machine
    options = _options(build_parser().parse_args(["--demo", "--server", "ws://gpu:8003/ws"]))
    assert claude_argv("hi", options)[0] == "claude"
    given = _options(build_parser().parse_args(["--demo", "--server", "ws://gpu:8003/ws", "--claude", "/opt/c/claude"]))
    assert claude_argv("hi", given)[0] == "/opt/c/claude"
