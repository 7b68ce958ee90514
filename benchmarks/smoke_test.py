"""The benchmark suite and its tools in smoke mode, so that they cannot rot: ``pytest benchmarks/smoke_test.py``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS
from benchmarks.harness import producer, run_server
from benchmarks.profiler import summarize_collapsed
from benchmarks.server_bench import ThroughputRun
from benchmarks.variants import VARIANTS
from cc_executor_nb.client import connect
from cc_executor_nb.events import Completed, Output

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.timeout(180)
def test_smoke_mode_runs_every_benchmark_and_prints_its_rows() -> None:
    """``python -m benchmarks --smoke`` exits 0 and prints a table row for every benchmark."""
    proc = _run("benchmarks", "--smoke", timeout=170)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name, (_, rows) in BENCHMARKS.items():
        for row, _, _ in rows:
            assert any(line.startswith(row + "  ") for line in lines), f"{name}: no row {row!r}\n{proc.stdout}"


@pytest.mark.timeout(120)
def test_compare_measures_each_tree_and_prints_its_medians() -> None:
    """``python -m benchmarks.compare`` runs every tree in turn and prints one line of medians each."""
    proc = _run("benchmarks.compare", str(ROOT), str(ROOT), "--rounds", "1", "--size", "2", timeout=110)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rounds = [line for line in proc.stdout.splitlines() if line.startswith("# round 1 ")]
    assert len(rounds) == 2 and all("MB/s ratio" in line for line in rounds), proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("tree "))
    assert header.split()[-4:] == ["server", "ms/MB", "client", "ms/MB"], header
    medians = [line for line in proc.stdout.splitlines() if line.startswith(str(ROOT)[-40:])]
    assert len(medians) == 2 and all(float(line.split()[1]) > 0 for line in medians), proc.stdout


@pytest.mark.timeout(120)
def test_compare_measures_latency_with_its_pipe_reference() -> None:
    """``benchmarks.compare --workload latency`` prints p50 and p99 per tree, and the pipe read's."""
    proc = _run("benchmarks.compare", str(ROOT), "--rounds", "1", "--workload", "latency", "--lines", "20",
                timeout=110)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rounds = [line for line in proc.stdout.splitlines() if line.startswith("# round 1 ")]
    assert len(rounds) == 1 and rounds[0].count("(pipe p50 ") == 2, proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("tree "))
    assert header.split()[1:] == ["p50", "ms", "p99", "ms", "pipe", "p50", "ms", "pipe", "p99", "ms"], header
    medians = [line for line in proc.stdout.splitlines() if line.startswith(str(ROOT)[-40:])]
    assert len(medians) == 1 and all(float(v) > 0 for v in medians[0].split()[1:]), proc.stdout


@pytest.mark.timeout(120)
def test_experiment_runs_every_variant_and_prints_its_medians() -> None:
    """``python -m benchmarks.experiment --smoke`` serves every variant and prints a line of medians for each."""
    proc = _run("benchmarks.experiment", "throughput", "--smoke", "--rounds", "1", timeout=110)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name in VARIANTS:
        row = next((line.split() for line in lines if line.split()[:1] == [name]), None)
        assert row is not None and row[1] == "1" and float(row[2]) > 0, f"{name}\n{proc.stdout}"


def test_a_throughput_run_gives_cpu_per_mb_of_server_and_client() -> None:
    """CPU per MB is the share of a core busy over the rate, in milliseconds."""
    run = ThroughputRun(rate=500.0, server_busy=0.6, client_busy=0.4)
    assert run.server_ms_per_mb == pytest.approx(1.2) and run.client_ms_per_mb == pytest.approx(0.8)


async def _largest_piece(variant: str, size: int) -> int:
    with run_server(variant=variant) as server:
        async with await connect(server.url, server.token) as client:
            await client.execute(argv=producer("lines", str(size)))
            pieces = []
            async for event in client.events():
                if isinstance(event, Output):
                    pieces.append(len(event.data))
                elif isinstance(event, Completed):
                    break
    assert sum(pieces) == size
    return max(pieces)


@pytest.mark.timeout(60)
async def test_a_variant_server_runs_with_its_changed_settings() -> None:
    """The ``chunk-64k`` variant sends no piece over 65,536 characters where the baseline sends larger ones."""
    assert await _largest_piece("chunk-64k", 4_000_000) <= 65_536
    assert await _largest_piece("baseline", 4_000_000) > 65_536


def test_summarize_collapsed_counts_active_samples_self_and_inclusive(tmp_path: Path) -> None:
    """The profile summary leaves out threads blocked in select and counts leaf and enclosing frames."""
    collapsed = tmp_path / "server.collapsed"
    collapsed.write_text("main;pump;dumps 3\nmain;pump 1\nmain;EpollSelector.select (selectors.py:1) 6\n")
    summary = summarize_collapsed(collapsed)
    assert summary.startswith("4 samples")
    assert "  75.0   dumps" in summary and "  25.0   pump" in summary and " 100.0   main" in summary


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cc_executor_nb"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("cc_executor_nb")]
        else:
            continue
        found += [name for name in names if any(part.startswith("_") for part in name.split("."))]
    return found


def test_benchmarks_import_only_public_names_of_the_package() -> None:
    """No module under benchmarks/ imports a private module or name of cc_executor_nb."""
    offenders = {path.name: names for path in ROOT.joinpath("benchmarks").glob("*.py")
                 if (names := _private_imports(path))}
    assert offenders == {}
