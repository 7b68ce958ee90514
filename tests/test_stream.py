"""Line alignment, decoding and spooling, without processes or sockets."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from cc_executor_nb import protocol
from cc_executor_nb.server.streams import CHUNK_LIMIT, LineAligner, OutputSpool, coalesce


def test_complete_lines_pass_and_partial_waits() -> None:
    """Complete lines leave at once; the partial line waits."""
    aligner = LineAligner(limit=100)
    assert aligner.feed(b"one\ntwo\nthr") == ["one\ntwo\n"]
    assert aligner.partial == "thr"
    assert aligner.feed(b"ee\n") == ["three\n"]


def test_flush_gives_up_the_partial_line() -> None:
    """A prompt without newline is released by flush."""
    aligner = LineAligner()
    assert aligner.feed(b"Password: ") == []
    assert aligner.flush() == ["Password: "]
    assert aligner.flush() == []


def test_long_line_leaves_in_limit_sized_pieces() -> None:
    """A line longer than the limit is cut into pieces of exactly the limit."""
    aligner = LineAligner(limit=10)
    pieces = aligner.feed(b"x" * 35)
    assert pieces == ["x" * 10] * 3 and aligner.partial == "x" * 5
    assert aligner.feed(b"\n") == ["xxxxx\n"]


def test_many_lines_are_grouped_up_to_the_limit_at_newlines() -> None:
    """Complete lines are grouped into pieces that end at a newline when possible."""
    aligner = LineAligner(limit=8)
    assert aligner.feed(b"aa\nbb\ncc\ndd\n") == ["aa\nbb\n", "cc\ndd\n"]


def test_multibyte_character_split_across_reads_is_decoded_whole() -> None:
    """A 4-byte character split across two reads decodes as one character."""
    aligner = LineAligner()
    smile = "\U0001F600".encode()
    assert aligner.feed(b"a" + smile[:1]) == []
    assert aligner.feed(smile[1:] + b"\n") == ["a\U0001F600\n"]


def test_invalid_utf8_is_replaced() -> None:
    """Invalid bytes become U+FFFD."""
    assert LineAligner().feed(b"\xff\xfeok\n") == ["\ufffd\ufffdok\n"]


def test_truncated_character_at_eof_is_replaced() -> None:
    """finish flushes a dangling partial character as U+FFFD."""
    aligner = LineAligner()
    aligner.feed("é".encode()[:1])
    assert aligner.finish() == ["\ufffd"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=20), st.integers(1, 40))
def test_pieces_concatenate_to_the_decoded_input(data: bytes, cuts: list[int], limit: int) -> None:
    """However the bytes are split, the pieces concatenate to the decoded text."""
    aligner = LineAligner(limit=limit)
    pieces: list[str] = []
    pos = 0
    for size in cuts:
        pieces += aligner.feed(data[pos : pos + size])
        pos += size
        if size % 3 == 0:
            pieces += aligner.flush()
    pieces += aligner.feed(data[pos:])
    pieces += aligner.finish()
    assert "".join(pieces) == data.decode("utf-8", errors="replace")
    assert all(len(piece) <= limit for piece in pieces)


class _Decoding(LineAligner):
    """The aligner without its ASCII path: every read decoded, joined and cut as text."""

    def _feed_ascii(self, data: bytes) -> list[str]:
        return self._feed_text(data)


_READS = st.lists(
    st.one_of(st.text(alphabet="ab\n", max_size=60).map(str.encode), st.binary(max_size=8)), max_size=20
)


@settings(max_examples=400, deadline=None)
@given(_READS, st.integers(1, 12), st.lists(st.booleans(), max_size=20))
def test_ascii_reads_are_cut_as_decoded_text_would_be(reads: list[bytes], limit: int, flushes: list[bool]) -> None:
    """The ASCII path (a read of ASCII, no character pending) gives exactly the pieces and
    partial line of decoding the read first, also between reads of other bytes."""
    fast, slow = LineAligner(limit=limit), _Decoding(limit=limit)
    for index, data in enumerate(reads):
        assert fast.feed(data) == slow.feed(data)
        assert fast.partial == slow.partial
        if index < len(flushes) and flushes[index]:
            assert fast.flush() == slow.flush()
    assert fast.finish() == slow.finish()


def test_spool_is_fifo_in_memory() -> None:
    """Records come out in the order they went in."""
    spool = OutputSpool(memory_limit=1000)
    spool.append("stdout", "a\n")
    spool.append("stderr", "b\n")
    assert spool.pop(100) == [("stdout", "a\n"), ("stderr", "b\n")]
    assert spool.empty


def test_spool_spills_to_file_and_keeps_order() -> None:
    """Past the memory limit records go to the file, and order is kept."""
    spool = OutputSpool(memory_limit=10)
    records = [("stdout" if i % 3 else "stderr", f"line {i}\n") for i in range(50)]
    for record in records:
        spool.append(*record)
    assert spool.memory_chars <= 10 and spool.spilled_bytes > 0
    out = []
    while not spool.empty:
        out += spool.pop(20)
    assert out == records
    spool.close()


def test_a_spool_that_may_not_spill_keeps_everything_in_memory_and_says_when_full() -> None:
    """spill=False (a capture file's spool): no file however much comes; ``full`` past the limit."""
    spool = OutputSpool(memory_limit=10, spill=False)
    records = [("stdout", f"line {i}\n") for i in range(50)]
    fullness = []
    for record in records:
        spool.append(*record)
        fullness.append(spool.full)
    assert fullness[:1] == [False] and all(fullness[1:]) and spool.spilled_bytes == 0
    assert spool.pop(1000) == records and not spool.full
    spool.close()


def test_spool_interleaves_appends_while_draining() -> None:
    """Appends made while the file drains stay behind the older records."""
    spool = OutputSpool(memory_limit=5)
    sent, got = [], []
    for i in range(200):
        record = ("stdout", f"{i}é\n")
        spool.append(*record)
        sent.append(record)
        if i % 7 == 0:
            got += spool.pop(9)
    while not spool.empty:
        got += spool.pop(9)
    assert got == sent
    spool.close()


def test_spool_pop_returns_at_least_one_record() -> None:
    """A record bigger than max_chars still comes out (never stuck)."""
    spool = OutputSpool(memory_limit=3)
    spool.append("stdout", "x" * 50)
    spool.append("stdout", "y" * 50)
    assert spool.pop(10) == [("stdout", "x" * 50)]
    assert spool.pop(10) == [("stdout", "y" * 50)]
    spool.close()


def test_spool_memory_stays_bounded_under_a_flood() -> None:
    """100,000 records with no reader never hold more than the memory limit."""
    spool = OutputSpool(memory_limit=4096)
    for i in range(100_000):
        spool.append("stdout", f"{i:08d}\n")
        assert spool.memory_chars <= 4096
    assert spool.spilled_bytes > 800_000
    spool.close()


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=200),
    steps=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["stdout", "stderr"]), st.text(min_size=1, max_size=40)),
            st.integers(min_value=1, max_value=120),
        ),
        max_size=150,
    ),
)
def test_spool_is_fifo_under_any_mix_of_appends_and_pops(limit: int, steps: list) -> None:
    """Whatever mix of appends and pops, records come out whole and in order."""
    spool = OutputSpool(memory_limit=limit)
    sent, got = [], []
    for step in steps:
        if isinstance(step, tuple):
            spool.append(*step)
            sent.append(step)
        else:
            got += spool.pop(step)
        assert spool.memory_chars <= max(limit, 40)
    while not spool.empty:
        got += spool.pop(50)
    assert got == sent
    spool.close()


