"""Where image bytes come from: a local folder, a URL column, or the Met and Rijksmuseum APIs.

Each source turns a Work into the raw bytes of its image or raises FetchError with the reason.
HTTP fetches go through requests with urllib3's retry policy (429 and 5xx with backoff, Retry-After
as seconds or as an HTTP date, connection errors and timeouts), a global request rate, one
deadline per download, a byte cap, and a guard that every request, redirects included, is
http(s) and does not go to a link-local or cloud metadata address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .metadata import Work

MET_API = "https://collectionapi.metmuseum.org/public/collection/v1"
RIJKS_API = "https://www.rijksmuseum.nl/api/en"
RIJKS_KEY_VARIABLE = "RIJKSMUSEUM_API_KEY"
USER_AGENT = "artdate/0.1 (+https://github.com/artdate)"
# Link-local networks hold the cloud metadata services (169.254.169.254, AWS's fd00:ec2::254), which
# hand out the node's credentials to whoever asks: a URL in someone else's CSV must not reach them.
REFUSED_NETWORKS = [ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")]
MAX_REDIRECTS = 5
RETRIED_STATUSES = (429, 500, 502, 503, 504)


class FetchError(Exception):
    """The image of a work could not be had; the message says why (it ends up in rejects.csv).
    `transient`: the server or network failed even after the retries (timeouts, 429, 5xx, broken
    connections), so a later run may succeed: pack retries such works on a rerun."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


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


def refused_address(url: str) -> str:
    """The link-local or metadata address that `url`'s host resolves to, or ''."""
    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname or "", parts.port or 80, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return ""  # the request itself will fail and say so
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        address = getattr(address, "ipv4_mapped", None) or address
        if any(address in network for network in REFUSED_NETWORKS):
            return str(address)
    return ""


class CappedRetry(Retry):
    """urllib3's retry policy, with a server's Retry-After capped: a download waits a minute at most."""

    MAX_RETRY_AFTER = 60.0

    def get_retry_after(self, response):
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.MAX_RETRY_AFTER)


class GuardedAdapter(HTTPAdapter):
    """requests' adapter that checks every request it sends (the first and each redirect) before
    connecting, and spaces request starts by the client's rate."""

    def __init__(self, client: "HttpClient", **kwargs):
        self.client = client
        super().__init__(**kwargs)

    def send(self, request, **kwargs):
        if not self.client.allow_link_local:
            address = refused_address(request.url)
            if address:
                raise FetchError(f"refused {redact(request.url)}: it resolves to {address}, a link-local or cloud "
                                 "metadata address (--allow-link-local permits it)")
        self.client.limiter.wait()
        return super().send(request, **kwargs)


@dataclass
class HttpClient:
    rate: float = 10.0
    timeout: float = 30.0  # seconds for one attempt at a download: connecting, redirects and every byte
    max_bytes: int = 50_000_000
    attempts: int = 4
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    allow_link_local: bool = False

    def __post_init__(self):
        self.limiter = RateLimiter(self.rate)
        self.local = threading.local()  # a requests Session per thread: sessions are not thread-safe

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            retry = CappedRetry(total=self.attempts - 1, backoff_factor=self.backoff, backoff_jitter=self.backoff / 2,
                                status_forcelist=RETRIED_STATUSES, allowed_methods={"GET"}, raise_on_status=False)
            session = requests.Session()
            session.max_redirects = MAX_REDIRECTS
            session.headers["User-Agent"] = USER_AGENT
            adapter = GuardedAdapter(self, max_retries=retry)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self.local.session = session
        return self.local.session

    def get(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise FetchError(f"not an http(s) URL: {redact(url)}")
        # urllib3 retries up to the response headers; a body cut short is retried here, as a whole.
        for attempt in range(self.attempts):
            try:
                return self._get_once(url)
            except _Truncated as error:
                problem = f"{error} from {redact(url)}"
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff * 2**attempt)
        raise FetchError(f"{problem} (gave up after {self.attempts} attempts)", transient=True)

    def get_json(self, url: str) -> dict:
        body = self.get(url)
        try:
            return json.loads(body)
        except ValueError:
            raise FetchError(f"not JSON from {redact(url)}") from None

    def _get_once(self, url: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        try:
            with self.session().get(url, stream=True, timeout=self.timeout) as response:
                if response.status_code >= 400:
                    transient = response.status_code in RETRIED_STATUSES
                    gave_up = f" (gave up after {self.attempts} attempts)" if transient else ""
                    raise FetchError(f"HTTP {response.status_code} from {redact(url)}{gave_up}", transient)
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchError(f"{redact(url)} is {int(declared)} bytes, over the cap of {self.max_bytes}")
                body = bytearray()
                # read1 returns what one socket read brings, so a server that drips a byte at a time
                # meets the deadline check instead of holding a read open for ever.
                while chunk := response.raw.read1(64 * 1024, decode_content=True):
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise FetchError(f"{redact(url)} is over the cap of {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FetchError(f"{redact(url)} did not arrive within the deadline of {self.timeout:g} s")
                return bytes(body)
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError) as error:  # while reading the body
            raise _Truncated(f"truncated body ({_reason(error)})") from None
        except requests.exceptions.InvalidSchema:
            raise FetchError(f"{redact(url)} redirected to a URL that is not http(s)") from None
        except requests.exceptions.TooManyRedirects:
            raise FetchError(f"{redact(url)}: more than {MAX_REDIRECTS} redirects") from None
        except requests.exceptions.RequestException as error:
            raise FetchError(f"{_reason(error)} from {redact(url)} (gave up after {self.attempts} attempts)", True) from None


def _reason(error: Exception) -> str:
    """A short reason from requests' nested exceptions (MaxRetryError wraps the last one)."""
    inner = error.args[0] if error.args and isinstance(error.args[0], Exception) else error
    inner = getattr(inner, "reason", inner)
    if isinstance(inner, urllib3.exceptions.NewConnectionError):  # a subclass of the timeout errors
        return "cannot connect"
    if isinstance(inner, (urllib3.exceptions.TimeoutError, requests.exceptions.Timeout, TimeoutError)):
        return "timed out"
    return str(inner).split(": ", 1)[-1][:200]


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
