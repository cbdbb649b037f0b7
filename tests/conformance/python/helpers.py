"""Shared helpers for the envd conformance suite.

The suite runs in one of two modes, chosen by HEARTH_CONFORMANCE_TARGET:

* `debug` (the default): the SDK in debug mode against an envd process on this
  machine (tests/conformance/run.sh). Files and processes envd works on are
  this machine's, so the suite prepares and checks them directly.
* `node`: the SDK against `hearth up` (tests/conformance/run-node.sh), configured
  by E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY. Every test gets its own VM;
  the suite prepares and checks files inside it through that VM's envd
  (`GuestMachine`), and raw HTTP goes through hearth's sandbox proxy.

Besides that: starting and stopping envd processes, polling, unique paths and a
minimal Connect-protocol / protobuf codec for the raw-wire tests. Standard
library and httpx (a dependency of the e2b SDK) only; the e2b package is only
imported lazily, so that conftest.py configures it before it is loaded.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shlex
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import httpx

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_PORT = 49983

TARGET = os.environ.get("HEARTH_CONFORMANCE_TARGET") or "debug"
if TARGET not in ("debug", "node"):
    raise RuntimeError(f"HEARTH_CONFORMANCE_TARGET must be 'debug' or 'node', not {TARGET!r}")
NODE = TARGET == "node"

# A node-mode sandbox's lifetime: longer than any test, and it is killed after
# its test anyway.
SANDBOX_TIMEOUT = 600


class Account(NamedTuple):
    """The fields of a passwd entry the suite uses (like pwd.struct_passwd)."""

    pw_name: str
    pw_uid: int
    pw_gid: int
    pw_dir: str


# The accounts of hearth's guest image (a Debian bookworm rootfs).
GUEST_ROOT = Account("root", 0, 0, "/root")
GUEST_USER = Account("user", 1000, 1000, "/home/user")

ROOT_HOME = GUEST_ROOT.pw_dir if NODE else pwd.getpwnam("root").pw_dir

# Whom envd runs a request as when it names no user. A debug-mode envd was
# never initialised, so it is root, as the envd process itself; hearth
# initialises each VM's envd with the template's user, `user`. Files the suite
# prepares for a test are made as this user too (as root in debug mode), so
# that requests without a user may change them in both modes.
DEFAULT_USER = GUEST_USER.pw_name if NODE else "root"
DEFAULT_HOME = GUEST_USER.pw_dir if NODE else ROOT_HOME


def user_entry() -> Account:
    """The unprivileged `user` account the suite runs commands as."""
    if NODE:
        return GUEST_USER
    try:
        e = pwd.getpwnam("user")
    except KeyError:
        raise RuntimeError(
            "the account 'user' does not exist; run tests/conformance/run.sh "
            "or `useradd -m -s /bin/bash user` first"
        ) from None
    return Account(e.pw_name, e.pw_uid, e.pw_gid, e.pw_dir)


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


# --- the machine envd works on -----------------------------------------------

class FileStat(NamedTuple):
    uid: int
    gid: int
    mode: int  # permission bits
    mtime: float


class LocalMachine:
    """Debug mode: envd runs here, so its files are this machine's (the suite
    runs as root, the default user of a debug-mode envd)."""

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def write(self, path: str, data: bytes, mode: Optional[int] = None) -> None:
        """Writes a file, creating its parents."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(path, mode)

    def make_dir(self, path: str, owner: Optional[Account] = None,
                 mode: Optional[int] = None) -> str:
        """Makes a directory and its parents; `owner` owns the last one."""
        os.makedirs(path, mode=0o755)
        if mode is not None:
            os.chmod(path, mode)
        if owner is not None:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        return path

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def symlink(self, target: str, link: str) -> None:
        os.symlink(target, link)

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def stat(self, path: str) -> FileStat:
        st = os.stat(path)
        return FileStat(st.st_uid, st.st_gid, st.st_mode & 0o7777, st.st_mtime)

    def getxattr(self, path: str, name: str) -> bytes:
        return os.getxattr(path, name)

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def remove_tree(self, path: str) -> None:
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)

    def facts(self) -> Dict[str, int]:
        """What envd's /metrics should report about this machine."""
        st = os.statvfs("/")
        return {
            "cpu_count": os.cpu_count(),
            "mem_total": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "disk_total": st.f_blocks * st.f_frsize,
        }


_GUEST_FACTS = (
    "import json, os; st = os.statvfs('/'); print(json.dumps({"
    "'cpu_count': os.cpu_count(), "
    "'mem_total': os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'), "
    "'disk_total': st.f_blocks * st.f_frsize}))"
)
_GUEST_GETXATTR = "import os, sys; print(os.getxattr(sys.argv[1], sys.argv[2]).hex())"


