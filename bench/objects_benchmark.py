"""Objects throughput under Planhat's calls-per-minute limit: how close a sync comes to the ceiling.

    make bench-objects                                    # 120 calls/min, 300 ms per request, ~4 minutes
    .venv/bin/python bench/objects_benchmark.py --cpm 60 --measure-s 60          # shorter

What is measured: the real CLI (`python main.py write`) syncs companies and end users referencing them
(record by record interleaved, each end user naming the company read just before it through
`companyExternalId`, so every end users batch waits for its companies: parents first) into the
sandbox's main API, which is run in its own process with a limit of `--cpm` calls per minute (a fixed
window, answered 429 above it, like Planhat's) and `--latency-ms` added to every main API answer.
The connector's `api_calls_per_minute` is the same `--cpm`.

The ceiling is `--cpm` full requests a minute: 5,000 items (Planhat's bulk upsert maximum, the
connector's object batch at the default `batch_size`) x cpm.
The connector's pacer is a sliding window of 61 s (planhat/pacing.py: a minute and a margin for arrival
drift), so the first window can go faster than the steady state (a start burst) and be followed by
a pause, and so can every later one: when the lanes are faster than the budget, the calls come in
bursts of `cpm` every 61 s. The ratio is therefore measured over a steady-state window that is a
whole number of the pacer's windows: from `--warmup-s` after the sandbox's first request,
`--measure-s` seconds (122 by default: two windows), counting the items of the requests that
started in it (from the sandbox's request log). Whatever the bursts' phase, such a window holds at
most `cpm` calls per 61 s, so the best possible ratio is 60/61 = 0.984 (a window of whole minutes
could catch two bursts in 120 s and read 1.000).

Checked after the run, so that the figures are of a complete, correct sync: the sandbox holds every
company and every end user once (each with its company), every STATE came out with its record count,
and no request was refused 429 (the connector's own pacing must never cause one). Peak RSS is the
connector's process tree's (sum of RSS sampled every 10 ms, or the largest process's ru_maxrss if
higher), judged against the analytics path's bound at the default batch (150 MB).

`--batch-size` (with `--pairs`) is for a quick smoke run only (integration_tests/test_benchmark_runs.py):
the ceiling is then batch-size x cpm. So is `--smoke` (with `--pairs`): the window is then the whole
sync, from the first request to the last answer, however long the machine took (a timed window could
outlast a short sync and abort the run); its figures mean nothing, only that every stage and check ran.

Prints one table with PASS/FAIL per target; exits 1 only when the run failed or the checks did not hold.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import orjson

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.run_benchmark import (  # noqa: E402
    BenchmarkError,
    Cut,
    Input,
    Row,
    Sandbox,
    Workspace,
    aborted,
    emitted_states,
    load_average,
    machine,
    print_table,
    run_process,
    verdict,
    write_command,
)
from destination_planhat.planhat.pacing import WINDOW_MARGIN_SECONDS, WINDOW_SECONDS  # noqa: E402
from destination_planhat.testing.harness import API_TOKEN, catalog, configured_stream, record, stream_state  # noqa: E402
from destination_planhat.testing.object_syncs import COMPANY_SCHEMA, ENDUSER_SCHEMA  # noqa: E402

PACER_WINDOW_S = WINDOW_SECONDS + WINDOW_MARGIN_SECONDS  # the connector's sliding window
MAX_ITEMS = 5_000  # Planhat's bulk upsert maximum, the connector's object batch
RATIO_TARGET = 0.90
RSS_TARGET_MB = 150
COMPANIES, ENDUSERS = "accounts", "contacts"
STREAMS = [
    {
        "name": COMPANIES,
        "endpoint": "companies",
        "field_mappings": [
            {"planhat_field": "externalId", "source_field": "id"},
            {"planhat_field": "custom.Plan tier", "source_field": "plan"},
            {"planhat_field": "custom.Seats", "source_field": "seats"},
        ],
    },
    {"name": ENDUSERS, "endpoint": "endusers"},
]


def generate_input(path: Path, pairs: int, state_every: int) -> Input:
    """`pairs` companies and as many end users, interleaved; a STATE of each stream every `state_every` pairs."""
    states = offset = lines = 0
    chunk: list[bytes] = []
    with path.open("wb") as file:
        for i in range(pairs):
            company = {
                "id": f"acct-{i}",
                "name": f"Company {i}",
                "plan": ("pro", "team", "free")[i % 3],
                "seats": i % 250,
            }
            user = {
                "externalId": f"user-{i}",
                "email": f"user{i}@example.com",
                "firstName": f"User {i}",
                "companyExternalId": f"acct-{i}",
            }
            messages = [record(COMPANIES, company), record(ENDUSERS, user)]
            if (i + 1) % state_every == 0 or i + 1 == pairs:
                messages += [stream_state(COMPANIES, i + 1), stream_state(ENDUSERS, i + 1)]
                states += 2
            for message in messages:
                line = orjson.dumps(message) + b"\n"
                chunk.append(line)
                offset += len(line)
                lines += 1
            if len(chunk) >= 20_000:
                file.write(b"".join(chunk))
                chunk.clear()
        file.write(b"".join(chunk))
    return Input(path, lines, [Cut(offset, 2 * pairs, 0, 0, states)])


def verify(sandbox: Sandbox, stdout: bytes, pairs: int, states: int) -> None:
    """Every company and end user is in the sandbox once, with its company; every STATE came out."""
    summary = sandbox.get("main_api", timeout=120)["objects"]
    for name in ("companies", "endusers"):
        got = summary.get(name, {})
        if (got.get("records"), got.get("created"), got.get("errors")) != (pairs, pairs, 0):
            raise BenchmarkError(f"the sandbox holds {got} for {name}, expected {pairs} records created, no errors")
    emitted, counted = emitted_states(stdout)
    if emitted != states or counted != 2 * pairs:
        raise BenchmarkError(f"{emitted} states counting {counted:.0f} records, expected {states} and {2 * pairs}")


def steady_state(requests_log: list[dict[str, Any]], warmup_s: float, length: float) -> tuple[int, int, float, float]:
    """(requests, items) of the upserts that started within the window, its start and length (s)."""
    upserts = sorted((r for r in requests_log if r["method"] == "PUT"), key=lambda r: r["at"])
    start = upserts[0]["at"] + warmup_s
    inside = [r for r in upserts if start <= r["at"] < start + length and r["status"] in (200, 206)]
    return len(inside), sum(r["processed"] for r in inside), start, length


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Objects benchmark of destination-planhat (see the module docstring).")
    parser.add_argument(
        "--cpm", type=int, default=120, help="calls per minute: the sandbox's limit and the connector's budget"
    )
    parser.add_argument("--latency-ms", type=float, default=300.0, help="added to every main API answer")
    parser.add_argument(
        "--warmup-s", type=float, default=60.0, help="seconds after the first request before the window"
    )
    parser.add_argument(
        "--measure-s",
        type=float,
        default=122.0,
        help="seconds of the steady-state window (whole pacer windows of 61 s)",
    )
    parser.add_argument(
        "--tail-s", type=float, default=30.0, help="input for this long beyond the window, so it ends full"
    )
    parser.add_argument(
        "--batch-size", type=int, default=MAX_ITEMS, help="the connector's batch_size (smoke runs only)"
    )
    parser.add_argument(
        "--pairs", type=int, help="companies (and as many end users) in the input (default: from the above)"
    )
    parser.add_argument("--state-every", type=int, default=10_000, help="pairs between STATEs of each stream")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a smoke run (needs --pairs): the window is the whole sync, whatever its length; no figure means anything",
    )
    parser.add_argument("--workdir", help="keep the input and the run's output here (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    if args.cpm < 1 or args.measure_s <= 0 or not 1 <= args.batch_size <= MAX_ITEMS:
        parser.error(f"--cpm and --measure-s must be positive, --batch-size within 1..{MAX_ITEMS}")
    if args.smoke and not args.pairs:
        parser.error("--smoke needs --pairs")
    batch = args.batch_size
    ceiling = batch * args.cpm / 60.0  # items per second
    seconds = args.warmup_s + args.measure_s + args.tail_s
    pairs = args.pairs or int(ceiling * seconds / 2)

    load_before = load_average()
    space = Workspace(args.workdir, "planhat-objects-bench-")
    workdir = space.path
    try:
        print(f"generating {pairs:,} companies and {pairs:,} end users in {workdir} ...", flush=True)
        source = generate_input(workdir / "input.jsonl", pairs, args.state_every)
        print(f"  {source.lines:,} lines, {source.whole.offset / 1e6:.1f} MB", flush=True)
        limits = ("--rate-limit-per-minute", str(args.cpm), "--main-api-latency", str(args.latency_ms / 1000))
        sandbox = space.start_sandbox(limits)  # its main API with a calls-per-minute limit and latency
        config: dict[str, Any] = {
            "api_token": API_TOKEN,
            "api_base_url": sandbox.url,
            "api_calls_per_minute": args.cpm,
            "streams": STREAMS,
        }
        if batch != MAX_ITEMS:
            config["batch_size"] = batch
        (workdir / "config.json").write_bytes(orjson.dumps(config))
        configured = catalog(configured_stream(COMPANIES, COMPANY_SCHEMA), configured_stream(ENDUSERS, ENDUSER_SCHEMA))
        (workdir / "catalog.json").write_bytes(orjson.dumps(configured))
        command = write_command(workdir / "config.json", workdir / "catalog.json")
        print(
            f"syncing through the CLI: sandbox at {sandbox.url}, {args.cpm} calls/min, {args.latency_ms:g} ms "
            f"per request (expect about {seconds / 60:.1f} minutes) ...",
            flush=True,
        )
        run, stdout = run_process("connector-objects", command, source, source.whole, workdir)
        verify(sandbox, stdout, pairs, source.whole.states)
        log = sandbox.get("requests", timeout=120, api="main")
        (workdir / "requests.json").write_bytes(orjson.dumps(log))
    except BenchmarkError as exc:
        return aborted(exc)
    finally:
        space.close()

    too_many = sum(1 for r in log if r["status"] == 429)
    upserts = [r for r in log if r["method"] == "PUT"]
    last = max(r["at"] + r["duration_s"] for r in upserts)
    if args.smoke:  # the whole sync, however long it took
        warmup_s, measure_s = 0.0, last - min(r["at"] for r in upserts)
    else:
        warmup_s, measure_s = args.warmup_s, args.measure_s
    calls, items, start, length = steady_state(log, warmup_s, measure_s)
    if not args.smoke and start + length > last:
        return aborted(
            f"the sync ended {start + length - last:.0f} s before the end of the window; raise --tail-s or --pairs"
        )
    rate = items / length
    ratio = rate / ceiling
    whole = upserts[-1]["at"] + upserts[-1]["duration_s"] - upserts[0]["at"]
    durations = sorted(r["duration_s"] for r in upserts)
    rows = [
        Row(
            f"steady-state window: {length:.0f} s from {warmup_s:g} s after the first request"
            + (" (smoke run: the whole sync)" if args.smoke else ""),
            f"{calls} calls",
            f"<= {args.cpm * length / PACER_WINDOW_S:.0f}",
            f"{items:,} items",
        ),
        Row("  items/s achieved in the window", f"{rate:,.0f} items/s"),
        Row(f"  ceiling: {batch:,} items x {args.cpm} calls per minute", f"{ceiling:,.0f} items/s"),
        Row("  ratio to the ceiling", f"{ratio:.3f}", f">= {RATIO_TARGET:g}", verdict(ratio >= RATIO_TARGET)),
        Row(
            "whole sync: items / seconds from the first request to the last answer",
            f"{2 * pairs / whole:,.0f} items/s",
            "",
            f"{2 * pairs:,} in {whole:.0f} s",
        ),
        Row(
            "  main API requests (upserts) / answered 429",
            f"{len(upserts)} / {too_many}",
            "429: 0",
            verdict(too_many == 0),
        ),
        Row(
            "  time per request at the sandbox: median / max (latency + processing)",
            f"{durations[len(durations) // 2]:.2f} s",
            "",
            f"{durations[-1]:.2f} s",
        ),
        Row(
            "CPU time of the connector's process tree, per record",
            f"{run.cpu_s / (2 * pairs) * 1e6:.1f} µs",
            "",
            f"{run.cpu_s:.0f} s in all",
        ),
        Row(
            "peak RSS of the connector's process tree (largest process alone)",
            f"{run.peak_rss_mb:.0f} MB",
            f"<= {RSS_TARGET_MB} MB",
            f"{verdict(run.peak_rss_mb <= RSS_TARGET_MB)}  ({run.maxrss_mb:.0f} MB)",
        ),
    ]
    title = [
        f"destination-planhat objects benchmark: {pairs:,} companies + {pairs:,} end users (parents first), "
        f"{source.whole.states} STATEs, {source.whole.offset / 1e6:.0f} MB of input",
        f"sandbox: {args.cpm} calls per minute (fixed window, 429 above), {args.latency_ms:g} ms per request; "
        f"connector: api_calls_per_minute {args.cpm}, "
        + ("default batch" if batch == MAX_ITEMS else f"batch_size {batch}"),
        machine(load_before),
        "checked: the sandbox holds every company and end user once, every STATE came out with its counts",
    ]
    print_table(title, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
