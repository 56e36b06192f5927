"""Rejected records, stored: one JSON line per rejected record, in a bucket (S3) or a directory (Local).

With `object_storage_config` set, every record the connector rejects (its checks, an unreadable line
of a known stream, a stream not in the catalog) or Planhat rejects (its answers) is added here, and
`flush()` makes what was added durable: the Local files written, flushed, fsync'd and renamed into
place, the S3 objects uploaded. The writer calls `flush()` before it emits a STATE (and at the end
of the sync), and only when something new was added, so the rejected records a state covers are
stored before the state is out; a failure to store them fails the sync before that state, and no
later state is emitted (sync/state_barrier.py).

Where (the platform's convention, see config.py): `{bucket_path}/{path_format}/{file_name_format}`,
by default `{bucket_path}/{sync_id}/{namespace}/{stream_name}/{date}_{timestamp}_{part_number}.jsonl`,
where `sync_id` is the catalog's (the platform sets it to the job id, whose folder the Airbyte UI
links to), `date` and `timestamp` are the sync's start (UTC), and `part_number` counts the files of
a stream in this sync from 0. Every flush that has new lines for a stream writes a new file: objects
cannot be appended to, and a file is never rewritten.

Memory stays bounded: each stream's pending lines are spooled to a temporary file past
SPOOL_MEMORY_BYTES, and a stream whose pending lines pass PART_BYTES is written at once as a file
of its own (earlier than its state needs: never later).

The line (JSON, one per rejected record; `item` for an item sent or about to be sent, `record` for a
record that never became an item, `line` for an input line that could not be read):
  {"stream": {"namespace": null, "name": "usage"}, "record_number": 17, "rejected_by": "planhat",
   "reason": "...", "target": "metrics", "rejected_at": "2026-12-01T23:10:00.123Z", "sync_id": 42,
   "item": {...}}
The connector's secrets (api_token, tenant_uuid, the S3 keys) are masked wherever they would appear.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Optional, Protocol, Union

import orjson

from destination_planhat.config import LocalObjectStorage, S3ObjectStorage
from destination_planhat.mapping.unclean_json import NonFiniteNumber, is_clean_text
from destination_planhat.planhat.errors import config_error, system_error

logger = logging.getLogger("airbyte")

REJECTED_BY_CONNECTOR = "connector"
REJECTED_BY_PLANHAT = "planhat"
FORMAT_EXTENSION = "jsonl"
NO_SYNC_ID = "no_sync_id"  # the folder when the catalog carries no sync_id (a run outside the platform)
SPOOL_MEMORY_BYTES = 4 * 1024 * 1024
PART_BYTES = 64 * 1024 * 1024
MASK = "**********"
MIN_SECRET_CHARS = 4  # shorter "secrets" would mask ordinary text
# The CDK's check writes this object for a stream "test" of namespace "testing" and sync 1 (DlqChecker.kt).
CHECK_NAMESPACE, CHECK_STREAM, CHECK_SYNC_ID, CHECK_FILE = "testing", "test", 1, "_check_test"
CHECK_BODY = b'{"data":1}'
MAX_DEPTH = 200
_VARIABLE = re.compile(r"\{(\w+)\}")
_UNSAFE = re.compile(r"[/\\\x00-\x1f]")

MISSING: Any = object()  # no item, record or Planhat item to store with a rejection


# ----- where: the path convention -----------------------------------------------------------------


def _segment(value: Optional[str]) -> str:
    """A namespace or stream name as one path segment: no separators, no "." or ".." (Local stays in its
    directory, and S3 keys keep the same layout)."""
    text = _UNSAFE.sub("_", value or "")
    return "_" if text in (".", "..") else text


@dataclass(frozen=True)
class Layout:
    prefix: str  # bucket_path ("" for Local)
    path_format: str
    file_name_format: str
    sync_id: Optional[int]
    started: datetime  # UTC
    gzip: bool = False  # each file gzipped, named .jsonl.gz

    def directory(self, namespace: Optional[str], name: str) -> str:
        """The stream's folder, with "/" between segments, empty segments left out (as the CDK's path
        join does with an empty namespace), no leading or trailing "/"."""
        started = self.started
        values = {
            "sync_id": self._sync_folder(),
            "namespace": _segment(namespace),
            "stream_name": _segment(name),
            "year": f"{started.year:04d}",
            "month": f"{started.month:02d}",
            "day": f"{started.day:02d}",
            "epoch": str(self._epoch_ms()),
        }
        path = _VARIABLE.sub(lambda match: values.get(match.group(1), match.group(0)), self.path_format)
        segments = [part for part in (self.prefix.split("/") + path.split("/")) if part]
        return "/".join(segments)

    def file_name(self, part_number: int) -> str:
        values = {
            "date": self.started.strftime("%Y_%m_%d"),
            "timestamp": str(self._epoch_ms()),
            "part_number": str(part_number),
            "sync_id": self._sync_folder(),
            "format_extension": "." + FORMAT_EXTENSION + (".gz" if self.gzip else ""),
        }
        return _segment(_VARIABLE.sub(lambda match: values.get(match.group(1), match.group(0)), self.file_name_format))

    def key(self, namespace: Optional[str], name: str, part_number: int) -> str:
        directory = self.directory(namespace, name)
        return f"{directory}/{self.file_name(part_number)}" if directory else self.file_name(part_number)

    def sync_prefix(self) -> str:
        """What the Airbyte UI links to: `{bucket_path}/{sync_id}/`."""
        segments = [part for part in self.prefix.split("/") if part] + [self._sync_folder()]
        return "/".join(segments) + "/"

    def _sync_folder(self) -> str:
        return str(self.sync_id) if self.sync_id is not None else NO_SYNC_ID

    def _epoch_ms(self) -> int:
        return int(self.started.timestamp() * 1000)


def layout_for(
    storage: Union[S3ObjectStorage, LocalObjectStorage], sync_id: Optional[int], started: datetime
) -> Layout:
    if isinstance(storage, S3ObjectStorage):
        return Layout(
            storage.bucket_path.strip(),
            storage.path_format,
            storage.file_name_format,
            sync_id,
            started,
            gzip=storage.compression.gzip,
        )
    return Layout(
        "",
        S3ObjectStorage.model_fields["path_format"].default,
        S3ObjectStorage.model_fields["file_name_format"].default,
        sync_id,
        started,
    )


# ----- how: one writer per storage type -----------------------------------------------------------


class ObjectWriter(Protocol):
    def where(self, key: str = "") -> str:
        """The bucket and key, or the path, for messages."""
        ...

    def put(self, key: str, body: IO[bytes], size: int) -> None:
        """Store `size` bytes of `body` (positioned at 0) as `key`, durably, or raise StoreFailed."""
        ...

    def check(self, directory: str) -> None:
        """Write, find and delete a small marker object under `directory`, or raise StoreFailed."""
        ...


class StoreFailed(Exception):
    """Rejected records could not be stored. Carries the traced exception the sync ends with."""

    def __init__(self, traced: Exception) -> None:
        super().__init__(str(traced))
        self.traced = traced


NEXT_SYNC = (
    " No state was emitted after the rejected records last stored, so the next attempt of the sync sends "
    "these records again."
)


class LocalWriter:
    """Files under `local_path`: written to a temporary name, flushed, fsync'd, renamed, the folder fsync'd."""

    def __init__(self, storage: LocalObjectStorage) -> None:
        self.root = Path(storage.local_path)

    def where(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def put(self, key: str, body: IO[bytes], size: int) -> None:
        target = self.root / key
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".", suffix=".partial", dir=target.parent)
            try:
                with os.fdopen(handle, "wb") as file:
                    shutil.copyfileobj(body, file)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            _fsync_directory(target.parent)
        except OSError as exc:
            raise StoreFailed(_local_error(self.where(key), exc)) from exc

    def check(self, directory: str) -> None:
        marker = self.root / directory / CHECK_FILE
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            with open(marker, "wb") as file:
                file.write(CHECK_BODY)
                file.flush()
                os.fsync(file.fileno())
            if marker.read_bytes() != CHECK_BODY:
                raise OSError(f"{marker} did not read back what was written")
            marker.unlink()
        except OSError as exc:
            raise StoreFailed(_local_error(str(marker), exc)) from exc


def _fsync_directory(path: Path) -> None:
    """So that the rename itself survives a crash (where the platform allows opening a directory)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _local_error(where: str, exc: OSError) -> Exception:
    problem = f"{type(exc).__name__}: {exc.strerror or exc}"
    fix = (
        "Check `object_storage_config.local_path`: it must be a directory the connector may create and write "
        "files in (with Docker, a mounted volume such as -v /your/dir:/local and local_path /local/...)."
    )
    message = f"Could not store rejected records at {where} ({problem}). {fix}"
    if isinstance(exc, (PermissionError, NotADirectoryError, FileNotFoundError, IsADirectoryError, FileExistsError)):
        return config_error(message + NEXT_SYNC)
    return system_error(message + NEXT_SYNC)


