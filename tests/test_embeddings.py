"""Frozen features: embeddings once per store, heads on them in seconds."""

import os

import numpy as np
import torch

from artdate.core import store
from artdate.core.config import PackConfig
from artdate.data import partition, pipeline, shards
from artdate.model.network import IMAGENET_MEAN, IMAGENET_STD, LabelEncoding, build_model, feature_extractor
from artdate.pack.run import run_pack
from artdate.pack.synthetic import generate
from artdate.score import embeddings


def test_embeddings_are_the_backbones_features_and_are_kept_beside_the_shards(sample_store, monkeypatch):
    computed = embeddings.embed_store(sample_store, "efficientnet_lite0", 64)
    manifest = shards.read_manifest(sample_store)
    assert len(computed) == manifest["packed"] and computed.features.shape == (manifest["packed"], 1280)
    assert set(computed.splits) == {"train", "val"} and len(set(computed.keys)) == len(computed)
    # Brute force: the first validation shard's images through the backbone without its head.
    model = feature_extractor(build_model("efficientnet_lite0", 1, "imagenet")).eval()
    first = partition.store_slices(sample_store, manifest, "val")[0]
    batch = next(iter(pipeline.make_loader([first], pipeline.eval_transform(64), 8, loader_workers=0)))
    inputs = (batch.image.float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(inputs).numpy()
    rows = [list(computed.keys).index(key) for key in batch.key]
    assert np.allclose(computed.features[rows], expected, atol=1e-4)
    assert [int(y) for y in computed.year[rows]] == batch.year.tolist()
    assert store.exists(os.path.join(sample_store, "_embeddings", "efficientnet_lite0-64.npz"))

    def no_model(*args, **kwargs):
        raise AssertionError("the kept embeddings should have been read, not computed again")

    monkeypatch.setattr(embeddings, "build_model", no_model)
    again = embeddings.embed_store(sample_store, "efficientnet_lite0", 64)
    assert np.array_equal(again.features, computed.features) and list(again.keys) == list(computed.keys)


def test_a_head_on_frozen_features_learns_the_year(tmp_path):
    # Synthetic works whose colour carries the year: a head on ImageNet features must beat the median.
    works = generate(240, str(tmp_path / "synthetic"))
    out = str(tmp_path / "store")
    run_pack(PackConfig(metadata=(works,), out=out, size=64, val_fraction=0.25, jobs=1), progress=False)
    embedded = embeddings.embed_store(out, "efficientnet_lite0", 64)
    train, val = (embedded.subset(embedded.splits == split) for split in ("train", "val"))
    encoding = LabelEncoding(loss="bins", year_min=1200, year_max=1930, bin_width=25, label_sigma=50)
    head = embeddings.fit_head(train, encoding, epochs=200)
    predicted = head.predict(val.features)
    mae = (predicted.year - torch.from_numpy(val.year.astype(np.float32))).abs().mean().item()
    baseline = float(np.abs(val.year - np.median(train.year)).mean())
    assert mae < 0.6 * baseline, (mae, baseline)
    assert bool((predicted.low <= predicted.high).all())
