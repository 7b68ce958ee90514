"""``python -m cc_executor_nb.server``: the standalone server."""

import sys

from .main import main

sys.exit(main())
