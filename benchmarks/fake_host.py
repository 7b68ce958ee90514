"""A stand-in for the claude CLI in host mode that asks permission questions and stamps the answers.

Run as ``python fake_host.py [claude's host-mode flags, ignored]`` with, in the
environment, ``CCX_FAKE_QUESTIONS`` (how many questions, default 20) and
``CCX_FAKE_STAMPS`` (a file for the stamps). It reads stream-json lines on stdin:
``initialize`` is answered; the first user message starts a turn, in which it asks the
questions one after another. For each, it stamps (``CLOCK_MONOTONIC``, shared by every
process) just before writing the ``can_use_tool`` request and just after reading the
``control_response`` that answers it; the turn then ends with a ``result``, and the
process exits when its stdin closes. The stamps go to the file as JSON:
``[[asked_ns, answered_ns], ...]``. Stdlib only, so it starts fast.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _write(message: dict[str, object]) -> None:
    os.write(1, (json.dumps(message, separators=(",", ":")) + "\n").encode())


def _answer_to(request_id: str, line: bytes) -> bool:
    try:
        message = json.loads(line)
    except ValueError:
        return False
    response = message.get("response") if isinstance(message, dict) else None
    return isinstance(response, dict) and response.get("request_id") == request_id


def _ask(number: int, stdin: object) -> tuple[int, int]:
    request_id = f"fake-q{number}"
    request = {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": f"touch file{number}"},
               "tool_use_id": f"toolu_fake_{number:04d}"}
    asked = time.monotonic_ns()
    _write({"type": "control_request", "request_id": request_id, "request": request})
    while True:
        line = stdin.readline()  # type: ignore[attr-defined]
        if not line:
            raise SystemExit(3)
        if _answer_to(request_id, line):
            return asked, time.monotonic_ns()


def _turn(questions: int, stdin: object) -> list[tuple[int, int]]:
    _write({"type": "system", "subtype": "init", "session_id": "fake-session", "model": "fake", "tools": ["Bash"]})
    stamps = [_ask(number, stdin) for number in range(questions)]
    _write({"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
            "session_id": "fake-session"})
    _write({"type": "result", "subtype": "success", "is_error": False, "result": "done", "num_turns": 1,
            "session_id": "fake-session", "total_cost_usd": 0.0})
    return stamps


def main() -> None:
    questions = int(os.environ.get("CCX_FAKE_QUESTIONS", "20"))
    stamps: list[tuple[int, int]] = []
    stdin = sys.stdin.buffer
    for line in iter(stdin.readline, b""):
        message = json.loads(line)
        if message.get("type") == "control_request" and message["request"].get("subtype") == "initialize":
            _write({"type": "control_response", "response": {"subtype": "success",
                    "request_id": message["request_id"], "response": {"pid": os.getpid()}}})
        elif message.get("type") == "user" and not stamps:
            stamps = _turn(questions, stdin)
    with open(os.environ["CCX_FAKE_STAMPS"], "w", encoding="utf-8") as handle:
        json.dump(stamps, handle)


if __name__ == "__main__":
    main()
