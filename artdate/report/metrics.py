"""The figures of a results CSV: where the model is right and wrong, in numbers.

`read_results` reads any CSV with `year` and `pred` columns (results.csv, the 2017 experiment's
file); `summarize` gives summary.json's figures: overall, per 50-year bin, per museum and split,
the ranges' coverage and width, and the confusion of centuries, with the headline figures measured
on the held-out works (the validation split when the CSV says which, else every row).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from artdate.core import store

BIN_YEARS = 50
LARGEST_MUSEUMS = 12  # museums with a row of their own in the figures; the rest share one


def read_results(url: str) -> pd.DataFrame:
    try:
        # Every cell as text, so that an id such as NaN, null or NA stays what it is; the numbers
        # are converted below, column by column.
        frame = pd.read_csv(io.BytesIO(store.read_bytes(url)), dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no such results file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as problem:
        raise ValueError(f"{url}: not a readable CSV: {problem}") from None
    missing = {"year", "pred"} - set(frame.columns)
    if missing:
        raise ValueError(f"{url}: needs columns year and pred; missing {sorted(missing)} (has {list(frame.columns)})")
    columns = ("year", "pred", "pred_low", "pred_high") if has_ranges(frame) else ("year", "pred")
    frame["dated"] = frame["year"].str.strip() != ""  # an empty year: a work to date (score's undated split)
    for column in columns:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = ~np.isfinite(numbers.to_numpy(dtype=float)) & (frame["dated"].to_numpy() if column == "year" else True)
        if bad.any():  # an empty cell, text, or inf: the year bins and every figure need a finite number
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{url}: line {row + 2}: {column} {frame[column].iloc[row]!r} is not a finite number")
        frame[column] = numbers.astype(float)
    if "range_level" in frame.columns:
        frame["range_level"] = pd.to_numeric(frame["range_level"], errors="coerce")
    if frame.empty:
        raise ValueError(f"{url}: no rows")
    frame["error"] = frame["pred"] - frame["year"]  # NaN for the undated
    frame["abs_error"] = frame["error"].abs()
    # Whole years (the figures label their bins "1200", not "1200.0"); empty for the undated.
    frame["bin"] = (np.floor(frame["year"] / BIN_YEARS) * BIN_YEARS).astype("Int64")
    if "pred_low" in columns:
        # ranges.inside's rule (ends included), written here so that report never imports torch
        frame["inside"] = (frame["pred_low"] <= frame["year"]) & (frame["year"] <= frame["pred_high"])
        frame["width"] = frame["pred_high"] - frame["pred_low"]
    return frame


def has_ranges(frame: pd.DataFrame) -> bool:
    """Whether every row has a range (score leaves them empty for an uncalibrated checkpoint)."""
    return {"pred_low", "pred_high"} <= set(frame.columns) and (frame[["pred_low", "pred_high"]] != "").all(axis=None)


def range_level(frame: pd.DataFrame) -> float | None:
    """The share of true years the ranges are meant to hold (score writes it in `range_level`)."""
    if "range_level" not in frame.columns or frame["range_level"].isna().all():
        return None
    return float(frame["range_level"].dropna().iloc[0])


def held_out(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows a model did not train on (the validation split) when the CSV says which they are."""
    if "split" in frame.columns and (frame["split"] == "val").any():
        return frame[frame["split"] == "val"], "validation works"
    return frame, "all works"


def error_summary(rows: pd.DataFrame) -> dict:
    """Error figures of `rows`, and with ranges their coverage and mean width."""
    errors = rows["error"]
    absolute = errors.abs()
    figures = {
        "n": int(len(errors)),
        "mae": float(absolute.mean()),
        "median_ae": float(absolute.median()),
        "rmse": float(np.sqrt((errors**2).mean())),
        "bias": float(errors.mean()),
        "within_25": float((absolute <= 25).mean()),
        "within_50": float((absolute <= 50).mean()),
        "within_100": float((absolute <= 100).mean()),
    }
    if "inside" in rows.columns:
        figures["coverage"] = float(rows["inside"].mean())
        figures["range_width"] = float(rows["width"].mean())
    return figures


