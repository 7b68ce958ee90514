"""The %ccexec magic, its settings and the Python API, in an in-process IPython shell."""

from __future__ import annotations

import asyncio
import copy
import html
import pickle
import re
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets import TraitError
from traitlets.config import Config

import cc_executor_nb
import cc_executor_nb.demo.shared
from cc_executor_nb.claude.options import ClaudeOptions
from cc_executor_nb.kernel import api
from cc_executor_nb.kernel import magic as magic_module
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.loop import LOOP_THREAD_NAME, current_shared_loop, stop_shared_loop
from cc_executor_nb.kernel.magic import CCExecMagics, split_line, text_of
from cc_executor_nb.kernel.run import Run, RunSpec, Target
from cc_executor_nb.server.disk import DiskBudget

from .kernel_utils import ccexec, fake_command, py
from .servers import start_server
from .util import eventually, redacted_secrets, scaled

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    """The in-process shell with the extension loaded; unloaded (and its settings forgotten) after."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ipython = InteractiveShell.instance(config=config)
    # A shared loop another test module left running is not this extension's doing: the
    # tests here count the loop threads the magic starts and stops (one failed once so).
    stop_shared_loop()
    ipython.run_line_magic("load_ext", "cc_executor_nb")
    yield ipython
    ipython.run_line_magic("unload_ext", "cc_executor_nb")
    ipython.config.pop("CCExec", None)


def loop_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == LOOP_THREAD_NAME)


def magic(shell: InteractiveShell, line: str) -> Run:
    result = shell.run_line_magic("ccexec", line.removeprefix("%ccexec "))
    assert isinstance(result, Run)
    return result


@pytest.fixture
def echo_claude(tmp_path: Path) -> str:
    """A stand-in 'claude' executable that prints each argument on its own line, then, one-shot
    (``-p``), ``stdin: `` and what it reads there (the prompt)."""
    script = tmp_path / "claude"
    script.write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n"
                      'for a in "$@"; do if [ "$a" = -p ]; then printf "stdin: "; cat; break; fi; done\n')
    script.chmod(0o755)
    return str(script)


# Loading


def test_load_ext_registers_the_magic_and_starts_nothing(shell: InteractiveShell) -> None:
    """%load_ext adds %ccexec / %%ccexec and the CCExec settings but no loop thread."""
    assert shell.find_line_magic("ccexec") and shell.find_cell_magic("ccexec")
    assert any(isinstance(c, CCExec) for c in shell.configurables)
    assert loop_threads() == 0 and current_shared_loop() is None


def test_unload_ext_removes_magic_settings_and_thread(shell: InteractiveShell) -> None:
    """%unload_ext stops the loop thread and removes the magic and its configurables."""
    magic(shell, ccexec("true", "-w", "-q"))
    assert loop_threads() == 1
    shell.run_line_magic("unload_ext", "cc_executor_nb")
    assert loop_threads() == 0
    assert shell.find_line_magic("ccexec") is None
    assert not any(isinstance(c, (CCExec, CCExecMagics)) for c in shell.configurables)
    shell.run_line_magic("load_ext", "cc_executor_nb")


def test_reload_ext_twice_leaves_one_loop_thread(shell: InteractiveShell) -> None:
    """Reloading twice, with a run before and after, leaves exactly one loop thread."""
    magic(shell, ccexec("true", "-w", "-q"))
    shell.run_line_magic("reload_ext", "cc_executor_nb")
    shell.run_line_magic("reload_ext", "cc_executor_nb")
    assert loop_threads() == 0
    assert magic(shell, ccexec("true", "-w", "-q")).status == "completed"
    assert loop_threads() == 1


def test_reload_ext_leaves_no_dead_token_in_the_log_redactors(shell: InteractiveShell) -> None:
    """Each reload's in-kernel server has a new token; the stopped ones' are forgotten (every
    log record was scanned for one more dead token per reload)."""
    magic(shell, ccexec("true", "-w", "-q"))
    after_one = len(redacted_secrets())
    for _ in range(3):
        shell.run_line_magic("reload_ext", "cc_executor_nb")
        assert magic(shell, ccexec("true", "-w", "-q")).status == "completed"
    assert len(redacted_secrets()) == after_one


def test_reload_ext_keeps_config_settings(shell: InteractiveShell) -> None:
    """Values set with %config survive %reload_ext."""
    shell.run_line_magic("config", "CCExec.heartbeat_interval = 0.5")
    shell.run_line_magic("reload_ext", "cc_executor_nb")
    assert shell.run_line_magic("config", "CCExec.heartbeat_interval") == 0.5


@pytest.mark.parametrize("setting", ["kill_grace = -1", 'capture = "tty"', "min_heartbeat_interval = 0"])
def test_a_refused_config_value_does_not_stop_a_reload(shell: InteractiveShell, setting: str) -> None:
    """%config refuses the value but IPython keeps it in the shell's config: %reload_ext still
    loads (it raised the TraitError and left %ccexec gone), keeping the setting's previous value."""
    shell.run_line_magic("config", "CCExec.heartbeat_interval = 0.5")
    shell.run_line_magic("config", f"CCExec.{setting}")  # shown as an error, not raised
    shell.run_line_magic("reload_ext", "cc_executor_nb")
    assert magic(shell, ccexec("echo hi", "-w", "-q")).stdout == "hi\n"
    assert shell.run_line_magic("config", "CCExec.heartbeat_interval") == 0.5
    assert setting.split(maxsplit=1)[0] not in shell.config.CCExec


# Running


