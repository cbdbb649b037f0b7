"""Commands, files, PTY and watches in a real VM, through the proxy."""

import time
import uuid

import pytest

from e2b import CommandExitException, FileType, FilesystemEventType, PtySize
from e2b.exceptions import NotFoundException


def test_commands_run_as_user_by_default_and_as_root_on_request(sandbox):
    assert sandbox.commands.run("whoami").stdout == "user\n"
    assert sandbox.commands.run("whoami", user="root").stdout == "root\n"
    r = sandbox.commands.run("pwd; echo $FOO", cwd="/tmp", envs={"FOO": "bar"})
    assert r.stdout == "/tmp\nbar\n"


def test_a_failing_command_raises_with_its_output(sandbox):
    with pytest.raises(CommandExitException) as err:
        sandbox.commands.run("echo out; echo err >&2; exit 3")
    assert err.value.exit_code == 3
    assert err.value.stdout == "out\n" and err.value.stderr == "err\n"


def test_streaming_background_stdin_list_and_kill(sandbox):
    seen = []
    r = sandbox.commands.run("for i in 1 2 3; do echo $i; sleep 0.1; done", on_stdout=seen.append)
    assert "".join(seen) == "1\n2\n3\n" and r.exit_code == 0
    cat = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.send_stdin(cat.pid, "through stdin\n")
    sleeper = sandbox.commands.run("sleep 600", background=True)
    pids = {p.pid for p in sandbox.commands.list()}
    assert {cat.pid, sleeper.pid} <= pids
    assert sandbox.commands.kill(sleeper.pid)
    with pytest.raises(CommandExitException):
        sleeper.wait()
    sandbox.commands.close_stdin(cat.pid) if hasattr(sandbox.commands, "close_stdin") else sandbox.commands.kill(cat.pid)
    deadline = time.time() + 10
    while time.time() < deadline and cat.pid in {p.pid for p in sandbox.commands.list()}:
        time.sleep(0.1)
    assert cat.pid not in {p.pid for p in sandbox.commands.list()}


def test_connect_to_a_running_command(sandbox):
    handle = sandbox.commands.run("sleep 1; echo later", background=True)
    again = sandbox.commands.connect(handle.pid)
    assert again.wait().stdout == "later\n"


def test_files_write_read_list_rename_remove(sandbox):
    d = f"/home/user/{uuid.uuid4().hex}"
    sandbox.files.make_dir(d)
    info = sandbox.files.write(f"{d}/a.txt", "alpha")
    assert info.path == f"{d}/a.txt"
    assert sandbox.files.read(f"{d}/a.txt") == "alpha"
    payload = bytes(range(256)) * 20_000  # 5 MB, every byte value
    sandbox.files.write(f"{d}/blob.bin", payload)
    assert sandbox.files.read(f"{d}/blob.bin", format="bytes") == payload
    entries = {e.name: e for e in sandbox.files.list(d)}
    assert set(entries) == {"a.txt", "blob.bin"}
    assert entries["blob.bin"].type == FileType.FILE and entries["blob.bin"].size == len(payload)
    assert entries["a.txt"].owner == "user"
    sandbox.files.rename(f"{d}/a.txt", f"{d}/b.txt")
    assert not sandbox.files.exists(f"{d}/a.txt") and sandbox.files.exists(f"{d}/b.txt")
    assert sandbox.files.get_info(f"{d}/b.txt").size == 5
    sandbox.files.remove(d)
    assert not sandbox.files.exists(d)
    with pytest.raises(NotFoundException):
        sandbox.files.read(f"{d}/b.txt")


def test_files_written_by_the_sdk_are_seen_by_commands(sandbox):
    sandbox.files.write_files([
        {"path": "/tmp/multi/one", "data": "1"},
        {"path": "/tmp/multi/two", "data": b"2"},
    ])
    assert sandbox.commands.run("cat /tmp/multi/one /tmp/multi/two").stdout == "12"


def test_watch_dir_reports_changes(sandbox):
    d = f"/tmp/{uuid.uuid4().hex}"
    sandbox.files.make_dir(d)
    handle = sandbox.files.watch_dir(d)
    try:
        sandbox.files.write(f"{d}/new.txt", "x")
        deadline = time.time() + 15
        events = []
        while time.time() < deadline and not any(e.name == "new.txt" for e in events):
            events += handle.get_new_events()
            time.sleep(0.2)
        kinds = {e.type for e in events if e.name == "new.txt"}
        assert kinds & {FilesystemEventType.CREATE, FilesystemEventType.WRITE}
    finally:
        handle.stop()


def test_pty_is_a_real_terminal(sandbox):
    out = bytearray()
    pty = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=30)
    sandbox.pty.send_stdin(pty.pid, b"tty; stty size; exit\n")
    result = pty.wait(on_pty=out.extend)
    text = out.decode(errors="replace")
    assert "/dev/pts/" in text and "24 80" in text
    assert result.exit_code == 0


async def test_async_sdk_runs_commands_and_files(async_sandbox):
    r = await async_sandbox.commands.run("echo async; uname -r")
    assert r.stdout.startswith("async\n")
    await async_sandbox.files.write("/tmp/async.txt", "from async")
    assert await async_sandbox.files.read("/tmp/async.txt") == "from async"
    assert await async_sandbox.is_running()
