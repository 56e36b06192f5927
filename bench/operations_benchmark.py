"""Update-only and delete runs under Planhat's calls-per-minute limit (issue 20).

    .venv/bin/python bench/operations_benchmark.py                  # 120 calls/min, ~5 minutes
    .venv/bin/python bench/operations_benchmark.py --cpm 600 --deletes 300 --companies 20000   # shorter

Three syncs through the real CLI against the sandbox's main API (its own process, `--cpm` calls per
minute in a fixed window, 429 above it, `--latency-ms` added to every answer; the connector's
`api_calls_per_minute` is the same `--cpm`):

1. seed: `--companies` companies upserted (Upsert);
2. update-only: as many records, half of them with keys Planhat does not have: the keys' read (its
   calls), the bulk upserts, and that nothing was created;
3. delete: `--deletes` companies deleted by their key, one `DELETE /companies/{id}` each: deletes per
   minute against the budget, measured from the first delete to the last answer.

Checked: no 429 (the connector's pacing must never cause one), the update created nothing and
updated exactly the known half, the delete removed exactly the records named. The syncs are a pacer
window (61 s) apart: each is a new process whose pacer knows nothing of the calls before it, and a
sync started in the same minute would meet the previous one's calls in the sandbox's window (one 429,
retried). Prints one table.
"""

from __future__ import annotations

import argparse
import sys
import time
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
    Workspace,
    aborted,
    load_average,
    machine,
    print_table,
    run_process,
    verdict,
    write_command,
)
from destination_planhat.planhat.pacing import WINDOW_MARGIN_SECONDS, WINDOW_SECONDS  # noqa: E402
from destination_planhat.testing.harness import API_TOKEN, record, stream_state  # noqa: E402

PACER_WINDOW_S = WINDOW_SECONDS + WINDOW_MARGIN_SECONDS
SCHEMA = {"type": "object", "properties": {"externalId": {"type": "string"}, "name": {"type": "string"}}}
DELETE_RATE_TARGET = 0.90  # of the budget's steady rate, cpm * 60 / 61 per minute


def write_input(path: Path, stream: str, rows: list[dict[str, Any]]) -> Input:
    lines = [orjson.dumps(record(stream, row)) + b"\n" for row in rows]
    lines.append(orjson.dumps(stream_state(stream, len(rows))) + b"\n")
    data = b"".join(lines)
    path.write_bytes(data)
    return Input(path, len(lines), [Cut(len(data), len(rows), 0, 0, 1)])


def mapped(stream: str, mode: str) -> dict[str, Any]:
    """A stream mapped onto companies in the Airbyte UI, in one sync mode."""
    return {
        "streams": [
            {
                "stream": {"name": stream, "json_schema": SCHEMA, "supported_sync_modes": ["full_refresh"]},
                "sync_mode": "full_refresh",
                "destination_sync_mode": mode,
                "destination_object_name": "companies",
                "primary_key": [["externalId"]],
            }
        ]
    }


