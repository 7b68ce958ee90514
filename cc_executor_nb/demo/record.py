"""Run the real ``claude`` CLI against `DemoBackend` and record its stream-json.

``python -m cc_executor_nb.demo.record [OUT_DIR] [--only NAME ...]`` writes
one ``NAME.jsonl`` per entry of `RECORDINGS` (default OUT_DIR:
``tests/data/streamjson``). Temporary paths become ``/tmp/demo`` and the
backend's address ``127.0.0.1:PORT`` so that the files stay stable; session
ids, uuids and timings still differ from run to run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..claude.executable import find_claude
from ..declare import OneLineParser
from .env import demo_environment
from .scenarios import DemoSettings
from .server import DemoBackend

__all__ = [
    "RECORDINGS",
    "Recording",
    "claude_argv",
    "main",
    "normalize",
    "record",
    "run_claude",
]

STABLE_TMP = "/tmp/demo"
STABLE_ADDRESS = "127.0.0.1:PORT"
# The CLI opens a per-process socket named after its pid.
_MESSAGING_SOCKET = re.compile(r"/tmp/cc-socks/\d+\.sock")


@dataclass(frozen=True)
class Recording:
    """One CLI run to record: the prompt and any extra CLI arguments."""

    prompt: str
    extra_args: tuple[str, ...] = ()
    max_retries: int | None = None


# Sizes are kept small so that every file stays well under 100 KB.
RECORDINGS: dict[str, Recording] = {
    "default": Recording("Say hello"),
    "echo": Recording("echo: Hello from the recording"),
    "arithmetic": Recording("what is 2+2"),
    "haiku": Recording("write 3 haikus"),
    "think": Recording("think for 2 seconds"),
    "story": Recording("write a 300 word story"),
    "huge": Recording("huge reply of 30000 bytes"),
    "error_529": Recording("error 529", max_retries=1),
    "markdown_xss": Recording("markdown xss"),
    "tool": Recording("use a tool"),
    "leading_dash": Recording("--help is not an option here"),
}


def claude_argv(claude: str, prompt: str, *extra: str) -> list[str]:
    """Arguments for one ``claude -p`` run that prints stream-json.

    Options come first and the prompt last, after ``--``, so that a prompt
    starting with ``-`` is taken literally instead of as an option.
    """
    return [
        claude,
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        *extra,
        "--",
        prompt,
    ]


def run_claude(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI to completion with stdin closed, capturing its output.

    ``subprocess.run`` reads both pipes continuously, which matters: the CLI
    drops whatever it has not flushed to stdout a few seconds after its turn
    ends.
    """
    return subprocess.run(
        list(argv),
        env={**os.environ, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def normalize(text: str, temp_dirs: Sequence[str], base_url: str) -> str:
    """Replace run-specific temp paths and the backend address."""
    for temp_dir in sorted(set(temp_dirs), key=len, reverse=True):
        text = text.replace(temp_dir, STABLE_TMP)
        # The CLI names per-project folders after the path with every
        # non-alphanumeric character turned into "-".
        text = text.replace(_project_slug(temp_dir), _project_slug(STABLE_TMP))
    text = _MESSAGING_SOCKET.sub(f"{STABLE_TMP}/messaging.sock", text)
    return text.replace(urlsplit(base_url).netloc, STABLE_ADDRESS)


def _project_slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", path)


def record(name: str, recording: Recording, backend: DemoBackend, claude: str) -> str:
    """Run one recording and return its normalized stream-json text."""
    with tempfile.TemporaryDirectory() as temp_dir:
        workdir = Path(temp_dir, "work")
        workdir.mkdir()
        env = demo_environment(
            backend.url, str(Path(temp_dir, "config")), max_retries=recording.max_retries
        )
        argv = claude_argv(claude, recording.prompt, *recording.extra_args)
        completed = run_claude(argv, env, str(workdir))
        if not completed.stdout:
            raise RuntimeError(f"{name}: no output; stderr: {completed.stderr[-2000:]!r}")
        temp_dirs = [temp_dir, os.path.realpath(temp_dir)]
        return normalize(completed.stdout.decode(), temp_dirs, backend.url)


def main(argv: Sequence[str] | None = None) -> int:
    """Record the chosen scenarios into the output directory."""
    args = _parser().parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    claude = find_claude(args.claude)
    chosen = args.only or list(RECORDINGS)
    # Fast pacing keeps recording quick; the recorded events are the same.
    with DemoBackend(settings=DemoSettings(words_per_second=5000)) as backend:
        for name in chosen:
            path = out_dir / f"{name}.jsonl"
            path.write_text(record(name, RECORDINGS[name], backend, claude), encoding="utf-8")
            print(f"{path}: {path.stat().st_size} bytes")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m cc_executor_nb.demo.record")
    parser.add_argument("out_dir", nargs="?", default="tests/data/streamjson")
    parser.add_argument("--only", nargs="+", choices=sorted(RECORDINGS), help="scenarios to record")
    parser.add_argument("--claude", help="path of the claude executable")
    return parser


if __name__ == "__main__":
    sys.exit(main())
