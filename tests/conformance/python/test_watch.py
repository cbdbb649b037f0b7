"""Directory watching.

Sync SDK: CreateWatcher → GetWatcherEvents (polled by `get_new_events()`) →
RemoveWatcher. Async SDK: the WatchDir server stream with an `on_event` callback.
"""

import asyncio
import time

import pytest

from e2b import FileType, FilesystemEventType as Ev, SandboxException


def poll_events(handle, predicate, timeout=5.0):
    """Accumulate `get_new_events()` until `predicate(events)` holds."""
    events = []
    end = time.monotonic() + timeout
    while True:
        events.extend(handle.get_new_events())
        if predicate(events):
            return events
        if time.monotonic() > end:
            raise AssertionError(f"expected events not seen; got {[(e.name, e.type) for e in events]}")
        time.sleep(0.1)


def has(events, name, kind):
    return any(e.name == name and e.type == kind for e in events)


async def wait_for_async(events, predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate(events):
        if time.monotonic() > end:
            raise AssertionError(f"expected events not seen; got {[(e.name, e.type) for e in events]}")
        await asyncio.sleep(0.05)


def test_sync_watch_create_write_remove(sandbox, tmp_dir):
    handle = sandbox.files.watch_dir(tmp_dir)
    try:
        sandbox.files.write(f"{tmp_dir}/w.txt", "data")
        events = poll_events(handle, lambda ev: has(ev, "w.txt", Ev.CREATE) and has(ev, "w.txt", Ev.WRITE))
        assert all(e.entry is None for e in events)
        sandbox.files.remove(f"{tmp_dir}/w.txt")
        poll_events(handle, lambda ev: has(ev, "w.txt", Ev.REMOVE))
    finally:
        handle.stop()
    with pytest.raises(SandboxException):
        handle.get_new_events()


def test_sync_watch_returns_only_new_events(sandbox, tmp_dir):
    handle = sandbox.files.watch_dir(tmp_dir)
    try:
        sandbox.files.write(f"{tmp_dir}/first.txt", "1")
        poll_events(handle, lambda ev: has(ev, "first.txt", Ev.CREATE))
        sandbox.files.write(f"{tmp_dir}/second.txt", "2")
        later = poll_events(handle, lambda ev: has(ev, "second.txt", Ev.CREATE))
        assert not any(e.name == "first.txt" for e in later)
    finally:
        handle.stop()


def test_sync_watch_rename_and_chmod(sandbox, tmp_dir, machine):
    machine.write(f"{tmp_dir}/a.txt", b"a")
    handle = sandbox.files.watch_dir(tmp_dir)
    try:
        sandbox.files.rename(f"{tmp_dir}/a.txt", f"{tmp_dir}/b.txt")
        sandbox.commands.run(f"chmod 600 {tmp_dir}/b.txt")
        poll_events(handle, lambda ev: has(ev, "a.txt", Ev.RENAME) and has(ev, "b.txt", Ev.CREATE)
                    and has(ev, "b.txt", Ev.CHMOD))
    finally:
        handle.stop()


def test_sync_watch_recursive_sees_subdirectory(sandbox, tmp_dir, machine):
    machine.make_dir(f"{tmp_dir}/sub")
    handle = sandbox.files.watch_dir(tmp_dir, recursive=True)
    try:
        sandbox.files.write(f"{tmp_dir}/sub/g.txt", "g")
        poll_events(handle, lambda ev: has(ev, "sub/g.txt", Ev.CREATE))
    finally:
        handle.stop()


def test_sync_watch_non_recursive_ignores_subdirectory(sandbox, tmp_dir, machine):
    machine.make_dir(f"{tmp_dir}/sub")
    handle = sandbox.files.watch_dir(tmp_dir)
    try:
        sandbox.files.write(f"{tmp_dir}/sub/g.txt", "g")
        sandbox.files.write(f"{tmp_dir}/top.txt", "t")
        events = poll_events(handle, lambda ev: has(ev, "top.txt", Ev.CREATE))
        time.sleep(0.3)
        events += handle.get_new_events()
        assert not any("g.txt" in e.name for e in events)
    finally:
        handle.stop()


def test_sync_watch_include_entry(sandbox, tmp_dir):
    handle = sandbox.files.watch_dir(tmp_dir, include_entry=True)
    try:
        sandbox.files.write(f"{tmp_dir}/e.txt", "entry")
        events = poll_events(handle, lambda ev: has(ev, "e.txt", Ev.CREATE))
        created = next(e for e in events if e.name == "e.txt" and e.type == Ev.CREATE)
        assert created.entry is not None
        assert created.entry.name == "e.txt"
        assert created.entry.path == f"{tmp_dir}/e.txt"
        assert created.entry.type == FileType.FILE
    finally:
        handle.stop()


async def test_async_watch_streams_events(async_sandbox, tmp_dir):
    events, exits = [], []
    handle = await async_sandbox.files.watch_dir(tmp_dir, on_event=events.append,
                                                 on_exit=exits.append)
    try:
        await async_sandbox.files.write(f"{tmp_dir}/s.txt", "s")
        await wait_for_async(events, lambda ev: has(ev, "s.txt", Ev.CREATE))
        await async_sandbox.files.remove(f"{tmp_dir}/s.txt")
        await wait_for_async(events, lambda ev: has(ev, "s.txt", Ev.REMOVE))
    finally:
        await handle.stop()
    assert exits == [None]


async def test_async_watch_recursive(async_sandbox, tmp_dir, machine):
    machine.make_dir(f"{tmp_dir}/d1/d2")
    events = []
    handle = await async_sandbox.files.watch_dir(tmp_dir, on_event=events.append,
                                                 recursive=True)
    try:
        await async_sandbox.files.write(f"{tmp_dir}/d1/d2/deep.txt", "x")
        await wait_for_async(events, lambda ev: has(ev, "d1/d2/deep.txt", Ev.CREATE))
    finally:
        await handle.stop()


async def test_async_watch_include_entry(async_sandbox, tmp_dir):
    events = []
    handle = await async_sandbox.files.watch_dir(tmp_dir, on_event=events.append,
                                                 include_entry=True)
    try:
        await async_sandbox.files.make_dir(f"{tmp_dir}/newdir")
        await wait_for_async(events, lambda ev: has(ev, "newdir", Ev.CREATE))
        created = next(e for e in events if e.name == "newdir")
        assert created.entry is not None and created.entry.type == FileType.DIR
    finally:
        await handle.stop()
