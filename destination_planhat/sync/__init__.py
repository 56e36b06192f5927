"""The sync itself: records into batches, batches to Planhat, states out once their records are acknowledged.

- `writer`: PlanhatWriter, the coordinator the input is handed to (one sink per stream).
- `sink`, `object_sink`: a stream's sink (map, check, buffer, count); the base and the analytics one,
  and the objects one.
- `batching`, `object_batching`: a stream's open request and how batches are cut.
- `sender`: batches sent on threads, answers counted, rejected items paired with their records.
- `parents`: a batch waits for the parent records (companies, deals, products) read before it.
- `parent_ids`: references Planhat takes only by its own id (a line item's deal), looked up by key.
- `state_barrier`: a STATE waits until every record before it is acknowledged.
- `state_stats`: the counts carried on each emitted STATE (`destinationStats`).
- `ledger`: what happened to every record, per stream.
- `reporting`: the progress lines and the final summary.
- `dry_run`: the same path with a sender that sends nothing.

May import: `planhat`, `config`, `mapping`, `rejected`. Imported by `reading` and the entry points.
"""
