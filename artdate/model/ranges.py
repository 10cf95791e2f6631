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
from dataclasses import asdict, dataclass, field

import torch

DEFAULT_LEVEL = 0.8
OWN_MARGIN_FROM = 40  # validation works of one museum from which its ranges get a margin of their own
SPREAD_FROM = 10  # validation works of one museum from which it counts in the spread between museums


@dataclass(frozen=True)
class RangeCalibration:
    """What turns raw ranges into calibrated ones: low - margin .. high + margin, the margin
    chosen by the work's museum (a collection):
    - a museum with OWN_MARGIN_FROM or more validation works: its own margin (`per_museum`);
    - another museum of the validation split: the margin of all validation works (`margin`);
    - a museum the validation split does not hold, or none named (predict): `unseen_margin`, the
      margin the museums of the validation split needed, at `level` of them (a collection unlike
      the calibration works would otherwise get ranges that hold less than they promise)."""

    level: float  # the share of true years the ranges are meant to hold
    margin: float  # years added on both sides of the raw range (negative: the raw ranges were too wide)
    n: int  # validation works it was measured on
    per_museum: dict[str, float] = field(default_factory=dict)
    unseen_margin: float | None = None  # None: the pooled margin (no museums known)
    seen: tuple[str, ...] = ()  # the museums of the validation split

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RangeCalibration":
        return cls(**{**data, "seen": tuple(data.get("seen", ()))})

    def margins(self, museums: list[str] | None, count: int) -> torch.Tensor:
        """Each of `count` works' margin, by its museum (None: no museum known, as unseen)."""
        unseen = self.margin if self.unseen_margin is None else self.unseen_margin
        if museums is None:
            return torch.full((count,), unseen, dtype=torch.float64)
        seen = set(self.seen)
        return torch.tensor(
            [self.per_museum.get(m, self.margin if m in seen else unseen) for m in museums], dtype=torch.float64
        )


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


def calibrate(
    years: torch.Tensor, low: torch.Tensor, high: torch.Tensor, level: float, museums: list[str] | None = None
) -> RangeCalibration:
    """The calibration on validation works: the pooled margin, and with `museums` (each work's)
    the margins per museum and for museums unseen (RangeCalibration)."""
    years, low, high = years.float(), low.float(), high.float()
    pooled = conformal_margin(years, low, high, level)
    if not museums:
        return RangeCalibration(level=level, margin=pooled, n=len(years))
    groups: dict[str, list[int]] = {}
    for i, museum in enumerate(museums):
        groups.setdefault(museum, []).append(i)
    needed = {
        name: conformal_margin(years[i], low[i], high[i], level) for name, i in groups.items() if len(i) >= SPREAD_FROM
    }
    own = {name: margin for name, margin in needed.items() if len(groups[name]) >= OWN_MARGIN_FROM}
    return RangeCalibration(
        level=level,
        margin=pooled,
        n=len(years),
        per_museum=own,
        unseen_margin=unseen_margin(list(needed.values()), pooled, level),
        seen=tuple(sorted(groups)),
    )


def unseen_margin(needed: list[float], pooled: float, level: float) -> float:
    """The margin for a museum the calibration did not see: at least the pooled one, and as wide as
    `level` of the calibration's museums needed for their own works (their spread is the measure of
    how much a collection can differ). With fewer than three museums to measure it by, the widest."""
    finite = sorted(m for m in needed if math.isfinite(m))
    if not finite:
        return pooled
    if len(finite) < 3:
        return max(pooled, finite[-1])
    return max(pooled, float(torch.tensor(finite, dtype=torch.float64).quantile(level)))


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


def apply_calibration(
    raw: Predictions, calibration: RangeCalibration, year_min: int, year_max: int, museums: list[str] | None = None
) -> Predictions:
    """Calibrated ranges (by each work's museum, RangeCalibration), inside the label window (no
    work's year lies outside it)."""
    low, high = raw.low, raw.high
    if math.isfinite(calibration.margin):
        margins = calibration.margins(museums, len(low)).to(low.dtype)
        low, high = low - margins, high + margins
        middle = (low + high) / 2  # a negative margin shrinks a narrow range to its middle, never inverts it
        low, high = torch.minimum(low, middle), torch.maximum(high, middle)
    else:  # too few validation works to promise the level: the whole window
        low, high = torch.full_like(low, year_min), torch.full_like(high, year_max)
    return Predictions(raw.year, low.clamp(year_min, year_max), high.clamp(year_min, year_max), raw.spread)


def inside(years, low, high):
    """Whether each true year lies in its range (ends included)."""
    return (low <= years) & (years <= high)
