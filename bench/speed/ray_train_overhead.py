"""Training throughput: Ray Train (1 and 2 workers) vs a plain PyTorch loop, same data and model.

All three run train_one_epoch over the same shards with the same transform and model; the Ray
figures come from the per-epoch img/s each run reports (start-up excluded, shown separately).
"Ray daemons" is the share of all cores that Ray's own processes (raylet, GCS, dashboard and its
agents) used during each Ray run: CPU the training workers could not have. "CPU s" is the whole
machine's CPU time during each Ray run, start-up and actors included (run it on an otherwise idle
machine): what a short run, such as the tests' tiny ones, costs. Each Ray run is repeated for each
`--loader-workers` (DataLoader processes per worker; the plain loop uses the first).

    python -m bench.speed.ray_train_overhead [--backbone efficientnet_lite0] [--image-size 128] [--epochs 2]
        [--worker-counts 1 2] [--loader-workers 1 0]
"""

import argparse
import os
import tempfile
import time

from artdate.core.config import TrainConfig
from artdate.data import partition, pipeline, shards
from artdate.model.checkpoints import run_checkpoints
from artdate.model.network import ModelSpec, build_model
from artdate.train.loop import fit, label_encoding, shard_batches
from artdate.train.run import run_training
from bench.common import machine_busy_seconds, pack_sample, tiny_training


def plain_loop(store_url, cfg) -> float:
    """The best epoch's img/s of artdate's own plain loop (loop.fit) in this one process."""
    manifest = shards.read_manifest(store_url)
    spec = ModelSpec(cfg.backbone, cfg.image_size, label_encoding(manifest, cfg.loss, cfg.bin_width))
    model = build_model(cfg.backbone, spec.encoding.num_outputs, cfg.weights)
    slices = partition.store_slices(store_url, manifest, "train")
    steps = partition.steps_per_epoch(partition.manifest_shards(store_url, manifest, "train"), cfg.batch_size)
    fitted = fit(model, spec, cfg, shard_batches(slices, pipeline.train_transform(cfg.image_size), cfg), steps)
    return max(epoch["images"] / epoch["seconds"] for epoch in fitted.epochs)


RAY_DAEMONS = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "agent", "runtime_env")


def ray_daemon_cpu_seconds() -> float:
    """CPU seconds used so far by Ray's own processes (raylet, GCS, dashboard and its agents,
    log monitor), not its workers: read from /proc, so Linux only (0 elsewhere)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if "ray::" not in command and any(name in command for name in RAY_DAEMONS):
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--worker-counts", type=int, nargs="+", default=[1, 2], help="Ray Train runs of these sizes")
    parser.add_argument(
        "--loader-workers",
        type=int,
        nargs="+",
        default=[1],
        help="Ray Train runs with these DataLoader processes per worker; the plain loop uses the first",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        store_url = os.path.join(directory, "shards")
        pack_sample(store_url, samples_per_shard=20, size=160)
        common = tiny_training(
            store_url,
            "",
            image_size=args.image_size,
            epochs=args.epochs,
            backbone=args.backbone,
            loader_workers=args.loader_workers[0],
        )
        baseline = plain_loop(store_url, TrainConfig(**common))
        rows = [("plain PyTorch loop, 1 process", baseline, 0.0, 0.0, 0.0)]
        for workers in args.worker_counts:
            for loaders in args.loader_workers:
                storage = os.path.join(directory, f"run-{workers}-{loaders}")
                started, daemons_before, busy = time.perf_counter(), ray_daemon_cpu_seconds(), machine_busy_seconds()
                # Ray sets OMP_NUM_THREADS to a worker's CPU reservation: reserve the cores, or it runs on one thread.
                cpus = max(1, (os.cpu_count() or 1) // workers)
                settings = {"storage": storage, "workers": workers, "cpus_per_worker": cpus, "loader_workers": loaders}
                run_training(TrainConfig(**{**common, **settings}))
                wall, cpu = time.perf_counter() - started, machine_busy_seconds() - busy
                # The daemons of the embedded Ray outlive the run: read them before the next one starts.
                daemon_share = (ray_daemon_cpu_seconds() - daemons_before) / (wall * (os.cpu_count() or 1))
                rate = max(m["images_per_second"] for m in run_checkpoints(storage).values())
                rows.append((f"Ray Train, {workers} worker(s), {loaders} loader", rate, wall, cpu, daemon_share))
    print(f"{args.backbone} at {args.image_size} px, batch 16 per worker, CPU, {os.cpu_count()} cores")
    print(f"{'run':<42}{'img/s':>8}{'vs plain':>10}{'wall s':>8}{'CPU s':>8}{'CPU vs 1st':>12}{'Ray daemons':>13}")
    first_cpu = rows[1][3]
    for name, rate, wall, cpu, daemon_share in rows:
        cpu_ratio = f"{cpu / first_cpu:12.2f}" if cpu else f"{'':12}"
        print(f"{name:<42}{rate:>8.1f}{rate / baseline:>10.2f}{wall:>8.0f}{cpu:>8.0f}{cpu_ratio}{daemon_share:>13.0%}")
    print("Ray daemons: CPU time of raylet, GCS, dashboard and agents during the run, as a share of all cores")
    print("CPU s: the whole machine's during the run, start-up included; CPU vs 1st: against the first Ray run")
    if len(args.worker_counts) > 1:
        step = len(args.loader_workers)  # rows per worker count
        more, fewer = rows[1 + step][1], rows[1][1]
        print(f"{args.worker_counts[1]} workers vs {args.worker_counts[0]}: {more / fewer:.2f}x")


if __name__ == "__main__":
    main()
