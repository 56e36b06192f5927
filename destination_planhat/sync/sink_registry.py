"""The sinks of one sync: one per stream of the catalog, built once, and found by stream.

Why a registry of its own: a stream's sink is looked up in three ways, each for its own caller. A
RECORD names its stream by namespace and name (`by_key`), or by name alone in the common case of no
namespace (`by_name`: no tuple per record); a parse worker names it by its index in the plan the
workers were given (`at`, `worker_plan`); an object batch asks for the sinks writing its parent
objects, whose open batches go first (`parents_of`, sync/parents.py). Building the sinks here keeps
each stream's buffer, mapper and sink kind together with the lookups that must agree with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional, Union

from destination_planhat.mapping.analytics import MappingPlan, build_mapper, fast_plan
from destination_planhat.mapping.objects import ObjectPlan, build_object_mapper
from destination_planhat.mapping.routing import StreamKey, StreamRoute
from destination_planhat.planhat.api import Endpoint, Operation
from destination_planhat.rejected.records import RejectedRecords
from destination_planhat.sync.analytics_sink import AnalyticsSink
from destination_planhat.sync.batching import Batch, StreamBuffer
from destination_planhat.sync.ledger import Ledger, StreamStats
from destination_planhat.sync.object_batching import ObjectBatch, ObjectBuffer
from destination_planhat.sync.object_sink import ObjectSink
from destination_planhat.sync.planhat_keys import PlanhatKeys
from destination_planhat.sync.state_stats import StateCounts

AnySink = Union[AnalyticsSink, ObjectSink]
# The operations that need the keys Planhat has (sync/planhat_keys.py).
KEYED_OPERATIONS = frozenset({Operation.UPDATE, Operation.INSERT, Operation.DELETE, Operation.ARCHIVE})


class Sinks:
    def __init__(
        self,
        routes: Mapping[StreamKey, StreamRoute],
        *,
        batch_size: int,
        max_body_bytes: int,
        open_batch: Callable[[], int],
        clock: Callable[[], float],
        ledger: Ledger,
        counts: StateCounts,
        send_invalid: bool,
        submit: Callable[[Optional[Batch]], None],
        judge_errors: Callable[[StreamStats], None],
        rejected: Optional[RejectedRecords] = None,
        planhat_keys: Optional[PlanhatKeys] = None,
    ) -> None:
        """`planhat_keys`: what Planhat has, for the streams whose operation depends on it (None in a dry
        run: every item counts as sent). `open_batch`: the state barrier's (each batch's id); `submit`: where a sink hands a batch that
        is ready; `judge_errors`: fails the sync when too many of a stream's records are rejected."""
        self._max_body_bytes = max_body_bytes
        self.by_key: dict[StreamKey, AnySink] = {}
        for key, route in routes.items():
            stats = ledger.stats(route.name, route.endpoint.value)
            if isinstance(route.plan, ObjectPlan):  # the plan routing compiled, once per sync
                object_sink = ObjectSink(
                    route,
                    build_object_mapper(route.plan),
                    ObjectBuffer(route, batch_size, max_body_bytes, open_batch, clock, stats),
                    stats,
                    ledger=ledger,
                    counts=counts,
                    send_invalid=send_invalid,
                    submit=submit,
                    judge_errors=judge_errors,
                    rejected=rejected,
                )
                settings = route.settings
                if object_sink.operation in KEYED_OPERATIONS or (
                    settings and (settings.source_delete or settings.skip_unchanged)
                ):
                    object_sink.planhat_keys = planhat_keys
                self.by_key[key] = object_sink
                continue
            self.by_key[key] = AnalyticsSink(
                route,
                build_mapper(route.plan),
                StreamBuffer(route, batch_size, max_body_bytes, open_batch, clock, stats),
                stats,
                ledger=ledger,
                counts=counts,
                send_invalid=send_invalid,
                submit=submit,
                judge_errors=judge_errors,
                rejected=rejected,
            )
        # Streams without a namespace by name alone: the common case costs no tuple per record.
        self.by_name = {key[1]: sink for key, sink in self.by_key.items() if key[0] is None}
        # The streams parse workers may map (see worker_plan), by their index in the plan.
        self._by_index = list(self.by_key.values())
        # Parents first (sync/parents.py): per parent object (any Reference's, today companies), the streams
        # that write it, whose open batch goes before a batch that may reference them.
        self._parents: dict[Endpoint, list[AnySink]] = {}
        for sink in self.by_key.values():
            if any(ref.parent is sink.route.endpoint for r in routes.values() for ref in r.endpoint.target.references):
                self._parents.setdefault(sink.route.endpoint, []).append(sink)

    def __iter__(self) -> Iterator[AnySink]:
        return iter(self.by_key.values())

    def find(self, namespace: Any, stream: Any) -> Optional[AnySink]:
        """The sink of a stream named by a message (None when it is not in the catalog, or not even a name)."""
        try:
            return self.by_key[(namespace, stream)] if namespace else self.by_name[stream]
        except (KeyError, TypeError):
            return None

    def at(self, index: int) -> AnySink:
        """The sink of a stream by its index in the parse workers' plan."""
        return self._by_index[index]

    def worker_plan(self) -> dict[str, Any]:
        """What parse worker processes need to map the common record of each stream (reading/worker_process.py):
        no settings beyond the fields' sources, kinds and constants, and no secrets."""
        streams = []
        for index, sink in enumerate(self._by_index):
            if not isinstance(sink.route.plan, MappingPlan):
                continue  # objects are mapped here (mapping/objects.py): they come in small numbers
            fast = fast_plan(sink.route.plan)
            if fast is not None:
                endpoint, fields, constants = fast
                key = sink.route.key
                streams.append(
                    (index, key[0], key[1], endpoint.value, [(f, k, kind.value) for f, k, kind in fields], constants)
                )
        return {"streams": streams, "max_part_bytes": self._max_body_bytes}

    def parents_of(self, batch: ObjectBatch) -> dict[Endpoint, list[AnySink]]:
        """Per parent object the batch's items may reference, the sinks writing it."""
        if not self._parents:
            return {}
        parents = {ref.parent for ref in batch.endpoint.target.references} - {batch.endpoint}
        return {parent: self._parents[parent] for parent in parents & self._parents.keys()}

    def buffered(self) -> dict[str, int]:
        """Items in open batches, per stream: after a failure they count as never sent."""
        return {sink.stats.stream: sink.buffer.count for sink in self.by_key.values() if sink.buffer.count}
