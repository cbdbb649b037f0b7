"""A sandbox's metrics as the SDK reads them: the node samples each running
sandbox every second, so `get_metrics(start, end)` is a series, and it shows
the guest's CPU rising while a command burns it."""

import time
from datetime import datetime, timedelta, timezone

from e2b import Sandbox


def metrics_until(sandbox, start, count, deadline_s=30):
    """The metrics since `start` once there are at least `count` of them."""
    deadline = time.monotonic() + deadline_s
    while True:
        series = sandbox.get_metrics(start=start, end=datetime.now(timezone.utc))
        if len(series) >= count or time.monotonic() > deadline:
            return series
        time.sleep(0.25)


def test_get_metrics_is_a_per_second_series_that_shows_cpu_load(sandbox):
    start = datetime.now(timezone.utc)
    burner = sandbox.commands.run(
        "timeout 8 sh -c 'while :; do :; done' & timeout 8 sh -c 'while :; do :; done' & wait",
        background=True,
    )
    try:
        series = metrics_until(sandbox, start, 5)
    finally:
        burner.kill()
    assert len(series) >= 5, series
    stamps = [m.timestamp for m in series]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert all(m.timestamp >= start.replace(microsecond=0) for m in series)
    assert all(m.cpu_count == 2 and m.mem_total > 0 and m.disk_total > 0 for m in series)
    # Two busy loops on two vCPUs: most of the guest's CPU.
    assert max(m.cpu_used_pct for m in series) > 50, [m.cpu_used_pct for m in series]

    # A window in the past is just that window.
    middle = series[len(series) // 2].timestamp
    one = sandbox.get_metrics(start=middle, end=middle)
    assert [m.timestamp for m in one] == [middle]

    # The class method reads the same series.
    latest = Sandbox.get_metrics(sandbox.sandbox_id, start=middle + timedelta(seconds=1))
    assert all(m.timestamp > middle for m in latest)