def sync(workdir: Path, label: str, config: dict[str, Any], mode: str, rows: list[dict[str, Any]]) -> Any:
    source = write_input(workdir / f"{label}.jsonl", label, rows)
    (workdir / f"{label}.config.json").write_bytes(orjson.dumps(config))
    (workdir / f"{label}.catalog.json").write_bytes(orjson.dumps(mapped(label, mode)))
    command = write_command(workdir / f"{label}.config.json", workdir / f"{label}.catalog.json")
    run, _ = run_process(label, command, source, source.whole, workdir)
    return run


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Update-only and delete runs of destination-planhat (see the docstring)."
    )
    parser.add_argument(
        "--cpm", type=int, default=120, help="calls per minute: the sandbox's limit and the connector's"
    )
    parser.add_argument("--latency-ms", type=float, default=300.0, help="added to every main API answer")
    parser.add_argument("--companies", type=int, default=20_000, help="companies seeded (and updated)")
    parser.add_argument("--deletes", type=int, default=300, help="companies deleted in the delete run")
    parser.add_argument("--workdir", help="keep the inputs and the runs' output here (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    if args.cpm < 1 or args.companies < 2 or not 1 <= args.deletes <= args.companies:
        parser.error("--cpm and --companies must be positive, --deletes within 1..--companies")

    load_before = load_average()
    space = Workspace(args.workdir, "planhat-operations-bench-")
    workdir = space.path
    try:
        limits = ("--rate-limit-per-minute", str(args.cpm), "--main-api-latency", str(args.latency_ms / 1000))
        sandbox = space.start_sandbox(limits)
        config = {"api_token": API_TOKEN, "api_base_url": sandbox.url, "api_calls_per_minute": args.cpm}
        n = args.companies
        print(f"seeding {n:,} companies through the CLI ({args.cpm} calls/min) ...", flush=True)
        sync(workdir, "seed", config, "append_dedup", [{"externalId": f"c{i}", "name": f"C{i}"} for i in range(n)])
        seeded = len(sandbox.get("requests", timeout=120, api="main"))
        # Each sync is a new process with a fresh pacer: the sandbox's minute must not still hold the
        # calls of the one before (a platform runs syncs of a connection apart, too).
        time.sleep(PACER_WINDOW_S)
        print("update-only: half the keys known, half not ...", flush=True)
        half = n // 2
        rows = [{"externalId": f"c{i}", "name": f"C{i} v2"} for i in range(half)]
        rows += [{"externalId": f"new{i}", "name": f"N{i}"} for i in range(n - half)]
        update = sync(workdir, "update", {**config, "max_error_percent": 100}, "update", rows)
        log = sandbox.get("requests", timeout=120, api="main")
        update_log = log[seeded:]
        after_update = sandbox.get("main_api", timeout=120)["objects"]["companies"].get("records", 0)
        time.sleep(PACER_WINDOW_S)
        print(
            f"delete: {args.deletes:,} companies, one call each (expect about {args.deletes / args.cpm:.1f} min) ...",
            flush=True,
        )
        before_delete = len(log)
        delete = sync(
            workdir,
            "delete",
            {**config, "max_deletes": args.deletes},
            "soft_delete",
            [{"externalId": f"c{i}"} for i in range(args.deletes)],
        )
        log = sandbox.get("requests", timeout=120, api="main")
        objects = sandbox.get("main_api", timeout=120)["objects"]["companies"]
        if objects.get("records") != n - args.deletes:
            raise BenchmarkError(f"after the delete run the sandbox holds {objects}, expected {n - args.deletes}")
    except BenchmarkError as exc:
        return aborted(exc)
    finally:
        space.close()

    too_many = sum(1 for r in log if r["status"] == 429)
    reads = [r for r in update_log if r["method"] == "GET"]
    puts = [r for r in update_log if r["method"] == "PUT"]
    updated = sum(r["processed"] for r in puts)
    deletes = [r for r in log[before_delete:] if r["method"] == "DELETE"]
    span = deletes[-1]["at"] + deletes[-1]["duration_s"] - deletes[0]["at"]
    per_minute = len(deletes) / span * 60 if span > 0 else float("inf")
    budget = args.cpm * 60 / PACER_WINDOW_S
    rows_out = [
        Row("update-only: keys read (GET ?select=_id,externalId)", f"{len(reads)} calls", "", f"{n:,} companies"),
        Row("  bulk upserts / items updated", f"{len(puts)} / {updated:,}", f"{half:,}", verdict(updated == half)),
        Row("  created", f"{after_update - n}", "0", verdict(after_update == n)),
        Row("  wall time / peak RSS", f"{update.wall_s:.0f} s", "", f"{update.peak_rss_mb:.0f} MB"),
        Row(
            f"delete: {len(deletes)} calls in {span:.0f} s",
            f"{per_minute:.0f} / min",
            f">= {DELETE_RATE_TARGET:g} x {budget:.0f}",
            verdict(per_minute >= DELETE_RATE_TARGET * budget or len(deletes) <= args.cpm),
        ),
        Row("  wall time / peak RSS", f"{delete.wall_s:.0f} s", "", f"{delete.peak_rss_mb:.0f} MB"),
        Row("main API answered 429", f"{too_many}", "0", verdict(too_many == 0)),
    ]
    title = [
        f"destination-planhat operations benchmark: {n:,} companies, update-only then {args.deletes:,} deletes",
        f"sandbox: {args.cpm} calls per minute (fixed window, 429 above), {args.latency_ms:g} ms per request",
        machine(load_before),
    ]
    print_table(title, rows_out)
    return 0 if too_many == 0 and updated == half and after_update == n else 1


if __name__ == "__main__":
    sys.exit(main())
