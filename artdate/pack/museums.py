"""The two museums' public APIs as they serve today, one work at a time.

- The Met: `{root}/objects/{id}` is the object record; `primaryImageSmall` (web-large, about
  600 px on the long side) is taken when its shorter side reaches the pack size, `primaryImage`
  (the original) otherwise: scrolls, screens and prints are long and narrow.
- The Rijksmuseum (keyless Data Services): the Search API maps an object number to its Linked Art
  record; the record `shows` a VisualItem, which is `digitally_shown_by` a DigitalObject, whose
  `access_point` is an image on a IIIF server. The image is asked for at the size pack needs
  (never `full/max`: originals run to 40 MP), within the server's declared `maxArea`.

Each source reads the object type before it downloads an image, so --exclude-types costs no image.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from artdate.core.http_client import FetchError, HttpClient
from artdate.core.images import image_size
from artdate.core.works import Work
from artdate.pack.fetched_image import Fetched, NotAvailable, TypeFilter
from artdate.pack.metadata import SANE_YEARS

MET_API = "https://collectionapi.metmuseum.org/public/collection/v1"
RIJKS_API = "https://data.rijksmuseum.nl"
# Linked Art records are served for this media type; without it id.rijksmuseum.nl redirects to a web page.
LINKED_ART = {"Accept": "application/ld+json", "Profile": "https://linked.art/ns/v1/linked-art.json"}
AAT_OBJECT_NUMBER = "http://vocab.getty.edu/aat/300312355"  # accession number
AAT_TYPE_OF_WORK = "http://vocab.getty.edu/aat/300435443"
SEARCH_HITS_READ = 5  # records read at most to find the one whose object number is the one asked
NOT_FOUND = (400, 404, 410)  # what the museums answer for an id they do not know


@dataclass
class MetSource:
    client: HttpClient
    api_url: str
    size: int  # the shorter side pack will store (pack --size)
    exclude: TypeFilter

    def fetch(self, work: Work) -> Fetched:
        url = f"{self.api_url.rstrip('/')}/objects/{quote(work.id, safe='')}"
        try:
            record = self.client.get_json(url)
        except FetchError as problem:
            if problem.status in NOT_FOUND:
                raise NotAvailable(f"the Met does not know object {work.id} ({problem})") from None
            raise
        if str(record.get("objectID", "")) != work.id:  # {"message": "Not a valid object"} for loans
            raise NotAvailable(f"the Met answered {record.get('message') or 'another object'!r} for object {work.id}")
        types = tuple(str(record.get(name) or "") for name in ("classification", "objectName", "department"))
        types = tuple(name for name in types if name)
        object_type = record.get("objectName") or record.get("classification") or ""
        self.exclude.check(types, object_type)
        small, original = record.get("primaryImageSmall") or "", record.get("primaryImage") or ""
        if not (small or original):
            rights = "in the public domain" if record.get("isPublicDomain") else "not in the public domain"
            raise NotAvailable(f"the Met has no public image for object {work.id} ({rights})")
        dates = met_dates(record)
        if small:
            data = self.client.get(small)
            if min(image_size(data)) >= self.size or not original:
                return Fetched(data, object_type, types, largest=not original, dates=dates, date_from="met")
        return Fetched(self.client.get(original), object_type, types, largest=True, dates=dates, date_from="met")


@dataclass
class RijksSource:
    client: HttpClient
    api_url: str
    size: int  # pack --size
    exclude: TypeFilter

    def fetch(self, work: Work) -> Fetched:
        record = self.object_record(work.id)
        types, object_type = type_names(record)
        self.exclude.check(types, object_type)
        shows = record.get("shows") or []
        if not shows:
            raise NotAvailable(f"the Rijksmuseum's record of {work.id} shows no image")
        visual = self.linked_art(shows[0]["id"], work.id)
        digital = visual.get("digitally_shown_by") or []
        if not digital:
            raise NotAvailable(f"the Rijksmuseum has no image of {work.id} (its VisualItem has no digitally_shown_by)")
        digital_object = self.linked_art(digital[0]["id"], work.id)
        notes = {str(note.get("content", "")).strip().lower() for note in digital_object.get("referred_to_by") or []}
        if "niet downloadbaar" in notes:
            raise NotAvailable(f"the Rijksmuseum marks the image of {work.id} not downloadable ({rights_of(visual)})")
        access = (digital_object.get("access_point") or [{}])[0].get("id", "")
        if not access:
            raise NotAvailable(f"the Rijksmuseum's image of {work.id} has no access point")
        service = re.sub(r"/full/[^/]+/[^/]+/[^/]+$", "", access)
        dates = linked_art_dates(record)
        if service == access:  # not a IIIF image URL: take it as it is
            return Fetched(self.client.get(access), object_type, types, dates=dates, date_from="rijks")
        info = self.client.get_json(f"{service}/info.json")
        size, largest = iiif_size(int(info["width"]), int(info["height"]), self.size, info.get("maxArea"))
        image = self.client.get(f"{service}/full/{size}/0/default.jpg")
        return Fetched(image, object_type, types, largest, dates=dates, date_from="rijks")

    def object_record(self, object_number: str) -> dict:
        """The Linked Art record whose object-number Identifier is `object_number`."""
        query = urlencode({"objectNumber": object_number})
        search = self.client.get_json(f"{self.api_url.rstrip('/')}/search/collection?{query}")
        hits = [item["id"] for item in search.get("orderedItems") or [] if item.get("id")][:SEARCH_HITS_READ]
        if not hits:
            raise NotAvailable(f"the Rijksmuseum's search finds no object number {object_number}")
        found = []
        for hit in hits:
            record = self.linked_art(hit, object_number)
            numbers = object_numbers(record)
            if object_number in numbers:
                return record
            found += numbers
        raise NotAvailable(
            f"the Rijksmuseum's search for {object_number} found only {', '.join(found) or 'records without one'}"
        )

    def linked_art(self, url: str, object_number: str) -> dict:
        try:
            return self.client.get_json(url, LINKED_ART)
        except FetchError as problem:
            if problem.status in NOT_FOUND:
                raise NotAvailable(f"the Rijksmuseum has no record {url} for {object_number} ({problem})") from None
            raise


def sane_dates(start: int, end: int) -> tuple[int, int] | None:
    """A date range a museum gave, in order, or None when it is outside any sane range."""
    start, end = min(start, end), max(start, end)
    return (start, end) if SANE_YEARS[0] <= start and end <= SANE_YEARS[1] else None


def met_dates(record: dict) -> tuple[int, int] | None:
    """The Met's date range of an object (objectBeginDate..objectEndDate), or None when the
    record has none (an empty objectDate with both years 0, as the Met writes an unknown date)."""
    begin, end = record.get("objectBeginDate"), record.get("objectEndDate")
    if not isinstance(begin, int) or not isinstance(end, int):
        return None
    if begin == end == 0 and not str(record.get("objectDate") or "").strip():
        return None
    return sane_dates(begin, end)


def linked_art_dates(record: dict) -> tuple[int, int] | None:
    """The years of a Linked Art record's production time-span (begin_of_the_begin ..
    end_of_the_end, ISO dates; a production in parts: from the first begin to the last end)."""
    production = record.get("produced_by") or {}
    spans = [production.get("timespan") or {}] + [
        (part or {}).get("timespan") or {} for part in production.get("part") or []
    ]
    begins = [y for y in (_iso_year(span.get("begin_of_the_begin")) for span in spans) if y is not None]
    ends = [y for y in (_iso_year(span.get("end_of_the_end")) for span in spans) if y is not None]
    if not begins and not ends:
        return None
    return sane_dates(min(begins or ends), max(ends or begins))


def _iso_year(text) -> int | None:
    """1660 from "1660-01-01T00:00:00Z", -500 from "-0500-01-01"; None for anything else."""
    match = re.match(r"\s*(-?)(\d{1,6})-", str(text or ""))
    return None if match is None else int(match.group(2)) * (-1 if match.group(1) else 1)


def object_numbers(record: dict) -> list[str]:
    """The record's object numbers (Identifiers classified as accession numbers)."""
    numbers = []
    for name in record.get("identified_by") or []:
        kinds = [kind.get("id") for kind in name.get("classified_as") or [] if isinstance(kind, dict)]
        if name.get("type") == "Identifier" and AAT_OBJECT_NUMBER in kinds:
            numbers.append(str(name.get("content", "")))
    return numbers


