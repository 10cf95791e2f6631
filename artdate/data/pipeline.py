"""Shards -> batches: reading slices of shards, decoding, transforms, the DataLoader.

Which rank reads which samples is partition.py's; this module reads them. A slice in the middle of
a shard is reached by reading (not decoding) the samples before it. Undecodable samples, and
samples a broken shard never delivered, are named in each `Batch`'s `skipped` list (`Skip`
records), so a consumer can tell how many of its samples it did not see. With transform=None the
images stay encoded JPEGs, for device_decode.py to decode on the GPU.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import multiprocessing
import os
import random
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from artdate.core import store
from artdate.core.works import derive_seed
from artdate.data.partition import Slice, cut

log = logging.getLogger(__name__)


def _open_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    if mode != "rb":
        raise ValueError(f"artdate reads shards only; cannot open {url} with mode {mode!r}")
    return store.open_read(url)


def register_s3() -> None:
    """Teach plain webdataset to stream s3:// URLs through store.open_read (it has no handler of
    its own), for reading a store with `webdataset.WebDataset` outside artdate's own loader."""
    import webdataset

    webdataset.gopen_schemes["s3"] = _open_s3


@dataclass(frozen=True)
class Skip:
    """A sample the loader did not deliver: why, and whether the shard never delivered it (a
    broken stream: the samples exist, score reads the shard again) or it did not decode."""

    shard: str
    key: str
    reason: str
    unread: bool = False
    index: int = -1  # the sample's position in its shard: what a mid-epoch checkpoint counts as read

    def record(self) -> dict:
        """The row of results.skipped.csv."""
        return {"shard": self.shard, "key": self.key, "reason": self.reason}


@dataclass
class Batch:
    """What a loader yields, train and score read: images and their labels, plus the samples
    skipped since the previous batch. `image` is uint8 NCHW, a list of encoded JPEGs (decoding
    left to the device), or None when every sample since the last batch was skipped."""

    image: torch.Tensor | list[torch.Tensor] | None
    year: torch.Tensor
    year_start: torch.Tensor
    year_end: torch.Tensor
    key: list[str]
    shard: list[str]
    id: list[str]
    museum: list[str]
    index: list[int] = field(default_factory=list)  # each sample's position in its shard
    skipped: list[Skip] = field(default_factory=list)

    def pin_memory(self) -> Batch:
        """DataLoader(pin_memory=True) calls this: page-locked tensors copy to the GPU asynchronously."""
        image = self.image.pin_memory() if isinstance(self.image, torch.Tensor) else self.image
        return replace(self, image=image, **{name: getattr(self, name).pin_memory() for name in LABELS})

    def __reduce__(self) -> tuple:
        """How a batch crosses from a loader process to the one training or scoring: each tensor
        travels through shared memory, and every storage costs the receiving process a file
        descriptor passed over a socket (about 2 ms: the serial part of the loader, bench/
        speed/loader.py). So the labels travel inline as lists, and encoded JPEGs as one tensor of
        their bytes end to end; only the images use shared memory, one storage a batch."""
        image: Any = self.image
        lengths = None
        if isinstance(image, list):
            lengths = [len(jpeg) for jpeg in image]
            image = torch.cat(image) if image else torch.zeros(0, dtype=torch.uint8)
        labels = [getattr(self, name).tolist() for name in LABELS]
        others = (self.key, self.shard, self.id, self.museum, self.index, self.skipped)
        return _received_batch, (image, lengths, labels, others)

    def take(self, keep: list[int]) -> Batch:
        """The batch of the samples at positions `keep` only (its skip records stay)."""
        picked: dict[str, Any] = {}
        for name in PER_SAMPLE:
            value = getattr(self, name)
            picked[name] = value[keep] if isinstance(value, torch.Tensor) else [value[i] for i in keep]
        return replace(self, **picked)


LABELS = ("year", "year_start", "year_end")
PER_SAMPLE = ("image", *LABELS, "key", "shard", "id", "museum", "index")


def _received_batch(image, lengths: list[int] | None, labels: list[list[int]], others: tuple) -> Batch:
    """A Batch as Batch.__reduce__ sent it."""
    if lengths is not None:
        image = list(torch.split(image, lengths))
    year, year_start, year_end = (torch.tensor(values, dtype=torch.int64) for values in labels)
    return Batch(image, year, year_start, year_end, *others)


def train_transform(image_size: int):
    """uint8 CHW tensor -> random resized crop + flip, still uint8: the float conversion and the
    normalisation run on the device (network.model_inputs), on 4x fewer bytes through the loader."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(image_size, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()])


def eval_transform(image_size: int):
    """uint8 CHW tensor -> resize + centre crop, still uint8."""
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)])


def decode_image(jpg: bytes) -> torch.Tensor:
    """JPEG bytes (as pack stores them) -> uint8 RGB CHW tensor, decoded by TorchCodec straight
    into a tensor (about twice the rate of PIL decode + ToTensor; bench/RESULTS.md). TorchCodec
    replaces torchvision's image decoders, deprecated since torchvision 0.29."""
    from torchcodec.decoders import decode_jpeg

    return decode_jpeg(jpg, mode="RGB")  # type: ignore[return-value]  # one JPEG: one tensor


