"""Year ranges: the interval arithmetic and the coverage, checked against figures worked out by hand."""

import dataclasses
import math

import pytest
import torch

from artdate.model import ranges
from artdate.model.network import LabelEncoding, ModelSpec, predict_years


def test_bin_quantiles_spread_each_bin_over_its_years():
    # Four 10-year bins from 1600: 1600-1609, 1610-1619, ... i.e. 1599.5..1639.5 on the continuous scale.
    uniform = torch.full((1, 4), 0.25)
    assert ranges.bin_quantiles(uniform, 1600, 10, (0.0, 0.1, 0.5, 0.9, 1.0)).tolist() == [
        [1599.5, 1603.5, 1619.5, 1635.5, 1639.5]
    ]
    # All in the second bin: its 10% and 90% points lie 1 year inside its ends.
    single = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert ranges.bin_quantiles(single, 1600, 10, (0.1, 0.9)).tolist() == [[1610.5, 1618.5]]
    # Half in the first, half in the last: the median sits at the end of the first bin.
    split = torch.tensor([[0.5, 0.0, 0.0, 0.5]])
    low, median, high = ranges.bin_quantiles(split, 1600, 10, (0.1, 0.5, 0.9))[0].tolist()
    assert (low, median, high) == pytest.approx((1601.5, 1609.5, 1637.5))


def test_central_shares():
    assert ranges.central_shares(0.8) == pytest.approx((0.1, 0.9))


def test_conformal_margin_is_the_finite_sample_quantile_of_the_misses():
    years = torch.tensor([10.0, 20.0, 30.0, 40.0])
    low = torch.tensor([12.0, 10.0, 25.0, 50.0])
    high = torch.tensor([15.0, 18.0, 35.0, 60.0])
    # How far each year lies outside its range (negative: inside by that much): 2, 2, -5, 10
    assert ranges.conformal_margin(years, low, high, 0.5) == 2  # rank ceil(5 * 0.5) = 3 of -5, 2, 2, 10
    assert ranges.conformal_margin(years, low, high, 0.2) == -5  # rank ceil(5 * 0.2) = 1: ranges may shrink
    assert ranges.conformal_margin(years, low, high, 0.8) == 10  # rank 4
    assert ranges.conformal_margin(years, low, high, 0.9) == math.inf  # rank 5 of 4: too few works to promise 90%


def test_applying_a_calibration_widens_shrinks_and_keeps_inside_the_window():
    raw = ranges.Predictions(
        year=torch.tensor([1500.0, 1250.0, 1700.0]),
        low=torch.tensor([1480.0, 1240.0, 1690.0]),
        high=torch.tensor([1520.0, 1260.0, 1702.0]),
    )
    wider = ranges.apply_calibration(raw, ranges.RangeCalibration(0.8, 30.0, 100), 1200, 1930)
    assert wider.low.tolist() == [1450, 1210, 1660] and wider.high.tolist() == [1550, 1290, 1732]
    clamped = ranges.apply_calibration(raw, ranges.RangeCalibration(0.8, 60.0, 100), 1200, 1930)
    assert clamped.low.tolist() == [1420, 1200, 1630]  # 1240 - 60 = 1180 is before the window
    narrower = ranges.apply_calibration(raw, ranges.RangeCalibration(0.8, -8.0, 100), 1200, 1930)
    # 40- and 20-year ranges lose 8 years at each end; the 12-year one shrinks to its middle, 1696.
    assert narrower.low.tolist() == [1488, 1248, 1696] and narrower.high.tolist() == [1512, 1252, 1696]
    unknown = ranges.apply_calibration(raw, ranges.RangeCalibration(0.95, math.inf, 5), 1200, 1930)
    assert unknown.low.tolist() == [1200] * 3 and unknown.high.tolist() == [1930] * 3


def test_inside_counts_both_ends():
    years = torch.tensor([10.0, 20.0, 30.0, 41.0])
    low, high = torch.tensor([10.0, 21.0, 0.0, 0.0]), torch.tensor([12.0, 30.0, 30.0, 40.0])
    assert ranges.inside(years, low, high).tolist() == [True, False, True, False]


@pytest.mark.parametrize("level", [0.5, 0.8, 0.95])
def test_calibrated_ranges_hold_their_level_on_works_they_did_not_see(level):
    # A model whose errors grow with its own uncertainty, as a bins head's do, and whose raw
    # ranges are too narrow: calibrated on 1,000 works, measured on 20,000 others.
    generator = torch.Generator().manual_seed(1)

    def works(n):
        spread = 10 + 60 * torch.rand(n, generator=generator)
        years = 1500 + 100 * torch.randn(n, generator=generator)
        predicted = years + spread * torch.randn(n, generator=generator)
        return years, predicted - 0.5 * spread, predicted + 0.5 * spread

    calibration = ranges.calibrate(*works(1000), level)
    years, low, high = works(20000)
    held = ranges.inside(years, low - calibration.margin, high + calibration.margin).float().mean().item()
    raw = ranges.inside(years, low, high).float().mean().item()
    assert raw < level - 0.1  # the raw ranges would promise too much ...
    assert abs(held - level) < 0.03  # ... the calibrated ones hold what they say


