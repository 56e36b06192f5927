"""The sync itself: records into batches, batches to Planhat, states out once their records are acknowledged.

- `writer`: PlanhatWriter, the coordinator the input is handed to: it wires the parts below for one sync.
- `sink_registry`: the sinks of a sync, one per stream, built once and found by stream (key, name,
  parse workers' index, parent objects).
- `sink`: what every stream's sink shares (map, check, buffer, count; what becomes of a record not sent).
- `analytics_sink`, `object_sink`: an analytics stream's sink (the hot path), an object stream's.
- `batching`, `object_batching`: a stream's open request and how batches are cut.
- `sender`: batches sent on threads (back-pressure, lanes per object, splits on 413), the first failure.
- `answer_accounting`: what Planhat's answer means for the ledger, the counts on states and the
  rejected records (paired with their records), and the batch's log line.
- `skipped_input`: records of streams not in the catalog, unreadable lines, ignored message types.
- `outcome`: how the sync ends: the first failure raised, max_error_percent judged, the summary once.
- `progress_ticker`: the thread that logs the progress line while the input is silent.
- `parents`: a batch waits for the parent records (companies, deals, products) read before it.
- `parent_ids`: references Planhat takes only by its own id (a line item's deal), looked up by key.
- `state_barrier`: a STATE waits until every record before it is acknowledged.
- `state_stats`: the counts carried on each emitted STATE (`destinationStats`).
- `ledger`: what happened to every record, per stream.
- `reporting`: the progress lines and the final summary.
- `dry_run`: the same path with a sender that sends nothing.
- `cancellation`: a cancelled sync (SIGTERM, SIGINT): the requests on their way get the grace.
- `planhat_keys`: the keys Planhat has for an object, read once, for update, insert and delete.
- `deletes`: deletes and archives by key, one paced call each, within `max_deletes`.

May import: `planhat`, `config`, `mapping`, `rejected`. Imported by `reading` and the entry points.
"""
