"""The Connect protocol on the wire (contract §5.2), spoken raw to the shared envd
(debug mode) or to the test's VM through hearth's sandbox proxy (node mode)."""

import base64
import json

import httpx
import pytest

from helpers import (
    FLAG_END_STREAM,
    envelope,
    iter_envelopes,
    json_envelope,
    pb_decode,
    pb_len_field,
    unique,
    wait_until,
    zigzag_decode,
)

UNARY = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}
STREAM_JSON = {"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}
STREAM_PROTO = {"Content-Type": "application/connect+proto", "Connect-Protocol-Version": "1"}


@pytest.fixture
def client(envd_endpoint):
    with httpx.Client(base_url=envd_endpoint.url, headers=envd_endpoint.headers(),
                      timeout=15) as c:
        yield c


def test_unary_call_returns_json(client):
    r = client.post("/process.Process/List", content=b"{}", headers=UNARY)
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0].strip() == "application/json"
    body = r.json()
    assert isinstance(body, dict)
    assert isinstance(body.get("processes", []), list)


def test_unary_error_is_connect_error_json(client, tmp_dir):
    r = client.post("/filesystem.Filesystem/Stat", json={"path": f"{tmp_dir}/nope"},
                    headers=UNARY)
    assert r.status_code == 404
    assert r.headers["content-type"].split(";")[0].strip() == "application/json"
    body = r.json()
    assert body["code"] == "not_found"
    assert isinstance(body["message"], str)


@pytest.mark.parametrize("path", ["/process.Process/NoSuchMethod", "/nosuch.Service/List"])
def test_unknown_procedure_is_404(client, path):
    r = client.post(path, content=b"{}", headers=UNARY)
    assert r.status_code == 404
    if r.headers.get("content-type", "").startswith("application/json"):
        code = r.json().get("code")
        if isinstance(code, str):
            assert code == "unimplemented"


def test_invalid_json_is_400_invalid_argument(client):
    r = client.post("/filesystem.Filesystem/Stat", content=b'{"path": ', headers=UNARY)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_argument"


def test_unsupported_content_type_is_415(client):
    r = client.post("/process.Process/List", content=b"{}",
                    headers={"Content-Type": "text/plain", "Connect-Protocol-Version": "1"})
    assert r.status_code == 415


def start_stream(client, envelope_body, headers):
    with client.stream("POST", "/process.Process/Start", content=envelope_body,
                       headers=headers) as r:
        assert r.status_code == 200, r.read()
        content_type = r.headers["content-type"]
        frames = list(iter_envelopes(r.iter_bytes()))
    return content_type, frames


def test_streaming_start_json(client):
    ctype, frames = start_stream(
        client, json_envelope({"process": {"cmd": "/bin/echo", "args": ["hi"]}}), STREAM_JSON)
    assert ctype == "application/connect+json"
    assert frames[-1][0] == FLAG_END_STREAM
    assert json.loads(frames[-1][1]) == {}
    assert all(flags == 0 for flags, _ in frames[:-1])
    events = [json.loads(p)["event"] for _, p in frames[:-1]]
    events = [e for e in events if "keepalive" not in e]
    assert events[0]["start"]["pid"] > 0
    stdout = b"".join(base64.b64decode(e["data"]["stdout"]) for e in events
                      if "data" in e and "stdout" in e["data"])
    assert stdout == b"hi\n"
    end = events[-1]["end"]
    assert end.get("exitCode", 0) == 0
    assert end["exited"] is True
    assert end["status"] == "exit status 0"


def test_streaming_start_binary_proto(client):
    # StartRequest{process: ProcessConfig{cmd: "/bin/echo", args: ["hi"]}}
    config = pb_len_field(1, b"/bin/echo") + pb_len_field(2, b"hi")
    ctype, frames = start_stream(client, envelope(pb_len_field(1, config)), STREAM_PROTO)
    assert ctype == "application/connect+proto"
    flags, trailer = frames[-1]
    assert flags == FLAG_END_STREAM and json.loads(trailer) == {}
    kinds = {}
    stdout = b""
    for flags, payload in frames[:-1]:
        assert flags == 0
        [(num, _, event)] = pb_decode(payload)  # StartResponse.event
        assert num == 1
        [(kind, _, body)] = pb_decode(event)  # ProcessEvent oneof
        kinds.setdefault(kind, []).append(body)
        if kind == 2:  # data
            for field, _, value in pb_decode(body):
                if field == 1:
                    stdout += value
    start = dict((f, v) for f, _, v in pb_decode(kinds[1][0]))
    assert start[1] > 0  # pid
    assert stdout == b"hi\n"
    end = dict((f, v) for f, _, v in pb_decode(kinds[3][0]))
    assert zigzag_decode(end.get(1, 0)) == 0  # exit_code
    assert end[2] == 1  # exited
    assert end[3] == b"exit status 0"


def test_start_deadline_ends_stream_with_deadline_exceeded(client, sandbox):
    # Connect-Timeout-Ms is the process lifetime (contract §5.2 "Deadlines"); when it
    # expires the stream ends with a deadline_exceeded error, as upstream envd's
    # handler returns the expired request context's error.
    headers = {**STREAM_JSON, "Connect-Timeout-Ms": "1500"}
    _, frames = start_stream(
        client, json_envelope({"process": {"cmd": "/bin/sleep", "args": ["10"]}}), headers)
    pid = json.loads(frames[0][1])["event"]["start"]["pid"]
    flags, trailer = frames[-1]
    assert flags == FLAG_END_STREAM
    assert json.loads(trailer).get("error", {}).get("code") == "deadline_exceeded", trailer
    wait_until(lambda: pid not in {p.pid for p in sandbox.commands.list()}, 5,
               message="process outlived its Connect-Timeout-Ms")


def test_tagged_process_survives_disconnect_and_is_selectable_by_tag(client, sandbox):
    tag = unique("tag")
    body = json_envelope({"process": {"cmd": "/bin/sleep", "args": ["30"]}, "tag": tag})
    with client.stream("POST", "/process.Process/Start", content=body, headers=STREAM_JSON) as r:
        assert r.status_code == 200
        flags, payload = next(iter_envelopes(r.iter_bytes()))
    pid = json.loads(payload)["event"]["start"]["pid"]
    try:
        procs = {p.pid: p for p in sandbox.commands.list()}
        assert pid in procs, "the process died when the client disconnected"
        assert (procs[pid].tag, procs[pid].cmd, procs[pid].args) == (tag, "/bin/sleep", ["30"])
        r = client.post("/process.Process/SendSignal", headers=UNARY,
                        json={"process": {"tag": tag}, "signal": "SIGNAL_SIGKILL"})
        assert r.status_code == 200 and r.json() == {}
        wait_until(lambda: pid not in {p.pid for p in sandbox.commands.list()}, 5,
                   message="process not killed through its tag")
    finally:
        sandbox.commands.kill(pid)
