"""Prompts bigger than the server's 8 MiB input queue, sent to a CLI that reads them slowly:
wherever a prompt is sent (a one-shot run, a durable one-shot job, host mode, the terminal
client) the client waits for room as the CLI reads, and the CLI gets every byte."""

from __future__ import annotations

import asyncio
import hashlib
import io
import sys
from pathlib import Path
from typing import Any

import pytest

import cc_executor_nb as ccx
from cc_executor_nb import cli
from cc_executor_nb.kernel.config import CCExec

from .util import scaled

pytestmark = pytest.mark.timeout(60)

PROMPT = "y" * (11 << 20)
"""11 MiB: 3 MiB more than the server queues unread for a process."""
SLOW_CLI = Path(__file__).with_name("big_prompt_cli.py")


def length_and_digest(text: str) -> str:
    """What the slow CLI answers when it read ``text``."""
    data = text.encode("utf-8")
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"


@pytest.fixture
def slow_claude(tmp_path: Path) -> Path:
    """An executable ``claude`` that reads its stdin slowly (``big_prompt_cli.py``)."""
    executable = tmp_path / "claude"
    executable.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SLOW_CLI}" "$@"\n')
    executable.chmod(0o755)
    return executable


def settings() -> CCExec:
    """Settings for tests: no history file, a short kill grace."""
    config = CCExec()
    config.history_path = "none"
    config.kill_grace = 2.0
    return config


def run(executable: Path, tmp_path: Path, **options: Any) -> ccx.Run:
    """``PROMPT`` run by ``executable``, shown nowhere, waited for."""
    return ccx.run(PROMPT, executable=str(executable), display=False, cwd=str(tmp_path), settings=settings(),
                   wait=True, **options)


def test_a_one_shot_prompt_past_the_input_queue_arrives_whole(
    runtime_dir: Path, slow_claude: Path, tmp_path: Path
) -> None:
    """An 11 MiB one-shot prompt (``%ccexec``, ``run()``): it failed, "input queue full: 8388608
    bytes not yet read by the process (limit 8388608)"; the CLI now reads all of it."""
    done = run(slow_claude, tmp_path, interactive=False)
    assert (done.status, done.answer) == ("completed", length_and_digest(PROMPT)), done.error


def test_a_durable_one_shot_prompt_past_the_input_queue_arrives_whole(
    runtime_dir: Path, slow_claude: Path, tmp_path: Path
) -> None:
    """An 11 MiB durable one-shot job's prompt: the job was cancelled ("input queue full ...;
    its input was cut off, so its job was cancelled"); its CLI now reads all of it."""
    done = run(slow_claude, tmp_path, interactive=False, durable=True)
    assert (done.status, done.answer) == ("completed", length_and_digest(PROMPT)), done.error


def test_a_host_mode_prompt_past_the_input_queue_arrives_whole(
    runtime_dir: Path, slow_claude: Path, tmp_path: Path
) -> None:
    """An 11 MiB prompt in host mode (the first user message): its writer failed ("! writing to
    claude's input failed": input queue full ...) and the run stayed running for ever; the CLI
    now reads the whole message and answers."""
    started = ccx.run(PROMPT, executable=str(slow_claude), display=False, cwd=str(tmp_path), settings=settings())
    started.wait(scaled(30))
    assert started.answer == length_and_digest(PROMPT), started.error
    started.end().wait(scaled(30))
    assert started.status == "completed", started.error


def test_the_terminal_clients_prompt_past_the_input_queue_arrives_whole(
    slow_claude: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An 11 MiB prompt on the terminal client's stdin (``claude -``): it ended "input queue full
    ..."; the CLI now reads all of it and its answer is printed."""
    from cc_executor_nb.claude import options as options_module

    monkeypatch.setattr(options_module, "find_claude", lambda configured=None: str(slow_claude))
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPT))
    monkeypatch.chdir(tmp_path)
    code = cli.main(["claude", "--quiet", "-"])
    out, err = capsys.readouterr()
    assert (code, out) == (0, length_and_digest(PROMPT) + "\n"), err


