"""Where the in-kernel server's log lines go in a real kernel: its process's stderr, no cell.

The kernels here capture fd 2 as in a notebook (``capture_fd``), so a line written to
the process's stderr the ordinary way would reach the running cell too. The server's
warning is a real one: a run that leaves a setsid'd process behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kernel_utils import KernelHarness, ccexec, fake_command
from .util import eventually

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(60)]

WARNING = "left processes outside its group (setsid)"


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[tuple[KernelHarness, Path]]:
    """A kernel with the extension loaded, its own stderr going to a file; and that file."""
    path = tmp_path / "kernel-stderr.txt"
    with path.open("wb") as stderr:
        harness = KernelHarness.start(tmp_path, stderr=stderr, capture_fd=True)
    harness.ok("%load_ext cc_executor_nb")
    yield harness, path
    harness.shutdown()


ESCAPED = "[e.params['escaped_pids'] for e in d.events if e.method == 'process.completed']"


def warn_during_a_run(harness: KernelHarness) -> None:
    """Run a command that leaves a setsid'd process: the server warns before it sends the
    run's end, which names that process. Then one more cell, which flushes what the
    kernel's streams hold into IOPub before its own end."""
    harness.ok(ccexec(fake_command("daemon"), "--wait", "-o", "d"))
    [escaped] = harness.value(ESCAPED)
    assert escaped, "the run left no process behind: the server had nothing to warn about"
    harness.ok("import time; time.sleep(0.5)")


def test_a_server_warning_during_a_run_reaches_no_cell(kernel: tuple[KernelHarness, Path]) -> None:
    """The server's WARNING during a run appears in no cell's stream output."""
    harness, _ = kernel
    warn_during_a_run(harness)
    streams = [r.content["text"] for r in harness.log if r.type == "stream"]
    assert not [text for text in streams if WARNING in text]


def test_a_server_warning_goes_to_the_kernel_process_stderr_naming_its_logger(
    kernel: tuple[KernelHarness, Path],
) -> None:
    """The warning is one line on the kernel process's stderr, naming the server's logger."""
    harness, path = kernel
    warn_during_a_run(harness)

    def lines_with_the_warning() -> list[str]:
        return [line for line in path.read_text().splitlines() if WARNING in line]

    lines = eventually(lines_with_the_warning, what="the server's warning on the kernel's stderr")
    assert len(lines) == 1
    assert re.fullmatch(r"\[W \d\d:\d\d:\d\d cc_executor_nb\.server\.execution\] ! \[ENHANCED\] pid \d+ "
                        + re.escape(WARNING) + r": \[\d+\]", lines[0])


def test_a_server_warning_with_the_kernel_process_stderr_gone_reaches_no_cell(tmp_path: Path) -> None:
    """The kernel process's stderr is a pipe nobody reads any more (the Jupyter server or the
    terminal that started the kernel went away, the kernel lives on): the warning is lost
    with it. It put a "--- Logging error ---" traceback of 30 lines (BrokenPipeError) into
    the running cell."""
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as stderr:
        harness = KernelHarness.start(tmp_path, stderr=stderr, capture_fd=True)
    os.close(read_end)
    try:
        harness.ok("%load_ext cc_executor_nb")
        warn_during_a_run(harness)
        streams = [r.content["text"] for r in harness.log if r.type == "stream"]
        assert not [text for text in streams if "Logging error" in text or WARNING in text]
    finally:
        harness.shutdown()
