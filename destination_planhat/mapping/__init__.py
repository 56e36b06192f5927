"""What a record becomes: each stream routed to a Planhat target, each record mapped and checked.

- `routing`: which target each configured stream goes to, its mapping compiled once.
- `activation`: a stream mapped in the Airbyte UI (`destination_object_name`).
- `analytics`: a record -> Metrics or User Activities item(s), tuned for millions of records.
- `objects`: a record -> one Planhat object item (company, end user, ...) with its key.
- `value_checks`: the checks and conversions of single values (imported by parse workers: no CDK).
- `unclean_json`: input that is not clean JSON, recovered and explained (no imports at all).

May import: `planhat`, `config`. Imported by `rejected`, `sync`, `reading` and the entry points.
"""
