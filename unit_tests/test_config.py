"""The config, as a table: what parses, and for what does not, one error naming each bad field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from jsonschema import Draft7Validator

from destination_planhat.config import S3ObjectStorage, parse_config, upgrade_config
from destination_planhat.planhat.api import DEFAULT_ANALYTICS_BASE_URL, Endpoint

SECRET_TENANT = "tenant-0000-SECRET"
SECRET_TOKEN = "tok-SECRET-value-123"


def raw(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"tenant_uuid": SECRET_TENANT, "api_token": SECRET_TOKEN}
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not ...}


def test_defaults():
    parsed = parse_config({"tenant_uuid": SECRET_TENANT})
    assert parsed.tenant == SECRET_TENANT
    assert parsed.token is None
    assert parsed.batch_size == 10_000
    assert parsed.streams == ()
    assert parsed.analytics_base_url == DEFAULT_ANALYTICS_BASE_URL


@pytest.mark.parametrize(
    "overrides, attribute, expected",
    [
        ({"batch_size": 1}, "batch_size", 1),
        ({"batch_size": 100_000}, "batch_size", 100_000),
        ({"tenant_uuid": "  abc-DEF-123  "}, "tenant", "abc-DEF-123"),
        ({"api_token": "  tok  "}, "token", "tok"),
        ({"api_token": ""}, "token", None),
        ({"api_token": "   "}, "token", None),
        ({"api_token": ...}, "token", None),
        (
            {"analytics_base_url": "https://proxy.example.com/planhat/"},
            "analytics_base_url",
            "https://proxy.example.com/planhat",
        ),
        ({"analytics_base_url": "http://127.0.0.1:8080"}, "analytics_base_url", "http://127.0.0.1:8080"),
        ({"analytics_base_url": "http://localhost:8080"}, "analytics_base_url", "http://localhost:8080"),
        ({"analytics_base_url": "http://[::1]:8080"}, "analytics_base_url", "http://[::1]:8080"),
        ({"analytics_base_url": "http://127.5.6.7"}, "analytics_base_url", "http://127.5.6.7"),
        ({"max_in_flight_requests": 1}, "max_in_flight_requests", 1),
        ({"max_in_flight_requests": 32}, "max_in_flight_requests", 32),
        ({"request_timeout_seconds": 1}, "request_timeout_seconds", 1),
        ({"request_timeout_seconds": 3600}, "request_timeout_seconds", 3600),
        ({"max_attempts": 1}, "max_attempts", 1),
        ({"max_attempts": 50}, "max_attempts", 50),
        ({"max_retry_seconds": 0}, "max_retry_seconds", 0),
        ({"max_retry_seconds": 86_400}, "max_retry_seconds", 86_400),
        ({"flush_interval_seconds": 1}, "flush_interval_seconds", 1),
        ({"flush_interval_seconds": 600}, "flush_interval_seconds", 600),
    ],
)
def test_valid_values(overrides, attribute, expected):
    assert getattr(parse_config(raw(**overrides)), attribute) == expected


@pytest.mark.parametrize(
    "overrides, fields",
    [
        # A missing tenant_uuid is a routing problem (only analytics streams need it): test_objects_config.py
        ({"api_base_url": "http://api.planhat.com"}, ["api_base_url"]),
        ({"region": "us2/evil"}, ["region"]),
        ({"api_calls_per_minute": 0}, ["api_calls_per_minute"]),
        ({"streams": [{"name": "a", "endpoint": "companies", "match_on": "email"}]}, ["streams.0.match_on"]),
        ({"tenant_uuid": ""}, ["tenant_uuid"]),
        ({"tenant_uuid": "   "}, ["tenant_uuid"]),
        ({"tenant_uuid": "SECRET/../x"}, ["tenant_uuid"]),
        ({"tenant_uuid": "SECRET tenant"}, ["tenant_uuid"]),
        ({"tenant_uuid": "SECRET?x=1"}, ["tenant_uuid"]),
        ({"tenant_uuid": "SECRET_under"}, ["tenant_uuid"]),
        ({"batch_size": 0}, ["batch_size"]),
        ({"batch_size": 100_001}, ["batch_size"]),
        ({"batch_size": "many"}, ["batch_size"]),
        ({"max_in_flight_requests": 0}, ["max_in_flight_requests"]),
        ({"max_in_flight_requests": 33}, ["max_in_flight_requests"]),
        ({"request_timeout_seconds": 0.5}, ["request_timeout_seconds"]),
        ({"request_timeout_seconds": 3601}, ["request_timeout_seconds"]),
        ({"max_attempts": 0}, ["max_attempts"]),
        ({"max_attempts": 51}, ["max_attempts"]),
        ({"max_retry_seconds": -1}, ["max_retry_seconds"]),
        ({"max_retry_seconds": 86_401}, ["max_retry_seconds"]),
        ({"flush_interval_seconds": 0}, ["flush_interval_seconds"]),
        ({"flush_interval_seconds": 601}, ["flush_interval_seconds"]),
        ({"analytics_base_url": "http://analytics.planhat.com"}, ["analytics_base_url"]),
        ({"analytics_base_url": "http://10.0.0.1:8080"}, ["analytics_base_url"]),
        ({"analytics_base_url": "ftp://analytics.planhat.com"}, ["analytics_base_url"]),
        ({"analytics_base_url": "analytics.planhat.com"}, ["analytics_base_url"]),
        ({"analytics_base_url": "https://user:SECRET@analytics.planhat.com"}, ["analytics_base_url"]),
        ({"analytics_base_url": "https://analytics.planhat.com?x=1"}, ["analytics_base_url"]),
        ({"streams": [{"name": "a", "endpoint": "crm"}]}, ["streams.0.endpoint"]),
        ({"streams": [{"name": "", "endpoint": "metrics"}]}, ["streams.0.name"]),
        ({"streams": [{"endpoint": "metrics"}]}, ["streams.0.name"]),
        ({"streams": [{"name": "a"}]}, ["streams.0.endpoint"]),
        ({"streams": [{"name": "a", "endpoint": "metrics", "colour": "red"}]}, ["streams.0.colour"]),
        ({"tenant_id": "x"}, ["tenant_id"]),
        # Every bad field is reported in the same error, not one per attempt.
        (
            {"tenant_uuid": "SECRET tenant", "batch_size": 0, "max_attempts": 0, "surprise": 1},
            ["tenant_uuid", "batch_size", "max_attempts", "surprise"],
        ),
    ],
)
def test_invalid_values_raise_one_config_error_naming_each_field(overrides, fields):
    with pytest.raises(AirbyteTracedException) as raised:
        parse_config(raw(**overrides))
    error = raised.value
    assert error.failure_type == FailureType.config_error
    for field in fields:
        assert f"`{field}`" in error.message
    for text in (error.message, error.internal_message or ""):
        assert "SECRET" not in text, "a validation error quoted a secret value"


S3 = {"storage_type": "S3", "s3_bucket_name": "my-bucket", "s3_bucket_region": "us-east-1"}
BASE_URL_FIELDS = {
    "analytics_base_url": lambda url: {"analytics_base_url": url},
    "api_base_url": lambda url: {"api_base_url": url},
    "object_storage_config.s3_endpoint": lambda url: {"object_storage_config": {**S3, "s3_endpoint": url}},
}


@pytest.mark.parametrize("field", BASE_URL_FIELDS)
@pytest.mark.parametrize(
    "url",
    [
        "https://analy\ttics.planhat.com",  # urllib would drop the tab and reach another host
        "https://analytics.planhat.com\n.evil.example",
        "https://analytics planhat.com",
        "https://analytics.planhat.com/\x00",
        "https://analytics.planhat.com\x7f",
        "https://analytics\u200b.planhat.com",  # a zero-width space
        "https://analytics.planhat.com\u00a0/",  # a no-break space
    ],
)
def test_a_base_url_with_whitespace_or_control_characters_is_refused_naming_the_field(field, url):
    with pytest.raises(AirbyteTracedException) as raised:
        parse_config(raw(**BASE_URL_FIELDS[field](url)))
    assert raised.value.failure_type == FailureType.config_error
    assert f"`{field}` must not contain spaces, tabs, line breaks or other control" in raised.value.message


@pytest.mark.parametrize("field", BASE_URL_FIELDS)
def test_blanks_around_a_base_url_are_trimmed(field):
    parsed = parse_config(raw(**BASE_URL_FIELDS[field](" https://proxy.example.com/\n")))
    storage = parsed.rejected_records_storage
    s3_endpoint = storage.s3_endpoint if isinstance(storage, S3ObjectStorage) else None
    value = {
        "analytics_base_url": parsed.analytics_base_url,
        "api_base_url": parsed.api_base_url,
        "object_storage_config.s3_endpoint": s3_endpoint,
    }[field]
    assert value == "https://proxy.example.com"


def test_unknown_key_says_to_remove_it():
    with pytest.raises(AirbyteTracedException) as raised:
        parse_config(raw(tenant_id="x"))
    assert "remove" in raised.value.message


def test_stream_overrides_parse_to_endpoints():
    parsed = parse_config(
        raw(
            streams=[
                {"name": "a", "endpoint": "metrics"},
                {"name": "b", "namespace": "n", "endpoint": "user_activities"},
            ]
        )
    )
    assert [(s.name, s.namespace, s.endpoint) for s in parsed.streams] == [
        ("a", None, Endpoint.METRICS),
        ("b", "n", Endpoint.USER_ACTIVITIES),
    ]


def test_secrets_are_not_in_the_config_repr():
    parsed = parse_config(raw())
    assert SECRET_TENANT not in repr(parsed) and SECRET_TOKEN not in repr(parsed)


def _spec_properties() -> dict[str, Any]:
    import logging

    from destination_planhat.destination import DestinationPlanhat

    spec = DestinationPlanhat().spec(logging.getLogger("airbyte"))
    return spec.connectionSpecification["properties"]


def test_spec_and_config_know_the_same_fields():
    from destination_planhat.config import PlanhatConfig

    assert set(_spec_properties()) == set(PlanhatConfig.model_fields)


@pytest.mark.parametrize(
    "name",
    [
        "batch_size",
        "max_in_flight_requests",
        "request_timeout_seconds",
        "max_attempts",
        "max_retry_seconds",
        "flush_interval_seconds",
    ],
)
def test_spec_bounds_are_the_config_bounds(name):
    prop = _spec_properties()[name]
    step = 1 if prop["type"] == "integer" else 0.001
    assert getattr(parse_config(raw(**{name: prop["minimum"]})), name) == prop["minimum"]
    assert getattr(parse_config(raw(**{name: prop["maximum"]})), name) == prop["maximum"]
    assert getattr(parse_config(raw()), name) == prop["default"]
    for outside in (prop["minimum"] - step, prop["maximum"] + step):
        with pytest.raises(AirbyteTracedException, match=name):
            parse_config(raw(**{name: outside}))


# ----- unpivot_columns: objects in the form, the short form of 0.2 still read ---------------------


def test_unpivot_entries_are_objects_in_the_spec_and_short_strings_are_upgraded():
    spec = json.loads((Path(__file__).resolve().parent.parent / "destination_planhat" / "spec.json").read_text())
    validator = Draft7Validator(spec["connectionSpecification"])
    old = {
        "streams": [
            {
                "name": "daily",
                "endpoint": "metrics",
                "unpivot_columns": ["mrr", {"column": "active users", "dimension_id": "active_users"}],
            }
        ]
    }
    assert list(validator.iter_errors(old))  # the form draws objects only

    upgraded = upgrade_config(json.loads(json.dumps(old)))

    assert upgraded["streams"][0]["unpivot_columns"] == [
        {"column": "mrr"},
        {"column": "active users", "dimension_id": "active_users"},
    ]
    assert not list(validator.iter_errors(upgraded))
    settings = parse_config(upgraded).streams[0]
    assert settings.unpivot_pairs == (("mrr", "mrr"), ("active users", "active_users"))
    assert parse_config(old).streams[0].unpivot_pairs == settings.unpivot_pairs  # the model reads both forms


def test_upgrade_config_leaves_what_it_does_not_recognise_to_validation():
    odd = {"streams": "not a list", "other": [1]}
    assert upgrade_config(dict(odd)) == odd
    assert upgrade_config({"streams": [5, {"unpivot_columns": [7]}]}) == {"streams": [5, {"unpivot_columns": [7]}]}
