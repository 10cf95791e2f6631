"""What an image source hands to pack, and why a work may not be packed.

A source turns a Work into `Fetched` (the image bytes and what the source said about the work) or
raises FetchError (http_client.py); `NotAvailable` is a museum's own answer that it has no image
to give (kept by --originals, so a re-pack does not ask again) and `Excluded` a work whose object
type the user left out with --exclude-types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from artdate.core.http_client import FetchError

if TYPE_CHECKING:
    from artdate.core.works import Work


@dataclass(frozen=True)
class Fetched:
    data: bytes
    object_type: str = ""  # as the source reported it ("Painting", "drawing"); kept in the shard JSON
    types: tuple[str, ...] = ()  # every type name the source gave, for --exclude-types
    largest: bool = True  # no larger image of this work can be had (False: a reduced size was asked for)
    dates: tuple[int, int] | None = None  # the work's date range as its museum's record gives it, if any
    date_from: str = ""  # that museum ("met", "rijks"), recorded with the date in the shard JSON


class Source(Protocol):
    """Where a work's image comes from: a folder, a URL, a museum, a cache in front of one."""

    def fetch(self, work: Work) -> Fetched: ...


class NotAvailable(FetchError):
    """The museum answered that it has no image for this work (unknown id, no public image, not
    downloadable): final, and remembered by --originals."""


class Excluded(FetchError):
    """The work's object type is one of --exclude-types."""

    def __init__(self, message: str, types: tuple[str, ...], object_type: str):
        super().__init__(message)
        self.types = types
        self.object_type = object_type


def singular(name: str) -> str:
    """'Photographs' -> 'photograph', 'Boxes' -> 'box', 'Studies' -> 'study': so that a type
    matches whether a museum or a user wrote it in the singular or the plural."""
    name = " ".join(name.lower().split())
    if name.endswith("ies") and len(name) > 4:
        return name[:-3] + "y"
    if name.endswith(("ses", "xes", "ches", "shes")):
        return name[:-2]
    if name.endswith("s") and not name.endswith("ss"):
        return name[:-1]
    return name


@dataclass(frozen=True)
class TypeFilter:
    """--exclude-types: a work is left out when any type name its source gave equals one of these,
    whole, ignoring case and singular/plural."""

    names: tuple[str, ...] = ()

    def check(self, types: tuple[str, ...], object_type: str) -> None:
        wanted = {singular(name): name for name in self.names}
        for value in types:
            if singular(value) in wanted:
                raise Excluded(
                    f"object type {value!r} is excluded (--exclude-types {wanted[singular(value)]})", types, object_type
                )
