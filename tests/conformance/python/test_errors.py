"""Error mapping: Connect codes and envd HTTP statuses → SDK exceptions (contract §5.7)."""

import pytest

from e2b import (
    AuthenticationException,
    FileNotFoundException,
    InvalidArgumentException,
    NotFoundException,
    PtySize,
)


def test_unknown_user_on_rpc_is_authentication_error(sandbox):
    with pytest.raises(AuthenticationException):
        sandbox.commands.run("true", user="nosuchuser")
    with pytest.raises(AuthenticationException):
        sandbox.files.list("/", user="nosuchuser")


def test_unknown_user_on_files_is_authentication_error(sandbox, tmp_dir, machine):
    machine.write(f"{tmp_dir}/f", b"x")
    with pytest.raises(AuthenticationException):
        sandbox.files.read(f"{tmp_dir}/f", user="nosuchuser")
    with pytest.raises(AuthenticationException):
        sandbox.files.write(f"{tmp_dir}/g", "x", user="nosuchuser")
    assert not machine.exists(f"{tmp_dir}/g")


async def test_unknown_user_async(async_sandbox):
    with pytest.raises(AuthenticationException):
        await async_sandbox.commands.run("true", user="nosuchuser")


def test_missing_cwd_is_invalid_argument(sandbox, tmp_dir):
    with pytest.raises(InvalidArgumentException) as info:
        sandbox.commands.run("pwd", cwd=f"{tmp_dir}/does-not-exist")
    assert "does not exist" in str(info.value)
    with pytest.raises(InvalidArgumentException):
        sandbox.pty.create(PtySize(rows=24, cols=80), cwd=f"{tmp_dir}/does-not-exist")


async def test_missing_cwd_async(async_sandbox, tmp_dir):
    with pytest.raises(InvalidArgumentException):
        await async_sandbox.commands.run("pwd", cwd=f"{tmp_dir}/nope")


def test_listing_missing_directory_is_file_not_found(sandbox, tmp_dir):
    with pytest.raises(FileNotFoundException):
        sandbox.files.list(f"{tmp_dir}/nope")
    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info(f"{tmp_dir}/nope")


async def test_listing_missing_directory_async(async_sandbox, tmp_dir):
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.list(f"{tmp_dir}/nope")


def test_watching_missing_directory_is_file_not_found(sandbox, tmp_dir):
    with pytest.raises(FileNotFoundException):
        sandbox.files.watch_dir(f"{tmp_dir}/nope")


async def test_watching_missing_directory_async(async_sandbox, tmp_dir):
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.watch_dir(f"{tmp_dir}/nope", on_event=lambda e: None)


def test_reading_a_directory_is_invalid_argument(sandbox, tmp_dir):
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read(tmp_dir)


def test_kill_unknown_pid_returns_false(sandbox):
    assert sandbox.commands.kill(999_999) is False
    assert sandbox.pty.kill(999_999) is False


async def test_kill_unknown_pid_async(async_sandbox):
    assert await async_sandbox.commands.kill(999_999) is False


def test_unknown_pid_is_not_found(sandbox):
    with pytest.raises(NotFoundException):
        sandbox.commands.send_stdin(999_999, "x")
    with pytest.raises(NotFoundException):
        sandbox.commands.connect(999_999)
    with pytest.raises(NotFoundException):
        sandbox.pty.resize(999_999, PtySize(rows=10, cols=10))
