"""Durable jobs in real kernels: they outlive a restart, and any kernel can attach to them."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cc_executor_nb import methods
from cc_executor_nb.demo.texts import THINK_ANSWER
from cc_executor_nb.server.runtime import RUNTIME_FILE_NAME, read_runtime_file, stop_job_server

from .kernel_utils import KernelHarness, ccexec, fake_command
from .util import gone, scaled

pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.timeout(240)]

TICKS = "".join(f"tick {i}\n" for i in range(200))
SHA = "__import__('hashlib').sha256({}.stdout.encode()).hexdigest()"


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private Jupyter runtime directory (never the user's); its job server is stopped afterwards."""
    directory = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(directory))
    yield directory
    stop_job_server(directory / RUNTIME_FILE_NAME, timeout=scaled(60))


@pytest.fixture
def kernels(tmp_path: Path, runtime_dir: Path) -> Iterator[Callable[[str], KernelHarness]]:
    """Start kernels for notebooks of the given names, sharing the private runtime directory."""
    started: list[KernelHarness] = []

    def start(notebook: str) -> KernelHarness:
        env = {"JUPYTER_RUNTIME_DIR": str(runtime_dir), "JPY_SESSION_NAME": str(tmp_path / notebook)}
        kernel = KernelHarness.start(tmp_path, env=env)
        started.append(kernel)
        load(kernel)
        return kernel

    yield start
    for kernel in started:
        kernel.shutdown()


def load(kernel: KernelHarness) -> None:
    kernel.ok("%load_ext cc_executor_nb\nimport cc_executor_nb\n%config CCExec.history_path = 'none'")


def job_id_of(kernel: KernelHarness, name: str) -> str:
    kernel.wait_until(f"{name}.job_id is not None", timeout=30)
    return str(kernel.value(f"{name}.job_id"))


def test_a_durable_run_survives_a_kernel_restart_and_attach_replays_it_exactly(kernels) -> None:
    """A 20 s durable -c run, the kernel restarted after 5 s: `--attach last` gets every byte (sha256) and the end."""
    kernel = kernels("train.ipynb")
    kernel.ok(ccexec(fake_command("ticker", "200", "0.1"), "--durable", "-o", "job"))
    job_id = job_id_of(kernel, "job")
    pid = kernel.value("job.state.pid")
    kernel.wait_until("job.duration is not None and job.duration >= 5", timeout=30)
    kernel.restart()
    assert not gone(pid), "the job died with the kernel"
    load(kernel)
    kernel.ok("%ccexec --attach last -o again")
    kernel.wait_until("again.done", timeout=60)
    assert kernel.value(SHA.format("again")) == hashlib.sha256(TICKS.encode()).hexdigest()
    assert kernel.value("(again.status, again.exit_code, again.attached, again.job_id)") == (
        "completed", 0, True, job_id,
    )
    seqs = kernel.value("[e.seq for e in again.events if e.seq is not None]")
    assert seqs == list(range(1, len(seqs) + 1)), "the attached run saw the job's numbering, whole"


def test_two_kernels_attach_to_one_running_job_and_see_the_same_output(kernels, runtime_dir) -> None:
    """Kernel B finds kernel A's job server, attaches to A's running job; both get the same notifications."""
    first = kernels("a.ipynb")
    first.ok(ccexec(fake_command("ticker", "40", "0.1"), "--durable", "--quiet", "-o", "job"))
    job_id = job_id_of(first, "job")
    second = kernels("b.ipynb")
    second.ok(f"seen = cc_executor_nb.attach({job_id!r}, quiet=True)")
    first.ok(f"seen = cc_executor_nb.attach({job_id[:8]!r}, quiet=True)")
    for kernel in (first, second):
        kernel.wait_until("seen.done", timeout=40)
    numbered = "[(e.method, e.seq, dict(e.params)) for e in seen.events if e.seq is not None]"
    assert first.value(numbered) == second.value(numbered)
    assert first.value("seen.stdout") == second.value("seen.stdout") == first.value("job.stdout")
    assert first.value("seen.stdout") == "".join(f"tick {i}\n" for i in range(40))
    server = read_runtime_file(runtime_dir / RUNTIME_FILE_NAME)
    assert server is not None
    pid = "cc_executor_nb.jobs.server().pid"
    assert first.value(pid) == second.value(pid) == server.pid
    assert second.value("seen.attached") and not first.value("job.attached")


