"""The ``%ccexec`` / ``%%ccexec`` magic and the extension's load and unload hooks.

``%load_ext cc_executor_nb`` only registers the magic and its settings
(:class:`~cc_executor_nb.kernel.config.CCExec`, shown by ``%config CCExec``); the background
loop and the in-kernel server start with the first run. ``%unload_ext`` stops runs,
server, loop and thread; ``%reload_ext`` does that and loads afresh, keeping the
``%config`` settings.
"""

from __future__ import annotations

import itertools
import keyword
import math
import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, needs_local_scope, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets.config import Configurable

from .. import shellwords
from ..claude.options import ClaudeOptions, check_dollars
from ..declare import OptionError, abbreviation, declared
from ..errors import CCExecError
from . import api
from .config import CCExec, checked_settings
from .expand import expand
from .jobs import MIN_PREFIX, JobsTable, attach, show_jobs
from .loop import stop_shared_loop
from .options import BatchOptions, RunOptions
from .run import Run

if TYPE_CHECKING:
    from .batch import Batch

__all__ = [
    "CCExecMagics",
    "Token",
    "load_ipython_extension",
    "one_command",
    "split_line",
    "unload_ipython_extension",
]

# A token is a run of non-blank characters, backslash escapes and quoted strings; a lone
# quote (or a backslash at the end) is a literal (prompts are full of apostrophes). Blanks are
# shlex's (a POSIX shell's): space, tab, CR, LF; a no-break space is part of a word. A
# backslash escapes the next character, a blank or a quote too (in "...", a line break too:
# shlex keeps both).
_TOKEN = re.compile(r"""(?:[^ \t\r\n"'\\]++|\\.|"(?:[^"\\]++|\\.)*+"|'[^']*'|["'\\])+""", re.DOTALL)
# Everything up to the first double quote that closes nowhere: once one does not, no later one
# does (its string ran to the end of the line through every later one, each escaped), so
# _TOKEN need not try each again to the end of the line (quadratic).
_UNTIL_LONE_QUOTE = re.compile(r"""(?:[^"'\\]++|\\.|"(?:[^"\\]++|\\.)*+"|'[^']*+'|'|\\)*+(?=")""", re.DOTALL)


_PLACEHOLDER = re.compile(r"\{(?:item|index)\W")
"""A batch template's placeholder, ``{item}`` or ``{index}`` (``{item!r}``, ``{item:>5}`` too)."""


class _Placeholder:
    """A batch placeholder the line's expansion leaves as written (``{item}``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __format__(self, spec: str) -> str:
        return f"{{{self.name}:{spec}}}" if spec else f"{{{self.name}}}"

    def __str__(self) -> str:
        return f"{{{self.name}}}"

    def __repr__(self) -> str:
        return f"{{{self.name}!r}}"


class Token(str):
    """A word of the magic's line: its unquoted value, and where it sits in the line."""

    raw: str
    start: int
    end: int
    position: int
    """The word's number in the line (``index`` would hide ``str.index``)."""

    def __new__(cls, raw: str, start: int, position: int) -> Token:
        token = super().__new__(cls, _unquote(raw))
        token.raw, token.start, token.end, token.position = raw, start, start + len(raw), position
        return token


def split_line(line: str) -> list[Token]:
    """Split a magic line like a POSIX shell, keeping each word's place in the line. Linear:
    the words are found in a copy where every double quote from the first that closes nowhere
    on is a plain character, as _TOKEN would find each of them to be."""
    lone = _UNTIL_LONE_QUOTE.match(line)
    shadow = line if lone is None else line[: lone.end()] + line[lone.end() :].replace('"', "\0")
    return [Token(line[m.start() : m.end()], m.start(), i) for i, m in enumerate(_TOKEN.finditer(shadow))]


def _unquote(raw: str) -> str:
    """The word ``shlex.split`` makes of ``raw``, or ``raw`` itself when it makes no single
    word (none, several, a lone quote, a trailing backslash). Linear (see
    :mod:`cc_executor_nb.shellwords`): a 2 MB prompt in the line took shlex minutes."""
    try:
        words = shellwords.split(raw)
    except ValueError:
        return raw
    return words[0] if len(words) == 1 else raw


def text_of(line: str, tokens: Sequence[Token]) -> str:
    """The text the words came from: the exact span of the line when they are adjacent.

    A single fully quoted word is unquoted (``-c "echo hi"`` gives ``echo hi``).
    """
    if not tokens:
        return ""
    if len(tokens) == 1 and _is_quoted(tokens[0].raw):
        return str(tokens[0])
    adjacent = all(b.position == a.position + 1 for a, b in itertools.pairwise(tokens))
    if adjacent:
        return line[tokens[0].start : tokens[-1].end]
    return " ".join(token.raw for token in tokens)


