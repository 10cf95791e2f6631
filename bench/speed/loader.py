"""The input stream alone, no model: img/s of artdate's loader for training and for scoring,
against the number of loader processes, in steady state.

The sample is packed --copies times at each of --pack-sizes, in a local folder and (--s3) in
SeaweedFS on loopback. For each store, each transform (training: random resized crop + flip;
scoring: resize + centre crop; both to --image-size; jpeg: no decoding, the encoded JPEGs passed
on as --decode-on device has them) and each number of loader processes, one
pass over every shard, as a training epoch or a scoring actor reads them:
- start-up: seconds to the first batch (the processes start, import, open their first shard),
  reported apart, and its share of the pass (the pass should be long enough for under 5%);
- steady img/s after the first batch, and per process;
- scaling: the steady rate at n processes over n times the rate of one (1.00: linear);
- the main process's CPU milliseconds per 1,000 images after the first batch: receiving each
  batch from a process, rebuilding it, pinning it (on CUDA machines). That is the serial part: a
  main process at a full core feeds no more processes. With 0 processes (the scoring actors'
  default, a thread reading ahead) everything happens in the main process.

    python -m bench.speed.loader [--copies 20] [--workers 0 1 2 4 8] [--pack-sizes 384 256] [--s3]
"""

import argparse
import os
import tempfile
import time

from artdate.core.config import PackConfig
from artdate.data import partition, pipeline, shards
from artdate.pack.run import run_pack
from bench.common import sample_copies


def one_pass(slices: list, transform, batch: int, workers: int) -> dict:
    """One pass over `slices`: start-up apart, then the steady rate and the main process's CPU."""
    started = time.perf_counter()
    loader = pipeline.make_loader(slices, transform, batch, loader_workers=workers)
    batches = iter(pipeline.prefetch(loader) if workers == 0 else loader)
    next(batches)
    first, cpu_first = time.perf_counter(), time.process_time()
    images = sum(len(batch.key) for batch in batches)
    ended, cpu_ended = time.perf_counter(), time.process_time()
    return {
        "startup_s": first - started,
        "startup_share": (first - started) / (ended - started),
        "img_s": images / (ended - first),
        "main_cpu_ms_per_1k": (cpu_ended - cpu_first) / max(images, 1) * 1e6,
        "images": images,
    }


def pack(metadata: str, out: str, size: int) -> list:
    settings = dict(samples_per_shard=250, val_fraction=0.0, year_min=-1000, year_max=2100, size=size)
    run_pack(PackConfig(metadata=(metadata,), out=out, **settings), progress=False)
    return partition.store_slices(out, shards.read_manifest(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20, help="the sample's 300 images this many times over")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader processes")
    parser.add_argument("--pack-sizes", type=int, nargs="+", default=[384, 256])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--s3", action="store_true", help="also read the stores from SeaweedFS on loopback")
    parser.add_argument("--modes", nargs="+", default=["train", "score", "jpeg"])
    args = parser.parse_args()
    transforms = {
        "train": pipeline.train_transform(args.image_size),
        "score": pipeline.eval_transform(args.image_size),
        "jpeg": None,  # --decode-on device: the loader passes the encoded JPEGs on, the GPU decodes
    }
    print(
        f"{300 * args.copies} images a pass, batch {args.batch}, crops of {args.image_size} px, "
        f"{os.cpu_count()} cores\n"
    )
    print(
        "| store | pack px | mode | processes | start-up s | start-up share | img/s | img/s per process "
        "| scaling | main process CPU ms / 1k img |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        metadata = sample_copies(directory, args.copies)
        stores = [
            ("local", size, pack(metadata, os.path.join(directory, f"p{size}"), size)) for size in args.pack_sizes
        ]
        s3 = None
        if args.s3:
            from tests.support.servers import SeaweedS3

            s3 = SeaweedS3().start()
            os.environ.update(s3.environment())
            bucket = s3.make_bucket("loader")
            stores += [("S3", size, pack(metadata, f"s3://{bucket}/p{size}", size)) for size in args.pack_sizes]
        try:
            for name, size, slices in stores:
                for mode in args.modes:
                    one = None
                    for workers in args.workers:
                        r = one_pass(slices, transforms[mode], args.batch, workers)
                        per = r["img_s"] / max(workers, 1)
                        one = one if one is not None or workers != 1 else r["img_s"]
                        scaling = f"{r['img_s'] / (workers * one):.2f}" if one and workers >= 1 else "-"
                        print(
                            f"| {name} | {size} | {mode} | {workers} | {r['startup_s']:.1f} "
                            f"| {r['startup_share']:.0%} "
                            f"| {r['img_s']:.0f} | {per:.0f} | {scaling} | {r['main_cpu_ms_per_1k']:.0f} |",
                            flush=True,
                        )
        finally:
            if s3 is not None:
                s3.stop()


if __name__ == "__main__":
    main()
