"""`artdate pack`: metadata + images -> WebDataset shards + manifest.json in a store.

The works are shuffled with the seed and cut into a plan of shards before anything is fetched,
so the plan is the same on every run. Each finished shard leaves a record in `_pack/`; a rerun
skips the shards that have one, which makes an interrupted pack resume without fetching or
writing anything twice. Fetching (threads, I/O bound) and encoding (processes, CPU bound) run
through bounded windows, so memory stays flat however large the corpus is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import tempfile
from collections import Counter, deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

from tqdm import tqdm

from artdate.core import store
from artdate.core.config import PackConfig
from artdate.core.exports import parse_columns
from artdate.core.http_client import FetchError, HttpClient
from artdate.core.images import ImageRejected, encode_image, image_size
from artdate.core.works import UNDATED, Work, middle_year, sample_key
from artdate.data import shards
from artdate.pack.catalog import Catalog
from artdate.pack.fetched_image import Excluded, Fetched, Source
from artdate.pack.metadata import MetadataResult, Rejected, csv_columns, read_coarse_dates, read_metadata
from artdate.pack.rejects import (
    EXCLUDED,
    REJECT_COLUMNS,
    NothingPacked,
    metadata_reject_row,
    reject_row,
    transient_rejects,
)
from artdate.pack.sources import check_image_source, make_source

PACK_DIR = "_pack"
PLAN = "plan.json"
MANIFEST_SHARD_FIELDS = ("name", "split", "samples", "bytes", "sha256")


@dataclass
class PlannedShard:
    name: str
    split: str
    works: list[Work]


def planned_shards(catalog: Catalog, samples_per_shard: int) -> Iterator[PlannedShard]:
    """Each split in the catalog's seeded plan order (so no shard is one museum or one century),
    cut into shards; streamed, one shard's works at a time."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be at least 1, got {samples_per_shard}")
    for split in ("train", "val", UNDATED):
        works = catalog.in_plan_order(split)
        for index in itertools.count():
            members = list(itertools.islice(works, samples_per_shard))
            if not members:
                break
            yield PlannedShard(f"{split}-{index:06d}.tar", split, members)


def fingerprint(catalog: Catalog, settings: dict) -> str:
    """Identifies what a pack would write: a store holding another fingerprint is not resumed."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for shard in planned_shards(catalog, settings["samples_per_shard"]):
        digest.update(shard.name.encode())
        for work in shard.works:
            digest.update(f"\0{work.key}\0{work.year}\0{work.year_start}\0{work.year_end}".encode())
    return digest.hexdigest()


def bounded_map(function, items, executor: Executor, window: int):
    """Like executor.map, in order, but with at most `window` calls in flight (executor.map submits
    everything at once, which would hold a whole corpus of images in memory)."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(executor.submit(function, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# What a malformed answer or image raises where the code expected another shape: the row is
# rejected (naming the error), and the pack goes on.
MALFORMED = (ValueError, KeyError, TypeError, IndexError, AttributeError)


def _encode_fetched(fetched: tuple[Work, Fetched | None, dict | None], size: int, quality: int, max_pixels: int):
    """Runs in a worker process: (work, jpg, labels, None) or (work, None, None, reject). The labels
    add what the source said (object type) and the size of the image the sample was made from."""
    work, image, reject = fetched
    if reject or image is None:
        return work, None, None, reject
    try:
        jpg = encode_image(image.data, size, quality, max_pixels)[0]
    except ImageRejected as reason:
        return work, None, None, reject_row(work, "decode", str(reason))
    except (*MALFORMED, OSError) as problem:  # Pillow's own failures on odd files
        return work, None, None, reject_row(work, "decode", f"cannot decode: {type(problem).__name__}: {problem}")
    width, height = image_size(image.data)
    labels = {**work.labels(), "object_type": image.object_type, "source_width": width, "source_height": height}
    if work.year is None and image.dates is not None:  # the museum's own date, for a work the metadata left undated
        start, end = image.dates
        labels.update(year=middle_year(start, end), year_start=start, year_end=end, date_from=image.date_from)
    return work, jpg, labels, None


