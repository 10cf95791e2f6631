"""`artdate report`: where the model is right and wrong, from any CSV with `year` and `pred`.

Writes summary.json (metrics.py), the plots (plots.py) and report.html (report_page.py): one
self-contained page with the figures, tables and galleries of the best hits and the worst misses
each way (gallery.py). With --run, the training run's learning curves lead the page.
"""

from __future__ import annotations

import json
import os

import pandas as pd

from artdate.core import store
from artdate.core.config import ReportConfig
from artdate.report.gallery import find_images, neighbour_images, pick_galleries, pick_undated, read_neighbours
from artdate.report.metrics import comparanda_summary, read_results, summarize
from artdate.report.plots import FIGURES, learning_curve_plot, make_plots, undated_plot
from artdate.report.report_page import render_html


def run_report(cfg: ReportConfig) -> dict:
    if os.path.exists(cfg.out) and not os.path.isdir(cfg.out):
        raise ValueError(f"--out {cfg.out} is a file; the report needs a folder")
    frame = read_results(cfg.results)
    dated, undated = frame[frame["dated"]], frame[~frame["dated"]]
    os.makedirs(cfg.out, exist_ok=True)
    summary = summarize(frame)
    neighbours = read_neighbours(cfg.results, frame)
    if neighbours and len(dated):
        summary["comparanda"] = comparanda_summary(frame, neighbours)
    if cfg.run:
        summary["learning_curve"] = learning_curve(cfg.run)
    with open(os.path.join(cfg.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plots = make_plots(dated, cfg.out) if len(dated) else []
    if cfg.run:
        plots.insert(0, learning_curve_plot(summary["learning_curve"], cfg.out))
    galleries = pick_galleries(dated, cfg.gallery) if len(dated) else {}
    to_date = pick_undated(undated, cfg.gallery)
    if len(undated):
        plots.append(undated_plot(undated, cfg.out))
    wanted = pd.concat([*galleries.values(), to_date])
    images = find_images(wanted[~wanted.index.duplicated()], cfg.results, cfg.shards)
    nearest_images = neighbour_images(to_date, neighbours, cfg.results)
    page = render_html(cfg.results, summary, plots, galleries, images, cfg.out, neighbours, to_date, nearest_images)
    for name in set(FIGURES) - set(plots):  # an earlier report's, of other results: not this page's
        if os.path.exists(os.path.join(cfg.out, name)):
            os.remove(os.path.join(cfg.out, name))
    partial = os.path.join(cfg.out, "report.html.partial")
    with open(partial, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(partial, os.path.join(cfg.out, "report.html"))
    return summary


def learning_curve(run_url: str) -> list[dict]:
    """The run's metrics per epoch, from the history its checkpoints carry (loop.CURVE). `run_url`
    is a run's --storage URL or one of its checkpoints."""
    from artdate.model.checkpoints import (  # here: a report without --run needs no torch
        CHECKPOINT_FILE,
        run_checkpoints,
    )

    run_url = run_url.rstrip("/")
    if store.exists(store.join(run_url, CHECKPOINT_FILE)):
        run_url = run_url.rsplit("/", 1)[0]
    checkpoints = run_checkpoints(run_url)
    if not checkpoints:
        raise FileNotFoundError(f"--run {run_url}: no checkpoints of a training run there")
    # The longest history: a checkpoint inside an epoch carries the curve up to the epoch before.
    return max((metrics["history"] for metrics in checkpoints.values()), key=len)
