"""The CDK's standard connector tests, driven by acceptance-test-config.yml.

What runs here (in-process, `DestinationTestSuiteBase`):
- `test_check` for every config under `connection`: the sandbox config must report SUCCEEDED, the
  wrong-token and schema-invalid configs FAILED; and, for each, no `airbyte_secret` value of the
  config may appear in anything the connector printed.
- `test_config_matches_spec` for every config under `spec`.
- `test_spec` (added here: the CDK's destination base has none in-process): exactly one SPEC
  message that passes the CDK's spec lint, the one its Docker test applies to the image.
What is skipped, and why: see conftest.py (`requires_creds` without secrets/config.json,
`image_tests` without a Docker engine) and the README, "The CDK's standard tests".

The sandbox listens on a free port, which acceptance-test-config.yml cannot know. The session
fixture below starts it and writes the configs that the YAML names under
integration_tests/generated/, before any scenario reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airbyte_cdk.test.standard_tests import DestinationTestSuiteBase
from airbyte_cdk.test.standard_tests._job_runner import run_test_job
from airbyte_cdk.test.standard_tests._spec_lint import assert_spec_is_valid, get_single_spec

from destination_planhat.destination import DestinationPlanhat
from destination_planhat.testing.sandbox import PlanhatSandbox

CONNECTOR_ROOT = Path(__file__).resolve().parent.parent
GENERATED = CONNECTOR_ROOT / "integration_tests" / "generated"

# Long enough and with digits, so the CDK's leak check searches the output for them (it skips
# values shorter than 8 characters or without a digit, which occur in output by coincidence).
TENANT = "std-suite-tenant-7301"
API_TOKEN = "std-suite-api-token-58214"
WRONG_API_TOKEN = "std-suite-wrong-token-99120"


def generated_configs(url: str) -> dict[str, dict[str, Any]]:
    """The configs acceptance-test-config.yml lists under integration_tests/generated/."""
    valid = {"tenant_uuid": TENANT, "api_token": API_TOKEN, "analytics_base_url": url}
    return {
        "sandbox_config.json": valid,
        "sandbox_wrong_api_token_config.json": {**valid, "api_token": WRONG_API_TOKEN},
    }


@pytest.fixture(scope="session", autouse=True)
def standard_suite_sandbox() -> Iterator[PlanhatSandbox]:
    """One sandbox for the whole suite, and the configs pointing at it; both removed at the end."""
    sandbox = PlanhatSandbox(tenant=TENANT, api_token=API_TOKEN).start()
    GENERATED.mkdir(exist_ok=True)
    written: dict[Path, str] = {}
    try:
        for name, config in generated_configs(sandbox.url).items():
            path = GENERATED / name
            text = json.dumps(config, indent=2)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(text)
            temporary.replace(path)  # atomic: a concurrent run never reads half a file
            written[path] = text
        yield sandbox
    finally:
        sandbox.stop()
        for path, text in written.items():
            # Leave a file another run has rewritten since (it points at that run's sandbox).
            if path.is_file() and path.read_text() == text:
                path.unlink()


class TestDestinationPlanhatStandardSuite(DestinationTestSuiteBase):
    # The CDK derives both from the folder name otherwise, which is not the connector's name here
    # (a clone or a worktree can be called anything).
    connector = DestinationPlanhat
    connector_name = "destination-planhat"

    def test_spec(self) -> None:
        result = run_test_job(
            self.create_connector(scenario=None),
            "spec",
            connector_root=self.get_connector_root_dir(),
        )
        spec = get_single_spec(result, connector_name=self.connector_name)
        assert_spec_is_valid(spec, connector_name=self.connector_name)


EXPECTED_SCENARIOS = {
    # scenario id: (commands it runs, declared check status)
    "sandbox_config": ({"spec", "check"}, "succeed"),
    "sandbox_wrong_api_token_config": ({"spec", "check"}, "failed"),
    "invalid_config": ({"check"}, "failed"),
    "config": ({"spec", "check"}, "succeed"),
}


def test_acceptance_config_declares_every_scenario() -> None:
    """A typo in acceptance-test-config.yml must not silently drop a scenario from the suite."""
    scenarios = TestDestinationPlanhatStandardSuite.get_scenarios()
    found = {scenario.id: (set(scenario.commands), scenario.status) for scenario in scenarios}
    assert found == EXPECTED_SCENARIOS


def test_the_sandbox_scenarios_reach_the_sandbox(standard_suite_sandbox: PlanhatSandbox) -> None:
    """The valid scenario's check really talks to the sandbox: a test of `check` that never sent a
    request would prove nothing."""
    scenario = next(s for s in TestDestinationPlanhatStandardSuite.get_scenarios() if s.id == "sandbox_config")
    before = len(standard_suite_sandbox.requests)
    TestDestinationPlanhatStandardSuite().test_check(scenario)
    checked = {(r.endpoint, r.status, r.items) for r in standard_suite_sandbox.requests[before:]}
    assert checked == {("user_activities", 200, 0), ("metrics", 200, 0)}
