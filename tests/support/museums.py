"""A loopback server that answers like the Met's and the Rijksmuseum's public services, with the
real payloads recorded in ../shared/museum-fixtures (SOURCES.md there says where each came from).

Every public URL inside a payload is rewritten to this server, so a client follows the chain as it
would on the internet:
    /met/objects/{id}            collectionapi.metmuseum.org/public/collection/v1 (behind Incapsula)
    /met-images/...              images.metmuseum.org (web-large about 600 px, original 2,400 px)
    /rijks/search/collection     data.rijksmuseum.nl: the Search API
    /rijks-id/{n}                id.rijksmuseum.nl: Linked Art records (only for Accept: application/ld+json)
    /iiif/{id}/...               iiif.micr.io: info.json and sized images
    /img/{id}                    a plain image host; ids named after a failure make it happen
    /status/{code}               answers that HTTP status (every kind of refusal a server gives)
Objects the recordings hold are served as recorded. Any other Met id gets the recorded Wheat Field
record with its objectID and image URLs put to that id (`met_changes` sets other fields, such as a
photograph's classification); the Rijksmuseum objects in RIJKS_OBJECTS that no recording holds get
the recorded Milkmaid record with their object number, id and VisualItem put in. Images are the
sample's real images, resized to what was asked.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
FIXTURES = os.path.join(SHARED, "museum-fixtures")
SAMPLE = os.path.join(SHARED, "artworks-sample")
PUBLIC_ROOTS = {  # public root -> this server's prefix
    "https://collectionapi.metmuseum.org/public/collection/v1": "/met",
    "https://images.metmuseum.org": "/met-images",
    "https://data.rijksmuseum.nl": "/rijks",
    "https://id.rijksmuseum.nl": "/rijks-id",
    "https://iiif.micr.io": "/iiif",
}
FAILURES = {"flaky429", "flaky500", "slow", "truncated", "huge", "notimage", "retrydate", "drip"}
# Object number -> (Linked Art id, record file or None for the Milkmaid's record reshaped, VisualItem id).
RIJKS_OBJECTS = {
    "SK-A-2344": ("200108369", "humanmadeobject_200108369_milkmaid_SK-A-2344_TRIMMED_arrt.json", "202108369"),
    "RP-T-1930-54(V)": ("200117708", "linked-art_HumanMadeObject_200117708_RP-T-1930-54V_kintopp.json", "202117708"),
    "RP-T-1981-182-1": ("200556187", None, "202556187"),  # its VisualItem has no digitally_shown_by
    "TEST-ELSKEN-IN-COPYRIGHT": ("200100873", None, "202100873"),  # van der Elsken: "niet downloadbaar"
}
VISUAL_ITEMS = {
    "202108369": "visualitem_202108369_milkmaid_TRIMMED_arrt.json",
    "202100873": "visualitem_202100873_elsken_InC_TRIMMED_arrt.json",
    "202556187": "visualitem_202556187_no_digitally_shown_by_TRIMMED_arrt.json",
}
DIGITAL_OBJECTS = {
    "500118708085845066105": "digitalobject_500118708085845066105_milkmaid_arrt.json",
    "500658470110110757597": "digitalobject_500658470110110757597_elsken_niet_downloadbaar_arrt.json",
}
IIIF_INFO = {"QkOGy": "iiif_info_QkOGy_milkmaid_arrt.json", "NYkLJ": "iiif_info_NYkLJ_elsken_arrt.json"}
# Long formats among the recorded Met objects: the screen is wide, the hanging scroll tall.
MET_IMAGE_ASPECT = {"PHOTS-1262-003": 3.0, "DP251139": 1 / 3}


@dataclass
class Weather:
    """Recurring trouble for a soak, in the forms the real services show it, each decided by the
    time since the server started or by a hash of the path (so a run is repeatable):
    - the Met's front answers its 403 block page for `block_seconds` of every `block_period`;
    - the image hosts (the Met's and IIIF) answer 503 for `outage_seconds` of every `outage_period`,
      half a period after the blocks;
    - `reset_share` of the image paths have the connection reset half-way through the body the
      first time they are asked for;
    - the images of `drip_once` ids come a byte at a time, `drip_seconds` in all, the first time."""

    block_period: float = 0.0
    block_seconds: float = 0.0
    outage_period: float = 0.0
    outage_seconds: float = 0.0
    reset_share: float = 0.0
    drip_once: frozenset[str] = frozenset()
    drip_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def blocked(self) -> bool:
        return bool(self.block_period) and (time.monotonic() - self.started) % self.block_period < self.block_seconds

    def down(self) -> bool:
        if not self.outage_period:
            return False
        phase = (time.monotonic() - self.started + self.outage_period / 2) % self.outage_period
        return phase < self.outage_seconds

    def resets(self, path: str) -> bool:
        return _share(path) < self.reset_share


SOAK_UNKNOWN = 5  # Met ids of a soak that the Met does not know (404): its only final rejects


def soak_works(api: MuseumApi, count: int) -> list[dict]:
    """`count` works for a soak, as metadata rows: 9 in 10 of the Met (ids no recording holds, so
    each gets the Wheat Field's record; SOAK_UNKNOWN of them unknown to the Met), 1 in 10 of the
    Rijksmuseum."""
    rijks = api.add_rijks_objects(count // 10)
    met = [str(800_000 + n) for n in range(count - len(rijks) - SOAK_UNKNOWN)] + [
        f"404{n}" for n in range(SOAK_UNKNOWN)
    ]
    return [{"id": i, "year": "1650", "museum": "met"} for i in met] + [
        {"id": i, "year": "1650", "museum": "rijks"} for i in rijks
    ]


def soak_weather(scale: float, drip: str) -> Weather:
    """A soak's weather in real seconds times `scale` (as shipped_pace scales pack's settings): the
    Met's front blocks for 30 s every 5 minutes (as it does after a burst of requests), the image
    hosts answer 503 for 5 s every 2 minutes, 2% of image connections are reset once, and the
    image of `drip` drips for 45 s, past the 30 s deadline, once."""
    return Weather(
        block_period=300 * scale,
        block_seconds=30 * scale,
        outage_period=120 * scale,
        outage_seconds=5 * scale,
        reset_share=0.02,
        drip_once=frozenset({drip}),
        drip_seconds=45 * scale,
    )


def _share(text: str) -> float:
    """A number in [0, 1) fixed by `text`."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


def have_fixtures() -> bool:
    return os.path.isdir(FIXTURES) and os.path.isdir(SAMPLE)


def fixture(*path: str) -> str:
    with open(os.path.join(FIXTURES, *path), encoding="utf-8") as f:
        return f.read()


def sample_images(count: int) -> dict[str, bytes]:
    """The first `count` sample images by id (real JPEGs, about 512 px)."""
    import csv

    with open(os.path.join(SAMPLE, "artworks.csv"), newline="") as f:
        rows = list(csv.DictReader(f))[:count]
    return {row["id"]: open(os.path.join(SAMPLE, row["file"]), "rb").read() for row in rows}


def recorded_met_objects() -> dict[str, str]:
    objects = {}
    for name in os.listdir(os.path.join(FIXTURES, "met")):
        if name.endswith(".json"):
            text = fixture("met", name)
            record = json.loads(text)
            if isinstance(record, dict) and "objectID" in record:
                objects[str(record["objectID"])] = text
    return objects


def block_page() -> tuple[bytes, dict[str, str]]:
    """The Incapsula block page (2019) with the headers of the 403 recorded in 2025."""
    headers = {}
    for line in fixture("met", "incapsula_403_2025_openaccess_issue60_curl_headers_PARTIAL.txt").splitlines():
        if line.startswith("< ") and ": " in line:
            name, value = line[2:].split(": ", 1)
            if name.lower() not in ("content-length", "connection"):
                headers[name] = value
    return fixture("met", "incapsula_block_page_2019_openaccess_issue18.html").encode(), headers


class MuseumApi:
    """Start with `.start()`, stop with `.stop()`; `requests` logs every path served, `headers` the
    request headers of each. `block_met(after, seconds)` makes the Met's front answer its 403 block
    page to every API request for `seconds` once `after` more have been served."""

    def __init__(self, images: dict[str, bytes] | None = None, slow_seconds: float = 3.0):
        api = self
        self.images = images or {}
        self.slow_seconds = slow_seconds
        self.requests: list[str] = []
        self.headers: list[dict] = []
        self.sent: list[tuple[str, int]] = []  # (path, body bytes) of every answer
        self.failed_once: set[str] = set()
        self.down: set[str] = set()  # /img ids that answer 503 until removed (an outage)
        self.retry_after: dict[str, str] = {}  # /img id -> the Retry-After of the 503 it answers once
        self.met_changes: dict[str, dict] = {}  # Met id -> fields changed in its record
        self.met_objects = recorded_met_objects() if have_fixtures() else {}  # /img alone needs none
        self.rijks_objects = dict(RIJKS_OBJECTS)
        self.weather = Weather()
        self.seen: set[str] = set()  # image paths asked for before (weather that strikes once)
        self.reset_answers = 0
        self.outage_answers = 0
        self.block_after: int | None = None
        self.block_seconds = 0.0
        self.blocked_until = 0.0
        self.blocked_answers = 0
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with api.lock:
                    api.requests.append(self.path)
                    api.headers.append(dict(self.headers))
                api.answer(self)

        # One port per public host, as each has its own pace and its own blocks; every port answers
        # every path. The first serves /img and /redirect.
        self.servers = {
            prefix: ThreadingHTTPServer(("127.0.0.1", 0), Handler) for prefix in ["", *PUBLIC_ROOTS.values()]
        }
        for server in self.servers.values():
            server.daemon_threads = True
            server.museum_api = self
        # A short poll: shutdown() waits for it, once per port.
        self.threads = [
            threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in self.servers.values()
        ]

    def host(self, prefix: str = "") -> str:
        return f"http://127.0.0.1:{self.servers[prefix].server_address[1]}"

    @property
    def url(self) -> str:
        return self.host()

    def root(self, museum: str) -> str:
        """The API root for --api-url MUSEUM=..."""
        return self.host(f"/{museum}") + f"/{museum}"

    def start(self) -> "MuseumApi":
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()

    def count(self, fragment: str) -> int:
        return sum(fragment in path for path in self.requests)

    def add_rijks_objects(self, count: int) -> list[str]:
        """`count` more Rijksmuseum objects, each the Milkmaid's record reshaped and shown by its
        image; their object numbers."""
        numbers = [f"BENCH-{n}" for n in range(count)]
        for n, number in enumerate(numbers):
            self.rijks_objects[number] = (f"3{n:08d}", None, "202108369")
        return numbers

    def block_met(self, after: int, seconds: float) -> None:
        self.block_after, self.block_seconds = after, seconds

    def rewrite(self, text: str) -> str:
        for public, prefix in PUBLIC_ROOTS.items():
            text = text.replace(public, self.host(prefix) + prefix)
        return text

    def answer(self, handler) -> None:
        parsed = urlparse(handler.path)
        parts = parsed.path.strip("/").split("/")
        if parts[0] == "met":
            return self.met(handler, parts)
        if parts[0] == "met-images":
            return self.met_image(handler, parts)
        if parts[:3] == ["rijks", "search", "collection"]:
            return self.rijks_search(handler, parse_qs(parsed.query).get("objectNumber", [""])[0])
        if parts[0] == "rijks-id":
            return self.linked_art(handler, parts[1])
        if parts[0] == "iiif":
            return self.iiif(handler, parts[1:])
        if parts[0] == "img":
            return self.image(handler, parts[1])
        if parts[0] == "status":
            return self.send(handler, int(parts[1]), b"status", "text/plain")
        if parts[0] == "redirect":  # /redirect?to=URL answers 302 to URL
            return self.send(handler, 302, b"", "text/plain", {"Location": parse_qs(parsed.query)["to"][0]})
        return self.send(handler, 404, b"not found", "text/plain")

    # The Met
    def met(self, handler, parts: list[str]) -> None:
        with self.lock:
            now = time.monotonic()
            if self.block_after is not None:
                if self.block_after == 0:
                    self.blocked_until, self.block_after = now + self.block_seconds, None
                else:
                    self.block_after -= 1
            blocked = now < self.blocked_until or self.weather.blocked()
            self.blocked_answers += blocked
        if blocked:
            body, headers = block_page()
            handler.close_connection = True
            return self.send(handler, 403, body, headers.pop("Content-Type"), headers)
        if parts[1:2] != ["objects"] or len(parts) != 3:
            return self.send(handler, 404, b'{"message": "Not Found"}', "application/json")
        object_id = parts[2]
        if object_id.startswith("404"):
            return self.send(
                handler, 404, fixture("met", "arrt_object_not_found_404_body.json").encode(), "application/json"
            )
        if object_id in self.met_objects and object_id not in self.met_changes:
            return self.send(handler, 200, self.rewrite(self.met_objects[object_id]).encode(), "application/json")
        record = json.loads(self.met_objects.get(object_id) or self.met_objects["436535"])
        record["objectID"] = int(object_id) if object_id.isdigit() else object_id
        if object_id in FAILURES:
            record["primaryImage"] = record["primaryImageSmall"] = f"{self.url}/img/{object_id}"
        elif object_id not in self.met_objects:
            record["primaryImage"] = f"https://images.metmuseum.org/CRDImages/ep/original/{object_id}.jpg"
            record["primaryImageSmall"] = f"https://images.metmuseum.org/CRDImages/ep/web-large/{object_id}.jpg"
        record.update(self.met_changes.get(object_id, {}))
        return self.send(handler, 200, self.rewrite(json.dumps(record, indent=4)).encode(), "application/json")

    def met_image(self, handler, parts: list[str]) -> None:
        stem = parts[-1].rsplit(".", 1)[0]
        long_side = 600 if "web-large" in parts else 2400
        aspect = MET_IMAGE_ASPECT.get(stem)
        self.send_image(handler, stem, self.resized(stem, long_side=long_side, aspect=aspect))

    def send_image(self, handler, name: str, data: bytes) -> None:
        """An image from an image host, through its weather."""
        with self.lock:
            first = handler.path not in self.seen
            self.seen.add(handler.path)
            down = self.weather.down()
            self.outage_answers += down
            reset = first and self.weather.resets(handler.path)
            self.reset_answers += reset
        if down:
            return self.send(handler, 503, b"Service Unavailable", "text/html")
        if reset:  # half the body, then an RST (SO_LINGER 0), as a dropped connection arrives
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.close_connection = True
            return
        if first and name in self.weather.drip_once:
            return self.drip(handler, data, self.weather.drip_seconds)
        self.send(handler, 200, data, "image/jpeg")

    @staticmethod
    def drip(handler, data: bytes, seconds: float) -> None:
        """`data` in 100 pieces over `seconds`: each read is quick, the whole is not."""
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            step = -(-len(data) // 100)
            for start in range(0, len(data), step):
                handler.wfile.write(data[start : start + step])
                handler.wfile.flush()
                time.sleep(seconds / 100)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # The Rijksmuseum
    def rijks_search(self, handler, object_number: str) -> None:
        if object_number not in self.rijks_objects:
            return self.send(
                handler,
                200,
                self.rewrite(fixture("rijks", "search_title_zzqqxx_empty_jorgetroya80.json")).encode(),
                "application/ld+json",
            )
        page = json.loads(fixture("rijks", "search_title-creator_milkmaid_200108369_arrt.json"))
        page["orderedItems"][0]["id"] = f"https://id.rijksmuseum.nl/{self.rijks_objects[object_number][0]}"
        return self.send(handler, 200, self.rewrite(json.dumps(page, indent=1)).encode(), "application/ld+json")

    def linked_art(self, handler, number: str) -> None:
        if "application/ld+json" not in handler.headers.get("Accept", ""):  # a browser: to the web page
            return self.send(
                handler, 303, b"", "text/plain", {"Location": f"{self.url}/www/object/{number}"}
            )  # a 404 here
        text = self.linked_art_record(number)
        if text is None:
            return self.send(handler, 404, b"", "text/plain")
        return self.send(handler, 200, self.rewrite(text).encode(), "application/ld+json")

    def linked_art_record(self, number: str) -> str | None:
        for object_number, (record_id, record_file, visual_id) in self.rijks_objects.items():
            if number == record_id:
                if record_file:
                    return fixture("rijks", record_file)
                milkmaid = fixture("rijks", "humanmadeobject_200108369_milkmaid_SK-A-2344_TRIMMED_arrt.json")
                return (
                    milkmaid.replace('"SK-A-2344"', json.dumps(object_number))
                    .replace("200108369", record_id)
                    .replace("202108369", visual_id)
                )
            if number == visual_id and visual_id not in VISUAL_ITEMS:  # a VisualItem no recording holds
                return fixture("rijks", VISUAL_ITEMS["202108369"]).replace("202108369", visual_id)
        if number in VISUAL_ITEMS:
            return fixture("rijks", VISUAL_ITEMS[number])
        if number in DIGITAL_OBJECTS:
            return fixture("rijks", DIGITAL_OBJECTS[number])
        return None

    def iiif(self, handler, parts: list[str]) -> None:
        if not parts or parts[0] not in IIIF_INFO:
            return self.send(handler, 404, b"", "text/plain")
        info = json.loads(fixture("rijks", IIIF_INFO[parts[0]]))
        if parts[1:] == ["info.json"]:
            return self.send(
                handler, 200, self.rewrite(fixture("rijks", IIIF_INFO[parts[0]])).encode(), "application/json"
            )
        if len(parts) != 5 or parts[1] != "full" or parts[3] != "0" or parts[4] != "default.jpg":
            return self.send(handler, 400, b"unsupported request", "text/plain")
        size = iiif_request_size(parts[2], info["width"], info["height"])
        if size is None or (parts[2] != "max" and size[0] * size[1] > info["maxArea"]):
            return self.send(handler, 400, b"invalid size", "text/plain")  # as the real server answers
        return self.send_image(handler, parts[0], self.resized(parts[0], size=size))

    # Any image
    def resized(self, name: str, long_side: int = 0, aspect: float | None = None, size: tuple | None = None) -> bytes:
        """One of the images (by name, or chosen by a hash of it), at `size` or with its long side
        `long_side` (an `aspect` other than its own stretches it: a screen, a scroll)."""
        data = self.images.get(name) or self.any_image(name)
        return resized(data, long_side, aspect, size)

    def any_image(self, name: str) -> bytes:
        if not hasattr(self, "_pool"):
            self._pool = list(self.images.values()) or list(sample_images(8).values())
        return self._pool[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(self._pool)]

    def image(self, handler, object_id: str) -> None:
        if object_id in self.down:
            return self.send(handler, 503, b"down for maintenance", "text/plain", {"Retry-After": "0"})
        if object_id in ("flaky429", "flaky500") and object_id not in self.failed_once:
            self.failed_once.add(object_id)
            status = 429 if object_id == "flaky429" else 500
            return self.send(handler, status, b"try later", "text/plain", {"Retry-After": "0"})
        if object_id in self.retry_after and object_id not in self.failed_once:
            self.failed_once.add(object_id)
            return self.send(handler, 503, b"busy", "text/plain", {"Retry-After": self.retry_after[object_id]})
        if object_id == "retrydate" and object_id not in self.failed_once:  # 503, Retry-After as an HTTP date
            from email.utils import formatdate

            self.failed_once.add(object_id)
            return self.send(
                handler, 503, b"busy", "text/plain", {"Retry-After": formatdate(time.time() + 2, usegmt=True)}
            )
        if object_id == "slow":
            time.sleep(self.slow_seconds)
        if object_id == "drip":  # a valid header, then one byte every 0.2 s: every read is quick, the whole is not
            handler.send_response(200)
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
            try:
                for _ in range(1000):
                    handler.wfile.write(b"x")
                    handler.wfile.flush()
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if object_id == "notimage":
            return self.send(handler, 200, b"<html>maintenance</html>", "text/html")
        if object_id == "huge":
            handler.send_response(200)
            handler.send_header("Content-Length", str(10**9))
            handler.end_headers()
            return
        data = self.images.get(object_id) or self.any_image(object_id)
        if object_id == "truncated":
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 3])
            handler.close_connection = True
            return
        self.send(handler, 200, data, "image/jpeg")

    @staticmethod
    def send(handler, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
            handler.server.museum_api.sent.append((handler.path, len(body)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)


@functools.lru_cache(maxsize=64)  # a soak's thousands of works share a few images
def resized(data: bytes, long_side: int, aspect: float | None, size: tuple | None) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if size is None:
        aspect = aspect or image.width / image.height
        size = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    out = io.BytesIO()
    image.resize(size, Image.Resampling.BILINEAR).save(out, "JPEG", quality=85)
    return out.getvalue()


def iiif_request_size(size: str, width: int, height: int) -> tuple[int, int] | None:
    """The IIIF Image API size forms the client may ask for: max, w, ,h, !w,h."""
    if size == "max":
        return width, height
    match = re.fullmatch(r"(!?)(\d*),(\d*)", size)
    if not match:
        return None
    confined, w, h = match.group(1), match.group(2), match.group(3)
    if confined and w and h:
        scale = min(int(w) / width, int(h) / height)
        return round(width * scale), round(height * scale)
    if w and not h:
        return int(w), round(height * int(w) / width)
    if h and not w:
        return round(width * int(h) / height), int(h)
    return None
