"""What one rank of a Ray Train run holds (`RankState`: its settings, model, share of the data and
state between steps) and where it is in the run (`Position`, `EpochProgress`)."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from artdate.core.config import TrainConfig
from artdate.data import pipeline
from artdate.data.partition import Shard, Slice
from artdate.model import ranges
from artdate.model.network import ModelSpec


@dataclass
class RankState:
    """What the steps of one Ray Train worker share (train_func)."""

    cfg: TrainConfig
    spec: ModelSpec
    rank: int
    world: int
    device: torch.device
    ddp_model: torch.nn.Module  # what trains: the model wrapped by DDP when there are several ranks (and compiled)
    model: torch.nn.Module  # the model itself: what is saved and validated
    optimizer: torch.optim.Optimizer
    global_batch: int  # images per step over all ranks, whatever the number of ranks
    rank_batch: int  # this rank's share of it
    steps_per_epoch: int  # the same for any number of ranks
    train_shards: list[Shard]
    val_slices: list[Slice]  # this rank's share of the validation split, the same every epoch
    train_transform: Any
    eval_transform: Any
    decode_on_device: bool  # the loaders pass encoded JPEGs and the step decodes them (--decode-on device)
    console: Any  # rank 0's line to the driver's console (artdate/core/console.py); None on the other ranks
    mlflow_run: str
    calibration: ranges.RangeCalibration  # the latest epoch's: mid-epoch checkpoints carry it on
    history: list[dict] = dataclasses.field(default_factory=list)  # the learning curve so far
    preemption_deadline: float | None = None  # UNIX seconds of a noticed preemption (one checkpoint answers it)
    last_checkpoint: float = dataclasses.field(default_factory=time.monotonic)

    def tell(self, event: str, **fields) -> None:
        """Best effort: the console is never a reason for training to stop."""
        if self.console is None:
            return
        import ray.exceptions

        try:
            self.console.put_nowait({"event": event, **fields})
        except ray.exceptions.RayError as problem:
            print(f"the driver's console is gone ({type(problem).__name__}); training goes on", file=sys.stderr)
            self.console = None


@dataclass
class EpochProgress:
    """This rank's part of an epoch in this attempt: its slices and the samples it has read."""

    epoch: int
    first_step: int  # steps of the epoch done before this attempt
    mine: list[Slice]
    read: set[tuple[str, int]] = dataclasses.field(default_factory=set)

    def record(self, batch: pipeline.Batch) -> None:
        self.read.update(zip(batch.shard, batch.index))
        self.read.update((skip.shard, skip.index) for skip in batch.skipped)


@dataclass
class Position:
    """Where training starts: an epoch, the steps of it already done, and what of its plan is left
    to train (None: the whole epoch)."""

    epoch: int = 0
    step: int = 0
    plan: list[Slice] | None = None
