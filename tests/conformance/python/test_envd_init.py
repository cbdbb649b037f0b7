"""`POST /init` (env vars, default user/workdir, access token) and signed `/files` URLs.

These change envd's global state, so every test gets an envd of its own. In
debug mode that is a private envd on a free port (the shared instance on 49983
is never touched), reached by the SDK through `sandbox_url` (which wins over
debug mode's localhost:49983). In node mode it is the envd of the test's VM,
reached through hearth's sandbox proxy; hearth has already initialised it with
an access token, which a repeated /init must present. Either way the SDK's
Sandbox is built through its constructor, exactly as `Sandbox.create()` does
after a real API call.
"""

import base64
import hashlib
import time
import urllib.parse
from datetime import datetime, timezone

import httpx
import pytest

from e2b import AsyncSandbox, AuthenticationException, ConnectionConfig, Sandbox
from e2b.envd.versions import ENVD_DEBUG_FALLBACK

from helpers import NODE, Endpoint, EnvdProcess, free_port, proxy_endpoint

TOKEN = "hearth-secret-token"


@pytest.fixture
def envd(request):
    """An Endpoint for an envd this test may re-initialise."""
    if NODE:
        yield proxy_endpoint(request.getfixturevalue("sandbox"))
        return
    server = EnvdProcess(free_port(), name=f"private-{request.node.name}").start()
    try:
        yield Endpoint(server.url, "hearth-conf", envd_version=ENVD_DEBUG_FALLBACK)
    finally:
        server.stop()


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def init(envd, **body):
    # A current timestamp: an old or future one could make envd adjust the clock.
    body["timestamp"] = now_rfc3339()
    r = httpx.post(f"{envd.url}/init", json=body, headers=envd.headers(), timeout=10)
    if r.status_code == 204 and "accessToken" in body:
        envd.token = body["accessToken"] or None
    return r


def sandbox_headers(envd, token):
    headers = {"E2b-Sandbox-Id": envd.sandbox_id, "E2b-Sandbox-Port": "49983"}
    if token is not None:
        headers["X-Access-Token"] = token
    return headers


def token_sandbox(envd, token, cls=Sandbox):
    """An SDK client of `envd` that sends `token` (None: no token)."""
    return cls(
        sandbox_id=envd.sandbox_id,
        sandbox_domain=None,
        envd_version=envd.envd_version,
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=ConnectionConfig(sandbox_url=envd.url,
                                           extra_sandbox_headers=sandbox_headers(envd, token)),
    )


def current_sandbox(envd):
    """An SDK client with the token `envd` currently requires (none in debug mode
    until a test sets one)."""
    return token_sandbox(envd, envd.token)


def signature(path, op, user, token, expiration=None):
    raw = f"{path}:{op}:{user or ''}:{token}" + (f":{expiration}" if expiration is not None else "")
    return "v1_" + base64.b64encode(hashlib.sha256(raw.encode()).digest()).decode().rstrip("=")


def test_init_env_vars(envd):
    r = init(envd, envVars={"HEARTH_FOO": "bar", "HEARTH_BAZ": "q"})
    assert r.status_code == 204
    envs = httpx.get(f"{envd.url}/envs", headers=envd.headers()).json()
    assert envs["HEARTH_FOO"] == "bar"
    assert envs["HEARTH_BAZ"] == "q"
    sbx = current_sandbox(envd)
    assert sbx.commands.run('echo "$HEARTH_FOO"').stdout == "bar\n"
    # Request envs win over the global ones.
    assert sbx.commands.run('echo "$HEARTH_FOO"', envs={"HEARTH_FOO": "mine"}).stdout == "mine\n"


def test_init_default_user_and_workdir(envd, user_dir):
    assert init(envd, defaultUser="user", defaultWorkdir=user_dir).status_code == 204
    sbx = current_sandbox(envd)
    assert sbx.commands.run("whoami; pwd").stdout == f"user\n{user_dir}\n"
    assert sbx.commands.run("whoami; pwd", user="root").stdout == f"root\n{user_dir}\n"
    assert sbx.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    sbx.files.write(f"{user_dir}/default-owner.txt", "x")
    assert sbx.files.get_info(f"{user_dir}/default-owner.txt").owner == "user"
    assert sbx.files.make_dir(f"{user_dir}/dd") is True
    assert sbx.files.get_info(f"{user_dir}/dd").owner == "user"


