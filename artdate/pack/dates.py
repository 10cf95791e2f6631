"""Dates written as text, as catalogues write them, into a range of years.

"c. 1650", "1665–67", "17th century", "early 1890s", "before 1700", "ca. 50–40 BCE", "dated
1652", "n.d.": the `edtf` library (the Library of Congress's Extended Date/Time Format, with an
English reader) reads each date; the layer here only puts the text in the shape it reads (one
kind of dash, a range cut into its two ends, BCE and a shortened end year carried to both ends)
and then applies the rules for what it leaves to its caller: a circa, a part of a period (early,
mid, late, a half, a quarter). bench/quality/date_readers.py measured it against `undate` (bench/RESULTS.md).

The rules (docs/commands.md lists each form):
- a year is itself; "dated 1652" is 1652; "probably", "possibly" change nothing;
- a range is its first end's start to its last end's end ("1665–67" is 1665..1667);
- a century is its hundred years as edtf reads it: "17th century" 1600..1699, "1800s" 1800..1899;
  a decade its ten, "1890s" 1890..1899;
- early, mid and late are the first, middle and last third of the period, boundaries shared
  ("early 1890s" 1890..1893); first and second half, and the four quarters, split it evenly;
- before/after a year is the ten years up to it / from it (edtf's reading of an open end);
- a circa widens the range by CIRCA_YEARS on each side ("c. 1650" 1645..1655);
- BCE years are negative ("ca. 50–40 BCE" is -55..-35);
- "n.d.", "undated" and the like are no date at all (an undated work);
- anything else, or a reading whose year is not the number written, is an error: never a guess.
"""

from __future__ import annotations

import functools
import re
from typing import Callable

CIRCA_YEARS = 5  # as the Met widens a circa: "ca. 1390–1336 BCE" is -1395..-1331 in its record of 544679
UNDATED_TEXTS = frozenset({"n.d.", "n. d.", "nd", "undated", "no date", "not dated", "date unknown", "unknown"})

QUALIFIER = re.compile(r"^(?:(?:dated|probably|possibly)\s+|(?P<circa>c\.|ca\.?|circa|about|approximately)\s*)")
PART = re.compile(
    r"^(?P<part>early|mid|late|(?:first|second) half|(?:first|second|third|fourth|last) quarter)"
    r"(?:\s+of)?(?:\s+the)?[\s-]+"
)
ERA = re.compile(r"(?<=[\d\s])(?P<era>b\.?\s?c\.?\s?e\.?|b\.?\s?c\.?|c\.?\s?e\.?|a\.?\s?d\.?)$")
DASHES = re.compile(r"\s*[-–—‒−]\s*|\s+to\s+")
YEAR_READ = re.compile(r"^(?P<open_start>/)?(?P<sign>-?)(?P<digits>\d{4}|\d{3}X|\d{2}XX)[~?%]?(?P<open_end>/)?$")
THIRDS = {"early": (0, 1), "mid": (1, 2), "late": (2, 3)}
SHARES = {  # (first, last) share of the period, in quarters
    "first half": (0, 2),
    "second half": (2, 4),
    "first quarter": (0, 1),
    "second quarter": (1, 2),
    "third quarter": (2, 3),
    "fourth quarter": (3, 4),
    "last quarter": (3, 4),
}

# Reads one end of a date ("1650", "17th century", "50 bc", "before 1700") into (start, end).
PartReader = Callable[[str], "tuple[int, int] | None"]


def read_end_with_edtf(text: str) -> tuple[int, int] | None:
    """One end of a date read by edtf: its English reader to an EDTF string, whose strict bounds
    are the years; None when it reads nothing at year precision or coarser (a month, a day, a
    season are not what a catalogue's date column means, and dateutil's guesses hide there)."""
    from edtf import parse_edtf, text_to_edtf

    written = text_to_edtf(text)
    if not written or not YEAR_READ.match(written) or not _same_number(text, written):
        return None
    parsed = parse_edtf(written)
    return parsed.lower_strict().tm_year, parsed.upper_strict().tm_year


