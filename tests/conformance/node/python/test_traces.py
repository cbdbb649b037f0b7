"""A create is one trace, from the REST call through the node's gRPC API to
envd's /init in the guest: `hearth up` sends its spans (OTLP over gRPC) to a
stand-in collector that scripts/with-hearth-up.sh runs, which writes each
span it receives to $HEARTH_OTLP_SPANS as a JSON line. The request id the
client sent names the API's and the node's spans, and envd's log line for
/init names the trace."""

import json
import os
import time
import uuid

import httpx
import pytest

from conftest import API_KEY, API_URL

SPANS = os.environ.get("HEARTH_OTLP_SPANS")
CREATE_RPC = "/hearth.orchestrator.v1.SandboxService/Create"


def read_spans():
    try:
        with open(SPANS, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def await_spans(found, deadline_s=40):
    """The spans once `found(spans)` holds: the exporter sends in batches."""
    deadline = time.monotonic() + deadline_s
    while True:
        spans = read_spans()
        if found(spans):
            return spans
        if time.monotonic() > deadline:
            names = sorted({s["name"] for s in spans})
            pytest.fail(f"the spans never arrived; the collector has {len(spans)}: {names}")
        time.sleep(0.5)


@pytest.mark.skipif(not SPANS, reason="hearth up runs without a collector (run-node.sh sets one)")
def test_a_create_is_one_trace_from_the_rest_call_to_envds_init():
    request_id = f"trace-test-{uuid.uuid4()}"
    headers = {"X-API-Key": API_KEY, "X-Request-Id": request_id}
    created = httpx.post(
        f"{API_URL}/sandboxes", json={"templateID": "base", "timeout": 60}, headers=headers, timeout=120
    )
    assert created.status_code == 201, created.text
    assert created.headers["x-request-id"] == request_id
    sandbox_id = created.json()["sandboxID"]
    try:
        def complete(spans):
            ours = [s for s in spans if s["attributes"].get("request_id") == request_id]
            traces = {s["trace_id"] for s in ours}
            return (
                any(s["name"] == "POST /sandboxes" for s in ours)
                and any(s["name"] == CREATE_RPC for s in ours)
                and any(s["name"] == "envd init" and s["trace_id"] in traces for s in spans)
            )

        spans = await_spans(complete)
        rest = next(
            s for s in spans if s["name"] == "POST /sandboxes" and s["attributes"].get("request_id") == request_id
        )
        trace = [s for s in spans if s["trace_id"] == rest["trace_id"]]
        by_id = {s["span_id"]: s for s in trace}
        assert all(s["service"] == "hearth" for s in trace)

        def ancestors(span):
            chain = []
            while span["parent_span_id"] in by_id:
                span = by_id[span["parent_span_id"]]
                chain.append(span["name"])
            return chain

        node = next(s for s in trace if s["name"] == CREATE_RPC)
        # The node's span continues the API's over gRPC and names the request.
        assert node["attributes"].get("request_id") == request_id
        assert node["parent_span_id"] == rest["span_id"]
        init = next(s for s in trace if s["name"] == "envd init")
        assert ancestors(init)[-1] == "POST /sandboxes", ancestors(init)
        assert CREATE_RPC in ancestors(init)
        assert any(s["name"] == "restore VM" for s in trace)

        # envd received the trace with /init: its log line names it.
        deadline = time.monotonic() + 30
        while True:
            logs = httpx.get(f"{API_URL}/v2/sandboxes/{sandbox_id}/logs", headers=headers, timeout=30)
            assert logs.status_code == 200, logs.text
            traced = [
                e for e in logs.json()["logs"] if e["message"] == "sandbox initialised"
            ]
            if traced or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert traced, "envd's /init line is in the sandbox's log"
        assert traced[-1]["fields"].get("trace_id") == rest["trace_id"]
    finally:
        httpx.delete(f"{API_URL}/sandboxes/{sandbox_id}", headers=headers, timeout=60)
