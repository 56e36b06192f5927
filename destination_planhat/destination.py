"""DestinationPlanhat: wires config, routing, the client and the writer into spec/check/write."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any, BinaryIO, NoReturn, Optional, cast

import orjson
from airbyte_cdk.destinations import Destination
from airbyte_cdk.logger import is_platform_debug_log_enabled
from airbyte_cdk.models import (
    AirbyteConnectionStatus,
    AirbyteMessage,
    AirbyteMessageSerializer,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteCatalogSerializer,
    ConnectorSpecification,
    ConnectorSpecificationSerializer,
    FailureType,
    Status,
)
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets, get_secrets, update_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.cancel_signals import CancelOnSignal
from destination_planhat.config import PlanhatConfig, S3ObjectStorage, parse_config, upgrade_config
from destination_planhat.discover import discover
from destination_planhat.mapping.routing import route_streams, settings_problems, streams_error
from destination_planhat.planhat.api import WHERE_API_TOKEN, WHERE_TENANT_TOKEN, Endpoint
from destination_planhat.planhat.client import PlanhatClient
from destination_planhat.planhat.errors import PlanhatError, config_error
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
    def run(self, args: list[str]) -> None:
        """The CDK's run, with the connector's own errors (an AirbyteTracedException: a config error, Planhat
        unreachable, ...) reported as the user reads them: one log line and one TRACE whose message names
        the field or file and the fix. Their traceback goes to DEBUG (LOG_LEVEL=debug shows it), and only
        a failure that is not a config error keeps it in the TRACE's stack_trace. Any other exception is
        a bug: the CDK reports it with its traceback."""
        if is_platform_debug_log_enabled():
            logger.setLevel(logging.DEBUG)
        try:
            super().run(args)
        except AirbyteTracedException as exc:
            report_failure(exc)
            sys.exit(1)

    def parse_args(self, args: list[str]) -> argparse.Namespace:
        """The CDK's commands (spec, check, write) and `discover --config`, which the CDK's destinations
        lack: Airbyte runs it for data activation (see discover.py). One parser, so `--help` lists all four."""
        parser = argparse.ArgumentParser(
            prog="destination-planhat",
            description="Airbyte destination for Planhat: Metrics, User Activities and Planhat's objects.",
        )
        commands = parser.add_subparsers(title="commands", dest="command", metavar="{spec,check,discover,write}")
        commands.add_parser("spec", help="print the connector's specification (the form of its configuration)")
        for name, help_text in (
            ("check", "check the configuration: reach Planhat with its credentials (writes no data)"),
            ("discover", "print the DESTINATION_CATALOG: the Planhat targets and fields a stream can be mapped onto"),
            ("write", "write the Airbyte messages read from stdin to Planhat"),
        ):
            command = commands.add_parser(name, help=help_text)
            command.add_argument("--config", type=str, required=True, help="path to the JSON configuration file")
            if name == "write":
                command.add_argument(
                    "--catalog", type=str, required=True, help="path to the configured catalog JSON file"
                )
        parsed = parser.parse_args(args)
        if not parsed.command:
            parser.error("choose a command: spec, check, discover or write")
        return parsed

    @staticmethod
    def read_config(config_path: str) -> MutableMapping[str, Any]:
        """The configuration file as a JSON object, or a config error that names the file and the fix
        (the CDK's own says "Something went wrong" and prints a traceback), in the form spec.json
        describes (upgrade_config: the short forms of earlier versions keep working)."""
        config = read_json_object(config_path, "--config", "the connector's JSON configuration (see the README)")
        return upgrade_config(config)

    def run_cmd(self, parsed_args: argparse.Namespace) -> Iterable[AirbyteMessage]:
        """Validate the config with our own model before the CDK's spec check: ours names every bad
        field and the fix in one message, the CDK's quotes only the first problem and not its field
        (e.g. "0 is less than the minimum of 1"). The CDK's check still runs afterwards as a backstop."""
        if parsed_args.command in ("check", "write", "discover"):
            try:
                config = self.read_config(config_path=parsed_args.config)
                # Registered before anything can print: the CDK masks these values in logs and traces.
                update_secrets(get_secrets(self.spec(logger).connectionSpecification, config))
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
        """Fail exactly where `write` would for lack of a credential (the rule of routing.credential_problems,
        applied to every `streams` entry) or of a reachable host, then reach what the credentials given
        can reach (plan_check). Writes no data: analytics get an empty array, the main API one read."""
        try:
            parsed = parse_config(config)
        except AirbyteTracedException as exc:
            return AirbyteConnectionStatus(status=Status.FAILED, message=exc.message)
        problems = settings_problems(parsed)
        if problems:
            return AirbyteConnectionStatus(status=Status.FAILED, message=streams_error(problems))
        if not parsed.tenant and not parsed.token:
            return AirbyteConnectionStatus(status=Status.FAILED, message=NO_CREDENTIALS)
        storage = parsed.rejected_records_storage
        if storage is not None:  # where rejected records go must take a file (the CDK's DlqChecker does the same)
            problem = check_storage(storage)
            if problem:
                return AirbyteConnectionStatus(status=Status.FAILED, message=problem)
        plan = plan_check(parsed)
        client = build_client(parsed, attempts=CHECK_ATTEMPTS, max_wait=CHECK_MAX_WAIT_SECONDS)
        try:
            if plan.main_api:
                problem = check_main_api(client)
                if problem:
                    return AirbyteConnectionStatus(status=Status.FAILED, message=problem)
            for endpoint in plan.analytics:
                try:
                    client.post(endpoint, b"[]", context="check: ")
                except PlanhatError as exc:  # the same message a sync would end with
                    return AirbyteConnectionStatus(
                        status=Status.FAILED, message=exc.user_message(client.where(endpoint))
                    )
        finally:
            client.close()
        logger.info(f"check: reached {plan.describe()}")
        for line in plan.not_checked:
            logger.info(f"check: {line}")
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
        catalog = ConfiguredAirbyteCatalogSerializer.load(
            read_json_object(configured_catalog_path, "--catalog", "a configured catalog (see the README)")
        )
        writer = self._start_writer(config, catalog, print_message)
        workers: Optional[ParseWorkers] = None
        # SIGTERM / SIGINT: stop reading, let the requests on their way finish (cancel_signals.py).
        with CancelOnSignal(writer.cancel, exit_now):
            try:
                workers = start_parse_workers(writer)
                # The CDK wraps sys.stdin.buffer (a BufferedReader, whose read gives bytes); typeshed types
                # a TextIOWrapper's buffer only as a protocol whose read gives any buffer.
                read_input(cast(BinaryIO, input_stream.buffer), writer, workers)
                writer.finish()
            except BaseException:
                if writer.cancelled:
                    raise writer.end_cancelled(writer.config.shutdown_grace_seconds) from None
                raise
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


NO_CREDENTIALS = (
    "Fill in `tenant_uuid` (for Metrics and User Activities: "
    + WHERE_TENANT_TOKEN
    + ") or `api_token` (for Planhat's objects, and with the tenant token for Metrics: "
    + WHERE_API_TOKEN
    + "): with neither, nothing can be written to Planhat."
)


@dataclass(frozen=True)
class CheckPlan:
    """What `check` reaches: the analytics targets it posts an empty array to, and whether it reads the
    main API; `not_checked` says, for the log, what it leaves out and why."""

    analytics: tuple[Endpoint, ...]
    main_api: bool
    not_checked: tuple[str, ...]

    def describe(self) -> str:
        reached = [f"Planhat {endpoint.label}" for endpoint in self.analytics]
        if self.main_api:
            reached.append("Planhat's main API (objects)")
        return ", ".join(reached)


def plan_check(config: PlanhatConfig) -> CheckPlan:
    """What the credentials given can reach: User Activities with the tenant token, Metrics with both
    tokens, the main API with the API token. The main API is read when objects may be written: a
    `streams` entry goes to an object, or the config has no tenant token (objects only), or it names
    the main API's host (`region`, `api_base_url`). A Metrics-only token needs no permission on
    companies, so it is not read otherwise."""
    analytics: list[Endpoint] = []
    not_checked: list[str] = []
    if config.tenant:
        analytics.append(Endpoint.USER_ACTIVITIES)
        if config.token:
            analytics.append(Endpoint.METRICS)
        else:
            not_checked.append("no `api_token` set: Metrics and Planhat's objects need it, so they were not checked")
    objects = any(settings.endpoint.is_object for settings in config.streams)
    names_main_host = bool(config.region or config.api_base_url)
    main_api = bool(config.token) and (objects or not config.tenant or names_main_host)
    if config.token and not main_api:
        not_checked.append(
            "Planhat's main API (objects) was not checked: no `streams` entry goes to an object and no `region` "
            "is set; it is used only for objects"
        )
    if not config.tenant:
        not_checked.append("no `tenant_uuid` set: Metrics and User Activities need it, so they were not checked")
    return CheckPlan(tuple(analytics), main_api, tuple(not_checked))


def check_main_api(client: PlanhatClient) -> Optional[str]:
    """The main API's part of `check`: the token reads one company (nothing is written). The failure's
    message, or None."""
    try:
        client.verify_main_api()
    except PlanhatError as exc:
        return exc.user_message(client.where(exc.endpoint)) + " (the check reads one company: GET /companies?limit=1)"
    return None


def read_json_object(path: str, option: str, what: str) -> dict[str, Any]:
    """A JSON object read from the file named by a command line option, or one config error naming the
    file, what is wrong with it and what the option expects."""
    try:
        with open(path, "rb") as file:
            content = orjson.loads(file.read())
    except FileNotFoundError:
        problem = "there is no such file"
    except IsADirectoryError:
        problem = "it is a directory"
    except PermissionError:
        problem = "it may not be read (permission denied)"
    except OSError as exc:
        problem = f"it cannot be read ({exc.strerror or type(exc).__name__})"
    except orjson.JSONDecodeError as exc:
        problem = f"it is not valid JSON ({exc})"
    else:
        if isinstance(content, dict):
            return content
        problem = f"it holds a JSON {type(content).__name__}, not an object"
    raise config_error(f"Could not read {path} ({option}): {problem}. {option} takes the path of {what}.")


def report_failure(exc: AirbyteTracedException) -> None:
    """One log line and one TRACE for a failure the connector raised on purpose; its traceback at DEBUG."""
    logger.error(exc.message or str(exc))
    logger.debug("traceback of the failure above:\n" + "".join(traceback.format_exception(exc)))
    for handler in logging.getLogger().handlers:  # the log line before the TRACE
        handler.flush()
    message = exc.as_sanitized_airbyte_message()
    if message.trace is not None and message.trace.error is not None and exc.failure_type == FailureType.config_error:
        message.trace.error.stack_trace = None
    print(filter_secrets(orjson.dumps(AirbyteMessageSerializer.dump(message)).decode()), flush=True)


def exit_now(number: int, name: str) -> NoReturn:
    """A second SIGTERM or SIGINT: say so in one last TRACE line and exit without waiting for anything.
    Under the output lock (for at most a second), so that no line is left half written; a state
    being printed is whole, and every state printed was safe when it was."""
    message = {
        "type": "TRACE",
        "trace": {
            "type": "ERROR",
            "emitted_at": int(time.time() * 1000),
            "error": {
                "message": f"The sync was cancelled ({name}, twice): the connector exited without waiting for the "
                "requests on their way. The next attempt sends the records after the last emitted state again.",
                "internal_message": f"second {name}: exited at once",
                "failure_type": "transient_error",
            },
        },
    }
    _stdout_lock.acquire(timeout=1.0)  # kept until the exit: nothing is printed after this line
    try:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
    finally:
        os._exit(128 + number)


def print_message(message: dict[str, Any]) -> None:
    """Print one message as a single write, so lines from several threads never interleave: each
    released STATE, and the DESTINATION_CATALOG (which the CDK's models cannot carry). With the
    standard library's encoder: it writes back every value the input had as it
    was read (integers of any size, for one, which orjson refuses)."""
    line = json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n"
    with _stdout_lock:
        sys.stdout.write(line)
        sys.stdout.flush()
