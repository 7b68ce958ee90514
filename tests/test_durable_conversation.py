"""Durable Claude jobs in host mode, in-process: the real claude CLI against the demo API, in
a job of the real job server, followed by runs of this process (the starter and attached ones).

A durable conversation asks its questions wherever a run follows the job, takes answers and
follow-ups from any of them, knows what was already answered (the job logs its input), and
ends by itself (the job server's ``stdin_idle_timeout``) when nobody follows it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cc_executor_nb as ccx
from cc_executor_nb import methods
from cc_executor_nb.claude.permissions import PermissionRequest
from cc_executor_nb.client import Client, _input_pieces
from cc_executor_nb.demo.shared import stop_demo
from cc_executor_nb.errors import ConnectionLost, LimitReached
from cc_executor_nb.events import Completed
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.loop import stop_shared_loop
from cc_executor_nb.kernel.run import Run

from .servers import start_server
from .util import assert_no_command_line_shows, eventually, scaled

REPO_ROOT = Path(__file__).resolve().parents[1]
CLAUDE = REPO_ROOT / "node_modules" / ".bin" / "claude"

pytestmark = [
    pytest.mark.claude,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not CLAUDE.exists(), reason=f"{CLAUDE} is absent: run `npm ci` in the project root"),
]


def settings(**more: Any) -> CCExec:
    """Settings for tests: no history file, a short kill grace, and ``more``."""
    config = CCExec()
    config.history_path = "none"
    config.kill_grace = 2.0
    for name, value in more.items():
        setattr(config, name, value)
    return config


def start(prompt: str, cwd: Path, **options: Any) -> Run:
    """A durable interactive Claude run against the demo API, shown nowhere."""
    return ccx.run(
        prompt, executable=str(CLAUDE), demo=True, durable=True, display=False, cwd=str(cwd),
        settings=options.pop("settings", None) or settings(), **options,
    )


def attach(run: Run, **more: Any) -> Run:
    """Another run of this process attached to ``run``'s job."""
    job_id = eventually(lambda: run.job_id, timeout=30, what="the job id")
    return ccx.attach(job_id, display=False, settings=settings(**more))


def question(run: Run, timeout: float = 60.0) -> PermissionRequest:
    """The run's first pending question, once it is asked."""
    return eventually(lambda: run.pending, timeout=timeout, what="a permission question")


def inputs(run: Run) -> list[dict[str, Any]]:
    """The job's logged input (process.input) as this run saw it."""
    return [dict(e.params) for e in run.events if e.method == methods.PROCESS_INPUT]


def test_a_durable_claude_run_is_interactive(runtime_dir: Path, tmp_path: Path) -> None:
    """A durable run in host mode asks, takes the answer, follows up in the same process, and ends on end()."""
    run = start("bash: touch durable.txt", tmp_path)
    asked = question(run)
    assert asked.tool == "Bash" and run.interactive and run.durable
    run.approve()
    run.wait(scaled(60))
    assert (tmp_path / "durable.txt").exists() and run.status == "completed" and run.alive
    session = run.session_id
    run.send("echo: still the same job")
    assert run.wait(scaled(60)).answer == "still the same job" and run.session_id == session
    run.end()
    eventually(lambda: run.done, timeout=60, what="the job's end")
    assert (run.status, run.exit_code) == ("completed", 0)


def test_an_attached_run_is_asked_the_pending_question_and_its_answer_counts(runtime_dir: Path, tmp_path: Path) -> None:
    """A run attached while a question is pending gets it after the replay; its approval is the job's answer."""
    run = start("bash: touch attached.txt", tmp_path)
    asked = question(run)
    other = attach(run)
    assert question(other).id == asked.id and other.attached and other.interactive
    other.approve()
    other.wait(scaled(60))
    assert (tmp_path / "attached.txt").exists() and other.status == "completed"
    decided = eventually(lambda: [r for r in run.permission_requests if not r.pending], timeout=30,
                         what="the starter to see the answer")
    assert [(r.id, r.status, r.decided_by) for r in decided] == [(asked.id, "allowed", "elsewhere")]
    assert [(r.status, r.decided_by) for r in other.permission_requests] == [("allowed", "code")]


def test_a_question_the_policy_answered_is_not_asked_again_on_attach(runtime_dir: Path, tmp_path: Path) -> None:
    """The starter's policy answered: an attached run shows it decided elsewhere and never asks its own policy."""
    run = start("bash: touch policy.txt", tmp_path, on_permission=lambda request: "allow")
    run.wait(scaled(60))
    assert (tmp_path / "policy.txt").exists()
    asked_here: list[PermissionRequest] = []
    other = attach(run, permission_policy=asked_here.append)
    other.wait(scaled(60))
    assert [(r.status, r.decided_by) for r in other.permission_requests] == [("allowed", "elsewhere")]
    assert other.pending is None and asked_here == [] and other.status == "completed" and other.alive


def test_a_follow_up_from_an_attached_run_reaches_every_follower(runtime_dir: Path, tmp_path: Path) -> None:
    """send() on an attached run: the same process answers, and the starter sees the turn and its answer too."""
    run = start("echo: first", tmp_path)
    run.wait(scaled(60))
    other = attach(run)
    other.wait(scaled(60))
    assert other.answer == "first"
    other.send("echo: second")
    assert other.wait(scaled(60)).answer == "second"
    eventually(lambda: run.answer == "second", timeout=30, what="the starter to follow the turn")
    assert run.session_id == other.session_id and run.alive


