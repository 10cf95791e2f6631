"""Storage URLs: a local path or s3://bucket/key, in one place.

S3 settings come only from the standard AWS variables and config files (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_CONFIG_FILE, instance metadata);
boto3 resolves them itself, and nothing here overrides them.
Writes are atomic: a local file is written under a temporary name and renamed, and an S3 object
only becomes visible when its upload completes, so a reader never sees half an object.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from typing import IO, Iterator
from urllib.parse import urlparse

_clients: dict[int, object] = {}


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def split_s3(url: str) -> tuple[str, str]:
    """s3://bucket/a/b -> ("bucket", "a/b")."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/key URL: {url!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def absolute(url: str) -> str:
    """Local paths made absolute: Ray workers run in other directories than the driver."""
    return url if is_s3(url) or not url else os.path.abspath(url)


def join(url: str, *names: str) -> str:
    if is_s3(url):
        return "/".join([url.rstrip("/"), *names])
    return os.path.join(url, *names)


def s3_client():
    """One boto3 client per process: clients are not safe to share across a fork."""
    pid = os.getpid()
    if pid not in _clients:
        import boto3
        from botocore.config import Config

        # No region here: boto3 finds it in the environment, the config file or instance metadata.
        config = Config(retries={"max_attempts": 8, "mode": "adaptive"})
        _clients[pid] = boto3.client("s3", config=config)
    return _clients[pid]


def exists(url: str) -> bool:
    if not is_s3(url):
        return os.path.exists(url)
    from botocore.exceptions import ClientError

    bucket, key = split_s3(url)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def read_bytes(url: str, max_bytes: int | None = None) -> bytes:
    """The whole object; with `max_bytes`, a larger one is refused after reading at most one byte
    more than the cap (a huge file, or /dev/zero, never fills the memory)."""
    with open_read(url) as stream:
        data = stream.read() if max_bytes is None else stream.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"{url} is over the cap of {max_bytes} bytes")
    return data


def open_read(url: str) -> IO[bytes]:
    """A stream over the object; S3 objects are streamed, not downloaded first, and a broken
    stream resumes at its byte offset (s3stream.py)."""
    if not is_s3(url):
        return open(url, "rb")
    from artdate.core.s3stream import ResumableObject

    bucket, key = split_s3(url)
    try:
        return io.BufferedReader(ResumableObject(s3_client(), bucket, key), buffer_size=1 << 20)
    except s3_client().exceptions.NoSuchKey:
        raise FileNotFoundError(f"no such object: {url}") from None


def upload_file(local_path: str, url: str) -> None:
    """Copy a finished local file to `url` atomically (multipart for large files on S3)."""
    if is_s3(url):
        from boto3.s3.transfer import TransferConfig

        bucket, key = split_s3(url)
        transfer = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20)
        s3_client().upload_file(local_path, bucket, key, Config=transfer)
        return
    os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
    partial = f"{url}.partial-{os.getpid()}"
    try:
        shutil.copyfile(local_path, partial)
    except OSError as problem:
        if os.path.exists(partial):
            os.remove(partial)
        # The copy's error names the local scratch file: the user needs the file that did not fit.
        raise OSError(problem.errno, problem.strerror, url) from None
    os.replace(partial, url)


@contextlib.contextmanager
def naming(path: str):
    """An OSError raised inside names `path`: a write to an open file fails with ENOSPC or EFBIG
    but no file name, and the user needs to know which disk is full."""
    try:
        yield
    except OSError as problem:
        if problem.filename is None and problem.errno:
            raise OSError(problem.errno, problem.strerror, path) from None
        raise


class _AtomicOutput:
    """A local file that becomes `url` only when `publish` runs (see atomic_output)."""

    def __init__(self, url: str):
        self.url, self.discarded = url, False
        if is_s3(url):
            handle, self.path = tempfile.mkstemp(prefix="artdate-upload-")
            os.close(handle)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
            self.path = f"{url}.partial-{os.getpid()}"
        self.file = open(self.path, "wb")

    def write(self, data: bytes) -> None:
        with naming(self.path):
            self.file.write(data)

    def discard(self) -> None:
        self.discarded = True

    def publish(self) -> None:
        with naming(self.path):
            self.file.close()
        if self.discarded:
            return
        if is_s3(self.url):
            upload_file(self.path, self.url)  # multipart above 64 MB: no 5 GB single-PUT ceiling
        else:
            os.replace(self.path, self.url)

    def clean_up(self) -> None:
        try:
            self.file.close()
        except OSError:  # flushing what is left failed (a full disk): the error already raised names the file
            pass
        if os.path.exists(self.path):
            os.remove(self.path)


