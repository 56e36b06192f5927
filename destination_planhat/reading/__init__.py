"""Reading the input: stdin (or the CDK's messages) framed into lines, decoded, handed to the writer.

- `pipeline`: the one path from the input to the writer, idle ticks included.
- `decoder`: the line framer and the decoder (the same code in this process and in parse workers).
- `typed_records`: the common record decoded and type-checked in C (msgspec).
- `worker_pool`: the parse worker processes, seen from the connector.
- `worker_process`: one parse worker process (starts with `python -S`: keep its imports small).

May import: everything but the entry points and `testing`. Imported by the entry points.
"""