def test_a_run_attached_between_turns_lasted_what_its_job_did(runtime_dir: Path, tmp_path: Path) -> None:
    """An attached run's wait() returns at once between turns: its duration is the job's so far, as the
    starter's is (it was the attach's few milliseconds)."""
    run = start("echo: first", tmp_path)
    run.wait(scaled(60))
    eventually(lambda: (run.duration or 0) > scaled(1.0), what="a second of the job")
    other = attach(run)
    other.wait(scaled(60))
    assert (other.status, other.answer, other.alive) == ("completed", "first", True)
    before, attached, after = run.duration, other.duration, run.duration
    assert before is not None and attached is not None and after is not None
    assert before - scaled(0.3) <= attached <= after + scaled(0.3)


def test_a_run_attached_between_turns_has_waited_since_the_turn_ended(runtime_dir: Path, tmp_path: Path) -> None:
    """"Waiting for a follow-up for N s" of an attached run counts from the job's turn end,
    not from the attach (it read 0 s after 2 s of waiting)."""
    run = start("echo: first", tmp_path)
    run.wait(scaled(60))
    ended = run.state.turn_ended_at
    assert ended is not None
    time.sleep(2.0)
    other = attach(run)
    other.wait(scaled(60))
    waited = eventually(lambda: other.state.between_turns and other.state.turn_ended_at, what="the replayed turn's end")
    assert time.monotonic() - waited >= 2.0
    assert waited == pytest.approx(ended, abs=scaled(0.5))


