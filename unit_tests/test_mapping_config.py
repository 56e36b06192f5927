"""The mapping settings in spec.json and config.py say the same thing; mistakes are named by stream and entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.config import FieldMapping, InvalidRecords, PlanhatConfig, StreamSettings, parse_config
from destination_planhat.planhat.api import ALL_FIELDS, ENDPOINT_FIELDS, OBJECT_ENDPOINTS, Endpoint
from destination_planhat.sync.ledger import StreamStats
from destination_planhat.sync.reporting import summary_notes

SPEC = json.loads((Path(__file__).resolve().parent.parent / "destination_planhat" / "spec.json").read_text())
PROPERTIES = SPEC["connectionSpecification"]["properties"]
STREAM_ITEM = PROPERTIES["streams"]["items"]
MAPPING_ITEM = STREAM_ITEM["properties"]["field_mappings"]["items"]


def test_the_planhat_field_description_names_every_analytics_field_and_the_endpoints_are_planhat_pys():
    """planhat_field has no enum (objects take custom.<Field name>): its description lists the analytics
    fields, and the endpoint choices are planhat/api.py's."""
    description = MAPPING_ITEM["properties"]["planhat_field"]["description"]
    assert all(field in description for field in ALL_FIELDS)
    assert set(ALL_FIELDS) == set(ENDPOINT_FIELDS[Endpoint.METRICS]) | set(ENDPOINT_FIELDS[Endpoint.USER_ACTIVITIES])
    assert STREAM_ITEM["properties"]["endpoint"]["enum"] == [endpoint.value for endpoint in Endpoint]


def test_the_endpoint_description_lists_every_object_in_planhat_pys_order():
    """spec.json is static: its list of objects is checked against the target descriptions."""
    description = STREAM_ITEM["properties"]["endpoint"]["description"]
    listed = description.split("upserted by its bulk upsert: ", 1)[1].rstrip(".").split(", ")
    assert listed == [endpoint.value for endpoint in OBJECT_ENDPOINTS]


def test_stream_and_mapping_items_have_the_same_fields_in_spec_and_config():
    assert set(STREAM_ITEM["properties"]) == set(StreamSettings.model_fields)
    assert set(MAPPING_ITEM["properties"]) == set(FieldMapping.model_fields)
    assert MAPPING_ITEM["required"] == ["planhat_field"]


@pytest.mark.parametrize(
    "name, spec_default, config_default",
    [
        ("invalid_records", "reject", InvalidRecords.REJECT),
        ("max_error_percent", 100, 100.0),
        ("dry_run", False, False),
    ],
)
def test_new_top_level_fields_have_the_same_defaults(name, spec_default, config_default):
    assert PROPERTIES[name]["default"] == spec_default
    assert PlanhatConfig.model_fields[name].default == config_default


CONFIG_MISTAKES = [
    (
        {"planhat_field": "value"},
        "stream 'orders', field_mappings entry 2 (planhat_field 'value'): set exactly one of `source_field` or `constant`",
    ),
    (
        {"planhat_field": "value", "source_field": "n", "constant": "1"},
        "entry 2 (planhat_field 'value'): set exactly one",
    ),
    (
        {"planhat_field": "value", "source_field": "a..b"},
        "entry 2 (planhat_field 'value'): `source_field` must be a column name or a dot path",
    ),
    ({"planhat_field": "value", "colum": "n"}, "`streams.0.field_mappings.1.colum` is not a setting of this connector"),
]


@pytest.mark.parametrize("entry, message", CONFIG_MISTAKES)
def test_mapping_entry_mistakes_name_the_stream_and_the_entry(entry, message):
    raw = {
        "tenant_uuid": "t-1",
        "streams": [
            {
                "name": "orders",
                "endpoint": "metrics",
                "field_mappings": [{"planhat_field": "externalId", "source_field": "id"}, entry],
            }
        ],
    }
    with pytest.raises(AirbyteTracedException) as raised:
        parse_config(raw)
    assert message in raised.value.message


@pytest.mark.parametrize("value", [-1, 100.5])
def test_max_error_percent_is_a_percentage(value):
    with pytest.raises(AirbyteTracedException, match="max_error_percent"):
        parse_config({"tenant_uuid": "t-1", "max_error_percent": value})


def test_the_invariant_counts_unpivot_items_separately():
    # 10 records -> 3 with no non-null column, 7 with 3 columns each (21 items): 14 extra items.
    stats = StreamStats("wide", read=10, extra_items=14, empty_records=3, sent=19, rejected_locally=2)
    assert stats.invariant_holds()
    assert any("unpivot made 21 items of 10 records" in note for note in summary_notes([stats]))


@pytest.mark.parametrize(
    "rejected_locally, acknowledged, rejected_by_planhat, share",
    [(0, 0, 0, 0.0), (10, 90, 0, 10.0), (0, 100, 25, 25.0), (50, 50, 50, 100.0)],
)
def test_error_share_counts_local_and_planhat_rejections(rejected_locally, acknowledged, rejected_by_planhat, share):
    stats = StreamStats(
        "s", rejected_locally=rejected_locally, acknowledged=acknowledged, rejected_by_planhat=rejected_by_planhat
    )
    assert stats.error_share()[0] == share
