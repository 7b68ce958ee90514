"""The orphan watchdog: ``python -m cc_executor_nb.server.watchdog SERVER_ID``.

Why a separate process: if the server dies by SIGKILL (a kernel restart, the OOM
killer) no code of ours runs, and children in their own process groups would live on
unseen. Parent-death signals (``PR_SET_PDEATHSIG``) would need code between fork and
exec, which is unsafe in a threaded kernel, and cover only the direct child. Instead
the server starts this small process in its own session and holds the write end of
its stdin. The kernel closes every descriptor of a dying process, so the watchdog
reads end-of-file within milliseconds of the server's death, however it died. It then
SIGKILLs every process group the server registered ("+PGID" / "-PGID" lines) and
every process that carries the server's marker in its environment (which also catches
grandchildren that left their group with ``setsid``). On a clean shutdown the server
has already killed everything, so the watchdog finds nothing and exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterable

import psutil

__all__ = ["SERVER_MARKER_ENV", "kill_marked", "main", "marked_processes"]

SERVER_MARKER_ENV = "CC_EXECUTOR_SERVER_ID"


def marked_processes(name: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment has ``name=value`` (other users' are skipped)."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(name) == value:
                found.append(proc)
    return found


def kill_marked(name: str, value: str) -> list[int]:
    """SIGKILL every process marked ``name=value``; return their pids."""
    victims = marked_processes(name, value)
    for proc in victims:
        with contextlib.suppress(psutil.Error, OSError):
            proc.kill()
    return [proc.pid for proc in victims]


def _kill_groups(pgids: set[int], server_id: str) -> None:
    """SIGKILL each registered group that still holds one of our processes.

    A group whose members carry no marker is left alone: its number may have been
    reused by an unrelated program since the server registered it.
    """
    own = os.getpgrp()
    ours = {proc.pid for proc in marked_processes(SERVER_MARKER_ENV, server_id)}
    for pgid in pgids - {own}:
        members = set()
        for pid in psutil.pids():
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pgid:
                    members.add(pid)
        if pgid > 1 and members & ours:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def _read_registrations(stream: Iterable[str]) -> set[int]:
    pgids: set[int] = set()
    for raw in stream:
        line = raw.strip()
        if line[:1] in ("+", "-") and line[1:].isdigit():
            (pgids.add if line[0] == "+" else pgids.discard)(int(line[1:]))
    return pgids


def main(argv: list[str] | None = None) -> int:
    """Wait for the server to go away, then kill what it left behind."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cc_executor_nb.server.watchdog SERVER_ID", file=sys.stderr)
        return 2
    # Interrupts meant for the server's terminal or kernel must not stop us early.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pgids = _read_registrations(sys.stdin)
    _kill_groups(pgids, args[0])
    kill_marked(SERVER_MARKER_ENV, args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
