"""Faults against a running hearth, through the E2B Python SDK (E2B_API_URL,
E2B_DOMAIN, E2B_API_KEY, HEARTH_UP_PREFIX, HEARTH_DATABASE_URL). Run
by tests/soak/faults.sh, which starts, kills and restarts hearth around them.

    python faults.py qemu-kill              a sandbox's QEMU is killed
    python faults.py crash HEARTH_PID STATE hearth is killed under load
    python faults.py recovered STATE        after the restart

Each step exits 1 (with the reason) when hearth does not behave.
"""

import json
import os
import signal
import sys
import threading
import time

from e2b import Sandbox

from hearth_host import (
    database_rows,
    listed_sandbox_ids,
    qemu_processes,
    run_echo,
    wait_for,
)

SANDBOX_TIMEOUT_S = 1800
# A dead VM is seen by the node's reaper (every 1 s); the control plane's
# list drops it at its next reconciliation with the node (every 5 s).
LIST_DEADLINE_S = 10
# After a restart, a VM whose create finished on the node but whose row was
# never written is deleted once it is older than a create may take (120 s)
# plus a margin (60 s), at a reconciliation (every 5 s).
RECOVERY_DEADLINE_S = 200
KEPT_SANDBOXES = 3
CRASH_WORKERS = 4


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def qemu_kill():
    """kill -9 of one sandbox's QEMU: it leaves the list, the others answer."""
    sandboxes = [Sandbox.create(timeout=SANDBOX_TIMEOUT_S) for _ in range(3)]
    victim, others = sandboxes[0], sandboxes[1:]
    for sandbox in sandboxes:
        run_echo(sandbox)
    pids = qemu_processes()
    check(victim.sandbox_id in pids, f"no QEMU found for {victim.sandbox_id} among {pids}")
    os.kill(pids[victim.sandbox_id], signal.SIGKILL)
    print(f"killed QEMU {pids[victim.sandbox_id]} of {victim.sandbox_id}", flush=True)

    answers = 0

    def victim_gone():
        nonlocal answers
        for sandbox in others:  # raises if one stops answering
            run_echo(sandbox)
            answers += 1
        return victim.sandbox_id not in listed_sandbox_ids()

    gone, waited = wait_for(victim_gone, LIST_DEADLINE_S)
    check(gone, f"{victim.sandbox_id} still listed {waited:.1f} s after its QEMU was killed")
    print(f"{victim.sandbox_id} left the list {waited:.1f} s after its QEMU was killed "
          f"(deadline {LIST_DEADLINE_S} s); the other two answered {answers} commands meanwhile")
    rows = database_rows()
    check(rows is None or victim.sandbox_id not in rows, "its database row is still there")
    for sandbox in others:
        run_echo(sandbox)
        check(sandbox.kill(), f"{sandbox.sandbox_id} was not found to kill")
    print("the other two still answered, and were killed")


class Load:
    """Workers looping create → run → kill, counting what is in flight."""

    def __init__(self, workers):
        self.lock = threading.Lock()
        self.creating = 0
        self.killing = 0
        self.cycles = 0
        self.errors = []  # before the crash: each is a failure
        self.crashed = threading.Event()
        self.threads = [threading.Thread(target=self.work, daemon=True) for _ in range(workers)]

    def add(self, name, delta):
        with self.lock:
            setattr(self, name, getattr(self, name) + delta)

    def work(self):
        while not self.crashed.is_set():
            try:
                self.add("creating", 1)
                try:
                    sandbox = Sandbox.create(timeout=SANDBOX_TIMEOUT_S)
                finally:
                    self.add("creating", -1)
                run_echo(sandbox)
                self.add("killing", 1)
                try:
                    sandbox.kill()
                finally:
                    self.add("killing", -1)
                self.add("cycles", 1)
            except Exception as error:
                if self.crashed.is_set():
                    return  # hearth is gone: expected
                self.errors.append(f"{type(error).__name__}: {error}")

    def in_flight(self):
        with self.lock:
            return self.creating, self.killing


