"""Throughput and memory of destination-planhat, measured against the CDK's parse floor and a naive sender.

    make bench                               # 1,000,000 records: a few minutes on 2 cores
    .venv/bin/python bench/run_benchmark.py --quick     # 100,000 records: a smoke run

One run, one generated input (records of both endpoints, a STATE of each stream every 10,000 records),
written once to a temporary file and used by every measurement:

1. floor: the CDK's own parsing, `AirbyteMessageSerializer.load(orjson.loads(line))`, over the same lines;
2. the real CLI (`python main.py write`) into the sandbox, no latency: records/s and ratio to the floor;
3. the same with `--latency-ms` per request in the sandbox, against bench/naive_sender.py (synchronous,
   one POST per batch, waits for each answer, same batching): ratio;
4. peak RSS of the connector at batch sizes 10,000 and 100,000, for growing inputs: prefixes of the
   input (cut after a STATE), the input, and the input fed twice, to show that memory levels off
   instead of growing with the input.

`--parse-workers N` writes `"parse_workers": N` into the connector's configs (not the naive sender's);
without it the field is left out and the connector's default applies.

The sandbox runs in its own process (its CPU does not share the connector's GIL), started with
`--no-keep-items --no-validate`: it parses every request body and counts its items per endpoint, but
does not run Planhat's per-item checks in Python, which would make it, not the connector, the
bottleneck on a 2-core machine (the generated input is valid, and the connector checks it too). After
every run the benchmark checks that the sandbox counted every record at the right endpoint and that
the process emitted every STATE with the right record counts, so the numbers are of complete, correct
runs.

The connector may run parse worker processes, so memory and CPU time are those of its whole process
tree (TreeSampler): every 10 ms, the RSS of the connector and of each of its descendants is read from
/proc and summed. The judged peak RSS is the highest such sum, or the largest single process's own
peak (`ru_maxrss` from wait4, exact) if that is higher, as a 10 ms sample can miss a short spike.
Both are shown. A sum of RSS counts pages that processes share (the interpreter's libraries) once per
process: it errs on the high side. Without /proc, only `ru_maxrss` is there, and the table says so.

Start-up (interpreter + CDK import) and the interpreter's teardown are fixed costs per sync, which the
floor does not pay either: the rate compared with the floor runs from the connector's first read of
stdin to its last line on stdout; the table shows both fixed costs and the plain wall time too. The
floor and the no-latency run are the best of `--repeats` runs, as other work on a shared machine
only ever makes a run slower.

The CPU-time ratio uses the same window: the CPU time of the connector's process tree (every thread
of the connector and of its workers, sampled from /proc every 10 ms and interpolated at the window's
ends) from the first byte read to the last line written, against the floor's CPU time. Other work on
the machine moves it less than the wall time (but does move it: shared caches and cores). Why not
the whole run's CPU time minus an empty-input run's: that takes about 1.3 s of start-up, which varies
by up to 0.2 s between identical runs, from about 1.7 s for 100,000 records; what is left is mostly
that variation (it once gave 11.6 x).

Prints one table with PASS/FAIL per target and exits 0; exits 1 only when a run failed or the counts
did not match (then the numbers would not mean anything).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import orjson
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from destination_planhat.testing.harness import mixed_catalog, mixed_messages, sandbox_config  # noqa: E402

MAIN = REPO_ROOT / "main.py"
NAIVE = REPO_ROOT / "bench" / "naive_sender.py"

# Targets (issue 11), for 1,000,000 records: records/s in the processing window vs the floor's msg/s,
# with parse workers and in the connector's own process (parse_workers 0, or a single CPU).
FLOOR_RATIO_TARGET = 1.0
IN_PROCESS_RATIO_TARGET = 0.8
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
    """destination_planhat/testing/sandbox.py in its own process, driven through /_sandbox/*."""

    # The analytics runs: the sandbox counts items but neither keeps nor checks them (see the docstring).
    ANALYTICS_OPTIONS = ("--no-keep-items", "--no-validate")

    def __init__(self, workdir: Path, options: Sequence[str] = ANALYTICS_OPTIONS) -> None:
        self._log = (workdir / "sandbox.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "destination_planhat.testing.sandbox", "--port", "0", *options],
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
            self._session.post(
                f"{self.url}/_sandbox/faults", json={"latency_s": latency_s}, timeout=30
            ).raise_for_status()

    def summary(self) -> dict[str, Any]:
        return self.get("summary")

    def get(self, name: str, timeout: float = 30, **params: str) -> Any:
        """GET /_sandbox/<name> (summary, main_api, ...), as JSON."""
        response = self._session.get(f"{self.url}/_sandbox/{name}", params=params, timeout=timeout)
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


class Workspace:
    """A run's directory and its sandbox, for `close()` to clean up however the run ends: the sandbox
    stopped, the directory removed unless the user named it (`--workdir`, then kept)."""

    def __init__(self, keep: Optional[str], prefix: str) -> None:
        self.path = Path(keep) if keep else Path(tempfile.mkdtemp(prefix=prefix))
        self.path.mkdir(parents=True, exist_ok=True)
        self._temporary = not keep
        self._sandbox: Optional[Sandbox] = None

    def start_sandbox(self, options: Sequence[str] = Sandbox.ANALYTICS_OPTIONS) -> Sandbox:
        self._sandbox = Sandbox(self.path, options)
        return self._sandbox

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.stop()
        if self._temporary:
            shutil.rmtree(self.path, ignore_errors=True)


def aborted(reason: object) -> int:
    """A run failed or did not measure what it should: the reason on stderr, and the exit status (1)."""
    print(f"\nbenchmark aborted: {reason}", file=sys.stderr)
    return 1


# ----- runs ---------------------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    records: int
    wall_s: float
    # From wait4 on the connector: its rusage includes every descendant it waited for, so ru_maxrss is
    # the largest single process's own peak (not a sum), and the CPU time is the whole tree's.
    maxrss_mb: float
    cpu_s: float
    states: int = 0
    requests: int = 0
    # From TreeSampler (None without /proc): the highest sampled sum of RSS over the process tree, and
    # the most processes it held at once (the connector + its parse workers).
    tree_rss_mb: Optional[float] = None
    processes: Optional[int] = None
    # Known when stdin is the input file (see FirstRead): start -> first byte read -> last line -> exit.
    startup_s: Optional[float] = None
    reading_s: Optional[float] = None
    teardown_s: Optional[float] = None
    # CPU time of the process tree up to the first byte read, and from there to the last line.
    startup_cpu_s: Optional[float] = None
    reading_cpu_s: Optional[float] = None

    @property
    def rate(self) -> float:
        return self.records / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def peak_rss_mb(self) -> float:
        """The judged peak: the sampled tree sum, unless one process alone peaked higher between samples."""
        return max(self.tree_rss_mb or 0.0, self.maxrss_mb)


# Runs one command and reports its wall time and its rusage (which includes the descendants it waited
# for: their CPU time is added, ru_maxrss is the largest of them). Why a wrapper: a child's ru_maxrss
# starts from the RSS of the process that forked it (this one holds the whole input for the floor),
# so the child is forked from this small interpreter (-S: no site packages) instead. The command's
# process tree is then every descendant of the wrapper (TreeSampler).
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


class TreeSampler:
    """RSS and CPU time of every descendant of `root` (not `root` itself), summed, sampled from /proc.

    Why: with parse workers the connector is several processes, and its own rusage holds neither the
    workers' memory nor, until it has waited for them, their CPU time. Every SAMPLE_SECONDS each
    descendant's /proc/<pid>/stat is read again through a descriptor kept open (which also cannot
    mistake a reused pid for the process): RSS, and utime + stime + cutime + cstime (the last two: the
    CPU time of children it has waited for, so a worker's time stays counted once it is gone).
    Descendants are found by parent pid (this kernel has no /proc/<pid>/task/*/children): /proc is
    listed every SCAN_EVERY samples, and only a pid not seen before has its stat read for its parent.
    All this costs about 2 % of one CPU. Without /proc, `available` is False and there are no samples.
    """

    SAMPLE_SECONDS = 0.01
    SCAN_EVERY = 5  # a new process is found within 50 ms; its CPU time since it started is not lost

    def __init__(self, root: int) -> None:
        self.available = Path(f"/proc/{root}/stat").exists()
        self.peak_rss_bytes = 0
        self.max_processes = 0
        # (time.perf_counter(), CPU seconds of the tree so far), never decreasing.
        self.samples: list[tuple[float, float]] = []
        self._root = root
        self._parents: dict[int, int] = {}  # every pid in /proc -> its parent's pid
        self._members: dict[int, int] = {}  # descendant -> open /proc/<pid>/stat, parents before children
        self._page_bytes = os.sysconf("SC_PAGE_SIZE") if self.available else 4096
        self._ticks = os.sysconf("SC_CLK_TCK") if self.available else 100
        self._stopped = False
        self._thread = threading.Thread(target=self._poll, daemon=True)
        if self.available:
            self._thread.start()

    def _poll(self) -> None:
        try:
            count = 0
            while not self._stopped:
                if not self._members or count % self.SCAN_EVERY == 0:
                    self._scan()
                self._sample()
                count += 1
                time.sleep(self.SAMPLE_SECONDS)
        finally:
            for fd in self._members.values():
                os.close(fd)

    def _scan(self) -> None:
        pids = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        gone, new = self._parents.keys() - pids, pids - self._parents.keys()
        for pid in gone:
            del self._parents[pid]
        for pid in new:
            try:
                with open(f"/proc/{pid}/stat", "rb") as file:
                    data = file.read()
            except OSError:
                continue
            self._parents[pid] = int(data[data.rindex(b")") + 2 :].split()[1])
        if not gone and not new:
            return
        children: dict[int, list[int]] = {}
        for pid, parent in self._parents.items():
            children.setdefault(parent, []).append(pid)
        members: dict[int, int] = {}
        queue = [self._root]
        while queue:
            for pid in children.get(queue.pop(0), []):
                queue.append(pid)
                fd = self._members.pop(pid, None)
                if fd is None:
                    try:
                        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
                    except OSError:
                        continue
                members[pid] = fd
        for fd in self._members.values():  # no longer descendants (reparented)
            os.close(fd)
        self._members = members

    def _sample(self) -> None:
        # Parents are read before their children: a worker reaped in between is missed for one sample
        # (and the running maximum below hides that) instead of being counted twice.
        rss_pages = ticks = processes = 0
        for pid, fd in list(self._members.items()):
            try:
                data = os.pread(fd, 4096, 0)
            except OSError:  # gone (and reaped)
                data = b""
            if not data:
                os.close(fd)
                del self._members[pid]
                continue
            fields = data[data.rindex(b")") + 2 :].split()  # field 3 of stat(5) at index 0
            processes += 1
            rss_pages += int(fields[21])
            ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        if not processes:
            return
        cpu = ticks / self._ticks
        if self.samples:
            cpu = max(cpu, self.samples[-1][1])
        self.samples.append((time.perf_counter(), cpu))
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss_pages * self._page_bytes)
        self.max_processes = max(self.max_processes, processes)

    def cpu_at(self, moment: float) -> Optional[float]:
        """CPU seconds of the tree at `moment` (a time.perf_counter() value), between the samples around it."""
        if not self.samples or moment < self.samples[0][0]:
            return None
        i = bisect.bisect_right(self.samples, moment, key=lambda sample: sample[0])
        if i == len(self.samples):
            return self.samples[-1][1]
        (t0, c0), (t1, c1) = self.samples[i - 1], self.samples[i]
        return c0 + (c1 - c0) * (moment - t0) / (t1 - t0) if t1 > t0 else c1

    def stop(self) -> None:
        self._stopped = True
        if self._thread.is_alive():
            self._thread.join()


def write_command(config: Path, catalog: Path) -> list[str]:
    """The connector's CLI write, as the platform runs it."""
    return [sys.executable, str(MAIN), "write", "--config", str(config), "--catalog", str(catalog)]


