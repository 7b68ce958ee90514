"""The kernel-side output store: the whole output, a few MiB in memory, the rest in a file."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from cc_executor_nb.events import Output, make_event
from cc_executor_nb.kernel import output as output_module
from cc_executor_nb.kernel.output import RECENT_CHARS, OutputStore
from cc_executor_nb.kernel.runstate import RunState

pytestmark = pytest.mark.timeout(60)

TEXT = "é€😀 mixed widths\n"


def filled(memory_limit: int = 1 << 10, lines: int = 500) -> tuple[OutputStore, str, str]:
    """A store past its memory limit, with the stdout and stderr it was given."""
    store = OutputStore(memory_limit=memory_limit)
    out, err = [], []
    for i in range(lines):
        text = f"{i} {TEXT}"
        (err if i % 7 == 0 else out).append(text)
        store.append("stderr" if i % 7 == 0 else "stdout", text)
    return store, "".join(out), "".join(err)


def test_small_output_stays_in_memory_and_reads_back_whole() -> None:
    """Under the memory limit nothing is written to disk; each stream reads back exactly."""
    store, out, err = filled(memory_limit=1 << 20, lines=50)
    assert store._path is None
    assert (store.text("stdout"), store.text("stderr")) == (out, err)


def test_past_the_memory_limit_the_output_moves_to_a_file_whole() -> None:
    """Past the limit the log lives in a file (path); streams and the whole read back exactly."""
    store, out, err = filled()
    with open(store.path, encoding="utf-8") as handle:
        whole = handle.read()
    assert store._memory is None and len(whole) == len(out) + len(err)
    assert (store.text("stdout"), store.text("stderr")) == (out, err)
    assert sorted(whole.splitlines()) == sorted((out + err).splitlines())


def test_chunks_never_split_a_character_and_join_to_the_text() -> None:
    """iter_chunks in 5-byte steps: every chunk decodes, and they join to the stream's text."""
    store, out, _ = filled()
    chunks = list(store.iter_chunks("stdout", size=5))
    assert len(chunks) > 100 and "".join(chunks) == out


def test_tail_gives_the_last_lines_of_a_stream_or_of_both() -> None:
    """tail(n) is the last n lines, like tail -n; of one stream when asked."""
    store, out, err = filled()
    assert store.tail(3, "stdout") == "".join(out.splitlines(keepends=True)[-3:])
    assert store.tail(2, "stderr") == "".join(err.splitlines(keepends=True)[-2:])
    assert store.tail(1) == f"499 {TEXT}"
    assert store.tail(0) == ""


@pytest.mark.parametrize("read", [
    lambda store: store.tail(2, "both"), lambda store: store.last(10, "both"), lambda store: store.text("both"),
    lambda store: next(store.iter_chunks("both")),
])
def test_a_stream_that_is_not_one_is_named_in_the_error(read) -> None:
    """tail(2, "both") and the other readers said "tuple.index(x): x not in tuple"; the
    error now names the streams there are, and None for both."""
    store, _, _ = filled()
    with pytest.raises(ValueError) as refused:
        read(store)
    assert str(refused.value) == "stream must be 'stdout', 'stderr' or None (both), not 'both'"


def test_the_view_tail_holds_the_latest_characters_in_order() -> None:
    """tail_pieces(n) keeps the last n characters, streams told apart, from memory or disk."""
    store, _, _ = filled()
    everything = store.text()
    for budget in (10, 1000, RECENT_CHARS + 5):
        pieces = store.tail_pieces(budget)
        assert "".join(text for _, text in pieces) == everything[-budget:]
    assert {stream for stream, _ in store.tail_pieces(2000)} == {"stdout", "stderr"}


def test_last_gives_the_latest_characters_of_a_stream_without_reading_it_all() -> None:
    """last(n, stream) equals the stream's text[-n:] (wide characters, both streams, memory or disk)."""
    for memory_limit in (1 << 10, 1 << 20):
        store, out, err = filled(memory_limit=memory_limit)
        for budget in (1, 7, 500, len(out) + 10):
            assert store.last(budget, "stdout") == out[-budget:]
            assert store.last(budget, "stderr") == err[-budget:]
        assert store.last(300) == store.text()[-300:]
        assert store.last(0, "stdout") == ""


def test_kept_output_events_read_their_text_from_the_store() -> None:
    """An output event kept in run.events carries no copy: its data is read on demand, equal."""
    store = OutputStore(memory_limit=64)
    event = make_event("process.output", {"type": "stdout", "data": "x" * 100 + "\n", "seq": 3})
    store.append("stdout", event.params["data"])
    kept = store.keep(event)
    assert isinstance(kept, Output) and kept is not event
    assert kept.data == event.data and dict(kept.params) == dict(event.params) and kept.seq == 3


def test_readers_on_another_thread_see_whole_pieces() -> None:
    """A thread reading stdout while the loop appends always sees whole lines."""
    store = OutputStore(memory_limit=4096)
    done = threading.Event()
    seen: list[str] = []

    def read() -> None:
        while not done.is_set():
            seen.append(store.text("stdout"))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(3000):
        store.append("stdout", f"line {i}\n")
    done.set()
    reader.join()
    assert all(text.endswith("\n") or not text for text in seen)
    assert store.text("stdout") == "".join(f"line {i}\n" for i in range(3000))


def test_close_removes_the_file() -> None:
    """close() (and the store's collection) removes its file."""
    store, _, _ = filled()
    path = store.path
    store.close()
    assert not os.path.exists(path)


def test_run_state_reads_its_output_from_the_store() -> None:
    """RunState.stdout, stderr, pieces and tail come from its OutputStore."""
    state = RunState()
    state.output = OutputStore(memory_limit=16)
    for seq, (stream, text) in enumerate([("stdout", "a\n"), ("stderr", "warn\n"), ("stdout", "b" * 40 + "\n")], 1):
        state.apply("process.output", {"type": stream, "data": text, "seq": seq}, float(seq))
    assert (state.stdout, state.stderr) == ("a\n" + "b" * 40 + "\n", "warn\n")
    assert state.pieces == [("stdout", "a\n"), ("stderr", "warn\n"), ("stdout", "b" * 40 + "\n")]
    assert state.tail(5).pieces == [("stdout", "bbbb\n")] and state.tail(5).cut_chars == state.output_chars - 5


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Make the store's file writes fail with ENOSPC once ``room`` bytes were written."""
    write = os.write
    left = [room]

    def full(fd: int, data: bytes | memoryview) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done = write(fd, bytes(data[: left[0]]))
        left[0] -= done
        return done

    monkeypatch.setattr(output_module.os, "write", full)


@pytest.mark.parametrize("room", [0, 3000])
def test_a_full_disk_loses_no_output_and_says_why(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """No room for the file (or the disk fills after the move): what does not fit stays in
    memory, every read gives the whole output, and ``disk_error`` says why (the append raised
    ENOSPC into the event listener for every later piece, and all but the first MiB was lost)."""
    _disk_full_after(monkeypatch, room)
    store, out, err = filled()
    assert store.text("stdout") == out and store.text("stderr") == err
    assert store.tail(3, "stdout") == "".join(out.splitlines(keepends=True)[-3:])
    assert store.last(50) == (store.text())[-50:]
    assert isinstance(store.disk_error, OSError) and store.disk_error.errno == errno.ENOSPC
    store.close()
