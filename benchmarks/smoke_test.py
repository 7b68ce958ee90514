"""The benchmark suite in smoke mode, so that it cannot rot: ``pytest benchmarks/smoke_test.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_smoke_mode_runs_every_benchmark_and_prints_its_rows() -> None:
    """``python -m benchmarks --smoke`` exits 0 and prints a table row for every benchmark."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name, (_, rows) in BENCHMARKS.items():
        for row, _, _ in rows:
            assert any(line.startswith(row + "  ") for line in lines), f"{name}: no row {row!r}\n{proc.stdout}"


@pytest.mark.timeout(120)
def test_compare_measures_each_tree_and_prints_its_medians() -> None:
    """``python -m benchmarks.compare`` runs every tree in turn and prints one line of medians each."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", str(ROOT), str(ROOT), "--rounds", "1", "--size", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rounds = [line for line in proc.stdout.splitlines() if line.startswith("# round 1 ")]
    assert len(rounds) == 2 and all("MB/s ratio" in line for line in rounds), proc.stdout
    medians = [line for line in proc.stdout.splitlines() if line.startswith(str(ROOT)[-40:])]
    assert len(medians) == 2 and all(float(line.split()[1]) > 0 for line in medians), proc.stdout
