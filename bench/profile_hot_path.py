"""Where the CPU time per record goes: the input pipeline, one stage at a time.

    .venv/bin/python bench/profile_hot_path.py                # 300,000 records, about a minute
    .venv/bin/python bench/profile_hot_path.py --cprofile     # and cProfile's top functions

In-process, with a client that answers at once, so only the reading thread's work is measured: the
framing (pipeline.read_chunks, decoder.LineFramer), the decode step (decoder.Decoder:
what a parse worker spends per record), and the whole in-process pipeline (pipeline.read_input with
`parse_workers: 0`: decode and apply, into the batch bodies). The decode step is also timed without
msgspec's typed first try (reading/typed_records.py), which is what that try earns. Each stage is timed by that thread's
CPU time (best of 3), which other work on a shared machine changes less than the wall time (but it
does: shared caches and cores). The CDK's parse of the same lines is the reference.
Sending (HTTP, sender threads, the kernel's copies) is not in these figures: run_benchmark.py
measures the whole.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airbyte_cdk.models import AirbyteMessageSerializer, ConfiguredAirbyteCatalogSerializer  # noqa: E402

from destination_planhat.config import parse_config  # noqa: E402
from destination_planhat.mapping.routing import route_streams  # noqa: E402
from destination_planhat.planhat.answers import PostResult  # noqa: E402
from destination_planhat.planhat.api import Endpoint  # noqa: E402
from destination_planhat.reading.decoder import Decoder, LineFramer  # noqa: E402
from destination_planhat.reading.pipeline import read_chunks, read_input  # noqa: E402
from destination_planhat.sync.writer import PlanhatWriter  # noqa: E402
from destination_planhat.testing.harness import encode_lines, mixed_catalog, mixed_messages, sandbox_config  # noqa: E402


class InstantClient:
    """Acknowledges every batch at once, with Planhat's counts."""

    def post(self, endpoint: Endpoint, body: bytes, *, context: str = "", items: Optional[int] = None) -> PostResult:
        return PostResult(processed=len(orjson.loads(body)))

    def where(self, endpoint: Endpoint) -> str:
        return "instant://"

    def abort(self) -> None:
        pass


class GeneralPathWriter(PlanhatWriter):
    """A writer whose plan maps no stream in the decode step (as for streams with unpivot_columns or
    dot paths only): every record line takes the general path."""

    def parallel_plan(self) -> dict[str, Any]:
        return {**super().parallel_plan(), "streams": []}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every stage in turn (the least time is kept)")
    parser.add_argument("--cprofile", action="store_true", help="also print cProfile's top functions of the whole path")
    args = parser.parse_args()
    logging.getLogger("airbyte").setLevel(logging.WARNING)

    half = args.records // 2
    data = encode_lines(mixed_messages(metrics=half, activities=args.records - half, state_every=10_000))
    lines = data.splitlines()
    config = parse_config(sandbox_config("http://127.0.0.1:9", batch_size=args.batch_size))
    catalog = ConfiguredAirbyteCatalogSerializer.load(mixed_catalog())

    def writer(kind: type[PlanhatWriter] = PlanhatWriter) -> PlanhatWriter:
        return kind(config, route_streams(config, catalog), InstantClient(), lambda message: None).start()

    plan = writer().parallel_plan()

    def in_process(general_only: bool = False) -> None:
        w = writer(GeneralPathWriter if general_only else PlanhatWriter)
        try:
            read_input(io.BytesIO(data), w)
            w.finish()
        finally:
            w.close()

    def floor() -> None:
        load, loads = AirbyteMessageSerializer.load, orjson.loads
        for line in lines:
            load(loads(line))

    def framing() -> None:
        for _ in frame(data):
            pass

    def decode_with(decoder: Decoder) -> Callable[[], None]:
        def run() -> None:
            for chunk in frame(data):
                decoder.decode(chunk)

        return run

    typed = Decoder(plan)
    untyped = Decoder(plan, typed=False)
    stages: list[tuple[str, Callable[[], None]]] = [
        ("framing: read stdin in pieces, LineFramer, chunks of whole lines", framing),
        ("decode step (Decoder: msgspec's typed try first, then orjson + the mapper)", decode_with(typed)),
        ("  the decode step without the typed try (orjson + the mapper for every record)", decode_with(untyped)),
        ("whole in-process pipeline: read_input, parse_workers 0 (decode + apply)", in_process),
        ("  every line through the general path (no stream in the plan: unpivot, dot paths)", lambda: in_process(True)),
    ]
    per_record = 1e9 / args.records
    print(
        f"{args.records:,} records, batch {args.batch_size:,}; CPU time of the reading thread per record, best of "
        f"{args.rounds} rounds (the stages take turns, so that other work on the machine weighs on each alike)"
    )
    best = interleaved([("floor", floor), *stages], args.rounds)
    reference = best[0] * per_record
    print(f"  {'CDK parse floor: AirbyteMessageSerializer.load(orjson.loads(line))':76s} {reference:6.0f} ns")
    for (name, _), seconds in zip(stages, best[1:]):
        total = seconds * per_record
        print(f"  {name:76s} {total:6.0f} ns  ({reference / total:.2f} x the floor)")

    if args.cprofile:
        profile = cProfile.Profile()
        profile.runcall(in_process)
        print()
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    return 0


def frame(data: bytes) -> Iterator[memoryview]:
    framer = LineFramer()
    for piece in read_chunks(io.BytesIO(data)):
        yield from framer.add(piece)
    yield from framer.flush()


def interleaved(stages: list[tuple[str, Callable[[], None]]], rounds: int) -> list[float]:
    """The least CPU time of the calling thread for each stage, over `rounds` rounds of every stage in turn."""
    best = [float("inf")] * len(stages)
    for _ in range(rounds):
        for number, (_, stage) in enumerate(stages):
            started = time.thread_time()
            stage()
            best[number] = min(best[number], time.thread_time() - started)
    return best


if __name__ == "__main__":
    sys.exit(main())
