"""Template builds through the unmodified `e2b` SDK against `hearth up`
(real build VMs). run-node.sh starts hearth (with the host's CA bundle, so
build steps reach the package registries) and a local OCI registry, and
exports HEARTH_TEST_REGISTRY and PUSH_IMAGE_BIN for the image tests."""

import os

for _var in ("E2B_API_URL", "E2B_DOMAIN", "E2B_API_KEY"):
    if not os.environ.get(_var):
        raise RuntimeError(f"{_var} is not set: run tests/conformance/run-node.sh")
os.environ.pop("E2B_DEBUG", None)


import httpx
import pytest


@pytest.fixture(autouse=True, scope="session")
def delete_built_templates():
    """Templates the tests build are deleted afterwards: the data directory
    outlives the test run."""
    yield
    api = os.environ["E2B_API_URL"]
    headers = {"X-API-Key": os.environ["E2B_API_KEY"]}
    for template in httpx.get(f"{api}/templates", headers=headers, timeout=30).json():
        if not template.get("public"):
            httpx.delete(f"{api}/templates/{template['templateID']}", headers=headers, timeout=60)
