"""Museum exports as their museums publish them, read into artdate's columns.

A metadata CSV is artdate's own (`id`, `year`, ...), a museum export whose header names it (the
Met's MetObjects.csv), or any other file whose columns `--columns id="Accession No" date="Date"`
names. Each row is translated into artdate's columns before it is checked, so every export goes
through the one validation in metadata.py. A translated row may also carry `date_text` (the date
as written, kept in the shard JSON), `types` (names that --exclude-types compares, so an excluded
work is never asked for) and `public` (False: the work may not be requested at all).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# The columns of artdate's own CSVs that --columns can name; `date` is a date written as text
# (dates.py), `type` an object type for --exclude-types.
COLUMN_NAMES = ("id", "year", "year_start", "year_end", "date", "museum", "file", "url", "title", "artist", "type")

# The header of the Met's open-access export, MetObjects.csv in github.com/metmuseum/openaccess
# (a Git LFS file, about 480,000 rows; UTF-8 with a byte-order mark), its 54 columns in order as
# that file has them and as projects that read it list them by index (e.g. Trained-Monkey-Studios/
# artchiver, plugins/artx-met/src/lib.rs, columns 0-53).
MET_HEADER = (
    "Object Number,Is Highlight,Is Timeline Work,Is Public Domain,Object ID,Gallery Number,Department,"
    "AccessionYear,Object Name,Title,Culture,Period,Dynasty,Reign,Portfolio,Constituent ID,Artist Role,"
    "Artist Prefix,Artist Display Name,Artist Display Bio,Artist Suffix,Artist Alpha Sort,Artist Nationality,"
    "Artist Begin Date,Artist End Date,Artist Gender,Artist ULAN URL,Artist Wikidata URL,Object Date,"
    "Object Begin Date,Object End Date,Medium,Dimensions,Credit Line,Geography Type,City,State,County,Country,"
    "Region,Subregion,Locale,Locus,Excavation,River,Classification,Rights and Reproduction,Link Resource,"
    "Object Wikidata URL,Metadata Date,Repository,Tags,Tags AAT URL,Tags Wikidata URL"
).split(",")
# What tells the Met's export from any other file: these columns, whatever else it has.
MET_SIGNATURE = ("Object ID", "Is Public Domain", "Object Begin Date", "Object End Date", "Object Date")


@dataclass(frozen=True)
class Export:
    """How one file's columns become artdate's: `columns` maps artdate's names onto the file's."""

    name: str  # "met", "columns" (--columns), or "" for artdate's own columns
    columns: dict[str, str] = field(default_factory=dict)
    museum: str = ""  # every row's museum, when the export is one museum's
    public_domain: str = ""  # the column whose "True" marks the works that may be requested
    types: tuple[str, ...] = ()  # columns whose values --exclude-types compares
    date_text: str = ""  # the column kept as date_text in the shard JSON
    years: tuple[str, str] = ("", "")  # the columns of the museum's own begin and end years


MET = Export(
    name="met",
    columns={"id": "Object ID", "title": "Title", "artist": "Artist Display Name"},
    museum="met",
    public_domain="Is Public Domain",
    # the names the Met's API gives the type filter too (museums.MetSource), so a work is left out
    # here exactly when the API would leave it out, without asking
    types=("Classification", "Object Name", "Department"),
    date_text="Object Date",
    years=("Object Begin Date", "Object End Date"),
)


def parse_columns(given: tuple[str, ...]) -> dict[str, str]:
    """--columns NAME=COLUMN ... as {artdate's name: the file's column}; a ValueError for a name
    artdate does not have or an item without '='."""
    mapping = {}
    for item in given:
        name, separator, column = item.partition("=")
        name = name.strip()
        if not separator or not column.strip():
            raise ValueError(f'--columns {item!r}: expected NAME=COLUMN, e.g. id="Accession No"')
        if name not in COLUMN_NAMES:
            raise ValueError(f"--columns {item!r}: artdate has no column {name!r}; it has {', '.join(COLUMN_NAMES)}")
        mapping[name] = column.strip()
    return mapping


def export_of(path: str, header: list[str], columns: dict[str, str]) -> Export:
    """The export a file's header shows, with --columns over it; a ValueError naming the file when
    a column --columns names is not in it, or when it has no id column at all."""
    base = MET if all(name in header for name in MET_SIGNATURE) else Export("")
    if columns:
        missing = [f"{name}={column!r}" for name, column in columns.items() if column not in header]
        if missing:
            raise ValueError(f"{path}:1: --columns {' '.join(missing)}: no such column; the file has {header}")
        base = dataclasses.replace(base, name=base.name or "columns", columns={**base.columns, **columns})
    if "id" not in base.columns and "id" not in header:
        raise ValueError(f"{path}:1: needs an id column, has {header} (--columns id=COLUMN names another)")
    return base


def translate(row: dict, export: Export) -> dict:
    """A row of the file in artdate's columns (the row itself for artdate's own files)."""
    if not export.name:
        return row
    out = {name: row.get(name) for name in COLUMN_NAMES if name in row}  # the file's own artdate columns
    for name, column in export.columns.items():
        out[name] = row.get(column)
    if export.museum and not out.get("museum"):
        out["museum"] = export.museum
    types = [out.pop("type") or ""] if "type" in out else []
    types += [row.get(column) or "" for column in export.types]
    if types:
        out["types"] = tuple(types)
    if export.public_domain:
        out["public"] = (row.get(export.public_domain) or "").strip().lower() == "true"
    if export.date_text:
        out["date_text"] = (row.get(export.date_text) or "").strip()
    if export.years[0] and not (out.get("year_start") or out.get("year_end") or out.get("date")):
        out["year_start"], out["year_end"] = _museum_years(row, export)
    return out


def _museum_years(row: dict, export: Export) -> tuple[str, str]:
    """A museum's own begin and end years, in order; both empty for an undated work (the Met
    writes an unknown date as an empty Object Date with both years 0)."""
    begin, end = ((row.get(column) or "").strip() for column in export.years)
    if not begin and not end:
        return "", ""
    if begin in ("", "0") and end in ("", "0") and not (row.get(export.date_text) or "").strip():
        return "", ""
    try:
        if int(begin) > int(end):
            begin, end = end, begin
    except ValueError:
        pass  # metadata.py names the column that is not a year
    return begin, end
