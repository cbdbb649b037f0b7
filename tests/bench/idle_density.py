"""Idle density: COUNT `base` sandboxes running at once on one node, through
the E2B Python SDK against a running hearth (E2B_API_URL, E2B_SANDBOX_URL,
E2B_API_KEY, HEARTH_UP_PREFIX). Creates them PARALLEL at a time (default one
at a time), has each answer `echo ok`, then reports the create latency of the
1st, middle and last, and the QEMU processes' memory (PSS from
/proc/<pid>/smaps_rollup, summed and divided by COUNT) and CPU use while
idle. The first failed create ends the creating: the rest is measured on
the sandboxes that run. Run by tests/bench/run-density-bench.sh.

    python idle_density.py [COUNT] [PARALLEL]
"""

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from e2b import Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "soak"))
from hearth_host import mem_available_mib, memory_kib, percentile, qemu_processes, run_echo  # noqa: E402

SANDBOX_TIMEOUT_S = 3600
IDLE_WINDOW_S = 30
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_report(pids, count):
    pss = rss = 0
    for pid in pids:
        p, r = memory_kib(pid)
        pss, rss = pss + p, rss + r
    return (f"PSS {pss / 1024:.0f} MiB in all, {pss / 1024 / count:.1f} MiB per sandbox; "
            f"RSS {rss / 1024 / count:.1f} MiB per sandbox")


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    parallel = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    available_before = mem_available_mib()
    print(f"idle density: {count} base sandboxes, created {parallel} at a time; "
          f"MemAvailable {available_before} MiB before", flush=True)

    sandboxes, latencies, failures = [None] * count, [None] * count, []
    started = time.monotonic()

    def create(index):
        if failures:
            return  # the node is full (or broken): measure what runs
        began = time.perf_counter()
        try:
            sandboxes[index] = Sandbox.create(timeout=SANDBOX_TIMEOUT_S)
        except Exception as error:
            failures.append(f"create {index + 1} after {time.perf_counter() - began:.0f} s: "
                            f"{type(error).__name__}: {error}")
            print(f"  {failures[-1]}; no more creates", flush=True)
            return
        latencies[index] = time.perf_counter() - began
        if (index + 1) % 10 == 0:
            print(f"  {index + 1} created, this one in {latencies[index] * 1000:.0f} ms; "
                  f"MemAvailable {mem_available_mib()} MiB, load {os.getloadavg()[0]:.1f}", flush=True)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(create, range(count)))
    created = [s for s in sandboxes if s]
    print(f"created {len(created)} of {count} in {time.monotonic() - started:.0f} s", flush=True)

    answers = []

    def answer(sandbox):
        began = time.perf_counter()
        try:
            run_echo(sandbox)
        except Exception as error:
            failures.append(f"run in {sandbox.sandbox_id}: {type(error).__name__}: {error}")
            return
        answers.append(time.perf_counter() - began)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(answer, created))
    print(f"{len(answers)} of {len(created)} answered `echo ok`: "
          f"p50 {statistics.median(answers) * 1000:.0f} ms, p95 {percentile(answers, 95) * 1000:.0f} ms"
          if answers else "none answered", flush=True)

    pids = list(qemu_processes().values())
    if len(pids) != len(created):
        failures.append(f"{len(pids)} QEMU processes for {len(created)} sandboxes")
    running = max(1, len(pids))
    print(f"after the commands: {memory_report(pids, running)}; "
          f"MemAvailable {mem_available_mib()} MiB ({(available_before - mem_available_mib()) / running:.1f} MiB "
          f"less per sandbox)", flush=True)
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    time.sleep(IDLE_WINDOW_S)  # a measurement window, not a wait for a condition
    cpu_used = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    print(f"after {IDLE_WINDOW_S} s idle: {memory_report(pids, running)}; QEMU CPU "
          f"{cpu_used / IDLE_WINDOW_S * 100:.0f} % of one core in all "
          f"({cpu_used / IDLE_WINDOW_S * 100 / max(1, len(pids)):.2f} % each), load {os.getloadavg()[0]:.1f}")

    good = [t for t in latencies if t is not None]
    if good:
        marks = ", ".join(f"{n}: {latencies[n - 1] * 1000:.0f} ms" for n in sorted({1, count // 2, count})
                          if latencies[n - 1] is not None)
        print(f"create latency of sandbox {marks}; p50 {statistics.median(good) * 1000:.0f} ms, "
              f"max {max(good) * 1000:.0f} ms")

    began = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda sandbox: sandbox.kill(), created))
    print(f"killed {len(created)} in {time.monotonic() - began:.0f} s")

    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
