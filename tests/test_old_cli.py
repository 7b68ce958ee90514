"""Claude CLIs older than the pinned one: an option one of them does not know fails the run
saying the CLI is too old for it and what to do, never a bare "exited with code 1".

The fake CLI (``old-claude`` mode) answers as the old versions did, with the stderr line
and exit code captured from 0.2.126, 1.0.60 and 1.0.128 against the demo backend; nothing
is installed here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cc_executor_nb as ccx
from cc_executor_nb import cli
from cc_executor_nb.claude import options as options_module
from cc_executor_nb.claude.compat import OPTION_FLAGS, too_old_for
from cc_executor_nb.claude.options import ClaudeOptions, claude_option_args
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.loop import stop_shared_loop

from .conftest import FAKE_CLI

# Each CLI's refusal, exactly as it printed it (exit code 1 each time).
CLI_0_2_126_HOST = "error: unknown option '--input-format'\n(Did you mean --output-format?)\n"
CLI_1_0_60 = "error: unknown option '--include-partial-messages'\n"  # up to 1.0.108; 0.2.126's one-shot too
CLI_1_0_128_BUDGET = "error: unknown option '--max-budget-usd'\n"
UPDATE = "update it: `npm install -g @anthropic-ai/claude-code`"


@pytest.fixture(scope="module", autouse=True)
def clean_up() -> Iterator[None]:
    """Stop the shared loop (and every run on it) after the module."""
    yield
    stop_shared_loop()


def settings() -> CCExec:
    """No history file, a short kill grace."""
    config = CCExec()
    config.history_path = "none"
    config.kill_grace = 2.0
    return config


def old_claude(tmp_path: Path, *unknown: str) -> Path:
    """A ``claude`` too old for the options ``unknown``, as the fake CLI plays it."""
    executable = tmp_path / "claude"
    executable.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_CLI}" old-claude {",".join(unknown)} "$@"\n')
    executable.chmod(0o755)
    return executable


def run_with(executable: Path, tmp_path: Path, **options: Any) -> ccx.Run:
    return ccx.run("hello", executable=str(executable), display=False, cwd=str(tmp_path), settings=settings(),
                   wait=True, **options)


@pytest.mark.parametrize(
    ("stderr", "start"),
    [
        (CLI_1_0_60, "this claude CLI is too old for cc_executor_nb: it does not know --include-partial-messages, "
                     "which every Claude run passes"),
        # 0.2.x lacks --include-partial-messages too: one-shot (--no-interactive) is no way out.
        (CLI_0_2_126_HOST, "this claude CLI is too old for cc_executor_nb: it does not know --input-format"),
        ("error: unknown option '--permission-prompt-tool'\n",
         "this claude CLI is too old for host mode: it does not know --permission-prompt-tool; "),
        (CLI_1_0_128_BUDGET, "this claude CLI is too old for --max-budget-usd: it does not know the option"),
        ("error: unknown option '--max-budget-usd=1'\n",
         "this claude CLI is too old for --max-budget-usd: it does not know the option"),
    ],
)
def test_a_refused_option_that_cc_executor_nb_passes_reads_as_a_cli_too_old(stderr: str, start: str) -> None:
    """The CLI's refusal of an option we put on its command line names the version problem and the
    update (it was only "exited with code 1")."""
    reason = too_old_for(stderr)
    assert reason is not None and reason.startswith(start) and UPDATE in reason, reason


def test_a_refused_option_the_user_added_keeps_the_clis_own_words() -> None:
    """An option from ``--claude-arg`` that the CLI does not know is no version problem (a typo, say)."""
    assert too_old_for("error: unknown option '--frobnicate'\n") is None
    assert too_old_for("Invalid API key · Please run /login\n") is None


@pytest.mark.parametrize("options", [
    ClaudeOptions(model="sonnet", resume="abc", allowed_tools=["Bash"], permission_mode="plan", max_turns=2,
                  append_system_prompt="be brief", max_budget_usd=1.0),
    ClaudeOptions(continue_session=True),
])
def test_every_flag_a_run_option_adds_is_one_a_too_old_cli_is_told_about(options: ClaudeOptions) -> None:
    """OPTION_FLAGS lists every flag the options put on a command line (a new option is not forgotten)."""
    flags = {arg for arg in claude_option_args(options) if arg.startswith("--")}
    assert flags and flags <= set(OPTION_FLAGS), flags - set(OPTION_FLAGS)


@pytest.mark.parametrize("mode", [{}, {"interactive": False}])
def test_a_cli_without_include_partial_messages_fails_saying_it_is_too_old(
    tmp_path: Path, mode: dict[str, bool]
) -> None:
    """1.0.60 in host mode and one-shot: the run fails with exit code 1 and an error that says the CLI
    is too old and how to update it (it read "exited with code 1", the CLI's line only in stderr)."""
    run = run_with(old_claude(tmp_path, "--include-partial-messages"), tmp_path, **mode)
    assert (run.status, run.exit_code) == ("failed", 1)
    assert run.error == too_old_for(CLI_1_0_60), run.error


def test_a_cli_without_host_mode_nor_partial_messages_falls_back_then_says_it_is_too_old(tmp_path: Path) -> None:
    """0.2.126: host mode is refused (the one-shot retry is noted), then the one-shot run is refused
    too: its error says the CLI is too old for cc_executor_nb."""
    run = run_with(old_claude(tmp_path, "--input-format", "--include-partial-messages"), tmp_path)
    assert run.conversation is not None
    (notice,) = run.conversation.view().notices
    assert "did not start in host mode" in notice and "unknown option '--input-format'" in notice
    assert (run.status, run.exit_code, run.error) == ("failed", 1, too_old_for(CLI_1_0_60))


def test_a_cli_without_max_budget_usd_says_so(tmp_path: Path) -> None:
    """1.0.128 knows all but --max-budget-usd: a run with a budget fails saying the CLI is too old for it."""
    run = run_with(old_claude(tmp_path, "--max-budget-usd"), tmp_path, max_budget_usd=1.0)
    assert (run.status, run.exit_code, run.error) == ("failed", 1, too_old_for(CLI_1_0_128_BUDGET))


def test_a_cli_refusing_an_option_of_the_user_fails_with_its_exit_code(tmp_path: Path) -> None:
    """An option the user added (``claude_args``) that the CLI does not know: the error stays the exit
    code's, and the CLI's own line is in stderr."""
    run = run_with(old_claude(tmp_path, "--frobnicate"), tmp_path, claude_args=["--frobnicate"])
    assert (run.status, run.exit_code, run.error) == ("failed", 1, "exited with code 1")
    assert "unknown option '--frobnicate'" in run.stderr


def test_the_terminal_client_says_a_cli_is_too_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m cc_executor_nb claude`` with 1.0.60: the end line says the CLI is too old and how to
    update it (it read "[failed] exit 1 in 604 ms")."""
    executable = old_claude(tmp_path, "--include-partial-messages")
    monkeypatch.setattr(options_module, "find_claude", lambda configured=None: str(executable))
    monkeypatch.chdir(tmp_path)
    code = cli.main(["claude", "hello"])
    err = capsys.readouterr().err
    assert code == 1 and f": {too_old_for(CLI_1_0_60)}\n" in err, err


def test_the_terminal_client_runs_the_cli_claude_command_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--claude-command PATH`` picks the CLI: a source checkout's client always took its
    ``node_modules/.bin/claude``, so an older CLI elsewhere could not be tried with it."""
    executable = old_claude(tmp_path, "--include-partial-messages")
    monkeypatch.chdir(tmp_path)
    code = cli.main(["claude", "--claude-command", str(executable), "hello"])
    err = capsys.readouterr().err
    assert code == 1 and f": {too_old_for(CLI_1_0_60)}\n" in err, err


def test_a_magic_run_takes_its_claude_command(tmp_path: Path) -> None:
    """``%ccexec --claude-command PATH`` runs that CLI, whatever ``CCExec.claude_command`` says."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "cc_executor_nb")
    try:
        executable = old_claude(tmp_path, "--include-partial-messages")
        run = shell.run_line_magic("ccexec", f"-w -q --cwd {tmp_path} --claude-command {executable} hello")
    finally:
        shell.run_line_magic("unload_ext", "cc_executor_nb")
    assert (run.status, run.error) == ("failed", too_old_for(CLI_1_0_60)), run.stderr
