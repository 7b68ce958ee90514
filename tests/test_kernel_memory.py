"""A 1 GiB run in a real kernel: the kernel's memory stays bounded, run.stdout stays whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from .kernel_utils import KernelHarness, fake_command
from .servers import PeakRss

pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.timeout(900)]

GIB = 1 << 30


def test_a_one_gib_run_grows_the_kernel_by_at_most_64_mib(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 1 GiB -c run: kernel RSS grows by at most 64 MiB while it streams; afterwards
    run.stdout is the whole output (sha256 equal) and run.output.path holds it too."""
    harness = KernelHarness.start(tmp_path)
    try:
        harness.ok("%load_ext cc_executor_nb")
        harness.ok("import hashlib, os, cc_executor_nb as ccx")
        harness.ok("warm = ccx.run('echo warm', command=True, display=False).wait(60)")  # loop, server, watchdog
        harness.ok("import gc; gc.collect()")
        with PeakRss(harness.pid) as rss:
            command = fake_command("flood", str(GIB), str(tmp_path / "sha"))
            harness.ok(f"big = ccx.run({command!r}, command=True, display=False)")
            harness.wait_until("big.done", timeout=600)
        status = harness.value("(big.status, big.exit_code)")
        on_disk = harness.value("os.path.getsize(big.output.path)")
        sha = harness.value("hashlib.sha256(big.stdout.encode()).hexdigest()", timeout=300)
    finally:
        harness.shutdown()
    with capsys.disabled():
        print(f"\n1 GiB run in a kernel: {rss.describe()}; output file {on_disk / 2**20:.0f} MiB")
    assert status == ("completed", 0)
    assert rss.growth_mib <= 64
    assert on_disk == GIB and sha == (tmp_path / "sha").read_text()
