"""Many ranks: 8 and 16 training workers (fractional CPUs) on a two-node loopback Ray cluster,
submitted through launch.py, on a store with fewer validation shards than ranks.

Prints, per worker count: wall seconds of the job, whether every rank got training samples
(balanced within one sample), and val_n against the validation split's size.

    python -m bench.scale.many_ranks [--workers 8 16]
"""

import argparse
import subprocess
import sys

from bench.common import ROOT, loopback_cluster, pack_sample, stopwatch, tiny_training
from tests.support.helpers import flags


def measure(nodes, bucket: str, worker_counts: list[int], outputs: list | None = None) -> list[tuple]:
    """One training job a worker count on `nodes` (servers.RayNodes), the sample packed under the
    s3:// `bucket`: (workers, wall s, fewest and most train samples of a rank, nodes, val_n, the
    validation split's samples and shards, ranks that trained) each. With a list `outputs`, the jobs
    run --verbose and their (stdout, stderr) go there."""
    from artdate.model.checkpoints import run_checkpoints

    rows = []
    store_url = f"{bucket}/shards"
    manifest = pack_sample(store_url)  # 32 works a shard: 9 train and 2 validation shards
    for workers in worker_counts:
        storage = f"{bucket}/runs/w{workers}"
        settings = tiny_training(store_url, storage, epochs=1, batch_size=4, image_size=48, workers=workers)
        settings.update(cpus_per_worker=f"{4 / workers:g}", gpus_per_worker=0, loader_workers=0)
        if outputs is not None:
            settings["verbose"] = True
        with stopwatch() as seconds:
            done = subprocess.run(
                [sys.executable, "launch.py", "--address", nodes.dashboard_url, "train", *flags(settings)],
                cwd=ROOT,
                env=nodes.environment(),
                capture_output=True,
                text=True,
                timeout=1200,
            )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:] + done.stdout[-3000:])
        if outputs is not None:
            outputs.append((done.stdout, done.stderr))
        (metrics,) = run_checkpoints(storage).values()
        loads = [sum(stop - start for _, start, stop in rank) for rank in metrics["slices_per_rank"]]
        rows.append(
            (
                workers,
                seconds(),
                min(loads),
                max(loads),
                sorted(set(metrics["node_per_rank"])),
                metrics["val_n"],
                manifest["splits"]["val"]["samples"],
                manifest["splits"]["val"]["shards"],
                len(loads),
            )
        )
    return rows


def table(rows: list[tuple]) -> str:
    lines = [
        "| ranks | CPUs per rank | wall s (job) | train samples per rank (min-max) | nodes | val_n / val split "
        "| validation shards |",
        "|---|---|---|---|---|---|---|",
    ]
    for workers, seconds, low, high, node_ips, val_n, val_total, val_shards, _ in rows:
        lines.append(
            f"| {workers} | {4 / workers:g} | {seconds:.0f} | {low}-{high} | {', '.join(node_ips)} "
            f"| {val_n} / {val_total} | {val_shards} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()
    with loopback_cluster("ranks") as (bucket, nodes):
        rows = measure(nodes, bucket, args.workers)
    print(table(rows))


if __name__ == "__main__":
    main()
