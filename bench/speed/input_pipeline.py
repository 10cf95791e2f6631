"""Training input pipeline speed: shards (local, S3) vs a torchvision-style Dataset of JPEG files,
read from local (page-cached) files and as one S3 object per image (what shards exist to beat).

Same augmentation (random resized crop 224 + flip), normalised floats at the end, same DataLoader
workers, same run. The baselines use the classic PIL + ToTensor + Normalize transform in the
workers; artdate decodes with TorchCodec to uint8, crops with transforms.v2 and normalises in
the consuming process (on the GPU in training; here on the CPU, counted in the rate). The sample
is packed at the default size (256 px since 2026-12-07, 384 before); the baselines read the original
files (up to 512 px).

    python -m bench.speed.input_pipeline [--copies 3] [--loader-workers 2]
"""

import argparse
import csv
import io
import os
import tempfile

import torch
from PIL import Image

from artdate.core import store
from artdate.core.config import PackConfig
from artdate.data import partition, pipeline, shards
from artdate.model.network import IMAGENET_MEAN, IMAGENET_STD, LabelEncoding, ModelSpec, model_inputs
from artdate.pack.run import run_pack
from bench.common import per_second, sample_copies


class JpegFolder(torch.utils.data.Dataset):
    """The usual way: a list of files (paths, or s3:// URLs read one object each), PIL open +
    convert, the transform."""

    def __init__(self, files, years, transform):
        self.files, self.years, self.transform = files, years, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        raw = io.BytesIO(store.read_bytes(self.files[index]))
        return self.transform(Image.open(raw).convert("RGB")), self.years[index]


def classic_transform():
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(224, scale=(0.35, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


SPEC = ModelSpec("resnet152", 224, LabelEncoding())


def rate(loader, normalise: bool) -> float:
    def count() -> int:
        images = 0
        for batch in loader:
            if isinstance(batch, pipeline.Batch):  # artdate's uint8 batches
                if normalise:  # as the training step does, here on the CPU
                    model_inputs(batch.image, SPEC, torch.device("cpu"))
                images += len(batch.image)
            else:
                images += len(batch[0])
        return images

    return per_second(count)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--passes", type=int, default=2, help="timed passes of each pipeline (the best counts)")
    args = parser.parse_args()
    transform = pipeline.train_transform(224)
    workers = args.loader_workers
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        metadata = sample_copies(directory, args.copies)
        with open(metadata) as f:
            rows = list(csv.DictReader(f))
        files, years = [r["file"] for r in rows], [int(r["year"]) for r in rows]
        local = os.path.join(directory, "shards")
        pack = dict(metadata=(metadata,), samples_per_shard=50, val_fraction=0.0, year_min=-1000, year_max=2100)
        run_pack(PackConfig(out=local, **pack), progress=False)

        from tests.support.servers import SeaweedS3

        s3 = SeaweedS3().start()
        os.environ.update(s3.environment())
        try:
            s3.make_bucket("bench")
            run_pack(PackConfig(out="s3://bench/shards", **pack), progress=False)
            objects = []
            for index, path in enumerate(files):
                objects.append(f"s3://bench/images/{index}.jpg")
                store.write_bytes(objects[-1], store.read_bytes(path))
            folder = torch.utils.data.DataLoader(
                JpegFolder(files, years, classic_transform()),
                batch_size=args.batch_size,
                num_workers=workers,
                shuffle=True,
            )
            per_object = torch.utils.data.DataLoader(
                JpegFolder(objects, years, classic_transform()),
                batch_size=args.batch_size,
                num_workers=workers,
                shuffle=True,
            )
            local_shards = lambda: pipeline.make_loader(  # noqa: E731
                partition.store_slices(local, shards.read_manifest(local)),
                transform,
                args.batch_size,
                loader_workers=workers,
                shuffle_buffer=200,
            )
            s3_shards = lambda: pipeline.make_loader(  # noqa: E731
                partition.store_slices("s3://bench/shards", shards.read_manifest("s3://bench/shards")),
                transform,
                args.batch_size,
                loader_workers=workers,
                shuffle_buffer=200,
            )
            for name, make, normalise in [
                ("JPEG files, torchvision Dataset", lambda: folder, True),
                ("JPEG objects in S3, one GET each", lambda: per_object, True),
                ("shards, local", local_shards, True),
                ("shards, S3 (SeaweedFS)", s3_shards, True),
                ("shards, local, uint8 (GPU normalises)", local_shards, False),
                ("shards, S3, uint8 (GPU normalises)", s3_shards, False),
            ]:
                rate(make(), normalise)  # warm-up pass: page cache, worker start-up
                results[name] = max(rate(make(), normalise) for _ in range(args.passes))
        finally:
            s3.stop()
    baseline, s3_baseline = results["JPEG files, torchvision Dataset"], results["JPEG objects in S3, one GET each"]
    print(f"{len(files)} images, 224 px train transform, {workers} loader workers, batch {args.batch_size}")
    print(f"{'pipeline':<40}{'img/s':>8}{'img/s/core':>12}{'vs files':>10}{'vs S3 objects':>15}")
    for name, value in results.items():
        print(f"{name:<40}{value:>8.1f}{value / workers:>12.1f}{value / baseline:>10.2f}{value / s3_baseline:>15.2f}")


if __name__ == "__main__":
    main()
