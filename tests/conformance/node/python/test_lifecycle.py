"""Sandbox lifecycle through the REST API: create, connect, info, list with
filters and pages, timeouts, metrics, logs, kill."""

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import NotFoundException, SandboxException


def test_create_runs_a_real_vm_with_metadata_and_envs():
    tag = uuid.uuid4().hex
    sbx = Sandbox.create(timeout=60, metadata={"tag": tag}, envs={"GREETING": "hello vm"})
    try:
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.template_id == "base"
        assert info.metadata == {"tag": tag}
        assert info.state == SandboxState.RUNNING
        assert info.cpu_count >= 1 and info.memory_mb >= 128
        assert timedelta(seconds=50) < info.end_at - info.started_at <= timedelta(seconds=61)
        out = sbx.commands.run("echo $GREETING; hostname; cat /proc/1/cmdline | tr '\\0' ' '")
        lines = out.stdout.splitlines()
        assert lines[0] == "hello vm"
        # Its own kernel and hostname: a VM, not a process on the host.
        assert lines[1] == sbx.sandbox_id
        assert sbx.is_running()
    finally:
        assert sbx.kill() is True
    assert Sandbox.kill(sbx.sandbox_id) is False
    assert not sbx.is_running()


def test_connect_reaches_the_same_sandbox_and_only_extends_its_timeout(sandbox):
    sandbox.files.write("/tmp/marker", "connected")
    before = sandbox.get_info().end_at
    same = Sandbox.connect(sandbox.sandbox_id, timeout=10)
    assert same.files.read("/tmp/marker") == "connected"
    assert same.get_info().end_at == before  # shorter: unchanged
    Sandbox.connect(sandbox.sandbox_id, timeout=600)
    assert sandbox.get_info().end_at > before + timedelta(seconds=400)


def test_set_timeout_can_shorten_and_the_control_plane_kills_at_the_end():
    sbx = Sandbox.create(timeout=300)
    sbx.set_timeout(2)
    end = sbx.get_info().end_at
    assert end - datetime.now(timezone.utc) < timedelta(seconds=5)
    deadline = time.time() + 30
    while time.time() < deadline and sbx.is_running():
        time.sleep(0.5)
    assert not sbx.is_running()
    with pytest.raises(NotFoundException):
        sbx.get_info()
    assert Sandbox.kill(sbx.sandbox_id) is False


def test_list_filters_by_metadata_and_pages_with_next_token():
    tag = uuid.uuid4().hex
    made = [Sandbox.create(timeout=120, metadata={"tag": tag, "n": str(i), "odd key": "a&b=c"}) for i in range(3)]
    try:
        paginator = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}), limit=2)
        first = paginator.next_items()
        assert len(first) == 2 and paginator.has_next
        second = paginator.next_items()
        assert len(second) == 1 and not paginator.has_next
        ids = {s.sandbox_id for s in first + second}
        assert ids == {s.sandbox_id for s in made}
        # Newest first.
        assert first[0].started_at >= first[1].started_at >= second[0].started_at
        one = Sandbox.list(query=SandboxQuery(metadata={"tag": tag, "n": "1"})).next_items()
        assert [s.sandbox_id for s in one] == [made[1].sandbox_id]
        # Keys and values that need encoding survive the SDK's double encoding.
        odd = Sandbox.list(query=SandboxQuery(metadata={"tag": tag, "odd key": "a&b=c"})).next_items()
        assert len(odd) == 3
        none = Sandbox.list(query=SandboxQuery(metadata={"tag": tag, "n": "9"})).next_items()
        assert none == []
        paused = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}, state=[SandboxState.PAUSED])).next_items()
        assert paused == []
    finally:
        for s in made:
            s.kill()
    assert Sandbox.list(query=SandboxQuery(metadata={"tag": tag})).next_items() == []


def test_metrics_come_from_inside_the_vm(sandbox):
    # The node samples every second (E2B every five): the first sample
    # comes soon after the create, not with it.
    deadline = time.monotonic() + 10
    metrics = sandbox.get_metrics()
    while not metrics and time.monotonic() < deadline:
        time.sleep(0.1)
        metrics = sandbox.get_metrics()
    assert len(metrics) >= 1
    m = metrics[-1]
    assert m.cpu_count == sandbox.get_info().cpu_count
    assert 0 < m.mem_used < m.mem_total
    assert 0 < m.disk_used < m.disk_total


def test_unknown_template_and_sandbox_are_clear_errors():
    with pytest.raises(SandboxException) as err:
        Sandbox.create(template="no-such-template")
    assert "no-such-template" in str(err.value)
    with pytest.raises(NotFoundException):
        Sandbox.connect("nosuchsandbox000000")
    with pytest.raises(NotFoundException):
        Sandbox.get_info("nosuchsandbox000000")


def test_over_limit_timeout_is_refused():
    with pytest.raises(SandboxException) as err:
        Sandbox.create(timeout=10**9)
    assert "400" in str(err.value) and "timeout" in str(err.value)
