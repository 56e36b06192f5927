"""Test support, for the unit tests, the integration tests, the benchmarks and `make demo` alike.

- `sandbox`: the Planhat sandbox, a real HTTP server on loopback (analytics and main API), with fault
  injection; its parts: `sandbox_analytics` (the analytics host: item checks, what it received, the
  request log, summaries), `sandbox_main_api` (the main API's settings, records and summaries),
  `sandbox_objects` (the objects' rules), `sandbox_faults` (the faults and each API's plan),
  `sandbox_server` (the server's life cycle and the handler's I/O).
- `harness`: messages, catalogs, configs.
- `cli`: the one way to run the connector's CLI in a test, in process or as a process; every run's
  output checked against the protocol schema and for secrets.
- `sync_checks`: what every CLI sync is checked for (state order, counts, what the sandbox got);
  `object_syncs`: syncs to Planhat's objects (schemas, settings, a write).
- `odd_records`: records ordinary and odd, for comparing the ways a record is decoded and mapped.
- `protocol_schema`, `platform_rules`: the Airbyte protocol's schema and the platform's rules.
- `builders`, `fake_client`, `recording_target`: small parts for unit tests.
- `object_tables`: the objects table README.md and docs/planhat.md hold, written from planhat.TARGETS.
- `demo`: `make demo`.

May import: anything. Nothing else of the package imports it: the connector never runs it.
"""
