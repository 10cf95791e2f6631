"""Do the year ranges hold on a collection they were not calibrated on? Whole collections held
out: a model trains and calibrates on one set and reads the other.

For each --directions A:B, the model trains on A's works outside the split `artdate demo` holds
out (bench/quality/recipes.py's training and recipes), its ranges are calibrated on A's held-out works,
and it reads them and every work of B. The ranges are calibrated two ways, on the same readings:
- pooled: one margin from all of A's held-out works (artdate before issue 39);
- by museum (artdate now, ranges.calibrate): a museum with enough calibration works its own
  margin, another of A's museums the pooled one, a museum A does not hold the margin A's museums
  needed at the promised level of them.
Prints the coverage (share of true years inside their range; the promise is --level) and the mean
width per set and per museum of B with 20 works or more.

    python -m bench.quality.shift [--directions public-art:sample sample:public-art] [--recipes bins-10ep-sigma50 ...]
"""

import argparse
import os
import time

import torch

from artdate.core.config import TrainConfig
from artdate.model import ranges
from bench.quality.recipes import DEMO, RECIPES, load_works, predict, train

PER_MUSEUM_FROM = 20  # works of B a museum needs for a row of its own


def coverage(predictions: ranges.Predictions, years: torch.Tensor) -> tuple[float, float]:
    inside = ranges.inside(years, predictions.low, predictions.high).float().mean().item()
    return inside, (predictions.high - predictions.low).mean().item()


def one_direction(trained_on: str, read: str, recipe: str, level: float, seed: int) -> list[tuple]:
    works, others = load_works([trained_on]), load_works([read])
    fitting = [w for w in works if not w.held_out]
    calibrating = [w for w in works if w.held_out]
    cfg = TrainConfig(shards="", storage="", range_level=level, **{**DEMO, **RECIPES[recipe]})
    started = time.process_time()
    model, spec = train(cfg, fitting, seed)
    seconds = time.process_time() - started
    raw_calibrating, raw_read = predict(model, spec, calibrating), predict(model, spec, others)
    years = torch.tensor([w.year for w in calibrating], dtype=torch.float32)
    museums = [w.museum for w in calibrating]
    rules = {
        "pooled": ranges.calibrate(years, raw_calibrating.low, raw_calibrating.high, level),
        "by museum": ranges.calibrate(years, raw_calibrating.low, raw_calibrating.high, level, museums),
    }
    read_years = torch.tensor([w.year for w in others], dtype=torch.float32)
    rows = []
    for rule, calibration in rules.items():
        window = (spec.encoding.year_min, spec.encoding.year_max)
        own = ranges.apply_calibration(raw_calibrating, calibration, *window, museums)
        theirs = ranges.apply_calibration(raw_read, calibration, *window, [w.museum for w in others])
        rows.append((rule, f"{trained_on} (calibration works)", len(calibrating), *coverage(own, years)))
        rows.append((rule, f"{read} (all, unseen)", len(others), *coverage(theirs, read_years)))
        for museum in sorted({w.museum for w in others}):
            chosen = [i for i, w in enumerate(others) if w.museum == museum]
            if len(chosen) >= PER_MUSEUM_FROM:
                part = ranges.Predictions(theirs.year[chosen], theirs.low[chosen], theirs.high[chosen])
                rows.append((rule, f"{read}: {museum}", len(chosen), *coverage(part, read_years[chosen])))
    mae = (raw_read.year - read_years).abs().mean().item()
    print(
        f"{trained_on} -> {read}: {recipe}, {len(fitting)} training works, {seconds:.0f} CPU s; "
        f"MAE on {read} {mae:.1f} y"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directions", nargs="+", default=["public-art:sample", "sample:public-art"])
    parser.add_argument("--recipes", nargs="+", default=["bins-10ep-sigma50", "bins-20ep-sigma50"])
    parser.add_argument("--level", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    for direction, recipe in zip(args.directions, args.recipes):
        trained_on, read = direction.split(":")
        rows = one_direction(trained_on, read, recipe, args.level, args.seed)
        print(f"\n| rule | works | n | inside {args.level:.0%} ranges | mean width |")
        print("|---|---|---|---|---|")
        for rule, name, n, inside, width in rows:
            print(f"| {rule} | {name} | {n} | {inside:.0%} | {width:.0f} |", flush=True)
        print()


if __name__ == "__main__":
    main()
