"""Checks that metadata.yaml follows Airbyte's connector metadata schema.

metadata.yaml is validated twice, against two forms of the official schema shipped in the
`airbyte-connector-models` package:

* the pydantic model `ConnectorMetadataDefinitionV0`, and
* the JSON schema file `ConnectorMetadataDefinitionV0.json`.

The JSON schema file does not pass jsonschema's own meta-schema check, so it is used through
`Draft7Validator(schema).iter_errors(...)` without `check_schema`. It is a bundle: the schemas of
the original YAML files are embedded and keep their own `$id`, while the `$ref`s inside them
(`#/properties/data/properties/...`) point into the root document. Resolved as written, a `$ref`
inside an embedded schema looks in that embedded schema and finds nothing (`PointerToNowhere`),
for example for `registryOverrides.oss.allowedHosts`. `load_json_schema` therefore drops the
`$id` of the embedded schemas, so that those references resolve against the root document, and
any reference to another file is looked up next to the schema file.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import jsonschema
import pydantic
import pytest
import yaml
from airbyte_connector_models.metadata.v0.connector_metadata_definition_v0 import (
    ConnectorMetadataDefinitionV0,
)
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7

CONNECTOR_ROOT = Path(__file__).resolve().parent.parent
METADATA_PATH = CONNECTOR_ROOT / "metadata.yaml"

SCHEMA_PACKAGE = "airbyte_connector_models.metadata.v0"
SCHEMA_FILE_NAME = "ConnectorMetadataDefinitionV0.json"

PLANHAT_ANALYTICS_HOST = "analytics.planhat.com"
BASE_IMAGE_PATTERN = re.compile(r"^docker\.io/airbyte/python-connector-base:\d+\.\d+\.\d+@sha256:[0-9a-f]{64}$")


# --------------------------------------------------------------------------------------------
# Loading and validation helpers
# --------------------------------------------------------------------------------------------


def load_metadata(path: Path = METADATA_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    assert isinstance(document, dict), f"{path} must hold a YAML mapping"
    return document


def _schema_folder() -> Path:
    return Path(str(files(SCHEMA_PACKAGE).joinpath(SCHEMA_FILE_NAME))).parent


def _strip_embedded_ids(node: Any, *, is_root: bool) -> Any:
    """Return a copy of `node` without `$id`/`$schema` on any schema but the root one."""
    if isinstance(node, dict):
        return {
            key: _strip_embedded_ids(value, is_root=False)
            for key, value in node.items()
            if is_root or key not in ("$id", "$schema")
        }
    if isinstance(node, list):
        return [_strip_embedded_ids(item, is_root=False) for item in node]
    return node


def _retrieve_sibling(uri: str) -> Resource:
    """Resolve a `$ref` to another file by looking next to the schema file in the package."""
    name = uri.split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    folder = _schema_folder()
    for candidate in (name, f"{stem}.json", f"{stem}.yaml", f"{stem}.yml"):
        path = folder / candidate
        if candidate and path.is_file():
            text = path.read_text(encoding="utf-8")
            contents = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            return DRAFT7.create_resource(contents)
    raise NoSuchResource(ref=uri)


@lru_cache(maxsize=1)
def load_json_schema() -> dict[str, Any]:
    schema_file = files(SCHEMA_PACKAGE).joinpath(SCHEMA_FILE_NAME)
    assert schema_file.is_file(), f"{SCHEMA_FILE_NAME} not found in {SCHEMA_PACKAGE}"
    raw = json.loads(schema_file.read_text(encoding="utf-8"))
    return _strip_embedded_ids(raw, is_root=True)


@lru_cache(maxsize=1)
def json_schema_validator() -> jsonschema.Draft7Validator:
    schema = load_json_schema()
    root = DRAFT7.create_resource(schema)
    base_uri = _schema_folder().as_uri() + "/"
    registry: Registry = Registry(retrieve=_retrieve_sibling).with_resources(
        [
            (schema["$id"], root),
            (base_uri + SCHEMA_FILE_NAME, root),
        ]
    )
    return jsonschema.Draft7Validator(
        schema,
        registry=registry,
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
    )


def _leaf_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The errors behind an `anyOf`/`oneOf` failure, or the error itself."""
    if not error.context:
        return [error]
    return [leaf for sub in error.context for leaf in _leaf_errors(sub)]


