"""PTY sessions (`sandbox.pty`): Start with a pty, SendInput(pty), Update, SendSignal.

Input lines are written so that the echoed input can never match the expected
output (e.g. `echo hearth-$((6*7))` is echoed verbatim but prints `hearth-42`).
"""

import asyncio
import threading
import time

import pytest

from e2b import CommandExitException, PtySize

from helpers import user_entry


class SyncPty:
    """Runs a sync PTY handle's `wait()` in a thread and collects its output."""

    def __init__(self, sandbox, rows=24, cols=80, **kwargs):
        self.sandbox = sandbox
        self._buf = bytearray()
        self._lock = threading.Lock()
        self.result = None
        self.error = None
        self.handle = sandbox.pty.create(PtySize(rows=rows, cols=cols), **kwargs)
        self.pid = self.handle.pid
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self.result = self.handle.wait(on_pty=self._on_data)
        except Exception as e:  # noqa: BLE001 - inspected by the tests
            self.error = e

    def _on_data(self, data):
        with self._lock:
            self._buf.extend(data)

    @property
    def output(self) -> bytes:
        with self._lock:
            return bytes(self._buf)

    def send(self, text: str):
        self.sandbox.pty.send_stdin(self.pid, text.encode())

    def expect(self, needle: bytes, timeout: float = 10.0):
        end = time.monotonic() + timeout
        while needle not in self.output:
            if time.monotonic() > end:
                raise AssertionError(f"{needle!r} not in PTY output: {self.output[-2000:]!r}")
            time.sleep(0.05)

    def join(self, timeout: float = 10.0) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self):
        if self._thread.is_alive():
            self.sandbox.pty.kill(self.pid)
            self._thread.join(5)


@pytest.fixture
def pty(sandbox):
    sessions = []

    def factory(**kwargs):
        s = SyncPty(sandbox, **kwargs)
        sessions.append(s)
        return s

    yield factory
    for s in sessions:
        s.close()


def test_pty_runs_input_and_streams_output(pty):
    s = pty()
    assert s.pid > 0
    s.send("echo hearth-$((6*7))\n")
    s.expect(b"hearth-42")


def test_pty_is_a_terminal_with_default_env(pty):
    s = pty()
    s.send('[ -t 0 ] && [ -t 1 ] && echo "tty:yes:$TERM"\n')
    s.expect(b"tty:yes:xterm-256color")


def test_pty_initial_size_and_resize(pty, sandbox):
    s = pty(rows=24, cols=80)
    s.send('echo "sz1:$(stty size)"\n')
    s.expect(b"sz1:24 80")
    sandbox.pty.resize(s.pid, PtySize(rows=40, cols=100))
    s.send('echo "sz2:$(stty size)"\n')
    s.expect(b"sz2:40 100")


def test_pty_as_user_with_cwd_and_envs(pty, user_dir):
    s = pty(user="user", cwd=user_dir, envs={"HEARTH_PTY": "v1"})
    s.send('echo "who:$(whoami):$HOME:$(pwd):$HEARTH_PTY"\n')
    s.expect(f"who:user:{user_entry().pw_dir}:{user_dir}:v1".encode())


def test_pty_is_listed_as_process(pty, sandbox):
    s = pty()
    procs = {p.pid: p for p in sandbox.commands.list()}
    assert procs[s.pid].cmd == "/bin/bash"
    assert procs[s.pid].args == ["-i", "-l"]


def test_pty_exit_ends_stream_with_exit_code(pty):
    s = pty()
    s.send("exit 0\n")
    assert s.join(10), "PTY stream did not end after `exit`"
    assert s.error is None
    assert s.result.exit_code == 0


def test_pty_kill(pty, sandbox):
    s = pty()
    s.send("echo ready-$((1+1))\n")
    s.expect(b"ready-2")
    assert sandbox.pty.kill(s.pid) is True
    assert s.join(10), "PTY stream did not end after kill"
    assert isinstance(s.error, CommandExitException)
    assert s.error.exit_code == -1
    assert sandbox.pty.kill(s.pid) is False


def test_pty_stream_input(pty, sandbox):
    s = pty()
    sandbox.pty.stream_input(s.pid, [b"echo stream", "ed-$((2+3))\n"])
    s.expect(b"streamed-5")


def test_pty_connect_receives_later_output(pty, sandbox):
    s = pty()
    s.send("sleep 1; echo late-$((3*3))\n")
    h2 = sandbox.pty.connect(s.pid)
    got = bytearray()

    def reader():
        try:
            h2.wait(on_pty=got.extend)
        except CommandExitException:
            pass

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    end = time.monotonic() + 10
    while b"late-9" not in bytes(got) and time.monotonic() < end:
        time.sleep(0.05)
    assert b"late-9" in bytes(got)
    sandbox.pty.kill(s.pid)
    t.join(5)


async def test_async_pty_create_input_resize_kill(async_sandbox):
    out = bytearray()
    h = await async_sandbox.pty.create(PtySize(rows=24, cols=80), on_data=out.extend)

    async def expect(needle: bytes):
        end = time.monotonic() + 10
        while needle not in bytes(out):
            if time.monotonic() > end:
                raise AssertionError(f"{needle!r} not in PTY output: {bytes(out)[-2000:]!r}")
            await asyncio.sleep(0.05)

    await async_sandbox.pty.send_stdin(h.pid, b'echo "a:$(stty size)"\n')
    await expect(b"a:24 80")
    await async_sandbox.pty.resize(h.pid, PtySize(rows=30, cols=120))
    await async_sandbox.pty.send_stdin(h.pid, b'echo "b:$(stty size)"\n')
    await expect(b"b:30 120")
    assert await async_sandbox.pty.kill(h.pid) is True
    with pytest.raises(CommandExitException) as info:
        await asyncio.wait_for(h.wait(), 10)
    assert info.value.exit_code == -1
