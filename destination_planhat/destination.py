"""DestinationPlanhat: wires config, routing, the client and the writer into spec/check/write."""

from __future__ import annotations

import argparse
import io
import json
import logging
import queue
import sys
import threading
from importlib import resources
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Optional, TypeVar

import orjson
from airbyte_cdk.destinations import Destination
from airbyte_cdk.models import (
    AirbyteConnectionStatus,
    AirbyteMessage,
    AirbyteMessageSerializer,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteCatalogSerializer,
    ConnectorSpecification,
    ConnectorSpecificationSerializer,
    Status,
    Type,
)
from airbyte_cdk.utils.airbyte_secrets_utils import get_secrets, update_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.bad_input import guess_stream, is_clean_text, parse_leniently
from destination_planhat.client import PlanhatClient
from destination_planhat.errors import PlanhatError
from destination_planhat.retries import RetryPolicy
from destination_planhat.config import PlanhatConfig, parse_config
from destination_planhat.dry_run import DryRun
from destination_planhat.errors import system_error
from destination_planhat.parallel import (
    ParseWorkerFailed,
    ParseWorkers,
    Pipeline,
    available_cpus,
    default_worker_count,
    workers_supported,
)
from destination_planhat.planhat import WHERE_API_TOKEN, Endpoint
from destination_planhat.routing import route_streams, settings_problems
from destination_planhat.state import InvalidState
from destination_planhat.writer import TICK_SECONDS, PlanhatWriter

logger = logging.getLogger("airbyte")

CHECK_ATTEMPTS = 2
# stdin is read in chunks of up to this many bytes (a pipe gives what it holds, often 64 KiB).
READ_CHUNK_BYTES = 1 << 20
# Chunks read ahead of the parser at most: bounds the memory of a fast source in front of a slow sync.
READ_AHEAD_CHUNKS = 4

T = TypeVar("T")


def build_client(config: PlanhatConfig, *, attempts: Optional[int] = None, sleep: Optional[Callable[[float], None]] = None) -> PlanhatClient:
    policy = RetryPolicy(
        max_attempts=attempts or config.max_attempts,
        base_delay=config.retry_initial_delay_seconds,
        max_total_wait=config.max_retry_seconds,
    )
    kwargs: dict[str, Any] = {"sleep": sleep} if sleep else {}
    return PlanhatClient(
        config.analytics_base_url,
        config.tenant,
        config.token,
        main_base_url=config.main_base_url,
        calls_per_minute=config.api_calls_per_minute,
        retry_policy=policy,
        read_timeout=config.request_timeout_seconds,
        pool_size=config.max_in_flight_requests,
        **kwargs,
    )


