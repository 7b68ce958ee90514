"""``python -m cc_executor_nb``: the terminal client."""

import sys

from .cli import main

sys.exit(main(prog="python -m cc_executor_nb"))
