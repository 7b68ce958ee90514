"""How soon input goes on to a child that starts reading again after a stall.

``python -m benchmarks.input_resume [STALL_SECONDS ...]``: for each stall, a child reads
nothing for that long, then reads its stdin to the end, noting when each read returned; the
client sends it 12 MiB with ``Client.input`` (8 MiB fit the server's queue, the rest is refused
until the child reads). Printed: the longest pause between two reads once the child reads again
(the wait for the next piece: the child has emptied the queue, the refused piece is not sent
yet), the time from its first read to its last, and how many ``input`` requests were refused.
Not part of the suite (each row takes its stall and more); figures in HISTORY.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from typing import Any

from cc_executor_nb.client import connect
from cc_executor_nb.errors import LimitReached
from cc_executor_nb.events import Output

from .harness import run_server

TOTAL = 12 << 20
_CHILD = """
import json, os, sys, time
time.sleep(float(sys.argv[1]))
stamps = []
while True:
    data = os.read(0, 1 << 20)
    if not data:
        break
    stamps.append(time.monotonic())
print(json.dumps(stamps))
"""


async def measure(url: str, token: str, stall: float) -> tuple[float, float, int]:
    """(longest pause between reads, first to last read, refusals) for one stalled child."""
    refusals = 0
    async with await connect(url, token) as client:
        call = client.call

        async def counting(method: str, params: dict[str, Any] | None = None) -> Any:
            nonlocal refusals
            try:
                return await call(method, params)
            except LimitReached:
                refusals += 1
                raise

        client.call = counting  # type: ignore[method-assign]
        await client.execute(argv=[sys.executable, "-c", _CHILD, str(stall)], stdin="pipe")
        await client.input("x" * TOTAL)
        await client.close_input()
        text = ""
        async for event in client.events():
            if isinstance(event, Output):
                text += event.data
            if event.method == "process.completed":
                break
    stamps = json.loads(text)
    pause = max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)
    return pause, stamps[-1] - stamps[0], refusals


def main(argv: list[str]) -> int:
    stalls = [float(arg) for arg in argv] or [6.0, 8.0, 12.0]
    print(f"{'stall s':>8} {'longest pause s':>16} {'first-last read s':>18} {'refusals':>9}")
    with run_server("--no-history") as server:
        for stall in stalls:
            pause, span, refusals = asyncio.run(measure(server.url, server.token, stall))
            print(f"{stall:8.1f} {pause:16.3f} {span:18.3f} {refusals:9d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
