"""Shared helpers for the envd conformance suite.

Starting and stopping envd processes, polling, unique paths and a minimal
Connect-protocol / protobuf codec for the raw-wire tests. Standard library and
httpx (a dependency of the e2b SDK) only.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import httpx

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_PORT = 49983

ROOT_HOME = pwd.getpwnam("root").pw_dir


def user_entry() -> pwd.struct_passwd:
    """The unprivileged `user` account the suite runs commands as."""
    try:
        return pwd.getpwnam("user")
    except KeyError:
        raise RuntimeError(
            "the account 'user' does not exist; run tests/conformance/run.sh "
            "or `useradd -m -s /bin/bash user` first"
        ) from None


def envd_binary() -> str:
    path = os.environ.get("ENVD_BIN") or str(REPO_ROOT / "target" / "debug" / "envd")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise RuntimeError(f"envd binary not found or not executable: {path} (set ENVD_BIN)")
    return path


def base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health_status(port: int, timeout: float = 1.0) -> Optional[int]:
    try:
        return httpx.get(f"{base_url(port)}/health", timeout=timeout).status_code
    except httpx.HTTPError:
        return None


class EnvdProcess:
    """One envd process started by the suite, with its log in a temp file."""

    def __init__(self, port: int, name: str = "envd"):
        self.port = port
        self.url = base_url(port)
        log_dir = os.environ.get("ENVD_LOG_DIR") or tempfile.gettempdir()
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"hearth-conf-{name}.log")
        self.proc: Optional[subprocess.Popen] = None

    def start(self, deadline: float = 20.0) -> "EnvdProcess":
        if health_status(self.port) is not None:
            raise RuntimeError(
                f"port {self.port} already answers /health: another envd is running; "
                "stop it first (the suite must test the binary it starts)"
            )
        binary = envd_binary()
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        try:
            self._wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, deadline: float) -> None:
        end = time.monotonic() + deadline
        last = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"envd exited with code {self.proc.returncode} before becoming healthy\n"
                    + self.log_tail()
                )
            last = health_status(self.port, timeout=0.5)
            if last == 204:
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"envd on port {self.port} did not answer GET /health with 204 within "
            f"{deadline:.0f}s (last status: {last})\n" + self.log_tail()
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                data = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no envd log)"
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(data[-lines:])


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.1,
               message: str = "condition not met") -> None:
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > end:
            raise AssertionError(f"{message} (waited {timeout}s)")
        time.sleep(interval)


def unique(prefix: str = "hearth-conf") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_dir(path: str, owner: Optional[pwd.struct_passwd] = None) -> str:
    os.makedirs(path, mode=0o755)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def remove_tree(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


# --- Connect protocol: envelopes -------------------------------------------------

FLAG_END_STREAM = 0x02


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def json_envelope(msg: dict) -> bytes:
    return envelope(json.dumps(msg).encode())


def iter_envelopes(chunks: Iterator[bytes]) -> Iterator[Tuple[int, bytes]]:
    """Split a byte stream into (flags, payload) envelopes as they complete."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        while len(buf) >= 5:
            flags, length = struct.unpack(">BI", buf[:5])
            if len(buf) < 5 + length:
                break
            yield flags, buf[5:5 + length]
            buf = buf[5 + length:]
    if buf:
        raise AssertionError(f"stream ended inside an envelope ({len(buf)} trailing bytes)")


def parse_envelopes(body: bytes) -> List[Tuple[int, bytes]]:
    return list(iter_envelopes(iter([body])))


# --- protobuf: just enough to hand-encode and decode a few messages --------------

def pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_len_field(number: int, data: bytes) -> bytes:
    return pb_varint((number << 3) | 2) + pb_varint(len(data)) + data


def pb_decode(buf: bytes) -> List[Tuple[int, int, object]]:
    """Decode one message level into (field number, wire type, value) triples.

    Varints come back as int, length-delimited fields as bytes.
    """
    fields = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, wire, varint()))
        elif wire == 2:
            length = varint()
            fields.append((number, wire, buf[i:i + length]))
            i += length
        elif wire == 1:
            fields.append((number, wire, buf[i:i + 8]))
            i += 8
        elif wire == 5:
            fields.append((number, wire, buf[i:i + 4]))
            i += 4
        else:
            raise AssertionError(f"unsupported wire type {wire}")
    return fields


def zigzag_decode(n: int) -> int:
    return (n >> 1) ^ -(n & 1)
