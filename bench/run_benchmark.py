"""Throughput and memory of destination-planhat, measured against the CDK's parse floor and a naive sender.

    make bench                               # 1,000,000 records: a few minutes on 2 cores
    .venv/bin/python bench/run_benchmark.py --quick     # 100,000 records: a smoke run

One run, one generated input (records of both endpoints, a STATE of each stream every 10,000 records),
written once to a temporary file and used by every measurement:

1. floor: the CDK's own parsing, `AirbyteMessageSerializer.load(orjson.loads(line))`, over the same lines;
2. the real CLI (`python main.py write`) into the sandbox, no latency: records/s and ratio to the floor;
3. the same with `--latency-ms` per request in the sandbox, against bench/naive_sender.py (synchronous,
   one POST per batch, waits for each answer, same batching): ratio;
4. peak RSS of the connector process at batch sizes 10,000 and 100,000, for growing inputs: prefixes
   of the input (cut after a STATE), the input, and the input fed twice, to show that memory levels
   off instead of growing with the input.

The sandbox runs in its own process (its CPU does not share the connector's GIL), started with
`--no-keep-items --no-validate`: it parses every request body and counts its items per endpoint, but
does not run Planhat's per-item checks in Python, which would make it, not the connector, the
bottleneck on a 2-core machine (the generated input is valid, and the connector checks it too). After
every run the benchmark checks that the sandbox counted every record at the right endpoint and that
the process emitted every STATE with the right record counts, so the numbers are of complete, correct
runs. Peak RSS is the child's own `ru_maxrss` (see _MEASURE).

Start-up (interpreter + CDK import) and the interpreter's teardown are fixed costs per sync, which the
floor does not pay either: the rate compared with the floor runs from the connector's first read of
stdin to its last line on stdout; the table shows both fixed costs and the plain wall time too. The
floor and the no-latency run are the best of `--repeats` runs, as other work on a shared machine
only ever makes a run slower; the CPU-time ratio is shown as well, as it hardly depends on that work.

Prints one table with PASS/FAIL per target and exits 0; exits 1 only when a run failed or the counts
did not match (then the numbers would not mean anything).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import orjson
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from integration_tests.harness import mixed_catalog, mixed_messages, sandbox_config  # noqa: E402

MAIN = REPO_ROOT / "main.py"
NAIVE = REPO_ROOT / "bench" / "naive_sender.py"

# Targets of issue 5, for 1,000,000 records.
FLOOR_RATIO_TARGET = 0.8
LATENCY_RATIO_TARGET = 3.0
RSS_TARGETS_MB = {10_000: 150, 100_000: 350}
# "Flat": peak RSS for the input fed twice within this factor of the peak for the input once. (Below
# 1x, RSS still rises a little as the pipeline and the allocator warm up; the table shows that too.)
RSS_FLAT_FACTOR = 1.10


class BenchmarkError(Exception):
    """A run failed or its counts did not match: its timing would not mean anything."""


# ----- input --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cut:
    """A prefix of the input file that ends right after a STATE pair, fed `repeat` times in a row."""

    offset: int  # bytes
    records: int
    metrics: int
    activities: int
    states: int
    repeat: int = 1


@dataclass
class Input:
    path: Path
    lines: int
    cuts: list[Cut]

    @property
    def whole(self) -> Cut:
        return self.cuts[-1]

    def prefix(self, records: int) -> Cut:
        """The shortest prefix holding at least `records` records."""
        for cut in self.cuts:
            if cut.records >= records:
                return cut
        return self.whole

    def times(self, repeat: int) -> Cut:
        """The whole input, `repeat` times over (for memory: the cursors repeat, which does not matter)."""
        w = self.whole
        return Cut(w.offset, w.records * repeat, w.metrics * repeat, w.activities * repeat, w.states * repeat, repeat)


def generate_input(path: Path, records: int, state_every: int) -> Input:
    """The harness's mixed messages (both endpoints interleaved), one JSON line each, written once."""
    metrics = records // 2
    cuts: list[Cut] = []
    offset = lines = m = a = states = 0
    chunk: list[bytes] = []
    with path.open("wb") as file:
        for message in mixed_messages(metrics=metrics, activities=records - metrics, state_every=state_every):
            line = orjson.dumps(message) + b"\n"
            chunk.append(line)
            offset += len(line)
            lines += 1
            if message["type"] == "RECORD":
                if message["record"]["stream"] == "metrics_stream":
                    m += 1
                else:
                    a += 1
            else:
                states += 1
                if states % 2 == 0:  # a state of each stream follows every `state_every` records
                    cuts.append(Cut(offset, m + a, m, a, states))
            if len(chunk) >= 10_000:
                file.write(b"".join(chunk))
                chunk.clear()
        file.write(b"".join(chunk))
    return Input(path, lines, cuts)