def run_process(
    label: str, command: Sequence[str], source: Input, cut: Optional[Cut], workdir: Path
) -> tuple[Run, bytes]:
    """Run one child with the input prefix `cut` (None: empty input) on stdin; time it, read its peak RSS
    and CPU time (its process tree's, see TreeSampler).

    stdout comes through a pipe, so the moment of its last line is known: from there to the exit is the
    interpreter's teardown, a fixed cost like the start-up."""
    err_path, report = workdir / f"{label}.err", workdir / f"{label}.json"
    wrapper = [sys.executable, "-S", "-c", _MEASURE, orjson.dumps(list(command)).decode(), str(report)]
    first_read: Optional[FirstRead] = None
    with err_path.open("wb") as err:
        if cut is not None and cut is source.whole:
            with source.path.open("rb") as stdin_file:
                process = subprocess.Popen(wrapper, cwd=REPO_ROOT, stdin=stdin_file, stdout=subprocess.PIPE, stderr=err)
            sampler = TreeSampler(process.pid)
            first_read = FirstRead(process.pid)
            pump = None
        else:
            process = subprocess.Popen(
                wrapper, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
            sampler = TreeSampler(process.pid)
            pump = threading.Thread(
                target=_pump,
                args=(source.path, cut.offset if cut else 0, cut.repeat if cut else 1, process.stdin),
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
        sampler.stop()
        if pump is not None:
            pump.join()
        if first_read is not None:
            first_read.stop()
    stdout = b"".join(lines)
    (workdir / f"{label}.out").write_bytes(stdout)
    measured = orjson.loads(report.read_bytes())
    if measured["exit"] != 0:
        stderr = err_path.read_bytes().decode(errors="replace")
        # A connector reports a config error (e.g. a `parse_workers` it does not know) as a TRACE on stdout.
        traces = [
            m["trace"]["error"].get("message", "")
            for m in map(_json_or_none, stdout.splitlines())
            if m and m.get("type") == "TRACE" and isinstance(m.get("trace", {}).get("error"), dict)
        ]
        raise BenchmarkError(f"{label}: exit code {measured['exit']}\n" + "\n".join([*traces, stderr[-3000:]]).strip())
    records = cut.records if cut else 0
    run = Run(label, records, measured["ended"] - measured["started"], measured["maxrss_kb"] / 1024, measured["cpu_s"])
    if sampler.samples:
        run.tree_rss_mb = sampler.peak_rss_bytes / 2**20
        run.processes = sampler.max_processes
    if first_read is not None and first_read.at is not None and last_line_at is not None:
        run.startup_s = first_read.at - measured["started"]
        run.reading_s = last_line_at - first_read.at
        run.teardown_s = measured["ended"] - last_line_at
        cpu_first, cpu_last = sampler.cpu_at(first_read.at), sampler.cpu_at(last_line_at)
        if cpu_first is not None and cpu_last is not None:
            run.startup_cpu_s, run.reading_cpu_s = cpu_first, cpu_last - cpu_first
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
        with contextlib.suppress(BrokenPipeError):
            pipe.close()


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
    run.states, counted = emitted_states(stdout)
    expected_states = cut.states if cut else 0
    if run.states != expected_states or counted != (cut.records if cut else 0):
        raise BenchmarkError(
            f"{run.label}: {run.states} states with {counted:.0f} records counted, expected {expected_states} "
            f"states and {cut.records if cut else 0} records"
        )


def emitted_states(stdout: bytes) -> tuple[int, float]:
    """(the STATE messages a run printed, the records their destinationStats count in all)."""
    states = [m for m in map(_json_or_none, stdout.splitlines()) if m and m.get("type") == "STATE"]
    return len(states), sum(m["state"].get("destinationStats", {}).get("recordCount", 0) for m in states)


def _json_or_none(line: bytes) -> Optional[dict[str, Any]]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _reading_time(run: Run) -> float:
    return run.reading_s if run.reading_s is not None else run.wall_s


def _in_process_rows(run: Optional[Run], records: int, floor: float, floor_cpu: float, repeats: int) -> list[Row]:
    """The same input decoded in the connector's own process (parse_workers 0): what the workers add."""
    if run is None:
        return []
    if run.reading_s is None:
        return [Row(f"  for comparison, parse_workers 0 (best of {repeats}): wall time", f"{run.wall_s:.2f} s")]
    rate = records / run.reading_s
    ok = rate / floor >= IN_PROCESS_RATIO_TARGET
    rows = [
        Row(
            f"  parse_workers 0 (in process, best of {repeats}): records/s, same window",
            f"{rate:,.0f} rec/s",
            f">= {IN_PROCESS_RATIO_TARGET:g} x floor",
            f"{rate / floor:.2f} x  {verdict(ok)}",
        )
    ]
    if run.reading_cpu_s is not None:
        rows.append(
            _cpu_per_record_row(
                "    CPU time per record in that window (one process) / the floor's",
                run.reading_cpu_s,
                records,
                floor_cpu,
            )
        )
    return rows


def _cpu_per_record_row(label: str, cpu_s: float, records: int, floor_cpu: float) -> Row:
    """CPU µs per record of the process tree, next to the floor's µs per message."""
    mine, floor_us = cpu_s / records * 1e6, 1e6 / floor_cpu
    return Row(label, f"{mine:.2f} / {floor_us:.2f} µs", "", f"{floor_us / mine:.2f} x")


class Runner:
    def __init__(self, source: Input, sandbox: Sandbox, workdir: Path, parse_workers: Optional[int] = None) -> None:
        self.source = source
        self.sandbox = sandbox
        self.workdir = workdir
        self.parse_workers = parse_workers
        (workdir / "catalog.json").write_bytes(orjson.dumps(mixed_catalog()))

    def _config(self, batch_size: int, connector: bool, parse_workers: Optional[int] = None) -> Path:
        """The connector's config gets `parse_workers` when it was given; the naive sender's never does."""
        overrides: dict[str, Any] = {"batch_size": batch_size}
        name = f"config-{batch_size}"
        parse_workers = self.parse_workers if parse_workers is None else parse_workers
        if connector and parse_workers is not None:
            overrides["parse_workers"] = parse_workers
            name += f"-w{parse_workers}"
        path = self.workdir / f"{name}.json"
        path.write_bytes(orjson.dumps(sandbox_config(self.sandbox.url, **overrides)))
        return path

    def connector(
        self,
        label: str,
        batch_size: int,
        cut: Optional[Cut],
        latency_s: float = 0.0,
        parse_workers: Optional[int] = None,
    ) -> Run:
        config = self._config(batch_size, connector=True, parse_workers=parse_workers)
        return self._run(label, write_command(config, self.workdir / "catalog.json"), cut, latency_s)

    def naive(self, label: str, batch_size: int, cut: Cut, latency_s: float) -> Run:
        command = [
            sys.executable,
            str(NAIVE),
            "--config",
            str(self._config(batch_size, connector=False)),
            "--catalog",
            str(self.workdir / "catalog.json"),
        ]
        return self._run(label, command, cut, latency_s)

    def _run(self, label: str, command: list[str], cut: Optional[Cut], latency_s: float) -> Run:
        self.sandbox.reset(latency_s)
        print(f"  running {label} ...", end="", flush=True)
        run, stdout = run_process(label, command, self.source, cut, self.workdir)
        verify(run, stdout, cut, self.sandbox)
        tree = (
            f"peak RSS {run.tree_rss_mb:.0f} MB over {run.processes} process(es), "
            f"largest process {run.maxrss_mb:.0f} MB"
            if run.tree_rss_mb is not None
            else f"peak RSS {run.maxrss_mb:.0f} MB (largest process)"
        )
        print(f" {run.wall_s:.1f}s, {tree}, {run.requests} requests, {run.states} states", flush=True)
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


def _cpu_rows(run: Optional[Run], records: int, floor_cpu: float) -> list[Row]:
    """Records per CPU-second of the process tree between the first byte read and the last line, vs the floor."""
    label = "  the same by CPU time (process tree, all threads, same window), vs the floor's CPU time"
    if run is None or run.reading_cpu_s is None or run.startup_cpu_s is None:
        return [Row(label, "n/a (no /proc)")]
    cpu_rate = records / max(run.reading_cpu_s, 1e-9)
    after = run.cpu_s - run.startup_cpu_s - run.reading_cpu_s
    return [
        Row(label, f"{cpu_rate:,.0f} rec/s", "", f"{cpu_rate / floor_cpu:.2f} x"),
        _cpu_per_record_row(
            "  CPU time per record of the process tree in that window / the floor's",
            run.reading_cpu_s,
            records,
            floor_cpu,
        ),
        Row(
            "  CPU time of that run's tree: before the first byte read / in the window / after it",
            f"{run.startup_cpu_s:.2f} / {run.reading_cpu_s:.2f} / {after:.2f} s",
            "",
            f"total {run.cpu_s:.2f} s",
        ),
    ]


def machine(load_before: str) -> str:
    """The title's line on the machine: CPUs, and the load average before the run and now."""
    return f"{os.cpu_count()} CPUs; load average {load_before} at the start, {load_average()} at the end"


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
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
    parser.add_argument(
        "--rss-fractions",
        default="0.25,0.5,1,2",
        help="inputs of the memory runs, as fractions of the input (2: the whole input twice)",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of the floor and of the no-latency connector (best kept)"
    )
    parser.add_argument("--workdir", help="keep the input and the runs' output here (default: a temp dir, removed)")
    parser.add_argument(
        "--parse-workers",
        type=int,
        metavar="N",
        help='write "parse_workers": N into the connector\'s configs (default: left out)',
    )
    args = parser.parse_args(argv)
    if args.parse_workers is not None and args.parse_workers < 0:
        parser.error("--parse-workers must be 0 or more")
    records = args.records or (100_000 if args.quick else 1_000_000)
    rss_batch_sizes = [int(x) for x in args.rss_batch_sizes.split(",") if x]
    fractions = sorted(float(x) for x in args.rss_fractions.split(",") if x)

    load_before = load_average()
    space = Workspace(args.workdir, "planhat-bench-")
    workdir = space.path
    try:
        print(
            f"generating {records:,} records (a STATE of each stream every {args.state_every:,}) in {workdir} ...",
            flush=True,
        )
        source = generate_input(workdir / "input.jsonl", records, args.state_every)
        whole = source.whole
        size_mb = whole.offset / 1e6
        print(f"  {source.lines:,} lines, {size_mb:.1f} MB", flush=True)

        print("measuring the floor (CDK parsing) ...", flush=True)
        floor, floor_cpu = measure_floor(source.path, args.repeats)
        print(f"  {floor:,.0f} messages/s", flush=True)

        sandbox = space.start_sandbox()
        runner = Runner(source, sandbox, workdir, args.parse_workers)
        print(f"sandbox at {sandbox.url} (own process)", flush=True)

        empty = runner.connector("connector-empty-input", args.batch_size, None)
        fast_runs = [
            runner.connector(f"connector-no-latency-b{args.batch_size}-{i + 1}", args.batch_size, whole)
            for i in range(args.repeats)
        ]
        fast = min(fast_runs, key=_reading_time)
        # For comparison, unless the runs above already parsed in process: the same input, parse_workers 0.
        in_process: Optional[Run] = None
        if args.parse_workers != 0:
            in_process = min(
                (
                    runner.connector(
                        f"connector-in-process-b{args.batch_size}-{i + 1}", args.batch_size, whole, parse_workers=0
                    )
                    for i in range(args.repeats)
                ),
                key=_reading_time,
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
        return aborted(exc)
    finally:
        space.close()

    # Start-up (interpreter, CDK import, config) and the interpreter's teardown are fixed costs per sync
    # that the floor does not pay: the rate compared with the floor runs from the first byte read off
    # stdin to the last line written (every acknowledgement and the last state included). Without
    # /proc, the empty-input run's wall time stands in for both.
    if fast.reading_s is not None:
        startup, teardown, reading = fast.startup_s or 0.0, fast.teardown_s or 0.0, fast.reading_s
    else:
        startup, teardown, reading = empty.wall_s, 0.0, max(fast.wall_s - empty.wall_s, 1e-9)
    rate = records / reading
    # By CPU time: the best of the runs, like the floor's; the same window, so no fixed cost to subtract.
    cpu_runs = [run for run in fast_runs if run.reading_cpu_s is not None and run.startup_cpu_s is not None]
    fast_cpu = min(cpu_runs, key=lambda run: run.reading_cpu_s or 0.0) if cpu_runs else None
    speedup = naive.wall_s / overlapped.wall_s
    # The main runs decode in the connector's process when they are one process (parse_workers 0, one CPU).
    target = IN_PROCESS_RATIO_TARGET if fast.processes == 1 or args.parse_workers == 0 else FLOOR_RATIO_TARGET
    rows = [
        Row("CDK parse floor: AirbyteMessageSerializer.load(orjson.loads(line))", f"{floor:,.0f} msg/s"),
        Row(
            f"connector, no latency, batch {args.batch_size:,} (best of {args.repeats}): wall time",
            f"{fast.wall_s:.2f} s",
            "",
            f"{fast.rate:,.0f} rec/s",
        ),
        Row(
            "  start-up before the first byte read / teardown after the last line",
            f"{startup:.2f} s",
            "",
            f"{teardown:.2f} s",
        ),
        Row(
            "  records/s from the first byte read to the last line written",
            f"{rate:,.0f} rec/s",
            f">= {target:g} x floor",
            f"{rate / floor:.2f} x  {verdict(rate / floor >= target)}",
        ),
        *_cpu_rows(fast_cpu, records, floor_cpu),
        *_in_process_rows(in_process, records, floor, floor_cpu, args.repeats),
        Row(
            "  processes in the connector's tree at once, at most (the connector + its parse workers)",
            f"{fast.processes}" if fast.processes is not None else "n/a (no /proc)",
        ),
        Row(
            f"naive sender, {args.latency_ms:g} ms per request: wall time",
            f"{naive.wall_s:.2f} s",
            "",
            f"{naive.rate:,.0f} rec/s",
        ),
        Row(
            f"connector, {args.latency_ms:g} ms per request: wall time",
            f"{overlapped.wall_s:.2f} s",
            "",
            f"{overlapped.rate:,.0f} rec/s",
        ),
        Row(
            "  speed-up over the naive sender (wall times)",
            f"{speedup:.2f} x",
            f">= {LATENCY_RATIO_TARGET:g} x",
            verdict(speedup >= LATENCY_RATIO_TARGET),
        ),
    ]
    sampled = all(run.tree_rss_mb is not None for run in (*rss.values(), empty))
    rows.append(
        Row(
            "peak RSS: process tree (sum, sampled every 10 ms) or largest process, whichever is higher",
            "",
            "",
            "(largest process alone)",
        )
        if sampled
        else Row("peak RSS: no /proc here, so the largest process's own (ru_maxrss); parse workers not summed")
    )
    for batch_size in rss_batch_sizes:
        runs = sorted(((n, r) for (b, n), r in rss.items() if b == batch_size), key=lambda x: x[0])
        target = RSS_TARGETS_MB.get(batch_size)
        for n, run in runs:
            ok = target is None or run.peak_rss_mb <= target
            largest = f"({run.maxrss_mb:.0f} MB)" if sampled else ""
            rows.append(
                Row(
                    f"  peak RSS, batch {batch_size:,}, {n:,} records",
                    f"{run.peak_rss_mb:.0f} MB",
                    f"<= {target} MB" if target else "",
                    f"{verdict(ok)}  {largest}".rstrip() if target else largest,
                )
            )
        base = next((r for r in runs if r[0] == records), runs[0]) if runs else None
        if base is not None and runs[-1] is not base:
            growth = runs[-1][1].peak_rss_mb / base[1].peak_rss_mb
            rows.append(
                Row(
                    f"    growth {base[0]:,} -> {runs[-1][0]:,} records",
                    f"x {growth:.2f}",
                    f"<= x {RSS_FLAT_FACTOR:.2f}",
                    verdict(growth <= RSS_FLAT_FACTOR),
                )
            )
    rows.append(
        Row(
            "  peak RSS on an empty input (interpreter, CDK, any parse workers), for reference",
            f"{empty.peak_rss_mb:.0f} MB",
            "",
            f"({empty.maxrss_mb:.0f} MB)" if sampled else "",
        )
    )
    title = [
        f"destination-planhat benchmark: {records:,} records ({whole.metrics:,} Metrics, {whole.activities:,} "
        f"User Activities), {whole.states} STATEs, {size_mb:.1f} MB of input",
        machine(load_before) + " (other work on the machine slows the wall-time figures, the CPU-time ones less)",
        "connector config: "
        + (
            f'"parse_workers": {args.parse_workers}'
            if args.parse_workers is not None
            else "parse_workers not set (the connector's default)"
        ),
        "every run checked: the sandbox counted every record at its endpoint, every STATE came out with its counts",
    ]
    if records < 1_000_000:
        title.append(f"(a {records:,}-record run: the targets are set for 1,000,000 records)")
    print_table(title, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
