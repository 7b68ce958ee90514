"""A standalone server run as a child process, for tests that need one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from .util import eventually, scaled

SERVER = [sys.executable, "-m", "cc_executor_nb.server"]


@dataclass
class ServerProcess:
    """A server child with its URL and everything it printed."""

    proc: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def output(self) -> str:
        return "\n".join(self.lines)

    def finish(self, sig: int = signal.SIGKILL) -> int:
        """Signal the server (if still running), reap it and close its pipe."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(scaled(30))
        if self.reader is not None:
            self.reader.join(scaled(10))
        self.proc.stdout.close()
        return code


def start_server(*args: str, env: dict[str, str] | None = None, launcher: list[str] | None = None) -> ServerProcess:
    """Start the server and wait for its ``listening on`` line.

    ``launcher`` replaces ``python -m cc_executor_nb.server`` (e.g. to set a limit first).
    """
    proc = subprocess.Popen(
        [*(launcher or SERVER), "--port", "0", "--no-history", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: list[str] = []

    def listening() -> str | None:
        """The URL once the server printed it; reads one more line otherwise."""
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("the server exited")
        lines.append(line.rstrip("\n"))
        match = re.match(r"listening on (wss?://\S+)", line)
        return match.group(1) if match else None

    try:
        url = eventually(listening, timeout=20, interval=0, what="the server's 'listening on' line")
    except AssertionError as failure:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise AssertionError(f"server did not start ({failure}): " + "\n".join(lines)) from None
    reader = threading.Thread(target=lambda: lines.extend(out.rstrip("\n") for out in proc.stdout), daemon=True)
    reader.start()
    return ServerProcess(proc, url, lines, reader)


class PeakRss:
    """Samples a process's resident memory in a thread; ``growth_mib`` once stopped."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self.baseline = self.peak = self._proc.memory_info().rss
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        """Peak minus baseline, in MiB."""
        return (self.peak - self.baseline) / 2**20

    def describe(self) -> str:
        """"RSS a -> peak b MiB (+c MiB)"."""
        return f"RSS {self.baseline / 2**20:.1f} -> peak {self.peak / 2**20:.1f} MiB (+{self.growth_mib:.1f} MiB)"

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._every)


def temp_file_bytes(pid: int) -> int:
    """Disk held by a server's temporary files (capture, spool, replay): allocated bytes."""
    total = 0
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            if "ccexec-" in os.readlink(f"{base}/{name}"):
                total += os.stat(f"{base}/{name}").st_blocks * 512
        except OSError:
            continue
    return total


class PeakDisk:
    """Samples the disk a server's temporary files hold, in a thread; ``peak`` once stopped."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid = pid
        self.peak = 0
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakDisk:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, temp_file_bytes(self.pid))
            time.sleep(self._every)
