"""The connector's configuration: parsed once, validated with messages that name the field.

spec.json is the user's form; this model is what the code reads. Validation errors never quote
the values the user typed, because two of the fields are secrets.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Mapping, MutableMapping
from enum import Enum
from typing import Annotated, Any, Literal, Optional, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from destination_planhat.planhat.api import (
    DEFAULT_ANALYTICS_BASE_URL,
    DEFAULT_CALLS_PER_MINUTE,
    REGION_PATTERN,
    SAFE_BODY_BYTES,
    TENANT_TOKEN_PATTERN,
    WHERE_TENANT_TOKEN,
    Endpoint,
    MatchOn,
    Operation,
    main_api_base_url,
)
from destination_planhat.planhat.errors import config_error

TENANT_PATTERN = TENANT_TOKEN_PATTERN
# The smallest request body limit that still fits any sensible item, so a typo cannot make every
# record "too large".
MIN_REQUEST_BODY_BYTES = 1024
DEFAULT_MAX_DELETES = 1_000
LOOPBACK_NAMES = ("localhost",)


class InvalidRecords(str, Enum):
    """What happens to an item that fails local validation."""

    REJECT = "reject"  # not sent; counted per reason, first examples logged
    SEND = "send"  # sent as it is, so that Planhat judges it (and lists it under Failed Metrics)


class UnmappedColumns(str, Enum):
    """What an object stream does with a column that is neither mapped nor named like a standard field."""

    IGNORE = "ignore"  # not sent
    CUSTOM = "custom"  # sent as the custom field of the column's name


class SourceDelete(str, Enum):
    """What an upsert stream does with a record deleted at the source (`_ab_cdc_deleted_at` set)."""

    IGNORE = "ignore"  # not sent, nothing deleted; counted and named in the summary
    DELETE = "delete"  # the Planhat record with its key is deleted
    ARCHIVE = "archive"  # the Planhat record with its key gets archived: true (objects with the flag)


class UnpivotColumn(BaseModel):
    """An `unpivot_columns` entry: a column, and the dimensionId its values are sent as when that is not
    the column's name (a column named e.g. `active users`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    dimension_id: Optional[str] = None  # None or empty: the column's name

    @property
    def dimension(self) -> str:
        return self.dimension_id or self.column


