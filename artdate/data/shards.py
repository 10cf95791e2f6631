"""Write WebDataset shards, and describe a finished store in manifest.json (images.py encodes the images).

A store is a directory (or S3 prefix) of `{split}-{index:06d}.tar` shards, `rejects.csv`, and
`manifest.json`, which is written last: a store without it is not finished. While packing,
`_pack/` holds the plan and one record per finished shard, so an interrupted pack resumes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from collections import Counter
from dataclasses import dataclass, field

from artdate.core import store

MANIFEST = "manifest.json"
REJECTS = "rejects.csv"
FORMAT = "artdate-shards/1"


@dataclass
class ShardRecord:
    """What one finished shard holds; kept in _pack/ while packing, summarised in the manifest.
    Labels are kept as counts (year -> works, museum -> works), so a record's size, and the pack
    driver's memory, do not grow with the number of works."""

    name: str
    split: str
    samples: int
    bytes: int
    sha256: str
    years: dict[str, int] = field(default_factory=dict)  # str(year) -> works (JSON keys are strings)
    museums: dict[str, int] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)  # museum, id, stage, reason


SPLITS = ("train", "val", "undated")  # undated: works to date, never trained or validated on


@dataclass
class LabelTotals:
    """Label counts of a whole store, added up shard by shard: samples per split, and years per
    split of the works that have one."""

    samples: Counter = field(default_factory=Counter)
    years: dict[str, Counter] = field(default_factory=lambda: {split: Counter() for split in SPLITS})
    museums: Counter = field(default_factory=Counter)

    def add(self, record: ShardRecord) -> None:
        self.samples[record.split] += record.samples
        self.years[record.split].update({int(year): n for year, n in record.years.items()})
        self.museums.update(record.museums)


def tar_members(url: str, wanted=lambda member: True):
    """(name, bytes) of each file in the tar at `url` for which `wanted(member)` holds, streamed
    (the others are skipped, not kept)."""
    with store.open_read(url) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.isfile() and wanted(member):
                yield member.name, tar.extractfile(member).read()  # type: ignore[union-attr]  # a file has a body


def write_tar(path: str, samples) -> tuple[int, int, str]:
    """Write (key, jpg_bytes, labels) samples to a WebDataset tar at `path` (members key.jpg and
    key.json, next to each other); return (count, bytes, sha256), hashed as it is written. Plain
    tarfile: packing needs no torch, which webdataset's writer would import."""
    count = 0
    with store.naming(path), open(path, "wb") as file:
        hashed = _HashingWriter(file)
        with tarfile.open(fileobj=hashed, mode="w", format=tarfile.USTAR_FORMAT) as tar:  # type: ignore[call-overload]
            for key, jpg, labels in samples:
                for extension, data in (("jpg", jpg), ("json", json.dumps(labels).encode())):
                    member = tarfile.TarInfo(f"{key}.{extension}")
                    member.size, member.mtime, member.mode = len(data), 0, 0o444
                    tar.addfile(member, io.BytesIO(data))
                count += 1
    return count, hashed.size, hashed.digest.hexdigest()


class _HashingWriter:
    """A file that hashes what passes through it, so a finished shard need not be read again."""

    def __init__(self, file):
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.file.write(data)

    def tell(self) -> int:
        return self.size


def year_statistics(histogram: Counter) -> dict:
    """count, min, max, mean, std (population) and median of the years in a year -> works count."""
    count = sum(histogram.values())
    if not count:
        return {"count": 0}
    years = sorted(histogram)
    mean = sum(year * n for year, n in histogram.items()) / count
    variance = sum(n * (year - mean) ** 2 for year, n in histogram.items()) / count
    return {
        "count": count,
        "min": years[0],
        "max": years[-1],
        "mean": mean,
        "std": math.sqrt(variance),
        "median": _median(years, histogram, count),
    }


def _median(years: list[int], histogram: Counter, count: int) -> float:
    """statistics.median of the expanded list, from the counts."""
    low_rank, high_rank = (count - 1) // 2, count // 2  # 0-based ranks of the middle one or two
    seen, low = 0, None
    for year in years:
        seen += histogram[year]
        if low is None and seen > low_rank:
            low = year
        if seen > high_rank:
            assert low is not None  # low_rank <= high_rank
            return (low + year) / 2 if low != year else year
    raise AssertionError("unreachable: the ranks lie within the count")


def build_manifest(shards: list[dict], totals: LabelTotals, settings: dict, fingerprint: str, counts: dict) -> dict:
    """The store's table of contents (one entry per non-empty shard), with the label statistics
    training needs."""
    train, val = totals.years["train"], totals.years["val"]
    return {
        "format": FORMAT,
        "settings": settings,
        "fingerprint": fingerprint,
        "shards": shards,
        # The undated split is counted here and left out of the label statistics (the museum's
        # dates of some of its works included): no model learns from it.
        "splits": {
            split: {"shards": sum(s["split"] == split for s in shards), "samples": totals.samples[split]}
            for split in SPLITS
        },
        "labels": {"train": year_statistics(train), "val": year_statistics(val), "all": year_statistics(train + val)},
        "museums": dict(sorted(totals.museums.items())),
        "packed": sum(s["samples"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "rejects_file": REJECTS,
        **counts,
    }


def read_manifest(url: str) -> dict:
    """The manifest of a finished store; `url` is the store or its manifest.json."""
    manifest_url = url if url.endswith(".json") else store.join(url, MANIFEST)
    try:
        manifest = json.loads(store.read_bytes(manifest_url))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{manifest_url} not found: {url} is not a finished artdate store (run artdate pack)"
        ) from None
    except ValueError as problem:
        raise ValueError(f"{manifest_url} is not valid JSON: {problem}") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_url}: unknown format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


def shard_urls(store_url: str, manifest: dict, split: str | None = None) -> list[str]:
    """URLs of the store's shards, of one split or (split=None) all of them."""
    return [shard_url(store_url, s) for s in manifest["shards"] if split in (None, s["split"])]


def shard_url(store_url: str, entry: dict) -> str:
    """The URL of the shard of a manifest `entry`, in the store at `store_url` (or its manifest's URL)."""
    root = store_url[: -len(MANIFEST)].rstrip("/") if store_url.endswith(MANIFEST) else store_url
    return store.join(root, entry["name"])