def test_the_kernels_job_table_says_how_many_follow_each_job(kernels) -> None:
    """A kernel's job table (its HTML and its text) has an "attached" column: 1 for the job
    this kernel's durable run follows."""
    kernel = kernels("a.ipynb")
    kernel.ok(ccexec(fake_command("ticker", "600", "0.1"), "--durable", "--quiet", "-o", "job"))
    job_id_of(kernel, "job")
    kernel.ok("table = cc_executor_nb.jobs(live=False)")
    page = kernel.value("table._repr_mimebundle_()['text/html']")  # live=False: plain HTML, no widget
    assert re.search(r"<th [^>]*>attached</th><th [^>]*>label</th>", page)
    assert re.search(r"<td [^>]*>1</td><td [^>]*><span title=", page)
    text = kernel.value("repr(table)").splitlines()
    assert text[1][text[0].index("attached"):].split()[0] == "1"
    kernel.ok("job.cancel()")


def test_a_durable_claude_run_survives_a_restart_with_its_answer_cost_and_session(kernels) -> None:
    """A durable demo Claude run outlives a restart; after attach its answer, cost and session id read as usual
    once its turn ended (the conversation lives on for a follow-up: the run is alive, not done)."""
    kernel = kernels("ask.ipynb")
    kernel.ok('%ccexec --durable --demo -o ask "think for 6 seconds, then answer"')
    job_id = job_id_of(kernel, "ask")
    kernel.restart()
    load(kernel)
    listed = kernel.value(f"[(j.status, j.kind) for j in cc_executor_nb.jobs.list() if j.job_id == {job_id!r}]")
    assert listed == [("running", "claude")], "the job runs on after the restart"
    kernel.ok("%ccexec --attach last --wait -o again", timeout=scaled(60))
    status, answer, cost, session = kernel.value("(again.status, again.answer, again.cost_usd, again.session_id)")
    assert (status, answer) == ("completed", THINK_ANSWER)
    assert kernel.value("(again.alive, again.done)") == (True, False)
    assert cost > 0 and re.fullmatch(r"[0-9a-f-]{36}", session)
    listed = kernel.value(f"[(j.cost_usd, j.session_id) for j in cc_executor_nb.jobs.list() if j.job_id == {job_id!r}]")
    assert listed == [(cost, session)], "the job list shows the same cost and session"
    kinds = "(type(again.interpreter).__name__, type(again.view.body).__name__)"
    assert kernel.value(kinds) == ("ClaudeInterpreter", "ClaudeBody"), "the same interpreter and view as a fresh run"


def test_a_question_pending_when_the_kernel_restarted_is_asked_after_attach(kernels, tmp_path: Path) -> None:
    """A durable Claude job asks; the kernel restarts unanswered; `--attach last --wait` asks it on the cell's
    stdin, "y" runs the command, and the job lives on for a follow-up and end() from the new kernel."""
    kernel = kernels("ask.ipynb")
    kernel.ok('%ccexec --durable --demo -o job "bash: touch after-restart.txt"')
    job_id_of(kernel, "job")
    kernel.wait_until("job.pending is not None", timeout=60)
    kernel.restart()
    load(kernel)
    msg_id, started = kernel.submit("%ccexec --attach last --wait -o again", allow_stdin=True)
    request = kernel.input_request(timeout=scaled(60))
    assert request["content"]["prompt"].startswith("Claude asks to use Bash: touch after-restart.txt")
    kernel.answer_input("y")
    assert kernel.finish(msg_id, started, timeout=scaled(60)).ok
    assert (tmp_path / "after-restart.txt").exists()
    decided = "[(q.status, q.decided_by) for q in again.permission_requests]"
    assert kernel.value(f"(again.status, again.alive, {decided})") == ("completed", True, [("allowed", "stdin")])
    kernel.ok("again.send('echo: after the restart'); again.wait()")
    assert kernel.value("again.answer") == "after the restart"
    kernel.ok("again.end()")
    kernel.wait_until("again.done", timeout=60)
    assert kernel.value("(again.status, again.exit_code)") == ("completed", 0)


