"""report.html: one self-contained page (plots and images inlined) from the report's figures,
through the Jinja2 template templates/report.html (autoescaped: no text of a CSV becomes markup)."""

from __future__ import annotations

import base64
import os

import pandas as pd

from artdate.core.works import sample_key
from artdate.report.gallery import thumbnail_uri

# The figures of each table row, and of the headline cards (the first eight).
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


def render_html(
    results_url: str,
    summary: dict,
    plots: list[str],
    galleries: dict[str, pd.DataFrame],
    images: dict[int, bytes],
    out: str,
    neighbours: dict[str, pd.DataFrame],
    to_date: pd.DataFrame,
    nearest_images: dict[str, bytes],
) -> str:
    from jinja2 import Environment, PackageLoader

    environment = Environment(loader=PackageLoader("artdate.report", "templates"), autoescape=True)
    environment.filters.update(cell=cell, zip=zip, named_rows=lambda rows: [{"name": k, **v} for k, v in rows.items()])
    return environment.get_template("report.html").render(
        results_url=results_url,
        summary=summary,
        figures=FIGURES + (RANGE_FIGURES if "ranges" in summary else []),
        plots=[(name, png_uri(os.path.join(out, name))) for name in plots],
        galleries=[
            (title, [caption(index, row, images, neighbours) for index, row in rows.iterrows()])
            for title, rows in galleries.items()
        ],
        undated=[undated_caption(index, row, images, neighbours, nearest_images) for index, row in to_date.iterrows()],
    )


def cell(value, key: str) -> str:
    """A figure as a table shows it: shares as percentages, other numbers to a tenth."""
    if key.startswith("within") or key == "coverage":
        return f"{value:.0%}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def png_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def caption(index: int, row: pd.Series, images: dict[int, bytes], neighbours: dict[str, pd.DataFrame]) -> dict:
    """What a gallery shows of one work: its thumbnail, museum and id, years, range and comparanda."""
    near = neighbours.get(row.get("key"))
    return {
        "image": thumbnail_uri(images[index]) if index in images else None,
        "label": " ".join(str(row[c]) for c in ("museum", "id") if c in row and pd.notna(row[c])),
        "year": row["year"],
        "pred": row["pred"],
        "error": row["error"],
        "range": f"{row['pred_low']:.0f}-{row['pred_high']:.0f}"
        if "inside" in row and pd.notna(row["pred_low"])
        else "",
        "neighbours": []
        if near is None
        else [
            {"museum": n.neighbour_museum, "id": n.neighbour_id, "year": n.neighbour_year, "similarity": n.similarity}
            for n in near.itertuples()
        ],
    }


def undated_caption(
    index: int, row: pd.Series, images: dict[int, bytes], neighbours: dict[str, pd.DataFrame], nearest: dict[str, bytes]
) -> dict:
    """What the undated gallery shows of a work to date: its thumbnail, its predicted year and
    range, and the dated training works nearest to it, each with its own thumbnail and year."""
    shown = caption(index, row, images, neighbours)
    for near in shown["neighbours"]:
        image = nearest.get(sample_key(str(near["museum"]), str(near["id"])))
        near["image"] = thumbnail_uri(image, 72) if image is not None else None
    return shown
