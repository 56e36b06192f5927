"""DestinationPlanhat: wires config, routing, the client and the writer into spec/check/write."""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from importlib import resources
from typing import Any, BinaryIO, Optional, cast

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
)
from airbyte_cdk.utils.airbyte_secrets_utils import get_secrets, update_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.config import PlanhatConfig, S3ObjectStorage, parse_config
from destination_planhat.discover import discover
from destination_planhat.mapping.routing import route_streams, settings_problems
from destination_planhat.planhat.api import WHERE_API_TOKEN, Endpoint
from destination_planhat.planhat.client import PlanhatClient
from destination_planhat.planhat.errors import PlanhatError
from destination_planhat.planhat.retries import RetryPolicy
from destination_planhat.reading.pipeline import message_lines, read_input, run_pipeline, start_parse_workers
from destination_planhat.reading.worker_pool import ParseWorkers
from destination_planhat.rejected.records import RejectedRecords, StoreFailed, build_writer, check_storage, layout_for
from destination_planhat.sync.dry_run import DryRun
from destination_planhat.sync.writer import PlanhatWriter

logger = logging.getLogger("airbyte")

CHECK_ATTEMPTS = 2
# A rate limit uses up no attempt (planhat/client.py): check waits at most this long in all, so that
# it answers the UI in a minute or so even while Planhat keeps answering 429.
CHECK_MAX_WAIT_SECONDS = 60.0
# discover reads the custom fields once and must answer the UI quickly: it waits at most this long.
DISCOVER_TIMEOUT_SECONDS = 30.0


def build_client(
    config: PlanhatConfig,
    *,
    attempts: Optional[int] = None,
    max_wait: Optional[float] = None,
    sleep: Optional[Callable[[float], None]] = None,
    read_timeout: Optional[float] = None,
) -> PlanhatClient:
    policy = RetryPolicy(
        max_attempts=attempts or config.max_attempts,
        base_delay=config.retry_initial_delay_seconds,
        max_total_wait=config.max_retry_seconds if max_wait is None else min(max_wait, config.max_retry_seconds),
    )
    kwargs: dict[str, Any] = {"sleep": sleep} if sleep else {}
    return PlanhatClient(
        config.analytics_base_url,
        config.tenant,
        config.token,
        main_base_url=config.main_base_url,
        calls_per_minute=config.api_calls_per_minute,
        retry_policy=policy,
        read_timeout=read_timeout or config.request_timeout_seconds,
        pool_size=config.max_in_flight_requests,
        **kwargs,
    )


