"""HTTP downloads for the image sources: polite per host, patient with blocks, guarded against misuse.

- requests with urllib3's retry policy for server errors (5xx with backoff, Retry-After as
  seconds or an HTTP date, connection errors and timeouts);
- one gate per host: request starts spaced by the rate, and the whole host paused when it
  answers 429 or a bot-protection block page (the Met's Incapsula front answers 403 with an HTML
  page after a few dozen quick requests), for Retry-After or a long pause that doubles while the
  block lasts;
- one deadline per attempt at a download for the download itself: the time it waits at a paused
  or rate-limited host's gate, or before a retry, is not its own and does not count;
- a failure that a later try can cure (a deadline, a reset or cut-short connection, 408, 425,
  429, 5xx, a block that outlasts the retries, a page that is not the JSON asked for) is
  `transient`, retried by a rerun; only what a rerun cannot change (404 and other refusals, a
  body over the cap, a URL that is not http(s) or leads to a refused address) is final;
- a guard that every request, redirects included, is http(s) and does not go to a link-local or
  cloud metadata address, and a byte cap;
- a User-Agent naming artdate, its version and the project's URL on every request.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from artdate import USER_AGENT

# Link-local networks hold the cloud metadata services (169.254.169.254, AWS's fd00:ec2::254), which
# hand out the node's credentials to whoever asks: a URL in someone else's CSV must not reach them.
REFUSED_NETWORKS = [ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")]
MAX_REDIRECTS = 5
# Answers that a later try can cure: retried by urllib3 with backoff, then transient. 429 and block
# pages pause the whole host instead (HostGate). 501 and 505 say the server cannot serve the request.
PASSING_STATUSES = frozenset({408, 425, *range(500, 600)}) - {501, 505}
MAX_RETRY_AFTER = 60  # the longest a download waits for a server's Retry-After before its retry
MAX_BLOCK_PAUSE = 15 * 60.0  # the longest a host is paused in one go, however long it asks for


class FetchError(Exception):
    """The image of a work could not be had; the message says why (it ends up in rejects.csv).
    `transient`: the server or network failed even after the retries (a deadline, blocks, 5xx,
    broken connections), so a later run may succeed: pack retries such works on a rerun.
    `status`: the HTTP status that ended the download, where one did."""

    def __init__(self, message: str, transient: bool = False, status: int = 0):
        super().__init__(message)
        self.transient = transient
        self.status = status


def redact(url: str) -> str:
    """Never print an API key: drop the value of key= from URLs in messages."""
    return re.sub(r"(?i)([?&](?:api_?)?key=)[^&]*", r"\1***", url)


class HostGate:
    """One host's pace: at most `rate` request starts per second across all threads; none while the
    host is paused after a block, and then a single probe until the host answers again. A host
    blocked for longer than `give_up_after` seconds is given up for this run: its works fail at
    once as passing failures (a rerun fetches them) instead of waiting in turn for ever."""

    def __init__(self, host: str, rate: float, give_up_after: float):
        self.host = host
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.give_up_after = give_up_after
        self.next_start = 0.0
        self.paused_until = 0.0
        self.blocked_since = 0.0
        self.blocks_in_a_row = 0
        self.probe_until = 0.0  # while a probe is out after a pause, the others wait for its answer
        self.changed = threading.Condition()

    def wait(self, probe_timeout: float) -> float:
        """Sleep until this request may start; its start time (to tell which block it saw)."""
        with self.changed:
            while True:
                now = time.monotonic()
                if self.blocks_in_a_row and max(now, self.paused_until) - self.blocked_since > self.give_up_after:
                    raise FetchError(
                        f"{self.host} has blocked requests for over {self.give_up_after:g} s (given up for this run)",
                        transient=True,
                    )
                if now < self.paused_until:
                    self.changed.wait(self.paused_until - now)
                elif now < self.probe_until:
                    self.changed.wait(self.probe_until - now)
                else:
                    break
            if self.blocks_in_a_row:
                self.probe_until = now + probe_timeout
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        if start > now:
            time.sleep(start - now)
        return start

    def block(self, started: float, retry_after: float | None, pause: float) -> None:
        """The host refused a request that started at `started`. Requests in flight when a block
        begins all see it: only the first of them pauses the host (again), the others wait."""
        with self.changed:
            self.probe_until = 0.0
            if started >= self.paused_until - 1e-6:  # not a request that began before the current pause
                self.blocks_in_a_row += 1
                if self.blocks_in_a_row == 1:
                    self.blocked_since = started
                seconds = retry_after if retry_after is not None else pause * 2 ** (self.blocks_in_a_row - 1)
                self.paused_until = time.monotonic() + min(seconds, MAX_BLOCK_PAUSE)
            self.changed.notify_all()

    def answered(self) -> None:
        """The host answered without a block (whatever the answer): the block, if any, is over."""
        with self.changed:
            if self.blocks_in_a_row or self.probe_until:
                self.blocks_in_a_row, self.probe_until = 0, 0.0
                self.changed.notify_all()


def refused_address(url: str) -> str:
    """The link-local or metadata address that `url`'s host resolves to, or ''."""
    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname or "", parts.port or 80, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return ""  # the request itself will fail and say so
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        address = getattr(address, "ipv4_mapped", None) or address
        if any(address in network for network in REFUSED_NETWORKS):
            return str(address)
    return ""