def test_access_token_guards_rpc_and_internal_endpoints(envd):
    assert init(envd, accessToken=TOKEN).status_code == 204
    unauthenticated = [
        ("POST", "/process.Process/List", {}),
        ("POST", "/filesystem.Filesystem/Stat", {"path": "/"}),
        ("GET", "/envs", None),
        ("GET", "/metrics", None),
    ]
    with httpx.Client(base_url=envd.url, headers=envd.route, timeout=10) as c:
        for method, path, body in unauthenticated:
            for headers in ({}, {"X-Access-Token": "wrong"}):
                r = c.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.text)
                err = r.json()
                assert err["code"] == 401 and isinstance(err["message"], str), err
        ok = {"X-Access-Token": TOKEN}
        for method, path, body in unauthenticated:
            r = c.request(method, path, json=body, headers=ok)
            assert r.status_code == 200, (method, path, r.text)
        assert c.get("/health").status_code == 204
        assert c.get("/files", params={"path": "/etc/hostname"}).status_code == 401


def test_sdk_with_access_token(envd, tmp_dir):
    assert init(envd, accessToken=TOKEN).status_code == 204
    good = token_sandbox(envd, TOKEN)
    assert good.commands.run("echo ok").stdout == "ok\n"
    good.files.write(f"{tmp_dir}/t.txt", "guarded")
    assert good.files.read(f"{tmp_dir}/t.txt") == "guarded"
    assert {e.name for e in good.files.list(tmp_dir)} == {"t.txt"}

    for bad in (token_sandbox(envd, "wrong-token"), token_sandbox(envd, None)):
        with pytest.raises(AuthenticationException):
            bad.commands.run("echo no")
        with pytest.raises(AuthenticationException):
            bad.files.list(tmp_dir)
        with pytest.raises(AuthenticationException):
            bad.files.read(f"{tmp_dir}/t.txt")
        with pytest.raises(AuthenticationException):
            bad.files.write(f"{tmp_dir}/t2.txt", "no")


async def test_async_sdk_with_access_token(envd):
    assert init(envd, accessToken=TOKEN).status_code == 204
    good = token_sandbox(envd, TOKEN, cls=AsyncSandbox)
    assert (await good.commands.run("echo ok")).stdout == "ok\n"
    bad = token_sandbox(envd, "wrong-token", cls=AsyncSandbox)
    with pytest.raises(AuthenticationException):
        await bad.commands.run("echo no")


def test_signed_download_and_upload_urls(envd, tmp_dir):
    assert init(envd, accessToken=TOKEN).status_code == 204
    sbx = token_sandbox(envd, TOKEN)
    path = f"{tmp_dir}/signed.txt"
    sbx.files.write(path, "signed content")

    url = sbx.download_url(path)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert query["signature"] == signature(path, "read", None, TOKEN)
    # The URLs carry no token; in node mode the proxy still needs the routing headers.
    r = httpx.get(url, headers=envd.route)
    assert r.status_code == 200 and r.text == "signed content"

    # Signed for the user `user`, and with an expiration in the future.
    r = httpx.get(sbx.download_url(path, user="user"), headers=envd.route)
    assert r.status_code == 200 and r.text == "signed content"
    r = httpx.get(sbx.download_url(path, use_signature_expiration=120), headers=envd.route)
    assert r.status_code == 200

    upload = sbx.upload_url(f"{tmp_dir}/up.txt")
    r = httpx.post(upload, files=[("file", ("up.txt", b"uploaded"))], headers=envd.route)
    assert r.status_code == 200, r.text
    assert sbx.files.read(f"{tmp_dir}/up.txt") == "uploaded"


def test_bad_or_expired_signatures_are_rejected(envd, tmp_dir, machine):
    path = f"{tmp_dir}/s.txt"
    machine.write(path, b"s")  # before /init: in node mode `machine` uses the old token
    assert init(envd, accessToken=TOKEN).status_code == 204
    files_url = f"{envd.url}/files"

    def get(**params):
        return httpx.get(files_url, params={"path": path, **params}, headers=envd.route)

    assert get(signature=signature(path, "read", None, TOKEN)).status_code == 200
    expired = int(time.time()) - 10
    cases = {
        "wrong token": {"signature": signature(path, "read", None, "other")},
        "write signature used to read": {"signature": signature(path, "write", None, TOKEN)},
        "expired": {"signature": signature(path, "read", None, TOKEN, expired),
                    "signature_expiration": str(expired)},
        "expiration not signed": {"signature": signature(path, "read", None, TOKEN),
                                  "signature_expiration": str(int(time.time()) + 60)},
        "user not signed": {"signature": signature(path, "read", None, TOKEN),
                            "username": "user"},
        "malformed": {"signature": "v1_bogus"},
    }
    for name, params in cases.items():
        r = get(**params)
        assert r.status_code == 401, f"{name}: {r.status_code} {r.text}"
        assert r.json()["code"] == 401, name

    up = httpx.post(files_url, params={"path": f"{tmp_dir}/x.txt",
                                       "signature": signature(f"{tmp_dir}/x.txt", "read", None,
                                                              TOKEN)},
                    files=[("file", ("x.txt", b"x"))], headers=envd.route)
    assert up.status_code == 401
