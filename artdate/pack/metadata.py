"""Read and validate metadata CSVs of works, and split them into train/val/undated.

Accepts the 2017 experiment's `id,year` files and richer ones with `museum`, `year_start`,
`year_end`, `file`, `url`, `title`, `artist`. A row with no year at all (no year column, or all
three empty) is a work to date: it goes to the `undated` split, which is never trained or
validated on. Every problem names the file and line. The train/val split is a hash of the seed,
museum and id, so a work lands in the same split on every run and machine.
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
from dataclasses import dataclass, field

from artdate.core.exports import Export, export_of, translate
from artdate.core.works import UNDATED, Work, assign_split, middle_year
from artdate.pack.catalog import Catalog
from artdate.pack.dates import read_date
from artdate.pack.fetched_image import Excluded, TypeFilter

SANE_YEARS = (-10000, 2100)
# Whole words of a file name that name a museum: met-data.csv, rijksmuseum-data.csv, rijks_2017.csv.
MUSEUM_WORDS = {"met": "met", "metmuseum": "met", "rijks": "rijks", "rijksmuseum": "rijks"}
DEFAULT_MUSEUM = "unknown"  # neither a column, --museum nor the file name says
MAX_LISTED_ERRORS = 20


class MetadataError(ValueError):
    pass


@dataclass(frozen=True)
class Rejected:
    museum: str
    id: str
    reason: str
    where: str


@dataclass
class MetadataResult:
    catalog: Catalog  # the works, in a table (see catalog.py)
    rejected: list[Rejected] = field(default_factory=list)  # bad rows skipped with skip_bad_rows
    not_public_domain: int = 0  # rows an export marks as not public domain: never requested
    duplicates: int = 0  # exact duplicate rows dropped
    out_of_window: int = 0  # valid rows outside [year_min, year_max]

    @property
    def works(self) -> list[Work]:
        """The works inside the year window, in file order (a list: for small reads)."""
        return list(self.catalog.in_file_order())


def parse_year(text: str, column: str) -> int | None:
    """'1631' or '1631.0' -> 1631; '' -> None; anything else is an error naming the column."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{column} {text!r} is not a whole year")
    value = int(value)
    if not SANE_YEARS[0] <= value <= SANE_YEARS[1]:
        raise ValueError(f"{column} {value} is outside any sane range {SANE_YEARS[0]}..{SANE_YEARS[1]}")
    return value


def parse_years(row: dict) -> tuple[int, int, int] | None:
    """(year, year_start, year_end) of a row, year the middle of the range when not given; None
    for an undated work (no year, year_start, year_end or date at all). A date written as text
    (the `date` column) is read by dates.py when the row has no years in numbers."""
    year = parse_year(row.get("year") or "", "year")
    start = parse_year(row.get("year_start") or "", "year_start")
    end = parse_year(row.get("year_end") or "", "year_end")
    text = (row.get("date") or "").strip()
    if year is None and start is None and end is None and text:
        span = read_date(text)
        if span is None:  # "n.d.": a work to date
            return None
        if not (SANE_YEARS[0] <= span[0] and span[1] <= SANE_YEARS[1]):
            raise ValueError(f"date {text!r} reads as {span[0]}..{span[1]}, outside any sane range")
        start, end = span
    if start is None and end is None:
        return None if year is None else (year, year, year)
    if start is None:
        start = end
    if end is None:
        end = start
    assert start is not None and end is not None  # one of the two was given
    if start > end:
        raise ValueError(f"year_start {start} is after year_end {end}")
    if year is None:
        year = middle_year(start, end)
    elif not start <= year <= end:
        raise ValueError(f"year {year} is outside its own range year_start..year_end {start}..{end}")
    return year, start, end


def coarse_span(year: int) -> tuple[int, int]:
    """The years a coarse year stands for, by the conventions of date precision in Wikidata and
    museum records: a year ending in 01 stands for its century (1601..1700: the 17th century),
    another year ending in 0 for its decade (1650..1659); any other year for itself."""
    if year % 100 == 1:
        return year, year + 99
    if year % 10 == 0:
        return year, year + 9
    return year, year


def training_span(
    coarse: frozenset[tuple[str, str]], museum: str, work_id: str, year: int, start: int, end: int
) -> tuple[int, int]:
    """The years a work trains on: start..end, or the span of its year (coarse_span) when `coarse`
    (see read_coarse_dates) marks the work and it is dated to one year."""
    if start == end and ((museum, work_id) in coarse or ("", work_id) in coarse):
        return coarse_span(year)
    return start, end


