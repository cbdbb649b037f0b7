"""Filesystem through the async SDK: `AsyncSandbox.files`."""

import io
import os

import pytest

from e2b import FileNotFoundException, FileType

from helpers import DEFAULT_USER, unique, user_entry

BINARY = bytes(range(256)) * 64


async def test_write_and_read_text_and_bytes(async_sandbox, tmp_dir):
    info = await async_sandbox.files.write(f"{tmp_dir}/t.txt", "héllo")
    assert (info.name, info.path, info.type) == ("t.txt", f"{tmp_dir}/t.txt", FileType.FILE)
    assert await async_sandbox.files.read(f"{tmp_dir}/t.txt") == "héllo"
    await async_sandbox.files.write(f"{tmp_dir}/b.bin", BINARY)
    assert bytes(await async_sandbox.files.read(f"{tmp_dir}/b.bin", format="bytes")) == BINARY


async def test_write_file_like_and_async_iterable(async_sandbox, tmp_dir, machine):
    await async_sandbox.files.write(f"{tmp_dir}/io.bin", io.BytesIO(BINARY))

    async def chunks():
        for i in range(5):
            yield bytes([97 + i]) * 100

    await async_sandbox.files.write(f"{tmp_dir}/gen.bin", chunks())
    assert machine.read(f"{tmp_dir}/io.bin") == BINARY
    assert machine.read(f"{tmp_dir}/gen.bin") == b"".join(bytes([97 + i]) * 100 for i in range(5))


async def test_write_gzip_and_octet_stream(async_sandbox, tmp_dir, machine):
    await async_sandbox.files.write(f"{tmp_dir}/g.bin", BINARY, gzip=True)
    await async_sandbox.files.write(f"{tmp_dir}/o.bin", BINARY, use_octet_stream=True)
    assert machine.read(f"{tmp_dir}/g.bin") == BINARY
    assert machine.read(f"{tmp_dir}/o.bin") == BINARY
    data = await async_sandbox.files.read(f"{tmp_dir}/g.bin", format="bytes", gzip=True)
    assert bytes(data) == BINARY


async def test_write_files(async_sandbox, tmp_dir, machine):
    infos = await async_sandbox.files.write_files([
        {"path": f"{tmp_dir}/1.txt", "data": "1"},
        {"path": f"{tmp_dir}/d/2.txt", "data": b"2"},
    ])
    assert sorted(i.path for i in infos) == [f"{tmp_dir}/1.txt", f"{tmp_dir}/d/2.txt"]
    assert machine.read(f"{tmp_dir}/d/2.txt") == b"2"


async def test_read_stream(async_sandbox, tmp_dir, machine):
    payload = os.urandom(512 * 1024 + 3)
    machine.write(f"{tmp_dir}/s.bin", payload)
    parts = []
    async with await async_sandbox.files.read(f"{tmp_dir}/s.bin", format="stream") as stream:
        async for chunk in stream:
            parts.append(chunk)
    assert b"".join(parts) == payload


async def test_read_missing(async_sandbox, tmp_dir):
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.read(f"{tmp_dir}/missing")


async def test_list_exists_get_info(async_sandbox, tmp_dir, machine):
    machine.make_dir(f"{tmp_dir}/sub/deep")
    machine.write(f"{tmp_dir}/f.txt", b"abc")
    entries = await async_sandbox.files.list(tmp_dir)
    assert {(e.name, e.type) for e in entries} == {("f.txt", FileType.FILE),
                                                    ("sub", FileType.DIR)}
    deep = await async_sandbox.files.list(tmp_dir, depth=2)
    assert {e.path for e in deep} == {f"{tmp_dir}/f.txt", f"{tmp_dir}/sub", f"{tmp_dir}/sub/deep"}
    assert await async_sandbox.files.exists(f"{tmp_dir}/f.txt") is True
    assert await async_sandbox.files.exists(f"{tmp_dir}/nope") is False
    info = await async_sandbox.files.get_info(f"{tmp_dir}/f.txt")
    # The suite made the file as the default user.
    assert (info.size, info.owner, info.type) == (3, DEFAULT_USER, FileType.FILE)


async def test_make_dir_rename_remove(async_sandbox, tmp_dir, machine):
    assert await async_sandbox.files.make_dir(f"{tmp_dir}/a/b") is True
    assert await async_sandbox.files.make_dir(f"{tmp_dir}/a/b") is False
    await async_sandbox.files.write(f"{tmp_dir}/a/b/x.txt", "x")
    info = await async_sandbox.files.rename(f"{tmp_dir}/a/b/x.txt", f"{tmp_dir}/a/y.txt")
    assert info.path == f"{tmp_dir}/a/y.txt"
    assert not machine.exists(f"{tmp_dir}/a/b/x.txt")
    await async_sandbox.files.remove(f"{tmp_dir}/a")
    assert not machine.exists(f"{tmp_dir}/a")


async def test_user_ownership_and_relative_path(async_sandbox, user_dir, machine):
    u = user_entry()
    name = os.path.basename(user_dir)
    rel = f"{name}/{unique('rel')}.txt"
    info = await async_sandbox.files.write(rel, "owned", user="user")
    assert info.path == f"{u.pw_dir}/{rel}"
    st = machine.stat(info.path)
    assert (st.uid, st.gid) == (u.pw_uid, u.pw_gid)
    got = await async_sandbox.files.get_info(rel, user="user")
    assert (got.owner, got.group) == ("user", "user")
