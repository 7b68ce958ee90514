"""Variants of the server: the same code with some settings changed, to measure side by side.

A variant is the standalone server built by the one factory,
``build_server(ServerSettings(...))``, from the settings its command line describes,
with the variant's changes applied (``ServerSettings.replace``, so they are validated
like any setting). ``ServerProcess(variant=NAME)`` starts one, and
``python -m benchmarks.experiment`` measures several interleaved::

    python -m benchmarks.variants NAME -m cc_executor_nb.server --port 0 --token=T [FLAGS]

(the server's own flags follow ``-m cc_executor_nb.server``, which also keeps the command
line recognisable to ``ServerProcess``).

To try another setting, add an entry to ``VARIANTS``. A change that is not a setting
is code: measure a checkout that has it against one that has not with
``python -m benchmarks.compare``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cc_executor_nb.server.config import ServerSettings, build_server
from cc_executor_nb.server.handler import EnhancedWebSocketHandler
from cc_executor_nb.server.main import parse_args, settings_from

__all__ = ["VARIANTS", "Variant", "main"]

USAGE = "usage: python -m benchmarks.variants NAME -m cc_executor_nb.server --token=T [SERVER FLAGS]"


@dataclass(frozen=True)
class Variant:
    """What a variant changes: ``ServerSettings`` fields and their values."""

    description: str
    changes: Mapping[str, Any] = field(default_factory=dict)

    def apply(self, settings: ServerSettings) -> ServerSettings:
        """``settings`` with the changes (ValueError or TypeError for a bad one)."""
        return settings.replace(**self.changes)


VARIANTS: dict[str, Variant] = {
    "baseline": Variant("the server as its flags describe it"),
    "no-history": Variant("no run history (no SQLite lookup or insert per run)", {"history_path": None}),
    "no-metrics": Variant("no process.metrics (no resource sampling)", {"metrics_interval": 0.0}),
    "no-replay": Variant("no resume log (detach_ttl 0: runs die with their connection)", {"detach_ttl": 0.0}),
    "lean": Variant("no history, metrics or resume log",
                    {"history_path": None, "metrics_interval": 0.0, "detach_ttl": 0.0}),
    "chunk-64k": Variant("process.output pieces of up to 65,536 characters (default 163,840)",
                         {"chunk_limit": 65_536}),
    "spool-1m": Variant("output spills to disk past 1 Mi characters in memory (default 8 Mi)",
                        {"output_memory_limit": 1 << 20}),
    # Its heartbeat lateness is not comparable: a beat skipped for traffic reads as late.
    "capture-pipe": Variant("output read from pipes (default: capture files followed with inotify)",
                            {"capture": "pipe"}),
    "spool-shm": Variant("capture files, spools and replay logs in /dev/shm (default: the temp dir)",
                         {"spool_dir": "/dev/shm"}),
    "adaptive-beat": Variant("adaptive heartbeats: skipped while other messages flow",
                             {"heartbeat_mode": "adaptive"}),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the named variant until SIGINT or SIGTERM."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1:3] != ["-m", "cc_executor_nb.server"]:
        raise SystemExit(USAGE)
    if args[0] not in VARIANTS:
        raise SystemExit(f"unknown variant {args[0]!r}; one of {', '.join(VARIANTS)}")
    options = parse_args(args[3:])
    if not options.token:
        raise SystemExit(USAGE)
    settings = VARIANTS[args[0]].apply(settings_from(options, options.token))
    logging.basicConfig(level=options.log_level, stream=sys.stderr)
    return asyncio.run(_serve(build_server(settings), options.host, options.port))


async def _serve(handler: EnhancedWebSocketHandler, host: str, port: int) -> int:
    await handler.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {handler.url}", flush=True)
    await stop.wait()
    await handler.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