def _is_quoted(raw: str) -> bool:
    return len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'" and _unquote(raw) != raw


def declared_arguments() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the flags declared by RunOptions and ClaudeOptions to a magic's parser."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for cls in (BatchOptions, ClaudeOptions, RunOptions):
            for f, spec in reversed(declared(cls)):
                if spec.flags:
                    func = argument(*spec.flags, **spec.argparse_kwargs(f.name))(func)
        return func

    return decorate


_OPTION_FLAGS = {
    f.name: "/".join(spec.flags) for cls in (RunOptions, ClaudeOptions) for f, spec in declared(cls) if spec.flags
}
_OPTION_NAMES = tuple(_OPTION_FLAGS)
# What --attach and --jobs use; every other run flag is refused there rather than ignored.
_FOLLOW_NAMES = frozenset({"server", "token_env", "quiet", "wait"})
_BATCH_FLAGS = {f.name: "/".join(spec.flags) for f, spec in declared(BatchOptions) if spec.flags}
_BATCH_NAMES = tuple(f.name for f, spec in declared(BatchOptions) if spec.flags and f.name != "each")


def _refuse_run_flags(args: Any, action: str) -> None:
    """A flag of a run that starts, given to --jobs or --attach, is a usage error rather than ignored."""
    ignored = [name for name in _OPTION_NAMES if name not in _FOLLOW_NAMES and getattr(args, name) is not None]
    if ignored:
        raise UsageError(f"{action} takes no {_OPTION_FLAGS[ignored[0]]} (it applies to a run that starts)")
    if action == "--jobs" and args.wait:
        raise UsageError("--jobs takes no --wait (the table does not end; --attach ID --wait waits for a job)")


