"""Year heads on frozen features (artdate/score/embeddings.py): k-fold cross-validation on real works.

Packs the 300-work sample and ../shared/public-art (160 px, as the demo packs), embeds every work
once with the ImageNet backbone (kept beside the shards), then for each head recipe and fold:
fits a linear head on 80% of the other folds' works, calibrates its 80% ranges on the remaining
20%, and measures the fold's own works. Every work is predicted once by a head that never saw
it. "both" trains on the two sets together and measures each set's works against its own median
baseline (the median of that set's own training works). Prints MAE, the baseline of always
predicting the training median, their ratio, the
ranges' coverage and width, and seconds per fold.

    python -m bench.quality.frozen [--folds 10] [--sizes 128 160] [--sets sample public-art both]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import torch

from artdate.core.config import PackConfig
from artdate.core.works import derive_seed
from artdate.model import ranges
from artdate.model.network import LabelEncoding
from artdate.pack.metadata import read_coarse_dates, training_span
from artdate.pack.run import run_pack
from artdate.score.embeddings import Embeddings, embed_store, fit_head
from bench.common import ROOT

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
SETS = {  # name -> (metadata CSV, image folder)
    "sample": (os.path.join(ROOT, "metadata", "sample", "artworks.csv"), os.path.join(SHARED, "artworks-sample")),
    "public-art": (os.path.join(SHARED, "public-art", "artworks.csv"), os.path.join(SHARED, "public-art")),
}
OUT = os.path.join(ROOT, "bench", "out", "frozen")
COARSE_DATES = os.path.join(SHARED, "public-art", "date-flags.csv")
# Head recipes: LabelEncoding and fit_head settings.
RECIPES = {
    "bins-sigma50": dict(loss="bins", label_sigma=50),
    "bins-sigma25": dict(loss="bins", label_sigma=25),
    "bins-sigma100": dict(loss="bins", label_sigma=100),
    "bins-sigma0": dict(loss="bins", label_sigma=0),
    "bins-sigma50-wd0.1": dict(loss="bins", label_sigma=50, weight_decay=0.1),
    "bins-sigma50-wd1": dict(loss="bins", label_sigma=50, weight_decay=1.0),
    "bins-sigma50-lr3e-3": dict(loss="bins", label_sigma=50, lr=3e-3),
    "bins-sigma50-100ep": dict(loss="bins", label_sigma=50, epochs=100),
    "l1": dict(loss="l1"),
    # The works date-flags.csv marks as coarse train as the span their year stands for
    # (metadata.coarse_span, as `pack --coarse-dates` stores them); measured on the year as given.
    "bins-sigma50-coarse": dict(loss="bins", label_sigma=50, coarse=True),
    "bins-sigma0-coarse": dict(loss="bins", label_sigma=0, coarse=True),
    # No head: the median year of the 20 training works nearest in cosine similarity (the
    # comparanda's own estimate), the 10th-90th percentile of their years as the raw range.
    "knn-20": dict(knn=20),
    "knn-50": dict(knn=50),
}


def packed(name: str) -> str:
    metadata, images = SETS[name]
    out = os.path.join(OUT, f"{name}-160")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        run_pack(PackConfig(metadata=(metadata,), images=images, out=out, size=160, val_fraction=0.15), progress=False)
    return out


def fold_of(embedded: Embeddings, folds: int, seed: int) -> np.ndarray:
    return np.array([derive_seed(seed, "fold", key) % folds for key in embedded.keys])


def concatenate(parts: list[Embeddings]) -> Embeddings:
    names = ("keys", "ids", "museums", "splits", "year", "year_start", "year_end", "features")
    return Embeddings(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in names})


def knn_predict(train: Embeddings, features: np.ndarray, k: int) -> ranges.Predictions:
    unit = train.features / np.linalg.norm(train.features, axis=1, keepdims=True)
    queries = features / np.linalg.norm(features, axis=1, keepdims=True)
    nearest = np.argsort(-(queries @ unit.T), axis=1)[:, :k]
    years = train.year[nearest].astype(np.float32)
    low, median, high = (torch.from_numpy(np.quantile(years, q, axis=1).astype(np.float32)) for q in (0.1, 0.5, 0.9))
    return ranges.Predictions(median, low, high)


def with_coarse_spans(embedded: Embeddings, marked: frozenset[tuple[str, str]]) -> Embeddings:
    start, end = embedded.year_start.copy(), embedded.year_end.copy()
    for i, (museum, work_id) in enumerate(zip(embedded.museums, embedded.ids)):
        start[i], end[i] = training_span(marked, museum, work_id, int(embedded.year[i]), int(start[i]), int(end[i]))
    return dataclasses.replace(embedded, year_start=start, year_end=end)


def cross_validate(train_sets: dict[str, Embeddings], measured: str, recipe: dict, folds: int, seed: int) -> dict:
    """Each work of `measured` predicted by a head trained on the other folds of every set."""
    fit = {k: recipe[k] for k in ("epochs", "lr", "weight_decay") if k in recipe}
    encoding_fields = {k: v for k, v in recipe.items() if k not in fit and k not in ("knn", "coarse")}
    errors, baseline_errors, inside, widths, seconds = [], [], [], [], []
    fold_ids = {name: fold_of(embedded, folds, seed) for name, embedded in train_sets.items()}
    coarse = read_coarse_dates(COARSE_DATES) if recipe.get("coarse") else None  # once, not per fold
    for fold in range(folds):
        started = time.process_time()
        rest = [e.subset(fold_ids[name] != fold) for name, e in train_sets.items()]
        rest = concatenate(rest) if len(rest) > 1 else rest[0]
        calibrating = np.array([derive_seed(seed, "calibration", key) % 5 == 0 for key in rest.keys])
        train, calibration = rest.subset(~calibrating), rest.subset(calibrating)
        if coarse is not None:
            train = with_coarse_spans(train, coarse)
        test = train_sets[measured].subset(fold_ids[measured] == fold)
        if "knn" in recipe:

            def predict(features, train=train):
                return knn_predict(train, features, recipe["knn"])
        else:
            years = train.year.astype(np.float32)
            encoding = LabelEncoding(
                mean=float(years.mean()), std=float(years.std()) or 1.0, year_min=1200, year_max=1930, **encoding_fields
            )
            predict = fit_head(train, encoding, seed=seed, **fit).predict
        cal = predict(calibration.features)
        calibrated = ranges.calibrate(torch.from_numpy(calibration.year.astype(np.float32)), cal.low, cal.high, 0.8)
        predicted = ranges.apply_calibration(predict(test.features), calibrated, 1200, 1930)
        truth = torch.from_numpy(test.year.astype(np.float32))
        errors += (predicted.year - truth).abs().tolist()
        own = train_sets[measured].subset(fold_ids[measured] != fold)  # the measured set's own training works
        baseline_errors += np.abs(test.year - np.median(own.year)).tolist()
        inside += ((predicted.low <= truth) & (truth <= predicted.high)).tolist()
        widths += (predicted.high - predicted.low).tolist()
        seconds.append(time.process_time() - started)
    mae, baseline = float(np.mean(errors)), float(np.mean(baseline_errors))
    return {
        "n": len(errors),
        "mae": mae,
        "baseline": baseline,
        "ratio": mae / baseline,
        "coverage": float(np.mean(inside)),
        "width": float(np.mean(widths)),
        "within_50": float(np.mean(np.array(errors) <= 50)),
        "seconds": float(np.mean(seconds)),
    }


def in_window(embedded: Embeddings) -> Embeddings:
    return embedded.subset((embedded.year >= 1200) & (embedded.year <= 1930))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 160])
    parser.add_argument("--sets", nargs="+", default=["sample", "public-art", "both"])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(
        "| set | measured on | px | head | n | MAE | median baseline | ratio | within 50 y | 80% coverage | width "
        "| s/fold |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        started = time.time()
        needed = SETS if "both" in args.sets else args.sets
        embedded = {name: in_window(embed_store(packed(name), "efficientnet_lite0", size)) for name in needed}
        print(f"<!-- embeddings at {size} px ready in {time.time() - started:.0f} s -->", flush=True)
        for chosen in args.sets:
            train_sets = embedded if chosen == "both" else {chosen: embedded[chosen]}
            for measured in train_sets:
                for name in args.recipes:
                    r = cross_validate(train_sets, measured, RECIPES[name], args.folds, args.seed)
                    print(
                        f"| {chosen} | {measured} | {size} | {name} | {r['n']} | {r['mae']:.1f} "
                        f"| {r['baseline']:.1f} | "
                        f"**{r['ratio']:.2f}x** | {r['within_50']:.0%} | {r['coverage']:.0%} | {r['width']:.0f} | "
                        f"{r['seconds']:.1f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
