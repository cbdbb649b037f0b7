"""What a `hearth up` run looks like from the host: its sandboxes' QEMU
processes and their memory, its database rows, and the API's list. Shared by
the soak, the fault tests and the idle-density bench.

The slot prefix comes from HEARTH_UP_PREFIX (set by scripts/with-hearth-up.sh
and tests/soak/faults.sh); each sandbox's QEMU runs with its run directory
`<data dir>/v1/sandboxes/<prefix>/<sandbox id>/` on its command line.
"""

import os
import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlparse

from e2b import Sandbox


def slot_prefix():
    return os.environ["HEARTH_UP_PREFIX"]


def qemu_processes(prefix=None):
    """{sandbox id: pid} of the QEMU processes of this run's sandboxes."""
    pattern = re.compile(rf"/sandboxes/{re.escape(prefix or slot_prefix())}/([^/\s]+)/")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        if "qemu" not in cmdline:
            continue
        match = pattern.search(cmdline)
        if match:
            found[match.group(1)] = int(entry.name)
    return found


def memory_kib(pid):
    """(Pss, Rss) of a process in KiB, from /proc/<pid>/smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Pss", "Rss"):
            values[name] = int(rest.split()[0])
    return values["Pss"], values["Rss"]


def mem_available_mib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def listed_sandbox_ids():
    """The sandboxes the API lists (running and paused), every page."""
    ids = set()
    paginator = Sandbox.list(limit=100)
    while paginator.has_next:
        ids.update(info.sandbox_id for info in paginator.next_items())
    return ids


def database_rows():
    """Sandbox ids in the control plane's `sandboxes` table, or None when
    the database is not SQLite (HEARTH_DATABASE_URL)."""
    url = urlparse(os.environ.get("HEARTH_DATABASE_URL", ""))
    if url.scheme != "sqlite":
        return None
    path = url.netloc + url.path  # sqlite:///abs or sqlite://relative
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return {row[0] for row in db.execute("SELECT sandbox_id FROM sandboxes")}


def run_echo(sandbox, timeout=60):
    """Runs `echo ok` in the sandbox; raises unless it printed exactly ok."""
    result = sandbox.commands.run("echo ok", timeout=timeout)
    if result.exit_code != 0 or result.stdout != "ok\n":
        raise RuntimeError(f"echo ok gave exit {result.exit_code}, stdout {result.stdout!r}")


def wait_for(condition, deadline_s, interval_s=0.2):
    """Polls `condition()` until it returns something true or the deadline
    passes; returns (value, seconds waited)."""
    started = time.monotonic()
    while True:
        value = condition()
        waited = time.monotonic() - started
        if value or waited >= deadline_s:
            return value, waited
        time.sleep(interval_s)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
