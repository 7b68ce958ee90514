"""A batch nobody can reach any more: its handle (and its runs' handles) dropped, no widget showing it.

In a real kernel with the real claude CLI against the demo API. As for a single run
(tests/test_kernel_dropped.py): a started run's open question is denied and its CLI exits,
and an item still queued starts and has its questions denied as they come (a batch of
commands, or of prompts with a policy, does its work unattended). A batch still held, one of
its runs held, or a batch shown in a widget keeps waiting for its person.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import test_kernel_dropped as single
from .kernel_utils import KernelHarness
from .util import scaled

pytestmark = single.pytestmark  # a real kernel and the project's claude, as for a single run


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[KernelHarness]:
    """A kernel of its own (cwd: a fresh folder) with the extension and the project's claude."""
    yield from single._kernel(tmp_path)


def _asking(kernel: KernelHarness, name: str, *, display: bool = False, quiet: bool = False) -> int:
    """A batch ``name`` of two items, one at a time, each asking to write ``{name}{item}.txt``;
    its first run's claude pid once it asks. ``{name}_items`` keeps its items (they hold no
    handle), ``{name}_over`` the batch's status once it is over."""
    kernel.ok(f'{name} = ccx.map("bash: echo {{item}} > {name}{{item}}.txt", ["1", "2"], demo=True, '
              f"concurrency=1, display={display}, quiet={quiet})\n"
              f"{name}_items, {name}_over = {name}.items, []\n"
              f"{name}.add_done_callback(lambda batch: {name}_over.append(batch.status))")
    kernel.wait_until(f"{name}.runs[0].pending is not None", timeout=scaled(60))
    return int(kernel.value(f"{name}.runs[0].state.pid"))


def _drop(kernel: KernelHarness, name: str) -> None:
    kernel.ok(f"del {name}\ngc.collect()")


def _questions(kernel: KernelHarness, name: str, index: int = 0) -> object:
    return kernel.value(f"[(q.status, q.decided_by) for q in {name}_items[{index}].run.conversation.view().requests]")


def test_a_dropped_unshown_batch_denies_its_questions_and_ends_its_runs(
    kernel: KernelHarness, tmp_path: Path,
) -> None:
    """display=False and the batch dropped while its run asks: denied ('auto'), the CLI exits; the
    queued item still runs, its question denied as it comes."""
    pid = _asking(kernel, "b")
    _drop(kernel, "b")
    single._gone(pid)
    assert _questions(kernel, "b") == [("denied", "auto")]
    kernel.wait_until("b_over == ['done']", timeout=scaled(60))
    assert kernel.value("[item.status for item in b_items]") == ["completed", "completed"]
    assert _questions(kernel, "b", 1) == [("denied", "auto")]
    assert not list(tmp_path.glob("b*.txt"))


@pytest.mark.parametrize("held", ["b.runs[0]", "b.items[0].run"])
def test_a_run_held_alone_keeps_its_question_after_its_batch_is_dropped(
    kernel: KernelHarness, tmp_path: Path, held: str,
) -> None:
    """r = batch.runs[0], or batch.items[0].run (the same handle), still answers after `del batch`:
    approved later, it runs (the unheld queued item runs with its question denied)."""
    _asking(kernel, "b")
    kernel.ok(f"r = {held}")
    _drop(kernel, "b")
    dropped = _asking(kernel, "other")  # a batch dropped after it, whose end shows the drop was seen
    _drop(kernel, "other")
    single._gone(dropped)
    assert kernel.value("r.pending is not None and r.alive") is True
    kernel.ok("r.approve()")
    kernel.wait_until("b_over == ['done']", timeout=scaled(60))
    assert kernel.value("[item.status for item in b_items]") == ["completed", "completed"]
    assert _questions(kernel, "b", 1) == [("denied", "auto")]
    assert (tmp_path / "b1.txt").read_text() == "1\n" and not (tmp_path / "b2.txt").exists()


