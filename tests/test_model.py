import dataclasses
import math
import os

import pytest
import torch

from artdate.cli import main
from artdate.core.config import TrainConfig
from artdate.data import partition, pipeline, shards
from artdate.model.checkpoints import load_checkpoint, resolve_checkpoint, save_checkpoint
from artdate.model.network import LabelEncoding, ModelSpec, build_model
from artdate.model.ranges import RangeCalibration
from artdate.train.loop import error_metrics, evaluate, make_optimizer, make_scheduler, train_one_epoch
from tests.support.helpers import SAMPLE_IMAGES


@pytest.mark.parametrize("backbone, outputs", [("efficientnet_lite0", 1), ("resnet18", 30), ("mobilenet_v3_small", 1)])
def test_every_parameter_gets_a_gradient(backbone, outputs):
    # As timm checks: every parameter is in the graph. (Exact zeros can happen at random init:
    # a ReLU6 unit that is off for the whole batch passes none back.)
    torch.manual_seed(0)
    model = build_model(backbone, outputs, weights="none")
    result = model(torch.randn(4, 3, 64, 64))
    assert result.shape == (4, outputs)
    result.float().pow(2).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert sum(p.grad.abs().sum().item() for p in model.parameters()) > 0


def test_offline_imagenet_weights_load():
    pretrained = build_model("efficientnet_lite0", 1, weights="imagenet")
    fresh = build_model("efficientnet_lite0", 1, weights="none")
    stem = "_conv_stem.weight"
    assert not torch.equal(pretrained.state_dict()[stem], fresh.state_dict()[stem])


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'resnet9000'"):
        build_model("resnet9000", 1, weights="none")


def test_regression_encoding_round_trips():
    encoding = LabelEncoding(loss="l1", mean=1700, std=150)
    years = torch.tensor([1200, 1650, 1930])
    targets = encoding.targets(years, years, years)
    predicted, _, _, spread = encoding.decode(targets[:, None])
    assert torch.allclose(predicted, years.float()) and spread is None


def test_bins_spread_over_the_date_range_and_decode_to_the_expected_year():
    encoding = LabelEncoding(loss="bins", year_min=1200, year_max=1930, bin_width=25)
    assert encoding.num_outputs == 30
    targets = encoding.targets(torch.tensor([1625]), torch.tensor([1600]), torch.tensor([1649]))
    assert torch.allclose(targets.sum(1), torch.tensor([1.0]))
    assert targets[0].nonzero().flatten().tolist() == [16, 17]  # 1600-1624 and 1625-1649
    logits = torch.full((1, 30), -30.0)
    logits[0, 16] = 30.0
    predicted, _, _, spread = encoding.decode(logits)
    assert predicted.item() == pytest.approx(1612.0) and spread.item() < 1
    loss = encoding.loss_fn(logits, targets)
    assert loss.item() > encoding.loss_fn(torch.log(targets + 1e-9), targets).item()


def test_bins_decode_to_the_median_or_the_mean_of_the_year_distribution():
    # Three 10-year bins from 1200: 60% in 1200-1209, 40% in 1220-1229 (worked out by hand).
    logits = torch.log(torch.tensor([[0.6, 1e-12, 0.4]]))
    mean = LabelEncoding(loss="bins", year_min=1200, year_max=1229, bin_width=10, point="mean")
    median = dataclasses.replace(mean, point="median")
    # mean: 0.6 * 1204.5 + 0.4 * 1224.5; median: half the mass lies 0.5 / 0.6 into the first bin,
    # which spans 1199.5..1209.5 on the continuous scale.
    assert mean.decode(logits)[0].item() == pytest.approx(1212.5, abs=1e-3)
    assert median.decode(logits)[0].item() == pytest.approx(1199.5 + 10 * 0.5 / 0.6, abs=1e-3)
    assert median.decode(logits)[3].item() == pytest.approx(mean.decode(logits)[3].item())  # the same spread


