"""A conversation nobody can answer any more: its handle dropped, no widget showing it.

In a real kernel with the real claude CLI against the demo API. A question of a run shown
nowhere (``display=False``) whose handle was dropped can be answered by nobody: it is denied
and the conversation ends, so its CLI process goes. A run still held, or shown in a widget,
keeps waiting for its person.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cc_executor_nb.server.runtime import RUNTIME_FILE_NAME, stop_job_server

from .kernel_utils import KernelHarness
from .util import alive, eventually, scaled

REPO_ROOT = Path(__file__).resolve().parents[1]
CLAUDE = REPO_ROOT / "node_modules" / ".bin" / "claude"

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.claude,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not CLAUDE.exists(), reason="node_modules/.bin/claude is absent: run `npm ci`"),
]


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[KernelHarness]:
    """A kernel of its own (cwd: a fresh folder) with the extension and the project's claude."""
    yield from _kernel(tmp_path)


def _kernel(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[KernelHarness]:
    harness = KernelHarness.start(tmp_path, env=env)
    harness.ok("%load_ext cc_executor_nb")
    harness.ok(f"%config CCExec.claude_command = {str(CLAUDE)!r}\n%config CCExec.history_path = 'none'")
    harness.ok("import gc\nimport cc_executor_nb as ccx")
    yield harness
    harness.shutdown()


def _asking(kernel: KernelHarness, name: str, file: str, options: str = "display=False") -> int:
    """Start a demo run named ``name`` (with ``options``, Python keywords) that asks to write
    ``file``; its claude pid once it asks."""
    kernel.ok(f'{name} = ccx.run("bash: echo 1 > {file}", demo=True, {options})')
    kernel.wait_until(f"{name}.pending is not None", timeout=scaled(60))
    return int(kernel.value(f"{name}.state.pid"))


def _drop(kernel: KernelHarness, name: str) -> None:
    """Keep the run's conversation and events as ``{name}_talk`` and ``{name}_events`` (they
    hold no handle), then drop the handle."""
    kernel.ok(f"{name}_talk, {name}_events = {name}.conversation, {name}.events\ndel {name}\ngc.collect()")


def _one_dropped_run_ended(kernel: KernelHarness, name: str = "other") -> None:
    """Start, drop and see ended a run nobody can reach: the checks of the others come after it."""
    pid = _asking(kernel, name, "dropped.txt")
    _drop(kernel, name)
    _gone(pid)


def _gone(pid: int) -> None:
    eventually(lambda: not alive(pid), timeout=30, what=f"claude process {pid} to end")


def test_a_dropped_unshown_run_has_its_question_denied_and_its_process_ended(
    kernel: KernelHarness, tmp_path: Path,
) -> None:
    """display=False and the handle dropped while a question waits: it is denied ('auto'), the CLI exits."""
    pid = _asking(kernel, "r", "dropped.txt")
    _drop(kernel, "r")
    _gone(pid)
    assert kernel.value("[(q.status, q.decided_by) for q in r_talk.view().requests]") == [("denied", "auto")]
    endings = "[e.params['reason'] for e in r_events if e.method == 'conversation.ending']"
    assert kernel.value(endings) == ["unreachable"]
    assert not (tmp_path / "dropped.txt").exists()


def test_a_run_ended_then_dropped_has_its_question_denied_without_a_second_ending(
    kernel: KernelHarness, tmp_path: Path,
) -> None:
    """``r.end()`` then ``del r`` with a question open: the question is denied and the CLI exits,
    and the run says only that it was ended (it also said nobody could answer it, an ending of
    its own, although the user had ended it)."""
    pid = _asking(kernel, "r", "ended.txt")
    kernel.ok("r.end()\npass")  # not the cell's value: Out would hold the handle end() returns
    _drop(kernel, "r")
    _gone(pid)
    assert kernel.value("[(q.status, q.decided_by) for q in r_talk.view().requests]") == [("denied", "auto")]
    endings = "[e.params['reason'] for e in r_events if e.method == 'conversation.ending']"
    assert kernel.value(endings) == ["end"]
    assert not any("nobody can answer" in notice for notice in kernel.value("list(r_talk.view().notices)"))


def test_a_held_unshown_run_still_waits_after_a_dropped_one_ended(kernel: KernelHarness, tmp_path: Path) -> None:
    """A display=False run whose handle is held keeps its question open: answered later, it runs."""
    _asking(kernel, "held", "held.txt")
    _one_dropped_run_ended(kernel)
    assert kernel.value("held.pending is not None and held.alive") is True
    kernel.ok("held.approve()")
    kernel.wait_until("held.status == 'completed'", timeout=scaled(60))
    assert (tmp_path / "held.txt").read_text() == "1\n"


@pytest.mark.parametrize(("options", "shows"), [("display=True", ""), ("display=False", "display(s.view)\n")],
                         ids=["its-own-widget", "display-of-its-view"])
def test_a_dropped_run_shown_in_a_widget_still_waits_for_a_click(
    kernel: KernelHarness, tmp_path: Path, options: str, shows: str,
) -> None:
    """A widget that shows the run can still answer it, its own or ``display(r.view)`` of a
    display=False run: its dropped handle changes nothing."""
    _asking(kernel, "s", "shown.txt", options)
    kernel.ok(f"{shows}allow = s.view.body.allow_button.model_id")
    _drop(kernel, "s")
    _one_dropped_run_ended(kernel)
    assert kernel.value("[q.status for q in s_talk.view().requests]") == ["pending"]
    kernel.click(kernel.value("allow"))
    kernel.wait_until("(tk := s_talk.view()).requests[0].status == 'allowed' and not tk.turn_running",
                      timeout=scaled(60))
    assert (tmp_path / "shown.txt").read_text() == "1\n"


def test_a_dropped_unshown_run_between_turns_ends_at_once(kernel: KernelHarness) -> None:
    """No follow-up can come to a run nobody holds: between turns it ends without its idle timeout."""
    kernel.ok('r = ccx.run("echo: then drop it", demo=True, display=False, idle_timeout=600)')
    kernel.wait_until("r.status == 'completed' and r.alive", timeout=scaled(60))
    pid = int(kernel.value("r.state.pid"))
    _drop(kernel, "r")
    _gone(pid)
    endings = "[e.params['reason'] for e in r_events if e.method == 'conversation.ending']"
    assert kernel.value(endings) == ["unreachable"]


def test_awaiting_a_run_gives_back_the_users_handle(kernel: KernelHarness) -> None:
    """`await r` is `r` itself, so a run kept only as `await`'s result is still held."""
    kernel.ok('r = ccx.run("echo: awaited", demo=True, display=False)\nr2 = await r')
    assert kernel.value("r2 is r") is True


def test_a_question_in_a_policys_hands_is_the_policys_after_the_drop(kernel: KernelHarness, tmp_path: Path) -> None:
    """A policy still deciding can answer: the drop leaves its question to it, then the run ends."""
    kernel.ok("import threading\ngo = threading.Event()\npolicy = lambda request: 'allow' if go.wait() else None")
    pid = _asking(kernel, "r", "policy.txt", "display=False, on_permission=policy")
    _drop(kernel, "r")
    kernel.ok("go.set()")
    _gone(pid)
    assert kernel.value("[(q.status, q.decided_by) for q in r_talk.view().requests]") == [("allowed", "policy")]
    assert (tmp_path / "policy.txt").read_text() == "1\n"


def test_a_dropped_run_shown_as_text_ends_too(kernel: KernelHarness) -> None:
    """Text (--quiet) shows no card to click: its dropped handle was the last way to answer."""
    pid = _asking(kernel, "r", "text.txt", "quiet=True")
    _drop(kernel, "r")
    _gone(pid)
    assert kernel.value("[(q.status, q.decided_by) for q in r_talk.view().requests]") == [("denied", "auto")]


@pytest.fixture
def kernel_with_jobs(tmp_path: Path) -> Iterator[KernelHarness]:
    """A kernel whose job server lives in a private runtime directory (stopped afterwards)."""
    runtime = tmp_path / "runtime"
    yield from _kernel(tmp_path, {"JUPYTER_RUNTIME_DIR": str(runtime), "JPY_SESSION_NAME": str(tmp_path / "a.ipynb")})
    stop_job_server(runtime / RUNTIME_FILE_NAME, timeout=scaled(60))


def test_a_dropped_durable_run_leaves_its_question_to_any_kernel_that_attaches(
    kernel_with_jobs: KernelHarness, tmp_path: Path,
) -> None:
    """A durable job's question stays open when its handle is dropped: attach() still answers it."""
    kernel = kernel_with_jobs
    kernel.ok('r = ccx.run("bash: echo 1 > durable.txt", demo=True, display=False, durable=True)')
    kernel.wait_until("r.job_id is not None and r.pending is not None", timeout=scaled(60))
    kernel.ok("job_id = r.job_id")
    _drop(kernel, "r")
    _one_dropped_run_ended(kernel)
    assert kernel.value("[q.status for q in r_talk.view().requests]") == ["pending"]
    kernel.ok("again = ccx.attach(job_id, display=False)")
    kernel.wait_until("again.pending is not None", timeout=scaled(60))
    kernel.ok("again.approve()")
    kernel.wait_until("again.status == 'completed'", timeout=scaled(60))
    assert (tmp_path / "durable.txt").read_text() == "1\n"
    kernel.ok("again.end()")
    kernel.wait_until("again.done", timeout=scaled(60))


def test_a_dropped_durable_run_shown_nowhere_is_let_go_so_its_jobs_idle_timeout_counts(
    kernel_with_jobs: KernelHarness,
) -> None:
    """``del r`` of a durable run no widget shows: this kernel stops following its job (``attached``
    0, so the job's stdin idle timeout counts), the job goes on, and the run ends ``detached``."""
    kernel = kernel_with_jobs
    kernel.ok('r = ccx.run("echo: hi", demo=True, durable=True, display=False)')
    kernel.wait_until("r.status == 'completed' and r.alive", timeout=scaled(60))
    kernel.ok("job_id = r.job_id\nfollowers = lambda: [j.attached for j in ccx.jobs.list() if j.job_id == job_id]")
    assert kernel.value("followers()") == [1]
    _drop(kernel, "r")
    kernel.wait_until("followers() == [0]", timeout=scaled(60))
    assert kernel.value("[j.status for j in ccx.jobs.list() if j.job_id == job_id]") == ["running"]
    assert kernel.value("[e.method for e in r_events if e.method == 'client.detached']") == ["client.detached"]
    kernel.ok("again = ccx.attach(job_id, display=False)")
    kernel.wait_until("again.status == 'completed' and again.alive", timeout=scaled(60))
    kernel.ok("again.end()")
    kernel.wait_until("again.done", timeout=scaled(60))


def test_a_dropped_attached_run_shown_nowhere_lets_its_job_go(kernel_with_jobs: KernelHarness) -> None:
    """attach() gives a handle as run() does: ``del again`` of an attached run no widget shows stops
    this kernel's following of the job through it (one follower less); the run that started it goes on."""
    kernel = kernel_with_jobs
    kernel.ok('r = ccx.run("echo: hi", demo=True, durable=True, display=False)')
    kernel.wait_until("r.status == 'completed' and r.alive", timeout=scaled(60))
    kernel.ok("job_id = r.job_id\nfollowers = lambda: [j.attached for j in ccx.jobs.list() if j.job_id == job_id]\n"
              "again = ccx.attach(job_id, display=False)")
    kernel.wait_until("again.status == 'completed' and again.alive", timeout=scaled(60))
    assert kernel.value("followers()") == [2]
    kernel.ok("again_events = again.events\ndel again\ngc.collect()")
    kernel.wait_until("followers() == [1]", timeout=scaled(60))
    assert kernel.value("[e.method for e in again_events if e.method == 'client.detached']") == ["client.detached"]
    kernel.ok("r.send('echo: still here')")
    kernel.wait_until("r.status == 'completed' and r.answer == 'still here'", timeout=scaled(60))
    kernel.ok("r.end()")
    kernel.wait_until("r.done", timeout=scaled(60))


def test_a_follow_up_queued_before_a_durable_run_is_dropped_still_reaches_its_job(
    kernel_with_jobs: KernelHarness, tmp_path: Path,
) -> None:
    """``r.send(...)`` during a turn, then ``del r``: the follow-up the user asked for is not lost
    when this kernel lets the job go (it was queued here and dropped with the connection)."""
    kernel = kernel_with_jobs
    _ask_drop_and_approve_elsewhere(kernel, "queued.txt", "r.send('echo: the follow-up')")
    kernel.wait_until("again.status == 'completed' and again.answer == 'the follow-up'", timeout=scaled(60))
    kernel.ok("again.end()")
    kernel.wait_until("again.done", timeout=scaled(60))


def test_an_end_asked_before_a_durable_run_is_dropped_still_closes_its_jobs_input(
    kernel_with_jobs: KernelHarness,
) -> None:
    """``r.end()`` during a turn, then ``del r``: the job's input still closes after that turn, so
    its CLI exits (it was left open, the job waiting for its stdin idle timeout)."""
    kernel = kernel_with_jobs
    _ask_drop_and_approve_elsewhere(kernel, "ended.txt", "r.end()")
    kernel.wait_until("again.done", timeout=scaled(60))
    assert kernel.value("again.status") == "completed"


def _ask_drop_and_approve_elsewhere(kernel: KernelHarness, file: str, asked: str) -> None:
    """A durable run waiting on a question is asked ``asked``, then dropped; ``again``, an
    attach of its job, approves the question."""
    kernel.ok(f'r = ccx.run("bash: echo 1 > {file}", demo=True, display=False, durable=True)')
    kernel.wait_until("r.job_id is not None and r.pending is not None", timeout=scaled(60))
    kernel.ok(f"job_id = r.job_id\n{asked} and None  # not kept in Out")
    _drop(kernel, "r")
    kernel.ok("again = ccx.attach(job_id, display=False)")
    kernel.wait_until("again.pending is not None", timeout=scaled(60))
    kernel.ok("again.approve() and None")
