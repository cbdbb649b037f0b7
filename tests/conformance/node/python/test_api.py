"""The REST API and the sandbox proxy on the wire: auth, error bodies, team
isolation, keys, templates, and traffic to a sandbox's own ports."""

import os
import socket
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest

from e2b import Sandbox, SandboxQuery
from e2b.exceptions import AuthenticationException, NotFoundException

from conftest import API_KEY, API_URL


def api(method, path, key=API_KEY, **kwargs):
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["X-API-Key"] = key
    return httpx.request(method, API_URL + path, headers=headers, timeout=60, **kwargs)


def assert_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and isinstance(body["message"], str) and body["message"]


def test_health_and_openapi_need_no_key():
    assert api("GET", "/health", key=None).status_code == 204
    doc = api("GET", "/openapi.json", key=None).json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v2/sandboxes", "/sandboxes/{sandboxID}", "/sandboxes/{sandboxID}/timeout", "/api-keys"):
        assert path in doc["paths"]


def test_a_missing_or_wrong_key_is_401_everywhere():
    for method, path in (("GET", "/v2/sandboxes"), ("POST", "/v2/sandboxes"), ("GET", "/templates"),
                         ("DELETE", "/sandboxes/x"), ("GET", "/api-keys")):
        assert_error(api(method, path, key=None, json={}), 401)
        assert_error(api(method, path, key="e2b_" + "0" * 40, json={}), 401)
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="e2b_" + "1" * 40)


def test_bad_input_gets_json_errors_and_creates_nothing():
    before = api("GET", "/v2/sandboxes").json()
    assert_error(api("POST", "/v2/sandboxes", content=b"{not json", headers={"Content-Type": "application/json"}), 400)
    assert_error(api("POST", "/v2/sandboxes", json={"timeout": 5}), 400)  # templateID missing
    assert_error(api("POST", "/v2/sandboxes", json={"templateID": "nope"}), 404)
    assert_error(api("POST", "/v2/sandboxes", json={"templateID": "base", "timeout": -1}), 400)
    assert_error(api("POST", "/v2/sandboxes", json={"templateID": "base", "network": {"denyOut": ["not-a-cidr"]}}), 400)
    assert_error(api("GET", "/v2/sandboxes?limit=0"), 400)
    assert_error(api("GET", "/v2/sandboxes?nextToken=garbage"), 400)
    assert_error(api("GET", "/v2/sandboxes?state=sleeping"), 400)
    assert_error(api("POST", "/sandboxes/nosuch/timeout", json={"timeout": 10}), 404)
    assert_error(api("GET", "/no/such/endpoint"), 404)
    after = api("GET", "/v2/sandboxes").json()
    assert {s["sandboxID"] for s in after} == {s["sandboxID"] for s in before}


def test_v1_create_and_connect_answer_like_e2b():
    r = api("POST", "/sandboxes", json={"templateID": "base", "timeout": 60, "secure": True,
                                          "allow_internet_access": True, "metadata": {}, "envVars": {}})
    assert r.status_code == 201, r.text
    body = r.json()
    for key in ("templateID", "sandboxID", "clientID", "envdVersion", "envdAccessToken"):
        assert body[key], key
    sid = body["sandboxID"]
    try:
        c = api("POST", f"/sandboxes/{sid}/connect", json={"timeout": 300})
        assert c.status_code == 200 and c.json()["sandboxID"] == sid
        assert api("POST", f"/sandboxes/{sid}/refreshes", json={"duration": 30}).status_code == 204
        listed = api("GET", "/sandboxes").json()
        assert sid in {s["sandboxID"] for s in listed}
        logs = api("GET", f"/sandboxes/{sid}/logs")
        assert logs.status_code == 200 and isinstance(logs.json()["logs"], list)
        # Sampled every second: the first sample comes soon after the create.
        deadline = time.monotonic() + 10
        metrics = api("GET", f"/sandboxes/metrics?sandbox_ids={sid}").json()
        while sid not in metrics["sandboxes"] and time.monotonic() < deadline:
            time.sleep(0.1)
            metrics = api("GET", f"/sandboxes/metrics?sandbox_ids={sid}").json()
        assert metrics["sandboxes"][sid]["memTotal"] > 0
    finally:
        assert api("DELETE", f"/sandboxes/{sid}").status_code == 204
    assert_error(api("DELETE", f"/sandboxes/{sid}"), 404)