def test_a_spec_reads_back_as_it_was_written():
    spec = ModelSpec("efficientnet_lite0", 128, LabelEncoding(loss="bins", point="mean"), pack_size=160)
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_bins_with_a_label_sigma_reach_the_neighbouring_bins_as_a_gaussian():
    encoding = LabelEncoding(loss="bins", year_min=1200, year_max=1929, bin_width=50, label_sigma=50)
    target = encoding.targets(torch.tensor([1612]), torch.tensor([1612]), torch.tensor([1612]))[0]
    assert target.sum().item() == pytest.approx(1.0)
    # 1612 lies in 1600-1649 (centre 1624.5); the bins around it weigh exp(-d^2 / (2 * 50^2)), d
    # the distance from 1612 to their centre.
    weights = {
        8: 1.0,
        7: math.exp(-0.5 * (37.5 / 50) ** 2),
        9: math.exp(-0.5 * (62.5 / 50) ** 2),
        6: math.exp(-0.5 * (87.5 / 50) ** 2),
    }
    for index, weight in weights.items():
        assert target[index].item() / target[8].item() == pytest.approx(weight, rel=1e-5)
    assert target.argmax().item() == 8 and target[0].item() < 1e-10
    sharp = LabelEncoding(loss="bins", year_min=1200, year_max=1929, bin_width=50)
    assert sharp.targets(torch.tensor([1612]), torch.tensor([1612]), torch.tensor([1612]))[0].tolist() == [
        1.0 if i == 8 else 0.0 for i in range(15)
    ]


def test_error_metrics():
    metrics = error_metrics(torch.tensor([10.0, 40.0, 60.0, 100.0]))
    assert metrics == {"val_n": 4, "val_mae": 52.5, "val_median_ae": 50.0, "val_within_50": 0.5}


def small_setup(sample_store, loss="mse"):
    manifest = shards.read_manifest(sample_store)
    from artdate.train.loop import label_encoding

    encoding = label_encoding(manifest, loss, 50)
    spec = ModelSpec("efficientnet_lite0", 64, encoding)
    model = build_model(spec.backbone, encoding.num_outputs, "imagenet")
    return manifest, spec, model


def test_loss_goes_down_on_a_tiny_problem_without_ray(sample_store):
    torch.manual_seed(0)
    manifest, spec, model = small_setup(sample_store)
    first_shard = partition.store_slices(sample_store, manifest, "train")[:1]
    transform = pipeline.eval_transform(64)
    batch = next(iter(pipeline.make_loader(first_shard, transform, batch_size=16, loader_workers=0)))
    cfg = TrainConfig(shards="", storage="", lr=3e-3, epochs=1, warmup_epochs=0)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=30)
    first = train_one_epoch(model, spec, optimizer, scheduler, [batch] * 3, torch.device("cpu"), 0)
    for _ in range(8):
        last = train_one_epoch(model, spec, optimizer, scheduler, [batch] * 3, torch.device("cpu"), 0)
    assert last["loss"] < 0.6 * first["loss"]
    assert last["images"] == 48
    predictions, years, skipped = evaluate(model, spec, [batch], torch.device("cpu"))
    assert len(years) == 16 and skipped == 0 and torch.equal(years, batch.year.float())
    assert torch.isfinite(predictions.year).all() and (predictions.low <= predictions.high).all()


def test_a_frozen_warm_start_trains_the_head_alone_then_everything():
    model = build_model("resnet18", 1, weights="none")
    cfg = TrainConfig(shards="", storage="", lr=1e-3, backbone_lr_scale=0.1, epochs=4, warmup_epochs=1, freeze_epochs=2)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=5)
    rates = []
    for _ in range(20):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert all(backbone == 0 for _, backbone in rates[:10])  # epochs 0 and 1: the backbone is frozen
    assert all(backbone == pytest.approx(0.1 * head) and backbone > 0 for head, backbone in rates[10:])
    assert rates[4][0] == pytest.approx(1e-3 * 5 / 6)  # the head warms up over epoch 0 as without freezing
    # A resumed run placed after the frozen epochs does not freeze again.
    resumed = make_scheduler(make_optimizer(model, cfg), cfg, steps_per_epoch=5, start_epoch=2)
    assert resumed.get_last_lr()[1] == pytest.approx(rates[10][1])