class InlineExecutor(Executor):
    """Runs each call at once in this process: for jobs=1, no pool start-up for small runs."""

    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


PACK_SETTINGS = ("size", "quality", "samples_per_shard", "val_fraction", "seed", "year_min", "year_max", "source")


@dataclass
class Packer:
    """What packs one shard after another: the image source, the pools that fetch (threads) and
    encode (processes), and the scratch folder the tars are written to before upload."""

    config: PackConfig
    source: Source
    fetchers: Executor
    encoders: Executor
    jobs: int
    scratch: str
    bar: tqdm


@dataclass
class PackTally:
    """The finished shards' manifest entries, label totals and reject counts."""

    entries: list[dict] = field(default_factory=list)
    totals: shards.LabelTotals = field(default_factory=shards.LabelTotals)
    rejected: int = 0
    excluded: int = 0
    transient: int = 0

    def add(self, record: shards.ShardRecord) -> None:
        self.totals.add(record)
        self.excluded += sum(reject["stage"] == EXCLUDED for reject in record.rejects)
        self.rejected += sum(reject["stage"] != EXCLUDED for reject in record.rejects)
        self.transient += transient_rejects(record)
        if record.samples:
            self.entries.append({k: v for k, v in dataclasses.asdict(record).items() if k in MANIFEST_SHARD_FIELDS})


def run_pack(config: PackConfig, progress: bool = True) -> dict:
    """Pack the works of `config.metadata` into `config.out`; return the manifest."""
    settings = {name: getattr(config, name) for name in PACK_SETTINGS}
    settings["exclude_types"] = sorted(config.exclude_types)
    if config.columns:  # only when given, so a store packed before --columns existed still resumes
        settings["columns"] = list(config.columns)
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="artdate-pack-"))
        meta = _read_works(config, scratch)
        stack.callback(meta.catalog.close)
        columns = parse_columns(config.columns)
        check_image_source(config, {path: csv_columns(path, columns) for path in config.metadata})
        store_fingerprint = fingerprint(meta.catalog, settings)
        done = _start_or_resume(config.out, store_fingerprint, settings)
        _unfinish_to_retry(config.out)
        packer = _start_packer(config, meta.catalog, scratch, progress, stack)
        rejects_out = stack.enter_context(store.atomic_output(store.join(config.out, shards.REJECTS)))
        rejects_out.write(store.csv_bytes([metadata_reject_row(row) for row in meta.rejected], REJECT_COLUMNS))
        excluded = (metadata_reject_row(Rejected(*row), EXCLUDED) for row in meta.catalog.excluded())
        while chunk := list(itertools.islice(excluded, 10_000)):  # streamed: an export may exclude 100,000s
            rejects_out.write(store.csv_bytes(chunk, REJECT_COLUMNS, header=False))
        tally = _pack_shards(packer, meta.catalog, done, rejects_out)
        tally.rejected += len(meta.rejected)
        tally.excluded += meta.catalog.excluded_count()
    counts = {
        "rejected": tally.rejected,
        "excluded": tally.excluded,
        "transient": tally.transient,
        "rejected_rows": len(meta.rejected),
        "duplicates_dropped": meta.duplicates,
        "out_of_window": meta.out_of_window,
        "not_public_domain": meta.not_public_domain,
    }
    if not tally.entries:
        raise NothingPacked(config.out, tally.rejected, tally.transient)
    manifest = shards.build_manifest(tally.entries, tally.totals, settings, store_fingerprint, counts)
    store.write_bytes(store.join(config.out, shards.MANIFEST), json.dumps(manifest, indent=1).encode())
    return manifest