@magics_class
class CCExecMagics(Magics):
    """Run Claude Code prompts and long CLI jobs from the notebook, streamed live.

    Settings: ``%config CCExec`` lists them; ``%config CCExec.NAME = VALUE`` sets one.
    """

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.settings = checked_settings(self)
        if hasattr(shell, "configurables"):
            shell.configurables.append(self.settings)

    @magic_arguments()
    @declared_arguments()
    @argument("-o", "--out", metavar="NAME", help="also bind the Run to NAME in the user namespace")
    @argument("--jobs", action="store_true",
              help="show the durable jobs of the job server (a live table) instead of running anything")
    @argument("--attach", metavar="ID",
              help="follow a durable job: its output from the start, then live "
              f"(an id, a unique prefix of one of {MIN_PREFIX}+ characters, or 'last': this notebook's newest)")
    @argument("text", nargs="*",
              help="the prompt (or with -c the command line); with %%%%ccexec, the cell body")
    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    def ccexec(
        self, line: str, cell: str | None = None, local_ns: dict[str, Any] | None = None
    ) -> Run | JobsTable | Batch | None:
        """Run a Claude prompt, or with -c a command line, and show it live.

        The magic returns at once (unless -w) and the kernel stays free while the run
        streams; the returned Run has .status, .exit_code, .stdout, .stderr,
        .duration, .events, .claude, .wait(), .cancel(), .pause(), .resume(), and can be
        awaited. A Claude run is a conversation: its permission questions show as an
        approval card (or in the cell's input box while the kernel is busy), and
        .pending, .approve(), .deny(message=...), .send(prompt), .interrupt(), .end()
        drive it from code (-w waits for the turn's end; the process then stays for a
        follow-up until .end() or the idle timeout). Examples::

          %ccexec Summarise README.md in three bullet points
          %ccexec -c "pytest -q" --wait -o tests
          %%ccexec --model sonnet
          Review this diff for bugs: ...

        Durable jobs live in the user's job server and outlive the kernel::

          %ccexec --durable -c "python train.py"
          %ccexec --jobs
          %ccexec --attach last

        Many runs as one Batch, once per item of an iterable (``{item}`` is filled in)::

          %%ccexec --each files --concurrency 8 --batch-budget-usd 5
          Summarise {item} in three bullet points.

        In a command (``-c``) each word takes the item as it is (``wc -l {item}`` is one
        argument); in the script of ``sh``/``bash``/``dash``/``zsh``/``ksh -c`` the item is
        shell-quoted (``bash -c 'wc -c {item}'``).
        """
        line = self._expand(line, local_ns)
        if _asks_help(line):
            print(self.ccexec.parser.format_help().removeprefix("::\n\n"))
            return None
        args, text = self._parse(line, cell)
        result = self._act(args, text)
        if args.out:
            assert self.shell is not None, "a magic is only called through its shell"
            self.shell.user_ns[args.out] = result
        if args.wait and isinstance(result, Run):
            return api.wait_one_shot(result)
        return result.wait() if args.wait and not isinstance(result, JobsTable) else result

    def _expand(self, line: str, local_ns: dict[str, Any] | None) -> str:
        """``$name`` and ``{expression}`` filled in as IPython would (in linear time, see
        :mod:`~cc_executor_nb.kernel.expand`), from the caller's namespace.

        IPython passes ``local_ns`` whenever it skipped its own expansion for this magic;
        without it the magic was called otherwise (through ``%alias_magic``, whose alias
        IPython has expanded already, or directly from Python): the line is taken as given,
        never expanded twice (a value's own braces would be evaluated).
        """
        if local_ns is None:
            return line
        assert self.shell is not None, "a magic is only called through its shell"
        namespace = {**self.shell.user_ns, **local_ns}
        if _PLACEHOLDER.search(line) and self._names_each(line):
            # A batch's {item} and {index} are its own: a notebook's item (a for loop leaves
            # one) made the template 'echo OOPS', refused, or every run 'echo OOPS N'.
            namespace.update((name, _Placeholder(name)) for name in ("item", "index"))
        return expand(line, namespace)

    def _names_each(self, line: str) -> bool:
        """Whether the line's options hold --each (options are written in full)."""
        tokens = split_line(line)
        cut = next((i for i, t in enumerate(tokens) if t.raw == "--"), len(tokens))
        return any(token.partition("=")[0] == "--each" for token in tokens[:cut])

    def _parse(self, line: str, cell: str | None) -> tuple[Any, str]:
        tokens = split_line(line)
        # Everything after a "--" word is text, however much it looks like options.
        cut = next((i for i, t in enumerate(tokens) if t.raw == "--"), len(tokens))
        args = self._parse_options(tokens[:cut])
        text = text_of(line, [*args.text, *tokens[cut + 1 :]])
        if cell is not None and cell.strip():
            if text:
                raise UsageError("give the prompt either on the %%ccexec line or in the cell")
            text = one_command(cell) if args.command else cell.strip("\n")
        if args.jobs and args.attach is not None:
            raise UsageError("give either --jobs (the table) or --attach ID (one job), not both")
        action = "--jobs" if args.jobs else "--attach" if args.attach is not None else None
        if action and text.strip():
            raise UsageError(f"{action} takes no prompt or command")
        if action == "--attach" and args.durable:
            raise UsageError("--attach follows a job that exists; --durable starts one")
        if action:
            _refuse_run_flags(args, action)
        if action and args.each:
            raise UsageError(f"{action} takes no --each")
        if args.token_env and args.token_env not in os.environ:
            raise UsageError(f"--token-env {args.token_env}: the environment variable {args.token_env} is not set")
        given = [name for name in _BATCH_NAMES if getattr(args, name) is not None]
        if given and not args.each:
            raise UsageError(f"--{given[0].replace('_', '-')} needs --each NAME")
        if args.on_budget is not None and args.batch_budget_usd is None:
            # Checked here: map() names its budget max_budget_usd, which the magic spells --max-budget-usd.
            raise UsageError("--on-budget needs --batch-budget-usd: without a batch budget it never acts")
        if not text.strip() and not action:
            raise UsageError(_nothing_to_run(bool(args.command), cell is not None))
        if args.out and (not args.out.isidentifier() or keyword.iskeyword(args.out)):
            raise UsageError(f"-o/--out needs a Python name, not {args.out!r}")
        return args, text

    def _parse_options(self, tokens: list[Token]) -> Any:
        """The words before ``--`` parsed, a quoted word that starts with ``-`` taken as text.

        argparse reads ``"-what is 2+2"`` as ``-w`` with ``hat is 2+2``: the quotes are gone by
        then, but the line shows the word was quoted, so it goes to argparse shielded (a leading
        space: not an option, and still a number to ``float``) and comes back as it was.
        """
        parser = self.ccexec.parser
        # argparse would take --wa for --wait: refused, as the terminal client refuses it.
        refused = next((found for t in tokens if not _quoted_dash(t) and (found := abbreviation(parser, t))), None)
        if refused is not None:
            raise UsageError(refused)
        try:
            args = parser.parse_intermixed_args([_Shielded(t) if _quoted_dash(t) else t for t in tokens])
        except UsageError as exc:
            flags = parser._option_string_actions
            unknown = [t for t in tokens if t.raw.startswith("-") and t.partition("=")[0] not in flags]
            if unknown:
                raise UsageError(f"{exc} (if the prompt starts with {unknown[0].raw!r}, put it in quotes "
                                 "or after --)") from None
            raise
        for name, value in vars(args).items():
            setattr(args, name, _unshielded(value))
        return args

    def _start(self, args: Any, text: str) -> Run:
        values = {name: getattr(args, name) for name in _OPTION_NAMES}
        values["env"] = _env_pairs(args.env or ())
        values["wait"] = False  # the magic waits itself, once -o has bound the run
        try:
            return api.run(text, settings=self.settings, **values)
        except (ValueError, FileNotFoundError) as exc:
            raise _usage_error(exc) from None

    def _act(self, args: Any, text: str) -> Run | JobsTable | Batch:
        if args.jobs:
            return self._jobs(args)
        if args.each:
            return self._batch(args, text)
        return self._attach(args) if args.attach is not None else self._start(args, text)

    def _batch(self, args: Any, text: str) -> Batch:
        from .batch import map as batch_map

        values = {name: getattr(args, name) for name in _OPTION_NAMES if name not in ("wait", "quiet")}
        values["env"] = _env_pairs(args.env or ())
        # --max-budget-usd is each run's; --batch-budget-usd the batch's (map's max_budget_usd).
        values["run_max_budget_usd"] = values.pop("max_budget_usd")
        try:
            check_dollars("--batch-budget-usd", args.batch_budget_usd)  # map() would name its max_budget_usd
            if args.command and args.batch_budget_usd is not None:
                raise UsageError("--batch-budget-usd needs Claude runs: a command (-c/--command) reports no cost, "
                                 "so the budget never acts")
            return batch_map(
                text, self._user_value(args.each, "--each"),
                concurrency=args.concurrency, max_budget_usd=args.batch_budget_usd,
                on_budget=args.on_budget,
                cluster=self._user_value(args.cluster, "--cluster") if args.cluster else None,
                resources=_resource_pairs(args.resources),
                quiet=bool(args.quiet), settings=self.settings, **values,
            )
        except (ValueError, TypeError, FileNotFoundError) as exc:
            raise _usage_error(exc) from None

    def _user_value(self, name: str, flag: str) -> Any:
        assert self.shell is not None, "a magic is only called through its shell"
        if name not in self.shell.user_ns:
            raise UsageError(f"{flag} {name}: no such name in the notebook")
        value = self.shell.user_ns[name]
        if flag == "--each" and (isinstance(value, (str, bytes)) or not hasattr(value, "__iter__")):
            raise UsageError(f"--each {name}: not an iterable of items ({type(value).__name__})")
        return value

    def _jobs(self, args: Any) -> JobsTable:
        try:
            return show_jobs(
                server=args.server, token_env=args.token_env, quiet=bool(args.quiet), settings=self.settings
            )
        except (ValueError, CCExecError, TimeoutError) as exc:
            raise _usage_error(exc) from None

    def _attach(self, args: Any) -> Run:
        try:
            return attach(
                args.attach, server=args.server, token_env=args.token_env, quiet=bool(args.quiet),
                settings=self.settings,
            )
        except (ValueError, CCExecError, TimeoutError) as exc:
            raise _usage_error(exc) from None

    def forget(self) -> None:
        """Leave the shell: drop the settings from %config, keeping their values for a reload."""
        shell = self.shell
        if shell is None:
            return
        _remember(shell, self.settings)
        # IPython infers list[InteractiveShell] from its ``[self]``; it holds any Configurable.
        configurables = cast("list[Configurable]", shell.configurables)
        for configurable in (self.settings, self):
            if configurable in configurables:
                configurables.remove(configurable)


