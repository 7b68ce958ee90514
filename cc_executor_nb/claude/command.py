"""The whole command of a Claude run: the CLI's argv, wrapped as the options ask, and its environment.

::

    argv, env = claude_command(ClaudeOptions(auto_resume=True, demo=True))  # the prompt goes to its stdin

One place builds it for every placement: the kernel (in-kernel server, job server,
remote server) and a Dask worker, which builds it again in its own environment (its
own claude executable and Python). Layers, innermost first:

- the CLI (:func:`~.options.claude_stdin_argv`): a one-shot run reads its prompt on
  stdin, never from its command line, which every local user can read (``ps``);
- with ``auto_resume``, the supervisor that waits out usage limits and resumes the
  session (:mod:`.autoresume`);
- with ``own_demo`` and ``demo``, the demo runner that carries its own demo API
  (:mod:`cc_executor_nb.demo.runner`): for runs that outlive this process (durable
  jobs) or run elsewhere (Dask workers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from ..protocol import SERVER_PYTHON_MODULES
from .autoresume import SESSION_PLACEHOLDER, autoresume_argv
from .options import (
    DEMO_MAX_RETRIES,
    ClaudeOptions,
    claude_argv,
    claude_environment,
    claude_host_argv,
    claude_stdin_argv,
)

__all__ = ["ResumeSettings", "claude_command", "claude_host_command", "runs_a_wrapper"]


@dataclass(frozen=True)
class ResumeSettings:
    """How ``auto_resume`` resumes (``CCExec.resume_prompt``, ``max_resumes``, ``auto_resume_max_wait``)."""

    prompt: str = "Continue where you left off."
    max_resumes: int = 5
    max_wait: float = 6 * 3600.0


def claude_command(
    options: ClaudeOptions,
    *,
    resume: ResumeSettings | None = None,
    own_demo: bool = False,
    python: str | None = None,
) -> tuple[list[str], dict[str, str] | None]:
    """The argv and extra environment of a one-shot Claude run whose prompt is written to
    its stdin (then closed): the wrappers pass their stdin on to the first CLI.

    ``python`` is the interpreter that runs the wrappers (default: this one). Raises
    like :func:`~.options.claude_argv`.
    """
    argv = claude_stdin_argv(options)
    if options.auto_resume:
        settings = resume or ResumeSettings()
        resuming = dataclasses.replace(options, resume=SESSION_PLACEHOLDER, continue_session=False)
        argv = autoresume_argv(
            argv, claude_argv(settings.prompt, resuming), python=python,
            max_resumes=settings.max_resumes, max_wait=settings.max_wait,
        )
    if own_demo and options.demo:
        from ..demo.runner import runner_argv

        retries = DEMO_MAX_RETRIES if options.max_retries is None else options.max_retries
        argv = runner_argv(argv, retries, python=python)
        options = dataclasses.replace(options, demo=False, max_retries=None)
    return argv, claude_environment(options)


def claude_host_command(options: ClaudeOptions, *, own_demo: bool = False, python: str | None = None) -> list[str]:
    """The argv of a Claude run in host mode (the prompt goes to its stdin), wrapped in
    the demo runner as :func:`claude_command` wraps it (its environment is the one
    :func:`claude_command` gives). Host mode has no ``auto_resume`` supervisor."""
    argv = claude_host_argv(options)
    if own_demo and options.demo:
        from ..demo.runner import runner_argv

        retries = DEMO_MAX_RETRIES if options.max_retries is None else options.max_retries
        argv = runner_argv(argv, retries, python=python)
    return argv


def runs_a_wrapper(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is ``PYTHON -m`` one of the package's wrappers (the ``auto_resume``
    supervisor, the demo runner): a remote server runs it with its own interpreter
    (``server_python``), since its ``python3`` may lack this package."""
    return len(argv) > 2 and argv[1] == "-m" and argv[2] in SERVER_PYTHON_MODULES
