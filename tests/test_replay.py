"""The replay log behind resume, without sockets: order and bounds."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc_executor_nb.errors import OutputGap
from cc_executor_nb.server.replay import ReplayLog

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
