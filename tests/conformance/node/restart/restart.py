"""The two phases of run.sh, through the unmodified SDK: `before` pauses a
sandbox and snapshots another and writes their ids to STATE; `after`
(against a restarted hearth) checks and removes them.

    python restart.py before|after STATE
"""

import json
import os
import sys
import time

import httpx
from e2b import Sandbox, SandboxQuery, SandboxState

COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /dev/shm/count.new && mv /dev/shm/count.new /dev/shm/count; sleep 0.1; done"


def count(sbx):
    return int(sbx.commands.run("cat /dev/shm/count").stdout)


def api(path):
    r = httpx.get(os.environ["E2B_API_URL"] + path, headers={"X-API-Key": os.environ["E2B_API_KEY"]}, timeout=30)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def messages(sandbox_id):
    return [e["message"] for e in api(f"/v2/sandboxes/{sandbox_id}/logs?direction=forward")["logs"]]


def before(state_file):
    # A killed sandbox's log and metrics outlive hearth too.
    killed = Sandbox.create(timeout=600)
    killed.commands.run("echo kept-in-the-log")
    deadline = time.monotonic() + 30
    while not api(f"/sandboxes/{killed.sandbox_id}/metrics") and time.monotonic() < deadline:
        time.sleep(0.5)
    killed.kill()
    killed_log = messages(killed.sandbox_id)
    assert "Sandbox killed" in killed_log, killed_log
    paused = Sandbox.create(timeout=600)
    paused.commands.run(COUNTER, background=True)
    paused.files.write("/home/user/kept.txt", "kept across a restart")
    time.sleep(1)
    counted = count(paused)
    assert paused.pause() is True
    source = Sandbox.create(timeout=600)
    source.files.write("/home/user/snapshot.txt", "in the snapshot")
    snapshot = source.create_snapshot()
    with open(state_file, "w") as f:
        json.dump(
            {
                "paused": paused.sandbox_id,
                "counted": counted,
                "snapshot": snapshot.snapshot_id,
                "killed": killed.sandbox_id,
                "killed_log": killed_log,
            },
            f,
        )


def after(state_file):
    with open(state_file) as f:
        state = json.load(f)
    # What the node had of the killed sandbox, it has still; the paused
    # one's log goes on from where it was.
    assert messages(state["killed"])[: len(state["killed_log"])] == state["killed_log"]
    assert api(f"/sandboxes/{state['killed']}/metrics"), "its metrics are kept"
    assert "Sandbox paused" in messages(state["paused"])
    listed = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
    assert state["paused"] in [s.sandbox_id for s in listed], listed
    snapshots = [s.snapshot_id for s in Sandbox.list_snapshots().next_items()]
    assert state["snapshot"] in snapshots, snapshots
    resumed = Sandbox.connect(state["paused"], timeout=120)
    try:
        assert resumed.files.read("/home/user/kept.txt") == "kept across a restart"
        first = count(resumed)
        assert first >= state["counted"]
        time.sleep(1)
        assert count(resumed) > first, "the counter does not count after the restart"
    finally:
        resumed.kill()
    started = Sandbox.create(state["snapshot"], timeout=120)
    try:
        assert started.files.read("/home/user/snapshot.txt") == "in the snapshot"
    finally:
        started.kill()
    assert Sandbox.delete_snapshot(state["snapshot"]) is True


if __name__ == "__main__":
    {"before": before, "after": after}[sys.argv[1]](sys.argv[2])