class DestinationPlanhat(Destination):
    def parse_args(self, args: list[str]) -> argparse.Namespace:
        """The CDK's commands (spec, check, write), and `discover --config`, which the CDK's
        destinations lack: Airbyte runs it for data activation (see discover.py)."""
        if args and args[0] == "discover":
            parser = argparse.ArgumentParser(prog="discover", description="prints the DESTINATION_CATALOG")
            parser.add_argument("--config", type=str, required=True, help="path to the JSON configuration file")
            parsed = parser.parse_args(args[1:])
            parsed.command = "discover"
            return parsed
        return super().parse_args(args)

    def run_cmd(self, parsed_args: argparse.Namespace) -> Iterable[AirbyteMessage]:
        """Validate the config with our own model before the CDK's spec check: ours names every bad
        field and the fix in one message, the CDK's quotes only the first problem and not its field
        (e.g. "0 is less than the minimum of 1"). The CDK's check still runs afterwards as a backstop."""
        if parsed_args.command in ("check", "write", "discover"):
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
        if parsed_args.command == "discover":
            print_message({"type": "DESTINATION_CATALOG", "destination_catalog": self.discover(config)})
            return
        yield from super().run_cmd(parsed_args)

    def discover(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The destination catalog (the CDK's AirbyteMessage has no field for it, so run_cmd prints
        it itself). Reads the custom fields with the API token; writes nothing."""
        parsed = parse_config(config)
        client = build_client(
            parsed, attempts=1, read_timeout=min(parsed.request_timeout_seconds, DISCOVER_TIMEOUT_SECONDS)
        )
        try:
            where = client.main_api_url_for_logs()
            return discover(parsed.token, client.read_custom_fields, where)
        finally:
            client.close()

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
        storage = parsed.rejected_records_storage
        if storage is not None:  # where rejected records go must take a file (the CDK's DlqChecker does the same)
            problem = check_storage(storage)
            if problem:
                return AirbyteConnectionStatus(status=Status.FAILED, message=problem)
        client = build_client(parsed, attempts=CHECK_ATTEMPTS, max_wait=CHECK_MAX_WAIT_SECONDS)
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
                    return AirbyteConnectionStatus(
                        status=Status.FAILED, message=exc.user_message(client.where(endpoint))
                    )
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

        The messages go through the same input pipeline as the CLI's lines (reading/pipeline.py), so they are
        read, checked, counted and reported the same way. It cannot echo states verbatim, though: the
        CDK's models it receives have already dropped every key they do not know, the platform's state
        `id` among them, and the models it yields would drop them again. The connector's CLI (`write`
        on stdin), which Airbyte and PyAirbyte run, keeps them; use this API only where no platform
        checks the ids."""
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
        workers: Optional[ParseWorkers] = None
        try:
            workers = start_parse_workers(writer)
            for _ in run_pipeline(message_lines(input_messages), writer, workers):
                yield from drain()
            writer.finish()
            yield from drain()
        finally:
            if workers is not None:
                workers.close()
            writer.close()

    def _run_write(
        self, config: Mapping[str, Any], configured_catalog_path: str, input_stream: io.TextIOWrapper
    ) -> Iterable[AirbyteMessage]:
        """The CLI path: parse stdin's bytes ourselves (faster than the CDK, and bad lines are skipped
        and counted instead of crashing the sync) and print each state the moment it is released."""
        with open(configured_catalog_path, "rb") as file:
            catalog = ConfiguredAirbyteCatalogSerializer.load(orjson.loads(file.read()))
        writer = self._start_writer(config, catalog, print_message)
        workers: Optional[ParseWorkers] = None
        try:
            workers = start_parse_workers(writer)
            # The CDK wraps sys.stdin.buffer (a BufferedReader, whose read gives bytes); typeshed types
            # a TextIOWrapper's buffer only as a protocol whose read gives any buffer.
            read_input(cast(BinaryIO, input_stream.buffer), writer, workers)
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
            if parsed.rejected_records_storage is not None:
                logger.info("dry run: rejected records are counted and logged, not stored")
            return PlanhatWriter(parsed, routes, DryRun(), emit).start()  # builds no client: nothing can be sent
        rejected = build_rejected_records(parsed, catalog)
        return PlanhatWriter(parsed, routes, build_client(parsed), emit, rejected=rejected).start()


_stdout_lock = threading.Lock()


def build_rejected_records(config: PlanhatConfig, catalog: ConfiguredAirbyteCatalog) -> Optional[RejectedRecords]:
    """The store of rejected records, or None without object_storage_config. Its folder is the catalog's
    `sync_id` (the platform's job id: the folder the Airbyte UI links to)."""
    storage = config.rejected_records_storage
    if storage is None:
        return None
    sync_ids = [stream.sync_id for stream in catalog.streams if stream.sync_id is not None]
    layout = layout_for(storage, sync_ids[0] if sync_ids else None, datetime.now(timezone.utc))
    try:
        writer = build_writer(storage)
    except StoreFailed as exc:
        raise exc.traced from exc
    secrets = [config.tenant, config.token]
    if isinstance(storage, S3ObjectStorage):
        secrets += [
            key.get_secret_value() for key in (storage.access_key_id, storage.secret_access_key) if key is not None
        ]
    store = RejectedRecords(writer, layout, secrets)
    logger.info(f"rejected records are stored under {store.where}")
    return store


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


def print_message(message: dict[str, Any]) -> None:
    """Print one message as a single write, so lines from several threads never interleave: each
    released STATE, and the DESTINATION_CATALOG (which the CDK's models cannot carry). With the
    standard library's encoder: it writes back every value the input had as it
    was read (integers of any size, for one, which orjson refuses)."""
    line = json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n"
    with _stdout_lock:
        sys.stdout.write(line)
        sys.stdout.flush()
