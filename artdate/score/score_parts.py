"""The parts of a score run and their assembly into results.csv.

A run of `artdate score --out results.csv` keeps each finished shard in `results.csv.parts/`: its
rows (`<shard>.csv`), the samples it could not read (`<shard>.skipped.csv`) and its rows'
embeddings (for the comparanda), with `_run.json` naming the checkpoint and store they are of and
`_lease` the run that holds them. `assemble` streams the parts into the final file, checking that
every shard's rows and skips account for all of its samples.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from artdate.core import store
from artdate.data.pipeline import Skip
from artdate.model import comparanda

# pred_low..pred_high: the calibrated range meant to hold range_level of true years.
COLUMNS = [
    "id",
    "museum",
    "year",
    "pred",
    "pred_low",
    "pred_high",
    "diff",
    "split",
    "shard",
    "year_start",
    "year_end",
    "spread",
    "range_level",
    "key",
]
SKIP_COLUMNS = ["shard", "key", "reason"]


def result_row(
    work_id: str,
    museum: str,
    key: str,
    split: str,
    predicted: tuple[float, float, float, float | None],
    level: float,
    dated: tuple[int, int, int] | None = None,
    shard: str = "",
) -> dict:
    """A row of results.csv (COLUMNS), score's and predict's alike: the predicted (year, low, high,
    spread) rounded as the file keeps them (the year and spread to 0.1 y, the range to whole years);
    a dated work's (year, year_start, year_end) and its error, all empty for a work to date."""
    year_predicted, low, high, spread = predicted
    year, year_start, year_end = dated or (None, None, None)
    return {
        "id": work_id,
        "museum": museum,
        "year": year,
        "pred": round(year_predicted, 1),
        "pred_low": round(low),
        "pred_high": round(high),
        "range_level": level,
        "diff": round(year_predicted - year, 1) if year is not None else None,
        "split": split,
        "shard": shard,
        "year_start": year_start,
        "year_end": year_end,
        "spread": None if spread is None else round(spread, 1),
        "key": key,
    }


CLAIM_FILE = "_run.json"  # which checkpoint and shards the parts are of (store.claim)
LEASE_FILE = "_lease"


def part_name(shard_url: str) -> str:
    return shard_url.rstrip("/").rsplit("/", 1)[-1] + ".csv"


def skips_name(shard_url: str) -> str:
    return part_name(shard_url)[: -len(".csv")] + ".skipped.csv"


def skipped_url(out: str) -> str:
    """Where the samples that could not be decoded are listed: results.csv -> results.skipped.csv."""
    stem = out[: -len(".csv")] if out.endswith(".csv") else out
    return stem + ".skipped.csv"


def claim_parts(parts: str, checkpoint: str, shards_url: str) -> None:
    """Parts of another checkpoint or store must not be mixed into these results."""
    differences = store.claim(store.join(parts, CLAIM_FILE), {"checkpoint": checkpoint, "shards": shards_url})
    if differences:
        held = ", ".join(f"{name} {then}" for name, (then, _) in differences.items())
        raise ValueError(f"{parts} holds partial results of another run ({held}); delete it or write to another --out")


def keep_part(parts: str, url: str, samples: int, rows: list[dict], skips: list[Skip], features: np.ndarray) -> bool:
    """Write a scored shard's part (its rows, skips and embeddings); False, writing nothing, when
    its rows and skips do not account for all of its `samples` (a shard not read whole)."""
    if any(s.unread for s in skips) or len(rows) + len(skips) != samples:
        return False
    # Skips and embeddings are written before the rows: a part with rows is a finished shard.
    if skips:
        store.write_bytes(
            store.join(parts, skips_name(url)), store.csv_bytes([s.record() for s in skips], SKIP_COLUMNS)
        )
    store.write_bytes(store.join(parts, comparanda.features_name(part_name(url))), comparanda.array_bytes(features))
    store.write_bytes(store.join(parts, part_name(url)), store.csv_bytes(rows, COLUMNS))
    return True


def clear_parts(parts: str) -> None:
    """Delete the parts once assembled. _run.json goes last: parts left by a crash half-way
    through still name their checkpoint, so a rerun with another one refuses them instead of
    mixing them in."""
    for name in sorted(set(store.list_names(parts)) - {LEASE_FILE}, key=lambda name: name == CLAIM_FILE):
        store.delete(store.join(parts, name))


def assemble(parts: str, shard_urls: list[str], samples: dict[str, int], out: str) -> tuple[int, int]:
    """Stream the parts into `out` (and the skip lists into its .skipped.csv), one shard at a
    time, checking that each shard's rows and skips account for all of its samples. Returns
    (rows, unreadable samples). Memory holds one part at a time, whatever the corpus size."""
    rows = unreadable = 0
    names = set(store.list_names(parts))
    with store.atomic_output(out) as results, store.atomic_output(skipped_url(out)) as skip_file:
        results.write(",".join(COLUMNS).encode() + b"\n")
        skip_file.write(",".join(SKIP_COLUMNS).encode() + b"\n")
        for url in shard_urls:
            body, count = _csv_body(store.read_bytes(store.join(parts, part_name(url))))
            skips, skip_count = b"", 0
            if skips_name(url) in names:
                skips, skip_count = _csv_body(store.read_bytes(store.join(parts, skips_name(url))))
            if count + skip_count != samples[url]:
                raise ValueError(
                    f"{parts}/{part_name(url)} accounts for {count + skip_count} of the "
                    f"{samples[url]} samples of {url}: delete it and score again"
                )
            results.write(body)
            skip_file.write(skips)
            rows += count
            unreadable += skip_count
        if not unreadable:
            skip_file.discard()
            store.delete(skipped_url(out))  # a list left by an earlier run of the same --out
    return rows, unreadable


def _csv_body(part: bytes) -> tuple[bytes, int]:
    """(the part's rows without the header, how many rows): csv parsing, since a quoted field may
    hold a line break."""
    header_end = part.find(b"\n") + 1
    body = part[header_end:] if header_end else b""
    return body, sum(1 for _ in csv.reader(io.StringIO(body.decode())))