# S3 error codes only the user can fix (wrong bucket, credentials or permissions).
S3_CONFIG_ERRORS = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "NoSuchBucket",
        "InvalidBucketName",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "InvalidToken",
        "ExpiredToken",
        "AccountProblem",
        "InvalidClientTokenId",
        "403",
        "404",
        "301",
    }
)


class S3Writer:
    """Objects in an S3 bucket (or any S3-compatible server at `s3_endpoint`), through boto3."""

    def __init__(self, storage: S3ObjectStorage, client: Any = None) -> None:
        self.storage = storage
        self.bucket = storage.s3_bucket_name
        self._client = client if client is not None else s3_client(storage)

    def where(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, body: IO[bytes], size: int) -> None:
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentLength=size, ContentType="application/x-ndjson"
            )
        except Exception as exc:  # botocore's ClientError, EndpointConnectionError, ... (and boto3's own)
            raise StoreFailed(self._error(key, exc)) from exc

    def check(self, directory: str) -> None:
        key = f"{directory}/{CHECK_FILE}"
        written = False
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=CHECK_BODY)
            written = True
            listed = self._client.list_objects_v2(Bucket=self.bucket, Prefix=directory + "/")
            if not any(entry.get("Key") == key for entry in listed.get("Contents", [])):
                raise StoreFailed(
                    system_error(f"Wrote {self.where(key)} but could not find it when listing the folder.")
                )
        except StoreFailed:
            raise
        except Exception as exc:
            raise StoreFailed(self._error(key, exc, checking=True)) from exc
        finally:
            if written:
                try:
                    self._client.delete_object(Bucket=self.bucket, Key=key)
                except Exception as exc:
                    logger.warning(f"check: could not delete the marker {self.where(key)}: {_s3_problem(exc)}")

    def _error(self, key: str, exc: Exception, *, checking: bool = False) -> Exception:
        code = _s3_code(exc)
        endpoint = f" at {self.storage.s3_endpoint}" if self.storage.s3_endpoint else ""
        action = "write to" if checking else "store rejected records in"
        message = f"Could not {action} {self.where(key)}{endpoint} ({_s3_problem(exc)})."
        fix = (
            " Check `object_storage_config`: the bucket `s3_bucket_name` must exist in `s3_bucket_region`, and the "
            "credentials (`access_key_id` and `secret_access_key`, or `role_arn`) must be allowed s3:PutObject, "
            "s3:ListBucket and s3:DeleteObject on it."
        )
        tail = "" if checking else NEXT_SYNC
        if code in S3_CONFIG_ERRORS or _is_credentials_error(exc):
            return config_error(message + fix + tail)
        return system_error(message + fix + tail)


