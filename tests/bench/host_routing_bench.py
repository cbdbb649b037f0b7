"""HTTPS host routing next to plain-HTTP header routing, same sandbox, same
run, through the E2B Python SDK against a running hearth (the sdk.env
settings, plus HEARTH_PROXY_URL for header routing):

- exec round trip: `commands.run("true")`, ROUNDS times per mode, the modes
  taking turns so that the machine's noise falls on both alike;
- a 256 MiB download: `files.read(format="stream")`, DOWNLOADS per mode.

Reports medians and the ratios the targets are stated in (round trip +
≤ 0.3 ms, download ≥ 0.8×). Run by tests/bench/run-host-routing-bench.sh.

    python host_routing_bench.py [ROUNDS] [DOWNLOADS]
"""

import os
import statistics
import sys
import time

from e2b import Sandbox

SIZE = 256 * 1024 * 1024
PATH = "/tmp/bench-256m.bin"


def round_trip_ms(sbx):
    began = time.perf_counter()
    sbx.commands.run("true")
    return (time.perf_counter() - began) * 1000


def download_mib_s(sbx):
    began = time.perf_counter()
    total = 0
    for chunk in sbx.files.read(PATH, format="stream"):
        total += len(chunk)
    elapsed = time.perf_counter() - began
    if total != SIZE:
        raise RuntimeError(f"downloaded {total} bytes, not {SIZE}")
    return SIZE / 1024 / 1024 / elapsed


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    downloads = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    host = Sandbox.create(timeout=1800)
    try:
        header = Sandbox.connect(host.sandbox_id, sandbox_url=os.environ["HEARTH_PROXY_URL"])
        modes = {"https host": host, "http header": header}
        print(f"sandbox {host.sandbox_id}; envd by host at https://{host.get_host(49983)}, "
              f"by header at {os.environ['HEARTH_PROXY_URL']}", flush=True)
        host.commands.run(f"head -c {SIZE} /dev/urandom > {PATH}", timeout=600)
        for sbx in modes.values():  # connections up, caches warm
            for _ in range(5):
                round_trip_ms(sbx)
        trips = {name: [] for name in modes}
        for _ in range(rounds):
            for name, sbx in modes.items():
                trips[name].append(round_trip_ms(sbx))
        speeds = {name: [] for name in modes}
        for _ in range(downloads):
            for name, sbx in modes.items():
                speeds[name].append(download_mib_s(sbx))
    finally:
        host.kill()

    p50 = {name: statistics.median(values) for name, values in trips.items()}
    for name, values in trips.items():
        values.sort()
        print(f"exec round trip, {name:11}: p50 {p50[name]:.2f} ms, "
              f"p90 {values[int(len(values) * 0.9)]:.2f} ms ({len(values)} rounds)")
    mib_s = {name: statistics.median(values) for name, values in speeds.items()}
    for name in speeds:
        print(f"256 MiB download, {name:11}: median {mib_s[name]:.0f} MiB/s ({len(speeds[name])} runs)")
    print(f"host routing over https costs {p50['https host'] - p50['http header']:+.2f} ms per round trip "
          f"(goal ≤ +0.3 ms); downloads at {mib_s['https host'] / mib_s['http header']:.2f}× "
          f"(goal ≥ 0.8×)")


if __name__ == "__main__":
    main()
