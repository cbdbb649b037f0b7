"""Fixtures for the end-to-end suite: the unmodified `e2b` SDK against a
running `hearth up` (real VMs), configured only by the sdk.env it writes
(E2B_API_URL, E2B_DOMAIN, E2B_API_KEY, SSL_CERT_FILE), as a user would:
sandboxes are reached at https://<port>-<id>.<domain>, as against E2B.

run-node.sh starts hearth and exports those, plus HEARTH_BIN and
HEARTH_DATABASE_URL so that tests can create a second team.
"""

import os
import subprocess

import pytest

from e2b import AsyncSandbox, Sandbox

for _var in ("E2B_API_URL", "E2B_DOMAIN", "E2B_API_KEY"):
    if not os.environ.get(_var):
        raise RuntimeError(f"{_var} is not set: run tests/conformance/run-node.sh")
os.environ.pop("E2B_DEBUG", None)

API_URL = os.environ["E2B_API_URL"]
API_KEY = os.environ["E2B_API_KEY"]


@pytest.fixture
def sandbox():
    sbx = Sandbox.create(timeout=120)
    try:
        yield sbx
    finally:
        sbx.kill()


@pytest.fixture
async def async_sandbox():
    sbx = await AsyncSandbox.create(timeout=120)
    try:
        yield sbx
    finally:
        await sbx.kill()


@pytest.fixture(scope="session")
def other_team_key():
    """An API key of a second team, made with `hearth team create`."""
    out = subprocess.run(
        [os.environ["HEARTH_BIN"], "team", "create", "conformance-other"],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ,
    ).stdout
    return out.strip().rsplit(" ", 1)[-1]