def type_names(record: dict) -> tuple[tuple[str, ...], str]:
    """(every name of the record's type-of-work classifications, in any language; the English one)."""
    names, english = [], ""
    for kind in record.get("classified_as") or []:
        if not isinstance(kind, dict):  # the records also hold bare strings here
            continue
        parents = [parent.get("id") for parent in kind.get("classified_as") or [] if isinstance(parent, dict)]
        if AAT_TYPE_OF_WORK not in parents:
            continue
        for notation in kind.get("notation") or []:
            names.append(str(notation.get("@value", "")))
            if notation.get("@language") == "en" and not english:
                english = names[-1]
        if kind.get("_label"):
            names.append(str(kind["_label"]))
    known = tuple(name for name in names if name)
    return known, english or (known[0] if known else "")


def rights_of(visual: dict) -> str:
    """The VisualItem's rights statement in English ('Copyright', 'Public Domain'), or 'rights unknown'."""
    for right in visual.get("subject_to") or []:
        for name in right.get("identified_by") or []:
            if any("English" == language.get("_label") for language in name.get("language") or []):
                return str(name.get("content", ""))
    return "rights unknown"


def iiif_size(width: int, height: int, shorter_wanted: int, max_area: int | None) -> tuple[str, bool]:
    """The IIIF Image API size parameter for a copy whose shorter side is `shorter_wanted` (never
    larger than the original, nor over the server's `maxArea`), and whether that is the largest
    copy the server gives."""
    shorter, longer = min(width, height), max(width, height)
    side = min(shorter_wanted, shorter)
    if max_area and side * math.ceil(longer * side / shorter) > max_area:
        side = math.floor(shorter * math.sqrt(max_area / (width * height)))
    largest = side == shorter or side < shorter_wanted
    return (f"{side}," if width <= height else f",{side}"), largest