class _Watched(io.StringIO):
    """A stdout that makes ``seen`` when the slow CLI's first words are written to it."""

    def __init__(self, seen: Path) -> None:
        super().__init__()
        self.seen = seen

    def write(self, text: str) -> int:
        if "waiting to be seen" in text:
            self.seen.touch()
        return super().write(text)


def test_the_terminal_client_shows_the_cli_output_while_its_prompt_goes_in(
    slow_claude: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI prints before it reads its 11 MiB prompt, and reads only once that was shown: the
    terminal client showed nothing until the whole prompt was sent, so the CLI answered
    "nobody saw me" after 20 s; now its words show at once and it reads the prompt whole."""
    from cc_executor_nb.claude import options as options_module

    monkeypatch.setattr(options_module, "find_claude", lambda configured=None: str(slow_claude))
    monkeypatch.setenv("BIG_PROMPT_CLI_SEEN", str(tmp_path / "seen"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPT))
    monkeypatch.setattr(sys, "stdout", _Watched(tmp_path / "seen"))
    monkeypatch.chdir(tmp_path)
    code = cli.main(["claude", "--quiet", "-"])
    assert (code, sys.stdout.getvalue()) == (0, "waiting to be seen\n" + length_and_digest(PROMPT) + "\n")


def test_a_terminal_prompt_that_cannot_be_sent_whole_cancels_the_run(
    slow_claude: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prompt whose sending fails ends the terminal client with that error, and the CLI, which
    got none of it, is stopped instead of answering a cut prompt."""
    from cc_executor_nb.claude import options as options_module
    from cc_executor_nb.client import Client
    from cc_executor_nb.errors import CCExecError

    async def refused(self: Client, data: str, **options: Any) -> dict[str, Any]:
        raise CCExecError("the piece was refused")

    monkeypatch.setattr(options_module, "find_claude", lambda configured=None: str(slow_claude))
    monkeypatch.setattr(Client, "input", refused)
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPT))
    monkeypatch.chdir(tmp_path)
    code = cli.main(["claude", "--quiet", "-"])
    out, err = capsys.readouterr()
    assert (code, out, err.splitlines()[-1:]) == (1, "", ["error: the piece was refused"])


async def test_a_terminal_prompt_feed_cut_by_a_lost_connection_ends_the_client_and_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 12 MiB prompt still going in (the CLI reads nothing yet) when the connection drops with a
    piece in flight (written or not: nobody knows): the client reconnected and followed the run,
    whose CLI would wait for the rest of its prompt for ever, and the client with it; now the
    client ends with the lost connection, and the server stops the run."""
    from cc_executor_nb import client as client_module
    from cc_executor_nb.errors import ConnectionLost
    from cc_executor_nb.kernel.textview import TextView

    from .conftest import TOKEN, make_handler
    from .proxy import FaultyProxy
    from .util import eventually_async, gone

    # A piece in flight at the drop is what this is about: the client tries again every 0.5 s
    # at most (it waits up to 5 s for the server's input.drained, which never comes here).
    monkeypatch.setattr(client_module, "INPUT_STALLED_WAIT", 0.5)
    server = make_handler()
    await server.start("127.0.0.1", 0)
    proxy = await FaultyProxy(server.port).start()
    monkeypatch.setenv("CC_EXECUTOR_TOKEN", TOKEN)
    pid_file = tmp_path / "pid"
    child = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)"
    args = cli._parser().parse_args(["run", "--server", proxy.url(), "--", "x"])
    launch = cli._Launch([sys.executable, "-c", child], None, TextView(), stdin_text="y" * (12 << 20))
    ended = asyncio.ensure_future(cli._run(args, launch, cli._Progress()))
    try:
        await eventually_async(lambda: pid_file.exists() and pid_file.read_text(), what="the child started")
        await asyncio.sleep(1.0)  # the feed now waits for room in the server's full input queue
        proxy.freeze()  # its next try (every 0.5 s at most) is in flight when the connection drops
        await asyncio.sleep(1.5)
        proxy.thaw()
        proxy.drop()
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(ended, scaled(20))
        pid = int(pid_file.read_text())
        await eventually_async(lambda: gone(pid), timeout=20, what="the run's process stopped")
    finally:
        ended.cancel()
        await proxy.close()
        await server.close()