def test_teams_cannot_see_or_touch_each_others_sandboxes(sandbox, other_team_key):
    sid = sandbox.sandbox_id
    assert sid not in {s["sandboxID"] for s in api("GET", "/v2/sandboxes", key=other_team_key).json()}
    assert_error(api("GET", f"/sandboxes/{sid}", key=other_team_key), 404)
    assert_error(api("DELETE", f"/sandboxes/{sid}", key=other_team_key), 404)
    assert_error(api("POST", f"/sandboxes/{sid}/timeout", key=other_team_key, json={"timeout": 1}), 404)
    assert_error(api("POST", f"/v2/sandboxes/{sid}/connect", key=other_team_key, json={}), 404)
    with pytest.raises(NotFoundException):
        Sandbox.connect(sid, api_key=other_team_key)
    assert sandbox.is_running()
    # The other team starts its own from the public base template.
    theirs = Sandbox.create(api_key=other_team_key, timeout=60)
    try:
        assert theirs.commands.run("echo ok").stdout == "ok\n"
        assert theirs.sandbox_id not in {s["sandboxID"] for s in api("GET", "/v2/sandboxes").json()}
    finally:
        theirs.kill()


def test_api_keys_are_created_listed_used_and_deleted():
    name = f"conformance-{uuid.uuid4().hex[:8]}"
    r = api("POST", "/api-keys", json={"name": name})
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith("e2b_") and created["name"] == name
    assert api("GET", "/v2/sandboxes", key=key).status_code == 200
    listed = api("GET", "/api-keys").json()
    mine = [k for k in listed if k["id"] == created["id"]]
    assert len(mine) == 1 and "key" not in mine[0]
    assert mine[0]["mask"]["maskedValueSuffix"] == key[-4:]
    assert api("PATCH", f"/api-keys/{created['id']}", json={"name": name + "-x"}).status_code == 200
    assert api("DELETE", f"/api-keys/{created['id']}").status_code == 204
    assert_error(api("GET", "/v2/sandboxes", key=key), 401)
    assert_error(api("DELETE", f"/api-keys/{created['id']}"), 404)


def test_templates_list_get_and_alias():
    templates = api("GET", "/templates").json()
    base = [t for t in templates if t["templateID"] == "base"]
    assert len(base) == 1 and base[0]["public"] is True and base[0]["buildStatus"] == "ready"
    detail = api("GET", "/templates/base").json()
    assert detail["builds"][0]["status"] == "ready"
    assert api("GET", "/templates/aliases/base").json() == {"templateID": "base", "public": True}
    assert_error(api("GET", "/templates/aliases/nope"), 404)
    assert_error(api("DELETE", "/templates/base"), 403)
    assert_error(api("GET", "/templates/nope"), 404)


def test_started_after_a_sandboxs_own_start_lists_it():
    # Tagged, so that other tests' sandboxes never push it off the page.
    tag = uuid.uuid4().hex
    sbx = Sandbox.create(timeout=120, metadata={"tag": tag})
    try:
        info = sbx.get_info()

        def listed(started_after):
            query = SandboxQuery(metadata={"tag": tag}, started_after=started_after)
            return {s.sandbox_id for s in Sandbox.list(query=query).next_items()}

        # The SDK sends the datetime it parsed from startedAt back as
        # startedAfter (microseconds, an offset): the bound is inclusive.
        assert sbx.sandbox_id in listed(info.started_at)
        # A millisecond later, the precision startedAt is written in, it is not.
        assert sbx.sandbox_id not in listed(info.started_at + timedelta(milliseconds=1))
    finally:
        sbx.kill()


