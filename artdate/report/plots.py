"""The report's figures as PNG files: works and errors per 50-year bin, predicted against true
year, the ranges' reliability and the training run's learning curves (matplotlib, no display)."""

from __future__ import annotations

import os

import pandas as pd

from artdate.report.metrics import held_out, range_level

# Every figure the report may draw: a report into a folder removes those this run did not draw.
FIGURES = (
    "works_per_bin.png",
    "error_per_bin.png",
    "pred_vs_year.png",
    "learning_curves.png",
    "range_reliability.png",
    "undated_years.png",
)


def make_plots(frame: pd.DataFrame, out: str) -> list[str]:
    plt = _pyplot()

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


def learning_curve_plot(curve: list[dict], out: str) -> str:
    plt = _pyplot()

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


def _pyplot():
    """matplotlib's pyplot drawing to files only (no display); imported when a report draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, out: str, name: str) -> str:
    figure.tight_layout()
    figure.savefig(os.path.join(out, name), dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return name


def undated_plot(undated: pd.DataFrame, out: str) -> str:
    """The predicted years of the works to date, per 50-year bin."""
    plt = _pyplot()

    figure, axis = plt.subplots(figsize=(9, 3.5))
    low, high = int(undated["pred"].min() // 50 * 50), int(undated["pred"].max() // 50 * 50 + 50)
    axis.hist(undated["pred"], bins=range(low, high + 1, 50), color="#8a5a9e")
    axis.set(title=f"Predicted years of the {len(undated)} works to date", xlabel="predicted year", ylabel="works")
    return _save(figure, out, "undated_years.png")
