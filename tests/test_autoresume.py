"""Auto-resume after a usage limit: the decision, the supervisor process, and the real CLI against the demo."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cc_executor_nb
from cc_executor_nb.claude.autoresume import (
    SESSION_PLACEHOLDER,
    Chain,
    ResumeSpec,
    autoresume_argv,
    decide,
)
from cc_executor_nb.claude.command import ResumeSettings, claude_command
from cc_executor_nb.claude.options import ClaudeOptions
from cc_executor_nb.claude.streamjson import ClaudeRun
from cc_executor_nb.demo.shared import demo_backend, stop_demo
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.loop import stop_shared_loop

from .conftest import FAKE_CLI
from .servers import start_server
from .util import scaled

pytestmark = pytest.mark.timeout(60)

SETTINGS = CCExec(history_path="none", output_mode="text")

# A stand-in CLI: the first call is refused by a limit resetting in RESET seconds; a call
# with --resume answers; "die" kills itself with SIGTERM.
FAKE = r"""
import json, sys, time, os, signal
args = sys.argv[1:]
def out(**e): print(json.dumps(e), flush=True)
if args[0] == "die":
    out(type="system", subtype="init", session_id="s-9")
    os.kill(os.getpid(), signal.SIGTERM)
if "--resume" in args:
    session = args[args.index("--resume") + 1]
    out(type="system", subtype="init", session_id=session)
    out(type="assistant", message={"id": "m2", "content": [{"type": "text", "text": "resumed: " + args[-1]}]})
    out(type="result", subtype="success", is_error=False, result="done", session_id=session, total_cost_usd=0.5)
    sys.exit(0)
reset = float(args[1])
out(type="system", subtype="init", session_id="s-1")
out(type="rate_limit_event", rate_limit_info={"status": "rejected", "resetsAt": time.time() + reset,
    "rateLimitType": "five_hour"})
out(type="result", subtype="success", is_error=True, api_error_status=429, session_id="s-1",
    result="You've hit your 5-hour limit")
sys.exit(1)
"""


def spec(reset: float, **limits: float) -> ResumeSpec:
    fake = [sys.executable, "-c", FAKE]
    resume = [*fake, "--resume", SESSION_PLACEHOLDER, "--", "go on"]
    return ResumeSpec([*fake, "first", str(reset)], resume, resume.index(SESSION_PLACEHOLDER), **limits)  # type: ignore[arg-type]


def lines(data: bytes) -> list[dict[str, object]]:
    return [json.loads(text) for text in data.decode().splitlines()]


# The decision


def refused(reset: float | None, session: str | None = "s-1") -> ClaudeRun:
    run = ClaudeRun()
    if session:
        run.feed(json.dumps({"type": "system", "subtype": "init", "session_id": session}) + "\n")
    info = {"status": "rejected", "rateLimitType": "five_hour", **({"resetsAt": reset} if reset else {})}
    run.feed(json.dumps({"type": "rate_limit_event", "rate_limit_info": info}) + "\n")
    return run


def test_decide_waits_for_the_reset_plus_a_margin() -> None:
    """A limit resetting in 10 s: resume at the reset plus the margin."""
    decision = decide(refused(1010.0), spec(0, margin=1.0), 0, 1000.0)
    assert decision.resume and decision.until == 1011.0 and "resume 1 of 5" in decision.message


@pytest.mark.parametrize(("run", "resumes", "limits", "why"), [
    (ClaudeRun(), 0, {}, ""),
    (refused(1010.0, session=None), 0, {}, "nothing to resume"),
    (refused(1010.0), 5, {}, "resumed 5 times"),
    (refused(1000.0 + 7 * 3600), 0, {}, "later than auto_resume_max_wait"),
])
def test_decide_stops(run: ClaudeRun, resumes: int, limits: dict[str, float], why: str) -> None:
    """No limit, no session, too many resumes or a reset too far away: no resume, and why."""
    decision = decide(run, spec(0, **limits), resumes, 1000.0)
    assert not decision.resume and why in decision.message


def test_decide_waits_the_fallback_when_no_reset_is_given() -> None:
    """A limit without reset time is waited fallback_wait seconds."""
    decision = decide(refused(None), spec(0, fallback_wait=30.0), 0, 1000.0)
    assert decision.until == 1030.0 and "no reset time" in decision.message


# The supervisor


def test_chain_passes_output_through_waits_and_resumes_the_session() -> None:
    """Refused, then a wait line, a resume line and the resumed CLI (with --resume s-1 and the prompt), exit 0."""
    out = io.BytesIO()
    started = time.monotonic()
    code = Chain(spec(1.0, margin=0.2), out).run()
    waited = time.monotonic() - started
    events = lines(out.getvalue())
    kinds = [(e["type"], e.get("subtype")) for e in events]
    assert code == 0 and waited >= 1.0
    assert kinds == [
        ("system", "init"), ("rate_limit_event", None), ("result", "success"),
        ("cc_executor_nb", "auto_resume_wait"), ("cc_executor_nb", "auto_resume"),
        ("system", "init"), ("assistant", None), ("result", "success"),
    ]
    assert events[4]["session_id"] == "s-1" and events[5]["session_id"] == "s-1"
    assert events[6]["message"] == {"id": "m2", "content": [{"type": "text", "text": "resumed: go on"}]}


def test_chain_keeps_all_of_a_cli_that_writes_without_waiting() -> None:
    """A CLI that writes 300 KB to a non-blocking stdout and exits at once, as the older Node CLIs do
    (the fake CLI's ``hasty``): all of it passes through (the 64 KiB pipe refused the rest, so the
    200 KB answer of an auto-resumed run on 2.0.77 or 1.0.128 came cut and the run failed as incomplete)."""
    hasty = [sys.executable, str(FAKE_CLI), "hasty", "300000", "0"]
    out = io.BytesIO()
    assert Chain(ResumeSpec(hasty, hasty, 0), out).run() == 0
    data = out.getvalue()
    assert data.endswith(b"END\n") and len(data) == 300_004, len(data)


def test_chain_gives_up_on_a_reset_beyond_the_wait_limit() -> None:
    """A reset later than max_wait: the CLI's status (1) and a line saying why; no resume."""
    out = io.BytesIO()
    assert Chain(spec(600.0, max_wait=60.0), out).run() == 1
    last = lines(out.getvalue())[-1]
    assert last["subtype"] == "auto_resume_stopped" and "later than" in str(last["message"])


