"""`artdate score`: a pool of Ray actors scores whole shards into results.csv.

Each actor loads the checkpoint once and scores one shard per call. The driver writes each
finished shard's rows to `<out>.parts/` at once, so a rerun after a crash or Ctrl-C scores only
the shards that are missing. Work goes only to actors that have started: actors the cluster
cannot place yet (waiting for the autoscaler) join when they start, and a visible message says
so. An actor that dies is killed for good (releasing its GPU), replaced, and its shard scored
again. The final CSV is streamed from the parts (the driver never holds the result set), checked
to hold every work of every shard once, and appears atomically.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import comparanda, data, shards, store
from .checkpoints import load_checkpoint, resolve_checkpoint
from .config import ScoreConfig
from .lease import Lease
from .model import predict_years
from .raycluster import connect, resolve_gpus

# pred_low..pred_high: the calibrated range meant to hold range_level of true years.
COLUMNS = [
    "id",
    "museum",
    "year",
    "pred",
    "pred_low",
    "pred_high",
    "diff",
    "split",
    "shard",
    "year_start",
    "year_end",
    "spread",
    "range_level",
    "key",
]
SKIP_COLUMNS = ["shard", "key", "reason"]
CLAIM_FILE = "_run.json"  # which checkpoint and shards the parts are of (store.claim)
LEASE_FILE = "_lease"
WAIT_REPORT_SECONDS = 30


class Scorer:
    """Runs in a Ray actor: the model is loaded once, then scores shard after shard."""

    def __init__(self, checkpoint_url: str, batch_size: int, decode_on: str = "cpu", loader_workers: int = 0):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.spec, info = load_checkpoint(checkpoint_url)
        self.calibration = info["calibration"]
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.transform = data.eval_transform(self.spec.image_size)
        self.batch_size = batch_size
        self.on_device = decode_on == "device"  # the loader passes encoded JPEGs; they are decoded here
        self.loader_workers = loader_workers

    def ready(self) -> int:
        return os.getpid()

    def score(self, shard_url: str, samples: int, split: str) -> tuple[list[dict], list[data.Skip], np.ndarray]:
        """(rows, skip records, the rows' embeddings) of one shard: rows and skips together account
        for each of its samples; embedding i (float16, unit length) is row i's."""
        rows: list[dict] = []
        skips: list[data.Skip] = []
        embeddings: list[torch.Tensor] = []
        loader = data.make_loader(
            [data.Slice(shard_url, 0, samples)],
            None if self.on_device else self.transform,
            self.batch_size,
            loader_workers=self.loader_workers,
        )
        for batch in data.prefetch(loader):
            if self.on_device:
                batch = data.decode_on_device(batch, self.transform, self.device)
            skips += batch.skipped
            if batch.image is None:
                continue
            predicted = predict_years(
                self.model, self.spec, batch.image, self.device, self.calibration, embeddings=embeddings
            )
            years, lows, highs = predicted.year.tolist(), predicted.low.tolist(), predicted.high.tolist()
            spreads: list = predicted.spread.tolist() if predicted.spread is not None else [None] * len(years)
            for i, key in enumerate(batch.key):
                year = int(batch.year[i])
                rows.append(
                    {
                        "id": batch.id[i],
                        "museum": batch.museum[i],
                        "year": year,
                        "pred": round(years[i], 1),
                        "pred_low": round(lows[i]),
                        "pred_high": round(highs[i]),
                        "range_level": self.calibration.level,
                        "diff": round(years[i] - year, 1),
                        "split": split,
                        "shard": shard_url,
                        "year_start": int(batch.year_start[i]),
                        "year_end": int(batch.year_end[i]),
                        "spread": None if spreads[i] is None else round(spreads[i], 1),
                        "key": key,
                    }
                )
        features = torch.cat(embeddings).numpy().astype(np.float16) if embeddings else np.zeros((0, 0), np.float16)
        return rows, skips, features


def _part_name(shard_url: str) -> str:
    return shard_url.rstrip("/").rsplit("/", 1)[-1] + ".csv"


def _skips_name(shard_url: str) -> str:
    return _part_name(shard_url)[: -len(".csv")] + ".skipped.csv"


def skipped_url(out: str) -> str:
    """Where the samples that could not be decoded are listed: results.csv -> results.skipped.csv."""
    stem = out[: -len(".csv")] if out.endswith(".csv") else out
    return stem + ".skipped.csv"


def _check_or_start_parts(parts: str, checkpoint: str, shards_url: str) -> None:
    """Parts of another checkpoint or store must not be mixed into these results."""
    differences = store.claim(store.join(parts, CLAIM_FILE), {"checkpoint": checkpoint, "shards": shards_url})
    if differences:
        held = ", ".join(f"{name} {then}" for name, (then, _) in differences.items())
        raise ValueError(f"{parts} holds partial results of another run ({held}); delete it or write to another --out")


class ActorPool:
    """Scoring actors, with the calls in flight and the actors that have not started yet. An actor
    that dies or fails to start is replaced, up to `max_retries` times per shard and for starts."""

    def __init__(self, make_actor, size: int, max_retries: int):
        import ray

        self.ray, self.make_actor, self.max_retries = ray, make_actor, max_retries
        self.actors = [make_actor() for _ in range(size)]
        self.starting = {actor.ready.remote(): index for index, actor in enumerate(self.actors)}
        self.idle: list[int] = []
        self.running: dict = {}  # object ref -> (actor index, shard url, manifest entry)
        self.failed_starts = 0
        self.deaths: dict[str, int] = {}  # shard url -> times its actor died

    def started(self) -> int:
        return len(self.actors) - len(self.starting)

    def replace(self, index: int) -> None:
        """Kill the actor for good (a dead or unreachable actor may still hold its GPU) and start another."""
        self.ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self.make_actor()
        self.starting[self.actors[index].ready.remote()] = index

    def submit(self, index: int, url: str, entry: dict) -> None:
        self.running[self.actors[index].score.remote(url, entry["samples"], entry["split"])] = (index, url, entry)

    def wait(self, timeout: float):
        """The next actor that started or shard that finished, or None after `timeout` seconds."""
        ready, _ = self.ray.wait([*self.running, *self.starting], num_returns=1, timeout=timeout)
        return ready[0] if ready else None

    def start_finished(self, ref) -> None:
        """An actor's start-up ended: it is idle now, or it failed and another one starts."""
        index = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayActorError as problem:
            self.failed_starts += 1
            if self.failed_starts > self.max_retries:
                raise RuntimeError(
                    f"scoring actors failed to start {self.failed_starts} times; last: {problem}"
                ) from None
            print(f"a scoring actor failed to start ({str(problem)[:200]}); starting another", file=sys.stderr)
            self.replace(index)
            return
        self.idle.append(index)

    def shard_finished(self, ref) -> tuple[str, dict, tuple | None]:
        """(shard url, manifest entry, what the actor returned); None when the actor died, which
        is replaced: the caller queues the shard again."""
        index, url, entry = self.running.pop(ref)
        try:
            result = self.ray.get(ref)
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError) as problem:
            self.deaths[url] = self.deaths.get(url, 0) + 1
            if self.deaths[url] > self.max_retries:
                raise RuntimeError(f"scoring {url} failed {self.deaths[url]} times; last: {problem}") from None
            print(f"actor died while scoring {url}; replacing it and scoring the shard again", file=sys.stderr)
            self.replace(index)
            return url, entry, None
        self.idle.append(index)
        return url, entry, result

    def shutdown(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


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
    from dataclasses import replace

    cfg = replace(
        cfg, shards=store.absolute(cfg.shards), checkpoint=store.absolute(cfg.checkpoint), out=store.absolute(cfg.out)
    )

    if not store.is_s3(cfg.out) and os.path.isdir(cfg.out):  # found now, not after scoring every shard
        raise ValueError(f"--out {cfg.out} is a folder; name the results file, such as {cfg.out}/results.csv")
    manifest = shards.read_manifest(cfg.shards)
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    _, spec, _ = load_checkpoint(checkpoint)  # a missing or incompatible checkpoint fails here, not in every actor
    todo_all = [s for s in manifest["shards"] if cfg.split in ("all", s["split"])]
    if not todo_all:
        raise ValueError(f"{cfg.shards} has no {cfg.split} shards to score")
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
    _check_or_start_parts(parts, checkpoint, cfg.shards)
    done = set(store.list_names(parts))
    todo = [s for s in todo_all if _part_name(store.join(cfg.shards, s["name"])) not in done]
    tally = _score_shards(cfg, checkpoint, spec, todo, parts, lease, progress)
    if tally.incomplete:
        raise ValueError(
            "some shards could not be read whole; their rows were not kept:\n  " + "\n  ".join(tally.incomplete)
        )

    shard_urls = [store.join(cfg.shards, s["name"]) for s in todo_all]
    rows, unreadable = assemble(
        parts, shard_urls, {store.join(cfg.shards, s["name"]): s["samples"] for s in todo_all}, cfg.out
    )
    neighbours = comparanda.write_comparanda(parts, [_part_name(url) for url in shard_urls], cfg.out, checkpoint)
    _clear_parts(parts)
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
    actor_class = ray.remote(Scorer).options(num_cpus=cfg.cpus_per_actor, num_gpus=gpus, scheduling_strategy="SPREAD")
    total = sum(s["samples"] for s in todo)
    bar = tqdm(total=total, unit="img", desc="score", disable=None if progress else True, file=sys.stderr)
    tally = Tally()
    queue = [(store.join(cfg.shards, s["name"]), s) for s in todo]
    make_actor = functools.partial(actor_class.remote, checkpoint, cfg.batch_size, cfg.decode_on, cfg.loader_workers)
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
                _keep_part(parts, url, entry, rows, skips, features, tally)
                bar.update(entry["samples"])
                shards_done = len(todo) - len(queue) - len(pool.running)
                bar.set_postfix(
                    shards=f"{shards_done}/{len(todo)}", img_s=f"{tally.images_per_second():.1f}", refresh=False
                )
    finally:
        bar.close()
        pool.shutdown()
    return tally


def _keep_part(
    parts: str, url: str, entry: dict, rows: list[dict], skips: list[data.Skip], features: np.ndarray, tally: Tally
) -> None:
    """Write a scored shard's part (its rows, skips and embeddings), or note it as incomplete when
    its samples were not all read."""
    tally.add(len(rows), len(skips))
    if any(s.unread for s in skips) or len(rows) + len(skips) != entry["samples"]:
        tally.incomplete.append(
            f"{url}: {len(rows)} of {entry['samples']} samples readable (corrupt or truncated shard)"
        )
        return
    # Skips and embeddings are written before the rows: a part with rows is a finished shard.
    if skips:
        store.write_bytes(
            store.join(parts, _skips_name(url)), store.csv_bytes([s.record() for s in skips], SKIP_COLUMNS)
        )
    store.write_bytes(store.join(parts, comparanda.features_name(_part_name(url))), comparanda.array_bytes(features))
    store.write_bytes(store.join(parts, _part_name(url)), store.csv_bytes(rows, COLUMNS))


def _clear_parts(parts: str) -> None:
    """Delete the parts once assembled. _run.json goes last: parts left by a crash half-way
    through still name their checkpoint, so a rerun with another one refuses them instead of
    mixing them in."""
    for name in sorted(set(store.list_names(parts)) - {LEASE_FILE}, key=lambda name: name == CLAIM_FILE):
        store.delete(store.join(parts, name))


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
        raise RuntimeError(
            f"no scoring actor ({ask}) could start within {cfg.start_timeout:g} s: the cluster lacks "
            "the resources; lower --cpus-per-actor/--gpus-per-actor, or add nodes"
        )


def assemble(parts: str, shard_urls: list[str], samples: dict[str, int], out: str) -> tuple[int, int]:
    """Stream the parts into `out` (and the skip lists into its .skipped.csv), one shard at a
    time, checking that each shard's rows and skips account for all of its samples. Returns
    (rows, unreadable samples). Memory holds one part at a time, whatever the corpus size."""
    rows = unreadable = 0
    names = set(store.list_names(parts))
    with store.atomic_output(out) as results, store.atomic_output(skipped_url(out)) as skip_file:
        results.write(",".join(COLUMNS).encode() + b"\n")
        skip_file.write(",".join(SKIP_COLUMNS).encode() + b"\n")
        for url in shard_urls:
            body, count = _csv_body(store.read_bytes(store.join(parts, _part_name(url))))
            skips, skip_count = b"", 0
            if _skips_name(url) in names:
                skips, skip_count = _csv_body(store.read_bytes(store.join(parts, _skips_name(url))))
            if count + skip_count != samples[url]:
                raise ValueError(
                    f"{parts}/{_part_name(url)} accounts for {count + skip_count} of the "
                    f"{samples[url]} samples of {url}: delete it and score again"
                )
            results.write(body)
            skip_file.write(skips)
            rows += count
            unreadable += skip_count
        if not unreadable:
            skip_file.discard()
            store.delete(skipped_url(out))  # a list left by an earlier run of the same --out
    return rows, unreadable


def _csv_body(part: bytes) -> tuple[bytes, int]:
    """(the part's rows without the header, how many rows): csv parsing, since a quoted field may
    hold a line break."""
    header_end = part.find(b"\n") + 1
    body = part[header_end:] if header_end else b""
    return body, sum(1 for _ in csv.reader(io.StringIO(body.decode())))
