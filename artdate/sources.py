"""Where image bytes come from: a local folder, a URL column, or the Met and Rijksmuseum APIs.

Each source turns a Work into the raw bytes of its image or raises FetchError with the reason.
HTTP fetches share one client with a global request rate, a timeout, a byte cap, and retries with
backoff on 429, 5xx, connection errors and truncated bodies.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from .metadata import Work

MET_API = "https://collectionapi.metmuseum.org/public/collection/v1"
RIJKS_API = "https://www.rijksmuseum.nl/api/en"
RIJKS_KEY_VARIABLE = "RIJKSMUSEUM_API_KEY"
USER_AGENT = "artdate/0.1 (+https://github.com/artdate)"


class FetchError(Exception):
    """The image of a work could not be had; the message says why (it ends up in rejects.csv)."""


def redact(url: str) -> str:
    """Never print an API key: drop the value of key= from URLs in messages."""
    return re.sub(r"(?i)([?&](?:api_?)?key=)[^&]*", r"\1***", url)


class RateLimiter:
    """At most `rate` request starts per second across all threads."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        if start > now:
            time.sleep(start - now)


@dataclass
class HttpClient:
    rate: float = 10.0
    timeout: float = 30.0
    max_bytes: int = 50_000_000
    attempts: int = 4
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    max_retry_after: float = 60.0

    def __post_init__(self):
        self.limiter = RateLimiter(self.rate)

    def get(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise FetchError(f"not an http(s) URL: {redact(url)}")
        problem = ""
        for attempt in range(self.attempts):
            self.limiter.wait()
            delay = self.backoff * 2**attempt * (0.5 + random.random())
            try:
                return self._get_once(url)
            except urllib.error.HTTPError as error:
                problem = f"HTTP {error.code} from {redact(url)}"
                if error.code != 429 and error.code < 500:
                    raise FetchError(problem) from None
                retry_after = (error.headers or {}).get("Retry-After", "")
                if retry_after.strip().isdigit():
                    delay = min(float(retry_after), self.max_retry_after)
            except (urllib.error.URLError, TimeoutError, ConnectionError, _Truncated) as error:
                reason = getattr(error, "reason", error)
                problem = f"{type(error).__name__} from {redact(url)}: {reason}"
            if attempt + 1 < self.attempts:
                time.sleep(delay)
        raise FetchError(f"{problem} (gave up after {self.attempts} attempts)")

    def get_json(self, url: str) -> dict:
        body = self.get(url)
        try:
            return json.loads(body)
        except ValueError:
            raise FetchError(f"not JSON from {redact(url)}") from None

    def _get_once(self, url: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and int(declared) > self.max_bytes:
                raise FetchError(f"{redact(url)} is {int(declared)} bytes, over the cap of {self.max_bytes}")
            body = response.read(self.max_bytes + 1)
        if len(body) > self.max_bytes:
            raise FetchError(f"{redact(url)} is over the cap of {self.max_bytes} bytes")
        if declared is not None and len(body) < int(declared):
            raise _Truncated(f"truncated body: got {len(body)} of {declared} bytes")
        return body


class _Truncated(Exception):
    pass


@dataclass
class FolderSource:
    """Images on disk: the CSV's `file` column (relative to the CSV, or to `images` when given),
    else `images` as a pattern with {id} and {museum}, or a folder holding {id}.jpg."""

    images: str = ""

    def path_of(self, work: Work) -> str:
        if work.file:
            return os.path.join(self.images or work.csv_dir, work.file)
        if not self.images:
            raise FetchError("no file column and no --images folder or pattern")
        if "{" in self.images:
            return self.images.format(id=work.id, museum=work.museum)
        return os.path.join(self.images, f"{work.id}.jpg")

    def fetch(self, work: Work) -> bytes:
        path = self.path_of(work)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as problem:
            raise FetchError(f"cannot read {path}: {problem.strerror}") from None


@dataclass
class UrlSource:
    """The CSV's `url` column, fetched as is."""

    client: HttpClient

    def fetch(self, work: Work) -> bytes:
        if not work.url:
            raise FetchError("no url for this work")
        return self.client.get(work.url)


@dataclass
class MetSource:
    """The Met collection API: objects/{id} gives primaryImageSmall (web-large) and primaryImage."""

    client: HttpClient
    api_url: str = MET_API

    def fetch(self, work: Work) -> bytes:
        record = self.client.get_json(f"{self.api_url.rstrip('/')}/objects/{work.id}")
        image_url = record.get("primaryImageSmall") or record.get("primaryImage")
        if not image_url:
            raise FetchError(f"the Met has no public image for object {work.id}")
        return self.client.get(image_url)


@dataclass
class RijksSource:
    """The Rijksmuseum collection API: collection/{objectNumber} gives artObject.webImage.url."""

    client: HttpClient
    api_url: str = RIJKS_API
    key: str = ""

    def __post_init__(self):
        self.key = self.key or os.environ.get(RIJKS_KEY_VARIABLE, "")
        if not self.key:
            raise ValueError(f"the Rijksmuseum API needs a key: set {RIJKS_KEY_VARIABLE}")

    def fetch(self, work: Work) -> bytes:
        url = f"{self.api_url.rstrip('/')}/collection/{work.id}?key={self.key}&format=json"
        record = self.client.get_json(url).get("artObject") or {}
        image_url = (record.get("webImage") or {}).get("url")
        if not image_url:
            raise FetchError(f"the Rijksmuseum has no public image for object {work.id}")
        return self.client.get(image_url)


def make_source(source: str, images: str, api_url: str, client: HttpClient):
    """The source for `artdate pack --source/--images`; a CSV with only a url column uses UrlSource."""
    if source == "met":
        return MetSource(client, api_url or MET_API)
    if source == "rijks":
        return RijksSource(client, api_url or RIJKS_API)
    if source:
        raise ValueError(f"unknown source {source!r}: use met or rijks")
    return _FolderOrUrl(FolderSource(images), UrlSource(client))


@dataclass
class _FolderOrUrl:
    folder: FolderSource
    url: UrlSource

    def fetch(self, work: Work) -> bytes:
        if work.url and not (work.file or self.folder.images):
            return self.url.fetch(work)
        return self.folder.fetch(work)
