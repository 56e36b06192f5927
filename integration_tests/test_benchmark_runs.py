"""bench/run_benchmark.py runs end to end on a tiny input: every stage, every check, one table.

Only that it runs and checks its runs is asserted here; its numbers mean something only at full size
(`make bench`), and this suite never asserts anything about time.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from destination_planhat.testing.harness import API_TOKEN, REPO_ROOT, TENANT
from destination_planhat.testing.sandbox import PlanhatSandbox

BENCH = REPO_ROOT / "bench" / "run_benchmark.py"


@pytest.mark.slow
@pytest.mark.process
def test_the_benchmark_runs_every_stage_on_a_tiny_input_and_prints_one_table(tmp_path):
    args = [
        sys.executable,
        str(BENCH),
        "--records",
        "4000",
        "--state-every",
        "1000",
        "--batch-size",
        "1000",
        "--latency-ms",
        "10",
        "--rss-batch-sizes",
        "1000,2000",
        "--rss-fractions",
        "0.5,1,2",
        "--repeats",
        "1",
        "--workdir",
        str(tmp_path),
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
        "peak RSS, batch 2,000, 8,000 records",
        "growth 4,000 -> 8,000 records",
    ):
        assert row in out, f"missing row {row!r} in:\n{out}"
    assert "parse_workers 0 (in process" in out and "CPU time per record of the process tree" in out
    # A verdict per target: the rate with workers and in process vs the floor, the latency ratio, 2 growths.
    assert out.count("PASS") + out.count("FAIL") == 5

    # Each run's output was kept: the connector's states and the naive sender's states are there.
    for label in ("connector-no-latency-b1000-1", "naive-latency-10ms", "connector-latency-10ms"):
        states = [line for line in (tmp_path / f"{label}.out").read_text().splitlines() if '"type":"STATE"' in line]
        assert len(states) == 8, label


def test_the_benchmark_sandbox_counts_every_item_without_checking_it():
    """--no-validate (what the benchmark runs) still parses and counts, and says it did not check."""
    with PlanhatSandbox(tenant=TENANT, api_token=API_TOKEN, keep_items=False, validate=False) as sandbox:
        url = f"{sandbox.url}/dimensiondata/{TENANT}"
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        answer = requests.post(url, json=[{"dimensionId": "has spaces"}, {"value": "x"}], headers=headers, timeout=10)
        assert answer.json() == {"processed": 2, "errors": []}
        assert requests.post(url, data=b"[{", headers=headers, timeout=10).status_code == 400, "still parsed"
        assert requests.post(url, json=[{}], timeout=10).status_code == 401, "still authenticated"
        metrics = sandbox.summary()["metrics"]
    assert (metrics["items"], metrics["processed"], metrics["errors"]) == (2, 2, 0)
    assert metrics["by_dimension_id"] == {"(not checked)": 2}


OBJECTS_BENCH = REPO_ROOT / "bench" / "objects_benchmark.py"


@pytest.mark.slow
@pytest.mark.process
def test_the_objects_benchmark_runs_end_to_end_on_a_tiny_input_and_prints_one_table(tmp_path):
    """bench/objects_benchmark.py with small batches, as a smoke run: it syncs, checks the sandbox and
    the states, and prints every row. Its figures mean something only at full size (here the budget,
    600 calls a minute, is never reached: 400 requests). `--smoke` makes the window the whole sync:
    a timed window (it was 1 s + 2 s) aborts the run when the sync ends first, which depended on how
    fast the machine was."""
    args = [
        sys.executable,
        str(OBJECTS_BENCH),
        "--cpm",
        "600",
        "--latency-ms",
        "10",
        "--batch-size",
        "100",
        "--pairs",
        "20000",
        "--smoke",
        "--state-every",
        "5000",
        "--workdir",
        str(tmp_path),
    ]
    completed = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    assert "20,000 companies + 20,000 end users (parents first), 8 STATEs" in out
    assert "checked: the sandbox holds every company and end user once, every STATE came out with its counts" in out
    for row in (
        "s from 0 s after the first request (smoke run: the whole sync)",
        "items/s achieved in the window",
        "ceiling: 100 items x 600 calls per minute",
        "ratio to the ceiling",
        "main API requests (upserts) / answered 429",
        "peak RSS of the connector's process tree",
    ):
        assert row in out, f"missing row {row!r} in:\n{out}"
    assert out.count("PASS") + out.count("FAIL") == 3  # ratio, 429s, RSS
    states = [
        line for line in (tmp_path / "connector-objects.out").read_text().splitlines() if '"type":"STATE"' in line
    ]
    assert len(states) == 8
