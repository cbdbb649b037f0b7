"""A sandbox killed by another client takes the streams running through the
proxy with it: a command in flight fails within seconds instead of hanging
until TCP gives up on a VM that is gone.

What the SDK does then (e2b/envd/rpc.py): the proxy cuts the response
off, pyqwest raises a ReadError, connectrpc wraps it as UNAVAILABLE, the SDK
sees a transport failure and probes GET /health, the proxy answers 502
"The sandbox was not found", and the SDK raises SandboxNotRunningException.
"""

import asyncio
import threading
import time

import pytest

from e2b import AsyncSandbox, Sandbox, SandboxNotRunningException

# Seconds from the kill to the command's end that count as "at once"; the
# command itself would run for ten minutes.
WITHIN = 10


def test_a_running_command_ends_soon_after_another_client_kills_the_sandbox():
    sbx = Sandbox.create(timeout=120)
    killed_at = []
    kill_errors = []

    def kill_from_elsewhere():
        killed_at.append(time.monotonic())
        try:
            # A client of its own: the class method, by id only.
            assert Sandbox.kill(sbx.sandbox_id)
        except Exception as e:  # reported below, not lost in the thread
            kill_errors.append(e)

    killer = threading.Timer(3.0, kill_from_elsewhere)
    try:
        assert sbx.commands.run("echo up").stdout == "up\n"
        killer.start()
        with pytest.raises(SandboxNotRunningException):
            # No command deadline: only the kill can end it early.
            sbx.commands.run("sleep 600", timeout=0)
        ended_at = time.monotonic()
        killer.join()
        assert not kill_errors, kill_errors
        assert killed_at, "the command ended before the kill"
        assert ended_at - killed_at[0] < WITHIN, (
            f"the command ended {ended_at - killed_at[0]:.1f}s after the kill"
        )
        assert not sbx.is_running()
    finally:
        killer.cancel()
        try:
            sbx.kill()
        except Exception:
            pass


async def test_an_async_command_ends_soon_after_the_sandbox_is_killed():
    sbx = await AsyncSandbox.create(timeout=120)
    try:
        handle = await sbx.commands.run("sleep 600", background=True, timeout=0)
        # The kill runs beside the wait: the stream must end with the kill,
        # not once the node has finished tearing the VM down.
        killed_at = time.monotonic()
        kill = asyncio.create_task(AsyncSandbox.kill(sbx.sandbox_id))
        with pytest.raises(SandboxNotRunningException):
            await handle.wait()
        ended_after = time.monotonic() - killed_at
        assert await kill
        assert ended_after < WITHIN, f"the command ended {ended_after:.1f}s after the kill"
    finally:
        try:
            await sbx.kill()
        except Exception:
            pass
