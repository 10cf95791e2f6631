"""GPU path of training: bf16 autocast and channels_last. Skipped on machines without CUDA."""

import pytest
import torch

from artdate import data
from artdate.config import TrainConfig
from artdate.model import LabelEncoding, ModelSpec, build_model
from artdate.train import make_optimizer, make_scheduler, train_one_epoch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none"),
]


def test_bf16_channels_last_training_step_lowers_the_loss():
    device = torch.device("cuda")
    torch.manual_seed(0)
    spec = ModelSpec("resnet18", 64, LabelEncoding(loss="huber", mean=1700, std=150))
    model = build_model("resnet18", 1, weights="none").to(device, memory_format=torch.channels_last)
    images = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8)
    years = torch.randint(1300, 1900, (16,))
    batch = data.Batch(images, years, years, years, key=[], shard=[], id=[], museum=[])
    cfg = TrainConfig(shards="", storage="", warmup_epochs=0)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, 40)
    first = train_one_epoch(model, spec, optimizer, scheduler, [batch] * 4, device, 0, autocast_dtype=torch.bfloat16)
    for _ in range(6):
        last = train_one_epoch(model, spec, optimizer, scheduler, [batch] * 4, device, 0, autocast_dtype=torch.bfloat16)
    assert last["loss"] < first["loss"]


def test_jpegs_decoded_on_the_gpu_match_the_cpu(tmp_path):
    import io

    from PIL import Image

    from artdate import shards

    samples = []
    for i in range(6):
        out = io.BytesIO()
        Image.effect_mandelbrot((96, 80), (-2, -1.2, 1, 1.2), 10 + 10 * i).convert("RGB").save(out, "JPEG")
        samples.append((f"met_{i}", out.getvalue(), {"id": str(i), "museum": "met", "year": 1500}))
    shards.write_tar(str(tmp_path / "a.tar"), samples)
    (batch,) = data.make_loader([data.Slice(str(tmp_path / "a.tar"), 0, 6)], None, batch_size=6, loader_workers=0)
    transform = data.eval_transform(64)
    on_gpu = data.decode_on_device(batch, transform, torch.device("cuda")).image.cpu().float()
    on_cpu = data.decode_on_device(batch, transform, torch.device("cpu")).image.float()
    assert on_gpu.shape == on_cpu.shape == (6, 3, 64, 64)
    assert (on_gpu - on_cpu).abs().mean() < 2  # nvJPEG and libjpeg-turbo may differ by a level or two
