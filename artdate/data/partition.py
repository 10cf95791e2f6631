"""Which rank reads which samples: the pure partition logic, with no torch or webdataset.

The unit of work is a slice of a shard: samples start..stop of one tar, in the order they were
packed. Splitting by sample rather than by whole shard means any number of ranks can share any
number of shards, and every rank gets the same number of samples (give or take one):
- Training: each epoch the shard order is shuffled with (seed, epoch), the shards are laid end to
  end (the epoch's plan), and rank r takes the r-th of `world` runs of samples, in proportion to
  its share of the global batch. Every rank takes exactly steps = total_samples // global_batch
  batches of its share, whatever the world size; a rank that comes up short (skipped samples)
  wraps around its own slices, so DDP never waits on an uneven rank. A checkpoint inside an epoch
  keeps the plan's unread samples (`unread`), which a resume cuts among its own ranks.
- Validation: the same cut without the shuffle, so every validation sample is evaluated exactly
  once, whatever the number of ranks and validation shards.
- Within a rank, the DataLoader workers cut the rank's slices again the same way (pipeline.py).
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass

from artdate.data.shards import shard_url


@dataclass(frozen=True)
class Shard:
    url: str
    samples: int


@dataclass(frozen=True)
class Slice:
    """Samples start..stop (in packing order) of the shard at `url`."""

    url: str
    start: int
    stop: int

    @property
    def samples(self) -> int:
        return self.stop - self.start


def manifest_shards(store_url: str, manifest: dict, split: str | None = None) -> list[Shard]:
    """The store's shards of one split (or all of them)."""
    return [Shard(shard_url(store_url, s), s["samples"]) for s in manifest["shards"] if split in (None, s["split"])]


def store_slices(store_url: str, manifest: dict, split: str | None = None) -> list[Slice]:
    """Every shard of a store (or of one split), whole."""
    return whole(manifest_shards(store_url, manifest, split))


def cut(slices: list[Slice], parts: int, weights: list[int] | None = None) -> list[list[Slice]]:
    """Lay `slices` end to end and cut them into `parts` runs of equal sample count (+-1), or of
    counts in proportion to `weights` (rounded down at each cut)."""
    total = sum(s.samples for s in slices)
    weights = weights or [1] * parts
    cumulative = list(itertools.accumulate(weights, initial=0))
    bounds = [total * c // cumulative[-1] for c in cumulative]
    runs: list[list[Slice]] = [[] for _ in range(parts)]
    offset = 0  # position of the current slice's first sample in the whole run
    for piece in slices:
        for part in range(parts):
            low, high = max(bounds[part], offset), min(bounds[part + 1], offset + piece.samples)
            if low < high:
                runs[part].append(Slice(piece.url, piece.start + low - offset, piece.start + high - offset))
        offset += piece.samples
    return runs


def whole(shards: list[Shard]) -> list[Slice]:
    return [Slice(s.url, 0, s.samples) for s in shards]


def epoch_plan(shards: list[Shard], epoch: int, seed: int) -> list[Slice]:
    """An epoch's training samples: the shards in an order drawn from (seed, epoch), end to end."""
    order = list(shards)
    random.Random(f"{seed}/{epoch}").shuffle(order)
    return whole(order)


def rank_batches(global_batch: int, world_size: int) -> list[int]:
    """Each rank's share of a step's `global_batch` images (equal, +-1)."""
    if global_batch < world_size:
        raise ValueError(f"a global batch of {global_batch} cannot feed {world_size} workers")
    return [global_batch // world_size + (rank < global_batch % world_size) for rank in range(world_size)]


def assign_train(plan: list[Slice], global_batch: int, world_size: int) -> list[list[Slice]]:
    """Each rank's training slices of what is left of an epoch's `plan`: disjoint, covering, in
    proportion to the rank's share of the global batch, so every rank can take plan // global_batch
    steps of its share."""
    return cut(plan, world_size, rank_batches(global_batch, world_size))


def unread(plan: list[Slice], read: set[tuple[str, int]]) -> list[Slice]:
    """The slices of `plan` without the samples in `read` ((shard url, position) pairs): what a
    mid-epoch checkpoint leaves to train, whatever order and ranks read the rest in."""
    positions: dict[str, list[int]] = {}
    for url, index in read:
        positions.setdefault(url, []).append(index)
    for indices in positions.values():
        indices.sort()
    left = []
    for piece in plan:
        indices = positions.get(piece.url, [])
        start = piece.start
        for index in indices[bisect.bisect_left(indices, piece.start) : bisect.bisect_left(indices, piece.stop)]:
            if start < index:
                left.append(Slice(piece.url, start, index))
            start = index + 1
        if start < piece.stop:
            left.append(Slice(piece.url, start, piece.stop))
    return left


def assign_val(shards: list[Shard], world_size: int) -> list[list[Slice]]:
    """Each rank's validation slices: every validation sample exactly once over all ranks."""
    return cut(whole(shards), world_size)


def steps_per_epoch(shards: list[Shard], global_batch: int) -> int:
    """Optimizer steps in a whole epoch: the same for any number of workers."""
    total = sum(s.samples for s in shards)
    steps = total // global_batch
    if steps == 0:
        raise ValueError(
            f"{total} training samples are too few for a global batch of {global_batch}: "
            "lower --batch-size or --workers"
        )
    return steps