def _s3_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return ""


def _s3_problem(exc: Exception) -> str:
    code = _s3_code(exc)
    text = str(exc)
    return f"{code}: {text}" if code and code not in text else f"{type(exc).__name__}: {text}"


def _is_credentials_error(exc: Exception) -> bool:
    try:
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError
    except ImportError:  # pragma: no cover - boto3 is a requirement
        return False
    return isinstance(exc, (NoCredentialsError, PartialCredentialsError))


ROLE_SESSION_NAME = "airbyte-destination-planhat"
# Set by Airbyte Cloud next to its own AWS credentials, as the Kotlin CDK reads it for role_arn.
EXTERNAL_ID_ENV = "AWS_ASSUME_ROLE_EXTERNAL_ID"


def s3_client(storage: S3ObjectStorage) -> Any:
    """An S3 client for the config: its keys when given, else the environment's credentials (boto3's
    chain); with `role_arn`, temporary credentials of that role (STS AssumeRole, refreshed before they
    expire), the external id from AWS_ASSUME_ROLE_EXTERNAL_ID when set. With `s3_endpoint`, S3 and STS
    are both asked there (MinIO and other S3-compatible servers serve both), with path-style addressing."""
    import boto3
    from botocore.config import Config

    region = storage.region or "us-east-1"
    config = Config(
        connect_timeout=10,
        read_timeout=120,
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"} if storage.s3_endpoint else {},
    )
    keys: dict[str, Any] = {}
    if storage.access_key_id is not None and storage.secret_access_key is not None:
        keys = {
            "aws_access_key_id": storage.access_key_id.get_secret_value(),
            "aws_secret_access_key": storage.secret_access_key.get_secret_value(),
        }
    session = boto3.session.Session(region_name=region, **keys)
    if storage.role_arn:
        session = _assumed_role_session(session, storage, region, config)
    return session.client("s3", endpoint_url=storage.s3_endpoint, config=config)