def _same_number(text: str, written: str) -> bool:
    """Whether the EDTF string holds the one number the text wrote: the year itself, the decade
    of "1890s", or the century of "17th century" (16XX)."""
    numbers = re.findall(r"\d+", text)
    if len(numbers) != 1:
        return False
    number = int(numbers[0])
    digits = YEAR_READ.match(written)["digits"]  # type: ignore[index]
    if digits.endswith("XX"):
        hundreds = int(digits[:2])
        return hundreds == number - 1 if "centur" in text else hundreds * 100 == number
    if digits.endswith("X"):
        return int(digits[:3]) * 10 == number
    return int(digits) == number


# edtf's reader parses each text twice with dateutil (about 5 ms on this VM's core); a catalogue
# repeats its dates ("17th century", "ca. 1900") thousands of times, so readings are kept
# (bounded: a few MB).
@functools.lru_cache(maxsize=20_000)
def read_date(text: str, read_end: PartReader = read_end_with_edtf) -> tuple[int, int] | None:
    """(year_start, year_end) of a date written as text, None for a text that says there is no
    date; a ValueError naming the text when no rule reads it."""
    plain = " ".join(text.lower().split())
    if plain.strip(" .") in {t.strip(" .") for t in UNDATED_TEXTS}:
        return None
    plain, circa, part = _qualifiers(plain)
    ends = _ends(plain)
    read = [read_end(end) for end in ends] if ends else [None]
    if any(span is None for span in read):
        raise ValueError(f"date {text!r}: no rule reads it (see the date rules in docs/commands.md)")
    start, end = read[0][0], read[-1][1]  # type: ignore[index]
    if start > end:
        raise ValueError(f"date {text!r}: its start is after its end")
    if part:
        start, end = _part_of(part, start, end)
    if circa:
        start, end = start - CIRCA_YEARS, end + CIRCA_YEARS
    return start, end


def _qualifiers(text: str) -> tuple[str, bool, str]:
    """(the text without its qualifiers, whether it is a circa, the part of the period named)."""
    circa, part = False, ""
    while True:
        match = QUALIFIER.match(text) or PART.match(text)
        if not match:
            return text, circa, part
        circa = circa or bool(match.groupdict().get("circa"))
        part = match.groupdict().get("part") or part
        text = text[match.end() :]


def _ends(text: str) -> list[str]:
    """The one or two ends of a date, each as edtf reads it: BCE written as "bc" on each, a
    leading minus as BCE (edtf drops it), AD on a year under 1000, a shortened end year ("1665-67",
    "1730-40s") filled in from the start, "century" carried to a first end that is a bare ordinal
    ("18th-19th century")."""
    era = ERA.search(text)
    bce = bool(era) and era["era"].startswith("b")  # type: ignore[index]
    text = text[: era.start()].strip() if era else text
    if text.startswith("-"):
        text, bce = text[1:], True
    if not text:
        return []
    ends = [e.strip() for e in DASHES.split(text)]
    ends = [e for e in re.split(r"\s*/\s*", ends[0]) + ends[1:] if e] if len(ends) == 1 else ends
    if len(ends) > 2:
        return [""]  # no rule reads three dates
    if len(ends) == 2:
        first, last = ends
        short = re.fullmatch(r"(\d+)(s?)", last)
        if short and first.isdigit() and len(short[1]) < len(first):
            ends[1] = first[: len(first) - len(short[1])] + last
        if re.fullmatch(r"\d+(st|nd|rd|th)", first) and re.search(r"centur(y|ies)$", last):
            ends[0] = f"{first} century"
            ends[1] = re.sub(r"centuries$", "century", last)
    # edtf reads a bare number under 1000 as a day of the month ("50": 2050-ish): say AD.
    return [f"{end} bc" if bce else f"{end} ad" if re.fullmatch(r"\d{1,3}", end) else end for end in ends]


def _part_of(part: str, start: int, end: int) -> tuple[int, int]:
    """The part of start..end that early/mid/late (thirds, sharing their boundary years, as
    catalogues write "early 1800s" 1800-33) or a half or quarter names."""
    span = end - start
    if part in THIRDS:
        first, last = THIRDS[part]
        return start + round(span * first / 3), start + round(span * last / 3)
    first, last = SHARES[part]
    length = span + 1
    return start + length * first // 4, start + length * last // 4 - 1
