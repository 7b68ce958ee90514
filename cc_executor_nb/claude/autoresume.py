"""Wait out a usage limit and resume the same Claude session: ``python -m cc_executor_nb.claude.autoresume``.

A run started with ``auto_resume`` runs the claude CLI under this small supervisor,
inside the run's own process group::

    python -m cc_executor_nb.claude.autoresume SPEC_JSON

``SPEC_JSON`` holds the first command line (``argv``, ``claude -p ...`` with no prompt: the
first CLI inherits the supervisor's stdin and reads the prompt there), the one that resumes
the session (``resume_argv``, whose element ``session_index`` is replaced by the session id;
it runs ``claude ... --resume SESSION_ID -- RESUME_PROMPT`` with its stdin on /dev/null, so
it never waits on an input that is not closed or reads the prompt again) and the limits below. The
supervisor passes the CLI's output through byte for byte and reads it with the same
parser as the notebook (:class:`~cc_executor_nb.claude.streamjson.ClaudeRun`). When the
CLI ends refused by a usage or rate limit (:mod:`.limits`), it prints one line of its
own, waits for the reset (plus ``margin`` seconds), prints another and resumes::

    {"type": "cc_executor_nb", "subtype": "auto_resume_wait", "resumes_at": ..., ...}
    {"type": "cc_executor_nb", "subtype": "auto_resume", "session_id": ..., "attempt": 1, ...}

It gives up, with ``{"subtype": "auto_resume_stopped", "message": ...}``, when there is
no session to resume, after ``max_resumes`` resumes, or when the reset is more than
``max_wait`` seconds away; a limit that names no reset time is waited ``fallback_wait``
seconds. The exit status is the last CLI's (a CLI killed by signal N makes the
supervisor die of N too). Why a process and not the notebook: the wait and the resume
then happen wherever the run lives (the in-kernel server, a durable job that outlives
the kernel, a Dask worker), and the notebook only reads one stream.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, BinaryIO

from .limits import UsageLimit, describe_limit
from .streamjson import ClaudeRun

__all__ = ["DEFAULTS", "Decision", "ResumeSpec", "autoresume_argv", "decide", "main"]

SESSION_PLACEHOLDER = "\x00SESSION_ID\x00"
"""Stands for the session id in ``resume_argv`` until it is known."""
DEFAULTS = {"max_resumes": 5, "max_wait": 6 * 3600.0, "fallback_wait": 60.0, "margin": 1.0}
_READ = 1 << 16
PIPE_BYTES = 1 << 20
"""The CLI's stdout pipe, widened from Linux's 64 KiB to the 1 MiB any process may ask for
(``/proc/sys/fs/pipe-max-size``): a claude CLI that writes its stdout without waiting
(2.0.77, 1.0.128, 2.1.197) drops what a full pipe refuses, and a 200 KB answer came to
the supervisor cut (its run failed as incomplete). A bigger burst can still be cut."""


def widen_pipe(fd: int) -> None:
    """Make the pipe ``fd`` hold :data:`PIPE_BYTES` where the system allows it (Linux)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):  # over a user's pipe quota: the default size
            fcntl.fcntl(fd, set_size, PIPE_BYTES)
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class ResumeSpec:
    """What the supervisor runs and how long it may wait (``SPEC_JSON``)."""

    argv: list[str]
    resume_argv: list[str]
    session_index: int
    max_resumes: int = 5
    max_wait: float = 6 * 3600.0
    fallback_wait: float = 60.0
    margin: float = 1.0

    def __post_init__(self) -> None:
        if not self.argv or not self.resume_argv:
            raise ValueError("argv and resume_argv must not be empty")
        if not 0 <= self.session_index < len(self.resume_argv):
            raise ValueError("session_index is not an index of resume_argv")
        if self.max_resumes < 0 or self.max_wait < 0 or self.fallback_wait < 0 or self.margin < 0:
            raise ValueError("limits must not be negative")

    def resume_command(self, session_id: str) -> list[str]:
        """The command line that resumes ``session_id``."""
        argv = list(self.resume_argv)
        argv[self.session_index] = session_id
        return argv

    def to_json(self) -> str:
        """``SPEC_JSON``."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ResumeSpec:
        """Read ``SPEC_JSON``; ValueError when it is malformed."""
        try:
            data = json.loads(text)
            return cls(**data)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a resume spec: {exc}") from None


def autoresume_argv(
    argv: Sequence[str],
    resume_argv: Sequence[str],
    *,
    python: str | None = None,
    **limits: Any,
) -> list[str]:
    """``argv`` under the supervisor. ``resume_argv`` holds :data:`SESSION_PLACEHOLDER` once."""
    resume = list(resume_argv)
    if resume.count(SESSION_PLACEHOLDER) != 1:
        raise ValueError("resume_argv must hold the session placeholder exactly once")
    spec = ResumeSpec(list(argv), resume, resume.index(SESSION_PLACEHOLDER), **{**DEFAULTS, **limits})
    return [python or sys.executable, "-m", "cc_executor_nb.claude.autoresume", spec.to_json()]


# The decision (pure)


@dataclass(frozen=True)
class Decision:
    """What to do after one CLI ended: ``until`` (epoch seconds) to wait and resume, else stop."""

    until: float | None
    message: str
    limit: UsageLimit | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resume(self) -> bool:
        """Whether to wait and resume."""
        return self.until is not None


def decide(run: ClaudeRun, spec: ResumeSpec, resumes: int, now: float) -> Decision:
    """Resume (and when) or stop, after a CLI whose output ``run`` read has ended."""
    limit = run.usage_limit
    if limit is None:
        return Decision(None, "")
    if not run.session_id:
        return Decision(None, "a limit stopped the run before Claude named its session: nothing to resume", limit)
    if resumes >= spec.max_resumes:
        return Decision(None, f"not resuming again: the run resumed {resumes} times already", limit)
    left = limit.seconds_left(now)
    attempt = f"resume {resumes + 1} of {spec.max_resumes}"
    if left is None:
        until = now + spec.fallback_wait
        return Decision(until, f"{limit.title}, no reset time given: resuming in {spec.fallback_wait:g} s ({attempt})",
                        limit)
    if left > spec.max_wait:
        return Decision(None, f"not waiting: {describe_limit(limit, now)}, later than auto_resume_max_wait", limit)
    until = now + left + spec.margin
    clock = time.strftime("%H:%M:%S", time.localtime(until))
    return Decision(until, f"waiting for the reset: resuming the session at {clock} ({attempt})", limit)


# The process


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chain from ``SPEC_JSON``; return (or die of) the last CLI's status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m cc_executor_nb.claude.autoresume SPEC_JSON", file=sys.stderr)
        return 2
    try:
        spec = ResumeSpec.from_json(args[0])
    except ValueError as exc:
        print(f"autoresume: {exc}", file=sys.stderr)
        return 2
    chain = Chain(spec, sys.stdout.buffer)
    chain.forward_signals()
    code = chain.run()
    if code < 0:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


class Chain:
    """Runs the CLI, then resumes it after each limit, writing everything to ``out``."""

    def __init__(
        self,
        spec: ResumeSpec,
        out: BinaryIO,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec, self.out, self.clock, self.sleep = spec, out, clock, sleep
        self.child: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        """The whole chain; the last CLI's exit status (negative: killed by that signal)."""
        argv, resumes = self.spec.argv, 0
        while True:
            parser = ClaudeRun(clock=self.clock)
            code = self._run_once(argv, parser, first=resumes == 0)
            if code < 0:
                return code  # killed (cancelled, timed out): nothing to resume
            decision = decide(parser, self.spec, resumes, self.clock())
            if not decision.resume or parser.session_id is None:
                if decision.message:
                    self._say("auto_resume_stopped", message=decision.message)
                return code
            self._wait(decision, parser.session_id, resumes + 1)
            resumes += 1
            argv = self.spec.resume_command(parser.session_id)
            self._say("auto_resume", session_id=parser.session_id, attempt=resumes,
                      message=f"resuming session {parser.session_id} (resume {resumes} of {self.spec.max_resumes})")

    def _run_once(self, argv: list[str], parser: ClaudeRun, *, first: bool) -> int:
        # The first CLI reads the prompt on our stdin; a resume has its prompt in argv.
        stdin = None if first else subprocess.DEVNULL
        fd, write_end = os.pipe()
        try:
            widen_pipe(fd)  # before the CLI can write
            self.child = child = subprocess.Popen(argv, stdin=stdin, stdout=write_end)
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.close(write_end)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            while chunk := os.read(fd, _READ):
                self.out.write(chunk)
                self.out.flush()
                parser.feed(decoder.decode(chunk))
        finally:
            os.close(fd)
        parser.feed(decoder.decode(b"", final=True))
        parser.feed_eof()
        code = child.wait()
        self.child = None
        return code

    def _wait(self, decision: Decision, session_id: str, attempt: int) -> None:
        limit, until = decision.limit, decision.until
        assert until is not None
        self._say(
            "auto_resume_wait",
            resumes_at=until,
            resets_at=limit.resets_at if limit is not None else None,
            limit=limit.kind if limit is not None else None,
            session_id=session_id,
            attempt=attempt,
            max_resumes=self.spec.max_resumes,
            message=decision.message,
        )
        while (left := until - self.clock()) > 0:
            self.sleep(min(left, 1.0))

    def _say(self, subtype: str, **fields: Any) -> None:
        line = {"type": "cc_executor_nb", "subtype": subtype, **fields}
        self.out.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        self.out.flush()

    def forward_signals(self) -> None:
        """A signal for the supervisor alone is passed on to the CLI; while waiting it ends the chain.

        (The server signals the whole group; this covers a signal sent to the supervisor only.)
        """

        def forward(signum: int, frame: FrameType | None) -> None:
            child = self.child
            if child is not None and child.poll() is None:
                child.send_signal(signum)
                return
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

        for sig in _FORWARDED:
            signal.signal(sig, forward)


if __name__ == "__main__":
    sys.exit(main())
