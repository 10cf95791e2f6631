"""Scoring throughput: a pool of 1 and 2 Ray actors vs a plain single-process loop (with and
without reading the next batch ahead in a thread, as the actors do), same run.

Same shards, same checkpoint (efficientnet_lite0, freshly saved, 128 px input), batch 64. The
shards hold the sample (300 images at 160 px, 25 a shard) or, with --works N, a synthetic corpus
of N works (bench/scale/synthetic_corpus.py, 64 px images, 250 a shard): the end-to-end figures then include
Ray's and the actors' start-up over a corpus long enough to matter.

    python -m bench.speed.scoring_actors [--works 12000]
"""

import argparse
import os
import tempfile
import time

import torch

from artdate.core.config import PackConfig, ScoreConfig
from artdate.data import partition, pipeline, shards
from artdate.model.checkpoints import load_checkpoint, save_checkpoint
from artdate.model.network import ModelSpec, build_model, predict_years
from artdate.model.ranges import RangeCalibration
from artdate.pack.run import run_pack
from artdate.pack.synthetic import generate
from artdate.score.run import run_scoring
from artdate.train.loop import label_encoding
from bench.common import pack_sample, per_second


def plain_loop(store_url, checkpoint, read_ahead: bool = False) -> float:
    """img/s of one process scoring shard after shard; `read_ahead` decodes the next batch in a
    thread while the model runs, as the scoring actors do (pipeline.prefetch)."""
    model, spec, _ = load_checkpoint(checkpoint)
    slices = partition.store_slices(store_url, shards.read_manifest(store_url))
    transform = pipeline.eval_transform(spec.image_size)

    def count() -> int:
        images = 0
        for piece in slices:
            loader = pipeline.make_loader([piece], transform, 64, loader_workers=0)
            for batch in pipeline.prefetch(loader) if read_ahead else loader:
                predict_years(model, spec, batch.image, torch.device("cpu"))
                images += len(batch.key)
        return images

    return per_second(count)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--works", type=int, default=0, help="a synthetic corpus of this many works instead of the sample"
    )
    parser.add_argument(
        "--one-actor", dest="two_actors", action="store_false", help="only the pool of one actor (a smoke run)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        store_url = os.path.join(directory, "shards")
        if args.works:
            works_csv = generate(args.works, os.path.join(directory, "synth"))
            manifest = run_pack(
                PackConfig(metadata=(works_csv,), out=store_url, size=64, samples_per_shard=250), progress=False
            )
        else:
            manifest = pack_sample(store_url, samples_per_shard=25, size=160)
        spec = ModelSpec("efficientnet_lite0", 128, label_encoding(manifest, "mse", 25))
        checkpoint = os.path.join(directory, "checkpoint_bench")
        os.makedirs(checkpoint)
        calibration = RangeCalibration(0.8, 50.0, 100)  # any: the benchmark times scoring, not its ranges
        save_checkpoint(checkpoint, spec, build_model(spec.backbone, 1, "imagenet"), {"val_mae": 0.0}, calibration)
        plain_loop(store_url, checkpoint)  # warm-up: page cache, lazy imports
        baseline = plain_loop(store_url, checkpoint)
        ahead = plain_loop(store_url, checkpoint, read_ahead=True)
        rows = [("plain loop, 1 process", baseline, baseline, 0.0), ("plain loop + read-ahead", ahead, ahead, 0.0)]
        cores = os.cpu_count() or 1
        # Ray sets OMP_NUM_THREADS to an actor's CPUs: one actor with every core, then actors of 1 CPU
        # each (the scaling figure: 2 one-CPU actors against 1).
        for actors, cpus in ((1, cores), (1, 1), (2, 1))[: 3 if args.two_actors else 1]:
            out = os.path.join(directory, f"results-{actors}-{cpus}.csv")
            settings = ScoreConfig(
                shards=store_url, checkpoint=checkpoint, out=out, actors=actors, cpus_per_actor=cpus, batch_size=64
            )
            started = time.perf_counter()
            summary = run_scoring(settings, progress=False)
            wall = time.perf_counter() - started
            rows.append(
                (
                    f"Ray actors x{actors} ({cpus} CPU)",
                    summary["images_per_second_after_startup"],
                    summary["rows"] / summary["seconds"],
                    wall,
                )
            )
    print(
        f"{manifest['packed']} images ({'synthetic' if args.works else 'the sample'}), efficientnet_lite0 at 128 px, "
        f"batch 64, CPU, {cores} cores"
    )
    print("steady: after the first shard came back (actor start-up and model load excluded)")
    print(f"{'run':<24}{'steady img/s':>13}{'vs plain':>10}{'end-to-end img/s':>18}{'wall s':>8}")
    for name, steady, whole, wall in rows:
        print(f"{name:<24}{steady:>13.1f}{steady / baseline:>10.2f}{whole:>18.1f}{wall:>8.1f}")
    if args.two_actors:
        print(
            f"2 one-CPU actors vs 1: {rows[4][1] / rows[3][1]:.2f}x steady, {rows[4][2] / rows[3][2]:.2f}x end to end"
        )


if __name__ == "__main__":
    main()