class DestinationPlanhat(Destination):
    def run_cmd(self, parsed_args: argparse.Namespace) -> Iterable[AirbyteMessage]:
        """Validate the config with our own model before the CDK's spec check: ours names every bad
        field and the fix in one message, the CDK's quotes only the first problem and not its field
        (e.g. "0 is less than the minimum of 1"). The CDK's check still runs afterwards as a backstop."""
        if parsed_args.command in ("check", "write"):
            config = self.read_config(config_path=parsed_args.config)
            # Registered before anything can print: the CDK masks these values in logs and traces.
            update_secrets(get_secrets(self.spec(logger).connectionSpecification, config))
            try:
                parse_config(config)
            except AirbyteTracedException as exc:
                status = exc.as_connection_status_message()
                if parsed_args.command == "check" and status is not None:
                    yield status
                    return
                raise
        yield from super().run_cmd(parsed_args)

    def spec(self, logger: logging.Logger) -> ConnectorSpecification:
        text = resources.files("destination_planhat").joinpath("spec.json").read_text(encoding="utf-8")
        return ConnectorSpecificationSerializer.load(json.loads(text))

    def check(self, logger: logging.Logger, config: Mapping[str, Any]) -> AirbyteConnectionStatus:
        """Post an empty array to each endpoint the config can write to; writes no data."""
        try:
            parsed = parse_config(config)
        except AirbyteTracedException as exc:
            return AirbyteConnectionStatus(status=Status.FAILED, message=exc.message)
        problems = settings_problems(parsed)
        if problems:
            return AirbyteConnectionStatus(
                status=Status.FAILED, message="The stream settings are not valid: " + "; ".join(problems) + "."
            )
        objects = any(settings.endpoint.is_object for settings in parsed.streams)
        if not parsed.tenant and not objects:
            return AirbyteConnectionStatus(
                status=Status.FAILED,
                message="`tenant_uuid` is required for Metrics and User Activities (it may stay empty only when every "
                "stream goes to a Planhat object, set under `streams`).",
            )
        client = build_client(parsed, attempts=CHECK_ATTEMPTS)
        endpoints = ([Endpoint.USER_ACTIVITIES] + ([Endpoint.METRICS] if parsed.token else [])) if parsed.tenant else []
        try:
            if objects:  # see check_main_api
                problem = check_main_api(client, parsed)
                if problem:
                    return AirbyteConnectionStatus(status=Status.FAILED, message=problem)
            for endpoint in endpoints:
                try:
                    client.post(endpoint, b"[]", context="check: ")
                except PlanhatError as exc:  # the same message a sync would end with
                    return AirbyteConnectionStatus(status=Status.FAILED, message=exc.user_message(client.where(endpoint)))
        finally:
            client.close()
        if not parsed.token:
            logger.info("check: no api_token set, so only User Activities were checked (Metrics needs the token)")
        return AirbyteConnectionStatus(status=Status.SUCCEEDED)

    def write(
        self,
        config: Mapping[str, Any],
        configured_catalog: ConfiguredAirbyteCatalog,
        input_messages: Iterable[AirbyteMessage],
    ) -> Iterable[AirbyteMessage]:
        """The CDK's interface: messages in, released states out (yielded as they are released).

        It cannot echo states verbatim: the CDK's models it receives have already dropped every key
        they do not know, the platform's state `id` among them, and the models it yields would drop
        them again. The connector's CLI (`write` on stdin), which Airbyte and PyAirbyte run, keeps
        them; use this API only where no platform checks the ids."""
        released: list[AirbyteMessage] = []
        lock = threading.Lock()

        def collect(message: dict[str, Any]) -> None:
            with lock:
                released.append(AirbyteMessageSerializer.load(message))

        def drain() -> list[AirbyteMessage]:
            with lock:
                out, released[:] = list(released), []
            return out

        writer = self._start_writer(config, configured_catalog, collect)
        try:
            for message in with_idle_ticks(input_messages, writer.flush_overdue):
                if message.type == Type.RECORD and message.record is not None:
                    record = message.record
                    writer.record(record.stream, record.namespace, record.data)
                elif message.type == Type.STATE and message.state is not None:
                    writer.state(AirbyteMessageSerializer.dump(message))
                elif message.type == Type.TRACE and message.trace is not None and message.trace.stream_status is not None:
                    status = message.trace.stream_status
                    descriptor = status.stream_descriptor
                    writer.stream_status(descriptor.namespace, descriptor.name, status.status.value)
                else:
                    writer.other_message(message.type.value if message.type else None)
                yield from drain()
            writer.finish()
            yield from drain()
        finally:
            writer.close()

    def _run_write(
        self, config: Mapping[str, Any], configured_catalog_path: str, input_stream: io.TextIOWrapper
    ) -> Iterable[AirbyteMessage]:
        """The CLI path: parse stdin's bytes ourselves (faster than the CDK, and bad lines are skipped
        and counted instead of crashing the sync) and print each state the moment it is released."""
        with open(configured_catalog_path, "rb") as file:
            catalog = ConfiguredAirbyteCatalogSerializer.load(orjson.loads(file.read()))
        writer = self._start_writer(config, catalog, print_state)
        workers: Optional[ParseWorkers] = None
        try:
            workers = start_parse_workers(writer)
            read_input(getattr(input_stream, "buffer", input_stream), writer, workers)
            writer.finish()
        finally:
            if workers is not None:
                workers.close()
            writer.close()
        return iter(())

    def _start_writer(
        self, config: Mapping[str, Any], catalog: ConfiguredAirbyteCatalog, emit: Callable[[dict[str, Any]], None]
    ) -> PlanhatWriter:
        parsed = parse_config(config)
        routes = route_streams(parsed, catalog)
        if not routes:
            logger.warning("the configured catalog has no streams: nothing will be written")
        if parsed.dry_run:
            return PlanhatWriter(parsed, routes, DryRun(), emit).start()  # builds no client: nothing can be sent
        return PlanhatWriter(parsed, routes, build_client(parsed), emit).start()


_stdout_lock = threading.Lock()


def check_main_api(client: PlanhatClient, config: PlanhatConfig) -> Optional[str]:
    """The main API's part of `check`: the token reads one company (nothing is written). The failure's
    message, or None."""
    if not config.token:
        return f"Streams go to Planhat objects, which need an API token: fill in `api_token` ({WHERE_API_TOKEN})."
    try:
        client.verify_main_api()
    except PlanhatError as exc:
        return exc.user_message(client.where(exc.endpoint)) + " (the check reads one company: GET /companies?limit=1)"
    return None


