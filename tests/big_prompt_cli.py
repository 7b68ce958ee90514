"""A fake ``claude`` that reads its stdin slowly, for the tests of prompts past the server's
8 MiB input queue: 20 MiB/s, so the client sends faster than it reads.

One-shot (``-p``): it hashes all of stdin. Host mode (``--input-format stream-json``): it
answers ``initialize`` and hashes the first user message's text. Either way it prints a
stream-json ``result`` whose text is ``"BYTES SHA256"`` of what it read.

With ``BIG_PROMPT_CLI_SEEN=PATH`` (one-shot) it first says ``waiting to be seen`` (an assistant
message) and reads nothing until PATH exists: a caller that shows output only once its prompt
is all sent never lets it go on. After 20 s without PATH it answers ``nobody saw me`` unread.
"""

from __future__ import annotations

import hashlib
import json
import os
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
    seen = os.environ.get("BIG_PROMPT_CLI_SEEN")
    if seen and not shown_and_seen(seen):
        print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "nobody saw me"}),
              flush=True)
        return
    result(b"".join(chunks()))


def shown_and_seen(path: str) -> bool:
    """Say ``waiting to be seen``, then wait (20 s at most) until ``path`` exists."""
    message = {"role": "assistant", "content": [{"type": "text", "text": "waiting to be seen\n"}]}
    print(json.dumps({"type": "assistant", "message": message}), flush=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


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