def test_the_supervisor_dies_of_the_signal_that_killed_the_cli() -> None:
    """A CLI killed by SIGTERM is not resumed; the supervisor process ends by SIGTERM too."""
    fake = [sys.executable, "-c", FAKE, "die"]
    argv = autoresume_argv(fake, [*fake, SESSION_PLACEHOLDER])
    done = subprocess.run(argv, capture_output=True, timeout=scaled(30), check=False)
    assert done.returncode == -signal.SIGTERM
    assert lines(done.stdout)[0]["session_id"] == "s-9"


# A stand-in CLI that reads its prompt on stdin: the first call, one line, and is refused by a
# limit resetting at once; a call with --resume reads stdin to its end and says what it got.
READER = r"""
import json, sys, time
args = sys.argv[1:]
def out(**e): print(json.dumps(e), flush=True)
if "--resume" in args:
    read = sys.stdin.read()
    out(type="system", subtype="init", session_id="s-1")
    out(type="result", subtype="success", is_error=False, result="resumed, stdin " + repr(read), session_id="s-1")
    sys.exit(0)
prompt = sys.stdin.readline().strip()
out(type="system", subtype="init", session_id="s-1")
out(type="rate_limit_event", rate_limit_info={"status": "rejected", "resetsAt": time.time() + 0.2,
    "rateLimitType": "five_hour"})
out(type="result", subtype="success", is_error=True, api_error_status=429, session_id="s-1", result="no: " + prompt)
sys.exit(1)
"""


