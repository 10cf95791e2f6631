"""pipeline.py and device_decode.py: reading slices of shards, decoding, the DataLoader and its
processes, skipped samples, and batches decoded on the device."""

import io

import pytest
import torch
from PIL import Image

from artdate.core.works import derive_seed
from artdate.data import device_decode, partition, pipeline, shards
from artdate.data.partition import Slice
from artdate.data.pipeline import make_loader, take_steps
from tests.support.processes import live_processes


def test_ranks_draw_different_augmentations_reproducibly(sample_store):
    manifest = shards.read_manifest(sample_store)
    train = partition.store_slices(sample_store, manifest, "train")[:1]
    transform = pipeline.train_transform(48)

    def first_batch(seed):
        loader = make_loader(train, transform, batch_size=8, loader_workers=1, seed=seed)
        return next(iter(loader)).image

    rank0, rank1 = derive_seed(0, "train", 0, 0), derive_seed(0, "train", 0, 1)
    assert torch.equal(first_batch(rank0), first_batch(rank0))  # reproducible from --seed
    assert not torch.equal(first_batch(rank0), first_batch(rank1))  # other crops and flips per rank


def test_loader_reads_each_sample_once_with_two_worker_processes(sample_store):
    manifest = shards.read_manifest(sample_store)
    slices = partition.whole(partition.manifest_shards(sample_store, manifest, "train"))
    transform = pipeline.eval_transform(64)
    keys = []
    for batch in make_loader(slices, transform, batch_size=10, loader_workers=2):
        assert batch.image.shape[1:] == (3, 64, 64) and batch.image.dtype == torch.uint8
        assert batch.year.dtype == torch.int64
        keys += batch.key
    assert len(keys) == len(set(keys)) == manifest["splits"]["train"]["samples"]


def test_loader_workers_fork_from_a_server_that_already_imported_what_they_decode_with(sample_store):
    """Forkserver workers (not fork, inside Ray actors) would import torch, torchvision and
    TorchCodec again each, seconds every epoch; the server imports them once and forks them in."""
    import os

    manifest = shards.read_manifest(sample_store)
    slices = partition.whole(partition.manifest_shards(sample_store, manifest, "train"))
    next(iter(make_loader(slices, pipeline.train_transform(32), batch_size=4, loader_workers=1)))
    (server,) = [
        process.pid
        for process in live_processes()
        if process.parent == os.getpid() and any("forkserver" in arg for arg in process.argv)
    ]
    libraries = open(f"/proc/{server}/maps").read()
    assert "libtorch_cpu" in libraries and "torchvision" in libraries and "torchcodec" in libraries


def test_loader_workers_split_a_single_shard(sample_store):
    manifest = shards.read_manifest(sample_store)
    (one, *_) = partition.manifest_shards(sample_store, manifest, "train")
    transform = pipeline.eval_transform(32)
    piece = Slice(one.url, 3, one.samples - 2)
    keys = [k for b in make_loader([piece], transform, batch_size=4, loader_workers=2) for k in b.key]
    assert len(keys) == len(set(keys)) == piece.samples


def test_loader_streams_from_s3_in_worker_processes(s3_url):
    from tests.support.helpers import pack_sample

    manifest = pack_sample(s3_url, samples_per_shard=100)
    slices = partition.whole(partition.manifest_shards(s3_url, manifest, "val"))
    transform = pipeline.eval_transform(32)
    loader = make_loader(slices, transform, batch_size=8, loader_workers=2)
    assert sum(len(b.key) for b in loader) == manifest["splits"]["val"]["samples"]


def write_shard(path, samples):
    shards.write_tar(str(path), samples)
    return str(path)


def jpeg(color):
    out = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(out, "JPEG")
    return out.getvalue()


def labels(year):
    return {"id": str(year), "museum": "met", "year": year, "year_start": year, "year_end": year}


def test_corrupt_samples_are_skipped_and_counted_also_at_the_end_of_a_shard(tmp_path):
    good = [(f"met_{i}", jpeg((i, 0, 0)), labels(1500 + i)) for i in range(5)]
    bad = [("met_bad1", b"not a jpeg", labels(1600)), ("met_bad2", jpeg((1, 2, 3))[:50], labels(1601))]
    url = write_shard(tmp_path / "a.tar", good[:2] + bad[:1] + good[2:] + bad[1:])  # the last sample is bad
    transform = pipeline.eval_transform(32)
    batches = list(make_loader([Slice(url, 0, 7)], transform, batch_size=3, loader_workers=0))
    assert sorted(k for b in batches for k in b.key) == sorted(k for k, _, _ in good)
    skipped = [s for b in batches for s in b.skipped]
    assert sorted(s.key for s in skipped) == ["met_bad1", "met_bad2"]
    assert all(s.shard == url and "undecodable" in s.reason and not s.unread for s in skipped)


