"""envd's plain HTTP endpoints, spoken raw (contract §5.5).

Debug mode: on the shared instance; node mode: on the test's VM through
hearth's sandbox proxy (with the routing headers and the envd access token).
Only read-only or path-local requests here: anything that changes envd's
global state (/init) runs against private instances in test_envd_init.py.
"""

import gzip
import time

import httpx
import pytest


@pytest.fixture
def client(envd_endpoint):
    with httpx.Client(base_url=envd_endpoint.url, headers=envd_endpoint.headers(),
                      timeout=10) as c:
        yield c


def test_health_is_204_with_empty_body(client):
    r = client.get("/health")
    assert r.status_code == 204
    assert r.content == b""


def test_metrics(client, machine):
    r = client.get("/metrics")
    assert r.status_code == 200
    m = r.json()
    keys = {"ts", "cpu_count", "cpu_used_pct", "mem_total", "mem_used", "mem_cache",
            "mem_total_mib", "mem_used_mib", "disk_used", "disk_total"}
    assert keys <= set(m), f"missing keys: {keys - set(m)}"
    assert abs(m["ts"] - time.time()) < 60, "ts must be unix seconds"
    facts = machine.facts()
    assert m["cpu_count"] == facts["cpu_count"]
    assert 0 <= m["cpu_used_pct"] <= 100
    mem_total = facts["mem_total"]
    assert abs(m["mem_total"] - mem_total) <= mem_total * 0.05, "mem_total is in bytes"
    assert 0 < m["mem_used"] <= m["mem_total"]
    assert 0 <= m["mem_cache"] <= m["mem_total"]
    assert abs(m["mem_total_mib"] - m["mem_total"] / 2**20) <= 1
    assert abs(m["mem_used_mib"] - m["mem_used"] / 2**20) <= 1
    disk_total = facts["disk_total"]
    assert abs(m["disk_total"] - disk_total) <= disk_total * 0.05
    assert 0 < m["disk_used"] <= m["disk_total"]


def test_envs_is_a_json_object(client):
    r = client.get("/envs")
    assert r.status_code == 200
    assert isinstance(r.json(), dict)


def test_download_missing_file_is_404_json(client, tmp_dir):
    r = client.get("/files", params={"path": f"{tmp_dir}/none"})
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == 404
    assert isinstance(body["message"], str) and body["message"]


def test_download_raw_bytes_and_gzip(client, tmp_dir, machine):
    payload = b"0123456789" * 1000
    machine.write(f"{tmp_dir}/d.bin", payload)
    r = client.get("/files", params={"path": f"{tmp_dir}/d.bin"})
    assert r.status_code == 200
    assert r.content == payload
    with client.stream("GET", "/files", params={"path": f"{tmp_dir}/d.bin"},
                       headers={"Accept-Encoding": "gzip"}) as r:
        assert r.status_code == 200
        assert r.headers.get("content-encoding") == "gzip"
        raw = b"".join(r.iter_raw())
    assert gzip.decompress(raw) == payload


def test_upload_multipart_uses_raw_filenames(client, tmp_dir, machine):
    files = [
        ("file", (f"{tmp_dir}/m/one.txt", b"one", "text/plain")),
        ("file", (f"{tmp_dir}/m/deep/two.txt", b"two", "application/octet-stream")),
    ]
    r = client.post("/files", files=files)
    assert r.status_code == 200
    body = r.json()
    assert sorted(e["path"] for e in body) == [f"{tmp_dir}/m/deep/two.txt", f"{tmp_dir}/m/one.txt"]
    assert {e["type"] for e in body} == {"file"}
    assert machine.read(f"{tmp_dir}/m/deep/two.txt") == b"two"


def test_upload_octet_stream_gzip(client, tmp_dir, machine):
    r = client.post("/files", params={"path": f"{tmp_dir}/o.txt"},
                    content=gzip.compress(b"compressed body"),
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Encoding": "gzip"})
    assert r.status_code == 200
    [entry] = r.json()
    assert (entry["name"], entry["type"], entry["path"]) == ("o.txt", "file", f"{tmp_dir}/o.txt")
    assert machine.read(f"{tmp_dir}/o.txt") == b"compressed body"


def test_upload_chunked_request_body(client, tmp_dir, machine):
    def body():
        for i in range(5):
            yield f"chunk{i};".encode()

    r = client.post("/files", params={"path": f"{tmp_dir}/chunked.txt"}, content=body(),
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert machine.read(f"{tmp_dir}/chunked.txt") == b"chunk0;chunk1;chunk2;chunk3;chunk4;"


def test_upload_duplicate_targets_is_400(client, tmp_dir):
    files = [("file", (f"{tmp_dir}/dup.txt", b"1")), ("file", (f"{tmp_dir}/dup.txt", b"2"))]
    r = client.post("/files", files=files)
    assert r.status_code == 400
    assert r.json()["code"] == 400


def test_upload_unknown_user_is_401_json(client, tmp_dir):
    r = client.post("/files", params={"path": f"{tmp_dir}/u.txt", "username": "nosuchuser"},
                    files=[("file", ("u.txt", b"x"))])
    assert r.status_code == 401
    assert r.json()["code"] == 401