class FieldMapping(BaseModel):
    """One entry of a stream's `field_mappings`: where one Planhat field takes its value from.

    Which Planhat fields exist, and which endpoint they belong to, is checked with the stream's
    catalog in routing (so that every mistake of every stream is reported at once).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    planhat_field: str = Field(min_length=1)
    source_field: Optional[str] = None
    constant: Optional[str] = None


class StreamSettings(BaseModel):
    """One entry of `streams`: where a stream goes and how its fields map to Planhat's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    namespace: Optional[str] = None
    endpoint: Endpoint
    field_mappings: tuple[FieldMapping, ...] = ()
    # A plain string is the short form of {"column": ...} that 0.2 documented (see upgrade_config).
    unpivot_columns: tuple[Union[str, UnpivotColumn], ...] = ()
    match_on: Optional[MatchOn] = None  # objects only; None: externalId
    unmapped_columns: Optional[UnmappedColumns] = None  # objects only; None: ignore
    # Objects only: what the stream does (None: upsert); a mapped stream's sync mode sets it.
    operation: Optional[Operation] = None
    archive: bool = False  # a delete sets `archived: true` instead (objects with the flag)
    on_source_delete: Optional[SourceDelete] = None  # objects only; None: ignore
    skip_unchanged: bool = False  # objects (upsert, update): an item equal to what Planhat has is not sent

    @property
    def effective_match_on(self) -> MatchOn:
        return self.match_on or MatchOn.EXTERNAL_ID

    @property
    def source_delete(self) -> Optional[Operation]:
        """What a record deleted at the source becomes: a delete, an archive, or None (ignored)."""
        if self.on_source_delete is SourceDelete.DELETE:
            return Operation.DELETE
        if self.on_source_delete is SourceDelete.ARCHIVE:
            return Operation.ARCHIVE
        return None

    @property
    def effective_operation(self) -> Operation:
        """What the stream does; a delete with `archive: true` archives."""
        operation = self.operation or Operation.UPSERT
        return Operation.ARCHIVE if operation is Operation.DELETE and self.archive else operation

    @property
    def unpivot_pairs(self) -> tuple[tuple[str, str], ...]:
        """Each unpivot column with its dimensionId: (column, dimensionId)."""
        return tuple(
            (entry, entry) if isinstance(entry, str) else (entry.column, entry.dimension)
            for entry in self.unpivot_columns
        )

    @model_validator(mode="after")
    def _each_mapping_has_one_source(self) -> StreamSettings:
        """Exactly one of source_field/constant per entry; named by stream and entry, all at once."""
        problems = []
        for number, mapping in enumerate(self.field_mappings, start=1):
            where = f"stream '{self.name}', field_mappings entry {number} (planhat_field '{mapping.planhat_field}')"
            has_source = mapping.source_field is not None
            has_constant = mapping.constant is not None
            if has_source == has_constant:
                problems.append(f"{where}: set exactly one of `source_field` or `constant`")
            elif has_source and not _is_dot_path(mapping.source_field or ""):
                problems.append(
                    f"{where}: `source_field` must be a column name or a dot path such as account.id (no empty parts)"
                )
        for number, (column, _) in enumerate(self.unpivot_pairs, start=1):
            if not column.strip():
                problems.append(f"stream '{self.name}', unpivot_columns entry {number}: must not be empty")
        if self.operation is Operation.ARCHIVE:
            problems.append(
                f"stream '{self.name}': `operation` archive is a delete: set `operation: delete, archive: true`"
            )
        if self.on_source_delete not in (None, SourceDelete.IGNORE) and self.operation not in (None, Operation.UPSERT):
            problems.append(
                f"stream '{self.name}': `on_source_delete` applies to upsert streams only (operation is "
                f"{self.operation.value if self.operation else 'upsert'}): remove it"
            )
        if self.skip_unchanged and self.operation not in (None, Operation.UPSERT, Operation.UPDATE):
            problems.append(f"stream '{self.name}': `skip_unchanged` applies to upserts and updates only: remove it")
        if self.archive and self.operation is not Operation.DELETE:
            problems.append(
                f"stream '{self.name}': `archive: true` applies to deletes only: set `operation: delete` too"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def matches(self, name: str, namespace: Optional[str]) -> bool:
        """An entry without a namespace matches the stream of that name in any namespace."""
        return self.name == name and (self.namespace is None or self.namespace == namespace)


# ----- object_storage_config: where rejected records are stored ---------------------------------
# The platform reads this exact property of a data activation destination's config and, for
# `storage_type: S3`, links `s3://{s3_bucket_name}/{bucket_path}/{job id}/` from the sync's timeline
# (airbyte-platform: ConnectorObjectStorageService.kt, ObjectStoragePathResolver.kt). The fields and
# the hidden defaults are the Kotlin bulk CDK's (load-dlq: ObjectStorageSpec.kt); `Local` is ours.

STORAGE_TAGS = ("None", "S3", "Local")
DEFAULT_PATH_FORMAT = "{sync_id}/{namespace}/{stream_name}/"
DEFAULT_FILE_NAME_FORMAT = "{date}_{timestamp}_{part_number}{format_extension}"
# The variables path_format and file_name_format may use (the CDK's names).
PATH_VARIABLES = ("sync_id", "namespace", "stream_name", "year", "month", "day", "epoch")
FILE_NAME_VARIABLES = ("date", "timestamp", "part_number", "sync_id", "format_extension")
_VARIABLE = re.compile(r"\{(\w+)\}")


class RejectedRecordsFormat(BaseModel):
    """The CDK's hidden `format`: only JSON lines without flattening is written here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_type: Literal["JSONL"] = "JSONL"
    flattening: Literal["No flattening"] = "No flattening"


class RejectedRecordsCompression(BaseModel):
    """The CDK's hidden `compression`: none, or each file gzipped (`.jsonl.gz`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compression_type: Literal["No Compression", "GZIP"] = "No Compression"

    @property
    def gzip(self) -> bool:
        return self.compression_type == "GZIP"


class NoObjectStorage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    storage_type: Literal["None"] = "None"


def _check_template(value: str, allowed: tuple[str, ...]) -> str:
    unknown = sorted({name for name in _VARIABLE.findall(value) if name not in allowed})
    if unknown:
        raise ValueError(
            f"uses unknown variable(s) {', '.join('{' + name + '}' for name in unknown)}; allowed: "
            + ", ".join("{" + name + "}" for name in allowed)
        )
    return value


class S3ObjectStorage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    storage_type: Literal["S3"]
    s3_bucket_name: str = Field(min_length=1)
    s3_bucket_region: str = ""
    bucket_path: str = ""
    access_key_id: Optional[SecretStr] = None
    secret_access_key: Optional[SecretStr] = None
    role_arn: Optional[str] = None
    s3_endpoint: Optional[str] = None
    format: RejectedRecordsFormat = Field(default_factory=RejectedRecordsFormat)
    compression: RejectedRecordsCompression = Field(default_factory=RejectedRecordsCompression)
    path_format: str = DEFAULT_PATH_FORMAT
    file_name_format: str = DEFAULT_FILE_NAME_FORMAT

    @field_validator("s3_bucket_name")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        value = value.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{2,254}", value):
            raise ValueError(
                "must be the name of an S3 bucket (letters, digits, '.', '-' and '_'), without s3:// or a path"
            )
        return value

    @field_validator("access_key_id", "secret_access_key")
    @classmethod
    def _blank_key_is_none(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        if value is None or not value.get_secret_value().strip():
            return None
        return SecretStr(value.get_secret_value().strip())

    @field_validator("role_arn", "s3_endpoint")
    @classmethod
    def _blank_is_none(cls, value: Optional[str]) -> Optional[str]:
        return value.strip() if value is not None and value.strip() else None

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint_https_unless_loopback(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        return https_unless_loopback(
            value,
            "an http(s) URL of an S3-compatible server, such as https://s3.eu-west-1.amazonaws.com",
            "the access keys and the rejected records",
        )

    @field_validator("path_format")
    @classmethod
    def _path_variables(cls, value: str) -> str:
        return _check_template(value, PATH_VARIABLES)

    @field_validator("file_name_format")
    @classmethod
    def _file_variables(cls, value: str) -> str:
        if "{part_number}" not in value:
            raise ValueError("must contain {part_number}: every upload is a new file, and names must not repeat")
        return _check_template(value, FILE_NAME_VARIABLES)

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> S3ObjectStorage:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "object_storage_config: set both `access_key_id` and `secret_access_key`, or neither (then the "
                "credentials come from the environment, or from `role_arn`)"
            )
        return self

    @property
    def region(self) -> Optional[str]:
        return self.s3_bucket_region.strip() or None


class LocalObjectStorage(BaseModel):
    """Ours: the same files in a directory, for `docker run` (mount it) and PyAirbyte users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    storage_type: Literal["Local"]
    local_path: str = Field(min_length=1)

    @field_validator("local_path")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip() or "\x00" in value:
            raise ValueError("must be the path of a directory, such as /local/rejected (in Docker, a mounted volume)")
        return value.strip()


ObjectStorage = Annotated[
    Union[NoObjectStorage, S3ObjectStorage, LocalObjectStorage], Field(discriminator="storage_type")
]


class PlanhatConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_uuid: Optional[SecretStr] = None  # required when a stream goes to Metrics or User Activities (routing)
    api_token: Optional[SecretStr] = None
    batch_size: int = Field(default=10_000, ge=1, le=100_000)
    streams: tuple[StreamSettings, ...] = ()
    analytics_base_url: str = DEFAULT_ANALYTICS_BASE_URL
    region: str = Field(default="", pattern=REGION_PATTERN)
    api_base_url: Optional[str] = None  # None: from `region`
    api_calls_per_minute: int = Field(default=DEFAULT_CALLS_PER_MINUTE, ge=1, le=10_000)
    max_in_flight_requests: int = Field(default=8, ge=1, le=32)
    # After SIGTERM / SIGINT: how long the requests on their way may take (sync/cancellation.py).
    shutdown_grace_seconds: float = Field(default=20.0, ge=0, le=600)
    request_timeout_seconds: float = Field(default=300.0, ge=1, le=3600)
    max_attempts: int = Field(default=8, ge=1, le=50)
    max_retry_seconds: float = Field(default=900.0, ge=0, le=86_400)
    flush_interval_seconds: float = Field(default=60.0, ge=1, le=600)
    progress_interval_seconds: float = Field(default=30.0, ge=1, le=3600)
    invalid_records: InvalidRecords = InvalidRecords.REJECT
    max_error_percent: float = Field(default=100.0, ge=0, le=100)
    # The most deletes (and archives) one sync sends; 0: none (the guard: sync/deletes.py).
    max_deletes: int = Field(default=DEFAULT_MAX_DELETES, ge=0)
    dry_run: bool = False
    retry_initial_delay_seconds: float = Field(default=1.0, ge=0, le=60)
    max_request_body_bytes: int = Field(default=SAFE_BODY_BYTES, ge=MIN_REQUEST_BODY_BYTES, le=SAFE_BODY_BYTES)
    parse_workers: Optional[int] = Field(default=None, ge=0, le=32)  # None: worker_pool.default_worker_count()
    # Where rejected records are stored (rejected/records.py writes them); None stores nothing.
    object_storage_config: ObjectStorage = Field(default_factory=lambda: NoObjectStorage())

    @field_validator("tenant_uuid")
    @classmethod
    def _tenant_is_a_token(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        if value is None:
            return None
        if not re.fullmatch(TENANT_PATTERN, value.get_secret_value().strip()):
            raise ValueError(
                f"must be your Planhat tenant token, letters, digits and dashes only: {WHERE_TENANT_TOKEN}"
            )
        return SecretStr(value.get_secret_value().strip())

    @field_validator("api_token")
    @classmethod
    def _blank_token_is_none(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        if value is None or not value.get_secret_value().strip():
            return None
        token = value.get_secret_value().strip()
        # The token goes into a header: a line break or other control character would let it
        # inject headers (and makes the HTTP library quote the whole value in its error).
        if not re.fullmatch(r"[!-~]+", token):
            raise ValueError("must be one line of visible characters, as Planhat shows it (no spaces or line breaks)")
        return SecretStr(token)

    @field_validator("api_base_url")
    @classmethod
    def _main_https_unless_loopback(cls, value: Optional[str]) -> Optional[str]:
        if value is None or not value.strip():
            return None
        return cls._https_unless_loopback(value)

    @field_validator("analytics_base_url")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        return https_unless_loopback(value, "an http(s) URL such as https://analytics.planhat.com", "tokens")

    @property
    def rejected_records_storage(self) -> Optional[Union[S3ObjectStorage, LocalObjectStorage]]:
        """Where rejected records go, or None (storage_type None)."""
        storage = self.object_storage_config
        return None if isinstance(storage, NoObjectStorage) else storage

    @property
    def tenant(self) -> Optional[str]:
        return self.tenant_uuid.get_secret_value() if self.tenant_uuid else None

    @property
    def main_base_url(self) -> str:
        """The main API's base URL (objects): `api_base_url`, else the host of `region`."""
        return self.api_base_url or main_api_base_url(self.region)

    @property
    def token(self) -> Optional[str]:
        return self.api_token.get_secret_value() if self.api_token else None

    def settings_for(self, name: str, namespace: Optional[str]) -> Optional[StreamSettings]:
        """The most specific `streams` entry for a stream: one naming its namespace wins."""
        matches = [s for s in self.streams if s.matches(name, namespace)]
        matches.sort(key=lambda s: s.namespace is None)
        return matches[0] if matches else None


def _is_dot_path(path: str) -> bool:
    return bool(path) and all(part for part in path.split("."))


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _invisible(character: str) -> bool:
    """Whitespace, a control character, or an invisible format character (a zero-width space, a BOM)."""
    return character.isspace() or unicodedata.category(character) in ("Cc", "Cf")


def https_unless_loopback(value: str, what: str, carried: str) -> str:
    """A base URL, stripped of blanks and its trailing "/": http(s), a host, nothing else in it, and
    https unless the host is this machine (`carried` says what would travel in the clear).

    Whitespace or a control character inside it is refused: urllib drops tabs and line breaks from a
    URL without a word (and other such characters make a host that only fails at the first request),
    so "https://analy<TAB>tics.planhat.com" would otherwise pass the check as another host."""
    if any(_invisible(character) for character in value.strip()):
        raise ValueError("must not contain spaces, tabs, line breaks or other control or invisible characters")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be {what}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, a fragment or credentials")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"must use https: {carried} travel only over TLS (plain http is allowed for "
            "127.0.0.1, ::1 and localhost, e.g. a local test server)"
        )
    return value.strip().rstrip("/")


def upgrade_config(raw: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The config in the form spec.json describes, from the forms earlier versions accepted: a plain
    string in a stream's `unpivot_columns` becomes {"column": ...} (the Airbyte UI draws arrays of
    objects only). Changes `raw` in place and returns it; anything it does not recognise is left for
    validation to name."""
    streams = raw.get("streams")
    for entry in streams if isinstance(streams, list) else ():
        columns = entry.get("unpivot_columns") if isinstance(entry, dict) else None
        if isinstance(columns, list):
            entry["unpivot_columns"] = [{"column": c} if isinstance(c, str) else c for c in columns]
    return raw


def parse_config(raw: Mapping[str, Any]) -> PlanhatConfig:
    """Parse the user's config, or raise one config error that lists every field to fix."""
    try:
        return PlanhatConfig.model_validate(dict(raw))
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors(include_input=False, include_url=False)]
        raise config_error(
            "The configuration is not valid: " + "; ".join(problems) + ".",
        ) from None


def _describe(error: Mapping[str, Any]) -> str:
    loc = list(error["loc"])
    if len(loc) >= 2 and loc[0] == "object_storage_config" and loc[1] in STORAGE_TAGS:
        del loc[1]  # the oneOf's tag (pydantic's discriminator) is not a field the user sees
    field = ".".join(str(part) for part in loc) or "config"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"`{field}` is not a setting of this connector (remove it)"
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
        if message.startswith("stream '"):
            return message  # already names the stream and the entry
    return f"`{field}` {message[0].lower()}{message[1:]}"
