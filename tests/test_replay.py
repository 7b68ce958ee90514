"""The replay log behind resume, without sockets: order and bounds."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc_executor_nb.errors import OutputGap
from cc_executor_nb.server.disk import DiskBudget
from cc_executor_nb.server.replay import ReplayLog, TailPool

from .util import eventually


def _body(seq: int) -> bytes:
    return b'{"seq":%d,"data":"%s"}' % (seq, b"x" * (seq % 50))


@settings(max_examples=100, deadline=None)
@given(count=st.integers(min_value=0, max_value=300), last=st.integers(min_value=0, max_value=300))
def test_since_gives_every_later_notification_in_order(count: int, last: int) -> None:
    """Every notification after last_seq comes back exactly once, in order."""
    log = ReplayLog(limit=1 << 30)
    for seq in range(1, count + 1):
        log.append(seq, _body(seq))
    last = min(last, count)
    assert list(log.since(last)) == [_body(seq) for seq in range(last + 1, count + 1)]
    log.close()


def test_appends_after_a_replay_follow_on() -> None:
    """Appends made after a replay come back after the ones already replayed."""
    log = ReplayLog(limit=1 << 30)
    for seq in range(1, 11):
        log.append(seq, _body(seq))
    assert len(list(log.since(0))) == 10
    for seq in range(11, 21):
        log.append(seq, _body(seq))
    assert list(log.since(5)) == [_body(seq) for seq in range(6, 21)]
    log.close()


def test_old_notifications_past_the_limit_are_a_gap() -> None:
    """Past the limit whole old segments go; asking for them names the first seq kept."""
    log = ReplayLog(limit=4000)
    for seq in range(1, 401):
        log.append(seq, b"y" * 100)
    assert log.size <= 4000 + 1000
    first = log.first_seq
    assert first > 1
    with pytest.raises(OutputGap) as gap:
        log.since(0)
    assert gap.value.data == {"first_available_seq": first}
    assert len(list(log.since(first - 1))) == 400 - first + 1
    log.close()


def test_closing_a_big_log_frees_its_files() -> None:
    """Closing releases every segment file, a big one from a worker thread."""
    log = ReplayLog(limit=64 << 20)
    for seq in range(1, 21):
        log.append(seq, b"w" * (1 << 20))
    fds = [segment.fd for segment in log._segments]
    log.close()
    eventually(lambda: not any(_is_open(fd) for fd in fds), timeout=5, what="every segment file closed")
    assert log.size == 0 and list(log.since(log.last_seq)) == []


def test_short_writes_are_carried_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that takes only part of a notification is carried on: replay gives it whole."""
    real_pwrite, real_pwritev = os.pwrite, os.pwritev

    def short_pwrite(fd: int, data: bytes, offset: int) -> int:
        return real_pwrite(fd, bytes(data[:1000]), offset)

    def short_pwritev(fd: int, buffers: list[memoryview], offset: int) -> int:
        return real_pwritev(fd, [bytes(buffers[0][:1000])], offset)

    monkeypatch.setattr(os, "pwrite", short_pwrite)
    monkeypatch.setattr(os, "pwritev", short_pwritev)
    log = ReplayLog(limit=1 << 30)
    bodies = [bytes([65 + seq]) * 5000 for seq in range(1, 4)]
    for seq, body in enumerate(bodies, start=1):
        log.append(seq, body)
    assert list(log.since(0)) == bodies
    log.close()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_memory_tail_reaches_the_disk_only_when_it_overflows() -> None:
    """Under its memory limit nothing is written; past it the oldest part is spilled, and replay is whole."""
    log = ReplayLog(limit=1 << 30, memory_limit=64 << 10)
    for seq in range(1, 61):
        log.append(seq, bytes([65 + seq % 26]) * 1024)
    assert (log.spilled, log.size, log.segments) == (0, 0, 0)
    for seq in range(61, 201):
        log.append(seq, bytes([65 + seq % 26]) * 1024)
    assert log.spilled > 0 and log.size == log.spilled and log.memory_size <= 64 << 10
    assert list(log.since(0)) == [bytes([65 + seq % 26]) * 1024 for seq in range(1, 201)]
    log.close()


