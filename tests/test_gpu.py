"""GPU path of training: bf16 autocast and channels_last, and JPEGs decoded on the device. The
CUDA tests are skipped on machines without it; the training step also runs on the CPU, so a change
of what train_one_epoch takes breaks it here too, not only on the rare machine with a GPU."""

import io

import pytest
import torch
from PIL import Image

from artdate.core.config import TrainConfig
from artdate.data import device_decode, pipeline
from artdate.model.network import LabelEncoding, ModelSpec, build_model
from artdate.train.loop import make_optimizer, make_scheduler, train_one_epoch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])])
def test_bf16_channels_last_training_step_lowers_the_loss(device):
    device = torch.device(device)
    torch.manual_seed(0)
    spec = ModelSpec("resnet18", 64, LabelEncoding(loss="huber", mean=1700, std=150))
    model = build_model("resnet18", 1, weights="none").to(device, memory_format=torch.channels_last)
    images = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8)
    years = torch.randint(1300, 1900, (16,))
    batch = pipeline.Batch(images, years, years, years, key=[], shard=[], id=[], museum=[])
    cfg = TrainConfig(shards="", storage="", warmup_epochs=0)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, 40)
    first = train_one_epoch(model, spec, optimizer, scheduler, [batch] * 4, device, 0, autocast_dtype=torch.bfloat16)
    for _ in range(6):
        last = train_one_epoch(model, spec, optimizer, scheduler, [batch] * 4, device, 0, autocast_dtype=torch.bfloat16)
    assert last["loss"] < first["loss"]


def jpeg_batch(tmp_path, count: int, width: int, height: int) -> pipeline.Batch:
    """A loader's batch of `count` encoded baseline JPEGs (transform=None), as device decoding gets it."""
    from artdate.data import partition, shards

    samples = []
    for i in range(count):
        out = io.BytesIO()
        Image.effect_mandelbrot((width, height), (-2, -1.2, 1, 1.2), 10 + 10 * i).convert("RGB").save(out, "JPEG")
        samples.append((f"met_{i}", out.getvalue(), {"id": str(i), "museum": "met", "year": 1500}))
    shards.write_tar(str(tmp_path / "a.tar"), samples)
    slices = [partition.Slice(str(tmp_path / "a.tar"), 0, count)]
    (batch,) = pipeline.make_loader(slices, None, batch_size=count, loader_workers=0)
    return batch


@pytest.mark.gpu
@needs_cuda
def test_jpegs_decoded_on_the_gpu_match_the_cpu(tmp_path):
    batch = jpeg_batch(tmp_path, 6, 96, 80)
    transform = pipeline.eval_transform(64)
    on_gpu = device_decode.decode_on_device(batch, transform, torch.device("cuda")).image.cpu().float()
    on_cpu = device_decode.decode_on_device(batch, transform, torch.device("cpu")).image.float()
    assert on_gpu.shape == on_cpu.shape == (6, 3, 64, 64)
    assert (on_gpu - on_cpu).abs().mean() < 2  # nvJPEG and libjpeg-turbo may differ by a level or two


@pytest.mark.gpu
@needs_cuda
def test_decoding_on_the_gpu_leaves_memory_that_queued_work_still_reads_intact(tmp_path):
    """nvJPEG's hardware decoder (H100, H200) writes its outputs before the work already queued on
    the stream has run (torchcodec pull request 1634). Memory freed while reads of it are still
    queued, which PyTorch's allocator hands on at once, was overwritten: on an H200, ResNet152
    trained from device-decoded batches had NaN weights by its third step."""
    device = torch.device("cuda")
    width, height, count = 256, 192, 8
    floats = width * height * 3 // 4  # as many bytes as each decoded image: the allocator hands their blocks on
    batch = jpeg_batch(tmp_path, count, width, height)
    corrupted = 0
    for _ in range(20):
        victims = [torch.ones(floats, device=device) for _ in range(count)]
        torch.cuda.synchronize()
        torch.cuda._sleep(100_000_000)  # about 50 ms of queued GPU work before the reads below
        sums = [victim.sum() for victim in victims]
        del victims  # freed while their sums are still queued
        device_decode.decode_on_device(batch, lambda image: image, device)
        corrupted += sum(float(total) != floats for total in sums)
    assert corrupted == 0


@pytest.mark.gpu
@needs_cuda
def test_batches_decoded_ahead_on_their_own_stream_match_the_ones_decoded_in_turn(tmp_path):
    """decoded_batches() on CUDA decodes the next batch on a stream of its own while the caller's stream
    works on this one; the batches must be those decode_on_device gives one at a time."""
    device = torch.device("cuda")
    transform = pipeline.eval_transform(64)
    batches = [jpeg_batch(tmp_path, 4, 96 + 16 * n, 80) for n in range(3)]
    in_turn = [device_decode.decode_on_device(batch, transform, device).image.cpu() for batch in batches]
    skipped: list = []
    ahead = []
    for batch in device_decode.decoded_batches(batches, skipped, device, transform):
        torch.cuda._sleep(50_000_000)  # the model's work on the caller's stream, while the next decodes
        ahead.append(batch.image.cpu())
    assert len(ahead) == 3 and all(torch.equal(a, b) for a, b in zip(ahead, in_turn)) and skipped == []


def test_batches_decoded_on_the_cpu_pass_through_the_same_stage(tmp_path):
    """The stage every consumer reads through: decoded when asked, skips counted, empty batches
    left out (here on the CPU, where there is no stream to decode ahead on)."""
    batch = jpeg_batch(tmp_path, 3, 96, 80)
    broken = pipeline.Batch(
        [torch.tensor([1, 2, 3], dtype=torch.uint8)], *([torch.tensor([1500])] * 3), ["b"], ["s"], ["9"], ["met"]
    )
    broken.index = [0]
    skipped: list = []
    passed = list(
        device_decode.decoded_batches([batch, broken], skipped, torch.device("cpu"), pipeline.eval_transform(64))
    )
    assert [b.image.shape for b in passed] == [(3, 3, 64, 64)]
    assert [s.key for s in skipped] == ["b"] and skipped[0].reason.startswith("undecodable")


@pytest.mark.gpu
@needs_cuda
def test_the_batch_probe_measures_resnet152_near_the_line_read_on_an_h200():
    """gpu_memory.measure (what sizes --batch-size 0) against the H200's readings: the probe adds
    DDP's gradient buckets and CUDA's own memory, which the sweep's readings left out."""
    from artdate.train.gpu_memory import GIB, RESNET152_AT_224, measure

    measured = measure("resnet152", 1, 224)
    for batch in (128, 256):
        assert measured.peak(batch, 224) / GIB == pytest.approx(RESNET152_AT_224.peak(batch, 224) / GIB, rel=0.25)
