"""The stage every consumer (training, validation, scoring) reads its batches through: `decoded_batches`
decodes them on the device when asked (nvJPEG on CUDA, one batch ahead on a stream of its own),
counts the skipped samples and passes on only batches with images."""

from __future__ import annotations

from dataclasses import replace

import torch

from artdate.data.pipeline import Batch, Skip


def decode_on_device(batch: Batch, transform, device: torch.device) -> Batch:
    """A batch of encoded JPEGs (a loader with transform=None) -> the same batch with uint8 images
    decoded on `device` (nvJPEG on CUDA, in one call for the batch) and `transform`ed there. A
    JPEG that does not decode is dropped from the batch and added to its `skipped` records."""
    from torchcodec.decoders import decode_jpeg

    jpegs = batch.image
    if jpegs is None:  # every sample of it was skipped already
        return batch
    images: list  # a decoded image, or why it did not decode
    _wait_for_queued_work(device)
    try:
        images = list(decode_jpeg(jpegs, mode="RGB", device=device))
    except Exception:  # noqa: BLE001 -- one bad JPEG fails the whole call: find it one by one
        # The failed call's outputs were freed while the decoder may still write them: wait again,
        # or the one-by-one decodes below get those blocks.
        _wait_for_queued_work(device)
        images = []
        for jpeg in jpegs:
            try:
                images.append(decode_jpeg(jpeg, mode="RGB", device=device))
            except Exception as problem:  # noqa: BLE001
                images.append(f"undecodable: {problem}"[:300])
    keep = [i for i, image in enumerate(images) if isinstance(image, torch.Tensor)]
    skipped = batch.skipped + [
        Skip(batch.shard[i], batch.key[i], images[i], index=batch.index[i]) for i in range(len(images)) if i not in keep
    ]
    stacked = torch.stack([transform(images[i]) for i in keep]) if keep else None
    return replace(batch.take(keep), image=stacked, skipped=skipped)


def _wait_for_queued_work(device: torch.device) -> None:
    """Before nvJPEG decodes on `device`: its hardware decoder (H100, H200) writes its outputs
    before the work already queued on the stream has run, into memory the allocator has handed on
    from tensors that queued kernels still read: NaN weights by the third training step on an
    H200. Wait for that work first (torchcodec pull request 1634); the decode waits for the
    stream anyway."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def decoded_batches(batches, skipped: list[Skip], device: torch.device | None = None, device_transform=None):
    """The one stage training, validation and scoring read their batches through: each batch
    decoded and transformed on `device` when a `device_transform` is given (the loader passed
    encoded JPEGs; on CUDA one batch ahead, on a stream of its own: decoded_ahead), its skip
    records added to `skipped`, and only batches that hold images passed on."""
    if device_transform is not None:
        assert device is not None
        if device.type == "cuda":
            batches = decoded_ahead(batches, device_transform, device)
        else:
            batches = (decode_on_device(batch, device_transform, device) for batch in batches)
    for batch in batches:
        skipped.extend(batch.skipped)
        if batch.image is not None:
            yield batch


def decoded_ahead(batches, transform, device: torch.device):
    """decode_on_device one batch ahead of the caller, on a CUDA stream of its own: the GPU's JPEG
    decoder and the transforms of the next batch run while the model works on this one. A batch is
    handed on once its stream's work is queued before the caller's (an event), and its images are
    marked as used on the caller's stream, so the allocator does not hand their memory to the
    decode stream while the model still reads it."""
    stream = torch.cuda.Stream(device)
    ahead = None
    for batch in batches:
        with torch.cuda.stream(stream):
            decoded = decode_on_device(batch, transform, device)
            ready = torch.cuda.Event()
            ready.record(stream)
        if ahead is not None:
            yield _handed_over(*ahead, device)
        ahead = (decoded, ready)
    if ahead is not None:
        yield _handed_over(*ahead, device)


def _handed_over(batch: Batch, ready, device: torch.device) -> Batch:
    caller = torch.cuda.current_stream(device)
    caller.wait_event(ready)
    if isinstance(batch.image, torch.Tensor):
        batch.image.record_stream(caller)
    return batch
