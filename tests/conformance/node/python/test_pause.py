"""Pause and resume through the unmodified SDK against real VMs: a paused
sandbox keeps its processes (a Python process's variables too), memory,
files, env and access token; it is listed as paused; a connect resumes it,
and so does traffic to one created with auto-resume; a second pause is
refused; a paused sandbox can be killed. A filesystem-only pause keeps files
and boots the guest again."""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import NotFoundException

COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /dev/shm/count.new && mv /dev/shm/count.new /dev/shm/count; sleep 0.1; done"


def count(sbx):
    return int(sbx.commands.run("cat /dev/shm/count").stdout)


# A Python process whose state lives only in its memory: a secret drawn at
# start and a tick count. SIGUSR1 makes it write both to a file.
PYTHON_HOLDER = """python3 -u -c '
import os, signal, time, uuid
secret = uuid.uuid4().hex
ticks = 0
def answer(*_):
    with open("/tmp/py.answer.new", "w") as f:
        f.write(f"{secret} {ticks}")
    os.replace("/tmp/py.answer.new", "/tmp/py.answer")
signal.signal(signal.SIGUSR1, answer)
open("/tmp/py.ready", "w").close()
while True:
    ticks += 1
    time.sleep(0.05)
'"""


def ask_python(sbx, pid):
    """The holder's (secret, ticks), read from its memory through a signal."""
    out = sbx.commands.run(
        "until [ -f /tmp/py.ready ]; do sleep 0.05; done; rm -f /tmp/py.answer; "
        f"kill -USR1 {pid}; until [ -f /tmp/py.answer ]; do sleep 0.05; done; "
        "cat /tmp/py.answer; rm /tmp/py.answer",
        timeout=30,
    ).stdout.split()
    return out[0], int(out[1])


def test_a_paused_sandbox_resumes_where_it_was():
    sbx = Sandbox.create(timeout=120, envs={"FROM_CREATE": "kept"}, secure=True)
    try:
        counter = sbx.commands.run(COUNTER, background=True)
        holder = sbx.commands.run(PYTHON_HOLDER, background=True)
        secret, ticks = ask_python(sbx, holder.pid)
        sbx.files.write("/home/user/notes.txt", "written before the pause")
        boot_id = sbx.commands.run("cat /proc/sys/kernel/random/boot_id").stdout
        time.sleep(1)
        before = count(sbx)
        assert before > 0

        assert sbx.pause() is True
        assert sbx.pause() is False  # paused already
        info = Sandbox.get_info(sbx.sandbox_id)
        assert info.state == SandboxState.PAUSED
        # Traffic to it gets what a gone sandbox gets (no auto-resume asked).
        assert not sbx.is_running()
        paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
        assert sbx.sandbox_id in [s.sandbox_id for s in paused]
        running = Sandbox.list(query=SandboxQuery(state=[SandboxState.RUNNING])).next_items()
        assert sbx.sandbox_id not in [s.sandbox_id for s in running]

        resumed = Sandbox.connect(sbx.sandbox_id, timeout=120)
        assert resumed.get_info().state == SandboxState.RUNNING
        # The same boot and the same process, counting on from where it was.
        assert resumed.commands.run("cat /proc/sys/kernel/random/boot_id").stdout == boot_id
        assert resumed.commands.run(f"kill -0 {counter.pid} && echo alive").stdout.strip() == "alive"
        time.sleep(1)
        assert count(resumed) > before
        # The Python process kept its variables and runs on.
        secret_after, ticks_after = ask_python(resumed, holder.pid)
        assert secret_after == secret
        assert ticks_after > ticks
        assert resumed.files.read("/home/user/notes.txt") == "written before the pause"
        assert resumed.commands.run("echo $FROM_CREATE").stdout.strip() == "kept"
        # The access token is the one it had: the old handle works as well.
        assert sbx.commands.run("echo same-token").stdout.strip() == "same-token"
    finally:
        Sandbox.kill(sbx.sandbox_id)


def test_a_paused_sandbox_can_be_killed():
    sbx = Sandbox.create(timeout=60)
    sbx.files.write("/tmp/x", "x")
    assert sbx.pause() is True
    assert Sandbox.kill(sbx.sandbox_id) is True
    with pytest.raises(NotFoundException):
        Sandbox.connect(sbx.sandbox_id)
    with pytest.raises(NotFoundException):
        Sandbox.pause(sbx.sandbox_id)


def test_a_sandbox_with_on_timeout_pause_is_paused_at_its_timeout():
    sbx = Sandbox.create(timeout=5, lifecycle={"on_timeout": "pause"})
    try:
        sbx.files.write("/home/user/before-timeout.txt", "kept")
        deadline = time.monotonic() + 60
        while Sandbox.get_info(sbx.sandbox_id).state != SandboxState.PAUSED:
            assert time.monotonic() < deadline, "not paused a minute after its timeout"
            time.sleep(0.5)
        resumed = Sandbox.connect(sbx.sandbox_id, timeout=60)
        assert resumed.files.read("/home/user/before-timeout.txt") == "kept"
    finally:
        Sandbox.kill(sbx.sandbox_id)


def api(method, path):
    return httpx.request(
        method,
        os.environ["E2B_API_URL"] + path,
        headers={"X-API-Key": os.environ["E2B_API_KEY"]},
        timeout=60,
    )


def test_traffic_to_a_port_resumes_a_sandbox_with_auto_resume():
    sbx = Sandbox.create(timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        lifecycle = api("GET", f"/sandboxes/{sbx.sandbox_id}").json()["lifecycle"]
        assert lifecycle == {"autoResume": True, "onTimeout": "pause"}
        sbx.commands.run("mkdir -p /tmp/www && echo served-after-resume > /tmp/www/index.html")
        sbx.commands.run("cd /tmp/www && python3 -m http.server 8000", background=True)
        url = f"https://{sbx.get_host(8000)}/"
        deadline = time.monotonic() + 30
        while httpx.get(url, timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.2)

        assert sbx.pause() is True
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
        # The request waits for the resume and reaches the server that was
        # running when the sandbox was paused.
        r = httpx.get(url, timeout=120)
        assert (r.status_code, r.text) == (200, "served-after-resume\n")
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.RUNNING

        # Requests that arrive together share one resume.
        assert sbx.pause() is True
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: httpx.get(url, timeout=120), range(4)))
        assert [a.status_code for a in answers] == [200] * 4
        # envd's port resumes it as well; the SDK's handle keeps working.
        assert sbx.pause() is True
        assert sbx.commands.run("echo via-envd").stdout == "via-envd\n"
        # Paused without its memory, it has no server to resume: traffic gets
        # what a gone sandbox gets and leaves it paused (a connect boots it).
        assert sbx.pause(mode="filesystem") is True
        assert httpx.get(url, timeout=60).status_code == 502
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
    finally:
        Sandbox.kill(sbx.sandbox_id)


def test_a_filesystem_only_pause_keeps_files_and_the_resume_boots_again():
    sbx = Sandbox.create(timeout=180)
    try:
        sbx.files.write("/home/user/fs-only.txt", "persisted")
        boot_before = sbx.files.read("/proc/sys/kernel/random/boot_id").strip()
        assert sbx.pause(mode="filesystem") is True
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
        resumed = sbx.connect(timeout=120)
        assert resumed.sandbox_id == sbx.sandbox_id
        # The same handle (and token) works on the guest that booted again.
        assert sbx.files.read("/home/user/fs-only.txt") == "persisted"
        assert sbx.files.read("/proc/sys/kernel/random/boot_id").strip() != boot_before
    finally:
        Sandbox.kill(sbx.sandbox_id)
