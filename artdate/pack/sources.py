"""Where the image of each work comes from: a folder (local or S3), a URL column, or its museum.

`make_source` builds what `artdate pack` asks for: `--source auto` sends each met work to the
Met and each rijks work to the Rijksmuseum (museums.py) and takes every other work from its file
or url column; `--originals URL` keeps each downloaded image (and the museum's final answers)
under its museum and id, so a later pack takes them from there and asks the museums only for what
is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from dataclasses import dataclass
from urllib.parse import quote

from artdate.core import store
from artdate.core.config import PackConfig
from artdate.core.http_client import FetchError, HttpClient
from artdate.core.images import image_size
from artdate.core.works import Work
from artdate.pack.fetched_image import Excluded, Fetched, NotAvailable, Source, TypeFilter
from artdate.pack.museums import MET_API, RIJKS_API, MetSource, RijksSource

MUSEUM_ROOTS = {"met": MET_API, "rijks": RIJKS_API}
MUSEUM_NAMES = {"met": "the Met", "rijks": "the Rijksmuseum"}


@dataclass
class FolderSource:
    """Images in a folder, local or s3://: the CSV's `file` column (relative to the CSV, or to
    `images` when given), else `images` as a pattern with {id} and {museum}, or a folder holding
    {id}.jpg."""

    images: str = ""
    max_bytes: int = 50_000_000

    def path_of(self, work: Work) -> str:
        if work.file:
            return store.join(self.images, work.file) if self.images else os.path.join(work.csv_dir, work.file)
        if not self.images:
            raise FetchError("no file column and no --images folder or pattern")
        if "{" in self.images:
            return self.images.format(id=work.id, museum=work.museum)
        return store.join(self.images, f"{work.id}.jpg")

    def fetch(self, work: Work) -> Fetched:
        path = self.path_of(work)
        try:
            return Fetched(store.read_bytes(path, self.max_bytes))
        except FileNotFoundError:
            raise FetchError(f"cannot read {path}: no such file") from None
        except (PermissionError, IsADirectoryError, NotADirectoryError) as problem:
            raise FetchError(f"cannot read {path}: {problem.strerror or problem}") from None
        except OSError as problem:  # an I/O error, a network mount or an S3 read gone away: may pass
            raise FetchError(f"cannot read {path}: {problem.strerror or problem}", transient=True) from None
        except ValueError as problem:  # over the cap
            raise FetchError(str(problem)) from None


@dataclass
class UrlSource:
    """The CSV's `url` column, fetched as is."""

    client: HttpClient

    def fetch(self, work: Work) -> Fetched:
        if not work.url:
            raise FetchError("no url for this work")
        return Fetched(self.client.get(work.url))


@dataclass
class FolderOrUrl:
    """A row's file (or --images) when it has one, else its url."""

    folder: FolderSource
    url: Source

    def fetch(self, work: Work) -> Fetched:
        if work.url and not (work.file or self.folder.images):
            return self.url.fetch(work)
        return self.folder.fetch(work)


@dataclass
class AutoSource:
    """Each work from its own museum; a row that names its own file or url, or another museum's
    work, from that file or url."""

    museums: dict
    files: FolderOrUrl

    def fetch(self, work: Work) -> Fetched:
        museum = self.museums.get(work.museum)
        if museum is None or work.file or work.url:
            return self.files.fetch(work)
        return museum.fetch(work)


@dataclass
class OneMuseum:
    """--source met or rijks: every work to that museum, except those another museum holds."""

    name: str
    museum: Source

    def fetch(self, work: Work) -> Fetched:
        if work.museum in MUSEUM_NAMES and work.museum != self.name:
            raise FetchError(
                f"a work of {MUSEUM_NAMES[work.museum]}, not {MUSEUM_NAMES[self.name]}: pack with --source auto"
            )
        return self.museum.fetch(work)


def original_name(work_id: str) -> str:
    """A file name for any id: the id percent-encoded (distinct ids stay distinct), with a hash of
    the whole id in place of the tail when it would be too long for a file system."""
    name = quote(work_id, safe="-_")
    if len(name) <= 150:
        return name
    return f"{name[:100]}~{hashlib.sha256(work_id.encode()).hexdigest()[:16]}"