def test_quiet_wait_prints_and_returns_the_finished_run(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """%ccexec -c ... -w -q prints the output as text and returns the completed Run."""
    run = magic(shell, ccexec(py("print('hi')"), "--wait", "--quiet"))
    assert (run.status, run.exit_code, run.stdout) == ("completed", 0, "hi\n")
    out = capsys.readouterr().out
    assert "\nhi\n" in out and "[completed] exit 0" in out


def test_text_mode_is_automatic_outside_a_kernel(shell: InteractiveShell) -> None:
    """Without a Jupyter kernel the run has no widget view (plain text instead)."""
    run = magic(shell, ccexec("true", "-w"))
    assert run.view is None


def gated(gate: Path) -> str:
    """A command line that runs until ``gate`` exists."""
    return py(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\nprint('through')")


def test_widget_mode_can_be_forced(shell: InteractiveShell, tmp_path: Path) -> None:
    """CCExec.output_mode = 'widget' gives the run a widget view that ends completed."""
    shell.run_line_magic("config", "CCExec.output_mode = 'widget'")
    run = magic(shell, ccexec(gated(tmp_path / "gate")))
    view = run.view  # read while the run lives: a finished run lets its view go (see below)
    (tmp_path / "gate").touch()
    run.wait(scaled(30))
    assert view is not None and "completed" in view.header.value


def test_a_forced_widget_run_outside_a_kernel_lets_its_view_go_and_prints_its_final_record(
    shell: InteractiveShell, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside a kernel a forced widget run kept run.view (a closed widget tree) after its end, and
    the last word printed was the record made at its start ('[in progress]', '[result] no result yet'), for
    good; as in a kernel, where the final record takes the widget's place, the final record is now
    printed and the view let go."""
    shell.run_line_magic("config", "CCExec.output_mode = 'widget'")
    run = magic(shell, ccexec(gated(tmp_path / "gate")))
    assert run.view is not None and "[in progress]" in capsys.readouterr().out
    (tmp_path / "gate").touch()
    run.wait(scaled(30))
    out = capsys.readouterr().out
    assert "completed · exit code 0" in out and "through" in out and "[in progress]" not in out
    assert run.view is None


def test_out_binds_the_run_in_the_user_namespace(shell: InteractiveShell) -> None:
    """-o NAME binds the Run to NAME."""
    run = magic(shell, ccexec("true", "-w", "-q", "-o", "result"))
    assert shell.user_ns["result"] is run


def test_quoted_command_keeps_its_arguments(shell: InteractiveShell) -> None:
    """A quoted command line is split by the server like a POSIX shell would."""
    run = magic(shell, ccexec(fake_command("argv", "a b", "c"), "-w", "-q"))
    assert run.stdout == "'a b'\n'c'\n"


def test_command_after_double_dash_keeps_its_options(shell: InteractiveShell) -> None:
    """After --, the rest of the line is the command, its own options and quotes included."""
    line = "-w -q -c -- " + fake_command("argv", "-c", "x y")
    assert magic(shell, line).stdout == "'-c'\n'x y'\n"


def test_cell_magic_takes_the_body(shell: InteractiveShell) -> None:
    """%%ccexec -c runs the cell body as the command line."""
    run = shell.run_cell_magic("ccexec", "-c -w -q", fake_command("echo", "from", "cell") + "\n")
    assert isinstance(run, Run) and run.stdout == "from cell\n"


def test_config_values_reach_the_run(shell: InteractiveShell) -> None:
    """%config CCExec settings become the run's execute params unless an option overrides them."""
    shell.run_line_magic("config", "CCExec.heartbeat_interval = 0.5")
    shell.run_line_magic("config", "CCExec.inactivity_threshold = 7")
    run = magic(shell, ccexec("true", "-w", "-q", "--inactivity", "3"))
    assert (run.spec.heartbeat_interval, run.spec.inactivity_threshold) == (0.5, 3.0)
    assert run.spec.timeout is None


def test_a_run_opts_out_of_the_configured_timeout_with_zero(shell: InteractiveShell) -> None:
    """With CCExec.timeout set, --timeout 0 and timeout=0 run without a limit (None fell back to
    the setting, and 0 was refused: a run could not opt out)."""
    shell.run_line_magic("config", "CCExec.timeout = 1")
    run = magic(shell, ccexec(f"{sys.executable} -c 'import time; time.sleep(1.5)'", "-w", "-q", "--timeout", "0"))
    assert (run.spec.timeout, run.status) == (None, "completed")
    api = cc_executor_nb.run(["sleep", "0"], command=True, timeout=0, display=False, wait=True)
    assert (api.spec.timeout, api.status) == (None, "completed")
    assert magic(shell, ccexec("true", "-w", "-q")).spec.timeout == 1.0


def test_unset_timing_leaves_the_servers_defaults(shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --heartbeat or CCExec.heartbeat_interval a remote run beats at the server's
    WEBSOCKET_HEARTBEAT_INTERVAL (the magic sent 20 s); the in-kernel server keeps 20 s and 30 s."""
    server = start_server("--token", "magic-token", "--inactivity-threshold", "0.4",
                          env={"WEBSOCKET_HEARTBEAT_INTERVAL": "0.3"})
    monkeypatch.setenv("CCX_MAGIC_TOKEN", "magic-token")
    try:
        run = magic(shell, ccexec(fake_command("silence", "1"), "-w", "-q", "-s", server.url,
                                  "--token-env", "CCX_MAGIC_TOKEN"))
    finally:
        server.finish()
    assert (run.spec.heartbeat_interval, run.spec.inactivity_threshold) == (None, None)
    assert (run.state.heartbeat_interval, run.state.inactivity_threshold) == (0.3, 0.4)
    assert run.state.heartbeat_count >= 2
    local = magic(shell, ccexec("true", "-w", "-q"))
    assert (local.state.heartbeat_interval, local.state.inactivity_threshold) == (20.0, 30.0)


def test_env_and_cwd_options_reach_the_process(shell: InteractiveShell, tmp_path: Path) -> None:
    """-e NAME=VALUE and --cwd DIR apply to the child."""
    line = ccexec(fake_command("env", "CCX_X"), "-w", "-q", "-e", "CCX_X=1")
    assert magic(shell, line).stdout == "CCX_X=1\n"
    line = ccexec(fake_command("cwd"), "-w", "-q", "--cwd", shlex.quote(str(tmp_path)))
    assert magic(shell, line).stdout == f"{tmp_path}\n"


def test_prompt_goes_to_claude_verbatim(shell: InteractiveShell, echo_claude: str) -> None:
    """A prompt, apostrophes and quotes included, reaches claude -p exactly as typed (on its stdin)."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    run = magic(shell, """What's "this" repo? -w -q --model opus""")
    argv = run.stdout.splitlines()
    assert argv[-1] == """stdin: What's "this" repo?""" and "-p" in argv and "stream-json" in argv
    assert argv[argv.index("--model") + 1] == "opus"
    assert run.options["prompt"] == """What's "this" repo?""" and run.options["model"] == "opus"


def test_claude_options_reach_the_cli(shell: InteractiveShell, echo_claude: str) -> None:
    """Every Claude option of the magic reaches the CLI's argv; the prompt, its stdin."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    line = ("--resume abc --allowed-tools 'Bash(git:*)' --allowed-tools Read --permission-mode plan "
            "--max-turns 3 --append-system-prompt 'be brief' --claude-arg=--effort --max-retries 1 "
            "-w -q -- -starts with a dash")
    argv = magic(shell, line).stdout.splitlines()
    cut = argv.index("stdin: -starts with a dash")
    assert cut == len(argv) - 1 and "--" not in argv
    head = argv[:cut]
    assert head[head.index("--resume") + 1] == "abc"
    assert head[head.index("--allowed-tools") + 1 : head.index("--allowed-tools") + 3] == ["Bash(git:*)", "Read"]
    assert head[head.index("--permission-mode") + 1] == "plan"
    assert head[head.index("--max-turns") + 1] == "3"
    assert head[head.index("--append-system-prompt") + 1] == "be brief"
    assert "--effort" in head


def test_continue_without_history_asks_the_cli_for_its_latest(shell: InteractiveShell, echo_claude: str) -> None:
    """--continue before any Claude run in this kernel passes --continue to the CLI."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    argv = magic(shell, "--continue -w -q follow up").stdout.splitlines()
    assert "--continue" in argv[: argv.index("stdin: follow up")] and "--resume" not in argv


@pytest.mark.claude
@pytest.mark.skipif(
    not Path("node_modules/.bin/claude").exists(), reason="node_modules/.bin/claude is absent: run npm ci"
)
def test_continue_resumes_the_last_claude_session(shell: InteractiveShell) -> None:
    """--continue resumes the session id of this kernel's last Claude run (real CLI, demo API)."""
    try:
        first = magic(shell, "--demo -w -q echo: first")
        assert first.status == "completed" and first.session_id
        second = magic(shell, "--demo --continue -w -q echo: second")
        argv = second.state.argv
        assert argv[argv.index("--resume") + 1] == first.session_id
        assert second.text == "second" and second.session_id == first.session_id
    finally:
        cc_executor_nb.demo.shared.stop_demo()


def test_no_interactive_runs_the_one_shot_command_line(shell: InteractiveShell, echo_claude: str) -> None:
    """--no-interactive: claude -p with the prompt on its stdin (not its command line), no conversation."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    run = magic(shell, "--no-interactive -w -q say hi")
    argv = run.stdout.splitlines()
    assert argv[-1] == "stdin: say hi" and "say hi" not in argv and "--" not in argv and "--input-format" not in argv
    assert run.conversation is None and not run.interactive and run.options["interactive"] is False


@pytest.mark.timeout(60)
def test_a_200_kib_line_is_expanded_and_run(shell: InteractiveShell) -> None:
    """A 200 KiB %ccexec line with a name and an expression: IPython's own expansion took
    minutes before the magic was even called; the magic's fills them in and runs the line."""
    shell.user_ns["first"] = "A1"
    run = magic(shell, "-c -w -q echo $first " + "word " * 40_000 + "{2 * 21}")
    assert run.status == "completed", run.error
    assert run.stdout == "A1 " + "word " * 40_000 + "42\n"


def test_a_line_magic_called_in_a_function_sees_its_locals(shell: InteractiveShell) -> None:
    """``$name`` comes from the calling function's locals first, then the user namespace."""
    shell.user_ns.update(word="global", other="kept")
    word = "local"  # noqa: F841 (read by the magic from this frame)
    run = shell.run_line_magic("ccexec", "-c -w -q echo $word $other {len(word)}")
    assert isinstance(run, Run) and run.stdout == "local kept 5\n", run.error


def test_an_alias_of_the_magic_expands_its_line_once(shell: InteractiveShell) -> None:
    """Through ``%alias_magic`` IPython has expanded the line already (the alias does not opt
    out): the magic does not expand it again, so ``{{x}}`` and ``$$x`` stay ``{x}`` and ``$x``
    and a value's own braces are never evaluated (they were: "5 5 5")."""
    shell.user_ns.update(x=5, text="{x}")
    shell.run_line_magic("alias_magic", "ccexec_alias ccexec")
    try:
        run = shell.run_line_magic("ccexec_alias", "-c -w -q echo {{x}} $$x $text")
    finally:
        shell.magics_manager.magics["line"].pop("ccexec_alias", None)
        shell.magics_manager.magics["cell"].pop("ccexec_alias", None)
    assert isinstance(run, Run) and run.stdout == "{x} $x {x}\n", run.error


@pytest.mark.skipif(
    not Path("node_modules/.bin/claude").exists(), reason="node_modules/.bin/claude is absent: run npm ci"
)
def test_no_interactive_sends_a_prompt_too_long_for_a_command_line_on_stdin(shell: InteractiveShell) -> None:
    """--no-interactive with a 200 KiB prompt (more than one argument may hold): it goes to the CLI's
    stdin, as the terminal client sends it, and comes back whole (the magic refused it)."""
    words = "z" * (200 * 1024)
    try:
        # The cell magic: its body is sent as written.
        run = shell.run_cell_magic("ccexec", "--demo --no-interactive -w -q", f"echo: {words}")
        assert (run.status, run.text) == ("completed", words), run.error
        assert run.conversation is None and "--" not in run.state.argv and "--input-format" not in run.state.argv
    finally:
        cc_executor_nb.demo.shared.stop_demo()


def test_conversation_flags_reach_the_conversation(shell: InteractiveShell, echo_claude: str) -> None:
    """--approve and --idle-timeout shape the conversation; host mode is asked for with stdin piped."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    run = magic(shell, "--approve all --idle-timeout 5 -w -q say hi")
    assert run.conversation is not None
    assert (run.conversation.policy, run.conversation.idle_timeout) == ("all", 5.0)
    first = next(e for e in run.events if e.method == "process.started")
    assert "--permission-prompt-tool" in first.params["argv"] and first.params["stdin"] == "pipe"
    assert "--permission-prompts" not in first.params["argv"]


def test_conversation_settings_come_from_ccexec(shell: InteractiveShell, echo_claude: str) -> None:
    """CCExec.permission_policy (a callable here), idle_timeout and interactive are the defaults."""

    def policy(request: object) -> str:
        return "deny"

    settings = shell.magics_manager.registry["CCExecMagics"].settings
    settings.claude_command, settings.permission_policy, settings.idle_timeout = echo_claude, policy, 0.0
    run = magic(shell, "-w -q say hi")
    assert run.conversation is not None
    assert run.conversation.policy is policy and run.conversation.idle_timeout is None
    settings.interactive = False
    assert magic(shell, "-w -q say hi").conversation is None


def test_demo_flag_is_recorded(shell: InteractiveShell, echo_claude: str) -> None:
    """--demo is stored on the run's options for the Claude layer."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    try:
        assert magic(shell, "hello --demo -w -q").options["demo"] is True
    finally:
        stop_demo = getattr(cc_executor_nb.demo.shared, "stop_demo", None)
        if stop_demo is not None:
            stop_demo()  # the Claude layer may have started its offline backend


@pytest.mark.parametrize("line", ["--help", "-c true -h", "-w --help hello"])
def test_help_prints_every_option_and_runs_nothing(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str], line: str
) -> None:
    """%ccexec --help (or -h) prints the options, as %ccexec? does, and runs nothing: it said
    only "unrecognized arguments: --help"."""
    assert shell.run_line_magic("ccexec", line) is None
    printed = capsys.readouterr().out
    assert printed.startswith("  %ccexec [-c] [-w]") and "--attach ID" in printed and "--approve" in printed


def test_a_quoted_prompt_that_starts_with_a_dash_is_the_prompt(shell: InteractiveShell, echo_claude: str) -> None:
    """``-w -q "-what is 2+2"`` sends the quoted words as the prompt: argparse read them as
    ``-w`` with the argument ``hat is 2+2`` and refused the line."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    run = magic(shell, '-w -q "-what is 2+2" --model opus')
    argv = run.stdout.splitlines()
    assert argv[-1] == "stdin: -what is 2+2" and argv[argv.index("--model") + 1] == "opus"


def test_a_quoted_option_value_that_starts_with_a_dash_is_the_value(shell: InteractiveShell) -> None:
    """A quoted word after an option that takes a value is that value, as written (``-e '-X=1'``)."""
    args, text = shell.magics_manager.registry["CCExecMagics"]._parse("-e X=1 -e '-Y=2' --timeout '-5' hi", None)
    assert args.env == ["X=1", "-Y=2"] and args.timeout == -5.0 and text == "hi"


def test_an_unquoted_prompt_that_starts_with_a_dash_says_to_quote_it(shell: InteractiveShell) -> None:
    """``-q -what is 2+2`` is refused with argparse's reason and what to write instead."""
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("ccexec", "--demo -q -what is 2+2")
    assert str(info.value) == ("argument -w/--wait: ignored explicit argument 'hat' "
                               "(if the prompt starts with '-what', put it in quotes or after --)")


def test_help_after_the_double_dash_is_text() -> None:
    """After ``--`` a ``--help`` word is the command's own (``-c -- grep --help``)."""
    assert not magic_module._asks_help("-c -- grep --help")


def test_missing_claude_is_a_usage_error(shell: InteractiveShell) -> None:
    """Without a claude executable a prompt raises UsageError with install advice."""
    shell.run_line_magic("config", "CCExec.claude_command = '/nonexistent/claude'")
    with pytest.raises(UsageError, match="not an executable") as info:
        magic(shell, "hello")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--bogus -c true", "unrecognized arguments: --bogus"),
        ("--timeout -1 -c true", "timeout must be 0 \\(no limit\\) or a positive number"),
        ("--timeout soon -c true", "invalid float value"),
        ("--heartbeat 0 -c true", "heartbeat must be a positive number"),
        ("", "needs a prompt"),
        ("-c -w", "needs a command line"),
        ("-o 1x -c true", "needs a Python name"),
        ("-e NOVALUE -c true", "NAME=VALUE"),
        ("-c ''", "needs a command line"),
        ("--approve maybe hello", "--approve: takes ask, all or none, not 'maybe'"),
        ("--idle-timeout -1 hello", "--idle-timeout must be a non-negative number"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(shell: InteractiveShell, line: str, message: str) -> None:
    """Bad options and empty input raise UsageError with a one-line message."""
    with pytest.raises(UsageError, match=message) as info:
        shell.run_line_magic("ccexec", line)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("line", "cut", "full"), [
    ("--claude x hello", "--claude", "--claude-arg or --claude-command"),
    ("--claude-c x hello", "--claude-c", "--claude-command"),
    ("--demo --wa hello", "--wa", "--wait"),
    ("--cw=/tmp hello", "--cw", "--cwd"),
])
def test_a_long_option_cut_short_is_a_usage_error_naming_the_full_ones(
        shell: InteractiveShell, line: str, cut: str, full: str) -> None:
    """argparse takes an unambiguous prefix (``--wa`` ran as ``--wait``, ``--claude-c`` as
    ``--claude-command``): options are written in full, the error names them, and nothing runs."""
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("ccexec", line)
    assert str(info.value) == f"{cut} is not an option; options are written in full: {full}"


@pytest.mark.parametrize("line", ["--demo --wait -q -- --wa is a word", "--demo --wait -q '--wa is a word'"])
def test_a_quoted_word_like_a_cut_short_option_is_the_prompt(shell: InteractiveShell, line: str) -> None:
    """A quoted ``'--wa'`` (or one after ``--``) is text, as any quoted word starting with ``-``."""
    run = shell.run_line_magic("ccexec", line)
    assert (run.status, run.label) == ("completed", "claude: --wa is a word")


@pytest.mark.parametrize(
    "flags",
    ["--model sonnet", "--demo", "--max-turns 3", "--allowed-tools Bash", "--auto-resume", "--raw",
     "--approve all", "--no-interactive", "--idle-timeout 5", "--resume abc", "--claude-arg=--effort"],
)
def test_claude_options_with_a_command_are_a_usage_error(shell: InteractiveShell, flags: str) -> None:
    """-c with a Claude-only flag is one UsageError naming the flag (they were silently ignored)."""
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("ccexec", f"-c 'echo hi' {flags}")
    flag = flags.split(maxsplit=1)[0].partition("=")[0]
    assert str(info.value) == f"a command (-c/--command) takes no Claude option: {flag}"


def test_api_refuses_claude_options_for_a_command(shell: InteractiveShell) -> None:
    """run(..., command=True) with Claude keywords, or a whole ClaudeOptions, is a ValueError naming them."""
    with pytest.raises(ValueError, match=r"^a command \(command=True\) takes no Claude option: model, approve$"):
        cc_executor_nb.run("echo hi", command=True, model="sonnet", approve="all")
    with pytest.raises(ValueError, match=r"takes no Claude option: max_turns$"):
        cc_executor_nb.run("echo hi", command=True, claude=ClaudeOptions(max_turns=3))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--no-interactive --approve all", "--approve does not apply with --no-interactive: it runs Claude one-shot"),
        ("--auto-resume --approve all", "--approve does not apply with --auto-resume: it runs Claude one-shot"),
        ("--no-interactive --idle-timeout 5", "--idle-timeout does not apply with --no-interactive"),
        ("--approve none --idle-timeout 5 --auto-resume", "--approve, --idle-timeout do not apply with --auto-resume"),
    ],
)
def test_conversation_flags_of_a_one_shot_run_are_a_usage_error(
    shell: InteractiveShell, echo_claude: str, flags: str, message: str
) -> None:
    """--approve and --idle-timeout with a one-shot run (no permission channel, no follow-up): refused, not ignored."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    with pytest.raises(UsageError, match=f"^{re.escape(message)}") as info:
        shell.run_line_magic("ccexec", f"{flags} -w -q 'bash: echo hi > /tmp/z.txt'")
    assert str(info.value).endswith("allow tools up front with --allowed-tools or --permission-mode")


def test_api_refuses_conversation_options_of_a_one_shot_run(shell: InteractiveShell, echo_claude: str) -> None:
    """run() with approve, on_permission or idle_timeout and interactive=False or auto_resume: a ValueError."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    with pytest.raises(ValueError, match=r"^approve does not apply with interactive=False: "):
        cc_executor_nb.run("hi", interactive=False, approve="all")
    with pytest.raises(ValueError, match=r"^on_permission does not apply with auto_resume=True: "):
        cc_executor_nb.run("hi", auto_resume=True, on_permission=lambda request: "allow")


def test_api_refuses_approve_together_with_a_policy(shell: InteractiveShell, echo_claude: str) -> None:
    """run(approve=..., on_permission=...): a ValueError naming both (approve decided every
    question and the policy was never asked, silently); a configured policy still yields to approve."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    with pytest.raises(ValueError, match=r"^give either approve or on_permission, not both "):
        cc_executor_nb.run("hi", approve="none", on_permission=lambda request: "allow")
    shell.run_line_magic("config", "CCExec.permission_policy = 'all'")
    assert api.prepare("hi", approve="none", view=False).claude.policy == "none"


@pytest.mark.parametrize("flags", ["--resume abc --continue", "--continue --resume abc"])
def test_resume_with_continue_is_a_usage_error(shell: InteractiveShell, echo_claude: str, flags: str) -> None:
    """--resume ID with --continue is refused (the CLI got only one of them)."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    with pytest.raises(UsageError, match=r"^give either --resume \(a session id\) or --continue, not both$"):
        shell.run_line_magic("ccexec", f"{flags} -w -q follow up")
    with pytest.raises(ValueError, match=r"^give either resume \(a session id\) or continue_session, not both$"):
        cc_executor_nb.run("follow up", resume="abc", continue_session=True)


@pytest.mark.parametrize(
    ("flag", "name", "what"),
    [("--model", "model", "a model name"), ("--resume", "resume", "a session id"),
     ("--permission-mode", "permission_mode", "a mode"),
     ("--claude-command", "executable", "a path or command name")],
)
def test_an_empty_option_that_would_run_the_default_is_a_usage_error(
    shell: InteractiveShell, echo_claude: str, flag: str, name: str, what: str
) -> None:
    """--model "" (and resume, permission mode, executable) is refused naming the option: it ran the default
    unnoticed. run(model="") is a ValueError naming the keyword."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    with pytest.raises(UsageError, match=f"^{flag} is empty: give {what}, or leave it unset$"):
        shell.run_line_magic("ccexec", f"{flag} '' --demo -w -q what is 2+2")
    with pytest.raises(ValueError, match=f"^{name} is empty: give {what}, or leave it unset$"):
        cc_executor_nb.run("what is 2+2", display=False, **{name: " "})


def test_an_empty_append_system_prompt_appends_nothing(shell: InteractiveShell, echo_claude: str) -> None:
    """--append-system-prompt '' is taken as given, not refused: the CLI gets no --append-system-prompt."""
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    run = magic(shell, "--append-system-prompt '' --no-interactive -w -q what is 2+2")
    lines = run.stdout.splitlines()
    assert "-p" in lines and "--append-system-prompt" not in lines and lines[-1] == "stdin: what is 2+2"


@pytest.mark.parametrize("durable", ["", "--durable "])
def test_an_idle_timeout_below_the_minimum_is_a_usage_error(
    shell: InteractiveShell, echo_claude: str, durable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--idle-timeout 0.01 is refused up front, named as typed (durable runs failed later naming the protocol)."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))  # a job server started by mistake stays private
    shell.run_line_magic("config", f"CCExec.claude_command = {echo_claude!r}")
    with pytest.raises(UsageError, match=r"^--idle-timeout must be 0 \(never\) or at least 0.1 s, not 0.01$"):
        shell.run_line_magic("ccexec", f"{durable}--idle-timeout 0.01 -w -q hi")
    with pytest.raises(ValueError, match=r"^idle_timeout must be 0 \(never\) or at least 0.1 s, not 0.05$"):
        cc_executor_nb.run("hi", idle_timeout=0.05, durable=bool(durable))
    with pytest.raises(TraitError, match=r"at least 0\.1 s"):
        CCExec(idle_timeout=0.01)


@pytest.mark.parametrize(
    "setting", ["kill_grace", "timeout", "heartbeat_interval", "inactivity_threshold", "idle_timeout"]
)
def test_a_setting_past_the_protocols_bound_is_refused_when_set(setting: str) -> None:
    """CCExec's durations past what an execute may carry are refused by %config: accepted,
    they failed every later run ("kill_grace must be at most 3600 s" from the server)."""
    with pytest.raises(TraitError, match=rf"^CCExec.{setting} must be at most \d+ s \(the protocol's bound\)"):
        CCExec(**{setting: 3e9})


@pytest.mark.parametrize("option", ["timeout", "heartbeat", "inactivity", "idle_timeout"])
def test_a_run_option_past_the_protocols_bound_is_refused_before_it_is_sent(option: str) -> None:
    """ccx.run(timeout=1e9) and heartbeat=1e9 say so at the call; the run failed on the server."""
    refusal = rf"^{option} must be at most \d+ s \(the protocol's bound\), not 1000000000\.0$"
    with pytest.raises(ValueError, match=refusal):
        cc_executor_nb.run("hi", display=False, **{option: 1e9})


def test_a_multi_line_command_cell_is_a_usage_error(shell: InteractiveShell) -> None:
    """%%ccexec -c runs one command: a second line is refused (its words were added to the first line's)."""
    with pytest.raises(UsageError, match="runs one command, without a shell") as info:
        shell.run_cell_magic("ccexec", "-c -w -q", "echo from body\necho second line\n")
    assert "bash -c" in str(info.value) and "\n" not in str(info.value)


def test_a_command_cell_joins_continued_lines_and_keeps_quoted_newlines(shell: InteractiveShell) -> None:
    """Blank lines around the body do not count; a trailing backslash continues a line; a quoted newline stays."""
    body = "\n\n" + fake_command("argv", "a") + " \\\n  b 'c\nd'\n\n"
    run = shell.run_cell_magic("ccexec", "-c -w -q", body)
    assert isinstance(run, Run) and run.stdout == "'a'\n'b'\n'c\\nd'\n"


@pytest.mark.parametrize(("line", "body", "message"), [
    ("", "\n", "%%ccexec needs a prompt"),
    ("--demo", "\n  \n", "%%ccexec needs a prompt"),
    ("-c", "\n", "%%ccexec -c needs a command line"),
    ("-c -w", " \n\n", "%%ccexec -c needs a command line"),
])
def test_an_empty_cell_names_the_cell_magic_and_what_it_needs(
        shell: InteractiveShell, line: str, body: str, message: str) -> None:
    """%%ccexec with an empty cell body says %%ccexec (it said "%ccexec needs a command line", the
    line magic's words) and what goes in the cell: a prompt, or with -c a command line. (A body
    of no characters at all IPython refuses itself, before the magic is called.)"""
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("ccexec", line, body)
    assert str(info.value) == f"{message}: write it in the cell, below the %%ccexec line (see %ccexec?)"


def test_prompt_on_line_and_in_cell_is_a_usage_error(shell: InteractiveShell) -> None:
    """%%ccexec refuses a prompt given both on the line and in the cell."""
    with pytest.raises(UsageError, match="either"):
        shell.run_cell_magic("ccexec", "hello", "world\n")


def test_help_lists_the_options(shell: InteractiveShell) -> None:
    """%ccexec? shows the docstring with every option."""
    doc = shell.find_line_magic("ccexec").__doc__ or ""
    for option in ("--command", "--wait", "--out", "--server", "--token-env", "--model",
                   "--cwd", "--timeout", "--heartbeat", "--inactivity", "--quiet", "--raw",
                   "--demo", "%%ccexec"):
        assert option in doc


def test_run_shows_once_per_cell(shell: InteractiveShell) -> None:
    """A Run displays itself once per cell, and again in a later cell."""

    class Counting:
        shown = 0

        def show(self) -> None:
            self.shown += 1

    run = Run(RunSpec(argv=["true"]), Target("ws://127.0.0.1:9/ws"))
    run.presenter = counting = Counting()
    run.show()
    run._ipython_display_()
    shell.execution_count += 1
    run.show()
    assert counting.shown == 2


# Settings


def test_settings_validate_durations() -> None:
    """Non-positive durations are refused by the traits."""
    with pytest.raises(TraitError):
        CCExec(heartbeat_interval=-1)
    with pytest.raises(TraitError):
        CCExec(timeout=0)
    assert CCExec(timeout=None).timeout is None


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_a_reconnect_limit_must_be_a_positive_number_of_seconds(value: float) -> None:
    """CCExec.reconnect_timeout of 0, a negative number or NaN is refused, naming the setting."""
    with pytest.raises(TraitError, match=r"CCExec\.reconnect_timeout must be a positive finite number"):
        CCExec(reconnect_timeout=value)


@pytest.mark.parametrize("setting", ["timeout", "max_budget_usd"])
def test_a_refused_zero_limit_says_none_means_no_limit(setting: str) -> None:
    """``%config CCExec.timeout = 0`` (as ``--timeout 0`` means no limit) was refused with only
    "must be a positive finite number, not 0.0": the error now says that None is no limit."""
    with pytest.raises(TraitError) as refused:
        CCExec(**{setting: 0})
    assert str(refused.value) == f"CCExec.{setting} must be a positive finite number (None: no limit), not 0.0"


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("default_server", "not a url", "CCExec.default_server must be a ws:// or wss:// URL, not 'not a url'"),
    ("default_server", "http://u:pw@host:1/ws", "CCExec.default_server must be a ws:// or wss:// URL, not 'http://host:1/ws'"),
    ("default_server", "ws://u:pw@host:notaport/ws?token=S",
     "CCExec.default_server 'ws://host:notaport' is not a usable URL: its port is not a number"),
    ("spool_dir", "/nonexistent_dir", "CCExec.spool_dir '/nonexistent_dir' is not a directory"),
])
def test_server_and_spool_dir_are_checked_when_set(setting: str, value: str, message: str) -> None:
    """A default_server that is no ws:// URL and a spool_dir that is no directory are refused when set,
    naming the setting (they were accepted and failed at run time); empty and good values pass."""
    settings = CCExec()
    with pytest.raises(TraitError) as refused:
        setattr(settings, setting, value)
    assert str(refused.value) == message and getattr(settings, setting) == ""
    settings.default_server, settings.spool_dir = "ws://127.0.0.1:1/ws", "/tmp"
    settings.default_server = settings.spool_dir = ""


