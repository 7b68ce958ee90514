"""Adaptive heartbeat, progress estimation and resource monitoring, end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from cc_executor_nb.client import connect
from cc_executor_nb.events import Completed, Event, Heartbeat, Output
from cc_executor_nb.server.progress import HistoryStore, ProgressEstimator
from cc_executor_nb.server.resources import ResourceSampler
from cc_executor_nb.targets import Target, count_units, progress_toward, prompt_target

from .conftest import TOKEN, collect, completed, fake, make_handler, output_of
from .util import scaled


@pytest.fixture
async def started():
    """Start handlers with given options; close them all at the end."""
    handlers = []

    async def start(**options):
        handler = make_handler(**options)
        await handler.start("127.0.0.1", 0)
        handlers.append(handler)
        return handler, await connect(handler.url, TOKEN)

    yield start
    for handler in handlers:
        await handler.close()


def beats(events: list[Event]) -> list[Heartbeat]:
    return [e for e in events if isinstance(e, Heartbeat)]


def metrics(events: list[Event]) -> list[Event]:
    return [e for e in events if e.method == "process.metrics"]


async def test_fixed_heartbeat_beats_every_interval_even_with_traffic(started) -> None:
    """Fixed mode: one beat per interval while output flows."""
    _, client = await started(heartbeat_mode="fixed")
    await client.execute(argv=fake("ticker", "40", "0.05"), heartbeat_interval=0.2)
    events = await collect(client)
    assert len(beats(events)) >= 7
    assert all(b.params["interval"] == 0.2 for b in beats(events))


async def test_adaptive_heartbeat_skips_beats_while_output_flows(started) -> None:
    """Adaptive mode: traffic proves liveness, so no beat goes out while output flows."""
    _, client = await started(heartbeat_mode="adaptive", metrics_interval=0)
    await client.execute(argv=fake("ticker", "40", "0.05"), heartbeat_interval=0.3, inactivity_threshold=5)
    events = await collect(client)
    assert len(beats(events)) <= 1


async def test_adaptive_heartbeat_shortens_while_the_child_is_silent(started) -> None:
    """Adaptive mode: past the inactivity threshold the interval halves down to the minimum."""
    _, client = await started(heartbeat_mode="adaptive", min_heartbeat_interval=0.1, metrics_interval=0)
    await client.execute(argv=fake("silence", "2.5"), heartbeat_interval=0.8, inactivity_threshold=0.5)
    intervals = [b.params["interval"] for b in beats(await collect(client))]
    assert intervals[0] == 0.8 or intervals[0] == 0.4
    assert min(intervals) == 0.1
    assert intervals == sorted(intervals, reverse=True)


def test_prompt_targets_are_found() -> None:
    """"N words/items/haikus/lines" is read from the arguments."""
    assert prompt_target(["claude", "-p", "--", "Write a 5,000-word story"]).count == 5000
    assert prompt_target(["claude", "-p", "--", "write 3 haikus"]).unit == "haiku"
    assert prompt_target(["x", "list 12 items please"]).unit == "item"
    assert prompt_target(["echo", "hello"]) is None
    assert prompt_target(["x", "version 2.5 words"]) is None


def test_a_count_of_thousands_of_digits_is_no_target() -> None:
    """"1,000,000,… words" with 4501 digits is no target (int() refused it: ValueError)."""
    assert prompt_target(["x", "write 1" + ",000" * 1500 + " words"]) is None
    assert prompt_target(["x", "write 999,999,999 words"]).count == 999_999_999


async def test_an_argument_with_a_huge_count_runs_as_any_other(started) -> None:
    """Such an argument was an Internal error (-32603) after the spawn, its child left running unwatched."""
    _, client = await started(metrics_interval=0)
    await client.execute(argv=[sys.executable, "-c", "print('ran')", "write 1" + ",000" * 1500 + " words"])
    events = await collect(client)
    assert completed(events).params["status"] == "completed"
    assert "ran" in "".join(e.data for e in events if isinstance(e, Output))


def test_units_are_counted() -> None:
    """Words, list items, haikus (three-line stanzas) and lines are counted."""
    assert count_units("a b  c\nd", "word") == 4
    assert count_units("- a\n* b\n1. c\nplain", "item") == 3
    assert count_units("l1\nl2\nl3\n\nm1\nm2\nm3\n\nshort", "haiku") == 2


def test_no_eta_from_the_first_instant_of_output() -> None:
    """Two words of ten, 1 ms after the first output: no ETA yet (it said 0.0 s at 20 %); a
    second later, the rate gives one."""
    target = Target(10, "word")
    early = progress_toward(target, "a b", first_output_at=100.0, now=100.001, finished=False)
    assert (early.fraction, early.eta_seconds) == (0.2, None)
    later = progress_toward(target, "a b", first_output_at=100.0, now=101.0, finished=False)
    assert later.eta_seconds == 4.0


async def test_word_target_reports_rising_fractions_that_end_near_one(started) -> None:
    """A run asked for 300 words reports progress that rises and ends near 1."""
    _, client = await started(metrics_interval=0.2)
    await client.execute(argv=fake("words", "300", "200", "write a 300 word story"))
    events = await collect(client)
    fractions = [m.params["progress"]["fraction"] for m in metrics(events)]
    assert len(fractions) >= 4 and fractions == sorted(fractions)
    assert fractions[-1] >= 0.9 and fractions[0] < 0.6
    assert {m.params["progress"]["basis"] for m in metrics(events)} == {"prompt:words"}
    assert any(m.params["progress"]["eta_seconds"] for m in metrics(events))


async def test_command_run_three_times_gets_an_eta_on_the_fourth(started, tmp_path) -> None:
    """History: no estimate for the first three runs, an ETA from the fourth on.

    (A sample taken after the child ended, before ``process.completed``, says 1.0: under
    load one can be the last, so the run's samples are checked, not only the last.)"""
    _, client = await started(history_path=str(tmp_path / "history.sqlite3"), metrics_interval=0.2)
    bases = []
    for _ in range(4):
        await client.execute(argv=fake("silence", "1.0"))
        events = await collect(client)
        bases.append({m.params["progress"]["basis"] for m in metrics(events)})
        samples = [m.params["progress"] for m in metrics(events)]
    assert bases[:3] == [{"none"}] * 3
    assert bases[3] == {"history"}
    assert all(p["eta_seconds"] is not None and 0 < p["fraction"] <= 1 for p in samples)
    assert any(0 < p["fraction"] < 1 and p["eta_seconds"] > 0 for p in samples)


async def test_a_run_fed_on_stdin_gets_no_estimate_from_history(started, tmp_path) -> None:
    """stdin "pipe": what the run does depends on what it is sent, so no history estimate.

    Every Claude conversation shares one argv (its prompts go to stdin): a bash prompt
    waiting for a follow-up read "99% · about 0 s left · from earlier runs of this command"."""
    _, client = await started(history_path=str(tmp_path / "history.sqlite3"), metrics_interval=0.2)
    bases = []
    for _ in range(4):
        await client.execute(argv=fake("silence", "1.0"), stdin="pipe")
        events = await collect(client)
        assert completed(events).params["status"] == "completed"
        bases.append({m.params["progress"]["basis"] for m in metrics(events)})
    assert bases == [{"none"}] * 4


async def test_a_run_given_its_whole_input_in_execute_gets_an_estimate_from_runs_of_the_same_input(
    started, tmp_path
) -> None:
    """``execute``'s ``input`` is all the run is sent (its stdin closes after it): the same argv
    and input is the same run, as a one-shot Claude prompt is (it went on the command line, and
    had its estimate, before it went to stdin); another input is another run."""
    _, client = await started(history_path=str(tmp_path / "history.sqlite3"), metrics_interval=0.2)
    bases = []
    for text in ["the same prompt"] * 4 + ["another prompt"]:
        await client.execute(argv=fake("silence", "1.0"), stdin="pipe", input=text)
        events = await collect(client)
        assert completed(events).params["status"] == "completed"
        bases.append({m.params["progress"]["basis"] for m in metrics(events)})
    assert bases == [{"none"}] * 3 + [{"history"}, {"none"}]


async def test_corrupt_history_means_no_estimate_never_a_failure(started, tmp_path) -> None:
    """A corrupt database gives basis none and the run completes."""
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"not a database" * 100)
    _, client = await started(history_path=str(path), metrics_interval=0.2)
    await client.execute(argv=fake("silence", "0.5"))
    events = await collect(client)
    assert completed(events).params["status"] == "completed"
    assert {m.params["progress"]["basis"] for m in metrics(events)} == {"none"}