def print_state(message: dict[str, Any]) -> None:
    """Print one released STATE message as a single write, so lines from several threads never
    interleave. With the standard library's encoder: it writes back every value the input had as it
    was read (integers of any size, for one, which orjson refuses)."""
    line = json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n"
    with _stdout_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def with_idle_ticks(source: Iterable[T], on_idle: Callable[[], None], tick: float = TICK_SECONDS) -> Iterator[T]:
    """`source`'s items, read ahead on a thread of their own, with `on_idle()` called every `tick`
    seconds while none arrives. Why: a source can go quiet for hours while a partial batch (and the
    states behind it) waits; the writer must still get the chance to send it."""
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=READ_AHEAD_CHUNKS)
    stopped = threading.Event()

    def hand_over(kind: str, value: Any) -> bool:
        while not stopped.is_set():
            try:
                handoff.put((kind, value), timeout=tick)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for item in source:
                if not hand_over("item", item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            hand_over("error", exc)
        else:
            hand_over("end", None)

    threading.Thread(target=pump, name="planhat-input", daemon=True).start()
    try:
        while True:
            try:
                kind, value = handoff.get(timeout=tick)
            except queue.Empty:
                on_idle()
                continue
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stopped.set()  # the consumer stopped early (a failed sync): let the pump thread end


def read_chunks(stream: BinaryIO, size: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
    """What the stream has, up to `size` bytes at a time, without waiting to fill a chunk."""
    read = getattr(stream, "read1", None) or stream.read
    while True:
        chunk = read(size)
        if not chunk:
            return
        yield chunk


def start_parse_workers(writer: PlanhatWriter) -> Optional[ParseWorkers]:
    """The parse worker processes for the writer's sync (see parallel.py), or None to parse in this
    process. Parsing in this process is always correct, so anything that keeps workers from starting
    falls back to it, with a warning."""
    plan = writer.parallel_plan()
    count = writer.config.parse_workers
    if count is None:
        cpus = available_cpus()
        count, why = default_worker_count(cpus), f"{cpus} CPU(s) available"
    else:
        why = "parse_workers"
    if count and not plan["streams"]:
        count, why = 0, "no stream is mapped without unpivot_columns or dot paths"
    if count and not workers_supported():
        logger.warning(f"input parsing: parse worker processes need a POSIX system (this is {sys.platform}); parsing in this process")
        count = 0
    if not count:
        logger.info(f"input parsing: in the connector's own process ({why})")
        return None
    try:
        workers = ParseWorkers(count, plan).start()
    except OSError as exc:
        logger.warning(f"input parsing: could not start parse worker processes ({exc}); parsing in this process")
        return None
    logger.info(f"input parsing: {count} worker process(es) alongside the connector ({why})")
    return workers


def read_input(stream: BinaryIO, writer: PlanhatWriter, workers: Optional[ParseWorkers] = None) -> None:
    """Parse JSON lines and hand each message to the writer. Bad lines are counted, never fatal.

    Input comes in chunks (one call per chunk rather than per line); between chunks, and every
    TICK_SECONDS while the source is quiet, the writer sends the batches that waited too long.
    With `workers`, the chunks are parsed by worker processes (see parallel.py)."""
    if workers is not None:
        _read_input_in_parallel(stream, writer, workers)
        return
    line_number = 0
    pieces: list[bytes] = []  # the start of a line whose newline has not arrived yet
    for chunk in with_idle_ticks(read_chunks(stream), writer.flush_overdue):
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if lines:
            if pieces:
                pieces.append(lines[0])
                lines[0] = b"".join(pieces)
                pieces = []
            parse_lines(lines, line_number, writer)
            line_number += len(lines)
            writer.flush_overdue()
        if tail:
            pieces.append(tail)
    _last_line(b"".join(pieces), line_number, writer)


def _read_input_in_parallel(stream: BinaryIO, writer: PlanhatWriter, workers: ParseWorkers) -> None:
    pipeline = Pipeline(
        workers, writer.take_encoded, lambda lines, before: parse_lines(lines, before, writer), writer.flush_overdue
    )
    try:
        for chunk in with_idle_ticks(read_chunks(stream), pipeline.on_idle):
            pipeline.add(chunk)
        last = pipeline.finish()
    except ParseWorkerFailed as exc:
        writer.fail(
            system_error(
                f"{exc}. The sync stopped; records after the last emitted state will be sent again by the next "
                "attempt. To parse in the connector's own process instead, set parse_workers to 0.",
                str(exc),
            )
        )
    _last_line(last, pipeline.lines_sent, writer)


def _last_line(last: bytes, before: int, writer: PlanhatWriter) -> None:
    """What came after the input's last newline: a line too, if it holds anything."""
    if last.strip():
        parse_lines([last], before, writer, not_json="the input ended in the middle of a line")


def parse_lines(lines: list[bytes], before: int, writer: PlanhatWriter, not_json: str = "it is not valid JSON") -> None:
    """The hot loop: one JSON line per message; `before` is the number of lines already read."""
    record, loads, JSONDecodeError = writer.record, orjson.loads, orjson.JSONDecodeError
    for line_number, line in enumerate(lines, before + 1):
        try:
            message = loads(line)
        except JSONDecodeError as exc:
            if not line.strip():
                continue
            if b'"STATE"' in line and _is_state_line(line):  # NaN or the like: the standard parser reads it
                _state_line(writer, line_number, line)
                continue
            message = _salvage_record(line)
            if message is None:
                writer.unparseable_line(line_number, line, f"{not_json} ({exc})", guess_stream(line))
                continue
        # The common case first, with as few lookups as possible; anything else goes to _other_line.
        try:
            if message["type"] == "RECORD":
                body = message["record"]
                stream, namespace, data = body["stream"], body.get("namespace"), body["data"]
                meta = body.get("meta")
            else:
                body = None
        except (KeyError, TypeError, AttributeError):  # not an object, or a RECORD missing a part
            body = None
        if body is None:
            _other_line(writer, line_number, line, message)
        else:
            if meta and type(meta) is dict and meta.get("changes"):
                writer.source_changes(namespace, stream, meta["changes"])
            record(stream, namespace, data)


def _other_line(writer: PlanhatWriter, line_number: int, line: bytes, message: Any) -> None:
    """Every line that is valid JSON but not a well-formed RECORD: states, other messages, mistakes."""
    kind = message.get("type") if type(message) is dict else None
    if kind == "RECORD":
        body = message.get("record")
        if type(body) is dict:  # without a stream or data: the writer counts it as skipped or rejected
            writer.record(body.get("stream"), body.get("namespace"), body.get("data"))
        else:
            writer.unparseable_line(line_number, line, "a RECORD message without a record object")
    elif kind == "STATE":
        _state_line(writer, line_number, line)
    elif kind == "TRACE" and _stream_status(writer, message):
        return
    elif kind is None:
        writer.unparseable_line(line_number, line, "not an Airbyte message (no 'type')")
    else:
        writer.other_message(kind)


def _state_line(writer: PlanhatWriter, line_number: int, line: bytes) -> None:
    """A STATE line, read again by the standard library's parser: it keeps every value exactly
    (orjson turns integers past 64 bits into floats), so the state can go out as it came in."""
    try:
        writer.state(json.loads(line))
    except (ValueError, InvalidState) as exc:
        writer.unparseable_line(line_number, line, str(exc) if isinstance(exc, InvalidState) else f"a STATE message that is not valid ({exc})")


def _is_state_line(line: bytes) -> bool:
    try:
        message = json.loads(line)
    except ValueError:
        return False
    return type(message) is dict and message.get("type") == "STATE"


def _stream_status(writer: PlanhatWriter, message: dict[str, Any]) -> bool:
    """A TRACE STREAM_STATUS message (the platform sends COMPLETE per stream after the source ends):
    handed to the writer. False for any other TRACE, which is ignored like other messages."""
    trace = message.get("trace")
    if type(trace) is not dict or trace.get("type") != "STREAM_STATUS":
        return False
    status = trace.get("stream_status")
    descriptor = status.get("stream_descriptor") if type(status) is dict else None
    if type(descriptor) is not dict:
        return False
    writer.stream_status(descriptor.get("namespace"), descriptor.get("name"), status.get("status"))
    return True


def _salvage_record(line: bytes) -> Optional[dict[str, Any]]:
    """A RECORD line orjson refused (NaN, invalid UTF-8, lone surrogates), read leniently.

    Its bad values stay marked, so the writer rejects the record naming the field if that field is
    sent. Only RECORDs are salvaged: a STATE or anything else must be exact, or it is skipped.
    """
    message = parse_leniently(line)
    if type(message) is not dict or message.get("type") != "RECORD":
        return None
    body = message.get("record")
    if type(body) is not dict or not is_clean_text(body.get("stream")):
        return None
    namespace = body.get("namespace")
    if namespace is not None and not is_clean_text(namespace):
        return None
    return message
