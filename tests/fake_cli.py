"""A fake CLI that misbehaves on cue; run as ``sys.executable fake_cli.py MODE ARGS``.

Modes:
  echo TEXT...            print the words and exit 0
  interleave N            N lines alternating stdout/stderr, flushed one by one
  bigline BYTES           one line of BYTES 'x' characters with no newline at the end
  badutf8                 invalid UTF-8 bytes, then a 4-byte character split across writes
  silence SECONDS         print "before", stay silent, print "after"
  ticker N DELAY          print "tick i" N times, DELAY seconds apart
  stubborn N              ignore SIGTERM, fork N grandchildren that ignore it too, write
                          their pids to stdout, then sleep
  escape N                like stubborn, plus one grandchild that leaves the group (setsid);
                          prints the grandchildren's pids (the escapee first)
  daemon                  leave a setsid'd process with closed pipes behind; exit 0
  words N RATE PROMPT...  print N words at RATE words/s, then linger 0.8 s (PROMPT is only read)
  burn SECONDS MB         hold MB of memory and spin the CPU for SECONDS
  exit CODE               exit with CODE after printing "bye"
  signal SIG              kill itself with signal SIG
  flood BYTES HASHFILE [RATE]  BYTES of seeded random lines (at RATE bytes/s); sha256 to HASHFILE
  prompt TEXT             print TEXT with no newline and sleep 5 s
  halves A DELAY B        write A (no newline), wait DELAY s, write B, wait DELAY s, exit
  env NAME...             print NAME=value for each name (missing: NAME unset)
  cwd                     print the working directory
  argv ARGS...            print each argument on its own line, repr-quoted
  hasty BYTES DELAY       after DELAY s, write BYTES of numbered lines and "END" like a
                          Node/Bun CLI: stdout non-blocking, what the stream refuses is
                          dropped, exit 0 at once (a pipe nobody drains loses the tail)
  late BYTES DELAY        print "a"; a child in the group writes BYTES "x" and a newline
                          DELAY s after the leader has exited
  old-claude UNKNOWN ARGS...  a claude CLI too old for the options in UNKNOWN (comma-separated):
                          the first of ARGS among them is refused as Commander does, exit 1
                          (captured from 0.2.126, 1.0.60, 1.0.128); else exit 0, printing nothing
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sys
import time


def _out(data: bytes, stream=None) -> None:
    stream = stream or sys.stdout.buffer
    stream.write(data)
    stream.flush()


def echo(*words: str) -> None:
    print(" ".join(words), flush=True)


def interleave(n: str) -> None:
    # One write per line: an unbuffered print() writes the text and the newline apart,
    # which the server may send as two pieces (as a terminal shows them).
    for i in range(int(n)):
        stream = sys.stdout if i % 2 == 0 else sys.stderr
        _out(f"{'out' if i % 2 == 0 else 'err'} {i}\n".encode(), stream.buffer)
        time.sleep(0.002)


def bigline(size: str) -> None:
    data = b"x" * int(size)
    view = memoryview(data)
    for start in range(0, len(data), 1 << 16):
        _out(view[start : start + (1 << 16)].tobytes())


def badutf8() -> None:
    _out(b"bad \xff\xfe bytes\n")
    smile = "\U0001F600".encode()
    _out(b"split " + smile[:2])
    time.sleep(0.2)
    _out(smile[2:] + b" done\n")


def silence(seconds: str) -> None:
    _out(b"before\n")
    time.sleep(float(seconds))
    _out(b"after\n")


def ticker(n: str, delay: str) -> None:
    for i in range(int(n)):
        print(f"tick {i}", flush=True)
        time.sleep(float(delay))


def stubborn(n: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for _ in range(int(n)):
        if os.fork() == 0:
            while True:
                time.sleep(1)
    print(os.getpid(), flush=True)
    while True:
        time.sleep(1)


def escape(n: str) -> None:
    """Fork N stubborn grandchildren in the group and one that leaves it with setsid."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = []
    for i in range(int(n) + 1):
        pid = os.fork()
        if pid == 0:
            if i == 0:
                os.setsid()
            while True:
                time.sleep(1)
        pids.append(pid)
    print(" ".join(map(str, pids)), flush=True)
    while True:
        time.sleep(1)


def daemon() -> None:
    """Leave a setsid'd process behind (pipes closed) and exit 0 at once."""
    if os.fork() == 0:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        time.sleep(60)
        os._exit(0)
    print("started", flush=True)


