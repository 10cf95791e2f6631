"""A dated work, and the two names derived from it everywhere: its sample key and its seeds.

The key names a work's files in the shards; `derive_seed` turns (seed, purpose, ...) into a
number, which places works in splits and shard plans and seeds the loaders.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

UNDATED = "undated"  # the split of works with no date: scored, never trained or validated on


def middle_year(start: int, end: int) -> int:
    """The year a range stands for when no year is given: its middle, halves rounded up."""
    return math.floor((start + end) / 2 + 0.5)


@dataclass(frozen=True, slots=True)
class Work:
    museum: str
    id: str
    year: int | None  # None (and the range None): a work to date, in the UNDATED split
    year_start: int | None
    year_end: int | None
    split: str
    file: str = ""  # image path as written in the CSV (relative to the CSV or --images)
    url: str = ""
    title: str = ""
    artist: str = ""
    csv_dir: str = ""
    source: str = ""  # the metadata file (one string shared by its works) ...
    line: int = 0  # ... and the line, for messages
    date_text: str = ""  # the date as the metadata wrote it ("c. 1650", the Met's Object Date), if any

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def key(self) -> str:
        return sample_key(self.museum, self.id)

    def labels(self) -> dict:
        """The labels stored with each sample (DESIGN.md); `date_from` says where the date came
        from (the metadata's columns here; a museum's record for a work the metadata left undated)."""
        return {
            "id": self.id,
            "museum": self.museum,
            "year": self.year,
            "year_start": self.year_start,
            "year_end": self.year_end,
            "date_from": "metadata" if self.year is not None else "",
            "split": self.split,
            "title": self.title,
            "artist": self.artist,
            "date_text": self.date_text,
        }


PLAIN_MUSEUM = re.compile(r"[A-Za-z0-9-]+")
PLAIN_ID = re.compile(r"[A-Za-z0-9_-]+")
MAX_KEY = 80  # with ".json" well inside a tar header's 100-character name


def sample_key(museum: str, work_id: str) -> str:
    """The WebDataset key of a work: unique for every (museum, id) and at most MAX_KEY characters
    of [A-Za-z0-9_~-]. WebDataset keys may not contain dots (they start the extension) or slashes.
    A plain museum and id give `{museum}_{id}` (the museum has no '_', so the split is
    unambiguous); anything else (dots, spaces, accents, a long museum name) gives a readable prefix
    and, after a '~' that no plain key holds, a hash of the exact museum and id."""
    plain = f"{museum}_{work_id}"
    if PLAIN_MUSEUM.fullmatch(museum) and PLAIN_ID.fullmatch(work_id) and len(plain) <= MAX_KEY:
        return plain
    digest = hashlib.sha256(f"{museum}\0{work_id}".encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", plain)[: MAX_KEY - len(digest) - 1]
    return f"{readable}~{digest}"


def derive_seed(*parts) -> int:
    """A 63-bit number from (seed, purpose, epoch, rank, ...): distinct for every combination
    (sums like seed * 1000 + rank collide), and the same on every machine. It seeds the loaders
    and places works in splits and shard plans (a shuffle that needs no memory)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def assign_split(museum: str, work_id: str, seed: int, val_fraction: float) -> str:
    return "val" if derive_seed(seed, museum, work_id) / 2**63 < val_fraction else "train"
