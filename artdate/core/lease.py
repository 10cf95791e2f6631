"""A lease on an output location: one run at a time writes there.

Locally the lease is an exclusive `flock` on a file: the operating system releases it when its
process ends, however it ends. On S3 it is an object created with a conditional write
(If-None-Match: *), renewed by its holder while it works and taken over only once it has expired,
or at once when its holder was a process on this machine that no longer exists.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import IO

from artdate.core import store

LEASE_SECONDS = 300.0  # an S3 lease not renewed for this long is free to take
RENEW_SECONDS = 60.0


class LeaseHeld(ValueError):
    """Another run holds the lease; the message names it."""


def _holder_text(record: dict) -> str:
    until = time.strftime("%H:%M:%S", time.localtime(record.get("expires", 0)))
    return f"pid {record.get('pid')} on {record.get('host')} (lease valid until {until} unless renewed)"


def _process_gone(record: dict) -> bool:
    """The holder ran on this machine and its process no longer exists."""
    if record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(record.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


class Lease:
    def __init__(self, url: str, what: str):
        self.url, self.what = url, what
        self.record = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self.etag: str | None = None
        self.handle: IO[str] | None = None
        self.renewed = 0.0

    def acquire(self) -> "Lease":
        if store.is_s3(self.url):
            self._acquire_s3()
        else:
            self._acquire_local()
        return self

    def _acquire_local(self) -> None:
        import fcntl

        os.makedirs(os.path.dirname(os.path.abspath(self.url)), exist_ok=True)
        handle = open(self.url, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise LeaseHeld(f"another run ({holder or 'unknown'}) is writing {self.what}; wait for it to end") from None
        try:
            same_file = os.fstat(handle.fileno()).st_ino == os.stat(self.url).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # we locked a lease file its holder had just removed: try again on the new one
            handle.close()
            return self._acquire_local()
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {self.record['pid']} on {self.record['host']}")
        handle.flush()
        self.handle = handle

    def _acquire_s3(self) -> None:
        from botocore.exceptions import ClientError

        bucket, key = store.split_s3(self.url)
        client = store.s3_client()
        try:
            self._put(IfNoneMatch="*")
            return
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
        current = client.get_object(Bucket=bucket, Key=key)
        earlier = json.loads(current["Body"].read())
        if time.time() < earlier.get("expires", 0) and not _process_gone(earlier):
            raise LeaseHeld(
                f"another run ({_holder_text(earlier)}) is writing {self.what}; wait for it to end, "
                f"or delete {self.url} if that run is gone"
            )
        try:
            self._put(IfMatch=current["ETag"])  # take over the stale lease, unless someone else just did
        except ClientError as error:
            raise LeaseHeld(f"another run just took over the lease {self.url} on {self.what}") from error

    def _put(self, **condition) -> None:
        bucket, key = store.split_s3(self.url)
        self.record["expires"] = time.time() + LEASE_SECONDS
        response = store.s3_client().put_object(
            Bucket=bucket, Key=key, Body=json.dumps(self.record).encode(), **condition
        )
        self.etag, self.renewed = response["ETag"], time.monotonic()

    def renew(self) -> None:
        """Keep an S3 lease alive; call it often (it writes at most once a minute)."""
        if self.etag and time.monotonic() - self.renewed > RENEW_SECONDS:
            self._put(IfMatch=self.etag)

    def release(self) -> None:
        if self.handle is not None:
            os.remove(self.url)  # removed while still locked: no other run can slip in between
            self.handle.close()
            self.handle = None
        elif self.etag is not None:
            store.delete(self.url)
            self.etag = None