def test_the_raw_range_of_a_bins_head_is_its_central_interval_and_of_a_regression_head_its_year():
    bins = LabelEncoding(loss="bins", year_min=1600, year_max=1639, bin_width=10)
    logits = torch.log(torch.tensor([[0.25, 0.25, 0.25, 0.25]]))
    _, low, high, _ = bins.decode(logits, 0.8)
    assert (low.item(), high.item()) == pytest.approx((1603.5, 1635.5))
    regression = LabelEncoding(loss="mse", mean=1700, std=100)
    outputs = torch.tensor([[0.5]])
    years, low, _, _ = regression.decode(outputs, 0.8)
    assert low.item() == years.item() == 1750


def test_predict_years_applies_the_calibration_and_the_spec_flip_averages_mirror_images():
    class LeftHalf(torch.nn.Module):  # an output that changes when the image is mirrored
        def forward(self, x):
            return x[:, :1, :, : x.shape[3] // 2].mean(dim=(1, 2, 3))[:, None]

    spec = ModelSpec(
        backbone="test",
        image_size=4,
        encoding=LabelEncoding(loss="mse", mean=1500, std=100),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    images = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    images[..., :2] = 255  # the left half white: 1.0 there, 0.0 in the mirror image
    cpu = torch.device("cpu")
    assert predict_years(LeftHalf(), spec, images, cpu).year.item() == 1600
    mirrored_too = dataclasses.replace(spec, flip_averaging=True)
    assert predict_years(LeftHalf(), mirrored_too, images, cpu).year.item() == 1550
    calibrated = predict_years(LeftHalf(), spec, images, cpu, ranges.RangeCalibration(0.8, 25.0, 50))
    assert (calibrated.low.item(), calibrated.high.item()) == (1575, 1625)


def test_ranges_take_the_margin_of_their_museum_and_a_wider_one_for_a_museum_unseen():
    """Issue 39: a museum with enough validation works gets its own margin; one in the validation
    split with too few the pooled margin; one it does not hold the margin that the validation
    museums needed at the promised level of them."""
    from artdate.model.ranges import (
        OWN_MARGIN_FROM,
        SPREAD_FROM,
        Predictions,
        RangeCalibration,
        apply_calibration,
        calibrate,
    )

    torch.manual_seed(0)
    sizes = {"tight": OWN_MARGIN_FROM, "loose": OWN_MARGIN_FROM, "odd": SPREAD_FROM, "rare": 3}
    misses = {"tight": 5.0, "loose": 60.0, "odd": 120.0, "rare": 0.0}  # how far outside its raw range each year lies
    museums = [name for name, n in sizes.items() for _ in range(n)]
    years = torch.full((len(museums),), 1600.0)
    spread = torch.cat([torch.linspace(0, 1, n) * misses[name] for name, n in sizes.items()])
    low, high = years + spread, years + spread + 10  # every year below its range, by up to the museum's miss
    calibration = calibrate(years, low, high, 0.8, museums)
    assert set(calibration.per_museum) == {"tight", "loose"}
    assert calibration.per_museum["tight"] < 5.01 and calibration.per_museum["loose"] > 40
    needed = [calibrate(years[i], low[i], high[i], 0.8).margin for i in (range(0, 40), range(40, 80), range(80, 90))]
    assert calibration.unseen_margin == pytest.approx(
        max(calibration.margin, torch.tensor(needed).quantile(0.8).item())
    )
    assert calibration.unseen_margin > calibration.margin  # a collection unlike the rest gets a wider range
    raw = Predictions(years[:4], torch.full((4,), 1700.0), torch.full((4,), 1710.0))
    widened = apply_calibration(raw, calibration, 1000, 2000, ["tight", "rare", "nowhere", "loose"])
    margins = (raw.low - widened.low).tolist()
    assert margins == pytest.approx(
        [
            calibration.per_museum["tight"],
            calibration.margin,
            calibration.unseen_margin,
            calibration.per_museum["loose"],
        ]
    )
    assert RangeCalibration.from_dict(calibration.to_dict()) == calibration  # it rides in every checkpoint
    assert RangeCalibration.from_dict({"level": 0.8, "margin": 3.0, "n": 9}).margins(["a"], 1).tolist() == [3.0]