def _assumed_role_session(base: Any, storage: S3ObjectStorage, region: str, config: Any) -> Any:
    import boto3
    from botocore.credentials import RefreshableCredentials
    from botocore.session import get_session

    sts = base.client("sts", endpoint_url=storage.s3_endpoint, config=config)
    arguments: dict[str, Any] = {"RoleArn": storage.role_arn, "RoleSessionName": ROLE_SESSION_NAME}
    external_id = os.environ.get(EXTERNAL_ID_ENV)
    if external_id:
        arguments["ExternalId"] = external_id

    def fetch() -> dict[str, str]:
        try:
            credentials = sts.assume_role(**arguments)["Credentials"]
        except Exception as exc:
            raise StoreFailed(
                config_error(
                    f"Could not assume the role `object_storage_config.role_arn` ({_s3_problem(exc)}). Check the role's "
                    "ARN and that its trust policy allows the connector's credentials (and external id) to assume it."
                )
            ) from exc
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }

    refreshable = RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
    )
    botocore_session = get_session()
    botocore_session._credentials = refreshable  # botocore's documented-by-use way to plug refreshable credentials in
    botocore_session.set_config_variable("region", region)
    return boto3.session.Session(botocore_session=botocore_session)


def build_writer(storage: Union[S3ObjectStorage, LocalObjectStorage]) -> ObjectWriter:
    return S3Writer(storage) if isinstance(storage, S3ObjectStorage) else LocalWriter(storage)


def check_storage(
    storage: Union[S3ObjectStorage, LocalObjectStorage], started: Optional[datetime] = None
) -> Optional[str]:
    """`check`'s part: write, find and delete a marker where rejected records would go, as the CDK's
    DlqChecker does (`{bucket_path}/1/testing/test/_check_test`). The failure's message, or None."""
    layout = layout_for(storage, CHECK_SYNC_ID, started or datetime.now(timezone.utc))
    try:
        writer = build_writer(storage)
        writer.check(layout.directory(CHECK_NAMESPACE, CHECK_STREAM))
    except StoreFailed as exc:
        return getattr(exc.traced, "message", None) or str(exc)
    return None


# ----- what: the lines, pending per stream until flushed ------------------------------------------


@dataclass
class _Pending:
    namespace: Optional[str]
    name: str
    spool: IO[bytes] = field(
        default_factory=lambda: tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, mode="w+b")  # noqa: SIM115 (closed in flush)
    )
    lines: int = 0
    size: int = 0


