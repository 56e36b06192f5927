from setuptools import find_packages, setup

MAIN_REQUIREMENTS = [
    "airbyte-cdk>=7.39,<8",
    "requests>=2.31,<3",
    "pydantic>=2,<3",
    # decodes and type-checks the common record in C (reading/typed_records.py): about a third of the CPU per record
    "msgspec>=0.18,<1",
    # The main API's calls-per-minute window (planhat/pacing.py); comes with the CDK, declared as used directly.
    "pyrate-limiter>=3.1,<4",
    # Rejected records to S3 or any S3-compatible server (rejected/records.py), STS for role_arn.
    "boto3>=1.34,<2",
]

TEST_REQUIREMENTS = [
    "pytest>=8",
    "requests-mock>=1.11",
    "airbyte-connector-models>=0.1.12",
    # The official Airbyte protocol schema, as pydantic v2 models (destination_planhat/testing/protocol_schema.py).
    "airbyte-protocol-models-pdv2==0.18.0",
    # A real S3-compatible server on loopback for the rejected records tests (moto's server mode).
    "moto[server]>=5,<6",
    # The package is kept free of type errors (unit_tests/test_code_hygiene.py runs it; config in mypy.ini).
    "mypy>=1.10,<3",
    # Lint and format (ruff.toml); `make lint`, run by `make fast` and `make test`.
    "ruff>=0.8,<1",
]

setup(
    name="destination-planhat",
    version="0.3.0",
    description=(
        "Airbyte destination for Planhat: Metrics, User Activities and Planhat's objects (companies, end users, "
        "...), with Airbyte data activation."
    ),
    author="destination-planhat developers",
    license="MIT",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["destination_planhat", "destination_planhat.*"]),
    package_data={"destination_planhat": ["spec.json"]},
    install_requires=MAIN_REQUIREMENTS,
    extras_require={"dev": TEST_REQUIREMENTS},
    entry_points={"console_scripts": ["destination-planhat=destination_planhat.run:run"]},
)