def test_a_queued_run_taken_from_the_kept_items_after_its_batch_was_dropped_keeps_its_question(
    kernel: KernelHarness, tmp_path: Path,
) -> None:
    """`r = items[1].run` after `del batch` (its items kept), while that item is queued: r holds the run, so its
    question waits for r once it starts (items[1].run was the loop's own run, which nobody watched: the run
    started judged unreachable and its question was denied although r held it)."""
    _asking(kernel, "b")
    kernel.ok("del b\ngc.collect()\nr = b_items[1].run")  # one cell: the item is still queued then
    kernel.wait_until("r.conversation.view().requests", timeout=scaled(60))
    assert kernel.value("r.pending is not None and r.alive") is True
    kernel.ok("r.approve()")
    kernel.wait_until("b_over == ['done']", timeout=scaled(60))
    assert _questions(kernel, "b", 1) == [("allowed", "code")]
    assert (tmp_path / "b2.txt").read_text() == "2\n"


def test_a_run_taken_from_the_kept_items_and_dropped_again_is_seen_as_unreachable(kernel: KernelHarness) -> None:
    """The handle `items[1].run` gives after the batch was dropped is watched as the batch's were: once it is
    dropped too, the run's question is denied and its CLI exits."""
    _asking(kernel, "b")
    kernel.ok("del b\ngc.collect()\nr = b_items[1].run")  # one cell: the item is still queued then
    kernel.wait_until("r.pending is not None", timeout=scaled(60))
    pid = int(kernel.value("r.state.pid"))
    kernel.ok("del r\ngc.collect()")
    single._gone(pid)
    assert _questions(kernel, "b", 1) == [("denied", "auto")]


def test_a_dropped_batch_shown_in_a_widget_still_waits(kernel: KernelHarness, tmp_path: Path) -> None:
    """A widget that shows the batch can still answer its runs: its dropped handle changes nothing."""
    _asking(kernel, "s", display=True)
    _drop(kernel, "s")
    dropped = _asking(kernel, "other")
    _drop(kernel, "other")
    single._gone(dropped)
    assert _questions(kernel, "s") == [("pending", None)]
    kernel.ok("s_items[0].run.approve()")
    kernel.wait_until("s_items[1].run.pending is not None", timeout=scaled(60))
    kernel.ok("s_items[1].run.approve()")
    kernel.wait_until("s_over == ['done']", timeout=scaled(60))
    assert [(tmp_path / f"s{n}.txt").read_text() for n in (1, 2)] == ["1\n", "2\n"]


def test_a_held_batch_still_waits_after_a_dropped_one_ended(kernel: KernelHarness) -> None:
    """A display=False batch that is held keeps its run's question open."""
    _asking(kernel, "held")
    dropped = _asking(kernel, "other")
    _drop(kernel, "other")
    single._gone(dropped)
    assert kernel.value("held.runs[0].pending is not None and held.runs[0].alive") is True
    assert kernel.value("held.items[1].status") == "queued"


def test_a_batchs_runs_and_awaiting_it_give_back_the_users_handles(kernel: KernelHarness) -> None:
    """`await b` is `b`, and `b.runs[i]`, `b[i]`, `list(b)` give the same run each time."""
    kernel.ok('b = ccx.map(["echo: one", "echo: two"], demo=True, display=False)\nb2 = await b')
    assert kernel.value("b2 is b and b.runs[0] is b[0] is list(b)[0] and b.runs[1] is b[1]") is True


def test_a_dropped_batch_shown_as_text_ends_too(kernel: KernelHarness) -> None:
    """Text (quiet=True) shows no card to click: the dropped handle was the last way to answer."""
    pid = _asking(kernel, "q", display=True, quiet=True)
    _drop(kernel, "q")
    single._gone(pid)
    assert _questions(kernel, "q") == [("denied", "auto")]


def test_an_items_run_is_the_batchs_run_handle(kernel: KernelHarness) -> None:
    """`b.items[i].run` is `b.runs[i]`, the user's handle, not the loop's own object."""
    kernel.ok('b = ccx.map(["echo: one", "echo: two"], demo=True, display=False)')
    assert kernel.value("[b.items[i].run is b.runs[i] for i in (0, 1)]") == [True, True]