class GuestMachine:
    """Node mode: the same operations as LocalMachine, inside a test's VM.

    Everything goes through the sync SDK handle `sbx` of that VM: commands
    (as root to look, as the owner to make things) and, for file contents,
    `sbx.files.write`. Results are read back with `base64`, so checks of the
    Filesystem service do not rely on its own download path.
    """

    def __init__(self, sbx):
        self.sbx = sbx

    def run(self, *argv: str, user: str = "root") -> str:
        cmd = " ".join(shlex.quote(str(a)) for a in argv)
        return self.sbx.commands.run(cmd, user=user, timeout=60).stdout

    def check(self, *argv: str) -> bool:
        """Whether the command exits with 0 (run as root)."""
        from e2b import CommandExitException

        try:
            self.run(*argv)
            return True
        except CommandExitException:
            return False

    def read(self, path: str) -> bytes:
        from e2b import CommandExitException

        try:
            out = self.run("base64", "-w0", "--", path)
        except CommandExitException as e:
            if "No such file" in e.stderr:
                raise FileNotFoundError(path) from None
            raise
        return base64.b64decode(out)

    def write(self, path: str, data: bytes, mode: Optional[int] = None) -> None:
        self.sbx.files.write(path, data, user=DEFAULT_USER)
        if mode is not None:
            self.chmod(path, mode)

    def make_dir(self, path: str, owner: Optional[Account] = None,
                 mode: Optional[int] = None) -> str:
        user = owner.pw_name if owner is not None else DEFAULT_USER
        self.run("mkdir", "-p", "--", path, user=user)
        if mode is not None:
            self.chmod(path, mode)
        return path

    def chmod(self, path: str, mode: int) -> None:
        self.run("chmod", format(mode, "o"), "--", path)

    def symlink(self, target: str, link: str) -> None:
        self.run("ln", "-s", "--", target, link, user=DEFAULT_USER)

    def exists(self, path: str) -> bool:
        return self.check("sh", "-c", 'test -e "$1" || test -L "$1"', "sh", path)

    def is_dir(self, path: str) -> bool:
        return self.check("test", "-d", path)

    def stat(self, path: str) -> FileStat:
        uid, gid, mode, mtime = self.run("stat", "-c", "%u %g %a %Y", "--", path).split()
        # %Y is whole seconds: enough for the suite's one-second tolerances.
        return FileStat(int(uid), int(gid), int(mode, 8), float(mtime))

    def getxattr(self, path: str, name: str) -> bytes:
        return bytes.fromhex(self.run("python3", "-c", _GUEST_GETXATTR, path, name).strip())

    def realpath(self, path: str) -> str:
        return self.run("realpath", "--", path).rstrip("\n")

    def remove_tree(self, path: str) -> None:
        self.run("rm", "-rf", "--", path)

    def facts(self) -> Dict[str, int]:
        return json.loads(self.run("python3", "-c", _GUEST_FACTS))


# --- raw HTTP to one envd --------------------------------------------------------

class Endpoint:
    """Where raw HTTP requests for one envd go, and the headers they need.

    Debug mode: envd's own address, no extra headers. Node mode: hearth's
    sandbox proxy (E2B_SANDBOX_URL), which routes by `E2b-Sandbox-Id` and
    `E2b-Sandbox-Port`; the VM's envd wants the sandbox's access token in
    `X-Access-Token`. `token` is the token envd currently requires (tests that
    change it through /init update it).
    """

    def __init__(self, url: str, sandbox_id: str, token: Optional[str] = None,
                 route: Optional[Dict[str, str]] = None, envd_version=None):
        self.url = url
        self.sandbox_id = sandbox_id
        self.token = token
        self.route = dict(route or {})
        self.envd_version = envd_version

    def headers(self, token=...) -> Dict[str, str]:
        """Routing headers plus `token` (default: the current one; None: none)."""
        if token is ...:
            token = self.token
        headers = dict(self.route)
        if token is not None:
            headers["X-Access-Token"] = token
        return headers


def proxy_route(sandbox_id: str) -> Dict[str, str]:
    return {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(SHARED_PORT)}


def proxy_endpoint(sbx) -> Endpoint:
    """Node mode: the envd of the VM behind the SDK handle `sbx`, via the proxy."""
    return Endpoint(os.environ["E2B_SANDBOX_URL"], sbx.sandbox_id, sbx._envd_access_token,
                    proxy_route(sbx.sandbox_id), sbx._envd_version)


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