def _read_works(config: PackConfig, scratch: str) -> MetadataResult:
    """The metadata's works in a catalog on disk (memory stays flat in the corpus size); an error
    when no work is inside the year window."""
    meta = read_metadata(
        config.metadata,
        museum=config.museum,
        year_min=config.year_min,
        year_max=config.year_max,
        val_fraction=config.val_fraction,
        seed=config.seed,
        skip_bad_rows=config.skip_bad_rows,
        catalog_path=os.path.join(scratch, "works.sqlite"),
        coarse=read_coarse_dates(config.coarse_dates) if config.coarse_dates else frozenset(),
        columns=parse_columns(config.columns),
        exclude_types=config.exclude_types,
        images=config.images,
    )
    if not meta.catalog.count():
        meta.catalog.close()
        raise ValueError(
            f"no works to pack in {', '.join(config.metadata)} within years {config.year_min}..{config.year_max}"
        )
    return meta


def _start_packer(
    config: PackConfig, catalog: Catalog, scratch: str, progress: bool, stack: contextlib.ExitStack
) -> Packer:
    """The source and the pools, closed by `stack`."""
    client = HttpClient(
        rate=config.rate,
        timeout=config.timeout,
        max_bytes=config.max_bytes,
        attempts=config.retries + 1,
        backoff=config.backoff,
        block_pause=config.block_pause,
        user_agent=config.user_agent,
        allow_link_local=config.allow_link_local,
    )
    jobs = config.jobs or os.cpu_count() or 1
    # Threads pay only while fetches wait on the network; for local files they contend for the GIL.
    network = (
        bool(config.source) or store.is_s3(config.images) or (not config.images and catalog.any_url_without_file())
    )
    bar = tqdm(total=catalog.count(), unit="img", desc="pack", disable=None if progress else True, file=sys.stderr)
    stack.callback(bar.close)
    return Packer(
        config=config,
        source=make_source(config, client),
        fetchers=stack.enter_context(ThreadPoolExecutor(config.concurrency) if network else InlineExecutor()),
        encoders=stack.enter_context(_encoders(jobs)),
        jobs=jobs,
        scratch=scratch,
        bar=bar,
    )


def _pack_shards(packer: Packer, catalog: Catalog, done: set[str], rejects_out) -> PackTally:
    """Pack each planned shard that is not finished (or that holds works rejected for a passing
    reason), uploading one shard while the next is packed; every shard's rejects go to `rejects_out`."""
    tally = PackTally()
    with ThreadPoolExecutor(1) as uploader:
        upload = None
        for shard in planned_shards(catalog, packer.config.samples_per_shard):
            record = _read_record(packer.config.out, shard.name) if shard.name in done else None
            if record is not None and not transient_rejects(record):
                packer.bar.update(len(shard.works))
            else:  # not packed yet, or packed with works that failed for a passing reason: try those again
                record, local = _pack_shard(packer, shard, record)
                if upload is not None:
                    upload.result()
                upload = uploader.submit(_publish_shard, local, record, packer.config.out)
            tally.add(record)
            rejects_out.write(store.csv_bytes(record.rejects, REJECT_COLUMNS, header=False))
        if upload is not None:
            upload.result()
    return tally


def _encoders(jobs: int) -> Executor:
    """A process pool for decode/resize; spawned, since the fetch threads make fork unsafe."""
    if jobs <= 1:
        return InlineExecutor()
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))


def _start_or_resume(out: str, store_fingerprint: str, settings: dict) -> set[str]:
    """Names of the shards already finished by an earlier run of the same plan; refuses another plan."""
    plan_url = store.join(out, PACK_DIR, PLAN)
    manifest_url = store.join(out, shards.MANIFEST)
    if not store.exists(plan_url) and store.exists(manifest_url):
        raise ValueError(f"{out} already holds a finished store made by another pack; use an empty --out")
    if store.claim(plan_url, {"fingerprint": store_fingerprint, "settings": settings}):
        raise ValueError(
            f"{out} holds a pack of other metadata or settings; pack into an empty --out or delete {out} first"
        )
    if not store.is_s3(out) and os.path.isdir(out):
        for name in os.listdir(out):  # leftovers of a killed run: never visible as finished, but clutter
            if ".partial-" in name:
                os.remove(os.path.join(out, name))
    return {name[: -len(".json")] for name in store.list_names(store.join(out, PACK_DIR)) if name.endswith(".tar.json")}


