"""Snapshots and forks through the unmodified SDK against real VMs: a
snapshot is taken while its sandbox runs on; sandboxes started from it
have its memory (a process that was running) and files, and are
independent of it, of the source and of each other; it is listed,
filtered and deleted as E2B does. A fork is that in one call."""

import uuid

import pytest

from e2b import Sandbox
from e2b.exceptions import InvalidArgumentException, SandboxNotFoundException

COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /dev/shm/count.new && mv /dev/shm/count.new /dev/shm/count; sleep 0.1; done"


def alive(sbx, pid):
    return sbx.commands.run(f"kill -0 {pid} && echo alive").stdout.strip() == "alive"


def test_sandboxes_from_a_snapshot_have_its_memory_and_files_and_are_independent():
    source = Sandbox.create(timeout=180)
    name = f"snap-{uuid.uuid4().hex[:8]}"
    started = []
    try:
        counter = source.commands.run(COUNTER, background=True)
        source.files.write("/home/user/state.txt", "before the snapshot")
        snapshot = source.create_snapshot(name=name)
        assert snapshot.snapshot_id and snapshot.names == [name]

        # The source runs on and writes its disk.
        source.files.write("/home/user/state.txt", "source, after")
        assert alive(source, counter.pid)

        listed = Sandbox.list_snapshots(sandbox_id=source.sandbox_id).next_items()
        assert [s.snapshot_id for s in listed] == [snapshot.snapshot_id]
        assert [s.snapshot_id for s in Sandbox.list_snapshots(name=name).next_items()] == [snapshot.snapshot_id]
        assert Sandbox.list_snapshots(name=f"{name}-none").next_items() == []

        one = Sandbox.create(snapshot.snapshot_id, timeout=120)
        started.append(one)
        two = Sandbox.create(name, timeout=120)
        started.append(two)
        assert one.get_info().template_id == snapshot.snapshot_id
        for sbx in (one, two):
            assert sbx.files.read("/home/user/state.txt") == "before the snapshot"
            assert alive(sbx, counter.pid)  # the process, restored with the memory
        one.files.write("/home/user/state.txt", "one")
        assert two.files.read("/home/user/state.txt") == "before the snapshot"
        assert source.files.read("/home/user/state.txt") == "source, after"

        assert Sandbox.delete_snapshot(snapshot.snapshot_id) is True
        assert Sandbox.delete_snapshot(snapshot.snapshot_id) is False
        assert Sandbox.list_snapshots(sandbox_id=source.sandbox_id).next_items() == []
        # Sandboxes started from it run on without it.
        assert one.commands.run("cat /home/user/state.txt").stdout == "one"
    finally:
        for sbx in started:
            sbx.kill()
        source.kill()


def test_a_fork_inherits_memory_and_files_and_the_source_runs_on():
    source = Sandbox.create(timeout=180)
    forks = []
    try:
        counter = source.commands.run(COUNTER, background=True)
        source.files.write("/home/user/state.txt", "before the fork")
        end_before = source.get_info().end_at
        forks = source.fork(count=2, timeout=120)
        assert len(forks) == 2 and all(isinstance(f, Sandbox) for f in forks), forks
        assert len({f.sandbox_id for f in forks} | {source.sandbox_id}) == 3
        info = source.get_info()
        assert info.end_at == end_before and source.is_running()
        for fork in forks:
            assert fork.files.read("/home/user/state.txt") == "before the fork"
            assert alive(fork, counter.pid)
        forks[0].files.write("/home/user/state.txt", "fork 0")
        source.files.write("/home/user/state.txt", "source")
        assert forks[1].files.read("/home/user/state.txt") == "before the fork"
        assert forks[0].files.read("/home/user/state.txt") == "fork 0"
        # The fork's snapshot is not left behind.
        assert Sandbox.list_snapshots(sandbox_id=source.sandbox_id).next_items() == []
    finally:
        for fork in forks:
            if isinstance(fork, Sandbox):
                fork.kill()
        source.kill()
    with pytest.raises(SandboxNotFoundException):
        source.fork()
    with pytest.raises(InvalidArgumentException):
        Sandbox.fork(source.sandbox_id, count=0)