def test_a_truncated_shard_yields_what_it_can(tmp_path):
    url = write_shard(tmp_path / "a.tar", [(f"met_{i}", jpeg((i, 0, 0)), labels(1500)) for i in range(6)])
    with open(url, "rb") as f:
        content = f.read()
    with open(url, "wb") as f:
        f.write(content[: len(content) // 2])
    transform = pipeline.eval_transform(32)
    batches = list(make_loader([Slice(url, 0, 6)], transform, batch_size=2, loader_workers=0))
    keys = [k for b in batches for k in b.key]
    skipped = [s for b in batches for s in b.skipped]
    assert 0 < len(keys) < 6 and len(keys) + len(skipped) == 6  # what the shard never delivered is counted
    assert all(s.unread and s.reason.startswith("shard ended") for s in skipped)


def batch_of(year: int) -> pipeline.Batch:
    item = {"image": torch.zeros(3, 2, 2, dtype=torch.uint8), "year": year, "year_start": year, "year_end": year}
    return pipeline.collate(
        [{**item, "key": f"met_{year}", "shard": "a.tar", "index": 0, "id": str(year), "museum": "met"}], []
    )


def test_take_steps_wraps_short_ranks_and_never_hangs_on_empty_ones():
    passes = []

    def make_pass():
        passes.append(1)
        return iter([batch_of(n) for n in range(3)])

    assert [int(b.year[0]) for b in take_steps(make_pass, 7)] == [0, 1, 2, 0, 1, 2, 0]
    assert len(passes) == 3
    skipped_only = pipeline.collate([], [pipeline.Skip("a.tar", "met_1", "undecodable")])
    with pytest.raises(RuntimeError, match="no decodable samples"):
        list(take_steps(lambda: iter([skipped_only]), 2))


def test_prefetch_reads_ahead_in_another_thread_in_order_and_passes_errors_on():
    import threading

    threads = []

    def source():
        for number in range(5):
            threads.append(threading.get_ident())
            yield number
        raise OSError("shard ended")

    got = []
    with pytest.raises(OSError, match="shard ended"):
        for item in pipeline.prefetch(source()):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]
    assert threading.get_ident() not in threads and len(set(threads)) == 1
    assert list(pipeline.prefetch([])) == []


def test_decoding_on_the_device_matches_the_loader_and_records_what_does_not_decode(tmp_path):
    good = [(f"met_{i}", jpeg((40 * i, 100, 0)), labels(1500 + i)) for i in range(4)]
    bad = ("met_bad", jpeg((1, 2, 3))[:60], labels(1600))
    url = write_shard(tmp_path / "a.tar", good[:2] + [bad] + good[2:])
    transform = pipeline.eval_transform(32)
    on_loader = list(make_loader([Slice(url, 0, 5)], transform, batch_size=5, loader_workers=0))
    (encoded_batch,) = make_loader([Slice(url, 0, 5)], None, batch_size=5, loader_workers=0)
    assert isinstance(encoded_batch.image, list) and len(encoded_batch.image) == 5  # not decoded yet
    # The CUDA path, on the CPU:
    on_device = device_decode.decode_on_device(encoded_batch, transform, torch.device("cpu"))
    assert on_device.key == [k for k, _, _ in good]
    assert on_device.year.tolist() == [1500, 1501, 1502, 1503]
    assert [s.key for s in on_device.skipped] == ["met_bad"] and "undecodable" in on_device.skipped[0].reason
    decoded_by_loader = torch.cat([b.image for b in on_loader])
    assert torch.equal(on_device.image, decoded_by_loader)


def test_a_batch_crosses_from_a_loader_process_in_one_shared_storage(monkeypatch):
    """Every shared storage costs the receiving process a file descriptor passed over a socket
    (about 2 ms): a batch of 256 encoded JPEGs capped --decode-on device at 1,500 img/s on an
    H200. The labels travel inline, the JPEGs as one tensor of their bytes."""
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing.reductions as reductions

    jpegs = [pipeline.encoded(bytes([255, 216, n, 255, 217])) for n in range(3)]
    years = torch.tensor([1600, 1700, 1800])
    batch = pipeline.Batch(jpegs, years, years - 10, years + 10, ["a", "b", "c"], ["s"] * 3, ["1", "2", "3"], ["m"] * 3)
    batch.index, batch.skipped = [4, 5, 6], [pipeline.Skip("s", "d", "undecodable", index=7)]
    payload = bytes(ForkingPickler.dumps(batch))
    rebuilt = []
    real = reductions.rebuild_storage_fd
    monkeypatch.setattr(reductions, "rebuild_storage_fd", lambda *args: rebuilt.append(1) or real(*args))
    received = ForkingPickler.loads(payload)
    assert len(rebuilt) == 1
    assert [bytes(jpeg) for jpeg in received.image] == [bytes(jpeg) for jpeg in jpegs]
    assert received.year_start.tolist() == [1590, 1690, 1790] and received.year.dtype == torch.int64
    assert (received.key, received.index, received.skipped) == (batch.key, batch.index, batch.skipped)