def test_spool_writes_a_batch_at_a_time(monkeypatch) -> None:
    """Spilled records reach the file in batches, not one write per record."""
    writes = []
    real_pwritev = os.pwritev
    monkeypatch.setattr(os, "pwritev", lambda fd, buffers, pos: writes.append(pos) or real_pwritev(fd, buffers, pos))
    spool = OutputSpool(memory_limit=8000)  # batches of 1000 characters
    for i in range(10_000):
        spool.append("stdout", f"{i:08d}\n")
    assert spool.spilled_bytes > 80_000
    assert len(writes) <= spool.spilled_bytes // 900
    spool.close()


def test_spool_carries_on_after_short_writes_and_reads(monkeypatch) -> None:
    """A write or read that moves only part of a batch is carried on where it stopped."""
    real_pwritev, real_preadv, real_pread = os.pwritev, os.preadv, os.pread
    monkeypatch.setattr(os, "pwritev", lambda fd, buffers, pos: real_pwritev(fd, [bytes(buffers[0])[:7]], pos))
    monkeypatch.setattr(os, "pread", lambda fd, size, pos: real_pread(fd, min(size, 5), pos))
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, pos: real_preadv(fd, [buffers[0][:11]], pos))
    spool = OutputSpool(memory_limit=200)
    sent = [("stdout" if i % 2 else "stderr", f"line {i} é\n") for i in range(300)]
    for record in sent:
        spool.append(*record)
    got = []
    while not spool.empty:
        got += spool.pop(64)
    assert got == sent and spool.spilled_bytes > 2000
    spool.close()


def test_spool_file_is_reused_once_drained() -> None:
    """After the backlog drains, the next spill starts the file over: it never grows past the largest backlog."""
    spool = OutputSpool(memory_limit=800)
    for _round in range(5):
        for i in range(1000):
            spool.append("stdout", f"{i:08d}\n")
        while not spool.empty:
            spool.pop(500)
    assert spool._file is not None
    assert os.fstat(spool._file).st_size < 10_000
    spool.close()


def test_coalesce_joins_neighbours_of_one_stream_up_to_limit() -> None:
    """Neighbouring records of the same stream are joined up to the limit."""
    records = [("stdout", "a\n"), ("stdout", "b\n"), ("stderr", "c\n"), ("stdout", "d\n")]
    assert coalesce(records, 10) == [("stdout", "a\nb\n"), ("stderr", "c\n"), ("stdout", "d\n")]
    assert coalesce([("stdout", "aaa"), ("stdout", "bbb")], 5) == [("stdout", "aaa"), ("stdout", "bbb")]


def test_a_full_piece_of_control_characters_fits_a_1_mib_frame() -> None:
    """Even when every character needs a 6-byte escape, a process.output message stays under 1 MiB."""
    piece = "\x01" * CHUNK_LIMIT
    params = {"type": "stdout", "data": piece, "truncated": False, "seq": 2**53}
    message = protocol.notification("process.output", params)
    assert len(protocol.dumps_bytes(message)) < 1 << 20
    assert len(protocol.dumps(message).encode()) < 1 << 20