def test_the_approval_card_of_an_attached_kernel_answers_the_jobs_question(kernels, tmp_path: Path) -> None:
    """Kernel B attaches to kernel A's durable job while a Write waits: B's card shows it, a click on Allow
    writes the file, and A's run reads the question as decided elsewhere."""
    first = kernels("a.ipynb")
    first.ok('%ccexec --durable --demo -o job "write: carded.txt"')
    job_id = job_id_of(first, "job")
    first.wait_until("job.pending is not None", timeout=60)
    second = kernels("b.ipynb")
    second.ok(f"seen = cc_executor_nb.attach({job_id!r})")
    second.wait_until("'Claude wants to use Write' in seen.view.body.card.value", timeout=scaled(60))
    second.click(second.value("seen.view.body.allow_button.model_id"))
    second.wait_until("seen.status == 'completed'", timeout=scaled(60))
    assert (tmp_path / "carded.txt").read_text() == "Hello from the cc_executor_nb demo.\n"
    assert second.value("[(q.status, q.decided_by) for q in seen.permission_requests]") == [("allowed", "widget")]
    first.wait_until("job.status == 'completed'", timeout=scaled(60))
    assert first.value("[(q.status, q.decided_by) for q in job.permission_requests]") == [("allowed", "elsewhere")]



def _logged(runtime_dir: Path, job_id: str, prompts: tuple[str, ...]) -> list[str]:
    """The job's log read from its file: each of ``prompts`` as its user message is written, each
    ``result``, the input's ``closed:REASON`` and the job's ``completed:STATUS``, in order."""
    entries = []
    for text in (runtime_dir / "cc_executor_nb-jobs" / f"{job_id}.log").read_text().splitlines():
        line = json.loads(text)
        method, params = line["method"], line["params"]
        if method == methods.PROCESS_INPUT and params.get("closed"):
            entries.append(f"closed:{params['reason']}")
        elif method == methods.PROCESS_INPUT:
            entries += [prompt for prompt in prompts if prompt in params["data"]]
        elif method == methods.PROCESS_OUTPUT and '"type":"result"' in params["data"]:
            entries.append("result")
        elif method == methods.PROCESS_COMPLETED:
            entries.append(f"completed:{params['status']}")
    return entries


def _ended(runtime_dir: Path, job_id: str, prompts: tuple[str, ...]) -> list[str]:
    """The job's log as :func:`_logged` reads it, once it shows the job's end (at most a minute: its
    idle timeout, 600 s, is no end here)."""
    deadline = time.monotonic() + scaled(60)
    while True:
        entries = _logged(runtime_dir, job_id, prompts)
        if entries and entries[-1].startswith("completed:"):
            return entries
        assert time.monotonic() < deadline, f"the job did not end within {scaled(60):g} s: {entries}"
        time.sleep(0.1)


def test_a_kernel_that_exits_with_its_follow_up_held_and_its_end_asked_leaves_both_to_the_job(
    kernels, runtime_dir: Path
) -> None:
    """Two follow-ups sent at once then end(), the kernel shut down at once: the job server holds the
    second for the first's turn end, and the end asked closes the job's input after it: the job ends
    completed after both results (the kernel's close after that turn died with it: the job lived on
    until its idle timeout, 10 minutes, with nobody attached)."""
    kernel = kernels("a.ipynb")
    kernel.ok("r = cc_executor_nb.run('echo: first', demo=True, durable=True, display=False); r.wait(60)")
    job_id = job_id_of(kernel, "r")
    kernel.ok("async def go():\n    r.send('think for 3 seconds, then answer'); r.send('echo: held'); r.end()\n"
              "r._kernel_loop.call(go())")
    kernel.shutdown()
    prompts = ("think for 3 seconds", "echo: held")
    assert _ended(runtime_dir, job_id, prompts)[-6:] == [
        "think for 3 seconds", "result", "echo: held", "result", "closed:input.close", "completed:completed"]


def test_a_kernel_that_exits_with_a_follow_up_queued_during_a_turn_leaves_it_to_the_job(
    kernels, runtime_dir: Path
) -> None:
    """send() during a turn, the kernel shut down during that turn: the follow-up goes to the job
    server, which writes it at the turn's end: it gets its turn and its result (it died with the
    kernel, unsent, and the job waited for a follow-up until its idle timeout)."""
    kernel = kernels("a.ipynb")
    kernel.ok("r = cc_executor_nb.run('echo: first', demo=True, durable=True, display=False); r.wait(60)")
    job_id = job_id_of(kernel, "r")
    kernel.ok("r.send('think for 4 seconds, then answer')")
    kernel.wait_until("r.claude.turns == 2 and r.state.status == 'running'", timeout=30)
    kernel.ok("r.send('echo: queued')")
    kernel.shutdown()
    prompts = ("echo: first", "think for 4 seconds", "echo: queued")
    deadline = time.monotonic() + scaled(60)
    while (entries := _logged(runtime_dir, job_id, prompts)) != [p for prompt in prompts for p in (prompt, "result")]:
        assert time.monotonic() < deadline, f"no turn of the follow-up within {scaled(60):g} s: {entries}"
        time.sleep(0.1)
