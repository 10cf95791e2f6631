"""The report's galleries: which works to show, and their images as thumbnails.

Images are read only from shards listed in their store's manifest (the `shard` + `key` columns,
or --shards) and from `path`/`file` columns under the CSV's own folder: a CSV from elsewhere cannot
make the page inline other files. The comparanda under each image come from score's neighbours
file beside the results.
"""

from __future__ import annotations

import base64
import io
import os
import tarfile

import numpy as np
import pandas as pd

from artdate.core import store
from artdate.core.images import ImageRejected, open_rgb
from artdate.core.works import sample_key
from artdate.data import shards
from artdate.model import comparanda

MAX_IMAGE_BYTES = 50_000_000  # gallery images, as pack's --max-bytes
MAX_IMAGE_PIXELS = 100_000_000


def pick_galleries(frame: pd.DataFrame, size: int) -> dict[str, pd.DataFrame]:
    return {
        "Best hits": frame.nsmallest(size, "abs_error"),
        "Worst misses: predicted older than they are": frame[frame["error"] < 0].nsmallest(size, "error"),
        "Worst misses: predicted younger than they are": frame[frame["error"] > 0].nlargest(size, "error"),
    }


def pick_undated(frame: pd.DataFrame, size: int) -> pd.DataFrame:
    """`size` works to date, spread evenly over their predicted years (earliest to latest)."""
    ordered = frame.sort_values("pred")
    if len(ordered) <= size:
        return ordered
    return ordered.iloc[np.linspace(0, len(ordered) - 1, size).round().astype(int)]


def neighbour_images(works: pd.DataFrame, neighbours: dict[str, pd.DataFrame], results_url: str) -> dict[str, bytes]:
    """The images of the dated works nearest to `works`, by their keys: each read from the shard
    its neighbours row names (score's neighbours file; only shards its store's manifest lists)."""
    wanted = {}
    for key in works.get("key", pd.Series(dtype=str)):
        table = neighbours.get(key)
        if table is None or "neighbour_shard" not in table.columns:
            continue
        for near in table.itertuples():
            wanted[sample_key(str(near.neighbour_museum), str(near.neighbour_id))] = str(near.neighbour_shard)
    rows = pd.DataFrame({"key": list(wanted), "shard": list(wanted.values())})
    return {rows.loc[index, "key"]: data for index, data in find_images(rows, results_url).items()}


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
        dtype={"neighbour_id": str, "neighbour_museum": str, "neighbour_shard": str, "key": str},
        keep_default_na=False,
    )
    return {key: rows.sort_values("rank") for key, rows in table.groupby("key")}
