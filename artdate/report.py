"""`artdate report`: where the model is right and wrong, from any CSV with `year` and `pred`.

Writes summary.json (overall, per 50-year bin, per museum, per split; with `pred_low`/`pred_high`
the ranges' coverage and width; the confusion of centuries), the plots, and report.html: one
self-contained page (images inlined) with the figures, tables and galleries of the best hits and
the worst misses each way. Coverage and the century table are measured on the validation works
when the CSV has a `split` column (the model trained on the others), else on every row. Gallery
images come from the shards (`shard` + `key` columns) or from image paths (`path` or `file`
columns, under the CSV's folder). With --run, the training run's learning curves lead the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tarfile

import numpy as np
import pandas as pd

from . import comparanda, shards, store
from .config import ReportConfig
from .images import ImageRejected, open_rgb

BIN_YEARS = 50
LARGEST_MUSEUMS = 12  # museums with a row of their own in the figures; the rest share one
MAX_IMAGE_BYTES = 50_000_000  # gallery images, as pack's --max-bytes
MAX_IMAGE_PIXELS = 100_000_000


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
    for column in columns:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{url}: line {row + 2}: {column} {frame[column].iloc[row]!r} is not a number")
        frame[column] = numbers.astype(float)
    if "range_level" in frame.columns:
        frame["range_level"] = pd.to_numeric(frame["range_level"], errors="coerce")
    if frame.empty:
        raise ValueError(f"{url}: no rows")
    frame["error"] = frame["pred"] - frame["year"]
    frame["abs_error"] = frame["error"].abs()
    frame["bin"] = (np.floor(frame["year"] / BIN_YEARS) * BIN_YEARS).astype(int)
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


def summarize(frame: pd.DataFrame) -> dict:
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


def make_plots(frame: pd.DataFrame, out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = sorted(frame["bin"].unique())
    names = []

    figure, axis = plt.subplots(figsize=(9, 3.5))
    counts = frame.groupby("bin").size().reindex(bins)
    axis.bar([str(b) for b in bins], counts.to_numpy(), color="#4a6fa5")
    axis.set(title="Works per 50-year bin", xlabel="true year (bin start)", ylabel="works")
    axis.tick_params(axis="x", rotation=60)
    names.append(_save(figure, out, "works_per_bin.png"))

    figure, axis = plt.subplots(figsize=(9, 3.5))
    groups = [frame.loc[frame["bin"] == b, "error"].to_numpy() for b in bins]
    plotted = [i for i, g in enumerate(groups) if len(g) > 1]
    if plotted:
        axis.violinplot([groups[i] for i in plotted], positions=plotted, showmedians=True)
    single = [i for i, g in enumerate(groups) if len(g) == 1]
    axis.scatter(single, [groups[i][0] for i in single], color="#4a6fa5", s=12)
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_xticks(range(len(bins)), [str(b) for b in bins], rotation=60)
    axis.set(title="Error per bin (predicted - true)", xlabel="true year (bin start)", ylabel="years")
    names.append(_save(figure, out, "error_per_bin.png"))

    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.scatter(frame["year"], frame["pred"], s=8, alpha=0.6, color="#4a6fa5")
    low, high = min(frame["year"].min(), frame["pred"].min()), max(frame["year"].max(), frame["pred"].max())
    axis.plot([low, high], [low, high], color="grey", linewidth=0.8)
    axis.set(title="Predicted vs true year", xlabel="true year", ylabel="predicted year")
    names.append(_save(figure, out, "pred_vs_year.png"))
    if "inside" in frame.columns:
        names.append(reliability_plot(frame, out, plt))
    return names


def learning_curve(run_url: str) -> list[dict]:
    """The run's metrics per epoch, from the history its checkpoints carry (train.CURVE). `run_url`
    is a run's --storage URL or one of its checkpoints."""
    from .checkpoints import CHECKPOINT_FILE, run_checkpoints  # here: a report without --run needs no torch

    run_url = run_url.rstrip("/")
    if store.exists(store.join(run_url, CHECKPOINT_FILE)):
        run_url = run_url.rsplit("/", 1)[0]
    checkpoints = run_checkpoints(run_url)
    if not checkpoints:
        raise FileNotFoundError(f"--run {run_url}: no checkpoints of a training run there")
    # The longest history: a checkpoint inside an epoch carries the curve up to the epoch before.
    return max((metrics["history"] for metrics in checkpoints.values()), key=len)


