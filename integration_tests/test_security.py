"""Security: what may go into a URL, where tokens travel, and that no output ever shows a secret.

Every CLI run here goes through testing/cli.run_cli, which fails on any form of `tenant_uuid` or
`api_token` in stdout or stderr (our own check, then the CDK's `assert_no_secrets_in_output`). The
tests about secrets in the output run the connector as a process (marked `process`): all of what it
prints, the interpreter's and the parse workers' stderr included.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from destination_planhat.config import TENANT_PATTERN, parse_config
from destination_planhat.planhat.api import TENANT_TOKEN_PATTERN
from destination_planhat.planhat.client import PlanhatClient
from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import REPO_ROOT
from destination_planhat.testing.sandbox import METRICS, USER_ACTIVITIES, PlanhatSandbox
from destination_planhat.testing.sync_checks import (
    EXPECTED_PATHS,
    SECRET_API_TOKEN,
    SECRET_TENANT,
    Workload,
    check_sync,
    connector_config,
    mixed_workload,
)

SPEC = json.loads((REPO_ROOT / "destination_planhat" / "spec.json").read_text())["connectionSpecification"]


def test_the_spec_marks_both_credentials_secret_and_constrains_the_tenant():
    properties = SPEC["properties"]
    assert properties["tenant_uuid"]["airbyte_secret"] is True
    assert properties["api_token"]["airbyte_secret"] is True
    assert properties["tenant_uuid"]["pattern"] == TENANT_TOKEN_PATTERN == TENANT_PATTERN


@pytest.mark.process
def test_spec_prints_no_secret(tmp_path):
    run = run_cli("spec", tmp_path, process=True)
    assert run.returncode == 0 and run.of_type("SPEC")


# Tenant values that would change the URL a request goes to, each carrying a recognizable secret.
HOSTILE_TENANTS = {
    "a path traversal": f"{SECRET_TENANT}/../../admin",
    "a second path segment": f"{SECRET_TENANT}/x",
    "a query string": f"{SECRET_TENANT}?redirect=1",
    "a fragment": f"{SECRET_TENANT}#frag",
    "percent-encoding": f"{SECRET_TENANT}%2F..",
    "a space": f"{SECRET_TENANT} x",
    "a non-ASCII letter": f"{SECRET_TENANT}é",
    "a line break": f"{SECRET_TENANT}\nHost: evil.example",
}


@pytest.mark.parametrize("tenant", HOSTILE_TENANTS.values(), ids=HOSTILE_TENANTS.keys())
def test_the_config_refuses_a_tenant_that_is_not_a_token(tenant):
    with pytest.raises(AirbyteTracedException) as raised:
        parse_config({"tenant_uuid": tenant, "api_token": SECRET_API_TOKEN})
    assert raised.value.failure_type == FailureType.config_error
    assert "`tenant_uuid`" in raised.value.message and SECRET_TENANT not in raised.value.message


@pytest.mark.parametrize("name", ["a path traversal", "a query string", "a line break"])
def test_check_refuses_a_tenant_that_is_not_a_token(name, planhat, tmp_path):
    run = run_cli("check", tmp_path, config=connector_config(planhat, tenant_uuid=HOSTILE_TENANTS[name]))

    assert run.connection_status["status"] == "FAILED"
    assert "`tenant_uuid`" in run.connection_status["message"]
    assert planhat.requests == []


def test_write_refuses_a_tenant_that_is_not_a_token(planhat, tmp_path):
    workload = mixed_workload(10, 10)
    config = connector_config(planhat, tenant_uuid=HOSTILE_TENANTS["a path traversal"])

    run = run_cli("write", tmp_path, watch=planhat, config=config, catalog=workload.catalog(), stdin=workload.encode())

    assert [e["failure_type"] for e in run.errors] == ["config_error"]
    assert "`tenant_uuid`" in run.errors[0]["message"]
    assert planhat.requests == [] and run.states == []


@pytest.mark.parametrize("tenant", HOSTILE_TENANTS.values(), ids=HOSTILE_TENANTS.keys())
def test_the_client_builds_no_url_from_unchecked_text(tenant):
    with pytest.raises(ValueError) as raised:
        PlanhatClient("https://analytics.planhat.com", tenant, SECRET_API_TOKEN)
    assert SECRET_TENANT not in str(raised.value) and "`tenant_uuid`" in str(raised.value)


def test_an_api_token_that_could_inject_headers_is_refused(planhat, tmp_path):
    config = connector_config(planhat, api_token=f"{SECRET_API_TOKEN}\r\nX-Injected: 1")

    run = run_cli("check", tmp_path, config=config)

    assert run.connection_status["status"] == "FAILED"
    assert "`api_token`" in run.connection_status["message"]
    assert planhat.requests == []


BASE_URLS = {
    # url -> refused (True) or allowed (False)
    "http to a public host": ("http://analytics.planhat.com", True),
    "http to a host that only starts like loopback": ("http://127.0.0.1.nip.io:8080", True),
    "http to localhost.<domain>": ("http://localhost.example.com:8080", True),
    "credentials in the URL": ("https://user:secret@analytics.planhat.com", True),
    "a query string": ("https://analytics.planhat.com/?x=1", True),
    "not http at all": ("ftp://analytics.planhat.com", True),
    "https to Planhat": ("https://analytics.planhat.com", False),
    "https to a proxy": ("https://planhat-proxy.internal.example:8443/planhat", False),
    "http to 127.0.0.1": ("http://127.0.0.1:8080", False),
    "http to localhost": ("http://localhost:8080", False),
    "http to another 127/8 address": ("http://127.0.0.2:8080", False),
    "http to ::1": ("http://[::1]:8080", False),
}


@pytest.mark.parametrize("url, refused", BASE_URLS.values(), ids=BASE_URLS.keys())
def test_plain_http_only_to_loopback(url, refused):
    config = {"tenant_uuid": SECRET_TENANT, "analytics_base_url": url}
    if refused:
        with pytest.raises(AirbyteTracedException) as raised:
            parse_config(config)
        assert "`analytics_base_url`" in raised.value.message
    else:
        assert parse_config(config).analytics_base_url == url.rstrip("/")


def test_check_refuses_plain_http_to_a_public_host(planhat, tmp_path):
    run = run_cli(
        "check", tmp_path, config=connector_config(planhat, analytics_base_url="http://analytics.planhat.com")
    )

    assert run.connection_status["status"] == "FAILED"
    assert "`analytics_base_url` must use https" in run.connection_status["message"]


def test_check_sends_the_bearer_token_to_metrics_only(planhat, tmp_path):
    run = run_cli("check", tmp_path, config=connector_config(planhat))

    assert run.connection_status == {"status": "SUCCEEDED"}
    by_endpoint = {r.endpoint: r for r in planhat.requests}
    assert set(by_endpoint) == {METRICS, USER_ACTIVITIES}
    assert by_endpoint[METRICS].authorization_matched
    assert not by_endpoint[USER_ACTIVITIES].authorization_present
    assert all(r.path == EXPECTED_PATHS[r.endpoint] for r in planhat.requests)


def test_a_redirect_is_not_followed(planhat, tmp_path):
    """A redirected POST would carry the token and the data elsewhere: the connector refuses to follow."""
    elsewhere = f"{planhat.url}/analytics/bulk/{SECRET_TENANT}"
    planhat.set_faults(script=[{"kind": "status", "status": 307, "headers": {"Location": elsewhere}}])
    workload = Workload().stream("usage", METRICS).records("usage", 20, state_every=10)

    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=connector_config(planhat),
        catalog=workload.catalog(),
        stdin=workload.encode(),
    )

    check_sync(run, workload, planhat, failure_type="system_error")
    assert "a redirect, which is not followed" in run.errors[0]["message"]
    assert len(planhat.requests) == 1 and planhat.requests[0].endpoint == METRICS


# ----- TLS: certificates are verified ------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """A throw-away CA and a certificate for 127.0.0.1 signed by it."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "destination-planhat test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
def tls_planhat(certificates) -> Iterator[PlanhatSandbox]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates["cert"], certificates["key"])
    with PlanhatSandbox(tenant=SECRET_TENANT, api_token=SECRET_API_TOKEN, ssl_context=context) as sandbox:
        yield sandbox


