"""``python -m cc_executor_nb.selftest``: the seed's acceptance self-test, kept at its
documented address; the harness itself lives in :mod:`cc_executor_nb.demo.selftest`."""

import sys

from .demo.selftest import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m cc_executor_nb.selftest"))