def read_slice(piece: Slice):
    """The raw tar samples of one slice. A broken shard (truncated, unreachable) ends the slice
    early with a skip record for every sample it did not deliver."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    delivered, problem = 0, None

    def stop_on_error(error: Exception) -> bool:
        nonlocal problem
        problem = error
        return False

    try:
        stream = store.open_read(piece.url)
    except Exception as error:  # noqa: BLE001 -- any failure to open is reported per sample below
        stream, problem = None, error
    if stream is not None:
        try:
            files = tar_file_expander([{"url": piece.url, "stream": stream}], handler=stop_on_error)
            for sample in itertools.islice(group_by_keys(files, handler=stop_on_error), piece.start, piece.stop):
                sample["__index__"] = piece.start + delivered
                delivered += 1
                yield sample
        finally:
            stream.close()
    missing = piece.samples - delivered
    if missing:
        reason = (
            f"shard ended after {piece.start + delivered} samples: {problem or 'fewer samples than the manifest says'}"
        )
        log.warning("%s: %d sample(s) not read: %s", piece.url, missing, reason)
        for index in range(piece.start + delivered, piece.stop):
            yield {"__skip__": reason, "__url__": piece.url, "__key__": "", "__index__": index}


def encoded(jpg: bytes) -> torch.Tensor:
    """JPEG bytes as a 1-dimensional uint8 tensor: how a loader hands them on undecoded."""
    return torch.frombuffer(bytearray(jpg), dtype=torch.uint8)


class Decoder:
    """Raw tar samples -> dicts of image tensor + labels, or {"skip": Skip} for a sample that
    could not be read or decoded. With
    transform=None the image stays an encoded JPEG, for decode_on_device."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, samples):
        for sample in samples:
            url, key, index = sample.get("__url__", ""), sample.get("__key__", ""), sample.get("__index__", -1)
            if "__skip__" in sample:
                yield {"skip": Skip(url, key, sample["__skip__"], unread=True, index=index)}
                continue
            try:
                labels = json.loads(sample["json"])
                jpg = sample["jpg"]
                yield {
                    "image": encoded(jpg) if self.transform is None else self.transform(decode_image(jpg)),
                    "key": key,
                    "shard": url,
                    "index": index,
                    "id": str(labels.get("id", "")),
                    "museum": str(labels.get("museum", "")),
                    **label_years(labels),
                }
            except Exception as problem:  # noqa: BLE001 -- any undecodable sample is skipped, not fatal
                log.warning("skipping sample %s in %s: %s", key, url, problem)
                yield {"skip": Skip(url, key, f"undecodable: {problem}"[:300], index=index)}


# The year a loader gives an undated work (its JSON holds none): far outside any sane year, so no
# sum can mistake it for one. Only score reads undated shards, and writes it as an empty year.
NO_YEAR = -1_000_000


def label_years(labels: dict) -> dict[str, int]:
    """year, year_start and year_end of a sample's JSON as numbers (NO_YEAR for an undated work)."""
    year = labels["year"]
    if year is None:
        return dict.fromkeys(LABELS, NO_YEAR)
    return {
        "year": int(year),
        "year_start": int(labels.get("year_start", year)),
        "year_end": int(labels.get("year_end", year)),
    }


def collate(items: list[dict], skipped: list[Skip]) -> Batch:
    images: list | torch.Tensor = [i["image"] for i in items]
    if items and items[0]["image"].dim() == 3:  # decoded; 1-dimensional ones are encoded JPEGs
        stacked = torch.empty((len(items), *items[0]["image"].shape), dtype=torch.uint8)
        if torch.utils.data.get_worker_info() is not None:  # in a loader process: stacked straight
            stacked.share_memory_()  # into the shared memory the batch travels in (a copy saved)
        images = torch.stack(images, out=stacked)  # type: ignore[arg-type]
    year, year_start, year_end = (torch.tensor([i[name] for i in items], dtype=torch.int64) for name in LABELS)
    return Batch(
        image=images if items else None,
        year=year,
        year_start=year_start,
        year_end=year_end,
        key=[i["key"] for i in items],
        shard=[i["shard"] for i in items],
        id=[i["id"] for i in items],
        museum=[i["museum"] for i in items],
        index=[i["index"] for i in items],
        skipped=skipped,
    )


def batches(items, batch_size: int, drop_last: bool):
    """Group decoded items into batches; skip records ride along with the batch after them."""
    good, skipped = [], []
    for item in items:
        if "skip" in item:
            skipped.append(item["skip"])
            continue
        good.append(item)
        if len(good) == batch_size:
            yield collate(good, skipped)
            good, skipped = [], []
    if (good or skipped) and not drop_last:
        yield collate(good, skipped)


