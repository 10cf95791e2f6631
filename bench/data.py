"""Training input pipeline speed: shards (local, S3) vs a torchvision-style Dataset of JPEG files.

Same transform (random resized crop 224 + flip + normalise), same DataLoader workers, same run.
The sample is packed at the default 384 px; the baseline reads the original 512 px files.

    python bench/data.py [--copies 3] [--loader-workers 2]
"""

import argparse
import csv
import os
import sys
import tempfile
import time

import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from artdate import data, shards  # noqa: E402
from artdate.config import PackConfig  # noqa: E402
from artdate.pack import run_pack  # noqa: E402
from artdate.model import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

SAMPLE = os.path.join(ROOT, "metadata", "sample")


class JpegFolder(torch.utils.data.Dataset):
    """The usual way: a list of files, PIL open + convert, the transform."""

    def __init__(self, files, years, transform):
        self.files, self.years, self.transform = files, years, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        return self.transform(Image.open(self.files[index]).convert("RGB")), self.years[index]


def rate(loader) -> float:
    images, started = 0, time.perf_counter()
    for batch in loader:
        images += len(batch["image"] if isinstance(batch, dict) else batch[0])
    return images / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    transform = data.train_transform(224, IMAGENET_MEAN, IMAGENET_STD)
    with open(os.path.join(SAMPLE, "artworks.csv")) as f:
        rows = list(csv.DictReader(f))
    files = [os.path.join(SAMPLE, r["file"]) for r in rows] * args.copies
    years = [int(r["year"]) for r in rows] * args.copies
    workers = args.loader_workers
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        metadata = os.path.join(directory, "works.csv")
        with open(metadata, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["museum", "id", "year", "file"])
            for copy in range(args.copies):
                writer.writerows([f"{r['museum']}{copy}", r["id"], r["year"], os.path.join(SAMPLE, r["file"])] for r in rows)
        local = os.path.join(directory, "shards")
        pack = dict(metadata=(metadata,), samples_per_shard=50, val_fraction=0.0, year_min=-1000, year_max=2100)
        run_pack(PackConfig(out=local, **pack), progress=False)

        from servers import SeaweedS3

        s3 = SeaweedS3().start()
        os.environ.update(s3.environment())
        try:
            s3.make_bucket("bench")
            run_pack(PackConfig(out="s3://bench/shards", **pack), progress=False)
            folder = torch.utils.data.DataLoader(JpegFolder(files, years, transform), batch_size=args.batch_size,
                                                 num_workers=workers, shuffle=True)
            for name, make in [
                ("JPEG files, torchvision Dataset", lambda: folder),
                ("shards, local", lambda: data.make_loader(
                    data.store_slices(local, shards.read_manifest(local)), transform, 224, args.batch_size,
                    loader_workers=workers, shuffle_buffer=200)),
                ("shards, S3 (SeaweedFS)", lambda: data.make_loader(
                    data.store_slices("s3://bench/shards", shards.read_manifest("s3://bench/shards")), transform, 224,
                    args.batch_size, loader_workers=workers, shuffle_buffer=200)),
            ]:
                rate(make())  # warm-up pass: page cache, worker start-up
                results[name] = max(rate(make()) for _ in range(2))
        finally:
            s3.stop()
    baseline = results["JPEG files, torchvision Dataset"]
    print(f"{len(files)} images, 224 px train transform, {workers} loader workers, batch {args.batch_size}")
    print(f"{'pipeline':<34}{'img/s':>8}{'img/s/core':>12}{'vs files':>10}")
    for name, value in results.items():
        print(f"{name:<34}{value:>8.1f}{value / workers:>12.1f}{value / baseline:>10.2f}")


if __name__ == "__main__":
    main()