def test_an_attached_run_waits_for_its_jobs_times_even_when_the_answer_comes_after_the_replay(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay can end the turn before the attach's answer (with the job's times) is read:
    wait() returns only once those times are in (it returned with the attach's 1 ms)."""
    run = start("echo: first", tmp_path)
    run.wait(scaled(60))
    eventually(lambda: (run.duration or 0) > scaled(1.0), what="a second of the job")
    answered = Client.attach

    async def late(self: Client, *args: Any, **kwargs: Any) -> Any:
        answer = await answered(self, *args, **kwargs)
        await asyncio.sleep(scaled(0.5))  # the replay is in; its answer is read later
        return answer

    monkeypatch.setattr(Client, "attach", late)
    other = attach(run)
    other.wait(scaled(60))
    attached = other.duration
    assert attached is not None and attached >= scaled(1.0) - 0.3, attached


def test_an_attached_run_of_an_ended_job_waits_for_its_end(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attached to a conversation that already ended, wait() returns with the process's end
    (exit code 0), not at the replayed end of its last turn (exit code None while the rest
    of the replay was still on its way)."""
    run = start("echo: first", tmp_path)
    run.wait(scaled(60))
    run.end()
    eventually(lambda: run.done, timeout=30, what="the job to end")
    delivered = Client._deliver

    async def late(self: Client, event: Any) -> None:
        if event.method == methods.PROCESS_COMPLETED:
            await asyncio.sleep(scaled(0.5))  # the replay's end comes a moment after its last turn's
        await delivered(self, event)

    monkeypatch.setattr(Client, "_deliver", late)
    other = attach(run)
    other.wait(scaled(60))
    assert (other.status, other.exit_code, other.answer, other.done) == ("completed", 0, "first", True)


def test_end_from_an_attached_run_ends_the_job(runtime_dir: Path, tmp_path: Path) -> None:
    """end() on an attached run closes the job's input: the CLI exits 0 and both runs end completed."""
    run = start("echo: to be ended", tmp_path)
    run.wait(scaled(60))
    other = attach(run)
    other.wait(scaled(60))
    other.end()
    for each in (other, run):
        eventually(lambda each=each: each.done, timeout=60, what="the job's end")
        assert (each.status, each.exit_code) == ("completed", 0)
    assert [(i.get("closed"), i.get("reason")) for i in inputs(run) if i.get("closed")] == [(True, "input.close")]


def test_a_conversation_nobody_follows_ends_by_itself(runtime_dir: Path, tmp_path: Path) -> None:
    """The starter gone (its loop stopped) with a question pending: after the idle timeout the job's stdin
    closes, the question is denied by the CLI and the job ends completed with nothing lost."""
    run = start("bash: touch never.txt", tmp_path, idle_timeout=scaled(2.0))
    question(run)
    job_id = run.job_id
    stop_shared_loop()
    assert run.status == "detached"
    again = eventually(lambda: _finished(job_id), timeout=120, what="the job to end by itself")
    assert (again.status, again.exit_code) == ("completed", 0)
    assert not (tmp_path / "never.txt").exists()
    closed = [i for i in inputs(again) if i.get("closed")]
    assert [i.get("reason") for i in closed] == ["stdin_idle_timeout"]
    assert [r.status for r in again.permission_requests] == ["cancelled"]


def test_attaching_with_wait_to_an_ended_conversation_returns_at_its_end(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay of an ended job ends a turn before it reaches the job's end: wait=True
    returns only at the end (it returned between the two, completed with no exit code)."""
    run = start("echo: over", tmp_path)
    run.wait(scaled(60))
    run.end()
    eventually(lambda: run.done, timeout=60, what="the job's end")
    folded = Run._on_event

    def late(self: Run, event: Any) -> None:
        if self.attached and isinstance(event, Completed):
            time.sleep(scaled(0.5))  # the replay's end is read a moment after its turn's end
        folded(self, event)

    monkeypatch.setattr(Run, "_on_event", late)
    other = ccx.attach(run.job_id or "", display=False, wait=True, settings=settings())
    assert (other.status, other.exit_code, other.done, other.answer) == ("completed", 0, True, "over")


def _finished(job_id: str | None) -> Run | None:
    assert job_id is not None
    listed = [j for j in ccx.jobs.list() if j.job_id == job_id]
    if not listed or listed[0].status == "running":
        return None
    return ccx.attach(job_id, display=False, wait=True, settings=settings())


def test_the_jobs_log_keeps_each_line_before_what_it_caused(runtime_dir: Path, tmp_path: Path) -> None:
    """process.input in a durable conversation: initialize, the prompt, the answer, each before its effect."""
    run = start("bash: touch logged.txt", tmp_path, on_permission=lambda request: "allow")
    run.wait(scaled(60))
    lines = [json.loads(i["data"]) for i in inputs(run) if i.get("data")]
    kinds = [(m["type"], m.get("request", {}).get("subtype"), m.get("response", {}).get("response", {}).get("behavior"))
             for m in lines]
    assert kinds == [("control_request", "initialize", None), ("user", None, None), ("control_response", None, "allow")]


def test_an_attached_runs_policy_answers_a_pending_question(runtime_dir: Path, tmp_path: Path) -> None:
    """A question nobody answered where the job started goes to the attaching side's policy (approve "all")."""
    run = start("bash: touch by-policy.txt", tmp_path)
    asked = question(run)
    other = attach(run, permission_policy="all")
    # Not other.wait(): a wait where nobody can answer would deny the starter's own offer of the question.
    eventually((tmp_path / "by-policy.txt").exists, timeout=60, what="the command to run")
    assert [(r.id, r.status, r.decided_by) for r in other.permission_requests] == [(asked.id, "allowed", "policy")]


def test_a_durable_run_of_a_cli_without_host_mode_says_to_run_it_one_shot(runtime_dir: Path, tmp_path: Path) -> None:
    """A CLI that rejects host mode: the durable run (no retry on its job) ends failed with a note naming
    --no-interactive; with interactive=False the same CLI completes as a durable job."""
    fake = tmp_path / "claude"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do if [ "$a" = "--input-format" ]; then echo "error: unknown option '
        "'--input-format'\" >&2; exit 1; fi; done\n"
        f'exec {CLAUDE} "$@"\n'
    )
    fake.chmod(0o755)
    run = ccx.run("echo: from an old cli", executable=str(fake), demo=True, durable=True, display=False,
                  cwd=str(tmp_path), settings=settings())
    eventually(lambda: run.done, timeout=60, what="the attempt's end")
    assert (run.status, run.exit_code) == ("failed", 1)
    assert run.conversation is not None
    (notice,) = run.conversation.view().notices
    assert "did not start in host mode" in notice and "unknown option '--input-format'" in notice
    assert "--no-interactive" in notice
    one_shot = ccx.run("echo: from an old cli", executable=str(fake), demo=True, durable=True, display=False,
                       cwd=str(tmp_path), settings=settings(), interactive=False, wait=True)
    assert one_shot.done and (one_shot.status, one_shot.answer) == ("completed", "from an old cli")


PRIVATE = "private-7f3a9c"
LONG_PROMPT = "echo: " + "long " * 40_000  # 200,006 bytes: more than one argument may hold


def test_a_durable_one_shot_prompt_is_in_no_command_line_of_its_job(runtime_dir: Path, tmp_path: Path) -> None:
    """A durable one-shot job gets its prompt on the CLI's stdin from the job server: while it runs, no
    process of the job (demo runner, CLI) shows it to ``ps`` (it was the CLI's last argument)."""
    run = start(f"story 40 words at 8 words per second, {PRIVATE}", tmp_path, interactive=False)
    try:
        assert_no_command_line_shows(lambda: run.state.pid, PRIVATE, timeout=60)
    finally:
        run.wait(scaled(90))
    assert run.status == "completed" and len(run.answer.split()) == 40, run.error


@pytest.mark.parametrize("mode", [{"interactive": False}, {"auto_resume": True}])
def test_a_durable_one_shot_job_runs_a_prompt_too_long_for_a_command_line(
    runtime_dir: Path, tmp_path: Path, mode: dict[str, bool]
) -> None:
    """200 KB (more than one argument may hold) as a durable one-shot job, plain or with auto_resume: the
    job server writes it to the CLI's stdin and it comes back whole (it was refused up front)."""
    run = start(LONG_PROMPT, tmp_path, wait=True, **mode)
    assert (run.status, run.answer) == ("completed", LONG_PROMPT.removeprefix("echo: ").rstrip()), run.error


def test_a_durable_one_shot_prompt_bigger_than_executes_message_goes_in_input_requests(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """1.2 MB as a durable one-shot job: more than execute's one frame may carry (it failed with
    "the server refused a message too big for it ... pass large data ... on stdin"), so it goes in
    input requests after the start, as host mode sends its prompts; it comes back whole."""
    prompt = "echo: " + "y" * (1200 * 1024)
    run = start(prompt, tmp_path, wait=True, interactive=False)
    assert (run.status, run.answer) == ("completed", prompt.removeprefix("echo: ")), run.error


def prompt_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: Callable[[Client], Exception]) -> Run:
    """A durable one-shot run whose 1.2 MB prompt (bigger than execute's one message, the
    server's frame limit: it goes from the kernel after the start) stops after its first
    piece with ``fault``'s exception; the run, once over."""
    send = Client.input

    async def cut_off(self: Client, data: str, **more: Any) -> dict[str, Any]:
        await send(self, _input_pieces(data)[0])
        raise fault(self)

    monkeypatch.setattr(Client, "input", cut_off)
    run = start("echo: " + "y" * (1200 * 1024), tmp_path, interactive=False)
    run.wait(scaled(60))
    return run


def its_job_is_cancelled(run: Run) -> None:
    [job] = eventually(lambda: [j for j in ccx.jobs.list(settings=settings()) if j.status != "running"],
                       timeout=30, what="the job's end")
    assert (job.job_id, job.status) == (run.job_id, "cancelled")


def test_a_durable_one_shot_job_whose_prompt_was_cut_off_is_cancelled(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection lost after the prompt's first piece failed the run ("connection lost") and left
    the job "running" for ever, its CLI waiting for the rest (a one-shot job has no idle timeout).
    The job is cancelled, and the run's error says so."""

    def lost(client: Client) -> Exception:
        client._ws.transport.abort()  # the fault under test
        return ConnectionLost("connection lost: the server went away")

    run = prompt_cut_off(tmp_path, monkeypatch, lost)
    assert run.status == "error" and "its job was cancelled" in (run.error or ""), run.error
    its_job_is_cancelled(run)


def test_a_durable_one_shot_job_whose_prompt_was_refused_midway_is_cancelled(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A piece of the prompt refused for good after the start (here an error raised past
    ``Client.input``, which itself waits out a full input queue: tests/test_big_prompt.py)
    failed the run and left the job "running" with part of its prompt, for ever (only a lost
    connection cancelled it). The job is cancelled, and the run's end says why."""

    def refused(client: Client) -> Exception:
        return LimitReached("input queue full: 8388608 bytes not yet read by the process (limit 8388608)")

    run = prompt_cut_off(tmp_path, monkeypatch, refused)
    assert run.status == "cancelled", run.error
    assert run.error == ("input queue full: 8388608 bytes not yet read by the process (limit 8388608); "
                         "its input was cut off, so its job was cancelled")
    its_job_is_cancelled(run)


def test_a_durable_one_shot_job_whose_prompt_was_still_being_sent_when_the_loop_stopped_is_cancelled(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel went away (its exit, a restart, ``%reload_ext``: the loop stops) while the
    prompt was still being sent after the start (a big one that the CLI reads slowly): the
    job stayed "running" for ever with part of its prompt, nobody attached. It is cancelled."""
    send, sending = Client.input, threading.Event()

    async def first_piece_then_waiting(self: Client, data: str, **more: Any) -> dict[str, Any]:
        await send(self, _input_pieces(data)[0])
        sending.set()
        await asyncio.Event().wait()  # the rest waits for room in the CLI's input queue
        raise AssertionError("unreachable")

    monkeypatch.setattr(Client, "input", first_piece_then_waiting)
    run = start("echo: " + "y" * (1200 * 1024), tmp_path, interactive=False)
    eventually(sending.is_set, timeout=30, what="the prompt's first piece sent")
    stop_shared_loop()
    its_job_is_cancelled(run)


def test_a_durable_one_shot_job_whose_whole_prompt_was_sent_when_the_loop_stopped_runs_it(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop stopped once the whole prompt was sent, its input not yet closed: the job's
    input is closed on the way out (not the job cancelled), and the CLI answers the prompt."""
    close, closing = Client.close_input, threading.Event()

    async def first_close_stalls(self: Client) -> dict[str, Any]:
        if not closing.is_set():
            closing.set()
            await asyncio.Event().wait()  # the kernel goes away before the answer comes
        return await close(self)

    monkeypatch.setattr(Client, "close_input", first_close_stalls)
    prompt = "echo: " + "y" * (1200 * 1024)
    run = start(prompt, tmp_path, interactive=False)
    eventually(closing.is_set, timeout=30, what="the prompt sent")
    stop_shared_loop()
    [job] = eventually(lambda: [j for j in ccx.jobs.list(settings=settings()) if j.status != "running"],
                       timeout=30, what="the job's end")
    assert (job.job_id, job.status) == (run.job_id, "completed"), job.error
    done = ccx.attach(job.job_id, display=False, settings=settings()).wait(scaled(30))
    assert done.answer == prompt.removeprefix("echo: ")


SLOW_INPUT = """
import asyncio
import sys
import cc_executor_nb
from cc_executor_nb.client import Client

send = Client.input

async def slow_input(self, data, **more):
    await asyncio.sleep(0.5)  # a slow link or a busy loop: the prompt leaves well after the job's start
    return await send(self, data, **more)

Client.input = slow_input
"""
"""A script's beginning: its client's input requests leave 0.5 s late."""

FIRE_AND_FORGET = SLOW_INPUT + """
run = cc_executor_nb.run(sys.argv[1], executable=sys.argv[2], cwd=sys.argv[3], demo=True, durable=True, display=False)
print(run.job_id)
"""


def test_a_script_that_exits_right_after_a_durable_claude_run_leaves_its_prompt_with_the_job(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """run(durable=True) of a prompt returns once its job has the prompt, not only the job: a
    script that ended at once left a job "running" with no prompt, its first turn never asked."""
    done = subprocess.run([sys.executable, "-c", FIRE_AND_FORGET, "what is 2+2", str(CLAUDE), str(tmp_path)],
                          capture_output=True, text=True, timeout=scaled(60), check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    again = ccx.attach(done.stdout.strip(), display=False, settings=settings())
    assert again.wait(scaled(60)).answer == "4", again.status
    again.end().wait(scaled(30))


FIRE_AND_FORGET_ONE_SHOT = SLOW_INPUT + """
prompt = "echo: " + "y" * (1200 * 1024)  # more than execute's one message: sent after the start
run = cc_executor_nb.run(prompt, executable=sys.argv[1], cwd=sys.argv[2], demo=True, durable=True,
                         interactive=False, display=False)
print(run.job_id)
"""


def test_a_script_that_exits_right_after_a_durable_one_shot_run_of_a_long_prompt_leaves_it_running(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """A one-shot prompt too big for execute goes in input requests after the start: run(durable=True)
    returned once the job was taken, and the script's exit cancelled the job half-fed (its
    loop's stop), so the prompt never ran. It returns once the whole prompt is with the job."""
    done = subprocess.run([sys.executable, "-c", FIRE_AND_FORGET_ONE_SHOT, str(CLAUDE), str(tmp_path)],
                          capture_output=True, text=True, timeout=scaled(60), check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    again = ccx.attach(done.stdout.strip(), display=False, settings=settings())
    again.wait(scaled(60))
    assert (again.status, len(again.answer or "")) == ("completed", 1200 * 1024), again.error


STARTER_DIES = """
import os
import sys
import cc_executor_nb
from cc_executor_nb.client import Client

async def dies(self, data, **more):
    os._exit(0)  # the starter dies between the job's start and its first input (initialize, the prompt)

Client.input = dies
cc_executor_nb.run(sys.argv[1], executable=sys.argv[2], cwd=sys.argv[3], demo=True, durable=True, display=False)
"""


def test_an_attached_job_that_never_got_its_prompt_says_so_and_takes_one(runtime_dir: Path, tmp_path: Path) -> None:
    """A durable Claude job whose starter died before its prompt was sent: an attached run's
    wait() returned at once, "running" with answer '' and not a word why. The run now says the
    job has had no prompt and how to go on; run.send() then runs the turn, run.end() ends it."""
    done = subprocess.run([sys.executable, "-c", STARTER_DIES, "what is 2+2", str(CLAUDE), str(tmp_path)],
                          capture_output=True, text=True, timeout=scaled(60), check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    (job,) = ccx.jobs.list(settings=settings())
    assert job.status == "running"
    again = ccx.attach(job.job_id, display=False, settings=settings())
    again.wait(scaled(60))  # no turn runs: it returns at once, as for a job between turns
    notice = ("This job has had no prompt: its starter stopped before sending it (or is still sending it). "
              "run.send(prompt) sends one; run.end() ends the job; left so, it ends after 10 min 00 s (idle_timeout).")
    assert (again.status, again.answer, again.conversation.view().notices) == ("running", "", (notice,))
    assert [e.params["message"] for e in again.events if e.method == methods.CONVERSATION_NOTICE] == [notice]
    again.send("what is 2+2")
    assert again.wait(scaled(60)).answer == "4", again.status
    again.end().wait(scaled(30))
    assert (again.status, again.exit_code) == ("completed", 0)


SLOW_STARTER = """
import asyncio
import os
import sys
import cc_executor_nb
from cc_executor_nb.client import Client

sent = Client.input
marks = sys.argv[4]

async def slowly(self, data, **more):
    if '"type":"user"' not in data:
        return await sent(self, data, **more)
    # The prompt's line: its first half, then (once the test opens the gate) the rest; or dies halfway.
    half = len(data) // 2
    await sent(self, data[:half])
    open(os.path.join(marks, "half"), "w").close()
    while not os.path.exists(os.path.join(marks, "gate")):
        await asyncio.sleep(0.05)
    if sys.argv[5] == "dies":
        os._exit(0)
    return await sent(self, data[half:], **more)

Client.input = slowly
run = cc_executor_nb.run(sys.argv[1], executable=sys.argv[2], cwd=sys.argv[3], demo=True, durable=True, display=False)
print("answer:", run.wait(60).answer)
"""


def _slow_starter(tmp_path: Path, then: str) -> tuple[subprocess.Popen[str], Run]:
    """A starter that has sent half of its prompt's line; a run attached to its job (replay read)."""
    starter = subprocess.Popen([sys.executable, "-c", SLOW_STARTER, "what is 2+2", str(CLAUDE), str(tmp_path),
                                str(tmp_path), then], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=os.environ.copy())
    eventually(lambda: (tmp_path / "half").exists() or starter.poll() is not None, timeout=60, what="half a prompt")
    assert starter.poll() is None, starter.communicate()
    (job,) = ccx.jobs.list(settings=settings())
    again = ccx.attach(job.job_id, display=False, settings=settings())
    eventually(lambda: again.conversation is not None and again.conversation._caught_up, what="the replay read")
    return starter, again


def test_an_attached_job_whose_starter_is_still_sending_its_prompt_does_not_say_it_had_none(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """A kernel attaches while the job's starter is halfway through its prompt's line: the run said
    the job had had no prompt (and to send one) just before the prompt came, and its wait() returned
    at once. Half a line in the job's input is a prompt on its way: no notice, and wait() waits for
    the turn it begins."""
    starter, again = _slow_starter(tmp_path, "goes on")
    try:
        assert again.conversation.view().notices == ()
    finally:
        (tmp_path / "gate").touch()
    assert again.wait(scaled(60)).answer == "4" and again.conversation.view().notices == ()
    out, err = starter.communicate(timeout=scaled(60))
    assert "answer: 4" in out, err


def test_an_attached_job_whose_starter_died_halfway_through_its_prompt_says_so(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """The starter dies halfway through its prompt's line: once half a line has lain there unchanged
    for NO_PROMPT_WAIT seconds, the attached run's wait() returns and it says the job has had no prompt."""
    starter, again = _slow_starter(tmp_path, "dies")
    (tmp_path / "gate").touch()
    starter.communicate(timeout=scaled(60))
    again.wait(scaled(60))
    assert (again.status, again.answer) == ("running", "")
    (notice,) = again.conversation.view().notices
    assert notice.startswith("This job has had no prompt: its starter stopped before sending it")
    again.end().wait(scaled(30))


DURABLE_BATCH = """
import sys
import cc_executor_nb
batch = cc_executor_nb.map("what is {item}", ["2+2", "3+3"], executable=sys.argv[1], cwd=sys.argv[2], demo=True,
                           durable=True, quiet=True)
print("jobs:", " ".join(str(run.job_id) for run in batch))
"""


def _durable_batch_script(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", DURABLE_BATCH, str(CLAUDE), str(tmp_path)],
                          capture_output=True, text=True, timeout=scaled(60), check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    return done


def test_a_durable_batch_from_a_script_that_ended_ends_its_jobs_after_their_first_result(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """A batch takes no follow-up: its jobs close their input after their first result themselves
    (the job's stdin_close_on_summary), so their CLIs exit; they waited the idle timeout (600 s)
    for the script's loop to close it."""
    done = _durable_batch_script(tmp_path)
    job_ids = done.stdout.split("jobs:")[1].splitlines()[0].split()

    def statuses() -> list[str]:
        listed = {job.job_id: job.status for job in ccx.jobs.list()}
        return [listed[job_id] for job_id in job_ids]

    eventually(lambda: statuses() == ["completed", "completed"], timeout=30, what="the batch's jobs to complete")
    for job_id, answer in zip(job_ids, ("4", "6"), strict=True):
        assert ccx.attach(job_id, display=False, settings=settings()).wait(scaled(30)).answer == answer


def test_a_durable_batch_from_a_script_that_ended_says_its_jobs_go_on(runtime_dir: Path, tmp_path: Path) -> None:
    """The script's last line says the batch's runs went on as jobs; it said '2 done (2 other) · cancelled'."""
    done = _durable_batch_script(tmp_path)
    last = done.stdout.splitlines()[-1]
    assert last.startswith("[batch] 2/2 · 2 done (2 detached)"), done.stdout
    assert last.endswith("detached: its 2 jobs go on in the job server"), done.stdout


def test_a_question_answered_after_the_job_list_was_read_is_not_asked_on_attach(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attached from a job list read before the question was asked and answered (a jobs table
    a second old): the replay runs to the attach reply's last seq, so the question is history
    and the attaching kernel's policy is never asked."""
    from cc_executor_nb.kernel import api
    from cc_executor_nb.kernel.jobs import _target, list_jobs

    run = start("bash: touch stale.txt", tmp_path, on_permission=lambda request: "allow")
    job_id = eventually(lambda: run.job_id, timeout=30, what="the job id")
    run.wait(scaled(60))
    assert (tmp_path / "stale.txt").exists()
    asked_at = next(e.seq for e in run.events
                    if e.method == methods.PROCESS_OUTPUT and '"can_use_tool"' in e.params["data"])
    assert asked_at is not None
    # The job's entry as a list read just before the question shows it: its log then ended
    # before the question. (A list read right after the start was that only if it came
    # before the CLI asked: under load it came after, at seq 16 for a question at 13.)
    listed = next(job for job in list_jobs(settings=settings()) if job.job_id == job_id)
    assert listed.status == "running" and listed.wire["last_seq"] > asked_at
    stale = {**listed.wire, "last_seq": asked_at - 1}
    # Each frame is read on a loop turn of its own (as over a slow link), so the attach
    # reply is taken before its replay is read. When the whole replay came in one read, it
    # was all read before the reply was taken, and a run that ended its replay at the
    # list's stale seq (not the reply's) passed as well.
    dispatch = Client._dispatch

    async def one_frame_a_turn(self: Client, frame: str | bytes, binary: bool = False) -> None:
        await dispatch(self, frame, binary)
        await asyncio.sleep(0)

    monkeypatch.setattr(Client, "_dispatch", one_frame_a_turn)
    asked_here: list[PermissionRequest] = []
    other_settings = settings(permission_policy=asked_here.append)
    other = api.follow_job(stale, _target(other_settings, None, None), settings=other_settings, display=False)
    other.wait(scaled(60))
    assert [(r.status, r.decided_by) for r in other.permission_requests] == [("allowed", "elsewhere")]
    assert other.pending is None and asked_here == [] and other.status == "completed" and other.alive
    # The question was read as history (as news it would carry "policy" and no "replay"):
    # the policy is called on a worker thread, so asked_here alone can be read too early.
    questions = [e.params for e in other.events if e.method == methods.CONVERSATION_QUESTION]
    assert questions and all(q.get("replay") is True and "policy" not in q for q in questions)
    other.end()
    eventually(lambda: run.done, timeout=60, what="the job's end")


def _listed(job_id: str | None) -> tuple[str, int | None, str | None]:
    """The job's status, exit code and error as the job server lists them."""
    info = next(j for j in ccx.jobs.list() if j.job_id == job_id)
    return info.status, info.exit_code, info.error


def test_a_job_ended_after_an_interrupted_turn_is_listed_completed(runtime_dir: Path, tmp_path: Path) -> None:
    """Interrupted, then ended: the job server lists the job as the run reads it, completed with the
    CLI's exit 1 and no error (it listed it failed, "exited with code 1")."""
    run = start("write a 5000 word story at 200 words per second", tmp_path)
    eventually(lambda: len(run.text.split()) >= 20, timeout=60, what="the story to stream")
    run.interrupt()
    run.wait(scaled(30))
    assert run.status == "cancelled" and run.alive
    run.end()
    eventually(lambda: run.done, timeout=60, what="the process to exit")
    assert (run.status, run.exit_code, run.error) == ("completed", 1, None)
    assert _listed(run.job_id) == ("completed", 1, None)


def test_a_job_nobody_follows_ended_after_an_interrupted_turn_is_listed_completed(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """Interrupted, then left (the job server's idle timeout closes its input): listed completed, as a
    run attached afterwards reads it (it was listed failed)."""
    run = start("write a 5000 word story at 200 words per second", tmp_path, idle_timeout=scaled(2.0))
    eventually(lambda: len(run.text.split()) >= 20, timeout=60, what="the story to stream")
    run.interrupt()
    run.wait(scaled(30))
    job_id = run.job_id
    stop_shared_loop()
    again = eventually(lambda: _finished(job_id), timeout=120, what="the job to end by itself")
    assert (again.status, again.exit_code) == ("completed", 1)
    assert _listed(job_id) == ("completed", 1, None)



def test_a_job_whose_timeout_passed_between_turns_is_listed_as_the_run_reads_it(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """The run's timeout passed while the conversation waited for a follow-up, its answer whole:
    the job server lists the job completed with no error, as the run reads it (it listed timeout,
    "timed out after N s", while the run said completed)."""
    run = start("echo: still here", tmp_path, timeout=scaled(8))
    eventually(lambda: run.done, timeout=scaled(60), what="the timeout to end the process")
    assert (run.status, run.error, run.answer) == ("completed", None, "still here")
    assert _listed(run.job_id) == ("completed", run.exit_code, None)


def test_a_durable_demo_session_is_resumed_by_a_later_demo_run(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--demo --resume ID of a durable demo job's session finds it: the job's runner kept the
    sessions in a temporary config, removed when the job ended ("No conversation found")."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    stop_demo()  # this process's demo backend, if an earlier test started it, has another config
    first = start("echo: kept by the job", tmp_path)
    assert first.wait(scaled(60)).answer == "kept by the job"
    session = first.session_id
    first.end()
    eventually(lambda: first.done, timeout=60, what="the job's end")
    later = ccx.run("echo: found again", executable=str(CLAUDE), demo=True, display=False, cwd=str(tmp_path),
                    resume=session, settings=settings())
    later.wait(scaled(60))
    stop_demo()  # its config is this test's
    assert (later.status, later.session_id, later.answer) == ("completed", session, "found again"), later.error


def _turn_ends(run: Run) -> list[tuple[int, str]]:
    """The turns the run saw end, live (not replayed): ``(turn, status)`` in order."""
    return [(e.params["turn"], e.params["status"]) for e in run.events
            if e.method == methods.CONVERSATION_TURN and e.params.get("status") != "running"
            and not e.params.get("replay")]


def _results(run: Run) -> list[str]:
    """The ``result`` texts of the job's stdout as the run saw them, in order."""
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return [line.get("result", "") for line in lines if line.get("type") == "result"]


def at_once(*sends: tuple[Run, str]) -> None:
    """Each ``(run, prompt)`` sent in one go on the runs' loop, nothing read in between: no run has
    seen the job's log echo another's follow-up (nor its own) when the next one is sent."""
    first = sends[0][0]
    loop = first._kernel_loop
    assert loop is not None

    async def send_all() -> None:
        for run, prompt in sends:
            run.send(prompt)

    loop.call(send_all(), timeout=scaled(30))


def test_follow_ups_sent_at_once_from_two_runs_each_get_their_own_turn(runtime_dir: Path, tmp_path: Path) -> None:
    """Two runs on one job send a follow-up at the same moment after a turn ended: each is a turn of
    its own with its own result, in the order the server took them, and neither run hangs in a turn
    (the second reached the CLI during the first's tool call and was taken into that turn, with no
    result: both runs showed turn 3 running for good)."""
    run = start("echo: first", tmp_path, on_permission=lambda request: "allow")
    run.wait(scaled(60))
    other = attach(run, permission_policy=lambda request: "allow")
    other.wait(scaled(60))
    at_once((run, "bash: sleep 1"), (other, "echo: from B"))  # neither kernel saw the other's before its own
    for each in (run, other):
        eventually(lambda each=each: len(_results(each)) == 3 and each.state.between_turns, timeout=60,
                   what="three results, between turns")
    logged = "".join(str(given.get("data")) for given in inputs(run))
    answers = {"bash: sleep 1": "I ran `sleep 1`", "echo: from B": "from B"}
    taken = sorted(answers, key=logged.index)  # the order the server took them in (A's, nearly always)
    last = {"bash: sleep 1": "I ran `sleep 1`. Output: (none)", "echo: from B": "from B"}[taken[1]]
    assert _results(run) == _results(other) and _results(run)[2] == last
    assert _turn_ends(run)[-2:] == _turn_ends(other)[-2:] == [(2, "completed"), (3, "completed")]
    assert run.answer == other.answer == last
    turns = [part for prompt in taken for part in (prompt, answers[prompt])]
    for each in (run, other):  # each turn under its own prompt, in the job's order (B's prompt over A's turn, once)
        assert _in_order(each.transcript(), turns), each.transcript()


def _in_order(text: str, parts: list[str]) -> bool:
    """Whether ``parts`` occur in ``text`` one after the other."""
    at = 0
    for part in parts:
        found = text.find(part, at)
        if found < 0:
            return False
        at = found + len(part)
    return True


# A job server of an earlier version: its input takes no turn (and ignores one given).
NO_TURNS_SERVER = [sys.executable, "-c", (
    "import sys\nfrom cc_executor_nb import methods\nfrom cc_executor_nb.server import handler\n"
    "handler.CAPABILITIES.remove(methods.INPUT_TURN)\n"
    "from cc_executor_nb.server.main import main\nsys.exit(main())"
)]


def test_a_follow_up_to_a_job_server_that_holds_no_turns_begins_its_turn_at_once(tmp_path: Path) -> None:
    """A job server without input.turn (an earlier version, still running) writes a follow-up at once:
    the run begins its turn when it sends it, as before, and gets its answer (it waits for no
    process.input that tells it the server wrote the follow-up)."""
    token = "no-turns-token-0123456789abcdef"
    server = start_server("--token", token, "--jobs-dir", str(tmp_path / "jobs"), launcher=NO_TURNS_SERVER)
    try:
        run = start("echo: first", tmp_path, server=server.url, token=token)
        run.wait(scaled(60))
        run.send("echo: second")
        assert run.claude.turns == 2  # begun on sending, before the server's echo of it
        assert run.wait(scaled(60)).answer == "second" and run.status == "completed"
        run.end()
        eventually(lambda: run.done, timeout=60, what="the job's end")
    finally:
        server.finish()


def test_end_right_after_a_follow_up_closes_the_input_after_its_result(runtime_dir: Path, tmp_path: Path) -> None:
    """send() then end() at once: the job's input is closed only after the follow-up's result, as when
    its turn runs (the follow-up waits for the job server to write it, and the close waited for
    nothing: it came right after the follow-up, where a CLI may lose the turn's output)."""
    run = start("echo: first", tmp_path)
    run.wait(scaled(60))
    run.send("echo: last words")
    run.end()
    eventually(lambda: run.done, timeout=60, what="the job's end")
    order = [("closed" if e.params.get("closed") else "input") if e.method == methods.PROCESS_INPUT else "result"
             for e in run.events if e.method == methods.PROCESS_INPUT
             or (e.method == methods.PROCESS_OUTPUT and '"type":"result"' in str(e.params.get("data")))]
    assert order[-3:] == ["input", "result", "closed"] and run.answer == "last words"
    assert (run.status, run.exit_code) == ("completed", 0)


def _notices(run: Run) -> list[str]:
    return [e.params["message"] for e in run.events if e.method == methods.CONVERSATION_NOTICE]


def test_a_follow_up_the_job_server_held_when_the_timeout_cut_the_turn_is_said_not_sent(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """Two follow-ups sent at once: the job server writes the first and holds the second for the next
    turn; the run's timeout cuts the first's turn, the job's end drops the held one, and the run says
    so, naming its start (it was dropped without a word: the run read timeout as if nothing else were owed)."""
    run = start("echo: first", tmp_path, timeout=scaled(8))
    run.wait(scaled(60))
    at_once((run, "think for 30 seconds, then answer"), (run, "echo: the held follow-up\nwith a second line"))
    eventually(lambda: run.done, timeout=60, what="the job's end")
    logged = "".join(str(given.get("data")) for given in inputs(run))
    assert "think for 30" in logged and "the held follow-up" not in logged
    (notice,) = _notices(run)
    assert "not sent" in notice and "'echo: the held follow-up with a second line'" in notice, notice
    assert "timeout" in notice and run.status == "timeout", notice
    assert run.conversation.view().notices == (notice,)


def test_a_follow_up_queued_during_a_turn_the_timeout_cut_is_said_not_sent(runtime_dir: Path, tmp_path: Path) -> None:
    """A follow-up sent during a turn waits for its end; the run's timeout cuts the turn: the run
    says the follow-up was not sent, naming its start (it was dropped without a word)."""
    run = start("think for 30 seconds, then answer", tmp_path, timeout=scaled(4))
    eventually(lambda: run.state.status == "running" and run.claude.turns == 1, timeout=30, what="the first turn")
    run.send("echo: never answered")
    eventually(lambda: run.done, timeout=60, what="the job's end")
    assert run.status == "timeout"
    (notice,) = [words for words in _notices(run) if "not sent" in words]
    assert "'echo: never answered'" in notice and "timeout" in notice, notice


def test_a_follow_up_queued_during_a_turn_the_run_cancelled_is_said_not_sent(runtime_dir: Path, tmp_path: Path) -> None:
    """cancel() during a turn drops the follow-up that waited for the turn's end: the run says it was
    not sent, naming its start (it was dropped without a word)."""
    run = start("think for 30 seconds, then answer", tmp_path)
    eventually(lambda: run.state.status == "running" and run.claude.turns == 1, timeout=30, what="the first turn")
    run.send("echo: cancelled before its turn")
    run.cancel()
    eventually(lambda: run.done, timeout=60, what="the job's end")
    (notice,) = _notices(run)
    assert notice.startswith("Follow-up not sent: 'echo: cancelled before its turn' (the run was cancelled"), notice
    assert "cancelled before its turn" not in "".join(str(given.get("data")) for given in inputs(run))


def test_a_follow_up_the_job_server_has_not_written_yet_reads_running(runtime_dir: Path, tmp_path: Path) -> None:
    """send() on a durable run: the follow-up waits for the job server to write it (its turn begins
    when the job's log shows it), and meanwhile the run reads running, not done with its turns, as
    when a turn begins at once (it read the last turn's completed, between turns: a loop on
    `run.status == "running"` after send() ended at once)."""
    run = start("echo: first", tmp_path)
    run.wait(scaled(60))
    loop = run._kernel_loop
    assert loop is not None

    async def send_and_look() -> tuple[str, bool, int]:
        run.send("echo: second")  # nothing read between this and the look: the server's echo is still to come
        return run.status, run.state.between_turns, run.claude.turns

    assert loop.call(send_and_look(), timeout=scaled(30)) == ("running", False, 1)
    assert run.wait(scaled(60)).answer == "second" and run.status == "completed" and run.claude.turns == 2


def test_a_follow_up_queued_during_a_turn_whose_input_was_closed_elsewhere_is_said_not_sent(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """send() during a turn, then the job's input closed by another client: the follow-up that waited
    for the turn's end will never go, and the run says so, naming its start (dropped without a word)."""
    from cc_executor_nb.client import connect
    from cc_executor_nb.server.runtime import RUNTIME_FILE_NAME, read_runtime_file

    run = start("echo: first", tmp_path)
    run.wait(scaled(60))
    run.send("think for 20 seconds, then answer")
    eventually(lambda: run.claude.turns == 2 and run.state.status == "running", timeout=30, what="the second turn")
    run.send("echo: after the close")
    server = read_runtime_file(runtime_dir / RUNTIME_FILE_NAME)
    assert server is not None and run.job_id is not None

    async def close_elsewhere(job_id: str) -> None:
        client = await connect(server.url, server.token)
        try:
            await client.attach(job_id)
            await client.close_input()
        finally:
            await client.close()

    asyncio.run(close_elsewhere(run.job_id))
    notice = eventually(lambda: [words for words in _notices(run) if "not sent" in words], timeout=30,
                        what="the notice")[0]
    assert notice.startswith("Follow-up not sent: 'echo: after the close' (the job's input was closed (input.close)")
    run.cancel()
