"""cc_executor_nb: run long Claude Code and CLI jobs from Jupyter, streamed live."""

__version__ = "0.1.0"
