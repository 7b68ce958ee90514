"""The benchmark suite and its tools in smoke mode, so that they cannot rot: ``pytest benchmarks/smoke_test.py``."""

from __future__ import annotations

import ast
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks.__main__ import BENCHMARKS
from benchmarks.compare import stop_tree
from benchmarks.harness import producer, run_server
from benchmarks.profiler import summarize_collapsed
from benchmarks.server_bench import ProducedLines, ThroughputRun
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
def test_compare_gives_a_tree_up_at_its_timeout_and_stops_its_server() -> None:
    """A tree whose round does not end in ``--tree-timeout`` is given up and every process it
    started is gone when compare exits (after 600 s its server was left running)."""
    marker = f"polish-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", str(ROOT), "--rounds", "1", "--size", "100000",
         "--tree-timeout", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
        env={**os.environ, "CCEXEC_COMPARE_TEST": marker},
    )
    assert proc.returncode != 0 and f"{ROOT}: no result in 5 s (--tree-timeout)" in proc.stderr, proc.stderr
    assert _processes_with(marker) == []


def _processes_with(marker: str) -> list[str]:
    """The command lines of this user's processes whose environment holds ``marker``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if process.environ().get("CCEXEC_COMPARE_TEST") == marker and process.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(process.info["cmdline"] or []))
    return found


def test_stop_tree_stops_the_group_and_the_descendants_that_left_it() -> None:
    """stop_tree ends a tree's interpreter, a child in its group and a grandchild in a session of its own."""
    script = ("import os, subprocess, sys, time\n"
              "a = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "b = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
              "print(a.pid, b.pid, flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    assert child.stdout is not None
    pids = [int(pid) for pid in child.stdout.readline().split()]
    stop_tree(child, grace=5)
    assert child.returncode is not None
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []


def test_produced_lines_takes_the_producers_output_in_any_pieces() -> None:
    """The producer's real ``lines`` output, cut anywhere (a piece longer than its 1 MiB block too), checks out."""
    size = 3_000_007
    sent = subprocess.run(producer("lines", str(size)), capture_output=True, check=True).stdout.decode("ascii")
    for width in (1, 65_536, 2_000_000):
        lines = ProducedLines(sample=1)
        for at in range(0, size, width):
            lines.feed(sent[at : at + width])
        lines.check(size)


@pytest.mark.parametrize(("change", "message"), [
    (lambda text: text[:1000] + "Y" + text[1001:], "other bytes than were sent, from byte 1000"),
    # The second piece is not compared whole: its last line tells (its number is another).
    (lambda text: text[:70_000] + text[135_536:] + "x" * 65_536, "other bytes than were sent, from byte 131023"),
    (lambda text: text[:-1], "client got 2999999 of 3000000 bytes"),
])
def test_produced_lines_names_what_differs(change: Any, message: str) -> None:
    """A changed byte, a piece lost (its place taken later), a byte short: check() says which."""
    size = 3_000_000
    sent = subprocess.run(producer("lines", str(size)), capture_output=True, check=True).stdout.decode("ascii")
    received = change(sent)
    lines = ProducedLines()
    for at in range(0, len(received), 65_536):
        lines.feed(received[at : at + 65_536])
    with pytest.raises(RuntimeError, match=message):
        lines.check(size)


@pytest.mark.timeout(120)
def test_compare_measures_latency_with_its_pipe_reference() -> None:
    """``benchmarks.compare --workload latency`` prints p50 and p99 per tree, the pipe read's, and the
    CPU server and client spend per line from a run's 100th line on (120 lines: 20 of them)."""
    proc = _run("benchmarks.compare", str(ROOT), "--rounds", "1", "--workload", "latency", "--lines", "120",
                timeout=110)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rounds = [line for line in proc.stdout.splitlines() if line.startswith("# round 1 ")]
    assert len(rounds) == 1 and rounds[0].count("(pipe p50 ") == 2, proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("tree "))
    assert header.split()[1:] == ["p50", "ms", "p99", "ms", "pipe", "p50", "ms", "pipe", "p99", "ms",
                                  "server", "us/line", "client", "us/line"], header
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
