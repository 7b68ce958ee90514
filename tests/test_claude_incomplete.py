"""No false success: a Claude stream that ends without its result is failed, and says so."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cc_executor_nb.claude.interpreter import ClaudeInterpreter
from cc_executor_nb.claude.render import claude_body_html
from cc_executor_nb.events import Completed
from cc_executor_nb.kernel.html import header_html
from cc_executor_nb.kernel.loop import KernelLoop
from cc_executor_nb.kernel.run import Run, RunSpec, Target

from .conftest import make_handler

pytestmark = pytest.mark.timeout(60)

RECORDING = Path(__file__).with_name("data") / "streamjson" / "haiku.jsonl"
# A stand-in claude: the recording's lines, all of them or all but the last (the result),
# then exit 0, as the CLI 2.1.197 does when its stdout pipe was full at exit.
PRINT = (
    "import sys\nlines = open(sys.argv[1]).readlines()\n"
    "sys.stdout.write(''.join(lines[: len(lines) - int(sys.argv[2])]))"
)


@pytest.fixture
def bg() -> Iterator[KernelLoop]:
    loop = KernelLoop(lambda: make_handler(kill_grace=1.0), thread_name="ccx-incomplete-test")
    loop.start()
    yield loop
    loop.stop()


def claude_run(loop: KernelLoop, dropped_lines: int) -> Run:
    assert loop.server is not None
    spec = RunSpec(argv=[sys.executable, "-c", PRINT, str(RECORDING), str(dropped_lines)], progress_target=None)
    run = Run(spec, Target(loop.server.url, loop.server.token), interpreter=ClaudeInterpreter())
    return run.start(loop).wait(30)


def test_a_stream_without_its_result_is_failed_with_the_reason(bg: KernelLoop) -> None:
    """Exit 0 but no result event: the run is failed, the error says the output was
    incomplete and gives the exit code; run.events says failed too."""
    run = claude_run(bg, dropped_lines=1)
    assert (run.status, run.exit_code, run.result) == ("failed", 0, None)
    assert run.error == "the output was incomplete: Claude's stream ended without a result event (exit code 0)"
    done = next(e for e in run.events if isinstance(e, Completed))
    assert done.status == "failed" and done.params["incomplete"] is True


def test_a_whole_stream_is_completed(bg: KernelLoop) -> None:
    """The same recording with its result: completed, no error."""
    run = claude_run(bg, dropped_lines=0)
    assert (run.status, run.exit_code, run.error) == ("completed", 0, None)
    assert run.result is not None and run.text


def test_the_widget_says_plainly_that_claude_gave_no_result(bg: KernelLoop) -> None:
    """The view of such a run: "No result from Claude: the run failed with exit code 0" in the
    body, the incomplete-output error in the header."""
    run = claude_run(bg, dropped_lines=1)
    assert isinstance(run.interpreter, ClaudeInterpreter)
    with run.interpreter.locked() as parsed:
        body = claude_body_html(parsed, status=run.status, exit_code=run.exit_code)
    header = header_html(run.state, time.monotonic(), "claude: haikus")
    assert "No result from Claude: the run failed with exit code 0" in body
    assert "the output was incomplete" in header and "exit code 0" in header


def test_the_terminal_client_exits_1_for_an_incomplete_claude_run() -> None:
    """python -m cc_executor_nb claude judges the end the same way: failed, exit status 1."""
    from cc_executor_nb.cli import exit_status
    from cc_executor_nb.events import make_event
    from cc_executor_nb.kernel.run import judged

    interpreter = ClaudeInterpreter()
    for line in RECORDING.read_text().splitlines(keepends=True)[:-1]:
        interpreter.feed("stdout", line)
    event = judged(make_event("process.completed", {"status": "completed", "exit_code": 0}), interpreter)
    assert isinstance(event, Completed) and event.status == "failed" and exit_status(event) == 1
