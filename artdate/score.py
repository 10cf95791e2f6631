"""`artdate score`: a pool of Ray actors scores whole shards into results.csv.

Each actor loads the checkpoint once and scores one shard per call. The driver writes each
finished shard's rows to `<out>.parts/` at once, so a rerun after a crash or Ctrl-C scores only
the shards that are missing. An actor that dies is replaced and its shard scored again. The final
CSV is assembled from the parts, checked to hold every work once, and appears atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time

import torch

from . import data, shards, store
from .config import ScoreConfig
from .model import load_checkpoint, resolve_checkpoint
from .raycluster import connect

COLUMNS = ["id", "museum", "year", "pred", "diff", "split", "shard", "year_start", "year_end", "spread", "key"]
RUN_FILE = "_run.json"


class Scorer:
    """Runs in a Ray actor: the model is loaded once, then scores shard after shard."""

    def __init__(self, checkpoint_url: str, batch_size: int):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.spec, _ = load_checkpoint(checkpoint_url)
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.transform = data.eval_transform(self.spec.image_size, self.spec.mean, self.spec.std)
        self.batch_size = batch_size

    def pid(self) -> int:
        return os.getpid()

    @torch.no_grad()
    def score(self, shard_url: str, split: str) -> tuple[list[dict], int]:
        """(rows, skipped samples) of one shard."""
        rows, skipped = [], 0
        autocast = self.device.type == "cuda"
        loader = data.make_loader([shard_url], self.transform, self.spec.image_size, self.batch_size, loader_workers=0)
        for batch in loader:
            images = batch["image"].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                predicted, spread = self.spec.encoding.years(self.model(images))
            predicted = predicted.cpu().tolist()
            spread = spread.cpu().tolist() if spread is not None else [None] * len(predicted)
            skipped += batch["skipped"]
            for i, key in enumerate(batch["key"]):
                year = int(batch["year"][i])
                rows.append({
                    "id": batch["id"][i], "museum": batch["museum"][i], "year": year,
                    "pred": round(predicted[i], 1), "diff": round(predicted[i] - year, 1), "split": split,
                    "shard": shard_url, "year_start": int(batch["year_start"][i]), "year_end": int(batch["year_end"][i]),
                    "spread": None if spread[i] is None else round(spread[i], 1), "key": key,
                })
        return rows, skipped


def rows_to_csv(rows: list[dict]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def _part_name(shard_url: str) -> str:
    return shard_url.rstrip("/").rsplit("/", 1)[-1] + ".csv"


def _check_or_start_parts(parts: str, checkpoint: str, shards_url: str) -> None:
    """Parts of another checkpoint or store must not be mixed into these results."""
    run = {"checkpoint": checkpoint, "shards": shards_url}
    run_url = store.join(parts, RUN_FILE)
    if store.exists(run_url):
        earlier = json.loads(store.read_bytes(run_url))
        if earlier != run:
            raise ValueError(
                f"{parts} holds partial results of {earlier['checkpoint']} on {earlier['shards']}; "
                f"delete it or write to another --out"
            )
    else:
        store.write_bytes(run_url, json.dumps(run).encode())


def run_scoring(cfg: ScoreConfig, progress: bool = True) -> dict:
    """Score the shards; write cfg.out; return a summary (rows, shards, skipped, seconds)."""
    from dataclasses import replace

    from tqdm import tqdm

    cfg = replace(cfg, shards=store.absolute(cfg.shards), checkpoint=store.absolute(cfg.checkpoint),
                  out=store.absolute(cfg.out))

    manifest = shards.read_manifest(cfg.shards)
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    load_checkpoint(checkpoint)  # a missing or incompatible checkpoint fails here, not in every actor
    todo_all = [s for s in manifest["shards"] if cfg.split in ("all", s["split"])]
    if not todo_all:
        raise ValueError(f"{cfg.shards} has no {cfg.split} shards to score")
    parts = cfg.out.rstrip("/") + ".parts"
    _check_or_start_parts(parts, checkpoint, cfg.shards)
    done = set(store.list_names(parts))
    todo = [s for s in todo_all if _part_name(store.join(cfg.shards, s["name"])) not in done]

    connect()
    import ray

    gpus = cfg.gpus_per_actor
    if gpus < 0:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    actor_class = ray.remote(Scorer).options(num_cpus=cfg.cpus_per_actor, num_gpus=gpus, scheduling_strategy="SPREAD")

    def new_actor():
        return actor_class.remote(checkpoint, cfg.batch_size)

    bar = tqdm(total=sum(s["samples"] for s in todo), unit="img", desc="score", disable=not progress, file=sys.stderr)
    started, scored, skipped, incomplete = time.perf_counter(), 0, 0, []
    first_result = None  # (seconds, rows): actor start-up and model loading end here
    queue = [(store.join(cfg.shards, s["name"]), s) for s in todo]
    attempts: dict[str, int] = {}
    actors = [new_actor() for _ in range(min(cfg.actors, len(queue)))]
    running = {}  # object ref -> (actor index, shard url, manifest entry)

    def submit(index: int) -> None:
        url, entry = queue.pop(0)
        running[actors[index].score.remote(url, entry["split"])] = (index, url, entry)

    for index in range(len(actors)):
        if queue:
            submit(index)
    while running:
        (ref,), _ = ray.wait(list(running), num_returns=1)
        index, url, entry = running.pop(ref)
        try:
            rows, shard_skipped = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as problem:
            attempts[url] = attempts.get(url, 0) + 1
            if attempts[url] > cfg.max_retries:
                raise RuntimeError(f"scoring {url} failed {attempts[url]} times; last: {problem}") from None
            print(f"actor died while scoring {url}; replacing it and scoring the shard again", file=sys.stderr)
            actors[index] = new_actor()
            queue.insert(0, (url, entry))
            submit(index)
            continue
        if len(rows) + shard_skipped < entry["samples"]:
            incomplete.append(f"{url}: {len(rows)} of {entry['samples']} samples readable (corrupt or truncated shard)")
        else:
            store.write_bytes(store.join(parts, _part_name(url)), rows_to_csv(rows))
        scored += len(rows)
        skipped += shard_skipped
        if first_result is None:
            first_result = (time.perf_counter() - started, len(rows))
        bar.update(entry["samples"])
        bar.set_postfix(shards=f"{len(todo) - len(queue) - len(running)}/{len(todo)}",
                        img_s=f"{scored / (time.perf_counter() - started):.1f}", refresh=False)
        if queue:
            submit(index)
    bar.close()
    for actor in actors:
        ray.kill(actor)
    if incomplete:
        raise ValueError("some shards could not be read whole; their rows were not kept:\n  " + "\n  ".join(incomplete))

    rows = _assemble(parts, [store.join(cfg.shards, s["name"]) for s in todo_all])
    store.write_bytes(cfg.out, rows_to_csv(rows))
    for name in store.list_names(parts):
        store.delete(store.join(parts, name))
    if not store.is_s3(parts):
        os.rmdir(parts)
    seconds = time.perf_counter() - started
    steady = (scored - first_result[1]) / max(seconds - first_result[0], 1e-9) if first_result else 0.0
    return {"rows": len(rows), "shards": len(todo_all), "scored_now": len(todo), "skipped": skipped,
            "seconds": seconds, "images_per_second_after_startup": steady, "checkpoint": checkpoint}


def _assemble(parts: str, shard_urls: list[str]) -> list[dict]:
    rows, seen = [], set()
    for url in shard_urls:
        for row in csv.DictReader(io.StringIO(store.read_bytes(store.join(parts, _part_name(url))).decode())):
            if row["key"] in seen:
                raise ValueError(f"{row['key']} appears twice in {parts}: the store's shards overlap")
            seen.add(row["key"])
            rows.append(row)
    return rows