def test_acknowledged_notifications_are_forgotten_and_asking_for_them_is_a_gap() -> None:
    """After ack(k), replay from k works and anything older is -32003 naming k + 1."""
    log = ReplayLog(limit=1 << 30, memory_limit=1 << 20)
    for seq in range(1, 21):
        log.append(seq, _body(seq))
    log.ack(12)
    assert log.first_seq == 13 and log.memory_size == sum(len(_body(seq)) for seq in range(13, 21))
    assert list(log.since(12)) == [_body(seq) for seq in range(13, 21)]
    with pytest.raises(OutputGap) as gap:
        log.since(11)
    assert gap.value.data == {"first_available_seq": 13}
    log.close()


def test_an_ack_never_goes_past_the_last_notification() -> None:
    """An ack ahead of the log forgets what there is, not what comes next."""
    log = ReplayLog(limit=1 << 30, memory_limit=1 << 20)
    log.append(1, _body(1))
    log.ack(50)
    log.append(2, _body(2))
    assert log.acked == 1 and list(log.since(1)) == [_body(2)]
    log.close()


def test_a_reader_that_acknowledges_in_time_makes_the_log_write_nothing() -> None:
    """10 MB through a 256 KiB tail, acknowledged every 64 KiB: not one byte reaches the disk."""
    log = ReplayLog(limit=1 << 30, memory_limit=256 << 10)
    body = b"z" * 4096
    for seq in range(1, 2561):
        log.append(seq, body)
        if seq % 16 == 0:
            log.ack(seq)
    assert log.spilled == 0 and log.segments == 0
    assert log.memory_size == 0
    log.close()


def test_an_ack_past_spilled_segments_frees_them() -> None:
    """Segments wholly acknowledged are dropped (their files closed); the budget is told."""
    budget = DiskBudget(reserve=0)
    use = budget.use()
    log = ReplayLog(limit=1 << 30, memory_limit=64 << 10, disk=use)
    use.replay = log
    for seq in range(1, 1001):
        log.append(seq, b"q" * 1024)
    fds = [segment.fd for segment in log._segments]
    assert fds and use.used == log.size > 0
    log.ack(1000)
    assert (log.size, log.segments, log.memory_size, use.used) == (0, 0, 0, 0)
    eventually(lambda: not any(_is_open(fd) for fd in fds), timeout=5, what="every segment file closed")
    log.close()


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(min_value=1, max_value=3000), st.booleans()), max_size=120),
    memory=st.sampled_from([0, 2048, 16384]),
)
def test_with_acks_and_spills_replay_from_the_ack_is_exact(steps: list[tuple[int, bool]], memory: int) -> None:
    """Any mix of appends (of any size) and acks: since(acked) is every later notification, in order."""
    log = ReplayLog(limit=1 << 30, memory_limit=memory)
    bodies: dict[int, bytes] = {}
    for seq, (size, ack) in enumerate(steps, start=1):
        bodies[seq] = bytes([48 + seq % 10]) * size
        log.append(seq, bodies[seq])
        if ack:
            log.ack(seq - 1)
    assert list(log.since(log.acked)) == [bodies[seq] for seq in range(log.acked + 1, len(steps) + 1)]
    assert log.memory_size <= memory
    log.close()


def test_tails_past_their_shared_pool_spill_to_disk() -> None:
    """Many logs share a memory pool: once it is over its limit, the log that appends spills its tail."""
    pool = TailPool(limit=100 << 10)
    logs = [ReplayLog(limit=1 << 30, memory_limit=64 << 10, pool=pool) for _ in range(4)]
    for seq in range(1, 41):
        for log in logs:
            log.append(seq, b"p" * 1024)
    assert pool.used == sum(log.memory_size for log in logs) <= 100 << 10 + 1024
    assert sum(log.spilled for log in logs) > 0
    assert all(list(log.since(0)) == [b"p" * 1024] * 40 for log in logs)
    for log in logs:
        log.close()
    assert pool.used == 0


def test_a_tail_that_keeps_cycling_reuses_its_blocks() -> None:
    """64 MiB through a 4 MiB tail, acknowledged every MiB: a handful of blocks, made once."""
    pool = TailPool()
    log = ReplayLog(limit=1 << 30, memory_limit=4 << 20, pool=pool)
    body = bytes(range(256)) * 256  # 64 KiB
    for seq in range(1, 1025):
        log.append(seq, body)
        if seq % 16 == 0:
            log.ack(seq - 16)  # one MiB behind, as a client that keeps up
    assert log.spilled == 0 and list(log.since(log.acked)) == [body] * (1024 - log.acked)
    assert pool.allocated <= 4
    log.close()