def test_locked_history_is_skipped(tmp_path) -> None:
    """A database locked by another writer is skipped quickly, with no estimate."""
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    store.record("k", 1.0, 1)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store.record("k", 2.0, 1)
        assert store.durations("k") == []
    finally:
        holder.rollback()
        holder.close()
    assert store.durations("k") == [1.0]


def test_the_history_is_the_owners_alone_whatever_the_umask(tmp_path) -> None:
    """A new history database is 0600 in a folder made 0700, even under umask 000."""
    path = tmp_path / "cache" / "cc_executor_nb" / "h.sqlite3"
    previous = os.umask(0)
    try:
        HistoryStore(path).record("k", 1.0, 1)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_history_made_by_an_earlier_version_becomes_the_owners_alone(tmp_path) -> None:
    """A database an earlier version left 0644 (sqlite's default) is made 0600 when it is
    next used: every existing history stayed readable to every local user."""
    path = tmp_path / "cc_executor_nb" / "h.sqlite3"
    path.parent.mkdir()
    HistoryStore(path).record("k", 1.0, 1)
    path.chmod(0o644)
    assert HistoryStore(path).durations("k") == [1.0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_estimate_without_a_basis() -> None:
    """Without a target or history, fraction and ETA are null (no fake bar)."""
    estimate = ProgressEstimator(["sleep", "1"]).estimate(0.5, 0.5)
    assert estimate.to_dict() == {"fraction": None, "eta_seconds": None, "basis": "none"}


async def test_status_request_carries_resources_and_progress(started) -> None:
    """A status request during a live run carries resources and progress."""
    _, client = await started(metrics_interval=0.3)
    await client.execute(argv=fake("burn", "2.5", "200"))
    seen_status = None
    async for event in client.events():
        if isinstance(event, Output) and event.data.startswith("burning") and seen_status is None:
            seen_status = await client.status()
        if event.method == "process.completed":
            break
    assert seen_status is not None and seen_status["resources"]["num_processes"] >= 1
    assert "progress" in seen_status


def cpu_seconds(proc: psutil.Process) -> tuple[float, float] | None:
    """(now, the process's CPU seconds so far) while it runs; None once it exited."""
    try:
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            times = proc.cpu_times()
    except psutil.Error:
        return None
    return time.monotonic(), times.user + times.system


async def test_metrics_carry_cpu_and_memory(started) -> None:
    """process.metrics reports the group's CPU and memory while it burns."""
    _, client = await started(metrics_interval=0.3)
    child = psutil.Process((await client.execute(argv=fake("burn", "2.0", "200")))["pid"])
    resources: list[dict[str, Any]] = []  # sampled while the child still ran
    spinning: tuple[float, float] | None = None
    latest: tuple[float, float] | None = None
    async for event in client.events():
        now = cpu_seconds(child)
        if isinstance(event, Output) and event.data.startswith("burning"):
            spinning = now
        elif event.method == "process.metrics" and now is not None:
            resources.append(event.params["resources"])
            latest = now if spinning is not None else None
        if isinstance(event, Completed):
            break
    assert spinning is not None and latest is not None and latest[0] > spinning[0]
    # The CPU the child really got while it spun, from its own CPU time: a whole core on a
    # quiet machine, less when other work shares the cores. The server's busiest sample
    # must show at least half of that (its samples tile the same span, so their peak is
    # at least their mean), and no more than the machine has.
    got = 100 * (latest[1] - spinning[1]) / (latest[0] - spinning[0])
    peak = max(r["cpu_percent"] for r in resources)
    print(f"\nburning child: {got:.0f}% CPU measured from its CPU time; server's peak figure {peak:.0f}%")
    assert got > 5, "the burning child got next to no CPU: nothing to compare"
    assert 0.5 * got <= peak <= 100 * (psutil.cpu_count() or 1) + 10
    assert max(r["rss_bytes"] for r in resources) > 200 << 20
    assert all(r["num_processes"] >= 1 for r in resources)


async def test_silence_status_carries_progress_and_resources(started) -> None:
    """process.status includes progress and resources."""
    _, client = await started(metrics_interval=0)
    await client.execute(argv=fake("silence", "1.2"), inactivity_threshold=0.4)
    statuses = [e for e in await collect(client) if e.method == "process.status"]
    assert statuses and all("progress" in s.params and "resources" in s.params for s in statuses)
    assert statuses[0].params["resources"]["num_processes"] >= 1


async def test_a_child_stopped_by_someone_elses_sigstop_is_reported_stopped(started) -> None:
    """A child stopped by a SIGSTOP not of ours was reported "thinking" ('no output for 1 min 00 s');
    its process.status now carries stopped: true and says so, and after a SIGCONT it runs on."""
    _, client = await started(metrics_interval=0)
    code = "import os, signal; print('stopping', flush=True); os.kill(os.getpid(), signal.SIGSTOP); print('back')"
    await client.execute(argv=[sys.executable, "-c", code], inactivity_threshold=0.2)
    events: list[Event] = []

    async def follow() -> None:
        async for event in client.events():
            events.append(event)
            if event.method == "process.status" and event.params["stopped"]:
                os.kill(event.params["pid"], signal.SIGCONT)
            if isinstance(event, Completed):
                return

    await asyncio.wait_for(follow(), scaled(30))
    stopped = [e.params for e in events if e.method == "process.status" and e.params["stopped"]]
    assert stopped and stopped[0]["status"] == "running"
    assert stopped[0]["message"].startswith("Process is stopped (SIGSTOP/SIGTSTP), no output for ")
    assert "back" in output_of(events)


@pytest.mark.parametrize("capture", ["file", "pipe"])
async def test_output_written_while_the_server_was_stopped_is_no_silence(started, capture) -> None:
    """A server stopped (kill -STOP) for longer than the threshold while its child prints on:
    on waking it reported "Process is thinking... (no output for 8.0 s)" of a child that had
    printed all along (it read its silence from before the stop)."""
    _, client = await started(metrics_interval=0)
    await client.execute(argv=fake("ticker", "60", "0.05"), inactivity_threshold=0.5, capture=capture)
    events: list[Event] = []
    holder = None

    async def follow() -> None:
        nonlocal holder
        async for event in client.events():
            events.append(event)
            if event.method == "process.output" and holder is None:
                stop = f"sleep 0.1; kill -STOP {os.getpid()}; sleep 1.5; kill -CONT {os.getpid()}"
                holder = subprocess.Popen(["sh", "-c", stop])  # this process, the server in it, is stopped
            if isinstance(event, Completed):
                return

    await asyncio.wait_for(follow(), scaled(30))
    assert holder is not None and holder.wait() == 0
    assert [e.params["message"] for e in events if e.method == "process.status"] == []


async def test_a_silent_child_that_runs_is_not_reported_stopped(started) -> None:
    """``stopped`` is false for a child that is only silent (sleeping, state S)."""
    _, client = await started(metrics_interval=0)
    await client.execute(argv=fake("silence", "1.5"), inactivity_threshold=0.3)
    statuses = [e.params for e in await collect(client) if e.method == "process.status"]
    assert statuses and not any(s["stopped"] for s in statuses)
    assert statuses[0]["message"].startswith("Process is thinking...")


async def test_a_runs_duration_counts_from_its_spawn_not_from_the_history_lookup(started, tmp_path) -> None:
    """A run's duration started when its history had been read, after the spawn: with a
    lookup that takes 0.3 s, `sleep 0.5` recorded about 0.2 s (and `sleep 0.05` 49.7 ms with
    a fast one); the clock now starts before the spawn, so it is never shorter than the child."""
    handler, client = await started(history_path=str(tmp_path / "history.sqlite3"))
    durations = handler.history.durations

    def slow_durations(key: str, limit: int = 20) -> list[float]:
        time.sleep(0.3)
        return durations(key, limit)

    handler.history.durations = slow_durations
    await client.execute(argv=["sleep", "0.5"])
    assert completed(await collect(client)).params["duration_seconds"] >= 0.5


async def test_a_group_found_empty_is_no_longer_watched() -> None:
    """The sampler forgets a group once a sample finds it empty (its run ended): a long-lived
    server watched every group it ever ran, one more per run, for good."""
    sampler = ResourceSampler(max_age=0)
    ended = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert (await sampler.figures(ended.pid))["num_processes"] == 1
    finally:
        ended.kill()
        ended.wait()
    ours = os.getpgid(0)
    assert (await sampler.figures(ours))["num_processes"] >= 1
    assert sampler.watched == {ours}
