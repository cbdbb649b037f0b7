"""Time to interactive as the SDK sees it: `Sandbox.create()` then
`commands.run("true")`, against a running hearth (E2B_API_URL,
E2B_DOMAIN, E2B_API_KEY). Run by tests/bench/run-sdk-bench.sh.

    python sdk_time_to_interactive.py [SEQUENTIAL] [CONCURRENT]
"""

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from e2b import Sandbox


def one():
    started = time.perf_counter()
    sbx = Sandbox.create(timeout=120)
    created = time.perf_counter()
    sbx.commands.run("true")
    ready = time.perf_counter()
    sbx.kill()
    return created - started, ready - started


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(name, samples):
    create = [c for c, _ in samples]
    ready = [r for _, r in samples]
    print(
        f"{name}: n={len(samples)} create p50 {statistics.median(create)*1000:.0f} ms "
        f"p95 {percentile(create, 95)*1000:.0f} ms | create+run p50 {statistics.median(ready)*1000:.0f} ms "
        f"p95 {percentile(ready, 95)*1000:.0f} ms p99 {percentile(ready, 99)*1000:.0f} ms"
    )


def main():
    sequential = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    concurrent = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    one()  # warm-up: connections, slot pool, page cache
    report("sequential", [one() for _ in range(sequential)])
    rounds = []
    for _ in range(3):
        with ThreadPoolExecutor(concurrent) as pool:
            rounds += list(pool.map(lambda _: one(), range(concurrent)))
    report(f"{concurrent} concurrent x3", rounds)


if __name__ == "__main__":
    main()
