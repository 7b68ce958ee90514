"""A fake ``claude`` that reads its stdin slowly, for the tests of prompts past the server's
8 MiB input queue: 20 MiB/s, so the client sends faster than it reads.

One-shot (``-p``): it hashes all of stdin. Host mode (``--input-format stream-json``): it
answers ``initialize`` and hashes the first user message's text. Either way it prints a
stream-json ``result`` whose text is ``"BYTES SHA256"`` of what it read.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any


def result(data: bytes) -> None:
    text = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": text}), flush=True)


def chunks() -> Iterator[bytes]:
    while chunk := sys.stdin.buffer.read1(1 << 20):
        yield chunk
        time.sleep(0.05 * len(chunk) / (1 << 20))  # 20 MiB/s: slower than the client sends


def one_shot() -> None:
    result(b"".join(chunks()))


def host_mode() -> None:
    pending = b""
    for chunk in chunks():
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            answer(json.loads(line))


def answer(message: dict[str, Any]) -> None:
    if message.get("type") == "control_request":
        response = {"subtype": "success", "request_id": message["request_id"], "response": {}}
        print(json.dumps({"type": "control_response", "response": response}), flush=True)
    elif message.get("type") == "user":
        result(message["message"]["content"].encode("utf-8"))


if __name__ == "__main__":
    if "--input-format" in sys.argv:
        host_mode()
    else:
        one_shot()
