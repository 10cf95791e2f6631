"""Training and scoring img/s from real shards in steady state, JPEGs decoded by the loader's CPU
processes or on the device (nvJPEG), next to the model alone on tensors already there: the input
gap as one ratio.

The sample's 300 images are packed at --pack-size px (`--copies` times), then, for training and
for scoring, each input for --seconds after a warm-up (start-up, cudnn autotuning and, with
--compile, the compiling are left out and reported apart):
- model only: uint8 batches already on the device, through model_inputs and the model (the ceiling);
- shards, CPU decode: artdate's loader decodes and crops, read as train and score read it, at
  each of the loader counts asked for (`--train-loaders`: train's `--loader-workers` per GPU, 2,
  and twice that; `--score-loaders`: score's default, 0, one thread of the actor a batch ahead,
  and the 5 per GPU docs/cluster.md plans), its passes over the shards wrapping round as an
  epoch's do;
- shards, device decode: the loader passes encoded JPEGs; the GPU decodes and crops them one batch
  ahead on a stream of its own (device_decode.decoded_batches), from the first loader count.
Training uses artdate's own train_one_epoch (bf16 autocast on CUDA); scoring its evaluate.

    python -m bench.speed.gpu_input [--compile] [--seconds 60]           # on a GPU (bench/gpu.sh runs it)
    python -m bench.speed.gpu_input --device cpu --backbone resnet18 --image-size 32 --copies 1 --batch 16 --seconds 2
"""

import argparse
import itertools
import os
import tempfile
import time

import torch

from artdate.core.config import PackConfig, TrainConfig
from artdate.data import partition, pipeline, shards
from artdate.model.network import LabelEncoding, ModelSpec, build_model, compiled, on_device
from artdate.pack.run import run_pack
from artdate.train.loop import evaluate, make_optimizer, make_scheduler, train_one_epoch
from bench.common import per_second, sample_copies, stopwatch


def pack_copies(directory: str, copies: int, size: int) -> str:
    """The sample packed `copies` times into `directory`/shards, unless a pack of it is there already
    (bench/gpu.sh's stages share one)."""
    out = os.path.join(directory, "shards")
    if os.path.exists(os.path.join(out, "manifest.json")):
        return out
    settings = dict(samples_per_shard=250, val_fraction=0.0, year_min=-1000, year_max=2100, size=size)
    run_pack(PackConfig(metadata=(sample_copies(directory, copies),), out=out, **settings), progress=False)
    return out


def for_seconds(batches, seconds: float):
    """The batches until `seconds` have passed (on the host: per_second drains the GPU after)."""
    end = time.perf_counter() + seconds
    for batch in batches:
        yield batch
        if time.perf_counter() > end:
            return


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbone", default="resnet152")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--pack-size", type=int, default=256)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--train-loaders", default="2,4", help="loader processes per training rank, each a row")
    parser.add_argument("--score-loaders", default="0,5", help="loader processes per scoring actor, each a row")
    parser.add_argument("--store", default="", help="a folder to pack into, or whose pack to reuse")
    parser.add_argument("--seconds", type=float, default=60.0, help="steady-state seconds of each row")
    parser.add_argument("--compile", action="store_true", help="the model through torch.compile (--compile)")
    parser.add_argument("--modes", default="train,score")
    parser.add_argument("--inputs", default="model,cpu,device", help="model (only), cpu and/or device decode")
    args = parser.parse_args()
    device = torch.device(args.device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    spec = ModelSpec(args.backbone, args.image_size, LabelEncoding("l1", mean=1700.0, std=150.0))
    model = on_device(build_model(args.backbone, 1, weights="none"), device)  # as train and score run it
    forward = compiled(model, args.compile)
    cfg = TrainConfig(shards="", storage="", warmup_epochs=0)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, 10**9)
    transforms = {"train": pipeline.train_transform(args.image_size), "score": pipeline.eval_transform(args.image_size)}

    with tempfile.TemporaryDirectory() as scratch:
        store_url = pack_copies(args.store or scratch, args.copies, args.pack_size)
        slices = partition.store_slices(store_url, shards.read_manifest(store_url))
        total = sum(s.samples for s in slices)
        years = torch.randint(1300, 1900, (args.batch,))
        images = torch.randint(0, 256, (args.batch, 3, args.image_size, args.image_size), dtype=torch.uint8)
        synthetic = pipeline.Batch(images.to(device), years, years, years, key=[], shard=[], id=[], museum=[])

        def stream(kind: str, mode: str, loaders: int):
            """Endless batches of one input, as the step reads them (None: no decoding on the device).
            Scoring reads its loader a batch ahead in a thread, as score's actors do (pipeline.prefetch)."""
            if kind == "model":
                return itertools.repeat(synthetic), None
            on_device = kind == "device"
            loader = pipeline.make_loader(
                slices,
                None if on_device else transforms[mode],
                args.batch,
                loader_workers=loaders,
                drop_last=mode == "train",
                persistent=True,
                pin_memory=device.type == "cuda",
            )
            batches = pipeline.take_steps(loader.__iter__, 10**12)
            return (batches if mode == "train" else pipeline.prefetch(batches)), transforms[mode] if on_device else None

        def run(mode: str, batches, device_transform) -> int:
            if mode == "train":
                stats = train_one_epoch(
                    forward, spec, optimizer, scheduler, batches, device, 0, autocast_dtype=autocast,
                    device_transform=device_transform,
                )  # fmt: skip
                return stats["images"]
            return len(evaluate(forward, spec, batches, device, device_transform)[1])

        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        print(
            f"{name}, {args.backbone} at {args.image_size} px{' compiled' if args.compile else ''}, batch "
            f"{args.batch}, {total} images of {args.pack_size} px, {args.seconds:g} s steady state a row, "
            f"{os.cpu_count()} cores"
        )
        print(f"{'mode':<7}{'input':<50}{'img/s':>9}{'vs model only':>15}{'warm-up s':>11}", flush=True)
        for mode in args.modes.split(","):
            ceiling = None
            loaders = [int(n) for n in (args.train_loaders if mode == "train" else args.score_loaders).split(",")]
            for kind, count in rows(args.inputs.split(","), loaders):
                label = ROW_LABELS[kind].format(count)
                batches, device_transform = stream(kind, mode, count)
                try:
                    with stopwatch() as warm_up:  # start-up, autotuning, compiling
                        run(mode, itertools.islice(batches, 3), device_transform)
                    timed = for_seconds(batches, args.seconds)
                    rate = per_second(lambda: run(mode, timed, device_transform))  # noqa: B023 (called at once)
                except FloatingPointError as problem:
                    print(f"{mode:<7}{label:<50} {problem}", flush=True)
                    continue
                ceiling = ceiling or rate
                print(f"{mode:<7}{label:<50}{rate:>9.0f}{rate / ceiling:>15.2f}{warm_up():>11.0f}", flush=True)


ROW_LABELS = {
    "model": "model only (tensors on the device)",
    "cpu": "shards, CPU decode, {} loader processes",
    "device": "shards, device decode (a batch ahead), {} loaders",
}


def rows(inputs: list[str], loaders: list[int]) -> list[tuple[str, int]]:
    """(input, loader processes) of each row: the model alone once, CPU decoding at each loader
    count, device decoding at the first."""
    chosen: list[tuple[str, int]] = []
    for kind in inputs:
        counts = loaders if kind == "cpu" else loaders[:1]
        chosen += [(kind, count) for count in counts]
    return chosen


if __name__ == "__main__":
    main()