class PatientRetry(Retry):
    """urllib3's retry policy, which tells `on_wait` how long it slept before a retry (backoff, or
    a server's Retry-After), so that the wait does not count against the download's deadline. 429
    is not retried here: it pauses the whole host at its gate, like a block page."""

    RETRY_AFTER_STATUS_CODES = frozenset()

    def __init__(self, *args, on_wait=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_wait = on_wait

    def new(self, **kw):
        retry = super().new(**kw)  # urllib3 makes a new policy for each retry: keep the callback
        retry.on_wait = self.on_wait
        return retry

    def sleep(self, response=None):
        slept_from = time.monotonic()
        super().sleep(response)
        if self.on_wait:
            self.on_wait(time.monotonic() - slept_from)


@dataclass
class Attempt:
    """One try at a download, in the thread that makes it: what its deadline counts, and the gates
    of the hosts it went to (redirects included)."""

    began: float = field(default_factory=time.monotonic)
    waited: float = 0.0  # seconds queued at hosts' gates or sleeping before a retry: not the download's own
    started: float = 0.0  # when its latest request left its host's gate (which block it saw)
    gates: list[HostGate] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.began - self.waited


class GuardedAdapter(HTTPAdapter):
    """requests' adapter that checks every request it sends (the first and each redirect) before
    connecting, and waits for its host's gate."""

    def __init__(self, client: "HttpClient", **kwargs):
        self.client = client
        super().__init__(**kwargs)

    def send(self, request, **kwargs):
        if not self.client.allow_link_local:
            address = refused_address(request.url)
            if address:
                raise FetchError(
                    f"refused {redact(request.url)}: it resolves to {address}, a link-local or cloud "
                    "metadata address (--allow-link-local permits it)"
                )
        gate = self.client.gate(request.url)
        attempt = self.client.local.attempt
        queued_from = time.monotonic()
        attempt.started = gate.wait(self.client.timeout)
        attempt.waited += time.monotonic() - queued_from
        attempt.gates.append(gate)
        return super().send(request, **kwargs)


@dataclass
class HttpClient:
    rate: float = 2.0  # request starts per second to each host
    timeout: float = 30.0  # seconds for one attempt at a download: connecting, redirects and every byte
    max_bytes: int = 50_000_000
    attempts: int = 4
    backoff: float = 1.0  # seconds before the first retry of a server error; doubles each time
    block_pause: float = 60.0  # seconds a blocking host is left alone (doubling while it stays blocked)
    user_agent: str = USER_AGENT
    allow_link_local: bool = False

    def __post_init__(self):
        self.gates: dict[str, HostGate] = {}  # host -> its gate, shared by every thread
        self.gates_lock = threading.Lock()
        self.local = threading.local()  # a requests Session per thread: sessions are not thread-safe

    def gate(self, url: str) -> HostGate:
        host = urlsplit(url).netloc.lower()
        with self.gates_lock:
            if host not in self.gates:
                # As long as the pauses of one work's retries add up to: a block that outlasts them
                # is not waited out by every work in turn.
                self.gates[host] = HostGate(host, self.rate, self.block_pause * (2**self.attempts - 1))
            return self.gates[host]

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            retry = PatientRetry(
                total=self.attempts - 1,
                backoff_factor=self.backoff,
                backoff_jitter=self.backoff / 2,
                status_forcelist=PASSING_STATUSES,
                allowed_methods={"GET"},
                raise_on_status=False,
                retry_after_max=MAX_RETRY_AFTER,
                on_wait=self._waited,
            )
            session = requests.Session()
            session.max_redirects = MAX_REDIRECTS
            session.headers["User-Agent"] = self.user_agent
            adapter = GuardedAdapter(self, max_retries=retry)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self.local.session = session
        return self.local.session

    def get(self, url: str, headers: dict | None = None) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise FetchError(f"not an http(s) URL: {redact(url)}")
        # urllib3 retries server errors up to the response headers; a body cut short or late and a
        # block are retried here, as a whole.
        for attempt in range(self.attempts):
            self.local.attempt = Attempt()
            try:
                body = self._get_once(url, headers)
            except _Blocked as block:
                problem = f"{block} from {redact(url)}: still blocked"
                self.local.attempt.gates[-1].block(self.local.attempt.started, block.retry_after, self.block_pause)
                continue
            except _Incomplete as error:
                problem = str(error)
                self._answered()
                if attempt + 1 < self.attempts:
                    time.sleep(self.backoff * 2**attempt)
                continue
            except BaseException:
                self._answered()
                raise
            self._answered()
            return body
        raise FetchError(f"{problem} (gave up after {self.attempts} attempts)", transient=True)

    def _answered(self) -> None:
        for gate in self.local.attempt.gates:
            gate.answered()

    def _waited(self, seconds: float) -> None:
        self.local.attempt.waited += seconds

    def get_json(self, url: str, headers: dict | None = None) -> dict:
        body = self.get(url, headers)
        try:
            return json.loads(body)
        except ValueError:  # a maintenance or challenge page served as 200: a later try may get the record
            raise FetchError(f"not JSON from {redact(url)}", transient=True) from None

    def _get_once(self, url: str, headers: dict | None) -> bytes:
        try:
            with self.session().get(url, headers=headers, stream=True, timeout=self.timeout) as response:
                if response.status_code >= 400:
                    if blocked(response):
                        raise _Blocked(f"HTTP {response.status_code} (a block)", retry_after(response))
                    transient = response.status_code in PASSING_STATUSES
                    gave_up = f" (gave up after {self.attempts} attempts)" if transient else ""
                    raise FetchError(
                        f"HTTP {response.status_code} from {redact(url)}{gave_up}", transient, response.status_code
                    )
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
                    if self.local.attempt.elapsed() > self.timeout:
                        raise _Incomplete(f"{redact(url)} did not arrive within the deadline of {self.timeout:g} s")
                return bytes(body)
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError) as error:  # while reading the body
            raise _Incomplete(f"truncated body ({_reason(error)}) from {redact(url)}") from None
        except requests.exceptions.InvalidSchema:
            raise FetchError(f"{redact(url)} redirected to a URL that is not http(s)") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as error:
            raise FetchError(f"not a valid URL: {redact(url)} ({_reason(error)})") from None
        except requests.exceptions.TooManyRedirects:  # a loop (a sign-in wall, say) that the server may mend
            raise FetchError(f"{redact(url)}: more than {MAX_REDIRECTS} redirects", transient=True) from None
        except requests.exceptions.RequestException as error:
            raise FetchError(
                f"{_reason(error)} from {redact(url)} (gave up after {self.attempts} attempts)", True
            ) from None


