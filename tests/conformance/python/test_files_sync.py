"""Filesystem through the sync SDK: `/files` upload/download and the Filesystem RPCs.

Results are cross-checked on the machine envd works on (`machine`: this one in
debug mode, the test's VM in node mode).
"""

import io
import os
import tempfile
import time

import pytest

from e2b import FileNotFoundException, FileType

from helpers import DEFAULT_HOME, DEFAULT_USER, unique, user_entry

BINARY = bytes(range(256)) * 64


# --- write / read -------------------------------------------------------------

def test_write_str_and_read_text(sandbox, tmp_dir, machine):
    path = f"{tmp_dir}/a.txt"
    info = sandbox.files.write(path, "hello\nwörld")
    assert (info.name, info.path, info.type) == ("a.txt", path, FileType.FILE)
    assert machine.read(path) == "hello\nwörld".encode()
    assert sandbox.files.read(path) == "hello\nwörld"


def test_write_bytes_and_read_bytes(sandbox, tmp_dir, machine):
    path = f"{tmp_dir}/bin.dat"
    sandbox.files.write(path, BINARY)
    assert machine.read(path) == BINARY
    data = sandbox.files.read(path, format="bytes")
    assert isinstance(data, bytearray)
    assert bytes(data) == BINARY


@pytest.mark.parametrize("octet", [False, True], ids=["multipart", "octet-stream"])
def test_write_both_upload_encodings(sandbox, tmp_dir, octet, machine):
    path = f"{tmp_dir}/enc.dat"
    info = sandbox.files.write(path, BINARY, use_octet_stream=octet)
    assert info.path == path
    assert machine.read(path) == BINARY


def test_write_file_like_objects(sandbox, tmp_dir, machine):
    sandbox.files.write(f"{tmp_dir}/b.bin", io.BytesIO(BINARY))
    sandbox.files.write(f"{tmp_dir}/s.txt", io.StringIO("text io ✓"))
    # A real file on the client's side.
    with tempfile.TemporaryFile() as f:
        f.write(b"from a real file")
        f.seek(0)
        sandbox.files.write(f"{tmp_dir}/f.bin", f)
    assert machine.read(f"{tmp_dir}/b.bin") == BINARY
    assert machine.read(f"{tmp_dir}/s.txt") == "text io ✓".encode()
    assert machine.read(f"{tmp_dir}/f.bin") == b"from a real file"


def test_write_iterable_of_chunks(sandbox, tmp_dir, machine):
    chunks = (bytes([65 + i]) * 1000 for i in range(10))
    sandbox.files.write(f"{tmp_dir}/it.bin", chunks)
    assert machine.read(f"{tmp_dir}/it.bin") == b"".join(bytes([65 + i]) * 1000 for i in range(10))


def test_write_gzip_and_read_gzip(sandbox, tmp_dir, machine):
    text = "gzip ✓ " * 1000
    sandbox.files.write(f"{tmp_dir}/gz.txt", text, gzip=True)
    assert machine.read(f"{tmp_dir}/gz.txt") == text.encode()  # stored decompressed
    assert sandbox.files.read(f"{tmp_dir}/gz.txt", gzip=True) == text
    sandbox.files.write(f"{tmp_dir}/gz.bin", io.BytesIO(BINARY), gzip=True)
    assert machine.read(f"{tmp_dir}/gz.bin") == BINARY
    assert bytes(sandbox.files.read(f"{tmp_dir}/gz.bin", format="bytes", gzip=True)) == BINARY


def test_write_creates_parents_and_overwrites(sandbox, tmp_dir, machine):
    path = f"{tmp_dir}/x/y/z.txt"
    sandbox.files.write(path, "a long first version")
    assert machine.is_dir(f"{tmp_dir}/x/y")
    sandbox.files.write(path, "short")
    assert machine.read(path) == b"short"


def test_write_empty_file(sandbox, tmp_dir, machine):
    sandbox.files.write(f"{tmp_dir}/empty", b"")
    assert machine.read(f"{tmp_dir}/empty") == b""
    assert sandbox.files.read(f"{tmp_dir}/empty") == ""


def test_write_files_multipart(sandbox, tmp_dir, machine):
    infos = sandbox.files.write_files([
        {"path": f"{tmp_dir}/one.txt", "data": "one"},
        {"path": f"{tmp_dir}/sub/two.bin", "data": b"two"},
    ])
    assert sorted(i.path for i in infos) == [f"{tmp_dir}/one.txt", f"{tmp_dir}/sub/two.bin"]
    assert {i.name for i in infos} == {"one.txt", "two.bin"}
    assert machine.read(f"{tmp_dir}/one.txt") == b"one"
    assert machine.read(f"{tmp_dir}/sub/two.bin") == b"two"


