"""Fixtures for the envd conformance suite.

The suite drives envd with the unmodified `e2b` SDK in debug mode: with
E2B_DEBUG=true, `Sandbox.create()` makes no API call and every sandbox request
goes to http://localhost:49983, where the session fixture below runs the envd
binary named by ENVD_BIN (default <repo>/target/debug/envd).
"""

import os

# Must be set before the SDK reads its configuration; the URL overrides would
# redirect the traffic away from the envd under test.
os.environ["E2B_DEBUG"] = "true"
for _var in ("E2B_SANDBOX_URL", "E2B_API_URL", "E2B_DOMAIN"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402

from e2b import AsyncSandbox, Sandbox  # noqa: E402

from helpers import (  # noqa: E402
    SHARED_PORT,
    EnvdProcess,
    make_dir,
    remove_tree,
    unique,
    user_entry,
)


@pytest.fixture(scope="session")
def envd_server():
    """The shared envd on port 49983 for the whole session."""
    user_entry()  # fail early and clearly when the account is missing
    server = EnvdProcess(SHARED_PORT, name="shared").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _envd_alive(request, envd_server):
    """Fail the test (with envd's log) if envd died while it ran."""
    if not envd_server.alive():
        pytest.fail("the shared envd is not running any more\n" + envd_server.log_tail())
    yield
    if not envd_server.alive():
        pytest.fail(
            f"envd exited (code {envd_server.proc.returncode if envd_server.proc else '?'}) "
            f"during {request.node.name}\n" + envd_server.log_tail()
        )


@pytest.fixture
def sandbox(envd_server):
    return Sandbox.create()


@pytest.fixture
async def async_sandbox(envd_server):
    return await AsyncSandbox.create()


@pytest.fixture
def tmp_dir():
    """A fresh root-owned directory under /tmp, removed afterwards."""
    path = make_dir(f"/tmp/{unique()}")
    yield path
    remove_tree(path)


@pytest.fixture
def user_dir():
    """A fresh directory owned by `user` under its home, removed afterwards."""
    entry = user_entry()
    path = make_dir(os.path.join(entry.pw_dir, unique()), owner=entry)
    yield path
    remove_tree(path)


@pytest.fixture
def user_home():
    return user_entry().pw_dir
