import io

import pytest
import torch
from PIL import Image

from artdate import data, shards
from artdate.data import Shard, assign_shards, make_loader, steps_per_epoch, take_steps


def shard_list(sizes):
    return [Shard(f"s{i}.tar", n) for i, n in enumerate(sizes)]


def test_assignment_is_disjoint_covering_balanced_and_changes_per_epoch():
    shards_ = shard_list([32] * 9 + [9])
    first = assign_shards(shards_, 3, epoch=0, seed=0)
    flat = [s for rank in first for s in rank]
    assert sorted(s.url for s in flat) == sorted(s.url for s in shards_)  # covering, disjoint
    loads = [sum(s.samples for s in rank) for rank in first]
    assert max(loads) - min(loads) <= 32  # within one shard
    assert assign_shards(shards_, 3, epoch=0, seed=0) == first  # deterministic
    assert assign_shards(shards_, 3, epoch=1, seed=0) != first  # reshuffled each epoch


def test_steps_cover_the_data_once_and_refuse_too_little():
    assert steps_per_epoch(shard_list([32] * 9 + [9]), world_size=2, batch_size=16) == 297 // 32
    with pytest.raises(ValueError, match="too few for 4 worker"):
        steps_per_epoch(shard_list([5]), world_size=4, batch_size=8)
    with pytest.raises(ValueError, match="has 1 shard.* for 2 training workers"):
        data.check_enough_shards(shard_list([100]), 2, "train")


def test_loader_reads_each_sample_once_with_two_worker_processes(sample_store):
    manifest = shards.read_manifest(sample_store)
    urls = shards.shard_urls(sample_store, manifest, "train")
    transform = data.eval_transform(64, (0.5,) * 3, (0.25,) * 3)
    keys = []
    for batch in make_loader(urls, transform, 64, batch_size=10, loader_workers=2):
        assert batch["image"].shape[1:] == (3, 64, 64)
        assert batch["year"].dtype == torch.int64
        keys += batch["key"]
    assert len(keys) == len(set(keys)) == manifest["splits"]["train"]["samples"]


def test_loader_streams_from_s3_in_worker_processes(s3_url):
    from conftest import pack_sample

    manifest = pack_sample(s3_url, samples_per_shard=100)
    urls = shards.shard_urls(s3_url, manifest, "val")
    transform = data.eval_transform(32, (0.5,) * 3, (0.25,) * 3)
    loader = make_loader(urls, transform, 32, batch_size=8, loader_workers=2)
    assert sum(len(b["key"]) for b in loader) == manifest["splits"]["val"]["samples"]


def write_shard(path, samples):
    shards.write_tar(str(path), samples)
    return str(path)


def jpeg(color):
    out = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(out, "JPEG")
    return out.getvalue()


def labels(year):
    return {"id": str(year), "museum": "met", "year": year, "year_start": year, "year_end": year}


def test_corrupt_samples_are_skipped_and_counted(tmp_path):
    good = [(f"met_{i}", jpeg((i, 0, 0)), labels(1500 + i)) for i in range(5)]
    bad = [("met_bad1", b"not a jpeg", labels(1600)), ("met_bad2", jpeg((1, 2, 3))[:50], labels(1601))]
    url = write_shard(tmp_path / "a.tar", good[:2] + bad + good[2:])
    transform = data.eval_transform(32, (0.5,) * 3, (0.25,) * 3)
    batches = list(make_loader([url], transform, 32, batch_size=3, loader_workers=0))
    assert sorted(k for b in batches for k in b["key"]) == sorted(k for k, _, _ in good)
    assert sum(b["skipped"] for b in batches) == 2


def test_a_truncated_shard_yields_what_it_can(tmp_path):
    url = write_shard(tmp_path / "a.tar", [(f"met_{i}", jpeg((i, 0, 0)), labels(1500)) for i in range(6)])
    with open(url, "rb") as f:
        content = f.read()
    with open(url, "wb") as f:
        f.write(content[: len(content) // 2])
    transform = data.eval_transform(32, (0.5,) * 3, (0.25,) * 3)
    keys = [k for b in make_loader([url], transform, 32, batch_size=2, loader_workers=0) for k in b["key"]]
    assert 0 < len(keys) < 6


def test_take_steps_wraps_short_ranks_and_never_hangs_on_empty_ones():
    passes = []

    def make_pass():
        passes.append(1)
        return iter(range(3))

    assert list(take_steps(make_pass, 7)) == [0, 1, 2, 0, 1, 2, 0]
    assert len(passes) == 3
    with pytest.raises(RuntimeError, match="no decodable samples"):
        list(take_steps(lambda: iter([]), 2))
