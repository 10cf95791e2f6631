"""What starting DataLoader workers with forkserver (artdate's, Ray's guidance inside actors) costs
against fork, measured inside a Ray worker process as training and scoring run them.

Each start method runs in a fresh Ray worker process (so the forkserver's own start is in its first
loader), which builds artdate's training loader over the packed sample (local shards) --passes
times, as epochs do: the seconds to the first batch of the first loader, of the later ones, and of a whole
pass. Ratios (in brackets) are to fork in the same run.

    python -m bench.speed.loader_start [--loader-workers 1 2] [--passes 3]
"""

import argparse
import os
import statistics
import tempfile
import time

from bench.common import pack_sample


def loader_passes(store_url: str, start_method: str, loader_workers: int, passes: int) -> list[tuple[float, float]]:
    """(seconds to the first batch, seconds for the pass) of `passes` loaders, one after another."""
    import json

    from artdate.core import store
    from artdate.data import partition, pipeline

    manifest = json.loads(store.read_bytes(store.join(store_url, "manifest.json")))
    slices = partition.store_slices(store_url, manifest, "train")
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        loader = pipeline.make_loader(slices, pipeline.train_transform(64), 16, loader_workers=loader_workers)
        if start_method == "fork":  # artdate's own is a forkserver
            loader.multiprocessing_context = "fork"
        batches = iter(loader)
        next(batches)
        first = time.perf_counter() - started
        for _ in batches:
            pass
        times.append((first, time.perf_counter() - started))
        del batches, loader
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()

    import ray

    rows = []
    with tempfile.TemporaryDirectory() as work:
        store_url = os.path.join(work, "shards")
        pack_sample(store_url)
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            run = ray.remote(num_cpus=1, max_calls=1)(loader_passes)  # a fresh process each run
            for workers in args.loader_workers:
                for method in ("fork", "forkserver"):
                    times = ray.get(run.remote(store_url, method, workers, args.passes))
                    rows.append((workers, method, times))
        finally:
            ray.shutdown()

    print("| loader workers | start method | first loader: first batch s | later loaders: first batch s | pass s |")
    print("|---|---|---|---|---|")
    fork = {}
    for workers, method, times in rows:
        first, later = times[0][0], statistics.median(t[0] for t in times[1:])
        whole = statistics.median(t[1] for t in times)
        fork.setdefault(workers, (first, later, whole))  # fork runs first
        cells = [f"{v:.2f} ({v / base:.2f}x)" for v, base in zip((first, later, whole), fork[workers])]
        print(f"| {workers} | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
