"""Turn one Airbyte record into the Planhat item(s) it stands for.

A mapper is built once per stream and called once per record, so the per-record work is a loop
over the endpoint's few fields, not over the record's columns.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from destination_planhat.planhat import ENDPOINT_FIELDS
from destination_planhat.routing import StreamRoute

Item = dict[str, Any]
Mapper = Callable[[Mapping[str, Any]], Sequence[Item]]


class RecordRejected(Exception):
    """A record that cannot become a valid Planhat item; `reason` is counted and logged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def build_mapper(route: StreamRoute) -> Mapper:
    """The mapper for a stream: the record's fields named like the endpoint's fields, nulls left out.

    Airbyte's own `_ab_*` columns and every column Planhat does not know are not sent.
    """
    fields = ENDPOINT_FIELDS[route.endpoint]

    def map_record(data: Mapping[str, Any]) -> Sequence[Item]:
        item: Item = {}
        for field in fields:
            value = data.get(field)
            if value is not None:
                item[field] = value
        return (item,)

    return map_record
