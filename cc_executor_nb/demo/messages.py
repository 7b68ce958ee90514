"""Render a `Reply` as Messages API responses: pure, no I/O.

Streaming replies become a sequence of `Step` objects, each an encoded
server-sent event and the time (seconds after the first byte) at which to send
it. Non-streaming replies become one JSON message. Usage numbers depend only on
the prompt and the reply text, so they are the same on every run and the CLI
can compute a cost from them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .scenarios import Reply, ToolCall, prompt_text

__all__ = [
    "Step",
    "count_tokens",
    "encode_event",
    "message_json",
    "stream_steps",
    "usage",
]

# Stands in for the system prompt and tool schemas the CLI sends with every
# turn, so that input usage looks like a real Claude Code request.
BASE_INPUT_TOKENS = 2000
_CHARS_PER_TOKEN = 4
_SIGNATURE = "ZGVtby1zaWduYXR1cmU="

# (send time, event name, event body without "type" and "index")
_Event = tuple[float, str, dict[str, Any]]


@dataclass(frozen=True)
class Step:
    """One encoded SSE event, sent ``at`` seconds after the response starts."""

    at: float
    data: bytes


def estimate_tokens(text: str) -> int:
    """A rough token count: one token per four characters, at least one."""
    return max(1, math.ceil(len(text) / _CHARS_PER_TOKEN))


def count_tokens(request: dict[str, Any]) -> dict[str, int]:
    """The body of a ``/v1/messages/count_tokens`` response."""
    return {"input_tokens": _input_tokens(request)}


def _input_tokens(request: dict[str, Any]) -> int:
    return BASE_INPUT_TOKENS + estimate_tokens(prompt_text(request.get("messages") or []))


def _output_tokens(reply: Reply) -> int:
    spoken = reply.text + (reply.thinking or "")
    if reply.tool_call:
        spoken += json.dumps(reply.tool_call.input)
    return estimate_tokens(spoken)


def usage(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """The final ``usage`` object for ``reply``."""
    output_tokens = _output_tokens(reply)
    limit = request.get("max_tokens")
    # A real model never bills more than it was allowed to write.
    if isinstance(limit, int) and limit > 0:
        output_tokens = min(output_tokens, limit)
    return _usage(_input_tokens(request), output_tokens)


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def message_json(request: dict[str, Any], reply: Reply, message_id: str) -> dict[str, Any]:
    """The body of a non-streaming ``/v1/messages`` response."""
    return {
        **_message_shell(request, message_id),
        "content": list(_content_blocks(reply)),
        "stop_reason": reply.stop_reason,
        "usage": usage(request, reply),
    }


def _message_shell(request: dict[str, Any], message_id: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": request.get("model") or "claude-demo",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }


def _content_blocks(reply: Reply) -> Iterator[dict[str, Any]]:
    if reply.thinking is not None:
        yield {"type": "thinking", "thinking": reply.thinking, "signature": _SIGNATURE}
    if reply.text:
        yield {"type": "text", "text": reply.text}
    if reply.tool_call:
        yield _tool_block(reply.tool_call, with_input=True)


def _tool_block(call: ToolCall, *, with_input: bool) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": call.id,
        "name": call.name,
        "input": call.input if with_input else {},
    }


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    """Encode one server-sent event; ``data`` carries its own ``type``."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {name}\ndata: {payload}\n\n".encode()


def stream_steps(request: dict[str, Any], reply: Reply, message_id: str) -> Iterator[Step]:
    """The events of a streaming response, in order, with their send times.

    The order is the real API's: ``message_start``, ``ping``, then for each
    content block ``content_block_start``, its deltas and
    ``content_block_stop``, and finally ``message_delta`` (stop reason and
    usage) and ``message_stop``.
    """
    start = {**_message_shell(request, message_id), "usage": _usage(_input_tokens(request), 1)}
    yield _step(0.0, "message_start", {"message": start})
    yield _step(0.0, "ping", {})
    last = 0.0
    for index, block_steps in enumerate(_block_step_lists(reply)):
        for step in _indexed(block_steps, index):
            last = max(last, step.at)
            yield step
    delta = {"stop_reason": reply.stop_reason, "stop_sequence": None}
    yield _step(last, "message_delta", {"delta": delta, "usage": usage(request, reply)})
    yield _step(last, "message_stop", {})


def _step(at: float, name: str, body: dict[str, Any]) -> Step:
    return Step(at, encode_event(name, {"type": name, **body}))


def _block_step_lists(reply: Reply) -> Iterator[list[_Event]]:
    """Each content block as (time, event name, body without index) triples."""
    if reply.thinking is not None:
        yield _thinking_events(reply.thinking)
    if reply.text_chunks:
        yield _text_events(reply)
    if reply.tool_call:
        yield _tool_events(reply.tool_call)


def _indexed(events: list[_Event], index: int) -> Iterator[Step]:
    for at, name, body in events:
        yield _step(at, name, {"index": index, **body})


def _thinking_events(thinking: str) -> list[_Event]:
    block = {"type": "thinking", "thinking": "", "signature": ""}
    # The real API ends every thinking block with a signature, which clients
    # send back with the block on the next turn.
    signature = {"type": "signature_delta", "signature": _SIGNATURE}
    return [
        (0.0, "content_block_start", {"content_block": block}),
        (0.0, "content_block_delta", {"delta": {"type": "thinking_delta", "thinking": thinking}}),
        (0.0, "content_block_delta", {"delta": signature}),
        (0.0, "content_block_stop", {}),
    ]


def _text_events(reply: Reply) -> list[_Event]:
    times = reply.chunk_times or (0.0,) * len(reply.text_chunks)
    events: list[_Event] = [
        (0.0, "content_block_start", {"content_block": {"type": "text", "text": ""}})
    ]
    for at, chunk in zip(times, reply.text_chunks, strict=True):
        delta = {"type": "text_delta", "text": chunk}
        events.append((at, "content_block_delta", {"delta": delta}))
    events.append((times[-1] if times else 0.0, "content_block_stop", {}))
    return events


def _tool_events(call: ToolCall) -> list[_Event]:
    partial = json.dumps(call.input, separators=(",", ":"))
    delta = {"type": "input_json_delta", "partial_json": partial}
    return [
        (0.0, "content_block_start", {"content_block": _tool_block(call, with_input=False)}),
        (0.0, "content_block_delta", {"delta": delta}),
        (0.0, "content_block_stop", {}),
    ]