def blocked(response: requests.Response) -> bool:
    """429, or a 403 from bot protection (Imperva Incapsula, in front of the Met's API: an
    `X-Iinfo` header, a `visid_incap` cookie, an HTML page naming Incapsula). A plain 403 of a
    server that refuses a file for good stays final."""
    if response.status_code == 429:
        return True
    if response.status_code != 403:
        return False
    if "x-iinfo" in response.headers or "incap" in response.headers.get("Set-Cookie", "").lower():
        return True
    return b"incapsula" in response.raw.read(64 * 1024, decode_content=True).lower()


def retry_after(response: requests.Response) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), or None when absent or unreadable."""
    try:
        return Retry().parse_retry_after(response.headers["Retry-After"])
    except (KeyError, urllib3.exceptions.InvalidHeader):
        return None


def _reason(error: Exception) -> str:
    """A short reason from requests' nested exceptions (MaxRetryError wraps the last one)."""
    inner = error.args[0] if error.args and isinstance(error.args[0], Exception) else error
    inner = getattr(inner, "reason", inner)
    if isinstance(inner, urllib3.exceptions.NewConnectionError):  # a subclass of the timeout errors
        return "cannot connect"
    if isinstance(inner, (urllib3.exceptions.TimeoutError, requests.exceptions.Timeout, TimeoutError)):
        return "timed out"
    return str(inner).split(": ", 1)[-1][:200]


class _Incomplete(Exception):
    """A body cut short, or not whole within the deadline: retried as a whole, then transient."""


class _Blocked(Exception):
    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after