def test_setting_help_stands_alone_and_names_every_policy_answer() -> None:
    """In the alphabetical %config CCExec listing no help refers to its neighbour ("The same ..."),
    and permission_policy's help lists the callable's 'always' that the README documents."""
    traits = CCExec.class_traits(config=True)
    assert not [name for name, trait in traits.items() if trait.help.lower().startswith("the same")]
    assert "'always'" in traits["permission_policy"].help


def test_conversation_settings_validate() -> None:
    """idle_timeout is not negative (0: never); permission_policy is a mode or a callable."""
    with pytest.raises(TraitError):
        CCExec(idle_timeout=-1)
    with pytest.raises(TraitError):
        CCExec(permission_policy="sometimes")
    assert CCExec(idle_timeout=0).idle_timeout == 0
    assert CCExec(permission_policy="all").permission_policy == "all"
    assert CCExec().permission_policy == "ask" and CCExec().interactive is True


def test_max_idle_conversations_is_not_negative() -> None:
    """max_idle_conversations is 0 (no limit) or more, 8 by default; negative is refused."""
    with pytest.raises(TraitError):
        CCExec(max_idle_conversations=-1)
    assert CCExec(max_idle_conversations=0).max_idle_conversations == 0
    assert CCExec().max_idle_conversations == 8