def test_write_files_octet_stream(sandbox, tmp_dir, machine):
    infos = sandbox.files.write_files(
        [{"path": f"{tmp_dir}/p.txt", "data": "p"}, {"path": f"{tmp_dir}/q.txt", "data": "q"}],
        use_octet_stream=True)
    assert [i.path for i in infos] == [f"{tmp_dir}/p.txt", f"{tmp_dir}/q.txt"]
    assert machine.read(f"{tmp_dir}/q.txt") == b"q"


def test_read_stream(sandbox, tmp_dir, machine):
    payload = os.urandom(1024 * 1024 + 17)
    machine.write(f"{tmp_dir}/big.bin", payload)
    with sandbox.files.read(f"{tmp_dir}/big.bin", format="stream") as stream:
        assert b"".join(stream) == payload


def test_read_a_file_that_says_it_is_empty_but_is_not(sandbox, machine):
    # procfs makes its files' content as they are read; their size is 0.
    path = "/proc/sys/kernel/random/boot_id"
    expected = machine.read(path).decode()
    assert expected.strip()
    assert sandbox.files.read(path) == expected


def test_read_missing_file_raises_file_not_found(sandbox, tmp_dir):
    with pytest.raises(FileNotFoundException):
        sandbox.files.read(f"{tmp_dir}/missing.txt")


def test_upload_metadata(sandbox, tmp_dir, machine):
    path = f"{tmp_dir}/meta.txt"
    info = sandbox.files.write(path, "m", metadata={"Author": "hearth", "k2": "v 2"})
    assert info.metadata in (None, {"author": "hearth", "k2": "v 2"})
    assert machine.getxattr(path, "user.e2b.author") == b"hearth"
    assert sandbox.files.get_info(path).metadata == {"author": "hearth", "k2": "v 2"}
    sandbox.files.write(path, "m2", metadata={"k3": "v3"})
    assert sandbox.files.get_info(path).metadata == {"k3": "v3"}


# --- list / exists / get_info -------------------------------------------------

def make_tree(machine, root):
    machine.write(f"{root}/a.txt", b"aaaa")
    machine.write(f"{root}/sub/b.txt", b"b")
    machine.write(f"{root}/sub/deeper/c.txt", b"c")


def test_list_depth_one(sandbox, tmp_dir, machine):
    make_tree(machine, tmp_dir)
    entries = sandbox.files.list(tmp_dir)
    assert {(e.name, e.type, e.path) for e in entries} == {
        ("a.txt", FileType.FILE, f"{tmp_dir}/a.txt"),
        ("sub", FileType.DIR, f"{tmp_dir}/sub"),
    }
    assert next(e for e in entries if e.name == "a.txt").size == 4


def test_list_depth_two(sandbox, tmp_dir, machine):
    make_tree(machine, tmp_dir)
    entries = sandbox.files.list(tmp_dir, depth=2)
    assert {e.path for e in entries} == {
        f"{tmp_dir}/a.txt", f"{tmp_dir}/sub", f"{tmp_dir}/sub/b.txt", f"{tmp_dir}/sub/deeper",
    }


def test_exists(sandbox, tmp_dir, machine):
    machine.write(f"{tmp_dir}/f", b"")
    assert sandbox.files.exists(f"{tmp_dir}/f") is True
    assert sandbox.files.exists(tmp_dir) is True
    assert sandbox.files.exists(f"{tmp_dir}/nope") is False


def test_get_info_of_file(sandbox, tmp_dir, machine):
    path = f"{tmp_dir}/info.txt"
    machine.write(path, b"12345", mode=0o640)
    info = sandbox.files.get_info(path)
    assert (info.name, info.path, info.type) == ("info.txt", path, FileType.FILE)
    assert info.size == 5
    assert info.mode == 0o640
    # Go's os.FileMode.String(), as upstream envd reports it.
    assert info.permissions == "-rw-r-----"
    # The suite made the file as the default user.
    assert (info.owner, info.group) == (DEFAULT_USER, DEFAULT_USER)
    assert abs(info.modified_time.timestamp() - machine.stat(path).mtime) < 1.0
    assert abs(info.modified_time.timestamp() - time.time()) < 60
    assert info.symlink_target is None


def test_get_info_of_directory(sandbox, tmp_dir, machine):
    machine.make_dir(f"{tmp_dir}/d", mode=0o750)
    info = sandbox.files.get_info(f"{tmp_dir}/d")
    assert (info.name, info.type, info.mode, info.permissions) == ("d", FileType.DIR, 0o750,
                                                                   "drwxr-x---")