def read_coarse_dates(path: str) -> frozenset[tuple[str, str]]:
    """(museum, id) of the works a CSV with an `id` column (and optionally `museum`) marks as
    coarsely dated, such as ../shared/public-art/date-flags.csv; museum "" matches any museum."""
    marked = set()
    for line, row in _read_rows(path, _export_of(path, {})):
        if not (row.get("id") or "").strip():
            raise MetadataError(f"{path}:{line}: empty id")
        marked.add(((row.get("museum") or "").strip().lower(), row["id"].strip()))
    return frozenset(marked)


def museum_from_file_name(path: str) -> str:
    """The museum a whole word of the file name names ("my-metadata.csv" names none)."""
    words = re.split(r"[^a-z0-9]+", os.path.splitext(os.path.basename(path))[0].lower())
    return next((MUSEUM_WORDS[word] for word in words if word in MUSEUM_WORDS), "")


def read_metadata(
    paths: list[str] | tuple[str, ...],
    *,
    museum: str = "",
    year_min: int = 1200,
    year_max: int = 1930,
    val_fraction: float = 0.1,
    seed: int = 0,
    skip_bad_rows: bool = False,
    catalog_path: str = ":memory:",
    coarse: frozenset[tuple[str, str]] = frozenset(),
    columns: dict[str, str] | None = None,
    exclude_types: tuple[str, ...] = (),
    images: str = "",
) -> MetadataResult:
    """Validate the rows of `paths` into a catalog of works (a file at `catalog_path` for large
    corpora: then memory does not grow with the number of works). A work in `coarse` (museum, id;
    see read_coarse_dates) dated to one year trains as the span that year stands for
    (coarse_span); its year stays as given, so errors are still measured against it. `columns`
    (--columns) maps artdate's columns onto the files' (exports.py, which also knows the Met's
    export by its header); a row an export marks as not public domain is counted, and one whose
    type is in `exclude_types` listed as excluded, before any request. `images` (pack's --images)
    is where the file column's paths are found instead of each CSV's folder."""

    if not 0 <= val_fraction < 1:
        raise MetadataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    exports = {path: _export_of(path, columns or {}) for path in paths}  # every header checked before any row
    result = MetadataResult(catalog=Catalog(catalog_path))
    errors: list[Rejected] = []
    excluding = TypeFilter(exclude_types)
    for path in paths:
        csv_dir = os.path.dirname(os.path.abspath(path))  # one string shared by the file's works
        file_museum = museum or museum_from_file_name(path) or DEFAULT_MUSEUM
        for line, row in _read_rows(path, exports[path]):
            where = f"{path}:{line}"
            row_museum = sys.intern((row.get("museum") or file_museum).strip().lower())
            work_id = (row.get("id") or "").strip()
            if row.get("public") is False:
                result.not_public_domain += 1
                continue
            try:
                excluding.check(row.get("types", ()), "")
            except Excluded as excluded:
                result.catalog.exclude(row_museum, work_id, str(excluded), where)  # never requested
                continue
            try:
                work = _work_from_row(row, row_museum, work_id, path, line, csv_dir, coarse, seed, val_fraction)
                in_window = work.year is None or year_min <= work.year <= year_max  # a window never drops the undated
                _add_work(result, work, in_window, seed, files_from_csv_dir=not images)
            except ValueError as problem:
                errors.append(Rejected(row_museum, work_id, str(problem), where))
    if errors and not skip_bad_rows:
        listed = "\n".join(f"  {e.where}: {e.reason}" for e in errors[:MAX_LISTED_ERRORS])
        more = f"\n  ... and {len(errors) - MAX_LISTED_ERRORS} more" if len(errors) > MAX_LISTED_ERRORS else ""
        raise MetadataError(f"{len(errors)} bad metadata row(s) (pass --skip-bad-rows to skip them):\n{listed}{more}")
    result.rejected = errors
    result.catalog.finish()
    return result


