"""download_url()/upload_url() fetched by plain HTTP clients. With the
settings `hearth up` writes to sdk.env they are
`https://49983-<id>.<domain>/files?…&signature=…`, as against E2B. In the
SDKs' header mode (E2B_SANDBOX_URL, here the API's own URL) they are
`<API>/files?path=…&signature=…` and name no sandbox, and a plain client
sends no E2b-Sandbox-Id: the proxy finds the sandbox by the signature
(which only its envd token makes); envd checks it again.
"""

import os
import urllib.error
import urllib.request
import uuid

import httpx
from e2b import Sandbox

DOMAIN = os.environ["E2B_DOMAIN"]


def fetch(url):
    """GET with urllib, which sends no header but its own."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def test_signed_urls_round_trip_a_file_through_a_plain_client(sandbox):
    path = f"/home/user/{uuid.uuid4().hex} signed+url.bin"
    payload = bytes(range(256)) * 64
    upload = sandbox.upload_url(path)
    assert upload.startswith(f"https://49983-{sandbox.sandbox_id}.{DOMAIN}/files?")
    assert "signature=v1_" in upload
    # As upload_url()'s docstring says: POST the file as multipart/form-data.
    r = httpx.post(upload, files={"file": ("ignored.bin", payload)}, timeout=30)
    assert r.status_code == 200, r.text
    assert sandbox.files.read(path, format="bytes") == payload
    assert fetch(sandbox.download_url(path)) == payload


def test_signed_urls_for_a_user_with_an_expiry(sandbox):
    path = f"/root/{uuid.uuid4().hex}.txt"
    upload = sandbox.upload_url(path, user="root", use_signature_expiration=120)
    assert "username=root" in upload and "signature_expiration=" in upload
    r = httpx.post(upload, files={"file": ("x.txt", b"as root")}, timeout=30)
    assert r.status_code == 200, r.text
    download = sandbox.download_url(path, user="root", use_signature_expiration=120)
    assert fetch(download) == b"as root"
    assert sandbox.commands.run(f"stat -c %U {path}", user="root").stdout == "root\n"
    # A signature is for its operation: a download URL cannot upload.
    r = httpx.post(download, files={"file": ("x.txt", b"overwritten")}, timeout=30)
    assert r.status_code == 401, r.text
    assert fetch(download) == b"as root"


def test_a_killed_sandboxs_signed_urls_stop_working(sandbox):
    path = f"/home/user/{uuid.uuid4().hex}.txt"
    sandbox.files.write(path, "soon gone")
    download = sandbox.download_url(path)
    assert fetch(download) == b"soon gone"
    sandbox.kill()
    # Its host names a sandbox that no longer runs: E2B's 502.
    r = httpx.get(download, timeout=30)
    assert r.status_code == 502, r.text
    assert r.json()["sandboxId"] == sandbox.sandbox_id


def test_header_mode_signed_urls_find_their_sandbox_by_signature():
    proxy = os.environ["HEARTH_PROXY_URL"].rstrip("/")
    sbx = Sandbox.create(timeout=120, sandbox_url=proxy)
    try:
        path = f"/home/user/{uuid.uuid4().hex}.bin"
        upload = sbx.upload_url(path)
        assert upload.startswith(proxy + "/files?"), upload
        r = httpx.post(upload, files={"file": ("x.bin", b"by signature")}, timeout=30)
        assert r.status_code == 200, r.text
        download = sbx.download_url(path)
        assert fetch(download) == b"by signature"
    finally:
        sbx.kill()
    # Once it is gone no running sandbox's token made the signature.
    r = httpx.get(download, timeout=30)
    assert r.status_code == 401, r.text
    assert r.json()["code"] == 401
