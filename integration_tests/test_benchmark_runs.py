"""bench/run_benchmark.py runs end to end on a tiny input: every stage, every check, one table.

Only that it runs and checks its runs is asserted here; its numbers mean something only at full size
(`make bench`), and this suite never asserts anything about time.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from integration_tests.harness import REPO_ROOT

BENCH = REPO_ROOT / "bench" / "run_benchmark.py"


@pytest.mark.slow
def test_the_benchmark_runs_every_stage_on_a_tiny_input_and_prints_one_table(tmp_path):
    args = [
        sys.executable, str(BENCH), "--records", "4000", "--state-every", "1000", "--batch-size", "1000",
        "--latency-ms", "10", "--rss-batch-sizes", "1000,2000", "--rss-fractions", "0.5,1", "--repeats", "1",
        "--workdir", str(tmp_path),
    ]
    completed = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout

    assert "4,000 records (2,000 Metrics, 2,000 User Activities), 8 STATEs" in out
    assert "every run checked: the sandbox counted every record at its endpoint" in out
    for row in (
        "CDK parse floor",
        "connector, no latency, batch 1,000",
        "records/s from the first byte read to the last line written",
        "naive sender, 10 ms per request",
        "connector, 10 ms per request",
        "speed-up over the naive sender",
        "peak RSS, batch 1,000, 2,000 records",
        "peak RSS, batch 1,000, 4,000 records",
        "peak RSS, batch 2,000, 4,000 records",
    ):
        assert row in out, f"missing row {row!r} in:\n{out}"
    assert out.count("PASS") + out.count("FAIL") >= 4, "a verdict per target"

    # Each run's output was kept: the connector's states and the naive sender's states are there.
    for label in ("connector-no-latency-b1000-1", "naive-latency-10ms", "connector-latency-10ms"):
        states = [line for line in (tmp_path / f"{label}.out").read_text().splitlines() if '"type":"STATE"' in line]
        assert len(states) == 8, label
