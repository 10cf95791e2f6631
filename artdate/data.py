"""Shards -> batches: which rank reads which shard, decoding, transforms, DataLoader.

How an epoch is split (DDP needs every rank to take the same number of steps):
- Each epoch the shard list is shuffled with (seed, epoch) and dealt to ranks largest first, each
  shard to the rank with the fewest samples so far. Ranks read disjoint shards, and their sample
  counts differ by at most one shard.
- Every rank takes exactly steps = total_samples // (world_size * batch_size) batches. A rank
  whose shards hold more stops early (the rest of its shard waits for the next epoch's deal); a
  rank whose shards hold fewer (a short last shard, skipped samples) wraps around its own shards.
  So an epoch is one pass over the data, give or take one shard per rank, and never hangs.
- Within a rank, DataLoader workers take every n-th shard of the rank's list.
Evaluation reads disjoint shards per rank with no step limit (no gradients to synchronise).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import random
from dataclasses import dataclass

import torch

from . import store

log = logging.getLogger(__name__)


def _open_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    if mode != "rb":
        raise ValueError(f"artdate reads shards only; cannot open {url} with mode {mode!r}")
    return store.open_read(url)


def register_s3(*_worker_id) -> None:
    """Teach webdataset to stream s3:// URLs through boto3 (it has no handler of its own).

    Runs in every process that reads shards (it is also the DataLoader's worker_init_fn, since
    spawned workers start without it).
    """
    import webdataset

    webdataset.gopen_schemes["s3"] = _open_s3


@dataclass(frozen=True)
class Shard:
    url: str
    samples: int


def manifest_shards(store_url: str, manifest: dict, split: str) -> list[Shard]:
    return [Shard(store.join(store_url, s["name"]), s["samples"]) for s in manifest["shards"] if s["split"] == split]


def assign_shards(shards: list[Shard], world_size: int, epoch: int, seed: int) -> list[list[Shard]]:
    """Deal shards to ranks for one epoch: disjoint, covering, balanced by sample count."""
    order = list(shards)
    random.Random(f"{seed}/{epoch}").shuffle(order)
    order.sort(key=lambda s: -s.samples)  # stable: equal sizes keep the shuffled order
    ranks: list[list[Shard]] = [[] for _ in range(world_size)]
    loads = [0] * world_size
    for shard in order:
        rank = loads.index(min(loads))
        ranks[rank].append(shard)
        loads[rank] += shard.samples
    return ranks


def steps_per_epoch(shards: list[Shard], world_size: int, batch_size: int) -> int:
    total = sum(s.samples for s in shards)
    steps = total // (world_size * batch_size)
    if steps == 0:
        raise ValueError(
            f"{total} training samples are too few for {world_size} worker(s) x batch size {batch_size}: "
            "lower --batch-size or --workers"
        )
    return steps


def check_enough_shards(shards: list[Shard], world_size: int, split: str) -> None:
    if len(shards) < world_size:
        raise ValueError(
            f"the {split} split has {len(shards)} shard(s) for {world_size} training workers; every worker needs "
            f"its own: pack again with a smaller --samples-per-shard, or use fewer --workers"
        )


def train_transform(image_size: int, mean, std):
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.35, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def eval_transform(image_size: int, mean, std):
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(round(image_size * 256 / 224), antialias=True),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def decode_image(data: bytes, image_size: int):
    """JPEG bytes -> RGB PIL image; draft mode lets libjpeg skip detail we would resize away."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (image_size, image_size))
    return image.convert("RGB")


class Decoder:
    """A pipeline stage: raw tar samples -> dicts of tensor + labels. A sample that fails to decode
    is skipped, logged, and counted in the next sample's `skipped` (summed per batch)."""

    def __init__(self, transform, image_size: int):
        self.transform = transform
        self.image_size = image_size

    def __call__(self, samples):
        skipped = 0
        for sample in samples:
            try:
                labels = json.loads(sample["json"])
                image = self.transform(decode_image(sample["jpg"], self.image_size))
                item = {
                    "image": image,
                    "key": sample["__key__"],
                    "id": str(labels.get("id", "")),
                    "museum": str(labels.get("museum", "")),
                    "year": int(labels["year"]),
                    "year_start": int(labels.get("year_start", labels["year"])),
                    "year_end": int(labels.get("year_end", labels["year"])),
                    "skipped": skipped,
                }
            except Exception as problem:
                skipped += 1
                log.warning("skipping sample %s in %s: %s", sample.get("__key__"), sample.get("__url__"), problem)
                continue
            skipped = 0
            yield item


def collate(items: list[dict]) -> dict:
    return {
        "image": torch.stack([i["image"] for i in items]),
        "year": torch.tensor([i["year"] for i in items]),
        "year_start": torch.tensor([i["year_start"] for i in items]),
        "year_end": torch.tensor([i["year_end"] for i in items]),
        "key": [i["key"] for i in items],
        "id": [i["id"] for i in items],
        "museum": [i["museum"] for i in items],
        "skipped": sum(i["skipped"] for i in items),
    }


def _warn_and_continue(problem: Exception) -> bool:
    log.warning("skipping the rest of a shard: %s", problem)
    return True


def make_loader(urls: list[str], transform, image_size: int, batch_size: int, *, loader_workers: int = 2,
                shuffle_buffer: int = 0, seed: int = 0, drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over `urls`; each DataLoader worker reads its own shards."""
    import webdataset as wds

    register_s3()
    stages = [wds.SimpleShardList(urls), wds.split_by_worker, wds.tarfile_to_samples(handler=_warn_and_continue)]
    if shuffle_buffer:
        stages.append(wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), seed=seed))
    stages += [Decoder(transform, image_size), wds.batched(batch_size, collation_fn=collate, partial=not drop_last)]
    pipeline = wds.DataPipeline(*stages)
    workers = min(loader_workers, len(urls))  # more workers than shards would sit idle
    return torch.utils.data.DataLoader(
        pipeline, batch_size=None, num_workers=workers, worker_init_fn=register_s3,
        persistent_workers=False, prefetch_factor=4 if workers else None,
    )


def take_steps(make_pass, steps: int):
    """Exactly `steps` batches, starting new passes over the rank's shards as needed."""
    taken = 0
    empty_passes = 0
    while taken < steps:
        got_any = False
        for batch in itertools.islice(make_pass(), steps - taken):
            got_any = True
            taken += 1
            yield batch
        empty_passes = 0 if got_any else empty_passes + 1
        if empty_passes >= 2:
            raise RuntimeError("a training worker's shards yield no decodable samples (see the warnings above)")
