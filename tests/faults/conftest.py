"""The fault matrix prints what each fault was expected to do and what it did."""

from __future__ import annotations

import pytest

ROWS: list[tuple[str, str, str]] = []


@pytest.fixture
def record():
    """Call ``record(fault, expected, observed)`` once the row's assertions passed."""

    def add(fault: str, expected: str, observed: str) -> None:
        ROWS.append((fault, expected, observed))

    return add


def pytest_terminal_summary(terminalreporter) -> None:  # pytest hook: untyped argument
    if not ROWS:
        return
    widths = [max(len(row[i]) for row in [("fault", "expected", "observed"), *ROWS]) for i in range(3)]
    terminalreporter.section("fault matrix")
    for row in [("fault", "expected", "observed"), tuple("-" * w for w in widths), *ROWS]:
        terminalreporter.write_line("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