def _unfinish_to_retry(out: str) -> None:
    """A finished store whose manifest counts transient rejects is rebuilt by this run: remove the
    manifest first, so no reader takes the store as finished while shards are replaced."""
    manifest_url = store.join(out, shards.MANIFEST)
    if store.exists(manifest_url) and json.loads(store.read_bytes(manifest_url)).get("transient"):
        store.delete(manifest_url)


def _read_record(out: str, name: str) -> shards.ShardRecord:
    return shards.ShardRecord(**json.loads(store.read_bytes(store.join(out, PACK_DIR, name + ".json"))))


def _pack_shard(
    packer: Packer, shard: PlannedShard, earlier: shards.ShardRecord | None = None
) -> tuple[shards.ShardRecord, str]:
    """Fetch, encode and write one shard to a local tar; (its record, the tar's path). With the
    `earlier` record of this shard, its published samples and final rejects are kept and only the
    works that failed for a passing reason are fetched again."""

    def fetch(work: Work):
        try:
            return work, packer.source.fetch(work), None
        except Excluded as problem:
            return work, None, reject_row(work, EXCLUDED, str(problem))
        except FetchError as problem:
            return work, None, reject_row(work, "fetch", str(problem), problem.transient)
        except MALFORMED as problem:
            return work, None, reject_row(work, "fetch", f"unexpected answer: {type(problem).__name__}: {problem}")

    config, bar = packer.config, packer.bar
    kept = _published_samples(store.join(config.out, shard.name)) if earlier and earlier.samples else []
    rejects = [reject for reject in earlier.rejects if not reject.get("transient")] if earlier else []
    settled = {key for key, _, _ in kept} | {sample_key(r["museum"], r["id"]) for r in rejects}
    bar.update(len(settled))
    encode = functools.partial(_encode_fetched, size=config.size, quality=config.quality, max_pixels=config.max_pixels)
    fetched = bounded_map(
        fetch, (work for work in shard.works if work.key not in settled), packer.fetchers, 4 * config.concurrency
    )
    encoded = bounded_map(encode, fetched, packer.encoders, 4 * packer.jobs)
    years: Counter = Counter()  # year -> works; str(year) once the manifest is JSON
    museums: Counter[str] = Counter()

    def tally(labels: dict) -> None:
        if labels["year"] is not None:  # an undated work has no year to count
            years[str(labels["year"])] += 1
        museums[labels["museum"]] += 1

    def samples():
        for key, jpg, labels in kept:
            tally(labels)
            yield key, jpg, labels
        for work, jpg, labels, reject in encoded:
            bar.update(1)
            if jpg is None:
                rejects.append(reject)
                bar.set_postfix(rejected=len(rejects), refresh=False)
                continue
            tally(labels)
            yield work.key, jpg, labels

    local = os.path.join(packer.scratch, shard.name)
    count, size, sha = shards.write_tar(local, samples())
    if not count:
        size, sha = 0, ""
    return shards.ShardRecord(shard.name, shard.split, count, size, sha, dict(years), dict(museums), rejects), local


def _published_samples(url: str) -> list[tuple[str, bytes, dict]]:
    """(key, jpg, labels) of each sample of a published shard (one shard: tens of MB at most)."""
    members = dict(shards.tar_members(url))
    keys = [name[: -len(".jpg")] for name in members if name.endswith(".jpg")]
    return [(key, members[f"{key}.jpg"], json.loads(members[f"{key}.json"])) for key in keys]


def _publish_shard(local: str, record: shards.ShardRecord, out: str) -> None:
    """Upload a finished tar, then its record: a shard without a record is simply packed again."""
    if record.samples:
        store.upload_file(local, store.join(out, record.name))
    os.remove(local)
    store.write_bytes(store.join(out, PACK_DIR, record.name + ".json"), json.dumps(dataclasses.asdict(record)).encode())
