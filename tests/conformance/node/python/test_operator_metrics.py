"""hearth's own metrics for operators: Prometheus text on the metrics
address `hearth up` was given (HEARTH_METRICS_URL), which Debian's promtool
accepts, and whose counters move with the traffic a client makes."""

import json
import os
import pathlib
import re
import subprocess
import urllib.request

from e2b import Sandbox

DASHBOARD = pathlib.Path(__file__).parents[4] / "deploy/grafana/hearth-dashboard.json"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape():
    with urllib.request.urlopen(os.environ["HEARTH_METRICS_URL"], timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def value(text, name, **labels):
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        have = dict(LABEL.findall(match.group(2) or ""))
        if all(have.get(k) == str(v) for k, v in labels.items()):
            total += float(match.group(3))
    return total


def test_metrics_parse_as_prometheus_text_and_move_with_traffic():
    before = scrape()
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=before, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    sbx = Sandbox.create(timeout=60)
    try:
        assert sbx.commands.run("echo counted").stdout == "counted\n"
        during = scrape()
        assert value(during, "hearth_api_sandboxes", template="base", state="running") >= 1
        assert value(during, "hearth_node_sandboxes", state="running") >= 1
        assert value(during, "hearth_node_memory_committed_bytes") >= 512 << 20
        assert value(during, "hearth_node_memory_host_bytes") > 0
        # The Grafana dashboard in deploy/ graphs only what hearth exposes.
        exposed = set(re.findall(r"^# TYPE (\S+) ", during, re.MULTILINE))
        dashboard = json.loads(DASHBOARD.read_text())
        exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        used = {
            re.sub(r"_(bucket|count|sum)$", "", name)
            for expr in exprs
            for name in re.findall(r"hearth_[a-z_]+", expr)
        }
        assert used and used <= exposed, used - exposed
    finally:
        sbx.kill()
    after = scrape()
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=after, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def grew(name, by=1, **labels):
        was, now = value(before, name, **labels), value(after, name, **labels)
        assert now >= was + by, f"{name}{labels}: {was} -> {now}"

    grew("hearth_node_sandbox_operations_total", operation="create", outcome="ok")
    grew("hearth_node_sandbox_operations_total", operation="delete", outcome="ok")
    grew("hearth_node_sandbox_operation_duration_seconds_count", operation="create", outcome="ok")
    creates = sum(
        value(after, "hearth_api_requests_total", method="POST", route=route, status=201)
        - value(before, "hearth_api_requests_total", method="POST", route=route, status=201)
        for route in ("/sandboxes", "/v2/sandboxes")
    )
    assert creates >= 1
    grew("hearth_api_requests_total", method="DELETE", route="/sandboxes/{sandbox_id}")
    # The command went through the sandbox proxy to envd.
    grew("hearth_api_requests_total", route="proxy")
    grew("hearth_api_proxy_response_bytes_total", by=len("counted"))