def _without_ca_overrides() -> dict[str, Any]:
    return {"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "", "SSL_CERT_FILE": ""}


def test_an_untrusted_certificate_stops_the_sync_before_anything_is_sent(tls_planhat, tmp_path):
    workload = mixed_workload(20, 20)

    run = run_cli(
        "write",
        tmp_path,
        watch=tls_planhat,
        config=connector_config(tls_planhat),
        catalog=workload.catalog(),
        stdin=workload.encode(),
        extra_env=_without_ca_overrides(),
    )

    check_sync(run, workload, tls_planhat, failure_type="config_error")
    message = run.errors[0]["message"]
    assert "certificate verify failed" in message and "`analytics_base_url`" in message, message
    assert tls_planhat.requests == [] and run.states == []
    assert not run.log_lines("retrying"), "a certificate that cannot be verified is not retried"


def test_check_reports_an_untrusted_certificate(tls_planhat, tmp_path):
    run = run_cli("check", tmp_path, config=connector_config(tls_planhat), extra_env=_without_ca_overrides())

    assert run.connection_status["status"] == "FAILED"
    assert "certificate verify failed" in run.connection_status["message"]
    assert tls_planhat.requests == []


def test_a_trusted_certificate_works(tls_planhat, certificates, tmp_path):
    """The same server, once its CA is trusted: verification is on, and it is the only obstacle."""
    workload = mixed_workload(200, 100)

    run = run_cli(
        "write",
        tmp_path,
        watch=tls_planhat,
        config=connector_config(tls_planhat, batch_size=50),
        catalog=workload.catalog(),
        stdin=workload.encode(),
        extra_env={"REQUESTS_CA_BUNDLE": str(certificates["ca"])},
    )

    sync = check_sync(run, workload, tls_planhat)
    assert sum(sync.duplicates.values()) == 0


# ----- secrets: failures that carry the config or a request --------------------------------------


@pytest.mark.process
def test_no_secret_in_any_output_when_credentials_are_refused(planhat, tmp_path):
    planhat.set_faults(
        script=[{"kind": "status", "status": 401, "body": f'{{"message": "bad token {SECRET_API_TOKEN[:6]}"}}'}]
    )
    run = run_cli("check", tmp_path, config=connector_config(planhat, max_attempts=1), process=True)
    assert run.connection_status["status"] == "FAILED"


@pytest.mark.process
def test_no_secret_in_output_when_the_config_has_the_wrong_types(planhat, tmp_path):
    """pydantic and jsonschema both quote the input in their errors; neither may reach the output."""
    config = connector_config(planhat, tenant_uuid=71_234_567_890, api_token=["pat", SECRET_API_TOKEN])

    run = run_cli("check", tmp_path, config=config, process=True)

    assert run.connection_status["status"] == "FAILED"
    assert "`tenant_uuid`" in run.connection_status["message"] and "`api_token`" in run.connection_status["message"]
    assert SECRET_API_TOKEN not in run.stdout + run.stderr


@pytest.mark.process
def test_no_secret_in_output_when_write_crashes(planhat, tmp_path):
    """An unexpected exception (a catalog that is not a catalog): its TRACE carries a stack trace."""
    workload = mixed_workload(5, 5)

    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=connector_config(planhat),
        catalog={"streams": [{"stream": 5}]},
        stdin=workload.encode(),
        process=True,
    )

    assert run.returncode != 0 and len(run.errors) == 1 and run.errors[0]["stack_trace"]
    assert planhat.requests == []