def test_api_answers_carry_a_request_id():
    mine = api("GET", "/v2/sandboxes", headers={"X-Request-Id": "conformance-42"})
    assert mine.status_code == 200 and mine.headers["x-request-id"] == "conformance-42"
    made_up = api("GET", "/no/such/endpoint")
    assert_error(made_up, 404)
    assert made_up.headers["x-request-id"]


def sandbox_request(path, sid, port, **headers):
    return httpx.get(API_URL + path, headers={"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": str(port), **headers}, timeout=30)


def wait_for_port(sid, port, **headers):
    deadline = time.time() + 30
    while True:
        r = sandbox_request("/", sid, port, **headers)
        if r.status_code != 502 or time.time() > deadline:
            return r
        time.sleep(0.2)


def test_the_proxy_reaches_guest_ports_by_header_and_by_host(sandbox):
    sandbox.commands.run("mkdir -p /tmp/www && echo served-from-vm > /tmp/www/index.html")
    sandbox.commands.run("cd /tmp/www && python3 -m http.server 8080 --bind 127.0.0.1", background=True)
    r = wait_for_port(sandbox.sandbox_id, 8080)
    assert r.status_code == 200 and r.text == "served-from-vm\n"
    # A plain-HTTP request to the API's port, named by its Host alone.
    host = f"8080-{sandbox.sandbox_id}.{os.environ['E2B_DOMAIN']}"
    r = httpx.get(API_URL + "/index.html", headers={"Host": host}, timeout=30)
    assert r.status_code == 200 and r.text == "served-from-vm\n"
    closed = sandbox_request("/", sandbox.sandbox_id, 8081)
    assert closed.status_code == 502 and closed.json()["sandboxId"] == sandbox.sandbox_id


def test_an_unknown_sandbox_is_502_with_e2bs_body():
    r = sandbox_request("/health", "nosuchsandbox000000", 49983)
    assert r.status_code == 502
    assert r.json() == {"sandboxId": "nosuchsandbox000000", "message": "The sandbox was not found", "code": 502}


def test_restricted_public_traffic_needs_the_traffic_token():
    r = api("POST", "/v2/sandboxes", json={"templateID": "base", "timeout": 60, "network": {"allowPublicTraffic": False}})
    assert r.status_code == 201, r.text
    body = r.json()
    sid, token = body["sandboxID"], body["trafficAccessToken"]
    assert token
    try:
        sbx = Sandbox.connect(sid)
        sbx.commands.run("cd /tmp && python3 -m http.server 8090", background=True)
        r = wait_for_port(sid, 8090, **{"E2B-Traffic-Access-Token": token})
        assert r.status_code == 200
        assert_error(sandbox_request("/", sid, 8090), 403)
        assert_error(sandbox_request("/", sid, 8090, **{"E2B-Traffic-Access-Token": "wrong"}), 403)
        # envd itself is guarded by its own token, not the traffic one.
        assert sbx.commands.run("echo fine").stdout == "fine\n"
    finally:
        api("DELETE", f"/sandboxes/{sid}")


ECHO_SERVER = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8765)); s.listen()
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(4096)
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
    while True:
        chunk = c.recv(4096)
        if not chunk:
            break
        c.sendall(chunk.upper())
    c.close()
"""


def test_upgraded_connections_are_spliced_both_ways(sandbox):
    sandbox.files.write("/tmp/echo.py", ECHO_SERVER)
    sandbox.commands.run("python3 /tmp/echo.py", background=True)
    u = urlsplit(API_URL)
    deadline = time.time() + 30
    while True:
        conn = socket.create_connection((u.hostname, u.port), timeout=10)
        conn.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n"
            f"E2b-Sandbox-Id: {sandbox.sandbox_id}\r\nE2b-Sandbox-Port: 8765\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        if head.startswith(b"HTTP/1.1 101") or time.time() > deadline:
            break
        conn.close()
        time.sleep(0.3)
    assert head.startswith(b"HTTP/1.1 101"), head
    for word in (b"hello", b"through the proxy"):
        conn.sendall(word)
        got = b""
        while len(got) < len(word):
            got += conn.recv(4096)
        assert got == word.upper()
    conn.close()