def learning_curve_plot(curve: list[dict], out: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [entry["epoch"] + 1 for entry in curve]
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    panels = (
        ("train_loss", "Training loss (training works)", "loss"),
        ("val_mae", "Val MAE (validation works)", "years"),
        ("val_range_width", "Range width (validation works)", "years"),
    )
    for axis, (name, title, unit) in zip(axes, panels):
        axis.plot(epochs, [entry[name] for entry in curve], marker="o", color="#4a6fa5")
        axis.set(title=title, xlabel="epoch", ylabel=unit)
        axis.xaxis.get_major_locator().set_params(integer=True)
    return _save(figure, out, "learning_curves.png")


def reliability_plot(frame: pd.DataFrame, out: str, plt) -> str:
    """Do the ranges hold what they promise? The share of true years inside their range per
    50-year bin, and per fifth of the works ordered by how wide their range is (a model that
    knows when it is unsure holds its level in every fifth), against the promised level."""
    rows, which = held_out(frame)
    level = range_level(frame)
    figure, (by_bin, by_width) = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [2, 1]})
    coverage = rows.groupby("bin")["inside"].mean()
    by_bin.bar([str(b) for b in coverage.index], coverage.to_numpy(), color="#4a6fa5")
    by_bin.set(
        title=f"Share inside its range per bin ({which})",
        xlabel="true year (bin start)",
        ylabel="share",
        ylim=(0, 1.05),
    )
    by_bin.tick_params(axis="x", rotation=60)
    fifths = pd.qcut(rows["width"].rank(method="first"), min(5, len(rows)), labels=False)
    grouped = rows.groupby(fifths).agg(width=("width", "mean"), inside=("inside", "mean"))
    by_width.plot(grouped["width"], grouped["inside"], marker="o", color="#4a6fa5")
    by_width.set(title="... by range width (fifths)", xlabel="mean range width (years)", ylabel="share", ylim=(0, 1.05))
    for axis in (by_bin, by_width):
        if level is not None:
            axis.axhline(level, color="#c0392b", linewidth=1, linestyle="--", label=f"promised {level:.0%}")
    if level is not None:
        by_width.legend(loc="lower right")
    return _save(figure, out, "range_reliability.png")


