"""Scale: pack, train briefly and score synthetic corpora of growing size; time per work and the
driver's peak memory per stage, and a check that every work comes out exactly once.

Each stage runs in a fresh Python process (this script with --stage), so its peak RSS is that
stage's driver alone: the pack process (encoders apart), the score driver (actors apart).
Training runs once, on the smallest corpus, for a checkpoint that scores them all.

    python -m bench.scale.growing_corpus --sizes 2000 20000 100000 [--out bench/out/scale]
"""

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time

from bench.common import ROOT, tiny_training


def run_stage(stage: str, settings: dict) -> dict:
    """Run one stage here; its figures (seconds, peak RSS in MB, the stage's own summary)."""
    from artdate.core import config

    started = time.perf_counter()
    if stage == "pack":
        from artdate.pack.run import run_pack

        manifest = run_pack(config.PackConfig(**{**settings, "metadata": tuple(settings["metadata"])}), progress=False)
        summary = {"packed": manifest["packed"], "rejected": manifest["rejected"], "shards": len(manifest["shards"])}
    elif stage == "train":
        from artdate.train.run import run_training

        summary = {"best": run_training(config.TrainConfig(**settings))}
    else:
        from artdate.score.run import run_scoring

        summary = run_scoring(config.ScoreConfig(**settings), progress=False)
    return {
        "seconds": time.perf_counter() - started,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **summary,
    }


def in_fresh_process(stage: str, settings: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale.growing_corpus", "--stage", stage, "--settings", json.dumps(settings)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ids_exactly_once(results: str, works_csv: str) -> bool:
    """Every work of the corpus appears in results.csv exactly once (streamed; sets of ints)."""
    with open(works_csv) as f:
        expected = {int(row["id"]) for row in csv.DictReader(f)}
    seen, repeated = set(), 0
    with open(results) as f:
        for row in csv.DictReader(f):
            work = int(row["id"])
            repeated += work in seen
            seen.add(work)
    return repeated == 0 and seen == expected


def validation_mae(results: str) -> tuple[float, float]:
    """(MAE of the validation rows, MAE of always predicting their median): did the model learn?"""
    import statistics

    with open(results) as f:
        rows = [(int(r["year"]), float(r["pred"])) for r in csv.DictReader(f) if r["split"] == "val"]
    median = statistics.median(year for year, _ in rows)
    return (
        statistics.fmean(abs(pred - year) for year, pred in rows),
        statistics.fmean(abs(median - year) for year, _ in rows),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "scale"))
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="of the one training, on the smallest corpus")
    parser.add_argument(
        "--score-up-to",
        type=int,
        default=100_000,
        help="larger corpora are packed only (scoring a million works takes ~45 min on 2 cores)",
    )
    parser.add_argument(
        "--samples-per-shard",
        type=int,
        default=250,
        help="small enough that the smallest corpus has several shards per actor",
    )
    parser.add_argument(
        "--loader-workers", type=int, default=1, help="per training worker (its figures in RESULTS.md: 1)"
    )
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, json.loads(args.settings))))
        return

    from artdate.pack.synthetic import generate

    rows, checkpoint = [], None
    for works in sorted(args.sizes):
        corpus = generate(works, os.path.join(args.out, f"synth-{works}"))
        store_url = os.path.join(args.out, f"shards-{works}")
        shutil.rmtree(store_url, ignore_errors=True)  # a kept store would make pack a no-op resume
        pack = in_fresh_process(
            "pack", dict(metadata=[corpus], out=store_url, size=64, samples_per_shard=args.samples_per_shard, jobs=2)
        )
        if checkpoint is None:
            train = in_fresh_process(
                "train",
                tiny_training(
                    store_url,
                    os.path.join(args.out, f"run-{works}-{time.time_ns()}"),
                    epochs=args.epochs,
                    batch_size=64,
                    workers=1,
                    cpus_per_worker=2,
                    gpus_per_worker=0,
                    lr=3e-3,
                    loader_workers=args.loader_workers,
                ),
            )
            checkpoint = train["best"]
            print(
                f"train {works} works x {args.epochs} epochs: {train['seconds']:.0f} s, "
                f"driver {train['rss_mb']:.0f} MB",
                flush=True,
            )
        row = {
            "works": works,
            "pack_s": pack["seconds"],
            "pack_rss": pack["rss_mb"],
            "packed_all": pack["rejected"] == 0,
        }
        if works <= args.score_up_to:
            results = os.path.join(args.out, f"results-{works}.csv")
            if os.path.exists(results):
                os.remove(results)
            score = in_fresh_process(
                "score",
                dict(
                    shards=store_url,
                    checkpoint=checkpoint,
                    out=results,
                    actors=args.actors,
                    cpus_per_actor=1,
                    batch_size=128,
                    gpus_per_actor=0,
                ),
            )
            row.update(
                score_s=score["seconds"],
                score_steady=score["images_per_second_after_startup"],
                score_rss=score["rss_mb"],
                exactly_once=ids_exactly_once(results, corpus) and row["packed_all"],
                val_mae=validation_mae(results),
            )
        rows.append(row)
        print(json.dumps(row), flush=True)

    # Per-work ratios are taken against the first corpus of 10,000 works or more: below that, a
    # handful of shards per actor makes the steady-state rate (counted from the first finished
    # shard, while the other actors are already half-way through theirs) read high.
    base = next((row for row in rows if row["works"] >= 10_000 and "score_s" in row), rows[0])
    print(
        "\n| works | pack ms/work | pack works/s | pack RSS MB | score ms/work (end to end) | score steady works/s "
        "| score RSS MB | per-work time vs the 10k corpus (pack, score steady) | every id once "
        "| val MAE (median baseline) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        pack_ratio = (row["pack_s"] / row["works"]) / (base["pack_s"] / base["works"])
        line = (
            f"| {row['works']:,} | {1000 * row['pack_s'] / row['works']:.2f} | {row['works'] / row['pack_s']:.0f} "
            f"| {row['pack_rss']:.0f} "
        )
        if "score_s" in row:
            line += (
                f"| {1000 * row['score_s'] / row['works']:.2f} | {row['score_steady']:.0f} | {row['score_rss']:.0f} "
                f"| {pack_ratio:.2f}, {base['score_steady'] / row['score_steady']:.2f} | {row['exactly_once']} "
                f"| {row['val_mae'][0]:.0f} y ({row['val_mae'][1]:.0f} y) |"
            )
        else:
            line += f"| not scored | | | {pack_ratio:.2f}, - | packed all: {row['packed_all']} | |"
        print(line)


if __name__ == "__main__":
    main()
