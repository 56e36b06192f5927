"""Where the reading thread's time goes, per record: the connector's input path, one stage at a time.

    .venv/bin/python bench/profile_hot_path.py                # 300,000 records, about a minute
    .venv/bin/python bench/profile_hot_path.py --cprofile     # and cProfile's top functions

In-process, with a client that answers at once, so only the reading thread's work is measured: each
stage adds one step of the real code path (`destination.read_input` -> `PlanhatWriter.record` -> the
stream's mapper -> the batch body), timed by that thread's CPU time (best of 3), which other work on a
shared machine hardly changes. The CDK's parse of the same lines is the reference. Sending (HTTP,
sender threads, the kernel's copies) is not in these figures: run_benchmark.py measures the whole.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import sys
import time
from pathlib import Path
from typing import Any, Callable

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airbyte_cdk.models import AirbyteMessageSerializer, ConfiguredAirbyteCatalogSerializer  # noqa: E402

from destination_planhat.client import PostResult  # noqa: E402
from destination_planhat.config import parse_config  # noqa: E402
from destination_planhat.reading import read_chunks, read_input  # noqa: E402
from destination_planhat.planhat import Endpoint  # noqa: E402
from destination_planhat.routing import route_streams  # noqa: E402
from destination_planhat.writer import PlanhatWriter  # noqa: E402
from integration_tests.harness import encode_lines, mixed_catalog, mixed_messages, sandbox_config  # noqa: E402


class InstantClient:
    """Acknowledges every batch at once, with Planhat's counts."""

    def post(self, endpoint: Endpoint, body: bytes, *, context: str = "") -> PostResult:
        return PostResult(processed=len(orjson.loads(body)))

    def url_for_logs(self, endpoint: Endpoint) -> str:
        return "instant://"

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class NoWriter:
    """Takes every message and does nothing: what is left is reading, parsing and dispatching."""

    def record(self, stream: Any, namespace: Any, data: Any) -> None:
        pass

    def state(self, message: Any) -> None:
        pass

    def other_message(self, kind: Any) -> None:
        pass

    def unparseable_line(self, *args: Any) -> None:
        pass

    def flush_overdue(self) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--cprofile", action="store_true", help="also print cProfile's top functions of the whole path")
    args = parser.parse_args()
    logging.getLogger("airbyte").setLevel(logging.WARNING)

    half = args.records // 2
    data = encode_lines(mixed_messages(metrics=half, activities=args.records - half, state_every=10_000))
    lines = data.splitlines()
    config = parse_config(sandbox_config("http://127.0.0.1:9", batch_size=args.batch_size))
    catalog = ConfiguredAirbyteCatalogSerializer.load(mixed_catalog())

    def writer(identity_mapper: bool = False) -> PlanhatWriter:
        w = PlanhatWriter(config, route_streams(config, catalog), InstantClient(), lambda message: None).start()  # type: ignore[arg-type]
        if identity_mapper:
            for sink in w._sinks.values():
                sink.mapper = lambda record: (record,)
        return w

    def through_writer(identity_mapper: bool = False) -> None:
        w = writer(identity_mapper)
        try:
            read_input(io.BytesIO(data), w)
            w.finish()
        finally:
            w.close()

    def floor() -> None:
        load, loads = AirbyteMessageSerializer.load, orjson.loads
        for line in lines:
            load(loads(line))

    def split() -> None:
        for chunk in read_chunks(io.BytesIO(data)):
            chunk.split(b"\n")

    def parse() -> None:
        loads, error = orjson.loads, orjson.JSONDecodeError
        for chunk in read_chunks(io.BytesIO(data)):
            for line in chunk.split(b"\n"):
                try:
                    loads(line)
                except error:  # the pieces of a line cut by a chunk boundary: one per chunk
                    pass

    stages: list[tuple[str, Callable[[], None]]] = [
        ("read stdin in chunks, split into lines", split),
        ("+ orjson.loads of each line", parse),
        ("+ dispatch: a RECORD's stream, namespace and data to writer.record", lambda: read_input(io.BytesIO(data), NoWriter())),  # type: ignore[arg-type]
        ("+ writer.record: stream, counts, encode, batch body (identity mapper)", lambda: through_writer(True)),
        ("+ the stream's real mapper (mapping and local validation)", through_writer),
    ]
    per_record = 1e9 / args.records
    reference = best_cpu(floor) * per_record
    print(f"{args.records:,} records, batch {args.batch_size:,}; CPU time of the reading thread per record (best of 3)")
    print(f"  {'CDK parse floor: AirbyteMessageSerializer.load(orjson.loads(line))':74s} {reference:6.0f} ns")
    previous = 0.0
    for name, stage in stages:
        total = best_cpu(stage) * per_record
        print(f"  {name:74s} {total:6.0f} ns  (+{total - previous:.0f})")
        previous = total
    print(f"  reading thread vs the floor: {reference / previous:.2f} x")

    if args.cprofile:
        profile = cProfile.Profile()
        profile.runcall(through_writer)
        print()
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    return 0


def best_cpu(stage: Callable[[], None], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.thread_time()
        stage()
        best = min(best, time.thread_time() - started)
    return best


if __name__ == "__main__":
    sys.exit(main())