def _save(figure, out: str, name: str) -> str:
    figure.tight_layout()
    figure.savefig(os.path.join(out, name), dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return name


def pick_galleries(frame: pd.DataFrame, size: int) -> dict[str, pd.DataFrame]:
    return {
        "Best hits": frame.nsmallest(size, "abs_error"),
        "Worst misses: predicted older than they are": frame[frame["error"] < 0].nsmallest(size, "error"),
        "Worst misses: predicted younger than they are": frame[frame["error"] > 0].nlargest(size, "error"),
    }


def find_images(rows: pd.DataFrame, results_url: str, shards_url: str = "") -> dict[int, bytes]:
    """Row index -> image bytes, missing ones left out. Images are read only from shards listed in
    their store's manifest (the `shard` + `key` columns, or --shards) and from `path`/`file`
    columns under the CSV's own folder: a CSV from elsewhere cannot make the page inline other files."""
    found: dict[int, bytes] = {}
    if "key" in rows.columns and ("shard" in rows.columns or shards_url):
        shard_of = rows["shard"].astype(str) if "shard" in rows.columns else pd.Series("", index=rows.index)
        for shard, group in rows.groupby(shard_of):
            url = store.join(shards_url, shard.rsplit("/", 1)[-1]) if shards_url else shard
            if listed_shard(url):
                found.update(shard_images(url, {f"{key}.jpg": index for index, key in group["key"].items()}))
    column = "path" if "path" in rows.columns else "file" if "file" in rows.columns else None
    if column and not store.is_s3(results_url):
        base = os.path.realpath(os.path.dirname(os.path.abspath(results_url)))
        for index, path in rows[column].items():
            full = os.path.realpath(os.path.join(base, str(path)))
            if index not in found and os.path.commonpath([base, full]) == base and os.path.isfile(full):
                try:
                    found[index] = store.read_bytes(full, MAX_IMAGE_BYTES)
                except (OSError, ValueError):
                    continue
    return found


def listed_shard(url: str) -> bool:
    """Whether `url` is a shard named in the manifest of the store it sits in."""
    directory, _, name = url.rpartition("/")
    try:
        return name in {entry["name"] for entry in shards.read_manifest(directory or ".")["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return False


def shard_images(url: str, wanted: dict[str, int]) -> dict[int, bytes]:
    """The members of one shard named in `wanted` (member name -> row index), streamed."""
    found = {}
    try:
        for name, data in shards.tar_members(
            url, lambda member: member.name in wanted and member.size <= MAX_IMAGE_BYTES
        ):
            found[wanted[name]] = data
    except (OSError, tarfile.TarError, ValueError):
        pass  # a gallery without some images is still a report
    return found


def thumbnail_uri(data: bytes, size: int = 220) -> str | None:
    try:
        image = open_rgb(data, MAX_IMAGE_PIXELS, draft_size=size)
    except ImageRejected:
        return None
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def read_neighbours(results_url: str, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """key -> that work's comparanda (score's neighbours file beside the results), or {}."""
    url = comparanda.neighbours_url(results_url)
    if "key" not in frame.columns or not store.exists(url):
        return {}
    table = pd.read_csv(
        io.BytesIO(store.read_bytes(url)),
        dtype={"neighbour_id": str, "neighbour_museum": str, "key": str},
        keep_default_na=False,
    )
    return {key: rows.sort_values("rank") for key, rows in table.groupby("key")}


def comparanda_summary(frame: pd.DataFrame, neighbours: dict[str, pd.DataFrame]) -> dict:
    """How well the neighbours' own estimate (the median year of the k nearest training works)
    dates the held-out works, next to the model's prediction for the same works."""
    rows, which = held_out(frame)
    rows = rows[rows["key"].isin(neighbours.keys())]
    knn = rows["key"].map(lambda key: float(neighbours[key]["neighbour_year"].median()))
    return {
        "k": int(max(len(n) for n in neighbours.values())),
        "works": which,
        "n": int(len(rows)),
        "knn_mae": float((knn - rows["year"]).abs().mean()),
        "model_mae": float(rows["abs_error"].mean()),
    }


def run_report(cfg: ReportConfig) -> dict:
    if os.path.exists(cfg.out) and not os.path.isdir(cfg.out):
        raise ValueError(f"--out {cfg.out} is a file; the report needs a folder")
    frame = read_results(cfg.results)
    os.makedirs(cfg.out, exist_ok=True)
    summary = summarize(frame)
    neighbours = read_neighbours(cfg.results, frame)
    if neighbours:
        summary["comparanda"] = comparanda_summary(frame, neighbours)
    if cfg.run:
        summary["learning_curve"] = learning_curve(cfg.run)
    with open(os.path.join(cfg.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plots = make_plots(frame, cfg.out)
    if cfg.run:
        plots.insert(0, learning_curve_plot(summary["learning_curve"], cfg.out))
    galleries = pick_galleries(frame, cfg.gallery)
    wanted = pd.concat(list(galleries.values()))
    images = find_images(wanted[~wanted.index.duplicated()], cfg.results, cfg.shards)
    page = render_html(cfg.results, summary, plots, galleries, images, cfg.out, neighbours)
    partial = os.path.join(cfg.out, "report.html.partial")
    with open(partial, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(partial, os.path.join(cfg.out, "report.html"))
    return summary


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row[key], key)}</td>" for key, _ in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _comparanda_text(rows: pd.DataFrame | None) -> str:
    """The dated training works a prediction rests on, nearest first."""
    if rows is None:
        return ""
    works = ", ".join(
        f"<span title='{html.escape(str(r.neighbour_museum))} {html.escape(str(r.neighbour_id))} "
        f"(similarity {r.similarity:.2f})'>{r.neighbour_year}</span>"
        for r in rows.itertuples()
    )
    return f"<br><small class='comparanda'>nearest dated works: {works}</small>"


def _range_text(row) -> str:
    return f" ({row['pred_low']:.0f}-{row['pred_high']:.0f})" if "inside" in row and pd.notna(row["pred_low"]) else ""


def _confusion_table(confusion: dict) -> str:
    centuries = confusion["centuries"]
    head = "<th>true \\ predicted</th>" + "".join(f"<th>{c}s</th>" for c in centuries)
    body = "".join(
        f"<tr><th>{c}s</th>"
        + "".join(f"<td{' class=diag' if i == j else ''}>{n or ''}</td>" for j, n in enumerate(row))
        + "</tr>"
        for i, (c, row) in enumerate(zip(centuries, confusion["counts"]))
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value, key: str) -> str:
    if key.startswith("within") or key == "coverage":
        return f"{value:.0%}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return html.escape(str(value))


FIGURES = [
    ("n", "works"),
    ("mae", "MAE (years)"),
    ("median_ae", "median AE"),
    ("rmse", "RMSE"),
    ("bias", "bias"),
    ("within_25", "within 25 y"),
    ("within_50", "within 50 y"),
    ("within_100", "within 100 y"),
]
RANGE_FIGURES = [("coverage", "inside range"), ("range_width", "range width")]

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1rem 1.5rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}.card{background:#f3f5f9;border-radius:6px;padding:.5rem .8rem}
.card b{display:block;font-size:1.3rem}table{border-collapse:collapse;font-size:.9rem}
td,th{padding:.2rem .6rem;text-align:right;border-bottom:1px solid #eee}img.plot{max-width:100%}
.gallery{display:flex;flex-wrap:wrap;gap:.8rem}figure{margin:0;width:220px}
figure img{width:220px;height:220px;object-fit:contain;background:#eee}figcaption{font-size:.85rem}
td.diag{background:#e3ecd9}
"""


def render_html(
    results_url: str,
    summary: dict,
    plots: list[str],
    galleries: dict,
    images: dict,
    out: str,
    neighbours: dict[str, pd.DataFrame],
) -> str:
    headline = summary["headline"]
    cards = "".join(
        f'<div class="card">{html.escape(title)}<b>{_cell(headline[key], key)}</b></div>' for key, title in FIGURES
    )
    covered = f"These figures are those of the {headline['n']} {summary['held_out']}"
    if summary["held_out"] != "all works":
        covered += f" (the model never trained on them; all {summary['n']} works: MAE {summary['mae']:.1f} y)"
    parts = [
        f"<h1>artdate report</h1><p>{html.escape(results_url)}: bias is the mean of predicted - true "
        f"(positive: predicted too late).</p><p>{covered}.</p><div class='cards'>{cards}</div>"
    ]
    for name in plots:
        with open(os.path.join(out, name), "rb") as f:
            plot = "data:image/png;base64," + base64.b64encode(f.read()).decode()
        parts.append(f'<img class="plot" alt="{html.escape(name)}" src="{plot}">')
    figures = FIGURES + (RANGE_FIGURES if "ranges" in summary else [])
    if "ranges" in summary:
        ranges = summary["ranges"]
        level = f"{ranges['level']:.0%}" if ranges["level"] is not None else "their"
        parts.append(
            f"<h2>Year ranges</h2><p>Each prediction carries a range calibrated to hold the true year for "
            f"{level} of works. On the {html.escape(summary['held_out'])}: <b>{ranges['coverage']:.0%}</b> "
            f"inside, ranges <b>{ranges['width']:.0f}</b> years wide on average. When artdate trained the "
            f"model, these validation works also calibrated the ranges, so overall they hold the level by "
            f"construction; what to read here is where they hold it (per bin, per range width below). "
            f"Coverage on works no part of training saw is measured by cross-validation (bench/recipes.py)."
            f"</p>"
        )
    if "comparanda" in summary:
        c = summary["comparanda"]
        parts.append(
            f"<h2>Comparanda</h2><p>Under each image below: the {c['k']} training works nearest to it in "
            f"the model's own embedding space, with their years: the dated works a guess rests on. Their "
            f"median year alone dates the {html.escape(c['works'])} at a mean error of "
            f"<b>{c['knn_mae']:.1f}</b> years; the model's prediction: <b>{c['model_mae']:.1f}</b> "
            f"({c['n']} works).</p>"
        )
    bins = [("bin_start", "from"), ("bin_end", "to")] + figures
    parts.append("<h2>Per 50-year bin, all works</h2>" + _table(summary["per_bin"], bins))
    parts.append(
        f"<h2>Centuries: true (rows) vs predicted (columns), {html.escape(summary['held_out'])}</h2>"
        + _confusion_table(summary["centuries"])
    )
    for key, title in (("per_museum", "Per museum, all works"), ("per_split", "Per split")):
        if key in summary:
            rows = [{"name": name, **values} for name, values in summary[key].items()]
            parts.append(f"<h2>{title}</h2>" + _table(rows, [("name", key.split("_")[1])] + figures))
    for title, rows in galleries.items():
        captions = []
        for index, row in rows.iterrows():
            uri = thumbnail_uri(images[index]) if index in images else None
            label = html.escape(" ".join(str(row[c]) for c in ("museum", "id") if c in row and pd.notna(row[c])))
            picture = f'<img alt="{label}" src="{uri}">' if uri else "<div>(image not found)</div>"
            captions.append(
                f"<figure>{picture}<figcaption>{label}<br>true <b>{row['year']:.0f}</b>, "
                f"predicted <b>{row['pred']:.0f}</b>{_range_text(row)} ({row['error']:+.0f} y)"
                f"{_comparanda_text(neighbours.get(row.get('key')))}</figcaption></figure>"
            )
        parts.append(f"<h2>{html.escape(title)}</h2><div class='gallery'>{''.join(captions) or 'none'}</div>")
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
        f"content='width=device-width'><title>artdate report</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
