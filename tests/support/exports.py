"""Museum exports for tests and benchmarks: files in MetObjects.csv's shape, of any size, and
reading one as pack does in a process of its own, measured."""

import csv
import subprocess
import sys

from artdate.core.exports import MET_HEADER

MET_CLASSIFICATIONS = ("Paintings", "Prints", "Photographs", "Ceramics", "Textiles-Woven", "Drawings", "")
MET_DATES = (("ca. 1479–1425 B.C.", -1479, -1425), ("mid-19th century", 1834, 1866), ("1889", 1889, 1889))


def synthetic_met_row(n: int) -> list[str]:
    """Row n of a file in MetObjects.csv's shape (exports.MET_HEADER), about as long as the Met's
    own rows (230 MB for 480,000): half public domain, titles with commas, quotes and newlines,
    dimensions with the Met's \\r\\n, and now and then an undated work."""
    text, begin, end = MET_DATES[n % len(MET_DATES)] if n % 97 else ("", 0, 0)
    fields = {
        "Object Number": f"{1900 + n % 120}.{n % 1000}.{n}",
        "Is Highlight": "False",
        "Is Timeline Work": "False",
        "Is Public Domain": "True" if n % 2 else "False",
        "Object ID": str(n + 1),
        "Department": "European Paintings",
        "AccessionYear": str(1900 + n % 120),
        "Object Name": "Painting",
        "Title": f'Work {n}, a "study"\nafter the antique, with figures' if n % 5 == 0 else f"Work {n}, oil",
        "Artist Display Name": "Unknown, Dutch",
        "Artist Display Bio": "Dutch, active Haarlem, ca. 1600–1650",
        "Object Date": text,
        "Object Begin Date": str(begin),
        "Object End Date": str(end),
        "Medium": "Oil on canvas",
        "Dimensions": "H. 13.7 cm (5 3/8 in.)\r\nW. 5.6 cm (2 3/16 in.)",
        "Credit Line": "Gift of a friend of the Museum, 1921",
        "Classification": MET_CLASSIFICATIONS[n % len(MET_CLASSIFICATIONS)],
        "Link Resource": f"http://www.metmuseum.org/art/collection/search/{n + 1}",
        "Metadata Date": "12/7/2026 8:00:00 AM",
        "Repository": "Metropolitan Museum of Art, New York, NY",
        "Tags": "Men|Portraits",
    }
    return [fields.get(column, "") for column in MET_HEADER]


def write_synthetic_met_export(path: str, rows: int) -> str:
    """A file of `rows` synthetic rows in MetObjects.csv's shape, with its byte-order mark."""
    with open(path, "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.writer(f)
        writer.writerow(MET_HEADER)
        writer.writerows(synthetic_met_row(n) for n in range(rows))
    return path


READ_AND_MEASURE = """
import os, resource, sys, tempfile, time
from artdate.pack.metadata import read_metadata
started = time.perf_counter()
with tempfile.TemporaryDirectory() as scratch:
    meta = read_metadata([sys.argv[1]], year_min=-5000, year_max=2100, exclude_types=("photographs",),
                         catalog_path=os.path.join(scratch, "works.sqlite"))
    counts = (meta.catalog.count(), meta.not_public_domain, meta.catalog.excluded_count())
seconds = time.perf_counter() - started
try:  # this process's own peak (ru_maxrss keeps the forked parent's from before exec)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(*counts, seconds, peak)
"""


def read_export_in_a_fresh_process(path: str) -> tuple[int, int, int, float, float]:
    """(works, not public domain, excluded, seconds, peak RSS in MB) of reading `path` as pack
    does (its list of works in a scratch SQLite file), in a process of its own."""
    done = subprocess.run([sys.executable, "-c", READ_AND_MEASURE, path], capture_output=True, text=True, check=True)
    works, not_public, excluded, seconds, rss = done.stdout.split()
    return int(works), int(not_public), int(excluded), float(seconds), float(rss)