def crash(hearth_pid, state_file):
    """kill -9 of `hearth up` while creates and kills are in flight, with a
    few idle sandboxes running that the restarted hearth must adopt."""
    kept = [Sandbox.create(timeout=SANDBOX_TIMEOUT_S) for _ in range(KEPT_SANDBOXES)]
    for sandbox in kept:
        run_echo(sandbox)
    load = Load(CRASH_WORKERS)
    for thread in load.threads:
        thread.start()
    warm, _ = wait_for(lambda: load.cycles >= CRASH_WORKERS, 300)
    check(warm, f"only {load.cycles} load cycles finished in 300 s")
    check(not load.errors, f"load cycles failed before the crash: {load.errors}")
    # The moment to crash: creates and a kill in flight (kills are short,
    # so poll often); at worst settle for creates alone.
    def creates_and_a_kill():
        creating, killing = load.in_flight()
        return creating >= 2 and killing >= 1

    both, _ = wait_for(creates_and_a_kill, 120, 0.005)
    if not both:
        wait_for(lambda: load.in_flight()[0] >= 1, 60, 0.005)
    creating, killing = load.in_flight()
    os.kill(hearth_pid, signal.SIGKILL)
    load.crashed.set()
    print(f"killed hearth up ({hearth_pid}) with creates in flight: {creating}, kills in flight: {killing}, "
          f"after {load.cycles} load cycles; {len(kept)} idle sandboxes kept", flush=True)
    for thread in load.threads:
        thread.join(timeout=120)
    check(not any(t.is_alive() for t in load.threads), "a load worker is still stuck")
    check(not load.errors, f"load cycles failed before the crash: {load.errors}")
    with open(state_file, "w") as out:
        json.dump({"kept": [s.sandbox_id for s in kept], "creating": creating, "killing": killing,
                   "qemu_after_crash": sorted(qemu_processes())}, out)


def recovered(state_file):
    """After the restart: what the API lists and what runs agree, every
    listed sandbox answers, the kept ones among them."""
    with open(state_file) as state_in:
        state = json.load(state_in)
    kept = set(state["kept"])
    survivors = set(state["qemu_after_crash"])
    listed, running = listed_sandbox_ids(), set(qemu_processes())
    print(f"right after the restart: {len(listed)} listed, {len(running)} QEMU processes "
          f"({len(survivors)} ran after the crash)", flush=True)

    def agree():
        nonlocal listed, running
        listed, running = listed_sandbox_ids(), set(qemu_processes())
        return listed == running

    agreed, waited = wait_for(agree, RECOVERY_DEADLINE_S, 1)
    check(agreed, f"{RECOVERY_DEADLINE_S} s after the restart, listed without QEMU: "
          f"{sorted(listed - running)}, QEMU without listing: {sorted(running - listed)}")
    print(f"listed and running agree after {waited:.0f} s: {len(listed)} sandboxes "
          f"({len(survivors - listed)} of the crash's survivors were removed)", flush=True)
    check(kept <= listed, f"idle sandboxes from before the crash were not adopted: {sorted(kept - listed)}")
    for sandbox_id in sorted(listed):
        run_echo(Sandbox.connect(sandbox_id, timeout=SANDBOX_TIMEOUT_S))
    print(f"all {len(listed)} listed sandboxes answered a command "
          f"(the {len(kept)} kept idle ones among them)", flush=True)
    rows = database_rows()
    check(rows is None or rows == listed, f"database rows {sorted(rows or [])} ≠ listed {sorted(listed)}")
    check(listed_sandbox_ids() == set(qemu_processes()), "listed and running disagree again")
    for sandbox_id in sorted(listed):
        check(Sandbox.kill(sandbox_id), f"{sandbox_id} was not found to kill")
    gone, waited = wait_for(lambda: not qemu_processes() and not listed_sandbox_ids(), 30)
    check(gone, f"after killing them: listed {listed_sandbox_ids()}, QEMU {qemu_processes()}")
    print(f"killed them all; their QEMU processes were gone after {waited:.1f} s")


def main():
    step = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        if step == "qemu-kill":
            qemu_kill()
        elif step == "crash":
            crash(int(sys.argv[2]), sys.argv[3])
        elif step == "recovered":
            recovered(sys.argv[2])
        else:
            sys.exit(__doc__)
    except Failed as failure:
        print(f"FAILED ({step}): {failure}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
