"""Packing speed: images/s per core and peak memory, against a naive loop in the same run.

The baseline is what a script would do by hand: one process, PIL open -> RGB -> resize -> JPEG,
no draft decoding. `artdate pack` runs with 1 and with all cores. The sample is repeated
--copies times (as different museums) so the run is long enough to measure.

    python -m bench.speed.pack_throughput [--copies 16] [--size 384]
"""

import argparse
import csv
import io
import os
import resource
import tempfile

from PIL import Image

from artdate.core.config import PackConfig
from artdate.pack.run import run_pack
from bench.common import per_second, sample_copies


def repeated_metadata(directory: str, copies: int) -> tuple[str, list[str]]:
    """The sample `copies` times over (common.sample_copies) and its image files, in its order."""
    metadata = sample_copies(directory, copies)
    with open(metadata) as f:
        return metadata, [row["file"] for row in csv.DictReader(f)]


def naive(files: list[str], size: int) -> None:
    for path in files:
        image = Image.open(path).convert("RGB")
        scale = size / min(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        image.save(io.BytesIO(), "JPEG", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--size", type=int, default=384)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as directory:
        metadata, files = repeated_metadata(directory, args.copies)
        naive(files[:20], args.size)  # warm up: imports and file cache
        run_pack(
            PackConfig(
                metadata=(metadata,), out=os.path.join(directory, "warm"), jobs=1, year_min=-1000, year_max=2100
            ),
            progress=False,
        )
        baseline = per_second(lambda: naive(files, args.size) or len(files))
        print(f"{len(files)} images, shorter side {args.size}, {cores} cores")
        print(f"{'run':<28}{'img/s':>8}{'img/s/core':>12}{'vs naive':>10}")
        print(f"{'naive PIL loop, 1 process':<28}{baseline:>8.1f}{baseline:>12.1f}{1.0:>10.2f}")
        for jobs in sorted({1, cores}):
            out = os.path.join(directory, f"store-{jobs}")
            settings = PackConfig(
                metadata=(metadata,),
                out=out,
                size=args.size,
                year_min=-1000,
                year_max=2100,
                samples_per_shard=500,
                jobs=jobs,
            )
            rate = per_second(lambda settings=settings: run_pack(settings, progress=False)["packed"])
            print(f"{f'artdate pack --jobs {jobs}':<28}{rate:>8.1f}{rate / jobs:>12.1f}{rate / baseline:>10.2f}")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: main process {own:.0f} MB, largest encoder process {children:.0f} MB")


if __name__ == "__main__":
    main()
