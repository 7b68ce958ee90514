"""``python -m cc_executor_nb.server``: the standalone server.

A Ctrl-C while its modules load is held until they are loaded, as the terminal client's is
(:mod:`cc_executor_nb.interrupts`); :func:`.main.main` decides how it ends."""

import sys

from ..interrupts import sigint_held

pending: list[int] = []
with sigint_held(pending):
    from .main import main
sys.exit(main(sigint=pending))
