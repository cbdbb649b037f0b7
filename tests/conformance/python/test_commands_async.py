"""Process service through the async SDK: `AsyncSandbox.commands`."""

import asyncio
import time

import pytest

from e2b import AsyncSandbox, CommandExitException, TimeoutException

from helpers import DEFAULT_HOME, DEFAULT_USER, unique, user_entry


async def running_pids(sbx):
    return {p.pid for p in await sbx.commands.list()}


async def wait_until_async(predicate, timeout=5.0, message="condition not met"):
    end = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{message} (waited {timeout}s)")
        await asyncio.sleep(0.1)


async def test_run_captures_output(async_sandbox):
    r = await async_sandbox.commands.run("echo hello; echo oops >&2")
    assert (r.stdout, r.stderr, r.exit_code, r.error) == ("hello\n", "oops\n", 0, None)


async def test_envs_and_cwd(async_sandbox, tmp_dir):
    r = await async_sandbox.commands.run('echo "$HEARTH_X"; pwd', envs={"HEARTH_X": "v"},
                                         cwd=tmp_dir)
    assert r.stdout == f"v\n{tmp_dir}\n"


async def test_users(async_sandbox):
    u = user_entry()
    r = await async_sandbox.commands.run('whoami; echo "$HOME"; pwd')
    assert r.stdout == f"{DEFAULT_USER}\n{DEFAULT_HOME}\n{DEFAULT_HOME}\n"
    r = await async_sandbox.commands.run('whoami; echo "$HOME"; pwd', user="user")
    assert r.stdout == f"user\n{u.pw_dir}\n{u.pw_dir}\n"


async def test_nonzero_exit(async_sandbox):
    with pytest.raises(CommandExitException) as info:
        await async_sandbox.commands.run("echo e >&2; exit 7")
    assert info.value.exit_code == 7
    assert info.value.stderr == "e\n"
    assert info.value.error == "exit status 7"


async def test_background_with_incremental_callbacks(async_sandbox):
    seen = []
    h = await async_sandbox.commands.run(
        "echo first; sleep 2; echo second", background=True,
        on_stdout=lambda s: seen.append((time.monotonic(), s)))
    r = await h.wait()
    finished = time.monotonic()
    assert r.stdout == "first\nsecond\n"
    assert seen[0][1] == "first\n"
    assert finished - seen[0][0] >= 1.5
    assert h.exit_code == 0


async def test_async_output_callbacks_may_be_coroutines(async_sandbox):
    got = []

    async def on_stderr(s):
        got.append(s)

    await async_sandbox.commands.run("echo x >&2", on_stderr=on_stderr)
    assert "".join(got) == "x\n"


async def test_list_and_kill(async_sandbox):
    marker = unique("mark")
    h = await async_sandbox.commands.run("sleep 30", background=True,
                                         envs={"HEARTH_MARK": marker})
    procs = {p.pid: p for p in await async_sandbox.commands.list()}
    assert procs[h.pid].args == ["-l", "-c", "sleep 30"]
    assert procs[h.pid].envs.get("HEARTH_MARK") == marker
    assert await h.kill() is True
    with pytest.raises(CommandExitException) as info:
        await h.wait()
    assert info.value.exit_code == -1

    async def gone():
        return h.pid not in await running_pids(async_sandbox)

    await wait_until_async(gone, message="killed process still listed")
    assert await async_sandbox.commands.kill(h.pid) is False


async def test_stdin_and_close_stdin(async_sandbox):
    h = await async_sandbox.commands.run("cat", background=True, stdin=True)
    await async_sandbox.commands.send_stdin(h.pid, "abc\n")
    await h.send_stdin(b"def\n")
    await async_sandbox.commands.close_stdin(h.pid)
    r = await h.wait()
    assert r.stdout == "abc\ndef\n"


async def test_stream_input(async_sandbox):
    h = await async_sandbox.commands.run("cat", background=True, stdin=True)
    stream = async_sandbox.commands.stream_input(h.pid)
    await stream.send("one ")
    await stream.send(b"two\n")
    await stream.close()
    await async_sandbox.commands.close_stdin(h.pid)
    assert (await h.wait()).stdout == "one two\n"


async def test_connect_from_second_client(async_sandbox):
    h = await async_sandbox.commands.run("sleep 2; echo later", background=True)
    other = await AsyncSandbox.connect(async_sandbox.sandbox_id)  # a second client
    got = []
    h2 = await other.commands.connect(h.pid, on_stdout=got.append)
    r = await h2.wait()
    assert r.stdout == "later\n"
    assert "".join(got) == "later\n"
    assert (await h.wait()).stdout == "later\n"


async def test_disconnect_and_reconnect(async_sandbox):
    h = await async_sandbox.commands.run("sleep 3; echo survived", background=True)
    pid = h.pid
    await h.disconnect()
    await asyncio.sleep(0.5)
    assert pid in await running_pids(async_sandbox)
    h2 = await async_sandbox.commands.connect(pid)
    assert (await h2.wait()).stdout == "survived\n"


async def test_timeout(async_sandbox):
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        await async_sandbox.commands.run("sleep 10", timeout=2)
    assert time.monotonic() - started < 8
