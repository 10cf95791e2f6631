"""Year ranges: the interval each prediction carries, calibrated so that it means what it says.

The model gives a raw range per work: for `bins`, the central `level` interval of its year
distribution; for the regression losses, the predicted year itself (a range of width 0). On the
validation split (works the model did not train on) we measure how far outside its raw range each
true year falls, and widen (or narrow) every range by the margin that keeps `level` of them
inside: split conformal prediction, in its conformalized-quantile form (Romano et al. 2019). With
exchangeable works, a range then holds the true year with probability at least `level`, and
about `level` when the validation split is large.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

DEFAULT_LEVEL = 0.8


@dataclass(frozen=True)
class RangeCalibration:
    """What turns raw ranges into calibrated ones: low - margin .. high + margin."""

    level: float  # the share of true years the ranges are meant to hold
    margin: float  # years added on both sides of the raw range (negative: the raw ranges were too wide)
    n: int  # validation works it was measured on

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RangeCalibration":
        return cls(**data)


def bin_quantiles(
    probabilities: torch.Tensor, year_min: int, bin_width: int, shares: tuple[float, ...]
) -> torch.Tensor:
    """Years at which each row's year distribution reaches each share, the probability of a bin
    spread evenly over its years: bin k holds the years year_min + k*width .. year_min + (k+1)*width - 1,
    so on the continuous scale it spans half a year beyond each (its centre is the one
    LabelEncoding uses). Returns a (rows, len(shares)) tensor."""
    cumulative = torch.cumsum(probabilities.float(), dim=1)
    cumulative = cumulative / cumulative[:, -1:].clamp_min(1e-12)
    wanted = torch.tensor(shares, dtype=cumulative.dtype, device=cumulative.device).expand(len(cumulative), -1)
    index = torch.searchsorted(cumulative.contiguous(), wanted.contiguous()).clamp(max=probabilities.shape[1] - 1)
    before = torch.where(index > 0, torch.gather(cumulative, 1, (index - 1).clamp(min=0)), torch.zeros_like(wanted))
    inside = torch.gather(cumulative, 1, index) - before
    fraction = ((wanted - before) / inside.clamp_min(1e-12)).clamp(0, 1)
    return year_min - 0.5 + bin_width * (index.to(cumulative.dtype) + fraction)


def central_shares(level: float) -> tuple[float, float]:
    """The distribution's shares at the ends of its central `level` interval."""
    return (1 - level) / 2, (1 + level) / 2


def conformal_margin(years: torch.Tensor, low: torch.Tensor, high: torch.Tensor, level: float) -> float:
    """The smallest margin m such that low - m <= year <= high + m for at least
    ceil((n + 1) * level) of the n validation works: the finite-sample conformal quantile.
    inf when there are too few works to promise `level` (n < level / (1 - level))."""
    scores = torch.maximum(low - years, years - high).double().sort().values
    n = len(scores)
    rank = math.ceil((n + 1) * level)
    if n == 0 or rank > n:
        return math.inf
    return float(scores[rank - 1])


def calibrate(years: torch.Tensor, low: torch.Tensor, high: torch.Tensor, level: float) -> RangeCalibration:
    return RangeCalibration(
        level=level, margin=conformal_margin(years.float(), low.float(), high.float(), level), n=len(years)
    )


@dataclass(frozen=True)
class Predictions:
    """A batch of predictions, on the CPU: years, ranges (raw or calibrated), and for `bins` the
    standard deviation of the year distribution (else None)."""

    year: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    spread: torch.Tensor | None = None

    @classmethod
    def concat(cls, parts: list["Predictions"]) -> "Predictions":
        spreads = [p.spread for p in parts if p.spread is not None]
        return cls(
            torch.cat([p.year for p in parts]),
            torch.cat([p.low for p in parts]),
            torch.cat([p.high for p in parts]),
            torch.cat(spreads) if len(spreads) == len(parts) else None,
        )


def apply_calibration(raw: Predictions, calibration: RangeCalibration, year_min: int, year_max: int) -> Predictions:
    """Calibrated ranges, inside the label window (no work's year lies outside it)."""
    low, high = raw.low, raw.high
    if math.isfinite(calibration.margin):
        low, high = low - calibration.margin, high + calibration.margin
        middle = (low + high) / 2  # a negative margin shrinks a narrow range to its middle, never inverts it
        low, high = torch.minimum(low, middle), torch.maximum(high, middle)
    else:  # too few validation works to promise the level: the whole window
        low, high = torch.full_like(low, year_min), torch.full_like(high, year_max)
    return Predictions(raw.year, low.clamp(year_min, year_max), high.clamp(year_min, year_max), raw.spread)


def inside(years, low, high):
    """Whether each true year lies in its range (ends included)."""
    return (low <= years) & (years <= high)