def words(n: str, per_second: str, *prompt: str) -> None:
    """Print N words at a pace (the prompt arguments are only there to be read)."""
    count, pace = int(n), float(per_second)
    started = time.monotonic()
    for i in range(count):
        print(f"word{i}", end="\n" if i % 10 == 9 else " ", flush=True)
        time.sleep(max(0.0, started + (i + 1) / pace - time.monotonic()))
    print(flush=True)
    time.sleep(0.8)  # linger, so observers sample the finished output before the exit


def burn(seconds: str, megabytes: str) -> None:
    """Hold MEGABYTES of memory and spin the CPU for SECONDS."""
    hoard = bytearray(int(megabytes) << 20)
    for i in range(0, len(hoard), 4096):
        hoard[i] = 1
    print("burning", flush=True)
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        sum(range(10000))
    print(len(hoard), flush=True)


def exit_with(code: str) -> None:
    print("bye", flush=True)
    sys.exit(int(code))


def kill_self(sig: str) -> None:
    os.kill(os.getpid(), int(sig))
    time.sleep(5)


def flood(size: str, hash_file: str, rate: str = "0", gate: str = "", start_gate: str = "") -> None:
    """SIZE bytes of text at RATE bytes/s (0: flat out); then, given GATE, wait for that file to exist.
    Given START_GATE, wait for that file once the first FLOOD_START bytes are written (the pace
    counts from then)."""
    rng = random.Random(1234)
    pace, started, sent = float(rate), time.monotonic(), 0
    waiting = bool(start_gate)
    # Random bytes mapped onto letters, digits, spaces and about one newline in 64.
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ-_.,;:!?"
    table = bytes(alphabet[i % len(alphabet)] if i % 64 else 10 for i in range(256))
    total, digest = int(size), hashlib.sha256()
    while total > 0:
        piece = rng.randbytes(min(total, 1 << 16)).translate(table)
        digest.update(piece)
        _out(piece)
        total -= len(piece)
        sent += len(piece)
        if waiting and sent >= FLOOD_START:
            waiting = False
            _wait_for(start_gate)
            started, sent = time.monotonic(), 0
        if pace > 0:
            time.sleep(max(0.0, started + sent / pace - time.monotonic()))
    with open(hash_file, "w") as handle:
        handle.write(digest.hexdigest())
    if gate:
        _wait_for(gate)


FLOOD_START = 2 << 20
"""What ``flood`` writes before it waits for its START_GATE."""


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def prompt(text: str) -> None:
    _out(text.encode())
    time.sleep(5)


def halves(first: str, delay: str, second: str) -> None:
    _out(first.encode())
    time.sleep(float(delay))
    _out(second.encode())
    time.sleep(float(delay))


def env(*names: str) -> None:
    for name in names:
        value = os.environ.get(name)
        print(f"{name}={value}" if value is not None else f"{name} unset", flush=True)


def cwd() -> None:
    print(os.getcwd(), flush=True)


def argv(*args: str) -> None:
    for arg in args:
        print(repr(arg), flush=True)


def hasty(size: str, delay: str) -> None:
    time.sleep(float(delay))
    os.set_blocking(1, False)
    data = b"".join(b"%09d|%s\n" % (i, b"x" * 89) for i in range(int(size) // 100)) + b"END\n"
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(1, view) :]
        except BlockingIOError:
            break  # the rest was still queued in memory when the CLI exited: gone


def late(size: str, delay: str) -> None:
    print("a", flush=True)
    if os.fork() == 0:
        time.sleep(float(delay))
        _out(b"x" * int(size) + b"\n")
        os._exit(0)


def old_claude(unknown: str, *args: str) -> None:
    refused = next((arg for arg in args if arg in unknown.split(",")), None)
    if refused is None:
        return
    # 0.2.126 adds a hint for --input-format; the rest print the first line alone.
    hint = "(Did you mean --output-format?)\n" if refused == "--input-format" else ""
    _out(f"error: unknown option '{refused}'\n{hint}".encode(), sys.stderr.buffer)
    sys.exit(1)


MODES = {
    "echo": echo,
    "interleave": interleave,
    "bigline": bigline,
    "badutf8": badutf8,
    "silence": silence,
    "ticker": ticker,
    "stubborn": stubborn,
    "exit": exit_with,
    "words": words,
    "burn": burn,
    "escape": escape,
    "daemon": daemon,
    "signal": kill_self,
    "flood": flood,
    "prompt": prompt,
    "halves": halves,
    "env": env,
    "cwd": cwd,
    "argv": argv,
    "hasty": hasty,
    "late": late,
    "old-claude": old_claude,
}

if __name__ == "__main__":
    MODES[sys.argv[1]](*sys.argv[2:])
