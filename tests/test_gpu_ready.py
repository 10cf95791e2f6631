"""What the first GPU run needs, checked where a CPU can show it: the automatic batch sized from the
card's memory, every device chosen from the resource ask (not from what the node has), the pod
specs' /dev/shm, and no step that waits for the GPU. tests/test_gpu.py runs the same paths on CUDA."""

import sys

import pytest
import torch
import yaml

from artdate.core.config import TrainConfig
from artdate.data import device_decode, partition, pipeline, shards
from artdate.model.network import LabelEncoding, ModelSpec, build_model
from artdate.train.gpu_memory import GIB, HEADROOM, RESNET152_AT_224, Card, fitting_batch
from artdate.train.loop import CPU_BATCH, for_device, gpu_batch, make_optimizer, make_scheduler, train_one_epoch
from tests.support.helpers import ROOT

# total_memory as torch reports it for each card (the A10G of cluster/aws-gpu.yaml: 23,028 MiB).
CARDS = {"NVIDIA A10G": 22.49, "Tesla T4": 14.58, "NVIDIA H100 80GB HBM3": 79.19, "NVIDIA H200": 139.8}


@pytest.mark.parametrize(
    "name, image_size, expected",
    [
        ("NVIDIA A10G", 224, 128),  # 256 peaks at 22.6 GiB: over a 24 GB card
        ("Tesla T4", 224, 128),
        ("NVIDIA H100 80GB HBM3", 224, 256),  # memory for 512, but throughput levels off at 256
        ("NVIDIA H200", 224, 256),
        ("NVIDIA A10G", 320, 64),  # 2x the pixels an image: 128 would need 23.1 GiB
        ("NVIDIA H100 80GB HBM3", 128, 1024),
    ],
)
def test_the_automatic_batch_fits_the_card_it_trains_on(name, image_size, expected):
    card = Card(name, CARDS[name] * GIB, RESNET152_AT_224)
    cfg = for_device(TrainConfig(shards="", storage="", backbone="resnet152", image_size=image_size), True, card)
    assert cfg.batch_size == expected
    assert RESNET152_AT_224.peak(cfg.batch_size, image_size) <= HEADROOM * card.total
    assert cfg.lr == pytest.approx(TrainConfig(shards="", storage="").lr * (expected / CPU_BATCH) ** 0.5)


def test_a_worker_given_half_a_card_gets_half_the_batch_and_a_model_that_does_not_fit_is_refused():
    a10g = Card("NVIDIA A10G", CARDS["NVIDIA A10G"] * GIB, RESNET152_AT_224)
    auto = TrainConfig(shards="", storage="", backbone="resnet152")
    assert for_device(auto, True, a10g, share=0.5).batch_size == 64
    assert fitting_batch(RESNET152_AT_224, 1 * GIB, 224, gpu_batch(224)) == 0
    with pytest.raises(ValueError, match="does not train even one image per step in 0.05 of the NVIDIA A10G"):
        for_device(auto, True, a10g, share=0.05)


def test_the_reference_line_reads_back_the_measured_peaks():
    """RESNET152_AT_224 against bench/RESULTS.md's H200 readings (GiB at each batch)."""
    for batch, measured in ((64, 6.5), (128, 11.9), (256, 22.6), (512, 44.2), (1024, 87.2)):
        assert RESNET152_AT_224.peak(batch, 224) / GIB == pytest.approx(measured, abs=0.15)


def test_a_scoring_actor_that_asked_for_no_gpu_scores_on_the_cpu_of_a_gpu_node(tiny_checkpoint, monkeypatch):
    """Ray 2.60 shows a GPU node's GPUs to an actor that asked for none: is_available() is True there."""
    from artdate.score.run import Scorer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    scorer = Scorer(tiny_checkpoint, batch_size=4)
    assert scorer.device == torch.device("cpu")
    assert next(scorer.model.parameters()).device == torch.device("cpu")


