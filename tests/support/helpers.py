"""What the tests share besides fixtures: where the sample lives, packing it, waiting for Ray to
register a checkpoint, and reading what a --key-log says was trained."""

import glob
import json
import math
import os
import re
import time

import pytest

from tests.support.processes import live_processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The sample's works (facts) ship in metadata/sample; its images stay in ../shared, where they were
# copied to: a test that needs them skips without it. ARTDATE_SAMPLE names another copy of them (a
# GPU window's, bench/gpu/prepare.py: ../shared does not travel to the device machine).
SAMPLE_CSV = os.path.join(ROOT, "metadata", "sample", "artworks.csv")
SHARED_SAMPLE = os.environ.get("ARTDATE_SAMPLE") or os.path.join(os.path.dirname(ROOT), "shared", "artworks-sample")
SAMPLE_IMAGES = os.path.join(SHARED_SAMPLE, "images")
requires_sample = pytest.mark.skipif(
    not os.path.isdir(SAMPLE_IMAGES), reason="needs the sample's images in ../shared/artworks-sample"
)


def need_sample() -> None:
    if not os.path.isdir(SAMPLE_IMAGES):
        pytest.skip("needs the sample's images in ../shared/artworks-sample")


def pack_sample(out: str, works: int = 0, **settings) -> dict:
    """The sample packed into `out` (96 px, 32 works a shard unless `settings` say otherwise); only
    its first `works` rows when given (shorter epochs)."""
    import tempfile

    from artdate.core.config import PackConfig
    from artdate.pack.run import run_pack

    need_sample()
    with tempfile.TemporaryDirectory() as folder:
        metadata = SAMPLE_CSV
        if works:
            metadata = os.path.join(folder, "artworks.csv")
            with open(SAMPLE_CSV, encoding="utf-8") as sample, open(metadata, "w", encoding="utf-8") as subset:
                subset.writelines(sample.readlines()[: works + 1])  # the header and `works` rows
        defaults = dict(images=SHARED_SAMPLE, size=96, samples_per_shard=32, year_min=-1000, year_max=2100, jobs=1)
        return run_pack(PackConfig(metadata=(metadata,), out=out, **{**defaults, **settings}), progress=False)


def read_rows(path: str) -> list[dict]:
    """The rows of a CSV file (results.csv, a neighbours file) as dicts."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def wait_for_count(count_now, count: int, still_running, timeout: float = 180) -> int:
    """Until `count_now()` reaches `count`, asserting all the while that the command under test still
    runs (`still_running()`); returns the last count."""
    deadline = time.monotonic() + timeout
    while (found := count_now()) < count:
        assert still_running() and time.monotonic() < deadline, (
            f"the command ended (or {timeout:.0f} s passed) at {found} of {count}"
        )
        time.sleep(0.05)
    return found


def parts_kept(out: str) -> int:
    """How many shards a local score into `out` has kept in `<out>.parts/`."""
    parts = out + ".parts"
    return sum(n.endswith(".tar.csv") for n in os.listdir(parts)) if os.path.isdir(parts) else 0


def wait_for_registered(storage: str, fragment: str, still_running, timeout: float = 300) -> None:
    """Until Ray has registered a checkpoint whose metrics hold `fragment` (`"epoch":0`): its
    snapshot in the storage lists the registered ones. A checkpoint already written but not yet
    registered (not every rank has reported it) when a worker dies is not resumed from."""
    from artdate.core import store

    snapshot = store.join(storage, "checkpoint_manager_snapshot.json")
    deadline = time.monotonic() + timeout
    while not (store.exists(snapshot) and fragment in store.read_bytes(snapshot).decode().replace(" ", "")):
        assert still_running(), f"the run ended before a checkpoint with {fragment} was registered"
        assert time.monotonic() < deadline, f"no checkpoint with {fragment} registered in {timeout} s"
        time.sleep(0.2)


def trained_in_epoch(folder: str, epoch: int) -> tuple[list[str], int]:
    """(the keys each step of `epoch` trained, steps trained and then lost) from a --key-log. A
    step counts for the last attempt that trained it: an attempt's steps after the checkpoint the
    next one resumed from were lost with it (the resumed weights never saw them).

    An attempt is one start of the worker group: a file per rank, named by the step it started
    from. Two attempts can start from the same step (both from the epoch's start), so the files
    are told apart by time: each belongs to the rank 0 file that started nearest to it."""
    files = []
    for path in glob.glob(os.path.join(folder, f"epoch{epoch}-from*-rank*.jsonl")):
        entries = [json.loads(line) for line in open(path)]
        if entries:  # an attempt lost before its first step trained nothing
            first = int(re.search(r"-from(\d+)-", path).group(1))
            files.append((entries[0]["time"], entries[0]["rank"], first, entries))
    starts = sorted((started, first) for started, rank, first, _ in files if rank == 0)
    attempts: list[dict[int, list[str]]] = [{} for _ in starts]
    for started, _, _, entries in files:
        nearest = min(range(len(starts)), key=lambda i: abs(starts[i][0] - started))
        for entry in entries:
            attempts[nearest].setdefault(entry["step"], []).extend(entry["keys"])
    kept, lost = [], 0
    next_firsts = [first for _, first in starts[1:]] + [math.inf]
    for steps, next_first in zip(attempts, next_firsts):
        for step, keys in steps.items():
            if step <= next_first:
                kept += keys
            else:
                lost += 1
    return kept, lost


def shipped_pace(scale: float) -> dict:
    """pack's download timing at its shipped defaults with every time scaled by one factor (the
    rate by its inverse), so a test runs fast while the ratios between the settings, where a bug
    can live (a pause longer than a deadline), stay as shipped."""
    import dataclasses

    from artdate.core.config import PackConfig

    shipped = {f.name: f.default for f in dataclasses.fields(PackConfig)}
    pace = {name: shipped[name] * scale for name in ("timeout", "block_pause", "backoff")}
    counts = {name: shipped[name] for name in ("retries", "concurrency")}
    return {**pace, **counts, "rate": shipped["rate"] / scale}


# The tiny training the tests and benchmarks run: the demo's backbone on small crops and batches,
# two DDP workers, no progress lines. No loader processes: each rank's would start a forkserver
# that imports torch, a third of a tiny run's CPU (0.68x without: bench/speed/ray_train_overhead.py,
# bench/RESULTS.md). The runs that follow samples across loader processes (a stream from S3, a
# resume inside an epoch) ask for one: LOADER_PROCESS.
TINY = {
    "backbone": "efficientnet_lite0",
    "image_size": 64,
    "batch_size": 16,
    "workers": 2,
    "loader_workers": 0,
    "log_every": 0,
}
LOADER_PROCESS = {"loader_workers": 1}


def tiny_training(shards: str, storage: str, **overrides) -> dict:
    """TrainConfig's fields for a tiny run of `shards` into `storage`, with `overrides`."""
    return {"shards": shards, "storage": storage, **TINY, **overrides}