class _Shielded(str):
    """A quoted word that starts with ``-``, as argparse sees it: with a space before it."""

    token: Token

    def __new__(cls, token: Token) -> _Shielded:
        shielded = super().__new__(cls, " " + token)
        shielded.token = token
        return shielded


def _quoted_dash(token: Token) -> bool:
    """Whether the word starts with ``-`` only once unquoted (``"-what"``, ``'--'``): it is text."""
    return token.startswith("-") and not token.raw.startswith("-")


def _unshielded(value: Any) -> Any:
    """An option's parsed value with each shielded word back as the word it was."""
    if isinstance(value, list):
        return [_unshielded(v) for v in value]
    return value.token if isinstance(value, _Shielded) else value


def _asks_help(line: str) -> bool:
    """Whether ``-h`` or ``--help`` is among the options (before any ``--``): a magic's
    parser has no help option of its own, so it said "unrecognized arguments: --help"."""
    tokens = split_line(line)
    cut = next((i for i, t in enumerate(tokens) if t.raw == "--"), len(tokens))
    return any(t.raw in ("-h", "--help") for t in tokens[:cut])


def _usage_error(exc: Exception) -> UsageError:
    """The one-line UsageError for an error of the API, options named by their flags."""
    text = exc.spelled(_flag) if isinstance(exc, OptionError) else str(exc)
    return UsageError(text.splitlines()[0])