def test_get_info_of_symlink(sandbox, tmp_dir, machine):
    machine.write(f"{tmp_dir}/target.txt", b"t")
    machine.symlink(f"{tmp_dir}/target.txt", f"{tmp_dir}/link")
    info = sandbox.files.get_info(f"{tmp_dir}/link")
    assert info.name == "link"
    assert info.path == f"{tmp_dir}/link"
    assert info.type == FileType.SYMLINK
    assert info.symlink_target == machine.realpath(f"{tmp_dir}/link")
    listed = {e.name: e for e in sandbox.files.list(tmp_dir)}
    assert listed["link"].type == FileType.SYMLINK


# --- make_dir / rename / remove -----------------------------------------------

def test_make_dir(sandbox, tmp_dir, machine):
    assert sandbox.files.make_dir(f"{tmp_dir}/new/nested") is True
    assert machine.is_dir(f"{tmp_dir}/new/nested")
    assert sandbox.files.make_dir(f"{tmp_dir}/new/nested") is False
    assert sandbox.files.get_info(f"{tmp_dir}/new/nested").type == FileType.DIR


def test_rename(sandbox, tmp_dir, machine):
    machine.write(f"{tmp_dir}/old.txt", b"content")
    info = sandbox.files.rename(f"{tmp_dir}/old.txt", f"{tmp_dir}/new.txt")
    assert (info.name, info.path, info.type) == ("new.txt", f"{tmp_dir}/new.txt", FileType.FILE)
    assert not machine.exists(f"{tmp_dir}/old.txt")
    assert sandbox.files.exists(f"{tmp_dir}/old.txt") is False
    assert sandbox.files.read(f"{tmp_dir}/new.txt") == "content"


def test_rename_missing_source(sandbox, tmp_dir):
    with pytest.raises(FileNotFoundException):
        sandbox.files.rename(f"{tmp_dir}/ghost", f"{tmp_dir}/other")


def test_remove_file_and_directory(sandbox, tmp_dir, machine):
    make_tree(machine, tmp_dir)
    sandbox.files.remove(f"{tmp_dir}/a.txt")
    assert not machine.exists(f"{tmp_dir}/a.txt")
    sandbox.files.remove(f"{tmp_dir}/sub")
    assert not machine.exists(f"{tmp_dir}/sub")
    assert sandbox.files.exists(f"{tmp_dir}/sub") is False


# --- users and path resolution ------------------------------------------------

def test_files_written_as_user_are_owned_by_user(sandbox, user_dir, machine):
    u = user_entry()
    path = f"{user_dir}/n1/n2/u.txt"
    sandbox.files.write(path, "mine", user="user")
    for p in (f"{user_dir}/n1", f"{user_dir}/n1/n2", path):
        st = machine.stat(p)
        assert (st.uid, st.gid) == (u.pw_uid, u.pw_gid), p
    info = sandbox.files.get_info(path, user="user")
    assert (info.owner, info.group) == ("user", "user")
    assert sandbox.commands.run(f"stat -c %U:%G {path}").stdout == "user:user\n"
    assert sandbox.files.read(path, user="user") == "mine"


def test_files_written_by_default_user_are_owned_by_it(sandbox, user_dir, machine):
    # root for a debug-mode envd, `user` in a hearth VM (see helpers.DEFAULT_USER).
    uid = 0 if DEFAULT_USER == "root" else user_entry().pw_uid
    sandbox.files.write(f"{user_dir}/r.txt", "r")
    assert machine.stat(f"{user_dir}/r.txt").uid == uid
    assert sandbox.files.get_info(f"{user_dir}/r.txt").owner == DEFAULT_USER


def test_make_dir_as_user(sandbox, user_dir, machine):
    assert sandbox.files.make_dir(f"{user_dir}/ud", user="user") is True
    assert machine.stat(f"{user_dir}/ud").uid == user_entry().pw_uid


def test_relative_paths_resolve_against_home(sandbox, user_home, machine):
    name = unique("hearth-rel") + ".txt"
    for user, home in (("user", user_home), (None, DEFAULT_HOME)):
        try:
            info = sandbox.files.write(name, f"rel-{user}", user=user)
            assert info.path == f"{home}/{name}"
            assert machine.read(f"{home}/{name}") == f"rel-{user}".encode()
            assert sandbox.files.read(name, user=user) == f"rel-{user}"
            assert sandbox.files.exists(name, user=user) is True
            assert sandbox.files.get_info(name, user=user).path == f"{home}/{name}"
        finally:
            machine.remove_tree(f"{home}/{name}")


def test_tilde_expands_to_home(sandbox, user_home, machine):
    name = unique("hearth-tilde") + ".txt"
    try:
        info = sandbox.files.write(f"~/{name}", "t", user="user")
        assert info.path == f"{user_home}/{name}"
        assert machine.read(f"{user_home}/{name}") == b"t"
    finally:
        machine.remove_tree(f"{user_home}/{name}")
