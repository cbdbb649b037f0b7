"""The code interpreter through the unmodified `e2b-code-interpreter` SDK
against `hearth up` (real sandboxes of the code-interpreter-v1 template,
which run-node.sh builds or finds cached)."""

import os

import pytest

for _var in ("E2B_API_URL", "E2B_DOMAIN", "E2B_API_KEY"):
    if not os.environ.get(_var):
        raise RuntimeError(f"{_var} is not set: run tests/conformance/run-node.sh")
os.environ.pop("E2B_DEBUG", None)

from e2b_code_interpreter import Sandbox  # noqa: E402


@pytest.fixture(scope="module")
def sandbox():
    """One sandbox for the tests that do not depend on a fresh one."""
    sbx = Sandbox.create(timeout=600)
    yield sbx
    sbx.kill()
