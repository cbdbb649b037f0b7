"""Fixtures for the envd conformance suite, in either mode (see helpers.py).

Debug mode (HEARTH_CONFORMANCE_TARGET unset or `debug`): the unmodified `e2b`
SDK with E2B_DEBUG=true, so `Sandbox.create()` makes no API call and every
sandbox request goes to http://localhost:49983, where the session fixture below
runs the envd binary named by ENVD_BIN (default <repo>/target/debug/envd).

Node mode (`node`): the same tests against `hearth up`, configured only by
E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY (tests/conformance/run-node.sh).
`Sandbox.create()` / `AsyncSandbox.create()` start a real VM for each test,
which is killed after it.
"""

import os

from helpers import NODE  # helpers does not import e2b

# Must be set before the SDK reads its configuration.
if NODE:
    for _var in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"):
        if not os.environ.get(_var):
            raise RuntimeError(f"{_var} is not set: run tests/conformance/run-node.sh")
    for _var in ("E2B_DEBUG", "E2B_DOMAIN"):
        os.environ.pop(_var, None)
else:
    # The URL overrides would redirect the traffic away from the envd under test.
    os.environ["E2B_DEBUG"] = "true"
    for _var in ("E2B_SANDBOX_URL", "E2B_API_URL", "E2B_DOMAIN"):
        os.environ.pop(_var, None)

import pytest  # noqa: E402

from e2b import AsyncSandbox, Sandbox  # noqa: E402

from helpers import (  # noqa: E402
    SANDBOX_TIMEOUT,
    SHARED_PORT,
    Endpoint,
    EnvdProcess,
    GuestMachine,
    LocalMachine,
    base_url,
    proxy_endpoint,
    unique,
    user_entry,
)


@pytest.fixture(scope="session")
def envd_server():
    """Debug mode: the shared envd on port 49983 for the whole session.
    Node mode: None (every test has the envd of its own VM)."""
    if NODE:
        yield None
        return
    user_entry()  # fail early and clearly when the account is missing
    server = EnvdProcess(SHARED_PORT, name="shared").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _envd_alive(request, envd_server):
    """Fail the test (with envd's log) if the shared envd died while it ran."""
    if envd_server is None:
        yield
        return
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
    if not NODE:
        yield Sandbox.create()
        return
    sbx = Sandbox.create(timeout=SANDBOX_TIMEOUT)
    try:
        yield sbx
    finally:
        sbx.kill()


@pytest.fixture
async def async_sandbox(envd_server):
    if not NODE:
        yield await AsyncSandbox.create()
        return
    sbx = await AsyncSandbox.create(timeout=SANDBOX_TIMEOUT)
    try:
        yield sbx
    finally:
        await sbx.kill()


@pytest.fixture
def machine(request):
    """The machine envd works on: this one in debug mode, else the test's VM.

    In node mode it uses the test's sandbox (for a test with `async_sandbox`, a
    sync handle connected to the same VM), creating it if the test has none yet.
    """
    if not NODE:
        return LocalMachine()
    if "async_sandbox" in request.fixturenames:
        return GuestMachine(Sandbox.connect(request.getfixturevalue("async_sandbox").sandbox_id))
    return GuestMachine(request.getfixturevalue("sandbox"))


@pytest.fixture
def envd_endpoint(sandbox, envd_server):
    """Raw HTTP to the envd behind `sandbox` (the shared one in debug mode)."""
    if NODE:
        return proxy_endpoint(sandbox)
    return Endpoint(base_url(SHARED_PORT), sandbox.sandbox_id)


@pytest.fixture
def tmp_dir(machine):
    """A fresh directory under /tmp owned by the default user (root in debug
    mode), removed afterwards (in node mode the whole VM goes)."""
    path = machine.make_dir(f"/tmp/{unique()}")
    yield path
    if not NODE:
        machine.remove_tree(path)


@pytest.fixture
def user_dir(machine):
    """A fresh directory owned by `user` under its home, removed afterwards."""
    entry = user_entry()
    path = machine.make_dir(os.path.join(entry.pw_dir, unique()), owner=entry)
    yield path
    if not NODE:
        machine.remove_tree(path)


@pytest.fixture
def user_home():
    return user_entry().pw_dir
