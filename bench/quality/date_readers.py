"""Dates written as text: edtf against undate, side by side, on the forms catalogues write.

Three sets: the forms the docs promise a range for (each with that range), public-art's
`date_text` against the year_start/year_end it was read as, and the recorded Met objects'
`objectDate` against the Met's own objectBeginDate/objectEndDate. Each library reads them twice:
alone, on the text as it is (edtf's English reader `text_to_edtf`; undate's widest parser,
"omnibus"), and behind artdate's layer (dates.py: dashes, qualifiers, a range cut into its ends;
the library reads each end). A reading counts as
- read: a range came out (or "no date" for "n.d.");
- exact: that range is the expected one;
- holds: the expected range lies inside it (a circa widened on purpose still holds);
- wrong: a range came out that does not even overlap the expected one (worse than none).

    python -m bench.quality.date_readers [--public-art ../shared/public-art/artworks.csv]
"""

import argparse
import csv
import json
import os
import re
import sys
import time

from artdate.pack.dates import read_date, read_end_with_edtf
from bench.common import SHARED

FORMS = {  # text -> the range docs/commands.md promises (None: an undated work)
    "1652": (1652, 1652),
    "c. 1650": (1645, 1655),
    "1665–67": (1665, 1667),
    "17th century": (1600, 1699),
    "early 1890s": (1890, 1893),
    "before 1700": (1690, 1700),
    "ca. 50–40 BCE": (-55, -35),
    "dated 1652": (1652, 1652),
    "n.d.": None,
}


def edtf_alone(text: str):
    from edtf import parse_edtf, text_to_edtf

    written = text_to_edtf(text)
    if not written:
        return "unread"
    try:
        parsed = parse_edtf(written)
        return parsed.lower_strict().tm_year, parsed.upper_strict().tm_year
    except Exception:
        return "unread"


def undate_end(text: str):
    from undate import Undate, UndateInterval

    try:
        parsed = Undate.parse(text, "omnibus")
    except Exception:
        return None
    if isinstance(parsed, UndateInterval):
        if parsed.earliest is None or parsed.latest is None:
            return None
        return parsed.earliest.earliest.year, parsed.latest.latest.year
    return parsed.earliest.year, parsed.latest.year


def undate_alone(text: str):
    span = undate_end(text)
    return "unread" if span is None else span


def behind_layer(read_end):
    def read(text: str):
        try:
            return read_date(text, read_end)
        except ValueError:
            return "unread"

    return read


READERS = {
    "edtf alone": edtf_alone,
    "undate alone": undate_alone,
    "edtf + artdate's layer": behind_layer(read_end_with_edtf),
    "undate + artdate's layer": behind_layer(undate_end),
}


def public_art(path: str) -> dict:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["date_text"]: (int(row["year_start"]), int(row["year_end"])) for row in csv.DictReader(f)}


def met_fixtures() -> dict:
    folder = os.path.join(SHARED, "museum-fixtures", "met")
    dates = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                record = json.load(f)
            if isinstance(record, dict) and record.get("objectDate"):
                span = sorted((record["objectBeginDate"], record["objectEndDate"]))
                dates[record["objectDate"]] = (span[0], span[1])
    return dates


def score(reader, expected: dict) -> dict:
    counts = {"texts": len(expected), "read": 0, "exact": 0, "holds": 0, "wrong": 0}
    started = time.perf_counter()
    for text, want in expected.items():
        got = reader(text)
        if got == "unread":
            continue
        counts["read"] += 1
        if got == want:
            counts["exact"] += 1
        if want is None or got is None:
            counts["holds"] += got == want
            counts["wrong"] += got != want
            continue
        counts["holds"] += got[0] <= want[0] and want[1] <= got[1]
        counts["wrong"] += got[1] < want[0] or want[1] < got[0]
    counts["ms"] = 1000 * (time.perf_counter() - started) / max(1, len(expected))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--public-art", default=os.path.join(SHARED, "public-art", "artworks.csv"))
    parser.add_argument("--show", action="store_true", help="print each text that a reader gets wrong or cannot read")
    args = parser.parse_args()
    given = public_art(args.public_art)
    sets = {"the docs' forms": FORMS, "public-art date_text (distinct)": given}
    sets["public-art, all but 4-digit years"] = {t: span for t, span in given.items() if not re.fullmatch(r"\d{4}", t)}
    sets["Met objectDate (recorded)"] = met_fixtures()
    print("| set | reader | texts | read | exact | holds | wrong | ms / text |")
    print("|---|---|---|---|---|---|---|---|")
    for set_name, expected in sets.items():
        for reader_name, reader in READERS.items():
            c = score(reader, expected)
            print(
                f"| {set_name} | {reader_name} | {c['texts']} | {c['read']} | {c['exact']} | {c['holds']} "
                f"| {c['wrong']} | {c['ms']:.2f} |"
            )
            if args.show:
                for text, want in expected.items():
                    got = reader(text)
                    if got != want:
                        print(f"  {text!r}: {got} (expected {want})", file=sys.stderr)


if __name__ == "__main__":
    main()
