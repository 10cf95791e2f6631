"""Many ranks: 8 and 16 training workers (fractional CPUs) on a two-node loopback Ray cluster,
submitted through launch.py, on a store with fewer validation shards than ranks.

Prints, per worker count: wall seconds of the job, whether every rank got training samples
(balanced within one sample), and val_n against the validation split's size.

    python bench/ranks.py [--workers 8 16]
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from conftest import pack_sample  # noqa: E402
from servers import RayNodes, SeaweedS3  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()

    from artdate.checkpoints import run_checkpoints

    s3 = SeaweedS3().start()
    os.environ.update(s3.environment())
    nodes = RayNodes().start()
    rows = []
    try:
        bucket = s3.make_bucket("ranks")
        store_url = f"s3://{bucket}/shards"
        manifest = pack_sample(store_url)  # 32 works a shard: 9 train and 2 validation shards
        for workers in args.workers:
            storage = f"s3://{bucket}/runs/w{workers}"
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "launch.py",
                    "--address",
                    nodes.dashboard_url,
                    "train",
                    "--shards",
                    store_url,
                    "--storage",
                    storage,
                    "--backbone",
                    "efficientnet_lite0",
                    "--epochs",
                    "1",
                    "--batch-size",
                    "4",
                    "--image-size",
                    "48",
                    "--workers",
                    str(workers),
                    "--cpus-per-worker",
                    f"{4 / workers:g}",
                    "--gpus-per-worker",
                    "0",
                    "--loader-workers",
                    "0",
                ],
                cwd=ROOT,
                env=nodes.environment(),
                capture_output=True,
                text=True,
                timeout=1200,
            )
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:] + done.stdout[-3000:])
            (metrics,) = run_checkpoints(storage).values()
            loads = [sum(stop - start for _, start, stop in rank) for rank in metrics["slices_per_rank"]]
            rows.append(
                (
                    workers,
                    seconds,
                    min(loads),
                    max(loads),
                    sorted(set(metrics["node_per_rank"])),
                    metrics["val_n"],
                    manifest["splits"]["val"]["samples"],
                    manifest["splits"]["val"]["shards"],
                )
            )
    finally:
        nodes.stop()
        s3.stop()
    print(
        "| ranks | CPUs per rank | wall s (job) | train samples per rank (min-max) | nodes | val_n / val split "
        "| validation shards |"
    )
    print("|---|---|---|---|---|---|---|")
    for workers, seconds, low, high, node_ips, val_n, val_total, val_shards in rows:
        print(
            f"| {workers} | {4 / workers:g} | {seconds:.0f} | {low}-{high} | {', '.join(node_ips)} "
            f"| {val_n} / {val_total} | {val_shards} |"
        )


if __name__ == "__main__":
    main()
