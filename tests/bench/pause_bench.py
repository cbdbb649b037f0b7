"""Pause and resume latency and the disk a paused sandbox takes, measured in
one run against a running hearth (E2B_* from sdk.env; HEARTH_DATA_DIR and
HEARTH_UP_PREFIX say where paused state lives), ROUNDS times each:

- Sandbox.create() of base (the reference a resume is compared with);
- pause and resume (connect) of an idle sandbox, and of one that wrote
  256 MiB of fresh memory first;
- the paused state's size on disk (allocated blocks) for both;
- a snapshot of an idle sandbox (time, state and layer on disk) and a
  sandbox started from it; a fork of 1 and of 8 until every fork ran a
  command.

    python pause_bench.py [ROUNDS]
"""

import os
import statistics
import sys
import time
from pathlib import Path

from e2b import Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "soak"))
from hearth_host import percentile  # noqa: E402

# A process that writes every page of 256 MiB and keeps it (a guest of
# 512 MiB has no room for that in /dev/shm).
DIRTY = (
    "python3 -c \"b = bytearray(256 << 20); b[::4096] = bytes([1]) * (len(b) // 4096); "
    "open('/tmp/dirtied', 'w').close(); import time; time.sleep(3600)\""
)


def stats(name, samples):
    ms = [s * 1000 for s in samples]
    print(f"{name}: p50 {statistics.median(ms):.0f} ms, p95 {percentile(ms, 95):.0f} ms (n={len(ms)})", flush=True)
    return statistics.median(ms)


def paused_bytes(sandbox_id):
    root = Path(os.environ.get("HEARTH_DATA_DIR", "/var/lib/hearth")) / "v1" / "paused"
    prefix = os.environ.get("HEARTH_UP_PREFIX", "htu")
    return sum(f.stat().st_blocks * 512 for f in (root / prefix / sandbox_id).rglob("*") if f.is_file())


def snapshot_bytes(snapshot_id):
    root = Path(os.environ.get("HEARTH_DATA_DIR", "/var/lib/hearth")) / "v1"
    prefix = os.environ.get("HEARTH_UP_PREFIX", "htu")
    files = list((root / "snapshots" / prefix / snapshot_id).rglob("*"))
    files.append(root / "layers" / prefix / f"{snapshot_id}.qcow2")
    return sum(f.stat().st_blocks * 512 for f in files if f.is_file())


def snapshots_and_forks(rounds, create):
    takes, starts, sizes = [], [], []
    forks = {1: [], 8: []}
    for _ in range(rounds):
        sbx = Sandbox.create(timeout=300)
        try:
            sbx.commands.run("echo kept > /home/user/kept")
            began = time.perf_counter()
            snapshot = sbx.create_snapshot()
            takes.append(time.perf_counter() - began)
            sizes.append(snapshot_bytes(snapshot.snapshot_id))
            began = time.perf_counter()
            started = Sandbox.create(snapshot.snapshot_id, timeout=300)
            started.commands.run("true")
            starts.append(time.perf_counter() - began)
            started.kill()
            Sandbox.delete_snapshot(snapshot.snapshot_id)
            for count in forks:
                began = time.perf_counter()
                made = sbx.fork(count=count, timeout=300)
                try:
                    for fork in made:
                        assert isinstance(fork, Sandbox), fork
                        fork.commands.run("true")
                    forks[count].append(time.perf_counter() - began)
                finally:
                    for fork in made:
                        if isinstance(fork, Sandbox):
                            fork.kill()
        finally:
            Sandbox.kill(sbx.sandbox_id)
    stats("snapshot, idle", takes)
    mib = [s / (1 << 20) for s in sizes]
    print(f"  snapshot on disk (state and layer), idle: median {statistics.median(mib):.0f} MiB, max {max(mib):.0f} MiB", flush=True)
    start = stats("create from a snapshot (until a command ran)", starts)
    print(f"  from snapshot / create: {start / create:.2f}", flush=True)
    for count, samples in forks.items():
        stats(f"fork of {count} (until every fork ran a command)", samples)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    creates = []
    results = {}
    for label, prepare in (("idle", None), ("256 MiB written", DIRTY)):
        pauses, resumes, sizes = [], [], []
        for _ in range(rounds):
            # Like a resume, until a command ran (a new handle's first
            # command opens its connections to the sandbox).
            began = time.perf_counter()
            sbx = Sandbox.create(timeout=300)
            sbx.commands.run("true")
            creates.append(time.perf_counter() - began)
            try:
                if prepare:
                    sbx.commands.run(prepare, background=True)
                    deadline = time.monotonic() + 120
                    probe = "test -f /tmp/dirtied && echo yes || echo no"
                    while sbx.commands.run(probe, timeout=30).stdout.strip() != "yes":
                        assert time.monotonic() < deadline, "the guest did not write its memory"
                began = time.perf_counter()
                assert sbx.pause() is True
                pauses.append(time.perf_counter() - began)
                sizes.append(paused_bytes(sbx.sandbox_id))
                began = time.perf_counter()
                resumed = Sandbox.connect(sbx.sandbox_id, timeout=300)
                resumed.commands.run("true")
                resumes.append(time.perf_counter() - began)
            finally:
                Sandbox.kill(sbx.sandbox_id)
        results[label] = (pauses, resumes, sizes)
    create = stats("create base (until a command ran)", creates)
    for label, (pauses, resumes, sizes) in results.items():
        stats(f"pause, {label}", pauses)
        resume = stats(f"resume (connect until a command ran), {label}", resumes)
        print(f"  resume / create: {resume / create:.2f}", flush=True)
        mib = [s / (1 << 20) for s in sizes]
        print(f"  paused on disk, {label}: median {statistics.median(mib):.0f} MiB, max {max(mib):.0f} MiB", flush=True)
    snapshots_and_forks(max(1, rounds // 2), create)


if __name__ == "__main__":
    main()