@contextlib.contextmanager
def atomic_output(url: str):
    """Write a file of any size to `url` in pieces: nothing is visible at `url` until the block
    ends without an error (then it appears whole), and the writer's `discard()` publishes nothing."""
    output = _AtomicOutput(url)
    try:
        yield output
        output.publish()
    finally:
        output.clean_up()


def write_bytes(url: str, data: bytes) -> None:
    if is_s3(url):
        bucket, key = split_s3(url)
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    with atomic_output(url) as out:
        out.write(data)


def check_output_file(url: str, option: str) -> None:
    """Refuse now, naming `option`, a local file that could not be written later: a folder, a path
    under a file, a folder where no file can be created."""
    if is_s3(url):
        return
    path = os.path.abspath(url)
    if os.path.isdir(path):
        raise ValueError(f"{option} {url} is a folder; name the file to write, such as {os.path.join(url, 'x.csv')}")
    folder = os.path.dirname(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {url}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as problem:
        raise ValueError(f"{option} {url}: no file can be written in {folder} ({problem.strerror})") from None


def csv_bytes(rows: list[dict], columns: list[str], header: bool = True) -> bytes:
    """Rows as CSV text (with a header line unless `header` is False), ready for write_bytes."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def list_names(url: str) -> Iterator[str]:
    """Names of the objects directly under the directory/prefix `url` (not recursive)."""
    if not is_s3(url):
        if os.path.isdir(url):
            yield from sorted(os.listdir(url))
        return
    bucket, prefix = split_s3(url)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    paginator = s3_client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for item in page.get("Contents", []):
            yield item["Key"][len(prefix) :]
        for item in page.get("CommonPrefixes", []):
            yield item["Prefix"][len(prefix) :].rstrip("/")


def delete(url: str) -> None:
    if is_s3(url):
        bucket, key = split_s3(url)
        s3_client().delete_object(Bucket=bucket, Key=key)
    elif os.path.exists(url):
        os.remove(url)


def claim(url: str, identity: dict) -> dict[str, tuple]:
    """Claim a store for the run that `identity` describes: write it to `url` when nothing is
    there. Returns {field: (there, here)} for each field in which the claim already at `url`
    differs: empty when the store is this run's (pack, score and train each refuse otherwise)."""
    text = json.dumps(identity, indent=1)
    if not exists(url):
        write_bytes(url, text.encode())
        return {}
    identity = json.loads(text)  # as it would read back: tuples are lists
    earlier = json.loads(read_bytes(url))
    names = list(identity) + [name for name in earlier if name not in identity]
    return {name: (earlier.get(name), identity.get(name)) for name in names if earlier.get(name) != identity.get(name)}


def pyarrow_filesystem(url: str):
    """(filesystem, path) for Ray Train's RunConfig: pyarrow needs the endpoint passed explicitly."""
    if not is_s3(url):
        return None, os.path.abspath(url)

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs = {"endpoint_override": parsed.netloc or parsed.path, "scheme": parsed.scheme or "https"}
    # pyarrow reads only the variables, not the config file: hand it the region boto3 resolved
    # (variables, config file, instance metadata); with none, pyarrow resolves the bucket's own.
    region = s3_client().meta.region_name
    if region:
        kwargs["region"] = region
    bucket, key = split_s3(url)
    return _retrying_s3_filesystem(kwargs), f"{bucket}/{key}".rstrip("/")


def _retrying_s3_filesystem(kwargs: dict):
    """A pyarrow S3FileSystem that retries for 47 s, and still does after Ray pickles it to another process.

    Ray Train writes its checkpoint registry and uploads checkpoints through this filesystem, and
    one failed write ends the run: pyarrow's default (3 attempts) gave up 2 s into an S3 restart.
    8 attempts of the AWS standard strategy wait out 47 s of a server that does not answer
    (measured: 12 attempts wait 117 s). pyarrow's own pickling drops the retry strategy, and the
    TrainController gets its filesystem by pickle: this subclass pickles as the call that builds it.
    """
    import pyarrow.fs

    class RetryingS3FileSystem(pyarrow.fs.S3FileSystem):
        def __reduce__(self):
            return _retrying_s3_filesystem, (kwargs,)

    return RetryingS3FileSystem(retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=8), **kwargs)