def test_checkpoint_round_trip_and_best_of_a_run(tmp_path, sample_store):
    manifest, spec, model = small_setup(sample_store, loss="bins")
    run = tmp_path / "run"
    for name, mae in (("checkpoint_a", 80.0), ("checkpoint_b", 60.0), ("checkpoint_c", 70.0)):
        os.makedirs(run / name)
        save_checkpoint(str(run / name), spec, model, {"val_mae": mae}, RangeCalibration(0.8, 12.0, 40), {"epoch": 0})
    assert resolve_checkpoint(str(run)).endswith("checkpoint_b")
    loaded, loaded_spec, state = load_checkpoint(str(run))
    assert loaded_spec == spec and state["metrics"] == {"val_mae": 60.0}
    assert state["calibration"] == RangeCalibration(0.8, 12.0, 40)
    images = torch.randn(2, 3, 64, 64)
    model.eval()
    assert torch.allclose(loaded(images), model(images))


def test_missing_and_broken_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(str(tmp_path))
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(str(tmp_path))
    torch.save({"format": "something-else"}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="not an artdate checkpoint"):
        load_checkpoint(str(tmp_path))
    # The first format had no range calibration for some checkpoints: 0.x carries no reader for it.
    torch.save({"format": "artdate-checkpoint/1"}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"not an artdate checkpoint \(format artdate-checkpoint/2\)"):
        load_checkpoint(str(tmp_path))


