"""What processes that share a machine's cores cost it (as the test suite's two xdist workers on two
cores, or several artdate commands on one node): OpenMP's wait policy for torch processes side by
side, and the embedded Ray's start with and without its dashboard.

OpenMP: `--copies` processes at once, each training efficientnet_lite0 for `--steps` steps of 16
images at 64 px on as many threads as the machine has cores, first with OpenMP's default wait
policy (threads spin while they wait for work), then with OMP_WAIT_POLICY=PASSIVE. CPU seconds are
the copies' own (they are this process's children); ratios are to the default in the same run.

Ray: a fresh process starts the embedded Ray as artdate did (with a dashboard) and as it does now
(`include_dashboard=False`), runs one task and shuts down, `--repeats` times each; CPU seconds are
the whole machine's, read from /proc/stat (Ray's daemons are not this process's children), so run
it on an otherwise idle machine. Medians; ratios to the dashboard's in the same run.

    python -m bench.speed.shared_cores [--copies 3] [--steps 20] [--repeats 3]
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

from bench.common import ROOT, machine_busy_seconds

TRAIN = """
import torch
from artdate.model.network import build_model
torch.manual_seed(0)
model = build_model("efficientnet_lite0", 1, "none")
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
images, years = torch.randn(16, 3, 64, 64), torch.randn(16, 1)
for _ in range({steps}):
    optimizer.zero_grad()
    torch.nn.functional.l1_loss(model(images), years).backward()
    optimizer.step()
"""

RAY = """
import logging, ray
ray.init(include_dashboard={dashboard}, logging_level=logging.ERROR, log_to_driver=False)
assert ray.get(ray.remote(lambda: 1).remote()) == 1
ray.shutdown()
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def side_by_side(copies: int, steps: int, wait_policy: str | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `copies` training processes run at once."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    cpu, started = children_cpu(), time.perf_counter()
    running = [
        subprocess.Popen([sys.executable, "-c", TRAIN.format(steps=steps)], cwd=ROOT, env=env) for _ in range(copies)
    ]
    for process in running:
        assert process.wait() == 0
    return time.perf_counter() - started, children_cpu() - cpu


def ray_start(dashboard: bool) -> tuple[float, float]:
    """(wall seconds, the machine's CPU seconds) of one start, task and shutdown of the embedded Ray."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    busy, started = machine_busy_seconds(), time.perf_counter()
    subprocess.run([sys.executable, "-c", RAY.format(dashboard=dashboard)], cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - started
    time.sleep(2)  # the daemons' last work after the driver exits
    return wall, machine_busy_seconds() - busy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"{args.copies} torch processes side by side on {os.cpu_count()} cores, {args.steps} training steps each")
    print(f"{'OpenMP wait policy':<26} {'wall s':>7} {'CPU s':>7} {'CPU vs default':>15}")
    baseline = None
    for policy in (None, "PASSIVE"):
        wall, cpu = side_by_side(args.copies, args.steps, policy)
        baseline = baseline or cpu
        print(f"{policy or 'default (spinning)':<26} {wall:7.1f} {cpu:7.1f} {cpu / baseline:15.2f}")

    print(f"\nthe embedded Ray: start, one task, shutdown (medians of {args.repeats})")
    print(f"{'':<26} {'wall s':>7} {'CPU s':>7} {'CPU vs dashboard':>17}")
    baseline = None
    for dashboard in (True, False):
        walls, cpus = zip(*(ray_start(dashboard) for _ in range(args.repeats)))
        cpu = statistics.median(cpus)
        baseline = baseline or cpu
        label = "with its dashboard" if dashboard else "no dashboard (artdate)"
        print(f"{label:<26} {statistics.median(walls):7.1f} {cpu:7.1f} {cpu / baseline:17.2f}")


if __name__ == "__main__":
    main()
