"""Planhat's side: what its APIs are and how the connector talks to them.

- `api`: every Planhat fact (hosts, paths, fields, limits, the targets a stream can be written to).
- `statuses`: what each HTTP status of Planhat's means, in one table.
- `answers`: Planhat's answer bodies, read into what was accepted and rejected.
- `errors`: the errors of a request, each with its Airbyte failure type and the user's fix.
- `retries`: when a request is tried again, and how long to wait.
- `pacing`: the main API's calls-per-minute budget.
- `addresses`: where each target is (its URL, masked for logs) and what a request carries (headers).
- `client`: the only module that speaks HTTP.
- `custom_fields`: a tenant's custom fields, read for `discover`.

May import: nothing else of the package. Everything else may import it.
"""
