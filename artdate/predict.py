"""`artdate predict`: one image (path, s3:// or http(s) URL) -> a year, from a checkpoint alone."""

from __future__ import annotations

import torch

from . import comparanda, data, store
from .checkpoints import load_checkpoint, resolve_checkpoint
from .config import PredictConfig
from .http_client import FetchError, HttpClient
from .images import ImageRejected, encode_image, open_rgb
from .model import predict_years
from .ranges import Predictions


def read_image_bytes(location: str, timeout: float, max_bytes: int, allow_link_local: bool = False) -> bytes:
    if location.startswith(("http://", "https://")):
        client = HttpClient(
            rate=0, timeout=timeout, max_bytes=max_bytes, attempts=2, backoff=0.5, allow_link_local=allow_link_local
        )
        return client.get(location)
    if "://" in location and not store.is_s3(location):
        raise ValueError(f"{location}: only local paths, s3:// and http(s):// URLs are supported")
    try:
        return store.read_bytes(location, max_bytes)
    except FileNotFoundError:
        raise FileNotFoundError(f"{location}: no such image file") from None
    except IsADirectoryError:
        raise ValueError(f"{location} is a folder, not an image") from None


def as_training_saw(raw: bytes, location: str, max_pixels: int, spec):
    """The image as training saw its images: shrunk and re-encoded as pack stored them (when the
    checkpoint knows how), then decoded as the loader decodes shards."""
    try:
        if spec.pack_size:
            jpg, _, _ = encode_image(raw, spec.pack_size, spec.pack_quality, max_pixels)
            return data.decode_image(jpg)
        from torchvision.transforms.v2.functional import pil_to_tensor

        return pil_to_tensor(open_rgb(raw, max_pixels))
    except ImageRejected as problem:
        raise ValueError(f"{location}: {problem}") from None


def predict_year(cfg: PredictConfig) -> tuple[Predictions, list[dict]]:
    """(the image's prediction with its calibrated range, and with --comparanda the nearest training works)."""
    try:
        raw = read_image_bytes(cfg.image, cfg.timeout, cfg.max_bytes, cfg.allow_link_local)
    except FetchError as problem:
        raise ValueError(str(problem)) from None
    model, spec, info = load_checkpoint(cfg.checkpoint)
    image = as_training_saw(raw, cfg.image, cfg.max_pixels, spec)
    inputs = data.eval_transform(spec.image_size)(image).unsqueeze(0)
    embeddings: list[torch.Tensor] = []
    predicted = predict_years(model, spec, inputs, torch.device("cpu"), info["calibration"], embeddings=embeddings)
    nearest = []
    if cfg.comparanda:
        checkpoint = resolve_checkpoint(store.absolute(cfg.checkpoint))
        nearest = comparanda.image_neighbours(store.absolute(cfg.comparanda), checkpoint, embeddings[0].numpy())[0]
    return predicted, nearest
