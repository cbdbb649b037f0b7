"""Sandbox URLs as against E2B's cloud, with nothing but the sdk.env that
`hearth up` writes: `https://<port>-<id>.<domain>` for envd and for the
sandbox's own servers (`get_host()`), over hearth's local CA, which the
SDK, httpx, urllib and curl trust through SSL_CERT_FILE or the CA file.
The domain is `hearth.localhost:<port>`: glibc resolves it to loopback
(nss-myhostname), browsers do by themselves.
"""

import base64
import hashlib
import json
import os
import socket
import ssl
import subprocess
import time
from urllib.parse import urlsplit

import httpx
from e2b import Sandbox

DOMAIN = os.environ["E2B_DOMAIN"]

# A server for the guest: GET /host answers with the Host it was sent;
# GET /ws speaks WebSocket and echoes one text message upper-cased.
GUEST_SERVER = r"""
import base64, hashlib, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/ws":
            return self.websocket()
        body = json.dumps({"host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        head = self.rfile.read(2)
        length = head[1] & 0x7F
        mask = self.rfile.read(4)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
        reply = data.decode().upper().encode()
        self.wfile.write(bytes([0x81, len(reply)]) + reply)
        self.wfile.flush()
        self.close_connection = True

ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"""


def serve(sbx, port):
    """Starts the guest server on `port`; waits until it answers through
    the sandbox's host."""
    sbx.files.write("/tmp/guest_server.py", GUEST_SERVER)
    sbx.commands.run(f"python3 /tmp/guest_server.py {port}", background=True)
    url = f"https://{sbx.get_host(port)}/host"
    deadline = time.time() + 30
    while True:
        r = httpx.get(url, timeout=30, headers=traffic_header(sbx))
        if r.status_code != 502 or time.time() > deadline:
            return r
        time.sleep(0.2)


def traffic_header(sbx):
    token = getattr(sbx, "traffic_access_token", None)
    return {"e2b-traffic-access-token": token} if token else {}


def test_the_sdk_reaches_envd_by_host_over_https(sandbox):
    assert "E2B_SANDBOX_URL" not in os.environ
    assert sandbox.get_host(49983) == f"49983-{sandbox.sandbox_id}.{DOMAIN}"
    # The SDK's own envd URL is that host over https, as against E2B.
    envd_url = sandbox.connection_config.get_sandbox_url(sandbox.sandbox_id, DOMAIN)
    assert envd_url == f"https://49983-{sandbox.sandbox_id}.{DOMAIN}"
    assert sandbox.commands.run("echo over-https").stdout == "over-https\n"
    sandbox.files.write("/home/user/tls.txt", "by host")
    assert sandbox.files.read("/home/user/tls.txt") == "by host"
    # envd's own health answer, fetched the way a plain client would.
    r = httpx.get(f"{envd_url}/health", timeout=30)
    assert r.status_code == 204


def test_a_server_in_the_sandbox_answers_at_get_host(sandbox):
    r = serve(sandbox, 8000)
    assert r.status_code == 200, r.text
    host = sandbox.get_host(8000)
    assert r.json() == {"host": host}
    assert host == f"8000-{sandbox.sandbox_id}.{DOMAIN}"
    # curl with nothing but hearth's CA added, through glibc's resolver.
    curl = subprocess.run(
        ["curl", "-sS", "--fail", "--cacert", os.environ["NODE_EXTRA_CA_CERTS"], f"https://{host}/host"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE")},
    )
    assert curl.returncode == 0, curl.stderr
    assert json.loads(curl.stdout) == {"host": host}


def test_websockets_pass_through_host_routing(sandbox):
    assert serve(sandbox, 8001).status_code == 200
    host, _, port = sandbox.get_host(8001).rpartition(":")
    context = ssl.create_default_context()
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            key = base64.b64encode(os.urandom(16)).decode()
            tls.sendall(
                (
                    f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = tls.recv(4096)
                assert chunk, f"closed during the handshake: {head!r}"
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
            assert {k.lower(): v for k, v in fields.items()}[b"sec-websocket-accept"] == expected
            mask = os.urandom(4)
            payload = b"hello through the proxy"
            tls.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            frame = rest
            while len(frame) < 2 + len(payload):
                chunk = tls.recv(4096)
                assert chunk, f"closed before the echo: {frame!r}"
                frame += chunk
            assert frame[0] == 0x81 and frame[2:] == payload.upper()


def test_public_traffic_rules_hold_by_host():
    private = Sandbox.create(timeout=120, network={"allow_public_traffic": False})
    try:
        assert private.traffic_access_token
        r = serve(private, 8002)
        assert r.status_code == 200, r.text
        url = f"https://{private.get_host(8002)}/host"
        denied = httpx.get(url, timeout=30)
        assert denied.status_code == 403 and denied.json()["code"] == 403
        wrong = httpx.get(url, timeout=30, headers={"e2b-traffic-access-token": "wrong"})
        assert wrong.status_code == 403
        # envd is guarded by its own token, not the traffic one.
        assert private.commands.run("echo fine").stdout == "fine\n"
    finally:
        private.kill()
    public = Sandbox.create(timeout=120, network={"allow_public_traffic": True})
    try:
        assert not public.traffic_access_token
        assert serve(public, 8003).status_code == 200
    finally:
        public.kill()


def test_mask_request_host_is_the_host_the_port_sees():
    sbx = Sandbox.create(timeout=120, network={"mask_request_host": "${PORT}-app.example.test"})
    try:
        r = serve(sbx, 8004)
        assert r.status_code == 200, r.text
        assert r.json() == {"host": "8004-app.example.test"}
        assert sbx.get_info().network["mask_request_host"] == "${PORT}-app.example.test"
    finally:
        sbx.kill()


def test_unknown_and_killed_sandbox_hosts_get_e2bs_502(sandbox):
    unknown = httpx.get(f"https://8000-nosuchsandbox000000.{DOMAIN}/", timeout=30)
    assert unknown.status_code == 502
    assert unknown.json() == {"sandboxId": "nosuchsandbox000000", "message": "The sandbox was not found", "code": 502}
    url = f"https://{sandbox.get_host(49983)}/health"
    assert httpx.get(url, timeout=30).status_code == 204
    sandbox.kill()
    gone = httpx.get(url, timeout=30)
    assert gone.status_code == 502 and gone.json()["sandboxId"] == sandbox.sandbox_id


def test_the_api_is_reachable_by_its_own_host_too():
    """`https://api.<domain>`, the SDK's default API URL for E2B_DOMAIN."""
    r = httpx.get(
        f"https://api.{DOMAIN}/sandboxes",
        headers={"X-API-Key": os.environ["E2B_API_KEY"]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert urlsplit(os.environ["E2B_API_URL"]).scheme == "http"
