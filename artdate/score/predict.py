"""`artdate predict`: images (paths, s3:// or http(s) URLs, folders) -> years, from a checkpoint
alone, in this one process: no cluster. With --out, the predictions go to a CSV with the columns
of score's results.csv (the works as undated: their year empty), which `artdate report` reads."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from artdate.core import store
from artdate.core.config import PredictConfig
from artdate.core.http_client import FetchError, HttpClient
from artdate.core.images import ImageRejected, encode_image, open_rgb
from artdate.core.works import UNDATED, sample_key
from artdate.data import pipeline
from artdate.model import comparanda
from artdate.model.checkpoints import load_checkpoint, resolve_checkpoint
from artdate.model.network import predict_years
from artdate.model.ranges import Predictions
from artdate.score.score_parts import COLUMNS, result_row, skipped_url

# What a folder's images are: the extensions of the formats pack reads.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".jp2")
BATCH = 32  # images a forward pass


@dataclass
class Predicted:
    """One image's prediction: its year and calibrated range, and the nearest training works."""

    location: str
    year: float
    low: float
    high: float
    spread: float | None
    nearest: list[dict]


def read_image_bytes(location: str, timeout: float, max_bytes: int, allow_link_local: bool = False) -> bytes:
    if location.startswith(("http://", "https://")):
        client = HttpClient(
            rate=0, timeout=timeout, max_bytes=max_bytes, attempts=2, backoff=0.5, allow_link_local=allow_link_local
        )
        return client.get(location)
    if "://" in location and not store.is_s3(location):
        raise ValueError(f"{location}: only local paths, s3:// and http(s):// URLs are supported")
    try:
        return store.read_bytes(location, max_bytes)
    except FileNotFoundError:
        raise FileNotFoundError(f"{location}: no such image file") from None
    except IsADirectoryError:
        raise ValueError(f"{location} is a folder, not an image") from None


def image_locations(given: tuple[str, ...]) -> list[str]:
    """Each location as given, a local folder as the image files in it (by name, not descending);
    an image given twice (x.jpg and ./x.jpg, or in a folder and by name) once."""
    found = []
    for location in given:
        if "://" not in location and os.path.isdir(location):
            names = sorted(name for name in os.listdir(location) if name.lower().endswith(IMAGE_EXTENSIONS))
            if not names:
                raise ValueError(f"{location}: a folder with no image in it ({', '.join(IMAGE_EXTENSIONS)})")
            found += [os.path.join(location, name) for name in names]
        else:
            found.append(location)
    seen: set[str] = set()
    unique = []
    for location in found:
        same = location if "://" in location else os.path.realpath(location)
        if same not in seen:
            seen.add(same)
            unique.append(location)
    return unique


def work_ids(locations: list[str]) -> list[str]:
    """Each image's id in the results: its file name without the extension, or with it where two
    images share a stem (x.png, x.gif), or the location itself where they share the name too."""
    names = [os.path.basename(location.rstrip("/")) or location for location in locations]
    stems = [os.path.splitext(name)[0] or name for name in names]
    ids = [stem if stems.count(stem) == 1 else name for stem, name in zip(stems, names)]
    return [i if ids.count(i) == 1 else location for i, location in zip(ids, locations)]


def as_training_saw(raw: bytes, location: str, max_pixels: int, spec):
    """The image as training saw its images: shrunk and re-encoded as pack stored them (when the
    checkpoint knows how), then decoded as the loader decodes shards."""
    try:
        if spec.pack_size:
            jpg, _, _ = encode_image(raw, spec.pack_size, spec.pack_quality, max_pixels)
            return pipeline.decode_image(jpg)
        from torchvision.transforms.v2.functional import pil_to_tensor

        return pil_to_tensor(open_rgb(raw, max_pixels))
    except ImageRejected as problem:
        raise ValueError(f"{location}: {problem}") from None