def test_every_setting_has_help() -> None:
    """Each configurable trait carries help text for %config and ipython_config.py."""
    for name, trait in CCExec.class_traits(config=True).items():
        assert trait.help, name


def test_config_file_values_apply(tmp_path: Path) -> None:
    """Values from the shell's config (ipython_config.py) reach CCExec."""
    config = Config()
    config.CCExec.max_output_chars = 123
    assert CCExec(config=config).max_output_chars == 123


# The Python API


def test_api_run_accepts_an_argv_list(shell: InteractiveShell) -> None:
    """run([...], command=True) runs the argv as is."""
    run = cc_executor_nb.run(
        [sys.executable, "-c", "import sys; print(sys.argv[1:])", "a b"],
        command=True, wait=True, quiet=True,
    )
    assert run.stdout == "['a b']\n"


def test_a_run_on_a_nearly_full_disk_captures_through_pipes_unless_asked(
    shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no --capture and no CCExec.capture, the server chooses: pipes on a disk short of
    space (the kernel always asked for files, so a child on a full /tmp got ENOSPC and a 6 MB
    run read back 1 MiB, "failed", with no word why); --capture file still gets files."""
    monkeypatch.setattr(DiskBudget, "room_for_files", lambda self: False)
    for options, used in (((), "pipe"), (("--capture", "file"), "file")):
        run = magic(shell, ccexec("echo hi", "-w", "-q", *options))
        started = next(event for event in run.events if event.method == "process.started")
        assert (started.params["capture"], run.stdout) == (used, "hi\n")

@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt(), ValueError("bad")])
def test_a_done_callback_that_raises_leaves_the_loop_running(shell: InteractiveShell, error: BaseException) -> None:
    """A done callback raising SystemExit or KeyboardInterrupt on the loop thread is logged, and
    the loop goes on (it ended the loop thread: this run's wait() and every later run hung)."""

    def fail(_run: Run) -> None:
        raise error

    first = cc_executor_nb.run("sleep 0.2", command=True, quiet=True)
    first.add_done_callback(fail)
    assert first.wait(timeout=scaled(30)).status == "completed"
    assert magic(shell, ccexec("echo ok", "-w", "-q")).stdout == "ok\n"

@pytest.mark.parametrize(("options", "flag", "keyword", "value"), [
    (("--max-budget-usd", "-1"), "--max-budget-usd", "max_budget_usd", -1.0),
    (("--heartbeat", "0.01"), "--heartbeat", "heartbeat", 0.01),
    (("--timeout", "-1"), "--timeout", "timeout", -1.0),
    (("--capture", "tty"), "--capture", "capture", "tty"),
    (("--max-turns", "0"), "--max-turns", "max_turns", 0),
    (("--server", "localhost:8000"), "-s/--server", "server", "localhost:8000"),
])
def test_bad_values_name_the_flag_as_typed_and_the_keyword_in_the_api(
    shell: InteractiveShell, options: tuple[str, str], flag: str, keyword: str, value: object
) -> None:
    """The magic's usage error starts with the flag (it said max_budget_usd, heartbeat, max_turns,
    server ...); run() keeps the keyword."""
    with pytest.raises(UsageError) as refused:
        magic(shell, f"%ccexec {' '.join(options)} hello")
    assert str(refused.value).startswith(f"{flag} must be "), refused.value
    with pytest.raises(ValueError, match=f"^{keyword} must be "):
        cc_executor_nb.run("hello", **{keyword: value})


def test_a_negative_timeout_says_that_0_means_no_limit(shell: InteractiveShell) -> None:
    """--timeout -1 / timeout=-1 say 0 is allowed (no limit): "must be a positive number" read as if 0 were not."""
    with pytest.raises(UsageError, match=r"^--timeout must be 0 \(no limit\) or a positive number of seconds, "
                                         r"not -1.0$"):
        magic(shell, ccexec("echo hi", "--timeout", "-1"))
    with pytest.raises(ValueError, match=r"^timeout must be 0 \(no limit\) or a positive number of seconds, not -1$"):
        cc_executor_nb.run("echo hi", command=True, timeout=-1)
    assert magic(shell, ccexec("true", "-w", "-q", "--timeout", "0")).status == "completed"


def test_api_run_rejects_bad_input(shell: InteractiveShell) -> None:
    """run() raises ValueError for an empty command or a bad timeout."""
    with pytest.raises(ValueError, match="empty"):
        cc_executor_nb.run("  ", command=True)
    with pytest.raises(ValueError, match="timeout"):
        cc_executor_nb.run("true", command=True, timeout=-5)


def test_api_run_takes_paths_for_cwd_and_env_values(shell: InteractiveShell, tmp_path: Path) -> None:
    """cwd=Path(...) and env={"X": Path(...)} run (they failed with "PosixPath is not JSON serializable")."""
    run = cc_executor_nb.run(["sh", "-c", 'pwd; echo "$X"'], command=True, wait=True, quiet=True,
                             cwd=tmp_path, env={"X": tmp_path / "data"})
    assert (run.status, run.stdout) == ("completed", f"{tmp_path}\n{tmp_path / 'data'}\n")


@pytest.mark.parametrize(
    ("options", "message"),
    [({"cwd": 123}, r"cwd must be a path \(str or os.PathLike\), not 123"),
     ({"env": {"A": 1}}, r"env must map names \(str\) to values \(str or os.PathLike\), not 'A': 1"),
     ({"env": ["A=b"]}, "env must be a mapping of names to values, not list"),
     ({"label": 5}, "label must be a string, not 5"),
     ({"server": "localhost:8000"}, "server must be a ws:// or wss:// URL, not 'localhost:8000'"),
     ({"server": "http://user:s3cret@host:1/ws?token=abc"},  # the password and token never show
      r"server must be a ws:// or wss:// URL, not 'http://host:1/ws'$"),
     # Malformed URLs are refused up front (the run started, then ended in a ValueError of the URL parser).
     ({"server": "ws://127.0.0.1:99999/ws"},
      r"server 'ws://127.0.0.1:99999' is not a usable URL: its port is not in 0-65535$"),
     ({"server": "ws://[::1/ws"}, r"server 'ws://\[::1' is not a usable URL: its IPv6 address is malformed$"),
     ({"server": "ws:///ws"}, r"server 'ws://' is not a usable URL: it names no host$")],
)
def test_api_run_refuses_a_cwd_or_env_it_cannot_send(shell: InteractiveShell, options: dict, message: str) -> None:
    """A cwd or env the protocol cannot carry is a ValueError before anything starts."""
    with pytest.raises(ValueError, match=message):
        cc_executor_nb.run(["true"], command=True, quiet=True, **options)


def test_an_empty_cwd_is_refused_naming_the_option(shell: InteractiveShell) -> None:
    """cwd="" (or --cwd '') started the run, which failed "its working directory '': No such
    file or directory"; it is refused before anything starts, named as typed."""
    with pytest.raises(UsageError, match=r"^--cwd is empty: give a directory or leave it unset$"):
        shell.run_line_magic("ccexec", "-c -q --cwd '' true")
    with pytest.raises(ValueError, match=r"^cwd is empty: give a directory or leave it unset$"):
        cc_executor_nb.run(["true"], command=True, quiet=True, cwd="")


def test_api_run_without_wait_returns_at_once(shell: InteractiveShell) -> None:
    """run() without wait returns a live run; cancel() ends it."""
    run = cc_executor_nb.run(py("import time; time.sleep(30)"), command=True, quiet=True)
    assert not run.done
    run.cancel().wait(scaled(20))
    assert run.status == "cancelled"


async def test_arun_awaits_the_end(shell: InteractiveShell) -> None:
    """await arun(...) returns the finished run."""
    run = await cc_executor_nb.arun(fake_command("echo", "async"), command=True, quiet=True)
    assert (run.status, run.stdout) == ("completed", "async\n")


async def test_a_cancelled_arun_cancels_its_run(shell: InteractiveShell) -> None:
    """asyncio.wait_for(arun(...), 1) times out: the run is cancelled (it went on with nobody
    holding it: a sleep, or a Claude process until its idle timeout)."""
    started: list[Run] = []
    original = Run.start

    def remember(self: Run, loop: object) -> Run:
        started.append(self)
        return original(self, loop)  # type: ignore[arg-type]

    Run.start = remember  # type: ignore[method-assign]
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(cc_executor_nb.arun(py("import time; time.sleep(30)"), command=True, quiet=True),
                                   timeout=1.0)
    finally:
        Run.start = original  # type: ignore[method-assign]
    (run,) = started
    await asyncio.to_thread(run.wait, scaled(20))
    assert run.status == "cancelled"


def test_run_with_wait_on_the_loop_thread_is_refused_before_it_starts(
    shell: InteractiveShell, tmp_path: Path
) -> None:
    """run(..., wait=True) from a done callback (the loop thread) raises before starting a process
    (it started one, then said "would block"); wait() on a finished run returns there."""
    marker = tmp_path / "started"
    outcome: list[object] = []

    def on_done(done: Run) -> None:
        outcome.append(done.wait())  # finished: returns at once, even here
        try:
            cc_executor_nb.run(py(f"open({str(marker)!r}, 'w'); import time; time.sleep(30)"),
                               command=True, quiet=True, wait=True)
        except RuntimeError as exc:
            outcome.append(str(exc))

    first = cc_executor_nb.run("true", command=True, quiet=True)
    first.add_done_callback(on_done)
    first.wait(scaled(20))
    eventually(lambda: len(outcome) == 2, what="the callback")
    assert outcome[0] is first and "would block the loop thread" in str(outcome[1])
    time.sleep(1.0)
    assert not marker.exists()


def test_remote_server_token_comes_from_the_environment(
    shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--server uses the token from the --token-env variable."""
    monkeypatch.setenv("CCX_TEST_TOKEN", "s3cret")
    run = magic(shell, ccexec("true", "-q", "-s", "ws://127.0.0.1:9/ws", "--token-env", "CCX_TEST_TOKEN"))
    run.wait(scaled(20))
    assert run.target.token == "s3cret" and run.status == "error"
    assert "s3cret" not in repr(run.target) and "s3cret" not in (run.error or "")


# Line splitting


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('"echo hi" --wait', "echo hi"),
        ("What's up, doc?", "What's up, doc?"),
        ('say "a b"  now', 'say "a b"  now'),
        ("'python -c \"print(1)\"'", 'python -c "print(1)"'),
    ],
)
def test_text_of_keeps_the_typed_text(line: str, expected: str) -> None:
    """The prompt or command text is taken from the line as typed (a fully quoted word unquoted)."""
    tokens = [t for t in split_line(line) if not t.startswith("--")]
    assert text_of(line, tokens) == expected


def _shlex_word(raw: str) -> str:
    try:
        words = shlex.split(raw)
    except ValueError:
        return raw
    return words[0] if len(words) == 1 else raw


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="ab \\'\"\n\t\r\x0b\u00a0$", max_size=16))
def test_a_word_of_the_line_is_unquoted_as_shlex_unquotes_it(raw: str) -> None:
    """Each word's value is the one word shlex.split makes of it (else the word as typed)."""
    assert magic_module._unquote(raw) == _shlex_word(raw)


def test_a_prompt_of_megabytes_in_the_line_is_split_at_once() -> None:
    """A 4 MB quoted prompt in a %ccexec line is read within the test's timeout: shlex, which
    grows a word a character at a time, held the kernel for minutes on 2 MB."""
    prompt = "summarise: " + "word " * 800_000
    line = f'--demo "{prompt}" --wait'
    tokens = split_line(line)
    assert [str(token) for token in tokens] == ["--demo", prompt, "--wait"]
    assert text_of(line, tokens[1:2]) == prompt


def test_a_prompt_of_escaped_quotes_after_a_lone_quote_is_split_at_once() -> None:
    """A line whose quotes after a lone one are all escaped (a quoted JSON or log text pasted in
    the prompt) is split within the test's timeout: each escaped quote began a quoted string
    that ran to the end of the line and failed (quadratic: 16 s for 40,000 of them)."""
    line = '--demo summarise: " ' + 'say \\"hi\\" ' * 200_000 + "--wait"
    tokens = split_line(line)
    assert [token.raw for token in tokens] == line.split()


_WORD_REGEX = re.compile(r"""(?:[^ \t\r\n"'\\]+|\\.|"(?:[^"\\]|\\.)*"|'[^']*'|["'\\])+""", re.DOTALL)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="ab \\'\"\n\t\u00a0", max_size=24))
def test_the_line_is_split_where_the_word_regex_splits_it(line: str) -> None:
    """The linear split finds the words the word regex (tried at every quote) finds."""
    assert [(t.raw, t.start) for t in split_line(line)] == [(m.group(), m.start()) for m in _WORD_REGEX.finditer(line)]


@pytest.mark.parametrize("blank", ["\u00a0", "\u3000", "\x0b", "\x0c", "\u2028"])
def test_a_blank_that_is_no_shell_blank_stays_in_its_word(blank: str) -> None:
    """Words are split at a space, tab or line break, as shlex (and a POSIX shell) splits them:
    a no-break space (a path pasted from a web page), an ideographic space or a form feed in a
    word split it, so '--cwd my<NBSP>dir hi' ran in 'my' with the prompt 'dir hi'."""
    line = f"--cwd my{blank}dir hi"
    assert [str(token) for token in split_line(line)] == shlex.split(line) == ["--cwd", f"my{blank}dir", "hi"]


def _shlex_words(line: str) -> list[str] | None:
    try:
        return shlex.split(line)
    except ValueError:
        return None


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="ab \\'\"\n\t", max_size=20))
def test_a_line_shlex_can_split_is_split_into_shlexs_words(line: str) -> None:
    """Where shlex splits the line (no quote left open, no backslash at its end), the words are
    shlex's: a backslash escapes a blank or a quote outside quotes too."""
    words = _shlex_words(line)
    if words is not None:
        assert [str(token) for token in split_line(line)] == words


