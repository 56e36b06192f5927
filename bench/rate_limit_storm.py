"""429 storms on the main API: how long a sync of objects takes when Planhat refuses a burst of
calls in a row, each with `Retry-After`, and then accepts them again (issue 19 item 3).

    .venv/bin/python bench/rate_limit_storm.py                 # about a minute with the fixes
    .venv/bin/python bench/rate_limit_storm.py --objects 5000  # shorter

What is measured: the real CLI (`python main.py write`) upserts `--objects` companies (batches of
`--batch-size`, so `objects / batch-size` requests on one lane) into the sandbox's main API, run in
this process. Each scenario is one sync:

- fault-free: no 429 at all; its wall time is the reference;
- six 429s (`Retry-After: 2`) in a row at the start, then none;
- six 429s in a row after the first ten requests were accepted (mid-sync), then none;
- twelve 429s in a row (`Retry-After: 2`) after the first ten requests, with the default retry
  settings (8 attempts per batch): they must not fail the sync.

The target (issue 19): a storm of six costs no more than twice the fault-free time plus the waits
Planhat asked for (6 x 2 s); twelve do not fail the sync. Each run is checked for every company
stored once and the books balancing. Wall times on a shared machine vary; the bound leaves room for
that, and the script prints the figures rather than asserting on them in a test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from destination_planhat.testing.cli import run_cli  # noqa: E402
from destination_planhat.testing.harness import catalog, configured_stream, encode_lines, record  # noqa: E402
from destination_planhat.testing.sandbox import MAIN_API, PlanhatSandbox  # noqa: E402
from destination_planhat.testing.sync_checks import sync_summary  # noqa: E402

SCHEMA = {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}}}
STREAM = {
    "name": "accounts",
    "endpoint": "companies",
    "field_mappings": [{"planhat_field": "externalId", "source_field": "id"}],
}
RETRY_AFTER_S = 2


def too_many(count: int) -> list[dict[str, Any]]:
    return [{"kind": "status", "status": 429, "retry_after": str(RETRY_AFTER_S)}] * count


def sync(sandbox: PlanhatSandbox, objects: int, batch_size: int, faults: list[dict[str, Any]]) -> dict[str, Any]:
    """One sync of `objects` companies; its wall time, exit code, 429s and whether every company arrived."""
    sandbox.reset()
    sandbox.set_faults(script=faults, api=MAIN_API)
    config = {
        "api_token": sandbox.api_token,
        "api_base_url": sandbox.url,
        "batch_size": batch_size,
        "streams": [STREAM],
    }
    messages = [record("accounts", {"id": f"acct-{i}", "name": f"Company {i}"}) for i in range(objects)]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        run = run_cli(
            "write",
            Path(tmp),
            config=config,
            catalog=catalog(configured_stream("accounts", SCHEMA)),
            stdin=encode_lines(messages),
            process=True,  # timed as Airbyte runs it: the CLI as a process
            timeout=1800,
        )
        seconds = time.monotonic() - started
    stored = len(sandbox.objects("companies"))
    summary = sync_summary(run)
    return {
        "seconds": seconds,
        "exit": run.returncode,
        "status": summary["status"],
        "429s": sum(1 for r in sandbox.main_api_requests if r.status == 429),
        "stored": stored,
        "books_balance": all(s["books_balance"] for s in summary["streams"].values()),
        "lowered": run.log_lines("calls to the main API now go at most"),
        "error": run.errors[0]["message"][:200] if run.errors else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    requests = -(-args.objects // min(args.batch_size, 5000))
    ok = [{"kind": "ok"}] * 10
    scenarios = [
        ("fault-free", [], 0),
        ("six 429s at the start", too_many(6), 6 * RETRY_AFTER_S),
        ("six 429s after 10 requests", ok + too_many(6), 6 * RETRY_AFTER_S),
        ("twelve 429s after 10 requests", ok + too_many(12), 12 * RETRY_AFTER_S),
    ]
    print(
        f"{args.objects:,} companies, batch_size {args.batch_size} ({requests} requests), Retry-After {RETRY_AFTER_S} s"
    )
    print(f"{'scenario':<32} {'wall s':>7} {'bound s':>8} {'429s':>5} {'exit':>5} {'stored':>7}  lowered to")
    reference = None
    failed = False
    with PlanhatSandbox() as sandbox:
        for name, faults, asked in scenarios:
            result = sync(sandbox, args.objects, args.batch_size, faults)
            if reference is None:
                reference = result["seconds"]
            bound = 2 * reference + asked
            lowered = [line.split("now go at most ")[1].split(" a minute")[0] for line in result["lowered"]]
            print(
                f"{name:<32} {result['seconds']:>7.1f} {bound if asked else 0:>8.1f} {result['429s']:>5} "
                f"{result['exit']:>5} {result['stored']:>7,}  {', '.join(lowered) or '-'}"
            )
            if result["error"]:
                print(f"{'':<32} error: {result['error']}")
            complete = result["exit"] == 0 and result["stored"] == args.objects and result["books_balance"]
            failed |= not complete or (asked > 0 and result["seconds"] > bound)
    print("PASS" if not failed else "FAIL: a sync failed, lost companies, or took longer than its bound")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