def json_schema_errors(document: dict[str, Any]) -> list[str]:
    lines = []
    for error in json_schema_validator().iter_errors(document):
        path = "/".join(str(part) for part in error.absolute_path) or "<root>"
        lines.append(f"{path}: {error.message}")
        if error.context:
            for leaf in _leaf_errors(error):
                leaf_path = "/".join(str(part) for part in leaf.absolute_path) or "<root>"
                lines.append(f"  because {leaf_path}: {leaf.message}")
    return lines


def pydantic_errors(document: dict[str, Any]) -> list[str]:
    try:
        ConnectorMetadataDefinitionV0.model_validate(document)
    except pydantic.ValidationError as error:
        return [f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()]
    return []


@pytest.fixture(scope="module")
def metadata() -> dict[str, Any]:
    return load_metadata()


@pytest.fixture(scope="module")
def data(metadata: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(metadata.get("data"), dict), "metadata.yaml must have a `data` mapping"
    return metadata["data"]


# --------------------------------------------------------------------------------------------
# Schema validation of the real file
# --------------------------------------------------------------------------------------------


def test_metadata_matches_pydantic_model(metadata: dict[str, Any]) -> None:
    errors = pydantic_errors(metadata)
    for line in errors:
        print(line)
    assert errors == [], "metadata.yaml does not match ConnectorMetadataDefinitionV0:\n" + "\n".join(errors)


def test_metadata_matches_json_schema(metadata: dict[str, Any]) -> None:
    errors = json_schema_errors(metadata)
    for line in errors:
        print(line)
    assert errors == [], f"metadata.yaml does not match {SCHEMA_FILE_NAME}:\n" + "\n".join(errors)


# --------------------------------------------------------------------------------------------
# Fields this connector depends on
# --------------------------------------------------------------------------------------------


def test_spec_version(metadata: dict[str, Any]) -> None:
    assert metadata["metadataSpecVersion"] == "1.0"


def test_identity_fields(data: dict[str, Any]) -> None:
    assert data["connectorType"] == "destination"
    assert data["connectorSubtype"] == "api"
    assert data["dockerRepository"] == "airbyte/destination-planhat"
    assert data["name"] == "Planhat"  # Metrics, User Activities and objects: more than Planhat's analytics
    assert data["documentationUrl"] == "https://docs.airbyte.com/integrations/destinations/planhat"
    assert data["githubIssueLabel"] == "destination-planhat"
    assert data["license"] == "MIT"
    assert data["releaseStage"] == "alpha"
    assert data["supportLevel"] == "community"


def test_docker_image_tag_is_semver(data: dict[str, Any]) -> None:
    assert isinstance(data["dockerImageTag"], str)
    assert re.fullmatch(r"\d+\.\d+\.\d+", data["dockerImageTag"]), data["dockerImageTag"]


def test_definition_id_is_a_uuid(data: dict[str, Any]) -> None:
    definition_id = data["definitionId"]
    assert isinstance(definition_id, str), "definitionId must be a string in the YAML"
    parsed = uuid.UUID(definition_id)
    assert str(parsed) == definition_id.lower()
    assert parsed.version == 4


def test_allowed_hosts_include_planhat_analytics(data: dict[str, Any]) -> None:
    hosts = data["allowedHosts"]["hosts"]
    assert PLANHAT_ANALYTICS_HOST in hosts


def test_base_image_is_pinned_python_connector_base(data: dict[str, Any]) -> None:
    base_image = data["connectorBuildOptions"]["baseImage"]
    assert BASE_IMAGE_PATTERN.fullmatch(base_image), base_image


def test_tags(data: dict[str, Any]) -> None:
    assert "language:python" in data["tags"]
    assert "cdk:python" in data["tags"]


def test_registries_enabled(data: dict[str, Any]) -> None:
    assert data["registryOverrides"]["cloud"]["enabled"] is True
    assert data["registryOverrides"]["oss"]["enabled"] is True


# --------------------------------------------------------------------------------------------
# The validators must reject broken files
# --------------------------------------------------------------------------------------------


def _write_and_reload(tmp_path: Path, document: dict[str, Any]) -> dict[str, Any]:
    broken = tmp_path / "metadata.yaml"
    broken.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_metadata(broken)


def test_validators_reject_missing_connector_type(tmp_path: Path, metadata: dict[str, Any]) -> None:
    document = copy.deepcopy(metadata)
    del document["data"]["connectorType"]
    broken = _write_and_reload(tmp_path, document)

    schema_errors = json_schema_errors(broken)
    print("\n".join(schema_errors))
    assert any("'connectorType' is a required property" in line for line in schema_errors)

    model_errors = pydantic_errors(broken)
    print("\n".join(model_errors))
    assert any(line.startswith("data.connectorType") for line in model_errors)


@pytest.mark.parametrize(
    "required_field",
    load_json_schema()["properties"]["data"]["required"],
)
def test_validators_reject_each_missing_required_field(
    tmp_path: Path, metadata: dict[str, Any], required_field: str
) -> None:
    document = copy.deepcopy(metadata)
    assert required_field in document["data"], f"metadata.yaml lacks required {required_field}"
    del document["data"][required_field]
    broken = _write_and_reload(tmp_path, document)

    assert any(f"'{required_field}' is a required property" in e for e in json_schema_errors(broken))
    assert pydantic_errors(broken), f"pydantic model accepted metadata without {required_field}"


@pytest.mark.parametrize(
    ("field", "bad_value"),
    [
        ("connectorType", "sink"),
        ("connectorSubtype", "rest"),
        ("releaseStage", "community"),
        ("supportLevel", "alpha"),
        ("unknownField", "x"),
    ],
)
def test_validators_reject_invalid_values(tmp_path: Path, metadata: dict[str, Any], field: str, bad_value: str) -> None:
    document = copy.deepcopy(metadata)
    document["data"][field] = bad_value
    broken = _write_and_reload(tmp_path, document)

    assert json_schema_errors(broken), f"JSON schema accepted data.{field}={bad_value!r}"
    assert pydantic_errors(broken), f"pydantic model accepted data.{field}={bad_value!r}"


def test_pydantic_model_rejects_non_uuid_definition_id(metadata: dict[str, Any]) -> None:
    # Draft 7 has no `uuid` format, so only the pydantic model and the test above catch this.
    document = copy.deepcopy(metadata)
    document["data"]["definitionId"] = "not-a-uuid"
    assert any(line.startswith("data.definitionId") for line in pydantic_errors(document))


def test_json_schema_resolves_refs_inside_embedded_schemas(metadata: dict[str, Any]) -> None:
    # registryOverrides.oss is an embedded schema whose `allowedHosts` is a `$ref` into the root.
    document = copy.deepcopy(metadata)
    overrides = document["data"]["registryOverrides"]
    overrides["oss"]["allowedHosts"] = {"hosts": [PLANHAT_ANALYTICS_HOST]}
    overrides["cloud"]["allowedHosts"] = {"hosts": [PLANHAT_ANALYTICS_HOST]}
    assert json_schema_errors(document) == []

    overrides["oss"]["allowedHosts"] = {"hosts": "not-a-list"}
    errors = json_schema_errors(document)
    assert any("registryOverrides/oss/allowedHosts/hosts" in line for line in errors), errors


def test_data_activation_is_declared_and_refreshes_are_not() -> None:
    """The platform runs `discover` (and reads `object_storage_config`) only for a destination whose
    metadata declares data activation; refreshes stay off because Planhat cannot remove older
    generations of a stream (see the comment in metadata.yaml)."""
    data = load_metadata()["data"]
    assert data["supportsDataActivation"] is True
    assert data["supportsRefreshes"] is False
    assert ConnectorMetadataDefinitionV0.model_validate(load_metadata()).data.supports_data_activation is True


def test_the_icon_is_an_svg_file_of_the_connector() -> None:
    """Airbyte shows a connector's icon (metadata.yaml `icon`, the file beside it) in the catalog and the UI."""
    icon = load_metadata()["data"]["icon"]
    path = CONNECTOR_ROOT / icon
    assert path.suffix == ".svg" and path.is_file(), path
    root = ElementTree.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("viewBox"), "a viewBox lets the UI scale the icon"
