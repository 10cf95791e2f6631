"""Shard URLs -> samples: WebDataset pipelines over a local store or S3."""

from __future__ import annotations

from . import store


def _open_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    if mode != "rb":
        raise ValueError(f"artdate reads shards only; cannot open {url} with mode {mode!r}")
    return store.open_read(url)


def register_s3() -> None:
    """Teach webdataset to stream s3:// URLs through boto3 (it has no handler of its own).

    Call it in every process that reads shards: spawned DataLoader workers start without it.
    """
    import webdataset

    webdataset.gopen_schemes["s3"] = _open_s3