def predict_images(cfg: PredictConfig) -> tuple[list[Predicted], list[tuple[str, str]], float]:
    """(each readable image's prediction, in the order given; (location, why) of each image that
    could not be read; the level its ranges are calibrated to). One image that cannot be read is
    an error; among several, it is skipped and named, and none readable is an error."""
    if cfg.out:  # found now, not after every image is dated
        store.check_output_file(cfg.out, "--out")
    locations = image_locations(cfg.images)
    model, spec, info = load_checkpoint(cfg.checkpoint)
    transform = pipeline.eval_transform(spec.image_size)
    reference = None  # read once: it can hold the embeddings of every training work
    if cfg.comparanda:
        checkpoint = resolve_checkpoint(store.absolute(cfg.checkpoint))
        reference = comparanda.saved_reference(store.absolute(cfg.comparanda), checkpoint)
    done: list[Predicted] = []
    failed: list[tuple[str, str]] = []
    for start in range(0, len(locations), BATCH):
        readable, inputs = [], []
        for location in locations[start : start + BATCH]:
            try:
                raw = read_image_bytes(location, cfg.timeout, cfg.max_bytes, cfg.allow_link_local)
                inputs.append(transform(as_training_saw(raw, location, cfg.max_pixels, spec)))
                readable.append(location)
            except (FetchError, ValueError, FileNotFoundError) as problem:
                if len(locations) == 1:  # the one image asked for: its error is the command's
                    raise ValueError(str(problem)) if isinstance(problem, FetchError) else problem from None
                failed.append((location, str(problem)))
        if readable:
            done += _predicted(model, spec, info, torch.stack(inputs), readable, reference)
    if not done:
        raise ValueError(f"none of the {len(locations)} images could be read: " + "; ".join(why for _, why in failed))
    return done, failed, info["calibration"].level


def _predicted(model, spec, info, inputs, locations, reference: dict | None) -> list[Predicted]:
    embeddings: list[torch.Tensor] = []
    predicted: Predictions = predict_years(
        model, spec, inputs, torch.device("cpu"), info["calibration"], embeddings=embeddings if reference else None
    )
    keys = [sample_key("", location) for location in locations]
    nearest = comparanda.image_neighbours(reference, embeddings[0].numpy(), keys) if reference else []
    spreads = predicted.spread.tolist() if predicted.spread is not None else [None] * len(locations)
    return [
        Predicted(location, float(year), float(low), float(high), spread, nearest[i] if nearest else [])
        for i, (location, year, low, high, spread) in enumerate(
            zip(locations, predicted.year.tolist(), predicted.low.tolist(), predicted.high.tolist(), spreads)
        )
    ]


def write_results(out: str, predicted: list[Predicted], level: float) -> None:
    """The predictions as score's results.csv has its rows, each work undated (year and diff
    empty), its id the image's name and `path` where it is (relative to the CSV's folder when it
    lies under it, so report shows it); with comparanda, the neighbours file beside it."""
    base = os.path.dirname(os.path.abspath(out)) if not store.is_s3(out) else ""
    rows, neighbours = [], []
    for work, name in zip(predicted, work_ids([work.location for work in predicted])):
        key = sample_key("", work.location)
        local = base and "://" not in work.location
        path = os.path.relpath(os.path.abspath(work.location), base) if local else work.location
        row = result_row(name, "", key, UNDATED, (work.year, work.low, work.high, work.spread), level)
        rows.append({**row, "path": path})
        neighbours += work.nearest
    store.write_bytes(out, store.csv_bytes(rows, [*COLUMNS, "path"]))
    if neighbours:
        store.write_bytes(comparanda.neighbours_url(out), store.csv_bytes(neighbours, comparanda.NEIGHBOUR_COLUMNS))
    # What an earlier predict or score left beside `out` is of other works: report would show it.
    stale = [comparanda.reference_url(out), skipped_url(out)] + ([] if neighbours else [comparanda.neighbours_url(out)])
    for url in stale:
        if store.exists(url):
            store.delete(url)
