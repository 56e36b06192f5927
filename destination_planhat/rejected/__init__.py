"""Rejected records, stored as JSON lines in a bucket (S3) or a directory, for the user to review.

- `records`: the store (layout, the Local and S3 writers, what is added and when it is durable).

May import: `planhat`, `config`, `mapping`. Imported by `sync` and the entry points.
"""
