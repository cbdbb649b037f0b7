"""Template build times and create latency from a built template, through
the Python SDK against a running hearth (E2B_API_URL, E2B_SANDBOX_URL,
E2B_API_KEY), with a local registry (HEARTH_TEST_REGISTRY) and the image
pusher (PUSH_IMAGE_BIN). Run by tests/bench/run-template-bench.sh.

    python template_build_bench.py [CREATES]

- cold: a small image never seen before (new digest): pull, unpack, ext4,
  boot, two RUN steps, snapshot;
- cached: the same definition again (every layer and the snapshot cached);
- one step changed: the last RUN differs;
- create latency, `Sandbox.create()`, from that template and from `base`,
  interleaved in one run, and their ratio.
"""

import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import httpx

from e2b import Sandbox, Template

REGISTRY = os.environ["HEARTH_TEST_REGISTRY"]
API = os.environ["E2B_API_URL"]
HEADERS = {"X-API-Key": os.environ["E2B_API_KEY"]}


def push_busybox_image(tag):
    root = pathlib.Path(tempfile.mkdtemp())
    for d in ("bin", "etc", "tmp", "root"):
        (root / d).mkdir()
    busybox = root / "bin" / "busybox"
    busybox.write_bytes(pathlib.Path("/bin/busybox").read_bytes())
    busybox.chmod(0o755)
    for applet in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    subprocess.run(
        [os.environ["PUSH_IMAGE_BIN"], "--registry", REGISTRY, "--name", f"bench/busybox:{tag}",
         "--rootfs", str(root), "--env", f"BENCH_TAG={tag}"],
        check=True, capture_output=True,
    )
    return f"{REGISTRY}/bench/busybox:{tag}"


def timed_build(template, name):
    started = time.perf_counter()
    # The shape of `base` (2 vCPUs, 512 MiB), so create latencies compare.
    info = Template.build(template, name, cpu_count=2, memory_mb=512)
    return time.perf_counter() - started, info.template_id


def create_latency(template):
    started = time.perf_counter()
    sbx = Sandbox.create(template, timeout=60)
    elapsed = time.perf_counter() - started
    sbx.kill()
    return elapsed


def main():
    creates = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    tag = uuid.uuid4().hex[:8]
    image = push_busybox_image(tag)
    definition = lambda last: Template().from_image(image).run_cmd("echo one > /tmp/one").run_cmd(last)  # noqa: E731
    built = []
    cold, tid = timed_build(definition("echo two > /tmp/two"), f"bench-cold-{tag}")
    built.append(tid)
    cached, tid = timed_build(definition("echo two > /tmp/two"), f"bench-cached-{tag}")
    built.append(tid)
    changed, tid = timed_build(definition("echo three > /tmp/two"), f"bench-changed-{tag}")
    built.append(tid)
    print(f"build cold {cold:.2f} s | fully cached {cached:.2f} s ({cached / cold:.1%} of cold) | "
          f"last step changed {changed:.2f} s ({changed / cold:.1%} of cold)")
    ours, base = [], []
    for _ in range(creates):
        ours.append(create_latency(f"bench-cold-{tag}"))
        base.append(create_latency("base"))
    p50_ours, p50_base = statistics.median(ours), statistics.median(base)
    print(f"create p50: built template {p50_ours * 1000:.0f} ms, base {p50_base * 1000:.0f} ms, "
          f"ratio {p50_ours / p50_base:.2f} (n={creates} each, interleaved)")
    for template_id in built:
        httpx.delete(f"{API}/templates/{template_id}", headers=HEADERS, timeout=60)


if __name__ == "__main__":
    main()