def century_confusion(rows: pd.DataFrame) -> dict:
    """Works per (true century, predicted century): rows are true centuries, columns predicted."""
    true = (np.floor(rows["year"] / 100) * 100).astype(int)
    predicted = (np.floor(rows["pred"] / 100) * 100).astype(int)
    centuries = sorted(set(true) | set(predicted))
    table = pd.crosstab(true, predicted).reindex(index=centuries, columns=centuries, fill_value=0)
    return {"centuries": [int(c) for c in centuries], "counts": table.to_numpy().tolist()}


def per_museum(frame: pd.DataFrame) -> dict:
    """Figures per museum, largest first; past LARGEST_MUSEUMS museums, the smaller ones share one
    row ("other museums (N)"), so a corpus of 868 holding institutions still reads as a table."""
    counts = frame["museum"].astype(str).value_counts()
    names = sorted(counts.index, key=lambda name: (-counts[name], name))
    largest = names if len(names) <= LARGEST_MUSEUMS else names[: LARGEST_MUSEUMS - 1]
    museums = frame["museum"].astype(str)
    figures = {name: error_summary(frame[museums == name]) for name in largest}
    rest = names[len(largest) :]
    if rest:
        figures[f"other museums ({len(rest)})"] = error_summary(frame[museums.isin(rest)])
    return figures


def summarize(results: pd.DataFrame) -> dict:
    """summary.json: the error figures of the dated works, and what was predicted for the undated."""
    frame = results[results["dated"]]
    summary = dated_summary(frame) if len(frame) else {"n": 0}
    undated = results[~results["dated"]]
    if len(undated):
        summary["undated"] = undated_summary(undated)
    return summary


def undated_summary(rows: pd.DataFrame) -> dict:
    """How many works to date were scored, and how their predicted years spread."""
    years = rows["pred"]
    figures: dict = {
        "n": int(len(rows)),
        "pred_median": float(years.median()),
        "pred_p10": float(years.quantile(0.1)),
        "pred_p90": float(years.quantile(0.9)),
        "per_bin": [
            {"bin_start": int(start), "n": int(count)}
            for start, count in (np.floor(years / BIN_YEARS) * BIN_YEARS).value_counts().sort_index().items()
        ],
    }
    if "pred_low" in rows.columns and rows["pred_low"].notna().all():
        figures["range_width"] = float((rows["pred_high"] - rows["pred_low"]).mean())
    return figures


def dated_summary(frame: pd.DataFrame) -> dict:
    summary = error_summary(frame)
    summary["per_bin"] = [
        {"bin_start": int(start), "bin_end": int(start) + BIN_YEARS - 1, **error_summary(group)}
        for start, group in frame.groupby("bin", sort=True)
    ]
    if "museum" in frame.columns:
        summary["per_museum"] = per_museum(frame)
    if "split" in frame.columns:
        summary["per_split"] = {str(s): error_summary(g) for s, g in frame.groupby("split", sort=True)}
    rows, which = held_out(frame)
    summary["held_out"] = which
    summary["headline"] = error_summary(rows)  # the page's top figures: works the model never trained on
    summary["centuries"] = century_confusion(rows)
    if "inside" in frame.columns:
        summary["ranges"] = {
            "level": range_level(frame),
            "coverage": float(rows["inside"].mean()),
            "width": float(rows["width"].mean()),
            # where they hold, collection by collection (a collection unlike the calibration works
            # may not: docs/year-ranges.md)
            "per_museum": {
                name: {k: f[k] for k in ("n", "coverage", "range_width")} for name, f in per_museum(rows).items()
            }
            if "museum" in rows.columns
            else {},
            "per_bin": [
                {
                    "bin_start": int(start),
                    "n": int(len(group)),
                    "coverage": float(group["inside"].mean()),
                    "width": float(group["width"].mean()),
                }
                for start, group in rows.groupby("bin", sort=True)
            ],
        }
    return summary


def comparanda_summary(frame: pd.DataFrame, neighbours: dict[str, pd.DataFrame]) -> dict:
    """How well the neighbours' own estimate (the median year of the k nearest training works)
    dates the held-out works, next to the model's prediction for the same works."""
    rows, which = held_out(frame[frame["dated"]])
    rows = rows[rows["key"].isin(neighbours.keys())]
    knn = rows["key"].map(lambda key: float(neighbours[key]["neighbour_year"].median()))
    return {
        "k": int(max(len(n) for n in neighbours.values())),
        "works": which,
        "n": int(len(rows)),
        "knn_mae": float((knn - rows["year"]).abs().mean()),
        "model_mae": float(rows["abs_error"].mean()),
    }