class SliceDataset(torch.utils.data.IterableDataset):
    """Batches from a rank's slices. Each DataLoader worker takes its own cut of the slices, and
    draws its random numbers (shuffle buffer, augmentation) from its own seed."""

    def __init__(
        self,
        slices: list[Slice],
        transform,
        batch_size: int,
        *,
        shuffle_buffer: int = 0,
        seed: int = 0,
        drop_last: bool = False,
    ):
        self.slices, self.transform = slices, transform
        self.batch_size, self.shuffle_buffer, self.seed, self.drop_last = batch_size, shuffle_buffer, seed, drop_last
        self.passes = 0  # counted in each (persistent) worker: a wrap-around pass draws new numbers

    def __iter__(self):
        from webdataset import shuffle

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        worker_seed = derive_seed(self.seed, "loader-worker", worker, self.passes)
        self.passes += 1
        torch.manual_seed(worker_seed)  # the random crops and flips of the transforms
        samples = (sample for piece in cut(self.slices, workers)[worker] for sample in read_slice(piece))
        if self.shuffle_buffer:
            samples = shuffle(self.shuffle_buffer, min(self.shuffle_buffer, 100), rng=random.Random(worker_seed))(
                samples
            )
        yield from batches(Decoder(self.transform)(samples), self.batch_size, self.drop_last)


PREFETCH = 4  # batches each loader process prepares ahead


def shared_memory_need(batch_size: int, image_size: int, loader_workers: int) -> int:
    """Bytes of /dev/shm a loader's batches of uint8 crops take at most: each process's prefetched
    batches, and one more each on its way to the consumer (a batch crosses in shared memory)."""
    return loader_workers * (PREFETCH + 1) * batch_size * 3 * image_size**2


def make_loader(
    slices: list[Slice],
    transform,
    batch_size: int,
    *,
    loader_workers: int = 2,
    shuffle_buffer: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    persistent: bool = False,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader of uint8 image batches over `slices`; `persistent` keeps its worker processes
    between passes. `pin_memory` (for a consumer on CUDA) hands the batches over in page-locked
    memory, for asynchronous copies: it is the consumer's device that decides, not whether the
    machine has a GPU, so a CPU worker on a GPU node opens no CUDA context."""
    dataset = SliceDataset(slices, transform, batch_size, shuffle_buffer=shuffle_buffer, seed=seed, drop_last=drop_last)
    workers = min(loader_workers, sum(s.samples for s in slices))  # a worker without samples would sit idle
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        persistent_workers=persistent and workers > 0,
        prefetch_factor=PREFETCH if workers else None,
        pin_memory=pin_memory,
        multiprocessing_context=forkserver() if workers else None,
        worker_init_fn=functools.partial(_take_environment, dict(os.environ)) if workers else None,
    )


# What a loader worker imports: this module, and the ones its functions import when first used.
WORKER_IMPORTS = [__name__, "torchvision.transforms.v2", "torchcodec.decoders", "webdataset"]


def forkserver() -> multiprocessing.context.BaseContext:
    """The start method of loader workers. Not fork: the loaders run inside Ray actors, whose
    threads a fork would copy mid-lock (Ray's guidance); a forkserver forks from a clean
    single-threaded process. That process imports what a worker needs (`WORKER_IMPORTS`) once
    when it starts, so a worker forked from it starts in a fraction of a second instead of
    importing them again (seconds each, every epoch: bench/speed/loader_start.py). It keeps the
    environment of its start, so each worker takes this process's as it is now (storage
    credentials set later, for one: `_take_environment`)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_IMPORTS)  # read when the server starts, once per process
    return context


def _take_environment(environment: dict[str, str], worker_id: int) -> None:
    os.environ.clear()
    os.environ.update(environment)


def prefetch(items):
    """Iterate `items` one item ahead in a background thread: the next batch is read and decoded
    (TorchCodec and the transforms release the GIL) while the caller runs the model on this one,
    so a scoring actor's GPU does not wait for JPEG decoding between batches."""
    from concurrent.futures import ThreadPoolExecutor

    end = object()
    items = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="prefetch") as pool:
        upcoming = pool.submit(next, items, end)
        while (item := upcoming.result()) is not end:
            upcoming = pool.submit(next, items, end)
            yield item


def take_steps(make_pass, steps: int):
    """Exactly `steps` batches, starting new passes over the rank's slices as needed. Batches
    without images (only skipped samples) are passed on but not counted as steps."""
    taken = 0
    empty_passes = 0
    while taken < steps:
        got_any = False
        for batch in make_pass():
            if batch.image is None:
                yield batch
                continue
            got_any = True
            taken += 1
            yield batch
            if taken == steps:
                return
        empty_passes = 0 if got_any else empty_passes + 1
        if empty_passes >= 2:
            raise RuntimeError("a training worker's shards yield no decodable samples (see the warnings above)")