def flags(settings: dict) -> list[str]:
    """Settings as command-line flags: {"image_size": 64, "resume": True} -> --image-size 64 --resume."""
    argv = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    return argv


def artdate_command(*argv: str) -> list[str]:
    """The command line that runs `artdate *argv` in a fresh Python (the one running the tests)."""
    import sys

    return [sys.executable, "-m", "artdate.cli", *argv]


def run_artdate(*argv: str, env: dict | None = None, timeout: float = 600, **options):
    """`artdate *argv` run to its end from the checkout, its output captured; `options` go to
    subprocess.run."""
    import subprocess

    return subprocess.run(
        artdate_command(*argv),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        **options,
    )


def images_shown_in_chromium(page: str, tmp_path) -> tuple[int, int, str]:
    """(images that decoded, images on the page, the DOM) of an HTML file loaded in a real
    headless Chromium: a script added to a copy counts them once the page has loaded."""
    import subprocess

    html = open(page, encoding="utf-8").read()
    probe = os.path.join(str(tmp_path), "probe.html")
    with open(probe, "w", encoding="utf-8") as f:
        f.write(
            html.replace(
                "</body>",
                "<script>document.title = 'loaded ' + "
                "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length + ' of ' + "
                "document.images.length</script></body>",
            )
        )
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"file://{probe}"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    found = re.search(r"<title>loaded (\d+) of (\d+)</title>", dom)
    assert found, dom[:300]
    return int(found.group(1)), int(found.group(2)), dom


def labels_of(out: str, manifest: dict) -> dict:
    """{id: the JSON record of its sample} of every shard a local pack wrote into `out`."""
    import tarfile

    labels = {}
    for shard in manifest["shards"]:
        with tarfile.open(os.path.join(out, shard["name"])) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    record = json.load(tar.extractfile(member))
                    labels[record["id"]] = record
    return labels


def alive_actors(class_name: str) -> list[int]:
    """The process ids of the live actors of `class_name` in this process's own Ray: the processes
    titled ray::<class_name> (ray::<class_name>.<method> while one runs; ray::<class_name>.__init__
    is an actor still being made, which the state API does not call alive) that descend from this
    process (the embedded Ray's raylet, started by this process, starts them), read from /proc.
    Another Ray up on the machine (the other xdist worker's, a command's own) does not descend from
    it; and the embedded Ray runs no dashboard, which Ray's state API would need."""
    processes = live_processes()
    parents = {process.pid: process.parent for process in processes}

    def descends_from_this_process(pid: int) -> bool:
        while pid in parents and pid > 1:
            pid = parents[pid]
            if pid == os.getpid():
                return True
        return False

    return sorted(
        process.pid
        for process in processes
        if process.argv
        and process.argv[0].split(".")[0] == f"ray::{class_name}"
        and not process.argv[0].endswith(".__init__")
        and descends_from_this_process(process.pid)
    )
