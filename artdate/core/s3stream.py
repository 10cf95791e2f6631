"""An S3 object read as one stream that survives dropped connections and a server restart.

botocore retries the request that opens an object, but not a body that breaks half-way: a shard
stream cut by a restarting server, a load balancer or a spot node's network would end the read.
Here a broken read is reopened at its byte offset (a ranged GET, pinned to the object's ETag so a
replaced object is never spliced onto the old one), with backoff, for up to `resume_seconds`.
A body that ends before its Content-Length counts as broken too: a truncated read never passes as
the whole object.
"""

from __future__ import annotations

import io
import logging
import time

log = logging.getLogger(__name__)

RESUME_SECONDS = 180.0  # a read that cannot be resumed within this long fails


def _transient(error: Exception) -> bool:
    """Network and server trouble worth a retry; not a missing object or refused credentials."""
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError

    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or status == 429
    return isinstance(error, (BotoCoreError, HTTPError, OSError))


class ResumableObject(io.RawIOBase):
    def __init__(self, client, bucket: str, key: str, resume_seconds: float = RESUME_SECONDS):
        self.client, self.bucket, self.key, self.resume_seconds = client, bucket, key, resume_seconds
        self.offset, self.etag, self.size = 0, None, None
        response = client.get_object(Bucket=bucket, Key=key)  # NoSuchKey and access errors surface here
        self._take(response)

    def _take(self, response: dict) -> None:
        self.body = response["Body"]
        self.etag = self.etag or response.get("ETag")
        if self.size is None:
            self.size = response["ContentLength"]

    def _reopen(self) -> None:
        arguments = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={self.offset}-"}
        if self.etag:
            arguments["IfMatch"] = self.etag
        self._take(self.client.get_object(**arguments))

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.offset >= (self.size or 0) or not len(buffer):  # size: known after the first request
            return 0
        deadline, delay = None, 0.5
        while True:
            try:
                if self.body is None:
                    self._reopen()
                data = self.body.read(len(buffer))
                if not data:
                    raise ConnectionError(f"the body ended at byte {self.offset} of {self.size}")
                buffer[: len(data)] = data
                self.offset += len(data)
                return len(data)
            except Exception as error:  # noqa: BLE001 -- sorted by _transient below
                if not _transient(error):
                    raise
                deadline = deadline or time.monotonic() + self.resume_seconds
                if time.monotonic() > deadline:
                    raise OSError(
                        f"s3://{self.bucket}/{self.key}: reading broke at byte {self.offset} of "
                        f"{self.size} and could not resume for {self.resume_seconds:.0f} s: {error}"
                    ) from error
                log.warning(
                    "s3://%s/%s: read broke at byte %d (%s); resuming", self.bucket, self.key, self.offset, error
                )
                self._close_body()
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _close_body(self) -> None:
        if self.body is not None:
            try:
                self.body.close()
            except Exception:  # noqa: BLE001 -- a broken connection may fail to close; it is dropped anyway
                pass
            self.body = None

    def close(self) -> None:
        self._close_body()
        super().close()
