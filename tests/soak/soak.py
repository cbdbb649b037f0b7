"""Soak: CYCLES times `Sandbox.create()` → `commands.run("echo ok")` →
`kill()`, CONCURRENCY at a time, through the E2B Python SDK against a running
hearth (E2B_API_URL, E2B_DOMAIN, E2B_API_KEY). Afterwards no sandbox may
be left in `Sandbox.list()` or in the database's sandboxes table. Exits 1 on
any failure. Run by tests/soak/run-soak.sh.

    python soak.py [CYCLES] [CONCURRENCY]
"""

import os
import statistics
import sys
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
from e2b import Sandbox

from hearth_host import database_rows, listed_sandbox_ids, percentile, run_echo

# Long enough that a sandbox leaked early is still listed at the end,
# instead of timing out unnoticed.
SANDBOX_TIMEOUT_S = 3600
PROGRESS_EVERY = 50


class Tally:
    """Results of the cycles, shared by the worker threads."""

    def __init__(self, total):
        self.total = total
        self.lock = threading.Lock()
        self.done = 0
        self.timings = []  # (create, run, kill) seconds of each good cycle
        self.failures = []  # (cycle, phase, sandbox id, error)
        self.started = time.monotonic()

    def record(self, timing=None, failure=None):
        with self.lock:
            self.done += 1
            if timing:
                self.timings.append(timing)
            if failure:
                self.failures.append(failure)
            if self.done % PROGRESS_EVERY == 0 or self.done == self.total:
                elapsed = time.monotonic() - self.started
                print(
                    f"  {self.done}/{self.total} cycles, {len(self.failures)} failed, "
                    f"{elapsed:.0f} s, {self.done / elapsed:.2f} cycles/s",
                    flush=True,
                )


def cycle(number, tally):
    phase, sandbox, marks = "create", None, [time.perf_counter()]
    try:
        sandbox = Sandbox.create(timeout=SANDBOX_TIMEOUT_S)
        marks.append(time.perf_counter())
        phase = "run"
        run_echo(sandbox)
        marks.append(time.perf_counter())
        phase = "kill"
        if not sandbox.kill():
            raise RuntimeError("kill() says the sandbox was not found")
        marks.append(time.perf_counter())
    except Exception as error:  # every failure is counted, none stops the soak
        sandbox_id = sandbox.sandbox_id if sandbox else "-"
        detail = f"{type(error).__name__}: {error}"
        tally.record(failure=(number, phase, sandbox_id, detail))
        print(f"  cycle {number} failed in {phase} ({sandbox_id}): {detail}", flush=True)
        if phase == "run":
            traceback.print_exc()
            diagnose(sandbox)
            try:
                sandbox.kill()
            except Exception as kill_error:
                print(f"    and killing it failed too: {kill_error}", flush=True)
        return
    tally.record(timing=tuple(b - a for a, b in zip(marks, marks[1:])))


def diagnose(sandbox):
    """After a failed command: does the sandbox answer another one, and
    what did its console (the node's ring of it) say last?"""
    began = time.perf_counter()
    try:
        run_echo(sandbox, timeout=30)
        print(f"    a second echo ok answered in {time.perf_counter() - began:.1f} s", flush=True)
    except Exception as error:
        print(f"    a second echo ok failed after {time.perf_counter() - began:.1f} s: {error}", flush=True)
    try:
        response = httpx.get(
            f"{os.environ['E2B_API_URL']}/sandboxes/{sandbox.sandbox_id}/logs",
            params={"limit": 30},
            headers={"X-API-Key": os.environ["E2B_API_KEY"]},
            timeout=10,
        )
        lines = [entry["line"] for entry in response.json().get("logs", [])]
        print(f"    its console, last {len(lines)} lines:", *(f"      {line}" for line in lines), sep="\n", flush=True)
    except Exception as error:
        print(f"    its console could not be read: {error}", flush=True)


def report_timings(timings):
    for index, name in enumerate(("create", "echo ok", "kill")):
        values = [t[index] * 1000 for t in timings]
        print(
            f"  {name:<7}: p50 {statistics.median(values):.0f} ms, p95 {percentile(values, 95):.0f} ms, "
            f"p99 {percentile(values, 99):.0f} ms, max {max(values):.0f} ms"
        )


def main():
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    print(f"soak: {cycles} create → run → kill cycles, {concurrency} at a time", flush=True)
    tally = Tally(cycles)
    with ThreadPoolExecutor(concurrency) as pool:
        for number in range(cycles):
            pool.submit(cycle, number, tally)
    elapsed = time.monotonic() - tally.started

    print(f"soak: {cycles} cycles in {elapsed:.0f} s ({cycles / elapsed:.2f} cycles/s), "
          f"{len(tally.failures)} failed")
    if tally.timings:
        report_timings(tally.timings)
    if tally.failures:
        print("  failures by phase and error:")
        counts = Counter((phase, error) for _, phase, _, error in tally.failures)
        for (phase, error), count in counts.most_common():
            print(f"    {count} × {phase}: {error}")

    listed = listed_sandbox_ids()
    rows = database_rows()
    print(f"soak: afterwards {len(listed)} sandboxes listed, "
          f"{'(not SQLite: not read)' if rows is None else len(rows)} rows in the sandboxes table")
    ok = not tally.failures and not listed and not rows
    if listed:
        print(f"  listed: {sorted(listed)}")
    if rows:
        print(f"  rows: {sorted(rows)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
