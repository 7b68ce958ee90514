"""The disk budget: replay dropped first, then the run held, released under the low mark."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest

from cc_executor_nb.errors import OutputGap
from cc_executor_nb.server import streams as streams_module
from cc_executor_nb.server.disk import DISK_WINDOW, DiskBudget, DiskUse, high_mark, limit_reached, low_mark
from cc_executor_nb.server.replay import ReplayLog
from cc_executor_nb.server.streams import OutputSpool

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20
LIMIT = 64 * MIB


class Calls:
    """Records what the budget asked of a session."""

    def __init__(self, use: DiskUse) -> None:
        self.use = use
        self.held: list[str] = []
        self.released_at: list[int] = []
        self.dropped: list[tuple[int, str]] = []
        use.hold, use.release = self.held.append, self.release
        use.replay_dropped = lambda seq, scope: self.dropped.append((seq, scope))

    def release(self) -> None:
        self.released_at.append(self.use.used)


_REPLAYS: list[ReplayLog] = []
"""The replay logs session() made, closed after each test (their files stayed open: a later
test that counts this process's temporary files saw them)."""


@pytest.fixture(autouse=True)
def close_replays() -> Iterator[None]:
    yield
    while _REPLAYS:
        _REPLAYS.pop().close()


def session(budget: DiskBudget, replay_limit: int = 256 * MIB) -> tuple[DiskUse, ReplayLog, Calls]:
    use = budget.use()
    limits = [limit for limit in (budget.session_limit, budget.limit) if limit is not None]
    replay = ReplayLog(replay_limit, segment_limit=min(limits, default=None), disk=use)
    _REPLAYS.append(replay)
    use.replay = replay
    return use, replay, Calls(use)


def fill(replay: ReplayLog, megabytes: int, first_seq: int = 1) -> int:
    body = b"x" * (64 << 10)
    seq = first_seq
    for _ in range(megabytes * 16):
        replay.append(seq, body)
        seq += 1
    return seq


def test_a_session_over_its_limit_drops_its_oldest_replay_and_says_so() -> None:
    """Replay past the high mark of the session limit: the oldest segment goes, with the first
    seq kept."""
    budget = DiskBudget(session_limit=LIMIT, reserve=0)
    use, replay, calls = session(budget)
    fill(replay, 80)
    assert calls.dropped and all(scope == "session" for _, scope in calls.dropped)
    assert replay.first_seq == calls.dropped[-1][0] > 1
    assert use.used == replay.size < high_mark(LIMIT) and budget.peak < LIMIT
    assert len(calls.dropped) == len(set(calls.dropped))  # one notice per drop, never repeated
    with pytest.raises(OutputGap) as info:
        replay.since(0)
    assert info.value.data == {"first_available_seq": replay.first_seq}
    assert not calls.held  # dropping replay was enough


def test_a_spool_over_the_limit_holds_the_run_until_it_drains_to_half() -> None:
    """Output waiting for a slow client past the high mark: the run is held; under the low
    mark it goes on."""
    budget = DiskBudget(session_limit=LIMIT, reserve=0)
    use, _replay, calls = session(budget)
    spool = OutputSpool(memory_limit=MIB, disk=use)
    piece = "y" * (64 << 10)
    while not calls.held:
        spool.append("stdout", piece)
    assert calls.held == ["session"] and use.held == "session"
    assert high_mark(LIMIT) <= use.used < LIMIT
    while not calls.released_at and not spool.empty:
        spool.pop(len(piece))
    assert len(calls.released_at) == 1 and calls.released_at[0] < low_mark(LIMIT) and use.held is None
    spool.close()
    assert use.used == 0 == budget.used


def test_the_server_limit_drops_the_oldest_replay_of_any_session() -> None:
    """Two sessions against a server limit: the older replay goes first, wherever it is."""
    budget = DiskBudget(limit=LIMIT, reserve=0)
    old, old_replay, _ = session(budget)
    new, new_replay, _ = session(budget)
    order: list[str] = []
    old.replay_dropped = lambda seq, scope: order.append(f"old {scope}")
    new.replay_dropped = lambda seq, scope: order.append(f"new {scope}")
    fill(old_replay, 20)
    fill(new_replay, 40)
    assert order[0] == "old server" and "new server" in order
    assert budget.peak < LIMIT and budget.used == old.used + new.used


def test_the_free_space_reserve_counts_as_a_limit(tmp_path) -> None:
    """A file system with less free space than the reserve is a limit reached ("disk") once a
    window of output waits on disk (replay alone, which can be dropped, holds nothing)."""
    budget = DiskBudget(spool_dir=str(tmp_path), reserve=1 << 62)
    use, replay, calls = session(budget)
    replay.append(1, b"z" * 1024)
    assert calls.held == []
    spool = OutputSpool(memory_limit=0, disk=use)
    spool.append("stdout", "z" * DISK_WINDOW)
    assert calls.held == ["disk"]
    spool.close()


def test_a_disk_under_its_reserve_holds_a_run_only_while_its_output_waits_there(tmp_path) -> None:
    """Less free space than the reserve: a run goes on until a window of its output waits on
    disk, is held, and goes on once the client has read it all (it was held at its first
    output and never released: a spool directory with under 512 MiB free froze every run)."""
    budget = DiskBudget(spool_dir=str(tmp_path), reserve=1 << 62)
    use, _replay, calls = session(budget)
    spool = OutputSpool(memory_limit=64 << 10, disk=use)
    piece = "y" * (64 << 10)
    spool.append("stdout", piece)
    spool.append("stdout", piece)
    assert calls.held == [] and use.used > 0
    while not calls.held:
        spool.append("stdout", piece)
    assert calls.held == ["disk"] and use.used >= DISK_WINDOW
    while not spool.empty:
        spool.pop(len(piece))
    assert len(calls.released_at) == 1 and use.held is None
    spool.close()

def test_a_notice_names_the_limit_reached_in_words() -> None:
    """The free-space reserve reads as such (a notice said "the disk disk limit is reached")."""
    assert limit_reached("disk") == "the spool directory's disk has less than 256 MiB free"
    assert limit_reached("session") == "the session disk limit is reached"

def test_a_segment_dropped_during_a_replay_is_a_gap_not_a_skip() -> None:
    """The budget drops a segment while a resume is reading it: OutputGap, never a silent skip."""
    replay = ReplayLog(64 * MIB)
    for seq in range(1, 2000):
        replay.append(seq, b"w" * 4096)
    reading = replay.since(0)
    next(reading)
    replay.drop_oldest()
    with pytest.raises(OutputGap):
        list(reading)
    replay.close()


def test_a_spool_on_a_full_disk_keeps_its_records_in_order_and_holds_the_run(monkeypatch) -> None:
    """A spool whose file write fails (ENOSPC) keeps what it could not write in memory, in
    order, holds the run until it has drained, and then lets it go on (the OSError went up
    into the pipe reader, and the records being written were lost)."""

    def full(*_args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(streams_module, "pwritev_all", full)
    budget = DiskBudget(reserve=0)
    use, _replay, calls = session(budget)
    spool = OutputSpool(memory_limit=64 << 10, disk=use)
    pieces = [(("stdout", "stderr")[i % 2], f"{i:05d}" * 2000) for i in range(40)]
    for stream, text in pieces:
        spool.append(stream, text)
    assert calls.held == ["disk"] and isinstance(spool.disk_error, OSError)
    popped = []
    while not spool.empty:
        popped += spool.pop(1 << 20)
    assert popped == pieces
    assert len(calls.released_at) == 1 and use.held is None
    spool.close()