def test_the_first_cli_reads_the_prompt_on_stdin_and_a_resume_reads_nothing() -> None:
    """The supervisor's stdin (the prompt) is the first CLI's; a resume reads /dev/null, so it never
    waits on an input left open (inheriting it, the resume read on for ever)."""
    fake = [sys.executable, "-c", READER]
    argv = autoresume_argv(fake, [*fake, "--resume", SESSION_PLACEHOLDER, "--", "go on"], margin=0.0)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"the prompt\n")
        proc.stdin.flush()  # and left open
        assert proc.wait(scaled(30)) == 0
        results = [e["result"] for e in lines(proc.stdout.read()) if e["type"] == "result"]
        assert results == ["no: the prompt", "resumed, stdin ''"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def test_a_malformed_spec_is_a_usage_error() -> None:
    """Exit 2 with a message for a spec that is not one."""
    done = subprocess.run([sys.executable, "-m", "cc_executor_nb.claude.autoresume", "{}"], capture_output=True,
                          text=True, timeout=scaled(30), check=False)
    assert done.returncode == 2 and "not a resume spec" in done.stderr


def test_auto_resume_wraps_the_cli_and_resumes_with_the_configured_prompt(tmp_path: Path) -> None:
    """claude_command with auto_resume: the supervisor runs the CLI (its prompt on stdin); the resume line
    has --resume and the resume prompt."""
    exe = tmp_path / "claude"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    options = ClaudeOptions(executable=str(exe), auto_resume=True, model="sonnet")
    argv, env = claude_command(options, resume=ResumeSettings("Go on.", 2, 60.0))
    assert argv[1:3] == ["-m", "cc_executor_nb.claude.autoresume"] and env is None
    loaded = ResumeSpec.from_json(argv[3])
    # The first CLI reads the prompt on stdin: no "--", no prompt on its command line.
    assert "-p" in loaded.argv and "--" not in loaded.argv and (loaded.max_resumes, loaded.max_wait) == (2, 60.0)
    assert loaded.resume_command("S")[-4:] == ["--resume", "S", "--", "Go on."]
    assert "--model" in loaded.resume_argv


# The real CLI against the demo backend


@pytest.fixture
def demo() -> Iterator[None]:
    """A fresh shared demo backend (its limit windows are new) and loop; both stopped afterwards."""
    stop_demo()
    yield
    stop_shared_loop()
    stop_demo()


@pytest.mark.claude
def test_demo_usage_limit_resumes_after_3_s_with_the_same_session(demo: None) -> None:
    """"usage limit reset in 3 s" with auto_resume: refused, counted down, resumed once, answered, one session."""
    run = cc_executor_nb.run("usage limit reset in 3 s, then what is 2+2", demo=True, auto_resume=True,
                             display=False, settings=SETTINGS)
    run.wait(scaled(45))
    view = run.claude
    print(f"\nauto-resumed run: {run.duration:.1f} s, {view.resumes} resume, session {run.session_id}")
    assert (run.status, run.exit_code, run.text, view.resumes) == ("completed", 0, "4", 1)
    sessions = {json.loads(text).get("session_id") for text in run.stdout.splitlines() if '"session_id"' in text}
    assert sessions == {run.session_id}
    refusal = [r for r in demo_backend().requests if r.status == 429]
    assert len(refusal) == 1 and refusal[0].scenario == "usage_limit"
    assert view.usage_limits[0].kind == "five_hour" and view.usage_limits[0].source == "rate_limit_event"
    assert run.duration >= 3.0


@pytest.mark.claude
def test_demo_usage_limit_without_auto_resume_ends_with_its_reset(demo: None) -> None:
    """Without auto_resume the run fails at once, its limit named with a reset about 3 s ahead."""
    before = time.time()
    run = cc_executor_nb.run("usage limit reset in 3 s", demo=True, display=False, settings=SETTINGS)
    run.wait(scaled(30))
    after = time.time()
    limit = run.claude.usage_limit
    assert run.status == "failed" and run.is_error and limit is not None and limit.kind == "five_hour"
    # The backend refused between before and after, naming the whole second 3 to 4 s later
    # (the test measured from its own clock after the run's end: a run that took 3 s to end
    # after the refusal under load found the reset already past).
    assert limit.resets_at is not None and before + 3 <= limit.resets_at < after + 4
    assert "hit your 5-hour limit" in run.answer


@pytest.mark.claude
def test_demo_rate_limit_is_retried_by_the_cli_after_retry_after(demo: None) -> None:
    """"rate limit reset in 2 s": the CLI retries after about 2 s (api_retry 429) and then answers."""
    run = cc_executor_nb.run("rate limit reset in 2 s, then write 1 haiku", demo=True, display=False,
                             settings=SETTINGS)
    run.wait(scaled(30))
    retry = run.retries[0]
    assert run.status == "completed" and "Haiku 1" in run.text
    assert retry.error_status == 429 and retry.delay_seconds is not None and retry.delay_seconds >= 1.5
    assert run.claude.usage_limit is None and run.claude.usage_limits[0].source == "api_retry"


@pytest.mark.claude
def test_max_budget_usd_stops_the_cli(demo: None) -> None:
    """--max-budget-usd below a turn's cost: the CLI stops with error_max_budget_usd, said plainly."""
    run = cc_executor_nb.run("use a tool please", demo=True, max_budget_usd=0.001, display=False, settings=SETTINGS)
    run.wait(scaled(30))
    assert run.status == "failed" and run.is_error
    assert run.result["subtype"] == "error_max_budget_usd"
    assert "budget" in run.answer.lower()
    assert run.claude.cost_estimate_reason == "custom endpoint"


@pytest.mark.claude
def test_a_remote_server_runs_the_supervisor_with_its_own_python(
    demo: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto_resume on a remote server: the supervisor runs with that server's interpreter, not the
    ``python3`` first on its PATH, which a server installed in a venv does not have this package in
    (the run failed at once, exit 1, ``No module named cc_executor_nb``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrong = bin_dir / "python3"
    wrong.write_text("#!/bin/sh\necho 'the python3 of PATH ran' >&2\nexit 97\n")
    wrong.chmod(0o755)
    claude_bin = Path("node_modules/.bin").resolve()
    work = tmp_path / "work"  # not the checkout: `python -m` there would find the package in it
    work.mkdir()
    monkeypatch.chdir(work)
    path = f"{bin_dir}:{claude_bin}:{os.environ['PATH']}"
    server = start_server("--token", "remote-token", env={"PATH": path})
    try:
        run = cc_executor_nb.run("what is 2+2", demo=True, auto_resume=True, server=server.url,
                                 token="remote-token", display=False, settings=SETTINGS)
        run.wait(scaled(45))
        assert (run.status, run.exit_code, run.text) == ("completed", 0, "4"), (run.error, run.stderr)
        assert run.state.argv[:3] == [sys.executable, "-m", "cc_executor_nb.claude.autoresume"]
    finally:
        server.finish()
