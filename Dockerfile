# Image for destination-planhat, in the style of Airbyte's Python connectors.
# The FROM image must stay identical to data.connectorBuildOptions.baseImage in metadata.yaml,
# and the labels to dockerImageTag / dockerRepository (unit_tests/test_dockerfile.py checks both).
FROM docker.io/airbyte/python-connector-base:4.0.2@sha256:9fdb1888c4264cf6fee473649ecb593f56f58e5d0096a87ee0b231777e2e3e73

WORKDIR /airbyte/integration_code

# Packaging files first, then the code, then install the connector and its dependencies.
COPY setup.py README.md ./
COPY main.py ./
COPY destination_planhat ./destination_planhat
RUN pip install --no-cache-dir .

ENV AIRBYTE_ENTRYPOINT="python /airbyte/integration_code/main.py"
ENTRYPOINT ["python", "/airbyte/integration_code/main.py"]

# The base image creates the non-root `airbyte` user (uid 1000); run the connector as that user,
# as Airbyte's own Python connector images do.
USER airbyte

LABEL io.airbyte.version=0.3.0
LABEL io.airbyte.name=airbyte/destination-planhat