# ----- floor --------------------------------------------------------------------------------------


def measure_floor(path: Path, repeats: int) -> tuple[float, float]:
    """Messages per second of the CDK's own parsing of the same lines, by wall time and by CPU time
    (best of `repeats` each)."""
    from airbyte_cdk.models import AirbyteMessageSerializer

    lines = path.read_bytes().splitlines()
    load, loads = AirbyteMessageSerializer.load, orjson.loads
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        for line in lines:
            load(loads(line))
        best_wall = min(best_wall, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - started_cpu)
    count = len(lines)
    del lines
    return count / best_wall, count / best_cpu


# ----- sandbox ------------------------------------------------------------------------------------


class Sandbox:
    """integration_tests/planhat_sandbox.py in its own process, driven through /_sandbox/*."""

    def __init__(self, workdir: Path) -> None:
        self._log = (workdir / "sandbox.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "integration_tests.planhat_sandbox", "--port", "0", "--no-keep-items", "--no-validate"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline().decode()
        if "listening on " not in first:
            self.stop()
            raise BenchmarkError(f"the sandbox did not start: {first!r}")
        self.url = first.rsplit("listening on ", 1)[1].strip()
        self._session = requests.Session()

    def reset(self, latency_s: float = 0.0) -> None:
        self._session.post(f"{self.url}/_sandbox/reset", timeout=30).raise_for_status()
        if latency_s:
            self._session.post(f"{self.url}/_sandbox/faults", json={"latency_s": latency_s}, timeout=30).raise_for_status()

    def summary(self) -> dict[str, Any]:
        response = self._session.get(f"{self.url}/_sandbox/summary", timeout=30)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# ----- runs ---------------------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    records: int
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    states: int = 0
    requests: int = 0
    # Known when stdin is the input file (see FirstRead): start -> first byte read -> last line -> exit.
    startup_s: Optional[float] = None
    reading_s: Optional[float] = None
    teardown_s: Optional[float] = None

    @property
    def rate(self) -> float:
        return self.records / self.wall_s if self.wall_s > 0 else float("inf")


# Runs one command and reports its wall time and its own rusage. Why a wrapper: a child's ru_maxrss
# starts from the RSS of the process that forked it (this one holds the whole input for the floor),
# so the child is forked from this small interpreter (-S: no site packages) instead.
_MEASURE = r"""
import json, os, sys, time
command, report = json.loads(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(command[0], command)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
ended = time.perf_counter()
with open(report, "w") as file:
    json.dump({"started": started, "ended": ended, "maxrss_kb": usage.ru_maxrss,
               "cpu_s": usage.ru_utime + usage.ru_stime, "exit": os.waitstatus_to_exitcode(status)}, file)
"""


class FirstRead:
    """When a child started reading its stdin file: polls the file offset it shares with the wrapper.

    time.perf_counter() is CLOCK_MONOTONIC on Linux, the same clock in every process, so the moment
    seen here can be compared with the wrapper's start and end. Where /proc is missing, `at` stays None.
    """

    POLL_SECONDS = 0.005

    def __init__(self, pid: int) -> None:
        self.at: Optional[float] = None
        self._path = Path(f"/proc/{pid}/fdinfo/0")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            try:
                text = self._path.read_text()
            except OSError:
                return
            position = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("pos:")), 0)
            if position > 0:
                self.at = time.perf_counter()
                return
            self._done.wait(self.POLL_SECONDS)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def run_process(
    label: str, command: Sequence[str], source: Input, cut: Optional[Cut], workdir: Path
) -> tuple[Run, bytes]:
    """Run one child with the input prefix `cut` (None: empty input) on stdin; time it, read its peak RSS.

    stdout comes through a pipe, so the moment of its last line is known: from there to the exit is the
    interpreter's teardown, a fixed cost like the start-up."""
    err_path, report = workdir / f"{label}.err", workdir / f"{label}.json"
    wrapper = [sys.executable, "-S", "-c", _MEASURE, orjson.dumps(list(command)).decode(), str(report)]
    first_read: Optional[FirstRead] = None
    with err_path.open("wb") as err:
        if cut is not None and cut is source.whole:
            with source.path.open("rb") as stdin_file:
                process = subprocess.Popen(wrapper, cwd=REPO_ROOT, stdin=stdin_file, stdout=subprocess.PIPE, stderr=err)
            first_read = FirstRead(process.pid)
            pump = None
        else:
            process = subprocess.Popen(wrapper, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
            pump = threading.Thread(
                target=_pump, args=(source.path, cut.offset if cut else 0, cut.repeat if cut else 1, process.stdin),
                daemon=True,
            )
            pump.start()
        assert process.stdout is not None
        lines: list[bytes] = []
        last_line_at = None
        for line in process.stdout:
            lines.append(line)
            last_line_at = time.perf_counter()
        process.wait()
        if pump is not None:
            pump.join()
        if first_read is not None:
            first_read.stop()
    stdout = b"".join(lines)
    (workdir / f"{label}.out").write_bytes(stdout)
    measured = orjson.loads(report.read_bytes())
    if measured["exit"] != 0:
        stderr = err_path.read_bytes().decode(errors="replace")
        raise BenchmarkError(f"{label}: exit code {measured['exit']}\n{stderr[-3000:]}")
    records = cut.records if cut else 0
    run = Run(label, records, measured["ended"] - measured["started"], measured["maxrss_kb"] / 1024, measured["cpu_s"])
    if first_read is not None and first_read.at is not None and last_line_at is not None:
        run.startup_s = first_read.at - measured["started"]
        run.reading_s = last_line_at - first_read.at
        run.teardown_s = measured["ended"] - last_line_at
    return run, stdout


def _pump(path: Path, length: int, repeat: int, pipe: Any) -> None:
    try:
        for _ in range(repeat):
            with path.open("rb") as file:
                remaining = length
                while remaining > 0:
                    chunk = file.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    pipe.write(chunk)
                    remaining -= len(chunk)
    except BrokenPipeError:
        pass
    finally:
        try:
            pipe.close()
        except BrokenPipeError:
            pass


def verify(run: Run, stdout: bytes, cut: Optional[Cut], sandbox: Sandbox) -> None:
    """Every record reached the right endpoint once, every STATE came out, with counts adding up."""
    summary = sandbox.summary()
    expected = {"metrics": cut.metrics if cut else 0, "user_activities": cut.activities if cut else 0}
    for endpoint, items in expected.items():
        got = summary[endpoint]
        if (got["items"], got["processed"], got["errors"]) != (items, items, 0):
            raise BenchmarkError(
                f"{run.label}: the sandbox got {got['items']} {endpoint} items ({got['processed']} processed, "
                f"{got['errors']} errors), expected {items}"
            )
    run.requests = sum(summary[e]["requests"] for e in expected)
    states = [m for m in map(_json_or_none, stdout.splitlines()) if m and m.get("type") == "STATE"]
    run.states = len(states)
    counted = sum(s["state"].get("destinationStats", {}).get("recordCount", 0) for s in states)
    expected_states = cut.states if cut else 0
    if run.states != expected_states or counted != (cut.records if cut else 0):
        raise BenchmarkError(
            f"{run.label}: {run.states} states with {counted:.0f} records counted, expected {expected_states} "
            f"states and {cut.records if cut else 0} records"
        )


def _json_or_none(line: bytes) -> Optional[dict[str, Any]]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class Runner:
    def __init__(self, source: Input, sandbox: Sandbox, workdir: Path) -> None:
        self.source = source
        self.sandbox = sandbox
        self.workdir = workdir
        (workdir / "catalog.json").write_bytes(orjson.dumps(mixed_catalog()))

    def _config(self, batch_size: int) -> Path:
        path = self.workdir / f"config-{batch_size}.json"
        path.write_bytes(orjson.dumps(sandbox_config(self.sandbox.url, batch_size=batch_size)))
        return path

    def connector(self, label: str, batch_size: int, cut: Optional[Cut], latency_s: float = 0.0) -> Run:
        command = [sys.executable, str(MAIN), "write", "--config", str(self._config(batch_size)),
                   "--catalog", str(self.workdir / "catalog.json")]
        return self._run(label, command, cut, latency_s)

    def naive(self, label: str, batch_size: int, cut: Cut, latency_s: float) -> Run:
        command = [sys.executable, str(NAIVE), "--config", str(self._config(batch_size)),
                   "--catalog", str(self.workdir / "catalog.json")]
        return self._run(label, command, cut, latency_s)

    def _run(self, label: str, command: list[str], cut: Optional[Cut], latency_s: float) -> Run:
        self.sandbox.reset(latency_s)
        print(f"  running {label} ...", end="", flush=True)
        run, stdout = run_process(label, command, self.source, cut, self.workdir)
        verify(run, stdout, cut, self.sandbox)
        print(f" {run.wall_s:.1f}s, peak RSS {run.peak_rss_mb:.0f} MB, {run.requests} requests, {run.states} states",
              flush=True)
        return run


# ----- report -------------------------------------------------------------------------------------


@dataclass
class Row:
    measure: str
    value: str
    target: str = ""
    verdict: str = ""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_table(title: Sequence[str], rows: list[Row]) -> None:
    header = Row("measure", "value", "target", "result")
    widths = [max(len(cells[i]) for cells in _cells([header, *rows])) for i in range(4)]
    rule = "  ".join("-" * width for width in widths)
    print()
    print("\n".join(title))
    print(rule)
    for i, (measure, value, target, result) in enumerate(_cells([header, *rows])):
        line = f"{measure:<{widths[0]}}  {value:>{widths[1]}}  {target:<{widths[2]}}  {result}"
        print(line.rstrip())
        if i == 0:
            print(rule)
    print(rule)


def _cells(rows: list[Row]) -> list[tuple[str, str, str, str]]:
    return [(row.measure, row.value, row.target, row.verdict) for row in rows]


def _load() -> str:
    try:
        return "%.1f" % os.getloadavg()[0]
    except OSError:
        return "?"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark destination-planhat (see the module docstring).")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100,000 records")
    parser.add_argument("--records", type=int, help="records in the input (default 1,000,000; --quick 100,000)")
    parser.add_argument("--state-every", type=int, default=10_000, help="records between STATE pairs")
    parser.add_argument("--batch-size", type=int, default=10_000, help="batch size of the throughput runs")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="sandbox latency per request in run 3")
    parser.add_argument("--rss-batch-sizes", default="10000,100000", help="batch sizes of the memory runs")
    parser.add_argument("--rss-fractions", default="0.25,0.5,1,2",
                        help="inputs of the memory runs, as fractions of the input (2: the whole input twice)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of the floor and of the no-latency connector (best kept)")
    parser.add_argument("--workdir", help="keep the input and the runs' output here (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    records = args.records or (100_000 if args.quick else 1_000_000)
    rss_batch_sizes = [int(x) for x in args.rss_batch_sizes.split(",") if x]
    fractions = sorted(float(x) for x in args.rss_fractions.split(",") if x)

    load_before = _load()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="planhat-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sandbox: Optional[Sandbox] = None
    try:
        print(f"generating {records:,} records (a STATE of each stream every {args.state_every:,}) in {workdir} ...", flush=True)
        source = generate_input(workdir / "input.jsonl", records, args.state_every)
        whole = source.whole
        size_mb = whole.offset / 1e6
        print(f"  {source.lines:,} lines, {size_mb:.1f} MB", flush=True)

        print("measuring the floor (CDK parsing) ...", flush=True)
        floor, floor_cpu = measure_floor(source.path, args.repeats)
        print(f"  {floor:,.0f} messages/s", flush=True)

        sandbox = Sandbox(workdir)
        runner = Runner(source, sandbox, workdir)
        print(f"sandbox at {sandbox.url} (own process)", flush=True)

        empty = runner.connector("connector-empty-input", args.batch_size, None)
        fast = min(
            (runner.connector(f"connector-no-latency-b{args.batch_size}-{i + 1}", args.batch_size, whole)
             for i in range(args.repeats)),
            key=lambda run: run.reading_s if run.reading_s is not None else run.wall_s,
        )
        latency_s = args.latency_ms / 1000
        naive = runner.naive(f"naive-latency-{args.latency_ms:g}ms", args.batch_size, whole, latency_s)
        overlapped = runner.connector(f"connector-latency-{args.latency_ms:g}ms", args.batch_size, whole, latency_s)

        rss: dict[tuple[int, int], Run] = {}
        for batch_size in rss_batch_sizes:
            for fraction in fractions:
                cut = source.times(int(fraction)) if fraction > 1 else source.prefix(max(1, int(records * fraction)))
                if batch_size == args.batch_size and cut is whole:
                    rss[(batch_size, cut.records)] = fast  # the no-latency run already measured it
                    continue
                rss[(batch_size, cut.records)] = runner.connector(f"rss-b{batch_size}-{cut.records}", batch_size, cut)
    except BenchmarkError as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        return 1
    finally:
        if sandbox is not None:
            sandbox.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    # Start-up (interpreter, CDK import, config) and the interpreter's teardown are fixed costs per sync
    # that the floor does not pay: the rate compared with the floor runs from the first byte read off
    # stdin to the last line written (every acknowledgement and the last state included). Without
    # /proc, the empty-input run's wall time stands in for both.
    if fast.reading_s is not None:
        startup, teardown, reading = fast.startup_s or 0.0, fast.teardown_s or 0.0, fast.reading_s
    else:
        startup, teardown, reading = empty.wall_s, 0.0, max(fast.wall_s - empty.wall_s, 1e-9)
    rate = records / reading
    cpu_rate = records / max(fast.cpu_s - empty.cpu_s, 1e-9)
    speedup = naive.wall_s / overlapped.wall_s
    rows = [
        Row("CDK parse floor: AirbyteMessageSerializer.load(orjson.loads(line))", f"{floor:,.0f} msg/s"),
        Row(f"connector, no latency, batch {args.batch_size:,} (best of {args.repeats}): wall time",
            f"{fast.wall_s:.2f} s", "", f"{fast.rate:,.0f} rec/s"),
        Row("  start-up before the first byte read / teardown after the last line",
            f"{startup:.2f} s", "", f"{teardown:.2f} s"),
        Row("  records/s from the first byte read to the last line written", f"{rate:,.0f} rec/s",
            f">= {FLOOR_RATIO_TARGET:g} x floor", f"{rate / floor:.2f} x  {verdict(rate / floor >= FLOOR_RATIO_TARGET)}"),
        Row("  the same by CPU time (all threads, minus an empty-input run), vs the floor's CPU time",
            f"{cpu_rate:,.0f} rec/s", "", f"{cpu_rate / floor_cpu:.2f} x"),
        Row(f"naive sender, {args.latency_ms:g} ms per request: wall time", f"{naive.wall_s:.2f} s", "",
            f"{naive.rate:,.0f} rec/s"),
        Row(f"connector, {args.latency_ms:g} ms per request: wall time", f"{overlapped.wall_s:.2f} s", "",
            f"{overlapped.rate:,.0f} rec/s"),
        Row("  speed-up over the naive sender (wall times)", f"{speedup:.2f} x", f">= {LATENCY_RATIO_TARGET:g} x",
            verdict(speedup >= LATENCY_RATIO_TARGET)),
    ]
    for batch_size in rss_batch_sizes:
        runs = sorted(((n, r) for (b, n), r in rss.items() if b == batch_size), key=lambda x: x[0])
        target = RSS_TARGETS_MB.get(batch_size)
        for n, run in runs:
            ok = target is None or run.peak_rss_mb <= target
            rows.append(Row(f"peak RSS, batch {batch_size:,}, {n:,} records", f"{run.peak_rss_mb:.0f} MB",
                            f"<= {target} MB" if target else "", verdict(ok) if target else ""))
        base = next((r for r in runs if r[0] == records), runs[0]) if runs else None
        if base is not None and runs[-1] is not base:
            growth = runs[-1][1].peak_rss_mb / base[1].peak_rss_mb
            rows.append(Row(f"  growth {base[0]:,} -> {runs[-1][0]:,} records", f"x {growth:.2f}",
                            f"<= x {RSS_FLAT_FACTOR:.2f}", verdict(growth <= RSS_FLAT_FACTOR)))
    rows.append(Row("peak RSS on an empty input (interpreter + CDK), for reference", f"{empty.peak_rss_mb:.0f} MB"))
    title = [
        f"destination-planhat benchmark: {records:,} records ({whole.metrics:,} Metrics, {whole.activities:,} "
        f"User Activities), {whole.states} STATEs, {size_mb:.1f} MB of input",
        f"{os.cpu_count()} CPUs; load average {load_before} at the start, {_load()} at the end "
        "(other work on the machine slows the wall-time figures, not the CPU-time one)",
        "every run checked: the sandbox counted every record at its endpoint, every STATE came out with its counts",
    ]
    if records < 1_000_000:
        title.append(f"(a {records:,}-record run: the targets are set for 1,000,000 records)")
    print_table(title, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