def test_a_backslash_escapes_a_blank_or_a_quote_outside_quotes() -> None:
    """'--cwd my\\ dir' gives the directory 'my dir', as a shell does: the backslash ended a word
    ('my\\'), and the prompt began with 'dir'; \\' opened a quoted string."""
    line = "--cwd my\\ dir don\\'t say 'hi'"
    assert [str(token) for token in split_line(line)] == ["--cwd", "my dir", "don't", "say", "hi"]


def test_a_backslash_before_a_line_break_inside_quotes_stays_in_the_word() -> None:
    """A quoted prompt holding a line that ends in a backslash (a shell or Python line
    continuation in expanded code) is one word, as shlex reads it: it was cut in two at the
    line break, so the prompt kept its quotes."""
    line = '--demo "fix: x = 1 + \\\n    2"'
    tokens = split_line(line)
    assert [str(token) for token in tokens] == shlex.split(line)
    assert text_of(line, tokens[1:]) == "fix: x = 1 + \\\n    2"


def test_an_option_error_survives_pickling_and_copying() -> None:
    """A bad option's error crosses processes whole (a Dask task's): it raised TypeError when
    rebuilt, as its constructor takes the template and names, not the message."""
    with pytest.raises(ValueError) as caught:
        ClaudeOptions(max_budget_usd=-1).check()
    for again in (pickle.loads(pickle.dumps(caught.value)), copy.copy(caught.value)):
        assert type(again) is type(caught.value) and str(again) == str(caught.value)


