"""Code interpreter latency and memory, measured in one run against a
running hearth (E2B_* from sdk.env, HEARTH_UP_PREFIX): ROUNDS times each,
alternating, so that both sides see the same machine:

- Sandbox.create() of code-interpreter-v1 -> first run_code("1+1") result,
  next to Sandbox.create() of the same template -> commands.run("true");
- run_code("1+1") on a warm sandbox next to commands.run("true");
- PSS of idle code-interpreter sandboxes next to idle base ones.

    python interpreter_bench.py [ROUNDS]
"""

import statistics
import sys
import time
from pathlib import Path

from e2b import Sandbox as BaseSandbox
from e2b_code_interpreter import Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "soak"))
from hearth_host import memory_kib, percentile, qemu_processes  # noqa: E402


def stats(name, samples):
    ms = [s * 1000 for s in samples]
    print(f"{name}: p50 {statistics.median(ms):.0f} ms, p95 {percentile(ms, 95):.0f} ms (n={len(ms)})", flush=True)
    return statistics.median(ms)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    to_code, to_command = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        with Sandbox.create(timeout=120) as sbx:
            assert sbx.run_code("1+1").text == "2"
            to_code.append(time.perf_counter() - began)
        began = time.perf_counter()
        with Sandbox.create(timeout=120) as sbx:
            sbx.commands.run("true")
            to_command.append(time.perf_counter() - began)
    code = stats("create -> first run_code('1+1')", to_code)
    command = stats("create -> first commands.run('true')", to_command)
    print(f"  difference of the medians: {code - command:+.0f} ms", flush=True)

    warm_code, warm_command = [], []
    with Sandbox.create(timeout=600) as sbx:
        sbx.run_code("1+1")
        sbx.commands.run("true")
        for _ in range(rounds * 2):
            began = time.perf_counter()
            sbx.run_code("1+1")
            warm_code.append(time.perf_counter() - began)
            began = time.perf_counter()
            sbx.commands.run("true")
            warm_command.append(time.perf_counter() - began)
    stats("warm run_code('1+1')", warm_code)
    stats("warm commands.run('true')", warm_command)

    for name, make in (("code-interpreter-v1", lambda: Sandbox.create(timeout=300)),
                       ("base", lambda: BaseSandbox.create(timeout=300))):
        before = set(qemu_processes())
        sandboxes = [make() for _ in range(4)]
        for sbx in sandboxes:
            sbx.commands.run("true")
        time.sleep(10)  # a measurement window after the last command, not a wait for a condition
        pids = [pid for sid, pid in qemu_processes().items() if sid not in before]
        pss = [memory_kib(pid)[0] / 1024 for pid in pids]
        print(f"idle PSS, 4 {name} sandboxes: {statistics.mean(pss):.1f} MiB each", flush=True)
        for sbx in sandboxes:
            sbx.kill()


if __name__ == "__main__":
    main()