class RejectedRecords:
    """Thread-safe: the reading thread adds the connector's rejections, sender threads Planhat's, and
    whichever thread releases a state flushes."""

    def __init__(
        self,
        writer: ObjectWriter,
        layout: Layout,
        secrets: Iterable[Optional[str]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._writer = writer
        self.layout = layout
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[Optional[str], str], _Pending] = {}
        self._parts: dict[tuple[Optional[str], str], int] = {}
        masks = {secret for secret in secrets if secret and len(secret) >= MIN_SECRET_CHARS}
        # As they appear inside a JSON string, longest first (one secret may contain another).
        self._masks = sorted({orjson.dumps(secret)[1:-1] for secret in masks}, key=len, reverse=True)
        self.stored: dict[str, int] = {}  # lines made durable, per stream label
        self.files = 0

    @property
    def where(self) -> str:
        return self._writer.where(self.layout.sync_prefix())

    @property
    def pending(self) -> bool:
        """Lines added since the last flush."""
        with self._lock:
            return bool(self._pending)

    def add(
        self,
        namespace: Optional[str],
        name: str,
        *,
        record_number: int,
        rejected_by: str,
        reason: str,
        target: Optional[str],
        item: Any = MISSING,
        record: Any = MISSING,
        line: Optional[bytes] = None,
        planhat_item: Any = MISSING,
    ) -> None:
        """One rejected record (`record_number`: its ordinal in its stream in this sync, from 1)."""
        entry: dict[str, Any] = {
            "stream": {"namespace": namespace, "name": name},
            "record_number": record_number,
            "rejected_by": rejected_by,
            "reason": reason,
            "target": target,
            "rejected_at": _iso(self._clock()),
            "sync_id": self.layout.sync_id,
        }
        if item is not MISSING:
            entry["item"] = item
        if record is not MISSING:
            entry["record"] = record
        if line is not None:
            entry["line"] = line.decode("utf-8", "replace")
        if planhat_item is not MISSING:
            entry["planhat_item"] = planhat_item
        encoded = self._mask(_encode(entry)) + b"\n"
        key = (namespace, name)
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending(namespace, name)
            pending.spool.write(encoded)
            pending.lines += 1
            pending.size += len(encoded)
            if pending.size >= PART_BYTES:
                self._put(key, pending)

    def add_by_connector(
        self, key: tuple[Optional[str], str], target: Optional[str], record_number: int, reason: str, **what: Any
    ) -> None:
        """A record the connector rejected (or skipped) itself; `what`: add's item, record or line."""
        namespace, name = key
        self.add(
            namespace,
            name,
            record_number=record_number,
            rejected_by=REJECTED_BY_CONNECTOR,
            reason=reason,
            target=target,
            **what,
        )

    def flush(self) -> None:
        """Make every line added so far durable (one new file per stream that has new lines), or raise
        StoreFailed; lines not stored stay pending."""
        with self._lock:
            for key, pending in list(self._pending.items()):
                self._put(key, pending)

    def close(self) -> None:
        """Drop the temporary spools (after a final flush, or after a failure)."""
        with self._lock:
            for pending in self._pending.values():
                pending.spool.close()
            self._pending.clear()

    def _put(self, key: tuple[Optional[str], str], pending: _Pending) -> None:
        part = self._parts.get(key, 0)
        object_key = self.layout.key(pending.namespace, pending.name, part)
        pending.spool.seek(0)
        if self.layout.gzip:
            with _gzipped(pending.spool) as (body, size):
                self._writer.put(object_key, body, size)
        else:
            self._writer.put(object_key, pending.spool, pending.size)
        self._parts[key] = part + 1
        self.files += 1
        label = f"{pending.namespace}.{pending.name}" if pending.namespace else pending.name
        self.stored[label] = self.stored.get(label, 0) + pending.lines
        pending.spool.close()
        del self._pending[key]

    def _mask(self, encoded: bytes) -> bytes:
        for secret in self._masks:
            if secret in encoded:
                encoded = encoded.replace(secret, MASK.encode())
        return encoded


@contextmanager
def _gzipped(spool: IO[bytes]) -> Iterator[tuple[IO[bytes], int]]:
    """The spool's lines as one gzip file (spooled too: memory stays bounded)."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, mode="w+b") as out:
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as compressor:
            shutil.copyfileobj(spool, compressor)
        size = out.tell()
        out.seek(0)
        yield out, size


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _encode(entry: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(entry)
    except (orjson.JSONEncodeError, TypeError):
        # What orjson refuses (NaN read leniently, invalid UTF-8, deep nesting: mapping/unclean_json.py) is kept
        # readable rather than dropped: the line still says which record and why.
        return orjson.dumps(_jsonable(entry, 0))


def _jsonable(value: Any, depth: int) -> Any:
    if isinstance(value, NonFiniteNumber):
        return value.literal
    if type(value) is str:
        return value if is_clean_text(value) else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (dict, list)):
        if depth >= MAX_DEPTH:
            return repr(value)[:1000]
        if isinstance(value, dict):
            return {_jsonable(str(key), depth + 1): _jsonable(item, depth + 1) for key, item in value.items()}
        return [_jsonable(item, depth + 1) for item in value]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)  # orjson's range
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    return repr(value)
