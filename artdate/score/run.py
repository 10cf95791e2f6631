"""`artdate score`: a pool of Ray actors scores whole shards into results.csv.

Each actor (`Scorer`) loads the checkpoint once and scores one shard per call. The driver writes
each finished shard's rows to `<out>.parts/` at once (score_parts.py), so a rerun after a crash or Ctrl-C scores only
the shards that are missing. Work goes only to actors that have started: actors the cluster
cannot place yet (waiting for the autoscaler) join when they start, and a visible message says
so. An actor that dies is killed for good (releasing its GPU), replaced, and its shard scored
again. The final CSV is streamed from the parts (the driver never holds the result set), checked
to hold every work of every shard once, and appears atomically.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from artdate.core import placement, store
from artdate.core.config import ScoreConfig
from artdate.core.lease import Lease
from artdate.core.options import with_absolute_storage
from artdate.core.raycluster import connect, resolve_gpus
from artdate.data import device_decode, partition, pipeline, shards
from artdate.model import comparanda
from artdate.model.checkpoints import load_checkpoint, resolve_checkpoint
from artdate.model.network import WithFeatures, compiled, on_device, predict_years
from artdate.score.actor_pool import ActorPool
from artdate.score.score_parts import LEASE_FILE, assemble, claim_parts, clear_parts, keep_part, part_name, result_row

WAIT_REPORT_SECONDS = placement.REPORT_SECONDS
ASK_OPTIONS = "--cpus-per-actor/--gpus-per-actor"
# --batch-size 0: a GPU scores ResNet152 at 7,454 img/s at 256 against 3,052 at 64 (bench/RESULTS.md).
CPU_SCORE_BATCH, GPU_SCORE_BATCH = 64, 256


class Scorer:
    """Runs in a Ray actor: the model is loaded once, then scores shard after shard."""

    def __init__(
        self,
        checkpoint_url: str,
        batch_size: int,
        decode_on: str = "cpu",
        loader_workers: int = 0,
        compile: bool = False,
        on_gpu: bool = False,
    ):
        # The device the actor's resource ask implies, not what the node has: Ray 2.60 shows every
        # GPU of the node to an actor that asked for none, and such actors would all crowd cuda:0.
        self.device = torch.device("cuda" if on_gpu else "cpu")
        self.model, self.spec, info = load_checkpoint(checkpoint_url)
        self.calibration = info["calibration"]
        self.model = on_device(self.model, self.device)
        self.forward = compiled(WithFeatures(self.model), compile)  # the years and the comparanda's features
        self.transform = pipeline.eval_transform(self.spec.image_size)
        self.batch_size = batch_size
        self.on_device = decode_on == "device"  # the loader passes encoded JPEGs; they are decoded here
        self.loader_workers = loader_workers

    def ready(self) -> int:
        return os.getpid()

    def score(self, shard_url: str, samples: int, split: str) -> tuple[list[dict], list[pipeline.Skip], np.ndarray]:
        """(rows, skip records, the rows' embeddings) of one shard: rows and skips together account
        for each of its samples; embedding i (float16, unit length) is row i's."""
        rows: list[dict] = []
        skips: list[pipeline.Skip] = []
        embeddings: list[torch.Tensor] = []
        loader = pipeline.make_loader(
            [partition.Slice(shard_url, 0, samples)],
            None if self.on_device else self.transform,
            self.batch_size,
            loader_workers=self.loader_workers,
            pin_memory=self.device.type == "cuda",
        )
        device_transform = self.transform if self.on_device else None
        for batch in device_decode.decoded_batches(pipeline.prefetch(loader), skips, self.device, device_transform):
            predicted = predict_years(
                self.forward, self.spec, batch.image, self.device, self.calibration, embeddings, batch.museum
            )
            years, lows, highs = predicted.year.tolist(), predicted.low.tolist(), predicted.high.tolist()
            spreads: list = predicted.spread.tolist() if predicted.spread is not None else [None] * len(years)
            level = self.calibration.level
            for i, key in enumerate(batch.key):
                dated = None  # an undated work's year, range and diff stay empty
                if int(batch.year[i]) != pipeline.NO_YEAR:
                    dated = (int(batch.year[i]), int(batch.year_start[i]), int(batch.year_end[i]))
                predicted_i = (years[i], lows[i], highs[i], spreads[i])
                rows.append(result_row(batch.id[i], batch.museum[i], key, split, predicted_i, level, dated, shard_url))
        features = torch.cat(embeddings).numpy().astype(np.float16) if embeddings else np.zeros((0, 0), np.float16)
        return rows, skips, features


@dataclass
class Tally:
    """What this run has scored so far."""

    started: float = field(default_factory=time.perf_counter)
    scored: int = 0
    skipped: int = 0
    incomplete: list[str] = field(default_factory=list)  # shards not read whole
    first_result: tuple[float, int] | None = None  # (seconds, rows): actor start-up and model loading end here

    def add(self, rows: int, skips: int) -> None:
        self.scored += rows
        self.skipped += skips
        if self.first_result is None:
            self.first_result = (time.perf_counter() - self.started, rows)

    def images_per_second(self) -> float:
        return self.scored / (time.perf_counter() - self.started)

    def after_startup(self, seconds: float) -> float:
        """Images per second once the first result came: the steady rate, without start-up."""
        if self.first_result is None:
            return 0.0
        return (self.scored - self.first_result[1]) / max(seconds - self.first_result[0], 1e-9)


def run_scoring(cfg: ScoreConfig, progress: bool = True, verbose: bool = False) -> dict:
    """Score the shards; write cfg.out; return a summary (rows, shards, skipped, seconds).
    `verbose` forwards the actors' and Ray's own output to this console."""
    cfg = with_absolute_storage(cfg)

    if not store.is_s3(cfg.out) and os.path.isdir(cfg.out):  # found now, not after scoring every shard
        raise ValueError(f"--out {cfg.out} is a folder; name the results file, such as {cfg.out}/results.csv")
    store.check_output_file(cfg.out, "--out")  # under a file, or in a folder that takes no file
    manifest = shards.read_manifest(cfg.shards)
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    _, spec, _ = load_checkpoint(checkpoint)  # a missing or incompatible checkpoint fails here, not in every actor
    if cfg.comparanda:  # likewise comparanda of another checkpoint, or none
        comparanda.saved_reference(cfg.comparanda, checkpoint)
    todo_all = [s for s in manifest["shards"] if cfg.split in ("all", s["split"])]
    if not todo_all:
        raise ValueError(f"{cfg.shards} has no {cfg.split} shards to score")
    if not cfg.comparanda and cfg.split in ("val", "undated"):
        # The default comparanda are the training works this run scores: here none.
        print(
            f"no neighbours file: --split {cfg.split} scores none of the training works to compare with; to list "
            "each work's nearest ones, pass --comparanda with the results of a score of the training works "
            "(--split train or all) with this checkpoint",
            file=sys.stderr,
            flush=True,
        )
    parts = cfg.out.rstrip("/") + ".parts"
    connect(verbose=verbose)
    # One run at a time per --out: a second would score everything again and delete the parts the
    # first still needs.
    lease = Lease(store.join(parts, LEASE_FILE), f"--out {cfg.out}").acquire()
    try:
        summary = _score(cfg, checkpoint, spec, todo_all, parts, lease, progress)
    finally:
        lease.release()
    if not store.is_s3(parts):
        os.rmdir(parts)  # emptied by _score
    return summary


def _score(
    cfg: ScoreConfig, checkpoint: str, spec, todo_all: list[dict], parts: str, lease: Lease, progress: bool
) -> dict:
    """Score the shards of `todo_all` that have no part yet, then assemble cfg.out from the parts."""
    claim_parts(parts, checkpoint, cfg.shards)
    done = set(store.list_names(parts))
    samples_of = {shards.shard_url(cfg.shards, s): s["samples"] for s in todo_all}  # by URL, in the manifest's order
    todo = [s for s, url in zip(todo_all, samples_of) if part_name(url) not in done]
    tally = _score_shards(cfg, checkpoint, spec, todo, parts, lease, progress)
    if tally.incomplete:
        raise ValueError(
            "some shards could not be read whole; their rows were not kept:\n  " + "\n  ".join(tally.incomplete)
        )

    rows, unreadable = assemble(parts, list(samples_of), samples_of, cfg.out)
    neighbours = comparanda.write_comparanda(
        parts, [part_name(url) for url in samples_of], cfg.out, checkpoint, reference_from=cfg.comparanda
    )
    clear_parts(parts)
    seconds = time.perf_counter() - tally.started
    return {
        "rows": rows,
        "neighbours": neighbours,
        "unreadable": unreadable,
        "shards": len(todo_all),
        "scored_now": len(todo),
        "skipped": tally.skipped,
        "seconds": seconds,
        "images_per_second_after_startup": tally.after_startup(seconds),
        "checkpoint": checkpoint,
    }


def _score_shards(
    cfg: ScoreConfig, checkpoint: str, spec, todo: list[dict], parts: str, lease: Lease, progress: bool
) -> Tally:
    """Hand the shards of `todo` to a pool of actors as they start and free up; write each
    finished shard's part as it comes."""
    import ray
    from tqdm import tqdm

    actors = min(cfg.actors, len(todo))
    gpus = resolve_gpus(cfg.gpus_per_actor, actors, "actor", spec.backbone)
    # Work goes to the actors that start; one that can never start is an error now, not after --start-timeout.
    why = placement.never_fits(placement.Ask(1, cfg.cpus_per_actor, gpus, "scoring actor", ASK_OPTIONS))
    if why:
        raise placement.ClusterTooSmall(why, exit_code=2)
    actor_class = ray.remote(Scorer).options(num_cpus=cfg.cpus_per_actor, num_gpus=gpus, scheduling_strategy="SPREAD")
    total = sum(s["samples"] for s in todo)
    bar = tqdm(total=total, unit="img", desc="score", disable=None if progress else True, file=sys.stderr)
    tally = Tally()
    queue = [(shards.shard_url(cfg.shards, s), s) for s in todo]
    batch = cfg.batch_size or (GPU_SCORE_BATCH if gpus > 0 else CPU_SCORE_BATCH)
    make_actor = functools.partial(
        actor_class.remote, checkpoint, batch, cfg.decode_on, cfg.loader_workers, cfg.compile, gpus > 0
    )
    pool = ActorPool(make_actor, actors, cfg.max_retries)
    waiting_since = time.monotonic()
    try:
        while queue or pool.running:
            lease.renew()
            while queue and pool.idle:
                pool.submit(pool.idle.pop(), *queue.pop(0))
            ref = pool.wait(WAIT_REPORT_SECONDS)
            if ref is None:
                _report_waiting(pool, cfg, gpus, waiting_since)
            elif ref in pool.starting:
                pool.start_finished(ref)
            else:
                url, entry, result = pool.shard_finished(ref)
                if result is None:
                    queue.insert(0, (url, entry))
                    continue
                rows, skips, features = result
                tally.add(len(rows), len(skips))
                if not keep_part(parts, url, entry["samples"], rows, skips, features):
                    tally.incomplete.append(
                        f"{url}: {len(rows)} of {entry['samples']} samples readable (corrupt or truncated shard)"
                    )
                bar.update(entry["samples"])
                shards_done = len(todo) - len(queue) - len(pool.running)
                bar.set_postfix(
                    shards=f"{shards_done}/{len(todo)}", img_s=f"{tally.images_per_second():.1f}", refresh=False
                )
    finally:
        bar.close()
        pool.shutdown()
    return tally


def _report_waiting(pool: ActorPool, cfg: ScoreConfig, gpus: float, waiting_since: float) -> None:
    """Nothing finished for a while: say why, and give up if no actor could ever start."""
    if not pool.starting:
        return
    ask = f"{cfg.cpus_per_actor:g} CPU" + (f" + {gpus:g} GPU" if gpus else "")
    print(
        f"{len(pool.starting)} of {len(pool.actors)} scoring actor(s) ({ask} each) are waiting for the cluster "
        f"to place them (the autoscaler may be adding nodes); {pool.started()} started and scoring",
        file=sys.stderr,
        flush=True,
    )
    if pool.started() == 0 and time.monotonic() - waiting_since > cfg.start_timeout:
        raise placement.ClusterTooSmall(
            f"no scoring actor ({ask}) could start within {cfg.start_timeout:g} s: the cluster lacks "
            f"the resources; lower {ASK_OPTIONS}, or add nodes",
            exit_code=1,
        )
