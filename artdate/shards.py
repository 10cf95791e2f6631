"""Resize and encode images, write WebDataset shards, and describe a finished store in manifest.json.

A store is a directory (or S3 prefix) of `{split}-{index:06d}.tar` shards, `rejects.csv`, and
`manifest.json`, which is written last: a store without it is not finished. While packing,
`_pack/` holds the plan and one record per finished shard, so an interrupted pack resumes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import statistics
import tarfile
import warnings
from dataclasses import asdict, dataclass, field

from PIL import Image, ImageOps, UnidentifiedImageError

from . import store

MANIFEST = "manifest.json"
REJECTS = "rejects.csv"
FORMAT = "artdate-shards/1"


class ImageRejected(Exception):
    """The bytes are not a usable image; the message says why."""


def encode_image(data: bytes, size: int, quality: int = 90, max_pixels: int = 100_000_000) -> tuple[bytes, int, int]:
    """Decode, convert to RGB, shrink so the shorter side is `size` (never upscale), encode as JPEG."""
    if not data:
        raise ImageRejected("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit below
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not an image") from None
    except Image.DecompressionBombError as problem:
        raise ImageRejected(f"too many pixels: {problem}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(f"{width}x{height} is over the limit of {max_pixels} pixels")
    shorter = min(width, height)
    if image.format == "JPEG" and shorter > size:
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves >= size pixels: 2x faster.
        scale = size / shorter
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError) as problem:
        raise ImageRejected(f"corrupt or truncated image: {problem}") from None
    image = _to_rgb(image)
    shorter = min(image.size)
    if shorter > size:
        scale = size / shorter
        new_size = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
        image = image.resize(new_size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue(), image.width, image.height


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB; transparent areas become white rather than black (prints and drawings on paper)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


@dataclass
class ShardRecord:
    """What one finished shard holds; kept in _pack/ while packing, summarised in the manifest."""

    name: str
    split: str
    samples: int
    bytes: int
    sha256: str
    labels: list[dict] = field(default_factory=list)  # id, museum, year, year_start, year_end per sample
    rejects: list[dict] = field(default_factory=list)  # museum, id, stage, reason


def write_tar(path: str, samples) -> tuple[int, int, str]:
    """Write (key, jpg_bytes, labels) samples to a WebDataset tar at `path` (members key.jpg and
    key.json, next to each other); return (count, bytes, sha256). Plain tarfile: packing needs
    no torch, which webdataset's writer would import."""
    count = 0
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, jpg, labels in samples:
            for extension, data in (("jpg", jpg), ("json", json.dumps(labels).encode())):
                member = tarfile.TarInfo(f"{key}.{extension}")
                member.size, member.mtime, member.mode = len(data), 0, 0o444
                tar.addfile(member, io.BytesIO(data))
            count += 1
    return count, *file_size_and_sha256(path)


def file_size_and_sha256(path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def year_statistics(years: list[int]) -> dict:
    if not years:
        return {"count": 0}
    return {
        "count": len(years),
        "min": min(years),
        "max": max(years),
        "mean": statistics.fmean(years),
        "std": statistics.pstdev(years),
        "median": statistics.median(years),
    }


def build_manifest(records: list[ShardRecord], settings: dict, fingerprint: str, counts: dict) -> dict:
    """The store's table of contents, with the label statistics training needs."""
    shards = [{k: v for k, v in asdict(r).items() if k not in ("labels", "rejects")} for r in records if r.samples]
    years = {split: [l["year"] for r in records if r.split == split for l in r.labels] for split in ("train", "val")}
    museums: dict[str, int] = {}
    for record in records:
        for labels in record.labels:
            museums[labels["museum"]] = museums.get(labels["museum"], 0) + 1
    return {
        "format": FORMAT,
        "settings": settings,
        "fingerprint": fingerprint,
        "shards": shards,
        "splits": {
            split: {"shards": sum(s["split"] == split for s in shards), "samples": len(years[split])}
            for split in ("train", "val")
        },
        "labels": {
            "train": year_statistics(years["train"]),
            "val": year_statistics(years["val"]),
            "all": year_statistics(years["train"] + years["val"]),
        },
        "museums": dict(sorted(museums.items())),
        "packed": sum(r.samples for r in records),
        "bytes": sum(r.bytes for r in records),
        "rejects_file": REJECTS,
        **counts,
    }


def read_manifest(url: str) -> dict:
    """The manifest of a finished store; `url` is the store or its manifest.json."""
    manifest_url = url if url.endswith(".json") else store.join(url, MANIFEST)
    try:
        manifest = json.loads(store.read_bytes(manifest_url))
    except FileNotFoundError:
        raise FileNotFoundError(f"{manifest_url} not found: {url} is not a finished artdate store (run artdate pack)") from None
    except ValueError as problem:
        raise ValueError(f"{manifest_url} is not valid JSON: {problem}") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_url}: unknown format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


def shard_urls(store_url: str, manifest: dict, split: str | None = None) -> list[str]:
    """URLs of the store's shards, of one split or (split=None) all of them."""
    root = store_url[: -len(MANIFEST)].rstrip("/") if store_url.endswith(MANIFEST) else store_url
    return [store.join(root, s["name"]) for s in manifest["shards"] if split in (None, s["split"])]
