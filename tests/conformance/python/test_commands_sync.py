"""Process service through the sync SDK: `Sandbox.commands` (contract §5.4, §5.5a)."""

import os
import time

import pytest

from e2b import CommandExitException, Sandbox, TimeoutException

from helpers import DEFAULT_HOME, DEFAULT_USER, ROOT_HOME, unique, user_entry, wait_until


def running_pids(sandbox):
    return {p.pid for p in sandbox.commands.list()}


def test_run_captures_stdout_stderr_and_exit_code(sandbox):
    r = sandbox.commands.run("echo hello; echo oops >&2")
    assert r.stdout == "hello\n"
    assert r.stderr == "oops\n"
    assert r.exit_code == 0
    assert r.error is None


def test_run_passes_envs(sandbox):
    r = sandbox.commands.run('printf "%s|%s" "$HEARTH_A" "$HEARTH_B"',
                             envs={"HEARTH_A": "x y", "HEARTH_B": "1"})
    assert r.stdout == "x y|1"


def test_run_in_cwd(sandbox, tmp_dir):
    r = sandbox.commands.run("pwd", cwd=tmp_dir)
    assert r.stdout == f"{tmp_dir}\n"


def test_default_user_runs_in_its_home(sandbox):
    # root for a debug-mode envd, `user` in a hearth VM (see helpers.DEFAULT_USER).
    uid = 0 if DEFAULT_USER == "root" else user_entry().pw_uid
    r = sandbox.commands.run('whoami; echo "$HOME"; pwd; echo "$USER:$LOGNAME"; id -u')
    assert r.stdout == (f"{DEFAULT_USER}\n{DEFAULT_HOME}\n{DEFAULT_HOME}\n"
                        f"{DEFAULT_USER}:{DEFAULT_USER}\n{uid}\n")


def test_explicit_root_user(sandbox):
    r = sandbox.commands.run("whoami; pwd", user="root")
    assert r.stdout == f"root\n{ROOT_HOME}\n"


def test_run_as_user(sandbox):
    u = user_entry()
    r = sandbox.commands.run('whoami; echo "$HOME"; pwd; echo "$USER:$LOGNAME"; id -u; id -g',
                             user="user")
    assert r.stdout == f"user\n{u.pw_dir}\n{u.pw_dir}\nuser:user\n{u.pw_uid}\n{u.pw_gid}\n"


def test_relative_cwd_resolves_against_users_home(sandbox, user_dir):
    name = os.path.basename(user_dir)
    assert sandbox.commands.run("pwd", user="user", cwd=name).stdout == f"{user_dir}\n"
    assert sandbox.commands.run("pwd", user="user", cwd=f"~/{name}").stdout == f"{user_dir}\n"


def test_nonzero_exit_raises_command_exit_exception(sandbox):
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run("echo out; echo err >&2; exit 3")
    e = info.value
    assert e.exit_code == 3
    assert e.stdout == "out\n"
    assert e.stderr == "err\n"
    assert e.error == "exit status 3"


def test_utf8_and_large_output(sandbox):
    assert sandbox.commands.run("printf 'h\\xc3\\xa9llo \\xe2\\x9c\\x93\\n'").stdout == "héllo ✓\n"
    r = sandbox.commands.run("head -c 300000 /dev/zero | tr '\\0' 'a'; echo; echo tail >&2")
    assert r.stdout == "a" * 300000 + "\n"
    assert r.stderr == "tail\n"


def test_stdin_is_closed_by_default(sandbox):
    # Without stdin=True the process reads /dev/null, so `cat` ends at once.
    r = sandbox.commands.run("cat; echo end", timeout=10)
    assert r.stdout == "end\n"


def test_background_command_and_wait(sandbox):
    h = sandbox.commands.run("sleep 0.3; echo done", background=True)
    assert isinstance(h.pid, int) and h.pid > 0
    r = h.wait()
    assert r.stdout == "done\n"
    assert r.exit_code == 0


def test_list_shows_running_command(sandbox, tmp_dir, machine):
    marker = unique("mark")
    h = sandbox.commands.run("sleep 30", background=True, cwd=tmp_dir,
                             envs={"HEARTH_MARK": marker})
    try:
        procs = {p.pid: p for p in sandbox.commands.list()}
        assert h.pid in procs
        p = procs[h.pid]
        assert p.cmd == "/bin/bash"
        assert p.args == ["-l", "-c", "sleep 30"]
        assert p.envs.get("HEARTH_MARK") == marker
        assert p.cwd == tmp_dir
        assert p.tag is None
        # The pid is the real process id on the machine.
        assert b"sleep" in machine.read(f"/proc/{h.pid}/cmdline")
    finally:
        sandbox.commands.kill(h.pid)


