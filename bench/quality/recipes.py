"""Which recipe dates best, and do its year ranges hold: k-fold cross-validation on real works.

Every in-window work of the bundled sample is predicted once, by a model trained without it. Each
fold trains on 80% of the other works, calibrates its ranges on the remaining 20%
(`--calibration-share`; as a run calibrates on its validation split), and is measured on the
fold's own works. The training is artdate's own (`train_one_epoch`, the optimizer and schedule,
the transforms, `predict_years`, ranges.calibrate), in one process without Ray, on images shrunk
and re-encoded as pack does. `--ranks 2` trains as the demo's two DDP workers do: each batch of 16
split in two halves with their own BatchNorm statistics (class Ranks).

    python -m bench.quality.recipes [--folds 5] [--ranks 2] [--recipes base,bins,...] [--json bench/out/recipes.json]
    python -m bench.quality.recipes --sets public-art --split fixed --ranks 2 --recipes bins-10ep-sigma50,...

`--sets sample public-art` trains on both and measures each set on its own works against the
median of its own training works. `--split fixed` trains one model per recipe and measures it on
the works `artdate demo` holds out (15%); the row's +-SE (the standard error of the MAE over
those works) says how far two rows may differ by chance (less for a paired comparison: the same
works).

Prints one row per recipe and way of reading its model (flip test-time augmentation; for `bins`,
the mean of the year distribution instead of its median; with `--neighbours`, the median year of
the k training works nearest in the model's embedding space, the comparanda's own estimate, and
its mean with the head's year; with `--ensemble N`, N models trained from other seeds read as one,
" xN", beside the first of them alone): MAE, median error,
share within 50 years, the median baseline's MAE and the ratio to it, the 80% ranges' coverage
and mean width on held-out works, and the CPU and wall seconds it took. `--device cuda` trains and
reads on a GPU (bf16 autocast, as artdate does there).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import resource
import sys
import time

import torch

from artdate.core.config import TrainConfig
from artdate.core.images import encode_image
from artdate.data import pipeline
from artdate.model import comparanda, ranges
from artdate.model.network import LabelEncoding, ModelSpec, build_model, predict_years
from artdate.pack.metadata import read_coarse_dates, read_metadata
from artdate.train.loop import fit
from bench.common import ROOT, SHARED

SETS = {  # name -> (metadata CSV, image folder, coarse-date flags or "")
    "sample": (os.path.join(ROOT, "metadata", "sample", "artworks.csv"), os.path.join(SHARED, "artworks-sample"), ""),
    "public-art": (
        os.path.join(SHARED, "public-art", "artworks.csv"),
        os.path.join(SHARED, "public-art"),
        os.path.join(SHARED, "public-art", "date-flags.csv"),
    ),
}
FIXED_VAL_FRACTION = 0.15  # --split fixed holds out the works `artdate demo` holds out
PACK_SIZE = 160  # as the demo packs
CPU = torch.device("cpu")

# Each recipe: TrainConfig fields that differ from the demo's before this benchmark
# (efficientnet_lite0, l1, 128 px, 6 epochs, lr 2e-3, batch 16).
DEMO = dict(backbone="efficientnet_lite0", loss="l1", image_size=128, epochs=6, lr=2e-3, batch_size=16)
RECIPES = {
    "tiny": {"epochs": 1, "image_size": 32},  # the smallest run, for the smoke test (tests/test_bench.py)
    "l1": {},
    "mse": {"loss": "mse"},
    "huber": {"loss": "huber"},
    "bins": {"loss": "bins"},
    "bins-50y": {"loss": "bins", "bin_width": 50},
    "bins-12ep": {"loss": "bins", "epochs": 12},
    "bins-lr4e-3": {"loss": "bins", "lr": 4e-3},
    "bins-backbone0.3": {"loss": "bins", "backbone_lr_scale": 0.3},
    "bins-sigma25": {"loss": "bins", "label_sigma": 25},
    "bins-sigma50": {"loss": "bins", "label_sigma": 50},
    "bins-frozen2": {"loss": "bins", "epochs": 8, "freeze_epochs": 2},
    "bins-160px": {"loss": "bins", "image_size": 160},
    "bins-lite1": {"loss": "bins", "backbone": "efficientnet_lite1"},
    "bins-lite2": {"loss": "bins", "backbone": "efficientnet_lite2"},
    "l1-12ep": {"epochs": 12},
    "bins-20ep": {"loss": "bins", "epochs": 20},
    "bins-12ep-sigma50": {"loss": "bins", "epochs": 12, "label_sigma": 50},
    "bins-20ep-sigma50": {"loss": "bins", "epochs": 20, "label_sigma": 50},
    "bins-30ep-sigma50": {"loss": "bins", "epochs": 30, "label_sigma": 50},
    "bins-20ep-sigma75": {"loss": "bins", "epochs": 20, "label_sigma": 75},
    "bins-20ep-sigma100": {"loss": "bins", "epochs": 20, "label_sigma": 100},
    "bins-20ep-sigma30": {"loss": "bins", "epochs": 20, "label_sigma": 30},
    "bins-20ep-sigma50-backbone0.3": {"loss": "bins", "epochs": 20, "label_sigma": 50, "backbone_lr_scale": 0.3},
    "bins-20ep-sigma50-lr4e-3": {"loss": "bins", "epochs": 20, "label_sigma": 50, "lr": 4e-3},
    "bins-20ep-sigma50-batch8": {"loss": "bins", "epochs": 20, "label_sigma": 50, "batch_size": 8},
    # At public-art's size (3,000 training works): fewer epochs hold as many steps.
    "bins-5ep-sigma50": {"loss": "bins", "epochs": 5, "label_sigma": 50},
    "bins-10ep-sigma50": {"loss": "bins", "epochs": 10, "label_sigma": 50},
    "bins-10ep-sigma25": {"loss": "bins", "epochs": 10, "label_sigma": 25},
    "bins-10ep-sigma50-lr4e-3": {"loss": "bins", "epochs": 10, "label_sigma": 50, "lr": 4e-3},
    "bins-10ep-sigma50-160px": {"loss": "bins", "epochs": 10, "label_sigma": 50, "image_size": 160},
    "bins-10ep-sigma50-lite1": {"loss": "bins", "epochs": 10, "label_sigma": 50, "backbone": "efficientnet_lite1"},
    # With --pack-size 200 (public-art's own size): nearer the sizes the backbones were trained at (224, 260 px).
    "bins-10ep-sigma50-192px": {"loss": "bins", "epochs": 10, "label_sigma": 50, "image_size": 192},
    "bins-10ep-sigma50-224px": {"loss": "bins", "epochs": 10, "label_sigma": 50, "image_size": 224},
    "bins-sigma50-224px": {"loss": "bins", "label_sigma": 50, "image_size": 224},  # 6 epochs: pack sizes
    "bins-10ep-sigma50-192px-backbone0.3": {
        "loss": "bins",
        "epochs": 10,
        "label_sigma": 50,
        "image_size": 192,
        "backbone_lr_scale": 0.3,
    },
    "bins-10ep-sigma50-lite2-192px": {
        "loss": "bins",
        "epochs": 10,
        "label_sigma": 50,
        "image_size": 192,
        "backbone": "efficientnet_lite2",
    },
}


# Ways to read a trained model, measured at no training cost: (row suffix, flip TTA, the year a
# `bins` head reports: the median of its distribution, artdate's default, or the mean as before).
VARIANTS = [("", False, "median"), (" +flip", True, "median"), (" +mean", False, "mean")]
# Readings from the model's own embedding space (the comparanda's): the median year of the k
# training works nearest each held-out work (" +knnK"), and the mean of that and the head's year
# (" +blendK"); both keep the head's calibrated ranges, so only MAE columns differ.
NEIGHBOURS = (5, 10, 20, 50)


@dataclasses.dataclass
class Work:
    image: torch.Tensor  # uint8 CHW, shrunk and re-encoded as pack stores it
    year: int
    year_start: int
    year_end: int
    set: str = "sample"
    held_out: bool = False  # in the split `artdate demo` validates on (--split fixed)
    museum: str = ""


def load_works(names: list[str], coarse: bool = False, pack_size: int = PACK_SIZE) -> list[Work]:
    """The works of the named sets in the default window, 1200..1930 (the demo's works), shrunk as
    `pack --size pack_size` stores them; with `coarse`, the works a set's flags mark as coarsely
    dated train as spans (pack --coarse-dates)."""
    works = []
    for name in names:
        metadata, images, flags = SETS[name]
        marked = read_coarse_dates(flags) if coarse and flags else frozenset()
        meta = read_metadata([metadata], val_fraction=FIXED_VAL_FRACTION, coarse=marked)
        for work in meta.catalog.in_file_order():
            with open(os.path.join(images, work.file), "rb") as f:
                jpg = encode_image(f.read(), pack_size)[0]
            works.append(
                Work(
                    pipeline.decode_image(jpg),
                    work.year,
                    work.year_start,
                    work.year_end,
                    name,
                    work.split == "val",
                    work.museum,
                )
            )
    return works


def batches_of(works: list[Work], transform, batch_size: int, generator: torch.Generator, drop_last: bool):
    order = torch.randperm(len(works), generator=generator).tolist() if drop_last else range(len(works))
    order = list(order)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        chosen = [works[i] for i in order[start : start + batch_size]]
        yield pipeline.Batch(
            image=torch.stack([transform(w.image) for w in chosen]),
            **{name: torch.tensor([getattr(w, name) for w in chosen]) for name in pipeline.LABELS},
            **{name: [""] * len(chosen) for name in ("key", "shard", "id", "museum")},
            index=list(range(len(chosen))),
        )


class Ranks(torch.nn.Module):
    """`ranks` DDP workers emulated in one process, as the demo trains (2 workers): each worker's
    slice of the batch goes through the model on its own, so BatchNorm normalises it by that
    slice's statistics, and only the first slice updates the running statistics (DDP copies rank
    0's buffers to every rank before each forward). The mean loss over the whole batch then has
    the gradient DDP averages over the workers."""

    def __init__(self, model: torch.nn.Module, ranks: int):
        super().__init__()
        self.model, self.ranks = model, ranks
        self.norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.momenta = [m.momentum for m in self.norms]

    def forward(self, inputs):
        outputs = []
        for rank, part in enumerate(inputs.chunk(self.ranks)):
            for norm, momentum in zip(self.norms, self.momenta):
                norm.momentum = momentum if rank == 0 else 0.0  # 0.0: batch statistics, running ones kept
            outputs.append(self.model(part))
        for norm, momentum in zip(self.norms, self.momenta):
            norm.momentum = momentum
        return torch.cat(outputs)


def train(
    cfg: TrainConfig,
    works: list[Work],
    seed: int,
    ranks: int = 1,
    device: torch.device = CPU,
    pack_size: int = PACK_SIZE,
) -> tuple[torch.nn.Module, ModelSpec]:
    years = torch.tensor([w.year for w in works], dtype=torch.float64)
    encoding = LabelEncoding(
        loss=cfg.loss,
        mean=float(years.mean()),
        std=float(years.std()),
        bin_width=cfg.bin_width,
        label_sigma=cfg.label_sigma,
    )
    spec = ModelSpec(backbone=cfg.backbone, image_size=cfg.image_size, encoding=encoding, pack_size=pack_size)
    torch.manual_seed(seed)
    model = build_model(cfg.backbone, encoding.num_outputs).to(device)
    transform = pipeline.train_transform(cfg.image_size)
    generator = torch.Generator().manual_seed(seed)
    fit(
        model,
        spec,
        cfg,
        lambda epoch: batches_of(works, transform, cfg.batch_size, generator, True),
        len(works) // cfg.batch_size,
        device=device,
        through=Ranks(model, ranks) if ranks > 1 else None,
    )
    return model.eval(), spec


def predict(
    model,
    spec: ModelSpec,
    works: list[Work],
    calibration: ranges.RangeCalibration | None = None,
    embeddings: list | None = None,
) -> ranges.Predictions:
    transform = pipeline.eval_transform(spec.image_size)
    device = next(model.parameters()).device
    return ranges.Predictions.concat(
        [
            predict_years(model, spec, batch.image, device, calibration, embeddings=embeddings)
            for batch in batches_of(works, transform, 64, None, False)
        ]
    )


class Ensemble(torch.nn.Module):
    """Models trained alike from other seeds, read as one: the mean of their outputs (as flip
    averaging averages two readings of one model), decoded by their shared spec."""

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, inputs):
        return torch.stack([member(inputs) for member in self.members]).mean(dim=0)


def neighbour_readings(model, spec: ModelSpec, trained_on: list[Work], held_features: list, head: ranges.Predictions):
    """{row suffix: predictions} for the kNN and blend readings of `head` (the plain reading, whose
    pass over the held-out works collected `held_features`)."""
    fit_features: list = []
    predict(model, spec, trained_on, embeddings=fit_features)
    _, index = comparanda.nearest(
        torch.cat(held_features).numpy(), torch.cat(fit_features).numpy(), max(NEIGHBOURS)
    )  # sorted nearest first
    fit_years = torch.tensor([w.year for w in trained_on], dtype=torch.float64)[torch.from_numpy(index)]
    readings = {}
    for k in NEIGHBOURS:
        knn = fit_years[:, :k].median(dim=1).values
        for suffix, year in ((f" +knn{k}", knn), (f" +blend{k}", (knn + head.year.double()) / 2)):
            readings[suffix] = ranges.Predictions(year.float(), head.low, head.high, head.spread)
    return readings


def folds_of(count: int, folds: int, seed: int) -> list[list[int]]:
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[k::folds] for k in range(folds)]


def held_out_parts(works: list[Work], folds: int, seed: int, split: str) -> list[list[int]]:
    """The works each model is measured on: k folds, or (`fixed`) the demo's validation split."""
    if split == "fixed":
        return [[i for i, work in enumerate(works) if work.held_out]]
    return folds_of(len(works), folds, seed)


def cross_validate(
    name: str,
    works: list[Work],
    folds: int,
    seed: int,
    calibration_share: float = 0.2,
    ranks: int = 1,
    split: str = "folds",
    neighbours: bool = False,
    ensemble: int = 1,
    device: torch.device = CPU,
    read_sizes: tuple[int, ...] = (),
    pack_size: int = PACK_SIZE,
) -> list[dict]:
    cfg = TrainConfig(shards="", storage="", **{**DEMO, **RECIPES[name]})
    started, wall_started = time.process_time(), time.perf_counter()
    truth, sets = [], []
    outcome: dict[str, list] = {}
    baseline_errors, training_works = [], []
    parts = held_out_parts(works, folds, seed, split)
    for k, held_out in enumerate(parts):
        held = set(held_out)
        rest = [
            i
            for i in torch.randperm(len(works), generator=torch.Generator().manual_seed(seed + 1 + k)).tolist()
            if i not in held
        ]
        calibrating = int(len(rest) * calibration_share)
        calibration_part = rest[:calibrating]
        trained_on = [works[i] for i in rest[calibrating:]]
        training_works.append(len(trained_on))
        members = [train(cfg, trained_on, seed + k + 1000 * m, ranks, device, pack_size) for m in range(ensemble)]
        model, spec = members[0]  # the members share the trained_on works, so the label encoding too
        readers = [("", model)] + ([(f" x{ensemble}", Ensemble([m for m, _ in members]))] if ensemble > 1 else [])
        # Each set's works against the median of that set's own training works.
        medians = {
            s: float(torch.tensor([w.year for w in trained_on if w.set == s], dtype=torch.float64).median())
            for s in {works[i].set for i in held_out}
        }
        test_years = torch.tensor([works[i].year for i in held_out], dtype=torch.float64)
        truth.append(test_years)
        sets += [works[i].set for i in held_out]
        baseline_errors.append(
            torch.tensor([abs(works[i].year - medians[works[i].set]) for i in held_out], dtype=torch.float64)
        )
        calibration_years = torch.tensor([works[i].year for i in calibration_part], dtype=torch.float64)
        held_features: list = []  # the plain reading's embeddings of the held-out works (--neighbours)
        sizes = [spec.image_size] + [size for size in read_sizes if size != spec.image_size]
        for (reader, read), (variant, flip, point), size in itertools.product(readers, VARIANTS, sizes):
            if point != spec.encoding.point and (spec.encoding.loss != "bins" or size != spec.image_size):
                continue  # only a bins head has a second point to read, and only at its training size
            suffix = variant if size == spec.image_size else f" @{size}{variant}"
            decoding = dataclasses.replace(
                spec, image_size=size, flip_averaging=flip, encoding=dataclasses.replace(spec.encoding, point=point)
            )
            raw = predict(read, decoding, [works[i] for i in calibration_part])
            calibration = ranges.calibrate(calibration_years, raw.low, raw.high, spec.range_level)
            features = held_features if neighbours and reader + suffix == "" else None
            predictions = predict(read, decoding, [works[i] for i in held_out], calibration, features)
            outcome.setdefault(reader + suffix, []).append(predictions)
        if neighbours:
            readings = neighbour_readings(model, spec, trained_on, held_features, outcome[""][-1])
            for suffix, predictions in readings.items():
                outcome.setdefault(suffix, []).append(predictions)
        print(
            f"  {name} part {k + 1}/{len(parts)} ({len(trained_on)} training, {len(calibration_part)} calibrating, "
            f"{len(held_out)} held-out works): {time.process_time() - started:.0f} CPU s, "
            f"{time.perf_counter() - wall_started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    seconds = time.process_time() - started  # the variants share the training: its cost is counted once
    wall_seconds = time.perf_counter() - wall_started
    all_years, all_baseline = torch.cat(truth), torch.cat(baseline_errors)
    rows = []
    for variant, predictions in outcome.items():
        if not predictions:
            continue
        predicted = ranges.Predictions.concat(predictions)
        for measured in sorted(set(sets)):
            mask = torch.tensor([s == measured for s in sets])
            years, low, high = all_years[mask], predicted.low[mask].double(), predicted.high[mask].double()
            errors = (predicted.year[mask].double() - years).abs()
            baseline = float(all_baseline[mask].mean())
            rows.append(
                {
                    "recipe": name + variant,
                    "measured": measured,
                    "n": len(years),
                    "mae": float(errors.mean()),
                    "mae_se": float(errors.std() / len(errors) ** 0.5),
                    "median_ae": float(errors.median()),
                    "within_50": float((errors <= 50).double().mean()),
                    "baseline_mae": baseline,
                    "vs_baseline": float(errors.mean()) / baseline,
                    "coverage": float(ranges.inside(years, low, high).double().mean()),
                    "width": float((high - low).mean()),
                    "cpu_s": seconds,
                    "wall_s": wall_seconds,
                    "device": device.type,
                    "training_works": training_works,
                    "ranks": ranks,
                    "split": split,
                    "errors": errors.tolist(),
                    "predicted": predicted.year[mask].tolist(),  # with "years": other ensembles, after the fact
                    "years": years.tolist(),
                    "settings": {**DEMO, **RECIPES[name], "pack_size": pack_size},
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--calibration-share",
        type=float,
        default=0.2,
        help="share of each fold's other works that calibrates the ranges instead of training",
    )
    parser.add_argument(
        "--ranks",
        type=int,
        default=1,
        help="emulate this many DDP workers sharing each batch (BatchNorm per worker): 2 as the demo",
    )
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names: " + ", ".join(RECIPES))
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "out", "recipes.json"))
    parser.add_argument(
        "--sets",
        nargs="+",
        default=["sample"],
        choices=list(SETS),
        help="train on these sets together; each is measured on its own works",
    )
    parser.add_argument(
        "--split",
        default="folds",
        choices=["folds", "fixed"],
        help="k folds, or one model measured on the split `artdate demo` validates on (15%%)",
    )
    parser.add_argument(
        "--coarse-dates",
        action="store_true",
        help="the works a set flags as coarsely dated train as spans (pack --coarse-dates)",
    )
    parser.add_argument(
        "--neighbours",
        action="store_true",
        help="also read each model by its embedding space: kNN median year and its blend with the head",
    )
    parser.add_argument(
        "--ensemble",
        type=int,
        default=1,
        help="train this many models per recipe from other seeds and also read them as one (mean output)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="train and read on this device (cuda: bf16 autocast, as artdate trains on a GPU)",
    )
    parser.add_argument(
        "--read-sizes",
        type=int,
        nargs="*",
        default=[],
        help='also read each model at these evaluation crop sizes (" @SIZE" rows): a model trained on random '
        "resized crops sees objects larger than a centre crop of the same size shows them (FixRes)",
    )
    parser.add_argument(
        "--pack-size",
        type=int,
        default=PACK_SIZE,
        help="shrink the images as `pack --size` does (public-art's are 200 px)",
    )
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    works = load_works(args.sets, args.coarse_dates, args.pack_size)
    print(
        f"{len(works)} works of {' + '.join(args.sets)}, split {args.split} ({args.folds} folds), "
        f"coarse dates as spans: {args.coarse_dates}, {os.cpu_count()} cores",
        flush=True,
    )
    header = (
        f"{'recipe':<28}{'set':>11}{'n':>6}{'MAE':>7}{'+-SE':>6}{'median':>8}{'<=50y':>7}{'vs median':>10}"
        f"{'coverage':>9}{'width':>7}{'CPU s':>7}{'wall s':>7}"
    )
    rows = []
    for name in args.recipes.split(","):
        rows += cross_validate(
            name,
            works,
            args.folds,
            args.seed,
            args.calibration_share,
            args.ranks,
            args.split,
            args.neighbours,
            args.ensemble,
            torch.device(args.device),
            tuple(args.read_sizes),
            args.pack_size,
        )
        print(header)
        for row in rows:
            print(
                f"{row['recipe']:<28}{row['measured']:>11}{row['n']:>6}{row['mae']:>7.1f}{row['mae_se']:>6.1f}"
                f"{row['median_ae']:>8.1f}{row['within_50']:>7.0%}{row['vs_baseline']:>10.2f}{row['coverage']:>9.0%}"
                f"{row['width']:>7.0f}{row['cpu_s']:>7.0f}{row['wall_s']:>7.0f}",
                flush=True,
            )
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"median baseline MAE {rows[0]['baseline_mae']:.1f} y; peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
