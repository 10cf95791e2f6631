"""Training and scoring img/s from real shards, JPEGs decoded by the loader's CPU processes or on
the device (nvJPEG), next to the model alone on tensors already there: the input gap as one ratio.

The sample's 300 images are packed at 384 px (`--copies` times), then one pass of each:
- model only: uint8 batches already on the device, through model_inputs and the model (the ceiling);
- shards, CPU decode: artdate's loader (`--loader-workers` processes) decodes and crops;
- shards, device decode: the loader passes encoded JPEGs; decode_on_device decodes and crops.
Training uses artdate's own train_one_epoch (bf16 autocast on CUDA); scoring its evaluate.

    python bench/gpu_input.py                                   # on a GPU (bench/gpu.sh runs it)
    python bench/gpu_input.py --device cpu --backbone resnet18 --image-size 64 --copies 1 --batch 32   # smoke test
"""

import argparse
import csv
import itertools
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from artdate import data, shards  # noqa: E402
from artdate.config import PackConfig, TrainConfig  # noqa: E402
from artdate.model import LabelEncoding, ModelSpec, build_model  # noqa: E402
from artdate.pack import run_pack  # noqa: E402
from artdate.train import evaluate, make_optimizer, make_scheduler, train_one_epoch  # noqa: E402

SAMPLE = os.path.join(os.path.dirname(ROOT), "shared", "artworks-sample")  # the sample's images stay in ../shared


def pack_copies(directory: str, copies: int) -> str:
    with open(os.path.join(ROOT, "metadata", "sample", "artworks.csv")) as f:
        rows = list(csv.DictReader(f))
    metadata = os.path.join(directory, "works.csv")
    with open(metadata, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["museum", "id", "year", "file"])
        for copy in range(copies):
            writer.writerows(
                [f"{r['museum']}{copy}", r["id"], r["year"], os.path.join(SAMPLE, r["file"])] for r in rows
            )
    out = os.path.join(directory, "shards")
    run_pack(
        PackConfig(
            metadata=(metadata,), out=out, samples_per_shard=250, val_fraction=0.0, year_min=-1000, year_max=2100
        ),
        progress=False,
    )
    return out


def timed(function) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    images = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbone", default="resnet152")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--loader-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = parser.parse_args()
    device = torch.device(args.device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    torch.backends.cudnn.benchmark = True
    spec = ModelSpec(args.backbone, args.image_size, LabelEncoding("l1", mean=1700.0, std=150.0))
    model = build_model(args.backbone, 1, weights="none").to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    cfg = TrainConfig(shards="", storage="", warmup_epochs=0)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, 10_000)
    train_tf, eval_tf = data.train_transform(args.image_size), data.eval_transform(args.image_size)

    with tempfile.TemporaryDirectory() as directory:
        store_url = pack_copies(directory, args.copies)
        slices = data.store_slices(store_url, shards.read_manifest(store_url))
        total = sum(s.samples for s in slices)
        steps = total // args.batch
        years = torch.randint(1300, 1900, (args.batch,))
        images = torch.randint(0, 256, (args.batch, 3, args.image_size, args.image_size), dtype=torch.uint8)
        synthetic = data.Batch(images.to(device), years, years, years, key=[], shard=[], id=[], museum=[])

        def loader(transform):
            return data.make_loader(slices, transform, args.batch, loader_workers=args.loader_workers, drop_last=True)

        def train(batches, device_transform=None):
            stats = train_one_epoch(
                model,
                spec,
                optimizer,
                scheduler,
                batches,
                device,
                0,
                autocast_dtype=autocast,
                device_transform=device_transform,
            )
            return stats["images"]

        def score(batches, device_transform=None):
            return len(evaluate(model, spec, batches, device, device_transform)[1])

        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        print(
            f"{name}, {args.backbone} at {args.image_size} px, batch {args.batch}, {total} images of 384 px, "
            f"{os.cpu_count()} cores"
        )
        print(f"{'mode':<7}{'input':<46}{'img/s':>9}{'vs model only':>15}", flush=True)

        def row(mode: str, label: str, rate: float, ceiling: float) -> None:
            print(f"{mode:<7}{label:<46}{rate:>9.0f}{rate / ceiling:>15.2f}", flush=True)  # as measured

        for mode, run in (("train", train), ("score", score)):
            run([synthetic] * 3)  # warm-up: cudnn autotuning, allocator
            transform = train_tf if mode == "train" else eval_tf
            ceiling = timed(lambda run=run: run([synthetic] * steps))
            row(mode, "model only (tensors on the device)", ceiling, ceiling)
            cpu = timed(lambda run=run, transform=transform: run(itertools.islice(loader(transform), steps)))
            row(mode, f"shards, CPU decode ({args.loader_workers} loader processes)", cpu, ceiling)
            try:
                on_device = timed(
                    lambda run=run, transform=transform: run(itertools.islice(loader(None), steps), transform)
                )
                row(mode, "shards, device decode", on_device, ceiling)
            except FloatingPointError as problem:
                print(f"{mode:<7}{'shards, device decode':<46} {problem}", flush=True)


if __name__ == "__main__":
    main()