def test_kill_ends_command_with_exit_code_minus_one(sandbox):
    h = sandbox.commands.run("sleep 30", background=True)
    assert sandbox.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException) as info:
        h.wait()
    assert info.value.exit_code == -1
    wait_until(lambda: h.pid not in running_pids(sandbox), 5,
               message="killed process still listed")
    assert sandbox.commands.kill(h.pid) is False


def test_handle_kill(sandbox):
    h = sandbox.commands.run("sleep 30", background=True)
    assert h.kill() is True
    with pytest.raises(CommandExitException):
        h.wait()


def test_send_stdin(sandbox):
    h = sandbox.commands.run('read -r line; echo "got:$line"', background=True, stdin=True)
    sandbox.commands.send_stdin(h.pid, "hello\n")
    assert h.wait().stdout == "got:hello\n"


def test_send_stdin_bytes_through_handle(sandbox):
    h = sandbox.commands.run("head -c 6", background=True, stdin=True)
    h.send_stdin(b"abc")
    h.send_stdin("def")
    assert h.wait().stdout == "abcdef"


def test_close_stdin_ends_cat(sandbox):
    h = sandbox.commands.run("cat; echo eof", background=True, stdin=True)
    sandbox.commands.send_stdin(h.pid, "line1\n")
    sandbox.commands.close_stdin(h.pid)
    r = h.wait()
    assert r.stdout == "line1\neof\n"
    assert r.exit_code == 0


def test_handle_close_stdin(sandbox):
    h = sandbox.commands.run("wc -c", background=True, stdin=True)
    h.send_stdin("12345")
    h.close_stdin()
    assert h.wait().stdout.strip() == "5"


def test_stream_input(sandbox):
    h = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.stream_input(h.pid, [b"one ", "two\n", b"three\n"])
    sandbox.commands.close_stdin(h.pid)
    assert h.wait().stdout == "one two\nthree\n"


def test_on_stdout_receives_output_incrementally(sandbox):
    chunks = []
    errs = []
    r = sandbox.commands.run(
        "echo first; echo e1 >&2; sleep 2; echo second",
        on_stdout=lambda s: chunks.append((time.monotonic(), s)),
        on_stderr=lambda s: errs.append(s),
    )
    finished = time.monotonic()
    assert "".join(s for _, s in chunks) == "first\nsecond\n"
    assert "".join(errs) == "e1\n"
    assert chunks[0][1] == "first\n"
    # The first chunk was delivered while the process was still sleeping.
    assert finished - chunks[0][0] >= 1.5
    assert r.stdout == "first\nsecond\n"


def test_iterating_a_handle_yields_stdout_and_stderr(sandbox):
    h = sandbox.commands.run("echo a; echo b >&2", background=True)
    out, err = [], []
    for stdout, stderr, pty in h:
        assert pty is None
        if stdout is not None:
            out.append(stdout)
        if stderr is not None:
            err.append(stderr)
    assert "".join(out) == "a\n"
    assert "".join(err) == "b\n"


def test_connect_receives_later_output(sandbox):
    h = sandbox.commands.run("sleep 2; echo later; echo err-later >&2", background=True)
    other = Sandbox.connect(sandbox.sandbox_id)  # a second client of the same sandbox
    h2 = other.commands.connect(h.pid)
    assert h2.pid == h.pid
    r2 = h2.wait()
    assert r2.stdout == "later\n"
    assert r2.stderr == "err-later\n"
    # The original subscriber saw the same output.
    assert h.wait().stdout == "later\n"


def test_process_survives_client_disconnect(sandbox):
    h = sandbox.commands.run("sleep 3; echo survived", background=True)
    pid = h.pid
    h.disconnect()
    del h
    time.sleep(0.5)
    assert pid in running_pids(sandbox)
    r = sandbox.commands.connect(pid).wait()
    assert r.stdout == "survived\n"
    assert r.exit_code == 0


def test_timeout_raises_and_process_is_killed(sandbox):
    started = time.monotonic()
    h = sandbox.commands.run("sleep 10", background=True, timeout=2)
    pid = h.pid
    with pytest.raises(TimeoutException):
        h.wait()
    assert time.monotonic() - started < 8
    wait_until(lambda: pid not in running_pids(sandbox), 5,
               message="envd did not kill the process when its Connect-Timeout-Ms expired")


def test_foreground_timeout(sandbox):
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 10", timeout=2)
    assert time.monotonic() - started < 8


def test_timeout_zero_means_unlimited(sandbox):
    r = sandbox.commands.run("sleep 1; echo ok", timeout=0)
    assert r.stdout == "ok\n"