def test_weights_from_a_file_load_and_the_wrong_backbone_is_refused(tmp_path):
    source = build_model("resnet18", 5, weights="none")
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    loaded = build_model("resnet18", 1, weights=str(path))  # a new 1-output head; the body from the file
    assert torch.equal(loaded.state_dict()["layer4.1.conv2.weight"], source.state_dict()["layer4.1.conv2.weight"])
    with pytest.raises(ValueError, match="does not hold weights of mobilenet_v3_small"):
        build_model("mobilenet_v3_small", 1, weights=str(path))


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_and_broken_checkpoints_are_one_line_errors_and_run_no_code(tmp_path, tiny_checkpoint, capsys):
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    good = torch.load(os.path.join(tiny_checkpoint, "checkpoint.pt"), weights_only=True)
    torch.save({**good, "extra": _RunsCode(marker)}, hostile / "checkpoint.pt")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    whole = open(os.path.join(tiny_checkpoint, "checkpoint.pt"), "rb").read()
    (truncated / "checkpoint.pt").write_bytes(whole[: len(whole) // 2])
    other = tmp_path / "other-backbone"
    other.mkdir()
    torch.save({**good, "spec": {**good["spec"], "backbone": "resnet18"}}, other / "checkpoint.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    image = os.path.join(SAMPLE_IMAGES, "aic_866.jpg")
    for directory, message in [
        (hostile, "was refused: it holds code"),
        (truncated, "not a readable checkpoint"),
        (other, "does not fit backbone resnet18"),
        (empty, "no checkpoint at"),
    ]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            load_checkpoint(str(directory))
        assert main(["predict", image, "--checkpoint", str(directory)]) == 2
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1, error
    with pytest.raises(ValueError, match="was refused"):
        build_model("efficientnet_lite0", 1, weights=str(hostile / "checkpoint.pt"))
    assert not marker.exists()


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18"])
def test_the_year_head_runs_in_fp32_under_bf16_autocast(backbone):
    model = build_model(backbone, 1, weights="none").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(torch.randn(2, 3, 64, 64))
    assert outputs.dtype == torch.float32  # in bf16 a standardised year is quantised to 1-2 years


def test_regression_predictions_stay_inside_the_label_window():
    encoding = LabelEncoding("mse", mean=1700.0, std=150.0, year_min=1200, year_max=1930)
    years, *_ = encoding.decode(torch.tensor([[-10.0], [0.0], [10.0]]))
    assert years.tolist() == [1200.0, 1700.0, 1930.0]


def test_a_training_step_can_decode_and_augment_on_the_device(sample_store):
    torch.manual_seed(0)
    manifest, spec, model = small_setup(sample_store)
    first_shard = partition.store_slices(sample_store, manifest, "train")[:1]
    encoded = list(pipeline.make_loader(first_shard, None, batch_size=16, loader_workers=0))  # JPEGs, not decoded
    cfg = TrainConfig(shards="", storage="", lr=3e-3, epochs=1, warmup_epochs=0)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=30)
    stats = train_one_epoch(
        model,
        spec,
        optimizer,
        scheduler,
        encoded,
        torch.device("cpu"),
        0,
        device_transform=pipeline.train_transform(64),
    )
    assert stats["images"] == first_shard[0].samples and stats["skipped"] == 0
    predictions, years, skipped = evaluate(model, spec, encoded, torch.device("cpu"), pipeline.eval_transform(64))
    assert len(predictions.year) == len(years) == first_shard[0].samples and skipped == 0


def test_a_compiled_run_trains_scores_alike_and_its_checkpoint_loads_without_compiling(
    tmp_path, sample_store, monkeypatch
):
    from artdate.score.run import Scorer
    from artdate.train.loop import fit, label_encoding, shard_batches

    # torch.compile's code generator (inductor) takes minutes per model on 2 cores: this compiles
    # with aot_eager, the same graph capture and the same `_orig_mod.` names, another generator.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **options: real_compile(model, backend="aot_eager"))
    torch.manual_seed(0)
    manifest = shards.read_manifest(sample_store)
    spec = ModelSpec("efficientnet_lite0", 64, label_encoding(manifest, "bins", 50), pack_size=96)
    model = build_model(spec.backbone, spec.encoding.num_outputs, "imagenet")
    cfg = TrainConfig(shards="", storage="", epochs=1, batch_size=16, loader_workers=0, shuffle_buffer=0, compile=True)
    train, val = (partition.store_slices(sample_store, manifest, split)[:1] for split in ("train", "val"))
    validation = lambda: pipeline.make_loader(val, pipeline.eval_transform(64), 32, loader_workers=0)  # noqa: E731
    fitted = fit(model, spec, cfg, shard_batches(train, pipeline.train_transform(64), cfg), 2, validation=validation)
    assert fitted.metrics["images"] == 32 and math.isfinite(fitted.metrics["val_mae"])
    save_checkpoint(str(tmp_path), spec, model, fitted.metrics, fitted.calibration)
    loaded, _, _ = load_checkpoint(str(tmp_path))  # no compiling: the module's own names
    assert not [name for name in torch.load(tmp_path / "checkpoint.pt")["model"] if "_orig_mod" in name]
    plain = Scorer(str(tmp_path), 32).score(val[0].url, val[0].samples, "val")
    fast = Scorer(str(tmp_path), 32, compile=True).score(val[0].url, val[0].samples, "val")
    assert [row["pred"] for row in fast[0]] == pytest.approx([row["pred"] for row in plain[0]], abs=0.05)
    assert fast[2] == pytest.approx(plain[2], abs=2e-3)  # the embeddings, read through the compiled model too
    assert isinstance(loaded, torch.nn.Module) and len(plain[0]) == val[0].samples


def test_the_batch_left_to_the_device_fills_a_gpu_with_the_learning_rate_scaled_by_its_square_root():
    from artdate.train.gpu_memory import GIB, RESNET152_AT_224, Card
    from artdate.train.loop import for_device, gpu_batch

    auto = TrainConfig(shards="", storage="")
    assert auto.batch_size == 0
    on_cpu = for_device(auto, on_gpu=False)
    assert (on_cpu.batch_size, on_cpu.lr) == (32, auto.lr)  # the CPU defaults as they were
    on_gpu = for_device(auto, on_gpu=True, card=Card("NVIDIA H200", 140 * GIB, RESNET152_AT_224))
    assert on_gpu.batch_size == 256 and on_gpu.lr == pytest.approx(auto.lr * 8**0.5)
    assert [gpu_batch(size) for size in (64, 128, 224, 320, 448)] == [1024, 1024, 256, 128, 64]
    given = TrainConfig(shards="", storage="", batch_size=48, lr=5e-4)
    assert for_device(given, on_gpu=True) == given  # as given