def test_a_loader_pins_memory_only_for_a_consumer_on_cuda(sample_store, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CPU worker on a GPU node
    slices = partition.store_slices(sample_store, shards.read_manifest(sample_store))[:1]
    assert pipeline.make_loader(slices, None, 8, loader_workers=0).pin_memory is False
    assert pipeline.make_loader(slices, None, 8, loader_workers=0, pin_memory=True).pin_memory is True


class SynchronisingCalls:
    """Counts, during training steps on the CPU, the calls of artdate's own code that make the host
    wait for a GPU on CUDA: a copy to the step's device that is not non_blocking, and a tensor
    built on the device from Python numbers. (torch's own device-to-device copies, as in
    clip_grad_norm_, wait for nothing.)"""

    def __init__(self, monkeypatch):
        self.blocking_copies, self.device_tensors = [], []
        to, tensor = torch.Tensor.to, torch.tensor

        def counted_to(this, *args, **kwargs):
            target = args[0] if args else kwargs.get("device")
            ours = sys._getframe(1).f_globals["__name__"].startswith("artdate")
            if ours and isinstance(target, (torch.device, str)) and not kwargs.get("non_blocking", False):
                self.blocking_copies.append(tuple(this.shape))
            return to(this, *args, **kwargs)

        def counted_tensor(*args, **kwargs):
            if sys._getframe(1).f_globals["__name__"].startswith("artdate") and kwargs.get("device") is not None:
                self.device_tensors.append(args[0])
            return tensor(*args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", counted_to)
        monkeypatch.setattr(torch, "tensor", counted_tensor)


def test_a_training_step_makes_no_call_that_waits_for_the_gpu(monkeypatch):
    device = torch.device("cpu")
    spec = ModelSpec("resnet18", 32, LabelEncoding(loss="bins", year_min=1300, year_max=1900, bin_width=50))
    model = build_model("resnet18", spec.encoding.num_outputs, weights="none")
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    years = torch.tensor([1400, 1500, 1600, 1700])
    batch = pipeline.Batch(images, years, years - 10, years + 10, key=[], shard=[], id=[], museum=[])
    cfg = TrainConfig(shards="", storage="", warmup_epochs=0)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, 8)
    calls = SynchronisingCalls(monkeypatch)
    steps = 4
    train_one_epoch(model, spec, optimizer, scheduler, [batch] * steps, device, 0)
    assert calls.blocking_copies == []
    assert len(calls.device_tensors) <= 2  # the normalisation's mean and std, made once, not every step


def test_a_failed_batch_decode_waits_for_the_stream_again_before_decoding_one_by_one(monkeypatch):
    """nvJPEG writes before queued work has run (device_decode._wait_for_queued_work): the blocks
    a failed batched call freed must not reach the one-by-one decodes while still being written.
    The CUDA calls are recorded in order on a CPU stand-in."""
    import torchcodec.decoders

    events = []

    class Stream:
        def synchronize(self):
            events.append("wait")

    def decode_jpeg(jpegs, mode, device):
        if isinstance(jpegs, list):
            events.append("batch")
            raise RuntimeError("one JPEG of the batch is corrupt")
        events.append("one")
        return torch.zeros(3, 8, 8, dtype=torch.uint8)

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(torchcodec.decoders, "decode_jpeg", decode_jpeg)
    jpegs = [torch.zeros(10, dtype=torch.uint8)] * 2
    years = torch.tensor([1500, 1600])
    batch = pipeline.Batch(
        jpegs, years, years, years, key=["a", "b"], shard=["s", "s"], id=["a", "b"], museum=["m", "m"]
    )
    batch.index = [0, 1]
    decoded = device_decode.decode_on_device(batch, lambda image: image, torch.device("cuda"))
    assert events == ["wait", "batch", "wait", "one", "one"]
    assert decoded.image.shape == (2, 3, 8, 8)


def shared_memory_limits(path: str) -> dict:
    """{group name: /dev/shm sizeLimit in bytes} of every pod template in a KubeRay manifest."""
    with open(path) as f:
        spec = yaml.safe_load(f)["spec"]
    groups = {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}
    units = {"Mi": 2**20, "Gi": 2**30}
    limits = {}
    for name, group in groups.items():
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        (mount,) = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
        (volume,) = [v for v in pod.get("volumes", []) if v["name"] == mount["name"]]
        assert volume["emptyDir"]["medium"] == "Memory"
        size = volume["emptyDir"]["sizeLimit"]
        limits[name] = int(size[:-2]) * units[size[-2:]]
        store = int(group["rayStartParams"]["object-store-memory"])
        limits[name] -= store  # Ray's object store lives in /dev/shm too: what is left is the loaders'
    return limits


def test_every_kuberay_pod_has_room_in_dev_shm_for_its_loaders_batches():
    """Containers get 64 MiB of /dev/shm by default; a GPU batch of 256 crops crossing from a loader
    process is 38.5 MB, and each loader process keeps several in flight."""
    import os

    limits = shared_memory_limits(os.path.join(ROOT, "cluster", "kuberay", "raycluster.yaml"))
    train = TrainConfig(shards="", storage="")
    # A GPU node's worst case: the largest automatic batch at 224 px, from as many loader processes
    # as a GPU pod has CPUs (8), each with its prefetched batches.
    need = pipeline.shared_memory_need(gpu_batch(224), 224, loader_workers=8)
    assert need > 64 * 2**20 * 10
    assert limits["gpu"] >= need
    assert limits["gpu"] >= pipeline.shared_memory_need(
        gpu_batch(train.image_size), train.image_size, train.loader_workers
    )
    assert limits["head"] > 0