@dataclass
class Originals:
    """A fetch-once store of downloaded images: `{url}/{museum}/{name}.json` says what the museum
    answered (object type, final refusals) and names the image beside it. The record is written
    after the image, so a record always means a complete image."""

    inner: Source
    url: str
    size: int
    exclude: TypeFilter

    def fetch(self, work: Work) -> Fetched:
        base = store.join(self.url, work.museum, original_name(work.id))
        try:  # one read, not a look then a read: on S3 each is a request, for every work
            record = json.loads(store.read_bytes(base + ".json"))
        except FileNotFoundError:
            record = None
        if record is not None:
            types, object_type = tuple(record["types"]), record["object_type"]
            self.exclude.check(types, object_type)
            if record["refused"]:
                raise NotAvailable(record["refused"])
            if record["image"] and (record["largest"] or min(record["width"], record["height"]) >= self.size):
                try:
                    data = store.read_bytes(store.join(self.url, work.museum, record["image"]))
                    dates = tuple(record["dates"]) if record.get("dates") else None
                    return Fetched(data, object_type, types, record["largest"], dates, record.get("date_from", ""))
                except FileNotFoundError:
                    pass  # removed by hand: fetched again
        try:
            fetched = self.inner.fetch(work)
        except Excluded as excluded:  # its type is known now; its image was not fetched
            self._record(base, work, Fetched(b"", excluded.object_type, excluded.types))
            raise
        except NotAvailable as refused:
            self._record(base, work, Fetched(b""), refused=str(refused))
            raise
        image = f"{original_name(work.id)}.img"
        store.write_bytes(store.join(self.url, work.museum, image), fetched.data)
        self._record(base, work, fetched, image)
        return fetched

    def _record(self, base: str, work: Work, fetched: Fetched, image: str = "", refused: str = "") -> None:
        """What the museum said of the work (and the image file beside it, when there is one)."""
        width, height = image_size(fetched.data) if image else (0, 0)
        record = {
            "museum": work.museum,
            "id": work.id,
            "types": list(fetched.types),
            "object_type": fetched.object_type,
            "image": image,
            "largest": fetched.largest if image else False,
            "width": width,
            "height": height,
            "refused": refused,
            "dates": list(fetched.dates) if fetched.dates else None,
            "date_from": fetched.date_from,
        }
        store.write_bytes(base + ".json", json.dumps(record).encode())


def api_roots(api_urls: tuple[str, ...]) -> dict[str, str]:
    """--api-url met=URL ... over the museums' public roots."""
    roots = dict(MUSEUM_ROOTS)
    for given in api_urls:
        museum, separator, url = given.partition("=")
        if not separator or museum not in roots or not url:
            raise ValueError(f"--api-url {given!r}: expected MUSEUM=URL with MUSEUM one of {', '.join(roots)}")
        roots[museum] = url
    return roots


PATTERN_FIELDS = ("id", "museum")


def check_images_pattern(images: str) -> None:
    """--images as a pattern may name {id} and {museum} only: checked once, not work by work."""
    if "{" not in images and "}" not in images:
        return
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(images) if field is not None]
    except ValueError as problem:
        raise ValueError(f"--images {images!r}: not a pattern ({problem}); use {{id}} and {{museum}}") from None
    unknown = [field for field in fields if field not in PATTERN_FIELDS]
    if unknown or not fields:
        named = f"unknown field {{{unknown[0]}}}" if unknown else "no field"
        raise ValueError(f"--images {images!r}: {named}; a pattern names each work's image with {{id}} and {{museum}}")


def check_image_source(config: PackConfig, columns: dict[str, list[str]]) -> None:
    """Refuse, before any work, settings that give no work an image: a pattern with an unknown
    field, or no --source, no --images and a CSV (of `columns`: file -> its header) without a
    file or url column."""
    if config.images:
        check_images_pattern(config.images)
    if config.source or config.images:
        return
    for path, header in columns.items():
        if "file" not in header and "url" not in header:
            raise ValueError(
                f"{path} has no file or url column and no --images was given: no work has an image; give "
                "--images FOLDER (its {id}.jpg) or a pattern such as DIR/{id}.jpg, or --source auto"
            )


def make_source(config: PackConfig, client: HttpClient) -> Source:
    """The source for `artdate pack --source/--images/--originals/--exclude-types`."""
    roots = api_roots(config.api_url)
    exclude = TypeFilter(config.exclude_types)
    keep = (
        (lambda source: Originals(source, config.originals, config.size, exclude))
        if config.originals
        else (lambda s: s)
    )
    museums = {
        "met": keep(MetSource(client, roots["met"], config.size, exclude)),
        "rijks": keep(RijksSource(client, roots["rijks"], config.size, exclude)),
    }
    files = FolderOrUrl(FolderSource(config.images, config.max_bytes), keep(UrlSource(client)))
    if config.source == "auto":
        return AutoSource(museums, files)
    if config.source in museums:
        return OneMuseum(config.source, museums[config.source])
    if config.source:
        raise ValueError(f"unknown source {config.source!r}: use auto, met or rijks")
    return files