def _flag(name: str) -> str:
    """How the magic spells an option field (``interactive=False`` is ``--no-interactive``)."""
    field = name.partition("=")[0]
    if field == "run_max_budget_usd":  # map()'s keyword for each run's --max-budget-usd
        field = "max_budget_usd"
    return _OPTION_FLAGS.get(field) or _BATCH_FLAGS.get(field, field)


# A command body in shell words: quoted strings (a newline in them stays in the argument), a
# backslash and the character it escapes (a newline: the line continues), an unquoted newline.
_BODY_PART = re.compile(r"""'[^']*'?|"(?:\\.|[^"\\])*"?|\\(.?)|(\n)|[^'"\\\n]+""", re.DOTALL)


def _nothing_to_run(command: bool, cell: bool) -> str:
    """What the magic says when it has no prompt (or with -c, no command line): the cell form
    names itself and where the text goes, the line form what to write after it."""
    what = "command line" if command else "prompt"
    if cell:
        magic = "%%ccexec -c" if command else "%%ccexec"
        return f"{magic} needs a {what}: write it in the cell, below the %%ccexec line (see %ccexec?)"
    return f"%ccexec needs a {what} (see %ccexec?)"


def one_command(body: str) -> str:
    """The ``%%ccexec -c`` cell body as one command line, its continued lines joined.

    The command runs without a shell, so a second line would only add arguments to the
    first: a UsageError. Blank lines around the body do not count.
    """
    parts = []
    for match in _BODY_PART.finditer(body.strip()):
        if match.group(2):
            raise UsageError(
                "%%ccexec -c runs one command, without a shell, and this cell has more lines: end a line "
                "with \\ to continue it, or use bash -c '...', or one cell per command"
            )
        parts.append("" if match.group(1) == "\n" else match.group())
    return "".join(parts)


def _resource_pairs(text: str | None) -> dict[str, float] | None:
    """``--resources claude=1,gpu=0.5`` as map()'s ``resources`` (None when not given)."""
    if text is None:
        return None
    resources: dict[str, float] = {}
    for pair in text.split(","):
        name, sep, value = (part.strip() for part in pair.partition("="))
        amount = _positive_number(value) if sep and name else None
        if amount is None:
            raise UsageError(f"--resources needs NAME=N[,NAME=N] with N a positive number, not {pair.strip()!r}")
        resources[name] = amount
    return resources


def _positive_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _env_pairs(pairs: Sequence[str]) -> dict[str, str] | None:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"-e/--env needs NAME=VALUE, not {pair!r}")
        env[name] = value
    return env or None


def _remember(shell: Any, settings: CCExec) -> None:
    """Copy settings changed with %config into the shell's config, where a reload reads them."""
    changed = {
        name: getattr(settings, name)
        for name, trait in settings.traits(config=True).items()
        if getattr(settings, name) != trait.default()
    }
    if changed and hasattr(shell, "config"):
        shell.config.CCExec.update(changed)


# Extension hooks


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext cc_executor_nb``: register %ccexec and %%ccexec and the CCExec settings,
    and follow the shell's cells (where Claude's questions can be asked)."""
    from .prompter import prompter_for

    shell.register_magics(CCExecMagics(shell))
    prompter_for(shell).register()


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext cc_executor_nb``: stop every run, the server, the loop and its thread."""
    from ..demo.shared import stop_demo
    from .prompter import forget_prompter

    stop_shared_loop()
    stop_demo()
    forget_prompter(shell)
    manager = shell.magics_manager
    magics = manager.registry.pop(CCExecMagics.__name__, None)
    for kind in ("line", "cell"):
        manager.magics[kind].pop("ccexec", None)
    if isinstance(magics, CCExecMagics):
        magics.forget()
