"""Benchmarks of cc_executor_nb: run ``python -m benchmarks`` from the project root.

See ``benchmarks/README.md``.
"""