def test_a_token_env_that_is_not_set_is_a_usage_error(shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    """--token-env naming an unset variable is refused up front, naming the flag and the variable (the run
    connected without a token and got the generic HTTP 401 hint)."""
    monkeypatch.delenv("CCX_NO_SUCH_TOKEN", raising=False)
    with pytest.raises(UsageError, match=r"^--token-env CCX_NO_SUCH_TOKEN: the environment variable "
                                         r"CCX_NO_SUCH_TOKEN is not set$"):
        magic(shell, ccexec("true", "-q", "-s", "ws://127.0.0.1:9/ws", "--token-env", "CCX_NO_SUCH_TOKEN"))


def test_run_refuses_a_token_env_that_is_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """run(token_env=NAME) naming an unset variable: a ValueError naming it, before any connection."""
    monkeypatch.delenv("CCX_NO_SUCH_TOKEN", raising=False)
    with pytest.raises(ValueError, match=r"token_env='CCX_NO_SUCH_TOKEN': the environment variable "
                                         r"CCX_NO_SUCH_TOKEN is not set"):
        cc_executor_nb.run(["true"], command=True, server="ws://127.0.0.1:9/ws", token_env="CCX_NO_SUCH_TOKEN",
                           display=False)


@pytest.mark.parametrize("keyword", ["token", "token_env"])
def test_run_refuses_a_token_without_a_remote_server(keyword: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token for a run that goes to the in-kernel server or the job server would be ignored (each
    has its own): run() refuses it, naming what is missing (it was accepted and unused)."""
    monkeypatch.setenv("CCX_SOME_TOKEN", "t")
    value = "t" if keyword == "token" else "CCX_SOME_TOKEN"
    with pytest.raises(ValueError, match=rf"^{keyword} applies to a remote server only: give server too"):
        cc_executor_nb.run(["true"], command=True, display=False, **{keyword: value})


def test_the_magic_refuses_a_token_env_without_a_server(shell: InteractiveShell, monkeypatch) -> None:
    """%ccexec --token-env without --server names both flags."""
    monkeypatch.setenv("CCX_SOME_TOKEN", "t")
    with pytest.raises(UsageError, match=r"^--token-env applies to a remote server only: give -s/--server too"):
        magic(shell, ccexec("true", "-q", "--token-env", "CCX_SOME_TOKEN"))


def test_a_refused_token_says_where_it_came_from(shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server refusing the token: the error names where this run read it (the variable --token-env or
    token_env= named, the configured one and whether it is set, or token=); it gave one generic hint."""
    server = start_server("--token", "the-right-token")
    monkeypatch.setenv("CCX_BAD_TOKEN", "nope")
    monkeypatch.delenv("CC_EXECUTOR_TOKEN", raising=False)
    refused = f"{server.url} refused the connection: HTTP 401 (Unauthorized: missing or wrong bearer token): "
    named = "the token was read from CCX_BAD_TOKEN (--token-env, token_env=): give the server's token there"
    configured = ("the token was read from CC_EXECUTOR_TOKEN (CCExec.token_env){}: give the server's token there, "
                  "or name another variable with --token-env (token_env=)")
    try:
        by_flag = magic(shell, ccexec("echo x", "-w", "-q", "-s", server.url, "--token-env", "CCX_BAD_TOKEN"))
        by_keyword = cc_executor_nb.run("echo x", command=True, server=server.url, token_env="CCX_BAD_TOKEN",
                                        wait=True, display=False)
        unset = cc_executor_nb.run("echo x", command=True, server=server.url, wait=True, display=False)
        monkeypatch.setenv("CC_EXECUTOR_TOKEN", "nope")
        wrong = cc_executor_nb.run("echo x", command=True, server=server.url, wait=True, display=False)
        given = cc_executor_nb.run("echo x", command=True, server=server.url, token="nope", token_env="CCX_BAD_TOKEN",
                                   wait=True, display=False)
    finally:
        server.finish()
    assert by_flag.error == by_keyword.error == refused + named
    assert unset.error == refused + configured.format(", which is not set")
    assert wrong.error == refused + configured.format("")
    assert given.error == refused + "the token was given as token=: give the server's token"
    assert all(run.status == "error" and "nope" not in (run.error or "") for run in (by_flag, unset, wrong, given))


@pytest.mark.parametrize("command", [b"echo hi", ["echo", b"hi"], bytearray(b"echo hi")])
def test_api_run_refuses_a_command_of_bytes(shell: InteractiveShell, command: object) -> None:
    """A command of bytes is refused before anything starts: b"echo hi" was a sequence of
    numbers, so it ran a program named '101' (words '101 99 104 ...'), and an argv item b"hi"
    became the text "b'hi'"."""
    with pytest.raises(ValueError, match="a command is text, not bytes: decode it first"):
        cc_executor_nb.run(command, command=True, quiet=True)  # type: ignore[arg-type]


def test_a_raw_claude_records_html_and_text_show_the_same_tail(shell: InteractiveShell) -> None:
    """``--raw``: the CLI's first line (its control response) is longer than the record's 20,000
    characters, so the tail starts at the next line in the text; the HTML showed the last 20,000
    from inside that line and said fewer characters were not shown. Both now hold the same lines."""
    run = magic(shell, '%ccexec --demo --wait --raw -q "write 3 haikus about the sea"')
    record = api._record(run, CCExec())()
    said = re.search(r"\[stdout\] \(the last ([\d,]+) of ([\d,]+) characters\)", record["text/plain"])
    assert said is not None, record["text/plain"][:300]
    shown, total = (int(n.replace(",", "")) for n in said.groups())
    assert total == len(run.stdout) and shown < 20000
    assert f"… {total - shown:,} earlier characters not shown" in record["text/html"]
    first_line = run.stdout[total - shown:].split("\n", 1)[0]
    assert first_line.startswith('{"type":') and html.escape(first_line) in record["text/html"]