def _work_from_row(
    row: dict,
    museum: str,
    work_id: str,
    path: str,
    line: int,
    csv_dir: str,
    coarse: frozenset[tuple[str, str]],
    seed: int,
    val_fraction: float,
) -> Work:
    """The work a row describes; a ValueError says what is wrong with the row."""
    if row.get(None) is not None or None in row.values():
        raise ValueError("wrong number of fields for the header")
    if not work_id:
        raise ValueError("empty id")
    years = parse_years(row)
    if years is None:
        year, start, end, split = None, None, None, UNDATED
    else:
        year, start, end = years
        start, end = training_span(coarse, museum, work_id, year, start, end)
        split = assign_split(museum, work_id, seed, val_fraction)
    return Work(
        museum=museum,
        id=work_id,
        year=year,
        year_start=start,
        year_end=end,
        split=split,
        file=(row.get("file") or "").strip(),
        url=(row.get("url") or "").strip(),
        title=(row.get("title") or "").strip(),
        artist=(row.get("artist") or "").strip(),
        csv_dir=csv_dir,
        source=path,
        line=line,
        date_text=(row.get("date_text") or row.get("date") or "").strip(),
    )


# What two rows of one work must agree on to be an exact duplicate (the image's file is read from
# the CSV's folder, unless it is absolute or --images gives the folder, so that counts too).
DUPLICATE_FIELDS = ("year", "year_start", "year_end", "file", "url", "title", "artist", "date_text")


def _add_work(result: MetadataResult, work: Work, in_window: bool, seed: int, files_from_csv_dir: bool = True) -> None:
    """Add a work to the catalog, counting an exact duplicate row; a ValueError for a work whose
    key is taken by a different row (a conflicting duplicate, or another work's key)."""
    earlier = result.catalog.get(work.key)
    if earlier is not None and (earlier.museum, earlier.id) == (work.museum, work.id):
        differ = [name for name in DUPLICATE_FIELDS if getattr(earlier, name) != getattr(work, name)]
        from_csv_dir = files_from_csv_dir and work.file and not os.path.isabs(work.file)
        if from_csv_dir and earlier.csv_dir != work.csv_dir and "file" not in differ:
            differ.append("file's folder")
        if differ:
            raise ValueError(f"conflicting duplicate of {earlier.where}: {', '.join(differ)} differ")
        result.duplicates += 1
        return
    if earlier is not None:
        raise ValueError(f"sample key {work.key} clashes with {earlier.museum}/{earlier.id} at {earlier.where}")
    result.catalog.add(work, in_window, seed)
    result.out_of_window += not in_window


def csv_columns(path: str, columns: dict[str, str]) -> list[str]:
    """artdate's columns a metadata CSV has: its header's, and those --columns (or the preset of
    the export its header shows) reads from it."""
    return _header(path) + list(_export_of(path, columns).columns)


def _export_of(path: str, columns: dict[str, str]) -> Export:
    """The export the file's header shows (exports.py); a MetadataError naming the file."""
    try:
        return export_of(path, _header(path), columns)
    except ValueError as problem:
        raise MetadataError(str(problem)) from None


def _header(path: str) -> list[str]:
    with _open(path) as handle:
        try:
            header = next(csv.reader(handle), [])
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as problem:
            raise MetadataError(f"{path}:1: malformed CSV: {problem}") from None
    return header


def _open(path: str):
    try:
        return open(path, newline="", encoding="utf-8-sig")  # -sig: the Met's export starts with a BOM
    except OSError as problem:
        raise MetadataError(f"{path}: cannot read: {problem.strerror}") from None


def _read_rows(path: str, export: Export):
    """Yield (line number, row in artdate's columns) for each data row; a file without an id
    column is an error (one without year columns lists works to date). A row whose number of
    fields is not the header's keeps a None key, which _work_from_row refuses."""
    with _open(path) as handle:
        reader = csv.DictReader(handle)
        try:
            for row in reader:
                wrong = row.get(None) is not None or None in row.values()
                translated = translate(row, export)
                if wrong:
                    translated[None] = row.get(None) or [""]
                yield reader.line_num, translated
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as problem:
            raise MetadataError(f"{path}:{reader.line_num}: malformed CSV: {problem}") from None


def _not_utf8(path: str) -> MetadataError:
    """The error for a CSV that is not UTF-8 (Latin-1 or Windows-1252, as spreadsheets save),
    naming the first line that is not: the decoder reads ahead in blocks, so its place is not the
    line's."""
    with open(path, "rb") as handle:
        for line, text in enumerate(handle, 1):
            try:
                text.decode("utf-8")
            except UnicodeDecodeError as problem:
                byte = text[problem.start]
                return MetadataError(f"{path}:{line}: not UTF-8 (byte {byte:#04x}); save the file as UTF-8")
    return MetadataError(f"{path}: not UTF-8; save the file as UTF-8")
