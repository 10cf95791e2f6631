"""A synthetic corpus of dated works: small JPEGs whose look carries the year, so a model can learn it.

The demo's data on a machine without real images, and the stand-in for a whole collection in
benchmarks. Each work's year is drawn uniformly from 1200..1930. Its image is a 64 px square whose
colour moves from blue (1200) to red (1930), with one horizontal stripe per century since 1200, and
per-work random jitter of colour, stripe phase and noise, so no two images are the same. Files go
into sub-folders of 1,000 (a million files in one folder would crawl), and `works.csv` has
`museum,id,year,file` rows for `artdate pack`.
"""

import csv
import io
import os
import random

from PIL import Image, ImageDraw

YEARS = (1200, 1930)
SIDE = 64


def synthetic_image(year: int, rng: random.Random) -> bytes:
    t = (year - YEARS[0]) / (YEARS[1] - YEARS[0])
    jitter = lambda: rng.randint(-25, 25)  # noqa: E731
    colour = tuple(max(0, min(255, int(c) + jitter())) for c in (255 * t, 90 + 60 * rng.random(), 255 * (1 - t)))
    image = Image.new("RGB", (SIDE, SIDE), colour)
    draw = ImageDraw.Draw(image)
    stripes = 1 + (year - YEARS[0]) // 100
    offset = rng.randint(0, 5)
    for stripe in range(stripes):
        y = offset + stripe * (SIDE - 8) // stripes
        draw.rectangle([0, y, SIDE, y + 2], fill=(240, 240, 240))
    for _ in range(12):  # speckles: texture JPEG must spend bytes on
        x, y = rng.randrange(SIDE), rng.randrange(SIDE)
        draw.point((x, y), fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def generate(works: int, out: str, seed: int = 0) -> str:
    """Write `works` images and works.csv under `out` (kept: a second call reuses them); return the CSV path."""
    csv_path = os.path.join(out, "works.csv")
    if os.path.exists(csv_path):
        return csv_path
    os.makedirs(out, exist_ok=True)
    rng = random.Random(seed)
    partial = csv_path + ".partial"
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["museum", "id", "year", "file"])
        for index in range(works):
            folder = f"images/{index // 1000:04d}"
            if index % 1000 == 0:
                os.makedirs(os.path.join(out, folder), exist_ok=True)
            year = rng.randint(*YEARS)
            file = f"{folder}/{index}.jpg"
            with open(os.path.join(out, file), "wb") as image:
                image.write(synthetic_image(year, random.Random(f"{seed}/{index}")))
            writer.writerow(["synth", index, year, file])
    os.replace(partial, csv_path)
    return csv_path
