"""What the benchmarks share: the checkout's paths, the sample repeated into a larger corpus, a
timer, and the loopback S3 server with a two-node Ray cluster.

bench/ is a package: each script runs from the checkout's root as `python -m bench.GROUP.SCRIPT`
(speed/, scale/, quality/; docs/benchmarks.md), so it imports this checkout's artdate, this module
(`from bench.common import ...`) and the tests' own servers and settings (`tests.support`: the
tiny training, packing the sample, the servers) as packages.
"""

import contextlib
import csv
import os
import sys
import time

from tests.support.helpers import SAMPLE_CSV, SHARED_SAMPLE, TINY, pack_sample, tiny_training  # noqa: F401

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SHARED = os.path.dirname(SHARED_SAMPLE)  # the images stay in ../shared, beside the checkout
OUT = os.path.join(BENCH, "out")  # what a benchmark keeps between runs (ignored by git)


def sample_copies(directory: str, copies: int) -> str:
    """A metadata CSV of the sample's works `copies` times over, each copy as another museum (so
    every work is distinct), naming the images by absolute path; its path."""
    with open(SAMPLE_CSV) as f:
        rows = list(csv.DictReader(f))
    path = os.path.join(directory, "works.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["museum", "id", "year", "file"])
        for copy in range(copies):
            writer.writerows(
                [f"{r['museum']}{copy}", r["id"], r["year"], os.path.join(SHARED_SAMPLE, r["file"])] for r in rows
            )
    return path


def _drain() -> None:
    """Wait for queued GPU work, where there is a GPU: a timer must not stop before it has run."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def stopwatch():
    """`with stopwatch() as elapsed: ...`, then `elapsed()`: the wall seconds of the block, GPU
    work drained at both ends."""
    _drain()
    started = time.perf_counter()
    stopped = None

    def elapsed() -> float:
        return (stopped if stopped is not None else time.perf_counter()) - started

    yield elapsed
    _drain()
    stopped = time.perf_counter()


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy so far (/proc/stat: all but idle and iowait), for
    what runs in processes that are not this one's children (Ray's daemons, actors and workers)."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def per_second(run) -> float:
    """Items per second of `run()`, which returns how many items it handled."""
    with stopwatch() as elapsed:
        items = run()
    return items / elapsed()


@contextlib.contextmanager
def loopback_cluster(bucket: str):
    """A SeaweedFS S3 server (its settings in this process's environment, as the nodes see them)
    and a two-node Ray cluster on 127.0.0.2 and 127.0.0.3; yields (s3:// URL of a fresh bucket,
    the nodes). Both are stopped on exit."""
    from tests.support.servers import RayNodes, SeaweedS3

    s3 = SeaweedS3().start()
    os.environ.update(s3.environment())
    try:
        nodes = RayNodes().start()
        try:
            yield f"s3://{s3.make_bucket(bucket)}", nodes
        finally:
            nodes.stop()
    finally:
        s3.stop()
