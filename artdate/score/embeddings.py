"""Frozen features: a pretrained backbone's embedding of every work in a store, computed once and
kept beside the shards (`_embeddings/{backbone}-{size}.npz`), and year heads trained on them in
seconds. Recipe search on CPU is then not bound to full fine-tuning (bench/quality/frozen.py measures how
close it comes).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from artdate.core import store
from artdate.data import partition, pipeline, shards
from artdate.model import ranges
from artdate.model.network import LabelEncoding, ModelSpec, build_model, feature_extractor, model_inputs

EMBEDDINGS_DIR = "_embeddings"
LABELS = ("keys", "ids", "museums", "splits", "year", "year_start", "year_end")


@dataclass
class Embeddings:
    """One row per work: its labels and its `features` (float32, one row of the backbone's
    pooled features)."""

    keys: np.ndarray
    ids: np.ndarray
    museums: np.ndarray
    splits: np.ndarray
    year: np.ndarray
    year_start: np.ndarray
    year_end: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index) -> "Embeddings":
        return Embeddings(**{name: getattr(self, name)[index] for name in (*LABELS, "features")})


def embeddings_url(store_url: str, backbone: str, image_size: int) -> str:
    return store.join(store_url, EMBEDDINGS_DIR, f"{backbone}-{image_size}.npz")


def embed_store(
    store_url: str, backbone: str = "efficientnet_lite0", image_size: int = 128, batch_size: int = 64
) -> Embeddings:
    """The embeddings of every work of the store (both splits), from the cache beside the shards
    when it holds them, else computed (ImageNet weights, the evaluation transform) and kept there."""
    url = embeddings_url(store_url, backbone, image_size)
    if store.exists(url):
        with np.load(io.BytesIO(store.read_bytes(url)), allow_pickle=False) as saved:
            return Embeddings(**{name: saved[name] for name in (*LABELS, "features")})
    manifest = shards.read_manifest(store_url)
    model = feature_extractor(build_model(backbone, 1, "imagenet")).eval()
    spec = ModelSpec(backbone, image_size, LabelEncoding())  # ImageNet normalisation, as training's
    columns: dict[str, list] = {name: [] for name in (*LABELS, "features")}
    for split in ("train", "val"):
        slices = partition.store_slices(store_url, manifest, split)
        loader = pipeline.make_loader(slices, pipeline.eval_transform(image_size), batch_size, loader_workers=0)
        for batch in loader:
            if batch.image is None:
                continue
            with torch.no_grad():
                columns["features"].append(model(model_inputs(batch.image, spec, torch.device("cpu"))).numpy())
            for name, column in (("keys", "key"), ("ids", "id"), ("museums", "museum")):
                columns[name] += getattr(batch, column)
            columns["splits"] += [split] * len(batch.key)
            for name in ("year", "year_start", "year_end"):
                columns[name] += getattr(batch, name).tolist()
    embeddings = Embeddings(
        **{name: np.asarray(values) for name, values in columns.items() if name != "features"},
        features=np.concatenate(columns["features"]).astype(np.float32),
    )
    out = io.BytesIO()
    np.savez(out, **{name: getattr(embeddings, name) for name in (*LABELS, "features")})
    store.write_bytes(url, out.getvalue())
    return embeddings


@dataclass
class Head:
    """A linear year head over standardised features."""

    layer: nn.Linear
    mean: torch.Tensor
    std: torch.Tensor
    encoding: LabelEncoding

    def outputs(self, features: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return self.layer((torch.from_numpy(features) - self.mean) / self.std)

    def predict(self, features: np.ndarray, level: float = ranges.DEFAULT_LEVEL) -> ranges.Predictions:
        return ranges.Predictions(*self.encoding.decode(self.outputs(features), level))


def fit_head(
    train: Embeddings,
    encoding: LabelEncoding,
    epochs: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> Head:
    """Full-batch AdamW on the head alone, with the same targets and loss as fine-tuning."""
    torch.manual_seed(seed)
    features = torch.from_numpy(train.features)
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    inputs = (features - mean) / std
    targets = encoding.targets(
        *(
            torch.from_numpy(np.asarray(getattr(train, name), dtype=np.int64))
            for name in ("year", "year_start", "year_end")
        )
    )
    layer = nn.Linear(inputs.shape[1], encoding.num_outputs)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / epochs)))
    for _ in range(epochs):
        optimizer.zero_grad()
        encoding.loss_fn(layer(inputs), targets).backward()
        optimizer.step()
        schedule.step()
    return Head(layer, mean, std, encoding)
